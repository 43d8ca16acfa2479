//! What the three operations fail with, in domain terms. `api::error` is the one place that turns
//! these into HTTP statuses and the error body.

use crate::model::BackendId;
use crate::runtime::CallError;
use crate::state::StateError;

/// Why an operation of the Platform API failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No generation is loaded yet.
    #[error("the gateway is still loading its backends")]
    Loading,
    /// No provision route matches the request.
    #[error("no route matches {request}")]
    NoRoute {
        /// The request as routing saw it.
        request: String,
    },
    /// The request's `Idempotency-Key` was used, in this cluster, for a request that asked for
    /// something else: answering it would replay the first request's answer.
    #[error(
        "this Idempotency-Key was used for another request in cluster `{cluster_id}`: a retry must \
         send the same body, and a new request a new key"
    )]
    KeyReused {
        /// The cluster.
        cluster_id: String,
    },
    /// A backend's call failed (the plugin's own error, a trap, a deadline, a full queue).
    #[error("backend `{backend}`{}", describe_call(.error, .operation))]
    Call {
        /// The backend.
        backend: BackendId,
        /// `discover`, `provision` or `deprovision`.
        operation: &'static str,
        /// What went wrong.
        error: CallError,
    },
    /// A backend's answer broke the contract.
    #[error("backend `{backend}` returned an invalid {operation} answer")]
    InvalidAnswer {
        /// The backend.
        backend: BackendId,
        /// The operation.
        operation: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Discovery failed on some backend, and answering would hide nodes that may exist.
    #[error("discovery failed on backend {}: answering would hide nodes that may still exist", names(.failures))]
    DiscoveryFailed {
        /// Each failed backend and why.
        failures: Vec<(BackendId, String)>,
        /// The node a deprovision looked for, when that is what needed the discovery.
        looking_for: Option<String>,
    },
    /// Discovery could not ask some backend now, for a reason that passes (every call slot and
    /// queue place taken, the backend or its state store unavailable): the client should retry
    /// shortly. Never reported as a backend failure.
    #[error("discovery cannot ask every backend now: {}", reasons(.failures))]
    DiscoveryUnavailable {
        /// Each backend that could not answer, and why.
        failures: Vec<(BackendId, String)>,
    },
    /// Neither the ownership index nor a fresh discovery knows the node.
    #[error("node `{node_id}` of cluster `{cluster_id}` does not exist")]
    NodeNotFound {
        /// The cluster.
        cluster_id: String,
        /// The node.
        node_id: String,
    },
    /// Several backends report the node and the index does not settle which owns it.
    #[error("node `{node_id}` of cluster `{cluster_id}` is claimed by backends {}; refusing to guess which to ask", names_of(.backends))]
    NodeClaimed {
        /// The cluster.
        cluster_id: String,
        /// The node.
        node_id: String,
        /// Every backend that reports it.
        backends: Vec<BackendId>,
    },
    /// The node's owner is not in the current config.
    #[error(
        "node `{node_id}` belongs to backend state `{owner}`, which no backend of the current config uses"
    )]
    OwnerNotLoaded {
        /// The node.
        node_id: String,
        /// The owner's state namespace.
        owner: String,
    },
    /// A request sent with a saved plan (`X-Platform-Plan`) that no longer holds: it was not
    /// run.
    #[error("plan `{plan_id}` was not applied: {problem}")]
    PlanRefused {
        /// The plan.
        plan_id: String,
        /// What changed since it was made.
        problem: String,
    },
    /// The state store failed or cannot be reached.
    #[error("the gateway's state store failed while {what}")]
    State {
        /// What the gateway was doing.
        what: &'static str,
        /// The store's error.
        error: StateError,
    },
}

impl Error {
    /// What the operator's log gets beside the public message and cause, which must not show
    /// it: the state store's own words (its endpoints, its files).
    pub fn detail(&self) -> Option<String> {
        match self {
            Error::State { error, .. } => Some(error.to_string()),
            _ => None,
        }
    }

    /// The root cause worth showing apart from the message, if any.
    pub fn cause(&self) -> Option<String> {
        match self {
            Error::NoRoute { .. } => {
                Some("add a matching route (or a default route) to the gateway config".into())
            }
            Error::InvalidAnswer { problem, .. } => Some(problem.clone()),
            Error::PlanRefused { .. } => {
                Some("plan again (`POST /admin/plan/...`) and apply the new plan".into())
            }
            Error::DiscoveryFailed {
                failures,
                looking_for,
            } => {
                let reasons: Vec<&str> = failures.iter().map(|(_, r)| r.as_str()).collect();
                let reasons = reasons.join("; ");
                Some(match looking_for {
                    Some(node) => format!(
                        "node `{node}` was not found on the backends that answered; {reasons}"
                    ),
                    None => reasons,
                })
            }
            Error::State { error, .. } => Some(match error {
                // What failed where (etcd's endpoints, a file's path) is for the operator: the
                // log and the admin API's `/admin/state` ([`Error::detail`]), not the client.
                StateError::Unavailable(_) => {
                    "the state store is unavailable; retry later (the detail is in the gateway log)"
                        .into()
                }
                StateError::Storage(_) => "see the gateway log".into(),
                StateError::TooLarge(m) => m.clone(),
            }),
            _ => None,
        }
    }
}

fn describe_call(error: &CallError, operation: &str) -> String {
    match error {
        CallError::Plugin(e) => format!(": {}", e.message()),
        other => format!(" {other} ({operation})"),
    }
}

fn names_of(backends: &[BackendId]) -> String {
    let names: Vec<String> = backends.iter().map(|b| format!("`{b}`")).collect();
    names.join(" and ")
}

fn reasons(failures: &[(BackendId, String)]) -> String {
    let reasons: Vec<&str> = failures.iter().map(|(_, r)| r.as_str()).collect();
    reasons.join("; ")
}

fn names(failures: &[(BackendId, String)]) -> String {
    let names: Vec<String> = failures.iter().map(|(b, _)| format!("`{b}`")).collect();
    names.join(", ")
}
