//! `cargo xtask bench [ARGS...]`: build the plugins, the gateway and the benchmark in release
//! mode, then run the benchmark (bench/) against them; ARGS go to `platform-gateway-bench run`
//! (`--seconds N`, `--only TEXT`, `--compare LABEL=BINARY`).

use std::process::Command;

pub fn bench(args: &[String]) -> Result<(), String> {
    let plugins = crate::build_plugins()?;
    let root = crate::root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "--locked", "-p", "platform-gateway"])
        .args(["-p", "platform-gateway-bench"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the gateway and the benchmark failed ({status})"
        ));
    }
    let release = root.join("target/release");
    let status = Command::new(release.join("platform-gateway-bench"))
        .current_dir(&root)
        .arg("run")
        .arg("--gateway")
        .arg(release.join("platform-gateway"))
        .arg("--plugins")
        .arg(&plugins)
        .arg("--work")
        .arg(root.join("target/bench/work"))
        .args(args)
        .status()
        .map_err(|e| format!("cannot run the benchmark: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the benchmark failed ({status})"))
    }
}
