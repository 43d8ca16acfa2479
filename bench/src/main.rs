//! `cargo xtask bench`: what the sandbox costs, measured side by side.
//!
//! For each scenario it starts the gateway (the release build, with the wasm build of the
//! providers) and one or more native baselines (the very same provider code compiled natively
//! behind axum handlers, or a plain handler; see [`native`]) on loopback, drives each with the
//! same bounded load, and prints requests per second and p50/p99 latency for each, with the
//! ratio to the first baseline. The scale scenarios time a start and one discovery instead.
//! `--compare` adds another gateway binary (an older build) to the same run, for before/after
//! figures. Some scenarios compare the gateway with itself on another config instead: its state
//! in a 3-member etcd cluster against the embedded store, or plugins in Python and JavaScript
//! against the Rust `static` plugin.

mod load;
mod native;
mod soak;

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use load::{Load, Measured, Work};
use native::Flavour;
use xtask::etcd::EtcdCluster;

#[derive(Parser)]
#[command(about = "The gateway against a native build of the same providers, side by side")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Serve a gateway config's backends natively (the baseline).
    Native {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
        /// Which native build.
        #[arg(long, value_enum, default_value = "sdk")]
        flavour: Flavour,
    },
    /// Drive one running server (for profiling it meanwhile) and print what was measured.
    Load {
        /// The server's address.
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// `discover`, or `pool` (provision and deprovision).
        #[arg(long, default_value = "discover")]
        work: String,
    },
    /// Soak one gateway with hostile clients and plugins and reloads, and watch RSS and fds.
    Soak {
        /// The gateway binary.
        #[arg(long)]
        gateway: PathBuf,
        /// The folder of the wasm plugins (with the `fault` test plugin).
        #[arg(long)]
        plugins: PathBuf,
        /// Where the config, state and log go.
        #[arg(long)]
        work: PathBuf,
        /// How long.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
    },
    /// Run the scenarios.
    Run {
        /// The gateway binary to measure.
        #[arg(long)]
        gateway: PathBuf,
        /// Another gateway binary measured in the same run, `LABEL=PATH` (e.g. before=...).
        #[arg(long)]
        compare: Vec<String>,
        /// The folder of the wasm plugins.
        #[arg(long)]
        plugins: PathBuf,
        /// The folder of the example plugins in Python and JavaScript (`python-inventory.wasm`,
        /// `js-inventory.wasm`; `cargo xtask bench` builds them).
        #[arg(long, default_value = "target/example-plugins")]
        examples: PathBuf,
        /// Where configs, state and logs go.
        #[arg(long)]
        work: PathBuf,
        /// Seconds of measured load per scenario and server (after one of warm-up).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Run only the scenarios whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Commands::Native {
            config,
            listen,
            flavour,
        } => native::serve(&config, listen, flavour),
        Commands::Load {
            addr,
            connections,
            seconds,
            work,
        } => {
            let work = match work.as_str() {
                "discover" => Work::Discover,
                "pool" => Work::ProvisionDeprovision,
                "plan" => Work::PlanProvision,
                other => bail!("unknown work `{other}`: discover, pool or plan (an admin address)"),
            };
            let load = Load {
                connections,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(seconds),
                max_requests: 2_000_000,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let measured = runtime.block_on(load::run(addr, work, load))?;
            println!("{}", line("server", &measured));
            Ok(())
        }
        Commands::Soak {
            gateway,
            plugins,
            work,
            minutes,
        } => {
            std::fs::create_dir_all(&work)?;
            soak::run(
                &std::fs::canonicalize(&gateway)?,
                &std::fs::canonicalize(&plugins)?,
                &std::fs::canonicalize(&work)?,
                minutes,
            )
        }
        Commands::Run {
            gateway,
            compare,
            plugins,
            examples,
            work,
            seconds,
            only,
        } => {
            let mut gateways = vec![("gateway".to_string(), gateway)];
            for entry in compare {
                let (label, path) = entry
                    .split_once('=')
                    .context("--compare takes LABEL=PATH")?;
                gateways.push((label.to_string(), PathBuf::from(path)));
            }
            let bench = Bench {
                gateways,
                plugins: std::fs::canonicalize(&plugins)
                    .with_context(|| format!("plugins folder {}", plugins.display()))?,
                // Checked by the scenario that needs them.
                examples: std::path::absolute(&examples)?,
                work: {
                    std::fs::create_dir_all(&work)?;
                    std::fs::canonicalize(&work)?
                },
                seconds,
            };
            bench.run(only.as_deref())
        }
    }
}

struct Bench {
    /// Label and binary of each gateway measured.
    gateways: Vec<(String, PathBuf)>,
    plugins: PathBuf,
    /// The example plugins in Python and JavaScript.
    examples: PathBuf,
    work: PathBuf,
    seconds: u64,
}

