//! `check`: load and validate a config and every plugin it names, as `serve` would, then exit.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::{Outcome, Output, OutputArgs};
use crate::config::Config;

#[derive(Args)]
pub(super) struct CheckArgs {
    /// The gateway config file.
    #[arg(long, short, env = "PLATFORM_GATEWAY_CONFIG")]
    config: PathBuf,
    /// Create the compiled-plugin cache directory (`state.cache_dir`) if it does not exist, and
    /// fill it, so that `serve` on this config does not compile the plugins again. Without it,
    /// check uses the cache only if its directory exists, and creates nothing.
    #[arg(long, env = "PLATFORM_GATEWAY_FILL_CACHE")]
    fill_cache: bool,
    #[command(flatten)]
    pub(super) output: OutputArgs,
}

pub(super) fn run(args: CheckArgs) -> Outcome {
    let config = Config::load(&args.config)?;
    if args.fill_cache {
        std::fs::create_dir_all(&config.cache_dir).with_context(|| {
            format!("creating the compiled cache {}", config.cache_dir.display())
        })?;
    } else if !config.cache_dir.is_dir() {
        tracing::info!(
            "the compiled cache {} does not exist: serve will compile every plugin again \
             (check --fill-cache creates and fills it)",
            config.cache_dir.display()
        );
    }
    let backends = crate::check(&config)?;
    match args.output.output {
        Output::Json => {
            let backends: Vec<_> = backends
                .iter()
                .map(
                    |(name, digest)| serde_json::json!({ "name": name.as_str(), "digest": digest }),
                )
                .collect();
            println!(
                "{:#}",
                serde_json::json!({
                    "config": args.config,
                    "backends": backends,
                    "routes": config.routes.routes().len(),
                })
            );
        }
        Output::Text => {
            for (backend, digest) in &backends {
                println!("backend {backend}: ok ({digest})");
            }
            println!(
                "{}: ok ({} backends, {} routes)",
                args.config.display(),
                config.backends.len(),
                config.routes.routes().len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
