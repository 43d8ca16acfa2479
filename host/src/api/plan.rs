//! Plans over HTTP: `POST /admin/plan/provision` and `/admin/plan/deprovision` on the admin
//! listener (the public API's bodies and validation, answered with a [`PlanAnswer`]), and the
//! `X-Platform-Plan` header that applies a saved plan on the public `POST /provision` and
//! `/deprovision`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, ApiJson};
use super::{inspect, model, validate};
use crate::capability::call::{Event, Transcript, WriteOp};
use crate::gateway::plan::{CallReport, Plan};
use crate::gateway::{Gateway, Generation};

/// The request header that applies a saved plan.
pub const PLAN_HEADER: &str = "x-platform-plan";
/// The response header that says whether the real call did what its plan said.
pub const MATCHED_HEADER: &str = "x-platform-plan-matched";

/// What a provision or deprovision would do.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanAnswer {
    /// `provision` or `deprovision`.
    pub operation: String,
    /// The generation it was planned on.
    pub generation: u64,
    /// Where the request goes and why (as `POST /admin/route` explains it).
    pub route: String,
    /// The backend that would answer, if the request reaches one.
    pub backend: Option<String>,
    /// `sha256:<hex>` of its plugin.
    pub digest: Option<String>,
    /// The contract version its plugin implements.
    pub contract: Option<String>,
    /// What the public endpoint would answer.
    pub would_answer: WouldAnswer,
    /// Every state write the calls would make, in order.
    pub state_writes: Vec<PlannedWrite>,
    /// Every outbound request, sent (reads) or not.
    pub requests: Vec<PlannedRequest>,
    /// Where the answering plugin stopped: its first effect that was withheld.
    pub stopped: Option<Stopped>,
    /// Every plugin call, with its whole transcript.
    pub calls: Vec<PlannedCall>,
    /// The ID to apply the plan with (`X-Platform-Plan`), if it was saved.
    pub plan_id: Option<String>,
    /// Until when it can be applied (RFC 3339).
    pub expires_at: Option<String>,
    /// Why the plan was not saved, if it was not.
    pub not_saved: Option<String>,
}

/// The public endpoint's answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WouldAnswer {
    /// The status.
    pub status: u16,
    /// The body (none for a 204).
    pub body: Option<Value>,
}

/// A state write a plan would make.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlannedWrite {
    /// The backend.
    pub backend: String,
    /// Its state namespace.
    pub namespace: String,
    /// `set`, `delete` or `compare_and_swap`.
    #[schema(value_type = String)]
    pub operation: WriteOp,
    /// The key.
    pub key: String,
    /// Its version now (`absent`, or a digest of the value).
    pub old_version: Option<String>,
    /// Its version after.
    pub new_version: String,
    /// The new value's size.
    pub size: Option<usize>,
    /// The new value, when it is short text.
    pub value: Option<String>,
}

/// An outbound request of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlannedRequest {
    /// The backend.
    pub backend: String,
    /// The method.
    pub method: String,
    /// The URL.
    pub url: String,
    /// Whether it is a read.
    pub read: bool,
    /// Whether it was sent.
    pub sent: bool,
    /// The answer's status.
    pub status: Option<u16>,
    /// Why it failed or was not sent.
    pub error: Option<String>,
    /// The body it would have sent (requests not sent).
    pub body: Option<String>,
}

/// Where the plugin stopped.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stopped {
    /// The backend.
    pub backend: String,
    /// The step of its call's transcript.
    pub step: usize,
    /// The effect, in words.
    pub effect: String,
}

/// One plugin call of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlannedCall {
    /// The backend.
    pub backend: String,
    /// Its state namespace.
    pub namespace: String,
    /// `discover`, `provision`, `deprovision` or `release`.
    pub operation: String,
    /// What it did: each state read and write, request and log line, in order.
    #[schema(value_type = Object)]
    pub transcript: Transcript,
}

/// The plan routes, added to the admin router (whose authentication covers them).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Gateway>: axum::extract::FromRef<S>,
{
    Router::new()
        .route("/admin/plan/provision", axum::routing::post(plan_provision))
        .route(
            "/admin/plan/deprovision",
            axum::routing::post(plan_deprovision),
        )
}

