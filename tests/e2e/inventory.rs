//! What the Python and JavaScript example plugins (`examples/plugins/python-inventory` and
//! `js-inventory`, the same fixed inventory of machines allocated with compare-and-swap) are
//! tested with alike: the build and compile, the backend table, the conformance kit, and the
//! lifecycle, the unknown node class and the retried provision through the real gateway. Each
//! language's file names its [`Example`] and keeps its own tests.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::support::{
    self, Gateway, Workdir, assert_error_shape, example_plugin, node_ids, provision_body, run_cli,
    shared_cache, test_plugin, toml_str,
};

/// The inventory every test but the broken ones serves: three small machines and a large one.
pub fn machines() -> String {
    support::machines(&[
        ("m1", "small"),
        ("m2", "small"),
        ("m3", "small"),
        ("b1", "large"),
    ])
}

/// One example plugin and what its tests expect of it where the languages differ.
pub struct Example {
    /// Its folder under `examples/plugins`.
    pub name: &'static str,
    /// The memory limit of its backend in a gateway's config.
    pub memory: &'static str,
    /// The `Retry-After` its 503 for an exhausted node class carries: its own hint, or the
    /// gateway's second when it gives none.
    pub retry_after: &'static str,
    /// What its 400 for an unknown node class (`huge`) says.
    pub unknown_class: &'static str,
    /// Its component, once built and compiled.
    pub compiled: OnceLock<PathBuf>,
}

impl Example {
    /// The example's component, built by its `build.sh` and compiled into the shared cache
    /// once per test process (per content: an up-to-date component is not rebuilt), before any
    /// test loads it: the component carries an interpreter or an engine and takes seconds to
    /// compile, and without this every test's gateway and the kit would compile it at once.
    pub fn wasm(&self) -> PathBuf {
        self.compiled
            .get_or_init(|| {
                let wasm = example_plugin(self.name);
                let path = wasm.display().to_string();
                let cache = shared_cache().display().to_string();
                let (ok, stdout, stderr) = run_cli(&["call", &path, "discover", "--cache", &cache]);
                assert!(ok, "{stdout}\n{stderr}");
                wasm
            })
            .clone()
    }

    /// A `[backends.NAME]` table for the example with `settings` (TOML lines).
    pub fn backend(&self, name: &str, settings: &str) -> String {
        format!(
            "[backends.{name}]\nplugin = {}\nlimits = {{ memory = {}, timeout = \"30s\" }}\n\
             [backends.{name}.settings]\n{settings}\n",
            toml_str(&self.wasm().display().to_string()),
            toml_str(self.memory)
        )
    }

    /// A config with one backend `inventory` serving [`machines`], and a route to it.
    fn one_inventory(&self) -> String {
        format!(
            "{}[[routes]]\nbackend = \"inventory\"\n",
            self.backend("inventory", &machines())
        )
    }

    /// `platform-gateway test-plugin` on the example with its sample settings and `extra` flags.
    pub fn kit(&self, extra: &[&str]) -> (bool, String, String) {
        let settings = xtask::root()
            .join("examples/plugins")
            .join(self.name)
            .join("settings.toml");
        test_plugin(&self.wasm(), &settings, extra)
    }
}

/// The conformance kit, provisions included, passes every one of at least ten checks.
pub fn passes_the_conformance_kit(example: &Example) {
    crate::support::assert_kit_passed_everything(&example.kit(&[
        "--node-class",
        "small",
        "--provisions",
    ]));
}

/// Provision, discover, exhaust a class, deprovision and retry a deprovision through the
/// gateway.
pub async fn serves_the_lifecycle_through_the_gateway(example: &Example) {
    let gw = Gateway::start(&example.one_inventory()).await;
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
    // with the plugin's own retry hint if it gives one.
    let mut more = provision_body("c2", "kafka", "brokers", "small");
    more["provision"]["count"] = json!(3);
    let (status, reply) = gw.post("/provision", &more).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({ "count": 1, "node_ids": ["m3"] }));
    let (status, headers, reply) = gw.post_with_headers("/provision", &more).await;
    assert_error_shape(status, &reply);
    assert_eq!(status, 503, "{reply}");
    assert_eq!(headers["retry-after"], example.retry_after, "{headers:?}");
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

/// A node class the inventory does not have is the plugin's 400, naming the backend.
pub async fn an_unknown_node_class_is_a_400_naming_the_backend(example: &Example) {
    let gw = Gateway::start(&example.one_inventory()).await;
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
        message.contains("backend `inventory`") && message.contains(example.unknown_class),
        "{message}"
    );
}

/// A provision retried with its `Idempotency-Key` gets the machines of its first attempt; one
/// with another key gets others.
pub async fn a_retried_provision_with_one_idempotency_key_gets_the_same_machines(
    example: &Example,
) {
    let gw = Gateway::start(&example.one_inventory()).await;
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

/// A backend `broken` whose settings make the example's code throw where nothing catches it
/// but the SDK, and where that shows.
pub struct Unexpected<'a> {
    /// The backend's settings (TOML lines).
    pub settings: &'a str,
    /// What the 500's message says besides naming the backend.
    pub message: &'a [&'a str],
    /// The line of the language's trace (a traceback, a stack) the log shows first.
    pub trace: &'a str,
    /// What the line logged at error says.
    pub error: &'a str,
    /// A frame of the provider's own code in the trace.
    pub frame: &'a str,
}

/// An exception nothing in the plugin catches is the SDK's 500 (not a 502: the plugin did not
/// crash), and its trace, from the provider's code on, goes to the gateway's log at error.
pub async fn an_unexpected_exception_is_a_500_with_its_trace_logged(
    example: &Example,
    unexpected: Unexpected<'_>,
) {
    let work = Workdir::new();
    let config = format!(
        "{}[[routes]]\nbackend = \"broken\"\n",
        example.backend("broken", unexpected.settings)
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
            && unexpected.message.iter().all(|part| message.contains(part)),
        "{message}"
    );
    gw.wait_for_log(unexpected.trace).await;
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains(unexpected.error)),
        "{log}"
    );
    assert!(log.contains(unexpected.frame), "{log}");
}
