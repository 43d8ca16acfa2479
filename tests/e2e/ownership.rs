//! What the gateway remembers about nodes beside the plugins: retried deprovisions, owners of
//! nodes that vanished outside the gateway, state namespaces across a rename; and signals that
//! arrive while the gateway is still loading.

use serde_json::{Value, json};

use crate::support::{
    Workdir, indexed_owner, node_ids, plugin, pool_backend, provision_body, run_cli,
    static_backend, toml_str,
};

fn pool_config(name: &str, extra: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}{extra}[[routes]]\nbackend = \"{name}\"\n",
        pool_backend(name, &[("m1", "small"), ("m2", "small"), ("m3", "small")])
    )
}

#[tokio::test]
async fn a_retried_deprovision_is_answered_204_and_a_node_never_known_stays_404() {
    let gw = Workdir::new().start(&pool_config("pool", "")).await;
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let node = reply["node_ids"][0].as_str().unwrap().to_string();
    let request = json!({ "cluster_id": "c1", "node_id": node });
    let (status, reply) = gw.post("/deprovision", &request).await;
    assert_eq!(status, 204, "{reply}");
    // The client did not hear the first answer and retries: the node is gone, as it asked.
    for _ in 0..2 {
        let (status, reply) = gw.post("/deprovision", &request).await;
        assert_eq!(status, 204, "a retry of a done deprovision: {reply}");
    }
    gw.wait_for_log("node already deprovisioned through the gateway")
        .await;
    // The same node ID in another cluster was never deprovisioned: still unknown.
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c2", "node_id": node }),
        )
        .await;
    assert_eq!(status, 404, "{reply}");
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c1", "node_id": "never-seen" }),
        )
        .await;
    assert_eq!(status, 404, "{reply}");
}