fn current(gateway: &Gateway) -> Result<Arc<Generation>, ApiError> {
    gateway.current().ok_or_else(super::loading)
}

/// The body as the public endpoint decodes it.
fn decode<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    super::strict::object(body.clone())
        .map_err(|e| ApiError::bad_request("invalid request body").with_cause(e.to_string()))
}

/// `POST /admin/plan/provision`.
pub(super) async fn plan_provision(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<PlanAnswer>, ApiError> {
    let generation = current(&gateway)?;
    let request = decode::<model::ProvisionRequest>(&body)?;
    let key = validate::idempotency_key(&headers)?;
    let request = validate::provision_request(request, key)?;
    let route = inspect::explain(&generation.config, body, |_, _| Ok(None))?;
    let plan = gateway.plan_provision(&generation, request).await;
    Ok(Json(answer("provision", route, plan, |response| {
        let body = model::ProvisionResponse {
            count: response.count,
            node_ids: response.node_ids.clone(),
        };
        (200, serde_json::to_value(body).ok())
    })))
}

/// `POST /admin/plan/deprovision`.
pub(super) async fn plan_deprovision(
    State(gateway): State<Arc<Gateway>>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<PlanAnswer>, ApiError> {
    let generation = current(&gateway)?;
    let request = validate::deprovision_request(decode(&body)?)?;
    let route = inspect::explain_live(&gateway, &generation, body).await?;
    let plan = gateway.plan_deprovision(&generation, request).await;
    Ok(Json(answer("deprovision", route, plan, |()| (204, None))))
}

/// The answer for `plan`, whose success the public endpoint answers as `ok` says.
fn answer<T>(
    operation: &str,
    route: inspect::Explanation,
    plan: Plan<T>,
    ok: impl FnOnce(&T) -> (u16, Option<Value>),
) -> PlanAnswer {
    let Plan {
        generation,
        outcome,
        calls,
        answering,
        saved,
    } = plan;
    let (status, body) = match &outcome {
        Ok(value) => ok(value),
        Err(_) => {
            let error = ApiError::from(outcome.err().expect("an error"));
            (error.status.as_u16(), Some(error.body()))
        }
    };
    let answering = answering.map(|i| &calls[i]);
    let mut state_writes = Vec::new();
    let mut requests = Vec::new();
    for call in &calls {
        for event in &call.transcript.events {
            match event.clone() {
                Event::StateWrite {
                    operation,
                    key,
                    old_version,
                    new_version,
                    size,
                    value,
                    written: true,
                } => state_writes.push(PlannedWrite {
                    backend: call.backend.to_string(),
                    namespace: call.namespace.clone(),
                    operation,
                    key,
                    old_version,
                    new_version,
                    size,
                    value,
                }),
                Event::Http {
                    method,
                    url,
                    read,
                    sent,
                    status,
                    error,
                    body,
                    ..
                } => requests.push(PlannedRequest {
                    backend: call.backend.to_string(),
                    method,
                    url,
                    read,
                    sent,
                    status,
                    error,
                    body,
                }),
                _ => {}
            }
        }
    }
    let stopped = calls.iter().find_map(|call| {
        let step = call.transcript.stopped_at?;
        let effect = call
            .transcript
            .events
            .get(step)
            .and_then(Event::effect)
            .unwrap_or_else(|| "a withheld effect".into());
        Some(Stopped {
            backend: call.backend.to_string(),
            step,
            effect,
        })
    });
    let (plan_id, expires_at, not_saved) = match saved {
        Ok(saved) => (
            Some(saved.plan_id),
            Some(
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(saved.expires_at),
                )
                .to_string(),
            ),
            None,
        ),
        Err(why) => (None, None, Some(why)),
    };
    PlanAnswer {
        operation: operation.to_string(),
        generation,
        route: route.render(),
        backend: answering.map(|c| c.backend.to_string()),
        digest: answering.map(|c| c.digest.clone()),
        contract: answering.map(|c| c.contract.clone()),
        would_answer: WouldAnswer { status, body },
        state_writes,
        requests,
        stopped,
        calls: calls.iter().map(planned_call).collect(),
        plan_id,
        expires_at,
        not_saved,
    }
}

fn planned_call(call: &CallReport) -> PlannedCall {
    PlannedCall {
        backend: call.backend.to_string(),
        namespace: call.namespace.clone(),
        operation: call.operation.to_string(),
        transcript: call.transcript.clone(),
    }
}

/// The plan a request names in `X-Platform-Plan`, if any (400 if it is not a plan ID).
pub fn plan_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(PLAN_HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(id) if crate::gateway::plan::is_plan_id(id) => Ok(Some(id.to_string())),
        _ => Err(
            ApiError::bad_request("invalid X-Platform-Plan header").with_cause(
                "expected the `plan_id` of a plan from `POST /admin/plan/provision` or \
                 `/admin/plan/deprovision`",
            ),
        ),
    }
}

