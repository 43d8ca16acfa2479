//! The command line: `check`, `--version`, and the compiled-plugin cache seen from outside.

use crate::support::{fault_backend, pool_backend, run_cli, toml_str};

fn write_config(dir: &std::path::Path, body: &str) -> String {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

#[test]
fn version_prints_the_crate_version() {
    let (ok, stdout, _) = run_cli(&["--version"]);
    assert!(ok);
    assert_eq!(
        stdout.trim(),
        format!("platform-gateway {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_a_good_config_and_compiles_each_plugin_once_ever() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}{}[[routes]]\nbackend = \"a\"\n",
            pool_backend("a", &[("m1", "small")]),
            pool_backend("b", &[("m2", "small")]),
        ),
    );
    let (ok, stdout, stderr) = run_cli(&["check", "--config", &config]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("backend a: ok (sha256:"), "{stdout}");
    assert!(stdout.contains("backend b: ok (sha256:"), "{stdout}");
    assert!(stdout.contains("ok (2 backends, 1 routes)"), "{stdout}");
    // Two backends of one plugin: one compilation.
    assert_eq!(stderr.matches("compiled plugin").count(), 1, "{stderr}");

    // The next run finds it in the on-disk cache and compiles nothing.
    let (ok, _, stderr) = run_cli(&["check", "--config", &config]);
    assert!(ok);
    assert_eq!(stderr.matches("compiled plugin").count(), 0, "{stderr}");
    let cached = std::fs::read_dir(dir.path().join("state/compiled"))
        .unwrap()
        .count();
    assert_eq!(cached, 1);
}

#[test]
fn check_refuses_a_bad_config_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[[routes]]\nbackend = \"pool\"\nstroe = \"mongodb\"\n",
            pool_backend("pool", &[("m1", "small")])
        ),
    );
    let (ok, stdout, stderr) = run_cli(&["check", "--config", &config]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("stroe"), "{stderr}");
    let line = 1 + std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("stroe"))
        .unwrap();
    assert!(stderr.contains(&format!("line {line}")), "{stderr}");
}

#[test]
fn check_refuses_a_file_that_is_not_a_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm not really").unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[backends.bogus]\nplugin = {}\n",
            toml_str(&bogus.display().to_string())
        ),
    );
    let (ok, _, stderr) = run_cli(&["check", "--config", &config]);
    assert!(!ok);
    assert!(stderr.contains("backend `bogus`"), "{stderr}");
    assert!(stderr.contains("not a usable component"), "{stderr}");

    // A missing file is named too.
    let config = write_config(dir.path(), "[backends.gone]\nplugin = \"nowhere.wasm\"\n");
    let (ok, _, stderr) = run_cli(&["check", "--config", &config]);
    assert!(!ok);
    assert!(stderr.contains("nowhere.wasm"), "{stderr}");
}

#[test]
fn serve_exits_with_the_reason_when_a_backend_cannot_load() {
    let dir = tempfile::tempdir().unwrap();
    // A core module is valid wasm but not a component of the plugin world.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[backends.core]\nplugin = {}\n",
            fault_backend("fine", "echo", ""),
            toml_str(&core.display().to_string())
        ),
    );
    let (ok, _, stderr) = run_cli(&["serve", "--config", &config, "--listen", "127.0.0.1:0"]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("backend `core`"), "{stderr}");
}
