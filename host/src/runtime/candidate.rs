//! A backend's candidate (`[backends.NAME.candidate]`): another build of the same provider beside
//! the stable plugin, with how much of the traffic it takes and when it is rolled back. Checked
//! here with the rest of the backend; `rollout` decides from it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::config::BackendConfig;
use super::limits::{self, RawLimits};
use crate::capability::settings;
use crate::config_file::{ConfigError, HumanDuration, Source};

/// The largest `rollback.min_calls`: the health window keeps at most this many calls.
pub const MAX_MIN_CALLS: u32 = 10_000;

/// How many steps a candidate may have.
pub const MAX_STEPS: usize = 100;

/// A candidate as configured.
#[derive(Debug, Clone)]
pub struct CandidateConfig {
    /// The candidate as a backend: the stable one's name, namespace and grants, its own plugin,
    /// and its own settings and limits when it sets them.
    pub backend: BackendConfig,
    /// Percent of the clusters whose provisions go to the candidate, before any step.
    pub weight: u8,
    /// Run the candidate's discover beside every stable one, in shadow mode, and compare.
    pub shadow: bool,
    /// The weights to rise through, one per `step_interval` while healthy (ascending).
    pub steps: Vec<u8>,
    /// How long each weight holds before the next step.
    pub step_interval: Duration,
    /// When the candidate is taken out.
    pub rollback: RollbackPolicy,
    /// Replay the backend's recorded calls against it before it serves (`replay`).
    pub replay: Option<ReplayGate>,
}

/// `replay = { max_differences = N }`: a candidate is first run on the backend's recorded calls
/// (the most recent `calls` of them); more than `max_differences` calls that differ or fail
/// roll it back before it has served anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayGate {
    /// How many differing or failed calls it may have.
    pub max_differences: u64,
    /// How many of the most recent recorded calls are replayed.
    pub calls: u64,
}

/// `replay` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReplayGate {
    max_differences: Spanned<i64>,
    calls: Option<Spanned<i64>>,
}

/// When a candidate is rolled back.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackPolicy {
    /// The share of failed calls over `window` above which it is rolled back.
    pub max_error_rate: f64,
    /// No verdict below this many calls in the window.
    pub min_calls: u32,
    /// How far back calls count.
    pub window: Duration,
    /// Whether shadow discoveries that differ count as failures.
    pub on_divergence: OnDivergence,
}

/// What a shadow discovery that differs from the stable one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDivergence {
    /// It is counted and shown.
    Count,
    /// It counts as a failed call too.
    Rollback,
}

/// `[backends.NAME.candidate]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCandidate {
    plugin: PathBuf,
    settings: Option<BTreeMap<String, Spanned<toml::Value>>>,
    limits: Option<RawLimits>,
    weight: Option<Spanned<i64>>,
    shadow: Option<bool>,
    steps: Option<Spanned<Vec<i64>>>,
    step_interval: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    rollback: RawRollback,
    replay: Option<Spanned<RawReplayGate>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRollback {
    max_error_rate: Option<Spanned<f64>>,
    min_calls: Option<Spanned<i64>>,
    window: Option<Spanned<HumanDuration>>,
    on_divergence: Option<OnDivergence>,
}

fn percent(value: &Spanned<i64>, key: String, source: &Source) -> Result<u8, ConfigError> {
    u8::try_from(*value.get_ref())
        .ok()
        .filter(|w| *w <= 100)
        .ok_or_else(|| source.invalid(value.span(), key, "must be a percentage from 0 to 100"))
}

fn duration(
    value: Option<Spanned<HumanDuration>>,
    default: Duration,
    key: String,
    source: &Source,
) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let d = value.get_ref().0;
    if d < Duration::from_millis(100) || d > Duration::from_secs(7 * 24 * 3600) {
        return Err(source.invalid(value.span(), key, "must be from 100ms to 7 days"));
    }
    Ok(d)
}