async fn decision(gw: &crate::support::Gateway, cluster: &str, node: &str) -> Value {
    let (status, reply) = gw
        .admin(
            "/admin/route",
            Some(&json!({ "cluster_id": cluster, "node_id": node })),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    reply["decision"].clone()
}

#[tokio::test]
async fn the_index_forgets_a_node_its_backend_no_longer_reports() {
    let work = Workdir::new();
    let two = r#"[{ cluster_id = "c", nodes = [
        { node_id = "a", agent_address = "http://10.0.0.1:1" },
        { node_id = "b", agent_address = "http://10.0.0.2:1" } ] }]"#;
    let one = r#"[{ cluster_id = "c", nodes = [
        { node_id = "a", agent_address = "http://10.0.0.1:1" } ] }]"#;
    let config = |clusters: &str| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[reload]\nwatch = false\n\n{}",
            static_backend("fixed", clusters)
        )
    };
    let gw = work.start(&config(two)).await;
    assert_eq!(node_ids(&gw.discover().await, "c"), ["a", "b"]);
    assert_eq!(decision(&gw, "c", "b").await["by"], "owner");

    // `b` disappears outside the gateway (here: from the backend's settings).
    work.write_config(&config(one));
    let (status, reply) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(node_ids(&gw.discover().await, "c"), ["a"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // A record is forgotten by a discovery that started after it was first found unreported:
    // the second discovery at the earliest. Discovery goes on here as it would in production.
    loop {
        if decision(&gw, "c", "b").await["by"] == "discovery" {
            break;
        }
        assert_eq!(node_ids(&gw.discover().await, "c"), ["a"]);
        assert!(
            std::time::Instant::now() < deadline,
            "the owner of `b` was never forgotten:\n{}",
            gw.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The node that is still reported keeps its owner.
    assert_eq!(decision(&gw, "c", "a").await["by"], "owner");
}

#[tokio::test]
async fn renaming_a_backend_away_from_its_allocations_is_refused_until_it_keeps_its_namespace() {
    let work = Workdir::new();
    let gw = work.start(&pool_config("pool", "")).await;
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let taken = reply["node_ids"][0].as_str().unwrap().to_string();

    // The operator renames the backend: the new name would start from empty state.
    work.write_config(&pool_config("machines", ""));
    let (status, reply) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 422, "{reply}");
    let reason = reply["error_cause"].as_str().unwrap();
    assert!(
        reason.contains("backend `pool` was renamed to `machines`")
            && reason.contains("state_namespace = \"pool\""),
        "{reason}"
    );
    assert_eq!(gw.admin_generation().await["generation"], 1);

    // Keeping the namespace is accepted, and the allocation is still held.
    let renamed = pool_config("machines", "").replace(
        "[backends.machines]\n",
        "[backends.machines]\nstate_namespace = \"pool\"\n",
    );
    work.write_config(&renamed);
    let (status, reply) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 200, "{reply}");
    let mut given = vec![taken.clone()];
    for _ in 0..2 {
        let (status, reply) = gw
            .post(
                "/provision",
                &provision_body("c1", "mongodb", "data", "small"),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        given.push(reply["node_ids"][0].as_str().unwrap().to_string());
    }
    given.sort();
    given.dedup();
    assert_eq!(given.len(), 3, "a machine was handed out twice: {given:?}");
    // The node provisioned before the rename is deprovisioned through the renamed backend.
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c1", "node_id": taken }),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
}

#[tokio::test]
async fn route_names_the_backend_that_uses_a_recorded_namespace_online_and_offline() {
    let work = Workdir::new();
    // The ownership index records state namespaces; this backend's is not its name.
    let config = pool_config("machines", "").replace(
        "[backends.machines]\n",
        "[backends.machines]\nstate_namespace = \"pool\"\n",
    );
    let gw = work.start(&config).await;
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let taken = reply["node_ids"][0].as_str().unwrap().to_string();
    let request = json!({ "cluster_id": "c1", "node_id": taken });
    let (status, explained) = gw.admin("/admin/route", Some(&request)).await;
    assert_eq!(status, 200, "{explained}");
    assert_eq!(
        explained["decision"],
        json!({ "by": "owner", "backend": "machines" })
    );
    gw.stop();

    // Offline, from the config and the state store: the same backend, not the namespace.
    let config_file = work.path().join("gateway.toml");
    assert_eq!(
        indexed_owner(&config_file, "c1", &taken).as_deref(),
        Some("machines")
    );
    let request_file = work.path().join("deprovision.json");
    std::fs::write(&request_file, request.to_string()).unwrap();
    let (ok, stdout, stderr) = run_cli(&[
        "route",
        "--config",
        &config_file.display().to_string(),
        &request_file.display().to_string(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("=> backend `machines`, from the ownership index"),
        "{stdout}"
    );
}

#[tokio::test]
async fn sighup_and_an_admin_reload_while_the_first_generation_loads_do_not_stop_the_gateway() {
    let work = Workdir::new();
    // A cold cache of its own: compiling the plugins keeps the gateway loading for a while.
    let config = format!(
        "[state]\ndir = \"state\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [backends.one]\nplugin = {p}\n[backends.two]\nplugin = {q}\n\
         [[routes]]\nbackend = \"one\"\n",
        p = toml_str(&plugin("pool").display().to_string()),
        q = toml_str(&plugin("fault").display().to_string()),
    );
    let gw = work.start_cold(&config).await;
    let (status, _) = gw.get("/readyz").await;
    assert_eq!(status, 503, "the test needs the gateway still loading");
    let (status, reply) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply["error_msg"]
            .as_str()
            .unwrap()
            .contains("still loading"),
        "{reply}"
    );
    gw.signal(libc::SIGHUP);
    gw.wait_ready().await;
    let (status, _) = gw.get("/healthz").await;
    assert_eq!(status, 200);
    // The SIGHUP was not lost: it reloads once the first generation is in.
    gw.wait_status("the queued SIGHUP reload", |s| s["generation"] == 2)
        .await;
}
