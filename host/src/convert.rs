//! The one place where the HTTP models and the plugin contract meet.
//!
//! Requests: the client's provision body is validated and resolved here (the node group, the
//! effective store version, the merged attributes, the count) so that every plugin receives the
//! same checked input. Replies: plugin output is checked against the specification before it
//! reaches the client, and every failure becomes an [`ApiError`] naming the backend.

use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::model;
use crate::routing::{BackendId, RouteKey};
use crate::runtime::{CallError, wit};

/// Validate a provision body and resolve what the plugin gets.
pub fn provision_request(
    request: model::ProvisionRequest,
) -> Result<wit::ProvisionRequest, ApiError> {
    let model::ProvisionRequest { cluster, provision } = request;
    non_empty("cluster.cluster_id", &cluster.cluster_id)?;
    non_empty("cluster.store", &cluster.store)?;
    non_empty("provision.node_group_id", &provision.node_group_id)?;
    let Some(group) = cluster.nodes.get(&provision.node_group_id) else {
        let defined: Vec<&String> = cluster.nodes.keys().collect();
        return Err(ApiError::bad_request(format!(
            "node group `{}` is not defined in cluster.nodes",
            provision.node_group_id
        ))
        .with_cause(if defined.is_empty() {
            "cluster.nodes defines no group".to_string()
        } else {
            format!(
                "defined node groups: {}",
                defined
                    .iter()
                    .map(|g| g.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .with_field("node_groups", json!(defined)));
    };
    let store_version = match (&group.version, &group.store_version) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request(format!(
                "node group `{}` has `version` {a:?} and `store_version` {b:?}; they must agree",
                provision.node_group_id
            )));
        }
        (Some(v), _) | (None, Some(v)) => v.clone(),
        (None, None) => cluster.store_version.clone(),
    };
    non_empty("store_version", &store_version)?;
    let count = provision.count.unwrap_or(1);
    if count == 0 {
        return Err(ApiError::bad_request("provision.count must be at least 1"));
    }
    let mut attributes = Value::Object(cluster.attributes.unwrap_or_default());
    if let Some(group_attributes) = &group.attributes {
        json_patch::merge(&mut attributes, &Value::Object(group_attributes.clone()));
    }
    Ok(wit::ProvisionRequest {
        cluster_id: cluster.cluster_id,
        store: cluster.store,
        store_version,
        node_group: provision.node_group_id,
        node_class: group.node_class.clone(),
        desired_count: group.desired_count,
        count,
        attributes: attributes.to_string(),
    })
}

/// Validate a deprovision body.
pub fn deprovision_request(
    request: model::DeprovisionRequest,
) -> Result<wit::DeprovisionRequest, ApiError> {
    non_empty("cluster_id", &request.cluster_id)?;
    non_empty("node_id", &request.node_id)?;
    Ok(wit::DeprovisionRequest {
        cluster_id: request.cluster_id,
        node_id: request.node_id,
    })
}

/// What the route table matches a resolved provision request on.
pub fn route_key(request: &wit::ProvisionRequest) -> RouteKey<'_> {
    RouteKey {
        cluster_id: &request.cluster_id,
        store: &request.store,
        store_version: &request.store_version,
        node_group_id: &request.node_group,
        node_class: &request.node_class,
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        Err(ApiError::bad_request(format!(
            "`{field}` must not be empty"
        )))
    } else {
        Ok(())
    }
}

/// Check a plugin's provision answer against the specification and the request.
pub fn provision_response(
    backend: &BackendId,
    request: &wit::ProvisionRequest,
    response: wit::ProvisionResponse,
) -> Result<model::ProvisionResponse, ApiError> {
    let invalid = |what: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("backend `{backend}` returned an invalid provision answer"),
        )
        .with_cause(what)
    };
    if response.count == 0 || response.count > request.count {
        return Err(invalid(format!(
            "count {} is outside 1..={} (the requested count)",
            response.count, request.count
        )));
    }
    if let Some(ids) = &response.node_ids {
        if ids.len() != response.count as usize {
            return Err(invalid(format!(
                "{} node IDs for a count of {}",
                ids.len(),
                response.count
            )));
        }
        check_node_ids(ids.iter().map(String::as_str)).map_err(invalid)?;
    }
    Ok(model::ProvisionResponse {
        count: response.count,
        node_ids: response.node_ids,
    })
}

/// Every ID non-empty and distinct.
fn check_node_ids<'a>(ids: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = HashSet::new();
    for id in ids {
        if id.is_empty() {
            return Err("a node ID is empty".to_string());
        }
        if !seen.insert(id) {
            return Err(format!("node ID `{id}` appears twice"));
        }
    }
    Ok(())
}

