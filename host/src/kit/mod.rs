//! The conformance kit: one plugin in the real runtime, without a gateway to configure.
//!
//! A plugin author's question is "does my provider do what the gateway and Replicante Core
//! expect?", and the answer should not need a config, routes and a server. [`Plugin::open`]
//! loads a component as a backend would be loaded (same compile, same probe, same limits and
//! grants, an embedded state store of its own); [`Plugin::call`] runs one operation
//! (`platform-gateway call`), and [`scenario`] plays the scripted lifecycle that
//! `platform-gateway test-plugin` reports check by check.
//!
//! Inside: `requests` reads the JSON of `call`; `scenario` plays the checks, through `run` (the
//! scenario's requests and what they took) and `checks` (the checks of several steps), with
//! `interleave` holding a write for the deterministic race; `report` prints the outcome.

mod checks;
mod interleave;
mod report;
mod requests;
mod run;
mod scenario;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub use report::{Check, Outcome, report};
pub use requests::{deprovision_request, provision_request};
pub use run::Script;
pub use scenario::scenario;

use crate::config::Config;
use crate::contract::Contract;
use crate::gateway::load_backend;
use crate::runtime::{Backend, LoadError, Runtime};
use crate::state::StateStore;
use interleave::Interleave;
use requests::{clusters_json, error_json};

/// How to load the plugin under test.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The component file.
    pub plugin: PathBuf,
    /// A TOML file whose top-level keys are the backend's settings.
    pub settings: Option<PathBuf>,
    /// `limits.memory`, as in a backend table (`64MiB`).
    pub memory: Option<String>,
    /// `limits.timeout` (`5s`).
    pub timeout: Option<String>,
    /// `grants.http` entries.
    pub http: Vec<String>,
    /// Where its state lives; a temporary folder (removed at the end) if none.
    pub state: Option<PathBuf>,
    /// A compiled-plugin cache folder; with none, `state`'s `cache` folder when a state folder
    /// is given, else no cache.
    pub cache: Option<PathBuf>,
}

/// A plugin loaded as a backend named `plugin`, with its state store.
pub struct Plugin {
    backend: Arc<Backend>,
    interleave: Arc<Interleave>,
    settings: toml::Table,
    _runtime: Runtime,
    _temp: Option<tempfile::TempDir>,
}