/// One scenario: what the gateway serves, a workload, a concurrency, and the lines it is
/// measured against (the ratio is to the first).
struct Scenario {
    name: &'static str,
    /// What each gateway binary serves: one line each, or one line per setup (the same work
    /// over other plugins).
    setups: Vec<Setup>,
    work: Work,
    connections: usize,
    baselines: Vec<Baseline>,
}

/// One config of the gateway in a scenario.
struct Setup {
    /// What the line says after the binary's label (`gateway, LABEL`); empty for nothing.
    label: &'static str,
    backends: String,
    state: StateStore,
    /// Nodes provisioned before the load (one provision each, in one cluster), so that a
    /// discovery has allocations to read.
    provisioned: usize,
}

impl Setup {
    /// `backends` with the embedded store, nothing provisioned, no label.
    fn embedded(backends: String) -> Setup {
        Setup {
            label: "",
            backends,
            state: StateStore::Embedded,
            provisioned: 0,
        }
    }

    /// The label of its line for the gateway binary labelled `binary`.
    fn line(&self, binary: &str) -> String {
        if self.label.is_empty() {
            binary.to_string()
        } else {
            format!("{binary}, {}", self.label)
        }
    }
}

/// Where a gateway of a scenario keeps its state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StateStore {
    /// The embedded store (redb) in the config's folder.
    Embedded,
    /// The scenario's etcd cluster of [`ETCD_MEMBERS`] members on loopback, started for it and
    /// removed after it.
    Etcd,
}

/// The members of a scenario's etcd cluster.
const ETCD_MEMBERS: usize = 3;

/// A line a scenario's gateway lines are compared with.
enum Baseline {
    /// A native build serving the first setup's backends.
    Native(Flavour),
    /// The first gateway binary on another setup: the same gateway with its state elsewhere, or
    /// over another plugin.
    Gateway(Setup),
}

/// The native baselines `flavours`, in order.
fn natives(flavours: &[Flavour]) -> Vec<Baseline> {
    flavours.iter().copied().map(Baseline::Native).collect()
}

/// The labels of the gateway's own baseline lines, and what each is (the legend).
const EMBEDDED_LINE: &str = "embedded";
const STATIC_LINE: &str = "static (Rust)";
const GATEWAY_BASELINES: [(&str, &str); 2] = [
    (
        EMBEDDED_LINE,
        "the same gateway, plugin and load with its state in the embedded store (redb)",
    ),
    (
        STATIC_LINE,
        "the same gateway and discover over the Rust `static` plugin, 1 cluster of 3 nodes",
    ),
];

/// A server under test, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The limits of the bench's `static` backends.
const STATIC_LIMITS: &str =
    "memory = \"64MiB\", timeout = \"5s\", concurrency = 16, max_response = \"16MiB\"";

/// A `static` backend with `clusters` clusters of `nodes` nodes.
fn static_backend(plugins: &Path, name: &str, clusters: usize, nodes: usize) -> String {
    static_backend_with(plugins, name, clusters, nodes, STATIC_LIMITS)
}

/// A `static` backend with `clusters` clusters of `nodes` nodes (at most 62,500) and `limits`.
fn static_backend_with(
    plugins: &Path,
    name: &str,
    clusters: usize,
    nodes: usize,
    limits: &str,
) -> String {
    let mut out = format!(
        "[backends.{name}]\nplugin = \"{}\"\nlimits = {{ {limits} }}\n\n[backends.{name}.settings]\nclusters = [\n",
        plugins.join("static_clusters.wasm").display()
    );
    for c in 0..clusters {
        let _ = write!(out, "  {{ cluster_id = \"{name}-c{c}\", nodes = [");
        for n in 0..nodes {
            let _ = write!(
                out,
                "{{ node_id = \"{name}-c{c}-n{n}\", agent_address = \"http://10.{}.{}.{}:37000\", node_class = \"m5.large\", node_group = \"data\" }}, ",
                c % 250,
                n / 250,
                n % 250
            );
        }
        out.push_str("] },\n");
    }
    out.push_str("]\n\n");
    out
}

fn pool_backend(plugins: &Path, machines: usize) -> String {
    let mut out = format!(
        "[backends.pool]\nplugin = \"{}\"\nlimits = {{ memory = \"32MiB\", timeout = \"5s\", concurrency = 16, state_writes_per_second = 1000000 }}\n\n[backends.pool.settings]\nmachines = [\n",
        plugins.join("pool.wasm").display()
    );
    for m in 0..machines {
        let _ = writeln!(
            out,
            "  {{ id = \"m{m}\", agent_address = \"http://10.0.{}.{}:37000\", node_class = \"small\" }},",
            m / 250,
            m % 250
        );
    }
    out.push_str("]\n\n");
    out
}

