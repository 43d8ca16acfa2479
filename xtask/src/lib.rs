//! Build helpers shared by `cargo xtask` and the gateway's end-to-end tests: compile the plugin
//! workspace (`plugins/`, including the test fixtures it lists) for `wasm32-wasip2`.
//!
//! The plugins build into `target/plugins`, a target directory of their own, so that a build
//! started while the host's build or tests hold `target/debug` never waits on its lock.

pub mod bench;
pub mod dist;
pub mod etcd;
pub mod layering;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository root")
        .to_path_buf()
}

/// Where the release builds of the plugins land.
pub fn plugin_dir() -> PathBuf {
    root().join("target/plugins/wasm32-wasip2/release")
}

/// The path of the built plugin `name` (`pool`, `fault`, ...).
pub fn plugin_path(name: &str) -> PathBuf {
    plugin_dir().join(format!("{name}.wasm"))
}

/// Make sure the `wasm32-wasip2` standard library is installed for the pinned toolchain.
///
/// rustup installs the targets of `rust-toolchain.toml` only when it installs the toolchain
/// itself; on a machine that already had the toolchain, add the target here (a no-op once it
/// is there).
fn ensure_target() {
    let installed = Command::new("rustup")
        .current_dir(root())
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("wasm32-wasip2") => {}
        Ok(_) => {
            let _ = Command::new("rustup")
                .current_dir(root())
                .args(["target", "add", "wasm32-wasip2"])
                .status();
        }
        // No rustup: the toolchain was installed some other way; the build says what is missing.
        Err(_) => {}
    }
}

/// The cargo command that builds the plugins, as `docs/plugins-rust.md` shows a plugin author (in
/// `plugins/`, a virtual workspace, it builds every member into `target/plugins`, as
/// `plugins/.cargo/config.toml` says).
pub const PLUGIN_BUILD: [&str; 4] = ["build", "--release", "--target", "wasm32-wasip2"];

/// Build every plugin of the plugin workspace in release mode; a no-op when nothing changed.
pub fn build_plugins() -> Result<PathBuf, String> {
    build_in_plugins("the plugins", &[])?;
    Ok(plugin_dir())
}

/// Run [`PLUGIN_BUILD`] with `args` in `plugins/` (the wasm32-wasip2 target made sure of,
/// without an outer cargo's settings), for `what`.
fn build_in_plugins(what: &str, args: &[String]) -> Result<(), String> {
    ensure_target();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root().join("plugins"))
        .args(PLUGIN_BUILD)
        .args(args);
    // Settings of an outer cargo (when called from a build or a test) are not the plugins'.
    without_outer_cargo(&mut command);
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo to build {what}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building {what} failed ({status}); is the wasm32-wasip2 target installed? \
             (`rustup target add wasm32-wasip2`)"
        ));
    }
    Ok(())
}

/// The plugins with a planted change (test fixtures only, never shipped): each crate's
/// `planted` feature, a deliberate behaviour change that the replay tests must catch.
pub const PLANTED_PLUGINS: [&str; 3] = ["pool", "podman", "aws-ec2"];

/// Where the builds of [`PLANTED_PLUGINS`] with their `planted` feature land: a target directory
/// of their own, so that they never overwrite the plugins that ship.
pub fn planted_plugin_dir() -> PathBuf {
    root().join("target/plugins-planted/wasm32-wasip2/release")
}

/// The path of the planted build of the plugin `name` (`pool`, `podman`, `aws_ec2`: the file's
/// name, as for [`plugin_path`]).
pub fn planted_plugin(name: &str) -> PathBuf {
    planted_plugin_dir().join(format!("{name}.wasm"))
}

/// Build [`PLANTED_PLUGINS`] with their `planted` feature in release mode into
/// `target/plugins-planted`; a no-op when nothing changed.
pub fn build_planted_plugins() -> Result<PathBuf, String> {
    let mut args = Vec::new();
    let mut features = Vec::new();
    for name in PLANTED_PLUGINS {
        args.extend(["-p".to_string(), name.to_string()]);
        features.push(format!("{name}/planted"));
    }
    args.extend(["--features".to_string(), features.join(",")]);
    let target = root().join("target/plugins-planted");
    args.extend(["--target-dir".to_string(), target.display().to_string()]);
    build_in_plugins("the planted plugins", &args)?;
    Ok(planted_plugin_dir())
}

