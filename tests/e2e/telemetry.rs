//! `[telemetry]`: spans exported over OTLP/HTTP to a collector (a fake one here, on loopback,
//! that records what it is sent), and log lines as JSON objects.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;

use crate::private_ca::TlsListener;
use crate::support::{Ca, Workdir, pool_backend, provision_body};

/// What the collector was sent: each body with its content type.
type Received = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;

/// A fake OTLP/HTTP collector on 127.0.0.1: the bodies POSTed to `/v1/traces`.
struct Collector {
    address: String,
    bodies: Received,
}

impl Collector {
    async fn start() -> Collector {
        let bodies: Received = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let app = Collector::app(bodies.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { address, bodies }
    }

    /// The same collector over TLS with `config`; the counter of failed handshakes.
    async fn start_tls(config: rustls::ServerConfig) -> (Collector, Arc<AtomicUsize>) {
        let bodies: Received = Arc::default();
        let (listener, failed) = TlsListener::bind(config).await;
        let address = axum::serve::Listener::local_addr(&listener)
            .unwrap()
            .to_string();
        let app = Collector::app(bodies.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (Collector { address, bodies }, failed)
    }

    /// Records what is POSTed to `/v1/traces` into `bodies`.
    fn app(bodies: Received) -> Router {
        let recorded = bodies;
        Router::new().route(
            "/v1/traces",
            post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let recorded = recorded.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    recorded.lock().unwrap().push((content_type, body));
                    // An empty ExportTraceServiceResponse: everything accepted.
                    ([("content-type", "application/x-protobuf")], Bytes::new())
                }
            }),
        )
    }

    /// Every exported span with its resource's `service.name`, decoded as a collector would.
    fn spans(&self) -> Vec<(String, Span)> {
        let mut spans = Vec::new();
        for (content_type, body) in self.bodies.lock().unwrap().iter() {
            assert_eq!(content_type.as_deref(), Some("application/x-protobuf"));
            let request = ExportTraceServiceRequest::decode(body.as_ref())
                .expect("an OTLP ExportTraceServiceRequest");
            for resource_spans in request.resource_spans {
                let attributes = resource_spans
                    .resource
                    .map(|r| r.attributes)
                    .unwrap_or_default();
                let service = string_attribute(&attributes, "service.name").unwrap_or_default();
                for scope_spans in resource_spans.scope_spans {
                    for span in scope_spans.spans {
                        spans.push((service.clone(), span));
                    }
                }
            }
        }
        spans
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value.as_ref() {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.clone()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// Multi-threaded: the collector must answer while this test waits for the gateway to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provision_with_a_traceparent_is_exported_as_a_child_of_the_callers_span() {
    let collector = Collector::start().await;
    let work = Workdir::new();
    let mut gw = work
        .start(&format!(
            "[telemetry]\notlp_endpoint = \"http://{}\"\nservice_name = \"gateway-under-test\"\n\n{}[[routes]]\nbackend = \"pool\"\n",
            collector.address,
            pool_backend("pool", &[("m1", "small")])
        ))
        .await;
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let r = gw
        .client
        .post(gw.url("/provision"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&provision_body("c1", "mongodb", "data", "small"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A request without trace context starts a trace of its own.
    gw.discover().await;

    // The batch delay is the SDK's default (5 s): the spans reach the collector because the
    // gateway exports what it holds when SIGTERM stops it.
    gw.signal(libc::SIGTERM);
    let status = gw.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}\n{}",
        gw.log()
    );
    let spans = collector.spans();
    let describe = || {
        spans
            .iter()
            .map(|(service, s)| {
                format!(
                    "{service} {} trace={} id={} parent={}",
                    s.name,
                    hex(&s.trace_id),
                    hex(&s.span_id),
                    hex(&s.parent_span_id)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n--- the gateway's log:\n"
            + &gw.log()
    };
    assert!(
        spans
            .iter()
            .all(|(service, _)| service == "gateway-under-test"),
        "{}",
        describe()
    );
    let path_of = |span: &Span| string_attribute(&span.attributes, "path");

    // The provision's request span: in the caller's trace, a child of the caller's span.
    let (_, request) = spans
        .iter()
        .find(|(_, s)| s.name == "request" && path_of(s).as_deref() == Some("/provision"))
        .unwrap_or_else(|| panic!("no request span for /provision:\n{}", describe()));
    assert_eq!(hex(&request.trace_id), trace_id, "{}", describe());
    assert_eq!(hex(&request.parent_span_id), caller_span, "{}", describe());
    assert_eq!(request.span_id.len(), 8);
    assert_ne!(hex(&request.span_id), caller_span);

    // The plugin call inside it: same trace, child of the request span.
    let (_, call) = spans
        .iter()
        .find(|(_, s)| s.name == "plugin_call" && s.trace_id == request.trace_id)
        .unwrap_or_else(|| panic!("no plugin_call span in the trace:\n{}", describe()));
    assert_eq!(call.parent_span_id, request.span_id, "{}", describe());
    assert_eq!(
        string_attribute(&call.attributes, "backend").as_deref(),
        Some("pool")
    );
    assert_eq!(
        string_attribute(&call.attributes, "operation").as_deref(),
        Some("provision")
    );
    // The plugin's own log line travels with its call, as an event.
    assert!(
        call.events.iter().any(|e| e.name.contains("allocated m1")
            && string_attribute(&e.attributes, "target").as_deref() == Some("plugin")),
        "{:?}",
        call.events
    );

    // The discovery: a root span of a new trace.
    let (_, discover) = spans
        .iter()
        .find(|(_, s)| s.name == "request" && path_of(s).as_deref() == Some("/discover"))
        .unwrap_or_else(|| panic!("no request span for /discover:\n{}", describe()));
    assert!(discover.parent_span_id.is_empty(), "{}", describe());
    assert_eq!(discover.trace_id.len(), 16);
    assert_ne!(hex(&discover.trace_id), trace_id);
    // Its plugin call is in that trace too.
    let (_, call) = spans
        .iter()
        .find(|(_, s)| {
            s.name == "plugin_call"
                && string_attribute(&s.attributes, "operation").as_deref() == Some("discover")
        })
        .unwrap_or_else(|| panic!("no plugin_call span for the discovery:\n{}", describe()));
    assert_eq!(call.trace_id, discover.trace_id, "{}", describe());
    assert_eq!(call.parent_span_id, discover.span_id, "{}", describe());
}

// Multi-threaded: the collector must answer while this test waits for the gateway to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_https_collector_behind_a_private_ca_that_requires_a_client_certificate() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let server_ca = Ca::new("collector CA");
    let client_ca = Ca::new("collector clients CA");
    let (cert, key) = server_ca.sign(&["127.0.0.1"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut clients = rustls::RootCertStore::empty();
    clients
        .add(CertificateDer::from_pem_slice(client_ca.pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(clients),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let (collector, failed_handshakes) = Collector::start_tls(config).await;

    let work = Workdir::new();
    let (client_cert, client_key) = client_ca.sign(&["platform-gateway"]);
    for (name, text) in [
        ("collector-ca.pem", server_ca.pem.as_str()),
        ("client.pem", &client_cert),
        ("client-key.pem", &client_key),
    ] {
        std::fs::write(work.path().join(name), text).unwrap();
    }
    let mut gw = work
        .start(&format!(
            "[telemetry]\notlp_endpoint = \"https://{}\"\n\
             otlp_tls = {{ ca = \"collector-ca.pem\", cert = \"client.pem\", key = \"client-key.pem\" }}\n\
             service_name = \"gateway-over-tls\"\n\n{}[[routes]]\nbackend = \"pool\"\n",
            collector.address,
            pool_backend("pool", &[("m1", "small")])
        ))
        .await;
    let (status, _) = gw
        .post(
            "/provision",
            &provision_body("c1", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200);
    // The last batch is exported when SIGTERM stops the gateway.
    gw.signal(libc::SIGTERM);
    let exit = gw.wait_exit(Duration::from_secs(30));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}\n{}", gw.log());

    let spans = collector.spans();
    assert!(
        spans
            .iter()
            .any(|(service, span)| service == "gateway-over-tls" && span.name == "request"),
        "no request span reached the collector; the gateway's log:\n{}",
        gw.log()
    );
    assert!(spans.iter().any(|(_, span)| span.name == "plugin_call"));
    assert_eq!(failed_handshakes.load(Ordering::SeqCst), 0, "{}", gw.log());
}

/// Start the binary on `config` with `args`, make one provision, stop it with SIGTERM, and
/// return every line it wrote on stderr.
async fn run_and_collect_log(config: &Path, args: &[&str]) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_platform-gateway"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("PLATFORM_GATEWAY_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start platform-gateway");
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    // The public address, from the "listening on http://..." line, whatever its format.
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = loop {
        let found = lines.lock().unwrap().iter().find_map(|line| {
            let rest = line.split("listening on http://").nth(1)?;
            Some(
                rest.chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect::<String>(),
            )
        });
        if let Some(address) = found {
            break address;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not start:\n{}",
            lines.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let client = reqwest::Client::new();
    crate::support::wait_ready(
        &client,
        &format!("http://{address}"),
        Duration::from_secs(120),
        || lines.lock().unwrap().join("\n"),
    )
    .await;
    let r = client
        .post(format!("http://{address}/provision"))
        .json(&provision_body("c1", "mongodb", "data", "small"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // SAFETY: kill(2) on our own child's PID, which we have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let lines = lines.lock().unwrap().clone();
    assert!(status.success(), "{status}\n{}", lines.join("\n"));
    lines
}

#[tokio::test]
async fn log_format_json_in_the_config_makes_every_log_line_a_json_object_unless_the_flag_says_text()
 {
    let work = Workdir::new();
    let config = work.write_config(&format!(
        "[telemetry]\nlog_format = \"json\"\n\n{}[[routes]]\nbackend = \"pool\"\n",
        pool_backend("pool", &[("m1", "small"), ("m2", "small")])
    ));

    let lines = run_and_collect_log(&config, &[]).await;
    assert!(lines.len() >= 4, "{lines:?}");
    let events: Vec<serde_json::Map<String, Value>> = lines
        .iter()
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(event)) => event,
            _ => panic!("not a JSON object: {line}"),
        })
        .collect();
    for event in &events {
        assert!(event["level"].is_string(), "{event:?}");
        assert!(event["timestamp"].is_string(), "{event:?}");
        assert!(event["target"].is_string(), "{event:?}");
    }
    let message = |needle: &str| {
        events
            .iter()
            .find(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)))
            .unwrap_or_else(|| panic!("no {needle:?} in {lines:?}"))
    };
    // The event's fields at the top level, the spans it ran in beside them.
    assert_eq!(message("ready")["backends"], 1);
    let served = message("request served");
    assert_eq!(served["status"], 200);
    assert_eq!(served["span"]["name"], "request");
    let plugin = message("allocated m1");
    assert_eq!(plugin["target"], "plugin");
    assert_eq!(plugin["span"]["name"], "plugin_call");
    message("shutting down");

    // The command line wins over the file.
    let lines = run_and_collect_log(&config, &["--log-format", "text"]).await;
    assert!(
        lines.iter().any(|l| l.contains("request served")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| !l.starts_with('{')),
        "JSON despite --log-format text: {lines:?}"
    );
}
