//! The command line: clap's conventions (help, exit codes, environment variables, completions),
//! `check` and `route` for people and for scripts, log formats, and the compiled-plugin cache
//! seen from outside.

use crate::support::{fault_backend, pool_backend, run_cli, toml_str};

use crate::support::write_config_in as write_config;

#[test]
fn version_prints_the_crate_version_the_commit_and_the_contracts_served() {
    let (ok, stdout, _) = run_cli(&["-V"]);
    assert!(ok);
    assert_eq!(
        stdout.trim(),
        format!("platform-gateway {}", env!("CARGO_PKG_VERSION"))
    );

    let (ok, stdout, _) = run_cli(&["--version"]);
    assert!(ok);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("platform-gateway {}", env!("CARGO_PKG_VERSION"))
    );
    // This test runs from a git checkout: the commit is HEAD's.
    let head = std::process::Command::new("git")
        .current_dir(xtask::root())
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(lines[1], format!("commit: {head}"), "{stdout}");
    // Every contract version declared under wit/ (one folder per version).
    let mut declared = std::collections::BTreeSet::new();
    let files = std::fs::read_dir(xtask::root().join("wit"))
        .unwrap()
        .flat_map(|version| std::fs::read_dir(version.unwrap().path()).unwrap());
    for entry in files {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("package replicante:platform@") {
                declared.insert(format!(
                    "replicante:platform@{}",
                    name.trim_end_matches(';')
                ));
            }
        }
    }
    assert!(declared.contains("replicante:platform@0.1.0"));
    assert!(declared.contains("replicante:platform@0.2.0"));
    let declared: Vec<String> = declared.into_iter().collect();
    assert_eq!(
        lines[2],
        format!("contracts: {}", declared.join(", ")),
        "{stdout}"
    );
}

#[test]
fn check_accepts_a_good_config_creates_no_directory_and_uses_an_existing_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}{}[[routes]]\nbackend = \"a\"\n",
            pool_backend("a", &[("m1", "small")]),
            pool_backend("b", &[("m2", "small")]),
        ),
    );
    let entries = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let (ok, stdout, stderr) = run_cli(&["check", "--config", &config]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("backend a: ok (sha256:"), "{stdout}");
    assert!(stdout.contains("backend b: ok (sha256:"), "{stdout}");
    assert!(stdout.contains("ok (2 backends, 1 routes)"), "{stdout}");
    // Two backends of one plugin: one compilation.
    assert_eq!(stderr.matches("compiled plugin").count(), 1, "{stderr}");
    assert_eq!(entries(), ["gateway.toml"], "check created something");

    // Once the cache directory exists (a gateway served from it), check fills it, and the next
    // run compiles nothing.
    std::fs::create_dir_all(dir.path().join("state/compiled")).unwrap();
    let (ok, _, stderr) = run_cli(&["check", "--config", &config]);
    assert!(ok);
    assert_eq!(stderr.matches("compiled plugin").count(), 1, "{stderr}");
    let (ok, _, stderr) = run_cli(&["check", "--config", &config]);
    assert!(ok);
    assert_eq!(stderr.matches("compiled plugin").count(), 0, "{stderr}");
    let cached = std::fs::read_dir(dir.path().join("state/compiled"))
        .unwrap()
        .count();
    assert_eq!(cached, 1);
}

#[test]
fn check_fill_cache_creates_the_cache_so_that_serve_compiles_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[[routes]]\nbackend = \"a\"\n",
            pool_backend("a", &[("m1", "small")])
        ),
    );
    let (ok, _, stderr) = run_cli(&["check", "--config", &config]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("check --fill-cache creates and fills it"),
        "{stderr}"
    );
    let (ok, _, stderr) = run_cli(&["check", "--fill-cache", "--config", &config]);
    assert!(ok, "{stderr}");
    assert_eq!(stderr.matches("compiled plugin").count(), 1, "{stderr}");
    // What serve loads from: the same cache, now filled.
    let (ok, _, stderr) = run_cli(&["check", "--config", &config]);
    assert!(ok);
    assert_eq!(stderr.matches("compiled plugin").count(), 0, "{stderr}");
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

