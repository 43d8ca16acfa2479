//! The plugin runtime: one engine, components compiled once, and a fresh sandbox per call.
//!
//! [`Runtime::prepare`] compiles (or fetches from the cache) a backend's component, reads which
//! contract version it implements from its exports, and pre-instantiates it against that
//! version's linker, which is where a plugin that imports what its world does not list is
//! refused. [`Backend`] then runs each call in a new `Store` with the backend's memory
//! cap and deadline, so nothing a plugin does in one call survives into the next.

mod backend;
mod cache;
pub mod config;
pub mod limits;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{
    Config as EngineConfig, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

pub use backend::{Backend, CallError};
pub use cache::Compiled;

use self::config::BackendConfig;
use crate::capability::{
    http::OutboundHttp, logging::Logging, settings::Settings, state::PluginState,
};
use crate::metrics::Metrics;

use crate::bindings::{v0_1, v0_2};

/// How often the epoch advances: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What a backend's component could not become.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The plugin file could not be read.
    // The I/O error is in the message and deliberately not a `source`: a chain printed with
    // `{:#}` would say it twice.
    #[error(
        "backend `{backend}`: cannot read plugin {path} (`backends.{backend}.plugin`): {error}"
    )]
    Read {
        /// The backend.
        backend: String,
        /// The plugin file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not a valid component, or does not implement the `plugin` world.
    #[error("backend `{backend}`: plugin {path} is not a usable component: {message}")]
    Invalid {
        /// The backend.
        backend: String,
        /// The plugin file.
        path: PathBuf,
        /// What wasmtime said.
        message: String,
    },
    /// The component is valid but cannot start within the backend's limits.
    #[error("backend `{backend}`: {message}")]
    Start {
        /// The backend.
        backend: String,
        /// Why, naming the limit.
        message: String,
    },
}

/// The data of one call's store: WASI plumbing plus the capabilities the backend is given.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: backend::MemoryLimiter,
    settings: Settings,
    logging: Logging,
    state: PluginState,
    http: OutboundHttp,
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let (ctx, hooks) = self.http.parts();
        WasiHttpCtxView {
            ctx,
            table: &mut self.table,
            hooks,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The contract versions this gateway serves, oldest first.
pub const CONTRACTS: [Contract; 2] = [Contract::V0_1, Contract::V0_2];

/// A released version of the `replicante:platform` contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// 0.1.0, frozen.
    V0_1,
    /// 0.2.0.
    V0_2,
}

impl Contract {
    /// Its version number.
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }

    /// The contract a component implements, by the `provider` interface it exports.
    fn of(component: &wasmtime::component::Component, engine: &Engine) -> Result<Contract, String> {
        const PROVIDER: &str = "replicante:platform/provider@";
        let ty = component.component_type();
        let exported: Vec<String> = ty
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let Some(version) = exported.iter().find_map(|name| name.strip_prefix(PROVIDER)) else {
            return Err(format!(
                "it exports no `replicante:platform/provider` interface (it exports: {}); a \
                 plugin implements the `plugin` world of wit/ in the gateway's repository",
                if exported.is_empty() {
                    "nothing".to_string()
                } else {
                    exported.join(", ")
                }
            ));
        };
        CONTRACTS
            .into_iter()
            .find(|c| c.version() == version)
            .ok_or_else(|| {
                format!(
                    "it implements contract replicante:platform@{version}, which this gateway \
                     does not serve (it serves {})",
                    CONTRACTS.map(Contract::version).join(", ")
                )
            })
    }
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "replicante:platform@{}", self.version())
    }
}

/// The linkers of one contract version: exactly the imports its world lists.
struct Linkers {
    /// What every backend gets.
    plain: Linker<CallState>,
    /// That plus `wasi:http`, for backends granted outbound HTTP.
    http: Linker<CallState>,
}

impl Linkers {
    /// WASI plus `add`'s imports, and a copy with `wasi:http` too.
    fn new(
        engine: &Engine,
        add: impl FnOnce(&mut Linker<CallState>) -> wasmtime::Result<()>,
    ) -> wasmtime::Result<Linkers> {
        let mut plain = Linker::<CallState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut plain)?;
        add(&mut plain)?;
        let mut http = plain.clone();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http)?;
        Ok(Linkers { plain, http })
    }
}

/// The engine, the linkers and the compiled-component cache, shared by every backend.
pub struct Runtime {
    engine: Engine,
    v0_1: Linkers,
    v0_2: Linkers,
    cache: cache::ComponentCache,
    metrics: Arc<Metrics>,
    /// Component instances that can exist at once.
    slots: u32,
}

