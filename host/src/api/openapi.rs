//! The OpenAPI 3.1 documents of the Platform API and of the admin API, generated from the types
//! the server decodes and encodes ([`super::model`], [`super::error::ErrorBody`], the admin
//! answers), so that other clients, gateways and test generators need not read the prose.
//!
//! The public listener serves [`public`] at `GET /openapi.json`, the admin listener serves
//! [`admin`] at `GET /admin/openapi.json`, and `platform-gateway openapi [--admin]` prints them.
//! The operations are listed here, not on the handlers, since the handlers answer more than one
//! shape of request; the schemas all come from the types.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::model;

/// The document of the public listener: the Platform API, `/healthz` and `/readyz`.
pub fn public() -> Document {
    PublicApi::openapi()
}

/// The document of the admin listener.
pub fn admin() -> Document {
    AdminApi::openapi()
}

/// One of the documents as pretty-printed JSON: the admin API's when `admin`, else the public
/// one.
pub fn document(admin: bool) -> String {
    let document = if admin { self::admin() } else { public() };
    document
        .to_pretty_json()
        .expect("an OpenAPI document serializes")
}

static PUBLIC_JSON: LazyLock<String> = LazyLock::new(|| document(false));
static ADMIN_JSON: LazyLock<String> = LazyLock::new(|| document(true));

/// `GET /openapi.json`.
pub(crate) async fn serve_public() -> axum::response::Response {
    json(&PUBLIC_JSON)
}

/// `GET /admin/openapi.json`.
pub(crate) async fn serve_admin() -> axum::response::Response {
    json(&ADMIN_JSON)
}

fn json(text: &'static str) -> axum::response::Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// What the document says of the API as a whole: which fields extend the seed specification.
const PUBLIC_DESCRIPTION: &str = "\
The Replicante Platform API as platform-gateway serves it: cluster discovery, node provisioning \
and node deprovisioning, plus the `/healthz` and `/readyz` probes.

Requests are JSON. Fields this gateway does not know are read past (as Replicante's own models \
do); a key given twice in one object is refused. Every error answer, whatever its status, has \
the body Replicante Core decodes (`ErrorBody`).

Extensions of the original (seed) specification, which newer Replicante clients send and read: \
`provision.count`; a node group's `store_version` (the seed's `version` is accepted too); \
`attributes` that are absent or `null`; each discovered node's `node_class` and `node_group`; \
the `Idempotency-Key` header; the `platform-gateway-*` response headers.";

const ADMIN_DESCRIPTION: &str = "\
The admin API of platform-gateway: what the gateway runs, for operators. It is served only on \
the admin listener (`[admin] listen`).

Authentication: while `[admin] token` is set, every request must carry it as \
`Authorization: Bearer <token>` (else 401); when the listener's TLS has `client_ca`, the client \
must present a certificate it signed (mutual TLS). A listener on a loopback address with neither \
accepts loopback `Host`s only; off loopback it refuses every request (403). Cross-site requests \
(a foreign `Origin`) are refused with 403.";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "platform-gateway: Replicante Platform API",
        description = PUBLIC_DESCRIPTION,
        license(name = "Apache-2.0"),
    ),
    paths(discover, provision, deprovision, healthz, readyz),
    components(schemas(ErrorBody, model::Id, model::Text)),
    modifiers(&GenerationHeader),
    tags(
        (name = "platform", description = "The Replicante Platform specification's endpoints."),
        (name = "probes", description = "For whoever supervises the gateway."),
    ),
)]
struct PublicApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "platform-gateway: admin API",
        description = ADMIN_DESCRIPTION,
        license(name = "Apache-2.0"),
    ),
    paths(
        backends,
        backend,
        reset_candidate,
        recordings,
        activity,
        routes,
        route,
        plan_provision,
        plan_deprovision,
        generation,
        state,
        reload,
        metrics,
        admin_document
    ),
    components(schemas(ErrorBody, model::Id, model::Text, model::DeprovisionRequest)),
    modifiers(&AdminSecurity, &RouteBody),
    security(("bearer" = []), ("mutualTLS" = [])),
    tags((name = "admin", description = "Operator endpoints of the admin listener.")),
)]
struct AdminApi;

