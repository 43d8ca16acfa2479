//! Many providers behind one endpoint: two pools from one component and a `static` backend,
//! with the route table, discovery fan-out, failure policies and ownership done fully.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::support::{
    Gateway, Workdir, assert_error_shape, fault_backend, fault_backend_with, node_ids, plugin,
    pool_backend, provision_body, run_cli, static_backend, toml_str,
};

fn backends() -> String {
    format!(
        "{}{}{}",
        pool_backend(
            "blue",
            &[
                ("blue-1", "small"),
                ("blue-2", "small"),
                ("blue-3", "small"),
                ("blue-big-1", "large"),
            ]
        ),
        pool_backend(
            "green",
            &[
                ("green-1", "small"),
                ("green-2", "small"),
                ("green-3", "small"),
                ("green-4", "small"),
                ("green-5", "small"),
            ]
        ),
        static_backend(
            "legacy",
            r#"[
  { cluster_id = "billing", nodes = [
    { node_id = "db-1", agent_address = "http://10.9.0.1:37000", node_class = "m5", node_group = "data" },
    { node_id = "db-2", agent_address = "http://10.9.0.2:37000" },
  ] },
  { cluster_id = "shared", nodes = [
    { node_id = "blue-1", agent_address = "http://10.9.0.3:37000" },
  ] },
]"#
        ),
    )
}

const ROUTES: &str = r#"
[[routes]]
name = "eu-kafka"
cluster_id = "eu-*"
store = "kafka"
backend = "green"

[[routes]]
name = "pinned-version"
store = "mongodb"
store_version = "4.2"
backend = "green"

[[routes]]
name = "arbiters"
node_group_id = "arbiter"
backend = "green"

[[routes]]
name = "large"
node_class = "large"
backend = "blue"

[[routes]]
name = "prod"
cluster_id = "prod-*"
backend = "green"

[[routes]]
name = "default"
backend = "blue"
"#;

fn config() -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}{ROUTES}",
        backends()
    )
}

fn body(cluster: &str, store: &str, version: &str, group: &str, class: &str) -> Value {
    json!({
        "cluster": {
            "cluster_id": cluster, "store": store, "store_version": "4.0",
            "nodes": { group: { "desired_count": 1, "node_class": class, "store_version": version } }
        },
        "provision": { "node_group_id": group }
    })
}

#[tokio::test]
async fn each_matching_key_and_combination_routes_where_expected() {
    let gw = Gateway::start(&config()).await;
    let cases = [
        // (cluster, store, version, group, class) -> (route, backend)
        (
            ("eu-1", "kafka", "3.0", "data", "small"),
            ("eu-kafka", "green"),
        ),
        (
            ("us-1", "kafka", "3.0", "data", "small"),
            ("default", "blue"),
        ),
        (
            ("eu-2", "mongodb", "4.2", "data", "small"),
            ("pinned-version", "green"),
        ),
        (
            ("eu-3", "mongodb", "4.0", "data", "small"),
            ("default", "blue"),
        ),
        (
            ("dev-1", "zookeeper", "3.8", "arbiter", "small"),
            ("arbiters", "green"),
        ),
        (
            ("prod-1", "mongodb", "4.0", "data", "large"),
            ("large", "blue"),
        ),
        (
            ("prod-1", "mongodb", "4.0", "data", "small"),
            ("prod", "green"),
        ),
        (
            ("dev-2", "mongodb", "4.0", "data", "small"),
            ("default", "blue"),
        ),
    ];
    for ((cluster, store, version, group, class), (route, backend)) in cases {
        let request = body(cluster, store, version, group, class);
        // The admin API explains the decision...
        let (status, explained) = gw.admin("/admin/route", Some(&request)).await;
        assert_eq!(status, 200, "{explained}");
        assert_eq!(
            explained["decision"],
            json!({ "by": "route", "route": route, "backend": backend,
                    "index": explained["decision"]["index"] }),
            "{cluster} {store} {version} {group} {class}"
        );
        // ...and the provision lands on that backend.
        let (status, reply) = gw.post("/provision", &request).await;
        assert_eq!(status, 200, "{reply}");
        let node = reply["node_ids"][0].as_str().unwrap();
        assert!(node.starts_with(backend), "{route}: got {node}");
    }

    // prod-1 spans both pools (the `large` route to blue, `prod` to green): one cluster.
    let discovery = gw.discover().await;
    assert_eq!(
        node_ids(&discovery, "prod-1"),
        vec!["blue-big-1", "green-4"]
    );
    // The static backend's clusters come through the same endpoint.
    assert_eq!(node_ids(&discovery, "billing"), vec!["db-1", "db-2"]);
    let billing = discovery["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster_id"] == "billing")
        .unwrap();
    assert_eq!(billing["nodes"][1]["node_class"], json!(""));
    assert_eq!(billing["nodes"][1]["node_group"], Value::Null);
}

