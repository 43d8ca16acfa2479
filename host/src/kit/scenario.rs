//! The scripted lifecycle `test-plugin` plays: what it asks for, the checks by name, and the
//! order they run in.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU32;

use super::Plugin;
use super::checks::{exhaust, expect_not_found, idempotent, interleaved, reuse, unknown_node};
use super::report::{Check, Checks};
use super::requests::random_hex;
use super::run::{Failed, Run, Script, describe};
use crate::capability::call::{CallContext, Mode, Transcript};
use crate::contract::Contract;
use crate::gateway::answer::check_discovery;
use crate::model::{self, ProviderError};
use crate::runtime::CallError;

const DISCOVER: &str = "discover answers, and its answer is valid";
const PROVISION_ONE: &str = "provision without a count creates one node, with a valid answer";
const PROVISION_TWO: &str = "provision with count 2 creates 1 or 2 nodes, with a valid answer";
const DISCOVERED: &str = "discovery shows the new nodes with their group and class";
const DEPROVISION: &str = "deprovision removes each new node";
const GONE: &str = "discovery no longer shows them";
const UNKNOWN: &str = "deprovision of an unknown node answers not-found";
const OTHER_CLUSTER: &str = "deprovision of a node from another cluster answers not-found";
const IDEMPOTENT: &str = "a provision repeated with its request ID gets the same nodes, taken once";
const EXHAUST: &str =
    "provisions until the inventory runs out answer the count they took, then unavailable";
const REUSE: &str =
    "a freed node is handed out again, and asking for more than is left gets what is left";
const INTERLEAVED: &str = "a provision that another takes a node from between its read and its write does not hand it out too";
const RACE: &str = "concurrent provisions never hand out one node twice";
const REFUSED: &str = "an answer the gateway refuses leaves no node allocated";
const PLANNED: &str =
    "in plan mode, a provision makes the same calls as for real up to its first write";

