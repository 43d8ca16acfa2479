//! Record and replay: a backend with a `record` table keeps its live calls in a ring on disk;
//! `recordings export` saves them from the admin API, and `replay` runs them against a build,
//! offline, answering its state reads and requests from the recording: the same build does the
//! same on every call, a build with a planted change is caught at the call and the field, an
//! `--ignore` of that field lets it pass, and nothing reaches the store or the network.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    Gateway, Workdir, fault_backend_with, plugin, pool_backend, provision_body, run_cli, toml_str,
};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n\n[reload]\nwatch = false\n\n";

/// Save `backend`'s recording from `gw` into `dir` once it holds `calls` entries (entries are
/// written off the calls' path, a moment after their answers); its path and its lines.
async fn export(gw: &Gateway, backend: &str, dir: &Path, calls: usize) -> (PathBuf, Vec<Value>) {
    let admin = format!("http://{}", gw.admin_address());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (ok, stdout, stderr) = run_cli(&["recordings", "export", backend, "--admin", &admin]);
        assert!(ok, "{stderr}");
        let lines: Vec<Value> = stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        if lines.len() >= calls || std::time::Instant::now() > deadline {
            let path = dir.join(format!("{backend}.jsonl"));
            std::fs::write(&path, &stdout).unwrap();
            return (path, lines);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `platform-gateway replay` with `args`: (exit 0?, the JSON report, stderr).
fn replay(args: &[&str]) -> (bool, Value, String) {
    let mut all = vec!["replay", "--output", "json"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = run_cli(&all);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}\n{stderr}"));
    (ok, report, stderr)
}

/// 200 calls of a pool of 6: provisions, discoveries and deprovisions, some refused (the pool
/// runs out); the number of backend calls made.
async fn pool_traffic(gw: &Gateway) -> usize {
    let mut calls = 0;
    let mut held: Vec<(String, String)> = Vec::new();
    let mut round = 0;
    while calls < 200 {
        round += 1;
        let cluster = format!("c{}", round % 5);
        let (status, body) = gw
            .post(
                "/provision",
                &provision_body(&cluster, "mongodb", "data", "small"),
            )
            .await;
        calls += 1;
        if status == 200 {
            for id in body["node_ids"].as_array().into_iter().flatten() {
                held.push((cluster.clone(), id.as_str().unwrap().to_string()));
            }
        }
        gw.discover().await;
        calls += 1;
        if round % 3 == 0
            && let Some((cluster, node)) = held.pop()
        {
            let (status, body) = gw
                .post(
                    "/deprovision",
                    &json!({ "cluster_id": cluster, "node_id": node }),
                )
                .await;
            assert_eq!(status, 204, "{body}");
            calls += 1;
        }
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_recorded_calls_replay_the_same_on_its_build_and_a_planted_change_is_caught() {
    let dir = Workdir::new();
    let names: Vec<String> = (1..=6).map(|i| format!("m{i}")).collect();
    let machines: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "small")).collect();
    let config = format!(
        "{ADMIN}{}[backends.pool.record]\ncalls = 1000\n\n[[routes]]\nbackend = \"pool\"\n",
        pool_backend("pool", &machines)
    );
    let config_path = dir.write_config(&config);
    let gw = dir.start_at(&config_path).await;
    let made = pool_traffic(&gw).await;
    let (calls, lines) = export(&gw, "pool", dir.path(), made).await;
    assert_eq!(lines.len(), made, "one entry a backend call");
    let operations: Vec<&str> = lines
        .iter()
        .map(|l| l["operation"].as_str().unwrap())
        .collect();
    for operation in ["discover", "provision", "deprovision"] {
        assert!(operations.contains(&operation), "{operations:?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["answer"]["error"]["case"] == "unavailable"
                || l["answer"]["error"]["case"] == "conflict"),
        "some provisions were refused when the pool ran out"
    );
    let before = gw.discover().await;

    let calls = calls.display().to_string();
    let config_path = config_path.display().to_string();
    let base = ["--config", &config_path, "--backend", "pool"];
    let (ok, report, stderr) = replay(&[&base[..], &[calls.as_str()]].concat());
    assert!(ok, "{report:#}\n{stderr}");
    assert_eq!(report["calls"], made, "{report:#}");
    assert_eq!(report["same"], made, "{report:#}");

    // The pool built to allocate in reverse order: caught, at the provisions that took a
    // machine, with the node IDs and the allocations named.
    let planted = crate::support::planted_plugin("pool").display().to_string();
    let mut args = base.to_vec();
    args.extend(["--candidate", planted.as_str(), calls.as_str()]);
    let (ok, report, _) = replay(&args);
    assert!(!ok, "{report:#}");
    let findings = report["findings"].as_array().unwrap();
    assert!(!findings.is_empty());
    assert!(
        findings.iter().all(|f| f["operation"] == "provision"),
        "{report:#}"
    );
    let paths: Vec<&str> = findings
        .iter()
        .flat_map(|f| f["differences"].as_array().unwrap())
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.iter().any(|p| p.starts_with("/answer/ok/node_ids/")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.starts_with("/state/machine~1")),
        "{paths:?}"
    );
    // In text, the call, the path and both sides.
    let mut text_args = vec!["replay"];
    text_args.extend(args.iter().copied());
    let (ok, text, _) = run_cli(&text_args);
    assert!(!ok);
    assert!(text.contains(": different"), "{text}");
    assert!(text.contains("/answer/ok/node_ids/0: \"m"), "{text}");
    assert!(text.contains(&format!("{made} calls: ")), "{text}");

    // Meant to differ: ignored, it passes.
    args.extend(["--ignore", "/answer/ok/node_ids", "--ignore", "/state/*"]);
    let (ok, report, _) = replay(&args);
    assert!(ok, "{report:#}");
    assert!(report["ignored"].as_u64().unwrap() > 0);

    // Nothing reached the gateway's store: its answer is what it was.
    assert_eq!(gw.discover().await, before);
}

/// An HTTP server on loopback that counts requests and answers each with its request's path in
/// a header.
async fn echo_server() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65536];
                let mut read = 0;
                // The head, then the body its Content-Length announces, or its chunks.
                loop {
                    let Ok(n) = socket.read(&mut buffer[read..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    read += n;
                    let text = String::from_utf8_lossy(&buffer[..read]).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = text[..end].to_ascii_lowercase();
                        if head.contains("transfer-encoding: chunked") {
                            if text[end + 4..].ends_with("0\r\n\r\n") {
                                break;
                            }
                            continue;
                        }
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if read >= end + 4 + length {
                            break;
                        }
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&buffer[..read]).to_string();
                let path = text.split(' ').nth(1).unwrap_or_default().to_string();
                let body = "hello";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nx-echo: {path}\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (address, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_holds_no_secret_and_its_replay_sends_nothing() {
    const TOKEN: &str = "hunter2-never-recorded";
    let (target, requests) = echo_server().await;
    let dir = Workdir::new();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    // The secrets: the path the caller asks for (which the server echoes in a header) and the
    // body it sends.
    std::fs::write(dir.path().join("path"), format!("/{TOKEN}")).unwrap();
    std::fs::write(dir.path().join("body"), TOKEN).unwrap();
    let config = format!(
        "{ADMIN}{}[backends.leaky.record]\ncalls = 100\n\n\
         [backends.caller]\nplugin = {}\ngrants = {{ http = [{}] }}\n\
         [backends.caller.settings]\ntarget = {}\nmethod = \"POST\"\n\
         path = {{ from_file = \"path\" }}\nbody = {{ from_file = \"body\" }}\n\
         [backends.caller.record]\ncalls = 100\n\n\
         [[routes]]\nstore = \"leak\"\nbackend = \"leaky\"\n\n[[routes]]\nbackend = \"caller\"\n",
        fault_backend_with("leaky", "leak", "", "token = { from_file = \"token\" }"),
        toml_str(&plugin("http_probe").display().to_string()),
        toml_str(&format!("http://{target}")),
        toml_str(&target),
    );
    let config_path = dir.write_config(&config);
    let gw = dir.start_at(&config_path).await;
    for _ in 0..3 {
        let (status, body) = gw
            .post("/provision", &provision_body("c", "leak", "g", "small"))
            .await;
        assert_eq!(status, 500, "{body}");
        let (status, body) = gw
            .post("/provision", &provision_body("c", "mongodb", "g", "small"))
            .await;
        assert_eq!(status, 500, "{body}");
        assert!(
            body["error_msg"].as_str().unwrap().contains("status 200"),
            "{body}"
        );
    }
    assert_eq!(requests.load(Ordering::SeqCst), 3);

    let (leaky, leaky_lines) = export(&gw, "leaky", dir.path(), 3).await;
    let (caller, caller_lines) = export(&gw, "caller", dir.path(), 3).await;
    assert_eq!(leaky_lines.len(), 3);
    assert_eq!(caller_lines.len(), 3);
    for file in [&leaky, &caller] {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
    }
    // It was recorded, redacted: the log line, the request's URL and body, the response's
    // header and body.
    let leaked = leaky_lines[0].to_string();
    assert!(leaked.contains("the token is [redacted]"), "{leaked}");
    let exchange = &caller_lines[0]["tape"]["http"][0];
    assert_eq!(exchange["method"], "POST", "{exchange}");
    assert!(
        exchange["url"].as_str().unwrap().ends_with("[redacted]"),
        "{exchange}"
    );
    assert_eq!(exchange["request_body"]["value"]["text"], "[redacted]");
    assert!(
        exchange["response_headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "x-echo" && h[1] == "[redacted]"),
        "{exchange}"
    );
    assert_eq!(exchange["response_body"]["value"]["text"], "hello");
    // Nor on disk.
    let ring = std::fs::read(dir.path().join("state/recordings.redb")).unwrap();
    assert!(
        !ring.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
        "the ring file holds the secret"
    );

    // The replay answers the request from the recording, and sends nothing.
    let config_path = config_path.display().to_string();
    let caller = caller.display().to_string();
    let (ok, report, stderr) = replay(&["--config", &config_path, "--backend", "caller", &caller]);
    assert!(ok, "{report:#}\n{stderr}");
    assert_eq!(report["same"], 3, "{report:#}");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        3,
        "the replay sent a request"
    );

    // A build that asks for something else: the request the recording lacks is reported, not
    // sent.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!(
            "target = {}\nmethod = \"POST\"\npath = \"/elsewhere\"\n",
            toml_str(&target)
        ),
    )
    .unwrap();
    let other = other.display().to_string();
    let (ok, report, _) = replay(&[
        "--config",
        &config_path,
        "--backend",
        "caller",
        "--settings",
        &other,
        &caller,
    ]);
    assert!(!ok, "{report:#}");
    assert_eq!(report["different"], 3, "{report:#}");
    let differences = report["findings"][0]["differences"].to_string();
    assert!(
        differences.contains("not in the recording, not sent"),
        "{differences}"
    );
    assert!(differences.contains("/requests/unmade/0"), "{differences}");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        3,
        "the replay sent a request"
    );
}