#[tokio::test]
async fn shadowed_and_unknown_backend_rules_are_refused_at_load_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let write = |text: String| crate::support::write_config_in(dir.path(), &text);

    let shadowed = write(format!(
        "{}[[routes]]\nname = \"all-prod\"\ncluster_id = \"prod-*\"\nbackend = \"green\"\n\n\
         [[routes]]\nname = \"prod-kafka\"\ncluster_id = \"prod-eu\"\nstore = \"kafka\"\nbackend = \"blue\"\n",
        backends()
    ));
    let (ok, _, stderr) = run_cli(&["check", "--config", &shadowed]);
    assert!(!ok);
    assert!(stderr.contains("`prod-kafka` can never match"), "{stderr}");
    assert!(stderr.contains("`all-prod`"), "{stderr}");

    let two_defaults = write(format!(
        "{}[[routes]]\nbackend = \"green\"\n\n[[routes]]\nbackend = \"blue\"\n",
        backends()
    ));
    let (ok, _, stderr) = run_cli(&["check", "--config", &two_defaults]);
    assert!(!ok);
    assert!(stderr.contains("`routes[1]` can never match"), "{stderr}");
    assert!(stderr.contains("`routes[0]`"), "{stderr}");

    let unknown = write(format!(
        "{}[[routes]]\nname = \"cloud\"\nbackend = \"aws\"\n",
        backends()
    ));
    let (ok, _, stderr) = run_cli(&["serve", "--config", &unknown]);
    assert!(!ok);
    assert!(stderr.contains("unknown backend `aws`"), "{stderr}");
    assert!(stderr.contains("defined: blue, green, legacy"), "{stderr}");
}

