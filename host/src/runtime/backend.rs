//! A loaded backend and the way one call runs: wait for a slot, build a fresh store with the
//! memory cap and deadline, instantiate, call, classify what went wrong, drop the store.
//!
//! Calls are synchronous wasm on tokio's blocking pool: a plugin that spins burns one blocking
//! thread until its epoch deadline traps it, never an async worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::{CallState, EPOCH_TICK, Prepared, wit};
use crate::capability::{logging::Logging, settings::Settings, state::PluginState};
use crate::config::{BackendConfig, Limits};
use crate::routing::BackendId;
use crate::state::StateStore;

/// How much of a plugin's stderr (panic messages) is kept per call and logged.
const STDERR_CAPACITY: usize = 16 << 10;

/// Why a call did not produce the plugin's answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin answered with an error of the contract.
    #[error("answered {0:?}")]
    Plugin(wit::Error),
    /// The call ran past its deadline and was stopped.
    #[error("did not answer within {0:?}")]
    Timeout(Duration),
    /// The plugin tried to grow its memory past the backend's cap and died of it.
    #[error("ran out of memory (limit {0} bytes)")]
    OutOfMemory(usize),
    /// The plugin trapped (a panic, `unreachable`, a bad memory access).
    #[error("crashed: {0}")]
    Trap(String),
    /// Every call slot stayed busy until the deadline.
    #[error("is busy: all {0} call slots stayed in use")]
    Busy(usize),
    /// The host failed to run the call (no instance slot, an internal error).
    #[error("could not be run: {0}")]
    Host(String),
}

/// The store's resource limiter: `StoreLimits`, remembering whether it refused memory, since a
/// guest that cannot grow usually aborts with a plain `unreachable` trap.
pub(super) struct MemoryLimiter {
    limits: StoreLimits,
    refused: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
}

/// A configured, loaded backend: its compiled plugin, settings, limits and call slots.
pub struct Backend {
    id: BackendId,
    prepared: Prepared,
    engine: wasmtime::Engine,
    settings: Settings,
    limits: Limits,
    slots: Arc<Semaphore>,
    state: Arc<dyn StateStore>,
}

impl Backend {
    /// A backend from its config and its prepared component.
    pub fn new(
        config: &BackendConfig,
        prepared: Prepared,
        engine: &wasmtime::Engine,
        state: Arc<dyn StateStore>,
    ) -> Backend {
        Backend {
            id: config.name.clone(),
            prepared,
            engine: engine.clone(),
            settings: Settings::new(&config.settings),
            limits: config.limits.clone(),
            slots: Arc::new(Semaphore::new(config.limits.concurrency)),
            state,
        }
    }

    /// Take over `previous`'s call slots when the concurrency limit is unchanged, so that calls
    /// still running on an older generation count against the limit.
    pub fn share_slots_with(&mut self, previous: &Backend) {
        if previous.limits.concurrency == self.limits.concurrency {
            self.slots = previous.slots.clone();
        }
    }

    /// The backend's name.
    pub fn id(&self) -> &BackendId {
        &self.id
    }

    /// `sha256:<hex>` of its plugin file.
    pub fn digest(&self) -> &str {
        &self.prepared.digest
    }

    /// The backend's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Every cluster and node the backend reports.
    pub async fn discover(self: &Arc<Self>) -> Result<Vec<wit::Cluster>, CallError> {
        self.call("discover", |plugin, store| {
            plugin.replicante_platform_provider().call_discover(store)
        })
        .await
    }

    /// Provision nodes.
    pub async fn provision(
        self: &Arc<Self>,
        request: wit::ProvisionRequest,
    ) -> Result<wit::ProvisionResponse, CallError> {
        self.call("provision", move |plugin, store| {
            plugin
                .replicante_platform_provider()
                .call_provision(store, &request)
        })
        .await
    }

    /// Deprovision a node.
    pub async fn deprovision(
        self: &Arc<Self>,
        request: wit::DeprovisionRequest,
    ) -> Result<(), CallError> {
        self.call("deprovision", move |plugin, store| {
            plugin
                .replicante_platform_provider()
                .call_deprovision(store, &request)
        })
        .await
    }

    async fn call<R, F>(self: &Arc<Self>, operation: &'static str, f: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(
                &super::bindings::Plugin,
                &mut Store<CallState>,
            ) -> wasmtime::Result<Result<R, wit::Error>>
            + Send
            + 'static,
    {
        let timeout = self.limits.timeout;
        let deadline = Instant::now() + timeout;
        // Waiting for a slot counts against the call's deadline.
        let permit = tokio::time::timeout(timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| CallError::Busy(self.limits.concurrency))?
            .map_err(|_| CallError::Host("backend is shut down".into()))?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.call_blocking(operation, deadline, f)
        })
        .await
        .map_err(|e| CallError::Host(format!("the call's thread failed: {e}")))?
    }

    fn call_blocking<R, F>(
        &self,
        operation: &'static str,
        deadline: Instant,
        f: F,
    ) -> Result<R, CallError>
    where
        F: FnOnce(
            &super::bindings::Plugin,
            &mut Store<CallState>,
        ) -> wasmtime::Result<Result<R, wit::Error>>,
    {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let data = CallState {
            wasi,
            table: wasmtime::component::ResourceTable::new(),
            limiter: MemoryLimiter {
                limits: StoreLimitsBuilder::new()
                    .memory_size(self.limits.memory)
                    .build(),
                refused: false,
            },
            settings: self.settings.clone(),
            logging: Logging::new(self.id.clone()),
            state: PluginState::new(self.id.clone(), self.state.clone(), deadline),
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.limiter);
        // A deadline of n ticks fires between n-1 and n ticks after it is set: add one so the
        // plugin always gets its whole timeout.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let ticks = remaining.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();

        let result = self
            .prepared
            .pre
            .instantiate(&mut store)
            .and_then(|plugin| f(&plugin, &mut store));

        let output = stderr.contents();
        if !output.is_empty() {
            let text = String::from_utf8_lossy(&output);
            tracing::warn!(target: "plugin", backend = %self.id, operation, "stderr: {}", text.trim_end());
        }
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(CallError::Plugin(error)),
            Err(error) => Err(self.classify(error, store.data().limiter.refused, operation)),
        }
    }

    fn classify(&self, error: wasmtime::Error, memory_refused: bool, operation: &str) -> CallError {
        let trap = error.downcast_ref::<Trap>().copied();
        let classified = match trap {
            Some(Trap::Interrupt) => CallError::Timeout(self.limits.timeout),
            _ if memory_refused => CallError::OutOfMemory(self.limits.memory),
            Some(trap) => CallError::Trap(trap.to_string()),
            None => CallError::Host(error.root_cause().to_string()),
        };
        // The full error (with the guest backtrace) is for the operator's log only.
        tracing::warn!(backend = %self.id, operation, "call failed: {error:?}");
        classified
    }
}
