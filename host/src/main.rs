//! The `platform-gateway` binary: parse the command line, set up tracing, call the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use platform_gateway::config::Config;

/// A Replicante Platform server whose provisioning logic runs in WebAssembly plugins.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Platform API (the default command).
    Serve(ServeArgs),
    /// Load and validate the config and every plugin it names, then exit.
    Check(CheckArgs),
    /// Explain which backend a provision or deprovision request (a JSON file) would go to.
    Route(RouteArgs),
    /// Copy the durable state (plugin data, node ownership) out of or into the config's store.
    #[command(subcommand)]
    State(StateCommand),
}

#[derive(Subcommand)]
enum StateCommand {
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
        /// Import even if the store already holds data (keys in the dump replace theirs).
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Args)]
struct RouteArgs {
    /// The gateway config file.
    #[arg(long, short, env = "PLATFORM_GATEWAY_CONFIG")]
    config: PathBuf,
    /// The request body, as Replicante would POST it (`-` for stdin).
    request: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    /// The gateway config file.
    #[arg(long, short, env = "PLATFORM_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Listen on this address instead of the config's `server.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
struct CheckArgs {
    /// The gateway config file.
    #[arg(long, short, env = "PLATFORM_GATEWAY_CONFIG")]
    config: PathBuf,
}

fn main() -> ExitCode {
    platform_gateway::telemetry::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check(args)) => check(args),
        Some(Command::Route(args)) => route(args),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::State(command)) => state(command),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    for (backend, digest) in platform_gateway::check(&config)? {
        println!("backend {backend}: ok ({digest})");
    }
    println!(
        "{}: ok ({} backends, {} routes)",
        args.config.display(),
        config.backends.len(),
        config.routes.routes().len()
    );
    Ok(())
}

fn route(args: RouteArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let text = if args.request.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&args.request)
            .with_context(|| format!("cannot read {}", args.request.display()))?
    };
    let body: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.request.display()))?;
    let explanation = platform_gateway::api::inspect::explain(&config, body, |cluster, node| {
        recorded_owner(&config, cluster, node).map_err(|e| {
            format!("{e}; ask it instead: POST the request to its admin API at /admin/route")
        })
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    print!("{}", explanation.render());
    Ok(())
}

/// The owner of a node from the config's state store: the embedded file read-only (which a
/// running gateway holds), or etcd (which any number of readers share).
fn recorded_owner(config: &Config, cluster: &str, node: &str) -> Result<Option<String>, String> {
    use platform_gateway::config::StoreConfig;
    use platform_gateway::state::{EtcdStore, StateStore};
    match &config.store {
        StoreConfig::Embedded => {
            platform_gateway::state::embedded::read_owner(&config.state_dir, cluster, node)
                .map_err(|e| e.to_string())
        }
        StoreConfig::Etcd(settings) => {
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let store = EtcdStore::connect(settings)
                    .await
                    .map_err(|e| e.to_string())?;
                store.owner(cluster, node).await.map_err(|e| e.to_string())
            })
        }
    }
}

fn state(command: StateCommand) -> anyhow::Result<()> {
    use platform_gateway::state::{self, transfer};
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        match command {
            StateCommand::Export { config } => {
                let config = Config::load(&config)?;
                let store = state::open(&config.store, &config.state_dir)
                    .await
                    .context("opening the state store")?;
                let dump = transfer::export(&*store).await?;
                let stdout = std::io::stdout().lock();
                serde_json::to_writer_pretty(stdout, &dump)?;
                println!();
                Ok(())
            }
            StateCommand::Import {
                config,
                dump,
                replace,
            } => {
                let config = Config::load(&config)?;
                let text = if dump.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(&dump)
                        .with_context(|| format!("cannot read {}", dump.display()))?
                };
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
        }
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let path = args
        .config
        .context("no config file: pass --config FILE (or set PLATFORM_GATEWAY_CONFIG)")?;
    let mut config = Config::load(&path)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        platform_gateway::serve(config, listener, shutdown_signal()).await
    })
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
