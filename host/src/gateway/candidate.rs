//! Routing to a backend's candidate: which side provisions a cluster, which side deprovisions a
//! node (the one that provisioned it, while the candidate is live), counting the candidate's
//! calls, and shadow discovery: the candidate's discover run in [`Mode::Shadow`] beside the
//! stable one, compared with it after the client has its answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::plan::Calls;
use super::{Error, Gateway, Generation};
use crate::capability::call::{CallContext, Mode};
use crate::model::{self, Cluster};
use crate::rollout::health::Outcome;
use crate::rollout::{CANDIDATE_NODES, Candidate, MAX_DIFFERENCES, Side, View, counts_as_failure};
use crate::runtime::{Backend, CallError};
use crate::state::{MAX_KEY_SIZE, StateStore};

/// The key of a node's candidate record.
fn node_key(namespace: &str, cluster_id: &str, node_id: &str) -> Option<String> {
    let key = format!("{namespace}/{cluster_id}\u{0}{node_id}");
    (key.len() <= MAX_KEY_SIZE).then_some(key)
}

impl Gateway {
    /// `backend`'s candidate in `generation` and its rollout as this replica sees it; `None`
    /// without a candidate, or while the store cannot say.
    pub async fn candidate(
        &self,
        generation: &Generation,
        backend: &crate::model::BackendId,
    ) -> Option<(Arc<Candidate>, View)> {
        let candidate = generation.candidates.get(backend)?;
        let view = self.rollouts.view(&*self.state, candidate).await?;
        Some((candidate.clone(), view))
    }

    /// Re-arm `backend`'s candidate (`POST /admin/backends/NAME/candidate/reset`): its weight
    /// and steps start over, its window is forgotten. `Ok(None)`: it has no candidate.
    pub async fn reset_candidate(
        &self,
        generation: &Generation,
        backend: &crate::model::BackendId,
    ) -> Result<Option<(Arc<Candidate>, View)>, Error> {
        let Some(candidate) = generation.candidates.get(backend) else {
            return Ok(None);
        };
        self.rollouts
            .reset(&*self.state, candidate)
            .await
            .map_err(|error| Error::State {
                what: "re-arming the candidate",
                error,
            })?;
        Ok(self.candidate(generation, backend).await)
    }

    /// The candidate that serves `cluster_id`'s provisions on `stable`'s behalf, if any.
    pub(super) async fn provision_side(
        &self,
        generation: &Generation,
        stable: &Backend,
        cluster_id: &str,
    ) -> Option<Arc<Candidate>> {
        let candidate = generation.candidates.get(stable.id())?;
        self.rollouts.open_gate(&self.state, candidate);
        match self
            .rollouts
            .side(&*self.state, candidate, cluster_id)
            .await
        {
            Side::Candidate => Some(candidate.clone()),
            Side::Stable => None,
        }
    }

    /// The candidate that provisioned `request`'s node on `owner`'s behalf, while it is live,
    /// and whether a record says the candidate provisioned it (to forget once it is gone).
    pub(super) async fn deprovision_side(
        &self,
        generation: &Generation,
        owner: &Backend,
        request: &model::DeprovisionRequest,
    ) -> (Option<Arc<Candidate>>, bool) {
        let Some(candidate) = generation.candidates.get(owner.id()) else {
            return (None, false);
        };
        let Some(key) = node_key(
            owner.state_namespace(),
            &request.cluster_id,
            &request.node_id,
        ) else {
            return (None, false);
        };
        let by = match self.state.get(CANDIDATE_NODES, &key).await {
            Ok(by) => by,
            Err(e) => {
                tracing::warn!(backend = %owner.id(), "cannot read which side provisioned the node: {e}");
                None
            }
        };
        let recorded = by.is_some();
        let by_this = by.is_some_and(|f| f == candidate.fingerprint.as_bytes());
        if by_this && self.rollouts.live(&*self.state, candidate).await {
            return (Some(candidate.clone()), recorded);
        }
        (None, recorded)
    }

