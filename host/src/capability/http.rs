//! Outbound HTTP: `wasi:http/outgoing-handler`, for the backends whose config grants it, and
//! only to the `scheme://host:port` patterns of the grant.
//!
//! A backend without the grant does not get the interface linked at all: a plugin that imports
//! it is refused at load. With the grant, a request to an address outside the allowlist fails
//! inside the plugin with `HTTP-request-denied` and never leaves the gateway. Every request is
//! bounded by what is left of the call's deadline (connect, first byte, between bytes) and its
//! response body by the backend's `max_response`.
//!
//! HTTPS servers are verified against the public web roots (Mozilla's, built in), or, when the
//! grant names a CA bundle (`ca = "ca.pem"`), against the certificates of that bundle only: a
//! private cloud's API, an internal podman or OpenStack endpoint behind a private CA. Requests
//! are sent by [`send`], which is wasmtime-wasi-http's default sender with the TLS trust made
//! the grant's.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use globset::{Glob, GlobMatcher};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks,
};

use crate::model::BackendId;

/// One allowed destination: a scheme, a host (exact or glob) and a port (or any).
#[derive(Debug, Clone)]
struct Rule {
    source: String,
    scheme: String,
    host: GlobMatcher,
    port: Option<u16>,
}

/// The destinations a backend may call, and the certificate authorities it trusts there.
#[derive(Debug, Clone)]
pub struct Allowlist {
    rules: Vec<Rule>,
    /// The CA bundle that replaces the public roots, if the grant names one.
    ca: Option<PathBuf>,
    tls: Arc<rustls::ClientConfig>,
}

impl Default for Allowlist {
    /// Nowhere, trusting the public roots.
    fn default() -> Self {
        Allowlist {
            rules: Vec::new(),
            ca: None,
            tls: public_roots(),
        }
    }
}

/// A TLS client trusting `roots`, over the ring provider that the rest of the gateway uses.
fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The TLS client of grants without a CA bundle: the public web roots, built once.
fn public_roots() -> Arc<rustls::ClientConfig> {
    static PUBLIC: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    PUBLIC
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            client_config(roots).expect("ring supports rustls' default protocol versions")
        })
        .clone()
}

impl Allowlist {
    /// Parse patterns such as `https://ec2.eu-west-1.amazonaws.com`, `http://127.0.0.1:8080`,
    /// `https://*.example.com:*`. A missing port means the scheme's default; `*` means any.
    pub fn parse(patterns: &[String]) -> Result<Allowlist, String> {
        let rules = patterns
            .iter()
            .map(|pattern| {
                let invalid = |why: &str| format!("`{pattern}`: {why}");
                let (scheme, rest) = pattern
                    .split_once("://")
                    .ok_or_else(|| invalid("expected scheme://host[:port]"))?;
                let scheme = scheme.to_ascii_lowercase();
                let default_port = match scheme.as_str() {
                    "http" => 80,
                    "https" => 443,
                    _ => return Err(invalid("the scheme must be http or https")),
                };
                if rest.contains('/') || rest.is_empty() {
                    return Err(invalid("expected scheme://host[:port], without a path"));
                }
                let (host, port) = match rest.rsplit_once(':') {
                    Some((host, "*")) => (host, None),
                    Some((host, port)) => (
                        host,
                        Some(port.parse::<u16>().map_err(|_| invalid("bad port"))?),
                    ),
                    None => (rest, Some(default_port)),
                };
                let host = Glob::new(&host.to_ascii_lowercase())
                    .map_err(|e| invalid(&format!("bad host pattern: {}", e.kind())))?
                    .compile_matcher();
                Ok(Rule {
                    source: pattern.clone(),
                    scheme,
                    host,
                    port,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Allowlist {
            rules,
            ..Allowlist::default()
        })
    }

    /// The same destinations, whose HTTPS servers are trusted if (and only if) their
    /// certificates chain to one in the PEM bundle `ca`.
    pub fn trusting(self, ca: &Path) -> Result<Allowlist, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;

        let unreadable =
            |e: &dyn std::fmt::Display| format!("cannot read CA bundle {}: {e}", ca.display());
        let certificates = CertificateDer::pem_file_iter(ca)
            .map_err(|e| unreadable(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unreadable(&e))?;
        if certificates.is_empty() {
            return Err(format!(
                "CA bundle {} holds no PEM certificate",
                ca.display()
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|e| format!("CA bundle {}: {e}", ca.display()))?;
        }
        Ok(Allowlist {
            ca: Some(ca.to_path_buf()),
            tls: client_config(roots)?,
            ..self
        })
    }

    /// The CA bundle the backend trusts instead of the public roots, if any.
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// Whether a request to `uri` may leave the gateway.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some(scheme) = uri.scheme_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let Some(host) = uri.host().map(str::to_ascii_lowercase) else {
            return false;
        };
        let port = uri.port_u16().or(match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        });
        self.rules.iter().any(|rule| {
            rule.scheme == scheme
                && rule.host.is_match(&host)
                && rule.port.is_none_or(|p| Some(p) == port)
        })
    }

    /// The patterns, as the operator wrote them.
    pub fn patterns(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.source.as_str()).collect()
    }
}

