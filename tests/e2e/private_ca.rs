//! Outbound HTTPS to a server behind a private CA: a backend whose HTTP grant names the CA
//! bundle (`grants = { http = [...], ca = "ca.pem" }`) reaches it; without the bundle, or with
//! another CA's, the TLS handshake fails and no request reaches the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::{Ca, Workdir, plugin, provision_body, toml_str};

/// An HTTPS server on 127.0.0.1 with a certificate from `ca`, counting the requests that reach
/// it and the handshakes that fail.
struct TlsTarget {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    failed_handshakes: Arc<AtomicUsize>,
}

/// A TLS listener on 127.0.0.1 for `axum::serve`, counting the handshakes that fail.
pub(crate) struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    failed_handshakes: Arc<AtomicUsize>,
}

impl TlsListener {
    /// Listen on 127.0.0.1 with `config`; the counter of failed handshakes.
    pub(crate) async fn bind(config: rustls::ServerConfig) -> (TlsListener, Arc<AtomicUsize>) {
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let listener = TlsListener {
            tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            failed_handshakes: failed_handshakes.clone(),
        };
        (listener, failed_handshakes)
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(stream).await {
                Ok(tls) => return (tls, address),
                Err(_) => {
                    self.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn tls_target(ca: &Ca) -> TlsTarget {
    let (cert, key) = ca.sign(&["127.0.0.1", "localhost"]);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                counter.fetch_add(1, Ordering::SeqCst);
                next.run(request)
            },
        ));
    let (listener, failed_handshakes) = TlsListener::bind(config).await;
    let address = listener.tcp.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    TlsTarget {
        address,
        requests,
        failed_handshakes,
    }
}

/// A backend `caller` (the http-probe fixture) that GETs `https://{host}:{port}/`, granted
/// that origin, trusting `ca` (a file in the workdir) if given. The grant also names the
/// loopback address the server listens on: a name that resolves to loopback (`localhost`)
/// reaches only the loopback addresses a grant names.
fn caller(host: &str, port: u16, ca: Option<&str>) -> String {
    let ca = ca
        .map(|file| format!(", ca = {}", toml_str(file)))
        .unwrap_or_default();
    format!(
        "[backends.caller]\nplugin = {}\ngrants = {{ http = [\"https://{host}:{port}\", \"https://127.0.0.1:{port}\"]{ca} }}\n\
         [backends.caller.settings]\nscheme = \"https\"\ntarget = \"{host}:{port}\"\n\n\
         [[routes]]\nbackend = \"caller\"\n",
        toml_str(&plugin("http_probe").display().to_string()),
    )
}

/// Provision through the gateway; the probe's report (it always fails with one).
async fn probe(dir: &Workdir, config: &str) -> String {
    let gw = dir.start(config).await;
    let (status, body) = gw
        .post("/provision", &provision_body("c", "s", "g", "small"))
        .await;
    assert_eq!(status, 500, "{body}");
    body["error_msg"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_grant_with_a_ca_bundle_reaches_a_server_behind_that_ca_only() {
    let ca = Ca::new("platform-gateway test CA");
    let target = tls_target(&ca).await;
    let port = target.address.port();
    let dir = Workdir::new();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), Ca::new("another CA").pem).unwrap();

    // Trusting the CA: by IP address and by DNS name.
    for host in ["127.0.0.1", "localhost"] {
        let report = probe(&dir, &caller(host, port, Some("ca.pem"))).await;
        assert!(
            report.ends_with("http: status 200, 2 bytes"),
            "{host}: {report}"
        );
    }
    assert_eq!(target.requests.load(Ordering::SeqCst), 2);
    assert_eq!(target.failed_handshakes.load(Ordering::SeqCst), 0);

    // The public roots (no bundle) and another CA's bundle: the handshake fails, nothing is
    // sent.
    for ca in [None, Some("other-ca.pem")] {
        let report = probe(&dir, &caller("127.0.0.1", port, ca)).await;
        assert!(report.contains("TlsProtocolError"), "{ca:?}: {report}");
    }
    assert_eq!(
        target.requests.load(Ordering::SeqCst),
        2,
        "a request got through"
    );
    assert_eq!(target.failed_handshakes.load(Ordering::SeqCst), 2);
}
