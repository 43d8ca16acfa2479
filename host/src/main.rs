//! The `platform-gateway` binary: parse the command line, set up tracing, call the library.
//!
//! Exit codes: 0 success, 1 failure (an invalid config, a plugin that does not load, a request
//! no route matches), 2 a usage error (clap's own: a missing or unknown argument).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use platform_gateway::config::Config;
use platform_gateway::telemetry::LogFormat;

mod kit_cli;
mod plan_cli;

/// What `--version` prints after the name: the version, the git commit it was built from and
/// the plugin contract versions it serves (both from `build.rs`).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("PLATFORM_GATEWAY_COMMIT"),
    "\ncontracts: ",
    env!("PLATFORM_GATEWAY_CONTRACTS"),
);

/// A Replicante Platform server whose provisioning logic runs in WebAssembly plugins.
///
/// Every flag can also be set by the environment variable named in its help.
#[derive(Parser)]
#[command(
    version,
    long_version = LONG_VERSION,
    about,
    subcommand_negates_reqs = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    log: LogArgs,
}

/// Logging, for every command.
#[derive(Args)]
struct LogArgs {
    /// What to log: a level (error, warn, info, debug, trace) or filter directives such as
    /// `info,plugin=debug` [default: RUST_LOG's value, else info]
    #[arg(
        long,
        global = true,
        env = "PLATFORM_GATEWAY_LOG_LEVEL",
        value_name = "FILTER",
        value_parser = platform_gateway::telemetry::filter
    )]
    log_level: Option<tracing_subscriber::EnvFilter>,
    /// How log lines are written (on stderr) [default: for serve, the config's
    /// `[telemetry] log_format`; else text]
    #[arg(long, global = true, env = "PLATFORM_GATEWAY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormatArg>,
}

impl LogArgs {
    /// Start logging (and, with `[telemetry] otlp_endpoint`, trace export: inside a Tokio
    /// runtime) as these flags and the config's `[telemetry]` say.
    fn init(
        &self,
        settings: Option<&platform_gateway::telemetry::TelemetrySettings>,
    ) -> anyhow::Result<platform_gateway::telemetry::Telemetry> {
        let format = self.log_format.map(|format| match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        });
        platform_gateway::telemetry::init(self.log_level.clone(), format, settings)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    /// Lines for people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How `check` and `route` print their result.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Lines for people.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// The `--output` flag.
#[derive(Args)]
struct OutputArgs {
    /// Print the result as text or as JSON; with JSON, a failure is `{"error": "..."}`.
    #[arg(long, short, env = "PLATFORM_GATEWAY_OUTPUT", value_enum, default_value_t = Output::Text)]
    output: Output,
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
    /// Show what a running gateway serves: its generation, each backend's calls, errors and
    /// calls in flight, the routes and the last refused reload (from its admin API).
    Status(StatusArgs),
    /// Show what a provision or deprovision (a JSON request file) would do on a running
    /// gateway, with no side effects: backend, state writes, requests (from its admin API).
    Plan(plan_cli::PlanArgs),
    /// Play the conformance scenario against one plugin, loaded alone in the real runtime,
    /// and report PASS, FAIL or SKIP per check (exit 1 if one failed).
    ///
    /// The inventory it needs: at least 2 free nodes of the node class it asks for. A fixed
    /// inventory (machines listed in the settings) must hold at most --max-nodes of the class,
    /// so that the kit can exhaust it and check what the plugin answers when it runs out; a
    /// plugin that creates nodes on demand (a cloud API) is asked for up to --max-nodes nodes.
    /// The kit frees everything it took.
    TestPlugin(kit_cli::TestPluginArgs),
    /// Run one operation of one plugin, loaded alone, and print its answer as JSON (the
    /// plugin's log goes to stderr).
    Call(kit_cli::CallArgs),
    /// Ask a running gateway whether it is ready (`GET /readyz`): exit 0 on 200, else 1. For
    /// container health checks, where there is no curl.
    Healthcheck(HealthcheckArgs),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
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
        /// Import even if the store already holds data: everything it held is removed first, so
        /// that afterwards it holds exactly the dump.
        #[arg(long, env = "PLATFORM_GATEWAY_STATE_REPLACE")]
        replace: bool,
    },
}

#[derive(Args)]
struct StatusArgs {
    /// The gateway's admin API.
    #[arg(
        long,
        env = "PLATFORM_GATEWAY_ADMIN",
        default_value = "http://127.0.0.1:9090",
        value_name = "URL"
    )]
    admin: String,
    /// The admin token (`[admin] token`), sent as `Authorization: Bearer`.
    #[arg(
        long,
        env = "PLATFORM_GATEWAY_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    admin_token: Option<String>,
    /// The CA bundle (PEM) that signed an `https://` admin API's certificate [default: the
    /// public web roots].
    #[arg(long, env = "PLATFORM_GATEWAY_ADMIN_CA", value_name = "FILE")]
    admin_ca: Option<PathBuf>,
    /// A client certificate chain (PEM, leaf first) to present to an `https://` admin API
    /// that requires one (`[admin] tls.client_ca`); with `--admin-key`.
    #[arg(
        long,
        env = "PLATFORM_GATEWAY_ADMIN_CERT",
        value_name = "FILE",
        requires = "admin_key"
    )]
    admin_cert: Option<PathBuf>,
    /// The private key (PEM) of `--admin-cert`.
    #[arg(
        long,
        env = "PLATFORM_GATEWAY_ADMIN_KEY",
        value_name = "FILE",
        requires = "admin_cert"
    )]
    admin_key: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