/// The per-call outbound HTTP state.
pub struct OutboundHttp {
    ctx: WasiHttpCtx,
    hooks: Hooks,
}

impl OutboundHttp {
    /// Outbound HTTP for one call of `backend`, to `allow`, until `deadline`; `secrets` are cut
    /// out of what is logged about the plugin's requests.
    pub fn new(
        backend: BackendId,
        allow: Arc<Allowlist>,
        secrets: Arc<Vec<String>>,
        deadline: Instant,
        max_response: usize,
    ) -> OutboundHttp {
        OutboundHttp {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                backend,
                allow,
                secrets,
                deadline,
                max_response,
            },
        }
    }

    /// The parts `wasi:http` works on.
    pub fn parts(&mut self) -> (&mut WasiHttpCtx, &mut dyn WasiHttpHooks) {
        (&mut self.ctx, &mut self.hooks)
    }
}

struct Hooks {
    backend: BackendId,
    allow: Arc<Allowlist>,
    secrets: Arc<Vec<String>>,
    deadline: Instant,
    max_response: usize,
}

type Io = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Io,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, Io), HttpError>> + Send> {
        drop(fut);
        let uri = request.uri().clone();
        if !self.allow.allows(&uri) {
            // The plugin chose the address: it may hold a secret.
            let destination = super::redact(
                &format!(
                    "{}://{}",
                    uri.scheme_str().unwrap_or("?"),
                    uri.authority().map(|a| a.as_str()).unwrap_or("?"),
                ),
                &self.secrets,
            );
            tracing::warn!(
                target: "plugin",
                backend = %self.backend,
                "outbound request to {destination} denied: not in the backend's http grant",
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let options = clamped(
            options,
            self.deadline.saturating_duration_since(Instant::now()),
        );
        let limit = self.max_response;
        let tls = self.allow.tls.clone();
        Box::new(async move {
            let (response, io) = send(request, options, tls).await?;
            let response = response.map(|body| {
                http_body_util::Limited::new(body, limit)
                    .map_err(move |e| match e.downcast::<HttpError>() {
                        Ok(e) => *e,
                        Err(_) => HttpError::HttpResponseBodySize(Some(limit as u64)),
                    })
                    .boxed_unsync()
            });
            Ok((response, io))
        })
    }
}

/// The plugin's timeouts for one request, each cut to `remaining` (what is left of the call's
/// deadline): no wait inside a request outlives the call.
fn clamped(options: Option<RequestOptions>, remaining: Duration) -> RequestOptions {
    let clamp = |asked: Option<Duration>| Some(asked.map_or(remaining, |t| t.min(remaining)));
    RequestOptions {
        connect_timeout: clamp(options.and_then(|o| o.connect_timeout)),
        first_byte_timeout: clamp(options.and_then(|o| o.first_byte_timeout)),
        between_bytes_timeout: clamp(options.and_then(|o| o.between_bytes_timeout)),
    }
}

/// Send `request` over a new connection, HTTPS verified by `tls`: wasmtime-wasi-http's
/// `default_send_request` (Apache-2.0 WITH LLVM-exception, the Bytecode Alliance), whose TLS
/// trust is fixed to the public roots, with the trust made a parameter. The response arrives
/// within the first-byte timeout, and each part of its body within the between-bytes timeout.
async fn send(
    mut request: http::Request<WasiBody>,
    options: RequestOptions,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(http::Response<WasiBody>, Io), HttpError> {
    use tokio::net::TcpStream;
    use wasmtime_wasi_http::io::TokioIo;

    let uri = request.uri();
    let authority = uri.authority().ok_or(HttpError::HttpRequestUriInvalid)?;
    let use_tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let host = authority.host().to_string();
    let authority = match authority.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{authority}:{}", if use_tls { 443 } else { 80 }),
    };
    let forever = Duration::from_secs(600);
    let connect_timeout = options.connect_timeout.unwrap_or(forever);
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(forever);
    // Tokio panics on an interval of zero.
    let between_bytes_timeout = options
        .between_bytes_timeout
        .unwrap_or(forever)
        .max(Duration::from_nanos(1));

    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(&authority))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Connect)?;
    let stream: Box<dyn Stream> = if use_tls {
        let name = server_name(&host)?;
        let connector = tokio_rustls::TlsConnector::from(tls);
        let stream = tokio::time::timeout(connect_timeout, connector.connect(name, stream))
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(HttpError::Tls)?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;

    // The request line carries the path only (the authority is in the Host header).
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;

    // Drive the connection while waiting for the response head; keep driving it after, for
    // the body, in the future handed back.
    let mut connection = Some(connection);
    let mut response = std::pin::pin!(tokio::time::timeout(
        first_byte_timeout,
        sender.send_request(request)
    ));
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = response.as_mut().poll(cx) {
            return Poll::Ready(
                result
                    .map_err(|_| HttpError::ConnectionReadTimeout)
                    .and_then(|r| r.map_err(HttpError::from)),
            );
        }
        let Some(driving) = connection.as_mut() else {
            return Poll::Pending;
        };
        let done = ready!(Pin::new(driving).poll(cx));
        connection = None;
        match done {
            Ok(()) => response.as_mut().poll(cx).map(|r| {
                r.map_err(|_| HttpError::ConnectionReadTimeout)
                    .and_then(|r| r.map_err(HttpError::from))
            }),
            Err(e) => Poll::Ready(Err(HttpError::from(e))),
        }
    })
    .await?;
    let response = response.map(|incoming| {
        let mut timeout = tokio::time::interval(between_bytes_timeout);
        timeout.reset();
        IncomingBody { incoming, timeout }.boxed_unsync()
    });
    let io = async move {
        match connection {
            None => Ok(()),
            Some(connection) => connection.await.map_err(|e| {
                if e.is_timeout() {
                    HttpError::HttpResponseTimeout
                } else {
                    HttpError::from(e)
                }
            }),
        }
    };
    Ok((response, Box::new(io) as Io))
}

