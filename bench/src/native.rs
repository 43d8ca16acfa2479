//! The native baselines: the same providers compiled natively, or a plain handler, behind axum.
//!
//! It reads the gateway's own config file and answers the three endpoints the way the gateway
//! does: discovery merges every backend's clusters, a provision or deprovision goes to the first
//! backend that provisions. No routing, validation, limits or sandbox. Each [`Flavour`] is one
//! baseline: the providers' own code (the SDK's native build) with their state in memory or in
//! redb as the gateway keeps it, or a discovery written as plain axum code.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use platform_gateway_sdk::native::{Host, Store};
use platform_gateway_sdk::{Cluster, DeprovisionRequest, Error, Provider, ProvisionRequest};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Which native build answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Flavour {
    /// The providers' own code through the SDK's native build, state in memory.
    Sdk,
    /// The providers' own code, state in redb with the gateway's durability (each write its own
    /// fsynced commit) and an ownership record per provisioned node, as the gateway writes.
    SdkRedb,
    /// Discovery of `static` backends as a user would write it natively: one axum handler that
    /// parses each backend's settings (the JSON the plugin gets) per request and answers.
    Plain,
}

impl Flavour {
    /// The label of its line in the bench's table.
    pub fn label(self) -> &'static str {
        match self {
            Flavour::Sdk => "native, SDK code",
            Flavour::SdkRedb => "native, SDK code, redb",
            Flavour::Plain => "native, plain axum",
        }
    }

    /// What the label means, for the legend.
    pub fn legend(self) -> &'static str {
        match self {
            Flavour::Sdk => {
                "the same provider crates compiled natively (the SDK's native build), state in memory"
            }
            Flavour::SdkRedb => {
                "the same provider crates, state in redb (fsync per commit) plus the ownership record per node"
            }
            Flavour::Plain => {
                "what a user would write natively: an axum handler parsing the same settings per request"
            }
        }
    }
}

/// Plugin key-value data, as the gateway's embedded store keeps it: `(namespace, key) -> value`.
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
/// The ownership index, as the gateway's: `(cluster_id, node_id) -> backend namespace`.
const OWNERS: TableDefinition<(&str, &str), &str> = TableDefinition::new("owners");

/// One backend's state in the shared redb file. Every write is its own transaction, committed
/// with redb's default durability (fsynced before it returns).
struct RedbState {
    db: Arc<Database>,
    namespace: String,
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::unavailable(format!("state store: {e}"))
}

impl Store for RedbState {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(KV).map_err(storage)?;
        Ok(table
            .get((self.namespace.as_str(), key))
            .map_err(storage)?
            .map(|v| v.value().to_vec()))
    }

    fn swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        unconditional: bool,
    ) -> Result<bool, Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut table = txn.open_table(KV).map_err(storage)?;
            let k = (self.namespace.as_str(), key);
            if !unconditional {
                let current = table.get(k).map_err(storage)?.map(|v| v.value().to_vec());
                if current.as_deref() != expected {
                    return Ok(false);
                }
            }
            match new {
                Some(value) => table.insert(k, value).map(|_| ()),
                None => table.remove(k).map(|_| ()),
            }
            .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(true)
    }

    fn keys(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(KV).map_err(storage)?;
        let ns = self.namespace.as_str();
        let mut keys = Vec::new();
        for entry in table.range((ns, prefix)..).map_err(storage)? {
            let (k, _) = entry.map_err(storage)?;
            let (in_ns, key) = k.value();
            if in_ns != ns || !key.starts_with(prefix) || keys.len() == limit {
                break;
            }
            if start_after.is_none_or(|after| key > after) {
                keys.push(key.to_string());
            }
        }
        Ok(keys)
    }
}

/// The providers the baseline knows, by plugin file name.
#[derive(Clone, Copy)]
enum Kind {
    Pool,
    Static,
}

impl Kind {
    fn of(plugin: &str) -> anyhow::Result<Kind> {
        let stem = Path::new(plugin)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        match stem {
            "pool" => Ok(Kind::Pool),
            "static_clusters" => Ok(Kind::Static),
            other => bail!("the native baseline has no native build of plugin `{other}`"),
        }
    }

    fn discover(self) -> Result<Vec<Cluster>, Error> {
        match self {
            Kind::Pool => <pool::Pool as Provider>::discover(),
            Kind::Static => <static_clusters::Static as Provider>::discover(),
        }
    }

    fn provision(
        self,
        request: ProvisionRequest,
    ) -> Result<platform_gateway_sdk::ProvisionResponse, Error> {
        match self {
            Kind::Pool => <pool::Pool as Provider>::provision(request),
            Kind::Static => <static_clusters::Static as Provider>::provision(request),
        }
    }

    fn deprovision(self, request: DeprovisionRequest) -> Result<(), Error> {
        match self {
            Kind::Pool => <pool::Pool as Provider>::deprovision(request),
            Kind::Static => <static_clusters::Static as Provider>::deprovision(request),
        }
    }
}

