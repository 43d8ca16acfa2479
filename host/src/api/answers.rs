//! The admin API's answers as types: [`super::admin`] serves them and `platform-gateway status`
//! reads them, so a field renamed on one side cannot silently read as empty on the other.
//!
//! `GET /admin/generation` answers [`crate::reload::ReloadStatus`] and `POST /admin/route`
//! [`crate::routing::Explanation`]; the rest are here.

use serde::{Deserialize, Serialize};

use crate::config::{DiscoveryPolicy, Limits};
use crate::gateway::Generation;
use crate::routing::Route;

/// `GET /admin/backends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backends {
    /// The generation that serves them.
    pub generation: u64,
    /// Every backend, by name.
    pub backends: Vec<BackendInfo>,
}

/// One loaded backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Its name.
    pub name: String,
    /// Its plugin file.
    pub plugin: String,
    /// `sha256:...` of the plugin.
    pub digest: String,
    /// The contract version the plugin implements (`replicante:platform@0.2.0`).
    pub contract: String,
    /// Its limits.
    pub limits: LimitsInfo,
    /// Its candidate, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateInfo>,
}

/// A backend's candidate and its rollout, as this replica sees it (its calls and shadow
/// discoveries are this replica's; the verdict is every replica's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateInfo {
    /// Its plugin file.
    pub plugin: String,
    /// `sha256:...` of its plugin.
    pub digest: String,
    /// The contract version it implements.
    pub contract: String,
    /// `weight` as configured.
    pub configured_weight: u8,
    /// `steps` as configured.
    pub steps: Vec<u8>,
    /// The percent of clusters it serves now (0 once rolled back).
    pub weight: u8,
    /// `active`, `rolled-back` or `done` (serving every cluster, waiting to be promoted).
    pub state: crate::rollout::State,
    /// When it was armed, in milliseconds since the Unix epoch.
    pub armed_at_ms: u64,
    /// Its calls in the window (`rollback.window`).
    pub calls: u64,
    /// Those that failed (divergences included when they roll back).
    pub failures: u64,
    /// `failures / calls`.
    pub error_rate: f64,
    /// Whether its discovery runs in shadow beside the stable one.
    pub shadow: bool,
    /// Shadow discoveries compared with the stable answer.
    pub shadow_compared: u64,
    /// Of those, the ones that differed.
    pub shadow_different: u64,
    /// Shadow discoveries that failed.
    pub shadow_failed: u64,
    /// The last differences (at most ten), newest last, redacted.
    pub last_differences: Vec<String>,
    /// The rollback, once rolled back: when, why and the numbers.
    pub rolled_back: Option<crate::rollout::Verdict>,
    /// Its replay gate on this replica (`replay = { max_differences }`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayGateInfo>,
    /// `rollback.max_error_rate`: the share of failed calls in the window above which it is
    /// rolled back.
    #[serde(default)]
    pub max_error_rate: f64,
    /// `rollback.min_calls`: no verdict below this many calls in the window.
    #[serde(default)]
    pub min_calls: u32,
    /// `rollback.window`, in milliseconds.
    #[serde(default)]
    pub window_ms: u64,
}

impl CandidateInfo {
    /// The answer for `candidate` whose rollout is `view`.
    pub fn of(candidate: &crate::rollout::Candidate, view: crate::rollout::View) -> CandidateInfo {
        CandidateInfo {
            plugin: candidate.config.backend.plugin.display().to_string(),
            digest: candidate.backend.digest().to_string(),
            contract: candidate.backend.contract().to_string(),
            configured_weight: candidate.config.weight,
            steps: candidate.config.steps.clone(),
            weight: view.weight,
            state: view.state,
            armed_at_ms: view.record.armed_at_ms,
            calls: view.tally.calls,
            failures: view.tally.failures,
            error_rate: view.tally.error_rate(),
            shadow: candidate.config.shadow,
            shadow_compared: view.shadows.compared,
            shadow_different: view.shadows.different,
            shadow_failed: view.shadows.failed,
            last_differences: view.shadows.last.into_iter().collect(),
            rolled_back: view.record.rolled_back,
            replay: view.gate.map(ReplayGateInfo::of),
            max_error_rate: candidate.config.rollback.max_error_rate,
            min_calls: candidate.config.rollback.min_calls,
            window_ms: candidate.config.rollback.window.as_millis() as u64,
        }
    }
}

/// A candidate's replay gate on this replica: the backend's recorded calls replayed against it
/// before it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayGateInfo {
    /// `pending`, `running`, `passed` or `failed`.
    pub state: String,
    /// What the replay found, once it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<crate::rollout::GateReport>,
}

impl ReplayGateInfo {
    fn of(gate: crate::rollout::Gate) -> ReplayGateInfo {
        use crate::rollout::Gate;
        let (state, report) = match gate {
            Gate::Pending => ("pending", None),
            Gate::Running => ("running", None),
            Gate::Passed(report) => ("passed", Some(report)),
            Gate::Failed(report) => ("failed", Some(report)),
        };
        ReplayGateInfo {
            state: state.to_string(),
            report,
        }
    }
}

/// A backend's `limits`, in units a script can compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitsInfo {
    /// `limits.memory`.
    pub memory_bytes: u64,
    /// `limits.timeout`.
    pub timeout_ms: u64,
    /// `limits.concurrency`: its call slots.
    pub concurrency: u64,
    /// Its state quotas.
    pub state: StateLimitsInfo,
}

