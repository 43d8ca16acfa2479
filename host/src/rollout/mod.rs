//! Candidates: the sticky split of clusters between a backend's stable plugin and its
//! candidate, the candidate's health over its window, and the verdict, kept in the state store
//! (namespace [`ROLLOUTS`]) so that every replica follows it and a restart keeps it.
//!
//! The record of a backend's rollout names the candidate's fingerprint (its plugin digest and
//! settings), when it was armed (its steps count from then) and, once rolled back, why. A
//! record with another fingerprint is another candidate's: a config with a different candidate
//! re-arms. Each replica reads the record at most once per [`POLL`].
//!
//! A candidate with a replay gate (`replay = { max_differences = N }`) serves nothing on a
//! replica until that replica has replayed the backend's recorded calls against it
//! ([`crate::replay`], in replay mode: nothing reaches the world). Too many calls that differ or
//! fail roll it back for every replica (reason `replay`); a passed gate lets this replica route
//! to it. Each replica replays its own recording, so a replica that recorded nothing passes at
//! once.

mod gate;
pub mod health;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use crate::model::{BackendId, ProviderError};
use crate::recording::Lazy;
use crate::runtime::candidate::{CandidateConfig, fingerprint};
use crate::runtime::{Backend, CallError};
use crate::state::{StateError, StateStore};
pub use gate::{Gate, GateReport};
use health::{Health, Outcome, Tally};

/// The gateway's own namespace for rollout records (backend names cannot start with `@`).
pub const ROLLOUTS: &str = "@rollouts";
/// The gateway's namespace for the nodes a candidate provisioned: key
/// `NAMESPACE/CLUSTER\0NODE`, value the candidate's fingerprint.
pub const CANDIDATE_NODES: &str = "@candidate-nodes";
/// How long a replica trusts the rollout record it read: a verdict reached on another replica
/// is followed within this.
pub const POLL: Duration = Duration::from_secs(1);
/// How many of the last shadow differences are kept to show.
pub const MAX_DIFFERENCES: usize = 10;

/// Which side of a backend serves a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The backend's plugin.
    Stable,
    /// Its candidate.
    Candidate,
}

/// A loaded candidate: its backend, its config and its fingerprint.
pub struct Candidate {
    /// The candidate's plugin, as a backend of the stable one's name and namespace.
    pub backend: Arc<Backend>,
    /// How it is rolled out.
    pub config: CandidateConfig,
    /// `sha256:` of its digest and settings.
    pub fingerprint: String,
    /// When its generation loaded it: while a reload swaps one candidate for another, calls of
    /// the older generation still finish, and must not take the newer one's place.
    loaded: Instant,
}

impl Candidate {
    /// A candidate of loaded `backend` (counted as a candidate).
    pub fn new(backend: Backend, config: CandidateConfig) -> Candidate {
        let fingerprint = fingerprint(backend.digest(), &config.backend.settings);
        Candidate {
            backend: Arc::new(backend.into_candidate()),
            config,
            fingerprint,
            loaded: Instant::now(),
        }
    }
}

/// Which bucket of 100 a cluster of a backend falls in: the first eight bytes of
/// SHA-256(`backend` NUL `cluster_id`), stable across builds, machines and replicas.
pub fn bucket(backend: &str, cluster_id: &str) -> u8 {
    let mut hash = Sha256::new();
    hash.update(backend.as_bytes());
    hash.update([0]);
    hash.update(cluster_id.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 100) as u8
}

/// Whether a cluster's provisions go to the candidate at `weight` percent.
pub fn takes(weight: u8, backend: &str, cluster_id: &str) -> bool {
    bucket(backend, cluster_id) < weight
}

/// Whether a failed candidate call counts against it: what the API answers with 5xx. A
/// plugin's own 4xx answers (invalid request, not found, conflict, unsupported) do not.
pub fn counts_as_failure(error: &CallError) -> bool {
    !matches!(
        error,
        CallError::Plugin(
            ProviderError::InvalidRequest(_)
                | ProviderError::NotFound(_)
                | ProviderError::Conflict(_)
                | ProviderError::Unsupported(_)
        )
    )
}

