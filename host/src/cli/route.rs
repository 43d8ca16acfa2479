//! `route`: which backend a provision or deprovision request would go to, explained from the
//! config file and (for a deprovision) the state store, as `POST /admin/route` explains it
//! from a running gateway.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::{Outcome, Output, OutputArgs};
use crate::config::{Config, StoreConfig};
use crate::routing::Decision;
use crate::state::{EtcdStore, StateStore};

#[derive(Args)]
pub(super) struct RouteArgs {
    /// The gateway config file.
    #[arg(long, short, env = "PLATFORM_GATEWAY_CONFIG")]
    config: PathBuf,
    /// The request body, as Replicante would POST it (`-` for stdin).
    request: PathBuf,
    #[command(flatten)]
    pub(super) output: OutputArgs,
}

pub(super) fn run(args: RouteArgs) -> Outcome {
    let config = Config::load(&args.config)?;
    let text = super::read_input(&args.request)?;
    let body: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.request.display()))?;
    let explanation = crate::api::inspect::explain(&config, body, |cluster, node| {
        recorded_owner(&config, cluster, node).map_err(|e| {
            format!("{e}; ask it instead: POST the request to its admin API at /admin/route")
        })
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    match args.output.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
        Output::Text => print!("{}", explanation.render()),
    }
    // A request that no route matches would be refused (422): a failure for scripts.
    Ok(match explanation.decision {
        Decision::NoRoute => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

/// The owner (a state namespace) of a node from the config's state store: the embedded file
/// read-only (which a running gateway holds), or etcd (which any number of readers share).
fn recorded_owner(config: &Config, cluster: &str, node: &str) -> Result<Option<String>, String> {
    match &config.store {
        StoreConfig::Embedded => {
            crate::state::embedded::read_owner(&config.state_dir, cluster, node)
                .map_err(|e| e.to_string())
        }
        StoreConfig::Etcd(settings) => {
            let runtime = super::runtime(false).map_err(|e| format!("{e:#}"))?;
            runtime.block_on(async {
                let store = EtcdStore::connect(settings)
                    .await
                    .map_err(|e| e.to_string())?;
                store.owner(cluster, node).await.map_err(|e| e.to_string())
            })
        }
    }
}
