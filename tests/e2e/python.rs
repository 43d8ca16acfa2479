//! The Python example plugin (`examples/plugins/python-inventory`, the Python SDK in
//! `sdk/python`, built by its `build.sh` with componentize-py): the conformance kit passes it,
//! and the real gateway serves its lifecycle, its errors and its unexpected exceptions.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::support::{
    Gateway, Workdir, assert_error_shape, example_plugin, node_ids, provision_body, run_cli,
    shared_cache, toml_str,
};

const MACHINES: &str = r#"machines = [
  { id = "m1", agent_address = "http://10.0.0.1:37000", node_class = "small" },
  { id = "m2", agent_address = "http://10.0.0.2:37000", node_class = "small" },
  { id = "m3", agent_address = "http://10.0.0.3:37000", node_class = "small" },
  { id = "b1", agent_address = "http://10.0.1.1:37000", node_class = "large" },
]
"#;

/// The example's component, built once per process and compiled into the shared cache once
/// (per content: an up-to-date component is not rebuilt), before any test loads it: an 18 MB
/// Python component takes seconds to compile, and without this every test's gateway and the
/// kit would compile it at the same time.
fn python_inventory() -> PathBuf {
    static WARM: OnceLock<()> = OnceLock::new();
    let wasm = example_plugin("python-inventory");
    WARM.get_or_init(|| {
        let (ok, stdout, stderr) = run_cli(&[
            "call",
            &wasm.display().to_string(),
            "--cache",
            &shared_cache().display().to_string(),
            "discover",
        ]);
        assert!(ok, "{stdout}\n{stderr}");
    });
    wasm
}

/// A `[backends.NAME]` table for the Python example with `settings` (TOML lines). A Python
/// component needs more memory than a Rust one (the interpreter's heap, 12.7 MiB to start):
/// 32 MiB is ample.
fn inventory_backend(name: &str, settings: &str) -> String {
    let wasm = python_inventory();
    format!(
        "[backends.{name}]\nplugin = {}\nlimits = {{ memory = \"32MiB\", timeout = \"30s\" }}\n\
         [backends.{name}.settings]\n{settings}\n",
        toml_str(&wasm.display().to_string())
    )
}

fn one_inventory() -> String {
    format!(
        "{}[[routes]]\nbackend = \"inventory\"\n",
        inventory_backend("inventory", MACHINES)
    )
}

#[test]
fn the_python_example_passes_the_conformance_kit() {
    let wasm = python_inventory().display().to_string();
    let settings = xtask::root()
        .join("examples/plugins/python-inventory/settings.toml")
        .display()
        .to_string();
    let cache = shared_cache().display().to_string();
    let (ok, stdout, stderr) = run_cli(&[
        "test-plugin",
        &wasm,
        "--settings",
        &settings,
        "--node-class",
        "small",
        "--provisions",
        "--cache",
        &cache,
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("PASS  concurrent provisions never hand out one node twice"),
        "{stdout}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    let passed: u32 = last
        .strip_suffix(" passed, 0 failed, 0 skipped")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not every check passed:\n{stdout}"));
    assert!(passed >= 10, "{stdout}");
}

#[tokio::test]
async fn the_python_example_serves_the_lifecycle_through_the_gateway() {
    let gw = Gateway::start(&one_inventory()).await;
    assert_eq!(gw.discover().await, json!({ "clusters": [] }));

    let mut body = provision_body("c1", "mongodb", "data", "small");
    body["provision"]["count"] = json!(2);
    let (status, reply) = gw.post("/provision", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({ "count": 2, "node_ids": ["m1", "m2"] }));
    // The plugin's own log line, through the SDK's `log`, reaches the gateway's log.
    gw.wait_for_log("allocated m1, m2 to cluster `c1` group `data`")
        .await;

    assert_eq!(
        gw.discover().await,
        json!({ "clusters": [{ "cluster_id": "c1", "nodes": [
            { "agent_address": "http://10.0.0.1:37000", "node_id": "m1",
              "node_class": "small", "node_group": "data" },
            { "agent_address": "http://10.0.0.2:37000", "node_id": "m2",
              "node_class": "small", "node_group": "data" },
        ]}]})
    );

    // Asking for more than is free gets what is free; then nothing is: 503 naming the class.
    let mut more = provision_body("c2", "kafka", "brokers", "small");
    more["provision"]["count"] = json!(3);
    let (status, reply) = gw.post("/provision", &more).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({ "count": 1, "node_ids": ["m3"] }));
    let (status, reply) = gw.post("/provision", &more).await;
    assert_error_shape(status, &reply);
    assert_eq!(status, 503, "{reply}");
    let message = reply["error_msg"].as_str().unwrap();
    assert!(
        message.contains("backend `inventory`")
            && message.contains("no free machine of node class `small`: all 3 are allocated"),
        "{message}"
    );

    for (cluster, node) in [("c1", "m1"), ("c1", "m2"), ("c2", "m3")] {
        let (status, reply) = gw
            .post(
                "/deprovision",
                &json!({ "cluster_id": cluster, "node_id": node }),
            )
            .await;
        assert_eq!(status, 204, "{node}: {reply}");
        assert_eq!(reply, Value::Null, "204 has no body");
    }
    assert_eq!(node_ids(&gw.discover().await, "c1"), Vec::<String>::new());
    assert_eq!(gw.discover().await, json!({ "clusters": [] }));

    // A retry of a deprovision that succeeded is answered as done again; a node nobody
    // reports is not found.
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c1", "node_id": "m1" }),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c1", "node_id": "m9" }),
        )
        .await;
    assert_error_shape(status, &reply);
    assert_eq!(status, 404, "{reply}");
}

