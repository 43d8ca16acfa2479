//! Configuration: the operator's TOML file turned into a validated [`Config`] in one step.
//!
//! Parsing is strict: an unknown key, a value of the wrong type or a reference to something that
//! does not exist is an error that names the file, the key and the line. Relative paths are
//! relative to the config file, so a config works from any working directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::ops::Range;
use std::sync::Arc;

use bytesize::ByteSize;
use serde::Deserialize;
use toml::Spanned;

use crate::capability::Grants;
use crate::capability::http::Allowlist;
use crate::model::BackendId;
use crate::routing::{ClusterPattern, Route, RouteMatch, RouteTable, RouteTableError};
use crate::server::{ConnectionLimits, TlsFiles};
use crate::state::{EtcdSettings, EtcdTls, MAX_VALUE_SIZE, StateQuota};
use crate::telemetry::{LogFormat, OtlpTls, TelemetrySettings};

/// The default listen address: loopback only, so nothing is exposed until the operator says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub source: PathBuf,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// `listen` came from the command line (`--listen`), not the file: a reload keeps it.
    pub listen_overridden: bool,
    /// Where the state store lives.
    pub state_dir: PathBuf,
    /// Where compiled plugins are cached (default: `compiled` under the state directory).
    pub cache_dir: PathBuf,
    /// How many bytes of compiled plugins the cache keeps on disk at most.
    pub cache_max: u64,
    /// The largest plugin file the gateway reads.
    pub max_plugin_size: u64,
    /// Where the durable state lives: the embedded store in `state_dir`, or etcd.
    pub store: StoreConfig,
    /// The largest request body the API accepts.
    pub max_body_size: usize,
    /// Connection deadlines and caps of both listeners.
    pub connections: ConnectionLimits,
    /// The backends, by name.
    pub backends: BTreeMap<BackendId, BackendConfig>,
    /// The provision routes, checked against the backends.
    pub routes: RouteTable,
    /// What discovery does when a backend fails.
    pub discovery: DiscoveryPolicy,
    /// Where the admin API listens; `None`: nowhere.
    pub admin_listen: Option<SocketAddr>,
    /// The bearer token every admin request must carry, if set.
    pub admin_token: Option<Secret>,
    /// TLS on the admin listener.
    pub admin_tls: Option<TlsFiles>,
    /// How long a saved plan (`/admin/plan/*`) can be applied (`admin.plan_ttl`).
    pub plan_ttl: Duration,
    /// TLS on the public listener.
    pub tls: Option<TlsFiles>,
    /// How the gateway picks up changes.
    pub reload: ReloadSettings,
    /// The files besides itself that the config took values from (secrets given `from_file`,
    /// CA bundles): a change to one is a change to the config, so reload watches them too.
    pub included_files: Vec<PathBuf>,
    /// `[telemetry]`: the log format and OTLP trace export (read by the binary before it
    /// serves; a change needs a restart).
    pub telemetry: TelemetrySettings,
}

/// How the gateway picks up changes to its config and plugin files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Watch the config file and every plugin file it names, and reload on change.
    pub watch: bool,
    /// How long file events must stop before a reload starts (an editor's save or a copy in
    /// several writes is one reload).
    pub debounce: Duration,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        ReloadSettings {
            watch: true,
            debounce: Duration::from_millis(250),
        }
    }
}

/// What `GET /discover` answers when some backend fails or times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryPolicy {
    /// 502 naming the failed backends: the client never sees a cluster lose nodes that still
    /// exist. The default.
    #[default]
    Fail,
    /// 200 with what the healthy backends returned; the failed ones are named in the
    /// `Platform-Gateway-Failed-Backends` header and the log.
    Partial,
}

/// A secret value: compared and used, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The default bound on a plugin file's size: above the ~18 MB of a componentize-py plugin.
pub const DEFAULT_MAX_PLUGIN_SIZE: u64 = 64 << 20;

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

/// One configured use of a plugin.
#[derive(Clone)]
pub struct BackendConfig {
    /// The backend's name, used in routes, logs and errors.
    pub name: BackendId,
    /// The namespace of its durable state (default: its name). Keeping it across a rename keeps
    /// the backend's data (a pool's allocations) with it.
    pub state_namespace: String,
    /// The plugin component file.
    pub plugin: PathBuf,
    /// The settings given to the plugin (as JSON values, TOML's dates and times as RFC 3339
    /// strings), secret references resolved. See `capability::settings` for how each contract
    /// version reads them.
    pub settings: Vec<Setting>,
    /// The values of the settings that came from secrets: never shown, and cut out of anything
    /// the plugin says (errors, logs) before it reaches a log or a client.
    pub secrets: Vec<String>,
    /// The resources one call may use.
    pub limits: Limits,
    /// What the backend may reach beyond its sandbox.
    pub grants: Grants,
}

impl std::fmt::Debug for BackendConfig {
    // Settings may hold secrets: show their keys only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConfig")
            .field("name", &self.name)
            .field("state_namespace", &self.state_namespace)
            .field("plugin", &self.plugin)
            .field(
                "settings",
                &self.settings.iter().map(|s| &s.key).collect::<Vec<_>>(),
            )
            .field("limits", &self.limits)
            .field("grants", &self.grants)
            .finish()
    }
}

