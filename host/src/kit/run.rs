//! The scenario's requests and what they took: every request new, every accepted answer
//! held, every refused one released as the gateway releases it, and what stays allocated after
//! that reported as a leak.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::capability::call::CallContext;
use crate::gateway::answer::{check_discovery, check_provision};
use crate::model::{self, ProviderError};
use crate::runtime::{Backend, CallError};

/// What the scenario asks the plugin for.
#[derive(Debug, Clone)]
pub struct Script {
    /// The store of the provision requests.
    pub store: String,
    /// Their node group.
    pub node_group: String,
    /// Their node class (one the plugin's settings offer).
    pub node_class: String,
    /// Said after a failed provision, to help choose the node class (how it was chosen).
    pub class_hint: Option<String>,
    /// How many provisions race in the concurrency check.
    pub concurrent: usize,
    /// The plugin provisions: a provision it refuses fails the check. When false (the author
    /// said `--no-provision`), a plugin that answers `unsupported` (or `invalid-request` under
    /// contract 0.1, which has no `unsupported`) has its lifecycle skipped.
    pub provisions: bool,
    /// How many nodes the exhaustion check takes at most before it stops: a fixed inventory
    /// must be smaller to be exhausted; a cloud never runs out.
    pub max_nodes: u32,
    /// Skip the idempotency check: the plugin leaves it to an API that the test double it runs
    /// against does not implement (moto ignores EC2's `ClientToken`).
    pub skip_idempotency: bool,
}

/// The contract's spelling of a call's failure (`invalid-request: ...`).
pub(super) fn describe(error: &CallError) -> String {
    match error {
        CallError::Plugin(e) => format!("{}: {}", e.case(), e.message()),
        other => other.to_string(),
    }
}

/// Why a provision of the scenario did not give nodes.
pub(super) enum Failed {
    /// The call failed.
    Call(CallError),
    /// The answer broke the contract, so the gateway would refuse it (502).
    Refused(String),
}

impl Failed {
    pub(super) fn describe(&self) -> String {
        match self {
            Failed::Call(e) => describe(e),
            Failed::Refused(problem) => format!("the gateway refuses the answer: {problem}"),
        }
    }

    /// Running out is an answer; a crash or a broken answer is not.
    pub(super) fn ran_out(&self) -> bool {
        matches!(
            self,
            Failed::Call(CallError::Plugin(
                ProviderError::Unavailable { .. } | ProviderError::Conflict(_)
            ))
        )
    }
}

/// What the kit holds in each cluster, by its accepted answers: the node IDs they named, and
/// how many nodes answers without IDs counted.
#[derive(Default)]
pub(super) struct Held {
    ids: HashSet<String>,
    unnamed: u32,
}

/// The scenario's requests and what they took.
pub(super) struct Run<'a> {
    pub(super) backend: &'a Arc<Backend>,
    pub(super) script: &'a Script,
    /// Every request is a new one, in this run and across runs: a plugin may key idempotency
    /// on the ID (EC2 keeps a ClientToken for hours), and must not merge them.
    pub(super) run: String,
    pub(super) sent: AtomicU32,
    pub(super) held: Mutex<HashMap<String, Held>>,
    /// Nodes still allocated after the gateway's release of a refused answer.
    pub(super) leaks: Mutex<Vec<String>>,
}

