//! The HTTP API: the three endpoints of the Replicante Platform specification, plus `/healthz`
//! and `/readyz` for whoever supervises the gateway.
//!
//! [`router`] is pure (no socket): tests drive it with `tower::ServiceExt::oneshot` and the
//! binary serves it. Bodies are decoded strictly by [`error::ApiJson`], whose rejections share
//! the error shape of every other failure.

pub mod admin;
pub mod answers;
mod console;
pub mod error;
pub mod inspect;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod plan;
pub mod recordings;
mod strict;
pub mod validate;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::gateway::{Gateway, Generation};

use error::{ApiError, ApiJson};

/// The API over `gateway`, accepting request bodies up to `max_body_size` bytes.
pub fn router(gateway: Arc<Gateway>, max_body_size: usize) -> Router {
    Router::new()
        .route("/discover", get(discover))
        .route("/provision", post(provision))
        .route("/deprovision", post(deprovision))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::serve_public))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_size))
        .layer(middleware::from_fn_with_state(
            max_body_size,
            refuse_declared_oversize,
        ))
        .layer(catch_panics())
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            with_generation,
        ))
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn_with_state(
            gateway.metrics().clone(),
            metrics::count_request,
        ))
        .layer(axum::Extension(gateway.metrics().clone()))
        .with_state(gateway)
}

/// How long a request body may take to arrive once its head has (from `[server] body_timeout`),
/// for the extractors that read bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout(pub std::time::Duration);

impl Default for BodyTimeout {
    /// `[server] body_timeout`'s default, for a router served without the extension.
    fn default() -> Self {
        BodyTimeout(crate::server::ConnectionLimits::default().body_timeout)
    }
}

/// Every response names the generation that answered it.
pub const GENERATION_HEADER: &str = "platform-gateway-generation";

/// A body declared larger than the limit is refused from its head alone: at once, and before
/// an `Expect: 100-continue` client is told to send it.
async fn refuse_declared_oversize(
    State(max_body_size): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > max_body_size as u64 => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body is too large")
                .with_cause(format!(
                    "Content-Length {length} is over the {max_body_size}-byte limit"
                ))
                .into_response()
        }
        _ => next.run(request).await,
    }
}

/// Pin the request to the generation current when it arrives: the handler works on it to the
/// end, whatever reloads happen meanwhile, and the response says which one it was.
async fn with_generation(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let generation = gateway.current();
    if let Some(generation) = &generation {
        request.extensions_mut().insert(Current(generation.clone()));
    }
    let mut response = next.run(request).await;
    if let Some(generation) = generation {
        response
            .headers_mut()
            .insert(GENERATION_HEADER, HeaderValue::from(generation.number));
    }
    response
}

/// The generation a request is pinned to; 503 while the first one loads.
#[derive(Clone)]
pub struct Current(pub Arc<Generation>);

impl<S: Send + Sync> FromRequestParts<S> for Current {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Current>()
            .cloned()
            .ok_or_else(loading)
    }
}

/// Names the backends a `partial` discovery left out.
pub const FAILED_BACKENDS_HEADER: &str = "platform-gateway-failed-backends";
/// Lists node IDs reported by several backends: `cluster/node=backend,backend; ...`, with the
/// IDs percent-encoded, up to [`MAX_CONFLICTS_HEADER`] bytes, then `+N more` (the metric and
/// the log have them all).
pub const NODE_CONFLICTS_HEADER: &str = "platform-gateway-node-conflicts";
/// The longest [`NODE_CONFLICTS_HEADER`] value: clients and proxies refuse heads of more than
/// a few KiB, and a discovery may report thousands of conflicts.
pub const MAX_CONFLICTS_HEADER: usize = 4096;