/// Check `stable`'s `candidate` table.
pub(crate) fn parse(
    raw: RawCandidate,
    span: Range<usize>,
    stable: &BackendConfig,
    source: &Source,
) -> Result<CandidateConfig, ConfigError> {
    let name = stable.name.as_str();
    let key = |k: &str| format!("backends.{name}.candidate.{k}");
    // Errors of the settings and limits tables name `backends.NAME.candidate.settings.KEY`.
    let scope = format!("{name}.candidate");
    let (settings, secrets) = match raw.settings {
        Some(raw) => settings::parse(raw, &scope, source)?,
        None => (stable.settings.clone(), stable.secrets.clone()),
    };
    let limits = match raw.limits {
        Some(raw) => limits::parse(raw, &scope, source)?,
        None => stable.limits.clone(),
    };
    let weight = match &raw.weight {
        Some(w) => percent(w, key("weight"), source)?,
        None => 0,
    };
    let mut steps = Vec::new();
    if let Some(raw_steps) = &raw.steps {
        if raw_steps.get_ref().len() > MAX_STEPS {
            return Err(source.invalid(
                raw_steps.span(),
                key("steps"),
                format!("at most {MAX_STEPS} steps"),
            ));
        }
        for step in raw_steps.get_ref() {
            let step = Spanned::new(raw_steps.span(), *step);
            let step = percent(&step, key("steps"), source)?;
            if steps.last().is_some_and(|last| *last >= step) || step <= weight {
                return Err(source.invalid(
                    raw_steps.span(),
                    key("steps"),
                    "steps must rise, each above `weight` and the step before",
                ));
            }
            steps.push(step);
        }
    }
    if raw.step_interval.is_some() && steps.is_empty() {
        let span = raw
            .step_interval
            .as_ref()
            .map_or(span.clone(), |s| s.span());
        return Err(source.invalid(span, key("step_interval"), "needs `steps`"));
    }
    if !steps.is_empty() && raw.step_interval.is_none() {
        let span = raw.steps.as_ref().map_or(span.clone(), |s| s.span());
        return Err(source.invalid(span, key("steps"), "needs `step_interval`"));
    }
    let step_interval = duration(
        raw.step_interval,
        Duration::from_secs(600),
        key("step_interval"),
        source,
    )?;
    let max_error_rate = match raw.rollback.max_error_rate {
        None => 0.05,
        Some(rate) if (0.0..=1.0).contains(rate.get_ref()) => *rate.get_ref(),
        Some(rate) => {
            return Err(source.invalid(
                rate.span(),
                key("rollback.max_error_rate"),
                "must be from 0.0 to 1.0",
            ));
        }
    };
    let min_calls = match raw.rollback.min_calls {
        None => 20,
        Some(n) => u32::try_from(*n.get_ref())
            .ok()
            .filter(|n| (1..=crate::runtime::candidate::MAX_MIN_CALLS).contains(n))
            .ok_or_else(|| {
                source.invalid(
                    n.span(),
                    key("rollback.min_calls"),
                    "must be from 1 to 10000",
                )
            })?,
    };
    let window = duration(
        raw.rollback.window,
        Duration::from_secs(300),
        key("rollback.window"),
        source,
    )?;
    let replay = match raw.replay {
        None => None,
        Some(gate) if stable.record.is_none() => {
            return Err(source.invalid(
                gate.span(),
                key("replay"),
                format!(
                    "replays the backend's recorded calls: give the backend a `record` table \
                     (`[backends.{name}.record]`)"
                ),
            ));
        }
        Some(gate) => {
            let gate = gate.into_inner();
            let max_differences = u64::try_from(*gate.max_differences.get_ref()).map_err(|_| {
                source.invalid(
                    gate.max_differences.span(),
                    key("replay.max_differences"),
                    "must be 0 or more",
                )
            })?;
            let calls = match gate.calls {
                None => 1000,
                Some(calls) => u64::try_from(*calls.get_ref())
                    .ok()
                    .filter(|n| (1..=crate::recording::MAX_CALLS).contains(n))
                    .ok_or_else(|| {
                        source.invalid(
                            calls.span(),
                            key("replay.calls"),
                            format!("must be from 1 to {}", crate::recording::MAX_CALLS),
                        )
                    })?,
            };
            Some(ReplayGate {
                max_differences,
                calls,
            })
        }
    };
    let backend = BackendConfig {
        name: stable.name.clone(),
        state_namespace: stable.state_namespace.clone(),
        plugin: source.path(raw.plugin),
        settings,
        secrets,
        limits,
        grants: stable.grants.clone(),
        candidate: None,
        // The candidate's live calls go to the backend's ring too, under their own digest.
        record: stable.record,
    };
    Ok(CandidateConfig {
        backend,
        weight,
        shadow: raw.shadow.unwrap_or(true),
        steps,
        step_interval,
        rollback: RollbackPolicy {
            max_error_rate,
            min_calls,
            window,
            on_divergence: raw.rollback.on_divergence.unwrap_or(OnDivergence::Count),
        },
        replay,
    })
}