impl Runtime {
    /// A runtime whose compiled components are cached under `cache_dir` (memory only if None),
    /// which is trimmed to `cache_max` bytes, with instance slots for `calls` calls at once
    /// (the sum of the backends' concurrency limits: see [`instance_slots`]).
    pub fn new(
        cache_dir: Option<PathBuf>,
        cache_max: u64,
        calls: usize,
    ) -> anyhow::Result<Runtime> {
        let slots = instance_slots(calls);
        let mut pool = PoolingAllocationConfig::default();
        // Per component instance: its core instances (a Rust plugin has a few, an interpreter
        // built by componentize-py or -js more), memories and tables, within the limits below.
        pool.total_component_instances(slots)
            .total_stacks(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_core_instances_per_component(32)
            // Resetting a used memory by madvise costs TLB shootdowns across cores; keeping the
            // first pages resident and zeroing them by hand is much cheaper for small plugins.
            // Where the kernel can say which pages a call touched (PAGEMAP_SCAN, Linux 6.7), only
            // those are reset, so a call pays for the memory it used, not for the whole 2 MiB.
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(Enabled::Auto);
        let mut config = EngineConfig::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        use crate::capability::{logging, settings, state};
        let v0_1 = Linkers::new(&engine, |linker| {
            settings::add_to_linker_v0_1(linker, |s: &mut CallState| s.settings.view())?;
            logging::add_to_linker_v0_1(linker, |s: &mut CallState| &mut s.logging)?;
            state::add_to_linker_v0_1(linker, |s: &mut CallState| &mut s.state)
        })?;
        let v0_2 = Linkers::new(&engine, |linker| {
            settings::add_to_linker_v0_2(linker, |s: &mut CallState| &mut s.settings)?;
            logging::add_to_linker_v0_2(linker, |s: &mut CallState| &mut s.logging)?;
            state::add_to_linker_v0_2(linker, |s: &mut CallState| &mut s.state)
        })?;

        // The ticker lives as long as the engine: every backend holds a clone, so deadlines keep
        // working for as long as any call can run, and the thread ends with the last of them.
        let ticker_engine = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;

        Ok(Runtime {
            slots,
            cache: cache::ComponentCache::new(&engine, cache_dir, cache_max),
            engine,
            v0_1,
            v0_2,
            metrics: Arc::default(),
        })
    }

    /// Count the calls of the backends it prepares, and the compiled cache, in `metrics`
    /// (by default, a registry of its own that nobody reads).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Runtime {
        self.metrics = metrics;
        self
    }

    /// Where its backends' calls are counted.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Compile (or fetch) and pre-instantiate `config`'s plugin, a regular file of at most
    /// `max_size` bytes. Slow on a cache miss: call it off the request path.
    pub fn prepare(&self, config: &BackendConfig, max_size: u64) -> Result<Prepared, LoadError> {
        let name = config.name.to_string();
        let _span = tracing::info_span!("load", backend = %name).entered();
        let bytes = read_plugin(&config.plugin, max_size).map_err(|error| LoadError::Read {
            backend: name.clone(),
            path: config.plugin.clone(),
            error,
        })?;
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::Invalid {
                backend: name.clone(),
                path: config.plugin.clone(),
                message: "it is not a WebAssembly file (no `\\0asm` header): point \
                          `plugin` at the component your build wrote"
                    .into(),
            });
        }
        // One line: wasmtime's messages may embed pretty-printed values (byte arrays), which
        // would spread over the log and `status`.
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            backend: name.clone(),
            path: config.plugin.clone(),
            message: format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        };
        let compiled = self.cache.get(&self.engine, &bytes).map_err(invalid)?;
        let contract = Contract::of(&compiled.component, &self.engine).map_err(|message| {
            LoadError::Invalid {
                backend: name.clone(),
                path: config.plugin.clone(),
                message,
            }
        })?;
        let linkers = match contract {
            Contract::V0_1 => &self.v0_1,
            Contract::V0_2 => &self.v0_2,
        };
        let linker = match config.grants.http {
            Some(_) => &linkers.http,
            None => &linkers.plain,
        };
        let instance_pre = linker
            .instantiate_pre(&compiled.component)
            .map_err(|e| match config.grants.http {
                None if format!("{e:#}").contains("wasi:http/") => LoadError::Invalid {
                    backend: name.clone(),
                    path: config.plugin.clone(),
                    message: format!(
                        "{e:#}; the plugin imports wasi:http (outbound HTTP) but the backend has \
                         no `grants.http`: grant the addresses it may call, e.g. `grants = {{ \
                         http = [\"https://api.example.com\"] }}` (a componentize-js build \
                         imports wasi:http unless built with `--disable http fetch-event`)"
                    ),
                },
                _ => invalid(e),
            })?;
        let pre = match contract {
            Contract::V0_1 => PluginPre::V0_1(v0_1::PluginPre::new(instance_pre).map_err(invalid)?),
            Contract::V0_2 => PluginPre::V0_2(v0_2::PluginPre::new(instance_pre).map_err(invalid)?),
        };
        tracing::debug!(%contract, "plugin loaded");
        Ok(Prepared {
            pre,
            digest: compiled.digest,
        })
    }

    /// Keep only the compiled components with these digests in memory, and trim the on-disk
    /// cache: call after installing a generation, with its digests.
    pub fn retain<'a>(&self, in_use: impl IntoIterator<Item = &'a str>) {
        let in_use = in_use.into_iter().map(str::to_string).collect();
        if let Some(bytes) = self.cache.retain(&in_use) {
            self.metrics.set_cache_bytes(bytes);
        }
    }

    /// Whether the pool sized at start holds `calls` calls at once with room for a reload's
    /// overlap; when not, calls beyond it are answered 503 until a restart.
    pub fn fits(&self, calls: usize) -> bool {
        instance_slots(calls) <= self.slots
    }

    /// The engine (for building stores).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// The fewest and the most instance slots the pool gets. Each slot reserves address space (4
