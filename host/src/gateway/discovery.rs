//! Discovery: every backend asked at once, each under its own deadline, the answers merged by
//! cluster, node IDs that several backends report kept as conflicts, and the ownership index
//! refreshed with what exactly one backend reports. A deprovision of a node the index does not
//! know looks its owner up the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;

use super::plan::Calls;
use super::{Error, Gateway, Generation};
use crate::config::DiscoveryPolicy;

use crate::model::{self, BackendId};
use crate::runtime::Backend;
use crate::state::Ownership;

/// A node ID that several backends report in one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConflict {
    /// The cluster.
    pub cluster_id: String,
    /// The node ID.
    pub node_id: String,
    /// Every backend that reported it.
    pub backends: Vec<BackendId>,
}

/// A successful discovery: the merged clusters, and what the API reports beside them.
pub struct DiscoverReply {
    /// The merged clusters, each node once per backend that reports it.
    pub clusters: Vec<model::Cluster>,
    /// Backends left out under the `partial` policy.
    pub failed: Vec<BackendId>,
    /// Node IDs reported by several backends.
    pub conflicts: Vec<NodeConflict>,
}

/// One cluster's nodes in a discovery: node ID -> every (backend, node) that reported it.
type NodeClaims = BTreeMap<String, Vec<(Arc<Backend>, model::Node)>>;

/// What a discovery found, before the failure policy is applied.
struct Discovery {
    clusters: Vec<model::Cluster>,
    /// How many of `failures` pass by themselves (capacity, `unavailable`): worth a retry.
    retryable: usize,
    /// The owner of every node that exactly one backend reports.
    owners: Vec<Ownership>,
    failures: Vec<(BackendId, String)>,
    conflicts: Vec<NodeConflict>,
}

impl Discovery {
    /// When every failure passes by itself (a backend at capacity or unavailable), the answer
    /// is "retry shortly" (503), not "a backend failed" (502).
    fn overloaded(&self) -> Result<(), Error> {
        if self.retryable > 0 && self.retryable == self.failures.len() {
            return Err(Error::DiscoveryUnavailable {
                failures: self.failures.clone(),
            });
        }
        Ok(())
    }
}

impl Gateway {
    /// `GET /discover`: every backend, concurrently, merged by cluster, under the configured
    /// failure policy. Refreshes the ownership index with every node seen.
    pub async fn discover(&self, generation: &Generation) -> Result<DiscoverReply, Error> {
        let discovery = self.discover_all(generation, &Calls::live()).await;
        if !discovery.failures.is_empty() && generation.config.discovery == DiscoveryPolicy::Fail {
            discovery.overloaded()?;
            return Err(Error::DiscoveryFailed {
                failures: discovery.failures,
                looking_for: None,
            });
        }
        for (backend, reason) in &discovery.failures {
            tracing::warn!(%backend, "discovery answered without this backend: {reason}");
        }
        Ok(DiscoverReply {
            clusters: discovery.clusters,
            failed: discovery.failures.into_iter().map(|(b, _)| b).collect(),
            conflicts: discovery.conflicts,
        })
    }

