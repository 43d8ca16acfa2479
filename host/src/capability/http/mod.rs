//! Outbound HTTP: `wasi:http/outgoing-handler`, for the backends whose config grants it, and
//! only to the `scheme://host:port` patterns of the grant.
//!
//! A backend without the grant does not get the interface linked at all: a plugin that imports
//! it is refused at load. With the grant, a request to an address outside the allowlist fails
//! inside the plugin with `HTTP-request-denied` and never leaves the gateway. Every request is
//! bounded by what is left of the call's deadline (connect, first byte, between bytes) and its
//! response body by the backend's `max_response`.
//!
//! A grant names destinations, but a name is only as good as what it resolves to: the host
//! resolves each name itself, checks every address it got, and connects to a checked address
//! (no second lookup, so a name cannot change between the check and the connection). An
//! address that is loopback, link-local (the cloud metadata service at 169.254.169.254 among
//! them), unspecified, multicast or broadcast, or one of a few well-known metadata addresses
//! ([`reserved`]), is refused with `destination-IP-prohibited` unless a pattern of the grant
//! names that very address (`http://127.0.0.1:8080`, `http://[::1]:*`): a name, even
//! `localhost`, or a glob never opens it.
//!
//! HTTPS servers are verified against the public web roots (Mozilla's, built in), or, when the
//! grant names a CA bundle (`ca = "ca.pem"`), against the certificates of that bundle only: a
//! private cloud's API, an internal podman or OpenStack endpoint behind a private CA. Requests
//! are sent by [`send`], which is wasmtime-wasi-http's default sender with the addresses and
//! the TLS trust made the grant's.
//!
//! The hook is where the call's mode is consulted ([`super::call`]): a dry call (plan, shadow)
//! sends only reads ([`super::reads`]); any other request is withheld, answered with the same
//! `HTTP-request-denied` a request outside the grant gets, and written down with its body. A
//! replayed call sends nothing: its requests are answered from its recording
//! ([`super::tape::Replayed`]). A live call that is being recorded has its request and response
//! bodies copied as they pass ([`super::tape::tee`]).

mod allowlist;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks,
};

pub use allowlist::{Allowlist, reserved};
use allowlist::{Target, resolve};