struct HealthcheckArgs {
    /// The readiness URL.
    #[arg(
        long,
        env = "PLATFORM_GATEWAY_HEALTHCHECK_URL",
        default_value = "http://127.0.0.1:8080/readyz",
        value_name = "URL"
    )]
    url: String,
    /// The CA bundle (PEM) that signed an `https://` listener's certificate [default: the
    /// public web roots].
    #[arg(long, env = "PLATFORM_GATEWAY_HEALTHCHECK_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
}

#[derive(Args)]
struct RouteArgs {
    /// The gateway config file.
    #[arg(long, short, env = "PLATFORM_GATEWAY_CONFIG")]
    config: PathBuf,
    /// The request body, as Replicante would POST it (`-` for stdin).
    request: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// The gateway config file.
    // Required, but optional in the type: the same flags serve when no command is given, and
    // are then absent when one is.
    #[arg(long, short, env = "PLATFORM_GATEWAY_CONFIG", required = true)]
    config: Option<PathBuf>,
    /// Listen on this address instead of the config's `server.listen`.
    #[arg(long, env = "PLATFORM_GATEWAY_LISTEN")]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
struct CheckArgs {
    /// The gateway config file.
    #[arg(long, short, env = "PLATFORM_GATEWAY_CONFIG")]
    config: PathBuf,
    /// Create the compiled-plugin cache directory (`state.cache_dir`) if it does not exist, and
    /// fill it, so that `serve` on this config does not compile the plugins again. Without it,
    /// check uses the cache only if its directory exists, and creates nothing.
    #[arg(long, env = "PLATFORM_GATEWAY_FILL_CACHE")]
    fill_cache: bool,
    #[command(flatten)]
    output: OutputArgs,
}

/// A command's outcome: success, or a failure already reported (the exit code says which).
type Outcome = anyhow::Result<ExitCode>;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // The kit's report is its output: the gateway's and the plugin's info lines (one per call)
    // would be interleaved with it on a terminal, so it logs warnings unless asked for more.
    if matches!(cli.command, Some(Command::TestPlugin(_)))
        && cli.log.log_level.is_none()
        && std::env::var_os("RUST_LOG").is_none()
    {
        cli.log.log_level = platform_gateway::telemetry::filter("warn").ok();
    }
    // `serve` starts logging itself, once it has read the config's `[telemetry]`. The handle
    // is kept to the end: dropping it stops the log writer's thread (after flushing it).
    let _logging = if matches!(cli.command, None | Some(Command::Serve(_))) {
        None
    } else {
        // Without OTLP export (that is for serve), nothing to shut down and no failure.
        cli.log.init(None).ok()
    };
    let (result, output) = match cli.command {
        Some(Command::Check(args)) => {
            let output = args.output.output;
            (check(args), output)
        }
        Some(Command::Route(args)) => {
            let output = args.output.output;
            (route(args), output)
        }
        Some(Command::Serve(args)) => (serve(args, &cli.log), Output::Text),
        Some(Command::State(command)) => (state(command), Output::Text),
        Some(Command::Status(args)) => {
            let output = args.output.output;
            (status(args), output)
        }
        Some(Command::Plan(args)) => {
            let output = args.output();
            (plan_cli::plan(args), output)
        }
        Some(Command::Healthcheck(args)) => (healthcheck(args), Output::Text),
        Some(Command::TestPlugin(args)) => (kit_cli::test_plugin(args), Output::Text),
        Some(Command::Call(args)) => (kit_cli::call(args), Output::Text),
        Some(Command::Completions { shell }) => (completions(shell), Output::Text),
        None => (serve(cli.serve, &cli.log), Output::Text),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if output == Output::Json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn status(args: StatusArgs) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let access = platform_gateway::status::Access {
        token: args.admin_token.as_deref(),
        ca: args.admin_ca.as_deref(),
        cert: args.admin_cert.as_deref(),
        key: args.admin_key.as_deref(),
    };
    let status = runtime.block_on(platform_gateway::status::fetch(&args.admin, &access))?;
    match args.output.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Output::Text => print!("{}", status.render()),
    }
    Ok(ExitCode::SUCCESS)
}

fn healthcheck(args: HealthcheckArgs) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(platform_gateway::status::probe(
        &args.url,
        args.ca.as_deref(),
    ))?;
    println!("{}: ready", args.url);
    Ok(ExitCode::SUCCESS)
}

fn completions(shell: clap_complete::Shell) -> Outcome {
    let mut command = Cli::command();
    clap_complete::generate(
        shell,
        &mut command,
        "platform-gateway",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}

fn check(args: CheckArgs) -> Outcome {
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
    let backends = platform_gateway::check(&config)?;
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

fn route(args: RouteArgs) -> Outcome {
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
    match args.output.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
        Output::Text => print!("{}", explanation.render()),
    }
    // A request that no route matches would be refused (422): a failure for scripts.
    Ok(match explanation.decision {
        platform_gateway::api::inspect::Decision::NoRoute => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
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

fn state(command: StateCommand) -> Outcome {
    use platform_gateway::state::{self, transfer};
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime
        .block_on(async {
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
        .map(|()| ExitCode::SUCCESS)
}

fn serve(args: ServeArgs, log: &LogArgs) -> Outcome {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
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
            platform_gateway::serve(config, listener, shutdown_signal()).await
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
