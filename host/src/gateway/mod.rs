//! The gateway: the current generation of loaded backends and the three operations of the
//! Platform API over it, in domain terms (requests already validated by `api/`, answers checked
//! by [`answer`], failures as [`Error`]).
//!
//! A [`Generation`] is an immutable snapshot (config plus loaded backends). Each request takes
//! the current one with a cheap `Arc` load and finishes on it, whatever happens meanwhile. The
//! ownership index is a cache that discovery rebuilds: failing to write it never fails a request
//! whose side effects already happened.

pub mod answer;
mod candidate;
mod discovery;
mod error;
mod ownership;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use rayon::prelude::*;

pub use discovery::{DiscoverReply, NodeConflict};
pub use error::Error;

use crate::config::{BackendConfig, Config};
use crate::metrics::Metrics;
use crate::model::BackendId;
use crate::model::{self, ProviderError};
use crate::rollout::{Candidate, Rollouts};
use crate::routing::RouteKey;
use crate::runtime::{Backend, CallError, LoadError, Runtime};
use crate::state::{Ownership, StateError, StateStore};
use ownership::Deprovision;
use plan::Calls;

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
    /// The backends' candidates, by the backend's name.
    pub candidates: BTreeMap<BackendId, Arc<Candidate>>,
}

impl Generation {
    /// Compile (or fetch from the cache) and pre-instantiate every backend of `config`. Slow on
    /// a cold cache: call it off the async runtime. A backend that keeps its name and its
    /// concurrency limit keeps its call slots from `previous`, so a reload never lets more calls
    /// run at once than the limit allows; a state namespace keeps its usage count and write
    /// rate.
    pub fn load(
        number: u64,
        config: Config,
        runtime: &Runtime,
        state: &Arc<dyn StateStore>,
        previous: Option<&Generation>,
    ) -> Result<Generation, LoadError> {
        let started = std::time::Instant::now();
        // Backends compile (or come from the cache) and are probed in parallel: a generation
        // with a slow Python or JavaScript component loads in the time of its slowest backend.
        let configs: Vec<_> = config.backends.iter().collect();
        let loaded: Vec<(BackendId, Backend, Option<Candidate>)> = configs
            .par_iter()
            .map(|(id, backend_config)| {
                let load =
                    |c| load_backend(runtime, c, config.max_plugin_size, Some(state.clone()));
                let backend = load(backend_config)?;
                let candidate = match &backend_config.candidate {
                    Some(c) => Some(Candidate::new(load(&c.backend)?, (**c).clone())),
                    None => None,
                };
                Ok(((*id).clone(), backend, candidate))
            })
            .collect::<Result<_, LoadError>>()?;
        let mut backends = BTreeMap::new();
        let mut candidates = BTreeMap::new();
        for (id, mut backend, candidate) in loaded {
            if let Some(candidate) = candidate {
                candidates.insert(id.clone(), Arc::new(candidate));
            }
            if let Some(old) = previous.and_then(|p| p.backends.get(&id)) {
                backend.share_slots_with(old);
            }
            // By namespace, not name: a renamed backend that keeps its namespace keeps its data.
            if let Some(old) =
                previous.and_then(|p| p.backend_by_namespace(backend.state_namespace()))
            {
                backend.share_state_usage_with(old);
            }
            backends.insert(id, Arc::new(backend));
        }
        runtime.metrics().record_build(started.elapsed());
        Ok(Generation {
            number,
            loaded_at: SystemTime::now(),
            config,
            backends,
            candidates,
        })
    }

    /// The backend whose state namespace is `namespace` (ownership records name namespaces).
    pub fn backend_by_namespace(&self, namespace: &str) -> Option<&Arc<Backend>> {
        self.backends
            .values()
            .find(|b| b.state_namespace() == namespace)
    }
}

