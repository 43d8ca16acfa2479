//! The config's `[server]` and `[admin]` sections: the two listeners' addresses, TLS files,
//! body size and connection limits, and what guards the admin API. Parsed here, beside the
//! listeners that use them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use toml::Spanned;

use super::{ConnectionLimits, Tls, TlsFiles};
use crate::config_file::{ConfigError, HumanDuration, Secret, Source, check_timeout};

/// The default listen address: loopback only, so nothing is exposed until the operator says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The `[server]` section, validated.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// TLS on the public listener.
    pub tls: Option<TlsFiles>,
    /// The largest request body the API accepts.
    pub max_body_size: usize,
    /// Connection deadlines and caps of both listeners.
    pub connections: ConnectionLimits,
}

/// The `[admin]` section, validated.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Where the admin API listens; `None`: nowhere.
    pub listen: Option<SocketAddr>,
    /// The bearer token every admin request must carry, if set.
    pub token: Option<Secret>,
    /// TLS on the admin listener.
    pub tls: Option<TlsFiles>,
    /// How long a saved plan (`/admin/plan/*`) can be applied (`admin.plan_ttl`).
    pub plan_ttl: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    listen: Option<Spanned<SocketAddr>>,
    token: Option<Spanned<toml::Value>>,
    tls: Option<Spanned<RawTls>>,
    plan_ttl: Option<Spanned<HumanDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    listen: Option<SocketAddr>,
    tls: Option<Spanned<RawTls>>,
    max_body_size: Option<Spanned<ByteSize>>,
    head_timeout: Option<Spanned<HumanDuration>>,
    body_timeout: Option<Spanned<HumanDuration>>,
    write_timeout: Option<Spanned<HumanDuration>>,
    max_connections: Option<Spanned<usize>>,
    shutdown_grace: Option<Spanned<HumanDuration>>,
}

/// A listener's TLS files, relative to the config file, checked to load.
fn tls_files(raw: &Spanned<RawTls>, key: &str, source: &Source) -> Result<TlsFiles, ConfigError> {
    let tls = raw.get_ref();
    let files = TlsFiles {
        cert: source.path(&tls.cert),
        key: source.path(&tls.key),
        client_ca: tls.client_ca.as_ref().map(|p| source.path(p)),
    };
    Tls::check(&files).map_err(|message| source.invalid(raw.span(), key, message))?;
    // Watched with the config: a renewed certificate (cert-manager rewriting a Secret volume)
    // reloads, and new connections get it.
    for file in [&files.cert, &files.key]
        .into_iter()
        .chain(&files.client_ca)
    {
        source.include(file.clone());
    }
    Ok(files)
}

/// Check the `[admin]` section: a listener off loopback needs a token or client certificates.
pub(crate) fn parse_admin(raw: RawAdmin, source: &Source) -> Result<AdminSettings, ConfigError> {
    let token = match raw.token {
        None => None,
        Some(value) => {
            let span = value.span();
            let text = source.string_or_secret(value, "admin.token")?;
            if text.len() < 16 {
                return Err(source.invalid(span, "admin.token", "must be at least 16 characters"));
            }
            Some(Secret(text))
        }
    };
    let tls = match &raw.tls {
        Some(tls) => Some(tls_files(tls, "admin.tls", source)?),
        None => None,
    };
    let listen = match raw.listen {
        None => None,
        Some(listen) => {
            let address = *listen.get_ref();
            let mutual_tls = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
            if !address.ip().is_loopback() && token.is_none() && !mutual_tls {
                return Err(source.invalid(
                    listen.span(),
                    "admin.listen",
                    format!(
                        "{address} is not a loopback address: the admin API can reload the \
                         gateway and shows its layout, so set `admin.token` (or client \
                         certificates with `admin.tls.client_ca`) to expose it"
                    ),
                ));
            }
            Some(address)
        }
    };
    let plan_ttl = plan_ttl(raw.plan_ttl, source)?;
    Ok(AdminSettings {
        listen,
        token,
        tls,
        plan_ttl,
    })
}

/// How long a saved plan stays: `admin.plan_ttl`, 10 minutes by default, from 1s to 24h.
fn plan_ttl(
    value: Option<Spanned<HumanDuration>>,
    source: &Source,
) -> Result<Duration, ConfigError> {
    const DEFAULT: Duration = Duration::from_secs(600);
    let Some(value) = value else {
        return Ok(DEFAULT);
    };
    let ttl = value.get_ref().0;
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(24 * 3600) {
        return Err(source.invalid(
            value.span(),
            "admin.plan_ttl",
            "must be at least 1s and at most 24h (a plan checks the state it read, but the \
             world outside the gateway may change meanwhile)",
        ));
    }
    Ok(ttl)
}

/// Check the `[server]` section: its TLS files first, then the limits.
pub(crate) fn parse_server(raw: RawServer, source: &Source) -> Result<ServerSettings, ConfigError> {
    let tls = match &raw.tls {
        Some(tls) => Some(tls_files(tls, "server.tls", source)?),
        None => None,
    };
    let listen = raw.listen.unwrap_or_else(|| {
        DEFAULT_LISTEN
            .parse()
            .expect("the default address is valid")
    });
    let max_body_size = match raw.max_body_size {
        None => 1 << 20,
        Some(size) => {
            let bytes = size.get_ref().as_u64();
            // A provision request of the specification takes a few hundred bytes at least.
            if !(1 << 10..=1 << 30).contains(&bytes) {
                return Err(source.invalid(
                    size.span(),
                    "server.max_body_size",
                    "must be between 1KiB and 1GiB",
                ));
            }
            bytes as usize
        }
    };
    let mut limits = ConnectionLimits::default();
    for (value, key, field) in [
        (
            raw.head_timeout,
            "server.head_timeout",
            &mut limits.head_timeout,
        ),
        (
            raw.body_timeout,
            "server.body_timeout",
            &mut limits.body_timeout,
        ),
        (
            raw.write_timeout,
            "server.write_timeout",
            &mut limits.write_timeout,
        ),
        (
            raw.shutdown_grace,
            "server.shutdown_grace",
            &mut limits.shutdown_grace,
        ),
    ] {
        if let Some(value) = value {
            *field = check_timeout(value, key.to_string(), source)?;
        }
    }
    if let Some(max) = raw.max_connections {
        if *max.get_ref() == 0 {
            return Err(source.invalid(max.span(), "server.max_connections", "must be at least 1"));
        }
        limits.max_connections = max.into_inner();
    }
    Ok(ServerSettings {
        listen,
        tls,
        max_body_size,
        connections: limits,
    })
}
