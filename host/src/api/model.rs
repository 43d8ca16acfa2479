//! The HTTP models of the Replicante Platform API: the union of the seed specification and what
//! newer Replicante clients send and read (see `README.md`, "HTTP API").
//!
//! Fields these models do not know are read past (counted and logged once by the extractor,
//! `api::error::ApiJson`), as Replicante's own models do, so a newer Core that adds a field is
//! not refused; the price is that a misspelt optional field is ignored. Keys given twice are
//! refused (see [`strict`]). Checks that serde cannot express live in [`super::validate`], which
//! turns these models into the domain requests plugins receive.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::strict;

/// `POST /provision` body.
#[derive(Debug, Clone, Deserialize)]
pub struct ProvisionRequest {
    /// The cluster the nodes join.
    pub cluster: ClusterSpec,
    /// Which group to provision, and how many nodes.
    pub provision: ProvisionSpec,
}

/// The cluster part of a provision request.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterSpec {
    /// Attributes of every node of the cluster; absent or `null` means none.
    #[serde(default, deserialize_with = "strict::attributes")]
    pub attributes: Option<Map<String, Value>>,
    /// The cluster's ID.
    pub cluster_id: String,
    /// The store software.
    pub store: String,
    /// The cluster's store version.
    pub store_version: String,
    /// The node groups, by ID.
    #[serde(deserialize_with = "strict::unique_keys")]
    pub nodes: BTreeMap<String, NodeGroupSpec>,
}

/// One node group of a cluster.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeGroupSpec {
    /// Attributes of the group's nodes, merged over the cluster's.
    #[serde(default, deserialize_with = "strict::attributes")]
    pub attributes: Option<Map<String, Value>>,
    /// How many nodes the group should have overall.
    pub desired_count: u32,
    /// The platform-specific node class.
    pub node_class: String,
    /// The group's store version, as the seed specification names it.
    #[serde(default)]
    pub version: Option<String>,
    /// The group's store version, as newer clients name it.
    #[serde(default)]
    pub store_version: Option<String>,
}

/// The provision part of a provision request.
#[derive(Debug, Clone, Deserialize)]
pub struct ProvisionSpec {
    /// The group to add nodes to; must be a key of `cluster.nodes`.
    pub node_group_id: String,
    /// How many nodes to create (newer clients); 1 when absent.
    #[serde(default)]
    pub count: Option<u32>,
}

/// `POST /provision` success body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProvisionResponse {
    /// How many nodes are being created.
    pub count: u32,
    /// Their IDs, when the backend knows them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_ids: Option<Vec<String>>,
}

/// `POST /deprovision` body.
#[derive(Debug, Clone, Deserialize)]
pub struct DeprovisionRequest {
    /// The cluster the node belongs to.
    pub cluster_id: String,
    /// The node to terminate.
    pub node_id: String,
}

/// `GET /discover` success body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiscoverResponse {
    /// Every cluster on the platform.
    pub clusters: Vec<ClusterDiscover>,
}

impl From<Vec<crate::model::Cluster>> for DiscoverResponse {
    /// The clusters plugins reported, in the shape `GET /discover` answers.
    fn from(clusters: Vec<crate::model::Cluster>) -> DiscoverResponse {
        DiscoverResponse {
            clusters: clusters
                .into_iter()
                .map(|cluster| ClusterDiscover {
                    cluster_id: cluster.cluster_id,
                    nodes: cluster
                        .nodes
                        .into_iter()
                        .map(|node| ClusterDiscoveryNode {
                            agent_address: node.agent_address,
                            node_id: node.node_id,
                            // Replicante requires a class on every node: empty when the plugin
                            // does not know it.
                            node_class: node.node_class.unwrap_or_default(),
                            node_group: node.node_group,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// One discovered cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterDiscover {
    /// The cluster's ID.
    pub cluster_id: String,
    /// Every node of it, whatever its health.
    pub nodes: Vec<ClusterDiscoveryNode>,
}

/// One discovered node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterDiscoveryNode {
    /// Where the node's Replicante agent listens.
    pub agent_address: String,
    /// The node's ID.
    pub node_id: String,
    /// The node's class; empty when unknown (newer clients require the field).
    pub node_class: String,
    /// The node's group; `null` when unknown.
    pub node_group: Option<String>,
}
