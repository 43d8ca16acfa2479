//! The native baseline: the same providers, compiled natively, behind plain axum handlers.
//!
//! It reads the gateway's own config file, gives each backend a [`Host`] with the same settings
//! (and a state in memory), and answers the three endpoints the way the gateway does: discovery
//! merges every backend's clusters, a provision or deprovision goes to the first backend that
//! provisions. No routing, validation, ownership index, limits or sandbox: what is left is what
//! the providers cost, so the gateway's figures against these say what the gateway adds.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use platform_gateway_sdk::native::Host;
use platform_gateway_sdk::{Cluster, DeprovisionRequest, Error, Provider, ProvisionRequest};
use serde_json::{Value, json};

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
    kind: Kind,
    host: Arc<Host>,
}

type Backends = Arc<Vec<Backend>>;

/// Serve `config`'s backends natively on `listen` until killed.
pub fn serve(config: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
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
            backends.push(Backend {
                kind: Kind::of(plugin)?,
                host: Host::with_settings(settings),
            });
        }
    }
    let app = Router::new()
        .route(
            "/readyz",
            get(|| async { Json(json!({ "status": "ready" })) }),
        )
        .route("/discover", get(discover))
        .route("/provision", post(provision))
        .route("/deprovision", post(deprovision))
        .with_state(Arc::new(backends));
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

async fn discover(State(backends): State<Backends>) -> Response {
    let mut clusters = Vec::new();
    for backend in backends.iter() {
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

async fn provision(State(backends): State<Backends>, Json(body): Json<Value>) -> Response {
    let Some(backend) = provisioner(&backends) else {
        return error(Error::unsupported("no backend provisions"));
    };
    let cluster = &body["cluster"];
    let group_id = text(&body["provision"], "node_group_id");
    let group = &cluster["nodes"][&group_id];
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let request = ProvisionRequest {
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
    };
    match backend.host.run(|| backend.kind.provision(request)) {
        Ok(answer) => {
            Json(json!({ "count": answer.count, "node_ids": answer.node_ids })).into_response()
        }
        Err(e) => error(e),
    }
}

async fn deprovision(State(backends): State<Backends>, Json(body): Json<Value>) -> Response {
    let Some(backend) = provisioner(&backends) else {
        return error(Error::InvalidRequest("no backend deprovisions".into()));
    };
    let request = DeprovisionRequest {
        cluster_id: text(&body, "cluster_id"),
        node_id: text(&body, "node_id"),
    };
    match backend.host.run(|| backend.kind.deprovision(request)) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(e),
    }
}
