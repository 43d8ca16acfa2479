//! A candidate's health over its window: its calls, which failed, and which shadow discoveries
//! differed, kept per replica, bounded by [`MAX_MIN_CALLS`] entries.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::runtime::candidate::{MAX_MIN_CALLS, OnDivergence, RollbackPolicy};

/// What one candidate call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered (a plugin's 4xx answer included).
    Ok,
    /// It failed as the API answers with 5xx.
    Failed,
    /// A shadow discovery answered, differently from the stable one.
    Diverged,
}

/// The candidate's calls in the window, oldest first.
#[derive(Debug, Default)]
pub struct Health {
    calls: VecDeque<(Instant, Outcome)>,
}

/// The window's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tally {
    /// Calls in the window.
    pub calls: u64,
    /// Those that count as failures (divergences included when they roll back).
    pub failures: u64,
    /// Those that were divergences.
    pub divergences: u64,
}

impl Tally {
    /// `failures / calls`, 0 without calls.
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 / self.calls as f64
        }
    }
}

impl Health {
    /// Count a call that ended `now`.
    pub fn push(&mut self, now: Instant, outcome: Outcome) {
        if self.calls.len() >= MAX_MIN_CALLS as usize {
            self.calls.pop_front();
        }
        self.calls.push_back((now, outcome));
    }

    /// Forget every call (the candidate was re-armed).
    pub fn clear(&mut self) {
        self.calls.clear();
    }

    /// The window's numbers under `policy`, dropping the calls older than its window.
    pub fn tally(&mut self, now: Instant, policy: &RollbackPolicy) -> Tally {
        let window: Duration = policy.window;
        while let Some((at, _)) = self.calls.front()
            && now.saturating_duration_since(*at) > window
        {
            self.calls.pop_front();
        }
        let mut tally = Tally::default();
        for (_, outcome) in &self.calls {
            tally.calls += 1;
            match outcome {
                Outcome::Ok => {}
                Outcome::Failed => tally.failures += 1,
                Outcome::Diverged => {
                    tally.divergences += 1;
                    if policy.on_divergence == OnDivergence::Rollback {
                        tally.failures += 1;
                    }
                }
            }
        }
        tally
    }

    /// Whether the window's numbers take the candidate out: at least `min_calls`, and a share
    /// of failures above `max_error_rate`.
    pub fn verdict(&mut self, now: Instant, policy: &RollbackPolicy) -> Option<Tally> {
        let tally = self.tally(now, policy);
        (tally.calls >= u64::from(policy.min_calls) && tally.error_rate() > policy.max_error_rate)
            .then_some(tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on_divergence: OnDivergence) -> RollbackPolicy {
        RollbackPolicy {
            max_error_rate: 0.2,
            min_calls: 10,
            window: Duration::from_secs(60),
            on_divergence,
        }
    }

    #[test]
    fn no_verdict_below_min_calls_then_one_above_the_error_rate() {
        let (mut health, now, p) = (
            Health::default(),
            Instant::now(),
            policy(OnDivergence::Count),
        );
        for _ in 0..9 {
            health.push(now, Outcome::Failed);
        }
        assert_eq!(
            health.verdict(now, &p),
            None,
            "nine calls are below min_calls"
        );
        health.push(now, Outcome::Failed);
        let tally = health.verdict(now, &p).expect("ten failures roll back");
        assert_eq!((tally.calls, tally.failures), (10, 10));
    }

    #[test]
    fn a_rate_at_the_limit_passes_and_old_calls_leave_the_window() {
        let (mut health, now, p) = (
            Health::default(),
            Instant::now(),
            policy(OnDivergence::Count),
        );
        for i in 0..10 {
            health.push(now, if i < 2 { Outcome::Failed } else { Outcome::Ok });
        }
        assert_eq!(health.verdict(now, &p), None, "2 in 10 is not above 0.2");
        health.push(now, Outcome::Failed);
        assert!(health.verdict(now, &p).is_some(), "3 in 11 is");
        let later = now + Duration::from_secs(61);
        assert_eq!(health.tally(later, &p).calls, 0);
    }

    #[test]
    fn divergences_fail_only_when_they_roll_back() {
        let now = Instant::now();
        for (on, rolled) in [(OnDivergence::Count, false), (OnDivergence::Rollback, true)] {
            let mut health = Health::default();
            for _ in 0..10 {
                health.push(now, Outcome::Diverged);
            }
            assert_eq!(health.verdict(now, &policy(on)).is_some(), rolled, "{on:?}");
            assert_eq!(health.tally(now, &policy(on)).divergences, 10);
        }
    }

    #[test]
    fn the_window_keeps_a_bounded_number_of_calls() {
        let (mut health, now) = (Health::default(), Instant::now());
        for _ in 0..MAX_MIN_CALLS + 5 {
            health.push(now, Outcome::Ok);
        }
        let tally = health.tally(now, &policy(OnDivergence::Count));
        assert_eq!(tally.calls, u64::from(MAX_MIN_CALLS));
    }
}
