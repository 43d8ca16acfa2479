//! A candidate beside a backend's stable plugin: the sticky split (two replicas over etcd agree),
//! automatic rollback kept in the state store across replicas, reloads and restarts, shadow
//! discovery counted and shown, steps, and the admin routes.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::Value;
use xtask::etcd::EtcdCluster;

use crate::support::{Gateway, Workdir, plugin, pool_backend, provision_body, toml_str};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n\n[reload]\nwatch = false\n\n";

/// `[state]` over etcd under `prefix`, the local directory `dir`, the shared compiled cache.
fn etcd_state(cluster: &EtcdCluster, prefix: &str, dir: &Path) -> String {
    let endpoints: Vec<String> = cluster.endpoints().iter().map(|e| toml_str(e)).collect();
    format!(
        "[state]\nbackend = \"etcd\"\nendpoints = [{}]\nprefix = {}\ntimeout = \"2s\"\ndir = {}\n\
         cache_dir = {}\n\n",
        endpoints.join(", "),
        toml_str(prefix),
        toml_str(&dir.join("state").display().to_string()),
        toml_str(&crate::support::shared_cache().display().to_string()),
    )
}

/// A `fault` candidate table of backend `pool` in `mode`, with `extra` lines.
fn fault_candidate(mode: &str, extra: &str) -> String {
    format!(
        "[backends.pool.candidate]\nplugin = {}\nsettings = {{ mode = {} }}\n{extra}\n",
        toml_str(&plugin("fault").display().to_string()),
        toml_str(mode)
    )
}

/// A pool of `machines` small machines with `candidate`, routed everything.
fn pool_with(machines: usize, candidate: &str) -> String {
    let list: Vec<(String, &str)> = (1..=machines).map(|i| (format!("m{i}"), "small")).collect();
    format!(
        "{}\n{candidate}\n[[routes]]\nbackend = \"pool\"\n",
        pool_backend("pool", &list).replace(
            "[backends.pool.settings]",
            "limits = { concurrency = 32, queue = 1024 }\n[backends.pool.settings]"
        )
    )
}

