//! The checks of several steps: idempotency, exhaustion and reuse, the interleaved race.

use std::sync::Arc;

use super::Plugin;
use super::run::{Run, describe};
use crate::model::{self, ProviderError};
use crate::runtime::{Backend, CallError};

/// The same request twice: the retry names the nodes of the first attempt, and discovery shows
/// them once.
pub(super) async fn idempotent(kit: &Run<'_>) -> Result<(), String> {
    let cluster = "conformance-idempotent";
    let request = kit.request(cluster, 1);
    let outcome = async {
        let first = kit
            .provision(&request)
            .await
            .map_err(|e| format!("the first attempt: {}", e.describe()))?;
        let again = kit
            .provision(&request)
            .await
            .map_err(|e| format!("the retry of `{}`: {}", request.request_id, e.describe()))?;
        let sorted = |ids: &Option<Vec<String>>| {
            ids.clone().map(|mut ids| {
                ids.sort();
                ids
            })
        };
        if again.count != first.count || sorted(&again.node_ids) != sorted(&first.node_ids) {
            return Err(format!(
                "the retry of `{}` got {}, the first attempt {}: key the allocation on the \
                 request ID",
                request.request_id,
                nodes(&again),
                nodes(&first)
            ));
        }
        let nodes = kit.nodes_in(cluster).await?;
        if nodes.len() as u32 != first.count {
            let ids: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
            return Err(format!(
                "after the retry discovery shows {} nodes in the cluster ({}) for one request \
                 of {}",
                nodes.len(),
                ids.join(", "),
                first.count
            ));
        }
        Ok(())
    }
    .await;
    kit.clear(cluster).await;
    outcome
}

/// An answer in words: `m1, m2`, or `2 nodes` when it named none.
pub(super) fn nodes(answer: &model::ProvisionResponse) -> String {
    match &answer.node_ids {
        Some(ids) => ids.join(", "),
        None => format!("{} node(s), unnamed", answer.count),
    }
}

/// How the exhaustion check ended.
pub(super) struct Exhausted {
    /// The plugin answered `unavailable` (not only reached `max_nodes`).
    ran_out: bool,
    /// The node IDs taken, when the answers named them.
    ids: Option<Vec<String>>,
}

/// Take nodes two at a time until the plugin runs out (or `max_nodes` are taken); every answer
/// must count what it took, as discovery then shows.
pub(super) async fn exhaust(kit: &Run<'_>) -> Result<Exhausted, String> {
    let cluster = "conformance-inventory";
    let (mut counted, mut ids, mut named) = (0u32, Vec::new(), true);
    let mut ran_out = false;
    while counted < kit.script.max_nodes {
        let request = kit.request(cluster, 2);
        match kit.provision(&request).await {
            Ok(answer) => {
                counted += answer.count;
                match answer.node_ids {
                    Some(taken) => {
                        if let Some(again) = taken.iter().find(|id| ids.contains(*id)) {
                            return Err(format!("node `{again}` was handed out again"));
                        }
                        ids.extend(taken);
                    }
                    None => named = false,
                }
            }
            Err(e) if e.ran_out() => {
                ran_out = true;
                break;
            }
            Err(e) => {
                return Err(format!(
                    "with {counted} nodes taken, a request of 2: {}",
                    e.describe()
                ));
            }
        }
    }
    if counted == 0 {
        return Err(
            "the first request of 2 ran out at once: the kit needs at least 2 free \
                    nodes of the class"
                .into(),
        );
    }
    let nodes = kit.nodes_in(cluster).await?;
    if nodes.len() as u32 != counted {
        let shown: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
        return Err(format!(
            "the answers counted {counted} nodes, discovery shows {} ({})",
            nodes.len(),
            shown.join(", ")
        ));
    }
    Ok(Exhausted {
        ran_out,
        ids: named.then_some(ids),
    })
}

/// Free one node of the exhausted inventory and ask for 2: one (and, when the plugin had run
/// out, exactly one) must come back, and then nothing more.
pub(super) async fn reuse(kit: &Run<'_>, exhausted: Exhausted) -> Result<(), String> {
    let cluster = "conformance-inventory";
    let Some(freed) = exhausted.ids.as_ref().and_then(|ids| ids.first()) else {
        return Err("the answers named no node IDs, so the kit cannot free one".into());
    };
    kit.release(cluster, freed)
        .await
        .map_err(|e| format!("freeing `{freed}`: {}", describe(&e)))?;
    let request = kit.request(cluster, 2);
    let answer = kit
        .provision(&request)
        .await
        .map_err(|e| format!("a request of 2 after freeing `{freed}`: {}", e.describe()))?;
    if exhausted.ran_out {
        if answer.count != 1 {
            return Err(format!(
                "a request of 2 with only `{freed}` free answered count {}: answer the count \
                 taken, not the count asked",
                answer.count
            ));
        }
        match kit.provision(&kit.request(cluster, 1)).await {
            Err(e) if e.ran_out() => {}
            Err(e) => return Err(format!("a request with nothing left: {}", e.describe())),
            Ok(more) => {
                return Err(format!("a request with nothing left got {}", nodes(&more)));
            }
        }
    }
    Ok(())
}

/// The deterministic race: provision A runs until its first state write, and is held there
/// while provision B runs to its end; then A goes on. A plugin that reads a node free and then
/// writes without compare-and-swap hands B's node out again, every time. `None` when neither
/// named a node.
pub(super) async fn interleaved(plugin: &Plugin, kit: &Run<'_>) -> Option<Result<(), String>> {
    let (a, b) = (
        kit.request("conformance-interleaved-a", 1),
        kit.request("conformance-interleaved-b", 1),
    );
    let (paused, resume) = plugin.interleave.arm();
    let first = kit.provision(&a);
    tokio::pin!(first);
    let (first, second) = tokio::select! {
        first = &mut first => {
            // A wrote nothing: B after it.
            plugin.interleave.disarm();
            (first, kit.provision(&b).await)
        }
        _ = paused => {
            let second = kit.provision(&b).await;
            let _ = resume.send(());
            (first.await, second)
        }
    };
    let outcome = (|| {
        let mut named = Vec::new();
        for (name, answer) in [("A", &first), ("B", &second)] {
            match answer {
                Ok(r) => named.extend(r.node_ids.iter().flatten().map(|id| (name, id.clone()))),
                Err(e) if e.ran_out() => {}
                Err(e) => return Some(Err(format!("provision {name}: {}", e.describe()))),
            }
        }
        if named.is_empty() {
            return None;
        }
        let twice = named
            .iter()
            .find(|(name, id)| named.iter().any(|(other, i)| other != name && i == id));
        Some(match twice {
            Some((_, id)) => Err(format!(
                "node `{id}` was handed out to both: provision A read it free, B took it, and \
                 A's write took it again; allocate with compare-and-swap"
            )),
            None => Ok(()),
        })
    })();
    kit.clear(&a.cluster_id).await;
    kit.clear(&b.cluster_id).await;
    outcome
}

/// Deprovision a node nobody provisioned.
pub(super) async fn unknown_node(backend: &Arc<Backend>) -> Result<(), CallError> {
    let unknown = model::DeprovisionRequest {
        cluster_id: "conformance-lifecycle".into(),
        node_id: "conformance-no-such-node".into(),
    };
    backend.deprovision(unknown).await
}

pub(super) fn expect_not_found(answer: Result<(), CallError>) -> Result<(), String> {
    match answer {
        Err(CallError::Plugin(ProviderError::NotFound(_))) => Ok(()),
        Ok(()) => Err("answered success".into()),
        Err(e) => Err(describe(&e)),
    }
}
