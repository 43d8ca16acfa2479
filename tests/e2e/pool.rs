//! The pool under concurrency, and across restarts.

use std::collections::HashSet;

use serde_json::json;

use crate::support::{Workdir, fault_backend, node_ids, pool_backend, provision_body};

#[tokio::test]
async fn sixty_four_concurrent_provisions_on_fifty_machines_allocate_each_machine_once() {
    let machines: Vec<(String, &str)> = (1..=50).map(|i| (format!("m{i:02}"), "small")).collect();
    let config = format!(
        "{}[[routes]]\nbackend = \"pool\"\n",
        pool_backend("pool", &machines).replace(
            "[backends.pool.settings]",
            "limits = { concurrency = 64, timeout = \"60s\" }\n[backends.pool.settings]"
        )
    );
    let work = Workdir::new();
    let gw = work.start(&config).await;

    let requests = (0..64).map(|i| {
        let gw = &gw;
        async move {
            gw.post(
                "/provision",
                &provision_body(&format!("c{}", i % 4), "mongodb", "data", "small"),
            )
            .await
        }
    });
    let replies = futures::future::join_all(requests).await;

    let mut allocated = Vec::new();
    let mut refused = 0;
    for (status, reply) in &replies {
        match status {
            200 => {
                assert_eq!(reply["count"], json!(1), "{reply}");
                allocated.push(reply["node_ids"][0].as_str().unwrap().to_string());
            }
            503 => {
                assert!(
                    reply["error_msg"]
                        .as_str()
                        .unwrap()
                        .contains("no free machine"),
                    "{reply}"
                );
                refused += 1;
            }
            other => panic!("unexpected {other}: {reply}"),
        }
    }
    let distinct: HashSet<&String> = allocated.iter().collect();
    assert_eq!(allocated.len(), 50, "every machine allocated");
    assert_eq!(distinct.len(), 50, "no machine allocated twice");
    assert_eq!(refused, 14);

    // Discovery agrees with what was acknowledged, cluster by cluster.
    let discovery = gw.discover().await;
    let mut discovered: Vec<String> = (0..4)
        .flat_map(|c| node_ids(&discovery, &format!("c{c}")))
        .collect();
    discovered.sort();
    allocated.sort();
    assert_eq!(discovered, allocated);
}

#[tokio::test]
async fn a_restart_keeps_allocations_and_ownership() {
    let work = Workdir::new();
    let pool = pool_backend("pool", &[("m1", "small"), ("m2", "small")]);
    let config = format!("{pool}[[routes]]\nbackend = \"pool\"\n");

    let gw = work.start(&config).await;
    let mut body = provision_body("c1", "mongodb", "data", "small");
    body["provision"]["count"] = json!(2);
    let (status, reply) = gw.post("/provision", &body).await;
    assert_eq!(status, 200, "{reply}");
    gw.stop();
    // The ownership index is on disk: read offline, before the next gateway's discovery could
    // record the owners again (the deprovisions below would succeed through a rebuilt index).
    let path = work.path().join("gateway.toml");
    for node in ["m1", "m2"] {
        assert_eq!(
            crate::support::indexed_owner(&path, "c1", node).as_deref(),
            Some("pool"),
            "{node}"
        );
    }

    // Allocations survive the restart.
    let gw = work.start(&config).await;
    assert_eq!(node_ids(&gw.discover().await, "c1"), vec!["m1", "m2"]);
    gw.stop();

    // With the rules now sending everything elsewhere, and a backend whose discovery traps,
    // deprovision still reaches the pool: a node lives where it was created.
    let changed = format!(
        "{pool}{}{}[[routes]]\nbackend = \"other\"\n",
        pool_backend("other", &[("o1", "small")]),
        fault_backend("broken", "trap", "")
    );
    let gw = work.start(&changed).await;
    assert_eq!(gw.get("/discover").await.0, 502, "discovery cannot answer");
    for node in ["m1", "m2"] {
        let (status, reply) = gw
            .post(
                "/deprovision",
                &json!({ "cluster_id": "c1", "node_id": node }),
            )
            .await;
        assert_eq!(status, 204, "{node}: {reply}");
    }
    gw.stop();

    let gw = work.start(&config).await;
    assert_eq!(gw.discover().await, json!({ "clusters": [] }));
}
