//! Plans: `POST /admin/plan/provision` and `/deprovision` run the real operation in plan mode,
//! and the sandbox guarantees it changed nothing: no state write reaches the store, no request
//! that is not a read leaves the gateway. A saved plan is applied with `X-Platform-Plan`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::aws::{Moto, ec2_backend, provision};
use crate::podman::{PodmanService, podman};
use crate::support::{Gateway, Workdir, plugin, pool_backend, run_cli, toml_str};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n\n[reload]\nwatch = false\n\n";

fn pool_config(machines: usize) -> String {
    let names: Vec<String> = (1..=machines).map(|i| format!("m{i}")).collect();
    let machines: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "small")).collect();
    format!(
        "{ADMIN}{}[[routes]]\nbackend = \"pool\"\n",
        pool_backend("pool", &machines)
    )
}

/// A request with the `X-Platform-Plan` header: (status, headers, body).
async fn apply(
    gw: &Gateway,
    path: &str,
    body: &Value,
    plan_id: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let reply = gw
        .client
        .post(gw.url(path))
        .header("x-platform-plan", plan_id)
        .json(body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (reply.status().as_u16(), reply.headers().clone());
    let text = reply.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// Apply `plan` to `body` and expect 409 in the error shape, its message saying `needle`.
async fn refused(gw: &Gateway, path: &str, body: &Value, plan: &Value, needle: &str) {
    let plan_id = plan["plan_id"].as_str().unwrap();
    let (status, _, reply) = apply(gw, path, body, plan_id).await;
    crate::support::assert_error_shape(status, &reply);
    assert_eq!(status, 409, "{reply}");
    let message = reply["error_msg"].as_str().unwrap();
    assert!(message.contains(needle), "{needle}: {message}");
}

/// `POST /admin/plan/{operation}`, expecting 200: the plan.
async fn plan(gw: &Gateway, operation: &str, body: &Value) -> Value {
    let (status, plan) = gw
        .admin(&format!("/admin/plan/{operation}"), Some(body))
        .await;
    assert_eq!(status, 200, "{plan}");
    plan
}

/// `state export` of the config in `dir` (the gateway stopped: redb lets one process open it).
fn export(dir: &Workdir) -> String {
    let path = dir.path().join("gateway.toml").display().to_string();
    let (ok, dump, stderr) = run_cli(&["state", "export", "--config", &path]);
    assert!(ok, "{stderr}");
    dump
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_pool_plan_names_the_machines_the_real_provision_then_allocates() {
    let gw = Gateway::start(&pool_config(5)).await;
    // Something allocated already: the plan must see it.
    let (status, first) = gw
        .post("/provision", &provision("c0", "kafka", "3.0", "small", 1))
        .await;
    assert_eq!(status, 200, "{first}");
    let request = provision("c1", "kafka", "3.0", "small", 3);
    let planned = plan(&gw, "provision", &request).await;
    assert_eq!(planned["backend"], json!("pool"));
    assert_eq!(planned["would_answer"]["status"], json!(200));
    let machines = strings(&planned["would_answer"]["body"]["node_ids"]);
    assert_eq!(machines.len(), 3, "{planned}");
    assert!(
        !machines.contains(&strings(&first["node_ids"])[0]),
        "{planned}"
    );
    // Three writes, each from absent, in the pool's namespace; nothing else.
    let writes = planned["state_writes"].as_array().unwrap();
    assert_eq!(writes.len(), 3, "{planned}");
    for write in writes {
        assert_eq!(write["namespace"], json!("pool"));
        assert_eq!(write["old_version"], json!("absent"));
    }
    assert!(planned["requests"].as_array().unwrap().is_empty());
    assert!(planned["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(planned["route"].as_str().unwrap().contains("routes[0]"));

    // Planning twice plans the same: the first plan took nothing.
    let again = plan(&gw, "provision", &request).await;
    assert_eq!(
        strings(&again["would_answer"]["body"]["node_ids"]),
        machines
    );
    let (status, real) = gw.post("/provision", &request).await;
    assert_eq!(status, 200, "{real}");
    assert_eq!(strings(&real["node_ids"]), machines);
}

#[tokio::test]
async fn a_hundred_plans_leave_the_state_export_byte_identical() {
    let dir = Workdir::new();
    let config = pool_config(6);
    let gw = dir.start(&config).await;
    let (status, reply) = gw
        .post("/provision", &provision("c0", "kafka", "3.0", "small", 2))
        .await;
    assert_eq!(status, 200, "{reply}");
    let taken = strings(&reply["node_ids"]);
    gw.stop();
    let before = export(&dir);

    let gw = dir.start(&config).await;
    for i in 0..100 {
        let planned = if i % 2 == 0 {
            plan(
                &gw,
                "provision",
                &provision(&format!("c{i}"), "kafka", "3.0", "small", 3),
            )
            .await
        } else {
            let node = &taken[i % taken.len()];
            plan(
                &gw,
                "deprovision",
                &json!({ "cluster_id": "c0", "node_id": node }),
            )
            .await
        };
        // Each one would have written (a provision takes 3 machines, a deprovision frees one).
        assert!(
            !planned["state_writes"].as_array().unwrap().is_empty(),
            "{planned}"
        );
        assert!(planned["plan_id"].is_string(), "{planned}");
    }
    gw.stop();
    assert_eq!(export(&dir), before);
}

#[tokio::test]
async fn planning_needs_the_admin_token() {
    let token = "plan-admin-token-0123456789";
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {}\n\n{}[[routes]]\nbackend = \"pool\"\n",
        toml_str(token),
        pool_backend("pool", &[("m1", "small")])
    );
    let gw = Gateway::start(&config).await;
    let url = format!("{}/admin/plan/provision", gw.admin.as_ref().unwrap());
    let body = provision("c1", "kafka", "3.0", "small", 1);
    let without = gw.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let with = gw
        .client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    // The public listener does not serve plans at all.
    let (status, _) = gw.post("/admin/plan/provision", &body).await;
    assert_eq!(status, 404);
}

/// A server on 127.0.0.1 that counts the connections it gets and answers each with 200.
async fn recording_server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_plugin_that_tries_every_effect_in_plan_mode_reaches_neither_the_store_nor_the_network() {
    let (port, seen) = recording_server().await;
    let dir = Workdir::new();
    let config = format!(
        "{ADMIN}[backends.probe]\nplugin = {}\ngrants = {{ http = [\"http://127.0.0.1:{port}\"] }}\n\
         [backends.probe.settings]\ntarget = \"127.0.0.1:{port}\"\nmethod = \"POST\"\n\
         body = \"make-it-so\"\neffects = \"all\"\n\n[[routes]]\nbackend = \"probe\"\n",
        toml_str(&plugin("http_probe").display().to_string()),
    );
    let gw = dir.start(&config).await;
    gw.stop();
    let before = export(&dir);

    let gw = dir.start(&config).await;
    let planned = plan(
        &gw,
        "provision",
        &provision("c1", "kafka", "3.0", "small", 1),
    )
    .await;
    // It tried: the plan lists the writes, the delete, the swap and the POST with its body.
    let keys: Vec<&str> = planned["state_writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["planned/a", "planned/b", "seed", "planned/c"],
        "{planned}"
    );
    let requests = planned["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1, "{planned}");
    assert_eq!(requests[0]["method"], json!("POST"));
    assert_eq!(requests[0]["sent"], json!(false));
    assert_eq!(requests[0]["body"], json!("make-it-so"));
    assert_eq!(planned["stopped"]["backend"], json!("probe"));
    // The plugin heard the denial it knows.
    let message = planned["would_answer"]["body"]["error_msg"]
        .as_str()
        .unwrap();
    assert!(message.contains("HttpRequestDenied"), "{message}");
    // Its log flood is bounded in the transcript as in the log.
    let logs = planned["calls"][0]["transcript"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "log")
        .count();
    assert!(logs > 0 && logs <= 256, "{logs}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a request reached the server"
    );
    gw.stop();
    assert_eq!(export(&dir), before, "the plan changed the store");

    // The control: for real, the request reaches the server and the writes the store.
    let gw = dir.start(&config).await;
    let (status, reply) = gw
        .post("/provision", &provision("c1", "kafka", "3.0", "small", 1))
        .await;
    assert_eq!(status, 500, "{reply}");
    assert!(
        reply["error_msg"].as_str().unwrap().contains("status 200"),
        "{reply}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    gw.stop();
    assert_ne!(export(&dir), before);
}

#[tokio::test]
async fn a_saved_plan_applies_once_to_the_same_request_and_says_it_matched() {
    let gw = Gateway::start(&pool_config(6)).await;
    let request = provision("c1", "kafka", "3.0", "small", 2);
    let planned = plan(&gw, "provision", &request).await;
    let plan_id = planned["plan_id"].as_str().unwrap().to_string();
    assert!(planned["expires_at"].is_string());

    // Another body with the plan: refused, nothing allocated.
    let other = provision("c1", "kafka", "3.0", "small", 3);
    refused(&gw, "/provision", &other, &planned, "not the request").await;

    let (status, headers, real) = apply(&gw, "/provision", &request, &plan_id).await;
    assert_eq!(status, 200, "{real}");
    assert_eq!(headers["x-platform-plan-matched"], "true");
    assert_eq!(real, planned["would_answer"]["body"]);

    refused(&gw, "/provision", &request, &planned, "applied already").await;

    // A plan ID that is not one: 400; one that never existed: 409.
    let (status, _, _) = apply(&gw, "/provision", &request, "../etc").await;
    assert_eq!(status, 400);
    let unknown = format!("{}-{}", "9".repeat(12), "0".repeat(32));
    let (status, _, body) = apply(&gw, "/provision", &request, &unknown).await;
    assert_eq!(status, 409, "{body}");

    // A deprovision plan, applied.
    let node = strings(&real["node_ids"])[0].clone();
    let request = json!({ "cluster_id": "c1", "node_id": node });
    let planned = plan(&gw, "deprovision", &request).await;
    assert_eq!(planned["would_answer"]["status"], json!(204));
    let plan_id = planned["plan_id"].as_str().unwrap();
    let (status, headers, _) = apply(&gw, "/deprovision", &request, plan_id).await;
    assert_eq!(status, 204);
    assert_eq!(headers["x-platform-plan-matched"], "true");
}

#[tokio::test]
async fn a_saved_plan_is_refused_when_state_it_read_changed_or_it_expired() {
    let dir = Workdir::new();
    let config = pool_config(6).replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        "[admin]\nlisten = \"127.0.0.1:0\"\nplan_ttl = \"2s\"\n",
        1,
    );
    let gw = dir.start(&config).await;
    let request = provision("c1", "kafka", "3.0", "small", 2);

    // A key the plan read changes (another provision takes a machine it looked at): 409.
    let planned = plan(&gw, "provision", &request).await;
    let (status, reply) = gw
        .post("/provision", &provision("c2", "kafka", "3.0", "small", 1))
        .await;
    assert_eq!(status, 200, "{reply}");
    refused(
        &gw,
        "/provision",
        &request,
        &planned,
        "changed since the plan",
    )
    .await;

    // Past plan_ttl: 409, and nothing allocated.
    let planned = plan(&gw, "provision", &request).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    refused(&gw, "/provision", &request, &planned, "expired").await;

    // Nothing was allocated by the refused plans: c1 has no node.
    assert!(crate::support::node_ids(&gw.discover().await, "c1").is_empty());
}

#[tokio::test]
async fn a_saved_plan_is_refused_after_a_reload_that_changed_the_plugin() {
    let dir = Workdir::new();
    let config = pool_config(3);
    let gw = dir.start(&config).await;
    let request = provision("c1", "kafka", "3.0", "small", 2);
    // A reload that loads another plugin build for the backend: 409 naming the plugin.
    let planned = plan(&gw, "provision", &request).await;
    let pool = plugin("pool").display().to_string();
    let copy = dir.path().join("pool-rebuilt.wasm");
    // Another build: the same component with a custom section appended (a valid component
    // with another digest).
    let mut bytes = std::fs::read(&pool).unwrap();
    bytes.extend_from_slice(&[0, 6, 5, b'b', b'u', b'i', b'l', b'd']);
    std::fs::write(&copy, bytes).unwrap();
    dir.write_config(&config.replace(&toml_str(&pool), &toml_str(&copy.display().to_string())));
    let (status, body) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 200, "{body}");
    refused(
        &gw,
        "/provision",
        &request,
        &planned,
        "plugin of backend `pool` changed",
    )
    .await;
    // Nothing was allocated by the refused plans: c1 has no node.
    assert!(crate::support::node_ids(&gw.discover().await, "c1").is_empty());
}

#[tokio::test]
async fn the_cli_prints_a_plan_readably_and_as_json() {
    let dir = Workdir::new();
    let gw = dir.start(&pool_config(3)).await;
    let request = dir.path().join("request.json");
    std::fs::write(
        &request,
        provision("c1", "kafka", "3.0", "small", 2).to_string(),
    )
    .unwrap();
    let (admin, request) = (gw.admin.clone().unwrap(), request.display().to_string());
    let (ok, text, stderr) = run_cli(&["plan", "provision", &request, "--admin", &admin]);
    assert!(ok, "{stderr}");
    assert!(text.contains("Plan of a provision"), "{text}");
    assert!(text.contains("The endpoint would answer: 200"), "{text}");
    assert!(text.contains("State writes (2):"), "{text}");
    assert!(text.contains("X-Platform-Plan: "), "{text}");
    let (ok, json, stderr) = run_cli(&[
        "plan",
        "provision",
        &request,
        "--admin",
        &admin,
        "--output",
        "json",
    ]);
    assert!(ok, "{stderr}");
    let plan: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(strings(&plan["would_answer"]["body"]["node_ids"]).len(), 2);
    // A request the public API refuses is refused the same way.
    std::fs::write(&request, r#"{"cluster": {}}"#).unwrap();
    let (ok, _, stderr) = run_cli(&["plan", "provision", &request, "--admin", &admin]);
    assert!(!ok);
    assert!(stderr.contains("400"), "{stderr}");
}

/// `platform-gateway plan OPERATION` of `body` against `gw`'s admin API: the text it prints
/// (printed by the test too, for whoever reads its output).
fn cli_plan(gw: &Gateway, operation: &str, body: &Value) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body.to_string()).unwrap();
    let path = file.path().display().to_string();
    let admin = gw.admin.clone().unwrap();
    let (ok, text, stderr) = run_cli(&["plan", operation, &path, "--admin", &admin]);
    assert!(ok, "{stderr}");
    eprintln!("$ platform-gateway plan {operation} request.json\n{text}");
    text
}

fn containers(gateway_id: &str) -> usize {
    let listed = podman(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=replicante.gateway={gateway_id}"),
    ]);
    String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .count()
}

#[tokio::test]
async fn a_podman_plan_sends_its_reads_and_withholds_the_create() {
    let service = PodmanService::start().await;
    let config = format!(
        "{ADMIN}{}[[routes]]\nbackend = \"containers\"\n",
        service.backend("containers")
    );
    let gw = Gateway::start(&config).await;
    let planned = plan(
        &gw,
        "provision",
        &provision("zk", "zookeeper", "3.9", "small", 1),
    )
    .await;
    let requests = planned["requests"].as_array().unwrap();
    let create = requests
        .iter()
        .find(|r| r["url"].as_str().unwrap().ends_with("/containers/create"))
        .unwrap_or_else(|| panic!("{planned}"));
    assert_eq!(create["method"], json!("POST"));
    assert_eq!(create["sent"], json!(false));
    assert!(
        create["body"]
            .as_str()
            .unwrap()
            .contains("platform-gateway-busybox"),
        "{create}"
    );
    assert!(
        planned["stopped"]["effect"]
            .as_str()
            .unwrap()
            .contains("/containers/create")
    );
    // What it looked up it sent, and podman answered.
    assert!(
        requests
            .iter()
            .any(|r| r["method"] == "GET" && r["sent"] == true && r["status"].is_u64()),
        "{planned}"
    );
    assert_eq!(containers(&service.gateway_id), 0);
    let text = cli_plan(
        &gw,
        "provision",
        &provision("zk", "zookeeper", "3.9", "small", 1),
    );
    assert!(text.contains("/containers/create  NOT SENT"), "{text}");
    assert_eq!(containers(&service.gateway_id), 0);

    // A deprovision of a node the gateway does not know lists the containers (a discovery).
    let planned = plan(
        &gw,
        "deprovision",
        &json!({ "cluster_id": "zk", "node_id": "nope" }),
    )
    .await;
    let listed = planned["requests"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|r| r["url"].as_str().unwrap().contains("/containers/json") && r["sent"] == true),
        "{planned}"
    );
    assert_eq!(planned["would_answer"]["status"], json!(404));
    assert_eq!(containers(&service.gateway_id), 0);
}

/// How many instances moto holds.
async fn instances(moto: &Moto) -> usize {
    let text = moto
        .unsigned(
            "ec2",
            &[("Action", "DescribeInstances"), ("Version", "2016-11-15")],
        )
        .await;
    text.matches("<instanceId>").count()
}

#[tokio::test]
async fn an_ec2_plan_sends_describe_instances_and_withholds_run_and_terminate() {
    let moto = Moto::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    // The EC2 query API reads with POST: the grant declares which are reads.
    let secret = "ec2-secret-key-never-shown";
    let backend = ec2_backend("cloud", &moto, dir.path(), "AKIDTEST", secret).replace(
        &format!("grants = {{ http = [{}] }}", toml_str(&moto.endpoint)),
        &format!(
            "grants = {{ http = [{}], reads = [{{ method = \"POST\", url = \"http://127.0.0.1:*/\", \
             body = \"Action=Describe*\" }}] }}",
            toml_str(&moto.endpoint)
        ),
    );
    assert!(backend.contains("reads = "), "{backend}");
    let config = format!("{ADMIN}{backend}[[routes]]\nbackend = \"cloud\"\n");
    let gw = Gateway::start(&config).await;
    let (status, reply) = gw
        .post("/provision", &provision("c1", "mongodb", "6.0", "", 1))
        .await;
    assert_eq!(status, 200, "{reply}");
    let node = strings(&reply["node_ids"])[0].clone();
    let count = instances(&moto).await;

    let planned = plan(&gw, "provision", &provision("c1", "mongodb", "6.0", "", 2)).await;
    let first = &planned["requests"][0];
    assert_eq!(
        (&first["method"], &first["sent"]),
        (&json!("POST"), &json!(false)),
        "{planned}"
    );
    assert!(
        first["body"]
            .as_str()
            .unwrap()
            .starts_with("Action=RunInstances"),
        "{planned}"
    );
    // The secret key is nowhere in the plan.
    assert!(!planned.to_string().contains(secret));

    let planned = plan(
        &gw,
        "deprovision",
        &json!({ "cluster_id": "c1", "node_id": node }),
    )
    .await;
    let requests = planned["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{planned}");
    assert_eq!(requests[0]["sent"], json!(true));
    assert_eq!(requests[0]["read"], json!(true));
    assert_eq!(requests[0]["status"], json!(200));
    assert_eq!(requests[1]["sent"], json!(false));
    assert!(
        requests[1]["body"]
            .as_str()
            .unwrap()
            .starts_with("Action=TerminateInstances")
    );
    assert_eq!(instances(&moto).await, count);
    let text = cli_plan(
        &gw,
        "deprovision",
        &json!({ "cluster_id": "c1", "node_id": node }),
    );
    assert!(
        text.contains("sent, 200") && text.contains("NOT SENT"),
        "{text}"
    );
    cli_plan(&gw, "provision", &provision("c1", "mongodb", "6.0", "", 2));
    assert_eq!(instances(&moto).await, count);
    // Still running: a discovery reports it.
    assert_eq!(
        crate::support::node_ids(&gw.discover().await, "c1"),
        vec![node]
    );
}