use super::call::{CallContext, Event, Mode, shown_body};
use crate::model::BackendId;

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
                call: CallContext::live(),
            },
        }
    }

    /// The same capability, in `call`'s mode and transcript.
    pub fn in_call(mut self, call: Arc<CallContext>) -> OutboundHttp {
        self.hooks.call = call;
        self
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
    call: Arc<CallContext>,
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
        // The plugin chose the address: it may hold a secret.
        let destination = super::redact(
            &format!(
                "{}://{}",
                uri.scheme_str().unwrap_or("?"),
                uri.authority().map(|a| a.as_str()).unwrap_or("?"),
            ),
            &self.secrets,
        );
        let call = self.call.clone();
        let method = request.method().clone();
        let url = uri.to_string();
        // The request as the transcript shows it; what happened is filled in later.
        let event = move |read: bool, sent: bool, error: Option<String>| Event::Http {
            method: method.to_string(),
            url: url.clone(),
            read,
            sent,
            status: None,
            error,
            body: None,
            body_size: None,
        };
        let target = match Target::of(&uri) {
            Some(target) if self.allow.allows(&uri) => target,
            _ => {
                tracing::warn!(
                    target: "plugin",
                    backend = %self.backend,
                    "outbound request to {destination} denied: not in the backend's http grant",
                );
                let read = self.allow.reads().is_read(request.method(), &uri, None);
                let denied = "denied: not in the backend's http grant";
                call.push(event(read, false, Some(denied.into())));
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
        };
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let options = clamped(options, remaining);
        let outbound = Outbound {
            target,
            options,
            limit: self.max_response,
            allow: self.allow.clone(),
            backend: self.backend.clone(),
            destination,
        };
        if call.mode() == Mode::Replay {
            let read = outbound.allow.reads().is_read(request.method(), &uri, None);
            let secrets = self.secrets.clone();
            return Box::new(async move {
                let method = request.method().to_string();
                let url = super::redact(&request.uri().to_string(), &secrets);
                let body = tokio::time::timeout(
                    remaining,
                    http_body_util::Limited::new(request.into_body(), super::tape::MAX_TAPED_BODY)
                        .collect(),
                )
                .await;
                let body = match body {
                    Ok(Ok(collected)) => collected.to_bytes().to_vec(),
                    _ => Vec::new(),
                };
                // The recording holds redacted text: compare like with like.
                let body = match String::from_utf8(body) {
                    Ok(text) => super::redact(&text, &secrets).into_bytes(),
                    Err(e) => e.into_bytes(),
                };
                let index = call.push(event(read, false, None));
                let replayed = call.replayed().expect("a replayed call has its recording");
                let answer = replayed.answer(&method, &url, &body);
                call.update(index, |event| {
                    if let Event::Http { status, error, .. } = event {
                        match &answer {
                            Ok(response) => *status = Some(response.status().as_u16()),
                            Err(e) => *error = Some(format!("not in the recording: {e}")),
                        }
                    }
                });
                let io: Io = Box::new(async { Ok(()) });
                answer.map(|response| (response, io))
            });
        }
        Box::new(async move {
            let (request, read) = if call.mode().dry() {
                match classify(request, outbound.allow.reads(), remaining).await {
                    Ok(request) => (request, true),
                    Err(body) => {
                        // Not a read: withheld. The plugin hears what a request outside its
                        // grant hears; the transcript says what it would have sent.
                        let (body, body_size) = match &body {
                            Some(body) => (shown_body(body), Some(body.len())),
                            None => (
                                format!(
                                    "(not shown: larger than {} bytes, or not received in time)",
                                    super::reads::MAX_INSPECTED_BODY
                                ),
                                None,
                            ),
                        };
                        let mut withheld = event(false, false, Some("withheld: not a read".into()));
                        if let Event::Http {
                            body: shown,
                            body_size: size,
                            ..
                        } = &mut withheld
                        {
                            (*shown, *size) = (Some(body), body_size);
                        }
                        call.withheld(withheld);
                        return Err(HttpError::HttpRequestDenied);
                    }
                }
            } else {
                let read = outbound
                    .allow
                    .reads()
                    .is_read(request.method(), request.uri(), None);
                (request, read)
            };
            let index = call.push(event(read, true, None));
            let (request, taped) = if call.taping() {
                let method = request.method().to_string();
                let url = request.uri().to_string();
                let (parts, body) = request.into_parts();
                let (body, captured) = super::tape::tee(body);
                let taped = call.tape(|tape| tape.request(&method, &url, captured));
                (http::Request::from_parts(parts, body), taped)
            } else {
                (request, None)
            };
            let mut result = outbound.send(request).await;
            if let Some(taped) = taped {
                match result {
                    Ok((response, io)) => {
                        let (parts, body) = response.into_parts();
                        let (body, captured) = super::tape::tee(body);
                        let status = parts.status.as_u16();
                        call.tape(|tape| tape.response(taped, status, &parts.headers, captured));
                        result = Ok((http::Response::from_parts(parts, body), io));
                    }
                    Err(ref e) => {
                        let error = e.to_string();
                        call.tape(|tape| tape.failed(taped, error));
                    }
                }
            }
            call.update(index, |event| {
                if let Event::Http {
                    sent,
                    status,
                    error,
                    ..
                } = event
                {
                    match &result {
                        Ok((response, _)) => *status = Some(response.status().as_u16()),
                        Err(e) => {
                            // Refused before a connection: nothing left the gateway.
                            *sent = !matches!(
                                e,
                                HttpError::DnsTimeout
                                    | HttpError::DnsError { .. }
                                    | HttpError::DestinationIpProhibited
                            );
                            *error = Some(e.to_string());
                        }
                    }
                }
            });
            result
        })
    }
}

