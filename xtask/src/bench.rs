//! `cargo xtask bench [ARGS...]`: build the plugins, the gateway and the benchmark in release
//! mode, then run the benchmark (bench/) against them; ARGS go to `platform-gateway-bench run`
//! (`--seconds N`, `--only TEXT`, `--compare LABEL=BINARY`).

use std::process::Command;

use crate::{root, run};

pub fn bench(args: &[String]) -> Result<(), String> {
    run_release("run", args)
}

/// `cargo xtask soak [--minutes N]`: the release gateway under a bounded soak (see
/// `bench/src/soak.rs`), with the test plugins.
pub fn soak(args: &[String]) -> Result<(), String> {
    run_release("soak", args)
}

/// Build the plugins, the gateway and the benchmark in release mode, then run
/// `platform-gateway-bench COMMAND` on them with `args`.
fn run_release(command: &str, args: &[String]) -> Result<(), String> {
    let plugins = crate::build_plugins()?;
    let root = root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "--locked", "-p", "platform-gateway"])
        .args(["-p", "platform-gateway-bench"]))?;
    let release = root.join("target/release");
    run(Command::new(release.join("platform-gateway-bench"))
        .current_dir(&root)
        .arg(command)
        .arg("--gateway")
        .arg(release.join("platform-gateway"))
        .arg("--plugins")
        .arg(&plugins)
        .arg("--work")
        .arg(root.join("target/bench/work"))
        .args(args))
}