    /// Remember that `candidate` provisioned `node_ids` (best effort: without the record, the
    /// stable plugin deprovisions them, as it does once the candidate is gone).
    pub(super) async fn remember_candidate_nodes(
        state: &dyn StateStore,
        candidate: &Candidate,
        cluster_id: &str,
        node_ids: &[String],
    ) {
        let namespace = candidate.backend.state_namespace();
        for id in node_ids {
            let Some(key) = node_key(namespace, cluster_id, id) else {
                continue;
            };
            if let Err(e) = state
                .set(CANDIDATE_NODES, &key, candidate.fingerprint.as_bytes())
                .await
            {
                tracing::warn!(backend = %candidate.backend.id(), "cannot record that the candidate provisioned `{id}`: {e}");
            }
        }
    }

    /// Forget which side provisioned a node that is gone.
    pub(super) async fn forget_candidate_node(
        state: &dyn StateStore,
        namespace: &str,
        request: &model::DeprovisionRequest,
    ) {
        if let Some(key) = node_key(namespace, &request.cluster_id, &request.node_id)
            && let Err(e) = state.delete(CANDIDATE_NODES, &key).await
        {
            tracing::warn!("cannot forget which side provisioned a node: {e}");
        }
    }

    /// Count a live call of `candidate` that came to `result`.
    pub(super) async fn count_candidate<T>(
        &self,
        candidate: &Candidate,
        calls: &Calls,
        result: &Result<T, Error>,
    ) {
        if calls.mode() != Mode::Live {
            return;
        }
        let outcome = match result {
            Ok(_) => Outcome::Ok,
            Err(Error::Call { error, .. }) if counts_as_failure(error) => Outcome::Failed,
            Err(Error::Call { .. }) => Outcome::Ok,
            Err(Error::InvalidAnswer { .. }) => Outcome::Failed,
            // The gateway's own refusals (a reused key, the store) say nothing of the plugin.
            Err(_) => return,
        };
        self.rollouts.count(&*self.state, candidate, outcome).await;
    }

    /// Start `stable`'s candidate's shadow discovery, if it has one that shadows and the calls
    /// are live: the candidate's discover runs now in shadow mode, and is compared with what is
    /// sent on the returned channel (the stable answer) once both are there. The caller never
    /// waits for it.
    pub(super) fn start_shadow(
        &self,
        generation: &Generation,
        stable: &Backend,
        calls: &Calls,
    ) -> Option<oneshot::Sender<Vec<Cluster>>> {
        if calls.mode() != Mode::Live {
            return None;
        }
        let candidate = generation.candidates.get(stable.id())?.clone();
        if !candidate.config.shadow {
            return None;
        }
        let (send, stable_answer) = oneshot::channel::<Vec<Cluster>>();
        let rollouts = self.rollouts.clone();
        let state = self.state.clone();
        shadow_runtime().spawn(async move {
            // A rolled-back candidate is not watched any more: no shadow (its record is read at
            // most once a second).
            if !rollouts.live(&*state, &candidate).await {
                return;
            }
            let context = CallContext::new(Mode::Shadow, false);
            let shadow = candidate.backend.discover_in(context).await;
            // No stable answer (it failed): nothing to compare with.
            let Ok(stable) = stable_answer.await else {
                return;
            };
            let differences = match shadow {
                Ok(clusters) => match super::answer::check_discovery(&clusters) {
                    Ok(()) => Some(compare(&stable, &clusters, &candidate.backend)),
                    Err(_) => None,
                },
                // The candidate had no room for it, or the shadow, which runs only on CPU that
                // serving leaves idle, was starved past its deadline: not the candidate's
                // failure. (A candidate too slow for real calls fails its provisions.)
                Err(CallError::Busy(_) | CallError::PoolExhausted | CallError::Timeout(_)) => {
                    return;
                }
                Err(_) => None,
            };
            rollouts.shadowed(&*state, &candidate, differences).await;
        });
        Some(send)
    }
}