/// Load one backend of a config: compile its plugin (or fetch it from the cache), check it
/// against the contract's world, pre-instantiate it and start it once within its limits. The
/// one way a backend is loaded, by a generation, by `check` and by the conformance kit; with
/// `state`, its plugin's state calls go there (`check` loads without one). Slow on a cold
/// cache: call it off the async runtime.
pub fn load_backend(
    runtime: &Runtime,
    config: &BackendConfig,
    max_plugin_size: u64,
    state: Option<Arc<dyn StateStore>>,
) -> Result<Backend, LoadError> {
    let prepared = runtime.prepare(config, max_plugin_size)?;
    tracing::debug!(backend = %config.name, digest = %prepared.digest, "loaded backend");
    let mut backend = Backend::new(config, prepared, runtime.engine(), state, runtime.metrics());
    if let Some(bounds) = config.record
        && let Some(recordings) = runtime.recordings()
    {
        let recordings = recordings.map_err(|message| LoadError::Start {
            backend: config.name.to_string(),
            message: format!("its calls cannot be recorded: {message}"),
        })?;
        backend = backend.recorded_in(recordings, bounds);
    }
    backend.probe().map_err(|message| LoadError::Start {
        backend: config.name.to_string(),
        message,
    })?;
    Ok(backend)
}

/// How long the state store's verdict for `/readyz` is kept: a load balancer polling every
/// replica (or many clients polling one) costs the store one check per replica per second at
/// most, and a store that stops answering shows within about a second.
pub const READY_CACHE: std::time::Duration = std::time::Duration::from_secs(1);

/// The state store's last check: when, and what it said.
type Verdict = Option<(std::time::Instant, Result<(), StateError>)>;

/// The gateway's shared state: the generation being served and the state store.
pub struct Gateway {
    current: ArcSwapOption<Generation>,
    state: Arc<dyn StateStore>,
    /// Held while the store is checked, so concurrent readiness probes share one check.
    verdict: tokio::sync::Mutex<Verdict>,
    ownership: ownership::Upkeep,
    metrics: Arc<Metrics>,
    rollouts: Arc<Rollouts>,
    recordings: Option<Arc<crate::recording::Lazy>>,
}

impl Gateway {
    /// A gateway with no generation yet (every API call answers 503 until one is installed).
    pub fn new(state: Arc<dyn StateStore>) -> Gateway {
        Gateway {
            current: ArcSwapOption::empty(),
            verdict: tokio::sync::Mutex::new(None),
            ownership: ownership::Upkeep::default(),
            state,
            metrics: Arc::default(),
            rollouts: Arc::new(Rollouts::new(Arc::default())),
            recordings: None,
        }
    }

    /// Serve the recordings kept in `recordings` (`GET /admin/recordings/NAME`).
    pub fn with_recordings(mut self, recordings: Arc<crate::recording::Lazy>) -> Gateway {
        self.rollouts.replay_from(recordings.clone());
        self.recordings = Some(recordings);
        self
    }

    /// The recordings it keeps, if it records.
    pub fn recordings(&self) -> Option<&Arc<crate::recording::Lazy>> {
        self.recordings.as_ref()
    }