/// Check one backend's discovery answer: non-empty IDs, no node twice in a cluster.
pub fn check_discovery(backend: &BackendId, clusters: &[wit::Cluster]) -> Result<(), ApiError> {
    let mut seen = HashSet::new();
    for cluster in clusters {
        let problem = if cluster.cluster_id.is_empty() {
            Some("a cluster ID is empty".to_string())
        } else if !seen.insert(cluster.cluster_id.as_str()) {
            Some(format!("cluster `{}` is listed twice", cluster.cluster_id))
        } else if let Some(node) = cluster.nodes.iter().find(|n| n.agent_address.is_empty()) {
            Some(format!(
                "cluster `{}`: node `{}` has no agent address",
                cluster.cluster_id, node.node_id
            ))
        } else {
            check_node_ids(cluster.nodes.iter().map(|n| n.node_id.as_str()))
                .err()
                .map(|e| format!("cluster `{}`: {e}", cluster.cluster_id))
        };
        if let Some(problem) = problem {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("backend `{backend}` returned an invalid discovery answer"),
            )
            .with_cause(problem));
        }
    }
    Ok(())
}

/// A discovered node, as the client reads it.
pub fn discovered_node(node: wit::Node) -> model::ClusterDiscoveryNode {
    model::ClusterDiscoveryNode {
        agent_address: node.agent_address,
        node_id: node.node_id,
        node_class: node.node_class,
        node_group: node.node_group,
    }
}

