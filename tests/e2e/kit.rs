//! The conformance kit on the command line: `test-plugin` passes the bundled plugins (and the
//! pool's build with a planted change, which keeps the contract) and fails one whose answers
//! break the contract, and each bug planted in the `planted` fixture (a count bug, a racy write,
//! a provision that ignores its request ID, nodes kept after a refused answer) or a run that
//! exercised nothing; `call` runs one operation, with state kept between calls when asked. The
//! gateway's side of a refused answer (it deprovisions what the answer named) is here too, as the
//! kit reports what the gateway does.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{
    Gateway, Workdir, assert_kit_passed_everything, planted_plugin, plugin, provision_body,
    run_cli, shared_cache, small_machines, test_plugin, toml_str,
};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Three small machines: fewer than the kit takes at most, so that it exhausts them.
fn pool() -> String {
    small_machines(3)
}

fn kit(plugin_name: &str, settings: &str, extra: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let settings = write(dir.path(), "settings.toml", settings);
    test_plugin(&plugin(plugin_name), Path::new(&settings), extra)
}

#[test]
fn the_pool_plugin_passes_every_check_of_the_kit() {
    assert_kit_passed_everything(&kit("pool", &pool(), &["--node-class", "small"]));
}

/// The pool's build with its planted change (`xtask::build_planted_plugins`: it takes the last
/// free machines first) keeps the contract: the kit passes it, only a replay of recorded calls
/// can tell it from the shipped build.
#[test]
fn the_pool_with_its_planted_change_passes_every_check_of_the_kit() {
    let dir = tempfile::tempdir().unwrap();
    let settings = write(dir.path(), "settings.toml", &pool());
    assert_kit_passed_everything(&test_plugin(
        &planted_plugin("pool"),
        Path::new(&settings),
        &["--node-class", "small"],
    ));
}

#[test]
fn the_node_class_comes_from_the_settings_when_they_name_one() {
    let run = kit("pool", &pool(), &[]);
    assert!(
        run.1
            .starts_with("node class `small`: the one the settings name\n"),
        "{}",
        run.1
    );
    assert_kit_passed_everything(&run);
}

#[test]
fn the_kit_logs_only_warnings_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let settings = write(dir.path(), "settings.toml", &pool());
    let wasm = plugin("pool").display().to_string();
    let cache = shared_cache().display().to_string();
    let run = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_platform-gateway"));
        command.args([
            "test-plugin",
            &wasm,
            "--settings",
            &settings,
            "--cache",
            &cache,
        ]);
        let out = command.args(extra).env_remove("RUST_LOG").output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The report alone: no info line per plugin call next to it.
    let quiet = run(&[]);
    assert!(!quiet.contains(" INFO "), "{quiet}");
    // The plugin's log when asked.
    let loud = run(&["--log-level", "info"]);
    assert!(loud.contains("allocated m1"), "{loud}");
}

/// `machines` machines of class `small` for the planted fixture, with `bug` planted.
fn planted(bug: &str, machines: usize) -> String {
    format!("bug = {}\n{}", toml_str(bug), small_machines(machines))
}

/// The check `name` failed, saying `why`; the run failed.
fn assert_failed((ok, stdout, stderr): &(bool, String, String), name: &str, why: &str) {
    assert!(!ok, "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("FAIL  {name}")))
        .unwrap_or_else(|| panic!("no FAIL line for `{name}`:\n{stdout}"));
    assert!(line.contains(why), "{line}\n{stdout}");
}

#[test]
fn the_planted_fixture_without_a_bug_passes_every_check() {
    assert_kit_passed_everything(&kit("planted", &planted("none", 3), &[]));
}

#[test]
fn a_provision_answering_the_count_asked_not_taken_fails_whatever_the_inventory() {
    // Odd: the exhaustion itself asks for 2 with 1 left.
    assert_failed(
        &kit("planted", &planted("count", 3), &[]),
        "provisions until the inventory runs out",
        "1 node IDs for a count of 2",
    );
    // Even: the requests of 2 come out right; freeing one and asking for 2 does not.
    assert_failed(
        &kit("planted", &planted("count", 4), &[]),
        "a freed node is handed out again",
        "1 node IDs for a count of 2",
    );
}

#[test]
fn a_read_then_plain_write_fails_the_interleaved_check_on_every_run() {
    for _ in 0..3 {
        assert_failed(
            &kit("planted", &planted("racy", 3), &[]),
            "a provision that another takes a node from between its read and its write",
            "was handed out to both",
        );
    }
}

#[test]
fn a_provision_that_ignores_its_request_id_fails_the_idempotency_check() {
    assert_failed(
        &kit("planted", &planted("repeat", 3), &[]),
        "a provision repeated with its request ID gets the same nodes",
        "key the allocation on the request ID",
    );
}

#[test]
fn nodes_kept_after_an_answer_the_gateway_refuses_fail_the_kit() {
    assert_failed(
        &kit("planted", &planted("greedy", 3), &[]),
        "an answer the gateway refuses leaves no node allocated",
        "discovery still shows m1, m2, m3 there",
    );
}

#[test]
fn a_run_that_provisioned_nothing_fails_unless_the_author_says_so() {
    // Two classes in the settings and no --node-class: the plugin refuses the empty class.
    let two_classes = format!(
        "{}machines2 = [{{ id = \"x\", agent_address = \"http://10.0.1.1:37000\", node_class = \"large\" }}]\n",
        planted("none", 2)
    );
    let run = kit("planted", &two_classes, &[]);
    assert_failed(
        &run,
        "provision without a count creates one node",
        "invalid-request: no machine of class ``",
    );
    assert!(
        run.1
            .contains("the settings name `large`, `small`: choose one"),
        "{}",
        run.1
    );
    // Contract 0.2's invalid-request is not "does not provision", even when the author says so.
    let run = kit("planted", &two_classes, &["--no-provision"]);
    assert!(!run.0, "{}", run.1);

    // A plugin that does not provision fails without --no-provision...
    let clusters = r#"clusters = []"#;
    let run = kit("static_clusters", clusters, &[]);
    assert_failed(
        &run,
        "provision without a count creates one node",
        "unsupported: ",
    );
    assert!(run.1.contains("say so with --no-provision"), "{}", run.1);
    // ...and passes with it.
    let (ok, stdout, stderr) = kit("static_clusters", clusters, &["--no-provision"]);
    assert!(ok, "{stdout}\n{stderr}");
}

#[tokio::test]
async fn a_count_that_disagrees_with_its_node_ids_is_refused_and_the_nodes_given_back() {
    let config = format!(
        "[backends.planted]\nplugin = {}\n[backends.planted.settings]\n{}\n[[routes]]\nbackend = \"planted\"\n",
        toml_str(&plugin("planted").display().to_string()),
        planted("count", 1)
    );
    let gw = Gateway::start(&config).await;
    let request = |count: u32| {
        let mut body = provision_body("c1", "mongodb", "data", "small");
        body["provision"]["count"] = json!(count);
        body
    };
    // Two asked, one free: the plugin took m1 and answered a count of 2.
    let (status, body) = gw.post("/provision", &request(2)).await;
    assert_eq!(status, 502, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("1 node IDs for a count of 2")
            && text.contains("the gateway deprovisioned the node IDs it named (m1)"),
        "{body}"
    );
    // m1 is free again: no discovery shows it, and the next request gets it.
    assert_eq!(gw.discover().await, json!({ "clusters": [] }));
    let (status, body) = gw.post("/provision", &request(1)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("m1"), "{body}");
}

#[test]
fn a_wrong_node_class_fails_the_kit_when_the_plugin_must_provision() {
    let (ok, stdout, _) = kit("pool", &pool(), &["--node-class", "large"]);
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
    let (ok, stdout, stderr) = kit("static_clusters", clusters, &["--no-provision"]);
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
        stdout.ends_with("2 passed, 0 failed, 14 skipped\n"),
        "{stdout}"
    );
}

