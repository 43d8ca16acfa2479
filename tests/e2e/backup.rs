//! Backing up and restoring the embedded state store with `state export` and `state import`:
//! back up, wipe, restore, and the pool hands out exactly what it had not handed out before.

use crate::support::{Workdir, indexed_owner, node_ids, pool_backend, provision_body, run_cli};

#[tokio::test]
async fn a_backup_made_by_state_export_restores_the_same_allocations() {
    let dir = Workdir::new();
    let config = format!(
        "{}[[routes]]\nbackend = \"pool\"\n",
        pool_backend("pool", &[("m1", "small"), ("m2", "small"), ("m3", "small")])
    );
    let gw = dir.start(&config).await;
    for _ in 0..2 {
        let (status, body) = gw
            .post(
                "/provision",
                &provision_body("c1", "mongodb", "data", "small"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let allocated = node_ids(&gw.discover().await, "c1");
    assert_eq!(allocated.len(), 2, "{allocated:?}");
    let path = dir.path().join("gateway.toml").display().to_string();

    // redb lets one process open the store: while the gateway serves, export says so.
    let (ok, _, stderr) = run_cli(&["state", "export", "--config", &path]);
    assert!(!ok);
    assert!(stderr.contains("in use by a running gateway"), "{stderr}");

    // Stop, back up, wipe, restore.
    gw.stop();
    let (ok, dump, stderr) = run_cli(&["state", "export", "--config", &path]);
    assert!(ok, "{stderr}");
    let backup = dir.path().join("backup.json");
    std::fs::write(&backup, &dump).unwrap();
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let backup = backup.display().to_string();
    let (ok, _, stderr) = run_cli(&["state", "import", "--config", &path, &backup]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("imported into"), "{stderr}");
    // A second import into the now full store is refused without --replace.
    let (ok, _, stderr) = run_cli(&["state", "import", "--config", &path, &backup]);
    assert!(!ok);
    assert!(stderr.contains("--replace"), "{stderr}");

    // The ownership index came back with it, read before a discovery could rebuild it.
    let config_file = dir.path().join("gateway.toml");
    for node in &allocated {
        assert_eq!(
            indexed_owner(&config_file, "c1", node).as_deref(),
            Some("pool"),
            "{node} not restored into the ownership index"
        );
    }

    let gw = dir.start(&config).await;
    assert_eq!(node_ids(&gw.discover().await, "c1"), allocated);
    // The pool remembers what it handed out: the one machine left, then none.
    let (status, body) = gw
        .post(
            "/provision",
            &provision_body("c1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let third = body["node_ids"][0].as_str().unwrap().to_string();
    assert!(!allocated.contains(&third), "{third} was handed out twice");
    let (status, body) = gw
        .post(
            "/provision",
            &provision_body("c1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    // And a restored node is deprovisioned by its owner.
    let (status, body) = gw
        .post(
            "/deprovision",
            &serde_json::json!({ "cluster_id": "c1", "node_id": allocated[0] }),
        )
        .await;
    assert_eq!(status, 204, "{body}");
}
