//! Each backend's recent activity as numbers a page can draw: calls by outcome since start, and
//! a ring of [`SAMPLES`] samples of [`INTERVAL_MS`] each (calls, errors, latency, the
//! candidate's calls and failures). Prometheus keeps the history for dashboards; this ring is
//! for `GET /admin/activity` and the console, which have no Prometheus to ask.
//!
//! Bounded: one ring per backend name (names come from the config), a fixed number of samples.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The length of one sample, in milliseconds.
pub const INTERVAL_MS: u64 = 10_000;
/// How many samples a backend's ring keeps: ten minutes.
pub const SAMPLES: usize = 60;

/// The outcomes that are the caller's mistake, not the plugin's: they count neither as errors
/// here nor against a candidate (as [`crate::rollout::counts_as_failure`] decides).
const CALLERS_OUTCOMES: [&str; 5] = [
    "ok",
    "invalid_request",
    "not_found",
    "conflict",
    "unsupported",
];

/// Whether a call that ended with `outcome` (a `plugin_calls_total` outcome label) counts as a
/// failure of the plugin.
pub fn is_failure(outcome: &str) -> bool {
    !CALLERS_OUTCOMES.contains(&outcome)
}

/// One interval of one backend's calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sample {
    /// Its start, in milliseconds since the Unix epoch (a multiple of `interval_ms`).
    pub at_ms: u64,
    /// Calls that ended in it (stable and candidate).
    pub calls: u64,
    /// Those that failed (any outcome but `ok` and the caller's mistakes).
    pub errors: u64,
    /// The mean time of its calls, in milliseconds.
    pub mean_ms: f64,
    /// The longest.
    pub max_ms: f64,
    /// The candidate's calls among them.
    pub candidate_calls: u64,
    /// The candidate's failed calls.
    pub candidate_failures: u64,
}

/// One backend's activity, as `GET /admin/activity` answers it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackendActivity {
    /// Plugin calls since the gateway started.
    pub calls: u64,
    /// Those that failed.
    pub errors: u64,
    /// Calls since start by outcome (`ok`, `trap`, `timeout`...).
    pub outcomes: BTreeMap<String, u64>,
    /// The samples of the last [`SAMPLES`] intervals that saw calls, oldest first.
    pub samples: Vec<Sample>,
}

#[derive(Default)]
struct Ring {
    outcomes: BTreeMap<&'static str, u64>,
    samples: VecDeque<Sample>,
}

impl Ring {
    /// Count a call (see [`Activity::record`]).
    fn add(&mut self, candidate: bool, outcome: &'static str, elapsed: Duration, now_ms: u64) {
        *self.outcomes.entry(outcome).or_default() += 1;
        let at_ms = now_ms - now_ms % INTERVAL_MS;
        if self.samples.back().is_none_or(|s| s.at_ms != at_ms) {
            if self.samples.len() >= SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back(Sample {
                at_ms,
                ..Sample::default()
            });
        }
        let Some(sample) = self.samples.back_mut() else {
            return;
        };
        let ms = elapsed.as_secs_f64() * 1000.0;
        sample.mean_ms = (sample.mean_ms * sample.calls as f64 + ms) / (sample.calls + 1) as f64;
        sample.max_ms = sample.max_ms.max(ms);
        sample.calls += 1;
        let failed = is_failure(outcome);
        sample.errors += u64::from(failed);
        if candidate {
            sample.candidate_calls += 1;
            sample.candidate_failures += u64::from(failed);
        }
    }
}

/// Every backend's ring, each behind its own lock: calls of different backends do not wait for
/// each other, and the map is written only when a backend makes its first call.
#[derive(Default)]
pub struct Activity {
    backends: RwLock<HashMap<String, Mutex<Ring>>>,
}