    /// Count what it does (generations, discovery conflicts, the ownership index, the API's
    /// requests) in `metrics` (by default, a registry of its own that nobody reads).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Gateway {
        self.ownership = ownership::Upkeep::counting(metrics.ownership_records());
        self.rollouts = Arc::new(Rollouts::new(metrics.clone()));
        self.metrics = metrics;
        self
    }

    /// Where it counts what it does.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serve `generation` from now on. Requests that started on the previous one finish on it.
    pub fn install(&self, generation: Generation) {
        self.metrics.set_generation(generation.number);
        // Candidates with a replay gate start replaying now, before their first provision.
        for candidate in generation.candidates.values() {
            self.rollouts.open_gate(&self.state, candidate);
        }
        self.current.store(Some(Arc::new(generation)));
    }

    /// The generation being served, if one is loaded.
    pub fn current(&self) -> Option<Arc<Generation>> {
        self.current.load_full()
    }

    /// The state store.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// Ready to serve: a generation is loaded and the state store answers (a verdict at most
    /// [`READY_CACHE`] old).
    pub async fn ready(&self) -> Result<(), Error> {
        if self.current.load().is_none() {
            return Err(Error::Loading);
        }
        self.store_verdict().await.map_err(|error| Error::State {
            what: "checking that it can serve",
            error,
        })
    }

    /// Whether the state store answers: its last check if younger than [`READY_CACHE`], else a
    /// new one (which the probes that come meanwhile wait for and share).
    pub async fn store_verdict(&self) -> Result<(), StateError> {
        let mut verdict = self.verdict.lock().await;
        if let Some((at, result)) = &*verdict
            && at.elapsed() < READY_CACHE
        {
            return result.clone();
        }
        let result = self.state.check().await;
        if let Err(e) = &result
            && verdict.as_ref().is_none_or(|(_, before)| before.is_ok())
        {
            tracing::warn!("the state store stopped answering: {e}");
        }
        *verdict = Some((std::time::Instant::now(), result.clone()));
        result
    }

    /// The recorded owner (a state namespace) of a node, from the ownership index.
    pub async fn recorded_owner(
        &self,
        cluster_id: &str,
        node_id: &str,
    ) -> Result<Option<String>, Error> {
        self.state
            .owner(cluster_id, node_id)
            .await
            .map_err(|error| Error::State {
                what: "looking up the node's owner",
                error,
            })
    }

    /// A node of `answer` that another backend owns, as a problem with the answer: a plugin that
    /// answered its ID would otherwise receive that node's deprovisions, and its owner never
    /// would. (A failed look-up passes: the index is a cache.)
    async fn foreign_node(
        &self,
        backend: &Backend,
        request: &model::ProvisionRequest,
        answer: &model::ProvisionResponse,
    ) -> Option<String> {
        for id in answer.node_ids.iter().flatten() {
            if let Ok(Some(owner)) = self.state.owner(&request.cluster_id, id).await
                && owner != backend.state_namespace()
            {
                return Some(format!(
                    "node `{id}` of cluster `{}` belongs to another backend",
                    request.cluster_id
                ));
            }
        }
        None
    }

    /// `POST /provision`: route, call, check, remember who owns the new nodes.
    pub async fn provision(
        &self,
        generation: &Generation,
        request: model::ProvisionRequest,
    ) -> Result<model::ProvisionResponse, Error> {
        self.provision_with(generation, request, &Calls::live())
            .await
    }

    /// [`Gateway::provision`] with its plugin calls made through `calls` (in its mode), and the
    /// gateway's own records written where `calls` says.
    async fn provision_with(
        &self,
        generation: &Generation,
        request: model::ProvisionRequest,
        calls: &Calls,
    ) -> Result<model::ProvisionResponse, Error> {
        let state = calls.records(&self.state);
        let key = RouteKey::of(&request);
        let Some((_, route)) = generation.config.routes.select(&key) else {
            return Err(Error::NoRoute {
                request: key.to_string(),
            });
        };
        // The config checks that routes name defined backends, and a generation loads them all.
        let Some(backend) = generation.backends.get(&route.backend) else {
            return Err(Error::Call {
                backend: route.backend.clone(),
                operation: "provision",
                error: CallError::Host("the route names a backend that is not loaded".into()),
            });
        };
        // The decision's own span (a child of the request's), with what decided it.
        tracing::info_span!("route", route = %route.name, backend = %route.backend)
            .in_scope(|| tracing::debug!("routed provision"));
        // One idempotency key, one request: a retry with another body would get the first
        // request's machines (the plugin sees the same request ID).
        if request.is_keyed() && !ownership::check_keyed_request(&*state, &request).await {
            return Err(Error::KeyReused {
                cluster_id: request.cluster_id.clone(),
            });
        }
        // A cluster's provisions go to the backend's candidate when the split says so.
        let candidate = self
            .provision_side(generation, backend, &request.cluster_id)
            .await;
        let backend = candidate.as_ref().map_or(backend, |c| &c.backend);
        let result = self
            .provision_by(backend, candidate.as_deref(), request, calls, &state)
            .await;
        if let Some(candidate) = &candidate {
            self.count_candidate(candidate, calls, &result).await;
        }
        result
    }

    /// Call `backend` (the route's, or its candidate) to provision, check its answer, and
    /// record who owns the new nodes in `state`.
    async fn provision_by(
        &self,
        backend: &Arc<Backend>,
        candidate: Option<&Candidate>,
        request: model::ProvisionRequest,
        calls: &Calls,
        state: &Arc<dyn StateStore>,
    ) -> Result<model::ProvisionResponse, Error> {
        let answer = backend
            .provision_in(request.clone(), calls.context(backend, "provision"))
            .await
            .map_err(|error| Error::Call {
                backend: backend.id().clone(),
                operation: "provision",
                error,
            })?;
        let mut problem = answer::check_provision(&request, &answer).err();
        if problem.is_none() {
            problem = self.foreign_node(backend, &request, &answer).await;
        }
        if let Some(problem) = problem {
            self.metrics
                .record_invalid_answer(backend.id().as_str(), "provision");
            // The client hears 502 and never learns of these nodes: give them back.
            let released = release_refused_in(backend, &request, &answer, calls).await;
            let summary = released.describe();
            let problem = backend.redact(&problem);
            if released.orphans.is_empty() && !released.unnamed {
                tracing::warn!(backend = %backend.id(), "refused a provision answer ({problem}): {summary}");
            } else {
                tracing::error!(backend = %backend.id(), "refused a provision answer ({problem}): {summary}");
            }
            return Err(Error::InvalidAnswer {
                backend: backend.id().clone(),
                operation: "provision",
                problem: format!("{problem}; {summary}"),
            });
        }
        if let Some(ids) = &answer.node_ids {
            let owners: Vec<Ownership> = ids
                .iter()
                .map(|id| Ownership {
                    cluster_id: request.cluster_id.clone(),
                    node_id: id.clone(),
                    backend: backend.state_namespace().to_string(),
                })
                .collect();
            // The nodes exist now, and the client must hear so, or it would retry and create
            // them again. The index is a cache: the next discovery records these owners.
            if let Err(e) = state.record_owners(&owners).await {
                tracing::warn!(
                    backend = %backend.id(),
                    "provisioned {ids:?}, but the ownership index was not updated (discovery \
                     will record them): {e}"
                );
            }
            ownership::clear_deprovisions(&**state, &request.cluster_id, ids).await;
            if let Some(candidate) = candidate {
                Gateway::remember_candidate_nodes(&**state, candidate, &request.cluster_id, ids)
                    .await;
            }
        }
        Ok(answer)
    }

    /// `POST /deprovision`: find the owner (index first, then recent deprovisions, then a fresh
    /// discovery), mark the deprovision pending, call it, and remember that the node is gone so
    /// that a retry is answered 204 (also when the first attempt's outcome was lost).
    pub async fn deprovision(
        &self,
        generation: &Generation,
        request: model::DeprovisionRequest,
    ) -> Result<(), Error> {
        self.deprovision_with(generation, request, &Calls::live())
            .await
    }

    /// [`Gateway::deprovision`] with its plugin calls made through `calls` (in its mode), and
    /// the gateway's own records written where `calls` says.
    async fn deprovision_with(
        &self,
        generation: &Generation,
        request: model::DeprovisionRequest,
        calls: &Calls,
    ) -> Result<(), Error> {
        let state = calls.records(&self.state);
        let known = self
            .recorded_owner(&request.cluster_id, &request.node_id)
            .await?;
        let record = ownership::deprovision_record(&*state, &request).await;
        let owner = match known {
            Some(name) => name,
            None => {
                if record == Deprovision::Done {
                    tracing::info!(
                        cluster = %request.cluster_id, node = %request.node_id,
                        "node already deprovisioned through the gateway: answering the retry as done"
                    );
                    return Ok(());
                }
                // Not provisioned through this gateway (or before the index existed): ask
                // everyone.
                self.find_owner(generation, &request, calls).await?
            }
        };
        let Some(backend) = generation.backend_by_namespace(&owner) else {
            return Err(Error::OwnerNotLoaded {
                node_id: request.node_id,
                owner,
            });
        };
        // While the candidate that provisioned the node is live, it deprovisions it.
        let (candidate, side_recorded) = self.deprovision_side(generation, backend, &request).await;
        let backend = candidate.as_ref().map_or(backend, |c| &c.backend);
        ownership::mark_pending(&*state, &request).await;
        let call = calls.context(backend, "deprovision");
        let outcome = match backend.deprovision_in(request.clone(), call).await {
            // An earlier attempt's outcome was lost, and the node is gone: that attempt did it.
            Err(CallError::Plugin(ProviderError::NotFound(_)))
                if record == Deprovision::Pending =>
            {
                tracing::info!(
                    cluster = %request.cluster_id, node = %request.node_id,
                    "node gone after a deprovision whose outcome was lost: answering the retry as done"
                );
                Ok(())
            }
            outcome => outcome,
        };
        match &outcome {
            Ok(()) => {
                ownership::remember_deprovision(&*state, &request).await;
                forget_owner(&*state, &request).await;
            }
            // Unknown to its owner: the ownership record is stale.
            Err(CallError::Plugin(ProviderError::NotFound(_))) => {
                forget_owner(&*state, &request).await
            }
            Err(_) => {}
        }
        if side_recorded
            && matches!(
                &outcome,
                Ok(()) | Err(CallError::Plugin(ProviderError::NotFound(_)))
            )
        {
            Gateway::forget_candidate_node(&*state, backend.state_namespace(), &request).await;
        }
        let result = outcome.map_err(|error| Error::Call {
            backend: backend.id().clone(),
            operation: "deprovision",
            error,
        });
        if let Some(candidate) = &candidate {
            self.count_candidate(candidate, calls, &result).await;
        }
        result
    }
}