/// Remove from `command`'s environment what an outer cargo sets for a build of its own (target
/// directory, target, flags, jobserver) and what it tells the program it runs (`cargo run -p
/// xtask`, a test): ring's build script watches CARGO_MANIFEST_DIR, CARGO_PKG_NAME, OUT_DIR...,
/// so leaving them would rebuild everything above ring whenever a build is started one way
/// after the other (from a shell, from xtask, from a test).
pub fn without_outer_cargo(command: &mut Command) {
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_MAKEFLAGS",
    ] {
        command.env_remove(var);
    }
    clear_cargo_run_env(command);
}

/// Remove from `command`'s environment only what cargo tells the program it runs (see
/// [`without_outer_cargo`]); for a `cargo test` that should build as one typed in a shell.
pub fn clear_cargo_run_env(command: &mut Command) {
    for var in [
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ] {
        command.env_remove(var);
    }
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_CFG_") {
            command.env_remove(var);
        }
    }
}

/// Run `command`, failing with its description if it does not succeed.
pub fn run(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}"))
    }
}

/// The example plugins written in other languages than Rust (`examples/plugins/<name>/`, each
/// with a `build.sh` that installs its pinned toolchain in the example's folder and builds the
/// component: the very commands `docs/plugins-*.md` show).
pub const EXAMPLE_PLUGINS: [&str; 2] = ["python-inventory", "js-inventory"];

/// Where the example plugins' components land.
pub fn example_plugin_path(name: &str) -> PathBuf {
    root().join(format!("target/example-plugins/{name}.wasm"))
}

/// The newest modification time of the files under `dir`, leaving out installed toolchains and
/// build output (`node_modules`, `.venv`, `__pycache__`, `build`).
fn newest_input(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        if [".venv", "node_modules", "__pycache__", "build"]
            .iter()
            .any(|skip| name == *skip)
        {
            continue;
        }
        let path = entry.path();
        let time = if path.is_dir() {
            newest_input(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// Build the example plugin `name` by running its `build.sh` with the output path as its one
/// argument, unless the component is newer than every input (the example, its language's SDK
/// and the contract): componentize-js embeds a temporary path, so each build is new bytes that
/// the gateway would compile again (half a minute for a 14 MB component).
pub fn build_example_plugin(name: &str) -> Result<PathBuf, String> {
    let dir = root().join("examples/plugins").join(name);
    let out = example_plugin_path(name);
    let sdk = root().join(if name.starts_with("python") {
        "sdk/python"
    } else {
        "sdk/js"
    });
    let inputs = [&dir, &sdk, &root().join("wit/v0.2")]
        .into_iter()
        .filter_map(|d| newest_input(d))
        .max();
    let built = std::fs::metadata(&out).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(inputs)) = (built, inputs)
        && built > inputs
    {
        return Ok(out);
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let mut command = Command::new("sh");
    command.current_dir(&dir).arg("build.sh").arg(&out);
    without_outer_cargo(&mut command);
    let status = command
        .status()
        .map_err(|e| format!("cannot run {}/build.sh: {e}", dir.display()))?;
    if !status.success() {
        return Err(format!(
            "building the example plugin {name} failed ({status}); see its output above"
        ));
    }
    Ok(out)
}

/// Build every example plugin.
pub fn build_example_plugins() -> Result<(), String> {
    EXAMPLE_PLUGINS
        .iter()
        .try_for_each(|name| build_example_plugin(name).map(|_| ()))
}

/// The guest SDKs' and example plugins' own tests, natively: `python3 -m unittest` for the
/// Python SDK and `python-inventory`, `npm test` for the JavaScript SDK and `js-inventory` (whose
/// `node_modules` its `build.sh` installed). Every suite runs; the error names those that failed.
pub fn guest_sdk_tests() -> Result<(), String> {
    let suites: [(&str, &str, &[&str]); 4] = [
        (
            "sdk/python",
            "python3",
            &["-m", "unittest", "discover", "-s", "tests"],
        ),
        (
            "examples/plugins/python-inventory",
            "python3",
            &["-m", "unittest"],
        ),
        ("sdk/js", "npm", &["test"]),
        ("examples/plugins/js-inventory", "npm", &["test"]),
    ];
    let mut failed = Vec::new();
    for (dir, program, args) in suites {
        println!("guest tests: {dir}: {program} {}", args.join(" "));
        let ok = Command::new(program)
            .current_dir(root().join(dir))
            .args(args)
            .status()
            .is_ok_and(|status| status.success());
        if !ok {
            failed.push(dir);
        }
    }
    match failed.as_slice() {
        [] => Ok(()),
        dirs => Err(format!("the guest SDK tests failed in {}", dirs.join(", "))),
    }
}