#[tokio::test]
async fn an_unknown_node_class_is_a_400_naming_the_backend() {
    let gw = Gateway::start(&one_inventory()).await;
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c1", "mongodb", "data", "huge"),
        )
        .await;
    assert_error_shape(status, &reply);
    assert_eq!(status, 400, "{reply}");
    let message = reply["error_msg"].as_str().unwrap();
    assert!(
        message.contains("backend `inventory`")
            && message.contains(
                "the inventory has no machine of node class `huge` (it has: large, small)"
            ),
        "{message}"
    );
}

#[tokio::test]
async fn a_retried_provision_with_one_idempotency_key_gets_the_same_machines() {
    let gw = Gateway::start(&one_inventory()).await;
    let body = provision_body("c1", "mongodb", "data", "small");
    let post = |key: &'static str| {
        let request = gw
            .client
            .post(gw.url("/provision"))
            .header("idempotency-key", key)
            .json(&body);
        async move {
            let reply = request.send().await.expect("POST");
            let status = reply.status().as_u16();
            (status, reply.json::<Value>().await.expect("JSON"))
        }
    };
    let (status, first) = post("retry-me").await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = post("retry-me").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(first, again, "a retry allocates nothing new");
    let (status, other) = post("another").await;
    assert_eq!(status, 200, "{other}");
    assert_ne!(other["node_ids"], first["node_ids"]);
    assert_eq!(node_ids(&gw.discover().await, "c1").len(), 2);
}

#[tokio::test]
async fn an_unexpected_python_exception_is_a_500_with_its_traceback_logged_not_a_502() {
    // A machine without its `agent_address`: the example builds its machines with
    // `Machine(**entry)`, so Python raises a TypeError, which no code catches but the SDK.
    let work = Workdir::new();
    let config = format!(
        "{}[[routes]]\nbackend = \"broken\"\n",
        inventory_backend(
            "broken",
            "machines = [{ id = \"m1\", node_class = \"small\" }]"
        )
    );
    let gw = work.start(&config).await;
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c1", "mongodb", "data", "small"),
        )
        .await;
    assert_error_shape(status, &reply);
    assert_eq!(status, 500, "{reply}");
    let message = reply["error_msg"].as_str().unwrap();
    assert!(
        message.contains("backend `broken`")
            && message.contains("provision failed: TypeError:")
            && message.contains("agent_address"),
        "{message}"
    );
    // The traceback, from the provider's code on, went to the gateway's log at error.
    gw.wait_for_log("Traceback (most recent call last)").await;
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("provision failed: TypeError")),
        "{log}"
    );
    assert!(log.contains("app.py\", line"), "{log}");
}

#[test]
fn the_python_example_needs_about_thirteen_mib_to_start_and_runs_in_sixteen() {
    let wasm = python_inventory().display().to_string();
    let settings = xtask::root()
        .join("examples/plugins/python-inventory/settings.toml")
        .display()
        .to_string();
    let cache = shared_cache().display().to_string();
    let kit = |memory: &str| {
        run_cli(&[
            "test-plugin",
            &wasm,
            "--settings",
            &settings,
            "--node-class",
            "small",
            "--provisions",
            "--cache",
            &cache,
            "--memory",
            memory,
        ])
    };
    // 12.7 MiB when measured (the guide's figure): CPython's heap, the snapshot of the import.
    let (ok, stdout, _) = kit("12MiB");
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("FAIL  loads and starts within its limits")
            && stdout.contains("of memory to start"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = kit("16MiB");
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed, 0 skipped"), "{stdout}");
}