/// Play the scenario against `plugin`: every check, in order, whatever failed before (a check
/// that needs what an earlier one did not give is skipped, saying why).
pub async fn scenario(plugin: &Plugin, script: &Script) -> Vec<Check> {
    let backend = &plugin.backend;
    let mut checks = Checks::default();
    let kit = Run {
        backend,
        script,
        run: random_hex(),
        sent: AtomicU32::new(0),
        held: Mutex::default(),
        leaks: Mutex::default(),
    };

    let before = backend.discover().await;
    checks.record(
        DISCOVER,
        before
            .as_ref()
            .map_err(describe)
            .and_then(|c| check_discovery(c)),
    );

    // The lifecycle, in a cluster of its own.
    let cluster = "conformance-lifecycle";
    let mut created: Vec<String> = Vec::new();
    let mut ids_known = true;
    let one = kit.request(cluster, 1);
    // First in plan mode, then for real: a plan must show what the real call then does.
    let plan = CallContext::new(Mode::Plan, true);
    let planned = backend.provision_in(one.clone(), plan.clone()).await;
    let real = CallContext::new(Mode::Live, true);
    let answer = kit.provision_in(&one, real.clone()).await;
    // A plugin that does not provision says `unsupported` (or, under contract 0.1, which has no
    // such case, `invalid-request`). Only the author knows whether it should: with
    // `--no-provision` its lifecycle is skipped, saying why; without, the check fails, so that
    // a run that exercised nothing cannot pass.
    let refusal = match &answer {
        Err(Failed::Call(CallError::Plugin(refusal @ ProviderError::Unsupported(_)))) => {
            Some(refusal.clone())
        }
        Err(Failed::Call(CallError::Plugin(refusal @ ProviderError::InvalidRequest(_))))
            if plugin.contract() == Contract::V0_1 =>
        {
            Some(refusal.clone())
        }
        _ => None,
    };
    if let Some(refusal) = refusal.filter(|_| !script.provisions) {
        let why = format!(
            "the plugin does not provision ({}: {})",
            refusal.case(),
            refusal.message()
        );
        checks.skip(
            &[
                PROVISION_ONE,
                PLANNED,
                PROVISION_TWO,
                DISCOVERED,
                OTHER_CLUSTER,
                DEPROVISION,
                GONE,
            ],
            &why,
        );
        // Nor deprovision, then, when it answers the same.
        match unknown_node(backend).await {
            Err(CallError::Plugin(e)) if e.case() == refusal.case() => {
                checks.skip(&[UNKNOWN], &why)
            }
            answer => {
                checks.record(UNKNOWN, expect_not_found(answer));
            }
        }
        checks.skip(
            &[IDEMPOTENT, EXHAUST, REUSE, INTERLEAVED, RACE, REFUSED],
            &why,
        );
        return checks.0;
    }
    let as_planned = same_as_planned(
        (&planned, &plan.transcript()),
        (&answer, &real.transcript()),
    );
    let checked = answer
        .map_err(|e| match &e {
            Failed::Call(CallError::Plugin(
                ProviderError::Unsupported(_) | ProviderError::InvalidRequest(_),
            )) => {
                let mut why = e.describe();
                if let Some(hint) = &script.class_hint {
                    why.push_str(&format!(" ({hint})"));
                }
                if plugin.contract() == Contract::V0_1
                    || matches!(
                        e,
                        Failed::Call(CallError::Plugin(ProviderError::Unsupported(_)))
                    )
                {
                    why.push_str("; if the plugin does not provision, say so with --no-provision");
                }
                why
            }
            _ => e.describe(),
        })
        .and_then(|r| {
            if r.count != 1 {
                return Err(format!("count {} for a request of 1", r.count));
            }
            match r.node_ids {
                Some(ids) => created.extend(ids),
                None => ids_known = false,
            }
            Ok(())
        });
    checks.record(PROVISION_ONE, checked);
    checks.record(PLANNED, as_planned);
    let two = kit.request(cluster, 2);
    let checked = kit
        .provision(&two)
        .await
        .map_err(|e| e.describe())
        .and_then(|r| {
            match r.node_ids {
                Some(ids) => {
                    if let Some(again) = ids.iter().find(|id| created.contains(id)) {
                        return Err(format!("node `{again}` was handed out again"));
                    }
                    created.extend(ids);
                }
                None => ids_known = false,
            }
            Ok(())
        });
    checks.record(PROVISION_TWO, checked);

    if !ids_known || created.is_empty() {
        checks.skip(
            &[DISCOVERED, OTHER_CLUSTER, DEPROVISION, GONE],
            "the plugin named no node IDs in its provision answers",
        );
    } else {
        let found = kit.nodes_in(cluster).await.and_then(|nodes| {
            for id in &created {
                let node = nodes
                    .iter()
                    .find(|n| &n.node_id == id)
                    .ok_or_else(|| format!("node `{id}` is not in cluster `{cluster}`"))?;
                if node.node_group.as_deref() != Some(script.node_group.as_str()) {
                    return Err(format!(
                        "node `{id}` has node_group {:?}, not `{}`",
                        node.node_group, script.node_group
                    ));
                }
                if node.node_class.as_deref() != Some(script.node_class.as_str()) {
                    return Err(format!(
                        "node `{id}` has node_class {:?}, not `{}`",
                        node.node_class, script.node_class
                    ));
                }
            }
            Ok(())
        });
        checks.record(DISCOVERED, found);

        let other = model::DeprovisionRequest {
            cluster_id: "conformance-other".into(),
            node_id: created[0].clone(),
        };
        checks.record(
            OTHER_CLUSTER,
            expect_not_found(backend.deprovision(other).await),
        );

        let mut removed = Ok(());
        for id in &created {
            if let Err(e) = kit.release(cluster, id).await {
                removed = Err(format!("node `{id}`: {}", describe(&e)));
                break;
            }
        }
        let removed_ok = removed.is_ok();
        checks.record(DEPROVISION, removed);
        if removed_ok {
            let gone = backend
                .discover()
                .await
                .map_err(|e| describe(&e))
                .and_then(|c| {
                    let left: Vec<&String> = c
                        .iter()
                        .flat_map(|c| &c.nodes)
                        .map(|n| &n.node_id)
                        .filter(|id| created.contains(id))
                        .collect();
                    match left.is_empty() {
                        true => Ok(()),
                        false => Err(format!("still reported: {left:?}")),
                    }
                });
            checks.record(GONE, gone);
        } else {
            checks.skip(&[GONE], "a deprovision failed");
        }
    }
    kit.clear(cluster).await;

    checks.record(UNKNOWN, expect_not_found(unknown_node(backend).await));

    match plugin.contract() {
        Contract::V0_1 => checks.skip(&[IDEMPOTENT], "contract 0.1 has no request ID"),
        Contract::V0_2 if script.skip_idempotency => {
            checks.skip(&[IDEMPOTENT], "--skip-idempotency")
        }
        Contract::V0_2 => {
            let outcome = idempotent(&kit).await;
            checks.record(IDEMPOTENT, outcome);
        }
    }

    let exhausted = exhaust(&kit).await;
    match exhausted {
        Ok(exhausted) => {
            checks.record(EXHAUST, Ok(()));
            let outcome = reuse(&kit, exhausted).await;
            checks.record(REUSE, outcome);
        }
        Err(why) => {
            checks.record(EXHAUST, Err(why));
            checks.skip(&[REUSE], "the exhaustion check failed");
        }
    }
    kit.clear("conformance-inventory").await;

    match interleaved(plugin, &kit).await {
        Some(outcome) => {
            checks.record(INTERLEAVED, outcome);
        }
        None => checks.skip(&[INTERLEAVED], "neither provision named its node"),
    }

    // The race: provisions at once, each into its own cluster; no node ID twice.
    let racers = (0..script.concurrent).map(|i| {
        let kit = &kit;
        let one = kit.request(&format!("conformance-race-{i}"), 1);
        async move { (one.cluster_id.clone(), kit.provision(&one).await) }
    });
    let answers = futures::future::join_all(racers).await;
    let mut seen = HashSet::new();
    let mut outcome = Ok(());
    let mut named = 0;
    for (cluster, answer) in &answers {
        match answer {
            Ok(r) => {
                for id in r.node_ids.iter().flatten() {
                    named += 1;
                    if !seen.insert(id.clone()) && outcome.is_ok() {
                        outcome = Err(format!("node `{id}` was handed out twice"));
                    }
                }
            }
            Err(e) if e.ran_out() => {}
            Err(e) if outcome.is_ok() => {
                outcome = Err(format!("cluster `{cluster}`: {}", e.describe()))
            }
            Err(_) => {}
        }
    }
    if named == 0 && outcome.is_ok() {
        checks.skip(&[RACE], "no provision of the race named its node");
    } else {
        checks.record(RACE, outcome);
    }
    // Leave nothing behind.
    for (cluster, _) in &answers {
        kit.clear(cluster).await;
    }

    // The first leak in full; the others would say the same.
    let leaks = std::mem::take(&mut *kit.leaks.lock().unwrap_or_else(|e| e.into_inner()));
    checks.record(
        REFUSED,
        match leaks.as_slice() {
            [] => Ok(()),
            [one] => Err(one.clone()),
            [first, rest @ ..] => Err(format!(
                "{first} (and {} more refused answers left nodes too)",
                rest.len()
            )),
        },
    );
    checks.0
}

