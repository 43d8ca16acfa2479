//! Outbound HTTP: `wasi:http/outgoing-handler`, for the backends whose config grants it, and
//! only to the `scheme://host:port` patterns of the grant.
//!
//! A backend without the grant does not get the interface linked at all: a plugin that imports
//! it is refused at load. With the grant, a request to an address outside the allowlist fails
//! inside the plugin with `HTTP-request-denied` and never leaves the gateway. Every request is
//! bounded by what is left of the call's deadline (connect, first byte, between bytes) and its
//! response body by the backend's `max_response`.

use std::future::Future;
use std::sync::Arc;
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

/// The destinations a backend may call.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    rules: Vec<Rule>,
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
        Ok(Allowlist { rules })
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
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let clamp = |asked: Option<Duration>| Some(asked.map_or(remaining, |t| t.min(remaining)));
        let options = RequestOptions {
            connect_timeout: clamp(options.and_then(|o| o.connect_timeout)),
            first_byte_timeout: clamp(options.and_then(|o| o.first_byte_timeout)),
            between_bytes_timeout: clamp(options.and_then(|o| o.between_bytes_timeout)),
        };
        let limit = self.max_response;
        Box::new(async move {
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let response = response.map(|body| {
                http_body_util::Limited::new(body, limit)
                    .map_err(move |e| match e.downcast::<HttpError>() {
                        Ok(e) => *e,
                        Err(_) => HttpError::HttpResponseBodySize(Some(limit as u64)),
                    })
                    .boxed_unsync()
            });
            Ok((response, Box::new(io) as Io))
        })
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
