//! The admin API: what the gateway is running, for operators. Served only on its own listener
//! (`[admin] listen`), never on the public one, since it shows the platform's layout.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use super::answers;
use super::error::{ApiError, ApiJson};
use crate::gateway::{Gateway, Generation};
use crate::reload::ReloadHandle;
use crate::server::AdminAuth;

/// What the admin handlers work on.
#[derive(Clone)]
struct Admin {
    gateway: Arc<Gateway>,
    reload: ReloadHandle,
}

impl axum::extract::FromRef<Admin> for Arc<Gateway> {
    fn from_ref(admin: &Admin) -> Arc<Gateway> {
        admin.gateway.clone()
    }
}

/// The admin API over `gateway`, reloading through `reload`. `loopback`: the admin listener is
/// on a loopback address, so only loopback `Host`s are accepted.
/// While `auth` holds a token, every request must carry it as `Authorization: Bearer <token>`
/// (but a `GET` of the console's shell, which holds no data: see `api::console`);
/// off loopback, a listener whose `auth` holds none refuses every request unless its TLS
/// requires client certificates (fail closed, whatever a config or reload says).
pub fn router(
    gateway: Arc<Gateway>,
    reload: ReloadHandle,
    loopback: bool,
    auth: Arc<AdminAuth>,
) -> Router {
    Router::new()
        .route("/admin/backends", get(backends))
        .route("/admin/backends/{name}", get(backend))
        .route(
            "/admin/backends/{name}/candidate/reset",
            post(reset_candidate),
        )
        .route("/admin/activity", get(activity))
        .route("/admin/routes", get(routes))
        .route("/admin/route", post(route))
        .route("/admin/generation", get(generation))
        .route("/admin/state", get(state))
        .route("/admin/reload", post(reload_now))
        .route("/admin/recordings/{name}", get(super::recordings::export))
        .merge(super::plan::routes())
        .merge(super::console::routes())
        .route("/metrics", get(metrics))
        .route("/admin/openapi.json", get(super::openapi::serve_admin))
        .fallback(super::not_found)
        .method_not_allowed_fallback(super::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Guard { auth, loopback },
            require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            loopback,
            same_site_only,
        ))
        .layer(axum::middleware::from_fn_with_state(
            gateway.metrics().clone(),
            super::metrics::count_request,
        ))
        .with_state(Admin { gateway, reload })
}

/// `GET /metrics`: the gateway's metrics, for Prometheus.
async fn metrics(
    State(admin): State<Admin>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    super::metrics::exposition(admin.gateway.metrics(), &headers)
}

