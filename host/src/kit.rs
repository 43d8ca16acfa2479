//! The conformance kit: one plugin in the real runtime, without a gateway to configure.
//!
//! A plugin author's question is "does my provider do what the gateway and Replicante Core
//! expect?", and the answer should not need a config, routes and a server. [`Plugin::open`]
//! loads a component as a backend would be loaded (same compile, same probe, same limits and
//! grants, an embedded state store of its own); [`Plugin::call`] runs one operation
//! (`platform-gateway call`), and [`scenario`] plays the scripted lifecycle that
//! `platform-gateway test-plugin` reports check by check.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::capability::call::{CallContext, Mode, Transcript};
use crate::config::Config;
use crate::convert::{check_discovery, check_provision};
use crate::metrics::Metrics;
use crate::model::{self, ProviderError};
use crate::runtime::{Backend, CallError, Contract, Runtime};
use crate::state::{Ownership, StateError, StateStore};

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
        let max_size = config.max_plugin_size;
        let prepared = {
            let (runtime_ref, backend_ref) = (&runtime, &backend_config);
            tokio::task::block_in_place(|| runtime_ref.prepare(backend_ref, max_size))
                .map_err(|e| anyhow::anyhow!("{}", kit_spelling(&e.to_string())))?
        };
        let backend = Backend::new(
            &backend_config,
            prepared,
            runtime.engine(),
            Some(interleave.clone() as Arc<dyn StateStore>),
            &Arc::new(Metrics::default()),
        );
        tokio::task::block_in_place(|| backend.probe()).map_err(anyhow::Error::msg)?;
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

/// The gateway's load errors name the config's keys; here the flags say the same.
fn kit_spelling(message: &str) -> String {
    message.replace(
        "the backend has no `grants.http`: grant the addresses it may call, e.g. `grants = { \
         http = [\"https://api.example.com\"] }`",
        "no --grant-http was given: grant the addresses it may call, e.g. `--grant-http \
         https://api.example.com`",
    )
}

/// The plugin's state store, which can hold one call at its first write while the kit runs
/// another call to its end: the deterministic race of [`scenario`].
struct Interleave {
    inner: Arc<dyn StateStore>,
    /// Armed: told when a write arrives, and waited on before the write goes on.
    armed: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

impl Interleave {
    fn new(inner: Arc<dyn StateStore>) -> Interleave {
        Interleave {
            inner,
            armed: Mutex::new(None),
        }
    }

    /// Hold the next write: the first receiver hears when it arrives, and it goes on when the
    /// sender is used (or dropped).
    fn arm(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (paused_tx, paused_rx) = oneshot::channel();
        let (resume_tx, resume_rx) = oneshot::channel();
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some((paused_tx, resume_rx));
        (paused_rx, resume_tx)
    }