async fn forget_owner(state: &dyn StateStore, request: &model::DeprovisionRequest) {
    if let Err(e) = state
        .forget_owner(&request.cluster_id, &request.node_id)
        .await
    {
        // A stale record costs one call that answers not-found, then it is forgotten.
        tracing::warn!(
            cluster = %request.cluster_id, node = %request.node_id,
            "ownership record not removed: {e}"
        );
    }
}

/// What became of the nodes of a provision answer the gateway refused.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Released {
    /// Node IDs the plugin's deprovision released (or answered not-found for: nothing to free).
    pub released: Vec<String>,
    /// Node IDs whose deprovision failed, and why: they may stay allocated.
    pub orphans: Vec<(String, String)>,
    /// The answer named no node IDs, so nothing could be given back.
    pub unnamed: bool,
}

impl Released {
    /// One sentence for the log and the client's error body.
    pub fn describe(&self) -> String {
        if self.unnamed {
            return "the answer named no node IDs, so the gateway could not deprovision what the \
                    plugin took: any node it took stays allocated"
                .to_string();
        }
        let mut parts = Vec::new();
        if !self.released.is_empty() {
            parts.push(format!(
                "the gateway deprovisioned the node IDs it named ({})",
                self.released.join(", ")
            ));
        }
        if !self.orphans.is_empty() {
            let orphans: Vec<String> = self
                .orphans
                .iter()
                .map(|(id, why)| format!("`{id}` ({why})"))
                .collect();
            parts.push(format!(
                "could not deprovision {}: they may stay allocated",
                orphans.join(", ")
            ));
        }
        if parts.is_empty() {
            return "it named no node ID to deprovision".to_string();
        }
        parts.join("; ")
    }
}