/// The reply for a failed call of `backend`.
pub fn call_error(backend: &BackendId, operation: &str, error: CallError) -> ApiError {
    let (status, message) = match &error {
        CallError::Plugin(e) => {
            let (status, message) = match e {
                wit::Error::InvalidRequest(m) => (StatusCode::BAD_REQUEST, m),
                wit::Error::NotFound(m) => (StatusCode::NOT_FOUND, m),
                wit::Error::Conflict(m) => (StatusCode::CONFLICT, m),
                wit::Error::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
                wit::Error::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
            };
            (status, format!("backend `{backend}`: {message}"))
        }
        CallError::Timeout(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("backend `{backend}` {error} ({operation})"),
        ),
        CallError::Busy(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("backend `{backend}` {error} ({operation})"),
        ),
        CallError::OutOfMemory(_) | CallError::Trap(_) | CallError::TooLarge { .. } => (
            StatusCode::BAD_GATEWAY,
            format!("backend `{backend}` {error} ({operation})"),
        ),
        CallError::Host(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("backend `{backend}` {error} ({operation})"),
        ),
    };
    let reply = ApiError::new(status, message);
    match error {
        CallError::Busy(_) | CallError::Plugin(wit::Error::Unavailable(_)) => {
            reply.with_retry_after(1)
        }
        _ => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn request(body: Value) -> Result<wit::ProvisionRequest, ApiError> {
        provision_request(serde_json::from_value(body).expect("decodes"))
    }

    fn seed_body() -> Value {
        json!({
            "cluster": {
                "cluster_id": "c1",
                "store": "mongodb",
                "store_version": "4.0",
                "attributes": { "a": 1, "nested": { "x": 1, "y": 2 }, "gone": true },
                "nodes": {
                    "data": {
                        "attributes": { "b": 2, "nested": { "y": 3 }, "gone": null },
                        "desired_count": 3,
                        "node_class": "small",
                        "version": "4.2"
                    },
                    "arbiter": { "desired_count": 1, "node_class": "tiny" }
                }
            },
            "provision": { "node_group_id": "data" }
        })
    }

    #[test]
    fn seed_request_resolves_group_version_count_and_merged_attributes() {
        let r = request(seed_body()).unwrap();
        assert_eq!(r.node_group, "data");
        assert_eq!(r.node_class, "small");
        assert_eq!(r.store_version, "4.2");
        assert_eq!(r.count, 1);
        assert_eq!(r.desired_count, 3);
        let attributes: Value = serde_json::from_str(&r.attributes).unwrap();
        // RFC 7396: group on top of cluster, nested objects merged, null removes.
        assert_eq!(
            attributes,
            json!({ "a": 1, "b": 2, "nested": { "x": 1, "y": 3 } })
        );
    }

    #[test]
    fn group_without_version_uses_the_cluster_version() {
        let mut body = seed_body();
        body["provision"]["node_group_id"] = json!("arbiter");
        let r = request(body).unwrap();
        assert_eq!(r.store_version, "4.0");
        let attributes: Value = serde_json::from_str(&r.attributes).unwrap();
        assert_eq!(
            attributes,
            json!({ "a": 1, "nested": { "x": 1, "y": 2 }, "gone": true })
        );
    }

    #[test]
    fn newer_store_version_and_count_are_accepted() {
        let mut body = seed_body();
        let group = &mut body["cluster"]["nodes"]["data"];
        group.as_object_mut().unwrap().remove("version");
        group["store_version"] = json!("5.0");
        body["provision"]["count"] = json!(3);
        let r = request(body).unwrap();
        assert_eq!(r.store_version, "5.0");
        assert_eq!(r.count, 3);
    }

    #[test]
    fn both_version_names_must_agree() {
        let mut body = seed_body();
        body["cluster"]["nodes"]["data"]["store_version"] = json!("4.2");
        assert!(request(body.clone()).is_ok());
        body["cluster"]["nodes"]["data"]["store_version"] = json!("5.0");
        let e = request(body).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("must agree"), "{}", e.message);
    }

    #[test]
    fn absent_attributes_are_an_empty_object() {
        let mut body = seed_body();
        body["cluster"]
            .as_object_mut()
            .unwrap()
            .remove("attributes");
        body["provision"]["node_group_id"] = json!("arbiter");
        assert_eq!(request(body).unwrap().attributes, "{}");
    }

    #[test]
    fn unknown_group_lists_the_defined_groups() {
        let mut body = seed_body();
        body["provision"]["node_group_id"] = json!("shard");
        let e = request(body).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["node_groups"], json!(["arbiter", "data"]));
        assert!(e.message.contains("`shard`"));
    }

    #[test]
    fn zero_count_and_empty_ids_are_refused() {
        let mut body = seed_body();
        body["provision"]["count"] = json!(0);
        assert_eq!(request(body).unwrap_err().status, StatusCode::BAD_REQUEST);
        let mut body = seed_body();
        body["cluster"]["cluster_id"] = json!("");
        assert!(request(body).unwrap_err().message.contains("cluster_id"));
    }

    #[test]
    fn provision_answers_are_checked() {
        let backend = BackendId::new("pool").unwrap();
        let mut body = seed_body();
        body["provision"]["count"] = json!(2);
        let req = request(body).unwrap();
        let answer = |count, ids: Option<Vec<&str>>| wit::ProvisionResponse {
            count,
            node_ids: ids.map(|ids| ids.into_iter().map(String::from).collect()),
        };
        assert!(provision_response(&backend, &req, answer(2, Some(vec!["a", "b"]))).is_ok());
        assert!(provision_response(&backend, &req, answer(1, None)).is_ok());
        for bad in [
            answer(0, None),
            answer(3, None),
            answer(2, Some(vec!["a"])),
            answer(2, Some(vec!["a", "a"])),
            answer(2, Some(vec!["a", ""])),
        ] {
            let e = provision_response(&backend, &req, bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_GATEWAY);
            assert!(e.message.contains("backend `pool`"));
        }
    }

    #[test]
    fn call_errors_map_to_statuses_naming_the_backend() {
        let b = BackendId::new("pool").unwrap();
        let cases = [
            (
                CallError::Plugin(wit::Error::InvalidRequest("x".into())),
                400,
            ),
            (CallError::Plugin(wit::Error::NotFound("x".into())), 404),
            (CallError::Plugin(wit::Error::Conflict("x".into())), 409),
            (CallError::Plugin(wit::Error::Unavailable("x".into())), 503),
            (CallError::Plugin(wit::Error::Internal("x".into())), 500),
            (CallError::Timeout(Duration::from_secs(1)), 504),
            (CallError::OutOfMemory(1 << 20), 502),
            (CallError::Trap("unreachable".into()), 502),
            (CallError::Busy(4), 503),
            (CallError::TooLarge { size: 9, limit: 1 }, 502),
            (CallError::Host("no slot".into()), 500),
        ];
        for (error, status) in cases {
            let e = call_error(&b, "provision", error);
            assert_eq!(e.status.as_u16(), status, "{}", e.message);
            assert!(e.message.contains("backend `pool`"), "{}", e.message);
        }
    }

    #[test]
    fn discovery_answers_are_checked() {
        let b = BackendId::new("pool").unwrap();
        let node = |id: &str| wit::Node {
            node_id: id.into(),
            agent_address: "a".into(),
            node_class: String::new(),
            node_group: None,
        };
        let cluster = |nodes| wit::Cluster {
            cluster_id: "c".into(),
            nodes,
        };
        assert!(check_discovery(&b, &[cluster(vec![node("a"), node("b")])]).is_ok());
        assert!(check_discovery(&b, &[cluster(vec![node("a"), node("a")])]).is_err());
        assert!(check_discovery(&b, &[cluster(vec![node("")])]).is_err());
        let twice = [cluster(vec![node("a")]), cluster(vec![node("b")])];
        assert!(check_discovery(&b, &twice).is_err());
        let mut no_address = node("a");
        no_address.agent_address.clear();
        assert!(check_discovery(&b, &[cluster(vec![no_address])]).is_err());
    }
}