impl Run<'_> {
    pub(super) fn request(&self, cluster: &str, count: u32) -> model::ProvisionRequest {
        model::ProvisionRequest {
            request_id: format!(
                "conformance-{}-{}",
                self.run,
                self.sent.fetch_add(1, Ordering::Relaxed)
            ),
            cluster_id: cluster.to_string(),
            store: self.script.store.clone(),
            store_version: "1.0".into(),
            node_group: self.script.node_group.clone(),
            node_class: self.script.node_class.clone(),
            desired_count: count,
            count,
            attributes: "{}".into(),
        }
    }

    /// Provision as the gateway does: an answer that breaks the contract is refused, and what
    /// it named is released ([`crate::gateway::release_refused`]); then whatever the refused
    /// call left allocated in the cluster is a leak.
    pub(super) async fn provision(
        &self,
        request: &model::ProvisionRequest,
    ) -> Result<model::ProvisionResponse, Failed> {
        self.provision_in(request, CallContext::live()).await
    }

    /// [`Run::provision`], its call in `call`'s mode and transcript.
    pub(super) async fn provision_in(
        &self,
        request: &model::ProvisionRequest,
        call: Arc<CallContext>,
    ) -> Result<model::ProvisionResponse, Failed> {
        let answer = self
            .backend
            .provision_in(request.clone(), call)
            .await
            .map_err(Failed::Call)?;
        if let Err(problem) = check_provision(request, &answer) {
            let released = crate::gateway::release_refused(self.backend, request, &answer).await;
            self.find_leaks(request, &problem, &released.describe())
                .await;
            return Err(Failed::Refused(problem));
        }
        self.hold(&request.cluster_id, &answer);
        Ok(answer)
    }

    pub(super) fn hold(&self, cluster: &str, answer: &model::ProvisionResponse) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let held = held.entry(cluster.to_string()).or_default();
        match &answer.node_ids {
            Some(ids) => held.ids.extend(ids.iter().cloned()),
            None => held.unnamed += answer.count,
        }
    }

    async fn find_leaks(&self, request: &model::ProvisionRequest, problem: &str, released: &str) {
        let cluster = &request.cluster_id;
        let nodes = match self.backend.discover().await {
            Ok(clusters) => clusters
                .into_iter()
                .filter(|c| &c.cluster_id == cluster)
                .flat_map(|c| c.nodes)
                .map(|n| n.node_id)
                .collect::<Vec<_>>(),
            Err(e) => {
                self.leak(format!(
                    "after the refused answer to `{}` ({problem}), discovery failed: {}",
                    request.request_id,
                    describe(&e)
                ));
                return;
            }
        };
        let unknown: Vec<String> = {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let held = held.get(cluster);
            let unknown: Vec<String> = nodes
                .into_iter()
                .filter(|id| !held.is_some_and(|h| h.ids.contains(id)))
                .collect();
            let unnamed = held.map_or(0, |h| h.unnamed) as usize;
            if unknown.len() <= unnamed {
                return;
            }
            unknown
        };
        self.leak(format!(
            "the answer to a request of {} in cluster `{cluster}` was refused ({problem}) and \
             {released}, yet discovery still shows {} there: the plugin keeps nodes that no \
             client was told of",
            request.count,
            unknown.join(", ")
        ));
        // Give them back, so that the checks after this one start from a free inventory.
        for id in unknown {
            self.release(cluster, &id).await.ok();
        }
    }

    fn leak(&self, what: String) {
        self.leaks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }

    pub(super) async fn release(&self, cluster: &str, id: &str) -> Result<(), CallError> {
        let request = model::DeprovisionRequest {
            cluster_id: cluster.to_string(),
            node_id: id.to_string(),
        };
        self.backend.deprovision(request).await?;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = held.get_mut(cluster) {
            held.ids.remove(id);
        }
        Ok(())
    }

    /// The nodes discovery shows in `cluster`.
    pub(super) async fn nodes_in(&self, cluster: &str) -> Result<Vec<model::Node>, String> {
        let clusters = self.backend.discover().await.map_err(|e| describe(&e))?;
        check_discovery(&clusters)?;
        Ok(clusters
            .into_iter()
            .filter(|c| c.cluster_id == cluster)
            .flat_map(|c| c.nodes)
            .collect())
    }

    /// Release every node of `cluster`, the ones discovery shows and the ones the kit holds.
    pub(super) async fn clear(&self, cluster: &str) {
        let mut ids: Vec<String> = self
            .nodes_in(cluster)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.node_id)
            .collect();
        if let Some(held) = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(cluster)
        {
            ids.extend(
                held.ids
                    .iter()
                    .filter(|id| !ids.contains(id))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        for id in ids {
            self.release(cluster, &id).await.ok();
        }
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(cluster);
    }
}
