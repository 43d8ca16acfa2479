//! `pool`: a Replicante platform over a pool of existing machines (bring your own hosts).
//!
//! The operator lists the machines in the backend's settings; a node is a machine allocated to a
//! cluster. Allocations live in the backend's state under `machine/<id>` and are taken with
//! compare-and-swap, so concurrent provisions never hand out one machine twice. A node's ID is
//! its machine's ID. Discovery reads the allocations, not the settings, so a machine removed from
//! the settings while allocated is still reported until it is deprovisioned. Each allocation
//! keeps the request ID that made it, so a retried provision answers the machines its first
//! attempt took instead of taking more.
//!
//! Settings:
//!
//! ```toml
//! [backends.pool.settings]
//! machines = [
//!   { id = "m1", agent_address = "http://10.0.0.1:37000", node_class = "small" },
//! ]
//! ```

use std::collections::{BTreeMap, HashSet};

use platform_gateway_sdk::{
    Cluster, DeprovisionRequest, Error, Node, Provider, ProvisionRequest, ProvisionResponse,
    export_provider, log, settings, state,
};
use serde::{Deserialize, Serialize};

/// A machine of the pool, as the operator lists it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Machine {
    id: String,
    agent_address: String,
    #[serde(default)]
    node_class: String,
}

/// What `machine/<id>` holds while the machine is allocated.
#[derive(Serialize, Deserialize)]
struct Allocation {
    cluster_id: String,
    node_group: String,
    node_class: String,
    agent_address: String,
    /// The provision request that took it (absent in allocations made before it was kept).
    #[serde(default)]
    request_id: String,
}

const PREFIX: &str = "machine/";

fn key(machine_id: &str) -> String {
    format!("{PREFIX}{machine_id}")
}

fn machines() -> Result<Vec<Machine>, Error> {
    let machines: Vec<Machine> = settings::require("machines")?;
    let mut seen = HashSet::new();
    for machine in &machines {
        if machine.id.is_empty() || machine.agent_address.is_empty() {
            return Err(Error::Internal(
                "setting `machines`: every machine needs a non-empty `id` and `agent_address`"
                    .to_string(),
            ));
        }
        if !seen.insert(machine.id.as_str()) {
            return Err(Error::Internal(format!(
                "setting `machines`: machine `{}` is listed twice",
                machine.id
            )));
        }
    }
    Ok(machines)
}

fn decode(key: &str, bytes: &[u8]) -> Result<Allocation, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Internal(format!("state `{key}` is corrupt: {e}")))
}

/// The provider (a type, so that native tests and the benchmark can call it).
pub struct Pool;

impl Provider for Pool {
    fn discover() -> Result<Vec<Cluster>, Error> {
        let mut clusters: BTreeMap<String, Vec<Node>> = BTreeMap::new();
        for key in state::list_keys(PREFIX)? {
            // A key listed but gone by the time it is read was released in between.
            let Some(bytes) = state::get(&key)? else {
                continue;
            };
            let allocation = decode(&key, &bytes)?;
            clusters
                .entry(allocation.cluster_id)
                .or_default()
                .push(Node {
                    node_id: key[PREFIX.len()..].to_string(),
                    agent_address: allocation.agent_address,
                    node_class: Some(allocation.node_class),
                    node_group: Some(allocation.node_group),
                });
        }
        Ok(clusters
            .into_iter()
            .map(|(cluster_id, nodes)| Cluster { cluster_id, nodes })
            .collect())
    }

    fn provision(request: ProvisionRequest) -> Result<ProvisionResponse, Error> {
        let machines = machines()?;
        let of_class: Vec<&Machine> = machines
            .iter()
            .filter(|m| m.node_class == request.node_class)
            .collect();
        // Test fixture only, never shipped: a deliberate behaviour change for the replay tests.
        #[cfg(feature = "planted")]
        let of_class: Vec<&Machine> = of_class.into_iter().rev().collect();
        if of_class.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "the pool has no machine of node class `{}`",
                request.node_class
            )));
        }
        // A retry: the machines its first attempt took, whatever its count says now.
        let mut retried = Vec::new();
        for machine in &of_class {
            let key = key(&machine.id);
            if let Some(bytes) = state::get(&key)? {
                let allocation = decode(&key, &bytes)?;
                if allocation.request_id == request.request_id {
                    if allocation.cluster_id != request.cluster_id {
                        return Err(Error::conflict(format!(
                            "request ID `{}` was already used for cluster `{}`",
                            request.request_id, allocation.cluster_id
                        )));
                    }
                    retried.push(machine.id.clone());
                }
            }
        }
        if !retried.is_empty() {
            log::info(&format!(
                "request `{}` repeated: answering {} again",
                request.request_id,
                retried.join(", ")
            ));
            return Ok(ProvisionResponse {
                count: retried.len() as u32,
                node_ids: Some(retried),
            });
        }
        let mut node_ids = Vec::new();
        for machine in of_class.iter().copied() {
            if node_ids.len() as u32 == request.count {
                break;
            }
            let allocation = Allocation {
                cluster_id: request.cluster_id.clone(),
                node_group: request.node_group.clone(),
                node_class: machine.node_class.clone(),
                agent_address: machine.agent_address.clone(),
                request_id: request.request_id.clone(),
            };
            let value = serde_json::to_vec(&allocation)
                .map_err(|e| Error::Internal(format!("encoding an allocation: {e}")))?;
            // Only a free machine (no key) can be taken; a lost race moves on to the next one.
            if state::compare_and_swap(&key(&machine.id), None, Some(&value))? {
                node_ids.push(machine.id.clone());
            }
        }
        if node_ids.is_empty() {
            return Err(Error::unavailable(format!(
                "no free machine of node class `{}`: all {} are allocated",
                request.node_class,
                of_class.len()
            )));
        }
        if (node_ids.len() as u32) < request.count {
            log::warn(&format!(
                "cluster `{}` group `{}`: asked for {} machines of class `{}`, {} were free",
                request.cluster_id,
                request.node_group,
                request.count,
                request.node_class,
                node_ids.len()
            ));
        }
        log::info(&format!(
            "allocated {} to cluster `{}` group `{}`",
            node_ids.join(", "),
            request.cluster_id,
            request.node_group
        ));
        Ok(ProvisionResponse {
            count: node_ids.len() as u32,
            node_ids: Some(node_ids),
        })
    }

    fn deprovision(request: DeprovisionRequest) -> Result<(), Error> {
        let key = key(&request.node_id);
        let not_found = || {
            Error::NotFound(format!(
                "node `{}` is not allocated to cluster `{}`",
                request.node_id, request.cluster_id
            ))
        };
        let Some(current) = state::get(&key)? else {
            return Err(not_found());
        };
        if decode(&key, &current)?.cluster_id != request.cluster_id {
            return Err(not_found());
        }
        if !state::compare_and_swap(&key, Some(&current), None)? {
            return Err(Error::Conflict(format!(
                "node `{}` changed while it was being released; try again",
                request.node_id
            )));
        }
        log::info(&format!(
            "released machine `{}` from cluster `{}`",
            request.node_id, request.cluster_id
        ));
        Ok(())
    }
}