/// An inventory example plugin (`python-inventory.wasm`, `js-inventory.wasm` in `examples`)
/// as the backend `inventory`, over three small machines and a large one (its `settings.toml`).
fn inventory_backend(examples: &Path, plugin: &str) -> String {
    format!(
        "[backends.inventory]\nplugin = \"{}\"\nlimits = {{ memory = \"32MiB\", timeout = \"5s\", concurrency = 4 }}\n\n[backends.inventory.settings]\nmachines = [\n{}]\n\n",
        examples.join(format!("{plugin}.wasm")).display(),
        [("m1", "10.0.0.1", "small"), ("m2", "10.0.0.2", "small"), ("m3", "10.0.0.3", "small"), ("b1", "10.0.1.1", "large")]
            .iter()
            .map(|(id, ip, class)| format!(
                "  {{ id = \"{id}\", agent_address = \"http://{ip}:37000\", node_class = \"{class}\" }},\n"
            ))
            .collect::<String>()
    )
}

impl Bench {
    fn scenarios(&self) -> Vec<Scenario> {
        let p = &self.plugins;
        let hundred: String = (0..100)
            .map(|i| static_backend(p, &format!("b{i}"), 1, 1))
            .collect();
        let inventory = |label, plugin| Setup {
            label,
            backends: inventory_backend(&self.examples, plugin),
            state: StateStore::Embedded,
            // Three small nodes in one cluster: the allocations a discovery reads and answers.
            provisioned: 3,
        };
        vec![
            Scenario {
                name: "discover, static 3x3 nodes, 8 connections",
                setups: vec![Setup::embedded(static_backend(p, "static", 3, 3))],
                work: Work::Discover,
                connections: 8,
                baselines: natives(&[Flavour::Sdk]),
            },
            Scenario {
                name: "discover, static 3x3 nodes, 1 connection",
                setups: vec![Setup::embedded(static_backend(p, "static", 3, 3))],
                work: Work::Discover,
                connections: 1,
                baselines: natives(&[Flavour::Sdk]),
            },
            Scenario {
                name: "discover, static 3x3 nodes, a shadow candidate, 1 connection",
                setups: vec![Setup::embedded(format!(
                    "{}[backends.static.candidate]\nplugin = \"{}\"\n\n",
                    static_backend(p, "static", 3, 3),
                    p.join("static_clusters.wasm").display()
                ))],
                work: Work::Discover,
                connections: 1,
                baselines: natives(&[Flavour::Sdk]),
            },
            Scenario {
                name: "provision+deprovision, pool, 1 connection",
                setups: vec![Setup::embedded(pool_backend(p, 64))],
                work: Work::ProvisionDeprovision,
                connections: 1,
                baselines: natives(&[Flavour::SdkRedb, Flavour::Sdk]),
            },
            Scenario {
                name: "provision+deprovision, pool, 8 connections",
                setups: vec![Setup::embedded(pool_backend(p, 64))],
                work: Work::ProvisionDeprovision,
                connections: 8,
                baselines: natives(&[Flavour::SdkRedb, Flavour::Sdk]),
            },
            Scenario {
                name: "provision+deprovision, pool, recorded, 8 connections",
                setups: vec![Setup::embedded(format!(
                    "{}[backends.pool.record]\ncalls = 10000\n\n",
                    pool_backend(p, 64)
                ))],
                work: Work::ProvisionDeprovision,
                connections: 8,
                baselines: natives(&[Flavour::SdkRedb]),
            },
            // The goal: provision throughput with etcd at least half the embedded store's.
            Scenario {
                name: "provision+deprovision, pool, 3-member etcd, 8 connections",
                setups: vec![Setup {
                    label: "3-member etcd",
                    state: StateStore::Etcd,
                    ..Setup::embedded(pool_backend(p, 64))
                }],
                work: Work::ProvisionDeprovision,
                connections: 8,
                baselines: vec![Baseline::Gateway(Setup {
                    label: EMBEDDED_LINE,
                    ..Setup::embedded(pool_backend(p, 64))
                })],
            },
            Scenario {
                name: "discover, 10,200 nodes over 3 static backends, 2 connections",
                setups: vec![Setup::embedded(
                    ["s1", "s2", "s3"]
                        .iter()
                        .map(|name| static_backend(p, name, 34, 100))
                        .collect(),
                )],
                work: Work::Discover,
                connections: 2,
                baselines: natives(&[Flavour::Plain, Flavour::Sdk]),
            },
            Scenario {
                name: "discover, 100 one-node static backends, 1 connection",
                setups: vec![Setup::embedded(hundred)],
                work: Work::Discover,
                connections: 1,
                baselines: natives(&[Flavour::Sdk]),
            },
            // The goal: a sequential discover of a Python or JavaScript plugin within 1.5 ms.
            Scenario {
                name: xtask::bench::EXAMPLES_SCENARIO,
                setups: vec![
                    inventory("python", "python-inventory"),
                    inventory("js", "js-inventory"),
                ],
                work: Work::Discover,
                connections: 1,
                baselines: vec![Baseline::Gateway(Setup {
                    label: STATIC_LINE,
                    ..Setup::embedded(static_backend(p, "static", 1, 3))
                })],
            },
        ]
    }