/// Run the binary with `args` and `env` (and no other `PLATFORM_GATEWAY_*` variable): (exit
/// code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_platform-gateway"));
    command.args(args).env("RUST_LOG", "info");
    for (name, _) in std::env::vars() {
        if name.starts_with("PLATFORM_GATEWAY_") {
            command.env_remove(name);
        }
    }
    let out = command
        .envs(env.iter().copied())
        .output()
        .expect("run platform-gateway");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bare_invocation_prints_help_and_usage_errors_exit_2() {
    let (code, _, stderr) = run(&[], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("Usage: platform-gateway"), "{stderr}");
    assert!(stderr.contains("Commands:"), "{stderr}");
    for args in [
        &["serve"][..],
        &["check"],
        &["route", "request.json"],
        &["--listen", "127.0.0.1:0"],
        &["state", "export"],
    ] {
        let (code, _, stderr) = run(args, &[]);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("--config <CONFIG>"), "{args:?}: {stderr}");
    }
    for args in [
        &["completions", "tcsh"][..],
        &["check", "--config", "x.toml", "--output", "yaml"],
        &["check", "--config", "x.toml", "--log-format", "xml"],
        &["check", "--config", "x.toml", "--log-level", "info,=["],
        &["frobnicate"],
    ] {
        let (code, _, stderr) = run(args, &[]);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
    // A command that runs and fails is 1, not 2.
    let (code, _, stderr) = run(&["check", "--config", "/nonexistent/gateway.toml"], &[]);
    assert_eq!(code, 1, "{stderr}");
}

