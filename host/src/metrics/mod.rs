//! Metrics: one Prometheus registry per gateway and the families in it, named after the
//! Prometheus conventions (`platform_gateway_` prefix, `_total` counters, base units).
//!
//! Every label value is bounded: endpoints are matched route paths, backends come from the
//! config, operations, outcomes and state operations are fixed sets. [`api::metrics`] serves
//! the registry at `GET /metrics` on the admin listener; [`MeteredStore`] times the state store.
//!
//! [`api::metrics`]: crate::api::metrics

pub mod activity;
mod store;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub use store::MeteredStore;

/// The `Content-Type` of [`Metrics::encode_prometheus`].
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The `Content-Type` of [`Metrics::encode_openmetrics`].
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label value of requests that matched no route (unknown paths), so that scanners cannot
/// create a series per path they try.
pub const UNMATCHED: &str = "unmatched";

/// Latency buckets for HTTP requests and plugin calls, in seconds: 1 ms to 30 s.
const CALL_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// State store operations, in seconds: 50 us to 5 s.
const STATE_BUCKETS: [f64; 13] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 5.0,
];
/// Building a generation, in seconds: 10 ms (all cached) to 2 minutes (cold compiles).
const BUILD_BUCKETS: [f64; 11] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0,
];

fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

fn state_histogram() -> Histogram {
    Histogram::new(STATE_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// A request to one of the gateway's endpoints.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    backend: String,
    operation: &'static str,
    outcome: &'static str,
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    backend: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    backend: String,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    backend: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateErrorLabels {
    operation: &'static str,
    kind: &'static str,
}

/// What the gateway measures, and the registry that exposes it. Cheap to share (`Arc`); every
/// method takes `&self`.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<EndpointLabels, Histogram>,
    plugin_calls: Family<CallLabels, Counter>,
    plugin_duration: Family<OperationLabels, Histogram>,
    in_flight: Family<BackendLabels, Gauge>,
    queued: Family<BackendLabels, Gauge>,
    refused: Family<RefusedLabels, Counter>,
    invalid_answers: Family<OperationLabels, Counter>,
    generation: Gauge,
    reloads: Family<OutcomeLabels, Counter>,
    build_duration: Histogram,
    cache_bytes: Gauge,
    state_duration: Family<StateLabels, Histogram>,
    state_errors: Family<StateErrorLabels, Counter>,
    state_refusals: Family<RefusedLabels, Counter>,
    ownership_records: Gauge,
    discovery_conflicts: Counter,
    plugin_log_dropped: Family<BackendLabels, Counter>,
    log_lines_dropped: Counter,
    unknown_fields: Counter,
    state_commits: Counter,
    state_committed_writes: Counter,
    shadow_discoveries: Family<ShadowLabels, Counter>,
    candidate_rollbacks: Family<RefusedLabels, Counter>,
    candidate_weight: Family<BackendLabels, Gauge>,
    /// Each backend's recent calls, for the admin API.
    activity: activity::Activity,
    /// The store's own commit counts, read at each scrape (set by [`MeteredStore::wrap`]).
    commit_counts: std::sync::OnceLock<std::sync::Arc<crate::state::CommitCounts>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family of the gateway, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("platform_gateway");
        let metrics = Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(call_histogram),
            plugin_calls: Family::default(),
            plugin_duration: Family::new_with_constructor(call_histogram),
            in_flight: Family::default(),
            queued: Family::default(),
            refused: Family::default(),
            invalid_answers: Family::default(),
            generation: Gauge::default(),
            reloads: Family::default(),
            build_duration: Histogram::new(BUILD_BUCKETS),
            cache_bytes: Gauge::default(),
            state_duration: Family::new_with_constructor(state_histogram),
            state_errors: Family::default(),
            state_refusals: Family::default(),
            ownership_records: Gauge::default(),
            discovery_conflicts: Counter::default(),
            plugin_log_dropped: Family::default(),
            log_lines_dropped: Counter::default(),
            unknown_fields: Counter::default(),
            state_commits: Counter::default(),
            state_committed_writes: Counter::default(),
            shadow_discoveries: Family::default(),
            candidate_rollbacks: Family::default(),
            candidate_weight: Family::default(),
            activity: activity::Activity::default(),
            commit_counts: std::sync::OnceLock::new(),
            registry: Registry::default(),
        };
        let build_info: Family<BuildLabels, Gauge> = Family::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "The gateway's version, as a label; always 1",
            build_info,
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by endpoint (the matched route, `unmatched` for unknown paths), method and status",
            metrics.http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (until the response head), by endpoint and method",
            Unit::Seconds,
            metrics.http_duration.clone(),
        );
        registry.register(
            "plugin_calls",
            "Plugin calls by backend, operation, outcome (ok, invalid_request, not_found, conflict, unavailable, internal, trap, timeout, out_of_memory, too_large, busy, host) and version (stable, candidate)",
            metrics.plugin_calls.clone(),
        );
        registry.register(
            "shadow_discoveries",
            "A candidate's shadow discoveries compared with the stable one, by backend and result (same, different, failed)",
            metrics.shadow_discoveries.clone(),
        );
        registry.register(
            "candidate_rollbacks",
            "Candidates rolled back by this replica, by backend and reason (error_rate, divergence)",
            metrics.candidate_rollbacks.clone(),
        );
        registry.register(
            "candidate_weight",
            "The percent of clusters whose provisions go to the backend's candidate now (0: none, or rolled back)",
            metrics.candidate_weight.clone(),
        );
        registry.register_with_unit(
            "plugin_call_duration",
            "Time of a plugin call from asking for a call slot to the answer, by backend and operation",
            Unit::Seconds,
            metrics.plugin_duration.clone(),
        );
        registry.register(
            "plugin_calls_in_flight",
            "Plugin calls running now (holding a call slot), by backend",
            metrics.in_flight.clone(),
        );
        registry.register(
            "plugin_calls_queued",
            "Plugin calls waiting for a call slot now, by backend",
            metrics.queued.clone(),
        );
        registry.register(
            "plugin_calls_refused",
            "Plugin calls refused for capacity, by backend and reason (queue_full: refused at once; queue_timeout: no slot before the deadline)",
            metrics.refused.clone(),
        );
        registry.register(
            "plugin_invalid_answers",
            "Plugin answers that broke the contract (empty or repeated IDs, a count that disagrees with the node IDs...), by backend and operation",
            metrics.invalid_answers.clone(),
        );
        registry.register(
            "generation",
            "The number of the generation being served (0 while the first one loads)",
            metrics.generation.clone(),
        );
        registry.register(
            "reloads",
            "Reloads by outcome (ok, refused)",
            metrics.reloads.clone(),
        );
        registry.register_with_unit(
            "generation_build_duration",
            "Time to compile (or fetch from the cache) and load every backend of a generation",
            Unit::Seconds,
            metrics.build_duration.clone(),
        );
        registry.register_with_unit(
            "compiled_cache",
            "Size of the on-disk compiled-plugin cache after its last trim",
            Unit::Bytes,
            metrics.cache_bytes.clone(),
        );
        registry.register_with_unit(
            "state_operation_duration",
            "Time of a state store operation, by operation",
            Unit::Seconds,
            metrics.state_duration.clone(),
        );
        registry.register(
            "state_errors",
            "Failed state store operations, by operation and kind (unavailable, storage, too_large)",
            metrics.state_errors.clone(),
        );
        registry.register(
            "state_quota_refusals",
            "Plugin state operations refused by the backend's state quotas, by backend and reason (keys, bytes, value_size, write_rate, list_size)",
            metrics.state_refusals.clone(),
        );
        registry.register(
            "ownership_records",
            "Records in the ownership index, counted by the upkeep pass that follows each discovery",
            metrics.ownership_records.clone(),
        );
        registry.register(
            "discovery_conflicts",
            "Node IDs that several backends reported in one cluster, counted once per discovery that saw them",
            metrics.discovery_conflicts.clone(),
        );
        registry.register(
            "plugin_log_dropped",
            "Plugin log messages dropped for going over a call's log allowance, by backend",
            metrics.plugin_log_dropped.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log writer's buffer was full (stderr not keeping up)",
            metrics.log_lines_dropped.clone(),
        );
        registry.register(
            "state_commits",
            "Durable commits of the embedded state store (each one fsync)",
            metrics.state_commits.clone(),
        );
        registry.register(
            "state_committed_writes",
            "Writes carried by the embedded store's commits: above the commits when concurrent \
             writes shared one (group commit)",
            metrics.state_committed_writes.clone(),
        );
        registry.register(
            "request_unknown_fields",
            "Fields of request bodies that the gateway does not know and ignored",
            metrics.unknown_fields.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// `count` fields of one request body ignored as unknown.
    pub fn record_unknown_fields(&self, count: u64) {
        self.unknown_fields.inc_by(count);
    }

    /// `count` log messages of `backend`'s plugin dropped in one call.
    pub fn record_plugin_log_dropped(&self, backend: &str, count: u64) {
        self.plugin_log_dropped
            .get_or_create(&BackendLabels {
                backend: backend.to_string(),
            })
            .inc_by(count);
    }

    /// Bring the dropped log lines counter up to what the log writer counted.
    fn sync_log_lines_dropped(&self) {
        let now = crate::telemetry::dropped_log_lines();
        let seen = self.log_lines_dropped.get();
        if now > seen {
            self.log_lines_dropped.inc_by(now - seen);
        }
    }

    /// Read the state store's commit counts from `counts` at each scrape.
    pub fn follow_commits(&self, counts: std::sync::Arc<crate::state::CommitCounts>) {
        let _ = self.commit_counts.set(counts);
    }

    /// Bring the commit counters up to what the store counted.
    fn sync_commits(&self) {
        if let Some(counts) = self.commit_counts.get() {
            let (commits, writes) = counts.get();
            for (counter, now) in [
                (&self.state_commits, commits),
                (&self.state_committed_writes, writes),
            ] {
                let seen = counter.get();
                if now > seen {
                    counter.inc_by(now - seen);
                }
            }
        }
    }

    /// Everything, in the Prometheus text format 0.0.4 ([`PROMETHEUS_TEXT`]).
    pub fn encode_prometheus(&self) -> String {
        self.sync_log_lines_dropped();
        self.sync_commits();
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// Everything, in the OpenMetrics text format ([`OPENMETRICS_TEXT`]).
    pub fn encode_openmetrics(&self) -> String {
        self.sync_log_lines_dropped();
        self.sync_commits();
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// An HTTP request answered with `status`. `endpoint` is the matched route ([`UNMATCHED`]
    /// for none); `method` a [`method_label`].
    pub fn record_request(
        &self,
        endpoint: &str,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        let endpoint = endpoint.to_string();
        self.http_requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.clone(),
                method,
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&EndpointLabels { endpoint, method })
            .observe(elapsed.as_secs_f64());
    }

    /// A call of a stable plugin that ended with `outcome`, `elapsed` after it asked for a slot.
    pub fn record_call(
        &self,
        backend: &str,
        operation: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.record_version_call(backend, "stable", operation, outcome, elapsed)
    }

    /// A plugin call of the backend's `version` (`stable` or `candidate`) that ended with
    /// `outcome`, `elapsed` after it asked for a slot.
    pub fn record_version_call(
        &self,
        backend: &str,
        version: &'static str,
        operation: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.plugin_calls
            .get_or_create(&CallLabels {
                backend: backend.to_string(),
                operation,
                outcome,
                version,
            })
            .inc();
        self.plugin_duration
            .get_or_create(&OperationLabels {
                backend: backend.to_string(),
                operation,
            })
            .observe(elapsed.as_secs_f64());
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.activity
            .record(backend, version == "candidate", outcome, elapsed, now_ms);
    }

    /// Each backend's recent calls (`GET /admin/activity`).
    pub fn activity(&self) -> &activity::Activity {
        &self.activity
    }

    /// `backend`'s calls now: (in flight, queued).
    pub fn slots_now(&self, backend: &str) -> (u64, u64) {
        let labels = BackendLabels {
            backend: backend.to_string(),
        };
        let read = |family: &Family<BackendLabels, Gauge>| {
            family
                .get(&labels)
                .map_or(0, |gauge| u64::try_from(gauge.get()).unwrap_or(0))
        };
        (read(&self.in_flight), read(&self.queued))
    }

    /// A call refused for capacity: `queue_full` or `queue_timeout`.
    pub fn record_refused(&self, backend: &str, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels {
                backend: backend.to_string(),
                reason,
            })
            .inc();
    }

    /// A plugin answer the gateway refused as breaking the contract.
    pub fn record_invalid_answer(&self, backend: &str, operation: &'static str) {
        self.invalid_answers
            .get_or_create(&OperationLabels {
                backend: backend.to_string(),
                operation,
            })
            .inc();
    }

    /// The gauges of a backend's call slots: (in flight, queued). Keep them; they are handles.
    pub fn slot_gauges(&self, backend: &str) -> (Gauge, Gauge) {
        let labels = BackendLabels {
            backend: backend.to_string(),
        };
        (
            self.in_flight.get_or_create_owned(&labels),
            self.queued.get_or_create_owned(&labels),
        )
    }

    /// The generation being served.
    pub fn set_generation(&self, number: u64) {
        self.generation
            .set(i64::try_from(number).unwrap_or(i64::MAX));
    }

    /// A reload's outcome: `ok` or `refused`.
    pub fn record_reload(&self, outcome: &'static str) {
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The time a generation took to build.
    pub fn record_build(&self, elapsed: Duration) {
        self.build_duration.observe(elapsed.as_secs_f64());
    }

    /// The compiled cache's size on disk.
    pub fn set_cache_bytes(&self, bytes: u64) {
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The gauge of the ownership index's size, for the upkeep that counts it.
    pub fn ownership_records(&self) -> Gauge {
        self.ownership_records.clone()
    }

    /// Conflicting node IDs one discovery saw.
    pub fn record_conflicts(&self, count: usize) {
        self.discovery_conflicts.inc_by(count as u64);
    }

    /// A state store operation, and its error kind if it failed.
    pub fn record_state(
        &self,
        operation: &'static str,
        elapsed: Duration,
        error: Option<&'static str>,
    ) {
        self.state_duration
            .get_or_create(&StateLabels { operation })
            .observe(elapsed.as_secs_f64());
        if let Some(kind) = error {
            self.state_errors
                .get_or_create(&StateErrorLabels { operation, kind })
                .inc();
        }
    }

    /// A shadow discovery of `backend`'s candidate: `same`, `different` or `failed`.
    pub fn record_shadow(&self, backend: &str, result: &'static str) {
        self.shadow_discoveries
            .get_or_create(&ShadowLabels {
                backend: backend.to_string(),
                result,
            })
            .inc();
    }

    /// `backend`'s candidate was rolled back for `reason` (`error_rate`, `divergence`).
    pub fn record_rollback(&self, backend: &str, reason: &'static str) {
        self.candidate_rollbacks
            .get_or_create(&RefusedLabels {
                backend: backend.to_string(),
                reason,
            })
            .inc();
    }

    /// The percent of `backend`'s clusters its candidate serves now.
    pub fn set_candidate_weight(&self, backend: &str, weight: u8) {
        self.candidate_weight
            .get_or_create(&BackendLabels {
                backend: backend.to_string(),
            })
            .set(i64::from(weight));
    }

    /// A plugin's state operation refused by its backend's quotas: `keys`, `bytes`,
    /// `value_size`, `write_rate` or `list_size`.
    pub fn record_state_refusal(&self, backend: &str, reason: &'static str) {
        self.state_refusals
            .get_or_create(&RefusedLabels {
                backend: backend.to_string(),
                reason,
            })
            .inc();
    }
}

/// The label value of an HTTP method: the methods the gateway serves by name, every other one
/// `other` (a client can send any token as a method).
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Increments a gauge while it lives: a call in flight, a call in the queue. Dropping it (the
/// call ended, or its caller went away) takes the count back.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    /// Count one more on `gauge` until the guard is dropped.
    pub fn hold(gauge: &Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(metrics: &Metrics) -> prometheus_parse::Scrape {
        let text = metrics.encode_prometheus();
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
    }

    fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<_> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .collect();
        assert_eq!(matching.len(), 1, "{name} {labels:?}: {matching:?}");
        match &matching[0].value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{name} is not a single value: {other:?}"),
        }
    }

    #[test]
    fn the_prometheus_text_parses_with_types_names_and_labels_as_recorded() {
        let metrics = Metrics::new();
        metrics.record_request("/provision", "POST", 200, Duration::from_millis(3));
        metrics.record_request("/provision", "POST", 200, Duration::from_millis(30));
        metrics.record_request("/provision", "POST", 503, Duration::from_millis(1));
        metrics.record_call("pool", "provision", "ok", Duration::from_millis(2));
        metrics.record_call("pool", "provision", "timeout", Duration::from_secs(2));
        metrics.set_generation(7);
        let scrape = scrape(&metrics);
        let ok = [
            ("endpoint", "/provision"),
            ("method", "POST"),
            ("status", "200"),
        ];
        assert_eq!(
            value(&scrape, "platform_gateway_http_requests_total", &ok),
            2.0
        );
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == "platform_gateway_http_requests_total")
            .unwrap();
        assert!(matches!(sample.value, prometheus_parse::Value::Counter(_)));
        let timeouts = [("backend", "pool"), ("outcome", "timeout")];
        assert_eq!(
            value(&scrape, "platform_gateway_plugin_calls_total", &timeouts),
            1.0
        );
        assert_eq!(value(&scrape, "platform_gateway_generation", &[]), 7.0);
        let histogram = scrape
            .samples
            .iter()
            .find(|s| s.metric == "platform_gateway_plugin_call_duration_seconds")
            .expect("the histogram");
        let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
            panic!("not a histogram: {histogram:?}");
        };
        // Cumulative: the 2 ms call is under 5 ms, both are under +Inf.
        let under = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
        assert_eq!(under(0.001), 0.0);
        assert_eq!(under(0.005), 1.0);
        assert_eq!(under(f64::INFINITY), 2.0);
        assert_eq!(
            value(
                &scrape,
                "platform_gateway_plugin_call_duration_seconds_count",
                &[]
            ),
            2.0
        );
    }

    #[test]
    fn openmetrics_text_ends_with_eof_and_declares_units() {
        let metrics = Metrics::new();
        metrics.record_state("get", Duration::from_micros(80), None);
        metrics.record_request("/discover", "GET", 200, Duration::from_millis(1));
        let text = metrics.encode_openmetrics();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# UNIT platform_gateway_state_operation_duration_seconds seconds"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE platform_gateway_http_requests counter"),
            "{text}"
        );
        // Families without a series yet (no call was counted) are left out.
        assert!(!text.contains("plugin_calls"), "{text}");
    }

    #[test]
    fn a_gauge_guard_gives_its_count_back_when_dropped() {
        let metrics = Metrics::new();
        let (in_flight, queued) = metrics.slot_gauges("pool");
        let first = GaugeGuard::hold(&in_flight);
        let second = GaugeGuard::hold(&in_flight);
        assert_eq!(in_flight.get(), 2);
        drop(first);
        assert_eq!(in_flight.get(), 1);
        drop(second);
        assert_eq!((in_flight.get(), queued.get()), (0, 0));
        // The same backend's gauges are the same series.
        let (again, _) = metrics.slot_gauges("pool");
        let _held = GaugeGuard::hold(&again);
        assert_eq!(in_flight.get(), 1);
    }

    #[test]
    fn the_example_dashboard_queries_only_metrics_that_exist() {
        let metrics = Metrics::new();
        let second = Duration::from_secs(1);
        metrics.record_request("/discover", "GET", 200, second);
        metrics.record_call("pool", "discover", "ok", second);
        metrics.record_refused("pool", "queue_full");
        metrics.record_invalid_answer("pool", "discover");
        let _gauges = metrics.slot_gauges("pool");
        metrics.record_reload("ok");
        metrics.record_state("get", second, Some("storage"));
        metrics.record_shadow("pool", "different");
        metrics.record_rollback("pool", "error_rate");
        metrics.set_candidate_weight("pool", 10);
        let text = metrics.encode_prometheus();
        let exported: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let dashboard = include_str!("../../../examples/grafana-dashboard.json");
        let _: serde_json::Value = serde_json::from_str(dashboard).expect("the dashboard is JSON");
        let mut queried = 0;
        for (start, _) in dashboard.match_indices("platform_gateway_") {
            let name: String = dashboard[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exported.contains(name.as_str()),
                "the dashboard queries {name}"
            );
            queried += 1;
        }
        assert!(queried > 20, "{queried}");
    }

    #[test]
    fn unknown_methods_share_one_label_value() {
        let odd = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "other");
        assert_eq!(method_label(&http::Method::POST), "POST");
    }
}
