//! The plugin runtime: one engine, components compiled once, and a fresh sandbox per call.
//!
//! [`Runtime::prepare`] compiles (or fetches from the cache) a backend's component, reads which
//! contract version it implements from its exports, and pre-instantiates it against that
//! version's linker (both [`crate::contract`]'s), which is where a plugin that imports what its
//! world does not list is refused. [`Backend`] then runs each call in a new `Store` with the backend's memory
//! cap and deadline, so nothing a plugin does in one call survives into the next.

mod backend;
mod cache;
pub mod candidate;
pub mod config;
pub mod limits;

use std::path::PathBuf;
use std::sync::Arc;

use crate::recording::{self, Recordings};
use std::time::Duration;

use wasmtime::component::ResourceTable;
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
use crate::contract::{Capabilities, Contract, Linkers, Plugin};
use crate::metrics::Metrics;

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

impl Capabilities for CallState {
    fn settings(&mut self) -> &mut Settings {
        &mut self.settings
    }

    fn logging(&mut self) -> &mut Logging {
        &mut self.logging
    }

    fn state(&mut self) -> &mut PluginState {
        &mut self.state
    }
}

/// The engine, the linkers and the compiled-component cache, shared by every backend.
pub struct Runtime {
    engine: Engine,
    linkers: Linkers<CallState>,
    cache: cache::ComponentCache,
    metrics: Arc<Metrics>,
    /// Component instances that can exist at once.
    slots: u32,
    /// Where the calls of backends that record go: the directory `serve` names (`check` and
    /// the kit do not record), opened when a backend first records.
    recordings: Option<Arc<recording::Lazy>>,
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

        let linkers = Linkers::new(&engine)?;

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
            recordings: None,
            cache: cache::ComponentCache::new(&engine, cache_dir, cache_max),
            engine,
            linkers,
            metrics: Arc::default(),
        })
    }

    /// Count the calls of the backends it prepares, and the compiled cache, in `metrics`
    /// (by default, a registry of its own that nobody reads).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Runtime {
        self.metrics = metrics;
        self
    }

    /// Record the calls of backends configured to (`[backends.NAME.record]`) in `recordings`.
    pub fn with_recordings(mut self, recordings: Arc<recording::Lazy>) -> Runtime {
        self.recordings = Some(recordings);
        self
    }

    /// Where recorded calls go (opened the first time it is asked), or `None` for a runtime
    /// that does not record.
    pub fn recordings(&self) -> Option<Result<Arc<Recordings>, String>> {
        self.recordings.as_ref().map(|lazy| lazy.open())
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
        let instance_pre = self
            .linkers
            .get(contract, config.grants.http.is_some())
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
        let pre = Plugin::new(contract, instance_pre).map_err(invalid)?;
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

/// A backend's component, compiled and checked against the world, ready to instantiate.
#[derive(Clone)]
pub struct Prepared {
    pre: Plugin<CallState>,
    /// `sha256:<hex>` of the plugin file.
    pub digest: String,
}

impl Prepared {
    /// The contract version the component implements.
    pub fn contract(&self) -> Contract {
        self.pre.contract()
    }
}