    /// Ask every backend concurrently, each under its own deadline; merge by cluster ID; record
    /// the owners of the nodes that exactly one backend reports, and let the index forget the
    /// nodes that answering backends no longer report.
    async fn discover_all(&self, generation: &Generation, calls: &Calls) -> Discovery {
        let started = std::time::Instant::now();
        let answers = join_all(generation.backends.values().map(|backend| async move {
            // A candidate's shadow discovery starts beside the stable one; it is compared once
            // both answered, and nobody waits for it.
            let shadow = self.start_shadow(generation, backend, calls);
            let answer = backend
                .discover_in(calls.context(backend, "discover"))
                .await;
            if let (Some(shadow), Ok(clusters)) = (shadow, &answer) {
                let _ = shadow.send(clusters.clone());
            }
            (backend.clone(), answer)
        }))
        .await;
        let state = calls.records(&self.state);

        let mut failures = Vec::new();
        let mut retryable = 0;
        let mut answered = Vec::new();
        let mut merged: BTreeMap<String, NodeClaims> = BTreeMap::new();
        for (backend, answer) in answers {
            let checked = answer
                .map_err(|error| Error::Call {
                    backend: backend.id().clone(),
                    operation: "discover",
                    error,
                })
                .and_then(|clusters| {
                    super::answer::check_discovery(&clusters)
                        .map(|()| clusters)
                        .map_err(|problem| {
                            self.metrics
                                .record_invalid_answer(backend.id().as_str(), "discover");
                            Error::InvalidAnswer {
                                backend: backend.id().clone(),
                                operation: "discover",
                                problem: backend.redact(&problem),
                            }
                        })
                });
            let clusters = match checked {
                Ok(clusters) => clusters,
                Err(e) => {
                    if matches!(&e, Error::Call { error, .. } if error.is_retryable()) {
                        retryable += 1;
                    }
                    let reason = match e.cause() {
                        Some(cause) => format!("{e}: {cause}"),
                        None => e.to_string(),
                    };
                    failures.push((backend.id().clone(), reason));
                    continue;
                }
            };
            answered.push(backend.state_namespace().to_string());
            for cluster in clusters {
                let nodes = merged.entry(cluster.cluster_id).or_default();
                for node in cluster.nodes {
                    nodes
                        .entry(node.node_id.clone())
                        .or_default()
                        .push((backend.clone(), node));
                }
            }
        }

        let mut clusters = Vec::with_capacity(merged.len());
        let mut owners = Vec::new();
        let mut conflicts = Vec::new();
        for (cluster_id, nodes) in merged {
            let mut out = Vec::with_capacity(nodes.len());
            for (node_id, claims) in nodes {
                if let [(backend, _)] = claims.as_slice() {
                    owners.push(Ownership {
                        cluster_id: cluster_id.clone(),
                        node_id: node_id.clone(),
                        backend: backend.state_namespace().to_string(),
                    });
                } else {
                    let backends: Vec<BackendId> =
                        claims.iter().map(|(b, _)| b.id().clone()).collect();
                    tracing::warn!(
                        cluster = %cluster_id, node = %node_id, backends = ?backends,
                        "node ID reported by several backends; every report is returned"
                    );
                    conflicts.push(NodeConflict {
                        cluster_id: cluster_id.clone(),
                        node_id: node_id.clone(),
                        backends,
                    });
                }
                out.extend(claims.into_iter().map(|(_, n)| n));
            }
            clusters.push(model::Cluster {
                cluster_id,
                nodes: out,
            });
        }
        self.metrics.record_conflicts(conflicts.len());
        // The index is a cache: a failed write is logged, and the next discovery fixes it.
        if let Err(e) = state.record_owners(&owners).await {
            tracing::warn!("ownership index not updated after discovery: {e}");
        }
        // Every node reported, conflicts included: a record is forgotten only when no backend
        // reports its node any more.
        let seen = || {
            clusters
                .iter()
                .flat_map(|c| {
                    c.nodes
                        .iter()
                        .map(|n| (c.cluster_id.clone(), n.node_id.clone()))
                })
                .collect()
        };
        self.ownership
            .forget_vanished(state, answered, seen, started);
        Discovery {
            clusters,
            retryable,
            owners,
            failures,
            conflicts,
        }
    }

    /// The one backend that reports `request`'s node, by a fresh discovery.
    pub(super) async fn find_owner(
        &self,
        generation: &Generation,
        request: &model::DeprovisionRequest,
        calls: &Calls,
    ) -> Result<String, Error> {
        let discovery = self.discover_all(generation, calls).await;
        let claims: Vec<BackendId> = discovery
            .conflicts
            .iter()
            .filter(|c| c.cluster_id == request.cluster_id && c.node_id == request.node_id)
            .flat_map(|c| c.backends.iter().cloned())
            .collect();
        if !claims.is_empty() {
            return Err(Error::NodeClaimed {
                cluster_id: request.cluster_id.clone(),
                node_id: request.node_id.clone(),
                backends: claims,
            });
        }
        if let Some(owner) = discovery
            .owners
            .iter()
            .find(|o| o.cluster_id == request.cluster_id && o.node_id == request.node_id)
        {
            return Ok(owner.backend.clone());
        }
        if !discovery.failures.is_empty() {
            discovery.overloaded()?;
            return Err(Error::DiscoveryFailed {
                failures: discovery.failures,
                looking_for: Some(request.node_id.clone()),
            });
        }
        Err(Error::NodeNotFound {
            cluster_id: request.cluster_id.clone(),
            node_id: request.node_id.clone(),
        })
    }
}