/// A rollout as the state store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The candidate it is about.
    pub fingerprint: String,
    /// When it was armed, in milliseconds since the Unix epoch.
    pub armed_at_ms: u64,
    /// The verdict, once rolled back.
    pub rolled_back: Option<Verdict>,
}

/// Why and when a candidate was rolled back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// In milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `error_rate` or `divergence`.
    pub reason: String,
    /// Calls in the window when it was judged.
    pub calls: u64,
    /// Failures among them.
    pub failures: u64,
    /// `failures / calls`.
    pub error_rate: f64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The weight a candidate serves at `now_ms` under `record`: 0 once rolled back; else its
/// `weight`, then one step more per `step_interval` since it was armed.
pub fn effective_weight(config: &CandidateConfig, record: &Record, now_ms: u64) -> u8 {
    if record.rolled_back.is_some() {
        return 0;
    }
    let interval = config.step_interval.as_millis().max(1) as u64;
    let steps_done = now_ms.saturating_sub(record.armed_at_ms) / interval;
    match usize::try_from(steps_done).unwrap_or(usize::MAX) {
        0 => config.weight,
        n => config
            .steps
            .get(n - 1)
            .or(config.steps.last())
            .copied()
            .unwrap_or(config.weight),
    }
}

/// A rollout's state, as shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Serving its share.
    Active,
    /// Taken out by a verdict.
    RolledBack,
    /// Serving every cluster, waiting for the operator to promote it.
    Done,
}

/// What one replica knows of one backend's candidate.
struct Tracker {
    fingerprint: String,
    /// When the candidate it follows was loaded.
    loaded: Instant,
    /// It follows a candidate that a newer one has replaced (calls of an older generation
    /// still finishing): not kept, never armed, its calls go to the stable plugin.
    stale: bool,
    health: Mutex<Health>,
    shadows: Mutex<Shadows>,
    /// The record last read (or written) and when; `None` until read.
    record: tokio::sync::Mutex<Option<(Instant, Record)>>,
    /// Its replay gate on this replica.
    gate: Mutex<Gate>,
}

/// Shadow discoveries compared, and the last differences.
#[derive(Debug, Default, Clone)]
pub struct Shadows {
    /// Compared with the stable answer.
    pub compared: u64,
    /// Of those, the ones that differed.
    pub different: u64,
    /// Shadow calls that failed.
    pub failed: u64,
    /// The last [`MAX_DIFFERENCES`] differences, newest last.
    pub last: VecDeque<String>,
}

/// A candidate's rollout as one replica sees it.
#[derive(Debug, Clone)]
pub struct View {
    /// The record in the store.
    pub record: Record,
    /// The weight it serves now.
    pub weight: u8,
    /// Its state.
    pub state: State,
    /// The window's numbers on this replica.
    pub tally: Tally,
    /// Shadow discoveries on this replica.
    pub shadows: Shadows,
    /// Its replay gate on this replica, if it has one.
    pub gate: Option<Gate>,
}

/// Every backend's rollout, as this replica follows it.
pub struct Rollouts {
    trackers: Mutex<BTreeMap<BackendId, Arc<Tracker>>>,
    metrics: Arc<Metrics>,
    /// The recordings a replay gate replays.
    recordings: std::sync::OnceLock<Arc<Lazy>>,
}

