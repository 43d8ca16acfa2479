//! `call`'s JSON: requests read with defaults, answers and errors written as the gateway's
//! API would show them.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::model::{self, ProviderError};
use crate::runtime::CallError;

/// The clusters as `GET /discover` answers them (a node whose class the plugin does not know
/// has `""`, as Replicante requires).
pub(super) fn clusters_json(clusters: Vec<model::Cluster>) -> Value {
    json!(crate::api::model::DiscoverResponse::from(clusters))
}

pub(super) fn error_json(error: &CallError) -> Value {
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
pub(super) fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_discover_answers_in_the_apis_shape_with_an_empty_unknown_class() {
        let node = |id: &str, class: Option<&str>| model::Node {
            node_id: id.into(),
            agent_address: "http://10.0.0.1:37000".into(),
            node_class: class.map(str::to_string),
            node_group: None,
        };
        let clusters = vec![model::Cluster {
            cluster_id: "c1".into(),
            nodes: vec![node("m1", Some("small")), node("m2", None)],
        }];
        assert_eq!(
            clusters_json(clusters),
            json!({ "clusters": [{ "cluster_id": "c1", "nodes": [
                { "node_id": "m1", "agent_address": "http://10.0.0.1:37000",
                  "node_class": "small", "node_group": null },
                { "node_id": "m2", "agent_address": "http://10.0.0.1:37000",
                  "node_class": "", "node_group": null },
            ]}]})
        );
    }
}