/// Every answer of the public listener names the generation that served it (once one is
/// loaded): added to every response rather than repeated in each.
struct GenerationHeader;

impl Modify for GenerationHeader {
    fn modify(&self, openapi: &mut Document) {
        let header = HeaderBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            ))
            .description(Some(
                "The config generation that answered (absent while the first one loads).",
            ))
            .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.headers.insert(
                            super::GENERATION_HEADER.to_string(),
                            RefOr::T(header.clone()),
                        );
                    }
                }
            }
        }
    }
}

/// The admin listener's two ways to authenticate, and what every admin route answers when they
/// fail (added to every operation rather than repeated in each).
struct AdminSecurity;

impl Modify for AdminSecurity {
    fn modify(&self, openapi: &mut Document) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let refusal = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let refusals = [
            ("401", refusal("The admin token is missing or wrong.")),
            (
                "403",
                refusal(
                    "Refused: not a loopback `Host` while the listener is on loopback, a \
                     cross-site request (a foreign `Origin`), or no authentication configured \
                     off loopback.",
                ),
            ),
        ];
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                for (status, response) in &refusals {
                    operation
                        .responses
                        .responses
                        .insert(status.to_string(), RefOr::T(response.clone()));
                }
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`[admin] token`, as `Authorization: Bearer <token>`."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "mutualTLS",
            SecurityScheme::MutualTls {
                description: Some(
                    "A client certificate signed by `[admin] tls.client_ca`.".to_string(),
                ),
                deprecated: None,
                extensions: None,
            },
        );
    }
}

/// `POST /admin/route` takes either request: `oneOf` the two bodies.
struct RouteBody;

impl Modify for RouteBody {
    fn modify(&self, openapi: &mut Document) {
        use utoipa::ToSchema;
        use utoipa::openapi::schema::{OneOfBuilder, Ref};
        let either = OneOfBuilder::new()
            .item(Ref::from_schema_name(model::ProvisionRequest::name()))
            .item(Ref::from_schema_name(model::DeprovisionRequest::name()));
        let body = openapi
            .paths
            .paths
            .get_mut("/admin/route")
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.request_body.as_mut())
            .and_then(|body| match body {
                RefOr::T(body) => body.content.get_mut("application/json"),
                RefOr::Ref(_) => None,
            });
        if let Some(RefOr::T(content)) = body {
            content.schema = Some(either.into());
        }
    }
}

// The operations. These functions are never called: each carries one operation's description.