export_provider!(Pool);

/// The provider's logic, run natively against the SDK's in-memory host
/// (`cargo test --target x86_64-unknown-linux-gnu -p pool` in `plugins/`).
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use platform_gateway_sdk::native::Host;
    use serde_json::json;

    use super::*;

    fn pool(machines: usize) -> Arc<Host> {
        let machines: Vec<_> = (0..machines)
            .map(|i| json!({ "id": format!("m{i}"), "agent_address": format!("http://10.0.0.{i}:37000"), "node_class": "small" }))
            .collect();
        Host::with_settings(json!({ "machines": machines }))
    }

    fn request(cluster_id: &str, count: u32) -> ProvisionRequest {
        ProvisionRequest {
            request_id: format!("test-{cluster_id}-{count}"),
            cluster_id: cluster_id.into(),
            store: "mongodb".into(),
            store_version: "4.0".into(),
            node_group: "data".into(),
            node_class: "small".into(),
            desired_count: count,
            count,
            attributes: "{}".into(),
        }
    }

    #[test]
    fn provisioned_nodes_are_discovered_with_their_group_and_class_until_deprovisioned() {
        let host = pool(3);
        host.run(|| {
            let answer = Pool::provision(request("c1", 2)).unwrap();
            assert_eq!(answer.count, 2);
            let ids = answer.node_ids.unwrap();
            let clusters = Pool::discover().unwrap();
            assert_eq!(clusters.len(), 1);
            assert_eq!(clusters[0].cluster_id, "c1");
            for node in &clusters[0].nodes {
                assert!(ids.contains(&node.node_id));
                assert_eq!(node.node_class.as_deref(), Some("small"));
                assert_eq!(node.node_group.as_deref(), Some("data"));
            }
            let other = DeprovisionRequest {
                cluster_id: "c2".into(),
                node_id: ids[0].clone(),
            };
            assert!(matches!(Pool::deprovision(other), Err(Error::NotFound(_))));
            for id in &ids {
                let release = DeprovisionRequest {
                    cluster_id: "c1".into(),
                    node_id: id.clone(),
                };
                Pool::deprovision(release).unwrap();
            }
            assert!(Pool::discover().unwrap().is_empty());
        });
        assert!(
            host.logs()
                .iter()
                .any(|(_, line)| line.contains("allocated"))
        );
    }

    /// What the `planted` build changes (it takes the last free machines first).
    #[test]
    #[cfg_attr(feature = "planted", should_panic(expected = "in settings order"))]
    fn a_provision_takes_the_first_free_machines_in_settings_order() {
        let host = pool(5);
        host.run(|| {
            let first = Pool::provision(request("c1", 1)).unwrap();
            assert_eq!(first.node_ids.unwrap(), ["m0"], "in settings order");
            let next = Pool::provision(request("c2", 2)).unwrap();
            assert_eq!(next.node_ids.unwrap(), ["m1", "m2"], "in settings order");
        });
    }

    #[test]
    fn concurrent_provisions_never_hand_out_one_machine_twice() {
        let host = pool(5);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let host = host.clone();
                std::thread::spawn(move || {
                    host.run(|| Pool::provision(request(&format!("c{i}"), 1)))
                })
            })
            .collect();
        let mut handed_out = HashSet::new();
        let mut refused = 0;
        for thread in threads {
            match thread.join().unwrap() {
                Ok(answer) => {
                    for id in answer.node_ids.unwrap() {
                        assert!(handed_out.insert(id), "a machine was handed out twice");
                    }
                }
                Err(Error::Unavailable(_)) => refused += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!((handed_out.len(), refused), (5, 3));
    }

    #[test]
    fn a_retried_request_gets_the_machines_of_its_first_attempt() {
        let host = pool(3);
        host.run(|| {
            let first = Pool::provision(request("c1", 2)).unwrap();
            let again = Pool::provision(request("c1", 2)).unwrap();
            assert_eq!(again.node_ids, first.node_ids);
            let taken: usize = Pool::discover()
                .unwrap()
                .iter()
                .map(|c| c.nodes.len())
                .sum();
            assert_eq!(taken, 2);
            let mut elsewhere = request("c2", 1);
            elsewhere.request_id = "test-c1-2".into();
            assert!(matches!(
                Pool::provision(elsewhere),
                Err(Error::Conflict(_))
            ));
        });
    }
}
