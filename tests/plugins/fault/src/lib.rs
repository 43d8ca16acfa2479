//! Test fixture, not shipped: a plugin whose every operation misbehaves as the `mode` setting
//! says, so that the gateway's tests can pin what it does with a misbehaving plugin.
//!
//! Modes: `echo` (provision answers one node whose ID is the request it received, as JSON;
//! discover reports one node, `node_id` in cluster `cluster_id` from the settings; deprovision
//! succeeds for that node only), `loop` (spins forever), `oom` (allocates until it cannot),
//! `trap` (executes `unreachable`), `panic`, `sleep` (sleeps `sleep_ms`, then behaves as `echo`).

use platform_sdk::{
    Cluster, DeprovisionRequest, Error, Node, Provider, ProvisionRequest, ProvisionResponse,
    export_provider, settings,
};

fn setting(key: &str, default: &str) -> Result<String, Error> {
    Ok(settings::get(key)?.unwrap_or_else(|| default.to_string()))
}

fn misbehave() -> Result<(), Error> {
    let mode = settings::get("mode")?.unwrap_or_else(|| "echo".to_string());
    match mode.as_str() {
        "echo" => Ok(()),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "trap" => core::arch::wasm32::unreachable(),
        "panic" => panic!("the fault plugin panics on purpose"),
        "sleep" => {
            let ms: u64 = settings::json("sleep_ms")?.unwrap_or(1000);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(())
        }
        other => Err(Error::Internal(format!("unknown mode `{other}`"))),
    }
}

struct Fault;

impl Provider for Fault {
    fn discover() -> Result<Vec<Cluster>, Error> {
        misbehave()?;
        Ok(vec![Cluster {
            cluster_id: setting("cluster_id", "fault")?,
            nodes: vec![Node {
                node_id: setting("node_id", "fault-node")?,
                agent_address: "http://127.0.0.1:1".to_string(),
                node_class: String::new(),
                node_group: None,
            }],
        }])
    }

    fn provision(request: ProvisionRequest) -> Result<ProvisionResponse, Error> {
        misbehave()?;
        let echo = serde_json::json!({
            "cluster_id": request.cluster_id,
            "store": request.store,
            "store_version": request.store_version,
            "node_group": request.node_group,
            "node_class": request.node_class,
            "desired_count": request.desired_count,
            "count": request.count,
            "attributes": request.attributes()?,
        });
        Ok(ProvisionResponse {
            count: 1,
            node_ids: Some(vec![echo.to_string()]),
        })
    }

    fn deprovision(request: DeprovisionRequest) -> Result<(), Error> {
        misbehave()?;
        if request.cluster_id == setting("cluster_id", "fault")?
            && request.node_id == setting("node_id", "fault-node")?
        {
            Ok(())
        } else {
            Err(Error::NotFound(format!(
                "no node `{}` in cluster `{}` here",
                request.node_id, request.cluster_id
            )))
        }
    }
}

export_provider!(Fault);
