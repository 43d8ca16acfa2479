//! Identities and domain types used across the gateway: names are checked once, where they enter,
//! and typed from then on.

use std::fmt;
use std::sync::Arc;

/// The name of a configured backend: non-empty ASCII letters, digits, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(Arc<str>);

impl BackendId {
    /// Check and wrap a backend name.
    pub fn new(name: &str) -> Result<BackendId, &'static str> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(BackendId(name.into()))
        } else {
            Err("a backend name is 1 to 64 ASCII letters, digits, `-` or `_`")
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request to create nodes in one node group, resolved and validated, as every plugin gets it
/// (a contract version that lacks a field leaves it out; see [`crate::contract`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionRequest {
    /// Stable across retries of one request (from the client's `Idempotency-Key`), else new.
    pub request_id: String,
    /// The cluster the nodes join.
    pub cluster_id: String,
    /// The store software.
    pub store: String,
    /// The effective store version of the group.
    pub store_version: String,
    /// The node group.
    pub node_group: String,
    /// The group's node class.
    pub node_class: String,
    /// How many nodes the group wants overall.
    pub desired_count: u32,
    /// How many nodes to create now (at least 1).
    pub count: u32,
    /// The merged attributes, as a JSON object's text.
    pub attributes: String,
}

impl ProvisionRequest {
    /// Whether the ID came from the client's `Idempotency-Key` (`k-...`; a new one is `r-...`:
    /// see `api::validate`).
    pub fn is_keyed(&self) -> bool {
        self.request_id.starts_with("k-")
    }

    /// A digest of everything the request asks for (all but its ID): two requests with one
    /// idempotency key must have the same.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for part in [
            self.cluster_id.as_str(),
            &self.store,
            &self.store_version,
            &self.node_group,
            &self.node_class,
            &self.desired_count.to_string(),
            &self.count.to_string(),
            &self.attributes,
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hash.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// What a provision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionResponse {
    /// How many nodes are being created.
    pub count: u32,
    /// Their IDs, when the plugin knows them.
    pub node_ids: Option<Vec<String>>,
}

/// A request to terminate one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeprovisionRequest {
    /// The node's cluster.
    pub cluster_id: String,
    /// The node.
    pub node_id: String,
}

/// A node as a plugin reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique within its cluster.
    pub node_id: String,
    /// Where its Replicante agent listens.
    pub agent_address: String,
    /// Its class, when known.
    pub node_class: Option<String>,
    /// Its node group, when known.
    pub node_group: Option<String>,
}

/// A cluster and the nodes of it one backend reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The cluster's ID.
    pub cluster_id: String,
    /// Its nodes on that backend.
    pub nodes: Vec<Node>,
}

/// Why a plugin refused an operation: the contract's error cases (0.1's are a subset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// The request cannot be served as asked: 400.
    InvalidRequest(String),
    /// No such node or cluster on the backend: 404.
    NotFound(String),
    /// The request conflicts with the current state: 409.
    Conflict(String),
    /// The provider does not do this operation: 501.
    Unsupported(String),
    /// Not now, maybe later: 503, with the plugin's retry hint when it gave one.
    Unavailable {
        /// What is unavailable.
        message: String,
        /// Seconds until a retry may succeed, if the plugin knows.
        retry_after: Option<u32>,
    },
    /// Anything else that failed inside the plugin: 500.
    Internal(String),
}

impl ProviderError {
    /// The plugin's message, whatever the case.
    pub fn message(&self) -> &str {
        match self {
            ProviderError::InvalidRequest(m)
            | ProviderError::NotFound(m)
            | ProviderError::Conflict(m)
            | ProviderError::Unsupported(m)
            | ProviderError::Unavailable { message: m, .. }
            | ProviderError::Internal(m) => m,
        }
    }

    /// The same error with `f` applied to its message.
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> ProviderError {
        match self {
            ProviderError::InvalidRequest(m) => ProviderError::InvalidRequest(f(m)),
            ProviderError::NotFound(m) => ProviderError::NotFound(f(m)),
            ProviderError::Conflict(m) => ProviderError::Conflict(f(m)),
            ProviderError::Unsupported(m) => ProviderError::Unsupported(f(m)),
            ProviderError::Unavailable {
                message,
                retry_after,
            } => ProviderError::Unavailable {
                message: f(message),
                retry_after,
            },
            ProviderError::Internal(m) => ProviderError::Internal(f(m)),
        }
    }

    /// The case's name in the contract (`not-found`, ...).
    pub fn case(&self) -> &'static str {
        match self {
            ProviderError::InvalidRequest(_) => "invalid-request",
            ProviderError::NotFound(_) => "not-found",
            ProviderError::Conflict(_) => "conflict",
            ProviderError::Unsupported(_) => "unsupported",
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::Internal(_) => "internal",
        }
    }
}
