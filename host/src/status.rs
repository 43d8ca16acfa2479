//! `platform-gateway status`: what a running gateway serves, read from its admin API
//! (`/admin/generation`, `/admin/backends`, `/admin/routes`, `/metrics`), for a person at a
//! terminal or, as JSON, for a script.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::Value;

/// How long the whole status read may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One backend as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendStatus {
    /// The backend's name.
    pub name: String,
    /// Its plugin file.
    pub plugin: String,
    /// `sha256:...` of the plugin.
    pub digest: String,
    /// Its call slots (`limits.concurrency`).
    pub concurrency: u64,
    /// Plugin calls since the gateway started.
    pub calls: u64,
    /// Those whose outcome was not `ok`.
    pub errors: u64,
    /// Calls running now.
    pub in_flight: u64,
    /// Calls waiting for a slot now.
    pub queued: u64,
}

/// What a running gateway serves.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The admin API's base URL.
    pub admin: String,
    /// `GET /admin/generation` as it answered.
    pub generation: Value,
    /// Each backend, from `/admin/backends` and `/metrics`.
    pub backends: Vec<BackendStatus>,
    /// `GET /admin/routes` as it answered.
    pub routes: Value,
}

/// How to reach the admin API.
#[derive(Debug, Clone, Default)]
pub struct Access<'a> {
    /// Sent as `Authorization: Bearer` when given (`[admin] token`).
    pub token: Option<&'a str>,
    /// The CA bundle (PEM) that signed an `https://` admin API's certificate; without it, the
    /// public web roots.
    pub ca: Option<&'a Path>,
    /// A client certificate chain (PEM, leaf first), presented to an `https://` admin API
    /// that asks for one (`[admin] tls.client_ca`); with [`Access::key`].
    pub cert: Option<&'a Path>,
    /// The private key (PEM) of [`Access::cert`].
    pub key: Option<&'a Path>,
}

/// Read the status of the gateway whose admin API is at `admin` (`http://host:port` or
/// `https://host:port`).
pub async fn fetch(admin: &str, access: &Access<'_>) -> anyhow::Result<Status> {
    tokio::time::timeout(TIMEOUT, read(admin, access))
        .await
        .map_err(|_| anyhow::anyhow!("{admin} did not answer within {TIMEOUT:?}"))?
}

/// `GET url` (a `/readyz`, for a health check): `Ok` on 200, else an error saying what
/// answered; `ca` as in [`Access::ca`].
pub async fn probe(url: &str, ca: Option<&Path>) -> anyhow::Result<()> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("`{url}` is not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        bail!("`{url}` is not a URL (for example http://127.0.0.1:8080/readyz)");
    };
    let base = format!("{scheme}://{authority}");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let tls = match scheme {
        "https" => Some(connector(ca, None)?),
        _ => None,
    };
    tokio::time::timeout(TIMEOUT, get(&base, path, None, tls.as_ref()))
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within {TIMEOUT:?}"))?
        .map(drop)
}

/// `POST body` (JSON) to `path` of the admin API at `admin`: the JSON of a 200, or an error
/// naming the URL and what the gateway said (`platform-gateway plan`).
pub async fn post(
    admin: &str,
    path: &str,
    access: &Access<'_>,
    body: &Value,
) -> anyhow::Result<Value> {
    let base = admin.trim_end_matches('/');
    let tls = admin_tls(base, access)?;
    let body = serde_json::to_vec(body)?;
    let call = call(base, path, access.token, tls.as_ref(), Some(body));
    // A plan calls plugins: it may take as long as their deadlines.
    let text = tokio::time::timeout(TIMEOUT * 6, call)
        .await
        .map_err(|_| anyhow::anyhow!("{base}{path} did not answer within {:?}", TIMEOUT * 6))??;
    serde_json::from_str(&text).with_context(|| format!("{base}{path} did not answer JSON"))
}

/// The TLS client for the admin API at `base`, if it is `https://`.
fn admin_tls(
    base: &str,
    access: &Access<'_>,
) -> anyhow::Result<Option<tokio_rustls::TlsConnector>> {
    let identity = match (access.cert, access.key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => bail!("a client certificate and its key go together: give both or neither"),
    };
    Ok(match base.split("://").next() {
        Some("https") => Some(connector(access.ca, identity)?),
        _ if identity.is_some() => {
            bail!("{base}: a client certificate is presented over TLS: use an https:// URL")
        }
        _ => None,
    })
}