/// The reply to a request applied with a plan: the real outcome, and whether it matched.
pub fn applied(outcome: Result<Response, ApiError>, matched: bool) -> Response {
    let mut response = match outcome {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    response.headers_mut().insert(
        MATCHED_HEADER,
        HeaderValue::from_static(if matched { "true" } else { "false" }),
    );
    response
}

/// 204 for a deprovision applied with a plan.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

impl PlanAnswer {
    /// The plan for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Plan of a {} (generation {})\n\n{}",
            self.operation, self.generation, self.route
        );
        if let Some(backend) = &self.backend {
            out.push_str(&format!(
                "\nBackend `{backend}`: plugin {}, {}\n",
                self.digest.as_deref().unwrap_or("?"),
                self.contract.as_deref().unwrap_or("?")
            ));
        }
        let body = self
            .would_answer
            .body
            .as_ref()
            .map_or(String::new(), |b| format!(" {b}"));
        out.push_str(&format!(
            "\nThe endpoint would answer: {}{body}\n",
            self.would_answer.status
        ));
        if let Some(stopped) = &self.stopped {
            out.push_str(&format!(
                "  (the plugin stopped at its first write, step {} of backend `{}`: {}; the \
                 answer is what it made of the refusal)\n",
                stopped.step, stopped.backend, stopped.effect
            ));
        }
        out.push_str(&format!("\nState writes ({}):\n", self.state_writes.len()));
        if self.state_writes.is_empty() {
            out.push_str("  none\n");
        }
        for w in &self.state_writes {
            let what = match (&w.value, w.size) {
                (Some(value), _) => format!(" = {value:?}"),
                (None, Some(size)) => format!(" ({size} bytes)"),
                (None, None) => String::new(),
            };
            out.push_str(&format!(
                "  {:<16} {}/{}  {} -> {}{what}\n",
                w.operation.name(),
                w.namespace,
                w.key,
                w.old_version.as_deref().unwrap_or("?"),
                w.new_version
            ));
        }
        out.push_str(&format!("\nOutbound requests ({}):\n", self.requests.len()));
        if self.requests.is_empty() {
            out.push_str("  none\n");
        }
        for r in &self.requests {
            let outcome = match (r.sent, r.status, &r.error) {
                (true, Some(status), _) => format!("sent, {status}"),
                (true, None, Some(error)) => format!("sent, failed: {error}"),
                (true, None, None) => "sent".to_string(),
                (false, _, error) => {
                    format!("NOT SENT ({})", error.as_deref().unwrap_or("withheld"))
                }
            };
            out.push_str(&format!("  {} {}  {outcome}\n", r.method, r.url));
            if let Some(body) = r.body.as_ref().filter(|b| !b.is_empty()) {
                out.push_str(&format!("    body: {body}\n"));
            }
        }
        let logs: usize = self
            .calls
            .iter()
            .map(|c| {
                c.transcript
                    .events
                    .iter()
                    .filter(|e| matches!(e, Event::Log { .. }))
                    .count()
            })
            .sum();
        out.push_str(&format!(
            "\n{} plugin call(s), {logs} log line(s) (`--output json` shows every step)\n",
            self.calls.len()
        ));
        match (&self.plan_id, &self.expires_at, &self.not_saved) {
            (Some(id), Some(expires), _) => out.push_str(&format!(
                "\nSaved as plan {id} until {expires}: apply it with the same request and the \
                 header `X-Platform-Plan: {id}`\n"
            )),
            (_, _, Some(why)) => out.push_str(&format!("\nNot saved: {why}\n")),
            _ => {}
        }
        out
    }
}
