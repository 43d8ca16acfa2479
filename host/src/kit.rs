//! The conformance kit: one plugin in the real runtime, without a gateway to configure.
//!
//! A plugin author's question is "does my provider do what the gateway and Replicante Core
//! expect?", and the answer should not need a config, routes and a server. [`Plugin::open`]
//! loads a component as a backend would be loaded (same compile, same probe, same limits and
//! grants, an embedded state store of its own); [`Plugin::call`] runs one operation
//! (`platform-gateway call`), and [`scenario`] plays the scripted lifecycle that
//! `platform-gateway test-plugin` reports check by check.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::config::Config;
use crate::convert::{check_discovery, check_provision};
use crate::metrics::Metrics;
use crate::model::{self, ProviderError};
use crate::runtime::{Backend, CallError, Runtime};

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
        backend.insert("settings".into(), settings.into());
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
        let cache = match (&options.cache, &options.state) {
            (Some(dir), _) => Some(dir.clone()),
            (None, Some(_)) => Some(config.cache_dir.clone()),
            (None, None) => None,
        };
        if let Some(dir) = &cache {
            std::fs::create_dir_all(dir).with_context(|| format!("cache {}", dir.display()))?;
        }
        let runtime = Runtime::new(cache, u64::MAX, backend_config.limits.concurrency)?;
        let max_size = config.max_plugin_size;
        let prepared = {
            let (runtime_ref, backend_ref) = (&runtime, &backend_config);
            tokio::task::block_in_place(|| runtime_ref.prepare(backend_ref, max_size))?
        };
        let backend = Backend::new(
            &backend_config,
            prepared,
            runtime.engine(),
            Some(store),
            &Arc::new(Metrics::default()),
        );
        tokio::task::block_in_place(|| backend.probe()).map_err(anyhow::Error::msg)?;
        Ok(Plugin {
            backend: Arc::new(backend),
            _runtime: runtime,
            _temp: temp,
        })
    }

    /// Run `operation` with `request` (JSON: see [`provision_request`] and
    /// [`deprovision_request`]); the answer as JSON, or the plugin's error as
    /// `{"error": {"case", "message"}}`.
    pub async fn call(&self, operation: &str, request: &Value) -> anyhow::Result<(bool, Value)> {
        let answer = match operation {
            "discover" => self.backend.discover().await.map(|c| clusters_json(&c)),
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

fn clusters_json(clusters: &[model::Cluster]) -> Value {
    let clusters: Vec<Value> = clusters
        .iter()
        .map(|c| {
            let nodes: Vec<Value> = c
                .nodes
                .iter()
                .map(|n| {
                    json!({
                        "node_id": n.node_id,
                        "agent_address": n.agent_address,
                        "node_class": n.node_class,
                        "node_group": n.node_group,
                    })
                })
                .collect();
            json!({ "cluster_id": c.cluster_id, "nodes": nodes })
        })
        .collect();
    json!({ "clusters": clusters })
}

fn error_json(error: &CallError) -> Value {
    match error {
        CallError::Plugin(e) => {
            let mut error = json!({ "case": e.case(), "message": e.message() });
            if let ProviderError::Unavailable {
                retry_after: Some(seconds),
                ..
            } = e
            {
                error["retry_after_seconds"] = json!(seconds);
            }
            error
        }
        other => json!({ "case": other.outcome(), "message": other.to_string() }),
    }
}

fn text(request: &Value, key: &str, default: &str) -> anyhow::Result<String> {
    match &request[key] {
        Value::Null => Ok(default.to_string()),
        Value::String(s) => Ok(s.clone()),
        other => bail!("`{key}` must be a string, not {other}"),
    }
}

fn number(request: &Value, key: &str, default: u32) -> anyhow::Result<u32> {
    match &request[key] {
        Value::Null => Ok(default),
        other => other
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .with_context(|| format!("`{key}` must be a whole number, not {other}")),
    }
}

/// A provision request from JSON: `request_id` (default: a new one, as the gateway makes for a
/// request without an `Idempotency-Key`), `cluster_id`
/// (default `conformance`), `store` (`mongodb`),
/// `store_version` (`1.0`), `node_group` (`data`), `node_class` (empty), `count` (1),
/// `desired_count` (the count), `attributes` (an object, `{}`).
pub fn provision_request(request: &Value) -> anyhow::Result<model::ProvisionRequest> {
    let count = number(request, "count", 1)?;
    let attributes = match &request["attributes"] {
        Value::Null => "{}".to_string(),
        value @ Value::Object(_) => value.to_string(),
        other => bail!("`attributes` must be an object, not {other}"),
    };
    Ok(model::ProvisionRequest {
        request_id: text(request, "request_id", &format!("call-{}", random_hex()))?,
        cluster_id: text(request, "cluster_id", "conformance")?,
        store: text(request, "store", "mongodb")?,
        store_version: text(request, "store_version", "1.0")?,
        node_group: text(request, "node_group", "data")?,
        node_class: text(request, "node_class", "")?,
        desired_count: number(request, "desired_count", count)?,
        count,
        attributes,
    })
}

/// A deprovision request from JSON: `cluster_id` (default `conformance`) and `node_id`.
pub fn deprovision_request(request: &Value) -> anyhow::Result<model::DeprovisionRequest> {
    Ok(model::DeprovisionRequest {
        cluster_id: text(request, "cluster_id", "conformance")?,
        node_id: text(request, "node_id", "")?,
    })
}

/// 16 random hex digits.
fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How one check of the scenario ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It held.
    Pass,
    /// It did not, and why.
    Fail(String),
    /// It could not be run, and why (a plugin that does not provision, or names no nodes).
    Skip(String),
}

/// One check and how it ended.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
}

