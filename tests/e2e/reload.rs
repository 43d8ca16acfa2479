//! Hot reload: new plugin builds and config changes go live without a restart or a failed
//! request; broken ones are refused while the previous generation keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    Gateway, Workdir, generation_of, plugin, pool_backend, provision_body, toml_str,
};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n[reload]\ndebounce = \"100ms\"\n\n";

/// A backend `x` whose plugin file is `plugin.wasm` in the workdir. Its settings suit both the
/// fault fixture (discovers cluster `v1`) and the static plugin (discovers cluster `v2`), so
/// swapping the file changes what discovery says.
fn swappable(extra: &str) -> String {
    format!(
        "{ADMIN}[backends.x]\nplugin = \"plugin.wasm\"\n[backends.x.settings]\nmode = \"echo\"\n\
         cluster_id = \"v1\"\nclusters = [{{ cluster_id = \"v2\", nodes = [{{ node_id = \"s1\", \
         agent_address = \"http://10.0.0.9:37000\" }}] }}]\n\n{extra}"
    )
}

fn copy_plugin(name: &str, to: &std::path::Path) {
    std::fs::copy(plugin(name), to).unwrap();
}

/// Poll discovery until it reports `cluster`; the generation that answered.
async fn wait_for_cluster(gw: &Gateway, cluster: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, headers, body) = gw.get_with_headers("/discover").await;
        if status == 200 && body["clusters"][0]["cluster_id"] == cluster {
            return generation_of(&headers);
        }
        assert!(
            Instant::now() < deadline,
            "never saw cluster {cluster}: {status} {body}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_plugin_replaced_by_rename_or_in_place_goes_live_in_a_new_generation() {
    let work = Workdir::new();
    let file = work.path().join("plugin.wasm");
    copy_plugin("fault", &file);
    let gw = work.start(&swappable("")).await;
    assert_eq!(wait_for_cluster(&gw, "v1").await, 1);

    // The usual deployment: write beside, rename over.
    let staged = work.path().join("plugin.wasm.new");
    copy_plugin("static_clusters", &staged);
    std::fs::rename(&staged, &file).unwrap();
    let after_rename = wait_for_cluster(&gw, "v2").await;
    assert!(after_rename >= 2, "generation {after_rename}");

    // Written in place.
    std::fs::write(&file, std::fs::read(plugin("fault")).unwrap()).unwrap();
    let after_write = wait_for_cluster(&gw, "v1").await;
    assert!(after_write > after_rename, "generation {after_write}");
    let status = gw.admin_generation().await;
    assert_eq!(status["generation"], json!(after_write));
}

#[tokio::test]
async fn a_backend_and_a_route_added_to_the_config_are_used() {
    let work = Workdir::new();
    let blue = pool_backend("blue", &[("blue-1", "small")]);
    let gw = work
        .start(&format!("{ADMIN}{blue}[[routes]]\nbackend = \"blue\"\n"))
        .await;
    let kafka = provision_body("k1", "kafka", "brokers", "small");

    work.write_config(&format!(
        "{ADMIN}{blue}{}[[routes]]\nstore = \"kafka\"\nbackend = \"green\"\n\n[[routes]]\nbackend = \"blue\"\n",
        pool_backend("green", &[("green-1", "small")])
    ));
    gw.wait_status("generation 2", |s| s["generation"] == 2)
        .await;
    let (status, headers, reply) = gw.post_with_headers("/provision", &kafka).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["node_ids"], json!(["green-1"]));
    assert_eq!(generation_of(&headers), 2);

    // SIGHUP reloads too (the same config: a new generation, same behaviour).
    gw.signal(libc::SIGHUP);
    gw.wait_status("generation 3", |s| s["generation"] == 3)
        .await;
    assert_eq!(
        gw.get_with_headers("/discover").await.1["platform-gateway-generation"],
        "3"
    );
}

