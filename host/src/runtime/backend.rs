//! A loaded backend and the way one call runs: wait for a slot (or refuse when the queue is
//! full), build a fresh store with the memory cap and deadline, instantiate, call, check the
//! size of the answer, classify what went wrong, drop the store.
//!
//! Calls run as tasks of the async runtime, not on threads of their own: guest code yields to
//! the runtime at every epoch tick (so a plugin that computes for long never holds a worker),
//! and the same deadline stops it, whether it computes or waits in a host call (a WASI sleep,
//! an outbound HTTP request, a state operation on etcd): the whole call is a future under
//! `tokio::time::timeout`, dropped when time is up. Host work that blocks (the embedded store)
//! goes to the blocking pool where it is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::Instrument;
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;

use super::config::BackendConfig;
use super::limits::Limits;
use super::{CallState, EPOCH_TICK, Prepared};
use crate::capability::call::{CallContext, Mode};
use crate::capability::http::{Allowlist, OutboundHttp};
use crate::capability::state::{PluginState, Quotas};
use crate::capability::stdio::Capture;
use crate::capability::{logging::Logging, redact, settings::Settings};
use crate::contract::{Answer, Contract, Operation};
use crate::metrics::{GaugeGuard, Metrics};
use crate::model::{
    BackendId, Cluster, DeprovisionRequest, ProviderError, ProvisionRequest, ProvisionResponse,
};
use crate::recording::{self, Build, Entry, RecordConfig, Recordings};
use crate::state::{StateStore, Usage};
use serde_json::json;

/// An operation's request as a recording holds it.
fn request_json(operation: &Operation) -> serde_json::Value {
    match operation {
        Operation::Discover => serde_json::Value::Null,
        Operation::Provision(request) => recording::provision_json(request),
        Operation::Deprovision(request) => recording::deprovision_json(request),
    }
}

/// How much of a plugin's stdout and of its stderr (panic messages) is kept per call and
/// logged; the rest is dropped.
const OUTPUT_CAPACITY: usize = 16 << 10;

/// How many host resources (streams, pollables, HTTP requests) one call may hold at once.
const MAX_RESOURCES: usize = 4096;

/// Why a call did not produce the plugin's answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin answered with an error of the contract.
    #[error("answered {}: {}", .0.case(), .0.message())]
    Plugin(ProviderError),
    /// The call ran past its deadline and was stopped.
    #[error("did not answer within {0:?}")]
    Timeout(Duration),
    /// The plugin tried to grow its memory past the backend's cap and died of it.
    #[error("ran out of memory (limit {0} bytes)")]
    OutOfMemory(usize),
    /// The plugin trapped (a panic, `unreachable`, a bad memory access).
    #[error("crashed: {0}")]
    Trap(String),
    /// The answer is larger than the backend may return.
    #[error("returned about {size} bytes, over its limit of {limit}")]
    TooLarge {
        /// The answer's approximate size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Every call slot is busy and the queue is full, or stayed busy until the deadline.
    #[error("is busy: all {0} call slots are in use")]
    Busy(usize),
    /// Every instance slot of the runtime's pool is in use (by all backends together).
    #[error("could not be run now: every instance slot of the gateway is in use")]
    PoolExhausted,
    /// The host failed to run the call (no instance slot, an internal error).
    #[error("could not be run: {0}")]
    Host(String),
}

impl CallError {
    /// Whether the same call may well succeed if retried soon (answered with `Retry-After`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CallError::Busy(_)
                | CallError::PoolExhausted
                | CallError::Plugin(ProviderError::Unavailable { .. })
        )
    }

    /// When to retry, in seconds, if the plugin said.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            CallError::Plugin(ProviderError::Unavailable { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }

    /// The call's outcome as a metric label value.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallError::Plugin(ProviderError::InvalidRequest(_)) => "invalid_request",
            CallError::Plugin(ProviderError::NotFound(_)) => "not_found",
            CallError::Plugin(ProviderError::Conflict(_)) => "conflict",
            CallError::Plugin(ProviderError::Unsupported(_)) => "unsupported",
            CallError::Plugin(ProviderError::Unavailable { .. }) => "unavailable",
            CallError::Plugin(ProviderError::Internal(_)) => "internal",
            CallError::Timeout(_) => "timeout",
            CallError::OutOfMemory(_) => "out_of_memory",
            CallError::Trap(_) => "trap",
            CallError::TooLarge { .. } => "too_large",
            CallError::Busy(_) => "busy",
            CallError::PoolExhausted => "pool_exhausted",
            CallError::Host(_) => "host",
        }
    }
}

