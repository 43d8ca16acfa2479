//! The admin API: what the gateway is running, for operators. Served only on its own listener
//! (`[admin] listen`), never on the public one, since it shows the platform's layout.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::error::{ApiError, ApiJson};
use crate::gateway::{Gateway, Generation};
use crate::reload::ReloadHandle;

/// What the admin handlers work on.
#[derive(Clone)]
struct Admin {
    gateway: Arc<Gateway>,
    reload: ReloadHandle,
}

/// The admin API over `gateway`, reloading through `reload`.
pub fn router(gateway: Arc<Gateway>, reload: ReloadHandle) -> Router {
    Router::new()
        .route("/admin/backends", get(backends))
        .route("/admin/routes", get(routes))
        .route("/admin/route", post(route))
        .route("/admin/generation", get(generation))
        .route("/admin/reload", post(reload_now))
        .fallback(super::not_found)
        .method_not_allowed_fallback(super::method_not_allowed)
        .with_state(Admin { gateway, reload })
}

/// `GET /admin/generation`: the generation being served, when it loaded, and the last refused
/// reload with its reason.
async fn generation(State(admin): State<Admin>) -> Json<crate::reload::ReloadStatus> {
    Json(admin.reload.status())
}

/// `POST /admin/reload`: reload now and answer with the outcome (422 with the reason if it was
/// refused; the previous generation keeps serving).
async fn reload_now(State(admin): State<Admin>) -> Result<Json<Value>, ApiError> {
    // While the first generation loads there is nothing to reload from: say so at once.
    current(&admin.gateway)?;
    match admin.reload.reload().await {
        Ok(number) => Ok(Json(json!({ "generation": number }))),
        Err(reason) => Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "reload refused: the previous generation keeps serving",
        )
        .with_cause(reason)),
    }
}

fn current(gateway: &Gateway) -> Result<Arc<Generation>, ApiError> {
    gateway.current().ok_or_else(super::loading)
}

/// `GET /admin/backends`: each backend with its plugin file, digest and limits.
async fn backends(State(admin): State<Admin>) -> Result<Json<Value>, ApiError> {
    let generation = current(&admin.gateway)?;
    let list: Vec<Value> = generation
        .backends
        .values()
        .map(|backend| {
            let config = &generation.config.backends[backend.id()];
            let limits = backend.limits();
            json!({
                "name": backend.id().as_str(),
                "plugin": config.plugin.display().to_string(),
                "digest": backend.digest(),
                "limits": {
                    "memory_bytes": limits.memory,
                    "timeout_ms": limits.timeout.as_millis() as u64,
                    "concurrency": limits.concurrency,
                },
            })
        })
        .collect();
    Ok(Json(
        json!({ "generation": generation.number, "backends": list }),
    ))
}

/// `GET /admin/routes`: the provision route table, in order, and the discovery policy.
async fn routes(State(admin): State<Admin>) -> Result<Json<Value>, ApiError> {
    let generation = current(&admin.gateway)?;
    let list: Vec<Value> = generation
        .config
        .routes
        .routes()
        .iter()
        .map(|route| {
            let m = &route.matches;
            json!({
                "name": route.name,
                "backend": route.backend.as_str(),
                "cluster_id": m.cluster_id.as_ref().map(|p| p.as_str()),
                "store": m.store,
                "store_version": m.store_version,
                "node_group_id": m.node_group_id,
                "node_class": m.node_class,
                "conditions": m.describe(),
            })
        })
        .collect();
    Ok(Json(json!({
        "routes": list,
        "discovery": { "on_backend_failure": generation.config.discovery },
    })))
}

/// `POST /admin/route`: where a provision or deprovision request (the body) would go now, and
/// what decided it, from the live route table and ownership index.
async fn route(
    State(Admin { gateway, .. }): State<Admin>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<super::inspect::Explanation>, ApiError> {
    let generation = current(&gateway)?;
    // The ownership lookup is async; resolve it first when the body is a deprovision request.
    let owner = match (body.get("cluster_id"), body.get("node_id")) {
        (Some(Value::String(c)), Some(Value::String(n))) => gateway.recorded_owner(c, n).await?,
        _ => None,
    };
    // The index records state namespaces: name the backend that uses it now.
    let owner = owner.map(
        |namespace| match generation.backend_by_namespace(&namespace) {
            Some(backend) => backend.id().to_string(),
            None => namespace,
        },
    );
    super::inspect::explain(&generation.config, body, |_, _| Ok(owner)).map(Json)
}
