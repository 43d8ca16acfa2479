//! Build helpers shared by `cargo xtask` and the gateway's end-to-end tests: compile the plugin
//! workspace (`plugins/`, including the test fixtures it lists) for `wasm32-wasip2`.
//!
//! The plugins build into `target/plugins`, a target directory of their own, so that a build
//! started while the host's build or tests hold `target/debug` never waits on its lock.

pub mod bench;
pub mod dist;
pub mod etcd;

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

/// Build every plugin of the plugin workspace in release mode; a no-op when nothing changed.
pub fn build_plugins() -> Result<PathBuf, String> {
    ensure_target();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root().join("plugins"))
        .args([
            "build",
            "--release",
            "--workspace",
            "--target",
            "wasm32-wasip2",
        ])
        .args(["--target-dir", "../target/plugins"]);
    // Settings of an outer cargo (when called from a build or a test) are not the plugins'.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo to build the plugins: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the plugins failed ({status}); is the wasm32-wasip2 target installed? \
             (`rustup target add wasm32-wasip2`)"
        ));
    }
    Ok(plugin_dir())
}
