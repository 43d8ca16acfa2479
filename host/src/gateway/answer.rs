//! The checks on plugin answers: a broken answer (a count outside the request's, empty or
//! repeated IDs, a node without an agent address, a cluster listed twice) never reaches a client
//! as if it were valid. They run on the model, whatever the contract version; failures are plain
//! descriptions, which the gateway wraps in its domain error (a 502 naming the backend) and the
//! conformance kit reports.

use std::collections::HashSet;

use crate::model::{Cluster, ProvisionRequest, ProvisionResponse};

/// Check a plugin's provision answer against the specification and the request.
pub fn check_provision(
    request: &ProvisionRequest,
    response: &ProvisionResponse,
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
pub fn check_discovery(clusters: &[Cluster]) -> Result<(), String> {
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

    fn request(count: u32) -> ProvisionRequest {
        ProvisionRequest {
            request_id: "r-1".into(),
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
        let answer = |count, ids: Option<Vec<&str>>| ProvisionResponse {
            count,
            node_ids: ids.map(|ids| ids.into_iter().map(String::from).collect()),
        };
        assert!(check_provision(&req, &answer(2, Some(vec!["a", "b"]))).is_ok());
        assert!(check_provision(&req, &answer(1, None)).is_ok());
        // Each refused for its own reason, not merely refused.
        for (bad, why) in [
            (answer(0, None), "count 0 is outside 1..=2"),
            (answer(3, None), "count 3 is outside 1..=2"),
            (answer(2, Some(vec!["a"])), "1 node IDs for a count of 2"),
            (answer(2, Some(vec!["a", "a"])), "node ID `a` appears twice"),
            (answer(2, Some(vec!["a", ""])), "a node ID is empty"),
        ] {
            let error = check_provision(&req, &bad).unwrap_err();
            assert!(error.contains(why), "{why}: {error}");
        }
    }

    #[test]
    fn discovery_answers_are_checked() {
        let node = |id: &str| crate::model::Node {
            node_id: id.into(),
            agent_address: "a".into(),
            node_class: None,
            node_group: None,
        };
        let cluster = |nodes| Cluster {
            cluster_id: "c".into(),
            nodes,
        };
        assert!(check_discovery(&[cluster(vec![node("a"), node("b")])]).is_ok());
        let refused = |clusters: &[Cluster], why: &str| {
            let error = check_discovery(clusters).unwrap_err();
            assert!(error.contains(why), "{why}: {error}");
        };
        refused(
            &[cluster(vec![node("a"), node("a")])],
            "node ID `a` appears twice",
        );
        refused(&[cluster(vec![node("")])], "a node ID is empty");
        let twice = [cluster(vec![node("a")]), cluster(vec![node("b")])];
        refused(&twice, "cluster `c` is listed twice");
        let mut no_address = node("a");
        no_address.agent_address.clear();
        refused(
            &[cluster(vec![no_address])],
            "cluster `c`: node `a` has no agent address",
        );
        let mut unnamed = cluster(vec![node("a")]);
        unnamed.cluster_id.clear();
        refused(&[unnamed], "a cluster ID is empty");
    }
}