impl Plugin {
    /// Load the plugin as `serve` would load a backend: compile, check it against the world,
    /// start it once within its limits.
    pub async fn open(options: &Options) -> anyhow::Result<Plugin> {
        let plugin = std::fs::canonicalize(&options.plugin)
            .with_context(|| format!("plugin {}", options.plugin.display()))?;
        let settings: toml::Table = match &options.settings {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        let (state_dir, temp) = match &options.state {
            Some(dir) => (std::path::absolute(dir)?, None),
            None => {
                let temp = tempfile::tempdir().context("a temporary state folder")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };

        // The backend table an operator would write, read by the gateway's own config parser
        // (settings with secret references, limits, grants: the same checks and messages).
        let mut backend = toml::Table::new();
        backend.insert("plugin".into(), plugin.display().to_string().into());
        backend.insert("settings".into(), settings.clone().into());
        let mut limits = toml::Table::new();
        if let Some(memory) = &options.memory {
            limits.insert("memory".into(), memory.clone().into());
        }
        if let Some(timeout) = &options.timeout {
            limits.insert("timeout".into(), timeout.clone().into());
        }
        if !limits.is_empty() {
            backend.insert("limits".into(), limits.into());
        }
        if !options.http.is_empty() {
            let mut grants = toml::Table::new();
            grants.insert("http".into(), options.http.clone().into());
            backend.insert("grants".into(), grants.into());
        }
        let config = json!({
            "state": { "dir": state_dir.join("state"), "cache_dir": state_dir.join("cache") },
            "backends": { "plugin": backend },
            "routes": [{ "backend": "plugin" }],
        });
        let text = toml::to_string(&config)?;
        // Relative paths in the settings (a secret's `from_file`) are the settings file's.
        let base = options
            .settings
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let config = Config::parse(&base.join("test-plugin.toml"), &text)?;
        let backend_config = config
            .backends
            .values()
            .next()
            .context("no backend")?
            .clone();

        let store = crate::state::open(&config.store, &config.state_dir).await?;
        let interleave = Arc::new(Interleave::new(store));
        let cache = match (&options.cache, &options.state) {
            (Some(dir), _) => Some(dir.clone()),
            (None, Some(_)) => Some(config.cache_dir.clone()),
            (None, None) => None,
        };
        if let Some(dir) = &cache {
            std::fs::create_dir_all(dir).with_context(|| format!("cache {}", dir.display()))?;
        }
        let runtime = Runtime::new(cache, u64::MAX, backend_config.limits.concurrency)?;
        let state = interleave.clone() as Arc<dyn StateStore>;
        let backend = tokio::task::block_in_place(|| {
            load_backend(
                &runtime,
                &backend_config,
                config.max_plugin_size,
                Some(state),
            )
        })
        .map_err(|e| match e {
            // The plugin's own words: there is one backend, and the kit names no config.
            LoadError::Start { message, .. } => anyhow::Error::msg(message),
            other => anyhow::anyhow!("{}", kit_spelling(&other.to_string())),
        })?;
        Ok(Plugin {
            backend: Arc::new(backend),
            interleave,
            settings,
            _runtime: runtime,
            _temp: temp,
        })
    }

    /// The contract version the plugin implements.
    pub fn contract(&self) -> Contract {
        self.backend.contract()
    }

    /// Every node class its settings name: the string values of `node_class` keys, at any
    /// depth (`machines = [{ ..., node_class = "small" }]`), in order.
    pub fn node_classes(&self) -> Vec<String> {
        fn walk(value: &toml::Value, key: Option<&str>, found: &mut BTreeSet<String>) {
            match value {
                toml::Value::String(s) if key == Some("node_class") => {
                    found.insert(s.clone());
                }
                toml::Value::Table(table) => {
                    for (key, value) in table {
                        walk(value, Some(key), found);
                    }
                }
                toml::Value::Array(items) => {
                    for item in items {
                        walk(item, None, found);
                    }
                }
                _ => {}
            }
        }
        let mut found = BTreeSet::new();
        walk(&toml::Value::Table(self.settings.clone()), None, &mut found);
        found.into_iter().collect()
    }

    /// Run `operation` with `request` (JSON: see [`provision_request`] and
    /// [`deprovision_request`]); the answer as JSON, or the plugin's error as
    /// `{"error": {"case", "message"}}`.
    pub async fn call(&self, operation: &str, request: &Value) -> anyhow::Result<(bool, Value)> {
        let answer = match operation {
            "discover" => self.backend.discover().await.map(clusters_json),
            "provision" => self
                .backend
                .provision(provision_request(request)?)
                .await
                .map(|r| json!({ "count": r.count, "node_ids": r.node_ids })),
            "deprovision" => self
                .backend
                .deprovision(deprovision_request(request)?)
                .await
                .map(|()| json!({})),
            other => bail!("unknown operation `{other}`: discover, provision or deprovision"),
        };
        Ok(match answer {
            Ok(value) => (true, value),
            Err(error) => (false, json!({ "error": error_json(&error) })),
        })
    }
}

/// The gateway's load errors name the config's keys; here the flags say the same.
fn kit_spelling(message: &str) -> String {
    message.replace(
        "the backend has no `grants.http`: grant the addresses it may call, e.g. `grants = { \
         http = [\"https://api.example.com\"] }`",
        "no --grant-http was given: grant the addresses it may call, e.g. `--grant-http \
         https://api.example.com`",
    )
}
