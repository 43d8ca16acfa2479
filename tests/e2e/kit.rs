//! The conformance kit on the command line: `test-plugin` passes the bundled plugins and fails
//! one whose answers break the contract; `call` runs one operation, with state kept between
//! calls when asked.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{assert_kit_passed_everything, plugin, run_cli, shared_cache, test_plugin};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const POOL: &str = r#"machines = [
  { id = "m1", agent_address = "http://10.0.0.1:37000", node_class = "small" },
  { id = "m2", agent_address = "http://10.0.0.2:37000", node_class = "small" },
  { id = "m3", agent_address = "http://10.0.0.3:37000", node_class = "small" },
]
"#;

fn kit(plugin_name: &str, settings: &str, extra: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let settings = write(dir.path(), "settings.toml", settings);
    test_plugin(&plugin(plugin_name), Path::new(&settings), extra)
}

#[test]
fn the_pool_plugin_passes_every_check_of_the_kit() {
    assert_kit_passed_everything(&kit(
        "pool",
        POOL,
        &["--node-class", "small", "--provisions"],
    ));
}

#[test]
fn a_wrong_node_class_fails_the_kit_when_the_plugin_must_provision() {
    let (ok, stdout, _) = kit("pool", POOL, &["--node-class", "large", "--provisions"]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("FAIL  provision without a count creates one node")
            && stdout.contains("no machine of node class `large`"),
        "{stdout}"
    );
}

#[test]
fn a_plugin_that_only_reports_clusters_passes_with_its_lifecycle_skipped() {
    let clusters = r#"clusters = [{ cluster_id = "billing", nodes = [{ node_id = "db-1", agent_address = "http://10.1.0.1:37000" }] }]"#;
    let (ok, stdout, stderr) = kit("static_clusters", clusters, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("PASS  discover answers, and its answer is valid"),
        "{stdout}"
    );
    assert!(
        stdout.contains("SKIP  provision without a count"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("2 passed, 0 failed, 8 skipped\n"),
        "{stdout}"
    );
}

#[test]
fn a_plugin_whose_answers_break_the_contract_fails_the_kit() {
    let (ok, stdout, _) = kit("fault", "mode = \"invalid\"\n", &["--provisions"]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("FAIL  discover answers, and its answer is valid"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  provision without a count creates one node"),
        "{stdout}"
    );
    assert!(!stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn a_plugin_that_cannot_start_fails_the_first_check() {
    let (ok, stdout, _) = kit("pool", POOL, &["--memory", "128KiB"]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("FAIL  loads and starts within its limits")
            && stdout.contains("of memory to start"),
        "{stdout}"
    );
}

#[test]
fn call_runs_one_operation_and_a_state_folder_carries_between_calls() {
    let dir = tempfile::tempdir().unwrap();
    let settings = write(dir.path(), "settings.toml", POOL);
    let state = dir.path().join("state").display().to_string();
    let wasm = plugin("pool").display().to_string();
    let cache = shared_cache().display().to_string();
    let call = |operation: &str, request: Option<&str>| {
        let mut args = vec!["call", &wasm, "--settings", &settings, "--state", &state];
        args.extend(["--cache", &cache, operation]);
        let file;
        if let Some(request) = request {
            file = write(dir.path(), "request.json", request);
            args.push(&file);
        }
        let (ok, stdout, stderr) = run_cli(&args);
        let answer: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
        (ok, answer, stderr)
    };

    let (ok, answer, stderr) = call(
        "provision",
        Some(r#"{"cluster_id": "c1", "node_class": "small", "count": 2}"#),
    );
    assert!(ok, "{answer}");
    assert_eq!(answer["count"], 2, "{answer}");
    // The plugin's own log line reaches stderr.
    assert!(
        stderr.contains("allocated m1, m2 to cluster `c1`"),
        "{stderr}"
    );

    let (ok, answer, _) = call("discover", None);
    assert!(ok);
    assert_eq!(
        answer["clusters"][0]["nodes"].as_array().unwrap().len(),
        2,
        "{answer}"
    );

    let (ok, answer, _) = call(
        "deprovision",
        Some(r#"{"cluster_id": "c1", "node_id": "m9"}"#),
    );
    assert!(!ok, "{answer}");
    assert_eq!(answer["error"]["case"], "not-found", "{answer}");

    let (ok, _, _) = call(
        "deprovision",
        Some(r#"{"cluster_id": "c1", "node_id": "m1"}"#),
    );
    assert!(ok);
    let (_, answer, _) = call("discover", None);
    assert_eq!(
        answer["clusters"][0]["nodes"].as_array().unwrap().len(),
        1,
        "{answer}"
    );
}