impl Activity {
    /// A call of `backend` (`candidate`: of its candidate) that ended `now_ms` with `outcome`
    /// after `elapsed`.
    pub fn record(
        &self,
        backend: &str,
        candidate: bool,
        outcome: &'static str,
        elapsed: Duration,
        now_ms: u64,
    ) {
        let known = self.backends.read().unwrap_or_else(|e| e.into_inner());
        if let Some(ring) = known.get(backend) {
            let mut ring = ring.lock().unwrap_or_else(|e| e.into_inner());
            ring.add(candidate, outcome, elapsed, now_ms);
            return;
        }
        drop(known);
        let mut backends = self.backends.write().unwrap_or_else(|e| e.into_inner());
        let ring = backends.entry(backend.to_string()).or_default();
        ring.get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .add(candidate, outcome, elapsed, now_ms);
    }

    /// `backend`'s activity at `now_ms`: its counts, and the samples of the last
    /// [`SAMPLES`] intervals.
    pub fn of(&self, backend: &str, now_ms: u64) -> BackendActivity {
        let backends = self.backends.read().unwrap_or_else(|e| e.into_inner());
        let Some(ring) = backends.get(backend) else {
            return BackendActivity::default();
        };
        let ring = ring.lock().unwrap_or_else(|e| e.into_inner());
        let since =
            (now_ms - now_ms % INTERVAL_MS).saturating_sub((SAMPLES as u64 - 1) * INTERVAL_MS);
        let outcomes: BTreeMap<String, u64> = ring
            .outcomes
            .iter()
            .map(|(outcome, count)| (outcome.to_string(), *count))
            .collect();
        BackendActivity {
            calls: outcomes.values().sum(),
            errors: outcomes
                .iter()
                .filter(|(outcome, _)| is_failure(outcome))
                .map(|(_, count)| count)
                .sum(),
            outcomes,
            samples: ring
                .samples
                .iter()
                .filter(|s| s.at_ms >= since)
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn calls_fall_in_their_interval_and_errors_are_the_plugins_failures() {
        let activity = Activity::default();
        let t = 1_000 * INTERVAL_MS;
        activity.record("pool", false, "ok", 2 * MS, t + 1);
        activity.record("pool", false, "not_found", 4 * MS, t + 2);
        activity.record("pool", true, "trap", 6 * MS, t + INTERVAL_MS - 1);
        activity.record("pool", true, "ok", 10 * MS, t + INTERVAL_MS);
        let shown = activity.of("pool", t + INTERVAL_MS);
        assert_eq!((shown.calls, shown.errors), (4, 1));
        assert_eq!(shown.outcomes["not_found"], 1);
        assert_eq!(shown.outcomes["trap"], 1);
        let [first, second] = &shown.samples[..] else {
            panic!("{shown:?}")
        };
        assert_eq!((first.at_ms, first.calls, first.errors), (t, 3, 1));
        assert_eq!((first.candidate_calls, first.candidate_failures), (1, 1));
        assert_eq!((first.mean_ms, first.max_ms), (4.0, 6.0));
        assert_eq!(
            (second.at_ms, second.calls, second.candidate_calls),
            (t + INTERVAL_MS, 1, 1)
        );
        assert_eq!(activity.of("other", t), BackendActivity::default());
    }

    #[test]
    fn the_ring_keeps_the_last_intervals_only() {
        let activity = Activity::default();
        for i in 0..(SAMPLES as u64 + 15) {
            activity.record("pool", false, "ok", MS, i * INTERVAL_MS);
        }
        let now = (SAMPLES as u64 + 14) * INTERVAL_MS;
        let shown = activity.of("pool", now);
        assert_eq!(
            shown.calls,
            SAMPLES as u64 + 15,
            "the counts are since start"
        );
        assert_eq!(shown.samples.len(), SAMPLES);
        assert_eq!(shown.samples[0].at_ms, 15 * INTERVAL_MS);
        // Samples older than the ring's span are not shown, even before new calls push them out.
        let later = activity.of("pool", now + 30 * INTERVAL_MS);
        assert_eq!(later.samples.len(), SAMPLES - 30);
    }
}
