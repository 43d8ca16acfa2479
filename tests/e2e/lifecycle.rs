//! The life of a node through the three endpoints, and both request schemas.

use serde_json::{Value, json};

use crate::support::{Gateway, fault_backend, node_ids, pool_backend, provision_body};

fn one_pool() -> String {
    format!(
        "{}[[routes]]\nbackend = \"pool\"\n",
        pool_backend(
            "pool",
            &[
                ("m1", "small"),
                ("m2", "small"),
                ("m3", "small"),
                ("m4", "large")
            ]
        )
    )
}

#[tokio::test]
async fn discover_on_an_empty_pool_lists_no_cluster() {
    let gw = Gateway::start(&one_pool()).await;
    assert_eq!(gw.discover().await, json!({ "clusters": [] }));
}

#[tokio::test]
async fn provision_discover_deprovision_discover() {
    let gw = Gateway::start(&one_pool()).await;

    let mut body = provision_body("c1", "mongodb", "data", "small");
    body["provision"]["count"] = json!(2);
    let (status, reply) = gw.post("/provision", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({ "count": 2, "node_ids": ["m1", "m2"] }));

    let discovery = gw.discover().await;
    assert_eq!(
        discovery,
        json!({ "clusters": [{ "cluster_id": "c1", "nodes": [
            { "agent_address": "http://10.0.0.1:37000", "node_id": "m1",
              "node_class": "small", "node_group": "data" },
            { "agent_address": "http://10.0.0.2:37000", "node_id": "m2",
              "node_class": "small", "node_group": "data" },
        ]}]})
    );

    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c1", "node_id": "m1" }),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    assert_eq!(reply, Value::Null, "204 has no body");
    assert_eq!(node_ids(&gw.discover().await, "c1"), vec!["m2"]);

    let (status, _) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c1", "node_id": "m2" }),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(gw.discover().await, json!({ "clusters": [] }));

    // Deprovisioned nodes are not replaced: the machines are free for the next provision only.
    let (status, reply) = gw.post("/provision", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["count"], json!(2));
}

#[tokio::test]
async fn provision_allocates_only_the_requested_class_and_says_when_it_got_fewer() {
    let gw = Gateway::start(&one_pool()).await;
    let mut body = provision_body("c1", "kafka", "brokers", "large");
    body["provision"]["count"] = json!(3);
    let (status, reply) = gw.post("/provision", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({ "count": 1, "node_ids": ["m4"] }));

    // None left of that class: a clear error naming the backend, with a retry hint.
    let (status, reply) = gw.post("/provision", &body).await;
    assert_eq!(status, 503, "{reply}");
    let message = reply["error_msg"].as_str().unwrap();
    assert!(message.contains("backend `pool`"), "{message}");
    assert!(
        message.contains("no free machine of node class `large`"),
        "{message}"
    );

    // A class the pool does not have at all is the client's mistake.
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c1", "kafka", "brokers", "huge"),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
}

/// The fault fixture in `echo` mode answers with the request it received, so these tests see
/// exactly what the gateway resolved for the plugin.
async fn echo(gw: &Gateway, body: &Value) -> Value {
    let (status, reply) = gw.post("/provision", body).await;
    assert_eq!(status, 200, "{reply}");
    let id = reply["node_ids"][0].as_str().expect("one node id");
    serde_json::from_str(id).expect("the echo is JSON")
}

fn echo_gateway() -> String {
    format!(
        "{}[[routes]]\nbackend = \"echo\"\n",
        fault_backend("echo", "echo", "")
    )
}

#[tokio::test]
async fn seed_schema_group_version_attributes_and_default_count() {
    let gw = Gateway::start(&echo_gateway()).await;
    let body = json!({
        "cluster": {
            "cluster_id": "c1", "store": "mongodb", "store_version": "4.0",
            "attributes": { "zone": "a", "tags": { "team": "db", "env": "dev" }, "drop": 1 },
            "nodes": { "data": {
                "attributes": { "tags": { "env": "prod" }, "drop": null, "disk": 100 },
                "desired_count": 3, "node_class": "small", "version": "4.2"
            }}
        },
        "provision": { "node_group_id": "data" }
    });
    let mut seen = echo(&gw, &body).await;
    // A new request ID per request without an Idempotency-Key (tests/e2e/contracts.rs).
    let request_id = seen.as_object_mut().unwrap().remove("request_id");
    assert!(request_id.is_some_and(|id| id.as_str().is_some_and(|id| id.starts_with("r-"))));
    assert_eq!(
        seen,
        json!({
            "cluster_id": "c1", "store": "mongodb", "store_version": "4.2",
            "node_group": "data", "node_class": "small", "desired_count": 3, "count": 1,
            "attributes": { "zone": "a", "tags": { "team": "db", "env": "prod" }, "disk": 100 },
        })
    );
}

#[tokio::test]
async fn newer_schema_store_version_count_and_absent_attributes() {
    let gw = Gateway::start(&echo_gateway()).await;
    let body = json!({
        "cluster": {
            "cluster_id": "c1", "store": "kafka", "store_version": "3.0",
            "nodes": {
                "brokers": { "desired_count": 5, "node_class": "large", "store_version": "3.1" },
                "other": { "desired_count": 1, "node_class": "small" }
            }
        },
        "provision": { "node_group_id": "brokers", "count": 4 }
    });
    let seen = echo(&gw, &body).await;
    assert_eq!(seen["store_version"], json!("3.1"));
    assert_eq!(seen["count"], json!(4));
    assert_eq!(seen["attributes"], json!({}));

    // A group with no version of its own gets the cluster's.
    let mut other = body.clone();
    other["provision"] = json!({ "node_group_id": "other" });
    let seen = echo(&gw, &other).await;
    assert_eq!(seen["store_version"], json!("3.0"));
    assert_eq!(seen["count"], json!(1));
}
