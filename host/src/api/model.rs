//! The HTTP models of the Replicante Platform API: the union of the seed specification and what
//! newer Replicante clients send and read (see `README.md`, "HTTP API").
//!
//! Fields these models do not know are read past (counted and logged once by the extractor,
//! `api::error::ApiJson`), as Replicante's own models do, so a newer Core that adds a field is
//! not refused; the price is that a misspelt optional field is ignored. Keys given twice are
//! refused, and so is a record written as an array of its fields (see [`strict`]). Checks that
//! serde cannot express live in [`super::validate`], which turns these models into the domain
//! requests plugins receive.
//!
//! The same types are the schemas of the OpenAPI document ([`super::openapi`]): their
//! `#[schema]` attributes state the limits [`super::validate`] enforces (the unit tests of
//! `openapi` check that the two agree), and say which fields extend the seed specification.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::strict;

/// The longest ID or name the API accepts (a DNS name's length): enough for any real ID, and
/// small enough that one client cannot fill a backend's discovery answer with a few nodes.
pub const MAX_ID_LENGTH: usize = 253;

/// An ID or name (`validate::non_empty`): 1 to [`MAX_ID_LENGTH`]
/// bytes, no control character, not only white space. Its schema, `Id`, is what the document
/// gives every such field.
pub struct Id;

/// Free text that may be empty (`validate::text`): at most
/// [`MAX_ID_LENGTH`] bytes, no control character.
pub struct Text;

/// Control characters (Unicode `Cc`), as a regex class body.
const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F";
/// Control characters and white space (Unicode `White_Space`, what Rust's `str::trim` removes).
/// Spelt out rather than `\s`, whose meaning differs between regex dialects.
const CONTROL_OR_SPACE: &str =
    r"\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// The string schema of [`Id`] or [`Text`].
fn string_schema(id: bool) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let max = MAX_ID_LENGTH;
    let (min, pattern, description) = if id {
        (
            Some(1),
            format!("^[^{CONTROL}]*[^{CONTROL_OR_SPACE}][^{CONTROL}]*$"),
            format!(
                "An ID or name: 1 to {max} bytes of UTF-8 (`maxLength` counts characters, so the \
                 byte bound is the tighter one for non-ASCII text), no control character, not \
                 only white space."
            ),
        )
    } else {
        (
            None,
            format!("^[^{CONTROL}]*$"),
            format!(
                "Free text, possibly empty: at most {max} bytes of UTF-8, no control character."
            ),
        )
    };
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(min)
        .max_length(Some(max))
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

impl utoipa::PartialSchema for Id {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(true)
    }
}

impl ToSchema for Id {}

impl utoipa::PartialSchema for Text {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(false)
    }
}

impl ToSchema for Text {}

/// `POST /provision` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(
    title = "NodeProvisionRequest",
    example = json!({
        "cluster": {
            "cluster_id": "c1",
            "store": "mongodb",
            "store_version": "4.0",
            "attributes": {},
            "nodes": { "data": { "desired_count": 3, "node_class": "small" } }
        },
        "provision": { "node_group_id": "data", "count": 1 }
    })
)]
pub struct ProvisionRequest {
    /// The cluster the nodes join.
    #[serde(deserialize_with = "strict::object")]
    pub cluster: ClusterSpec,
    /// Which group to provision, and how many nodes.
    #[serde(deserialize_with = "strict::object")]
    pub provision: ProvisionSpec,
}

/// The cluster part of a provision request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ClusterSpec {
    /// Attributes of every node of the cluster; absent or `null` means none. Any JSON values; a
    /// key given twice, at any depth, is refused with 400. Absent or `null`: an extension of the
    /// seed specification, which requires the field (newer clients may leave it out).
    #[serde(default, deserialize_with = "strict::attributes")]
    #[schema(value_type = Option<Object>, additional_properties = true)]
    pub attributes: Option<Map<String, Value>>,
    /// The cluster's ID.
    #[schema(value_type = Id)]
    pub cluster_id: String,
    /// The store software (`mongodb`, `zookeeper`, ...).
    #[schema(value_type = Id)]
    pub store: String,
    /// The cluster's store version: the version of each group that names none, and then it
    /// must not be empty or only white space.
    #[schema(value_type = Text)]
    pub store_version: String,
    /// The node groups, by ID (a key given twice is refused with 400).
    #[serde(deserialize_with = "strict::unique_records")]
    pub nodes: BTreeMap<String, NodeGroupSpec>,
}