/// What the scenario asks the plugin for.
#[derive(Debug, Clone)]
pub struct Script {
    /// The store of the provision requests.
    pub store: String,
    /// Their node group.
    pub node_group: String,
    /// Their node class (one the plugin's settings offer).
    pub node_class: String,
    /// How many provisions race in the concurrency check.
    pub concurrent: usize,
    /// The plugin provisions: a provision it refuses as invalid fails the check instead of
    /// skipping the lifecycle (a backend that only reports clusters refuses every one).
    pub provisions: bool,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            store: "mongodb".into(),
            node_group: "data".into(),
            node_class: String::new(),
            concurrent: 8,
            provisions: false,
        }
    }
}

/// Collects the checks as they end.
#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn record(&mut self, name: &'static str, outcome: Result<(), String>) -> bool {
        let passed = outcome.is_ok();
        let outcome = match outcome {
            Ok(()) => Outcome::Pass,
            Err(why) => Outcome::Fail(why),
        };
        self.0.push(Check { name, outcome });
        passed
    }

    fn skip(&mut self, names: &[&'static str], why: &str) {
        for name in names {
            self.0.push(Check {
                name,
                outcome: Outcome::Skip(why.to_string()),
            });
        }
    }
}

const DISCOVER: &str = "discover answers, and its answer is valid";
const PROVISION_ONE: &str = "provision without a count creates one node, with a valid answer";
const PROVISION_TWO: &str = "provision with count 2 creates 1 or 2 nodes, with a valid answer";
const DISCOVERED: &str = "discovery shows the new nodes with their group and class";
const DEPROVISION: &str = "deprovision removes each new node";
const GONE: &str = "discovery no longer shows them";
const UNKNOWN: &str = "deprovision of an unknown node answers not-found";
const OTHER_CLUSTER: &str = "deprovision of a node from another cluster answers not-found";
const RACE: &str = "concurrent provisions never hand out one node twice";

