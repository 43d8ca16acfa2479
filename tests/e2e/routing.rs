//! Several backends behind one endpoint: provision by route, discover merged.

use serde_json::json;

use crate::support::{Gateway, node_ids, pool_backend, provision_body};

fn two_pools() -> String {
    format!(
        "{}{}\
[[routes]]\nname = \"kafka\"\nstore = \"kafka\"\nbackend = \"blue\"\n\n\
[[routes]]\nname = \"prod\"\ncluster_id = \"prod-*\"\nbackend = \"green\"\n\n\
[[routes]]\nname = \"default\"\nbackend = \"blue\"\n",
        pool_backend(
            "blue",
            &[
                ("blue-1", "small"),
                ("blue-2", "small"),
                ("blue-3", "small")
            ]
        ),
        pool_backend("green", &[("green-1", "small"), ("green-2", "small")]),
    )
}

async fn provisioned(gw: &Gateway, cluster: &str, store: &str) -> String {
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body(cluster, store, "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    reply["node_ids"][0].as_str().unwrap().to_string()
}

#[tokio::test]
async fn routes_by_store_and_cluster_glob_and_discover_merges_both_backends() {
    let gw = Gateway::start(&two_pools()).await;
    // store = kafka wins over the cluster glob because it comes first.
    assert!(
        provisioned(&gw, "prod-1", "kafka")
            .await
            .starts_with("blue-")
    );
    assert!(
        provisioned(&gw, "prod-1", "mongodb")
            .await
            .starts_with("green-")
    );
    assert!(
        provisioned(&gw, "dev-1", "mongodb")
            .await
            .starts_with("blue-")
    );
    assert!(
        provisioned(&gw, "production", "mongodb")
            .await
            .starts_with("blue-")
    );

    let discovery = gw.discover().await;
    // prod-1 spans both backends and comes back as one cluster.
    assert_eq!(node_ids(&discovery, "prod-1"), vec!["blue-1", "green-1"]);
    assert_eq!(node_ids(&discovery, "dev-1"), vec!["blue-2"]);
    assert_eq!(node_ids(&discovery, "production"), vec!["blue-3"]);
    let clusters: Vec<&str> = discovery["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster_id"].as_str().unwrap())
        .collect();
    assert_eq!(clusters, vec!["dev-1", "prod-1", "production"]);

    // Each node is deprovisioned by the backend that owns it.
    for node in ["green-1", "blue-1"] {
        let (status, reply) = gw
            .post(
                "/deprovision",
                &json!({ "cluster_id": "prod-1", "node_id": node }),
            )
            .await;
        assert_eq!(status, 204, "{node}: {reply}");
    }
    assert!(node_ids(&gw.discover().await, "prod-1").is_empty());
}