    fn disarm(&self) {
        self.armed.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Called before every write: the armed one waits (once) for the kit.
    async fn before_write(&self) {
        let armed = self.armed.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((paused, resume)) = armed
            && paused.send(()).is_ok()
        {
            let _ = resume.await;
        }
    }
}

#[async_trait]
impl StateStore for Interleave {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.inner.get(namespace, key).await
    }
    async fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StateError> {
        self.before_write().await;
        self.inner.set(namespace, key, value).await
    }
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), StateError> {
        self.before_write().await;
        self.inner.delete(namespace, key).await
    }
    async fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        self.before_write().await;
        self.inner
            .compare_and_swap(namespace, key, expected, new)
            .await
    }
    async fn list_keys(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        self.inner.list_keys(namespace, prefix, after, limit).await
    }
    async fn namespaces(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        self.inner.namespaces(after, limit).await
    }
    async fn owner(&self, cluster_id: &str, node_id: &str) -> Result<Option<String>, StateError> {
        self.inner.owner(cluster_id, node_id).await
    }
    async fn record_owners(&self, owners: &[Ownership]) -> Result<(), StateError> {
        self.inner.record_owners(owners).await
    }
    async fn forget_owner(&self, cluster_id: &str, node_id: &str) -> Result<(), StateError> {
        self.inner.forget_owner(cluster_id, node_id).await
    }
    async fn owners(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Ownership>, StateError> {
        self.inner.owners(after, limit).await
    }
    async fn check(&self) -> Result<(), StateError> {
        self.inner.check().await
    }
    fn describe(&self) -> String {
        self.inner.describe()
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
    /// Said after a failed provision, to help choose the node class (how it was chosen).
    pub class_hint: Option<String>,
    /// How many provisions race in the concurrency check.
    pub concurrent: usize,
    /// The plugin provisions: a provision it refuses fails the check. When false (the author
    /// said `--no-provision`), a plugin that answers `unsupported` (or `invalid-request` under
    /// contract 0.1, which has no `unsupported`) has its lifecycle skipped.
    pub provisions: bool,
    /// How many nodes the exhaustion check takes at most before it stops: a fixed inventory
    /// must be smaller to be exhausted; a cloud never runs out.
    pub max_nodes: u32,
    /// Skip the idempotency check: the plugin leaves it to an API that the test double it runs
    /// against does not implement (moto ignores EC2's `ClientToken`).
    pub skip_idempotency: bool,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            store: "mongodb".into(),
            node_group: "data".into(),
            node_class: String::new(),
            class_hint: None,
            concurrent: 8,
            provisions: true,
            max_nodes: 8,
            skip_idempotency: false,
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
const IDEMPOTENT: &str = "a provision repeated with its request ID gets the same nodes, taken once";
const EXHAUST: &str =
    "provisions until the inventory runs out answer the count they took, then unavailable";
const REUSE: &str =
    "a freed node is handed out again, and asking for more than is left gets what is left";
const INTERLEAVED: &str = "a provision that another takes a node from between its read and its write does not hand it out too";
const RACE: &str = "concurrent provisions never hand out one node twice";
const REFUSED: &str = "an answer the gateway refuses leaves no node allocated";
const PLANNED: &str =
    "in plan mode, a provision makes the same calls as for real up to its first write";

/// The contract's spelling of a call's failure (`invalid-request: ...`).
fn describe(error: &CallError) -> String {
    match error {
        CallError::Plugin(e) => format!("{}: {}", e.case(), e.message()),
        other => other.to_string(),
    }
}

/// Why a provision of the scenario did not give nodes.
enum Failed {
    /// The call failed.
    Call(CallError),
    /// The answer broke the contract, so the gateway would refuse it (502).
    Refused(String),
}

impl Failed {
    fn describe(&self) -> String {
        match self {
            Failed::Call(e) => describe(e),
            Failed::Refused(problem) => format!("the gateway refuses the answer: {problem}"),
        }
    }

    /// Running out is an answer; a crash or a broken answer is not.
    fn ran_out(&self) -> bool {
        matches!(
            self,
            Failed::Call(CallError::Plugin(
                ProviderError::Unavailable { .. } | ProviderError::Conflict(_)
            ))
        )
    }
}

/// What the kit holds in each cluster, by its accepted answers: the node IDs they named, and
/// how many nodes answers without IDs counted.
#[derive(Default)]
struct Held {
    ids: HashSet<String>,
    unnamed: u32,
}

/// The scenario's requests and what they took.
struct Run<'a> {
    backend: &'a Arc<Backend>,
    script: &'a Script,
    /// Every request is a new one, in this run and across runs: a plugin may key idempotency
    /// on the ID (EC2 keeps a ClientToken for hours), and must not merge them.
    run: String,
    sent: AtomicU32,
    held: Mutex<HashMap<String, Held>>,
    /// Nodes still allocated after the gateway's release of a refused answer.
    leaks: Mutex<Vec<String>>,
}

impl Run<'_> {
    fn request(&self, cluster: &str, count: u32) -> model::ProvisionRequest {
        model::ProvisionRequest {
            request_id: format!(
                "conformance-{}-{}",
                self.run,
                self.sent.fetch_add(1, Ordering::Relaxed)
            ),
            cluster_id: cluster.to_string(),
            store: self.script.store.clone(),
            store_version: "1.0".into(),
            node_group: self.script.node_group.clone(),
            node_class: self.script.node_class.clone(),
            desired_count: count,
            count,
            attributes: "{}".into(),
        }
    }

    /// Provision as the gateway does: an answer that breaks the contract is refused, and what
    /// it named is released ([`crate::gateway::release_refused`]); then whatever the refused
    /// call left allocated in the cluster is a leak.
    async fn provision(
        &self,
        request: &model::ProvisionRequest,
    ) -> Result<model::ProvisionResponse, Failed> {
        self.provision_in(request, CallContext::live()).await
    }

    /// [`Run::provision`], its call in `call`'s mode and transcript.
    async fn provision_in(
        &self,
        request: &model::ProvisionRequest,
        call: Arc<CallContext>,
    ) -> Result<model::ProvisionResponse, Failed> {
        let answer = self
            .backend
            .provision_in(request.clone(), call)
            .await
            .map_err(Failed::Call)?;
        if let Err(problem) = check_provision(request, &answer) {
            let released = crate::gateway::release_refused(self.backend, request, &answer).await;
            self.find_leaks(request, &problem, &released.describe())
                .await;
            return Err(Failed::Refused(problem));
        }
        self.hold(&request.cluster_id, &answer);
        Ok(answer)
    }

    fn hold(&self, cluster: &str, answer: &model::ProvisionResponse) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let held = held.entry(cluster.to_string()).or_default();
        match &answer.node_ids {
            Some(ids) => held.ids.extend(ids.iter().cloned()),
            None => held.unnamed += answer.count,
        }
    }

    async fn find_leaks(&self, request: &model::ProvisionRequest, problem: &str, released: &str) {
        let cluster = &request.cluster_id;
        let nodes = match self.backend.discover().await {
            Ok(clusters) => clusters
                .into_iter()
                .filter(|c| &c.cluster_id == cluster)
                .flat_map(|c| c.nodes)
                .map(|n| n.node_id)
                .collect::<Vec<_>>(),
            Err(e) => {
                self.leak(format!(
                    "after the refused answer to `{}` ({problem}), discovery failed: {}",
                    request.request_id,
                    describe(&e)
                ));
                return;
            }
        };
        let unknown: Vec<String> = {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let held = held.get(cluster);
            let unknown: Vec<String> = nodes
                .into_iter()
                .filter(|id| !held.is_some_and(|h| h.ids.contains(id)))
                .collect();
            let unnamed = held.map_or(0, |h| h.unnamed) as usize;
            if unknown.len() <= unnamed {
                return;
            }
            unknown
        };
        self.leak(format!(
            "the answer to a request of {} in cluster `{cluster}` was refused ({problem}) and \
             {released}, yet discovery still shows {} there: the plugin keeps nodes that no \
             client was told of",
            request.count,
            unknown.join(", ")
        ));
        // Give them back, so that the checks after this one start from a free inventory.
        for id in unknown {
            self.release(cluster, &id).await.ok();
        }
    }

    fn leak(&self, what: String) {
        self.leaks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }

    async fn release(&self, cluster: &str, id: &str) -> Result<(), CallError> {
        let request = model::DeprovisionRequest {
            cluster_id: cluster.to_string(),
            node_id: id.to_string(),
        };
        self.backend.deprovision(request).await?;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = held.get_mut(cluster) {
            held.ids.remove(id);
        }
        Ok(())
    }

    /// The nodes discovery shows in `cluster`.
    async fn nodes_in(&self, cluster: &str) -> Result<Vec<model::Node>, String> {
        let clusters = self.backend.discover().await.map_err(|e| describe(&e))?;
        check_discovery(&clusters)?;
        Ok(clusters
            .into_iter()
            .filter(|c| c.cluster_id == cluster)
            .flat_map(|c| c.nodes)
            .collect())
    }

    /// Release every node of `cluster`, the ones discovery shows and the ones the kit holds.
    async fn clear(&self, cluster: &str) {
        let mut ids: Vec<String> = self
            .nodes_in(cluster)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.node_id)
            .collect();
        if let Some(held) = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(cluster)
        {
            ids.extend(
                held.ids
                    .iter()
                    .filter(|id| !ids.contains(id))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        for id in ids {
            self.release(cluster, &id).await.ok();
        }
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(cluster);
    }
}

