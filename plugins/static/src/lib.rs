//! `static`: clusters that exist already and are managed elsewhere, listed in the settings.
//!
//! Discovery reports them, so that operators can bring existing clusters under Replicante
//! through the same endpoint as the clusters the gateway provisions. Their node lifecycles
//! belong to whoever manages them: provision and deprovision are refused with a clear error.
//!
//! Settings:
//!
//! ```toml
//! [backends.legacy.settings]
//! clusters = [
//!   { cluster_id = "billing", nodes = [
//!     { node_id = "db-1", agent_address = "http://10.1.0.1:37000", node_class = "m5.large", node_group = "data" },
//!   ] },
//! ]
//! ```

use std::collections::HashSet;

use platform_gateway_sdk::{
    Cluster, DeprovisionRequest, Error, Node, Provider, ProvisionRequest, ProvisionResponse,
    export_provider, settings,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticCluster {
    cluster_id: String,
    #[serde(default)]
    nodes: Vec<StaticNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticNode {
    node_id: String,
    agent_address: String,
    #[serde(default)]
    node_class: String,
    #[serde(default)]
    node_group: Option<String>,
}

fn clusters() -> Result<Vec<StaticCluster>, Error> {
    let clusters: Vec<StaticCluster> = settings::value("clusters")?.unwrap_or_default();
    let mut seen_clusters = HashSet::new();
    for cluster in &clusters {
        if cluster.cluster_id.is_empty() || !seen_clusters.insert(cluster.cluster_id.as_str()) {
            return Err(Error::Internal(format!(
                "setting `clusters`: cluster ID `{}` is empty or listed twice",
                cluster.cluster_id
            )));
        }
        let mut seen_nodes = HashSet::new();
        for node in &cluster.nodes {
            if node.node_id.is_empty() || !seen_nodes.insert(node.node_id.as_str()) {
                return Err(Error::Internal(format!(
                    "setting `clusters`: cluster `{}` lists node ID `{}` twice or empty",
                    cluster.cluster_id, node.node_id
                )));
            }
        }
    }
    Ok(clusters)
}

fn unmanaged(what: &str, cluster_id: &str) -> Error {
    Error::unsupported(format!(
        "cannot {what} in cluster `{cluster_id}`: this backend lists clusters managed elsewhere \
         and does not manage node lifecycles"
    ))
}

/// The provider (a type, so that native tests and the benchmark can call it).
pub struct Static;

impl Provider for Static {
    fn discover() -> Result<Vec<Cluster>, Error> {
        Ok(clusters()?
            .into_iter()
            .map(|cluster| Cluster {
                cluster_id: cluster.cluster_id,
                nodes: cluster
                    .nodes
                    .into_iter()
                    .map(|node| Node {
                        node_id: node.node_id,
                        agent_address: node.agent_address,
                        node_class: Some(node.node_class).filter(|c| !c.is_empty()),
                        node_group: node.node_group,
                    })
                    .collect(),
            })
            .collect())
    }

    fn provision(request: ProvisionRequest) -> Result<ProvisionResponse, Error> {
        Err(unmanaged("provision nodes", &request.cluster_id))
    }

    fn deprovision(request: DeprovisionRequest) -> Result<(), Error> {
        Err(unmanaged(
            &format!("deprovision node `{}`", request.node_id),
            &request.cluster_id,
        ))
    }
}

export_provider!(Static);
