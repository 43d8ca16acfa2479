//! Validation of the Platform API's request bodies: the client's provision body is checked and
//! resolved here (the node group, the effective store version, the merged attributes, the count),
//! so every plugin receives the same checked input and bad input stops with a 400 before any
//! plugin is called.

use serde_json::Value;

use super::error::ApiError;
use super::model;
use crate::model as domain;

/// Validate a provision body and resolve what the plugin gets.
pub fn provision_request(
    request: model::ProvisionRequest,
    idempotency_key: Option<&str>,
) -> Result<domain::ProvisionRequest, ApiError> {
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
        .with_node_groups(defined.into_iter().cloned().collect()));
    };
    // Every class and version given is bounded text, in every group, used or not: the OpenAPI
    // document promises it.
    text("cluster.store_version", &cluster.store_version)?;
    for group in cluster.nodes.values() {
        text("node_class", &group.node_class)?;
        for (field, version) in [
            ("version", &group.version),
            ("store_version", &group.store_version),
        ] {
            if let Some(version) = version {
                text(field, version)?;
            }
        }
    }
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
    Ok(domain::ProvisionRequest {
        request_id: request_id(idempotency_key, &cluster.cluster_id),
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
) -> Result<domain::DeprovisionRequest, ApiError> {
    non_empty("cluster_id", &request.cluster_id)?;
    non_empty("node_id", &request.node_id)?;
    Ok(domain::DeprovisionRequest {
        cluster_id: request.cluster_id,
        node_id: request.node_id,
    })
}

/// The longest `Idempotency-Key` header accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The client's `Idempotency-Key` header, if it sent one: visible ASCII, at most
/// [`MAX_IDEMPOTENCY_KEY`] bytes.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(format!(
            "the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        ))
    };
    let key = value
        .to_str()
        .map_err(|_| bad())?
        .trim_matches(|c| c == '"');
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(key))
}

/// The ID a plugin gets for a provision request: derived from the client's idempotency key and
/// the cluster when there is a key (the same on every retry with that key, and two clusters'
/// keys never collide), else new. 34 characters of `[a-z0-9-]`, as EC2's `ClientToken` and most
/// APIs' idempotency keys accept.
fn request_id(idempotency_key: Option<&str>, cluster_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let (tag, digest) = match idempotency_key {
        Some(key) => {
            let mut hash = Sha256::new();
            hash.update(cluster_id.as_bytes());
            hash.update([0]);
            hash.update(key.as_bytes());
            ("k", hash.finalize())
        }
        None => {
            let mut random = [0u8; 16];
            getrandom::fill(&mut random).expect("the operating system's random source");
            ("r", Sha256::digest(random))
        }
    };
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{tag}-{hex}")
}

pub use super::model::MAX_ID_LENGTH;

/// An ID or name: not empty, not only white space, at most [`MAX_ID_LENGTH`] bytes, no control
/// characters.
fn non_empty(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::bad_request(format!(
            "`{field}` must not be empty or only white space"
        )));
    }
    text(field, value)
}

/// Free text that may be empty (a node class): bounded, no control characters.
fn text(field: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_ID_LENGTH {
        return Err(ApiError::bad_request(format!(
            "`{field}` is {} bytes long; at most {MAX_ID_LENGTH} are accepted",
            value.len()
        )));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(ApiError::bad_request(format!(
            "`{field}` contains the control character {c:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;

    fn request(body: Value) -> Result<domain::ProvisionRequest, ApiError> {
        provision_request(serde_json::from_value(body).expect("decodes"), None)
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

    /// The bound the specification gives IDs, in bytes (not the product's constant: a test of
    /// the constant against itself would follow it anywhere).
    const SPEC_MAX_ID_BYTES: usize = 253;

    #[test]
    fn ids_are_bounded_and_free_of_control_characters_and_blank_values() {
        // 127 two-byte characters are 254 bytes: over the bound in bytes, under it in
        // characters.
        let two_byte = "é".repeat(127);
        assert_eq!((two_byte.len(), two_byte.chars().count()), (254, 127));
        for (field, value) in [
            ("cluster_id", json!("x".repeat(SPEC_MAX_ID_BYTES + 1))),
            ("cluster_id", json!(two_byte)),
            ("cluster_id", json!("\u{0}")),
            ("cluster_id", json!("   ")),
            ("cluster_id", json!("a\nb")),
            ("store", json!("mongo\tdb")),
        ] {
            let mut body = seed_body();
            body["cluster"][field] = value;
            let e = request(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(field), "{}", e.message);
        }
        let mut body = seed_body();
        body["cluster"]["nodes"]["data"]["node_class"] = json!("x".repeat(300));
        assert!(request(body).unwrap_err().message.contains("node_class"));
        // The longest accepted IDs (253 bytes, in ASCII and in two-byte characters), and an
        // empty node class, still pass.
        for longest in [
            "c".repeat(SPEC_MAX_ID_BYTES),
            format!("{}c", "é".repeat(126)),
        ] {
            assert_eq!(longest.len(), SPEC_MAX_ID_BYTES);
            let mut body = seed_body();
            body["cluster"]["cluster_id"] = json!(longest);
            body["cluster"]["nodes"]["data"]["node_class"] = json!("");
            assert!(request(body).is_ok(), "{longest}");
        }
        for node_id in ["n".repeat(SPEC_MAX_ID_BYTES + 1), "é".repeat(127)] {
            let long = deprovision_request(model::DeprovisionRequest {
                cluster_id: "c".into(),
                node_id,
            });
            assert!(long.unwrap_err().message.contains("node_id"));
        }
    }
}