#[test]
fn every_flag_has_an_environment_variable() {
    let commands: [&[&str]; 7] = [
        &[],
        &["serve"],
        &["check"],
        &["route"],
        &["state", "export"],
        &["state", "import"],
        &["completions"],
    ];
    let mut flags = 0;
    for command in commands {
        let args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
        let (code, help, stderr) = run(&args, &[]);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        // Each option's help starts on a line of its own, indented by 2 (`-c, --config`) or 6
        // (`--listen`) spaces; its description lines are indented by 10.
        let mut blocks: Vec<String> = Vec::new();
        for line in help.lines() {
            let indent = line.len() - line.trim_start().len();
            if line.trim_start().starts_with('-') && indent < 8 {
                blocks.push(line.to_string());
            } else if let Some(block) = blocks.last_mut()
                && (line.is_empty() || indent >= 8)
            {
                block.push_str(line);
            } else if !line.is_empty() {
                blocks.push(String::new());
            }
        }
        for block in blocks.iter().filter(|b| b.trim_start().starts_with('-')) {
            if block.contains("--help") || block.contains("--version") {
                continue;
            }
            flags += 1;
            assert!(
                block.contains("[env: PLATFORM_GATEWAY_"),
                "{args:?}: a flag without an environment variable: {block}"
            );
        }
    }
    // --config, --listen, --log-level, --log-format, --output, --replace at least.
    assert!(flags >= 6, "{flags} flags found");

    // And they are read.
    let (code, stdout, stderr) = run(
        &["check"],
        &[
            ("PLATFORM_GATEWAY_CONFIG", "/nonexistent/gateway.toml"),
            ("PLATFORM_GATEWAY_OUTPUT", "json"),
            ("PLATFORM_GATEWAY_LOG_FORMAT", "json"),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    let reply: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/gateway.toml"),
        "{reply}"
    );
}

#[test]
fn check_and_route_answer_in_json_for_scripts_and_route_fails_when_nothing_matches() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[[routes]]\nname = \"mongo\"\nstore = \"mongodb\"\nbackend = \"pool\"\n",
            pool_backend("pool", &[("m1", "small")])
        ),
    );
    let (code, stdout, stderr) = run(&["check", "--config", &config, "--output", "json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let reply: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(reply["backends"][0]["name"], "pool", "{reply}");
    assert!(
        reply["backends"][0]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{reply}"
    );
    assert_eq!(reply["routes"], 1, "{reply}");

    let request = dir.path().join("request.json");
    let body =
        |store: &str| crate::support::provision_body("c1", store, "data", "small").to_string();
    std::fs::write(&request, body("mongodb")).unwrap();
    let request = request.display().to_string();
    let (code, stdout, stderr) = run(&["route", "--config", &config, &request, "-o", "json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let reply: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(reply["decision"]["by"], "route", "{reply}");
    assert_eq!(reply["decision"]["backend"], "pool", "{reply}");
    assert_eq!(reply["decision"]["route"], "mongo", "{reply}");

    // No route matches: the explanation, and a failure.
    std::fs::write(dir.path().join("request.json"), body("kafka")).unwrap();
    let (code, stdout, _) = run(&["route", "--config", &config, &request, "-o", "json"], &[]);
    assert_eq!(code, 1, "{stdout}");
    let reply: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(reply["decision"]["by"], "no_route", "{reply}");
    assert_eq!(reply["tried"][0]["matched"], false, "{reply}");
    let (code, stdout, _) = run(&["route", "--config", &config, &request], &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("route 0 `mongo`"), "{stdout}");

    // A config that does not load: the error, as JSON on stdout.
    let broken = write_config(dir.path(), "[server]\nlisen = 1\n");
    let (code, stdout, _) = run(&["check", "--config", &broken, "--output", "json"], &[]);
    assert_eq!(code, 1, "{stdout}");
    let reply: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        reply["error"].as_str().unwrap().contains("lisen"),
        "{reply}"
    );
}

#[test]
fn logs_can_be_json_lines_filtered_by_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[[routes]]\nbackend = \"pool\"\n",
            pool_backend("pool", &[("m1", "small")])
        ),
    );
    let (code, _, stderr) = run(&["check", "--config", &config, "--log-format", "json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let compiled = lines
        .iter()
        .find(|l| l["message"] == "compiled plugin")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(compiled["level"], "INFO", "{compiled}");
    assert!(
        compiled["digest"].as_str().unwrap().starts_with("sha256:"),
        "{compiled}"
    );

    // --log-level wins over RUST_LOG (which `run` sets to info).
    let (code, _, stderr) = run(&["check", "--config", &config, "--log-level", "warn"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("compiled plugin"), "{stderr}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _platform__gateway"),
        ("zsh", "#compdef platform-gateway"),
        ("fish", "complete -c platform-gateway"),
    ] {
        let (code, script, stderr) = run(&["completions", shell], &[]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("log-format"), "{shell}: {script}");
    }
}

#[tokio::test]
async fn healthcheck_exits_0_on_a_ready_gateway_and_1_with_the_reason_otherwise() {
    let gw = crate::support::Gateway::start(&format!(
        "{}[[routes]]\nbackend = \"a\"\n",
        pool_backend("a", &[("m1", "small")])
    ))
    .await;
    let url = gw.url("/readyz");
    let (ok, stdout, stderr) = run_cli(&["healthcheck", "--url", &url]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), format!("{url}: ready"));

    // Anything but 200 fails, naming the status and the gateway's reason.
    let missing = gw.url("/no-such-path");
    let (ok, _, stderr) = run_cli(&["healthcheck", "--url", &missing]);
    assert!(!ok);
    assert!(stderr.contains("404"), "{stderr}");
    // Nothing listening: fails too, through the environment variable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_platform-gateway"))
        .arg("healthcheck")
        .env(
            "PLATFORM_GATEWAY_HEALTHCHECK_URL",
            format!("http://127.0.0.1:{port}/readyz"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("127.0.0.1:{port}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