/// The admin listener's `/metrics`, as text.
async fn metrics(gw: &Gateway) -> String {
    let url = format!("{}/metrics", gw.admin.as_ref().unwrap());
    gw.client
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn provision(gw: &Gateway, cluster: &str) -> (u16, Value) {
    gw.post(
        "/provision",
        &provision_body(cluster, "mongodb", "data", "small"),
    )
    .await
}

/// The pool's candidate as `GET /admin/backends/pool` shows it.
async fn candidate(gw: &Gateway) -> Value {
    let (status, body) = gw.admin("/admin/backends/pool", None).await;
    assert_eq!(status, 200, "{body}");
    body["candidate"].clone()
}

/// Wait (at most 20 s) until the candidate as shown satisfies `done`.
async fn wait_candidate(gw: &Gateway, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let c = candidate(gw).await;
        if done(&c) {
            return c;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_replica(cluster: &EtcdCluster, prefix: &str, dir: &Workdir, rest: &str) -> Gateway {
    let config = format!("{}{ADMIN}{rest}", etcd_state(cluster, prefix, dir.path()));
    let gw = dir.start_cold(&config).await;
    gw.wait_ready().await;
    gw
}

/// Which side answered each cluster's provision on `gw`: the stable echo plugin answers 200,
/// the candidate, busy on purpose, 503.
async fn sides(gw: &Gateway, clusters: &[String]) -> Vec<bool> {
    let mut sides = Vec::new();
    for chunk in clusters.chunks(32) {
        let replies = join_all(chunk.iter().map(|c| provision(gw, c))).await;
        for (status, body) in replies {
            assert!(status == 200 || status == 503, "{status} {body}");
            sides.push(status == 503);
        }
    }
    sides
}

#[tokio::test(flavor = "multi_thread")]
async fn candidate_split_is_sticky_near_its_weight_and_two_replicas_over_etcd_agree() {
    let cluster = EtcdCluster::start(3);
    let prefix = format!(
        "/platform-gateway/{}",
        crate::support::unique_name("candidate-split")
    );
    // The stable plugin echoes (200); the candidate is busy (503) and is never rolled back
    // (no error rate is above 1.0): the status says which side answered.
    let backends = format!(
        "[backends.pool]\nplugin = {}\nlimits = {{ concurrency = 32, queue = 1024 }}\n\
         [backends.pool.settings]\nmode = \"echo\"\n\n{}\n[[routes]]\nbackend = \"pool\"\n",
        toml_str(&plugin("fault").display().to_string()),
        fault_candidate(
            "busy",
            "weight = 20\nshadow = false\n[backends.pool.candidate.rollback]\nmax_error_rate = 1.0\n"
        )
    );
    let (a_dir, b_dir) = (Workdir::new(), Workdir::new());
    let a = start_replica(&cluster, &prefix, &a_dir, &backends).await;
    let b = start_replica(&cluster, &prefix, &b_dir, &backends).await;
    let clusters: Vec<String> = (0..1000).map(|i| format!("split-{i}")).collect();
    let first = sides(&a, &clusters).await;
    let count = first.iter().filter(|c| **c).count();
    assert!(
        (150..=250).contains(&count),
        "{count} of 1000 clusters went to the candidate at 20%"
    );
    for round in 1..5 {
        assert_eq!(
            sides(&a, &clusters).await,
            first,
            "round {round} moved clusters"
        );
    }
    assert_eq!(
        sides(&b, &clusters).await,
        first,
        "the second replica disagrees"
    );
    assert_eq!(candidate(&b).await["weight"], 20);
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_candidate_is_rolled_back_for_every_replica_and_across_a_restart() {
    let cluster = EtcdCluster::start(3);
    let prefix = format!(
        "/platform-gateway/{}",
        crate::support::unique_name("candidate-rollback")
    );
    let failing = fault_candidate(
        "panic",
        "weight = 50\nshadow = false\n[backends.pool.candidate.rollback]\nmin_calls = 10\n",
    );
    let backends = pool_with(300, &failing);
    let (a_dir, b_dir) = (Workdir::new(), Workdir::new());
    let a = start_replica(&cluster, &prefix, &a_dir, &backends).await;
    let b = start_replica(&cluster, &prefix, &b_dir, &backends).await;

    // One at a time: nothing is in flight when the tenth failure rolls it back.
    let mut failed = 0;
    for i in 0..60 {
        let (status, body) = provision(&a, &format!("r-{i}")).await;
        match status {
            200 => {}
            502 => failed += 1,
            other => panic!("{other} {body}"),
        }
    }
    assert_eq!(failed, 10, "rolled back after min_calls failures");
    let shown = candidate(&a).await;
    assert_eq!(shown["state"], "rolled-back", "{shown}");
    assert_eq!(shown["weight"], 0);
    assert_eq!(shown["rolled_back"]["reason"], "error_rate");
    assert_eq!(shown["rolled_back"]["failures"], 10);

    // The other replica follows within its polling interval, and every provision succeeds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..40 {
        let (status, body) = provision(&b, &format!("b-{i}")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(candidate(&b).await["state"], "rolled-back");

    // A reload that leaves the candidate as it is, and a restart, keep the verdict.
    let (status, body) = a.admin("/admin/reload", Some(&serde_json::json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(candidate(&a).await["state"], "rolled-back");
    a.stop();
    let a = start_replica(&cluster, &prefix, &a_dir, &backends).await;
    assert_eq!(candidate(&a).await["state"], "rolled-back");
    for i in 0..20 {
        assert_eq!(provision(&a, &format!("after-{i}")).await.0, 200);
    }

    // The operator re-arms it: the same candidate serves its share again (and fails again).
    let (status, body) = a
        .admin(
            "/admin/backends/pool/candidate/reset",
            Some(&serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "active");
    assert_eq!(body["weight"], 50);

    // A config with another candidate re-arms it too.
    let other = pool_with(
        300,
        &fault_candidate("echo", "weight = 50\nshadow = false\n"),
    );
    let config = format!(
        "{}{ADMIN}{other}",
        etcd_state(&cluster, &prefix, a_dir.path())
    );
    std::fs::write(a_dir.path().join("gateway.toml"), config).unwrap();
    let (status, body) = a.admin("/admin/reload", Some(&serde_json::json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let shown = candidate(&a).await;
    assert_eq!(
        (shown["state"].as_str(), shown["weight"].as_u64()),
        (Some("active"), Some(50)),
        "{shown}"
    );
    assert!(shown["rolled_back"].is_null(), "{shown}");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn candidate_shadow_discovery_is_counted_and_shown_and_the_stable_answer_is_served() {
    // The candidate reports one node the stable pool does not have.
    let config = format!(
        "{ADMIN}{}",
        pool_with(2, &fault_candidate("echo", "weight = 0\n"))
    );
    let gw = Gateway::start(&config).await;
    let discovery = gw.discover().await;
    let served = discovery.to_string();
    assert!(
        !served.contains("fault-node"),
        "the shadow's node was served: {served}"
    );
    let shown = wait_candidate(&gw, "the shadow was compared", |c| {
        c["shadow_compared"] == 1
    })
    .await;
    assert_eq!(shown["shadow_different"], 1, "{shown}");
    let difference = shown["last_differences"][0].as_str().unwrap();
    assert!(
        difference.contains("fault-node") && difference.contains("extra"),
        "{difference}"
    );
    assert_eq!(
        shown["state"], "active",
        "on_divergence = count only counts"
    );
    let metrics = metrics(&gw).await;
    assert!(
        metrics.contains(
            "platform_gateway_shadow_discoveries_total{backend=\"pool\",result=\"different\"} 1"
        ),
        "{metrics}"
    );
    gw.stop();

    let config = format!(
        "{ADMIN}{}",
        pool_with(
            2,
            &fault_candidate(
                "echo",
                "weight = 0\n[backends.pool.candidate.rollback]\nmin_calls = 1\non_divergence = \"rollback\"\n"
            )
        )
    );
    let gw = Gateway::start(&config).await;
    gw.discover().await;
    let shown = wait_candidate(&gw, "the diverging candidate was rolled back", |c| {
        c["state"] == "rolled-back"
    })
    .await;
    assert_eq!(shown["rolled_back"]["reason"], "divergence", "{shown}");
    // A rolled-back candidate is not shadowed any more.
    let compared = shown["shadow_compared"].clone();
    gw.discover().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(candidate(&gw).await["shadow_compared"], compared);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn candidate_steps_rise_on_schedule_while_healthy_and_stop_at_a_rollback() {
    let healthy = format!(
        "{ADMIN}{}",
        pool_with(
            2,
            &fault_candidate(
                "echo",
                "shadow = false\nsteps = [50, 100]\nstep_interval = \"1s\"\n"
            )
        )
    );
    let gw = Gateway::start(&healthy).await;
    let start = Instant::now();
    assert_eq!(candidate(&gw).await["weight"], 0);
    wait_candidate(&gw, "first step", |c| c["weight"] == 50).await;
    assert!(start.elapsed() >= Duration::from_millis(900));
    let done = wait_candidate(&gw, "second step", |c| c["weight"] == 100).await;
    assert_eq!(done["state"], "done");
    gw.stop();

    let failing = format!(
        "{ADMIN}{}",
        pool_with(
            40,
            &fault_candidate(
                "panic",
                "shadow = false\nweight = 50\nsteps = [100]\nstep_interval = \"1s\"\n\
                 [backends.pool.candidate.rollback]\nmin_calls = 3\n"
            )
        )
    );
    let gw = Gateway::start(&failing).await;
    let mut failed = 0;
    for i in 0..30 {
        if provision(&gw, &format!("s-{i}")).await.0 == 502 {
            failed += 1;
        }
        if failed == 3 {
            break;
        }
    }
    assert_eq!(failed, 3);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let shown = candidate(&gw).await;
    assert_eq!(
        (shown["state"].as_str(), shown["weight"].as_u64()),
        (Some("rolled-back"), Some(0)),
        "{shown}"
    );
    assert_eq!(provision(&gw, "s-after").await.0, 200);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidates_node_is_deprovisioned_by_the_candidate_while_it_is_live() {
    // The candidate is the pool plugin with the same machines: either side can deprovision any
    // node, and the call metrics say which did.
    let candidate_table = format!(
        "[backends.pool.candidate]\nplugin = {}\nweight = 100\nshadow = false\n\
         [backends.pool.candidate.rollback]\nmin_calls = 1\nmax_error_rate = 0.0\n",
        toml_str(&plugin("pool").display().to_string())
    );
    let gw = Gateway::start(&format!("{ADMIN}{}", pool_with(4, &candidate_table))).await;
    let deprovisions = |metrics: &str, version: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("platform_gateway_plugin_calls_total{"))
            .filter(|l| l.contains("operation=\"deprovision\""))
            .filter(|l| l.contains(&format!("version=\"{version}\"")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let (_, a) = provision(&gw, "dep-a").await;
    let (_, b) = provision(&gw, "dep-b").await;
    let node = |body: &Value| body["node_ids"][0].as_str().unwrap().to_string();
    let deprovision =
        |cluster: &str, node: String| serde_json::json!({ "cluster_id": cluster, "node_id": node });
    let (status, body) = gw
        .post("/deprovision", &deprovision("dep-a", node(&a)))
        .await;
    assert_eq!(status, 204, "{body}");
    let metrics = metrics(&gw).await;
    assert_eq!(
        (
            deprovisions(&metrics, "candidate"),
            deprovisions(&metrics, "stable")
        ),
        (1, 0)
    );

    // A node the plugin does not know answers 404: a 4xx, not a failure of the candidate.
    let (status, _) = gw
        .post("/deprovision", &deprovision("dep-a", "m9".into()))
        .await;
    assert!(status == 404, "{status}");
    assert_eq!(candidate(&gw).await["state"], "done");
    let _ = b;
    gw.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_candidate_routes_need_the_admin_token() {
    let token = "candidate-admin-token-0123456789";
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {}\n\n{}",
        toml_str(token),
        pool_with(2, &fault_candidate("echo", "weight = 10\n"))
    );
    let gw = Gateway::start(&config).await;
    let admin = gw.admin.clone().unwrap();
    let get = format!("{admin}/admin/backends/pool");
    let reset = format!("{admin}/admin/backends/pool/candidate/reset");
    assert_eq!(gw.client.get(&get).send().await.unwrap().status(), 401);
    assert_eq!(gw.client.post(&reset).send().await.unwrap().status(), 401);
    let shown = gw.client.get(&get).bearer_auth(token).send().await.unwrap();
    assert_eq!(shown.status(), 200);
    let reset = gw
        .client
        .post(&reset)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    // The public listener serves neither.
    assert_eq!(gw.get("/admin/backends/pool").await.0, 404);
    gw.stop();
}

/// What the load saw: every answer's status, by kind.
#[derive(Default)]
struct Seen {
    provisions: Vec<u16>,
    deprovisions: Vec<u16>,
    discoveries: Vec<u16>,
}

#[tokio::test(flavor = "multi_thread")]
async fn under_steady_load_a_candidate_is_staged_raised_and_rolled_back_and_only_its_failures_fail()
{
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    // A healthy candidate (another load of the pool plugin, on the same machines) rising from 20
    // to 100 percent a step per second, shadowing every discovery.
    let healthy = format!(
        "[backends.pool.candidate]\nplugin = {}\nweight = 20\nsteps = [50, 100]\nstep_interval = \"1s\"\n",
        toml_str(&plugin("pool").display().to_string())
    );
    let work = Workdir::new();
    let gw = work
        .start(&format!("{ADMIN}{}", pool_with(64, &healthy)))
        .await;
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());

    // Four clients provisioning and deprovisioning, one discovering, until told to stop.
    let worker = |w: usize| {
        let (gw, stop, seen) = (&gw, &stop, &seen);
        async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let cluster = format!("load-{w}-{i}");
                let (status, body) = provision(gw, &cluster).await;
                seen.lock().unwrap().provisions.push(status);
                if status == 200 {
                    let node = body["node_ids"][0].as_str().unwrap().to_string();
                    let request = serde_json::json!({ "cluster_id": cluster, "node_id": node });
                    let (status, _) = gw.post("/deprovision", &request).await;
                    seen.lock().unwrap().deprovisions.push(status);
                }
            }
        }
    };
    let discoverer = async {
        while !stop.load(Ordering::SeqCst) {
            let (status, _) = gw.get("/discover").await;
            seen.lock().unwrap().discoveries.push(status);
        }
    };
    let operator = async {
        // Staged and raised while healthy.
        let shown = wait_candidate(&gw, "the candidate rose to 100", |c| c["weight"] == 100).await;
        assert_eq!(shown["state"], "done", "{shown}");
        // Another build that fails every call replaces it, and is rolled back.
        let failing = fault_candidate(
            "panic",
            "weight = 50\nshadow = false\n[backends.pool.candidate.rollback]\nmin_calls = 10\n",
        );
        work.write_config(&format!("{ADMIN}{}", pool_with(64, &failing)));
        let (status, body) = gw
            .admin("/admin/reload", Some(&serde_json::json!({})))
            .await;
        assert_eq!(status, 200, "{body}");
        let shown = wait_candidate(&gw, "the failing candidate was rolled back", |c| {
            c["state"] == "rolled-back"
        })
        .await;
        // The load goes on a while on the stable plugin alone: a second, and until it made a
        // hundred provisions in all (a busy machine makes them slowly).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        while seen.lock().unwrap().provisions.len() <= 100
            && start.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::SeqCst);
        shown
    };
    let (shown, ..) = tokio::join!(
        operator,
        discoverer,
        worker(0),
        worker(1),
        worker(2),
        worker(3)
    );
    let seen = seen.into_inner().unwrap();
    let failed: Vec<u16> = seen
        .provisions
        .iter()
        .copied()
        .filter(|s| *s != 200)
        .collect();
    // Only the failing candidate's own calls fail: 502 (its plugin panicked), no more than the
    // calls that judged it plus the four that may have been in flight.
    assert!(failed.iter().all(|s| *s == 502), "{failed:?}");
    let failures = shown["rolled_back"]["failures"].as_u64().unwrap() as usize;
    assert!(
        failed.len() >= 10 && failed.len() <= failures + 4,
        "{} failed, {failures} judged",
        failed.len()
    );
    assert!(
        seen.deprovisions.iter().all(|s| *s == 204),
        "{:?}",
        seen.deprovisions
    );
    assert!(seen.discoveries.iter().all(|s| *s == 200));
    assert!(
        seen.provisions.len() > 100 && !seen.discoveries.is_empty(),
        "{} provisions, {} discoveries",
        seen.provisions.len(),
        seen.discoveries.len()
    );
    eprintln!(
        "under load: {} provisions ({} failed, all the candidate's), {} deprovisions, {} discoveries",
        seen.provisions.len(),
        failed.len(),
        seen.deprovisions.len(),
        seen.discoveries.len()
    );
    gw.stop();
}