/// A connection, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The name a server's certificate must carry: its IP address or its DNS name.
fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, HttpError> {
    use rustls::pki_types::ServerName;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(host.to_string()).map_err(|_| HttpError::HttpRequestUriInvalid)
}

/// A response body whose parts must each arrive within the between-bytes timeout.
struct IncomingBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl hyper::body::Body for IncomingBody {
    type Data = bytes::Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::from(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(patterns: &[&str]) -> Allowlist {
        Allowlist::parse(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn allowed(list: &Allowlist, uri: &str) -> bool {
        list.allows(&uri.parse().unwrap())
    }

    #[test]
    fn scheme_host_and_port_must_all_match() {
        let list = allow(&[
            "https://ec2.eu-west-1.amazonaws.com",
            "http://127.0.0.1:8080",
        ]);
        assert!(allowed(&list, "https://ec2.eu-west-1.amazonaws.com/"));
        assert!(allowed(
            &list,
            "https://EC2.eu-west-1.amazonaws.com:443/?Action=x"
        ));
        assert!(!allowed(&list, "http://ec2.eu-west-1.amazonaws.com/"));
        assert!(!allowed(&list, "https://ec2.eu-west-1.amazonaws.com:8443/"));
        assert!(allowed(&list, "http://127.0.0.1:8080/v4.0.0/libpod/info"));
        assert!(!allowed(&list, "http://127.0.0.1:8081/"));
        assert!(!allowed(&list, "http://127.0.0.2:8080/"));
    }

    #[test]
    fn host_globs_and_any_port() {
        let list = allow(&["https://*.amazonaws.com:*"]);
        assert!(allowed(&list, "https://ec2.us-east-1.amazonaws.com:9443/"));
        assert!(!allowed(&list, "https://amazonaws.com.evil.net/"));
    }

    #[test]
    fn every_timeout_of_a_request_is_cut_to_what_is_left_of_the_call() {
        let left = Duration::from_millis(500);
        let all = |o: RequestOptions| {
            (
                o.connect_timeout,
                o.first_byte_timeout,
                o.between_bytes_timeout,
            )
        };
        // A plugin that asks for no timeout waits no longer than the call.
        assert_eq!(
            all(clamped(None, left)),
            (Some(left), Some(left), Some(left))
        );
        let asked = RequestOptions {
            connect_timeout: Some(Duration::from_secs(3600)),
            first_byte_timeout: Some(Duration::from_millis(100)),
            between_bytes_timeout: None,
        };
        // Longer than the call: cut; shorter: kept; none: the call's.
        assert_eq!(
            all(clamped(Some(asked), left)),
            (Some(left), Some(Duration::from_millis(100)), Some(left))
        );
        let asked = RequestOptions {
            connect_timeout: None,
            first_byte_timeout: Some(Duration::from_secs(3600)),
            between_bytes_timeout: Some(Duration::from_secs(3600)),
        };
        assert_eq!(
            all(clamped(Some(asked), left)),
            (Some(left), Some(left), Some(left))
        );
        // A call past its deadline gets nothing more.
        assert_eq!(
            all(clamped(None, Duration::ZERO)),
            (
                Some(Duration::ZERO),
                Some(Duration::ZERO),
                Some(Duration::ZERO)
            )
        );
    }

    #[test]
    fn an_empty_list_allows_nothing_and_bad_patterns_are_refused() {
        assert!(!allowed(&Allowlist::default(), "http://127.0.0.1/"));
        for bad in [
            "127.0.0.1:80",
            "ftp://host",
            "http://host/path",
            "http://host:port",
        ] {
            assert!(Allowlist::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
