//! A candidate's replay gate: before a candidate with `replay = { max_differences }` serves on a
//! replica, the backend's most recent recorded calls (this replica's ring) are replayed against
//! it off the request path ([`crate::replay`]: nothing reaches the world). Within the bound it
//! passes and the replica routes to it; over the bound it is rolled back for every replica, with
//! reason `replay`.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Candidate, MAX_DIFFERENCES, Rollouts, Tally, Tracker, lock, now_ms};
use crate::recording::Entry;
use crate::replay::{CallReport, Report, Rules};
use crate::state::StateStore;

/// Where a candidate's replay gate stands on this replica.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Gate {
    /// Not started (it starts with the first provision that could go to the candidate).
    #[default]
    Pending,
    /// Replaying.
    Running,
    /// Replayed within `max_differences`: the candidate may serve.
    Passed(GateReport),
    /// Too many calls differed or failed: rolled back.
    Failed(GateReport),
}

/// What a candidate's replay gate found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    /// Recorded calls replayed.
    pub calls: usize,
    /// Of those, the same.
    pub same: usize,
    /// Different.
    pub different: usize,
    /// Failed.
    pub failed: usize,
    /// The gate's `max_differences`.
    pub max_differences: u64,
    /// The first findings (at most [`MAX_DIFFERENCES`]).
    pub findings: Vec<CallReport>,
    /// When it finished, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Why it could not replay, if it could not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

impl GateReport {
    fn of(report: Report, max_differences: u64, error: Option<String>) -> GateReport {
        GateReport {
            calls: report.calls,
            same: report.same,
            different: report.different,
            failed: report.failed,
            max_differences,
            findings: report.findings.into_iter().take(MAX_DIFFERENCES).collect(),
            at_ms: now_ms(),
            error,
        }
    }
}

impl Tracker {
    pub(super) fn passed(&self) -> bool {
        matches!(*lock(&self.gate), Gate::Passed(_))
    }
}

impl Rollouts {
    /// Start `candidate`'s replay gate on this replica if it has one and it has not started:
    /// the backend's most recent recorded calls, replayed against it off the request path.
    /// Until it passes, [`Rollouts::side`] keeps the candidate's clusters on the stable plugin.
    pub fn open_gate(self: &Arc<Self>, state: &Arc<dyn StateStore>, candidate: &Arc<Candidate>) {
        let Some(gate) = candidate.config.replay else {
            return;
        };
        let tracker = self.tracker(candidate);
        if tracker.stale || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        {
            let mut current = lock(&tracker.gate);
            if *current != Gate::Pending {
                return;
            }
            *current = Gate::Running;
        }
        let (rollouts, state, candidate) = (self.clone(), state.clone(), candidate.clone());
        tokio::spawn(async move {
            let id = candidate.backend.id().clone();
            tracing::info!(backend = %id, "replaying recorded calls against the candidate");
            let (report, error) = match rollouts.recorded(id.as_str(), gate.calls).await {
                Ok(entries) => {
                    let mut report = Report::default();
                    let rules = Rules::default();
                    for entry in &entries {
                        report.add(crate::replay::replay(&candidate.backend, entry, &rules).await);
                    }
                    (report, None)
                }
                Err(e) => (Report::default(), Some(e)),
            };
            let over =
                (report.different + report.failed) as u64 > gate.max_differences || error.is_some();
            let found = GateReport::of(report, gate.max_differences, error);
            tracing::info!(
                backend = %id, calls = found.calls, different = found.different,
                failed = found.failed, "the candidate's replay gate {}",
                if over { "failed" } else { "passed" }
            );
            if over {
                let tally = Tally {
                    calls: found.calls as u64,
                    failures: (found.different + found.failed) as u64,
                    divergences: 0,
                };
                *lock(&tracker.gate) = Gate::Failed(found);
                rollouts
                    .roll_back_for(&*state, &candidate, &tracker, tally, "replay")
                    .await;
            } else {
                *lock(&tracker.gate) = Gate::Passed(found);
            }
        });
    }

    /// The most recent `calls` entries of `backend`'s recording (none when it has none).
    async fn recorded(&self, backend: &str, calls: u64) -> Result<Vec<Entry>, String> {
        let Some(lazy) = self.recordings.get() else {
            return Ok(Vec::new());
        };
        let Some(recordings) = lazy.existing() else {
            return Ok(Vec::new());
        };
        let recordings = recordings?;
        let backend = backend.to_string();
        tokio::task::spawn_blocking(move || {
            let mut entries: VecDeque<Entry> = VecDeque::new();
            let mut after = None;
            loop {
                let page = recordings.page(&backend, after)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                after = Some(*last);
                for (_, line) in page {
                    let entry: Entry = serde_json::from_slice(&line)
                        .map_err(|e| format!("a recorded call is unreadable: {e}"))?;
                    if entries.len() as u64 >= calls {
                        entries.pop_front();
                    }
                    entries.push_back(entry);
                }
            }
            Ok(entries.into())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}
