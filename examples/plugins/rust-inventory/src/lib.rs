use platform_gateway_sdk::{
    Cluster, DeprovisionRequest, Error, Node, Provider, ProvisionRequest, ProvisionResponse,
    export_provider, log, settings, state,
};

#[derive(serde::Deserialize)]
struct Settings {
    machines: Vec<Machine>,
}

#[derive(serde::Deserialize)]
struct Machine {
    id: String,
    agent_address: String,
    node_class: String,
}

/// An allocated machine's key holds its cluster, node group and the request ID that took it,
/// one per line (the gateway never passes IDs with control characters).
fn key(machine: &str) -> String {
    format!("machine/{machine}")
}

pub struct Inventory;

impl Provider for Inventory {
    fn discover() -> Result<Vec<Cluster>, Error> {
        let settings: Settings = settings::get()?;
        let mut clusters: Vec<Cluster> = Vec::new();
        for machine in &settings.machines {
            let Some(owner) = state::get(&key(&machine.id))? else {
                continue;
            };
            let owner = String::from_utf8_lossy(&owner);
            let mut lines = owner.split('\n');
            let (cluster_id, group) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
            let node = Node {
                node_id: machine.id.clone(),
                agent_address: machine.agent_address.clone(),
                node_class: Some(machine.node_class.clone()),
                node_group: Some(group.to_string()),
            };
            match clusters.iter_mut().find(|c| c.cluster_id == cluster_id) {
                Some(cluster) => cluster.nodes.push(node),
                None => clusters.push(Cluster {
                    cluster_id: cluster_id.to_string(),
                    nodes: vec![node],
                }),
            }
        }
        Ok(clusters)
    }

    fn provision(request: ProvisionRequest) -> Result<ProvisionResponse, Error> {
        let settings: Settings = settings::get()?;
        let class: Vec<&Machine> = settings
            .machines
            .iter()
            .filter(|m| m.node_class == request.node_class)
            .collect();
        if class.is_empty() {
            return Err(Error::invalid_request(format!(
                "no machine of class `{}`",
                request.node_class
            )));
        }
        let owner = format!(
            "{}\n{}\n{}",
            request.cluster_id, request.node_group, request.request_id
        );
        // A retry of a request (same request ID) gets what its first attempt took.
        let mut taken = Vec::new();
        for machine in &class {
            if state::get(&key(&machine.id))?.as_deref() == Some(owner.as_bytes()) {
                taken.push(machine.id.clone());
            }
        }
        if !taken.is_empty() {
            return Ok(ProvisionResponse {
                count: taken.len() as u32,
                node_ids: Some(taken),
            });
        }
        for machine in class {
            if taken.len() == request.count as usize {
                break;
            }
            // Only one call can create the key: no machine is handed out twice.
            if state::compare_and_swap(&key(&machine.id), None, Some(owner.as_bytes()))? {
                taken.push(machine.id.clone());
            }
        }
        if taken.is_empty() {
            return Err(Error::unavailable_for(
                "every machine of that class is taken",
                60,
            ));
        }
        log::info(&format!("allocated {taken:?} to {}", request.cluster_id));
        Ok(ProvisionResponse {
            count: taken.len() as u32,
            node_ids: Some(taken),
        })
    }

    fn deprovision(request: DeprovisionRequest) -> Result<(), Error> {
        let key = key(&request.node_id);
        let owner = state::get(&key)?;
        let ours = owner.as_deref().is_some_and(|owner| {
            owner.split(|b| *b == b'\n').next() == Some(request.cluster_id.as_bytes())
        });
        // Released only if it is still the allocation we read.
        if !ours || !state::compare_and_swap(&key, owner.as_deref(), None)? {
            return Err(Error::not_found(format!(
                "`{}` is not allocated to `{}`",
                request.node_id, request.cluster_id
            )));
        }
        Ok(())
    }
}

export_provider!(Inventory);

// Natively only: the tests call the provider in an in-memory host.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use platform_gateway_sdk::native::Host;

    fn request(cluster: &str, count: u32) -> ProvisionRequest {
        ProvisionRequest {
            request_id: format!("r-{cluster}"),
            cluster_id: cluster.into(),
            store: "mongodb".into(),
            store_version: "6.0".into(),
            node_group: "data".into(),
            node_class: "small".into(),
            desired_count: count,
            count,
            attributes: "{}".into(),
        }
    }

    #[test]
    fn a_machine_is_handed_out_once() {
        let host = Host::with_settings(serde_json::json!({
            "machines": [{ "id": "m1", "agent_address": "http://10.0.0.1:37000", "node_class": "small" }]
        }));
        host.run(|| {
            let first = Inventory::provision(request("c1", 1)).unwrap();
            assert_eq!(first.node_ids, Some(vec!["m1".to_string()]));
            assert!(matches!(
                Inventory::provision(request("c2", 1)),
                Err(Error::Unavailable(_))
            ));
        });
    }
}