/// Play the scenario against `plugin`: every check, in order, whatever failed before (a check
/// that needs what an earlier one did not give is skipped, saying why).
pub async fn scenario(plugin: &Plugin, script: &Script) -> Vec<Check> {
    let backend = &plugin.backend;
    let mut checks = Checks::default();
    let kit = Run {
        backend,
        script,
        run: random_hex(),
        sent: AtomicU32::new(0),
        held: Mutex::default(),
        leaks: Mutex::default(),
    };

    let before = backend.discover().await;
    checks.record(
        DISCOVER,
        before
            .as_ref()
            .map_err(describe)
            .and_then(|c| check_discovery(c)),
    );

    // The lifecycle, in a cluster of its own.
    let cluster = "conformance-lifecycle";
    let mut created: Vec<String> = Vec::new();
    let mut ids_known = true;
    let one = kit.request(cluster, 1);
    // First in plan mode, then for real: a plan must show what the real call then does.
    let plan = CallContext::new(Mode::Plan, true);
    let planned = backend.provision_in(one.clone(), plan.clone()).await;
    let real = CallContext::new(Mode::Live, true);
    let answer = kit.provision_in(&one, real.clone()).await;
    // A plugin that does not provision says `unsupported` (or, under contract 0.1, which has no
    // such case, `invalid-request`). Only the author knows whether it should: with
    // `--no-provision` its lifecycle is skipped, saying why; without, the check fails, so that
    // a run that exercised nothing cannot pass.
    let refusal = match &answer {
        Err(Failed::Call(CallError::Plugin(refusal @ ProviderError::Unsupported(_)))) => {
            Some(refusal.clone())
        }
        Err(Failed::Call(CallError::Plugin(refusal @ ProviderError::InvalidRequest(_))))
            if plugin.contract() == Contract::V0_1 =>
        {
            Some(refusal.clone())
        }
        _ => None,
    };
    if let Some(refusal) = refusal.filter(|_| !script.provisions) {
        let why = format!(
            "the plugin does not provision ({}: {})",
            refusal.case(),
            refusal.message()
        );
        checks.skip(
            &[
                PROVISION_ONE,
                PLANNED,
                PROVISION_TWO,
                DISCOVERED,
                OTHER_CLUSTER,
                DEPROVISION,
                GONE,
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
        checks.skip(
            &[IDEMPOTENT, EXHAUST, REUSE, INTERLEAVED, RACE, REFUSED],
            &why,
        );
        return checks.0;
    }
    let as_planned = same_as_planned(
        (&planned, &plan.transcript()),
        (&answer, &real.transcript()),
    );
    let checked = answer
        .map_err(|e| match &e {
            Failed::Call(CallError::Plugin(
                ProviderError::Unsupported(_) | ProviderError::InvalidRequest(_),
            )) => {
                let mut why = e.describe();
                if let Some(hint) = &script.class_hint {
                    why.push_str(&format!(" ({hint})"));
                }
                if plugin.contract() == Contract::V0_1
                    || matches!(
                        e,
                        Failed::Call(CallError::Plugin(ProviderError::Unsupported(_)))
                    )
                {
                    why.push_str("; if the plugin does not provision, say so with --no-provision");
                }
                why
            }
            _ => e.describe(),
        })
        .and_then(|r| {
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
    checks.record(PLANNED, as_planned);
    let two = kit.request(cluster, 2);
    let checked = kit
        .provision(&two)
        .await
        .map_err(|e| e.describe())
        .and_then(|r| {
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
            &[DISCOVERED, OTHER_CLUSTER, DEPROVISION, GONE],
            "the plugin named no node IDs in its provision answers",
        );
    } else {
        let found = kit.nodes_in(cluster).await.and_then(|nodes| {
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
            if let Err(e) = kit.release(cluster, id).await {
                removed = Err(format!("node `{id}`: {}", describe(&e)));
                break;
            }
        }
        let removed_ok = removed.is_ok();
        checks.record(DEPROVISION, removed);
        if removed_ok {
            let gone = backend
                .discover()
                .await
                .map_err(|e| describe(&e))
                .and_then(|c| {
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
    kit.clear(cluster).await;

    checks.record(UNKNOWN, expect_not_found(unknown_node(backend).await));

    match plugin.contract() {
        Contract::V0_1 => checks.skip(&[IDEMPOTENT], "contract 0.1 has no request ID"),
        Contract::V0_2 if script.skip_idempotency => {
            checks.skip(&[IDEMPOTENT], "--skip-idempotency")
        }
        Contract::V0_2 => {
            let outcome = idempotent(&kit).await;
            checks.record(IDEMPOTENT, outcome);
        }
    }

    let exhausted = exhaust(&kit).await;
    match exhausted {
        Ok(exhausted) => {
            checks.record(EXHAUST, Ok(()));
            let outcome = reuse(&kit, exhausted).await;
            checks.record(REUSE, outcome);
        }
        Err(why) => {
            checks.record(EXHAUST, Err(why));
            checks.skip(&[REUSE], "the exhaustion check failed");
        }
    }
    kit.clear("conformance-inventory").await;

    match interleaved(plugin, &kit).await {
        Some(outcome) => {
            checks.record(INTERLEAVED, outcome);
        }
        None => checks.skip(&[INTERLEAVED], "neither provision named its node"),
    }

    // The race: provisions at once, each into its own cluster; no node ID twice.
    let racers = (0..script.concurrent).map(|i| {
        let kit = &kit;
        let one = kit.request(&format!("conformance-race-{i}"), 1);
        async move { (one.cluster_id.clone(), kit.provision(&one).await) }
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
            Err(e) if e.ran_out() => {}
            Err(e) if outcome.is_ok() => {
                outcome = Err(format!("cluster `{cluster}`: {}", e.describe()))
            }
            Err(_) => {}
        }
    }
    if named == 0 && outcome.is_ok() {
        checks.skip(&[RACE], "no provision of the race named its node");
    } else {
        checks.record(RACE, outcome);
    }
    // Leave nothing behind.
    for (cluster, _) in &answers {
        kit.clear(cluster).await;
    }

    // The first leak in full; the others would say the same.
    let leaks = std::mem::take(&mut *kit.leaks.lock().unwrap_or_else(|e| e.into_inner()));
    checks.record(
        REFUSED,
        match leaks.as_slice() {
            [] => Ok(()),
            [one] => Err(one.clone()),
            [first, rest @ ..] => Err(format!(
                "{first} (and {} more refused answers left nodes too)",
                rest.len()
            )),
        },
    );
    checks.0
}

/// The same request twice: the retry names the nodes of the first attempt, and discovery shows
/// them once.
/// Whether a provision did for real what it did in plan mode: the same writes and requests (by
/// key and URL; a value may hold a time) in the same order up to the first effect the plan
/// withheld, and, when the plan ran to its end, the same kind of answer.
fn same_as_planned(
    (planned, plan): (&Result<model::ProvisionResponse, CallError>, &Transcript),
    (answer, real): (&Result<model::ProvisionResponse, Failed>, &Transcript),
) -> Result<(), String> {
    let targets = |transcript: &Transcript| -> Vec<String> {
        let effects = transcript.effects();
        (effects.iter())
            .map(|e| e.split(" -> ").next().unwrap_or_default().to_string())
            .collect()
    };
    let (planned_effects, real_effects) = (targets(plan), targets(real));
    let stopped = plan.stopped_at.is_some();
    let prefix = real_effects.get(..planned_effects.len());
    let same_effects = if stopped {
        prefix == Some(&planned_effects[..])
    } else {
        real_effects == planned_effects
    };
    if !same_effects {
        return Err(format!(
            "in plan mode its effects were [{}]{}, for real [{}]",
            planned_effects.join(", "),
            if stopped { " (then it stopped)" } else { "" },
            real_effects.join(", ")
        ));
    }
    match (planned, answer) {
        _ if stopped => Ok(()),
        (Ok(planned), Ok(real)) if planned == real => Ok(()),
        (Err(_), Err(_)) => Ok(()),
        (planned, real) => Err(format!(
            "in plan mode it answered {}, for real {}",
            match planned {
                Ok(answer) => format!("{answer:?}"),
                Err(e) => describe(e),
            },
            match real {
                Ok(answer) => format!("{answer:?}"),
                Err(e) => e.describe(),
            }
        )),
    }
}

async fn idempotent(kit: &Run<'_>) -> Result<(), String> {
    let cluster = "conformance-idempotent";
    let request = kit.request(cluster, 1);
    let outcome = async {
        let first = kit
            .provision(&request)
            .await
            .map_err(|e| format!("the first attempt: {}", e.describe()))?;
        let again = kit
            .provision(&request)
            .await
            .map_err(|e| format!("the retry of `{}`: {}", request.request_id, e.describe()))?;
        let sorted = |ids: &Option<Vec<String>>| {
            ids.clone().map(|mut ids| {
                ids.sort();
                ids
            })
        };
        if again.count != first.count || sorted(&again.node_ids) != sorted(&first.node_ids) {
            return Err(format!(
                "the retry of `{}` got {}, the first attempt {}: key the allocation on the \
                 request ID",
                request.request_id,
                nodes(&again),
                nodes(&first)
            ));
        }
        let nodes = kit.nodes_in(cluster).await?;
        if nodes.len() as u32 != first.count {
            let ids: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
            return Err(format!(
                "after the retry discovery shows {} nodes in the cluster ({}) for one request \
                 of {}",
                nodes.len(),
                ids.join(", "),
                first.count
            ));
        }
        Ok(())
    }
    .await;
    kit.clear(cluster).await;
    outcome
}

/// An answer in words: `m1, m2`, or `2 nodes` when it named none.
fn nodes(answer: &model::ProvisionResponse) -> String {
    match &answer.node_ids {
        Some(ids) => ids.join(", "),
        None => format!("{} node(s), unnamed", answer.count),
    }
}

/// How the exhaustion check ended.
struct Exhausted {
    /// The plugin answered `unavailable` (not only reached `max_nodes`).
    ran_out: bool,
    /// The node IDs taken, when the answers named them.
    ids: Option<Vec<String>>,
}

/// Take nodes two at a time until the plugin runs out (or `max_nodes` are taken); every answer
/// must count what it took, as discovery then shows.
async fn exhaust(kit: &Run<'_>) -> Result<Exhausted, String> {
    let cluster = "conformance-inventory";
    let (mut counted, mut ids, mut named) = (0u32, Vec::new(), true);
    let mut ran_out = false;
    while counted < kit.script.max_nodes {
        let request = kit.request(cluster, 2);
        match kit.provision(&request).await {
            Ok(answer) => {
                counted += answer.count;
                match answer.node_ids {
                    Some(taken) => {
                        if let Some(again) = taken.iter().find(|id| ids.contains(*id)) {
                            return Err(format!("node `{again}` was handed out again"));
                        }
                        ids.extend(taken);
                    }
                    None => named = false,
                }
            }
            Err(e) if e.ran_out() => {
                ran_out = true;
                break;
            }
            Err(e) => {
                return Err(format!(
                    "with {counted} nodes taken, a request of 2: {}",
                    e.describe()
                ));
            }
        }
    }
    if counted == 0 {
        return Err(
            "the first request of 2 ran out at once: the kit needs at least 2 free \
                    nodes of the class"
                .into(),
        );
    }
    let nodes = kit.nodes_in(cluster).await?;
    if nodes.len() as u32 != counted {
        let shown: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
        return Err(format!(
            "the answers counted {counted} nodes, discovery shows {} ({})",
            nodes.len(),
            shown.join(", ")
        ));
    }
    Ok(Exhausted {
        ran_out,
        ids: named.then_some(ids),
    })
}

/// Free one node of the exhausted inventory and ask for 2: one (and, when the plugin had run
/// out, exactly one) must come back, and then nothing more.
async fn reuse(kit: &Run<'_>, exhausted: Exhausted) -> Result<(), String> {
    let cluster = "conformance-inventory";
    let Some(freed) = exhausted.ids.as_ref().and_then(|ids| ids.first()) else {
        return Err("the answers named no node IDs, so the kit cannot free one".into());
    };
    kit.release(cluster, freed)
        .await
        .map_err(|e| format!("freeing `{freed}`: {}", describe(&e)))?;
    let request = kit.request(cluster, 2);
    let answer = kit
        .provision(&request)
        .await
        .map_err(|e| format!("a request of 2 after freeing `{freed}`: {}", e.describe()))?;
    if exhausted.ran_out {
        if answer.count != 1 {
            return Err(format!(
                "a request of 2 with only `{freed}` free answered count {}: answer the count \
                 taken, not the count asked",
                answer.count
            ));
        }
        match kit.provision(&kit.request(cluster, 1)).await {
            Err(e) if e.ran_out() => {}
            Err(e) => return Err(format!("a request with nothing left: {}", e.describe())),
            Ok(more) => {
                return Err(format!("a request with nothing left got {}", nodes(&more)));
            }
        }
    }
    Ok(())
}

/// The deterministic race: provision A runs until its first state write, and is held there
/// while provision B runs to its end; then A goes on. A plugin that reads a node free and then
/// writes without compare-and-swap hands B's node out again, every time. `None` when neither
/// named a node.
async fn interleaved(plugin: &Plugin, kit: &Run<'_>) -> Option<Result<(), String>> {
    let (a, b) = (
        kit.request("conformance-interleaved-a", 1),
        kit.request("conformance-interleaved-b", 1),
    );
    let (paused, resume) = plugin.interleave.arm();
    let first = kit.provision(&a);
    tokio::pin!(first);
    let (first, second) = tokio::select! {
        first = &mut first => {
            // A wrote nothing: B after it.
            plugin.interleave.disarm();
            (first, kit.provision(&b).await)
        }
        _ = paused => {
            let second = kit.provision(&b).await;
            let _ = resume.send(());
            (first.await, second)
        }
    };
    let outcome = (|| {
        let mut named = Vec::new();
        for (name, answer) in [("A", &first), ("B", &second)] {
            match answer {
                Ok(r) => named.extend(r.node_ids.iter().flatten().map(|id| (name, id.clone()))),
                Err(e) if e.ran_out() => {}
                Err(e) => return Some(Err(format!("provision {name}: {}", e.describe()))),
            }
        }
        if named.is_empty() {
            return None;
        }
        let twice = named
            .iter()
            .find(|(name, id)| named.iter().any(|(other, i)| other != name && i == id));
        Some(match twice {
            Some((_, id)) => Err(format!(
                "node `{id}` was handed out to both: provision A read it free, B took it, and \
                 A's write took it again; allocate with compare-and-swap"
            )),
            None => Ok(()),
        })
    })();
    kit.clear(&a.cluster_id).await;
    kit.clear(&b.cluster_id).await;
    outcome
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
        Err(e) => Err(describe(&e)),
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
