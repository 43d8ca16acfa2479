//! Both contract versions behind one endpoint: a plugin built against 0.1.0 before 0.2.0 existed
//! (`tests/fixtures/*-contract-0.1.0.wasm`, built from commit 01526c9) serves unchanged beside
//! the 0.2.0 plugins, and what 0.2 adds reaches the client: `unsupported` as 501, the retry hint
//! as `Retry-After`, the request ID derived from `Idempotency-Key`.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::support::{
    self, Gateway, assert_error_shape, fault_backend, node_ids, plugin, provision_body, run_cli,
    shared_cache, static_backend, toml_str,
};

/// A plugin built against contract 0.1.0, before this gateway knew 0.2.0: a committed binary on
/// purpose (tests/fixtures/README.md), checked against the digest recorded there.
fn fixture(name: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let path = xtask::root().join(format!("tests/fixtures/{name}-contract-0.1.0.wasm"));
    let readme = std::fs::read_to_string(xtask::root().join("tests/fixtures/README.md")).unwrap();
    let digest: String = Sha256::digest(std::fs::read(&path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let row = readme
        .lines()
        .find(|line| line.starts_with(&format!("| `{name}-contract-0.1.0.wasm`")))
        .expect("the fixture is listed in tests/fixtures/README.md");
    assert!(
        row.contains(&digest),
        "{} changed: its digest {digest} is not the one recorded in tests/fixtures/README.md",
        path.display()
    );
    path
}

fn machines() -> String {
    support::machines(&[("m1", "small"), ("m2", "small")])
}

fn pool_at(name: &str, wasm: &std::path::Path) -> String {
    format!(
        "[backends.{name}]\nplugin = {}\n[backends.{name}.settings]\n{}\n",
        toml_str(&wasm.display().to_string()),
        machines()
    )
}

#[tokio::test]
async fn a_0_1_plugin_built_before_0_2_serves_unchanged_beside_a_0_2_plugin() {
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}{}[[routes]]\nname = \"old\"\ncluster_id = \"old-*\"\nbackend = \"old\"\n\n\
         [[routes]]\nname = \"new\"\nbackend = \"new\"\n",
        pool_at("old", &fixture("pool")),
        pool_at("new", &plugin("pool")),
    );
    let gw = Gateway::start(&config).await;

    let (status, old) = gw
        .post(
            "/provision",
            &provision_body("old-1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{old}");
    let (status, new) = gw
        .post(
            "/provision",
            &provision_body("new-1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{new}");

    let discovery = gw.discover().await;
    for (cluster, answer) in [("old-1", &old), ("new-1", &new)] {
        let ids = node_ids(&discovery, cluster);
        assert_eq!(
            ids,
            vec![answer["node_ids"][0].as_str().unwrap()],
            "{discovery}"
        );
        let node = discovery["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cluster_id"] == cluster)
            .map(|c| c["nodes"][0].clone())
            .unwrap();
        assert_eq!(node["node_class"], "small", "{node}");
        assert_eq!(node["node_group"], "data", "{node}");
    }

    for (cluster, answer) in [("old-1", &old), ("new-1", &new)] {
        let node_id = answer["node_ids"][0].as_str().unwrap();
        let (status, body) = gw
            .post(
                "/deprovision",
                &json!({ "cluster_id": cluster, "node_id": node_id }),
            )
            .await;
        assert_eq!(status, 204, "{cluster}: {body}");
    }
    let discovery = gw.discover().await;
    assert!(node_ids(&discovery, "old-1").is_empty(), "{discovery}");
    assert!(node_ids(&discovery, "new-1").is_empty(), "{discovery}");

    // Each backend's contract is visible to the operator.
    let (status, backends) = gw.admin("/admin/backends", None).await;
    assert_eq!(status, 200, "{backends}");
    let contract = |name: &str| {
        backends["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .map(|b| b["contract"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(contract("old"), "replicante:platform@0.1.0", "{backends}");
    assert_eq!(contract("new"), "replicante:platform@0.2.0", "{backends}");
}

#[tokio::test]
async fn unsupported_is_a_501_and_a_retry_hint_becomes_retry_after() {
    let config = format!(
        "{}{}[[routes]]\nname = \"busy\"\ncluster_id = \"busy-*\"\nbackend = \"busy\"\n\n\
         [[routes]]\nname = \"rest\"\nbackend = \"fixed\"\n",
        static_backend("fixed", "[]"),
        fault_backend("busy", "busy", ""),
    );
    let gw = Gateway::start(&config).await;

    let (status, body) = gw
        .post(
            "/provision",
            &provision_body("c1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 501, "{body}");
    assert_error_shape(status, &body);
    assert!(
        body["error_msg"].as_str().unwrap().contains("fixed"),
        "the error names the backend: {body}"
    );

    let (status, headers, body) = gw
        .post_with_headers(
            "/provision",
            &provision_body("busy-1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_error_shape(status, &body);
    assert_eq!(headers["retry-after"], "7", "{headers:?}");
}

#[tokio::test]
async fn an_idempotency_key_gives_the_plugin_one_request_id_for_every_retry() {
    let config = format!(
        "{}[[routes]]\nbackend = \"echo\"\n",
        fault_backend("echo", "echo", "")
    );
    let gw = Gateway::start(&config).await;
    let body = provision_body("c1", "mongodb", "data", "small");
    let request_id = |answer: &Value| -> String {
        let echoed: Value =
            serde_json::from_str(answer["node_ids"][0].as_str().expect("an echoed request"))
                .unwrap();
        echoed["request_id"].as_str().unwrap().to_string()
    };

    let (status, first) = gw.post_with_key("/provision", &body, "order-17").await;
    assert_eq!(status, 200, "{first}");
    let (_, again) = gw.post_with_key("/provision", &body, "order-17").await;
    let (_, other) = gw.post_with_key("/provision", &body, "order-18").await;
    let (_, keyless) = gw.post("/provision", &body).await;
    let (_, keyless_again) = gw.post("/provision", &body).await;

    let id = request_id(&first);
    assert_eq!(id, request_id(&again), "a retry with the key keeps the ID");
    assert_ne!(id, request_id(&other));
    assert_ne!(request_id(&keyless), request_id(&keyless_again));
    for id in [id, request_id(&keyless)] {
        assert!(
            id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{id}"
        );
    }

    // The same key for another cluster is another request.
    let elsewhere = provision_body("c2", "mongodb", "data", "small");
    let (_, answer) = gw.post_with_key("/provision", &elsewhere, "order-17").await;
    assert_ne!(request_id(&first), request_id(&answer));

    let (status, body) = gw.post_with_key("/provision", &body, "bad key").await;
    assert_eq!(status, 400, "{body}");
    assert_error_shape(status, &body);
}

#[test]
fn the_kit_passes_a_0_1_plugin_and_skips_what_a_0_2_plugin_calls_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.toml");
    std::fs::write(&settings, machines()).unwrap();
    let settings = settings.display().to_string();
    let cache = shared_cache().display().to_string();

    let old = fixture("pool").display().to_string();
    let (ok, stdout, stderr) = run_cli(&[
        "test-plugin",
        &old,
        "--settings",
        &settings,
        "--cache",
        &cache,
        "--node-class",
        "small",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    // Contract 0.1 has no request ID, so nothing to check idempotency on.
    assert!(
        stdout.contains("SKIP  a provision repeated with its request ID")
            && stdout.ends_with("15 passed, 0 failed, 1 skipped\n"),
        "{stdout}"
    );

    std::fs::write(dir.path().join("static.toml"), "clusters = []\n").unwrap();
    let fixed = plugin("static_clusters").display().to_string();
    let static_settings = dir.path().join("static.toml").display().to_string();
    let (ok, stdout, stderr) = run_cli(&[
        "test-plugin",
        &fixed,
        "--settings",
        &static_settings,
        "--cache",
        &cache,
        "--no-provision",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("SKIP  provision without a count creates one node")
            && stdout.contains("unsupported"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("2 passed, 0 failed, 14 skipped\n"),
        "{stdout}"
    );
}