/// A call counted in the backend's queue (its slots' `waiting`) for as long as it lives, so a
/// caller that goes away while waiting leaves the queue too.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// Join the queue; how many were waiting before.
    fn join(count: &'a AtomicUsize) -> (Waiting<'a>, usize) {
        let ahead = count.fetch_add(1, Ordering::AcqRel);
        (Waiting(count), ahead)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a backend's calls are counted: the registry, and its slot gauges.
struct CallMetrics {
    metrics: Arc<Metrics>,
    in_flight: prometheus_client::metrics::gauge::Gauge,
    queued: prometheus_client::metrics::gauge::Gauge,
}

/// The store's resource limiter: `limits.memory` caps the sum of the instance's linear memories
/// (a component may have several, each of which `StoreLimits` alone would let grow to the cap),
/// remembering whether it refused memory, since a guest that cannot grow usually aborts with a
/// plain `unreachable` trap.
pub(super) struct MemoryLimiter {
    limits: StoreLimits,
    /// The cap on all memories together, in bytes.
    cap: usize,
    /// The bytes all memories hold now.
    total: usize,
    refused: bool,
    /// The largest total asked for, granted or not.
    wanted: usize,
}

impl MemoryLimiter {
    pub(super) fn new(cap: usize) -> MemoryLimiter {
        MemoryLimiter {
            limits: StoreLimitsBuilder::new().memory_size(cap).build(),
            cap,
            total: 0,
            refused: false,
            wanted: 0,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A new memory is announced as growing from 0 to its initial size, so the total counts
        // every memory the instance has.
        let total = self.total.saturating_add(desired.saturating_sub(current));
        let allowed = total <= self.cap && self.limits.memory_growing(current, desired, maximum)?;
        self.refused |= !allowed;
        self.wanted = self.wanted.max(total);
        if allowed {
            self.total = total;
        }
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

/// About how many bytes an answer takes once encoded for the client, to hold it to the
/// backend's `max_response`.
const PER_ITEM: usize = 16;

impl Answer {
    fn size(&self) -> usize {
        match self {
            Answer::Clusters(clusters) => clusters
                .iter()
                .map(|c| {
                    PER_ITEM
                        + c.cluster_id.len()
                        + c.nodes
                            .iter()
                            .map(|n| {
                                PER_ITEM
                                    + n.node_id.len()
                                    + n.agent_address.len()
                                    + n.node_class.as_ref().map_or(0, String::len)
                                    + n.node_group.as_ref().map_or(0, String::len)
                            })
                            .sum::<usize>()
                })
                .sum(),
            Answer::Provisioned(response) => response
                .node_ids
                .iter()
                .flatten()
                .map(|id| PER_ITEM + id.len())
                .sum(),
            Answer::Deprovisioned => 0,
        }
    }
}

/// A backend's call slots and the calls waiting for one; shared by the generations that keep
/// the backend's name and concurrency limit.
struct Slots {
    semaphore: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// A configured, loaded backend: its compiled plugin, settings, limits and call slots.
pub struct Backend {
    id: BackendId,
    namespace: Arc<str>,
    prepared: Prepared,
    engine: wasmtime::Engine,
    settings: Settings,
    secrets: Arc<Vec<String>>,
    http: Arc<Allowlist>,
    limits: Limits,
    slots: Arc<Slots>,
    state: Option<Arc<dyn StateStore>>,
    /// Its namespace's usage and write rate, counted against `limits.state`.
    usage: Arc<Usage>,
    metrics: CallMetrics,
    /// `stable`, or `candidate` for a backend's candidate (a label of its calls' metrics).
    version: &'static str,
    /// Where its live calls are recorded, within what bounds (`record`).
    recorder: Option<(Arc<Recordings>, RecordConfig)>,
}

impl Backend {
    /// A backend from its config and its prepared component; its calls are counted in
    /// `metrics`. Without a state store (`check`) it can be probed but its plugin finds its
    /// state unavailable.
    pub fn new(
        config: &BackendConfig,
        prepared: Prepared,
        engine: &wasmtime::Engine,
        state: Option<Arc<dyn StateStore>>,
        metrics: &Arc<Metrics>,
    ) -> Backend {
        let (in_flight, queued) = metrics.slot_gauges(config.name.as_str());
        Backend {
            id: config.name.clone(),
            namespace: config.state_namespace.as_str().into(),
            prepared,
            engine: engine.clone(),
            settings: Settings::new(&config.settings),
            secrets: Arc::new(crate::capability::secret_forms(&config.secrets)),
            http: config.grants.http.clone().unwrap_or_default(),
            limits: config.limits.clone(),
            slots: Arc::new(Slots {
                semaphore: Arc::new(Semaphore::new(config.limits.concurrency)),
                waiting: AtomicUsize::new(0),
            }),
            state,
            usage: Arc::new(Usage::new()),
            metrics: CallMetrics {
                metrics: metrics.clone(),
                in_flight,
                queued,
            },
            version: "stable",
            recorder: None,
        }
    }

    /// The same backend, its live calls recorded in `recordings` within `bounds`.
    pub fn recorded_in(mut self, recordings: Arc<Recordings>, bounds: RecordConfig) -> Backend {
        self.recorder = Some((recordings, bounds));
        self
    }

    /// The same backend as its candidate: its calls are counted as the candidate's.
    pub fn into_candidate(mut self) -> Backend {
        self.version = "candidate";
        self
    }

    /// `stable`, or `candidate` for a backend's candidate.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// Count a call that ended `elapsed` after it asked for a slot.
    fn record<R>(&self, operation: &'static str, result: &Result<R, CallError>, started: Instant) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) => error.outcome(),
        };
        self.metrics.metrics.record_version_call(
            self.id.as_str(),
            self.version,
            operation,
            outcome,
            started.elapsed(),
        );
    }

    /// Take over `previous`'s call slots when the concurrency limit is unchanged, so that calls
    /// still running on an older generation count against the limit.
    pub fn share_slots_with(&mut self, previous: &Backend) {
        if previous.limits.concurrency == self.limits.concurrency {
            self.slots = previous.slots.clone();
        }
    }

    /// Take over `previous`'s count of the state namespace they share, so that a reload
    /// neither forgets the write rate nor counts the namespace anew.
    pub fn share_state_usage_with(&mut self, previous: &Backend) {
        if previous.namespace == self.namespace {
            self.usage = previous.usage.clone();
        }
    }

    /// The backend's name.
    pub fn id(&self) -> &BackendId {
        &self.id
    }

    /// The namespace of its durable state.
    pub fn state_namespace(&self) -> &str {
        &self.namespace
    }

    /// `sha256:<hex>` of its plugin file.
    pub fn digest(&self) -> &str {
        &self.prepared.digest
    }

    /// The contract version its plugin implements.
    pub fn contract(&self) -> Contract {
        self.prepared.contract()
    }

    /// The backend's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Every cluster and node the backend reports.
    pub async fn discover(self: &Arc<Self>) -> Result<Vec<Cluster>, CallError> {
        self.discover_in(CallContext::live()).await
    }

    /// Provision nodes.
    pub async fn provision(
        self: &Arc<Self>,
        request: ProvisionRequest,
    ) -> Result<ProvisionResponse, CallError> {
        self.provision_in(request, CallContext::live()).await
    }

    /// Deprovision a node.
    pub async fn deprovision(
        self: &Arc<Self>,
        request: DeprovisionRequest,
    ) -> Result<(), CallError> {
        self.deprovision_in(request, CallContext::live()).await
    }

    /// [`Backend::discover`] in `call`'s mode, into its transcript.
    pub async fn discover_in(
        self: &Arc<Self>,
        call: Arc<CallContext>,
    ) -> Result<Vec<Cluster>, CallError> {
        match self.call(Operation::Discover, call).await? {
            Answer::Clusters(clusters) => Ok(clusters),
            _ => Err(mismatch()),
        }
    }

    /// [`Backend::provision`] in `call`'s mode, into its transcript.
    pub async fn provision_in(
        self: &Arc<Self>,
        request: ProvisionRequest,
        call: Arc<CallContext>,
    ) -> Result<ProvisionResponse, CallError> {
        match self.call(Operation::Provision(request), call).await? {
            Answer::Provisioned(response) => Ok(response),
            _ => Err(mismatch()),
        }
    }

    /// [`Backend::deprovision`] in `call`'s mode, into its transcript.
    pub async fn deprovision_in(
        self: &Arc<Self>,
        request: DeprovisionRequest,
        call: Arc<CallContext>,
    ) -> Result<(), CallError> {
        match self.call(Operation::Deprovision(request), call).await? {
            Answer::Deprovisioned => Ok(()),
            _ => Err(mismatch()),
        }
    }

    /// Run one operation in a fresh sandbox, on a call slot, under the deadline, in `call`'s
    /// mode.
    async fn call(
        self: &Arc<Self>,
        operation: Operation,
        call: Arc<CallContext>,
    ) -> Result<Answer, CallError> {
        let name = operation.name();
        // A live call of a recorded backend keeps its tape, and its request for the entry.
        let (call, recorded) = match &self.recorder {
            Some(_) if call.mode() == Mode::Live && !call.records() => {
                (CallContext::taped(), Some(request_json(&operation)))
            }
            _ => (call, None),
        };
        let timeout = self.limits.timeout;
        let started = Instant::now();
        let deadline = started + timeout;
        let permit = match self.wait_for_slot(timeout).await {
            Ok(permit) => permit,
            Err(error) => {
                let error = Err(error);
                self.record(name, &error, started);
                return error;
            }
        };
        let in_flight = GaugeGuard::hold(&self.metrics.in_flight);
        let this = self.clone();
        // The call logs inside the request's span (its trace ID reaches the plugin's log
        // lines) and a span of its own. It is a task of its own so that it runs to its end, and
        // is counted, even if the request that asked for it goes away: a provision is never cut
        // in half by a client hanging up.
        let span = tracing::info_span!("plugin_call", backend = %self.id, operation = name);
        tokio::spawn(
            async move {
                let _slot = (permit, in_flight);
                let result = this.run(operation, deadline, call.clone()).await;
                // A replay is not traffic: it is not counted with the backend's calls.
                if call.mode() != Mode::Replay {
                    this.record(name, &result, started);
                }
                if let Some(request) = recorded {
                    this.keep(name, request, &result, &call, started);
                }
                result
            }
            .instrument(span),
        )
        .await
        .unwrap_or_else(|e| {
            let error = Err(CallError::Host(format!("the call's task failed: {e}")));
            self.record(name, &error, started);
            error
        })
    }

    /// Write a recorded call's entry, redacted, to the backend's ring.
    fn keep(
        &self,
        operation: &'static str,
        request: serde_json::Value,
        result: &Result<Answer, CallError>,
        call: &CallContext,
        started: Instant,
    ) {
        let Some((recordings, bounds)) = &self.recorder else {
            return;
        };
        let redact = |text: &str| self.redact(text);
        // A taped call's transcript holds its effects and log lines; its reads and listings are
        // in the tape, with what they found (see `CallContext::read`).
        let transcript = call.transcript().redacted(redact);
        let tape = call.tape_record().unwrap_or_default().redacted(&redact);
        recordings.record(
            Entry {
                format: recording::FORMAT,
                seq: 0,
                at: recording::now(),
                backend: self.id.to_string(),
                operation: operation.to_string(),
                request: self.redacted_json(&request),
                answer: self.answer_json(result),
                build: Build {
                    digest: self.digest().to_string(),
                    contract: self.contract().version().to_string(),
                    version: self.version.to_string(),
                },
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                events: transcript.events,
                dropped_events: transcript.dropped,
                tape,
            },
            *bounds,
        );
    }

    /// What a call answered as a recording holds it (`{"ok": ...}`, or `{"error": {"case",
    /// "message"}}` with the host's outcome as the case of a failure that is not the plugin's),
    /// the backend's secrets cut out. A replay compares its own with the recorded one.
    pub(crate) fn answer_json(&self, result: &Result<Answer, CallError>) -> serde_json::Value {
        let answer = match result {
            Ok(Answer::Clusters(clusters)) => json!({ "ok": recording::clusters_json(clusters) }),
            Ok(Answer::Provisioned(response)) => {
                json!({ "ok": recording::provisioned_json(response) })
            }
            Ok(Answer::Deprovisioned) => json!({ "ok": null }),
            Err(CallError::Plugin(error)) => {
                recording::error_json(error.case(), error.message(), Some(error))
            }
            Err(other) => recording::error_json(other.outcome(), &other.to_string(), None),
        };
        self.redacted_json(&answer)
    }

    /// `value` with the backend's secrets cut out of its text (requests and answers are the
    /// client's and the plugin's: a secret may be in either).
    fn redacted_json(&self, value: &serde_json::Value) -> serde_json::Value {
        serde_json::from_str(&self.redact(&value.to_string())).unwrap_or(serde_json::Value::Null)
    }

    /// A call slot; waiting counts against the deadline, and when the queue of waiting calls is
    /// full the call is refused at once.
    async fn wait_for_slot(
        &self,
        timeout: Duration,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, CallError> {
        let busy = CallError::Busy(self.limits.concurrency);
        if let Ok(permit) = self.slots.semaphore.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let (_waiting, ahead) = Waiting::join(&self.slots.waiting);
        if ahead >= self.limits.queue {
            self.metrics
                .metrics
                .record_refused(self.id.as_str(), "queue_full");
            return Err(busy);
        }
        let _queued = GaugeGuard::hold(&self.metrics.queued);
        let permit =
            tokio::time::timeout(timeout, self.slots.semaphore.clone().acquire_owned()).await;
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(CallError::Host("backend is shut down".into())),
            Err(_) => {
                self.metrics
                    .metrics
                    .record_refused(self.id.as_str(), "queue_timeout");
                Err(busy)
            }
        }
    }

    async fn run(
        &self,
        operation: Operation,
        deadline: Instant,
        call: Arc<CallContext>,
    ) -> Result<Answer, CallError> {
        let name = operation.name();
        let (mut store, stdout, stderr) = self.store(deadline, call);
        let remaining = deadline.saturating_duration_since(Instant::now());

        // Host calls that wait are stopped by the timeout, which drops the whole call.
        let outcome = tokio::time::timeout(
            remaining + EPOCH_TICK,
            self.prepared.pre.invoke(&mut store, operation),
        )
        .await;
        let operation = name;

        // stderr is where a plugin's panic message goes; stdout is what `print` and
        // `console.log` write in Python and JavaScript plugins: both reach the log.
        if let Some(text) = stderr.text(&self.secrets) {
            tracing::warn!(target: "plugin", backend = %self.id, operation, "stderr: {text}");
        }
        if let Some(text) = stdout.text(&self.secrets) {
            tracing::info!(target: "plugin", backend = %self.id, operation, "stdout: {text}");
        }
        match outcome {
            Err(_elapsed) => {
                tracing::warn!(backend = %self.id, operation, "call stopped at its deadline while waiting in a host call");
                Err(CallError::Timeout(self.limits.timeout))
            }
            Ok(Ok(Ok(answer))) => {
                let size = answer.size();
                if size > self.limits.max_response {
                    return Err(CallError::TooLarge {
                        size,
                        limit: self.limits.max_response,
                    });
                }
                Ok(answer)
            }
            Ok(Ok(Err(error))) => Err(CallError::Plugin(self.redacted(error))),
            Ok(Err(error)) => Err(self.classify(error, store.data().limiter.refused, operation)),
        }
    }

    /// A fresh store for one call ending at `deadline` in `call`'s mode, with the call's stdout
    /// and stderr.
    fn store(
        &self,
        deadline: Instant,
        call: Arc<CallContext>,
    ) -> (Store<CallState>, Capture, Capture) {
        let (stdout, stderr) = (Capture::new(OUTPUT_CAPACITY), Capture::new(OUTPUT_CAPACITY));
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let mut table = wasmtime::component::ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let data = CallState {
            wasi,
            table,
            limiter: MemoryLimiter::new(self.limits.memory),
            settings: self.settings.clone(),
            logging: Logging::new(
                self.id.clone(),
                self.secrets.clone(),
                Some(self.metrics.metrics.clone()),
            )
            .in_call(call.clone()),
            state: PluginState::new(
                self.namespace.clone(),
                self.state.clone(),
                deadline,
                Quotas {
                    quota: self.limits.state,
                    usage: self.usage.clone(),
                    backend: self.id.clone(),
                    metrics: self.metrics.metrics.clone(),
                },
            )
            .in_call(call.clone()),
            http: OutboundHttp::new(
                self.id.clone(),
                self.http.clone(),
                self.secrets.clone(),
                deadline,
                self.limits.max_response,
            )
            .in_call(call),
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.limiter);
        // What one host call may copy out of the guest is bounded by the guest's own memory
        // limit, so the host never allocates more for a call than the backend may use.
        store.set_hostcall_fuel(self.limits.memory);
        // Guest code yields to the runtime at every epoch tick, and is stopped at the first
        // tick past the deadline.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        (store, stdout, stderr)
    }

    /// Instantiate the plugin once, as a call would, without calling it: a plugin that cannot
    /// start within its limits (its memories at start are larger than `limits.memory`, its
    /// shape does not fit the instance pool, its start traps) is refused at load rather than
    /// failing every call. Instance slots all in use meanwhile are not the plugin's fault and
    /// pass.
    pub fn probe(&self) -> Result<(), String> {
        let deadline = Instant::now() + self.limits.timeout;
        let (mut store, _stdout, stderr) = self.store(deadline, CallContext::live());
        let started = futures::executor::block_on(self.prepared.pre.instantiate(&mut store));
        let error = match started {
            Ok(()) => return Ok(()),
            Err(e) if e.is::<wasmtime::PoolConcurrencyLimitError>() => return Ok(()),
            Err(e) => e,
        };
        let limiter = &store.data().limiter;
        if limiter.refused {
            return Err(format!(
                "the plugin needs {} of memory to start, over its `limits.memory` of {}",
                bytesize::ByteSize(limiter.wanted as u64),
                bytesize::ByteSize(self.limits.memory as u64)
            ));
        }
        let output = stderr
            .text(&self.secrets)
            .map(|text| format!(" (stderr: {text})"))
            .unwrap_or_default();
        Err(format!(
            "the plugin cannot start: {}{output}",
            redact(&format!("{error:#}"), &self.secrets)
        ))
    }

    /// `text` (from the plugin: an ID in an answer, say) with the backend's secrets cut out.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.secrets)
    }

    /// The plugin's error with the backend's secrets cut out.
    fn redacted(&self, error: ProviderError) -> ProviderError {
        error.map_message(|m| redact(&m, &self.secrets))
    }

    fn classify(&self, error: wasmtime::Error, memory_refused: bool, operation: &str) -> CallError {
        let trap = error.downcast_ref::<Trap>().copied();
        let classified = match trap {
            Some(Trap::Interrupt) => CallError::Timeout(self.limits.timeout),
            None if error.is::<wasmtime::PoolConcurrencyLimitError>() => {
                return CallError::PoolExhausted;
            }
            _ if memory_refused => CallError::OutOfMemory(self.limits.memory),
            Some(trap) => CallError::Trap(trap.to_string()),
            None => CallError::Host(redact(&error.root_cause().to_string(), &self.secrets)),
        };
        // The full error (with the guest backtrace) is for the operator's log only; a host
        // error may quote what the plugin passed.
        let details = redact(&format!("{error:?}"), &self.secrets);
        tracing::warn!(backend = %self.id, operation, "call failed: {details}");
        classified
    }
}

/// A plugin's answer of the wrong kind for its operation: [`crate::contract`] pairs them, so
/// this is the gateway's bug, never the plugin's.
fn mismatch() -> CallError {
    CallError::Host("the plugin's answer does not match its operation".into())
}

#[cfg(test)]
mod tests {
    use super::MemoryLimiter;
    use wasmtime::component::{Component, Linker};
    use wasmtime::{Engine, Store};

    /// A component of two core modules, each with a memory of `pages` 64 KiB pages.
    fn two_memories(pages: u32) -> Vec<u8> {
        wat::parse_str(format!(
            "(component
               (core module $a (memory (export \"m\") {pages}))
               (core module $b (memory (export \"m\") {pages}))
               (core instance (instantiate $a))
               (core instance (instantiate $b)))"
        ))
        .unwrap()
    }

    fn instantiate(cap: usize, pages: u32) -> (bool, MemoryLimiter) {
        let engine = Engine::default();
        let component = Component::new(&engine, two_memories(pages)).unwrap();
        let mut store = Store::new(&engine, MemoryLimiter::new(cap));
        store.limiter(|limiter| limiter);
        let started = Linker::new(&engine)
            .instantiate(&mut store, &component)
            .is_ok();
        (started, store.into_data())
    }

    #[test]
    fn the_memory_cap_holds_for_all_of_an_instances_memories_together() {
        // Two memories of 640 KiB: each is under a 1 MiB cap, together they are over it.
        let (started, limiter) = instantiate(1 << 20, 10);
        assert!(
            !started,
            "two memories of 640 KiB started under a 1 MiB cap"
        );
        assert!(limiter.refused);
        assert_eq!(limiter.wanted, 20 << 16);
        // Under a cap that holds both, the same component starts.
        let (started, limiter) = instantiate(2 << 20, 10);
        assert!(started);
        assert_eq!(limiter.total, 20 << 16);
    }
}
