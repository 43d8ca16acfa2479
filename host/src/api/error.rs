//! The one error type of the HTTP API, and the JSON extractor whose rejections use it.
//!
//! Every non-2xx reply, axum's own rejections, 404s and 405s included, has the body Replicante
//! Core decodes: `{"error": true, "error_msg": ..., "error_cause": ...}` (`error_cause` only
//! when there is one), plus optional extra fields. Logging of errors happens in the request middleware, not here.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::strict::Object;
use crate::gateway::Error;
use crate::model::ProviderError;
use crate::runtime::CallError;
use crate::state::StateError;

/// An error reply.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `error_msg`: what went wrong, for the operator reading Replicante's logs.
    pub message: String,
    /// `error_cause`: the root cause, when there is one worth separating.
    pub cause: Option<String>,
    /// `node_groups`: the defined node groups, when the requested one is not among them (boxed,
    /// like `detail`).
    pub node_groups: Option<Box<[String]>>,
    /// Extra top-level fields.
    pub extra: Map<String, Value>,
    /// A `Retry-After` hint, in seconds.
    pub retry_after: Option<u32>,
    /// For the log only, never the body: what the client must not see (the state store's
    /// endpoints). Boxed to keep the error small: it is returned by value everywhere.
    pub detail: Option<Box<str>>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            cause: None,
            node_groups: None,
            extra: Map::new(),
            retry_after: None,
            detail: None,
        }
    }

    /// 400: the request is not valid.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// Add the root cause.
    pub fn with_cause(mut self, cause: impl Into<String>) -> ApiError {
        self.cause = Some(cause.into());
        self
    }

    /// Add the defined node groups (`node_groups`).
    pub fn with_node_groups(mut self, groups: Vec<String>) -> ApiError {
        self.node_groups = Some(groups.into_boxed_slice());
        self
    }

    /// Add an extra top-level field (one of the shape's own names is ignored).
    pub fn with_field(mut self, name: &str, value: Value) -> ApiError {
        self.extra.insert(name.to_string(), value);
        self
    }

    /// Add a `Retry-After` hint.
    pub fn with_retry_after(mut self, seconds: u32) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    /// The JSON body of the reply.
    pub fn body(&self) -> Value {
        let shape = ErrorBody {
            error: true,
            error_msg: self.message.clone(),
            error_cause: self.cause.clone(),
            node_groups: self.node_groups.as_deref().map(<[String]>::to_vec),
            extra: Map::new(),
        };
        let mut body = serde_json::to_value(shape).expect("an error body serializes");
        let object = body.as_object_mut().expect("a JSON object");
        for (name, value) in &self.extra {
            object.entry(name.clone()).or_insert_with(|| value.clone());
        }
        body
    }
}

/// The body of every error reply (`ApiError::body`), in the shape Replicante Core decodes.
/// Further fields may appear: clients must read past them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `true`.
    #[schema(schema_with = always_true)]
    pub error: bool,
    /// What went wrong, for the operator reading Replicante's logs.
    #[schema(min_length = 1)]
    pub error_msg: String,
    /// The root cause, when there is one worth separating.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub error_cause: Option<String>,
    /// On a 400 for a `node_group_id` that `cluster.nodes` does not define: the groups it does
    /// define (the reference platform's extra field).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<String>, required = false)]
    pub node_groups: Option<Vec<String>>,
    /// Further fields ([`ApiError::with_field`]); they never replace the ones above.
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

/// The schema of `error`: the constant `true`.
fn always_true() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Boolean)
        .enum_values(Some([true]))
        .description(Some("Always `true`."))
        .build()
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cause {
            Some(cause) => write!(f, "{}: {}", self.message, cause)?,
            None => f.write_str(&self.message)?,
        }
        match &self.detail {
            Some(detail) => write!(f, " [{detail}]"),
            None => Ok(()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // Let the logging middleware see the message without parsing the body.
        response.extensions_mut().insert(self);
        response
    }
}