    /// Write a config for `scenario` served at `addr` by the server labelled `label`, with
    /// the compiled cache of the binary labelled `cache`, its state in `etcd` (under a prefix of
    /// its own) or else in the embedded store.
    fn config(
        &self,
        scenario: usize,
        label: &str,
        cache: &str,
        addr: SocketAddr,
        backends: &str,
        etcd: Option<&EtcdCluster>,
    ) -> anyhow::Result<PathBuf> {
        let name = format!("s{scenario}-{label}");
        let dir = self.work.join(&name);
        // A fresh state each time: the pool starts empty, the cache is the only thing reused.
        let _ = std::fs::remove_dir_all(dir.join("state"));
        std::fs::create_dir_all(&dir)?;
        let first_backend = backends
            .lines()
            .find_map(|l| l.strip_prefix("[backends.")?.strip_suffix(']'))
            .context("no backend")?;
        // The etcd cluster is the scenario's own: a prefix per server starts it empty.
        let etcd = etcd.map_or(String::new(), |cluster| {
            let endpoints: Vec<String> = cluster
                .endpoints()
                .iter()
                .map(|e| format!("\"{e}\""))
                .collect();
            format!(
                "backend = \"etcd\"\nendpoints = [{}]\nprefix = \"/platform-gateway-bench/{name}\"\n",
                endpoints.join(", ")
            )
        });
        let config = format!(
            "[server]\nlisten = \"{addr}\"\n\n[state]\n{etcd}dir = \"state\"\ncache_dir = \"{}\"\n\n{backends}[[routes]]\nname = \"default\"\nbackend = \"{first_backend}\"\n",
            self.work.join(format!("cache-{cache}")).display()
        );
        let path = dir.join("gateway.toml");
        std::fs::write(&path, config)?;
        Ok(path)
    }

    fn start(
        &self,
        program: &Path,
        args: &[&str],
        config: &Path,
        addr: SocketAddr,
    ) -> anyhow::Result<(Server, Duration)> {
        // Logs go beside the work folder, not beside the config: the gateway watches its
        // config's folder, and a log written there would wake the watcher on every line.
        let log_path = self.work.join("logs").join(format!(
            "{}.log",
            config
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .unwrap_or("server")
        ));
        std::fs::create_dir_all(self.work.join("logs"))?;
        let log = std::fs::File::create(&log_path)?;
        let started = Instant::now();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut server = Server { child, addr };
        wait_ready(addr, &mut server.child, started + Duration::from_secs(120))
            .with_context(|| format!("{} (log: {})", program.display(), log_path.display()))?;
        Ok((server, started.elapsed()))
    }