#[tokio::test]
async fn discovery_asks_backends_concurrently() {
    // A target that holds each request until all three have arrived: three backends that each
    // ask it during their discovery are answered only if they ask at the same time. Asked one
    // after another, the first would wait until its deadline and the target answer nobody.
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let answered = Arc::new(AtomicUsize::new(0));
    let app = {
        let (barrier, answered) = (barrier.clone(), answered.clone());
        axum::Router::new().route(
            "/",
            axum::routing::get(move || async move {
                barrier.wait().await;
                answered.fetch_add(1, Ordering::SeqCst);
                "together"
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The probe fails every discovery with a report of its request, so the discovery fails:
    // what it shows is in the target's count and the reports.
    let config: String = ["a", "b", "c"]
        .iter()
        .map(|name| {
            format!(
                "[backends.{name}]\nplugin = {}\ngrants = {{ http = [{}] }}\nlimits = {{ timeout = \"10s\" }}\n\
                 [backends.{name}.settings]\ntarget = {}\n\n",
                toml_str(&plugin("http_probe").display().to_string()),
                toml_str(&format!("http://{target}")),
                toml_str(&target),
            )
        })
        .collect();
    let gw = Gateway::start(&config).await;
    let (_, reply) = gw.get("/discover").await;
    assert_eq!(answered.load(Ordering::SeqCst), 3, "{reply}");
    let reply = reply.to_string();
    assert_eq!(
        reply.matches("http: status 200, 8 bytes").count(),
        3,
        "{reply}"
    );
}

#[tokio::test]
async fn the_backends_of_a_generation_compile_in_parallel() {
    // Two components not in the (new, empty) cache: compiled one after the other, the first
    // would finish before the second started; in parallel, both start before either ends.
    // The gateway's compile threads are one per core: one core cannot show it.
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("one core: parallel compiles cannot be shown here");
        return;
    }
    let work = Workdir::new();
    let gw = work
        .start_cold(&format!(
            "{}{}[[routes]]\nbackend = \"pool\"\n",
            pool_backend("pool", &[("m1", "small")]),
            static_backend("fixed", "[]")
        ))
        .await;
    gw.wait_ready().await;
    let log = gw.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("compiling plugin (not in the cache)") || l.contains("compiled plugin")
        })
        .collect();
    assert_eq!(lines.len(), 4, "{log}");
    assert!(
        lines[..2].iter().all(|l| l.contains("compiling plugin"))
            && lines[2..].iter().all(|l| l.contains("compiled plugin")),
        "compiled one after the other:\n{}",
        lines.join("\n")
    );
}

fn with_failing(mode: &str, policy: &str) -> String {
    format!(
        "[discovery]\non_backend_failure = \"{policy}\"\n\n{}{}",
        pool_backend("pool", &[("m1", "small")]),
        fault_backend("flaky", mode, "timeout = \"300ms\""),
    ) + "[[routes]]\nbackend = \"pool\"\n"
}

#[tokio::test]
async fn a_failed_or_timed_out_backend_fails_discovery_by_default() {
    for (mode, status_word) in [("trap", "crashed"), ("loop", "did not answer")] {
        let gw = Gateway::start(&with_failing(mode, "fail")).await;
        let (status, reply) = gw
            .post("/provision", &provision_body("c1", "s", "g", "small"))
            .await;
        assert_eq!(status, 200, "{reply}");
        let (status, reply) = gw.get("/discover").await;
        assert_eq!(status, 502, "{mode}: {reply}");
        assert_error_shape(status, &reply);
        assert!(
            reply["error_msg"].as_str().unwrap().contains("`flaky`"),
            "{reply}"
        );
        assert!(
            reply["error_cause"].as_str().unwrap().contains(status_word),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn the_partial_policy_answers_with_the_healthy_backends_and_names_the_failed() {
    for mode in ["trap", "loop"] {
        let gw = Gateway::start(&with_failing(mode, "partial")).await;
        let (status, reply) = gw
            .post("/provision", &provision_body("c1", "s", "g", "small"))
            .await;
        assert_eq!(status, 200, "{reply}");
        let (status, headers, reply) = gw.get_with_headers("/discover").await;
        assert_eq!(status, 200, "{mode}: {reply}");
        assert_eq!(node_ids(&reply, "c1"), vec!["m1"]);
        assert_eq!(headers["platform-gateway-failed-backends"], "flaky");
        gw.wait_for_log("discovery answered without this backend")
            .await;
    }
}

#[tokio::test]
async fn a_node_id_reported_by_two_backends_is_reported_not_dropped() {
    let gw = Gateway::start(&config()).await;
    // The pool hands out blue-1 to cluster `shared`, where the static backend lists a blue-1 too.
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("shared", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["node_ids"], json!(["blue-1"]));

    let (status, headers, discovery) = gw.get_with_headers("/discover").await;
    assert_eq!(status, 200);
    let shared = discovery["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster_id"] == "shared")
        .unwrap();
    let addresses: Vec<&str> = shared["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["agent_address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses.len(), 2, "both reports are kept: {shared}");
    assert_eq!(
        headers["platform-gateway-node-conflicts"],
        "shared/blue%2D1=blue,legacy"
    );
    gw.wait_for_log("node ID reported by several backends")
        .await;

    // The index knows who created it: deprovision goes to the pool, not to the static list.
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "shared", "node_id": "blue-1" }),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
}

#[tokio::test]
async fn deprovision_finds_nodes_known_only_through_discovery() {
    let config = format!(
        "{}{}{}{}",
        backends(),
        fault_backend_with(
            "ext-a",
            "echo",
            "",
            "cluster_id = \"ext\"\nnode_id = \"a-1\""
        ),
        fault_backend_with(
            "ext-b",
            "echo",
            "",
            "cluster_id = \"ext\"\nnode_id = \"b-1\""
        ),
        fault_backend_with(
            "twin",
            "echo",
            "",
            "cluster_id = \"billing\"\nnode_id = \"db-2\""
        ),
    ) + ROUTES;
    let gw = Gateway::start(&config).await;

    // Never provisioned here: a fresh discovery finds the backend that reports it. Each echo
    // backend accepts only its own node, so a 204 means the right one was asked.
    for node in ["b-1", "a-1"] {
        let (status, reply) = gw
            .post(
                "/deprovision",
                &json!({ "cluster_id": "ext", "node_id": node }),
            )
            .await;
        assert_eq!(status, 204, "{node}: {reply}");
    }
    // A static node reaches the static backend, which does not manage lifecycles: unsupported,
    // 501 (not a 400 that blames the client).
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "billing", "node_id": "db-1" }),
        )
        .await;
    assert_eq!(status, 501, "{reply}");
    let message = reply["error_msg"].as_str().unwrap();
    assert!(message.contains("backend `legacy`"), "{message}");
    assert!(
        message.contains("does not manage node lifecycles"),
        "{message}"
    );
    // Two backends claim billing/db-2: 409 naming both.
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "billing", "node_id": "db-2" }),
        )
        .await;
    assert_eq!(status, 409, "{reply}");
    let message = reply["error_msg"].as_str().unwrap();
    assert!(
        message.contains("`legacy`") && message.contains("`twin`"),
        "{message}"
    );
    // Nobody has it: 404, as Replicante expects for a missing resource.
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "ext", "node_id": "zz-9" }),
        )
        .await;
    assert_eq!(status, 404, "{reply}");
    assert_error_shape(status, &reply);
}