#[test]
fn a_plugin_whose_answers_break_the_contract_fails_the_kit() {
    let (ok, stdout, _) = kit("fault", "mode = \"invalid\"\n", &[]);
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
    let (ok, stdout, _) = kit("pool", &pool(), &["--memory", "128KiB"]);
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
    let settings = write(dir.path(), "settings.toml", &pool());
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

#[test]
fn a_plugin_file_that_is_not_webassembly_fails_in_one_line_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(dir.path(), "notes.wasm", "not wasm at all\n");
    let settings = write(dir.path(), "settings.toml", "");
    let (ok, stdout, _) = test_plugin(Path::new(&text), Path::new(&settings), &[]);
    assert!(!ok, "{stdout}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.contains("is not a usable component: it is not a WebAssembly file"),
        "{stdout}"
    );

    // Through `check`, a missing file says so once, naming the key.
    let config = write(
        dir.path(),
        "gateway.toml",
        "[backends.gone]\nplugin = \"nowhere.wasm\"\n\n[[routes]]\nbackend = \"gone\"\n",
    );
    let (ok, _, stderr) = run_cli(&["check", "--config", &config]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read plugin")
            && stderr.contains("(`backends.gone.plugin`)")
            && stderr.matches("No such file or directory").count() == 1,
        "{stderr}"
    );
}

#[test]
fn a_plugin_that_needs_outbound_http_is_told_the_kits_flag() {
    let (ok, stdout, _) = kit("http_probe", "", &[]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("FAIL  loads and starts within its limits")
            && stdout.contains("no --grant-http was given")
            && stdout.contains("`--grant-http https://api.example.com`")
            && !stdout.contains("grants = {"),
        "{stdout}"
    );
}

#[test]
fn the_help_says_what_inventory_the_kit_needs() {
    let (ok, help, _) = run_cli(&["test-plugin", "--help"]);
    assert!(ok);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("at least 2 free nodes of the node class")
            && help.contains("at most --max-nodes of the class")
            && help.contains("--no-provision"),
        "{help}"
    );
}

/// What an author sees when first serving a plugin: a supervisor polling `/readyz` while the
/// backends load gets 503s, and none of them is logged as a failure.
#[tokio::test]
async fn readyz_polls_during_start_up_are_not_logged_as_failures() {
    let work = Workdir::new();
    // A cold cache of its own: compiling the plugins keeps the gateway loading for a while.
    let config = format!(
        "[state]\ndir = \"state\"\n\n[backends.one]\nplugin = {}\n[backends.two]\nplugin = {}\n\
         [[routes]]\nbackend = \"one\"\n",
        toml_str(&plugin("pool").display().to_string()),
        toml_str(&plugin("fault").display().to_string()),
    );
    let gw = work.start_cold(&config).await;
    let (status, _) = gw.get("/readyz").await;
    assert_eq!(status, 503, "the test needs the gateway still loading");
    gw.wait_ready().await;
    // A later line: the log is ordered, so once it is there the 503's line would be too.
    let (status, _) = gw.get("/healthz").await;
    assert_eq!(status, 200);
    gw.wait_for_log("path=\"/healthz\"").await;
    assert!(!gw.log().contains("request failed"), "{}", gw.log());
}
