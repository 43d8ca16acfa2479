//! The outbound-HTTP capability and secrets: a granted backend reaches exactly its allowlist,
//! within its deadline and response-size limit; secrets never show in replies or logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Gateway, fault_backend_with, plugin, provision_body, toml_str};
use axum::Router;
use axum::routing::get;

/// A small HTTP server on 127.0.0.1 that counts the requests it gets, and the answers of
/// `/slow` it finished (each after 30 s).
pub(crate) struct Target {
    /// `host:port`, as a URL's authority writes it.
    pub(crate) address: String,
    pub(crate) hits: Arc<AtomicUsize>,
    slow_answered: Arc<AtomicUsize>,
}

async fn target() -> Target {
    target_on("127.0.0.1:0").await
}

/// [`target`] on another address (`[::1]:0`).
pub(crate) async fn target_on(bind: &str) -> Target {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let slow_answered = Arc::new(AtomicUsize::new(0));
    let answered = slow_answered.clone();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/slow",
            get(move || async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                answered.fetch_add(1, Ordering::SeqCst);
                "late"
            }),
        )
        .route("/big", get(|| async { vec![b'x'; 8 << 20] }))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                counter.fetch_add(1, Ordering::SeqCst);
                next.run(request)
            },
        ));
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Target {
        address,
        hits,
        slow_answered,
    }
}

fn caller(grant: Option<&str>, target: &str, path: &str, limits: &str) -> String {
    let grant = grant
        .map(|g| format!("grants = {{ http = [{}] }}\n", toml_str(g)))
        .unwrap_or_default();
    format!(
        "[backends.caller]\nplugin = {}\n{grant}limits = {{ {limits} }}\n[backends.caller.settings]\n\
         target = {}\npath = {}\n\n[[routes]]\nbackend = \"caller\"\n",
        toml_str(&plugin("http_probe").display().to_string()),
        toml_str(target),
        toml_str(path),
    )
}

/// Provision through the gateway: the status and the probe's report.
pub(crate) async fn report(gw: &Gateway) -> (u16, String) {
    let (status, body) = gw
        .post("/provision", &provision_body("c", "s", "g", "small"))
        .await;
    let message = body["error_msg"].as_str().unwrap_or_default().to_string();
    (status, message)
}

#[tokio::test]
async fn a_granted_backend_reaches_its_allowlist_and_nothing_else() {
    let allowed = target().await;
    let other = target().await;
    let grant = format!("http://{}", allowed.address);

    let gw = Gateway::start(&caller(Some(&grant), &allowed.address, "/", "")).await;
    let (status, message) = report(&gw).await;
    assert_eq!(status, 500);
    assert!(message.ends_with("http: status 200, 2 bytes"), "{message}");
    assert_eq!(allowed.hits.load(Ordering::SeqCst), 1);

    let gw = Gateway::start(&caller(Some(&grant), &other.address, "/", "")).await;
    let (_, message) = report(&gw).await;
    assert!(message.contains("HttpRequestDenied"), "{message}");
    assert_eq!(
        other.hits.load(Ordering::SeqCst),
        0,
        "the request left the gateway"
    );
    gw.wait_for_log("denied: not in the backend's http grant")
        .await;
}

#[tokio::test]
async fn an_outbound_request_is_bounded_by_the_call_deadline_and_the_response_limit() {
    let server = target().await;
    let grant = format!("http://{}", server.address);

    let gw = Gateway::start(&caller(
        Some(&grant),
        &server.address,
        "/slow",
        "timeout = \"500ms\"",
    ))
    .await;
    let (status, message) = report(&gw).await;
    // The request's timeouts are clamped to what is left of the call (the unit test
    // `every_timeout_of_a_request_is_cut_to_what_is_left_of_the_call` pins the clamp): the
    // plugin sees its request time out (and answers with that), or the call's deadline stops
    // it (504). Either way the client is answered while the target still holds its reply.
    assert!(
        status == 504 || message.contains("ConnectionReadTimeout"),
        "{status} {message}"
    );
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "the request never left"
    );
    assert_eq!(
        server.slow_answered.load(Ordering::SeqCst),
        0,
        "the gateway waited for the slow answer"
    );

    let gw = Gateway::start(&caller(
        Some(&grant),
        &server.address,
        "/big",
        "max_response = \"1MiB\"",
    ))
    .await;
    let (status, message) = report(&gw).await;
    assert_eq!(status, 500);
    assert!(message.contains("body failed after"), "{message}");
    assert!(
        message.contains("body size exceeds limit: 1048576"),
        "{message}"
    );
}

#[tokio::test]
async fn secrets_never_appear_in_replies_logs_or_the_admin_api() {
    let secret = "hunter2-do-not-print";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{secret}\n")).unwrap();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}[[routes]]\nbackend = \"leaky\"\n",
        fault_backend_with(
            "leaky",
            "leak",
            "",
            &format!(
                "token = {{ from_file = {} }}",
                toml_str(&dir.path().join("token").display().to_string())
            )
        )
    );
    let gw = Gateway::start(&config).await;
    let (status, body) = gw
        .post("/provision", &provision_body("c", "s", "g", "small"))
        .await;
    assert_eq!(status, 500);
    let message = body["error_msg"].as_str().unwrap();
    assert!(message.contains("the token is [redacted]"), "{message}");
    // What the admin API shows of the backend (its settings are never listed there: this
    // checks it stays so).
    let (status, backends) = gw.admin("/admin/backends", None).await;
    assert_eq!(status, 200, "{backends}");
    assert!(backends.to_string().contains("leaky"), "{backends}");
    gw.wait_for_log("the token is [redacted]").await;
    gw.wait_for_log("stderr says the token is [redacted]").await;
    // The request's own line comes after everything the call logged.
    gw.wait_for_log("request failed").await;
    let everything = format!("{body} {backends} {}", gw.log());
    assert!(!everything.contains(secret), "{everything}");
}
