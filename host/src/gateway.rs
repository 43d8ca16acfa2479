//! The gateway: the current generation of loaded backends and the three operations of the
//! Platform API over it.
//!
//! A [`Generation`] is an immutable snapshot (config plus loaded backends). Each request takes
//! the current one with a cheap `Arc` load and finishes on it, whatever happens meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::http::StatusCode;
use futures::future::join_all;

use crate::api::error::ApiError;
use crate::api::model;
use crate::config::Config;
use crate::convert;
use crate::routing::BackendId;
use crate::runtime::{Backend, CallError, LoadError, Runtime, wit};
use crate::state::{Ownership, StateError, StateStore};

/// One immutable snapshot of the config and the loaded backends.
pub struct Generation {
    /// The config it was built from.
    pub config: Config,
    /// The loaded backends, by name.
    pub backends: BTreeMap<BackendId, Arc<Backend>>,
}

impl Generation {
    /// Compile (or fetch from the cache) and pre-instantiate every backend of `config`. Slow on
    /// a cold cache: call it off the async runtime.
    pub fn load(
        config: Config,
        runtime: &Runtime,
        state: &Arc<dyn StateStore>,
    ) -> Result<Generation, LoadError> {
        let mut backends = BTreeMap::new();
        for (id, backend_config) in &config.backends {
            let prepared = runtime.prepare(backend_config)?;
            tracing::info!(backend = %id, digest = %prepared.digest, "loaded backend");
            let backend = Backend::new(backend_config, prepared, runtime.engine(), state.clone());
            backends.insert(id.clone(), Arc::new(backend));
        }
        Ok(Generation { config, backends })
    }
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

    /// Serve `generation` from now on.
    pub fn install(&self, generation: Generation) {
        self.current.store(Some(Arc::new(generation)));
    }

    /// Whether a generation is loaded.
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    fn generation(&self) -> Result<Arc<Generation>, ApiError> {
        self.current.load_full().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway is still loading its backends",
            )
            .with_retry_after(1)
        })
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

    /// `GET /discover`: every backend, concurrently, merged by cluster.
    pub async fn discover(&self) -> Result<model::DiscoverResponse, ApiError> {
        let generation = self.generation()?;
        let (clusters, owners) = self.discover_all(&generation).await?;
        self.blocking("recording node owners", move |s| s.record_owners(&owners))
            .await?;
        Ok(model::DiscoverResponse { clusters })
    }

    /// Ask every backend, merge by cluster ID. Any failed backend fails the whole discovery, so
    /// that the client never sees a cluster lose nodes that still exist.
    async fn discover_all(
        &self,
        generation: &Generation,
    ) -> Result<(Vec<model::ClusterDiscover>, Vec<Ownership>), ApiError> {
        let answers = join_all(generation.backends.values().map(|backend| async move {
            let answer = backend.discover().await;
            (backend.id().clone(), answer)
        }))
        .await;

        let mut failures = Vec::new();
        // cluster -> node -> (backend, node)
        let mut merged: BTreeMap<String, BTreeMap<String, Vec<(BackendId, wit::Node)>>> =
            BTreeMap::new();
        for (backend, answer) in answers {
            let clusters = match answer.map_err(|e| convert::call_error(&backend, "discover", e)) {
                Ok(clusters) => clusters,
                Err(e) => {
                    failures.push(e.message);
                    continue;
                }
            };
            if let Err(e) = convert::check_discovery(&backend, &clusters) {
                failures.push(format!("{}: {}", e.message, e.cause.unwrap_or_default()));
                continue;
            }
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
        if !failures.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "discovery failed: not every backend answered, so the node list would be incomplete",
            )
            .with_cause(failures.join("; ")));
        }

        let mut clusters = Vec::with_capacity(merged.len());
        let mut owners = Vec::new();
        for (cluster_id, nodes) in merged {
            let mut out = Vec::with_capacity(nodes.len());
            for (node_id, claims) in nodes {
                if let [(backend, _)] = claims.as_slice() {
                    owners.push(Ownership {
                        cluster_id: cluster_id.clone(),
                        node_id: node_id.clone(),
                        backend: backend.to_string(),
                    });
                } else {
                    let names: Vec<String> = claims.iter().map(|(b, _)| b.to_string()).collect();
                    tracing::warn!(
                        cluster = %cluster_id, node = %node_id, backends = ?names,
                        "node reported by several backends; reporting every claim"
                    );
                }
                out.extend(claims.into_iter().map(|(_, n)| convert::discovered_node(n)));
            }
            clusters.push(model::ClusterDiscover {
                cluster_id,
                nodes: out,
            });
        }
        Ok((clusters, owners))
    }

    /// `POST /provision`: resolve, route, call, check, remember who owns the new nodes.
    pub async fn provision(
        &self,
        request: model::ProvisionRequest,
    ) -> Result<model::ProvisionResponse, ApiError> {
        let request = convert::provision_request(request)?;
        let generation = self.generation()?;
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
        let backend = generation
            .backends
            .get(&route.backend)
            .expect("routes only name loaded backends");
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
    pub async fn deprovision(&self, request: model::DeprovisionRequest) -> Result<(), ApiError> {
        let request = convert::deprovision_request(request)?;
        let generation = self.generation()?;
        let (cluster_id, node_id) = (request.cluster_id.clone(), request.node_id.clone());
        let known = self
            .blocking("looking up the node's owner", move |s| {
                s.owner(&cluster_id, &node_id)
            })
            .await?;
        let owner = match known {
            Some(name) => name,
            None => {
                // Not provisioned through this gateway, or before the index existed: ask.
                let (_, owners) = self.discover_all(&generation).await?;
                let found = owners
                    .iter()
                    .find(|o| o.cluster_id == request.cluster_id && o.node_id == request.node_id)
                    .map(|o| o.backend.clone());
                self.blocking("recording node owners", move |s| s.record_owners(&owners))
                    .await?;
                found.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!(
                            "node `{}` of cluster `{}` does not exist",
                            request.node_id, request.cluster_id
                        ),
                    )
                })?
            }
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
        match backend.deprovision(request).await {
            Ok(()) => {
                self.blocking("forgetting the node's owner", move |s| {
                    s.forget_owner(&cluster_id, &node_id)
                })
                .await
            }
            Err(CallError::Plugin(wit::Error::NotFound(message))) => {
                // The owner no longer has it: the record is stale either way.
                self.blocking("forgetting the node's owner", move |s| {
                    s.forget_owner(&cluster_id, &node_id)
                })
                .await?;
                Err(convert::call_error(
                    backend.id(),
                    "deprovision",
                    CallError::Plugin(wit::Error::NotFound(message)),
                ))
            }
            Err(e) => Err(convert::call_error(backend.id(), "deprovision", e)),
        }
    }
}