/// Every cluster on the platform, with all its nodes, whatever their health.
///
/// The answer merges every backend's discovery. With `[discovery] on_backend_failure =
/// "partial"`, a backend that fails is left out and named in
/// `platform-gateway-failed-backends`.
#[utoipa::path(
    get,
    path = "/discover",
    operation_id = "discover",
    tag = "platform",
    responses(
        (status = 200, description = "Every cluster and node.", body = model::DiscoverResponse,
            headers(
                ("platform-gateway-failed-backends" = String,
                    description = "The backends a partial discovery left out, comma-separated."),
                ("platform-gateway-node-conflicts" = String,
                    description = "Node IDs several backends report: `cluster/node=backend,backend; ...`, \
                        IDs percent-encoded, at most 4096 bytes, then `; +N more`."),
            ),
            links(
                ("DeprovisionDiscovered" = (
                    operation_id = "deprovision",
                    request_body = json!({
                        "cluster_id": "$response.body#/clusters/0/cluster_id",
                        "node_id": "$response.body#/clusters/0/nodes/0/node_id"
                    }),
                    description = "Deprovision the first node discovered.",
                )),
            ),
        ),
        (status = 500, description = "The gateway failed (the state store, or a bug).", body = ErrorBody),
        (status = 502, description = "A backend failed or answered something invalid.", body = ErrorBody),
        (status = 503, description = "The first generation is still loading, or discovery is overloaded.",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
#[allow(dead_code)]
fn discover() {}

/// Create nodes in one node group of a cluster.
///
/// The route table picks the backend from the cluster, store, version, node group and class. A
/// retry with the same `Idempotency-Key` (and the same body) creates nothing more and answers
/// the same.
#[utoipa::path(
    post,
    path = "/provision",
    operation_id = "provision",
    tag = "platform",
    params(
        ("Idempotency-Key" = Option<String>, Header, pattern = r"^[\x21-\x7E]{1,255}$",
            description = "Makes retries safe: 1 to 255 visible ASCII characters (surrounding \
                double quotes are removed first). A retry with the same key and cluster creates \
                nothing more; the same key with a different body is refused with 422. An extension \
                of the seed specification."),
        ("X-Platform-Plan" = Option<String>, Header, pattern = r"^[0-9]{12}-[0-9a-f]{32}$",
            description = "Applies a saved plan (`plan_id` from `POST /admin/plan/...` on the admin \
                listener): the request runs only if it is the planned one and nothing the plan \
                read has changed, else 409. The answer then carries `X-Platform-Plan-Matched: \
                true|false`. An extension of the seed specification."),
    ),
    request_body(content = model::ProvisionRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The nodes are being created.", body = model::ProvisionResponse,
            links(
                ("DiscoverProvisioned" = (
                    operation_id = "discover",
                    description = "The new nodes appear in discovery.",
                )),
                ("DeprovisionProvisioned" = (
                    operation_id = "deprovision",
                    request_body = json!({
                        "cluster_id": "$request.body#/cluster/cluster_id",
                        "node_id": "$response.body#/node_ids/0"
                    }),
                    description = "Deprovision the first node created.",
                )),
            ),
        ),
        (status = 400, description = "The body is not valid: not JSON, a missing or mistyped field, \
            a limit exceeded, a key given twice, an undefined `node_group_id` (the body then lists \
            the defined groups in `node_groups`), or the backend refused it as invalid.", body = ErrorBody),
        (status = 404, description = "The backend found no such cluster.", body = ErrorBody),
        (status = 408, description = "The body did not arrive within `[server] body_timeout`.", body = ErrorBody),
        (status = 409, description = "The request conflicts with the backend's state, or the plan \
            named in `X-Platform-Plan` does not apply (unknown, expired, applied already, another \
            body, or something it read has changed).", body = ErrorBody),
        (status = 413, description = "The body is over `[server] max_body_size`.", body = ErrorBody),
        (status = 415, description = "The body is not declared as JSON (`Content-Type`).", body = ErrorBody),
        (status = 422, description = "No route matches the request, or its `Idempotency-Key` was used \
            with a different body.", body = ErrorBody),
        (status = 500, description = "The gateway or the backend's plugin failed.", body = ErrorBody),
        (status = 501, description = "The backend does not provision.", body = ErrorBody),
        (status = 502, description = "The backend's plugin failed (a trap, its memory cap) or answered \
            something invalid.", body = ErrorBody),
        (status = 503, description = "Not now: loading, the backend is busy or out of capacity, or the \
            state store is unavailable.",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 504, description = "The backend did not answer within its timeout.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn provision() {}

/// Terminate one node.
///
/// The node's owner is the backend that provisioned it (the ownership index), else the one
/// backend that reports it in discovery.
#[utoipa::path(
    post,
    path = "/deprovision",
    operation_id = "deprovision",
    tag = "platform",
    params(
        ("X-Platform-Plan" = Option<String>, Header, pattern = r"^[0-9]{12}-[0-9a-f]{32}$",
            description = "Applies a saved plan (`plan_id` from `POST /admin/plan/...` on the admin \
                listener): the request runs only if it is the planned one and nothing the plan \
                read has changed, else 409. The answer then carries `X-Platform-Plan-Matched: \
                true|false`. An extension of the seed specification."),
    ),
    request_body(content = model::DeprovisionRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "The node is being terminated."),
        (status = 400, description = "The body is not valid (not JSON, a missing or mistyped field, \
            a limit exceeded), or the backend refused it as invalid.", body = ErrorBody),
        (status = 404, description = "No backend has the node.", body = ErrorBody),
        (status = 408, description = "The body did not arrive within `[server] body_timeout`.", body = ErrorBody),
        (status = 409, description = "Several backends report the node, the backend refused, or the \
            plan named in `X-Platform-Plan` does not apply.", body = ErrorBody),
        (status = 413, description = "The body is over `[server] max_body_size`.", body = ErrorBody),
        (status = 415, description = "The body is not declared as JSON (`Content-Type`).", body = ErrorBody),
        (status = 500, description = "The gateway or the backend's plugin failed.", body = ErrorBody),
        (status = 501, description = "The backend does not deprovision.", body = ErrorBody),
        (status = 502, description = "The backend's plugin failed, or discovery did.", body = ErrorBody),
        (status = 503, description = "Not now: loading, the owner's backend is not loaded, the backend \
            is busy, or the state store is unavailable.",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 504, description = "The backend did not answer within its timeout.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn deprovision() {}

/// Liveness: the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "probes",
    responses(
        (status = 200, description = "Alive.", body = super::Health),
        (status = 500, description = "The gateway failed.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn healthz() {}

/// Readiness: a generation is loaded and the state store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "probes",
    responses(
        (status = 200, description = "Ready.", body = super::Health),
        (status = 500, description = "The state store failed.", body = ErrorBody),
        (status = 503, description = "Not ready yet, and why.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
#[allow(dead_code)]
fn readyz() {}

/// Each backend with its plugin file, digest, contract version and limits.
#[utoipa::path(
    get,
    path = "/admin/backends",
    operation_id = "adminBackends",
    tag = "admin",
    responses(
        (status = 200, description = "`{generation, backends: [{name, plugin, digest, contract, \
            limits}]}`.", body = Object),
        (status = 503, description = "The first generation is still loading.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn backends() {}

/// One backend as in `/admin/backends`, with its candidate's rollout: digest, configured and
/// effective weight, state, calls and failures in the window, shadow comparisons with the last
/// differences, and the rollback's time and reason.
#[utoipa::path(
    get,
    path = "/admin/backends/{name}",
    operation_id = "adminBackend",
    tag = "admin",
    params(("name" = String, Path, description = "The backend's name.")),
    responses(
        (status = 200, description = "`{name, plugin, digest, contract, limits, candidate?: \
            {plugin, digest, contract, configured_weight, steps, weight, state, armed_at_ms, \
            calls, failures, error_rate, shadow, shadow_compared, shadow_different, shadow_failed, \
            last_differences, rolled_back, max_error_rate, min_calls, window_ms, replay?: {state, \
            report?}}}`.", body = Object),
        (status = 404, description = "No backend of that name.", body = ErrorBody),
        (status = 503, description = "The first generation is still loading.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn backend() {}

/// Re-arm the backend's candidate after a rollback: its weight and steps start over and its
/// window is forgotten; every replica follows within a second.
#[utoipa::path(
    post,
    path = "/admin/backends/{name}/candidate/reset",
    operation_id = "adminResetCandidate",
    tag = "admin",
    params(("name" = String, Path, description = "The backend's name.")),
    responses(
        (status = 200, description = "The candidate, re-armed (as `candidate` in \
            `/admin/backends/{name}`).", body = Object),
        (status = 404, description = "No backend of that name, or it has no candidate.", body = ErrorBody),
        (status = 415, description = "A body was sent, and not as JSON.", body = ErrorBody),
        (status = 503, description = "Loading, or the state store is unavailable.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn reset_candidate() {}

/// The backend's recorded calls (`[backends.NAME.record]`), oldest first, one JSON object a line:
/// operation, request, answer, build, the plugin's host calls and its tape (the state it found,
/// its requests and responses), redacted of the backend's secrets. For `platform-gateway replay`.
#[utoipa::path(
    get,
    path = "/admin/recordings/{name}",
    operation_id = "adminRecordings",
    tag = "admin",
    params(("name" = String, Path, description = "The backend's name.")),
    responses(
        (status = 200, description = "One recorded call a line (none yet for a backend that records but has recorded nothing).", content_type = "application/x-ndjson", body = String),
        (status = 404, description = "The backend records nothing and has no recorded calls left.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn recordings() {}

/// Each backend's plugin calls: by outcome since start, in flight and queued now, and one sample
/// per interval over the last minutes (the ring the console draws its charts from).
#[utoipa::path(
    get,
    path = "/admin/activity",
    operation_id = "adminActivity",
    tag = "admin",
    responses(
        (status = 200, description = "`{generation, interval_ms, max_samples, backends: [{name, \
            calls, errors, outcomes: {OUTCOME: count}, in_flight, queued, samples: [{at_ms, calls, \
            errors, mean_ms, max_ms, candidate_calls, candidate_failures}]}]}`: samples are \
            `interval_ms` long (10 s), at most `max_samples` (the last ten minutes), oldest first, \
            only those that saw calls.", body = Object),
        (status = 503, description = "The first generation is still loading.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn activity() {}

/// The provision route table, in order, and the discovery policy.
#[utoipa::path(
    get,
    path = "/admin/routes",
    operation_id = "adminRoutes",
    tag = "admin",
    responses(
        (status = 200, description = "`{routes: [{name, backend, cluster_id, store, store_version, \
            node_group_id, node_class, conditions}], discovery: {on_backend_failure}}`.", body = Object),
        (status = 503, description = "The first generation is still loading.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn routes() {}

/// Where a provision or deprovision request (the body, as Replicante would send it) would go
/// now, and what decided it.
#[utoipa::path(
    post,
    path = "/admin/route",
    operation_id = "adminRoute",
    tag = "admin",
    request_body(
        content(
            (model::ProvisionRequest = "application/json"),
        ),
        description = "A provision request (`NodeProvisionRequest`) or a deprovision request \
            (`NodeDeprovisionRequest`).",
    ),
    responses(
        (status = 200, description = "The backend and what decided it.", body = super::inspect::Explanation),
        (status = 400, description = "The body is not a valid request.", body = ErrorBody),
        (status = 413, description = "The body is over `[server] max_body_size`.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 500, description = "The ownership index could not be read.", body = ErrorBody),
        (status = 503, description = "Loading, or the state store is unavailable.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn route() {}

/// What a provision would do now, with no side effects: the plugin runs in plan mode (state
/// writes go to an overlay, only reads are sent). The plan is saved for `admin.plan_ttl`.
#[utoipa::path(
    post,
    path = "/admin/plan/provision",
    operation_id = "adminPlanProvision",
    tag = "admin",
    params(
        ("Idempotency-Key" = Option<String>, Header, pattern = r"^[\x21-\x7E]{1,255}$",
            description = "As on `POST /provision`: the plan is of the keyed request."),
    ),
    request_body(content = model::ProvisionRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The plan: route, backend, what the endpoint would answer, \
            state writes, requests, where the plugin stopped, `plan_id` and expiry.",
            body = super::plan::PlanAnswer),
        (status = 400, description = "The body is not a valid provision request.", body = ErrorBody),
        (status = 413, description = "The body is over `[server] max_body_size`.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 503, description = "The first generation is still loading.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn plan_provision() {}

/// What a deprovision would do now, with no side effects (see the provision plan).
#[utoipa::path(
    post,
    path = "/admin/plan/deprovision",
    operation_id = "adminPlanDeprovision",
    tag = "admin",
    request_body(content = model::DeprovisionRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The plan.", body = super::plan::PlanAnswer),
        (status = 400, description = "The body is not a valid deprovision request.", body = ErrorBody),
        (status = 413, description = "The body is over `[server] max_body_size`.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 500, description = "The ownership index could not be read.", body = ErrorBody),
        (status = 503, description = "Loading, or the state store is unavailable.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn plan_deprovision() {}

/// The generation being served, when it loaded, the last refused reload, and the history of the
/// last twenty reloads (applied or refused, with the reason).
#[utoipa::path(
    get,
    path = "/admin/generation",
    operation_id = "adminGeneration",
    tag = "admin",
    responses(
        (status = 200, description = "The reload status.", body = crate::reload::ReloadStatus),
    ),
)]
#[allow(dead_code)]
fn generation() {}

/// Which state store the gateway uses and whether it answers, in the store's own words.
#[utoipa::path(
    get,
    path = "/admin/state",
    operation_id = "adminState",
    tag = "admin",
    responses(
        (status = 200, description = "`{store, ready, error?}`.", body = Object),
    ),
)]
#[allow(dead_code)]
fn state() {}

/// Reload the config now; the previous generation keeps serving if the new one is refused.
#[utoipa::path(
    post,
    path = "/admin/reload",
    operation_id = "adminReload",
    tag = "admin",
    responses(
        (status = 200, description = "`{generation}`: the new generation's number.", body = Object),
        (status = 415, description = "A body was sent, and not as JSON.", body = ErrorBody),
        (status = 422, description = "The reload was refused, and why.", body = ErrorBody),
        (status = 503, description = "The first generation is still loading.", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn reload() {}

/// The gateway's metrics, for Prometheus (OpenMetrics when the `Accept` header asks for it).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "admin",
    responses(
        (status = 200, description = "The exposition.", content(
            (String = "text/plain; version=0.0.4; charset=utf-8"),
            (String = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )),
    ),
)]
#[allow(dead_code)]
fn metrics() {}

/// This document.
#[utoipa::path(
    get,
    path = "/admin/openapi.json",
    operation_id = "adminOpenapi",
    tag = "admin",
    responses(
        (status = 200, description = "The admin API's OpenAPI document.", body = Object),
    ),
)]
#[allow(dead_code)]
fn admin_document() {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn schema(document: &Document, name: &str) -> Value {
        serde_json::to_value(&document.components.as_ref().unwrap().schemas[name]).unwrap()
    }

    #[test]
    fn the_id_bound_in_the_document_is_the_validators() {
        let id = schema(&public(), "Id");
        assert_eq!(
            id["maxLength"],
            json!(super::super::validate::MAX_ID_LENGTH)
        );
        assert_eq!(id["minLength"], json!(1));
        assert_eq!(
            schema(&public(), "Text")["maxLength"],
            json!(super::super::validate::MAX_ID_LENGTH)
        );
    }

    /// Characters where regex dialects and Rust disagree on "white space" or "control".
    fn tricky() -> impl Strategy<Value = char> {
        prop_oneof![
            any::<char>(),
            prop::sample::select(vec![
                'a', 'é', ' ', '\t', '\n', '\u{0}', '\u{1f}', '\u{7f}', '\u{85}', '\u{9f}',
                '\u{a0}', '\u{1680}', '\u{180e}', '\u{2000}', '\u{200b}', '\u{2028}', '\u{202f}',
                '\u{205f}', '\u{3000}', '\u{feff}',
            ]),
        ]
    }

    proptest! {
        /// A string matches the `Id` pattern exactly when the validator accepts it as an ID
        /// (within the length bound), and the `Text` pattern exactly when it accepts it as text.
        #[test]
        fn the_patterns_accept_what_the_validator_accepts(
            chars in prop::collection::vec(tricky(), 0..6)
        ) {
            let value: String = chars.into_iter().collect();
            let pattern = |name: &str| {
                let text = schema(&public(), name)["pattern"].as_str().unwrap().to_string();
                regex::Regex::new(&text).unwrap()
            };
            let as_id = super::super::validate::deprovision_request(model::DeprovisionRequest {
                cluster_id: value.clone(),
                node_id: "n".into(),
            });
            prop_assert_eq!(pattern("Id").is_match(&value), as_id.is_ok(), "{:?}", value);
            let as_text = !value.chars().any(char::is_control);
            prop_assert_eq!(pattern("Text").is_match(&value), as_text, "{:?}", value);
        }
    }

    #[test]
    fn the_public_document_shows_nothing_of_the_admin_api() {
        let public = serde_json::to_value(public()).unwrap();
        let paths: Vec<&String> = public["paths"].as_object().unwrap().keys().collect();
        assert_eq!(
            paths,
            [
                "/deprovision",
                "/discover",
                "/healthz",
                "/provision",
                "/readyz"
            ]
        );
        assert!(public["components"].get("securitySchemes").is_none());
        let admin = serde_json::to_value(admin()).unwrap();
        assert_eq!(
            admin["components"]["securitySchemes"]["bearer"]["scheme"],
            json!("bearer")
        );
        assert_eq!(
            admin["security"],
            json!([{ "bearer": [] }, { "mutualTLS": [] }])
        );
    }
}