/// Undo a provision answer the gateway refuses (a count outside the request, node IDs that
/// disagree with it): the client is answered 502 and will retry, so whatever the answer named
/// must not stay allocated. Each distinct, non-empty node ID it named is deprovisioned in the
/// request's cluster, one after the other; `not-found` means there was nothing to free. An
/// answer without node IDs cannot be undone. The conformance kit calls this too, so that what
/// it reports is what the gateway does.
pub async fn release_refused(
    backend: &Arc<Backend>,
    request: &model::ProvisionRequest,
    answer: &model::ProvisionResponse,
) -> Released {
    release_refused_in(backend, request, answer, &Calls::live()).await
}

/// [`release_refused`] with its deprovisions made through `calls` (in a plan: withheld).
async fn release_refused_in(
    backend: &Arc<Backend>,
    request: &model::ProvisionRequest,
    answer: &model::ProvisionResponse,
    calls: &Calls,
) -> Released {
    let Some(ids) = &answer.node_ids else {
        return Released {
            unnamed: true,
            ..Released::default()
        };
    };
    let mut released = Released::default();
    let mut seen = std::collections::HashSet::new();
    for id in ids.iter().filter(|id| !id.is_empty()) {
        if !seen.insert(id.as_str()) {
            continue;
        }
        let release = model::DeprovisionRequest {
            cluster_id: request.cluster_id.clone(),
            node_id: id.clone(),
        };
        match backend
            .deprovision_in(release, calls.context(backend, "release"))
            .await
        {
            Ok(()) | Err(CallError::Plugin(ProviderError::NotFound(_))) => {
                released.released.push(id.clone())
            }
            Err(e) => released.orphans.push((id.clone(), e.to_string())),
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;

    use crate::state::{RedbStore, StateError};

    /// The embedded store, but the ownership index can be made to fail, a plugin's next write
    /// can commit and then answer an error (its answer lost, as when a store stops answering
    /// after a write), and the plugin's reads are counted (the pool plugin reads once per
    /// deprovision, so they count its deprovision calls).
    struct BrokenIndex {
        inner: RedbStore,
        failing: AtomicBool,
        /// `check` fails while set; each `check` is counted.
        unready: AtomicBool,
        checks: std::sync::atomic::AtomicUsize,
        lose_next_plugin_write: AtomicBool,
        plugin_reads: AtomicUsize,
    }

    impl BrokenIndex {
        fn new(inner: RedbStore) -> BrokenIndex {
            BrokenIndex {
                inner,
                failing: AtomicBool::new(false),
                unready: AtomicBool::new(false),
                checks: Default::default(),
                lose_next_plugin_write: AtomicBool::new(false),
                plugin_reads: AtomicUsize::new(0),
            }
        }

        fn fail(&self) -> Result<(), StateError> {
            if self.failing.load(Ordering::SeqCst) {
                Err(StateError::Unavailable(
                    "index write refused by the test".into(),
                ))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl StateStore for BrokenIndex {
        async fn get(&self, ns: &str, k: &str) -> Result<Option<Vec<u8>>, StateError> {
            if ns == "pool" {
                self.plugin_reads.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.get(ns, k).await
        }
        async fn set(&self, ns: &str, k: &str, v: &[u8]) -> Result<(), StateError> {
            self.inner.set(ns, k, v).await
        }
        async fn delete(&self, ns: &str, k: &str) -> Result<(), StateError> {
            self.inner.delete(ns, k).await
        }
        async fn compare_and_swap(
            &self,
            ns: &str,
            k: &str,
            e: Option<&[u8]>,
            n: Option<&[u8]>,
        ) -> Result<bool, StateError> {
            let swapped = self.inner.compare_and_swap(ns, k, e, n).await?;
            if ns == "pool" && self.lose_next_plugin_write.swap(false, Ordering::SeqCst) {
                return Err(StateError::Unavailable(
                    "the write committed, its answer lost by the test".into(),
                ));
            }
            Ok(swapped)
        }
        async fn list_keys(
            &self,
            ns: &str,
            p: &str,
            a: Option<&str>,
            l: usize,
        ) -> Result<Vec<String>, StateError> {
            self.inner.list_keys(ns, p, a, l).await
        }
        async fn namespaces(&self, a: Option<&str>, l: usize) -> Result<Vec<String>, StateError> {
            self.inner.namespaces(a, l).await
        }
        async fn owner(&self, c: &str, n: &str) -> Result<Option<String>, StateError> {
            self.inner.owner(c, n).await
        }
        async fn record_owners(&self, owners: &[Ownership]) -> Result<(), StateError> {
            self.fail()?;
            self.inner.record_owners(owners).await
        }
        async fn forget_owner(&self, c: &str, n: &str) -> Result<(), StateError> {
            self.fail()?;
            self.inner.forget_owner(c, n).await
        }
        async fn owners(
            &self,
            a: Option<(&str, &str)>,
            l: usize,
        ) -> Result<Vec<Ownership>, StateError> {
            self.inner.owners(a, l).await
        }
        async fn check(&self) -> Result<(), StateError> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            if self.unready.load(Ordering::SeqCst) {
                return Err(StateError::Unavailable(
                    "etcd at https://etcd-0.internal:2379: no quorum".into(),
                ));
            }
            Ok(())
        }
        fn describe(&self) -> String {
            "broken index".into()
        }
    }

    /// A generation serving the pool plugin with `machines` small machines (`m1`, ...), over
    /// `state`, and a gateway on the same state.
    pub(super) fn pool_gateway(
        dir: &std::path::Path,
        state: &Arc<dyn StateStore>,
        machines: usize,
    ) -> (Generation, Gateway) {
        let machines: Vec<String> = (1..=machines)
            .map(|i| {
                format!(
                    "{{ id = \"m{i}\", agent_address = \"http://10.0.0.{i}:1\", node_class = \"small\" }}"
                )
            })
            .collect();
        let text = format!(
            "[backends.pool]\nplugin = {:?}\n[backends.pool.settings]\nmachines = [{}]\n[[routes]]\nbackend = \"pool\"\n",
            xtask::plugin_path("pool").display().to_string(),
            machines.join(", ")
        );
        let config = Config::parse(&dir.join("gateway.toml"), &text).unwrap();
        let runtime = Runtime::new(None, u64::MAX, 64).unwrap();
        let generation = Generation::load(1, config, &runtime, state, None).unwrap();
        (generation, Gateway::new(state.clone()))
    }

    /// A provision of `count` small machines for cluster `c1`.
    pub(super) fn provision(count: u32) -> model::ProvisionRequest {
        model::ProvisionRequest {
            request_id: "r-1".into(),
            cluster_id: "c1".into(),
            store: "mongodb".into(),
            store_version: "6.0".into(),
            node_group: "data".into(),
            node_class: "small".into(),
            desired_count: count,
            count,
            attributes: "{}".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_index_write_never_fails_a_provision_or_a_discovery_that_happened() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BrokenIndex::new(RedbStore::open(dir.path()).unwrap()));
        store.failing.store(true, Ordering::SeqCst);
        let state: Arc<dyn StateStore> = store.clone();
        let (generation, gateway) = pool_gateway(dir.path(), &state, 1);

        let request = provision(1);
        // The machine is taken (the plugin's own state) but the index cannot be written: the
        // client must still hear about the node, or its retry would take another machine.
        let answer = gateway.provision(&generation, request).await.unwrap();
        assert_eq!(answer.node_ids.as_deref(), Some(&["m1".to_string()][..]));
        let reply = gateway.discover(&generation).await.unwrap();
        assert_eq!(reply.clusters[0].nodes[0].node_id, "m1");
        assert_eq!(gateway.recorded_owner("c1", "m1").await.unwrap(), None);

        // Once the store takes writes again, the next discovery records the owner.
        store.failing.store(false, Ordering::SeqCst);
        gateway.discover(&generation).await.unwrap();
        assert_eq!(
            gateway.recorded_owner("c1", "m1").await.unwrap().as_deref(),
            Some("pool")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readiness_checks_the_store_once_per_second_however_often_it_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BrokenIndex::new(RedbStore::open(dir.path()).unwrap()));
        let gateway = Gateway::new(store.clone());
        // Fifty probes at once share one check (they take microseconds: far inside the second
        // the verdict is kept).
        let probes = (0..50).map(|_| gateway.store_verdict());
        assert!(
            futures::future::join_all(probes)
                .await
                .iter()
                .all(Result::is_ok)
        );
        assert_eq!(store.checks.load(Ordering::SeqCst), 1);
        // The store stops answering: the kept verdict serves until it is a second old, then the
        // next probe checks again and says so.
        store.unready.store(true, Ordering::SeqCst);
        assert!(gateway.store_verdict().await.is_ok());
        tokio::time::sleep(READY_CACHE).await;
        let err = gateway.store_verdict().await.unwrap_err();
        assert!(err.to_string().contains("no quorum"), "{err}");
        assert_eq!(store.checks.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_retried_deprovision_whose_first_outcome_was_lost_is_done_not_404() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BrokenIndex::new(RedbStore::open(dir.path()).unwrap()));
        let state: Arc<dyn StateStore> = store.clone();
        let (generation, gateway) = pool_gateway(dir.path(), &state, 2);
        let answer = gateway.provision(&generation, provision(2)).await.unwrap();
        assert_eq!(answer.count, 2);
        let request = |node: &str| model::DeprovisionRequest {
            cluster_id: "c1".into(),
            node_id: node.into(),
        };
        // The pool reads its machine's key once per deprovision (the provision's reads before
        // this point are not counted).
        let base = store.plugin_reads.load(Ordering::SeqCst);
        let plugin_calls = || store.plugin_reads.load(Ordering::SeqCst) - base;

        // m1: the plugin releases the machine, its write commits, and the store's answer is
        // lost: the client hears 503 although the machine is free.
        store.lose_next_plugin_write.store(true, Ordering::SeqCst);
        let error = gateway
            .deprovision(&generation, request("m1"))
            .await
            .unwrap_err();
        assert_eq!(
            crate::api::error::ApiError::from(error).status,
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(plugin_calls(), 1);
        // The retry finds m1 unknown to its owner; the pending mark written before the first
        // attempt says that attempt did it: done.
        gateway
            .deprovision(&generation, request("m1"))
            .await
            .unwrap();
        assert_eq!(plugin_calls(), 2);
        // A second retry is answered from the record, without the plugin.
        gateway
            .deprovision(&generation, request("m1"))
            .await
            .unwrap();
        assert_eq!(plugin_calls(), 2, "the plugin was called again");

        // The control, m2: released behind the gateway's back, with no deprovision pending:
        // its owner's not-found is the answer, 404.
        let backend = generation.backend_by_namespace("pool").unwrap().clone();
        backend.deprovision(request("m2")).await.unwrap();
        let error = gateway
            .deprovision(&generation, request("m2"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::Call {
                    error: CallError::Plugin(ProviderError::NotFound(_)),
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            crate::api::error::ApiError::from(error).status,
            axum::http::StatusCode::NOT_FOUND
        );
    }
}
