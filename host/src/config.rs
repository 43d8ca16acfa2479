//! Configuration: the operator's TOML file turned into a validated [`Config`] in one step.
//!
//! Parsing is strict: an unknown key, a value of the wrong type or a reference to something that
//! does not exist is an error that names the file, the key and the line. Relative paths are
//! relative to the config file, so a config works from any working directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use toml::Spanned;

use crate::routing::{BackendId, Route, RouteMatch, RouteTable, RouteTableError};

/// The default listen address: loopback only, so nothing is exposed until the operator says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub source: PathBuf,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// Where the state store lives.
    pub state_dir: PathBuf,
    /// Where compiled plugins are cached (default: `compiled` under the state directory).
    pub cache_dir: PathBuf,
    /// The largest request body the API accepts.
    pub max_body_size: usize,
    /// The backends, by name.
    pub backends: BTreeMap<BackendId, BackendConfig>,
    /// The provision routes, checked against the backends.
    pub routes: RouteTable,
    /// What discovery does when a backend fails.
    pub discovery: DiscoveryPolicy,
    /// Where the admin API listens; `None`: nowhere.
    pub admin_listen: Option<SocketAddr>,
    /// How the gateway picks up changes.
    pub reload: ReloadSettings,
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

/// One configured use of a plugin.
#[derive(Clone)]
pub struct BackendConfig {
    /// The backend's name, used in routes, logs, errors and as its state namespace.
    pub name: BackendId,
    /// The plugin component file.
    pub plugin: PathBuf,
    /// The settings given to the plugin through `wasi:config/store`: strings as they are,
    /// every other value as JSON, secret references resolved.
    pub settings: Vec<(String, String)>,
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
            .field("plugin", &self.plugin)
            .field(
                "settings",
                &self.settings.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("limits", &self.limits)
            .field("grants", &self.grants)
            .finish()
    }
}

/// Capabilities a backend is granted beyond its sandbox; none by default.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Outbound HTTP through `wasi:http`, to these destinations only.
    pub http: Option<std::sync::Arc<crate::capability::http::Allowlist>>,
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            timeout: Duration::from_secs(10),
            concurrency: 16,
            queue: 64,
            max_response: 4 << 20,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
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
    listen: Option<SocketAddr>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<SocketAddr>,
    max_body_size: Option<ByteSize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    plugin: PathBuf,
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<Spanned<ByteSize>>,
    #[serde(default, with = "humantime_serde::option")]
    timeout: Option<Duration>,
    concurrency: Option<Spanned<usize>>,
    queue: Option<usize>,
    max_response: Option<Spanned<ByteSize>>,
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
    /// The settings that take effect only at start, which differ between `self` (running) and
    /// `next`: a reload applies everything else and reports these.
    pub fn restart_only_changes(&self, next: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.state_dir != next.state_dir {
            changed.push("state.dir");
        }
        if self.cache_dir != next.cache_dir {
            changed.push("state.cache_dir");
        }
        if self.max_body_size != next.max_body_size {
            changed.push("server.max_body_size");
        }
        if self.admin_listen != next.admin_listen {
            changed.push("admin.listen");
        }
        if self.reload != next.reload {
            changed.push("reload");
        }
        changed
    }

    /// Read and validate the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Validate `text` as the content of the config file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid =
            |span: std::ops::Range<usize>, key: String, message: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: line_of(text, span.start),
                key,
                message,
            };
        let base = path.parent().unwrap_or(Path::new("."));

        let mut backends = BTreeMap::new();
        for (name, raw_backend) in raw.backends {
            let span = raw_backend.span();
            let raw_backend = raw_backend.into_inner();
            let id = BackendId::new(&name).map_err(|message| {
                invalid(
                    span.clone(),
                    format!("backends.{name}"),
                    message.to_string(),
                )
            })?;
            let limits = validate_limits(raw_backend.limits, &name, &invalid)?;
            let mut settings = Vec::new();
            let mut secrets = Vec::new();
            for (key, value) in raw_backend.settings {
                let span = value.span();
                let value = match value.into_inner() {
                    toml::Value::String(s) => s,
                    toml::Value::Table(table) if is_secret_reference(&table) => {
                        let secret = resolve_secret(&table, base).map_err(|message| {
                            invalid(span, format!("backends.{name}.settings.{key}"), message)
                        })?;
                        secrets.push(secret.clone());
                        secret
                    }
                    other => {
                        serde_json::to_string(&other).expect("a TOML value always encodes as JSON")
                    }
                };
                settings.push((key, value));
            }
            let grants = Grants {
                http: match raw_backend.grants.http {
                    None => None,
                    Some(patterns) => {
                        let span = patterns.span();
                        Some(std::sync::Arc::new(
                            crate::capability::http::Allowlist::parse(patterns.get_ref()).map_err(
                                |message| {
                                    invalid(span, format!("backends.{name}.grants.http"), message)
                                },
                            )?,
                        ))
                    }
                },
            };
            backends.insert(
                id.clone(),
                BackendConfig {
                    name: id,
                    plugin: base.join(raw_backend.plugin),
                    settings,
                    secrets,
                    limits,
                    grants,
                },
            );
        }

        let mut routes = Vec::new();
        let mut route_lines = Vec::new();
        for (index, raw_route) in raw.routes.into_iter().enumerate() {
            route_lines.push(line_of(text, raw_route.span().start));
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
                    invalid(
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
                Some(pattern) => {
                    let pattern_span = pattern.span();
                    Some(
                        crate::routing::ClusterPattern::new(pattern.get_ref())
                            .map_err(|e| invalid(pattern_span, format!("{key}.cluster_id"), e))?,
                    )
                }
            };
            let name = raw_route.name.unwrap_or_else(|| key.clone());
            routes.push(Route {
                name,
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

        let listen = raw.server.listen.unwrap_or_else(|| {
            DEFAULT_LISTEN
                .parse()
                .expect("the default address is valid")
        });
        let max_body_size = raw
            .server
            .max_body_size
            .map(|size| size.as_u64() as usize)
            .unwrap_or(1 << 20);
        let state_dir = base.join(raw.state.dir.unwrap_or_else(|| PathBuf::from("state")));
        let cache_dir = match raw.state.cache_dir {
            Some(dir) => base.join(dir),
            None => state_dir.join("compiled"),
        };
        Ok(Config {
            source: path.to_path_buf(),
            listen,
            state_dir,
            cache_dir,
            max_body_size,
            backends,
            discovery: raw.discovery.on_backend_failure,
            admin_listen: raw.admin.listen,
            reload: ReloadSettings {
                watch: raw.reload.watch.unwrap_or(true),
                debounce: raw
                    .reload
                    .debounce
                    .unwrap_or(ReloadSettings::default().debounce),
            },
            routes: RouteTable::new(routes).map_err(|e| {
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
                    path: path.to_path_buf(),
                    line: route_lines[later],
                    key: format!("routes[{later}]"),
                    message,
                }
            })?,
        })
    }
}