async fn discover(
    State(gateway): State<Arc<Gateway>>,
    Current(generation): Current,
) -> Result<Response, ApiError> {
    let reply = gateway.discover(&generation).await?;
    let body = model::DiscoverResponse::from(reply.clusters);
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    if !reply.failed.is_empty() {
        let names: Vec<&str> = reply.failed.iter().map(|b| b.as_str()).collect();
        // Backend names are plain ASCII, always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&names.join(", ")) {
            headers.insert(FAILED_BACKENDS_HEADER, value);
        }
    }
    if !reply.conflicts.is_empty()
        && let Ok(value) = HeaderValue::from_str(&conflicts_header(&reply.conflicts))
    {
        headers.insert(NODE_CONFLICTS_HEADER, value);
    }
    Ok(response)
}

/// The [`NODE_CONFLICTS_HEADER`] value for `conflicts`: as many as fit in
/// [`MAX_CONFLICTS_HEADER`] bytes, then `; +N more`.
fn conflicts_header(conflicts: &[crate::gateway::NodeConflict]) -> String {
    let encode = |id: &str| utf8_percent_encode(id, NON_ALPHANUMERIC).to_string();
    let mut text = String::new();
    for (shown, c) in conflicts.iter().enumerate() {
        let backends: Vec<&str> = c.backends.iter().map(|b| b.as_str()).collect();
        let item = format!(
            "{}/{}={}",
            encode(&c.cluster_id),
            encode(&c.node_id),
            backends.join(",")
        );
        // Room is kept for the `; +N more` that ends a cut list.
        if text.len() + item.len() + 2 > MAX_CONFLICTS_HEADER - 16 {
            text.push_str(&format!("; +{} more", conflicts.len() - shown));
            break;
        }
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(&item);
    }
    text
}

async fn provision(
    State(gateway): State<Arc<Gateway>>,
    Current(generation): Current,
    headers: axum::http::HeaderMap,
    ApiJson(request): ApiJson<model::ProvisionRequest>,
) -> Result<Response, ApiError> {
    let key = validate::idempotency_key(&headers)?;
    let request = validate::provision_request(request, key)?;
    let reply = |answer: crate::model::ProvisionResponse| {
        Json(model::ProvisionResponse {
            count: answer.count,
            node_ids: answer.node_ids,
        })
        .into_response()
    };
    if let Some(plan_id) = plan::plan_header(&headers)? {
        let (outcome, matched) = gateway
            .apply_provision(&generation, request, &plan_id)
            .await?;
        return Ok(plan::applied(
            outcome.map(reply).map_err(ApiError::from),
            matched,
        ));
    }
    Ok(reply(gateway.provision(&generation, request).await?))
}

/// A discovered node, as the client reads it.
async fn deprovision(
    State(gateway): State<Arc<Gateway>>,
    Current(generation): Current,
    headers: axum::http::HeaderMap,
    ApiJson(request): ApiJson<model::DeprovisionRequest>,
) -> Result<Response, ApiError> {
    let request = validate::deprovision_request(request)?;
    if let Some(plan_id) = plan::plan_header(&headers)? {
        let (outcome, matched) = gateway
            .apply_deprovision(&generation, request, &plan_id)
            .await?;
        let outcome = outcome.map(|()| plan::no_content());
        return Ok(plan::applied(outcome.map_err(ApiError::from), matched));
    }
    gateway.deprovision(&generation, request).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The body of `/healthz` and `/readyz` when they answer 200.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` from `/healthz`, `ready` from `/readyz`.
    pub status: Probe,
}

/// What a probe found.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// The process serves HTTP.
    Ok,
    /// A generation is loaded and the state store answers.
    Ready,
}

async fn healthz() -> Json<Health> {
    Json(Health { status: Probe::Ok })
}

/// 200 once a generation is loaded and the state store answers; 503 (with the reason) until then.
async fn readyz(State(gateway): State<Arc<Gateway>>) -> Result<Json<Health>, ApiError> {
    gateway.ready().await?;
    Ok(Json(Health {
        status: Probe::Ready,
    }))
}

/// 503 while the first generation loads.
pub(crate) fn loading() -> ApiError {
    crate::gateway::Error::Loading.into()
}

/// The trace ID and parent span ID of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`);
/// `None` for anything else, including the all-zero IDs the spec forbids.
fn trace_context(header: &str) -> Option<(&str, &str)> {
    let mut parts = header.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && hex(parent_id, 16)
        && hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && parent_id.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    valid.then_some((trace_id, parent_id))
}

