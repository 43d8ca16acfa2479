//! The gateway: the current generation of loaded backends and the three operations of the
//! Platform API over it.
//!
//! A [`Generation`] is an immutable snapshot (config plus loaded backends). Each request takes
//! the current one with a cheap `Arc` load and finishes on it, whatever happens meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use axum::http::StatusCode;
use futures::future::join_all;

use crate::api::error::ApiError;
use crate::api::model;
use crate::config::{Config, DiscoveryPolicy};
use crate::convert;
use crate::routing::BackendId;
use crate::runtime::{Backend, CallError, LoadError, Runtime, wit};
use crate::state::{Ownership, StateError, StateStore};

/// One immutable snapshot of the config and the loaded backends.
pub struct Generation {
    /// Its number: 1 at start, one more for every successful reload.
    pub number: u64,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// The config it was built from.
    pub config: Config,
    /// The loaded backends, by name.
    pub backends: BTreeMap<BackendId, Arc<Backend>>,
}

impl Generation {
    /// Compile (or fetch from the cache) and pre-instantiate every backend of `config`. Slow on
    /// a cold cache: call it off the async runtime. A backend that keeps its name and its
    /// concurrency limit keeps its call slots from `previous`, so a reload never lets more calls
    /// run at once than the limit allows.
    pub fn load(
        number: u64,
        config: Config,
        runtime: &Runtime,
        state: &Arc<dyn StateStore>,
        previous: Option<&Generation>,
    ) -> Result<Generation, LoadError> {
        let mut backends = BTreeMap::new();
        for (id, backend_config) in &config.backends {
            let prepared = runtime.prepare(backend_config)?;
            tracing::debug!(backend = %id, digest = %prepared.digest, "loaded backend");
            let mut backend =
                Backend::new(backend_config, prepared, runtime.engine(), state.clone());
            if let Some(old) = previous.and_then(|p| p.backends.get(id)) {
                backend.share_slots_with(old);
            }
            backends.insert(id.clone(), Arc::new(backend));
        }
        Ok(Generation {
            number,
            loaded_at: SystemTime::now(),
            config,
            backends,
        })
    }
}

/// What a discovery found, before the failure policy is applied.
struct Discovery {
    clusters: Vec<model::ClusterDiscover>,
    failures: Vec<(BackendId, String)>,
    conflicts: Vec<NodeConflict>,
}