    fn run(&self, only: Option<&str>) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let native = std::env::current_exe()?;
        let load = |connections| Load {
            connections,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(self.seconds),
            max_requests: 2_000_000,
        };
        println!(
            "platform-gateway bench: {}s per scenario and server after 1s of warm-up, loopback",
            self.seconds
        );
        println!("ratios are the gateway's req/s over the first baseline line's; the baselines:");
        for flavour in [Flavour::Sdk, Flavour::SdkRedb, Flavour::Plain] {
            println!("  {:<LABEL$} {}", flavour.label(), flavour.legend());
        }
        for (label, legend) in GATEWAY_BASELINES {
            println!("  {:<LABEL$} {legend}", format!("gateway, {label}"));
        }
        println!();
        for (index, scenario) in self.scenarios().iter().enumerate() {
            if only.is_some_and(|o| !scenario.name.contains(o)) {
                continue;
            }
            println!("{}", scenario.name);
            let load = load(scenario.connections);
            let gateway_baselines = scenario.baselines.iter().filter_map(|b| match b {
                Baseline::Gateway(setup) => Some(setup),
                Baseline::Native(_) => None,
            });
            for setup in scenario.setups.iter().chain(gateway_baselines) {
                if let Some(path) = missing_plugin(&setup.backends) {
                    bail!(
                        "{}: the plugin {} is missing: `cargo xtask bench` builds the plugins, \
                         and the example plugins in Python and JavaScript with the toolchains \
                         `cargo xtask setup` installs",
                        scenario.name,
                        path.display()
                    );
                }
            }
            // The scenario's own etcd cluster, under the work folder: its members are killed and
            // their data removed when it is dropped, at the end of the scenario or on an error.
            let uses_etcd = scenario.setups.iter().any(|s| s.state == StateStore::Etcd)
                || scenario
                    .baselines
                    .iter()
                    .any(|b| matches!(b, Baseline::Gateway(s) if s.state == StateStore::Etcd));
            let etcd = if uses_etcd {
                Some(
                    EtcdCluster::start_in(&self.work, ETCD_MEMBERS)
                        .map_err(anyhow::Error::msg)
                        .with_context(|| {
                            format!("{}: starting its {ETCD_MEMBERS}-member etcd", scenario.name)
                        })?,
                )
            } else {
                None
            };
            let mut rows: Vec<(String, Measured)> = Vec::new();
            for (label, binary) in &self.gateways {
                for (i, setup) in scenario.setups.iter().enumerate() {
                    let server = if i == 0 {
                        label.clone()
                    } else {
                        format!("{label}-{i}")
                    };
                    let measured = self.measure_gateway(
                        &runtime,
                        (index, &server),
                        (label, binary),
                        setup,
                        etcd.as_ref(),
                        scenario.work,
                        load,
                    )?;
                    rows.push((setup.line(label), measured));
                }
            }
            let mut baselines: Vec<(String, Measured)> = Vec::new();
            for (i, baseline) in scenario.baselines.iter().enumerate() {
                let flavour = match baseline {
                    Baseline::Native(flavour) => *flavour,
                    Baseline::Gateway(setup) => {
                        let (label, binary) = &self.gateways[0];
                        let measured = self.measure_gateway(
                            &runtime,
                            (index, &format!("{label}-baseline-{i}")),
                            (label, binary),
                            setup,
                            etcd.as_ref(),
                            scenario.work,
                            load,
                        )?;
                        baselines.push((setup.line(label), measured));
                        continue;
                    }
                };
                let addr = free_port()?;
                let label = format!("native-{flavour:?}").to_lowercase();
                let config = self.config(
                    index,
                    &label,
                    &label,
                    addr,
                    &scenario.setups[0].backends,
                    None,
                )?;
                let (config_arg, listen) = (config.display().to_string(), addr.to_string());
                let flavour_arg = format!("--flavour={}", flavour_name(flavour));
                let (server, _) = self.start(
                    &native,
                    &[
                        "native",
                        "--config",
                        &config_arg,
                        "--listen",
                        &listen,
                        &flavour_arg,
                    ],
                    &config,
                    addr,
                )?;
                let measured = runtime.block_on(load::run(server.addr, scenario.work, load))?;
                drop(server);
                baselines.push((flavour.label().to_string(), measured));
            }
            drop(etcd);
            print_rows(&rows, &baselines);
        }
        if only.is_none_or(|o| "plan".contains(o) || o.contains("plan")) {
            self.plan_cost(&runtime, &load(1))?;
        }
        if only.is_none_or(|o| "ready".contains(o) || o.contains("ready")) {
            self.ready_times()?;
        }
        if only.is_none_or(|o| SCALE_BACKENDS.contains(o)) {
            self.scale_backends(&runtime)?;
        }
        if only.is_none_or(|o| SCALE_NODES.contains(o)) {
            self.scale_nodes(&runtime)?;
        }
        Ok(())
    }

    /// Start the gateway `binary` (labelled `label`) on `setup` as the server `server` of
    /// scenario `scenario`, provision what the setup says, drive it with `work` under `load`,
    /// and stop it.
    #[allow(clippy::too_many_arguments)]
    fn measure_gateway(
        &self,
        runtime: &tokio::runtime::Runtime,
        (scenario, server): (usize, &str),
        (label, binary): (&str, &Path),
        setup: &Setup,
        etcd: Option<&EtcdCluster>,
        work: Work,
        load: Load,
    ) -> anyhow::Result<Measured> {
        let etcd = match setup.state {
            StateStore::Embedded => None,
            StateStore::Etcd => Some(etcd.context("no etcd cluster started for the scenario")?),
        };
        let addr = free_port()?;
        let config = self.config(scenario, server, label, addr, &setup.backends, etcd)?;
        let config_arg = config.display().to_string();
        let (running, _) =
            self.start(binary, &["serve", "--config", &config_arg], &config, addr)?;
        if setup.provisioned > 0 {
            runtime.block_on(load::provision(addr, "bench-inventory", setup.provisioned))?;
        }
        let measured = runtime.block_on(load::run(running.addr, work, load))?;
        drop(running);
        Ok(measured)
    }

    /// Start `binary` (the gateway, or this program's plain native baseline) on `backends`:
    /// the time to ready of the last of `starts` starts (the first fills the compiled cache),
    /// then one discovery on a fresh connection and the median of five more, each checked to
    /// report `nodes` nodes, and the RSS after them.
    fn probe(
        &self,
        runtime: &tokio::runtime::Runtime,
        server: Option<(&str, &Path)>,
        key: usize,
        backends: &str,
        starts: usize,
        nodes: usize,
    ) -> anyhow::Result<Probe> {
        let mut ready = Vec::new();
        for round in 0..starts.max(1) {
            let addr = free_port()?;
            let (label, program) = match server {
                Some((label, binary)) => (label, binary.to_path_buf()),
                None => ("native-plain", std::env::current_exe()?),
            };
            let config = self.config(key, label, label, addr, backends, None)?;
            let (config_arg, listen) = (config.display().to_string(), addr.to_string());
            let args: Vec<&str> = match server {
                Some(_) => vec!["serve", "--config", &config_arg],
                None => vec![
                    "native",
                    "--config",
                    &config_arg,
                    "--listen",
                    &listen,
                    "--flavour=plain",
                ],
            };
            let (running, elapsed) = self.start(&program, &args, &config, addr)?;
            if round > 0 || starts <= 1 {
                ready.push(elapsed);
            }
            if round + 1 < starts.max(1) {
                continue;
            }
            let mut discoveries = Vec::new();
            for _ in 0..6 {
                let (status, body, took) = runtime.block_on(load::get_once(addr, "/discover"))?;
                if status != hyper::StatusCode::OK {
                    bail!(
                        "discovery answered {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(500)])
                    );
                }
                let answer: serde_json::Value = serde_json::from_slice(&body)?;
                let found: usize = answer["clusters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c["nodes"].as_array().map_or(0, Vec::len))
                    .sum();
                if found != nodes {
                    bail!("discovery reported {found} nodes, not {nodes}");
                }
                discoveries.push(took);
            }
            let rss_kib = rss_kib(running.child.id())?;
            drop(running);
            let first = discoveries.remove(0);
            discoveries.sort();
            ready.sort();
            return Ok(Probe {
                ready: ready[ready.len() / 2],
                rss_kib,
                first,
                p50: discoveries[discoveries.len() / 2],
            });
        }
        bail!("no start")
    }

    /// 250, 500 and 1,000 one-node `static` backends: how ready time, RSS and one discovery
    /// over all of them grow with the number of backends.
    fn scale_backends(&self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        println!("{SCALE_BACKENDS}");
        println!(
            "  ready: start to /readyz 200 from a warm compiled cache (median of 3 starts); RSS after the discoveries; discover: the 1st on a fresh connection, p50 of 5 more"
        );
        let sizes = [250, 500, 1000];
        // The first gateway's figures at the largest size, beside the plain baseline's.
        let mut largest: Option<Probe> = None;
        for (label, binary) in &self.gateways {
            let mut previous: Option<(usize, Probe)> = None;
            for count in sizes {
                let backends: String = (0..count)
                    .map(|i| static_backend(&self.plugins, &format!("b{i}"), 1, 1))
                    .collect();
                let probe = self.probe(
                    runtime,
                    Some((label, binary)),
                    1000 + count,
                    &backends,
                    4,
                    count,
                )?;
                // What each backend adds to the RSS: over the previous size (the process's own
                // share cancels out), or over nothing for the first.
                let added = match &previous {
                    Some((before, p)) => {
                        (probe.rss_kib as f64 - p.rss_kib as f64) / (count - before) as f64
                    }
                    None => probe.rss_kib as f64 / count as f64,
                };
                let mut out = format!(
                    "  {label:<LABEL$} {count:>6} backends  ready {:>7.1} ms ({:.3} ms each)  RSS {:>6.0} MiB ({:+.0} KiB per backend)  discover 1st {:.1} ms, p50 {:.1} ms ({:.1} us each)",
                    ms(probe.ready),
                    ms(probe.ready) / count as f64,
                    probe.rss_kib as f64 / 1024.0,
                    added,
                    ms(probe.first),
                    ms(probe.p50),
                    probe.p50.as_secs_f64() * 1e6 / count as f64,
                );
                if let Some((before, p)) = &previous {
                    let _ = write!(out, "  {}", growth(*before, p, count, &probe));
                }
                println!("{out}");
                previous = Some((count, probe));
            }
            if largest.is_none() {
                largest = previous.map(|(_, probe)| probe);
            }
        }
        let backends: String = (0..1000)
            .map(|i| static_backend(&self.plugins, &format!("b{i}"), 1, 1))
            .collect();
        let plain = self.probe(runtime, None, 2000, &backends, 1, 1000)?;
        println!(
            "  {:<LABEL$}   1000 backends  discover 1st {:.1} ms, p50 {:.1} ms{}",
            Flavour::Plain.label(),
            ms(plain.first),
            ms(plain.p50),
            gateway_over(largest.as_ref(), &plain)
        );
        println!();
        Ok(())
    }

    /// One discovery of 25,000, 50,000 and 100,000 nodes over four `static` backends (clusters
    /// of 250 nodes): how its latency and the RSS grow with the number of nodes.
    fn scale_nodes(&self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        println!("{SCALE_NODES}");
        println!(
            "  four static backends of clusters of 250 nodes; discover: the 1st on a fresh connection, p50 of 5 more; RSS after them"
        );
        // A backend of 25,000 nodes parses about 4 MB of settings and answers about 3 MB.
        let limits =
            "memory = \"512MiB\", timeout = \"30s\", concurrency = 4, max_response = \"64MiB\"";
        let sizes = [25_000, 50_000, 100_000];
        // The first gateway's figures by size, beside the plain baseline's.
        let mut first_gateway: Vec<Probe> = Vec::new();
        let config = |nodes: usize| -> String {
            (0..4)
                .map(|i| {
                    static_backend_with(&self.plugins, &format!("n{i}"), nodes / 1000, 250, limits)
                })
                .collect()
        };
        for (label, binary) in &self.gateways {
            let mut previous: Option<(usize, Probe)> = None;
            for nodes in sizes {
                let probe = self.probe(
                    runtime,
                    Some((label, binary)),
                    3000 + nodes / 1000,
                    &config(nodes),
                    2,
                    nodes,
                )?;
                let mut out = format!(
                    "  {label:<LABEL$} {nodes:>7} nodes  ready {:>7.1} ms  discover 1st {:>7.1} ms, p50 {:>7.1} ms ({:.2} us each)  RSS {:>5.0} MiB",
                    ms(probe.ready),
                    ms(probe.first),
                    ms(probe.p50),
                    probe.p50.as_secs_f64() * 1e6 / nodes as f64,
                    probe.rss_kib as f64 / 1024.0,
                );
                if let Some((before, p)) = &previous {
                    let _ = write!(out, "  {}", growth(*before, p, nodes, &probe));
                }
                println!("{out}");
                if first_gateway.len() < sizes.len() {
                    first_gateway.push(probe);
                }
                previous = Some((nodes, probe));
            }
        }
        let mut previous: Option<(usize, Probe)> = None;
        for (i, nodes) in sizes.into_iter().enumerate() {
            let probe = self.probe(runtime, None, 4000 + nodes / 1000, &config(nodes), 1, nodes)?;
            let mut out = format!(
                "  {:<LABEL$} {nodes:>7} nodes  discover 1st {:>7.1} ms, p50 {:>7.1} ms ({:.2} us each)",
                Flavour::Plain.label(),
                ms(probe.first),
                ms(probe.p50),
                probe.p50.as_secs_f64() * 1e6 / nodes as f64,
            );
            if let Some((before, p)) = &previous {
                let _ = write!(
                    out,
                    "  x{:.1} nodes: discover p50 x{:.2}",
                    nodes as f64 / *before as f64,
                    ratio(probe.p50, p.p50)
                );
            }
            out.push_str(&gateway_over(first_gateway.get(i), &probe));
            println!("{out}");
            previous = Some((nodes, probe));
        }
        println!();
        Ok(())
    }

    /// A plan of a pool provision (`POST /admin/plan/provision`, saved for applying) beside the
    /// real provision and deprovision, on the same gateway, one connection each in turn. The
    /// native baseline has no plans: this compares the gateway with itself.
    fn plan_cost(&self, runtime: &tokio::runtime::Runtime, load: &Load) -> anyhow::Result<()> {
        println!("plan of a provision against the real call, pool, 1 connection (gateway only)");
        for (label, binary) in &self.gateways {
            let (addr, admin) = (free_port()?, free_port()?);
            let dir = self.work.join(format!("plan-{label}"));
            let _ = std::fs::remove_dir_all(dir.join("state"));
            std::fs::create_dir_all(&dir)?;
            let config = dir.join("gateway.toml");
            std::fs::write(
                &config,
                format!(
                    "[server]\nlisten = \"{addr}\"\n\n[admin]\nlisten = \"{admin}\"\nplan_ttl = \"1s\"\n\n[state]\ndir = \"state\"\ncache_dir = \"{}\"\n\n{}[[routes]]\nname = \"default\"\nbackend = \"pool\"\n",
                    self.work.join(format!("cache-{label}")).display(),
                    pool_backend(&self.plugins, 64)
                ),
            )?;
            let config_arg = config.display().to_string();
            let (server, _) =
                self.start(binary, &["serve", "--config", &config_arg], &config, addr)?;
            let real = runtime.block_on(load::run(addr, Work::ProvisionDeprovision, *load))?;
            let plans = runtime.block_on(load::run(admin, Work::PlanProvision, *load))?;
            drop(server);
            let real_p50 = real.latencies.get("provision").map(|l| l.quantile(0.5));
            let plan_p50 = plans.all().quantile(0.5);
            println!("{}", line(&format!("{label} real"), &real));
            println!(
                "{}{}",
                line(&format!("{label} plan"), &plans),
                real_p50.map_or(String::new(), |real| format!(
                    "  plan/provision p50 {:.2}",
                    plan_p50.as_secs_f64() / real.as_secs_f64()
                ))
            );
        }
        println!();
        Ok(())
    }

    /// From start to `/readyz` 200 with a hundred backends whose compiled plugins are cached.
    fn ready_times(&self) -> anyhow::Result<()> {
        println!("ready with 100 backends, compiled cache warm (median of 5 starts)");
        let backends: String = (0..100)
            .map(|i| static_backend(&self.plugins, &format!("b{i}"), 1, 1))
            .collect();
        for (label, binary) in &self.gateways {
            let mut times = Vec::new();
            for round in 0..6 {
                let addr = free_port()?;
                let config = self.config(99, label, label, addr, &backends, None)?;
                let config_arg = config.display().to_string();
                let (server, elapsed) =
                    self.start(binary, &["serve", "--config", &config_arg], &config, addr)?;
                drop(server);
                // The first start fills the cache.
                if round > 0 {
                    times.push(elapsed);
                }
            }
            times.sort();
            println!("  {label:<LABEL$} {:>8.1} ms", ms(times[times.len() / 2]));
        }
        println!();
        Ok(())
    }
}