#[tokio::test]
async fn broken_configs_and_plugins_are_refused_and_the_old_generation_keeps_serving() {
    let work = Workdir::new();
    let file = work.path().join("plugin.wasm");
    copy_plugin("fault", &file);
    let good = swappable("[[routes]]\nbackend = \"x\"\n");
    let gw = work.start(&good).await;
    let mut refused = 0;

    let mut expect_refusal = async |what: &str, needle: &str| {
        refused += 1;
        let status = gw
            .wait_status(what, |s| s["refused"] == json!(refused))
            .await;
        let reason = status["last_refused"]["reason"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(reason.contains(needle), "{what}: {reason}");
        assert_eq!(status["generation"], json!(1), "{what}");
        // Still serving, on generation 1, with the old plugin.
        let (code, headers, body) = gw.get_with_headers("/discover").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(generation_of(&headers), 1);
        assert_eq!(body["clusters"][0]["cluster_id"], "v1");
        reason
    };

    // A config that does not parse: the reason names the line.
    std::fs::write(work.path().join("gateway.toml"), "[server\nlisten = 1\n").unwrap();
    expect_refusal("a broken config", "line 1").await;

    // A backend removed while a route still names it.
    work.write_config(&format!("{ADMIN}[[routes]]\nbackend = \"x\"\n"));
    expect_refusal("a dangling route", "unknown backend `x`").await;

    // A plugin that does not compile.
    work.write_config(&good);
    std::fs::write(&file, b"\0asm\x0d\0\x01\0garbage").unwrap();
    expect_refusal("a broken plugin", "backend `x`").await;

    // A valid component that does not implement the plugin world (a plain core module here).
    std::fs::write(&file, b"\0asm\x01\0\0\0").unwrap();
    expect_refusal("a plugin of the wrong kind", "not a usable component").await;

    // Mended: the next reload succeeds.
    copy_plugin("static_clusters", &file);
    assert!(wait_for_cluster(&gw, "v2").await >= 2);
    let (status, body) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_call_in_flight_during_a_reload_finishes_on_its_generation() {
    let work = Workdir::new();
    let slow = |mode: &str| {
        format!(
            "{ADMIN}[backends.x]\nplugin = {}\n[backends.x.settings]\nmode = \"{mode}\"\nsleep_ms = 1500\n\n\
             [[routes]]\nbackend = \"x\"\n",
            toml_str(&plugin("fault").display().to_string())
        )
    };
    let gw = Arc::new(work.start(&slow("sleep")).await);
    let in_flight = {
        let gw = gw.clone();
        tokio::spawn(async move {
            gw.post_with_headers("/provision", &provision_body("c", "s", "g", "small"))
                .await
        })
    };
    // The call is inside the plugin (sleeping 1.5 s) before the reload.
    gw.wait_calls_in_flight("x", 1).await;
    work.write_config(&slow("echo"));
    let (status, body) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!((status, &body), (200, &json!({ "generation": 2 })));

    // New requests get the new generation (no sleep) while the old call is still running.
    let (status, headers, _) = gw
        .post_with_headers("/provision", &provision_body("c", "s", "g", "small"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(generation_of(&headers), 2);
    assert!(!in_flight.is_finished(), "the old call ended first");

    let (status, headers, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        generation_of(&headers),
        1,
        "finished on the generation it started on"
    );
}

#[tokio::test]
async fn twenty_reloads_under_steady_load_fail_no_request() {
    let work = Workdir::new();
    let machines: Vec<(String, &str)> = (1..=16).map(|i| (format!("m{i}"), "small")).collect();
    let config = |timeout_ms: u32| {
        format!(
            "{ADMIN}{}[[routes]]\nbackend = \"pool\"\n",
            pool_backend("pool", &machines).replace(
                "[backends.pool.settings]",
                &format!("limits = {{ timeout = \"{timeout_ms}ms\" }}\n[backends.pool.settings]")
            )
        )
    };
    let gw = Arc::new(work.start(&config(5000)).await);

    // Eight clients, each provisioning a node, discovering and deprovisioning it, until told to
    // stop (bounded by the reloads below and a 120 s safety limit).
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (gw, stop, served, failed, failures) = (
                gw.clone(),
                stop.clone(),
                served.clone(),
                failed.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                let cluster = format!("c{client}");
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let record = |what: &str, status: u16, body: &Value| {
                        if (200..300).contains(&status) {
                            served.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{what} {status} {body}"));
                        }
                    };
                    let (status, reply) = gw
                        .post("/provision", &provision_body(&cluster, "s", "g", "small"))
                        .await;
                    record("provision", status, &reply);
                    let (status, body) = gw.get("/discover").await;
                    record("discover", status, &body);
                    if let Some(node) = reply["node_ids"][0].as_str() {
                        let (status, body) = gw
                            .post(
                                "/deprovision",
                                &json!({ "cluster_id": cluster, "node_id": node }),
                            )
                            .await;
                        record("deprovision", status, &body);
                    }
                }
            })
        })
        .collect();

    // Twenty reloads: config edits picked up by the watcher, alternating with admin calls.
    for i in 1..=20u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if i % 2 == 0 {
            work.write_config(&config(5000 + i as u32));
            gw.wait_status("a watched reload", |s| s["generation"] == json!(i + 1))
                .await;
        } else {
            let (status, body) = gw.admin("/admin/reload", Some(&json!({}))).await;
            assert_eq!((status, body), (200, json!({ "generation": i + 1 })));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (served, failed) = (
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!("under 20 reloads: {served} requests served, {failed} failed");
    assert_eq!(failed, 0, "{:?}", failures.lock().unwrap());
    assert!(
        served > 100,
        "the load was too light to mean anything: {served}"
    );
    assert_eq!(gw.admin_generation().await["reloads"], json!(20));
}

#[tokio::test]
async fn nodes_provisioned_before_a_reload_are_deprovisioned_after_it() {
    let work = Workdir::new();
    let pool = pool_backend("pool", &[("m1", "small"), ("m2", "small")]);
    let gw = work
        .start(&format!("{ADMIN}{pool}[[routes]]\nbackend = \"pool\"\n"))
        .await;
    let mut body = provision_body("c1", "s", "g", "small");
    body["provision"]["count"] = json!(2);
    let (status, reply) = gw.post("/provision", &body).await;
    assert_eq!(status, 200, "{reply}");

    // The backend keeps its name; the routes now send new work elsewhere.
    work.write_config(&format!(
        "{ADMIN}{pool}{}[[routes]]\nbackend = \"other\"\n",
        pool_backend("other", &[("o1", "small")])
    ));
    gw.wait_status("generation 2", |s| s["generation"] == 2)
        .await;
    let (status, headers, discovery) = gw.get_with_headers("/discover").await;
    assert_eq!(status, 200);
    assert_eq!(generation_of(&headers), 2);
    assert_eq!(
        discovery["clusters"][0]["nodes"].as_array().unwrap().len(),
        2
    );
    for node in ["m1", "m2"] {
        let (status, reply) = gw
            .post(
                "/deprovision",
                &json!({ "cluster_id": "c1", "node_id": node }),
            )
            .await;
        assert_eq!(status, 204, "{reply}");
    }
    assert_eq!(gw.discover().await, json!({ "clusters": [] }));
}

#[tokio::test]
async fn admin_reloads_that_arrive_during_a_reload_coalesce_into_one_more() {
    let work = Workdir::new();
    let file = work.path().join("plugin.wasm");
    copy_plugin("pool", &file);
    let config = "[admin]\nlisten = \"127.0.0.1:0\"\n[reload]\nwatch = false\n\n\
         [backends.pool]\nplugin = \"plugin.wasm\"\n[backends.pool.settings]\nmachines = []\n";
    let gw = Arc::new(work.start(config).await);

    // A build never seen before (a custom section changes its digest), so the next reload has
    // to compile it: it takes long enough for the other calls to arrive meanwhile.
    let mut bytes = std::fs::read(plugin("pool")).unwrap();
    let tag = format!(
        "{:016x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    );
    // Custom section: id 0, size, name length, name, payload (all sizes under 128).
    bytes.extend([0u8, 1 + 5 + 16, 5]);
    bytes.extend(b"e2e-c");
    bytes.extend(tag.as_bytes());
    std::fs::write(&file, bytes).unwrap();

    let reload = |gw: Arc<Gateway>| {
        tokio::spawn(async move { gw.admin("/admin/reload", Some(&json!({}))).await })
    };
    let compiling = "compiling plugin (not in the cache)";
    let compiled_before = gw.log().matches(compiling).count();
    let mut calls = vec![reload(gw.clone())];
    // The other four are sent once the first is compiling; compiling the pool takes about a
    // second in a debug build, a hundred times what sending four requests on loopback takes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.log().matches(compiling).count() == compiled_before {
        assert!(Instant::now() < deadline, "the reload never compiled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    calls.extend((0..4).map(|_| reload(gw.clone())));
    let mut generations = Vec::new();
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200, "{body}");
        generations.push(body["generation"].as_u64().unwrap());
    }
    // The first reload compiles; the four that arrive during it are served by one more.
    assert_eq!(generations[0], 2, "{generations:?}");
    assert!(generations[1..].iter().all(|g| *g == 3), "{generations:?}");
    assert_eq!(gw.admin_generation().await["reloads"], json!(2));
}

/// Publish `files` (name, content) into the volume directory `vol` exactly as the kubelet's
/// atomic writer updates a ConfigMap or Secret volume: the files go into a new timestamped
/// directory, a `..data_tmp` symlink to it is renamed over `..data`, each file is a symlink
/// `name -> ..data/name` (made once), and the previous timestamped directory is removed.
fn kubelet_publish(vol: &std::path::Path, files: &[(&str, &str)]) {
    use std::os::unix::fs::symlink;
    static VERSION: AtomicUsize = AtomicUsize::new(0);
    let version = VERSION.fetch_add(1, Ordering::SeqCst);
    std::fs::create_dir_all(vol).unwrap();
    let previous = std::fs::read_link(vol.join("..data")).ok();
    let timestamped = format!("..2026_11_28_10_00_{:02}.{}", version % 60, 1000 + version);
    std::fs::create_dir(vol.join(&timestamped)).unwrap();
    for (name, content) in files {
        std::fs::write(vol.join(&timestamped).join(name), content).unwrap();
    }
    symlink(&timestamped, vol.join("..data_tmp")).unwrap();
    std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).unwrap();
    for (name, _) in files {
        if std::fs::symlink_metadata(vol.join(name)).is_err() {
            symlink(format!("..data/{name}"), vol.join(name)).unwrap();
        }
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(vol.join(previous)).unwrap();
    }
}

/// The backend names `GET /admin/backends` lists.
async fn backend_names(gw: &Gateway) -> Vec<String> {
    let (status, body) = gw.admin("/admin/backends", None).await;
    assert_eq!(status, 200, "{body}");
    let mut names: Vec<String> = body["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("no backends in {body}"))
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_kubernetes_configmap_update_is_seen_and_reloaded() {
    let dir = Workdir::new();
    let vol = dir.path().join("config");
    // The config as the other tests write it, its state outside the volume.
    let config = |backends: &str| {
        let text = std::fs::read_to_string(
            dir.write_config(&format!("{ADMIN}{backends}[[routes]]\nbackend = \"a\"\n")),
        )
        .unwrap();
        text.replace(
            "dir = \"state\"",
            &format!(
                "dir = {}",
                toml_str(&dir.path().join("state").display().to_string())
            ),
        )
    };
    let a = pool_backend("a", &[("m1", "small")]);
    let b = pool_backend("b", &[("m2", "small")]);
    let c = pool_backend("c", &[("m3", "small")]);
    kubelet_publish(&vol, &[("gateway.toml", &config(&a))]);
    let gw = dir.start_at(&vol.join("gateway.toml")).await;
    assert_eq!(backend_names(&gw).await, ["a"]);

    kubelet_publish(&vol, &[("gateway.toml", &config(&format!("{a}{b}")))]);
    gw.wait_status("the first ConfigMap update", |s| s["generation"] == 2)
        .await;
    assert_eq!(backend_names(&gw).await, ["a", "b"]);

    // The watch follows `..data` to its new target: the next update is seen too.
    kubelet_publish(&vol, &[("gateway.toml", &config(&format!("{a}{c}")))]);
    let status = gw
        .wait_status("the second ConfigMap update", |s| s["generation"] == 3)
        .await;
    assert_eq!(status["refused"], 0, "{status}");
    assert_eq!(backend_names(&gw).await, ["a", "c"]);
}

#[tokio::test]
async fn a_secret_file_that_changes_reloads_the_config() {
    let dir = Workdir::new();
    // A Kubernetes Secret volume, and a plain file rewritten in place.
    let secrets = dir.path().join("secrets");
    kubelet_publish(&secrets, &[("node", "node-v1\n")]);
    std::fs::write(dir.path().join("cluster"), "c1\n").unwrap();
    let config = format!(
        "{ADMIN}{}[[routes]]\nbackend = \"f\"\n",
        crate::support::fault_backend_with(
            "f",
            "echo",
            "",
            "node_id = { from_file = \"secrets/node\" }\ncluster_id = { from_file = \"cluster\" }",
        )
    );
    let gw = dir.start(&config).await;
    let discovered = gw.discover().await;
    assert_eq!(crate::support::node_ids(&discovered, "c1"), ["node-v1"]);

    kubelet_publish(&secrets, &[("node", "node-v2\n")]);
    gw.wait_status("the Secret update", |s| s["generation"] == 2)
        .await;
    let discovered = gw.discover().await;
    assert_eq!(crate::support::node_ids(&discovered, "c1"), ["node-v2"]);

    std::fs::write(dir.path().join("cluster"), "c2\n").unwrap();
    gw.wait_status("the secret file's edit", |s| s["generation"] == 3)
        .await;
    let discovered = gw.discover().await;
    assert_eq!(crate::support::node_ids(&discovered, "c2"), ["node-v2"]);
}