impl Discovery {
    fn failure_error(&self) -> ApiError {
        let names: Vec<String> = self
            .failures
            .iter()
            .map(|(b, _)| format!("`{b}`"))
            .collect();
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "discovery failed on backend {}: answering would hide nodes that may still exist",
                names.join(", ")
            ),
        )
        .with_cause(
            self.failures
                .iter()
                .map(|(_, reason)| reason.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

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

/// A successful discovery: the body, and what the API reports beside it.
pub struct DiscoverReply {
    /// The merged clusters.
    pub response: model::DiscoverResponse,
    /// Backends left out under the `partial` policy.
    pub failed: Vec<BackendId>,
    /// Node IDs reported by several backends.
    pub conflicts: Vec<NodeConflict>,
}

/// The gateway's shared state: the generation being served and the state store.
pub struct Gateway {
    current: ArcSwapOption<Generation>,
    state: Arc<dyn StateStore>,
}

fn storage_error(what: &str, error: StateError) -> ApiError {
    tracing::error!("state store: {what}: {error}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the gateway's state store failed while {what}"),
    )
}

impl Gateway {
    /// A gateway with no generation yet (every API call answers 503 until one is installed).
    pub fn new(state: Arc<dyn StateStore>) -> Gateway {
        Gateway {
            current: ArcSwapOption::empty(),
            state,
        }
    }

    /// Serve `generation` from now on. Requests that started on the previous one finish on it.
    pub fn install(&self, generation: Generation) {
        self.current.store(Some(Arc::new(generation)));
    }

    /// Whether a generation is loaded.
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    /// The generation being served, if one is loaded.
    pub fn current(&self) -> Option<Arc<Generation>> {
        self.current.load_full()
    }

    async fn blocking<R: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&dyn StateStore) -> Result<R, StateError> + Send + 'static,
    ) -> Result<R, ApiError> {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || f(&*state))
            .await
            .map_err(|e| storage_error(what, StateError::Storage(e.to_string())))?
            .map_err(|e| storage_error(what, e))
    }

    /// `GET /discover`: every backend, concurrently, merged by cluster, under the configured
    /// failure policy. Refreshes the ownership index with every node seen.
    pub async fn discover(&self, generation: &Generation) -> Result<DiscoverReply, ApiError> {
        let discovery = self.discover_all(generation).await?;
        if !discovery.failures.is_empty() && generation.config.discovery == DiscoveryPolicy::Fail {
            return Err(discovery.failure_error());
        }
        for (backend, reason) in &discovery.failures {
            tracing::warn!(%backend, "discovery answered without this backend: {reason}");
        }
        Ok(DiscoverReply {
            response: model::DiscoverResponse {
                clusters: discovery.clusters,
            },
            failed: discovery.failures.into_iter().map(|(b, _)| b).collect(),
            conflicts: discovery.conflicts,
        })
    }

    /// Ask every backend concurrently, each under its own deadline; merge by cluster ID; record
    /// the owners of the nodes that exactly one backend reports.
    async fn discover_all(&self, generation: &Generation) -> Result<Discovery, ApiError> {
        let answers = join_all(generation.backends.values().map(|backend| async move {
            let answer = backend.discover().await;
            (backend.id().clone(), answer)
        }))
        .await;

        let mut failures = Vec::new();
        // cluster -> node -> every (backend, node) that reported it
        let mut merged: BTreeMap<String, BTreeMap<String, Vec<(BackendId, wit::Node)>>> =
            BTreeMap::new();
        for (backend, answer) in answers {
            let checked = answer
                .map_err(|e| convert::call_error(&backend, "discover", e))
                .and_then(|clusters| {
                    convert::check_discovery(&backend, &clusters).map(|()| clusters)
                });
            let clusters = match checked {
                Ok(clusters) => clusters,
                Err(e) => {
                    failures.push((backend, e.to_string()));
                    continue;
                }
            };
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
                let backends: Vec<BackendId> = claims.iter().map(|(b, _)| b.clone()).collect();
                if let [backend] = backends.as_slice() {
                    owners.push(Ownership {
                        cluster_id: cluster_id.clone(),
                        node_id: node_id.clone(),
                        backend: backend.to_string(),
                    });
                } else {
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
                out.extend(claims.into_iter().map(|(_, n)| convert::discovered_node(n)));
            }
            clusters.push(model::ClusterDiscover {
                cluster_id,
                nodes: out,
            });
        }
        self.blocking("recording node owners", move |s| s.record_owners(&owners))
            .await?;
        Ok(Discovery {
            clusters,
            failures,
            conflicts,
        })
    }

    /// The recorded owner of a node, from the ownership index.
    pub async fn recorded_owner(
        &self,
        cluster_id: &str,
        node_id: &str,
    ) -> Result<Option<String>, ApiError> {
        let (cluster_id, node_id) = (cluster_id.to_string(), node_id.to_string());
        self.blocking("looking up the node's owner", move |s| {
            s.owner(&cluster_id, &node_id)
        })
        .await
    }

    /// The one backend that reports `request`'s node, by a fresh discovery.
    async fn find_owner(
        &self,
        generation: &Generation,
        request: &wit::DeprovisionRequest,
    ) -> Result<String, ApiError> {
        let discovery = self.discover_all(generation).await?;
        let claims: Vec<&BackendId> = discovery
            .conflicts
            .iter()
            .filter(|c| c.cluster_id == request.cluster_id && c.node_id == request.node_id)
            .flat_map(|c| c.backends.iter())
            .collect();
        if !claims.is_empty() {
            let names: Vec<String> = claims.iter().map(|b| format!("`{b}`")).collect();
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "node `{}` of cluster `{}` is claimed by backends {}; refusing to guess which to ask",
                    request.node_id,
                    request.cluster_id,
                    names.join(" and ")
                ),
            ));
        }
        // The owners of singly-reported nodes were just recorded.
        let owner = self
            .recorded_owner(&request.cluster_id, &request.node_id)
            .await?;
        match owner {
            Some(owner) => Ok(owner),
            None if !discovery.failures.is_empty() => {
                let error = discovery.failure_error();
                let cause = format!(
                    "node `{}` was not found on the backends that answered; {}",
                    request.node_id,
                    error.cause.as_deref().unwrap_or_default()
                );
                Err(error.with_cause(cause))
            }
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "node `{}` of cluster `{}` does not exist",
                    request.node_id, request.cluster_id
                ),
            )),
        }
    }

    /// `POST /provision`: resolve, route, call, check, remember who owns the new nodes.
    pub async fn provision(
        &self,
        generation: &Generation,
        request: model::ProvisionRequest,
    ) -> Result<model::ProvisionResponse, ApiError> {
        let request = convert::provision_request(request)?;
        let key = convert::route_key(&request);
        let Some(route) = generation.config.routes.select(&key) else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "no route matches cluster `{}`, store `{}` {}, node group `{}`, node class `{}`",
                    key.cluster_id, key.store, key.store_version, key.node_group_id, key.node_class
                ),
            )
            .with_cause("add a matching route (or a default route) to the gateway config"));
        };
        // The config checks that routes name defined backends, and a generation loads them all.
        let Some(backend) = generation.backends.get(&route.backend) else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("route `{}` names a backend that is not loaded", route.name),
            ));
        };
        tracing::debug!(route = %route.name, backend = %route.backend, "routed provision");
        let answer = backend
            .provision(request.clone())
            .await
            .map_err(|e| convert::call_error(backend.id(), "provision", e))?;
        let response = convert::provision_response(backend.id(), &request, answer)?;
        if let Some(ids) = &response.node_ids {
            let owners: Vec<Ownership> = ids
                .iter()
                .map(|id| Ownership {
                    cluster_id: request.cluster_id.clone(),
                    node_id: id.clone(),
                    backend: backend.id().to_string(),
                })
                .collect();
            // The nodes exist now: if this fails the client hears it, and the next discovery
            // learns the owners anyway.
            self.blocking("recording the owners of new nodes", move |s| {
                s.record_owners(&owners)
            })
            .await?;
        }
        Ok(response)
    }

    /// `POST /deprovision`: find the owner (index first, then a fresh discovery), call it.
    pub async fn deprovision(
        &self,
        generation: &Generation,
        request: model::DeprovisionRequest,
    ) -> Result<(), ApiError> {
        let request = convert::deprovision_request(request)?;
        let known = self
            .recorded_owner(&request.cluster_id, &request.node_id)
            .await?;
        let owner = match known {
            Some(name) => name,
            // Not provisioned through this gateway (or before the index existed): ask everyone.
            None => self.find_owner(generation, &request).await?,
        };
        let Some(backend) = generation
            .backends
            .iter()
            .find(|(id, _)| id.as_str() == owner)
            .map(|(_, b)| b)
        else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "node `{}` belongs to backend `{owner}`, which is not in the current config",
                    request.node_id
                ),
            ));
        };
        let (cluster_id, node_id) = (request.cluster_id.clone(), request.node_id.clone());
        let outcome = backend.deprovision(request).await;
        // Gone, or unknown to its owner: the ownership record is stale either way.
        if matches!(
            outcome,
            Ok(()) | Err(CallError::Plugin(wit::Error::NotFound(_)))
        ) {
            self.blocking("forgetting the node's owner", move |s| {
                s.forget_owner(&cluster_id, &node_id)
            })
            .await?;
        }
        outcome.map_err(|e| convert::call_error(backend.id(), "deprovision", e))
    }
}
