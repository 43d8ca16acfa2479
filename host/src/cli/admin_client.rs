//! The admin API's client, for `status`, `plan` and `healthcheck`: plain HTTP/1.1 over TCP or TLS
//! (rustls: a CA bundle or the public web roots, and a client certificate when the admin
//! listener asks for one), every read bounded by [`TIMEOUT`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use serde::de::DeserializeOwned;

/// How long a whole read (`status`'s several requests, or one health check) may take.
pub(super) const TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the admin API.
#[derive(Debug, Clone, Default)]
pub(super) struct Access<'a> {
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

/// The admin API at one base URL, with the credentials to use on it.
pub(super) struct Client {
    base: String,
    token: Option<String>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Client {
    /// A client of the admin API at `admin` (`http://host:port` or `https://host:port`).
    pub(super) fn new(admin: &str, access: &Access<'_>) -> anyhow::Result<Client> {
        let base = admin.trim_end_matches('/');
        let identity = match (access.cert, access.key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("a client certificate and its key go together: give both or neither"),
        };
        let tls = match base.split("://").next() {
            Some("https") => Some(connector(access.ca, identity)?),
            _ if identity.is_some() => {
                bail!("{base}: a client certificate is presented over TLS: use an https:// URL")
            }
            _ => None,
        };
        Ok(Client {
            base: base.to_string(),
            token: access.token.map(str::to_string),
            tls,
        })
    }

    /// The base URL, without a trailing `/`.
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`'s body, as text.
    pub(super) async fn text(&self, path: &str) -> anyhow::Result<String> {
        send(
            &self.base,
            path,
            self.token.as_deref(),
            self.tls.as_ref(),
            None,
        )
        .await
    }

    /// `POST body` (JSON) to `path`: the answer as JSON. Not bounded by [`TIMEOUT`]: the caller
    /// bounds it (a plan calls plugins, and may take as long as their deadlines).
    pub(super) async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let body = serde_json::to_vec(body)?;
        let text = send(
            &self.base,
            path,
            self.token.as_deref(),
            self.tls.as_ref(),
            Some(body),
        )
        .await?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}{path} did not answer JSON", self.base))
    }

    /// `GET path`'s body, as the admin API's typed answer `T`.
    pub(super) async fn json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let text = self.text(path).await?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}{path} did not answer as expected", self.base))
    }
}

/// `GET url` (a `/readyz`, for a health check): `Ok` on 200, else an error saying what
/// answered; `ca` as in [`Access::ca`].
pub(super) async fn probe(url: &str, ca: Option<&Path>) -> anyhow::Result<()> {
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
    tokio::time::timeout(TIMEOUT, send(&base, path, None, tls.as_ref(), None))
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within {TIMEOUT:?}"))?
        .map(drop)
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
            roots = crate::pem::ca_bundle(path)
                .map_err(anyhow::Error::msg)?
                .roots
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

/// `GET base+path`, or `POST` of the JSON `body`: the body of a 200, or an error naming the
/// URL and what the gateway said.
async fn send(
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
        let reply = serde_json::from_str::<serde_json::Value>(&text).ok();
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