/// What one call of a backend may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The most linear memory an instance may grow to.
    pub memory: usize,
    /// The wall-clock deadline of one call, instantiation included.
    pub timeout: Duration,
    /// How many calls of the backend may run at once; more wait for a free slot, up to the
    /// call's deadline.
    pub concurrency: usize,
    /// How many calls may wait for a slot; beyond that a call is refused at once (503).
    pub queue: usize,
    /// The largest answer the plugin may return, about as encoded for the client.
    pub max_response: usize,
    /// What the backend's state namespace may hold and how fast it may be written
    /// (`state_keys`, `state_bytes`, `state_value_size`, `state_writes_per_second`).
    pub state: StateQuota,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            timeout: Duration::from_secs(10),
            concurrency: 16,
            queue: 64,
            max_response: 4 << 20,
            state: StateQuota::default(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error (part of the message, not a separate cause, so it is printed once).
        error: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with the line and the key.
        message: String,
    },
    /// A value is well-formed but wrong (an unknown backend, a bad glob).
    #[error("invalid config {path}, line {line}: `{key}`: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The line of the offending value.
        line: usize,
        /// The offending key, as a TOML path.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    backends: BTreeMap<String, Spanned<RawBackend>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    discovery: RawDiscovery,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    reload: RawReload,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    telemetry: RawTelemetry,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    log_format: Option<LogFormat>,
    otlp_endpoint: Option<Spanned<String>>,
    otlp_tls: Option<Spanned<RawOtlpTls>>,
    service_name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtlpTls {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    max_plugin_size: Option<Spanned<ByteSize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReload {
    watch: Option<bool>,
    #[serde(default, with = "humantime_serde::option")]
    debounce: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    #[serde(default)]
    on_backend_failure: DiscoveryPolicy,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
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
struct RawServer {
    listen: Option<SocketAddr>,
    tls: Option<Spanned<RawTls>>,
    max_body_size: Option<Spanned<ByteSize>>,
    head_timeout: Option<Spanned<HumanDuration>>,
    body_timeout: Option<Spanned<HumanDuration>>,
    write_timeout: Option<Spanned<HumanDuration>>,
    max_connections: Option<Spanned<usize>>,
    shutdown_grace: Option<Spanned<HumanDuration>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
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

/// A duration written the human way (`"10s"`, `"250ms"`).
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        humantime_serde::deserialize(deserializer).map(HumanDuration)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    plugin: PathBuf,
    state_namespace: Option<Spanned<String>>,
    #[serde(default)]
    settings: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    grants: RawGrants,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    http: Option<Spanned<Vec<String>>>,
    ca: Option<Spanned<PathBuf>>,
    reads: Option<Spanned<Vec<crate::capability::reads::ReadGrant>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<Spanned<ByteSize>>,
    timeout: Option<Spanned<HumanDuration>>,
    concurrency: Option<Spanned<usize>>,
    queue: Option<usize>,
    max_response: Option<Spanned<ByteSize>>,
    state_keys: Option<Spanned<u64>>,
    state_bytes: Option<Spanned<ByteSize>>,
    state_value_size: Option<Spanned<ByteSize>>,
    state_writes_per_second: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    backend: Spanned<String>,
    cluster_id: Option<Spanned<String>>,
    store: Option<String>,
    store_version: Option<String>,
    node_group_id: Option<String>,
    node_class: Option<String>,
}

impl Config {
    /// How many plugin calls may run at once: the sum of the backends' concurrency limits.
    pub fn call_slots(&self) -> usize {
        self.backends.values().map(|b| b.limits.concurrency).sum()
    }

    /// The settings that take effect only at start, which differ between `self` (running) and
    /// `next`: a reload applies everything else and reports these.
    pub fn restart_only_changes(&self, next: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.listen != next.listen {
            changed.push("server.listen");
        }
        if self.max_body_size != next.max_body_size {
            changed.push("server.max_body_size");
        }
        if self.connections != next.connections {
            changed.push("server (connection limits)");
        }
        if self.state_dir != next.state_dir {
            changed.push("state.dir");
        }
        if self.cache_dir != next.cache_dir {
            changed.push("state.cache_dir");
        }
        if self.cache_max != next.cache_max {
            changed.push("state.cache_max");
        }
        if self.store != next.store {
            changed.push("state (the store)");
        }
        if self.tls.is_some() != next.tls.is_some() {
            changed.push("server.tls (on or off)");
        }
        if self.reload != next.reload {
            changed.push("reload");
        }
        if self.telemetry != next.telemetry {
            changed.push("telemetry");
        }
        changed
    }

    /// The admin listener's settings that only a restart applies and that `next` changes: a
    /// reload that changes them is refused, since what guards the admin API must never differ
    /// from what the config in force says (the token and client CA are applied by a reload).
    pub fn admin_changes_needing_restart(&self, next: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.admin_listen != next.admin_listen {
            changed.push("admin.listen");
        }
        if self.admin_tls.is_some() != next.admin_tls.is_some() {
            changed.push("admin.tls (on or off)");
        }
        changed
    }

    /// Read and validate the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Config::parse(path, &text)
    }

    /// Validate `text` as the content of the config file at `path`: one function per section.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| parse_error(path, text, &e))?;
        let source = Source {
            path,
            text,
            base: path.parent().unwrap_or(Path::new(".")),
            included: Default::default(),
        };
        let tls = match &raw.server.tls {
            Some(tls) => Some(tls_files(tls, "server.tls", &source)?),
            None => None,
        };
        let (listen, max_body_size, connections) = server_section(raw.server, &source)?;
        let plan_ttl = plan_ttl(raw.admin.plan_ttl.take(), &source)?;
        let admin = admin_section(raw.admin, &source)?;
        let state = state_section(raw.state, &source)?;
        let backends = backends_section(raw.backends, &source)?;
        let routes = routes_section(raw.routes, &backends, &source)?;
        let telemetry = telemetry_section(raw.telemetry, &source)?;
        let max_plugin_size = match raw.runtime.max_plugin_size {
            None => DEFAULT_MAX_PLUGIN_SIZE,
            Some(size) if size.get_ref().as_u64() < 1 << 10 => {
                return Err(source.invalid(
                    size.span(),
                    "runtime.max_plugin_size",
                    "must be at least 1KiB",
                ));
            }
            Some(size) => size.get_ref().as_u64(),
        };
        Ok(Config {
            source: path.to_path_buf(),
            listen,
            listen_overridden: false,
            state_dir: state.dir,
            cache_dir: state.cache_dir,
            cache_max: state.cache_max,
            max_plugin_size,
            store: state.store,
            max_body_size,
            connections,
            backends,
            routes,
            discovery: raw.discovery.on_backend_failure,
            admin_listen: admin.listen,
            admin_token: admin.token,
            admin_tls: admin.tls,
            plan_ttl,
            tls,
            reload: ReloadSettings {
                watch: raw.reload.watch.unwrap_or(true),
                debounce: raw
                    .reload
                    .debounce
                    .unwrap_or(ReloadSettings::default().debounce),
            },
            included_files: source.included.take(),
            telemetry,
        })
    }
}

/// The file being parsed: for relative paths and for errors that name the line.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    base: &'a Path,
    /// The files read for values so far (see [`Config::included_files`]).
    included: std::cell::RefCell<Vec<PathBuf>>,
}

impl Source<'_> {
    fn invalid(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: line_of(self.text, span.start),
            key: key.into(),
            message: message.into(),
        }
    }

    fn line(&self, span: Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    /// The value of a secret reference (`{ from_env = ... }` or `{ from_file = ... }`), noting
    /// the file it came from.
    fn secret(&self, table: &toml::Table) -> Result<String, String> {
        let value = resolve_secret(table, self.base)?;
        if let Some(file) = table.get("from_file").and_then(|p| p.as_str()) {
            self.include(self.base.join(file));
        }
        Ok(value)
    }

    /// Note that the config took a value from `file`.
    fn include(&self, file: PathBuf) {
        let mut included = self.included.borrow_mut();
        if !included.contains(&file) {
            included.push(file);
        }
    }
}

