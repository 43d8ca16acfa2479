//! Listeners: accept connections and serve a router on each, with the limits a public endpoint
//! needs so that slow or idle clients cannot hold the gateway: a deadline for each request head
//! (which is also the idle keep-alive timeout), a deadline for each write to make progress (a
//! client that stops reading loses its connection), a cap on open connections (beyond it, new
//! ones wait in the kernel's backlog), and a grace period after the shutdown signal, past which the
//! remaining connections are dropped. The request body deadline is applied where bodies are
//! read (`api::error::ApiJson`).
//!
//! The `[server]` and `[admin]` sections of the config are parsed in [`config`].

pub mod config;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connection limits, from the config's `[server]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time to receive a request head, counted from the connection's start or from the end of
    /// the previous response (so also the idle keep-alive timeout).
    pub head_timeout: Duration,
    /// Time to receive a request body once its head has arrived.
    pub body_timeout: Duration,
    /// Time a write to the client may wait without progress: a client that stops reading
    /// (pipelining requests and reading no answer, say) loses its connection after it.
    pub write_timeout: Duration,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
    /// After the shutdown signal: how long requests in flight may take before the remaining
    /// connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A listener's TLS files, from `[server.tls]` or `[admin.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (PEM): mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// A listener's TLS, swappable: each new connection uses the configuration current when it
/// arrives.
pub struct Tls {
    acceptor: ArcSwap<TlsAcceptor>,
}

impl Tls {
    /// Read `files` and build the TLS configuration.
    pub fn load(files: &TlsFiles) -> Result<Tls, String> {
        Ok(Tls {
            acceptor: ArcSwap::from_pointee(acceptor(files)?),
        })
    }

    /// Read `files` again and use them for new connections; on error nothing changes.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), String> {
        self.install(Tls::prepare(files)?);
        Ok(())
    }

    /// Read `files` into a configuration that [`Tls::install`] can switch to without failing:
    /// a reload prepares everything first, so it either applies as a whole or not at all.
    pub fn prepare(files: &TlsFiles) -> Result<PreparedTls, String> {
        Ok(PreparedTls(acceptor(files)?))
    }

    /// Use `prepared` for new connections.
    pub fn install(&self, prepared: PreparedTls) {
        self.acceptor.store(Arc::new(prepared.0));
    }

    /// Check that `files` make a usable TLS configuration, without using it.
    pub fn check(files: &TlsFiles) -> Result<(), String> {
        acceptor(files).map(|_| ())
    }
}

/// A TLS configuration read and checked, ready to be installed.
pub struct PreparedTls(TlsAcceptor);

/// What authenticates requests to the admin listener beyond its TLS: the bearer token, swapped
/// by reloads together with the listener's TLS configuration (see `reload`), so that the token
/// in force is always the one the config in force names.
#[derive(Default)]
pub struct AdminAuth {
    token: ArcSwapOption<TokenDigest>,
    /// The listener's TLS requires client certificates.
    client_certs: std::sync::atomic::AtomicBool,
}

impl AdminAuth {
    /// A guard requiring `token`, if set; `client_certs`: the listener's TLS requires client
    /// certificates.
    pub fn new(token: Option<&str>, client_certs: bool) -> AdminAuth {
        let auth = AdminAuth::default();
        auth.set_token(token);
        auth.set_client_certs(client_certs);
        auth
    }

    /// Record whether the listener's TLS requires client certificates from now on.
    pub fn set_client_certs(&self, required: bool) {
        self.client_certs
            .store(required, std::sync::atomic::Ordering::Release);
    }

    /// Whether the listener's TLS requires client certificates.
    pub fn client_certs(&self) -> bool {
        self.client_certs.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Require `token` (or none) from now on.
    pub fn set_token(&self, token: Option<&str>) {
        self.token
            .store(token.map(|t| Arc::new(TokenDigest::of(t))));
    }

    /// Whether a token is required.
    pub fn has_token(&self) -> bool {
        self.token.load().is_some()
    }

    /// `None` when no token is required; otherwise whether `given` is the token, compared
    /// digest to digest in constant time, so neither its bytes nor its length leak through timing.
    pub fn check(&self, given: Option<&str>) -> Option<bool> {
        use subtle::ConstantTimeEq;
        let token = self.token.load_full()?;
        Some(given.is_some_and(|given| bool::from(TokenDigest::of(given).0.ct_eq(&token.0))))
    }
}

/// A token's SHA-256.
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(token: &str) -> TokenDigest {
        use sha2::Digest;
        TokenDigest(sha2::Sha256::digest(token.as_bytes()).into())
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read_pem(&files.cert)?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: not a PEM certificate chain: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read_pem(&files.key)?)
        .map_err(|e| format!("{}: not a PEM private key: {e}", files.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = crate::pem::ca_bundle(ca)?.roots;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "{} and {}: the key does not go with the certificate: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serve `app` on `listener` (over TLS when `tls` is given) until `shutdown` resolves, then let
/// the requests in flight finish within the grace period.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // At the cap, stop accepting: new connections wait in the backlog, the open ones go on.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept error: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Under TLS too: the deadline is on the socket, below the handshake and the records.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let stream = Box::pin(stream);
        let service = TowerToHyperService::new(app.clone());
        let Some(tls) = &tls else {
            let connection =
                graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = connection.await {
                    tracing::debug!("connection closed: {e}");
                }
            });
            continue;
        };
        // The handshake runs in the connection's task, under the head deadline: a client that
        // never finishes it (or speaks plain HTTP) is dropped.
        let acceptor = tls.acceptor.load_full();
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let deadline = limits.head_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let connection = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
            if let Err(e) = connection.await {
                tracing::debug!("connection closed: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "connections still open after the shutdown grace period: dropping them"
        );
    }
}
