//! Configuration: the operator's TOML file turned into a validated [`Config`] in one step.
//!
//! Parsing is strict: an unknown key, a value of the wrong type or a reference to something that
//! does not exist is an error that names the file, the key and the line. Relative paths are
//! relative to the config file, so a config works from any working directory.
//!
//! This module reads the file and assembles the sections; each section is parsed by the module
//! that owns it: `[server]` and `[admin]` by [`crate::server::config`], `[state]` by
//! [`crate::state::config`], `[backends.*]` and `[runtime]` by [`crate::runtime::config`] (with
//! settings and grants from `capability`, limits from [`crate::runtime::limits`]), `[[routes]]`
//! by [`crate::routing`], `[telemetry]` by [`crate::telemetry`]. What they share (errors naming
//! the key and line, secret references) is [`crate::config_file`]. `[discovery]` and `[reload]`
//! are read here: their owners (`gateway`, `reload`) hold a whole [`Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::model::BackendId;
use crate::routing::{RawRoute, RouteTable};
use crate::runtime::config::{RawBackend, RawRuntime};
use crate::server::config::{RawAdmin, RawServer};
use crate::server::{ConnectionLimits, TlsFiles};
use crate::state::config::RawState;
use crate::telemetry::{RawTelemetry, TelemetrySettings};

// Each type where it is owned, named here too so that `config::X` keeps working.
pub use crate::capability::settings::Setting;
pub use crate::config_file::{ConfigError, Secret};
pub use crate::runtime::config::{BackendConfig, DEFAULT_MAX_PLUGIN_SIZE};
pub use crate::runtime::limits::Limits;
pub use crate::server::config::DEFAULT_LISTEN;
pub use crate::state::config::{DEFAULT_CACHE_MAX, StoreConfig};

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
    record: Option<crate::recording::RawRecord>,
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

    /// Validate `text` as the content of the config file at `path`: each section by its owner.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| crate::config_file::parse_error(path, text, &e))?;
        let source = crate::config_file::Source::new(path, text);
        let server = crate::server::config::parse_server(raw.server, &source)?;
        let admin = crate::server::config::parse_admin(raw.admin, &source)?;
        let state = crate::state::config::parse(raw.state, &source)?;
        let backends = crate::runtime::config::parse_backends(raw.backends, raw.record, &source)?;
        let defined: Vec<BackendId> = backends.keys().cloned().collect();
        let routes = crate::routing::parse_routes(raw.routes, &defined, &source)?;
        let telemetry = crate::telemetry::parse_section(raw.telemetry, &source)?;
        let max_plugin_size = crate::runtime::config::parse_runtime(raw.runtime, &source)?;
        Ok(Config {
            source: path.to_path_buf(),
            listen: server.listen,
            listen_overridden: false,
            state_dir: state.dir,
            cache_dir: state.cache_dir,
            cache_max: state.cache_max,
            max_plugin_size,
            store: state.store,
            max_body_size: server.max_body_size,
            connections: server.connections,
            backends,
            routes,
            discovery: raw.discovery.on_backend_failure,
            admin_listen: admin.listen,
            admin_token: admin.token,
            admin_tls: admin.tls,
            plan_ttl: admin.plan_ttl,
            tls: server.tls,
            reload: ReloadSettings {
                watch: raw.reload.watch.unwrap_or(true),
                debounce: raw
                    .reload
                    .debounce
                    .unwrap_or(ReloadSettings::default().debounce),
            },
            included_files: source.included(),
            telemetry,
        })
    }
}

#[cfg(test)]
mod tests;
