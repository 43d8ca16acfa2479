//! Where the plugin contract's records meet the gateway's checks: the route key of a resolved
//! request, and the checks on plugin answers (a broken answer never reaches a client as if it
//! were valid). Failures are plain descriptions; the gateway wraps them in its domain error.

use std::collections::HashSet;

use crate::routing::RouteKey;
use crate::runtime::wit;

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

/// The text of a plugin's error, whatever its case.
pub fn plugin_message(error: &wit::Error) -> &str {
    match error {
        wit::Error::InvalidRequest(m)
        | wit::Error::NotFound(m)
        | wit::Error::Conflict(m)
        | wit::Error::Unavailable(m)
        | wit::Error::Internal(m) => m,
    }
}

/// Check a plugin's provision answer against the specification and the request.
pub fn check_provision(
    request: &wit::ProvisionRequest,
    response: &wit::ProvisionResponse,
) -> Result<(), String> {
    if response.count == 0 || response.count > request.count {
        return Err(format!(
            "count {} is outside 1..={} (the requested count)",
            response.count, request.count
        ));
    }
    if let Some(ids) = &response.node_ids {
        if ids.len() != response.count as usize {
            return Err(format!(
                "{} node IDs for a count of {}",
                ids.len(),
                response.count
            ));
        }
        check_node_ids(ids.iter().map(String::as_str))?;
    }
    Ok(())
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

/// Check one backend's discovery answer: non-empty IDs, no cluster or node twice, an agent
/// address for every node.
pub fn check_discovery(clusters: &[wit::Cluster]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for cluster in clusters {
        if cluster.cluster_id.is_empty() {
            return Err("a cluster ID is empty".to_string());
        }
        if !seen.insert(cluster.cluster_id.as_str()) {
            return Err(format!("cluster `{}` is listed twice", cluster.cluster_id));
        }
        if let Some(node) = cluster.nodes.iter().find(|n| n.agent_address.is_empty()) {
            return Err(format!(
                "cluster `{}`: node `{}` has no agent address",
                cluster.cluster_id, node.node_id
            ));
        }
        check_node_ids(cluster.nodes.iter().map(|n| n.node_id.as_str()))
            .map_err(|e| format!("cluster `{}`: {e}", cluster.cluster_id))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(count: u32) -> wit::ProvisionRequest {
        wit::ProvisionRequest {
            cluster_id: "c1".into(),
            store: "mongodb".into(),
            store_version: "4.2".into(),
            node_group: "data".into(),
            node_class: "small".into(),
            desired_count: 3,
            count,
            attributes: "{}".into(),
        }
    }

    #[test]
    fn provision_answers_are_checked() {
        let req = request(2);
        let answer = |count, ids: Option<Vec<&str>>| wit::ProvisionResponse {
            count,
            node_ids: ids.map(|ids| ids.into_iter().map(String::from).collect()),
        };
        assert!(check_provision(&req, &answer(2, Some(vec!["a", "b"]))).is_ok());
        assert!(check_provision(&req, &answer(1, None)).is_ok());
        for bad in [
            answer(0, None),
            answer(3, None),
            answer(2, Some(vec!["a"])),
            answer(2, Some(vec!["a", "a"])),
            answer(2, Some(vec!["a", ""])),
        ] {
            assert!(check_provision(&req, &bad).is_err());
        }
    }

    #[test]
    fn discovery_answers_are_checked() {
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
        assert!(check_discovery(&[cluster(vec![node("a"), node("b")])]).is_ok());
        assert!(check_discovery(&[cluster(vec![node("a"), node("a")])]).is_err());
        assert!(check_discovery(&[cluster(vec![node("")])]).is_err());
        let twice = [cluster(vec![node("a")]), cluster(vec![node("b")])];
        assert!(check_discovery(&twice).is_err());
        let mut no_address = node("a");
        no_address.agent_address.clear();
        assert!(check_discovery(&[cluster(vec![no_address])]).is_err());
    }
}