/// The fingerprint of a candidate whose plugin has `digest`: the digest and the settings, so
/// that another build or other settings make another candidate.
pub fn fingerprint(digest: &str, settings: &[settings::Setting]) -> String {
    let mut hash = Sha256::new();
    hash.update(digest.as_bytes());
    for setting in settings {
        hash.update([0]);
        hash.update(setting.key.as_bytes());
        hash.update([0]);
        hash.update(setting.json.to_string().as_bytes());
    }
    format!("sha256:{:x}", hash.finalize())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(candidate: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[backends.pool]\nplugin = \"pool.wasm\"\n[backends.pool.settings]\nsize = 3\n\
             [backends.pool.limits]\ntimeout = \"2s\"\n\n[backends.pool.candidate]\n{candidate}\n\
             [[routes]]\nbackend = \"pool\"\n"
        );
        Config::parse(Path::new("/etc/gw/gateway.toml"), &text)
    }

    fn candidate(config: &Config) -> &CandidateConfig {
        config
            .backends
            .values()
            .next()
            .unwrap()
            .candidate
            .as_deref()
            .unwrap()
    }

    #[test]
    fn a_candidate_takes_the_stable_settings_limits_and_namespace_unless_it_sets_its_own() {
        let config = parse("plugin = \"pool-2.wasm\"\nweight = 10\n").unwrap();
        let c = candidate(&config);
        assert_eq!(c.backend.plugin, Path::new("/etc/gw/pool-2.wasm"));
        assert_eq!(c.backend.state_namespace, "pool");
        assert_eq!(c.backend.settings[0].json, serde_json::json!(3));
        assert_eq!(c.backend.limits.timeout, Duration::from_secs(2));
        assert_eq!((c.weight, c.shadow), (10, true));
        assert_eq!(c.rollback.min_calls, 20);
        assert_eq!(c.rollback.on_divergence, OnDivergence::Count);

        let config = parse(
            "plugin = \"pool-2.wasm\"\nsettings = { size = 5 }\nsteps = [25, 50, 100]\n\
             step_interval = \"1m\"\nshadow = false\n[backends.pool.candidate.limits]\n\
             timeout = \"1s\"\n[backends.pool.candidate.rollback]\nmax_error_rate = 0.1\n\
             min_calls = 10\nwindow = \"30s\"\non_divergence = \"rollback\"\n",
        )
        .unwrap();
        let c = candidate(&config);
        assert_eq!(c.backend.settings[0].json, serde_json::json!(5));
        assert_eq!(c.backend.limits.timeout, Duration::from_secs(1));
        assert_eq!(c.steps, vec![25, 50, 100]);
        assert_eq!(c.step_interval, Duration::from_secs(60));
        assert!(!c.shadow);
        assert_eq!(
            c.rollback,
            RollbackPolicy {
                max_error_rate: 0.1,
                min_calls: 10,
                window: Duration::from_secs(30),
                on_divergence: OnDivergence::Rollback,
            }
        );
    }

    #[test]
    fn bad_candidate_values_are_errors_naming_key_and_line() {
        for (text, key, line) in [
            (
                "plugin = \"p.wasm\"\nweight = 101\n",
                "backends.pool.candidate.weight",
                10,
            ),
            (
                "plugin = \"p.wasm\"\nsteps = [50, 40]\nstep_interval = \"1m\"\n",
                "backends.pool.candidate.steps",
                10,
            ),
            (
                "plugin = \"p.wasm\"\nsteps = [50]\n",
                "backends.pool.candidate.steps",
                10,
            ),
            (
                "plugin = \"p.wasm\"\n[backends.pool.candidate.rollback]\nmax_error_rate = 1.5\n",
                "backends.pool.candidate.rollback.max_error_rate",
                11,
            ),
            (
                "plugin = \"p.wasm\"\n[backends.pool.candidate.rollback]\nmin_calls = 0\n",
                "backends.pool.candidate.rollback.min_calls",
                11,
            ),
            (
                "plugin = \"p.wasm\"\n[backends.pool.candidate.rollback]\nwindow = \"1ms\"\n",
                "backends.pool.candidate.rollback.window",
                11,
            ),
            (
                "plugin = \"p.wasm\"\n[backends.pool.candidate.limits]\ntimeout = \"0s\"\n",
                "backends.pool.candidate.limits.timeout",
                11,
            ),
            (
                "plugin = \"p.wasm\"\nweigth = 5\n",
                "unknown field `weigth`",
                10,
            ),
            // A replay needs a recording: the backend of these configs records nothing.
            (
                "plugin = \"p.wasm\"\nreplay = { max_differences = 0 }\n",
                "backends.pool.candidate.replay",
                10,
            ),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
            assert!(error.contains(&format!("line {line}")), "{text}: {error}");
        }
    }

    #[test]
    fn the_fingerprint_changes_with_the_digest_or_the_settings_only() {
        let config = parse("plugin = \"pool-2.wasm\"\n").unwrap();
        let settings = &candidate(&config).backend.settings;
        let a = fingerprint("sha256:aa", settings);
        assert_eq!(a, fingerprint("sha256:aa", settings));
        assert_ne!(a, fingerprint("sha256:bb", settings));
        let other = parse("plugin = \"pool-2.wasm\"\nsettings = { size = 4 }\n").unwrap();
        assert_ne!(
            a,
            fingerprint("sha256:aa", &candidate(&other).backend.settings)
        );
    }
}
