//! `test-plugin` and `call`: the conformance kit on the command line (see [`crate::kit`]).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::kit::{self, Options, Plugin, Script};
use anyhow::Context;
use clap::Args;

/// How to load the plugin: the flags both commands share.
#[derive(Args)]
pub(super) struct LoadArgs {
    /// The plugin component (`.wasm`).
    plugin: PathBuf,
    /// A TOML file whose top-level keys are the backend's settings, as under
    /// `[backends.NAME.settings]`.
    #[arg(long, short, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// `limits.memory` [default: the gateway's, 64MiB].
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// `limits.timeout` [default: the gateway's, 10s].
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// A `grants.http` entry (`https://api.example.com`, repeatable).
    #[arg(long = "grant-http", value_name = "ORIGIN")]
    http: Vec<String>,
    /// Keep compiled plugins in this folder, so that the next run starts at once.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
}

impl LoadArgs {
    fn options(self, state: Option<PathBuf>) -> Options {
        Options {
            plugin: self.plugin,
            settings: self.settings,
            memory: self.memory,
            timeout: self.timeout,
            http: self.http,
            state,
            cache: self.cache,
        }
    }
}

/// `test-plugin`'s flags (its help, in `cli/mod.rs`, says what inventory the scenario needs).
#[derive(Args)]
pub(super) struct TestPluginArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// The store of the provision requests.
    #[arg(long, default_value = "mongodb")]
    store: String,
    /// Their node group.
    #[arg(long, default_value = "data")]
    node_group: String,
    /// Their node class, one the plugin's settings offer [default: the one the settings name,
    /// when all their `node_class` keys say the same; else empty].
    #[arg(long)]
    node_class: Option<String>,
    /// How many provisions race in the concurrency check.
    #[arg(long, default_value_t = 8)]
    concurrent: usize,
    /// How many nodes the exhaustion check takes at most: a fixed inventory of the class must
    /// hold fewer to be exhausted.
    #[arg(long, default_value_t = 8)]
    max_nodes: u32,
    /// The plugin does not provision (it only reports clusters): a provision it refuses as
    /// `unsupported` (or `invalid-request` under contract 0.1) skips the lifecycle checks.
    /// Without it, a run that could not provision fails: it exercised nothing.
    #[arg(long, conflicts_with = "provisions")]
    no_provision: bool,
    /// Skip the idempotency check (a repeated request ID), saying so: for a plugin whose
    /// idempotency rests on an API that the test double it runs against does not implement
    /// (moto ignores EC2's `ClientToken`).
    #[arg(long)]
    skip_idempotency: bool,
    /// The default; kept for scripts written when not provisioning was.
    #[arg(long, hide = true)]
    provisions: bool,
}

/// `call`'s flags.
#[derive(Args)]
pub(super) struct CallArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// `discover`, `provision` or `deprovision`.
    operation: String,
    /// The request, a JSON file (`-` for stdin): for provision `cluster_id`, `store`,
    /// `store_version`, `node_group`, `node_class`, `count`, `desired_count`, `attributes`;
    /// for deprovision `cluster_id` and `node_id`. Missing fields take defaults.
    request: Option<PathBuf>,
    /// Keep the plugin's state in this folder, so that calls see each other's effects
    /// [default: a temporary folder, gone after the call].
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
}

/// Play the scenario and print the report; exit 1 if a check failed.
pub(super) fn test_plugin(args: TestPluginArgs) -> super::Outcome {
    let options = args.load.options(None);
    let runtime = super::runtime(false)?;
    let checks = runtime.block_on(async {
        match Plugin::open(&options).await {
            Ok(plugin) => {
                let (node_class, class_hint) = match args.node_class {
                    Some(class) => (class, None),
                    None => {
                        let classes = plugin.node_classes();
                        match classes.as_slice() {
                            [one] => {
                                println!("node class `{one}`: the one the settings name");
                                (one.clone(), None)
                            }
                            [] => (String::new(), Some("no --node-class given".to_string())),
                            many => (
                                String::new(),
                                Some(format!(
                                    "no --node-class given, and the settings name {}: choose \
                                     one",
                                    many.iter()
                                        .map(|c| format!("`{c}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )),
                            ),
                        }
                    }
                };
                let script = Script {
                    store: args.store,
                    node_group: args.node_group,
                    node_class,
                    class_hint,
                    concurrent: args.concurrent.max(1),
                    provisions: !args.no_provision,
                    max_nodes: args.max_nodes.max(2),
                    skip_idempotency: args.skip_idempotency,
                };
                let mut checks = vec![kit::Check {
                    name: "loads and starts within its limits",
                    outcome: kit::Outcome::Pass,
                }];
                checks.extend(kit::scenario(&plugin, &script).await);
                checks
            }
            Err(e) => vec![kit::Check {
                name: "loads and starts within its limits",
                outcome: kit::Outcome::Fail(format!("{e:#}")),
            }],
        }
    });
    let (report, passed) = kit::report(&checks);
    print!("{report}");
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Run one operation and print its answer as JSON; exit 1 if the plugin answered an error.
pub(super) fn call(args: CallArgs) -> super::Outcome {
    let request: serde_json::Value = match &args.request {
        None => serde_json::Value::Null,
        Some(path) => serde_json::from_str(&super::read_input(path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?,
    };
    let operation = args.operation.clone();
    let options = args.load.options(args.state);
    let runtime = super::runtime(false)?;
    let (ok, answer) = runtime.block_on(async {
        let plugin = Plugin::open(&options).await?;
        plugin.call(&operation, &request).await
    })?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