/// A backend's state quotas (`limits.state_*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateLimitsInfo {
    /// `limits.state_keys`.
    pub keys: u64,
    /// `limits.state_bytes`.
    pub bytes: u64,
    /// `limits.state_value_size`.
    pub value_bytes: u64,
    /// `limits.state_writes_per_second`.
    pub writes_per_second: u32,
}

impl From<&Limits> for LimitsInfo {
    fn from(limits: &Limits) -> LimitsInfo {
        LimitsInfo {
            memory_bytes: limits.memory as u64,
            timeout_ms: limits.timeout.as_millis() as u64,
            concurrency: limits.concurrency as u64,
            state: StateLimitsInfo {
                keys: limits.state.keys,
                bytes: limits.state.bytes,
                value_bytes: limits.state.value as u64,
                writes_per_second: limits.state.writes_per_second,
            },
        }
    }
}

impl Backends {
    /// The backends `generation` serves.
    pub fn of(generation: &Generation) -> Backends {
        let backends = generation
            .backends
            .values()
            .map(|backend| BackendInfo {
                name: backend.id().to_string(),
                plugin: generation.config.backends[backend.id()]
                    .plugin
                    .display()
                    .to_string(),
                digest: backend.digest().to_string(),
                contract: backend.contract().to_string(),
                limits: backend.limits().into(),
                candidate: None,
            })
            .collect();
        Backends {
            generation: generation.number,
            backends,
        }
    }
}

/// `GET /admin/activity`: each backend's calls since start and over the last minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// The generation whose backends these are.
    pub generation: u64,
    /// The length of one sample, in milliseconds.
    pub interval_ms: u64,
    /// How many samples a backend keeps at most.
    pub max_samples: usize,
    /// Every backend of the generation, by name.
    pub backends: Vec<ActivityInfo>,
}

/// One backend's activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityInfo {
    /// Its name.
    pub name: String,
    /// Plugin calls since the gateway started (stable and candidate).
    pub calls: u64,
    /// Those that failed (any outcome but `ok` and the caller's mistakes: `invalid_request`,
    /// `not_found`, `conflict`, `unsupported`).
    pub errors: u64,
    /// Calls since start by outcome, as `platform_gateway_plugin_calls_total` counts them.
    pub outcomes: std::collections::BTreeMap<String, u64>,
    /// Calls running now.
    pub in_flight: u64,
    /// Calls waiting for a call slot now.
    pub queued: u64,
    /// The intervals of the last minutes that saw calls, oldest first.
    pub samples: Vec<crate::metrics::activity::Sample>,
}

impl Activity {
    /// The activity of `generation`'s backends at `now_ms`, from `metrics`.
    pub fn of(generation: &Generation, metrics: &crate::metrics::Metrics, now_ms: u64) -> Activity {
        use crate::metrics::activity;
        let backends = generation
            .backends
            .values()
            .map(|backend| {
                let name = backend.id().to_string();
                let seen = metrics.activity().of(&name, now_ms);
                let (in_flight, queued) = metrics.slots_now(&name);
                ActivityInfo {
                    name,
                    calls: seen.calls,
                    errors: seen.errors,
                    outcomes: seen.outcomes,
                    in_flight,
                    queued,
                    samples: seen.samples,
                }
            })
            .collect();
        Activity {
            generation: generation.number,
            interval_ms: activity::INTERVAL_MS,
            max_samples: activity::SAMPLES,
            backends,
        }
    }
}

/// `GET /admin/routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routes {
    /// The provision route table, in order.
    pub routes: Vec<RouteInfo>,
    /// The discovery policy.
    pub discovery: DiscoveryInfo,
}

/// One provision route: its conditions one by one (`null` when not set), and in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// The route's name.
    pub name: String,
    /// Its backend.
    pub backend: String,
    /// The `cluster_id` condition, exact or glob.
    pub cluster_id: Option<String>,
    /// The `store` condition.
    pub store: Option<String>,
    /// The `store_version` condition.
    pub store_version: Option<String>,
    /// The `node_group_id` condition.
    pub node_group_id: Option<String>,
    /// The `node_class` condition.
    pub node_class: Option<String>,
    /// Every condition, in words (`default` for none).
    pub conditions: String,
}

impl From<&Route> for RouteInfo {
    fn from(route: &Route) -> RouteInfo {
        let m = &route.matches;
        RouteInfo {
            name: route.name.clone(),
            backend: route.backend.to_string(),
            cluster_id: m.cluster_id.as_ref().map(|p| p.as_str().to_string()),
            store: m.store.clone(),
            store_version: m.store_version.clone(),
            node_group_id: m.node_group_id.clone(),
            node_class: m.node_class.clone(),
            conditions: m.describe(),
        }
    }
}

/// `[discovery]` as it applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryInfo {
    /// What `GET /discover` answers when a backend fails.
    pub on_backend_failure: DiscoveryPolicy,
}

impl Routes {
    /// The routes and discovery policy `generation` serves.
    pub fn of(generation: &Generation) -> Routes {
        Routes {
            routes: generation
                .config
                .routes
                .routes()
                .iter()
                .map(RouteInfo::from)
                .collect(),
            discovery: DiscoveryInfo {
                on_backend_failure: generation.config.discovery,
            },
        }
    }
}

/// `GET /admin/state`: the state store in its own words, and whether it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Store {
    /// Which store, with its endpoints.
    pub store: String,
    /// Whether it answers (`/readyz`'s verdict).
    pub ready: bool,
    /// Why not, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /admin/reload` when the reload was applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reloaded {
    /// The generation now serving.
    pub generation: u64,
}