async fn read(admin: &str, access: &Access<'_>) -> anyhow::Result<Status> {
    let base = admin.trim_end_matches('/');
    let tls = admin_tls(base, access)?;
    let (token, tls) = (access.token, &tls);
    let json = |path: &'static str| async move {
        let text = get(base, path, token, tls.as_ref()).await?;
        serde_json::from_str::<Value>(&text)
            .with_context(|| format!("{base}{path} did not answer JSON"))
    };
    let generation = json("/admin/generation").await?;
    let backends = json("/admin/backends").await?;
    let routes = json("/admin/routes").await?;
    let metrics = Samples::parse(&get(base, "/metrics", token, tls.as_ref()).await?);
    Ok(Status {
        admin: base.to_string(),
        generation,
        backends: backend_rows(&backends, &metrics),
        routes,
    })
}

/// A TLS client trusting `ca` (PEM), else the public web roots, presenting the client
/// certificate `identity` (the chain's file, the key's file) if given.
fn connector(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA bundle {}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.with_context(|| format!("{}: not a PEM certificate", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("{}: unusable certificate", path.display()))?;
            }
            if roots.is_empty() {
                bail!("{} holds no certificate", path.display());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| {
                    format!("cannot read the client certificate {}", cert.display())
                })?;
            if chain.is_empty() {
                bail!("{} holds no certificate", cert.display());
            }
            // The key's text never reaches the error: only its file's name.
            let key = PrivateKeyDer::from_pem_file(key).map_err(|_| {
                anyhow::anyhow!("{} holds no readable PEM private key", key.display())
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate and key do not go together")?
        }
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// `GET base+path`: the body of a 200, or an error naming the URL and what the gateway said.
async fn get(
    base: &str,
    path: &str,
    token: Option<&str>,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<String> {
    call(base, path, token, tls, None).await
}

/// `GET base+path`, or `POST` of the JSON `body`: the body of a 200, or an error naming the
/// URL and what the gateway said.
async fn call(
    base: &str,
    path: &str,
    token: Option<&str>,
    tls: Option<&tokio_rustls::TlsConnector>,
    body: Option<Vec<u8>>,
) -> anyhow::Result<String> {
    let method = if body.is_some() { "POST" } else { "GET" };
    let url = format!("{base}{path}");
    let uri: Uri = url
        .parse()
        .with_context(|| format!("`{base}` is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => bail!("{base}: the admin API speaks http and https, not {other}"),
        None => bail!("`{base}` is not a URL (for example http://127.0.0.1:9090)"),
    }
    let authority = uri
        .authority()
        .with_context(|| format!("`{base}` names no host"))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let default_port = if tls.is_some() { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default_port);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot connect to {base}"))?;
    let mut request = Request::builder()
        .method(method)
        .uri(uri.path())
        .header(header::HOST, authority.as_str())
        .header(header::ACCEPT, "application/json, text/plain");
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let (status, body) = match tls {
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .with_context(|| format!("`{host}` is not a TLS server name"))?;
            let stream = tls
                .connect(name, stream)
                .await
                .with_context(|| format!("TLS handshake with {base} failed"))?;
            exchange(stream, request, &url).await?
        }
        None => exchange(stream, request, &url).await?,
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    if status != StatusCode::OK {
        // The gateway's error shape says why.
        let reply = serde_json::from_str::<Value>(&text).ok();
        let cause = (reply.as_ref())
            .and_then(|v| v["error_cause"].as_str().map(|c| format!(" ({c})")))
            .unwrap_or_default();
        let why = reply
            .and_then(|v| v["error_msg"].as_str().map(str::to_string))
            .unwrap_or(text);
        bail!("{method} {url}: {status}: {why}{cause}");
    }
    Ok(text)
}

/// One HTTP/1.1 request over `io`: the status and the whole body.
async fn exchange<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
    url: &str,
) -> anyhow::Result<(StatusCode, Bytes)>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .with_context(|| format!("cannot talk HTTP to {url}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("{url} failed"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("{url}: the answer broke off"))?
        .to_bytes();
    Ok((status, body))
}

/// The samples of a Prometheus text exposition: (name, labels) -> value. Enough of the format
/// for what the gateway writes (label values may hold escaped quotes).
#[derive(Debug, Default)]
struct Samples(Vec<(String, BTreeMap<String, String>, f64)>);

impl Samples {
    fn parse(text: &str) -> Samples {
        Samples(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(sample)
                .collect(),
        )
    }

    /// The sum of `name`'s samples whose labels satisfy `keep`.
    fn sum(&self, name: &str, keep: impl Fn(&BTreeMap<String, String>) -> bool) -> f64 {
        self.0
            .iter()
            .filter(|(n, labels, _)| n == name && keep(labels))
            .map(|(_, _, v)| v)
            .sum()
    }
}

/// One sample line: `name{k="v",...} value [timestamp]`.
fn sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(mut rest) = rest.strip_prefix('{') {
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                break after;
            }
            let (key, after) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.trim().to_string(), value);
            rest = &after[end + 1..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name.to_string(), labels, value))
}

fn backend_rows(backends: &Value, metrics: &Samples) -> Vec<BackendStatus> {
    let list = backends["backends"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|b| {
            let name = b["name"].as_str().unwrap_or_default().to_string();
            let of = |labels: &BTreeMap<String, String>| labels.get("backend") == Some(&name);
            let count = |v: f64| v.max(0.0) as u64;
            BackendStatus {
                plugin: b["plugin"].as_str().unwrap_or_default().to_string(),
                digest: b["digest"].as_str().unwrap_or_default().to_string(),
                concurrency: b["limits"]["concurrency"].as_u64().unwrap_or_default(),
                calls: count(metrics.sum("platform_gateway_plugin_calls_total", of)),
                errors: count(metrics.sum("platform_gateway_plugin_calls_total", |l| {
                    of(l) && l.get("outcome").map(String::as_str) != Some("ok")
                })),
                in_flight: count(metrics.sum("platform_gateway_plugin_calls_in_flight", of)),
                queued: count(metrics.sum("platform_gateway_plugin_calls_queued", of)),
                name,
            }
        })
        .collect()
}

impl Status {
    /// The status as lines for a terminal.
    pub fn render(&self) -> String {
        let g = &self.generation;
        let mut out = String::new();
        let n = |key: &str| g[key].as_u64().unwrap_or_default();
        let _ = writeln!(
            out,
            "gateway at {}: generation {}, loaded at {} in {} ms; {} reloads, {} refused",
            self.admin,
            n("generation"),
            g["loaded_at"].as_str().unwrap_or("?"),
            n("load_ms"),
            n("reloads"),
            n("refused"),
        );
        match g["last_refused"].as_object() {
            Some(refusal) => {
                let _ = writeln!(
                    out,
                    "last refused reload, at {}:",
                    refusal["at"].as_str().unwrap_or("?")
                );
                for line in refusal["reason"].as_str().unwrap_or_default().lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            None => out.push_str("no refused reload\n"),
        }
        if let Some(settings) = g["restart_needed"].as_array().filter(|s| !s.is_empty()) {
            let names: Vec<&str> = settings.iter().filter_map(Value::as_str).collect();
            let _ = writeln!(
                out,
                "changed, taking effect at restart: {}",
                names.join(", ")
            );
        }

        out.push('\n');
        let mut rows = vec![
            [
                "BACKEND",
                "CALLS",
                "ERRORS",
                "IN FLIGHT",
                "QUEUED",
                "SLOTS",
                "PLUGIN",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for b in &self.backends {
            let digest = b.digest.get(..19).unwrap_or(&b.digest);
            rows.push(vec![
                b.name.clone(),
                b.calls.to_string(),
                b.errors.to_string(),
                b.in_flight.to_string(),
                b.queued.to_string(),
                b.concurrency.to_string(),
                format!("{} ({digest}...)", b.plugin),
            ]);
        }
        table(
            &mut out,
            &rows,
            &[false, true, true, true, true, true, false],
        );

        out.push('\n');
        let mut rows = vec![
            ["ROUTE", "CONDITIONS", "BACKEND"]
                .map(String::from)
                .to_vec(),
        ];
        for route in self.routes["routes"].as_array().into_iter().flatten() {
            let text = |key: &str| route[key].as_str().unwrap_or_default().to_string();
            rows.push(vec![text("name"), text("conditions"), text("backend")]);
        }
        table(&mut out, &rows, &[false, false, false]);
        if let Some(policy) = self.routes["discovery"]["on_backend_failure"].as_str() {
            let _ = writeln!(out, "discovery: on_backend_failure = {policy}");
        }
        out
    }
}

/// Rows in columns two spaces apart; `right`: which columns align right (numbers).
fn table(out: &mut String, rows: &[Vec<String>], right: &[bool]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let last = c + 1 == row.len();
                match right.get(c) {
                    Some(true) => format!("{cell:>w$}", w = widths[c]),
                    _ if last => cell.clone(),
                    _ => format!("{cell:<w$}", w = widths[c]),
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const METRICS: &str = r#"# HELP platform_gateway_plugin_calls_total Plugin calls.
# TYPE platform_gateway_plugin_calls_total counter
platform_gateway_plugin_calls_total{backend="pool",operation="provision",outcome="ok"} 5
platform_gateway_plugin_calls_total{backend="pool",operation="discover",outcome="ok"} 2
platform_gateway_plugin_calls_total{backend="pool",operation="provision",outcome="unavailable"} 1
platform_gateway_plugin_calls_total{backend="pool-2",operation="provision",outcome="trap"} 3
platform_gateway_plugin_calls_in_flight{backend="pool"} 1
platform_gateway_plugin_calls_queued{backend="pool"} 4
platform_gateway_http_requests_total{endpoint="/a\"b\\c",method="GET",status="200"} 1
"#;

    #[test]
    fn samples_are_read_with_their_labels_even_with_escaped_quotes() {
        let samples = Samples::parse(METRICS);
        assert_eq!(samples.0.len(), 7);
        let (name, labels, value) = &samples.0[6];
        assert_eq!(name, "platform_gateway_http_requests_total");
        assert_eq!(labels["endpoint"], "/a\"b\\c");
        assert_eq!(labels["method"], "GET");
        assert_eq!(*value, 1.0);
        assert_eq!(sample("up 1"), Some(("up".into(), BTreeMap::new(), 1.0)));
        assert_eq!(sample("broken{a=\"1\" 2"), None);
    }

    #[test]
    fn backends_get_their_calls_errors_and_slots_and_render_as_a_table() {
        let backends = json!({"generation": 3, "backends": [
            {"name": "pool", "plugin": "plugins/pool.wasm", "digest": "sha256:0123456789abcdef0123",
             "limits": {"concurrency": 16}},
            {"name": "pool-2", "plugin": "p2.wasm", "digest": "sha256:ff", "limits": {"concurrency": 2}},
            {"name": "idle", "plugin": "i.wasm", "digest": "sha256:ee", "limits": {"concurrency": 1}},
        ]});
        let rows = backend_rows(&backends, &Samples::parse(METRICS));
        let counts: Vec<(u64, u64, u64, u64)> = rows
            .iter()
            .map(|b| (b.calls, b.errors, b.in_flight, b.queued))
            .collect();
        // `pool` does not count `pool-2`'s calls: labels are matched whole.
        assert_eq!(counts, [(8, 1, 1, 4), (3, 3, 0, 0), (0, 0, 0, 0)]);

        let status = Status {
            admin: "http://127.0.0.1:9090".into(),
            generation: json!({"generation": 3, "loaded_at": "2025-01-01T00:00:00.000Z",
                "load_ms": 12, "reloads": 2, "refused": 1,
                "last_refused": {"at": "2025-01-01T00:01:00.000Z", "reason": "gateway.toml:3: bad\nsecond line"},
                "restart_needed": ["server.listen"]}),
            backends: rows,
            routes: json!({"routes": [
                {"name": "kafka", "conditions": "store = \"kafka\"", "backend": "pool-2"},
                {"name": "routes[1]", "conditions": "default", "backend": "pool"}],
                "discovery": {"on_backend_failure": "fail"}}),
        };
        let text = status.render();
        let expected = "\
gateway at http://127.0.0.1:9090: generation 3, loaded at 2025-01-01T00:00:00.000Z in 12 ms; 2 reloads, 1 refused
last refused reload, at 2025-01-01T00:01:00.000Z:
  gateway.toml:3: bad
  second line
changed, taking effect at restart: server.listen

BACKEND  CALLS  ERRORS  IN FLIGHT  QUEUED  SLOTS  PLUGIN
pool         8       1          1       4     16  plugins/pool.wasm (sha256:0123456789ab...)
pool-2       3       3          0       0      2  p2.wasm (sha256:ff...)
idle         0       0          0       0      1  i.wasm (sha256:ee...)

ROUTE      CONDITIONS       BACKEND
kafka      store = \"kafka\"  pool-2
routes[1]  default          pool
discovery: on_backend_failure = fail
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[tokio::test]
    async fn a_gateway_that_is_not_there_is_named_in_the_error() {
        // A port nothing listens on: bind one, then free it.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let admin = format!("http://{address}");
        let error = fetch(&admin, &Access::default()).await.unwrap_err();
        assert!(format!("{error:#}").contains(&admin), "{error:#}");
        let error = fetch("ftp://127.0.0.1:1", &Access::default())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("http and https"), "{error}");
    }

    #[tokio::test]
    async fn a_client_certificate_needs_its_key_and_an_https_admin_url() {
        let (cert, key) = (Path::new("operator.pem"), Path::new("operator-key.pem"));
        let access = Access {
            cert: Some(cert),
            key: Some(key),
            ..Access::default()
        };
        let error = fetch("http://127.0.0.1:1", &access).await.unwrap_err();
        assert!(error.to_string().contains("use an https:// URL"), "{error}");
        let alone = Access {
            cert: Some(cert),
            ..Access::default()
        };
        let error = fetch("https://127.0.0.1:1", &alone).await.unwrap_err();
        assert!(error.to_string().contains("go together"), "{error}");
    }
}