fn validate_limits(
    raw: RawLimits,
    backend: &str,
    invalid: &impl Fn(std::ops::Range<usize>, String, String) -> ConfigError,
) -> Result<Limits, ConfigError> {
    let mut limits = Limits::default();
    if let Some(memory) = raw.memory {
        let bytes = memory.get_ref().as_u64();
        // A component needs at least one 64 KiB page; past 4 GiB a 32-bit memory cannot grow.
        if !(64 << 10..=4 << 30).contains(&bytes) {
            return Err(invalid(
                memory.span(),
                format!("backends.{backend}.limits.memory"),
                "must be between 64KiB and 4GiB".to_string(),
            ));
        }
        limits.memory = bytes as usize;
    }
    if let Some(timeout) = raw.timeout {
        limits.timeout = timeout;
    }
    if let Some(concurrency) = raw.concurrency {
        if *concurrency.get_ref() == 0 {
            return Err(invalid(
                concurrency.span(),
                format!("backends.{backend}.limits.concurrency"),
                "must be at least 1".to_string(),
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
            return Err(invalid(
                max_response.span(),
                format!("backends.{backend}.limits.max_response"),
                "must be more than 0".to_string(),
            ));
        }
        limits.max_response = bytes as usize;
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
        let get = |k: &str| settings.iter().find(|(key, _)| key == k).unwrap().1.clone();
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
                .find(|(key, _)| key == k)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(get("key"), "s3cr3t-env");
        assert_eq!(get("file"), "s3cr3t-file");
        // Two keys: an ordinary table, not a secret reference.
        assert_eq!(get("other"), r#"{"extra":1,"from_env":"X"}"#);
        assert_eq!(backend.secrets, vec!["s3cr3t-file", "s3cr3t-env"]);
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
    fn bad_cluster_glob_is_refused() {
        let err = parse(
            "[backends.pool]\nplugin = \"p.wasm\"\n[[routes]]\nbackend = \"pool\"\ncluster_id = \"prod-[\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("routes[0].cluster_id"), "{err}");
        assert!(err.contains("line 5"), "{err}");
    }
}
