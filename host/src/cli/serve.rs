//! `serve` (also the command when none is given): the Platform API until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::{LogArgs, Outcome};
use crate::config::Config;

#[derive(Args)]
pub(super) struct ServeArgs {
    /// The gateway config file.
    // Required, but optional in the type: the same flags serve when no command is given, and
    // are then absent when one is.
    #[arg(long, short, env = "PLATFORM_GATEWAY_CONFIG", required = true)]
    config: Option<PathBuf>,
    /// Listen on this address instead of the config's `server.listen`.
    #[arg(long, env = "PLATFORM_GATEWAY_LISTEN")]
    listen: Option<SocketAddr>,
}

pub(super) fn run(args: ServeArgs, log: &LogArgs) -> Outcome {
    let runtime = super::runtime(false)?;
    // The config's `[telemetry]` says how to log and where to export traces, so it is read
    // before logging starts; one that does not load is reported as usual, below.
    let config = args
        .config
        .context("no config file: pass --config FILE")
        .and_then(|path| Ok(Config::load(&path)?));
    let telemetry = {
        let _runtime = runtime.enter();
        log.init(config.as_ref().ok().map(|config| &config.telemetry))?
    };
    let served = config.and_then(|mut config| {
        if let Some(listen) = args.listen {
            config.listen = listen;
            config.listen_overridden = true;
        }
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            crate::serve(config, listener, shutdown_signal()).await
        })
    });
    // After SIGTERM too: the spans still buffered go to the collector.
    telemetry.shutdown();
    served.map(|()| ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