struct Backend {
    name: String,
    kind: Kind,
    host: Arc<Host>,
    /// The settings as the plugin gets them, JSON text (for the plain handler to parse).
    settings: String,
}

/// What the handlers share.
struct Served {
    backends: Vec<Backend>,
    /// The redb file of [`Flavour::SdkRedb`], which also holds the ownership index.
    db: Option<Arc<Database>>,
}

type Backends = Arc<Served>;

/// Serve `config`'s backends natively on `listen`, as `flavour`, until killed. The redb file of
/// [`Flavour::SdkRedb`] goes in the config's `state` folder.
pub fn serve(config: &Path, listen: SocketAddr, flavour: Flavour) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let db = match flavour {
        Flavour::SdkRedb => {
            let dir = config.parent().unwrap_or(Path::new(".")).join("state");
            std::fs::create_dir_all(&dir)?;
            let db = Database::create(dir.join("native.redb"))?;
            let txn = db.begin_write()?;
            txn.open_table(KV)?;
            txn.open_table(OWNERS)?;
            txn.commit()?;
            Some(Arc::new(db))
        }
        Flavour::Sdk | Flavour::Plain => None,
    };
    let config: toml::Table = toml::from_str(&text)?;
    let mut backends = Vec::new();
    if let Some(toml::Value::Table(tables)) = config.get("backends") {
        for (name, backend) in tables {
            let plugin = backend
                .get("plugin")
                .and_then(toml::Value::as_str)
                .with_context(|| format!("backend `{name}` has no plugin"))?;
            let settings = backend
                .get("settings")
                .map(serde_json::to_value)
                .transpose()?
                .unwrap_or(Value::Null);
            let kind = Kind::of(plugin)?;
            if flavour == Flavour::Plain && !matches!(kind, Kind::Static) {
                bail!("the plain native baseline serves `static` backends only");
            }
            let text = settings.to_string();
            let host = match &db {
                Some(db) => Host::with_store(
                    settings,
                    RedbState {
                        db: db.clone(),
                        namespace: name.clone(),
                    },
                ),
                None => Host::with_settings(settings),
            };
            backends.push(Backend {
                name: name.clone(),
                kind,
                host,
                settings: text,
            });
        }
    }
    let app = Router::new().route(
        "/readyz",
        get(|| async { Json(json!({ "status": "ready" })) }),
    );
    let app = match flavour {
        Flavour::Sdk => app
            .route("/discover", get(discover))
            .route("/provision", post(provision))
            .route("/deprovision", post(deprovision)),
        Flavour::SdkRedb => app
            .route("/discover", get(discover))
            .route("/provision", post(provision_durable))
            .route("/deprovision", post(deprovision_durable)),
        Flavour::Plain => app.route("/discover", get(discover_plain)),
    }
    .with_state(Arc::new(Served { backends, db }));
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

fn error(error: Error) -> Response {
    let (status, message) = match error {
        Error::InvalidRequest(m) => (StatusCode::BAD_REQUEST, m),
        Error::NotFound(m) => (StatusCode::NOT_FOUND, m),
        Error::Conflict(m) => (StatusCode::CONFLICT, m),
        Error::Unsupported(m) => (StatusCode::NOT_IMPLEMENTED, m),
        Error::Unavailable(u) => (StatusCode::SERVICE_UNAVAILABLE, u.message),
        Error::Internal(m) => (StatusCode::BAD_GATEWAY, m),
    };
    (status, Json(json!({ "error": message }))).into_response()
}

async fn discover(State(served): State<Backends>) -> Response {
    let mut clusters = Vec::new();
    for backend in &served.backends {
        match backend.host.run(|| backend.kind.discover()) {
            Ok(found) => clusters.extend(found.into_iter().map(|cluster| {
                let nodes: Vec<Value> = cluster
                    .nodes
                    .into_iter()
                    .map(|node| {
                        json!({
                            "agent_address": node.agent_address,
                            "node_id": node.node_id,
                            "node_class": node.node_class.unwrap_or_default(),
                            "node_group": node.node_group,
                        })
                    })
                    .collect();
                json!({ "cluster_id": cluster.cluster_id, "nodes": nodes })
            })),
            Err(e) => return error(e),
        }
    }
    Json(json!({ "clusters": clusters })).into_response()
}

fn provisioner(backends: &[Backend]) -> Option<&Backend> {
    backends.iter().find(|b| matches!(b.kind, Kind::Pool))
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_string()
}

/// A `static` cluster as its settings list it, and as discovery answers it.
#[derive(Deserialize, Serialize)]
struct PlainCluster {
    cluster_id: String,
    #[serde(default)]
    nodes: Vec<PlainNode>,
}

#[derive(Deserialize, Serialize)]
struct PlainNode {
    agent_address: String,
    node_id: String,
    #[serde(default)]
    node_class: String,
    #[serde(default)]
    node_group: Option<String>,
}

#[derive(Deserialize)]
struct PlainSettings {
    #[serde(default)]
    clusters: Vec<PlainCluster>,
}