/// The `[telemetry]` section, validated.
fn telemetry_section(
    raw: RawTelemetry,
    source: &Source<'_>,
) -> Result<TelemetrySettings, ConfigError> {
    let otlp_endpoint = match raw.otlp_endpoint {
        Some(endpoint) => Some(
            crate::telemetry::parse_otlp_endpoint(endpoint.get_ref())
                .map_err(|e| source.invalid(endpoint.span(), "telemetry.otlp_endpoint", e))?,
        ),
        None => None,
    };
    let otlp_tls = match raw.otlp_tls {
        None => OtlpTls::default(),
        Some(tls) => {
            let span = tls.span();
            let invalid =
                |message: String| source.invalid(span.clone(), "telemetry.otlp_tls", message);
            if otlp_endpoint.as_ref().and_then(|e| e.scheme_str()) != Some("https") {
                return Err(invalid(
                    "applies to an https:// otlp_endpoint, which this config does not have".into(),
                ));
            }
            let tls = tls.into_inner();
            let identity = match (tls.cert, tls.key) {
                (Some(cert), Some(key)) => Some((source.base.join(cert), source.base.join(key))),
                (None, None) => None,
                _ => return Err(invalid("`cert` and `key` go together".into())),
            };
            let tls = OtlpTls {
                ca: tls.ca.map(|ca| source.base.join(ca)),
                identity,
            };
            // Read now, so that `check` and a reload find an unreadable file, not the start.
            tls.client_config().map_err(invalid)?;
            tls
        }
    };
    let service_name = match raw.service_name {
        Some(name) if name.get_ref().trim().is_empty() => {
            return Err(source.invalid(name.span(), "telemetry.service_name", "must not be empty"));
        }
        Some(name) => name.into_inner(),
        None => crate::telemetry::DEFAULT_SERVICE_NAME.to_string(),
    };
    Ok(TelemetrySettings {
        log_format: raw.log_format,
        otlp_endpoint,
        otlp_tls,
        service_name,
    })
}

/// The longest deadline a backend call or a state operation may have: beyond it a timeout is a
/// typo, and adding it to the clock could overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// A duration that must be more than zero and at most [`MAX_TIMEOUT`].
fn check_timeout(
    value: Spanned<HumanDuration>,
    key: String,
    source: &Source,
) -> Result<Duration, ConfigError> {
    let duration = value.get_ref().0;
    if duration.is_zero() || duration > MAX_TIMEOUT {
        return Err(source.invalid(value.span(), key, "must be more than 0s and at most 1h"));
    }
    Ok(duration)
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

/// A listener's TLS files, relative to the config file, checked to load.
fn tls_files(raw: &Spanned<RawTls>, key: &str, source: &Source) -> Result<TlsFiles, ConfigError> {
    let tls = raw.get_ref();
    let files = TlsFiles {
        cert: source.base.join(&tls.cert),
        key: source.base.join(&tls.key),
        client_ca: tls.client_ca.as_ref().map(|p| source.base.join(p)),
    };
    crate::server::Tls::check(&files)
        .map_err(|message| source.invalid(raw.span(), key, message))?;
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

/// A TOML error as position, key and message, never the source line itself: the line may hold a
/// secret (an unterminated `api_key = "...`), and the message goes to logs, the admin API and
/// `check`'s output. Quoted values in the parser's message are left out for the same reason.
fn parse_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let message = redact_quoted(error.message().trim_end());
    let Some(span) = error.span() else {
        return ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    match key_at(text, line, column) {
        Some(key) => ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            key,
            message: format!("column {column}: {message}"),
        },
        None => ConfigError::Parse {
            path: path.to_path_buf(),
            message: format!("line {line}, column {column}: {message}"),
        },
    }
}

/// The dotted key of the value at `column` (1-based, in characters) of line `line` (1-based)
/// of `text`: its table, then the keys of the inline tables open before it on the line, then
/// its own; or the table when the line is a table header.
fn key_at(text: &str, line: usize, column: usize) -> Option<String> {
    let is_key = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | ' '))
    };
    let header = |l: &str| {
        let l = l.trim();
        let inner = l.strip_prefix("[[").and_then(|l| l.strip_suffix("]]"));
        let inner = inner.or_else(|| l.strip_prefix('[').and_then(|l| l.split(']').next()));
        inner
            .map(str::trim)
            .filter(|k| is_key(k))
            .map(str::to_string)
    };
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line.checked_sub(1)?)?;
    if let Some(table) = header(this) {
        return Some(table);
    }
    // Walk the line up to the column: `key =` names the next value, `{` opens an inline table
    // under the last key, `}` closes one; quoted text is skipped.
    let mut path: Vec<String> = Vec::new();
    let (mut current, mut last) = (String::new(), None::<String>);
    let mut quote = None;
    for c in this.chars().take(column.saturating_sub(1)) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if last.is_none() || !current.trim().is_empty() => {
                current.push(c);
            }
            (None, '"' | '\'') => quote = Some(c),
            (None, '=') => {
                let key = current.trim().to_string();
                last = is_key(&key).then_some(key);
                current.clear();
            }
            (None, '{') => {
                path.extend(last.take());
                current.clear();
            }
            (None, '}') => {
                path.pop();
                current.clear();
            }
            (None, ',') => current.clear(),
            (None, c) => current.push(c),
        }
    }
    path.extend(last);
    if path.is_empty() {
        return None;
    }
    let key = path.join(".");
    let table = lines[..line - 1].iter().rev().find_map(|l| header(l));
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key,
    })
}

/// `message` with every double-quoted part replaced by `"…"`: serde quotes the values it
/// rejects (`invalid type: string "…"`), and a value may be a secret.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str("\"…\"");
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

/// The `[admin]` section, validated.
struct AdminSection {
    listen: Option<SocketAddr>,
    token: Option<Secret>,
    tls: Option<TlsFiles>,
}