/// Browsers must not be usable against the admin API: a page elsewhere cannot make a browser
/// POST to it (a foreign `Origin`, or a form's content type), and while it listens on loopback a
/// DNS name that resolves to 127.0.0.1 cannot reach it either (its `Host` is not loopback).
async fn same_site_only(
    State(loopback): State<bool>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let refuse = |why: String| {
        ApiError::new(StatusCode::FORBIDDEN, "the admin API refused the request")
            .with_cause(why)
            .into_response()
    };
    if loopback && !is_loopback_host(host) {
        return refuse(format!(
            "Host `{host}` is not a loopback address (the admin API listens on loopback only)"
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let own = ["http://", "https://"]
            .iter()
            .any(|scheme| origin.strip_prefix(scheme) == Some(host));
        if !own {
            return refuse(format!("cross-site request from `{origin}`"));
        }
    }
    if request.method() == axum::http::Method::POST
        && let Some(kind) = headers.get(header::CONTENT_TYPE)
        && !kind
            .to_str()
            .is_ok_and(|k| k.starts_with("application/json"))
    {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "admin requests with a body must send it as application/json",
        )
        .into_response();
    }
    next.run(request).await
}

/// The admin listener's authentication, as the middleware sees it.
#[derive(Clone)]
struct Guard {
    auth: Arc<AdminAuth>,
    loopback: bool,
}

async fn require_token(
    State(guard): State<Guard>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match guard.auth.check(given) {
        Some(true) => return next.run(request).await,
        None if guard.loopback || guard.auth.client_certs() => {
            return next.run(request).await;
        }
        None => {
            // The config check refuses this; a bug elsewhere must not open the API.
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "the admin API is off loopback with neither a token nor client certificates",
            )
            .into_response();
        }
        // The console's shell holds no data, and a browser's navigation cannot send the
        // bearer header: its exact files are served without the token (but not off loopback
        // without any authentication, above).
        Some(false) if super::console::is_shell(request.method(), request.uri().path()) => {
            return next.run(request).await;
        }
        Some(false) => {}
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "the admin API needs the admin token: `Authorization: Bearer <token>`",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `GET /admin/generation`: the generation being served, when it loaded, and the last refused
/// reload with its reason.
async fn generation(State(admin): State<Admin>) -> Json<crate::reload::ReloadStatus> {
    Json(admin.reload.status())
}

/// `GET /admin/state`: which state store the gateway uses and whether it answers, in the
/// store's own words (etcd's endpoints and its last error), which the public API never shows.
/// The verdict is `/readyz`'s, at most a second old.
async fn state(State(admin): State<Admin>) -> Json<answers::Store> {
    let verdict = admin.gateway.store_verdict().await;
    Json(answers::Store {
        store: admin.gateway.state().describe(),
        ready: verdict.is_ok(),
        error: verdict.err().map(|e| e.to_string()),
    })
}

/// `POST /admin/reload`: reload now and answer with the outcome (422 with the reason if it was
/// refused; the previous generation keeps serving).
async fn reload_now(State(admin): State<Admin>) -> Result<Json<answers::Reloaded>, ApiError> {
    // While the first generation loads there is nothing to reload from: say so at once.
    current(&admin.gateway)?;
    match admin.reload.reload().await {
        Ok(generation) => Ok(Json(answers::Reloaded { generation })),
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

/// `GET /admin/backends`: each backend with its plugin file, digest, contract version and limits
/// (its state quotas included).
async fn backends(State(admin): State<Admin>) -> Result<Json<answers::Backends>, ApiError> {
    let generation = current(&admin.gateway)?;
    let mut answer = answers::Backends::of(&generation);
    for info in &mut answer.backends {
        info.candidate = candidate_info(&admin.gateway, &generation, &info.name).await;
    }
    Ok(Json(answer))
}

/// `name`'s candidate as answered, if it has one.
async fn candidate_info(
    gateway: &Gateway,
    generation: &Generation,
    name: &str,
) -> Option<answers::CandidateInfo> {
    let id = crate::model::BackendId::new(name).ok()?;
    let (candidate, view) = gateway.candidate(generation, &id).await?;
    Some(answers::CandidateInfo::of(&candidate, view))
}

fn unknown_backend(name: &str) -> ApiError {
    ApiError::new(axum::http::StatusCode::NOT_FOUND, "no such backend").with_cause(format!(
        "the generation being served has no backend `{name}`"
    ))
}

/// `GET /admin/backends/NAME`: one backend as in `/admin/backends`, with its candidate's
/// rollout (weight, state, window, shadow comparisons, the rollback's time and reason).
async fn backend(
    State(admin): State<Admin>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Json<answers::BackendInfo>, ApiError> {
    let generation = current(&admin.gateway)?;
    let answer = answers::Backends::of(&generation);
    let Some(mut info) = answer.backends.into_iter().find(|b| b.name == name) else {
        return Err(unknown_backend(&name));
    };
    info.candidate = candidate_info(&admin.gateway, &generation, &name).await;
    Ok(Json(info))
}

/// `POST /admin/backends/NAME/candidate/reset`: re-arm a rolled-back candidate (its weight and
/// steps start over, its window is forgotten), on every replica within a polling interval.
async fn reset_candidate(
    State(admin): State<Admin>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Json<answers::CandidateInfo>, ApiError> {
    let generation = current(&admin.gateway)?;
    let id = crate::model::BackendId::new(&name).map_err(|_| unknown_backend(&name))?;
    if !generation.backends.contains_key(&id) {
        return Err(unknown_backend(&name));
    }
    match admin.gateway.reset_candidate(&generation, &id).await? {
        Some((candidate, view)) => Ok(Json(answers::CandidateInfo::of(&candidate, view))),
        None => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "the backend has no candidate",
        )
        .with_cause(format!("`[backends.{name}.candidate]` is not configured"))),
    }
}

/// `GET /admin/activity`: each backend's calls by outcome since start, its calls in flight and
/// queued, and a sample per interval of the last minutes (what the console draws).
async fn activity(State(admin): State<Admin>) -> Result<Json<answers::Activity>, ApiError> {
    let generation = current(&admin.gateway)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(Json(answers::Activity::of(
        &generation,
        admin.gateway.metrics(),
        now_ms,
    )))
}

/// `GET /admin/routes`: the provision route table, in order, and the discovery policy.
async fn routes(State(admin): State<Admin>) -> Result<Json<answers::Routes>, ApiError> {
    let generation = current(&admin.gateway)?;
    Ok(Json(answers::Routes::of(&generation)))
}

/// `POST /admin/route`: where a provision or deprovision request (the body) would go now, and
/// what decided it, from the live route table and ownership index.
async fn route(
    State(Admin { gateway, .. }): State<Admin>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<crate::routing::Explanation>, ApiError> {
    let generation = current(&gateway)?;
    super::inspect::explain_live(&gateway, &generation, body)
        .await
        .map(Json)
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn only_loopback_hosts_pass_the_rebinding_guard() {
        for host in [
            "localhost",
            "localhost:9090",
            "127.0.0.1:9090",
            "127.1.2.3",
            "[::1]:9090",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:9090",
            "10.0.0.1:9090",
            "",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
