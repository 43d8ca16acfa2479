//! `state export` and `state import`: the durable state (plugin data, node ownership) copied
//! out of or into the config's store, for backups and moves between stores.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::Outcome;
use crate::config::Config;
use crate::state::{self, transfer};

#[derive(Subcommand)]
pub(super) enum StateCommand {
    /// Write every namespace and the ownership index as JSON on stdout.
    Export {
        /// The gateway config file (its `[state]` section names the store).
        #[arg(long, short, env = "PLATFORM_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Load a dump written by `state export` into the config's store.
    Import {
        /// The gateway config file (its `[state]` section names the store).
        #[arg(long, short, env = "PLATFORM_GATEWAY_CONFIG")]
        config: PathBuf,
        /// The dump (`-` for stdin).
        dump: PathBuf,
        /// Import even if the store already holds data: everything it held is removed first, so
        /// that afterwards it holds exactly the dump.
        #[arg(long, env = "PLATFORM_GATEWAY_STATE_REPLACE")]
        replace: bool,
    },
}

pub(super) fn run(command: StateCommand) -> Outcome {
    let runtime = super::runtime(false)?;
    runtime
        .block_on(async {
            match command {
                StateCommand::Export { config } => export(&config).await,
                StateCommand::Import {
                    config,
                    dump,
                    replace,
                } => import(&config, &dump, replace).await,
            }
        })
        .map(|()| ExitCode::SUCCESS)
}

async fn export(config: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let store = state::open(&config.store, &config.state_dir)
        .await
        .context("opening the state store")?;
    let dump = transfer::export(&*store).await?;
    let stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(stdout, &dump)?;
    println!();
    Ok(())
}

async fn import(
    config: &std::path::Path,
    dump: &std::path::Path,
    replace: bool,
) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let text = super::read_input(dump)?;
    let dump: transfer::Dump = serde_json::from_str(&text)
        .context("not a dump written by `platform-gateway state export`")?;
    let store = state::open(&config.store, &config.state_dir)
        .await
        .context("opening the state store")?;
    transfer::import(&*store, &dump, replace).await?;
    eprintln!(
        "imported into {}: {} keys in {} namespaces, {} ownership records",
        store.describe(),
        dump.key_count(),
        dump.namespaces.len(),
        dump.owners.len()
    );
    Ok(())
}