/// The one mapping from what went wrong to the HTTP status (the README's status table).
impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let status = match &error {
            Error::Loading => StatusCode::SERVICE_UNAVAILABLE,
            Error::NoRoute { .. } | Error::KeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Call { error, .. } => call_status(error),
            Error::InvalidAnswer { .. } | Error::DiscoveryFailed { .. } => StatusCode::BAD_GATEWAY,
            Error::DiscoveryUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::NodeNotFound { .. } => StatusCode::NOT_FOUND,
            Error::NodeClaimed { .. } | Error::PlanRefused { .. } => StatusCode::CONFLICT,
            Error::OwnerNotLoaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::State {
                error: StateError::Unavailable(_),
                ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            Error::State { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry = match &error {
            Error::Loading
            | Error::DiscoveryUnavailable { .. }
            | Error::State {
                error: StateError::Unavailable(_),
                ..
            } => true,
            Error::Call { error, .. } => error.is_retryable(),
            _ => false,
        };
        let mut reply = ApiError::new(status, error.to_string());
        if let Some(cause) = error.cause() {
            reply = reply.with_cause(cause);
        }
        reply.detail = error.detail().map(String::into_boxed_str);
        if retry {
            // The plugin's own hint when it gave one (0.2's `unavailable`), else a second.
            let hint = match &error {
                Error::Call { error, .. } => error.retry_after(),
                _ => None,
            };
            reply = reply.with_retry_after(hint.unwrap_or(1));
        }
        reply
    }
}

fn call_status(error: &CallError) -> StatusCode {
    match error {
        CallError::Plugin(e) => match e {
            ProviderError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ProviderError::NotFound(_) => StatusCode::NOT_FOUND,
            ProviderError::Conflict(_) => StatusCode::CONFLICT,
            ProviderError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ProviderError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProviderError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        },
        CallError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        CallError::Busy(_) | CallError::PoolExhausted => StatusCode::SERVICE_UNAVAILABLE,
        CallError::OutOfMemory(_) | CallError::Trap(_) | CallError::TooLarge { .. } => {
            StatusCode::BAD_GATEWAY
        }
        CallError::Host(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let status = match &rejection {
            // axum answers a body that decodes as JSON but not as the model with 422; the
            // specification's clients expect 400 for an invalid attribute.
            JsonRejection::JsonDataError(_) => StatusCode::BAD_REQUEST,
            other => other.status(),
        };
        let message = match &rejection {
            JsonRejection::JsonDataError(_) => "invalid request body",
            JsonRejection::JsonSyntaxError(_) => "request body is not valid JSON",
            JsonRejection::MissingJsonContentType(_) => {
                "request body must be JSON (Content-Type: application/json)"
            }
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "request body is too large",
            _ => "cannot read request body",
        };
        ApiError::new(status, message).with_cause(rejection_cause(&rejection))
    }
}

/// The innermost, most specific message of a rejection ("missing field `store` at line 1").
fn rejection_cause(rejection: &JsonRejection) -> String {
    if let JsonRejection::MissingJsonContentType(_) = rejection {
        // axum's own text is a sentence ("Expected request with `Content-Type: ...`"), not a
        // cause: cutting it at ": " left `application/json\``.
        return "the Content-Type header is missing or is not application/json".into();
    }
    let text = rejection.body_text();
    // axum prefixes the serde message with a generic sentence ending in ": ".
    match text.split_once(": ") {
        Some((_, detail)) if !detail.is_empty() => detail.to_string(),
        _ => text,
    }
}

/// `axum::Json`, but its rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A body must arrive within the listener's body deadline (a stalled client gets 408
        // rather than holding the connection). Both listeners' routers carry their
        // `[server] body_timeout` (see `crate::serve`); a router without it (a unit test's)
        // gets that setting's default, never a number of its own.
        let deadline = req
            .extensions()
            .get::<super::BodyTimeout>()
            .copied()
            .unwrap_or_default()
            .0;
        if !is_json(req.headers()) {
            return Err(JsonRejection::MissingJsonContentType(Default::default()).into());
        }
        let metrics = req
            .extensions()
            .get::<std::sync::Arc<crate::metrics::Metrics>>()
            .cloned();
        let bytes =
            match tokio::time::timeout(deadline, axum::body::Bytes::from_request(req, state)).await
            {
                Ok(bytes) => bytes.map_err(JsonRejection::from)?,
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("the request body did not arrive within {deadline:?}"),
                    ));
                }
            };
        // Fields this gateway does not know are read past, not refused: Replicante's own models
        // ignore what they do not know, and a newer Core that sends a new field must not be
        // refused by every gateway until it is upgraded. Each is counted, and logged once.
        let mut unknown = Vec::new();
        // A body is a JSON object, never an array of the model's fields (see `strict`).
        let decoded =
            serde_ignored::deserialize(&mut serde_json::Deserializer::from_slice(&bytes), |path| {
                unknown.push(path.to_string())
            });
        match decoded {
            Ok(Object(value)) => {
                if !unknown.is_empty() {
                    note_unknown_fields(&unknown, metrics.as_deref());
                }
                Ok(ApiJson(value))
            }
            // axum's decoder again, for its error with the path to the offending field.
            Err(_) => Ok(ApiJson(axum::Json::<Object<T>>::from_bytes(&bytes)?.0.0)),
        }
    }
}