/// 200 calls: `provisions` provisions of one node (cluster `c`), a deprovision of every other
/// node provisioned, and discoveries for the rest; the calls made.
async fn cloud_traffic(gw: &Gateway, body: impl Fn(usize) -> Value, provisions: usize) -> usize {
    let mut calls = 0;
    let mut nodes = Vec::new();
    for n in 0..provisions {
        let (status, reply) = gw.post("/provision", &body(n)).await;
        assert_eq!(status, 200, "{reply}");
        nodes.push(reply["node_ids"][0].as_str().unwrap().to_string());
        calls += 1;
    }
    for node in nodes.iter().step_by(2) {
        let (status, reply) = gw
            .post(
                "/deprovision",
                &json!({ "cluster_id": "c", "node_id": node }),
            )
            .await;
        assert_eq!(status, 204, "{reply}");
        calls += 1;
    }
    while calls < 200 {
        gw.discover().await;
        calls += 1;
    }
    calls
}

/// Replay `calls` on `backend` of `config`: with its own build all the same; with the planted
/// build different at a path `needle` names, and the same again with `ignore`.
fn replay_own_and_planted(
    config: &Path,
    backend: &str,
    calls: &Path,
    planted: &str,
    needle: &str,
    ignore: &str,
) -> Value {
    let config = config.display().to_string();
    let calls = calls.display().to_string();
    let base = ["--config", config.as_str(), "--backend", backend];
    let (ok, report, stderr) = replay(&[&base[..], &[calls.as_str()]].concat());
    assert!(ok, "{report:#}\n{stderr}");
    assert_eq!(report["same"], 200, "{report:#}");
    let planted = crate::support::planted_plugin(planted)
        .display()
        .to_string();
    let mut args = base.to_vec();
    args.extend(["--candidate", planted.as_str(), calls.as_str()]);
    let (ok, found, _) = replay(&args);
    assert!(!ok, "{found:#}");
    let paths: Vec<String> = found["findings"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["differences"].as_array().unwrap().clone())
        .map(|d| d["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !paths.is_empty() && paths.iter().all(|p| p.contains(needle)),
        "{found:#}"
    );
    args.extend(["--ignore", ignore]);
    let (ok, report, _) = replay(&args);
    assert!(ok, "{report:#}");
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_calls_replay_without_touching_podman_and_an_added_label_is_caught() {
    let service = crate::podman::PodmanService::start().await;
    let dir = Workdir::new();
    let config = format!(
        "{ADMIN}{}[backends.containers.record]\ncalls = 1000\n\n[[routes]]\nbackend = \"containers\"\n",
        service.backend("containers")
    );
    let config_path = dir.write_config(&config);
    let gw = dir.start_at(&config_path).await;
    let body = |_| crate::aws::provision("c", "zookeeper", "3.9", "small", 1);
    assert_eq!(cloud_traffic(&gw, body, 4).await, 200);
    let (calls, lines) = export(&gw, "containers", dir.path(), 200).await;
    assert_eq!(lines.len(), 200);
    let containers = || {
        let listed = crate::podman::podman(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=replicante.gateway={}", service.gateway_id),
        ]);
        String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .count()
    };
    let before = containers();
    assert_eq!(before, 2);
    let found = replay_own_and_planted(
        &config_path,
        "containers",
        &calls,
        "podman",
        "planted",
        "/requests/*/body/**/replicante.planted",
    );
    assert_eq!(found["different"], 4, "the four provisions: {found:#}");
    assert_eq!(containers(), before, "the replay reached podman");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_calls_replay_without_touching_ec2_and_another_instance_type_is_caught() {
    let moto = crate::aws::Moto::start(None).await;
    let dir = Workdir::new();
    let config = format!(
        "{ADMIN}{}[backends.cloud.record]\ncalls = 1000\n\n[[routes]]\nbackend = \"cloud\"\n",
        crate::aws::ec2_backend(
            "cloud",
            &moto,
            dir.path(),
            "AKIDTEST",
            "ec2-secret-not-recorded"
        )
    );
    let config_path = dir.write_config(&config);
    let gw = dir.start_at(&config_path).await;
    let body = |_| crate::aws::provision("c", "mongodb", "6.0", "", 1);
    assert_eq!(cloud_traffic(&gw, body, 4).await, 200);
    let (calls, lines) = export(&gw, "cloud", dir.path(), 200).await;
    assert_eq!(lines.len(), 200);
    assert!(
        !std::fs::read_to_string(&calls)
            .unwrap()
            .contains("ec2-secret-not-recorded")
    );
    let instances = || async {
        moto.unsigned(
            "ec2",
            &[("Action", "DescribeInstances"), ("Version", "2016-11-15")],
        )
        .await
        .matches("<instanceId>")
        .count()
    };
    let before = instances().await;
    let found = replay_own_and_planted(
        &config_path,
        "cloud",
        &calls,
        "aws_ec2",
        "/body/InstanceType",
        "/requests/*/body/InstanceType",
    );
    assert_eq!(found["different"], 4, "the four provisions: {found:#}");
    let difference = &found["findings"][0]["differences"][0];
    assert_eq!(difference["recorded"], "t3.micro", "{found:#}");
    assert_eq!(difference["replayed"], "t3.nano", "{found:#}");
    assert_eq!(instances().await, before, "the replay reached EC2");
}

/// The pool's candidate as `/admin/backends/pool` shows it, once `done` says it is ready (at
/// most 30 s).
async fn candidate_when(gw: &Gateway, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let (status, body) = gw.admin("/admin/backends/pool", None).await;
        assert_eq!(status, 200, "{body}");
        if done(&body["candidate"]) {
            return body["candidate"].clone();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{what}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_is_replayed_on_recorded_calls_before_it_serves_and_kept_out_if_it_differs() {
    let dir = Workdir::new();
    let names: Vec<String> = (1..=6).map(|i| format!("m{i}")).collect();
    let machines: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "small")).collect();
    let stable = format!(
        "{ADMIN}{}[backends.pool.record]\ncalls = 1000\n\n",
        pool_backend("pool", &machines)
    );
    let routes = "[[routes]]\nbackend = \"pool\"\n";
    let config_path = dir.write_config(&format!("{stable}{routes}"));
    let gw = dir.start_at(&config_path).await;
    let mut made = 0;
    for round in 0..10 {
        let cluster = format!("c{round}");
        let (status, body) = gw
            .post(
                "/provision",
                &provision_body(&cluster, "mongodb", "data", "small"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let node = body["node_ids"][0].as_str().unwrap().to_string();
        let (status, body) = gw
            .post(
                "/deprovision",
                &json!({ "cluster_id": cluster, "node_id": node }),
            )
            .await;
        assert_eq!(status, 204, "{body}");
        made += 2;
    }
    export(&gw, "pool", dir.path(), made).await;
    let before = gw.discover().await;
    // A discovery is a recorded call too: wait until the ring holds it.
    made += 1;
    export(&gw, "pool", dir.path(), made).await;

    // The build that allocates in reverse order, at full weight behind a replay gate: replayed,
    // caught, rolled back before it served a call.
    let candidate = |plugin: &Path| {
        format!(
            "{stable}[backends.pool.candidate]\nplugin = {}\nweight = 100\n\
             replay = {{ max_differences = 0 }}\n\n{routes}",
            toml_str(&plugin.display().to_string())
        )
    };
    std::fs::write(
        &config_path,
        candidate(&crate::support::planted_plugin("pool")),
    )
    .unwrap();
    let (status, body) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let shown = candidate_when(&gw, "the planted build's gate", |c| {
        c["state"] == "rolled-back"
    })
    .await;
    assert_eq!(shown["rolled_back"]["reason"], "replay", "{shown:#}");
    assert_eq!(shown["weight"], 0, "{shown:#}");
    let gate = &shown["replay"];
    assert_eq!(gate["state"], "failed", "{shown:#}");
    let report = &gate["report"];
    assert_eq!(report["calls"], made, "{shown:#}");
    assert_eq!(report["different"], 10, "every provision: {shown:#}");
    assert!(
        report["findings"][0]["differences"]
            .to_string()
            .contains("/answer/ok/node_ids/0"),
        "{shown:#}"
    );
    // Its replay took no machine (the recorded provisions it replayed wrote to their overlays),
    // and it served nothing: a provision now is the stable plugin's, which takes the first one.
    assert_eq!(gw.discover().await, before);
    let (status, body) = gw
        .post(
            "/provision",
            &provision_body("after", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node_ids"][0], "m1", "{body}");
    assert_eq!(candidate_when(&gw, "calls", |_| true).await["calls"], 0);
    let admin = format!("http://{}", gw.admin_address());
    let (_, status_text, _) = run_cli(&["status", "--admin", &admin]);
    assert!(
        status_text.contains("replay failed") && status_text.contains("rolled back (replay:"),
        "{status_text}"
    );

    // The same build as the stable one: replayed the same, it serves at its weight.
    std::fs::write(&config_path, candidate(&plugin("pool"))).unwrap();
    let (status, body) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let shown = candidate_when(&gw, "the same build's gate", |c| {
        c["replay"]["state"] == "passed"
    })
    .await;
    assert_eq!(shown["weight"], 100, "{shown:#}");
    assert!(shown["rolled_back"].is_null(), "{shown:#}");
    assert_eq!(shown["replay"]["report"]["different"], 0, "{shown:#}");
    let (status, body) = gw
        .post(
            "/provision",
            &provision_body("served", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(candidate_when(&gw, "calls", |_| true).await["calls"], 1);
}
