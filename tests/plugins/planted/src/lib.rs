//! Test fixture, not shipped: a fixed-inventory provider (machines in the settings, allocations
//! in state under `machine/<id>`) that is correct unless its `bug` setting plants one of the
//! bugs plugin authors actually wrote, so that the conformance kit's tests can show the kit
//! fails each:
//!
//! - `none`: correct (compare-and-swap, idempotent on the request ID): the kit passes it.
//! - `count`: answers the count asked, not the count taken.
//! - `racy`: reads a machine free, then writes it with a plain `set`.
//! - `repeat`: ignores the request ID, so a retried provision takes new machines.
//! - `greedy`: takes every free machine of the class whatever the count, and answers the count
//!   without node IDs, so that the gateway refuses the answer and cannot give them back.

use platform_gateway_sdk::{
    Cluster, DeprovisionRequest, Error, Node, Provider, ProvisionRequest, ProvisionResponse,
    export_provider, settings, state,
};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Machine {
    id: String,
    agent_address: String,
    node_class: String,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Allocation {
    cluster_id: String,
    node_group: String,
    request_id: String,
}

const PREFIX: &str = "machine/";

fn bug() -> Result<String, Error> {
    Ok(settings::text("bug")?.unwrap_or_else(|| "none".to_string()))
}

fn allocation(key: &str) -> Result<Option<Allocation>, Error> {
    match state::get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::internal(format!("state `{key}`: {e}"))),
    }
}

struct Planted;

impl Provider for Planted {
    fn discover() -> Result<Vec<Cluster>, Error> {
        let machines: Vec<Machine> = settings::require("machines")?;
        let mut clusters: Vec<Cluster> = Vec::new();
        for machine in machines {
            let Some(owner) = allocation(&format!("{PREFIX}{}", machine.id))? else {
                continue;
            };
            let node = Node {
                node_id: machine.id,
                agent_address: machine.agent_address,
                node_class: Some(machine.node_class),
                node_group: Some(owner.node_group),
            };
            match clusters
                .iter_mut()
                .find(|c| c.cluster_id == owner.cluster_id)
            {
                Some(cluster) => cluster.nodes.push(node),
                None => clusters.push(Cluster {
                    cluster_id: owner.cluster_id,
                    nodes: vec![node],
                }),
            }
        }
        Ok(clusters)
    }

    fn provision(request: ProvisionRequest) -> Result<ProvisionResponse, Error> {
        let bug = bug()?;
        let machines: Vec<Machine> = settings::require("machines")?;
        let class: Vec<&Machine> = machines
            .iter()
            .filter(|m| m.node_class == request.node_class)
            .collect();
        if class.is_empty() {
            return Err(Error::invalid_request(format!(
                "no machine of class `{}`",
                request.node_class
            )));
        }
        if bug != "repeat" {
            let mut mine = Vec::new();
            for machine in &class {
                if let Some(owner) = allocation(&format!("{PREFIX}{}", machine.id))?
                    && owner.request_id == request.request_id
                {
                    mine.push(machine.id.clone());
                }
            }
            if !mine.is_empty() {
                return Ok(ProvisionResponse {
                    count: mine.len() as u32,
                    node_ids: Some(mine),
                });
            }
        }
        let value = serde_json::to_vec(&Allocation {
            cluster_id: request.cluster_id.clone(),
            node_group: request.node_group.clone(),
            request_id: request.request_id.clone(),
        })
        .map_err(|e| Error::internal(e.to_string()))?;
        let mut taken = Vec::new();
        for machine in class {
            if taken.len() as u32 == request.count && bug != "greedy" {
                break;
            }
            let key = format!("{PREFIX}{}", machine.id);
            let took = if bug == "racy" {
                if state::get(&key)?.is_none() {
                    state::set(&key, &value)?;
                    true
                } else {
                    false
                }
            } else {
                state::compare_and_swap(&key, None, Some(&value))?
            };
            if took {
                taken.push(machine.id.clone());
            }
        }
        if taken.is_empty() {
            return Err(Error::unavailable("every machine of the class is taken"));
        }
        Ok(match bug.as_str() {
            "count" => ProvisionResponse {
                count: request.count,
                node_ids: Some(taken),
            },
            "greedy" => ProvisionResponse {
                count: taken.len() as u32,
                node_ids: None,
            },
            _ => ProvisionResponse {
                count: taken.len() as u32,
                node_ids: Some(taken),
            },
        })
    }

    fn deprovision(request: DeprovisionRequest) -> Result<(), Error> {
        let key = format!("{PREFIX}{}", request.node_id);
        let current = state::get(&key)?;
        let ours = match &current {
            Some(bytes) => serde_json::from_slice::<Allocation>(bytes)
                .is_ok_and(|a| a.cluster_id == request.cluster_id),
            None => false,
        };
        if !ours || !state::compare_and_swap(&key, current.as_deref(), None)? {
            return Err(Error::not_found(format!(
                "`{}` is not allocated to `{}`",
                request.node_id, request.cluster_id
            )));
        }
        Ok(())
    }
}

export_provider!(Planted);