/// Discovery written natively: parse each backend's settings and answer their clusters.
async fn discover_plain(State(served): State<Backends>) -> Response {
    let mut clusters = Vec::new();
    for backend in &served.backends {
        match serde_json::from_str::<PlainSettings>(&backend.settings) {
            Ok(settings) => clusters.extend(settings.clusters),
            Err(e) => return error(Error::Internal(format!("settings: {e}"))),
        }
    }
    #[derive(Serialize)]
    struct Discovery {
        clusters: Vec<PlainCluster>,
    }
    Json(Discovery { clusters }).into_response()
}

fn provision_request(body: &Value) -> ProvisionRequest {
    let cluster = &body["cluster"];
    let group_id = text(&body["provision"], "node_group_id");
    let group = &cluster["nodes"][&group_id];
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    ProvisionRequest {
        request_id: format!(
            "r-{}",
            SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
        cluster_id: text(cluster, "cluster_id"),
        store: text(cluster, "store"),
        store_version: text(cluster, "store_version"),
        node_class: text(group, "node_class"),
        node_group: group_id,
        desired_count: group["desired_count"].as_u64().unwrap_or(1) as u32,
        count: body["provision"]["count"].as_u64().unwrap_or(1) as u32,
        attributes: cluster["attributes"].to_string(),
    }
}

fn provisioned(answer: platform_gateway_sdk::ProvisionResponse) -> Response {
    Json(json!({ "count": answer.count, "node_ids": answer.node_ids })).into_response()
}

fn deprovision_request(body: &Value) -> DeprovisionRequest {
    DeprovisionRequest {
        cluster_id: text(body, "cluster_id"),
        node_id: text(body, "node_id"),
    }
}

async fn provision(State(served): State<Backends>, Json(body): Json<Value>) -> Response {
    let Some(backend) = provisioner(&served.backends) else {
        return error(Error::unsupported("no backend provisions"));
    };
    let request = provision_request(&body);
    match backend.host.run(|| backend.kind.provision(request)) {
        Ok(answer) => provisioned(answer),
        Err(e) => error(e),
    }
}

async fn deprovision(State(served): State<Backends>, Json(body): Json<Value>) -> Response {
    let Some(backend) = provisioner(&served.backends) else {
        return error(Error::InvalidRequest("no backend deprovisions".into()));
    };
    let request = deprovision_request(&body);
    match backend.host.run(|| backend.kind.deprovision(request)) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(e),
    }
}

/// Run `f` on the blocking pool (redb's commits wait for the disk), with the redb file.
async fn blocking(
    served: Backends,
    f: impl FnOnce(&Served, &Database) -> Result<Response, Error> + Send + 'static,
) -> Response {
    let outcome = tokio::task::spawn_blocking(move || match &served.db {
        Some(db) => f(&served, db),
        None => Err(Error::Internal("no redb file".into())),
    })
    .await;
    match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => error(e),
        Err(e) => error(Error::Internal(format!("the blocking task failed: {e}"))),
    }
}

/// A provision whose state is durable: the provider's own writes, then one commit recording
/// the owner of each new node (as the gateway's index does).
async fn provision_durable(State(served): State<Backends>, Json(body): Json<Value>) -> Response {
    blocking(served, move |served, db| {
        let backend = provisioner(&served.backends)
            .ok_or_else(|| Error::unsupported("no backend provisions"))?;
        let request = provision_request(&body);
        let cluster_id = request.cluster_id.clone();
        let answer = backend.host.run(|| backend.kind.provision(request))?;
        let txn = db.begin_write().map_err(storage)?;
        {
            let mut owners = txn.open_table(OWNERS).map_err(storage)?;
            for id in answer.node_ids.iter().flatten() {
                owners
                    .insert((cluster_id.as_str(), id.as_str()), backend.name.as_str())
                    .map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        Ok(provisioned(answer))
    })
    .await
}

/// A deprovision whose state is durable: the owner looked up in the index, the provider's own
/// writes, then one commit forgetting the owner.
async fn deprovision_durable(State(served): State<Backends>, Json(body): Json<Value>) -> Response {
    blocking(served, move |served, db| {
        let request = deprovision_request(&body);
        let key = (request.cluster_id.as_str(), request.node_id.as_str());
        let owner = {
            let txn = db.begin_read().map_err(storage)?;
            let owners = txn.open_table(OWNERS).map_err(storage)?;
            owners
                .get(key)
                .map_err(storage)?
                .map(|v| v.value().to_string())
        };
        let backend = served
            .backends
            .iter()
            .find(|b| owner.as_deref() == Some(b.name.as_str()))
            .or_else(|| provisioner(&served.backends))
            .ok_or_else(|| Error::InvalidRequest("no backend deprovisions".into()))?;
        backend
            .host
            .run(|| backend.kind.deprovision(request.clone()))?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(OWNERS)
            .map_err(storage)?
            .remove((request.cluster_id.as_str(), request.node_id.as_str()))
            .map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}