/// Whether the request says its body is JSON (`application/json` or `application/...+json`).
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(kind) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = kind.split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The unknown field names logged so far, at most [`MAX_NOTED_FIELDS`] (the names come from
/// clients: the set must not grow without bound).
static NOTED_FIELDS: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
    std::sync::Mutex::new(None);
const MAX_NOTED_FIELDS: usize = 256;

/// Count request fields the gateway ignored, and log each name the first time it is seen.
fn note_unknown_fields(paths: &[String], metrics: Option<&crate::metrics::Metrics>) {
    if let Some(metrics) = metrics {
        metrics.record_unknown_fields(paths.len() as u64);
    }
    let mut noted = NOTED_FIELDS.lock().unwrap_or_else(|e| e.into_inner());
    let noted = noted.get_or_insert_with(Default::default);
    for path in paths {
        if noted.len() >= MAX_NOTED_FIELDS || noted.contains(path) {
            continue;
        }
        // A field name is client input: at most 100 characters of it, escaped by `?`.
        let shown: String = path.chars().take(100).collect();
        tracing::info!(
            field = ?shown,
            "a request carried a field this gateway does not know; it was ignored (logged once \
             per field name)"
        );
        noted.insert(path.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_body_written_as_an_array_of_the_fields_is_refused() {
        let decode = |body: &'static str| async move {
            let request = axum::http::Request::builder()
                .method("POST")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap();
            ApiJson::<super::super::model::DeprovisionRequest>::from_request(request, &()).await
        };
        assert!(
            decode(r#"{"cluster_id": "c1", "node_id": "m1"}"#)
                .await
                .is_ok()
        );
        // serde's derived decoder reads this as the same request.
        let refused = decode(r#"["c1", "m1"]"#).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(
            refused
                .cause
                .as_deref()
                .unwrap()
                .contains("expected a JSON object"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn a_body_that_is_not_json_has_a_clean_cause() {
        let request = axum::http::Request::builder()
            .method("POST")
            .header("content-type", "text/plain")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        let rejection = axum::Json::<serde_json::Value>::from_request(request, &())
            .await
            .unwrap_err();
        let cause = rejection_cause(&rejection);
        assert_eq!(
            cause,
            "the Content-Type header is missing or is not application/json"
        );
        assert!(!cause.contains('`'));
    }

    #[test]
    fn body_has_the_error_shape() {
        let e = ApiError::bad_request("node group `x` is not defined")
            .with_cause("defined groups: a, b")
            .with_node_groups(vec!["a".into(), "b".into()]);
        assert_eq!(
            e.body(),
            json!({
                "error": true,
                "error_msg": "node group `x` is not defined",
                "error_cause": "defined groups: a, b",
                "node_groups": ["a", "b"],
            })
        );
    }

    #[test]
    fn extra_fields_never_override_the_shape() {
        let e = ApiError::bad_request("m").with_field("error_msg", json!("other"));
        assert_eq!(e.body()["error_msg"], json!("m"));
    }

    #[test]
    fn cause_is_omitted_when_absent() {
        let body = ApiError::new(StatusCode::NOT_FOUND, "gone").body();
        assert!(body.get("error_cause").is_none());
        assert_eq!(body["error"], json!(true));
    }

    #[test]
    fn call_errors_map_to_statuses_naming_the_backend() {
        let cases = [
            (
                CallError::Plugin(ProviderError::InvalidRequest("x".into())),
                400,
            ),
            (CallError::Plugin(ProviderError::NotFound("x".into())), 404),
            (CallError::Plugin(ProviderError::Conflict("x".into())), 409),
            (
                CallError::Plugin(ProviderError::Unavailable {
                    message: "x".into(),
                    retry_after: None,
                }),
                503,
            ),
            (
                CallError::Plugin(ProviderError::Unsupported("x".into())),
                501,
            ),
            (CallError::Plugin(ProviderError::Internal("x".into())), 500),
            (CallError::Timeout(std::time::Duration::from_secs(1)), 504),
            (CallError::OutOfMemory(1 << 20), 502),
            (CallError::Trap("unreachable".into()), 502),
            (CallError::Busy(4), 503),
            (CallError::PoolExhausted, 503),
            (CallError::TooLarge { size: 9, limit: 1 }, 502),
            (CallError::Host("no slot".into()), 500),
        ];
        for (error, status) in cases {
            let e = ApiError::from(Error::Call {
                backend: crate::model::BackendId::new("pool").unwrap(),
                operation: "provision",
                error,
            });
            assert_eq!(e.status.as_u16(), status, "{}", e.message);
            assert!(e.message.contains("backend `pool`"), "{}", e.message);
            assert_eq!(e.retry_after.is_some(), status == 503, "{}", e.message);
        }
    }

    #[test]
    fn an_unreachable_state_store_is_503_with_retry_after_and_a_failed_one_500() {
        let e = ApiError::from(Error::State {
            what: "recording",
            error: StateError::Unavailable(
                "etcd at https://etcd-0.internal:2379: no answer within 2s".into(),
            ),
        });
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after, Some(1));
        // The client hears that the store is unavailable, never where it lives; the log line
        // (the error's `Display`) has the store's own words.
        let body = e.body().to_string();
        assert!(body.contains("state store is unavailable"), "{body}");
        assert!(!body.contains("etcd-0.internal"), "{body}");
        assert!(e.to_string().contains("etcd-0.internal:2379"), "{e}");
        let e = ApiError::from(Error::State {
            what: "recording",
            error: StateError::Storage("disk on fire at /var/secret/path".into()),
        });
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.body().to_string().contains("/var/secret"), "{e:?}");
        assert!(e.to_string().contains("/var/secret"), "{e}");
    }

    #[tokio::test]
    async fn response_carries_status_body_and_retry_hint() {
        let response = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy")
            .with_retry_after(2)
            .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body, json!({ "error": true, "error_msg": "busy" }));
    }
}