/// A handler that panics answers 500 in the error shape instead of dropping the connection.
fn catch_panics()
-> tower_http::catch_panic::CatchPanicLayer<fn(Box<dyn std::any::Any + Send + 'static>) -> Response>
{
    tower_http::catch_panic::CatchPanicLayer::custom(panicked as fn(_) -> Response)
}

fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    tracing::error!("request handler panicked: {detail}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the gateway failed while handling the request; see its log",
    )
    .into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {} {}",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// One log line per request, with the error message of failed ones.
///
/// Each request runs in a span that carries the W3C trace ID of its `traceparent` header, when
/// it has a valid one, so every line logged for it (plugin log lines included) names the trace;
/// with OTLP export, the request's span is exported as a child of the caller's.
async fn log_request(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let span = tracing::info_span!(
        "request",
        %method,
        path,
        trace_id = tracing::field::Empty,
        parent_id = tracing::field::Empty
    );
    if let Some((trace_id, parent_id)) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_context)
    {
        span.record("trace_id", trace_id);
        span.record("parent_id", parent_id);
        // With OTLP export, the exported span is a child of the caller's.
        crate::telemetry::set_remote_parent(&span, request.headers());
    }
    let started = Instant::now();
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let _entered = span.enter();
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    match response.extensions().get::<ApiError>() {
        // A supervisor polls `/readyz` until it answers 200: a 503 while the backends load is
        // the answer it expects, not a failure worth a warning per poll.
        Some(error) if path == "/readyz" && status == 503 => {
            tracing::debug!(%method, path, status, ?elapsed, "not ready: {error}")
        }
        Some(error) if error.status.is_server_error() => {
            tracing::warn!(%method, path, status, ?elapsed, "request failed: {error}")
        }
        Some(error) => tracing::info!(%method, path, status, ?elapsed, "request refused: {error}"),
        None => tracing::info!(%method, path, status, ?elapsed, "request served"),
    }
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tower::ServiceExt;

    #[test]
    fn a_router_served_without_a_body_timeout_gets_the_configs_default() {
        let config = crate::config::Config::parse(
            std::path::Path::new("/g/gateway.toml"),
            "[backends.a]\nplugin = \"a.wasm\"\n[[routes]]\nbackend = \"a\"\n",
        )
        .unwrap();
        assert_eq!(BodyTimeout::default().0, config.connections.body_timeout);
    }

    #[test]
    fn the_node_conflicts_header_is_bounded_and_says_how_many_it_left_out() {
        let backends = vec![
            crate::model::BackendId::new("a").unwrap(),
            crate::model::BackendId::new("b").unwrap(),
        ];
        let conflict = |n: usize| crate::gateway::NodeConflict {
            cluster_id: "c/1".into(),
            node_id: format!("node-{n}"),
            backends: backends.clone(),
        };
        let few: Vec<_> = (0..2).map(conflict).collect();
        assert_eq!(
            conflicts_header(&few),
            "c%2F1/node%2D0=a,b; c%2F1/node%2D1=a,b"
        );
        let many: Vec<_> = (0..10_000).map(conflict).collect();
        let text = conflicts_header(&many);
        assert!(text.len() <= MAX_CONFLICTS_HEADER, "{}", text.len());
        let shown = text.matches("=a,b").count();
        assert!(shown > 100, "{shown}");
        assert!(
            text.ends_with(&format!("; +{} more", 10_000 - shown)),
            "{}",
            &text[text.len() - 40..]
        );
        assert!(HeaderValue::from_str(&text).is_ok());
    }

    #[test]
    fn only_valid_traceparents_give_a_trace_id() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_context(valid),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"))
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_context(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_error_shape() {
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .layer(catch_panics());
        let response = app
            .oneshot(
                Request::get("/boom")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"], json!(true));
        assert!(body["error_msg"].as_str().unwrap().contains("see its log"));
    }
}
