//! Recordings: a backend's real calls, kept so that a new build can be tried on them offline
//! (`platform-gateway replay`) before it serves. Opt-in per backend (`[backends.NAME.record]`);
//! each call's entry holds the operation, the request, the answer, the plugin's host calls in
//! order and its [`TapeRecord`] (the state it found, its requests and their responses), all
//! redacted of the backend's secrets before the entry leaves the call. Entries go to a bounded
//! ring on local disk ([`ring`]), off the call's path: a full queue drops an entry (counted),
//! never slows a call.

pub mod ring;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toml::Spanned;

use crate::capability::call::Event;
use crate::capability::tape::TapeRecord;
use crate::config_file::{ConfigError, Source};
use crate::model::{self, ProviderError};

pub use ring::{Lazy, Recordings};

/// The version of an entry's shape; a replay refuses entries of another.
pub const FORMAT: u32 = 1;
/// The most calls one backend's ring may keep.
pub const MAX_CALLS: u64 = 1_000_000;
/// The default bound on a ring's bytes.
pub const DEFAULT_BYTES: u64 = 64 << 20;

/// How much of a backend's traffic to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordConfig {
    /// The most calls the ring keeps; older ones go first.
    pub calls: u64,
    /// The most bytes of entries the ring keeps.
    pub bytes: u64,
}

/// `[backends.NAME.record]` (or the top-level `[record]`, every backend's default) as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecord {
    calls: Spanned<u64>,
    bytes: Option<Spanned<ByteSize>>,
}

/// Check a `record` table: a backend's (`table` is `backends.NAME.record`) or the default
/// of every backend (`record`).
pub(crate) fn parse(
    raw: RawRecord,
    table: &str,
    source: &Source,
) -> Result<RecordConfig, ConfigError> {
    let calls = *raw.calls.get_ref();
    if !(1..=MAX_CALLS).contains(&calls) {
        return Err(source.invalid(
            raw.calls.span(),
            format!("{table}.calls"),
            format!("must be between 1 and {MAX_CALLS}"),
        ));
    }
    let bytes = match raw.bytes {
        None => DEFAULT_BYTES,
        Some(bytes) if !(1 << 20..=16 << 30).contains(&bytes.get_ref().as_u64()) => {
            return Err(source.invalid(
                bytes.span(),
                format!("{table}.bytes"),
                "must be between 1MiB and 16GiB",
            ));
        }
        Some(bytes) => bytes.get_ref().as_u64(),
    };
    Ok(RecordConfig { calls, bytes })
}

/// The plugin build that answered a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// The component's SHA-256.
    pub digest: String,
    /// The contract version it implements.
    pub contract: String,
    /// `stable`, or `candidate`.
    pub version: String,
}

/// One recorded call, as a line of `GET /admin/recordings/NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// [`FORMAT`].
    pub format: u32,
    /// Its place in the backend's ring (set when it is written).
    #[serde(default)]
    pub seq: u64,
    /// When the call ended (RFC 3339).
    pub at: String,
    /// The backend.
    pub backend: String,
    /// `discover`, `provision` or `deprovision`.
    pub operation: String,
    /// The request, as [`request_json`] writes it (`null` for discover).
    pub request: Value,
    /// What the plugin answered: `{"ok": ...}` or `{"error": {"case", "message"}}`.
    pub answer: Value,
    /// Which build answered.
    pub build: Build,
    /// How long the call took, in milliseconds.
    pub duration_ms: f64,
    /// The plugin's host calls that are effects or log lines, in order (its reads and listings
    /// are in `tape`, with what they found).
    pub events: Vec<Event>,
    /// Host calls past the transcript's bound, not kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_events: u64,
    /// What the call saw of the world.
    pub tape: TapeRecord,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A provision request as an entry holds it.
pub fn provision_json(request: &model::ProvisionRequest) -> Value {
    json!({
        "request_id": request.request_id,
        "cluster_id": request.cluster_id,
        "store": request.store,
        "store_version": request.store_version,
        "node_group": request.node_group,
        "node_class": request.node_class,
        "desired_count": request.desired_count,
        "count": request.count,
        "attributes": request.attributes,
    })
}

/// A deprovision request as an entry holds it.
pub fn deprovision_json(request: &model::DeprovisionRequest) -> Value {
    json!({ "cluster_id": request.cluster_id, "node_id": request.node_id })
}

fn text(value: &Value, key: &str) -> Result<String, String> {
    value[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("the request has no string `{key}`"))
}

fn number(value: &Value, key: &str) -> Result<u32, String> {
    value[key]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("the request has no whole number `{key}`"))
}

/// The provision request an entry holds.
pub fn provision_request(value: &Value) -> Result<model::ProvisionRequest, String> {
    Ok(model::ProvisionRequest {
        request_id: text(value, "request_id")?,
        cluster_id: text(value, "cluster_id")?,
        store: text(value, "store")?,
        store_version: text(value, "store_version")?,
        node_group: text(value, "node_group")?,
        node_class: text(value, "node_class")?,
        desired_count: number(value, "desired_count")?,
        count: number(value, "count")?,
        attributes: text(value, "attributes")?,
    })
}

/// The deprovision request an entry holds.
pub fn deprovision_request(value: &Value) -> Result<model::DeprovisionRequest, String> {
    Ok(model::DeprovisionRequest {
        cluster_id: text(value, "cluster_id")?,
        node_id: text(value, "node_id")?,
    })
}

/// Clusters as an answer holds them (every field, as the plugin gave it).
pub fn clusters_json(clusters: &[model::Cluster]) -> Value {
    Value::Array(
        clusters
            .iter()
            .map(|cluster| {
                json!({
                    "cluster_id": cluster.cluster_id,
                    "nodes": cluster.nodes.iter().map(|node| json!({
                        "node_id": node.node_id,
                        "agent_address": node.agent_address,
                        "node_class": node.node_class,
                        "node_group": node.node_group,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// A provision's answer as an entry holds it.
pub fn provisioned_json(response: &model::ProvisionResponse) -> Value {
    json!({ "count": response.count, "node_ids": response.node_ids })
}

/// A plugin's error (or the host's, `case` then naming the outcome) as an entry holds it.
pub fn error_json(case: &str, message: &str, error: Option<&ProviderError>) -> Value {
    let mut value = json!({ "error": { "case": case, "message": message } });
    if let Some(ProviderError::Unavailable {
        retry_after: Some(seconds),
        ..
    }) = error
    {
        value["error"]["retry_after_seconds"] = json!(seconds);
    }
    value
}

/// What `at` an entry ending now holds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