/// Play the scenario against `plugin`: every check, in order, whatever failed before (a check
/// that needs what an earlier one did not give is skipped, saying why).
pub async fn scenario(plugin: &Plugin, script: &Script) -> Vec<Check> {
    let backend = &plugin.backend;
    let mut checks = Checks::default();
    // Every request is a new one, in this run and across runs: a plugin may key idempotency on
    // the ID (EC2 keeps a ClientToken for hours), and must not merge them.
    let run = random_hex();
    let sent = std::sync::atomic::AtomicU32::new(0);
    let request = |cluster: &str, count: u32| model::ProvisionRequest {
        request_id: format!(
            "conformance-{run}-{}",
            sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
        cluster_id: cluster.to_string(),
        store: script.store.clone(),
        store_version: "1.0".into(),
        node_group: script.node_group.clone(),
        node_class: script.node_class.clone(),
        desired_count: count,
        count,
        attributes: "{}".into(),
    };
    let describe = |e: CallError| e.to_string();

    let before = backend.discover().await;
    checks.record(
        DISCOVER,
        before
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|c| check_discovery(c)),
    );

    // The lifecycle, in a cluster of its own.
    let cluster = "conformance-lifecycle";
    let mut created: Vec<String> = Vec::new();
    let mut ids_known = true;
    let one = request(cluster, 1);
    let answer = backend.provision(one.clone()).await;
    // A plugin that does not provision says `unsupported` (or, under contract 0.1, which has no
    // such case, `invalid-request`): its lifecycle is skipped, saying why, unless the operator
    // said it must provision (`--provisions`).
    let refusal = match &answer {
        Err(CallError::Plugin(
            refusal @ (ProviderError::Unsupported(_) | ProviderError::InvalidRequest(_)),
        )) if !script.provisions => Some(refusal.clone()),
        _ => None,
    };
    if let Some(refusal) = refusal {
        let why = format!(
            "the plugin does not provision ({}: {})",
            refusal.case(),
            refusal.message()
        );
        checks.skip(
            &[
                PROVISION_ONE,
                PROVISION_TWO,
                DISCOVERED,
                DEPROVISION,
                GONE,
                OTHER_CLUSTER,
                RACE,
            ],
            &why,
        );
        // Nor deprovision, then, when it answers the same.
        match unknown_node(backend).await {
            Err(CallError::Plugin(e)) if e.case() == refusal.case() => {
                checks.skip(&[UNKNOWN], &why)
            }
            answer => {
                checks.record(UNKNOWN, expect_not_found(answer));
            }
        }
        return checks.0;
    }
    let checked = answer.map_err(describe).and_then(|r| {
        check_provision(&one, &r)?;
        if r.count != 1 {
            return Err(format!("count {} for a request of 1", r.count));
        }
        match r.node_ids {
            Some(ids) => created.extend(ids),
            None => ids_known = false,
        }
        Ok(())
    });
    checks.record(PROVISION_ONE, checked);
    let two = request(cluster, 2);
    let checked = backend
        .provision(two.clone())
        .await
        .map_err(describe)
        .and_then(|r| {
            check_provision(&two, &r)?;
            match r.node_ids {
                Some(ids) => {
                    if let Some(again) = ids.iter().find(|id| created.contains(id)) {
                        return Err(format!("node `{again}` was handed out again"));
                    }
                    created.extend(ids);
                }
                None => ids_known = false,
            }
            Ok(())
        });
    checks.record(PROVISION_TWO, checked);

    if !ids_known || created.is_empty() {
        checks.skip(
            &[DISCOVERED, DEPROVISION, GONE, OTHER_CLUSTER],
            "the plugin named no node IDs in its provision answers",
        );
    } else {
        let found = backend.discover().await.map_err(describe).and_then(|c| {
            check_discovery(&c)?;
            let nodes: Vec<&model::Node> = c
                .iter()
                .filter(|c| c.cluster_id == cluster)
                .flat_map(|c| &c.nodes)
                .collect();
            for id in &created {
                let node = nodes
                    .iter()
                    .find(|n| &n.node_id == id)
                    .ok_or_else(|| format!("node `{id}` is not in cluster `{cluster}`"))?;
                if node.node_group.as_deref() != Some(script.node_group.as_str()) {
                    return Err(format!(
                        "node `{id}` has node_group {:?}, not `{}`",
                        node.node_group, script.node_group
                    ));
                }
                if node.node_class.as_deref() != Some(script.node_class.as_str()) {
                    return Err(format!(
                        "node `{id}` has node_class {:?}, not `{}`",
                        node.node_class, script.node_class
                    ));
                }
            }
            Ok(())
        });
        checks.record(DISCOVERED, found);

        let other = model::DeprovisionRequest {
            cluster_id: "conformance-other".into(),
            node_id: created[0].clone(),
        };
        checks.record(
            OTHER_CLUSTER,
            expect_not_found(backend.deprovision(other).await),
        );

        let mut removed = Ok(());
        for id in &created {
            let release = model::DeprovisionRequest {
                cluster_id: cluster.into(),
                node_id: id.clone(),
            };
            if let Err(e) = backend.deprovision(release).await {
                removed = Err(format!("node `{id}`: {e}"));
                break;
            }
        }
        let removed_ok = removed.is_ok();
        checks.record(DEPROVISION, removed);
        if removed_ok {
            let gone = backend.discover().await.map_err(describe).and_then(|c| {
                let left: Vec<&String> = c
                    .iter()
                    .flat_map(|c| &c.nodes)
                    .map(|n| &n.node_id)
                    .filter(|id| created.contains(id))
                    .collect();
                match left.is_empty() {
                    true => Ok(()),
                    false => Err(format!("still reported: {left:?}")),
                }
            });
            checks.record(GONE, gone);
        } else {
            checks.skip(&[GONE], "a deprovision failed");
        }
    }

    checks.record(UNKNOWN, expect_not_found(unknown_node(backend).await));

    // The race: provisions at once, each into its own cluster; no node ID twice.
    let racers = (0..script.concurrent).map(|i| {
        let backend = backend.clone();
        let one = request(&format!("conformance-race-{i}"), 1);
        async move { (one.cluster_id.clone(), backend.provision(one).await) }
    });
    let answers = futures::future::join_all(racers).await;
    let mut seen = HashSet::new();
    let mut outcome = Ok(());
    let mut named = 0;
    for (cluster, answer) in &answers {
        match answer {
            Ok(r) => {
                for id in r.node_ids.iter().flatten() {
                    named += 1;
                    if !seen.insert(id.clone()) && outcome.is_ok() {
                        outcome = Err(format!("node `{id}` was handed out twice"));
                    }
                }
            }
            // Running out is an answer; a crash is not.
            Err(CallError::Plugin(
                ProviderError::Unavailable { .. } | ProviderError::Conflict(_),
            )) => {}
            Err(e) if outcome.is_ok() => outcome = Err(format!("cluster `{cluster}`: {e}")),
            Err(_) => {}
        }
    }
    if named == 0 && outcome.is_ok() {
        checks.skip(&[RACE], "no provision of the race named its node");
    } else {
        checks.record(RACE, outcome);
    }
    // Leave nothing behind.
    for (cluster, answer) in answers {
        for id in answer.ok().and_then(|r| r.node_ids).into_iter().flatten() {
            let release = model::DeprovisionRequest {
                cluster_id: cluster.clone(),
                node_id: id,
            };
            let _ = backend.deprovision(release).await;
        }
    }
    checks.0
}