/// Where shadow discoveries run: one thread of their own at the lowest CPU priority
/// (`SCHED_IDLE` on Linux), so that a shadow uses only CPU that serving leaves idle and never
/// delays a served answer. Started on the first shadow.
fn shadow_runtime() -> &'static tokio::runtime::Handle {
    static HANDLE: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let (send, handle) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("shadow".into())
            .spawn(move || {
                lowest_priority();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the shadow thread's runtime");
                let _ = send.send(runtime.handle().clone());
                runtime.block_on(std::future::pending::<()>());
            })
            .expect("the shadow thread");
        handle.recv().expect("the shadow thread's runtime")
    })
}

/// Put the calling thread at idle priority; where that is refused, it keeps its priority.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sched_param` is plain integers (and, on musl, timespecs): all zero is a valid
        // value, and priority 0 is the one SCHED_IDLE takes. sched_setscheduler acts on the
        // calling thread (pid 0) and only reads the parameter.
        let result = unsafe {
            let param: libc::sched_param = std::mem::zeroed();
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param)
        };
        if result != 0 {
            tracing::warn!(
                "shadow discoveries run at normal priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// How the candidate's discovery differs from the stable one: nodes missing, extra, or with
/// other fields; at most [`MAX_DIFFERENCES`] described (redacted as the candidate's answers
/// are), and a last line saying how many more.
pub fn compare(stable: &[Cluster], candidate: &[Cluster], backend: &Backend) -> Vec<String> {
    let index = |clusters: &[Cluster]| -> BTreeMap<(String, String), model::Node> {
        clusters
            .iter()
            .flat_map(|c| {
                c.nodes
                    .iter()
                    .map(|n| ((c.cluster_id.clone(), n.node_id.clone()), n.clone()))
            })
            .collect()
    };
    let (stable, candidate) = (index(stable), index(candidate));
    let mut differences = Vec::new();
    let mut more = 0usize;
    let mut note = |text: String| {
        if differences.len() < MAX_DIFFERENCES {
            differences.push(backend.redact(&text));
        } else {
            more += 1;
        }
    };
    for ((cluster, node), stable_node) in &stable {
        match candidate.get(&(cluster.clone(), node.clone())) {
            None => note(format!("node `{node}` of cluster `{cluster}` missing")),
            Some(other) if other != stable_node => note(format!(
                "node `{node}` of cluster `{cluster}` differs: stable {stable_node:?}, candidate {other:?}"
            )),
            Some(_) => {}
        }
    }
    for (cluster, node) in candidate.keys() {
        if !stable.contains_key(&(cluster.clone(), node.clone())) {
            note(format!("node `{node}` of cluster `{cluster}` extra"));
        }
    }
    if more > 0 {
        differences.push(format!("and {more} more"));
    }
    differences
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::rollout::{ROLLOUTS, Record, State};
    use crate::runtime::Runtime;
    use crate::state::RedbStore;

    /// A generation serving the pool plugin (machines `m1`..`m{machines}`) with `candidate` as
    /// its `[backends.pool.candidate]` table (the plugin path is given as `{fault}`/`{pool}`).
    fn generation(
        dir: &std::path::Path,
        state: &Arc<dyn StateStore>,
        machines: usize,
        candidate: &str,
    ) -> Generation {
        counted(dir, state, machines, candidate).0
    }

    /// [`generation`], and the registry its plugin calls are counted in.
    fn counted(
        dir: &std::path::Path,
        state: &Arc<dyn StateStore>,
        machines: usize,
        candidate: &str,
    ) -> (Generation, Arc<crate::metrics::Metrics>) {
        let machines: Vec<String> = (1..=machines)
            .map(|i| format!("{{ id = \"m{i}\", agent_address = \"http://10.0.0.{i}:1\", node_class = \"small\" }}"))
            .collect();
        let path = |p: &str| format!("{:?}", xtask::plugin_path(p).display().to_string());
        let candidate = candidate
            .replace("{fault}", &path("fault"))
            .replace("{pool}", &path("pool"));
        let text = format!(
            "[backends.pool]\nplugin = {}\n[backends.pool.settings]\nmachines = [{}]\n\
             [backends.pool.candidate]\n{candidate}\n[[routes]]\nbackend = \"pool\"\n",
            path("pool"),
            machines.join(", ")
        );
        let config = Config::parse(&dir.join("gateway.toml"), &text).unwrap();
        let runtime = Runtime::new(None, u64::MAX, 64).unwrap();
        let generation = Generation::load(1, config, &runtime, state, None).unwrap();
        (generation, runtime.metrics().clone())
    }

    fn provision(cluster: &str) -> model::ProvisionRequest {
        model::ProvisionRequest {
            request_id: format!("r-{cluster}"),
            cluster_id: cluster.into(),
            store: "mongodb".into(),
            store_version: "6.0".into(),
            node_group: "data".into(),
            node_class: "small".into(),
            desired_count: 1,
            count: 1,
            attributes: "{}".into(),
        }
    }

    async fn stored(state: &Arc<dyn StateStore>) -> Record {
        serde_json::from_slice(&state.get(ROLLOUTS, "pool").await.unwrap().unwrap()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failing_candidate_is_rolled_back_and_the_verdict_survives_a_restart_until_rearmed() {
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).unwrap());
        let failing = "plugin = {fault}\nsettings = { mode = \"panic\" }\nweight = 50\n\
                       [backends.pool.candidate.rollback]\nmin_calls = 10\n";
        let generation = generation(dir.path(), &state, 200, failing);
        let gateway = Gateway::new(state.clone());
        let mut failed = 0;
        for i in 0..100 {
            if gateway
                .provision(&generation, provision(&format!("c{i}")))
                .await
                .is_err()
            {
                failed += 1;
            }
        }
        // Calls are sequential here: nothing in flight beyond the tenth failure.
        assert_eq!(failed, 10, "rolled back after min_calls failures");
        let record = stored(&state).await;
        let verdict = record.rolled_back.expect("the verdict is in the store");
        assert_eq!(
            (verdict.reason.as_str(), verdict.failures),
            ("error_rate", 10)
        );

        // A restart (a new gateway on the same store) follows the verdict: every cluster,
        // including those the split gives the candidate, goes to the stable plugin.
        let restarted = Gateway::new(state.clone());
        for i in 100..140 {
            restarted
                .provision(&generation, provision(&format!("c{i}")))
                .await
                .unwrap();
        }
        let view = restarted
            .rollouts
            .view(&*state, generation.candidates.values().next().unwrap())
            .await
            .unwrap();
        assert_eq!((view.state, view.weight), (State::RolledBack, 0));

        // Another candidate (other settings) re-arms.
        let other = "plugin = {fault}\nsettings = { mode = \"echo\" }\nweight = 50\n";
        let rearmed = super::tests::generation(dir.path(), &state, 200, other);
        let answer = restarted
            .provision(&rearmed, provision("c0"))
            .await
            .unwrap();
        assert_eq!(stored(&state).await.rolled_back, None);
        let split = crate::rollout::takes(50, "pool", "c0");
        let echoed = answer.node_ids.unwrap()[0].starts_with('{');
        assert_eq!(
            echoed, split,
            "the echo candidate answers the clusters the split gives it"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_node_is_deprovisioned_by_the_candidate_while_live_and_by_the_stable_plugin_after() {
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).unwrap());
        // The candidate is the pool plugin too, with the same machines and another setting:
        // both sides can deprovision any node, and the metrics say which side did.
        let (generation, metrics) =
            counted(dir.path(), &state, 4, "plugin = {pool}\nweight = 100\n");
        let gateway = Gateway::new(state.clone());
        let deprovisions = |version: &str| {
            let text = metrics.encode_prometheus();
            text.lines()
                .filter(|l| l.starts_with("platform_gateway_plugin_calls_total{"))
                .filter(|l| {
                    l.contains("operation=\"deprovision\"")
                        && l.contains(&format!("version=\"{version}\""))
                })
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum::<u64>()
        };
        let a = gateway
            .provision(&generation, provision("a"))
            .await
            .unwrap();
        let b = gateway
            .provision(&generation, provision("b"))
            .await
            .unwrap();
        let request =
            |cluster: &str, answer: &model::ProvisionResponse| model::DeprovisionRequest {
                cluster_id: cluster.into(),
                node_id: answer.node_ids.as_ref().unwrap()[0].clone(),
            };
        gateway
            .deprovision(&generation, request("a", &a))
            .await
            .unwrap();
        assert_eq!((deprovisions("candidate"), deprovisions("stable")), (1, 0));

        let candidate = &generation.candidates.values().next().unwrap().clone();
        for _ in 0..20 {
            gateway
                .rollouts
                .count(&*state, candidate, Outcome::Failed)
                .await;
        }
        assert!(stored(&state).await.rolled_back.is_some());
        gateway
            .deprovision(&generation, request("b", &b))
            .await
            .unwrap();
        assert_eq!((deprovisions("candidate"), deprovisions("stable")), (1, 1));
        // The record of who provisioned b is gone with it.
        assert!(
            state
                .list_keys(CANDIDATE_NODES, "", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// Every key and value of every namespace.
    async fn dump(state: &dyn StateStore) -> Vec<(String, String, Vec<u8>)> {
        let mut all = Vec::new();
        for ns in state.namespaces(None, 1000).await.unwrap() {
            for key in crate::state::all_keys(state, &ns, "").await.unwrap() {
                let value = state.get(&ns, &key).await.unwrap().unwrap();
                all.push((ns.clone(), key, value));
            }
        }
        all
    }

    async fn shadows_seen(
        gateway: &Gateway,
        state: &Arc<dyn StateStore>,
        c: &Candidate,
    ) -> crate::rollout::View {
        for _ in 0..200 {
            let view = gateway.rollouts.view(&**state, c).await.unwrap();
            if view.shadows.compared + view.shadows.failed > 0 {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the shadow discovery never finished");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_shadow_discovery_that_writes_state_leaves_the_store_identical_and_its_extra_node_is_counted()
     {
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).unwrap());
        let candidate = "plugin = {fault}\nsettings = { mode = \"fill-state\", fill_keys = 3 }\n\
                         weight = 0\n";
        let generation = generation(dir.path(), &state, 1, candidate);
        let gateway = Gateway::new(state.clone());
        let c = generation.candidates.values().next().unwrap().clone();
        // Arm the rollout first: its record is the gateway's own, written once.
        gateway.rollouts.view(&*state, &c).await.unwrap();
        let before = dump(&*state).await;
        let reply = gateway.discover(&generation).await.unwrap();
        assert!(
            reply.clusters.is_empty(),
            "the stable (empty) answer is served"
        );
        let view = shadows_seen(&gateway, &state, &c).await;
        assert_eq!((view.shadows.compared, view.shadows.different), (1, 1));
        assert!(
            view.shadows.last[0].contains("fault-node") && view.shadows.last[0].contains("extra"),
            "{:?}",
            view.shadows.last
        );
        assert_eq!(
            dump(&*state).await,
            before,
            "the shadow's writes reached the store"
        );
        assert_eq!(
            view.state,
            State::Active,
            "on_divergence = count only counts"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_diverging_shadow_rolls_the_candidate_back_when_divergence_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).unwrap());
        let candidate = "plugin = {fault}\nweight = 10\n[backends.pool.candidate.rollback]\n\
                         min_calls = 1\non_divergence = \"rollback\"\n";
        let generation = generation(dir.path(), &state, 1, candidate);
        let gateway = Gateway::new(state.clone());
        let c = generation.candidates.values().next().unwrap().clone();
        gateway.discover(&generation).await.unwrap();
        let view = shadows_seen(&gateway, &state, &c).await;
        assert_eq!(view.shadows.different, 1);
        // The verdict is written just after the comparison is counted.
        for _ in 0..200 {
            if let Some(verdict) = stored(&state).await.rolled_back {
                assert_eq!(verdict.reason, "divergence");
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the diverging candidate was not rolled back");
    }
}