/// `flavour` as `--flavour` spells it.
fn flavour_name(flavour: Flavour) -> String {
    use clap::ValueEnum as _;
    flavour
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// The width of a line's label.
const LABEL: usize = 22;

/// The scale scenarios' names (what `--only` matches).
const SCALE_BACKENDS: &str = "scale by backends: 250, 500, 1,000 one-node static backends";
const SCALE_NODES: &str = "scale by nodes: 25,000, 50,000, 100,000 nodes in one answer";

/// What one start of a server and its discoveries measured.
#[derive(Clone, Copy)]
struct Probe {
    ready: Duration,
    rss_kib: u64,
    first: Duration,
    p50: Duration,
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// How `now` (at size `size`) grew from `before` (at `before_size`): linear growth reads the
/// same factor as the size's.
fn growth(before_size: usize, before: &Probe, size: usize, now: &Probe) -> String {
    format!(
        "x{:.1} size: ready x{:.2}, RSS x{:.2}, discover p50 x{:.2}",
        size as f64 / before_size as f64,
        ratio(now.ready, before.ready),
        now.rss_kib as f64 / before.rss_kib.max(1) as f64,
        ratio(now.p50, before.p50)
    )
}

/// The first gateway's discovery p50 over a plain baseline's, as its line ends.
fn gateway_over(gateway: Option<&Probe>, plain: &Probe) -> String {
    gateway.map_or_else(String::new, |g| {
        format!("  (gateway p50 / this x{:.1})", ratio(g.p50, plain.p50))
    })
}

/// The resident set of process `pid`, from `/proc/PID/status` (`VmRSS`).
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One server's figures on a line.
fn line(label: &str, m: &Measured) -> String {
    let all = m.all();
    let mut out = format!(
        "  {label:<LABEL$} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
        m.per_second(),
        ms(all.quantile(0.5)),
        ms(all.quantile(0.99))
    );
    if m.latencies.len() > 1 {
        for (kind, l) in &m.latencies {
            let _ = write!(out, "  [{kind} p50 {:.3} ms]", ms(l.quantile(0.5)));
        }
    }
    out
}

/// The gateways' lines against the first baseline, then each baseline's line (the others with
/// the gateway's ratio to them too).
fn print_rows(rows: &[(String, Measured)], baselines: &[(String, Measured)]) {
    let Some((_, first)) = baselines.first() else {
        return;
    };
    let native_p50 = first.all().quantile(0.5);
    for (label, m) in rows {
        let added = m.all().quantile(0.5).saturating_sub(native_p50);
        println!(
            "{}  ratio {:.2}  adds p50 {:.0} us",
            line(label, m),
            m.per_second() / first.per_second(),
            added.as_secs_f64() * 1e6
        );
    }
    for (i, (label, baseline)) in baselines.iter().enumerate() {
        match rows.first() {
            Some((gateway, m)) if i > 0 => println!(
                "{}  ({gateway} / this {:.2})",
                line(label, baseline),
                m.per_second() / baseline.per_second()
            ),
            _ => println!("{}", line(label, baseline)),
        }
    }
    println!();
}

/// The first `plugin = "PATH"` file of a config's `backends` that does not exist.
fn missing_plugin(backends: &str) -> Option<PathBuf> {
    backends
        .lines()
        .filter_map(|l| l.strip_prefix("plugin = \"")?.strip_suffix('"'))
        .map(PathBuf::from)
        .find(|path| !path.is_file())
}

/// Poll `/readyz` every millisecond until it answers 200 or `deadline` passes.
fn wait_ready(
    addr: SocketAddr,
    server: &mut std::process::Child,
    deadline: Instant,
) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    loop {
        // A server that exited will never be ready: say so now, not at the deadline.
        if let Some(status) = server.try_wait()? {
            bail!("exited before it was ready at {addr} ({status})");
        }
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            let _ = stream
                .write_all(b"GET /readyz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
            let mut reply = String::new();
            let _ = stream.read_to_string(&mut reply);
            if reply.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("not ready at {addr} in time");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