/// Deprovision a node nobody provisioned.
async fn unknown_node(backend: &Arc<Backend>) -> Result<(), CallError> {
    let unknown = model::DeprovisionRequest {
        cluster_id: "conformance-lifecycle".into(),
        node_id: "conformance-no-such-node".into(),
    };
    backend.deprovision(unknown).await
}

fn expect_not_found(answer: Result<(), CallError>) -> Result<(), String> {
    match answer {
        Err(CallError::Plugin(ProviderError::NotFound(_))) => Ok(()),
        Ok(()) => Err("answered success".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The report: a line per check and the closing count; whether every check passed or was
/// skipped.
pub fn report(checks: &[Check]) -> (String, bool) {
    let mut out = String::new();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for check in checks {
        match &check.outcome {
            Outcome::Pass => {
                passed += 1;
                out.push_str(&format!("PASS  {}\n", check.name));
            }
            Outcome::Fail(why) => {
                failed += 1;
                out.push_str(&format!("FAIL  {}: {why}\n", check.name));
            }
            Outcome::Skip(why) => {
                skipped += 1;
                out.push_str(&format!("SKIP  {}: {why}\n", check.name));
            }
        }
    }
    out.push_str(&format!(
        "{passed} passed, {failed} failed, {skipped} skipped\n"
    ));
    (out, failed == 0)
}