#[tokio::test]
async fn deprovision_after_the_rules_changed_still_reaches_the_owner_and_route_explains_it() {
    let work = Workdir::new();
    let gw = work.start(&config()).await;
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("prod-7", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["node_ids"], json!(["green-1"]));
    let (status, explained) = gw
        .admin(
            "/admin/route",
            Some(&json!({ "cluster_id": "prod-7", "node_id": "green-1" })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        explained["decision"],
        json!({ "by": "owner", "backend": "green" })
    );
    gw.stop();

    // Offline, `platform-gateway route` explains from the config file and the state store.
    let request = work.path().join("deprovision.json");
    std::fs::write(
        &request,
        r#"{"cluster_id": "prod-7", "node_id": "green-1"}"#,
    )
    .unwrap();
    let config_file = work.path().join("gateway.toml").display().to_string();
    let request = request.display().to_string();
    let (ok, stdout, stderr) = run_cli(&["route", "--config", &config_file, &request]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("=> backend `green`, from the ownership index"),
        "{stdout}"
    );
    let unknown = work.path().join("unknown.json");
    std::fs::write(&unknown, r#"{"cluster_id": "prod-7", "node_id": "nope"}"#).unwrap();
    let (ok, stdout, _) = run_cli(&[
        "route",
        "--config",
        &config_file,
        &unknown.display().to_string(),
    ]);
    assert!(ok);
    assert!(stdout.contains("not in the ownership index"), "{stdout}");
    let provision = work.path().join("provision.json");
    std::fs::write(
        &provision,
        provision_body("prod-7", "mongodb", "data", "small").to_string(),
    )
    .unwrap();
    let (ok, stdout, _) = run_cli(&[
        "route",
        "--config",
        &config_file,
        &provision.display().to_string(),
    ]);
    assert!(ok);
    assert!(
        stdout.contains("route 4 `prod` (cluster_id = \"prod-*\") -> green: matches"),
        "{stdout}"
    );
    assert!(
        stdout.contains("=> backend `green`, chosen by route `prod` (routes[4])"),
        "{stdout}"
    );

    // Now every provision goes to blue; the node still lives on green.
    let changed = format!("{}[[routes]]\nbackend = \"blue\"\n", backends());
    let gw = work.start(&changed).await;
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "prod-7", "node_id": "green-1" }),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    assert!(node_ids(&gw.discover().await, "prod-7").is_empty());
}

#[tokio::test]
async fn the_admin_api_lists_backends_and_routes_and_is_not_on_the_public_listener() {
    let gw = Gateway::start(&config()).await;
    let (status, reply) = gw.admin("/admin/backends", None).await;
    assert_eq!(status, 200);
    let backends = reply["backends"].as_array().unwrap();
    let names: Vec<&str> = backends
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["blue", "green", "legacy"]);
    // Two backends of one plugin: one digest.
    assert_eq!(backends[0]["digest"], backends[1]["digest"]);
    assert_ne!(backends[0]["digest"], backends[2]["digest"]);
    assert!(
        backends[0]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(backends[0]["limits"]["concurrency"], json!(16));

    let (status, reply) = gw.admin("/admin/routes", None).await;
    assert_eq!(status, 200);
    let routes: Vec<&str> = reply["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        routes,
        vec![
            "eu-kafka",
            "pinned-version",
            "arbiters",
            "large",
            "prod",
            "default"
        ]
    );
    assert_eq!(reply["discovery"]["on_backend_failure"], json!("fail"));

    // Separate state namespaces: each pool's allocations are its own.
    for _ in 0..2 {
        let (status, _) = gw
            .post("/provision", &provision_body("dev", "s", "g", "small"))
            .await;
        assert_eq!(status, 200);
    }
    let (status, reply) = gw
        .post("/provision", &provision_body("prod-1", "s", "g", "small"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply["node_ids"], json!(["green-1"]));

    let (status, reply) = gw.get("/admin/backends").await;
    assert_eq!(status, 404, "{reply}");
}
