//! The security review's findings, each pinned: what guards the admin API changes with the config
//! that says so, or the reload is refused; slow readers, log floods and oversized inputs are bounded.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    Ca, Gateway, Workdir, fault_backend, plugin, pool_backend, provision_body, shared_cache,
    toml_str,
};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A pool gateway whose `[admin]` section is `admin`.
fn config(admin: &str) -> String {
    format!(
        "[state]\ndir = \"state\"\ncache_dir = {}\n[admin]\n{admin}\n\n{}[[routes]]\nbackend = \"pool\"\n",
        toml_str(&shared_cache().display().to_string()),
        pool_backend("pool", &[("m1", "small")]),
    )
}

/// `GET path` on the admin listener with `token` as the bearer token: the status, or `None` when
/// the connection was refused (a TLS handshake without the required client certificate).
async fn admin_get(
    client: &reqwest::Client,
    gw: &Gateway,
    path: &str,
    token: Option<&str>,
) -> Option<u16> {
    let mut request = client.get(format!("{}{path}", gw.admin.as_ref().unwrap()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.ok().map(|r| r.status().as_u16())
}

async fn reload(client: &reqwest::Client, gw: &Gateway, token: Option<&str>) -> (u16, Value) {
    let mut request = client
        .post(format!("{}/admin/reload", gw.admin.as_ref().unwrap()))
        .json(&json!({}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.expect("reload request");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_reload_that_swaps_client_certificates_for_a_token_requires_the_token_at_once() {
    let work = Workdir::new();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let (cert, key) = server_ca.sign(&["127.0.0.1"]);
    let cert = toml_str(&write(work.path(), "admin.pem", &cert));
    let key = toml_str(&write(work.path(), "admin-key.pem", &key));
    let ca = toml_str(&write(work.path(), "client-ca.pem", &client_ca.pem));
    let mtls = format!(
        "listen = \"127.0.0.1:0\"\ntls = {{ cert = {cert}, key = {key}, client_ca = {ca} }}"
    );
    let gw = work.start_cold(&config(&mtls)).await;
    let (client_cert, client_key) = client_ca.sign(&["operator"]);
    let operator = crate::operating::client(&server_ca.pem, Some((&client_cert, &client_key)));
    let anonymous = crate::operating::client(&server_ca.pem, None);
    let mut ready = false;
    for _ in 0..2400 {
        // `/admin/backends` answers 503 until the first generation is loaded.
        if admin_get(&operator, &gw, "/admin/backends", None).await == Some(200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the admin API never answered:\n{}", gw.log());
    assert_eq!(
        admin_get(&anonymous, &gw, "/admin/backends", None).await,
        None,
        "without a client certificate the handshake is refused"
    );

    // The documented workflow: drop client certificates, add a token, reload.
    let token = "a-new-admin-token-0123456789";
    let tokened = format!(
        "listen = \"127.0.0.1:0\"\ntls = {{ cert = {cert}, key = {key} }}\ntoken = \"{token}\""
    );
    std::fs::write(work.path().join("gateway.toml"), config(&tokened)).unwrap();
    let (status, reply) = reload(&operator, &gw, None).await;
    assert_eq!(status, 200, "{reply}");

    // Neither a certificate nor a token: refused, where it was served before the fix.
    assert_eq!(
        admin_get(&anonymous, &gw, "/admin/backends", None).await,
        Some(401)
    );
    assert_eq!(
        admin_get(
            &anonymous,
            &gw,
            "/admin/backends",
            Some("not-the-token-at-all")
        )
        .await,
        Some(401)
    );
    assert_eq!(
        admin_get(&anonymous, &gw, "/admin/backends", Some(token)).await,
        Some(200)
    );
    assert!(!gw.log().contains(token), "the token reached the log");
}

#[tokio::test]
async fn a_changed_admin_token_is_in_force_when_the_reload_says_it_applied() {
    let work = Workdir::new();
    let (old, new) = (
        "the-old-admin-token-0123456789",
        "the-new-admin-token-9876543210",
    );
    let with_token = |token: &str| format!("listen = \"127.0.0.1:0\"\ntoken = \"{token}\"");
    let gw = work.start_cold(&config(&with_token(old))).await;
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..2400 {
        if admin_get(&http, &gw, "/admin/backends", Some(old)).await == Some(200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the admin API never answered:\n{}", gw.log());
    assert_eq!(
        admin_get(&http, &gw, "/admin/backends", Some(new)).await,
        Some(401)
    );

    std::fs::write(work.path().join("gateway.toml"), config(&with_token(new))).unwrap();
    let (status, reply) = reload(&http, &gw, Some(old)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        admin_get(&http, &gw, "/admin/backends", Some(old)).await,
        Some(401)
    );
    assert_eq!(
        admin_get(&http, &gw, "/admin/backends", Some(new)).await,
        Some(200)
    );
    let (_, generation) = {
        let r = http
            .get(format!("{}/admin/generation", gw.admin.as_ref().unwrap()))
            .bearer_auth(new)
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        generation["restart_needed"],
        json!([]),
        "the token applied, so nothing waits for a restart: {generation}"
    );
}

#[tokio::test]
async fn a_reload_that_moves_the_admin_listener_is_refused_and_changes_nothing() {
    let work = Workdir::new();
    let token = "the-admin-token-0123456789";
    let gw = work
        .start(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n\n{}[[routes]]\nbackend = \"pool\"\n",
            pool_backend("pool", &[("m1", "small")])
        ))
        .await;
    let http = reqwest::Client::new();
    // The new file moves the admin listener and drops its token: on loopback the check accepts
    // it, but the listener cannot move without a restart, so nothing of it may apply.
    work.write_config(&format!(
        "[admin]\nlisten = \"127.0.0.1:1\"\n\n{}[[routes]]\nbackend = \"pool\"\n",
        pool_backend("pool", &[("m1", "small"), ("m2", "small")])
    ));
    let (status, reply) = reload(&http, &gw, Some(token)).await;
    assert_eq!(status, 422, "{reply}");
    let cause = reply["error_cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains("admin.listen") && cause.contains("restart"),
        "{reply}"
    );
    assert_eq!(
        admin_get(&http, &gw, "/admin/backends", None).await,
        Some(401)
    );
    let generation = http
        .get(format!("{}/admin/generation", gw.admin.as_ref().unwrap()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(generation["generation"], 1, "{generation}");
    assert_eq!(generation["refused"], 1, "{generation}");
}

#[tokio::test]
async fn a_client_that_pipelines_requests_and_reads_nothing_loses_its_connection() {
    use tokio::io::AsyncWriteExt;
    let gw = Gateway::start(&format!(
        "[server]\nwrite_timeout = \"1s\"\n\n{}[[routes]]\nbackend = \"pool\"\n",
        pool_backend("pool", &[("m1", "small"), ("m2", "small")])
    ))
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small window, so the answers back up into the gateway's buffers quickly.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(gw.address().parse().unwrap()).await.unwrap();
    let request = b"GET /discover HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
    // Keep sending and never read: once the gateway's writes stall past `write_timeout` it drops
    // the connection (with requests unread, a reset), and a write here fails. Without the
    // deadline the writes block for good once every buffer is full; the 60 s bound is 60 times
    // the deadline, so only a connection that is never dropped reaches it.
    let dropped = tokio::time::timeout(Duration::from_secs(60), async {
        for sent in 0..1_000_000u32 {
            if stream.write_all(request).await.is_err() {
                return Some(sent);
            }
        }
        None
    })
    .await;
    let sent = match dropped {
        Ok(Some(sent)) => sent,
        Ok(None) => panic!("a million requests went through without a write stalling"),
        Err(_) => panic!("the gateway held a connection that read nothing for 60 s"),
    };
    assert!(sent > 0);
    // Everyone else is still served.
    assert_eq!(gw.get("/discover").await.0, 200);
}

#[tokio::test]
async fn a_plugin_that_floods_its_log_gets_a_bounded_share_and_cannot_forge_a_line() {
    let gw = Gateway::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}[[routes]]\nbackend = \"noisy\"\n",
        fault_backend("noisy", "log-flood", "")
    ))
    .await;
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    // The call logged 1,025 messages (1 MiB): one call's allowance of 64 KiB passes (the first
    // message and 64 of 1,023 bytes), the rest are counted and reported once.
    gw.wait_for_log("more messages dropped").await;
    let log = gw.log();
    let kept = log.lines().filter(|l| l.contains("yyyyyyyy")).count();
    assert_eq!(kept, 64);
    assert!(log.contains("960 more messages dropped"), "{log}");
    // The newline was escaped: the forged text is on the plugin's own line, not a line of its own.
    let forged: Vec<&str> = log.lines().filter(|l| l.contains("forged line")).collect();
    assert_eq!(forged.len(), 1, "{forged:?}");
    assert!(forged[0].contains("one line\\nERROR forged"), "{forged:?}");
    let (_, metrics) = {
        let r = gw
            .client
            .get(format!("{}/metrics", gw.admin.as_ref().unwrap()))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    };
    assert!(
        metrics.contains("platform_gateway_plugin_log_dropped_total{backend=\"noisy\"} 960"),
        "{metrics}"
    );
    assert!(
        metrics.contains("platform_gateway_log_lines_dropped_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_plugin_cannot_answer_a_node_that_another_backend_owns() {
    // Two pools that both call a machine `m1`: `b` answering `m1` in the cluster where `a`
    // created it would take over that node's deprovisions.
    let gw = Gateway::start(&format!(
        "{}{}[[routes]]\nstore = \"mongodb\"\nbackend = \"a\"\n[[routes]]\nstore = \"kafka\"\nbackend = \"b\"\n",
        pool_backend("a", &[("m1", "small")]),
        pool_backend("b", &[("m1", "small")]),
    ))
    .await;
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["node_ids"], json!(["m1"]));
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c1", "kafka", "data", "small"),
        )
        .await;
    assert_eq!(status, 502, "{reply}");
    assert!(
        reply["error_cause"]
            .as_str()
            .unwrap_or_default()
            .contains("belongs to another backend"),
        "{reply}"
    );
    // The node is still `a`'s: its deprovision reaches `a`, which frees its machine (a second
    // provision through `a` gets `m1` again).
    let (status, reply) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c1", "node_id": "m1" }),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c2", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["node_ids"], json!(["m1"]));
}

#[tokio::test]
async fn fixing_a_file_that_a_refused_config_names_retries_the_reload() {
    let work = Workdir::new();
    let base = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}[[routes]]\nbackend = \"pool\"\n",
        pool_backend("pool", &[("m1", "small")])
    );
    let gw = work.start(&base).await;
    // A new backend whose plugin is not there yet: the reload the edit triggers is refused.
    let missing = work.path().join("later.wasm");
    work.write_config(&format!(
        "{base}[backends.later]\nplugin = {}\n",
        toml_str(&missing.display().to_string())
    ));
    gw.wait_status("the refusal", |s| s["refused"] == 1).await;
    assert_eq!(gw.admin_generation().await["generation"], 1);
    // Copying the plugin in is a change to a file the refused config names: it retries.
    std::fs::copy(plugin("pool"), &missing).unwrap();
    let status = gw
        .wait_status("the retried reload", |s| s["generation"] == 2)
        .await;
    assert_eq!(status["refused"], 1, "{status}");
}

#[tokio::test]
async fn an_idempotency_key_reused_with_another_body_is_refused_not_replayed() {
    let gw = Gateway::start(&format!(
        "{}[[routes]]\nbackend = \"pool\"\n",
        pool_backend("pool", &[("m1", "small"), ("m2", "small"), ("m3", "small")])
    ))
    .await;
    let first = provision_body("c1", "mongodb", "data", "small");
    let (status, reply) = gw.post_with_key("/provision", &first, "key-1").await;
    assert_eq!(status, 200, "{reply}");
    let machines = reply["node_ids"].clone();
    // Another request under the same key (two nodes now): before, the plugin saw the first
    // request's ID and answered its machine, a silent replay.
    let mut other = first.clone();
    other["provision"]["count"] = json!(2);
    let (status, reply) = gw.post_with_key("/provision", &other, "key-1").await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("Idempotency-Key"),
        "{reply}"
    );
    // The true retry still gets the first answer, and a new key makes a new request.
    let (status, reply) = gw.post_with_key("/provision", &first, "key-1").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["node_ids"], machines);
    let (status, reply) = gw.post_with_key("/provision", &other, "key-2").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["count"], 2, "{reply}");
}