/// One node group of a cluster.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NodeGroupSpec {
    /// Attributes of the group's nodes, merged over the cluster's as a JSON merge patch
    /// (RFC 7396: a `null` value removes the cluster's key); absent or `null` means none.
    #[serde(default, deserialize_with = "strict::attributes")]
    #[schema(value_type = Option<Object>, additional_properties = true)]
    pub attributes: Option<Map<String, Value>>,
    /// How many nodes the group should have overall.
    #[schema(format = Int64, minimum = 0, maximum = 4294967295_u32)]
    pub desired_count: u32,
    /// The platform-specific node class (such as an instance type); may be empty.
    #[schema(value_type = Text)]
    pub node_class: String,
    /// The group's store version, as the seed specification names it; `cluster.store_version`
    /// when absent. If `store_version` is given too, the two must be equal.
    #[serde(default)]
    #[schema(value_type = Option<Text>)]
    pub version: Option<String>,
    /// The group's store version, as newer clients name it (an extension of the seed
    /// specification); if `version` is given too, the two must be equal.
    #[serde(default)]
    #[schema(value_type = Option<Text>)]
    pub store_version: Option<String>,
}

/// The provision part of a provision request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ProvisionSpec {
    /// The group to add nodes to; must be a key of `cluster.nodes` (else 400, whose body lists
    /// the defined groups in `node_groups`).
    #[schema(value_type = Id)]
    pub node_group_id: String,
    /// How many nodes to create: at most that many, fewer is a valid outcome; 1 when absent or
    /// `null`. An extension of the seed specification, sent by newer clients.
    #[serde(default)]
    #[schema(format = Int64, minimum = 1, maximum = 4294967295_u32)]
    pub count: Option<u32>,
}

/// `POST /provision` success body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(title = "NodeProvisionResponse")]
pub struct ProvisionResponse {
    /// How many nodes are being created: 1 to the requested `count`.
    #[schema(format = Int64, minimum = 1, maximum = 4294967295_u32)]
    pub count: u32,
    /// Their IDs, one per node being created, each non-empty and distinct, when the backend
    /// knows them; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<String>, required = false, min_items = 1)]
    pub node_ids: Option<Vec<String>>,
}

/// `POST /deprovision` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(
    title = "NodeDeprovisionRequest",
    example = json!({ "cluster_id": "c1", "node_id": "m1" })
)]
pub struct DeprovisionRequest {
    /// The cluster the node belongs to.
    #[schema(value_type = Id)]
    pub cluster_id: String,
    /// The node to terminate.
    #[schema(value_type = Id)]
    pub node_id: String,
}

/// `GET /discover` success body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(title = "ClusterDiscoverResponse")]
pub struct DiscoverResponse {
    /// Every cluster on the platform, each once.
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ClusterDiscover {
    /// The cluster's ID.
    #[schema(min_length = 1)]
    pub cluster_id: String,
    /// Every node of it, whatever its health, each once.
    pub nodes: Vec<ClusterDiscoveryNode>,
}

/// One discovered node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ClusterDiscoveryNode {
    /// Where the node's Replicante agent listens.
    #[schema(min_length = 1)]
    pub agent_address: String,
    /// The node's ID, unique within its cluster.
    #[schema(min_length = 1)]
    pub node_id: String,
    /// The node's class; empty when unknown. An extension of the seed specification: newer
    /// clients require it.
    pub node_class: String,
    /// The node's group; `null` when unknown. An extension of the seed specification: newer
    /// clients count nodes per group to decide whether a group needs more.
    #[schema(required = true)]
    pub node_group: Option<String>,
}