/// Whether a provision did for real what it did in plan mode: the same writes and requests (by
/// key and URL; a value may hold a time) in the same order up to the first effect the plan
/// withheld, and, when the plan ran to its end, the same kind of answer.
fn same_as_planned(
    (planned, plan): (&Result<model::ProvisionResponse, CallError>, &Transcript),
    (answer, real): (&Result<model::ProvisionResponse, Failed>, &Transcript),
) -> Result<(), String> {
    let targets = |transcript: &Transcript| -> Vec<String> {
        let effects = transcript.effects();
        (effects.iter())
            .map(|e| e.split(" -> ").next().unwrap_or_default().to_string())
            .collect()
    };
    let (planned_effects, real_effects) = (targets(plan), targets(real));
    let stopped = plan.stopped_at.is_some();
    let prefix = real_effects.get(..planned_effects.len());
    let same_effects = if stopped {
        prefix == Some(&planned_effects[..])
    } else {
        real_effects == planned_effects
    };
    if !same_effects {
        return Err(format!(
            "in plan mode its effects were [{}]{}, for real [{}]",
            planned_effects.join(", "),
            if stopped { " (then it stopped)" } else { "" },
            real_effects.join(", ")
        ));
    }
    match (planned, answer) {
        _ if stopped => Ok(()),
        (Ok(planned), Ok(real)) if planned == real => Ok(()),
        (Err(_), Err(_)) => Ok(()),
        (planned, real) => Err(format!(
            "in plan mode it answered {}, for real {}",
            match planned {
                Ok(answer) => format!("{answer:?}"),
                Err(e) => describe(e),
            },
            match real {
                Ok(answer) => format!("{answer:?}"),
                Err(e) => e.describe(),
            }
        )),
    }
}