/// GiB and a guard region per memory, as wasmtime's bounds-check elision needs), never
/// committed memory until a call uses it.
const SLOTS: (u32, u32) = (16, 2048);

/// Instance slots for `calls` calls at once: twice that, since during a reload the calls of the
/// old generation finish beside those of the new one.
fn instance_slots(calls: usize) -> u32 {
    (calls.saturating_mul(2).min(SLOTS.1 as usize) as u32).max(SLOTS.0)
}

/// Read a plugin file: only a regular file (a FIFO would block, a device never end), and at
/// most `max_size` bytes, checked before and while reading (the file may grow meanwhile).
fn read_plugin(path: &std::path::Path, max_size: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let too_large = || {
        Error::new(
            ErrorKind::InvalidData,
            format!("larger than runtime.max_plugin_size ({max_size} bytes)"),
        )
    };
    if meta.len() > max_size {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)?
        .take(max_size + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_size {
        return Err(too_large());
    }
    Ok(bytes)
}

/// A component pre-instantiated against its contract version's world.
#[derive(Clone)]
enum PluginPre {
    V0_1(v0_1::PluginPre<CallState>),
    V0_2(v0_2::PluginPre<CallState>),
}

/// A backend's component, compiled and checked against the world, ready to instantiate.
#[derive(Clone)]
pub struct Prepared {
    pre: PluginPre,
    /// `sha256:<hex>` of the plugin file.
    pub digest: String,
}

impl Prepared {
    /// The contract version the component implements.
    pub fn contract(&self) -> Contract {
        match self.pre {
            PluginPre::V0_1(_) => Contract::V0_1,
            PluginPre::V0_2(_) => Contract::V0_2,
        }
    }
}

/// One operation with its input, whatever the contract.
pub(crate) enum Operation {
    Discover,
    Provision(crate::model::ProvisionRequest),
    Deprovision(crate::model::DeprovisionRequest),
}

impl Operation {
    /// Its name, in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Discover => "discover",
            Operation::Provision(_) => "provision",
            Operation::Deprovision(_) => "deprovision",
        }
    }
}

/// What an operation answered, in the gateway's model.
pub(crate) enum Answer {
    Clusters(Vec<crate::model::Cluster>),
    Provisioned(crate::model::ProvisionResponse),
    Deprovisioned,
}

/// The plugin's answer or its error, or the trap.
type Outcome = wasmtime::Result<Result<Answer, crate::model::ProviderError>>;

impl PluginPre {
    /// Instantiate without calling (a load-time probe).
    async fn instantiate(&self, store: &mut wasmtime::Store<CallState>) -> wasmtime::Result<()> {
        match self {
            PluginPre::V0_1(pre) => pre.instantiate_async(store).await.map(drop),
            PluginPre::V0_2(pre) => pre.instantiate_async(store).await.map(drop),
        }
    }

    /// Instantiate and run `operation`, converting to and from the contract's records.
    async fn invoke(
        &self,
        store: &mut wasmtime::Store<CallState>,
        operation: Operation,
    ) -> Outcome {
        // The same steps for every version; only the generated types and conversions differ.
        macro_rules! invoke {
            ($pre:expr, $convert:path) => {{
                use $convert as convert;
                let plugin = $pre.instantiate_async(&mut *store).await?;
                let provider = plugin.replicante_platform_provider();
                Ok(match operation {
                    Operation::Discover => provider
                        .call_discover(store)
                        .await?
                        .map(|c| Answer::Clusters(c.into_iter().map(convert::cluster).collect()))
                        .map_err(convert::error),
                    Operation::Provision(request) => provider
                        .call_provision(store, &convert::provision_request(&request))
                        .await?
                        .map(|r| Answer::Provisioned(convert::provision_response(r)))
                        .map_err(convert::error),
                    Operation::Deprovision(request) => provider
                        .call_deprovision(store, &convert::deprovision_request(&request))
                        .await?
                        .map(|()| Answer::Deprovisioned)
                        .map_err(convert::error),
                })
            }};
        }
        match self {
            PluginPre::V0_1(pre) => invoke!(pre, crate::convert::v0_1),
            PluginPre::V0_2(pre) => invoke!(pre, crate::convert::v0_2),
        }
    }
}
