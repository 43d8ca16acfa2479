//! `cargo xtask bench [ARGS...]`: build the plugins (and the example plugins in Python and
//! JavaScript, when the run includes their scenario), the gateway and the benchmark in release
//! mode, then run the benchmark (bench/) against them; ARGS go to `platform-gateway-bench run`
//! (`--seconds N`, `--only TEXT`, `--compare LABEL=BINARY`).

use std::process::Command;

use crate::{root, run};

/// The name of the bench scenario that serves the example plugins written in Python and
/// JavaScript ([`crate::EXAMPLE_PLUGINS`]): kept here, where `cargo xtask bench` decides whether
/// to build them, and used by the benchmark as the scenario's name.
pub const EXAMPLES_SCENARIO: &str =
    "discover, python-inventory / js-inventory, 1 connection (sequential)";

pub fn bench(args: &[String]) -> Result<(), String> {
    // Their toolchains come from `cargo xtask setup`; a run without their scenario needs none.
    if runs_examples(args) {
        for name in crate::EXAMPLE_PLUGINS {
            crate::build_example_plugin(name)?;
        }
    }
    let examples = crate::example_plugin_path("any");
    let examples = examples.parent().expect("example plugins have a folder");
    let mut args = args.to_vec();
    args.extend(["--examples".to_string(), examples.display().to_string()]);
    run_release("run", &args)
}

/// Whether `platform-gateway-bench run ARGS` runs [`EXAMPLES_SCENARIO`]: every scenario whose
/// name contains `--only`'s text runs, all of them without it.
fn runs_examples(args: &[String]) -> bool {
    let mut only: Option<&str> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--only" {
            only = args.next().map(String::as_str);
        } else if let Some(text) = arg.strip_prefix("--only=") {
            only = Some(text);
        }
    }
    only.is_none_or(|text| EXAMPLES_SCENARIO.contains(text))
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
