//! Every refusal is a 4xx in the error shape, and changes nothing.

use serde_json::{Value, json};

use crate::support::{Gateway, assert_error_shape, pool_backend, provision_body};

fn mongodb_only() -> String {
    format!(
        "{}[[routes]]\nstore = \"mongodb\"\nbackend = \"pool\"\n\n[server]\nmax_body_size = \"4KiB\"\n",
        pool_backend("pool", &[("m1", "small"), ("m2", "small")])
    )
}

async fn refused(gw: &Gateway, path: &str, body: &Value, status: u16) -> Value {
    let (got, reply) = gw.post(path, body).await;
    assert_eq!(got, status, "{path} {body} -> {reply}");
    assert_error_shape(got, &reply);
    reply
}

#[tokio::test]
async fn bad_provision_bodies_get_400_in_the_error_shape_and_allocate_nothing() {
    let gw = Gateway::start(&mongodb_only()).await;
    let valid = provision_body("c1", "mongodb", "data", "small");

    // Malformed JSON.
    let (status, reply) = gw
        .post_raw(
            "/provision",
            "application/json",
            b"{\"cluster\": {".to_vec(),
        )
        .await;
    assert_eq!(status, 400);
    assert_error_shape(status, &reply);
    assert_eq!(reply["error_msg"], json!("request body is not valid JSON"));

    // A missing field, named.
    let mut missing = valid.clone();
    missing["cluster"].as_object_mut().unwrap().remove("store");
    let reply = refused(&gw, "/provision", &missing, 400).await;
    assert!(
        reply["error_cause"].as_str().unwrap().contains("store"),
        "{reply}"
    );

    // A wrong type, named with its path.
    let mut wrong = valid.clone();
    wrong["cluster"]["nodes"]["data"]["desired_count"] = json!("three");
    let reply = refused(&gw, "/provision", &wrong, 400).await;
    let cause = reply["error_cause"].as_str().unwrap();
    assert!(cause.contains("desired_count"), "{cause}");

    // A negative count.
    let mut negative = valid.clone();
    negative["provision"]["count"] = json!(-1);
    refused(&gw, "/provision", &negative, 400).await;

    // An undefined node group: the defined ones are listed.
    let mut unknown = valid.clone();
    unknown["provision"]["node_group_id"] = json!("arbiter");
    let reply = refused(&gw, "/provision", &unknown, 400).await;
    assert_eq!(reply["node_groups"], json!(["data"]));
    assert!(reply["error_msg"].as_str().unwrap().contains("`arbiter`"));

    // No route for the store: a 4xx naming what did not match.
    let reply = refused(
        &gw,
        "/provision",
        &provision_body("c1", "zookeeper", "data", "small"),
        422,
    )
    .await;
    assert!(
        reply["error_msg"].as_str().unwrap().contains("zookeeper"),
        "{reply}"
    );

    // Not JSON at all, and too large.
    let (status, reply) = gw
        .post_raw("/provision", "text/plain", b"hi".to_vec())
        .await;
    assert_eq!(status, 415);
    assert_error_shape(status, &reply);
    assert_eq!(
        reply["error_cause"],
        json!("the Content-Type header is missing or is not application/json")
    );
    let mut huge = valid.clone();
    huge["cluster"]["attributes"] = json!({ "blob": "x".repeat(8 << 10) });
    refused(&gw, "/provision", &huge, 413).await;

    // Nothing was allocated by any of it.
    assert_eq!(gw.discover().await, json!({ "clusters": [] }));
}

/// Replicante's models ignore fields they do not know, so a newer Core may send one: the gateway
/// reads past it (and counts it), at every level of the body.
#[tokio::test]
async fn fields_the_gateway_does_not_know_are_ignored_and_counted() {
    let gw = Gateway::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}",
        mongodb_only()
    ))
    .await;
    let mut body = provision_body("c1", "mongodb", "data", "small");
    body["from_a_newer_core"] = json!({ "anything": [1, 2] });
    body["cluster"]["placement"] = json!("rack-1");
    body["cluster"]["nodes"]["data"]["tier"] = json!("gold");
    body["provision"]["priority"] = json!(7);
    let (status, reply) = gw.post("/provision", &body).await;
    assert_eq!(status, 200, "{reply}");
    let node = reply["node_ids"][0].as_str().unwrap().to_string();
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c1", "node_id": node, "reason": "scale-in" }),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    let metrics = gw
        .client
        .get(format!("{}/metrics", gw.admin.as_ref().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("platform_gateway_request_unknown_fields_total 5"),
        "{metrics}"
    );
    // Each new name is logged once, and a second request with the same names adds no line.
    gw.wait_for_log("from_a_newer_core").await;
    let (status, _) = gw.post("/provision", &body).await;
    assert_eq!(status, 200);
    let lines = gw
        .log()
        .lines()
        .filter(|l| l.contains("does not know"))
        .count();
    assert_eq!(lines, 5, "{}", gw.log());
}

#[tokio::test]
async fn bad_deprovision_bodies_get_400_and_unknown_nodes_404() {
    let gw = Gateway::start(&mongodb_only()).await;
    refused(&gw, "/deprovision", &json!({ "cluster_id": "c1" }), 400).await;
    refused(
        &gw,
        "/deprovision",
        &json!({ "cluster_id": "c1", "node_id": 7 }),
        400,
    )
    .await;
    refused(
        &gw,
        "/deprovision",
        &json!({ "cluster_id": "c1", "node_id": "" }),
        400,
    )
    .await;
    let reply = refused(
        &gw,
        "/deprovision",
        &json!({ "cluster_id": "c1", "node_id": "m9" }),
        404,
    )
    .await;
    assert!(
        reply["error_msg"].as_str().unwrap().contains("m9"),
        "{reply}"
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_use_the_error_shape() {
    let gw = Gateway::start(&mongodb_only()).await;
    let (status, reply) = gw.get("/nodes").await;
    assert_eq!(status, 404);
    assert_error_shape(status, &reply);
    let (status, reply) = gw.get("/provision").await;
    assert_eq!(status, 405);
    assert_error_shape(status, &reply);
    let (status, reply) = gw.post("/discover", &json!({})).await;
    assert_eq!(status, 405);
    assert_error_shape(status, &reply);
    let (status, reply) = gw.get("/healthz").await;
    assert_eq!((status, reply), (200, json!({ "status": "ok" })));
}