impl Rollouts {
    /// Rollouts counted in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Rollouts {
        Rollouts {
            trackers: Mutex::default(),
            metrics,
            recordings: std::sync::OnceLock::new(),
        }
    }

    /// Replay gates read `recordings`.
    pub fn replay_from(&self, recordings: Arc<Lazy>) {
        let _ = self.recordings.set(recordings);
    }

    /// The tracker of `candidate`: the one kept while its fingerprint is unchanged, else anew.
    fn tracker(&self, candidate: &Candidate) -> Arc<Tracker> {
        let mut trackers = self.trackers.lock().unwrap_or_else(|e| e.into_inner());
        let id = candidate.backend.id();
        let fresh = |stale| {
            Arc::new(Tracker {
                fingerprint: candidate.fingerprint.clone(),
                loaded: candidate.loaded,
                stale,
                health: Mutex::default(),
                shadows: Mutex::default(),
                record: tokio::sync::Mutex::new(None),
                gate: Mutex::default(),
            })
        };
        match trackers.get(id) {
            Some(t) if t.fingerprint == candidate.fingerprint => t.clone(),
            // Replaced by a newer candidate: left alone, so that the two do not take turns
            // arming the record and forgetting each other's window.
            Some(t) if t.loaded > candidate.loaded => fresh(true),
            _ => {
                let tracker = fresh(false);
                trackers.insert(id.clone(), tracker.clone());
                tracker
            }
        }
    }

    /// The candidate's record: the one read less than [`POLL`] ago, else from the store, armed
    /// there when the store holds none for this fingerprint. `None` when the store cannot say
    /// and nothing was read before: the stable plugin serves meanwhile.
    pub async fn record(&self, state: &dyn StateStore, candidate: &Candidate) -> Option<Record> {
        let tracker = self.tracker(candidate);
        if tracker.stale {
            return None;
        }
        let mut cached = tracker.record.lock().await;
        if let Some((at, record)) = &*cached
            && at.elapsed() < POLL
        {
            return Some(record.clone());
        }
        match read_or_arm(state, candidate.backend.id(), &tracker.fingerprint).await {
            Ok(record) => {
                // Armed anew elsewhere (a reset): the window starts over here too.
                if cached
                    .as_ref()
                    .is_some_and(|(_, old)| old.armed_at_ms != record.armed_at_ms)
                {
                    lock(&tracker.health).clear();
                }
                self.metrics.set_candidate_weight(
                    candidate.backend.id().as_str(),
                    effective_weight(&candidate.config, &record, now_ms()),
                );
                *cached = Some((Instant::now(), record.clone()));
                Some(record)
            }
            Err(e) => {
                tracing::warn!(backend = %candidate.backend.id(), "cannot read the candidate's rollout record: {e}");
                cached.as_ref().map(|(_, r)| r.clone())
            }
        }
    }

    /// Which side serves the provisions of `cluster_id` now.
    pub async fn side(
        &self,
        state: &dyn StateStore,
        candidate: &Candidate,
        cluster_id: &str,
    ) -> Side {
        let Some(record) = self.record(state, candidate).await else {
            return Side::Stable;
        };
        let weight = effective_weight(&candidate.config, &record, now_ms());
        if weight > 0 && candidate.config.replay.is_some() && !self.tracker(candidate).passed() {
            return Side::Stable;
        }
        if takes(weight, candidate.backend.id().as_str(), cluster_id) {
            Side::Candidate
        } else {
            Side::Stable
        }
    }

    /// Whether the candidate is live (armed and not rolled back).
    pub async fn live(&self, state: &dyn StateStore, candidate: &Candidate) -> bool {
        self.record(state, candidate)
            .await
            .is_some_and(|r| r.rolled_back.is_none())
    }

    /// Count a candidate call; roll the candidate back when its window says so.
    pub async fn count(&self, state: &dyn StateStore, candidate: &Candidate, outcome: Outcome) {
        let tracker = self.tracker(candidate);
        if tracker.stale {
            return;
        }
        let verdict = {
            let mut health = lock(&tracker.health);
            health.push(Instant::now(), outcome);
            health.verdict(Instant::now(), &candidate.config.rollback)
        };
        if let Some(tally) = verdict {
            self.roll_back(state, candidate, &tracker, tally).await;
        }
    }

    /// A shadow discovery's result: `differences` empty when it answered as the stable one,
    /// `None` when it failed.
    pub async fn shadowed(
        &self,
        state: &dyn StateStore,
        candidate: &Candidate,
        differences: Option<Vec<String>>,
    ) {
        let tracker = self.tracker(candidate);
        if tracker.stale {
            return;
        }
        let id = candidate.backend.id().as_str();
        let outcome = {
            let mut shadows = lock(&tracker.shadows);
            match differences {
                None => {
                    shadows.failed += 1;
                    self.metrics.record_shadow(id, "failed");
                    Outcome::Failed
                }
                Some(differences) if differences.is_empty() => {
                    shadows.compared += 1;
                    self.metrics.record_shadow(id, "same");
                    Outcome::Ok
                }
                Some(differences) => {
                    shadows.compared += 1;
                    shadows.different += 1;
                    self.metrics.record_shadow(id, "different");
                    for difference in differences.into_iter().take(MAX_DIFFERENCES) {
                        if shadows.last.len() >= MAX_DIFFERENCES {
                            shadows.last.pop_front();
                        }
                        shadows.last.push_back(difference);
                    }
                    Outcome::Diverged
                }
            }
        };
        self.count(state, candidate, outcome).await;
    }

    /// Write the verdict (once: a record already rolled back, or another candidate's, is left
    /// alone), log it and count it.
    async fn roll_back(
        &self,
        state: &dyn StateStore,
        candidate: &Candidate,
        tracker: &Tracker,
        tally: Tally,
    ) {
        let reason = if tally.divergences * 2 > tally.failures {
            "divergence"
        } else {
            "error_rate"
        };
        self.roll_back_for(state, candidate, tracker, tally, reason)
            .await;
    }

    /// Write the verdict with `reason` (see [`Rollouts::roll_back`]).
    async fn roll_back_for(
        &self,
        state: &dyn StateStore,
        candidate: &Candidate,
        tracker: &Tracker,
        tally: Tally,
        reason: &'static str,
    ) {
        let mut cached = tracker.record.lock().await;
        if cached
            .as_ref()
            .is_some_and(|(_, r)| r.rolled_back.is_some())
        {
            return;
        }
        let verdict = Verdict {
            at_ms: now_ms(),
            reason: reason.to_string(),
            calls: tally.calls,
            failures: tally.failures,
            error_rate: tally.error_rate(),
        };
        let id = candidate.backend.id();
        // A candidate judged before anything read its record (a shadow-only one) is armed
        // first, so that the verdict has a record to go in.
        if let Err(e) = read_or_arm(state, id, &tracker.fingerprint).await {
            tracing::warn!(backend = %id, "cannot write the candidate's rollback: {e}");
            return;
        }
        for _ in 0..8 {
            let (old, mut record) = match stored(state, id).await {
                Ok(Some((bytes, record))) if record.fingerprint == tracker.fingerprint => {
                    (Some(bytes), record)
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(backend = %id, "cannot write the candidate's rollback: {e}");
                    return;
                }
            };
            if record.rolled_back.is_some() {
                *cached = Some((Instant::now(), record));
                return;
            }
            record.rolled_back = Some(verdict.clone());
            let new = serde_json::to_vec(&record).unwrap_or_default();
            match state
                .compare_and_swap(ROLLOUTS, id.as_str(), old.as_deref(), Some(&new))
                .await
            {
                Ok(true) => {
                    let what = if reason == "replay" {
                        "replayed recorded calls differed or failed"
                    } else {
                        "calls failed in the window"
                    };
                    tracing::warn!(
                        backend = %id, reason, calls = tally.calls, failures = tally.failures,
                        "candidate {} rolled back: {} of {} {what}",
                        candidate.config.backend.plugin.display(), tally.failures, tally.calls
                    );
                    self.metrics.record_rollback(id.as_str(), reason);
                    self.metrics.set_candidate_weight(id.as_str(), 0);
                    *cached = Some((Instant::now(), record));
                    return;
                }
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(backend = %id, "cannot write the candidate's rollback: {e}");
                    return;
                }
            }
        }
    }

    /// Re-arm the candidate: a new record (its steps start over), its window and shadow counts
    /// forgotten on this replica (others forget theirs when they read the record).
    pub async fn reset(
        &self,
        state: &dyn StateStore,
        candidate: &Candidate,
    ) -> Result<Record, StateError> {
        let tracker = self.tracker(candidate);
        let mut cached = tracker.record.lock().await;
        let record = Record {
            fingerprint: tracker.fingerprint.clone(),
            armed_at_ms: now_ms(),
            rolled_back: None,
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        state
            .set(ROLLOUTS, candidate.backend.id().as_str(), &bytes)
            .await?;
        lock(&tracker.health).clear();
        *lock(&tracker.shadows) = Shadows::default();
        // A re-armed candidate is replayed again before it serves.
        *lock(&tracker.gate) = Gate::Pending;
        *cached = Some((Instant::now(), record.clone()));
        tracing::info!(backend = %candidate.backend.id(), "candidate re-armed by the operator");
        Ok(record)
    }

    /// The candidate's rollout as this replica sees it, from a fresh record.
    pub async fn view(&self, state: &dyn StateStore, candidate: &Candidate) -> Option<View> {
        let tracker = self.tracker(candidate);
        // A fresh read: what the admin sees is what the store holds.
        *tracker.record.lock().await = None;
        let record = self.record(state, candidate).await?;
        let weight = effective_weight(&candidate.config, &record, now_ms());
        let state = if record.rolled_back.is_some() {
            State::RolledBack
        } else if weight == 100 {
            State::Done
        } else {
            State::Active
        };
        let tally = lock(&tracker.health).tally(Instant::now(), &candidate.config.rollback);
        let shadows = lock(&tracker.shadows).clone();
        let gate = candidate.config.replay.map(|_| lock(&tracker.gate).clone());
        // Until its gate passes here, this replica routes nothing to it.
        let weight = match &gate {
            Some(Gate::Passed(_)) | None => weight,
            Some(_) => 0,
        };
        Some(View {
            record,
            weight,
            state,
            tally,
            shadows,
            gate,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The stored record of `backend` and its bytes; an unreadable one reads as none.
async fn stored(
    state: &dyn StateStore,
    backend: &BackendId,
) -> Result<Option<(Vec<u8>, Record)>, StateError> {
    let Some(bytes) = state.get(ROLLOUTS, backend.as_str()).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok().map(|r| (bytes, r)))
}

/// The record of `backend`'s candidate with `fingerprint`, armed now if the store holds
/// another candidate's or none.
async fn read_or_arm(
    state: &dyn StateStore,
    backend: &BackendId,
    fingerprint: &str,
) -> Result<Record, StateError> {
    for _ in 0..8 {
        let old = match stored(state, backend).await? {
            Some((_, record)) if record.fingerprint == fingerprint => return Ok(record),
            Some((bytes, _)) => Some(bytes),
            None => state.get(ROLLOUTS, backend.as_str()).await?,
        };
        let record = Record {
            fingerprint: fingerprint.to_string(),
            armed_at_ms: now_ms(),
            rolled_back: None,
        };
        let new = serde_json::to_vec(&record).unwrap_or_default();
        if state
            .compare_and_swap(ROLLOUTS, backend.as_str(), old.as_deref(), Some(&new))
            .await?
        {
            tracing::info!(%backend, "candidate {fingerprint} armed");
            return Ok(record);
        }
    }
    Err(StateError::Unavailable(
        "the rollout record kept changing while it was armed".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::candidate::{OnDivergence, RollbackPolicy};

    #[test]
    fn the_consoles_failure_chart_counts_what_a_rollback_counts() {
        let text = || "x".to_string();
        let errors = [
            CallError::Plugin(ProviderError::InvalidRequest(text())),
            CallError::Plugin(ProviderError::NotFound(text())),
            CallError::Plugin(ProviderError::Conflict(text())),
            CallError::Plugin(ProviderError::Unsupported(text())),
            CallError::Plugin(ProviderError::Unavailable {
                message: text(),
                retry_after: None,
            }),
            CallError::Plugin(ProviderError::Internal(text())),
            CallError::Timeout(Duration::from_secs(1)),
            CallError::OutOfMemory(1),
            CallError::Trap(text()),
            CallError::TooLarge { size: 2, limit: 1 },
            CallError::Busy(1),
            CallError::PoolExhausted,
            CallError::Host(text()),
        ];
        for error in &errors {
            assert_eq!(
                crate::metrics::activity::is_failure(error.outcome()),
                counts_as_failure(error),
                "{}",
                error.outcome()
            );
        }
        assert!(!crate::metrics::activity::is_failure("ok"));
    }

    #[test]
    fn the_split_is_sticky_and_near_the_weight() {
        let clusters: Vec<String> = (0..1000).map(|i| format!("cluster-{i}")).collect();
        let taken: Vec<bool> = clusters.iter().map(|c| takes(20, "pool", c)).collect();
        let count = taken.iter().filter(|t| **t).count();
        assert!((150..=250).contains(&count), "{count} of 1000 at weight 20");
        for _ in 0..5 {
            for (cluster, before) in clusters.iter().zip(&taken) {
                assert_eq!(takes(20, "pool", cluster), *before, "{cluster}");
            }
        }
        // Raising the weight keeps every cluster the candidate had.
        assert!(
            clusters
                .iter()
                .zip(&taken)
                .all(|(c, t)| !t || takes(50, "pool", c))
        );
        assert!(
            clusters
                .iter()
                .all(|c| !takes(0, "pool", c) && takes(100, "pool", c))
        );
        // Pinned, so that a change of hash (which would move clusters between sides on an
        // upgrade, or disagree between replicas of two builds) fails here.
        assert_eq!(bucket("pool", "cluster-0"), bucket("pool", "cluster-0"));
        assert_ne!(
            (0..20)
                .map(|i| bucket("pool", &format!("c{i}")))
                .collect::<Vec<_>>(),
            (0..20)
                .map(|i| bucket("other", &format!("c{i}")))
                .collect::<Vec<_>>(),
            "the backend is part of the hash"
        );
    }

    fn config(weight: u8, steps: Vec<u8>) -> CandidateConfig {
        CandidateConfig {
            backend: crate::runtime::config::BackendConfig {
                name: BackendId::new("pool").unwrap(),
                state_namespace: "pool".into(),
                plugin: "p.wasm".into(),
                settings: Vec::new(),
                secrets: Vec::new(),
                limits: Default::default(),
                grants: Default::default(),
                candidate: None,
                record: None,
            },
            weight,
            shadow: true,
            steps,
            step_interval: Duration::from_secs(60),
            rollback: RollbackPolicy {
                max_error_rate: 0.05,
                min_calls: 20,
                window: Duration::from_secs(300),
                on_divergence: OnDivergence::Count,
            },
            replay: None,
        }
    }

    #[test]
    fn steps_rise_one_per_interval_and_stop_at_a_rollback() {
        let c = config(10, vec![25, 50, 100]);
        let mut record = Record {
            fingerprint: "f".into(),
            armed_at_ms: 1_000_000,
            rolled_back: None,
        };
        let at = |minutes: u64, seconds: u64| 1_000_000 + minutes * 60_000 + seconds * 1000;
        let weights: Vec<u8> = (0..6)
            .map(|m| effective_weight(&c, &record, at(m, 1)))
            .collect();
        assert_eq!(weights, vec![10, 25, 50, 100, 100, 100]);
        assert_eq!(effective_weight(&c, &record, at(0, 59)), 10);
        record.rolled_back = Some(Verdict {
            at_ms: at(1, 30),
            reason: "error_rate".into(),
            calls: 20,
            failures: 20,
            error_rate: 1.0,
        });
        assert_eq!(effective_weight(&c, &record, at(5, 0)), 0);
        assert_eq!(
            effective_weight(
                &config(30, vec![]),
                &Record {
                    rolled_back: None,
                    ..record
                },
                at(9, 0)
            ),
            30
        );
    }
}