fn admin_section(raw: RawAdmin, source: &Source) -> Result<AdminSection, ConfigError> {
    let token = match raw.token {
        None => None,
        Some(value) => {
            let span = value.span();
            let text =
                match value.into_inner() {
                    toml::Value::String(s) => s,
                    toml::Value::Table(table) if is_secret_reference(&table) => source
                        .secret(&table)
                        .map_err(|message| source.invalid(span.clone(), "admin.token", message))?,
                    _ => {
                        return Err(source.invalid(
                            span,
                            "admin.token",
                            "must be a string, { from_env = \"NAME\" } or { from_file = \"path\" }",
                        ));
                    }
                };
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
    Ok(AdminSection { listen, token, tls })
}

fn server_section(
    raw: RawServer,
    source: &Source,
) -> Result<(SocketAddr, usize, ConnectionLimits), ConfigError> {
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
    Ok((listen, max_body_size, limits))
}

/// The `[state]` section, validated.
struct StateSection {
    dir: PathBuf,
    cache_dir: PathBuf,
    cache_max: u64,
    store: StoreConfig,
}

fn state_section(mut raw: RawState, source: &Source) -> Result<StateSection, ConfigError> {
    let dir = source
        .base
        .join(raw.dir.clone().unwrap_or_else(|| PathBuf::from("state")));
    let cache_dir = match raw.cache_dir.clone() {
        Some(path) => source.base.join(path),
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
    Ok(StateSection {
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
    let credential = |value: Option<Spanned<toml::Value>>, key: &str| match value {
        None => Ok(None),
        Some(value) => {
            let span = value.span();
            match value.into_inner() {
                toml::Value::String(s) => Ok(Some(s)),
                toml::Value::Table(table) if is_secret_reference(&table) => source
                    .secret(&table)
                    .map(Some)
                    .map_err(|message| source.invalid(span, format!("state.{key}"), message)),
                _ => Err(source.invalid(
                    span,
                    format!("state.{key}"),
                    "must be a string, { from_env = \"NAME\" } or { from_file = \"path\" }",
                )),
            }
        }
    };
    let username = credential(raw.username, "username")?;
    let password = credential(raw.password, "password")?;
    let tls = raw.tls.map(|tls| {
        let tls = tls.into_inner();
        EtcdTls {
            ca: tls.ca.map(|p| source.base.join(p)),
            cert: tls.cert.map(|p| source.base.join(p)),
            key: tls.key.map(|p| source.base.join(p)),
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

fn backends_section(
    raw: BTreeMap<String, Spanned<RawBackend>>,
    source: &Source,
) -> Result<BTreeMap<BackendId, BackendConfig>, ConfigError> {
    let mut backends = BTreeMap::new();
    let mut namespaces: BTreeMap<String, String> = BTreeMap::new();
    for (name, raw_backend) in raw {
        let span = raw_backend.span();
        let backend = backend(&name, raw_backend.into_inner(), span.clone(), source)?;
        if let Some(other) = namespaces.insert(backend.state_namespace.clone(), name.clone()) {
            return Err(source.invalid(
                span,
                format!("backends.{name}.state_namespace"),
                format!(
                    "state namespace `{}` is already used by backend `{other}`: two backends \
                     would hand out the same resources",
                    backend.state_namespace
                ),
            ));
        }
        backends.insert(backend.name.clone(), backend);
    }
    Ok(backends)
}

fn backend(
    name: &str,
    raw: RawBackend,
    span: Range<usize>,
    source: &Source,
) -> Result<BackendConfig, ConfigError> {
    let id = BackendId::new(name)
        .map_err(|message| source.invalid(span.clone(), format!("backends.{name}"), message))?;
    let state_namespace = match raw.state_namespace {
        None => name.to_string(),
        Some(namespace) => BackendId::new(namespace.get_ref())
            .map_err(|_| {
                source.invalid(
                    namespace.span(),
                    format!("backends.{name}.state_namespace"),
                    "a state namespace is 1 to 64 ASCII letters, digits, `-` or `_`",
                )
            })?
            .to_string(),
    };
    let limits = limits(raw.limits, name, source)?;
    let (settings, secrets) = settings(raw.settings, name, source)?;
    let reads = match raw.grants.reads {
        None => None,
        Some(_) if raw.grants.http.is_none() => {
            return Err(source.invalid(
                span.clone(),
                format!("backends.{name}.grants.reads"),
                "reads apply to an `http` grant, which this backend does not have",
            ));
        }
        Some(reads) => Some(
            crate::capability::reads::Reads::parse(reads.get_ref()).map_err(|message| {
                source.invalid(
                    reads.span(),
                    format!("backends.{name}.grants.reads"),
                    message,
                )
            })?,
        ),
    };
    let grants = Grants {
        http: match (raw.grants.http, raw.grants.ca) {
            (None, None) => None,
            (None, Some(ca)) => {
                return Err(source.invalid(
                    ca.span(),
                    format!("backends.{name}.grants.ca"),
                    "a CA bundle applies to an `http` grant, which this backend does not have",
                ));
            }
            (Some(patterns), ca) => {
                let span = patterns.span();
                let mut allow = Allowlist::parse(patterns.get_ref()).map_err(|message| {
                    source.invalid(span, format!("backends.{name}.grants.http"), message)
                })?;
                if let Some(reads) = reads {
                    allow = allow.with_reads(reads);
                }
                if let Some(ca) = ca {
                    let path = source.base.join(ca.get_ref());
                    source.include(path.clone());
                    allow = allow.trusting(&path).map_err(|message| {
                        source.invalid(ca.span(), format!("backends.{name}.grants.ca"), message)
                    })?;
                }
                Some(Arc::new(allow))
            }
        },
    };
    Ok(BackendConfig {
        name: id,
        state_namespace,
        plugin: source.base.join(raw.plugin),
        settings,
        secrets,
        limits,
        grants,
    })
}

/// One setting of a backend, in the two forms plugins read.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Its key in the `settings` table.
    pub key: String,
    /// Its value as JSON (contract 0.2 reads the whole table as one object of these).
    pub json: serde_json::Value,
    /// Its value as contract 0.1 reads it through `wasi:config/store`: a string as is, any other
    /// value (a date included) as its JSON encoding.
    pub text: String,
}

/// A backend's settings.
type Settings = Vec<Setting>;

/// A backend's settings as JSON values (dates and times as RFC 3339 strings), secret references
/// resolved.
fn settings(
    raw: BTreeMap<String, Spanned<toml::Value>>,
    backend: &str,
    source: &Source,
) -> Result<(Settings, Vec<String>), ConfigError> {
    let mut settings = Vec::new();
    let mut secrets = Vec::new();
    for (key, value) in raw {
        let span = value.span();
        let value = match value.into_inner() {
            toml::Value::String(text) => (serde_json::Value::String(text.clone()), text),
            toml::Value::Table(table) if is_secret_reference(&table) => {
                let secret = source.secret(&table).map_err(|message| {
                    source.invalid(span, format!("backends.{backend}.settings.{key}"), message)
                })?;
                secrets.push(secret.clone());
                (serde_json::Value::String(secret.clone()), secret)
            }
            other => {
                let json = toml_to_json(other);
                let text = json.to_string();
                (json, text)
            }
        };
        let (json, text) = value;
        settings.push(Setting { key, json, text });
    }
    Ok((settings, secrets))
}

/// A TOML value as JSON; TOML's dates and times become RFC 3339 strings.
fn toml_to_json(value: toml::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        toml::Value::String(s) => Json::String(s),
        toml::Value::Integer(i) => Json::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        toml::Value::Boolean(b) => Json::Bool(b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => Json::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Json::Object(
            table
                .into_iter()
                .map(|(k, v)| (k, toml_to_json(v)))
                .collect(),
        ),
    }
}

fn routes_section(
    raw: Vec<Spanned<RawRoute>>,
    backends: &BTreeMap<BackendId, BackendConfig>,
    source: &Source,
) -> Result<RouteTable, ConfigError> {
    let mut routes = Vec::new();
    let mut route_lines = Vec::new();
    for (index, raw_route) in raw.into_iter().enumerate() {
        route_lines.push(source.line(raw_route.span()));
        let raw_route = raw_route.into_inner();
        let key = format!("routes[{index}]");
        let backend_span = raw_route.backend.span();
        let backend_name = raw_route.backend.into_inner();
        let backend = backends
            .keys()
            .find(|id| id.as_str() == backend_name)
            .cloned()
            .ok_or_else(|| {
                let defined: Vec<&str> = backends.keys().map(BackendId::as_str).collect();
                source.invalid(
                    backend_span,
                    format!("{key}.backend"),
                    format!(
                        "unknown backend `{backend_name}` (defined: {})",
                        if defined.is_empty() {
                            "none".to_string()
                        } else {
                            defined.join(", ")
                        }
                    ),
                )
            })?;
        let cluster_id = match raw_route.cluster_id {
            None => None,
            Some(pattern) => Some(
                ClusterPattern::new(pattern.get_ref())
                    .map_err(|e| source.invalid(pattern.span(), format!("{key}.cluster_id"), e))?,
            ),
        };
        routes.push(Route {
            name: raw_route.name.unwrap_or_else(|| key.clone()),
            backend,
            matches: RouteMatch {
                cluster_id,
                store: raw_route.store,
                store_version: raw_route.store_version,
                node_group_id: raw_route.node_group_id,
                node_class: raw_route.node_class,
            },
        });
    }
    RouteTable::new(routes).map_err(|e| {
        let (later, message) = match &e {
            RouteTableError::DuplicateName { first, second, .. } => {
                (*second, format!("{e} (line {})", route_lines[*first]))
            }
            RouteTableError::Shadowed { earlier, later, .. } => (
                *later,
                format!(
                    "{e} (the earlier route is at line {})",
                    route_lines[*earlier]
                ),
            ),
        };
        ConfigError::Invalid {
            path: source.path.to_path_buf(),
            line: route_lines[later],
            key: format!("routes[{later}]"),
            message,
        }
    })
}

fn limits(raw: RawLimits, backend: &str, source: &Source) -> Result<Limits, ConfigError> {
    let mut limits = Limits::default();
    let key = |name: &str| format!("backends.{backend}.limits.{name}");
    if let Some(memory) = raw.memory {
        let bytes = memory.get_ref().as_u64();
        // A component needs at least one 64 KiB page; past 4 GiB a 32-bit memory cannot grow.
        if !(64 << 10..=4 << 30).contains(&bytes) {
            return Err(source.invalid(
                memory.span(),
                key("memory"),
                "must be between 64KiB and 4GiB",
            ));
        }
        limits.memory = bytes as usize;
    }
    if let Some(timeout) = raw.timeout {
        limits.timeout = check_timeout(timeout, key("timeout"), source)?;
    }
    if let Some(concurrency) = raw.concurrency {
        if *concurrency.get_ref() == 0 {
            return Err(source.invalid(
                concurrency.span(),
                key("concurrency"),
                "must be at least 1",
            ));
        }
        limits.concurrency = concurrency.into_inner();
    }
    if let Some(queue) = raw.queue {
        limits.queue = queue;
    }
    if let Some(max_response) = raw.max_response {
        let bytes = max_response.get_ref().as_u64();
        if bytes == 0 {
            return Err(source.invalid(
                max_response.span(),
                key("max_response"),
                "must be more than 0",
            ));
        }
        limits.max_response = bytes as usize;
    }
    if let Some(keys) = raw.state_keys {
        if *keys.get_ref() == 0 {
            return Err(source.invalid(keys.span(), key("state_keys"), "must be at least 1"));
        }
        limits.state.keys = keys.into_inner();
    }
    if let Some(bytes) = raw.state_bytes {
        if bytes.get_ref().as_u64() == 0 {
            return Err(source.invalid(bytes.span(), key("state_bytes"), "must be more than 0"));
        }
        limits.state.bytes = bytes.get_ref().as_u64();
    }
    if let Some(size) = raw.state_value_size {
        let bytes = size.get_ref().as_u64();
        // The contract promises values up to 1 MiB at most; a backend may be given less.
        if !(1..=MAX_VALUE_SIZE as u64).contains(&bytes) {
            return Err(source.invalid(
                size.span(),
                key("state_value_size"),
                format!("must be between 1B and {}", ByteSize(MAX_VALUE_SIZE as u64)),
            ));
        }
        limits.state.value = bytes as usize;
    }
    if let Some(rate) = raw.state_writes_per_second {
        if *rate.get_ref() == 0 {
            return Err(source.invalid(
                rate.span(),
                key("state_writes_per_second"),
                "must be at least 1",
            ));
        }
        limits.state.writes_per_second = rate.into_inner();
    }
    Ok(limits)
}

/// A settings value `{ from_env = "NAME" }` or `{ from_file = "path" }`: a secret kept out of
/// the config file.
fn is_secret_reference(table: &toml::Table) -> bool {
    table.len() == 1 && (table.contains_key("from_env") || table.contains_key("from_file"))
}

fn resolve_secret(table: &toml::Table, base: &Path) -> Result<String, String> {
    if let Some(name) = table.get("from_env") {
        let name = name
            .as_str()
            .ok_or("`from_env` must name an environment variable")?;
        return std::env::var(name)
            .map_err(|_| format!("environment variable `{name}` is not set"));
    }
    let path = table
        .get("from_file")
        .and_then(|p| p.as_str())
        .ok_or("`from_file` must be a path")?;
    let path = base.join(path);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    // Files written by `echo` or editors end with a newline that is not part of the secret.
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/gateway/gateway.toml"), text)
    }

    const MINIMAL: &str = r#"
[backends.pool]
plugin = "plugins/pool.wasm"

[[routes]]
backend = "pool"
"#;

    #[test]
    fn a_syntax_error_names_the_line_and_key_but_never_shows_the_value() {
        let secret = "sekret-0123456789abcdef";
        // An unterminated string on the last line: the parser's own message quotes that line.
        let text = format!("{MINIMAL}\n[backends.pool.settings]\napi_key = \"{secret}");
        let error = parse(&text).unwrap_err().to_string();
        assert!(!error.contains(secret), "{error}");
        assert!(!error.contains("sekret"), "{error}");
        let line = text.lines().count();
        assert!(error.contains(&format!("line {line}")), "{error}");
        assert!(error.contains("backends.pool.settings.api_key"), "{error}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_key_and_not_quoted() {
        let secret = "sekret-0123456789abcdef";
        let text = format!("[admin]\nlisten = \"{secret}\"\n{MINIMAL}");
        let error = parse(&text).unwrap_err().to_string();
        assert!(!error.contains(secret), "{error}");
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("admin.listen"), "{error}");
    }

    #[test]
    fn minimal_config_gets_defaults_and_paths_relative_to_the_file() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.state_dir, PathBuf::from("/etc/gateway/state"));
        assert_eq!(
            config.cache_dir,
            PathBuf::from("/etc/gateway/state/compiled")
        );
        assert_eq!(config.max_body_size, 1 << 20);
        let pool = config.backends.values().next().unwrap();
        assert_eq!(pool.plugin, PathBuf::from("/etc/gateway/plugins/pool.wasm"));
        assert_eq!(pool.limits, Limits::default());
    }

    #[test]
    fn settings_pass_strings_as_is_and_other_values_as_json() {
        let config = parse(
            r#"
[backends.pool]
plugin = "pool.wasm"
[backends.pool.settings]
region = "eu-west-1"
size = 3
machines = [{ id = "m1", ok = true }]
"#,
        )
        .unwrap();
        let settings = &config.backends.values().next().unwrap().settings;
        let get = |k: &str| settings.iter().find(|s| s.key == k).unwrap().text.clone();
        assert_eq!(get("region"), "eu-west-1");
        assert_eq!(get("size"), "3");
        let machines: serde_json::Value = serde_json::from_str(&get("machines")).unwrap();
        assert_eq!(machines, serde_json::json!([{ "id": "m1", "ok": true }]));
    }

    #[test]
    fn limits_parse_human_units() {
        let config = parse(
            r#"
[backends.pool]
plugin = "pool.wasm"
limits = { memory = "16MiB", timeout = "250ms", concurrency = 4, queue = 2, max_response = "1KiB" }
"#,
        )
        .unwrap();
        let limits = &config.backends.values().next().unwrap().limits;
        assert_eq!(limits.memory, 16 << 20);
        assert_eq!(limits.timeout, Duration::from_millis(250));
        assert_eq!(limits.concurrency, 4);
        assert_eq!(limits.queue, 2);
        assert_eq!(limits.max_response, 1024);
    }

    #[test]
    fn state_quotas_parse_and_a_bad_one_names_its_key_and_line() {
        let config = parse(
            "[backends.pool]\nplugin = \"p.wasm\"\n\n[backends.pool.limits]\nstate_keys = 500\n\
             state_bytes = \"2MiB\"\nstate_value_size = \"4KiB\"\nstate_writes_per_second = 50\n",
        )
        .unwrap();
        let quota = config.backends.values().next().unwrap().limits.state;
        assert_eq!(
            quota,
            StateQuota {
                keys: 500,
                bytes: 2 << 20,
                value: 4 << 10,
                writes_per_second: 50,
            }
        );
        // Unset, the defaults are bounded.
        let default = Limits::default().state;
        assert!(
            default.keys <= 1_000_000 && default.bytes <= 1 << 30,
            "{default:?}"
        );
        for (line, key) in [
            ("state_keys = 0", "state_keys"),
            ("state_bytes = \"0B\"", "state_bytes"),
            ("state_value_size = \"2MiB\"", "state_value_size"),
            ("state_writes_per_second = 0", "state_writes_per_second"),
            ("state_keys = -1", "state_keys"),
        ] {
            let err = parse(&format!(
                "[backends.pool]\nplugin = \"p.wasm\"\n\n[backends.pool.limits]\n{line}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("line 5"), "{line}: {err}");
            assert!(err.contains(key), "{line}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_an_error_naming_key_and_line() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error_naming_key_and_line() {
        let err =
            parse("[backends.pool]\nplugin = \"p.wasm\"\nlimits = { concurrency = \"many\" }\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("concurrency"), "{err}");
    }

    #[test]
    fn bad_duration_is_an_error_naming_the_line() {
        let err = parse(
            "[backends.pool]\nplugin = \"p.wasm\"\n\n[backends.pool.limits]\ntimeout = \"soon\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("timeout"), "{err}");
    }

    #[test]
    fn route_to_unknown_backend_names_it_and_the_line() {
        let err = parse(
            "[backends.pool]\nplugin = \"p.wasm\"\n\n[[routes]]\nstore = \"mongodb\"\nbackend = \"cloud\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 6"), "{err}");
        assert!(err.contains("routes[0].backend"), "{err}");
        assert!(err.contains("unknown backend `cloud`"), "{err}");
        assert!(err.contains("defined: pool"), "{err}");
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let err = parse("[backends.pool]\nplugin = \"p.wasm\"\nlimits = { concurrency = 0 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("backends.pool.limits.concurrency"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_backend_name_is_refused() {
        let err = parse("[backends.\"my pool\"]\nplugin = \"p.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("backends.my pool"), "{err}");
    }

    #[test]
    fn bad_listen_address_is_refused() {
        let err = parse("[server]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn discovery_policy_and_admin_listener_are_optional() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.discovery, DiscoveryPolicy::Fail);
        assert_eq!(config.admin_listen, None);
        let config = parse(&format!(
            "[discovery]\non_backend_failure = \"partial\"\n[admin]\nlisten = \"127.0.0.1:9090\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(config.discovery, DiscoveryPolicy::Partial);
        assert_eq!(config.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
        let err = parse("[discovery]\non_backend_failure = \"ignore\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("ignore"), "{err}");
    }

    #[test]
    fn shadowed_route_is_refused_naming_both_rules_and_lines() {
        let err = parse(
            "[backends.pool]\nplugin = \"p.wasm\"\n\n[[routes]]\nname = \"everything\"\nbackend = \"pool\"\n\n[[routes]]\nname = \"kafka\"\nstore = \"kafka\"\nbackend = \"pool\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`kafka` can never match"), "{err}");
        assert!(err.contains("`everything`"), "{err}");
        assert!(err.contains("line 8") && err.contains("line 4"), "{err}");
    }

    #[test]
    fn duplicate_route_names_are_refused_naming_both_lines() {
        let err = parse(
            "[backends.pool]\nplugin = \"p.wasm\"\n[[routes]]\nname = \"r\"\nstore = \"a\"\nbackend = \"pool\"\n[[routes]]\nname = \"r\"\nbackend = \"pool\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("route name `r`"), "{err}");
        assert!(err.contains("line 7") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn secrets_come_from_the_environment_or_a_file_and_never_show_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "s3cr3t-file\n").unwrap();
        // SAFETY: the variable name is unique to this test.
        unsafe { std::env::set_var("PGW_TEST_SECRET_ENV", "s3cr3t-env") };
        let config = Config::parse(
            &dir.path().join("gateway.toml"),
            "[backends.cloud]\nplugin = \"p.wasm\"\n[backends.cloud.settings]\n\
             key = { from_env = \"PGW_TEST_SECRET_ENV\" }\nfile = { from_file = \"key\" }\n\
             other = { from_env = \"X\", extra = 1 }\n",
        )
        .unwrap();
        let backend = config.backends.values().next().unwrap();
        let get = |k: &str| {
            backend
                .settings
                .iter()
                .find(|s| s.key == k)
                .map(|s| s.text.clone())
                .unwrap()
        };
        assert_eq!(get("key"), "s3cr3t-env");
        assert_eq!(get("file"), "s3cr3t-file");
        // Two keys: an ordinary table, not a secret reference.
        assert_eq!(get("other"), r#"{"extra":1,"from_env":"X"}"#);
        assert_eq!(backend.secrets, vec!["s3cr3t-file", "s3cr3t-env"]);
        // The file is watched with the config; the environment cannot be.
        assert_eq!(config.included_files, [dir.path().join("key")]);
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[test]
    fn a_missing_secret_is_an_error_naming_key_and_line() {
        let err = parse(
            "[backends.cloud]\nplugin = \"p.wasm\"\n[backends.cloud.settings]\ntoken = { from_env = \"PGW_SURELY_UNSET\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("backends.cloud.settings.token"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("`PGW_SURELY_UNSET` is not set"), "{err}");
    }

    #[test]
    fn read_grants_and_the_plan_ttl_are_checked_naming_the_key_and_line() {
        let config = parse(
            "[admin]\nplan_ttl = \"30s\"\n[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { http = \
             [\"https://*.amazonaws.com\"], reads = [{ method = \"POST\", url = \
             \"https://ec2.*.amazonaws.com/\", body = \"Action=Describe*\" }] }\n",
        )
        .unwrap();
        assert_eq!(config.plan_ttl, Duration::from_secs(30));
        let reads = config.backends.values().map(|b| match &b.grants.http {
            Some(allow) => allow.reads().len(),
            None => 0,
        });
        assert_eq!(reads.sum::<usize>(), 1);
        assert_eq!(
            parse("[backends.a]\nplugin = \"p.wasm\"\n")
                .unwrap()
                .plan_ttl,
            Duration::from_secs(600)
        );
        for (text, needle) in [
            (
                "[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { reads = [{ method = \"POST\", url = \"https://x/\" }] }\n",
                "`http` grant",
            ),
            (
                "[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { http = [\"https://x\"], reads = [{ method = \"post\", url = \"https://x/\" }] }\n",
                "HTTP method in capitals",
            ),
            (
                "[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { http = [\"https://x\"], reads = [{ method = \"POST\", url = \"https://x/\", verb = 1 }] }\n",
                "verb",
            ),
            ("[admin]\nplan_ttl = \"0s\"\n", "admin.plan_ttl"),
            ("[admin]\nplan_ttl = \"2d\"\n", "at most 24h"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{needle}: {error}");
            assert!(error.contains("line"), "{error}");
        }
    }

    #[test]
    fn http_grants_are_parsed_and_checked() {
        let config = parse(
            "[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { http = [\"https://*.amazonaws.com\"] }\n",
        )
        .unwrap();
        let grant = config
            .backends
            .values()
            .next()
            .unwrap()
            .grants
            .http
            .clone()
            .unwrap();
        assert_eq!(grant.patterns(), vec!["https://*.amazonaws.com"]);
        assert!(
            parse(MINIMAL)
                .unwrap()
                .backends
                .values()
                .next()
                .unwrap()
                .grants
                .http
                .is_none()
        );
        let err =
            parse("[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { http = [\"ftp://x\"] }\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("backends.cloud.grants.http") && err.contains("line 3"),
            "{err}"
        );
    }

    #[test]
    fn an_http_grant_may_trust_a_ca_bundle_instead_of_the_public_roots() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.internal".to_string()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
        std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
        let config = |ca: &str| {
            Config::parse(
                &dir.path().join("gateway.toml"),
                &format!(
                    "[backends.cloud]\nplugin = \"p.wasm\"\n\
                     grants = {{ http = [\"https://api.internal\"], ca = \"{ca}\" }}\n"
                ),
            )
        };
        let parsed = config("ca.pem").unwrap();
        let grant = parsed
            .backends
            .values()
            .next()
            .unwrap()
            .grants
            .http
            .clone()
            .unwrap();
        assert_eq!(grant.ca(), Some(dir.path().join("ca.pem").as_path()));
        // A reload watches the bundle with the config.
        assert_eq!(parsed.included_files, [dir.path().join("ca.pem")]);

        for (file, why) in [
            ("empty.pem", "holds no PEM certificate"),
            ("missing.pem", "cannot read CA bundle"),
        ] {
            let e = config(file).unwrap_err().to_string();
            assert!(
                e.contains("backends.cloud.grants.ca") && e.contains("line 3") && e.contains(why),
                "{e}"
            );
        }
        let e = parse("[backends.cloud]\nplugin = \"p.wasm\"\ngrants = { ca = \"ca.pem\" }\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("backends.cloud.grants.ca") && e.contains("`http` grant"),
            "{e}"
        );
    }

    #[test]
    fn otlp_export_over_https_reads_its_ca_and_client_certificate_when_the_config_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["collector".to_string()]).unwrap();
        write("ca.pem", &ca.cert.pem());
        let client = rcgen::generate_simple_self_signed(vec!["gateway".to_string()]).unwrap();
        write("client.pem", &client.cert.pem());
        write("client-key.pem", &client.signing_key.serialize_pem());
        write("not-a-key.pem", "sekret-key-material\n");
        let config = |tls: &str| {
            Config::parse(
                &dir.path().join("gateway.toml"),
                &format!(
                    "[telemetry]\notlp_endpoint = \"https://collector:4318\"\n{tls}\n{MINIMAL}"
                ),
            )
        };

        // Without `otlp_tls`: the system's roots.
        let plain = config("").unwrap().telemetry;
        assert_eq!(plain.otlp_tls, OtlpTls::default());
        assert_eq!(
            plain.traces_url().as_deref(),
            Some("https://collector:4318/v1/traces")
        );
        let parsed = config(
            "otlp_tls = { ca = \"ca.pem\", cert = \"client.pem\", key = \"client-key.pem\" }",
        )
        .unwrap()
        .telemetry;
        let at = |name: &str| dir.path().join(name);
        assert_eq!(
            parsed.otlp_tls,
            OtlpTls {
                ca: Some(at("ca.pem")),
                identity: Some((at("client.pem"), at("client-key.pem"))),
            }
        );
        for (tls, why) in [
            ("otlp_tls = { ca = \"missing.pem\" }", "missing.pem"),
            (
                "otlp_tls = { ca = \"not-a-key.pem\" }",
                "holds no PEM certificate",
            ),
            (
                "otlp_tls = { cert = \"client.pem\", key = \"not-a-key.pem\" }",
                "not-a-key.pem holds no readable PEM private key",
            ),
            (
                "otlp_tls = { cert = \"client.pem\", key = \"client-key.pem\", extra = 1 }",
                "extra",
            ),
        ] {
            let e = config(tls).unwrap_err().to_string();
            assert!(e.contains("line 3") && e.contains(why), "{tls}: {e}");
            assert!(!e.contains("sekret"), "{e}");
        }
    }

    #[test]
    fn bad_cluster_glob_is_refused() {
        let err = parse(
            "[backends.pool]\nplugin = \"p.wasm\"\n[[routes]]\nbackend = \"pool\"\ncluster_id = \"prod-[\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("routes[0].cluster_id"), "{err}");
        assert!(err.contains("line 5"), "{err}");
    }

    #[test]
    fn zero_and_absurd_timeouts_are_refused_naming_key_and_line() {
        for timeout in ["0s", "100000h"] {
            let text = format!(
                "[backends.pool]\nplugin = \"p.wasm\"\nlimits = {{ timeout = \"{timeout}\" }}\n"
            );
            let e = parse(&text).unwrap_err().to_string();
            assert!(
                e.contains("line 3") && e.contains("backends.pool.limits.timeout"),
                "{e}"
            );
        }
        let e = parse("[state]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\ntimeout = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("state.timeout") && e.contains("line 4"), "{e}");
    }

    #[test]
    fn a_zero_body_size_limit_is_refused() {
        let e = parse("[server]\nmax_body_size = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.max_body_size") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn toml_dates_and_times_reach_plugins_as_rfc3339_strings() {
        let config = parse(
            r#"
[backends.pool]
plugin = "p.wasm"
[backends.pool.settings]
since = 1979-05-27T07:32:00Z
day = 1979-05-27
nested = { at = 1979-05-27T00:32:00-07:00, list = [07:32:00] }
"#,
        )
        .unwrap();
        let settings: BTreeMap<_, _> = config
            .backends
            .values()
            .next()
            .unwrap()
            .settings
            .iter()
            .map(|s| (s.key.clone(), s.text.clone()))
            .collect();
        assert_eq!(settings["since"], "\"1979-05-27T07:32:00Z\"");
        assert_eq!(settings["day"], "\"1979-05-27\"");
        assert_eq!(
            settings["nested"],
            r#"{"at":"1979-05-27T00:32:00-07:00","list":["07:32:00"]}"#
        );
    }

    #[test]
    fn a_changed_listen_address_is_reported_as_needing_a_restart() {
        let before = parse(MINIMAL).unwrap();
        let after = parse(&format!("[server]\nlisten = \"127.0.0.1:9999\"\n{MINIMAL}")).unwrap();
        assert_eq!(before.restart_only_changes(&after), ["server.listen"]);
    }

    #[test]
    fn the_etcd_store_takes_endpoints_prefix_timeout_and_credentials() {
        // SAFETY: a variable only this test reads, set before any thread of it reads it.
        unsafe { std::env::set_var("PG_TEST_ETCD_PASSWORD", "hunter2") };
        let config = parse(
            r#"
[state]
backend = "etcd"
endpoints = ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
prefix = "/platform-gateway/prod/"
timeout = "3s"
username = "gateway"
password = { from_env = "PG_TEST_ETCD_PASSWORD" }
tls = { ca = "ca.pem" }
dir = "state"
"#,
        )
        .unwrap();
        let StoreConfig::Etcd(etcd) = &config.store else {
            panic!("not etcd: {:?}", config.store);
        };
        assert_eq!(etcd.endpoints.len(), 2);
        assert_eq!(etcd.prefix, "/platform-gateway/prod");
        assert_eq!(etcd.timeout, Duration::from_secs(3));
        assert_eq!(etcd.username.as_deref(), Some("gateway"));
        assert_eq!(etcd.password.as_deref(), Some("hunter2"));
        assert_eq!(
            etcd.tls.as_ref().unwrap().ca.as_deref(),
            Some(Path::new("/etc/gateway/ca.pem"))
        );
        assert_eq!(config.state_dir, PathBuf::from("/etc/gateway/state"));
        // The embedded store is the default, and etcd keys are refused beside it.
        assert_eq!(parse(MINIMAL).unwrap().store, StoreConfig::Embedded);
        let e = parse("[state]\nendpoints = [\"http://x:1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("state.endpoints") && e.contains("etcd"), "{e}");
        let e = parse("[state]\nbackend = \"etcd\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("state.endpoints") && e.contains("line 2"), "{e}");
        let e = parse("[state]\nbackend = \"zookeeper\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn two_backends_cannot_share_a_state_namespace() {
        let e = parse(
            "[backends.a]\nplugin = \"p.wasm\"\n[backends.b]\nplugin = \"p.wasm\"\nstate_namespace = \"a\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("already used by backend `a`"), "{e}");
    }

    #[test]
    fn telemetry_sets_the_log_format_and_otlp_export_strictly() {
        let defaults = parse(MINIMAL).unwrap().telemetry;
        assert_eq!(defaults, TelemetrySettings::default());
        assert_eq!(defaults.service_name, "platform-gateway");
        assert_eq!(defaults.traces_url(), None);

        let config = parse(&format!(
            "[telemetry]\nlog_format = \"json\"\notlp_endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"gw-eu\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(config.telemetry.log_format, Some(LogFormat::Json));
        assert_eq!(
            config.telemetry.traces_url().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(config.telemetry.service_name, "gw-eu");
        let text = parse(&format!("[telemetry]\nlog_format = \"text\"\n{MINIMAL}")).unwrap();
        assert_eq!(text.telemetry.log_format, Some(LogFormat::Text));
        // A telemetry change needs a restart: the subscriber is installed once.
        let mut before = config.clone();
        before.telemetry = TelemetrySettings::default();
        assert_eq!(before.restart_only_changes(&config), ["telemetry"]);

        for (text, key, line) in [
            (
                "[telemetry]\nlog_format = \"xml\"\n",
                "log_format",
                "line 2",
            ),
            (
                "[telemetry]\n\nlog_fromat = \"json\"\n",
                "log_fromat",
                "line 3",
            ),
            (
                "[telemetry]\notlp_endpoint = \"ftp://collector:4318\"\n",
                "telemetry.otlp_endpoint",
                "line 2",
            ),
            (
                "[telemetry]\notlp_endpoint = \"http://collector:4318\"\notlp_tls = {}\n",
                "telemetry.otlp_tls",
                "line 3",
            ),
            (
                "[telemetry]\notlp_endpoint = \"https://c:4318\"\notlp_tls = { cert = \"c.pem\" }\n",
                "go together",
                "line 3",
            ),
            (
                "[telemetry]\notlp_endpoint = \"collector\"\n",
                "telemetry.otlp_endpoint",
                "line 2",
            ),
            (
                "[telemetry]\notlp_endpoint = 4318\n",
                "otlp_endpoint",
                "line 2",
            ),
            (
                "[telemetry]\nservice_name = \" \"\n",
                "telemetry.service_name",
                "line 2",
            ),
        ] {
            let e = parse(&format!("{text}{MINIMAL}")).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(line), "{text}: {e}");
        }
    }
}