/// A dry call's request, whole again if it is a read; if not, its body (`None` when larger
/// than [`super::reads::MAX_INSPECTED_BODY`] or not received within `remaining`). A body is
/// read only when the method alone does not make the request a read.
async fn classify(
    request: http::Request<WasiBody>,
    reads: &super::reads::Reads,
    remaining: Duration,
) -> Result<http::Request<WasiBody>, Option<bytes::Bytes>> {
    if reads.is_read(request.method(), request.uri(), None) && !reads.needs_body(request.method()) {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let collected = tokio::time::timeout(
        remaining,
        http_body_util::Limited::new(body, super::reads::MAX_INSPECTED_BODY).collect(),
    )
    .await;
    let Ok(Ok(collected)) = collected else {
        return Err(None);
    };
    let body = collected.to_bytes();
    if !reads.is_read(&parts.method, &parts.uri, Some(&body)) {
        return Err(Some(body));
    }
    let body = http_body_util::Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok(http::Request::from_parts(parts, body))
}

/// A granted request on its way out: where to, within what, trusting what.
struct Outbound {
    target: Target,
    options: RequestOptions,
    limit: usize,
    allow: Arc<Allowlist>,
    backend: BackendId,
    /// `scheme://authority`, redacted, for the log.
    destination: String,
}

impl Outbound {
    /// Resolve, check every address, connect to an admitted one, send; the response body is
    /// held to the backend's `max_response`.
    async fn send(
        self,
        request: http::Request<WasiBody>,
    ) -> Result<(http::Response<WasiBody>, Io), HttpError> {
        let Outbound {
            target,
            options,
            limit,
            allow,
            backend,
            destination,
        } = self;
        let connect_timeout = options.connect_timeout.unwrap_or_default();
        let addresses = tokio::time::timeout(connect_timeout, resolve(&target.host, target.port))
            .await
            .map_err(|_| HttpError::DnsTimeout)?
            .ok()
            .filter(|addresses| !addresses.is_empty())
            .ok_or_else(|| HttpError::DnsError {
                rcode: Some("address not available".to_string()),
                info_code: None,
            })?;
        let (admitted, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = addresses
            .into_iter()
            .partition(|a| allow.admits(&target.scheme, target.port, a.ip()));
        if admitted.is_empty() {
            let named: Vec<String> = refused
                .iter()
                .map(|a| format!("{} ({})", a.ip(), reserved(a.ip()).unwrap_or("reserved")))
                .collect();
            let example = refused
                .first()
                .map_or(String::new(), |a| format!(" (`{}://{a}`)", target.scheme));
            tracing::warn!(
                target: "plugin",
                backend = %backend,
                "outbound request to {destination} denied: it resolves to {}, which the \
                 backend's http grant does not name; a grant opens such an address only by \
                 naming it{example}",
                named.join(", "),
            );
            return Err(HttpError::DestinationIpProhibited);
        }
        let (response, io) = send(request, &admitted, options, allow.tls.clone()).await?;
        let response = response.map(|body| {
            http_body_util::Limited::new(body, limit)
                .map_err(move |e| match e.downcast::<HttpError>() {
                    Ok(e) => *e,
                    Err(_) => HttpError::HttpResponseBodySize(Some(limit as u64)),
                })
                .boxed_unsync()
        });
        Ok((response, io))
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

/// Send `request` over a new connection to the first of `addresses` that answers (checked by
/// the caller: no name is looked up again here), HTTPS verified by `tls`: wasmtime-wasi-http's
/// `default_send_request` (Apache-2.0 WITH LLVM-exception, the Bytecode Alliance), whose
/// lookup and TLS trust are its own, with both made parameters. The response arrives
/// within the first-byte timeout, and each part of its body within the between-bytes timeout.
async fn send(
    mut request: http::Request<WasiBody>,
    addresses: &[SocketAddr],
    options: RequestOptions,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(http::Response<WasiBody>, Io), HttpError> {
    use tokio::net::TcpStream;
    use wasmtime_wasi_http::io::TokioIo;

    let uri = request.uri();
    let authority = uri.authority().ok_or(HttpError::HttpRequestUriInvalid)?;
    let use_tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let host = authority.host().to_string();
    let forever = Duration::from_secs(600);
    let connect_timeout = options.connect_timeout.unwrap_or(forever);
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(forever);
    // Tokio panics on an interval of zero.
    let between_bytes_timeout = options
        .between_bytes_timeout
        .unwrap_or(forever)
        .max(Duration::from_nanos(1));

    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addresses))
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
}
