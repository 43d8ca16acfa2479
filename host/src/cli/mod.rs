//! The command line: the arguments of every subcommand and what each one does, one file per
//! subcommand. The binary only parses and calls [`run`], so that every command is library
//! code, testable without a process.
//!
//! Exit codes: 0 success, 1 failure (an invalid config, a plugin that does not load, a request
//! no route matches), 2 a usage error (clap's own: a missing or unknown argument).

mod admin_client;
mod check;
mod completions;
mod healthcheck;
mod kit;
mod plan;
mod recordings;
mod replay;
mod route;
mod serve;
mod state;
mod status;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::telemetry::{self, LogFormat};

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
    name = "platform-gateway",
    version,
    long_version = LONG_VERSION,
    about,
    subcommand_negates_reqs = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: serve::ServeArgs,
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
        value_parser = telemetry::filter
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
        settings: Option<&telemetry::TelemetrySettings>,
    ) -> anyhow::Result<telemetry::Telemetry> {
        let format = self.log_format.map(|format| match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        });
        telemetry::init(self.log_level.clone(), format, settings)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    /// Lines for people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How `check`, `route` and `status` print their result.
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
    Serve(serve::ServeArgs),
    /// Load and validate the config and every plugin it names, then exit.
    Check(check::CheckArgs),
    /// Explain which backend a provision or deprovision request (a JSON file) would go to.
    Route(route::RouteArgs),
    /// Copy the durable state (plugin data, node ownership) out of or into the config's store.
    #[command(subcommand)]
    State(state::StateCommand),
    /// Show what a running gateway serves: its generation, each backend's calls, errors and
    /// calls in flight, the routes and the last refused reload (from its admin API).
    Status(status::StatusArgs),
    /// Show what a provision or deprovision (a JSON request file) would do on a running
    /// gateway, with no side effects: backend, state writes, requests (from its admin API).
    Plan(plan::PlanArgs),
    /// Save a backend's recorded calls from a running gateway (its admin API), for `replay`.
    #[command(subcommand)]
    Recordings(recordings::RecordingsCommand),
    /// Run a backend's recorded calls against another build, offline (nothing reaches a store
    /// or the network), and report each call that answers, writes or requests differently
    /// (exit 1 if one does).
    Replay(replay::ReplayArgs),
    /// Play the conformance scenario against one plugin, loaded alone in the real runtime,
    /// and report PASS, FAIL or SKIP per check (exit 1 if one failed).
    ///
    /// The inventory it needs: at least 2 free nodes of the node class it asks for. A fixed
    /// inventory (machines listed in the settings) must hold at most --max-nodes of the class,
    /// so that the kit can exhaust it and check what the plugin answers when it runs out; a
    /// plugin that creates nodes on demand (a cloud API) is asked for up to --max-nodes nodes.
    /// The kit frees everything it took.
    TestPlugin(kit::TestPluginArgs),
    /// Run one operation of one plugin, loaded alone, and print its answer as JSON (the
    /// plugin's log goes to stderr).
    Call(kit::CallArgs),
    /// Ask a running gateway whether it is ready (`GET /readyz`): exit 0 on 200, else 1. For
    /// container health checks, where there is no curl.
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Print the OpenAPI 3.1 document of the Platform API (served at `/openapi.json`), or with
    /// `--admin` that of the admin API (served at `/admin/openapi.json`).
    Openapi {
        /// The admin API's document.
        #[arg(long)]
        admin: bool,
    },
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A command's outcome: success, or a failure already reported (the exit code says which).
type Outcome = anyhow::Result<ExitCode>;

/// Run the command `cli` names, report a failure on stderr (and, with `--output json`, as
/// `{"error": ...}` on stdout), and say how the process exits.
pub fn run(mut cli: Cli) -> ExitCode {
    // The kit's report is its output: the gateway's and the plugin's info lines (one per call)
    // would be interleaved with it on a terminal, so it logs warnings unless asked for more.
    // So does a replay's: the plugin's log lines there describe effects that never happened.
    if matches!(
        cli.command,
        Some(Command::TestPlugin(_) | Command::Replay(_))
    ) && cli.log.log_level.is_none()
        && std::env::var_os("RUST_LOG").is_none()
    {
        cli.log.log_level = telemetry::filter("warn").ok();
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
            (check::run(args), output)
        }
        Some(Command::Route(args)) => {
            let output = args.output.output;
            (route::run(args), output)
        }
        Some(Command::Serve(args)) => (serve::run(args, &cli.log), Output::Text),
        Some(Command::State(command)) => (state::run(command), Output::Text),
        Some(Command::Status(args)) => {
            let output = args.output.output;
            (status::run(args), output)
        }
        Some(Command::Plan(args)) => {
            let output = args.admin.output.output;
            (plan::run(args), output)
        }
        Some(Command::Recordings(command)) => (recordings::run(command), Output::Text),
        Some(Command::Replay(args)) => {
            let output = args.output();
            (replay::run(args), output)
        }
        Some(Command::Healthcheck(args)) => (healthcheck::run(args), Output::Text),
        Some(Command::TestPlugin(args)) => (kit::test_plugin(args), Output::Text),
        Some(Command::Call(args)) => (kit::call(args), Output::Text),
        Some(Command::Completions { shell }) => (completions::run(shell), Output::Text),
        Some(Command::Openapi { admin }) => {
            println!("{}", crate::api::openapi::document(admin));
            (Ok(ExitCode::SUCCESS), Output::Text)
        }
        None => (serve::run(cli.serve, &cli.log), Output::Text),
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

/// A file's text, or stdin's for `-`.
fn read_input(path: &Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// A Tokio runtime for one command; `current_thread` for those that only wait on one client.
fn runtime(current_thread: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}
