//! The JavaScript example plugin (`examples/plugins/js-inventory`, the JavaScript SDK in
//! `sdk/js`, bundled with esbuild and built by its `build.sh` with componentize-js): the
//! conformance kit passes it, and the real gateway serves its lifecycle, its errors (with the
//! plugin's retry hint) and its unexpected exceptions.

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

/// The example, built by its `build.sh` and compiled into the shared cache once per test
/// process, before any test uses it: the gateways the tests start at once then load it from the
/// cache instead of each compiling the engine inside it (14 MB of WebAssembly).
fn inventory_wasm() -> PathBuf {
    static COMPILED: OnceLock<PathBuf> = OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let wasm = example_plugin("js-inventory");
            let path = wasm.display().to_string();
            let cache = shared_cache().display().to_string();
            let (ok, stdout, stderr) = run_cli(&["call", &path, "discover", "--cache", &cache]);
            assert!(ok, "{stdout}\n{stderr}");
            wasm
        })
        .clone()
}

/// A `[backends.NAME]` table for the JavaScript example with `settings` (TOML lines). A
/// JavaScript component carries its engine (SpiderMonkey) and needs about 10 MiB of memory to
/// start: 32 MiB is ample.
fn inventory_backend(name: &str, settings: &str) -> String {
    let wasm = inventory_wasm();
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

/// `platform-gateway test-plugin` on the example with its sample settings and `extra` flags.
fn kit(extra: &[&str]) -> (bool, String, String) {
    let wasm = inventory_wasm().display().to_string();
    let settings = xtask::root()
        .join("examples/plugins/js-inventory/settings.toml")
        .display()
        .to_string();
    let cache = shared_cache().display().to_string();
    let mut args = vec![
        "test-plugin",
        &wasm,
        "--settings",
        &settings,
        "--cache",
        &cache,
    ];
    args.extend(extra);
    run_cli(&args)
}

#[test]
fn the_javascript_example_passes_the_conformance_kit() {
    let (ok, stdout, stderr) = kit(&["--node-class", "small", "--provisions"]);
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

#[test]
fn a_javascript_plugin_without_the_memory_its_engine_needs_fails_to_start() {
    let (ok, stdout, _) = kit(&["--memory", "8MiB"]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("FAIL  loads and starts within its limits")
            && stdout.contains("of memory to start"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_javascript_example_serves_the_lifecycle_through_the_gateway() {
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

    // Asking for more than is free gets what is free; then nothing is: 503 naming the class,
    // with the plugin's own retry hint (`new Unavailable(..., { retryAfter: 60 })`).
    let mut more = provision_body("c2", "kafka", "brokers", "small");
    more["provision"]["count"] = json!(3);
    let (status, reply) = gw.post("/provision", &more).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({ "count": 1, "node_ids": ["m3"] }));
    let (status, headers, reply) = gw.post_with_headers("/provision", &more).await;
    assert_error_shape(status, &reply);
    assert_eq!(status, 503, "{reply}");
    assert_eq!(headers["retry-after"], "60", "{headers:?}");
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

    // A retry of a deprovision that succeeded is answered as done again (the gateway remembers
    // it); a node nobody reports is not found.
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
            && message.contains("the inventory has no machine of node class `huge`"),
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
async fn an_unexpected_javascript_exception_is_a_500_with_its_stack_logged_not_a_502() {
    // A machine whose `agent_address` is not a URL: the example checks it with `new URL(...)`
    // and catches nothing, so SpiderMonkey throws a TypeError that only the SDK catches.
    let work = Workdir::new();
    let config = format!(
        "{}[[routes]]\nbackend = \"broken\"\n",
        inventory_backend(
            "broken",
            "machines = [{ id = \"m1\", agent_address = \"not a url\", node_class = \"small\" }]"
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
            && message.contains("TypeError: URL constructor: not a url is not a valid URL"),
        "{message}"
    );
    // The stack, from the provider's code on, went to the gateway's log at error.
    gw.wait_for_log("provision: uncaught TypeError").await;
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("provision: uncaught TypeError")),
        "{log}"
    );
    assert!(log.contains("provision@build/plugin.js:"), "{log}");
}
