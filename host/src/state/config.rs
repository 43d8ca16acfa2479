//! The config's `[state]` section: where the durable state lives (the embedded store's folder,
//! or etcd), and the compiled-plugin cache beside it. Parsed here, by the store's owner, so a
//! new store setting is one change in one module.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use toml::Spanned;

use crate::config_file::{ConfigError, HumanDuration, Source, check_timeout};

/// The default size bound of the compiled-plugin cache on disk.
pub const DEFAULT_CACHE_MAX: u64 = 1 << 30;

/// Which store holds the durable state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreConfig {
    /// The embedded store, a file in the state directory: one gateway.
    #[default]
    Embedded,
    /// etcd: state shared by every replica.
    Etcd(EtcdSettings),
}

/// How to reach etcd, from the config's `[state]` section. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs of the members (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Every key of this platform lives under it (`/platform-gateway/prod`).
    pub prefix: String,
    /// The deadline of one state operation.
    pub timeout: Duration,
    /// Credentials, when etcd has authentication on.
    pub username: Option<String>,
    /// The password that goes with `username`.
    pub password: Option<String>,
    /// TLS to etcd.
    pub tls: Option<EtcdTls>,
}

impl std::fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// TLS files for etcd: the CA that signed the members' certificates, and an optional client
/// certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA bundle (PEM).
    pub ca: Option<PathBuf>,
    /// The client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// The client key (PEM).
    pub key: Option<PathBuf>,
}

/// The `[state]` section, validated.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// Where the state store lives.
    pub dir: PathBuf,
    /// Where compiled plugins are cached (default: `compiled` under the state directory).
    pub cache_dir: PathBuf,
    /// How many bytes of compiled plugins the cache keeps on disk at most.
    pub cache_max: u64,
    /// The embedded store in `dir`, or etcd.
    pub store: StoreConfig,
}

/// The `[state]` section as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    cache_max: Option<Spanned<ByteSize>>,
    backend: Option<Spanned<StoreKind>>,
    endpoints: Option<Spanned<Vec<String>>>,
    prefix: Option<Spanned<String>>,
    timeout: Option<Spanned<HumanDuration>>,
    username: Option<Spanned<toml::Value>>,
    password: Option<Spanned<toml::Value>>,
    tls: Option<Spanned<RawEtcdTls>>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum StoreKind {
    #[default]
    Embedded,
    Etcd,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcdTls {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// Check the `[state]` section; `backend = "etcd"` takes the etcd keys, the embedded store
/// refuses them.
pub(crate) fn parse(mut raw: RawState, source: &Source) -> Result<StateSettings, ConfigError> {
    let dir = source.path(raw.dir.clone().unwrap_or_else(|| PathBuf::from("state")));
    let cache_dir = match raw.cache_dir.clone() {
        Some(path) => source.path(path),
        None => dir.join("compiled"),
    };
    let cache_max = match raw.cache_max.take() {
        None => DEFAULT_CACHE_MAX,
        Some(size) if size.get_ref().as_u64() < 1 << 20 => {
            return Err(source.invalid(size.span(), "state.cache_max", "must be at least 1MiB"));
        }
        Some(size) => size.get_ref().as_u64(),
    };
    let etcd_only = [
        ("endpoints", raw.endpoints.as_ref().map(Spanned::span)),
        ("prefix", raw.prefix.as_ref().map(Spanned::span)),
        ("timeout", raw.timeout.as_ref().map(Spanned::span)),
        ("username", raw.username.as_ref().map(Spanned::span)),
        ("password", raw.password.as_ref().map(Spanned::span)),
        ("tls", raw.tls.as_ref().map(Spanned::span)),
    ];
    let (kind, kind_span) = match &raw.backend {
        Some(kind) => (*kind.get_ref(), kind.span()),
        None => (StoreKind::Embedded, 0..0),
    };
    let store = match kind {
        StoreKind::Embedded => {
            if let Some((key, Some(span))) = etcd_only.into_iter().find(|(_, span)| span.is_some())
            {
                return Err(source.invalid(
                    span,
                    format!("state.{key}"),
                    "applies only to `backend = \"etcd\"`",
                ));
            }
            StoreConfig::Embedded
        }
        StoreKind::Etcd => StoreConfig::Etcd(etcd_settings(raw, kind_span, source)?),
    };
    Ok(StateSettings {
        dir,
        cache_dir,
        cache_max,
        store,
    })
}

fn etcd_settings(
    raw: RawState,
    backend_span: Range<usize>,
    source: &Source,
) -> Result<EtcdSettings, ConfigError> {
    let endpoints = match raw.endpoints {
        Some(list) if !list.get_ref().is_empty() => {
            for endpoint in list.get_ref() {
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return Err(source.invalid(
                        list.span(),
                        "state.endpoints",
                        format!("`{endpoint}` is not an http:// or https:// URL"),
                    ));
                }
            }
            list.into_inner()
        }
        Some(list) => {
            return Err(source.invalid(list.span(), "state.endpoints", "lists no endpoint"));
        }
        None => {
            return Err(source.invalid(
                backend_span,
                "state.endpoints",
                "`backend = \"etcd\"` needs `endpoints`, the etcd members' client URLs",
            ));
        }
    };
    let prefix = match raw.prefix {
        None => "/platform-gateway".to_string(),
        Some(prefix) => {
            let text = prefix.get_ref().trim_end_matches('/');
            if text.is_empty() {
                return Err(source.invalid(
                    prefix.span(),
                    "state.prefix",
                    "must name a key prefix such as \"/platform-gateway/prod\"",
                ));
            }
            text.to_string()
        }
    };
    let timeout = match raw.timeout {
        None => Duration::from_secs(2),
        Some(value) => check_timeout(value, "state.timeout".into(), source)?,
    };
    let credential = |value: Option<Spanned<toml::Value>>, key: &str| {
        value
            .map(|value| source.string_or_secret(value, &format!("state.{key}")))
            .transpose()
    };
    let username = credential(raw.username, "username")?;
    let password = credential(raw.password, "password")?;
    let tls = raw.tls.map(|tls| {
        let tls = tls.into_inner();
        EtcdTls {
            ca: tls.ca.map(|p| source.path(p)),
            cert: tls.cert.map(|p| source.path(p)),
            key: tls.key.map(|p| source.path(p)),
        }
    });
    Ok(EtcdSettings {
        endpoints,
        prefix,
        timeout,
        username,
        password,
        tls,
    })
}
