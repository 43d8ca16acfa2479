//! Replay: recorded calls ([`crate::recording`]) run again against a build, offline, and what
//! it does compared with what the recorded build did. Each call runs in [`Mode::Replay`]: its
//! state reads are answered from the state the recording saw, its requests from the recorded
//! responses, and nothing reaches a store or the network. A call is `same`; `different`, with
//! each difference at a path (`/answer/...`, `/state/KEY/...`, `/requests/N/...`, `/reads/KEY`)
//! and both sides; or `failed` (the build crashed or timed out, or the entry cannot be
//! replayed). Differences whose path an `--ignore` glob names (or lies under) do not count.
//!
//! The engine takes a loaded backend, so the CLI (`platform-gateway replay`) and a candidate's
//! gate load it as they each must.

use std::collections::BTreeMap;
use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::capability::call::{CallContext, Event};
use crate::capability::tape::{self, Unrecorded};
use crate::contract::Answer;
use crate::recording::{self, Entry};
use crate::runtime::{Backend, CallError};

/// `--ignore` rules: globs over difference paths (`*` stays within a segment, `**` does not).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    globs: Vec<(String, GlobMatcher)>,
}

impl Rules {
    /// Rules from globs such as `/answer/ok/node_ids/*`; a bad glob is named.
    pub fn new(globs: &[String]) -> Result<Rules, String> {
        let globs = globs
            .iter()
            .map(|glob| {
                let matcher = GlobBuilder::new(glob)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("--ignore `{glob}`: {e}"))?
                    .compile_matcher();
                Ok((glob.clone(), matcher))
            })
            .collect::<Result<_, String>>()?;
        Ok(Rules { globs })
    }

    /// Whether `path` or a path above it is ignored.
    pub fn ignores(&self, path: &str) -> bool {
        let mut prefix = String::new();
        for segment in path.split('/').skip(1) {
            prefix.push('/');
            prefix.push_str(segment);
            if self.globs.iter().any(|(_, glob)| glob.is_match(&prefix)) {
                return true;
            }
        }
        false
    }
}

/// One way the replay differs from the recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// Where: a JSON pointer into `answer`, `state` (by key), `requests` (by the replay's
    /// order) or `reads` (keys the recording never saw).
    pub path: String,
    /// What the recording has there (`null`: nothing).
    pub recorded: Value,
    /// What the replay has there (`null`: nothing).
    pub replayed: Value,
}

/// A replayed call's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Same answer, same state writes, same requests.
    Same,
    /// At least one difference not ignored.
    Different,
    /// The build crashed or timed out, or the entry cannot be replayed.
    Failed,
}

/// One call of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallReport {
    /// The entry's place in its ring.
    pub seq: u64,
    /// The operation.
    pub operation: String,
    /// When it was recorded.
    pub at: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The differences that count.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub differences: Vec<Difference>,
    /// How many differences `--ignore` rules set aside.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub ignored: usize,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A replay's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Calls replayed.
    pub calls: usize,
    /// Calls that did the same.
    pub same: usize,
    /// Calls that differed.
    pub different: usize,
    /// Calls that failed.
    pub failed: usize,
    /// Differences set aside by `--ignore` rules.
    pub ignored: usize,
    /// The calls that differed or failed, in order.
    pub findings: Vec<CallReport>,
}

impl Report {
    /// Add one call's report.
    pub fn add(&mut self, call: CallReport) {
        self.calls += 1;
        self.ignored += call.ignored;
        match call.verdict {
            Verdict::Same => self.same += 1,
            Verdict::Different => self.different += 1,
            Verdict::Failed => self.failed += 1,
        }
        if call.verdict != Verdict::Same {
            self.findings.push(call);
        }
    }

    /// Whether every call did the same.
    pub fn passed(&self) -> bool {
        self.different == 0 && self.failed == 0
    }

    /// The report as text: each finding with its differences, then the summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for call in &self.findings {
            let verdict = match call.verdict {
                Verdict::Same => "same",
                Verdict::Different => "different",
                Verdict::Failed => "failed",
            };
            out.push_str(&format!(
                "call {} {} (recorded {}): {verdict}\n",
                call.seq, call.operation, call.at
            ));
            if let Some(error) = &call.error {
                out.push_str(&format!("  {error}\n"));
            }
            for difference in &call.differences {
                out.push_str(&format!(
                    "  {}: {} -> {}\n",
                    difference.path,
                    shown(&difference.recorded),
                    shown(&difference.replayed)
                ));
            }
        }
        out.push_str(&format!(
            "{} calls: {} same, {} different, {} failed",
            self.calls, self.same, self.different, self.failed
        ));
        if self.ignored > 0 {
            out.push_str(&format!(" ({} differences ignored)", self.ignored));
        }
        out.push('\n');
        out
    }
}

/// A value as the text report shows it (`(none)` for nothing), cut to a line.
fn shown(value: &Value) -> String {
    let text = match value {
        Value::Null => "(none)".to_string(),
        other => other.to_string(),
    };
    if text.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}...", &text[..cut])
    } else {
        text
    }
}

/// Replay `entry` against `backend` and compare.
pub async fn replay(backend: &Arc<Backend>, entry: &Entry, rules: &Rules) -> CallReport {
    let mut report = CallReport {
        seq: entry.seq,
        operation: entry.operation.clone(),
        at: entry.at.clone(),
        verdict: Verdict::Failed,
        differences: Vec::new(),
        ignored: 0,
        error: None,
    };
    if entry.format != recording::FORMAT {
        report.error = Some(format!(
            "the entry's format is {}; this gateway replays format {}",
            entry.format,
            recording::FORMAT
        ));
        return report;
    }
    if entry.tape.cut {
        report.error = Some(
            "the recording of this call is incomplete (its values or bodies were over the \
             tape's bound): it cannot be replayed"
                .into(),
        );
        return report;
    }
    let call = CallContext::replay(&entry.tape);
    let result = match entry.operation.as_str() {
        "discover" => backend
            .discover_in(call.clone())
            .await
            .map(Answer::Clusters),
        "provision" => match recording::provision_request(&entry.request) {
            Ok(request) => backend
                .provision_in(request, call.clone())
                .await
                .map(Answer::Provisioned),
            Err(e) => return failed(report, e),
        },
        "deprovision" => match recording::deprovision_request(&entry.request) {
            Ok(request) => backend
                .deprovision_in(request, call.clone())
                .await
                .map(|()| Answer::Deprovisioned),
            Err(e) => return failed(report, e),
        },
        other => return failed(report, format!("unknown operation `{other}`")),
    };
    if let Err(error) = &result
        && !matches!(error, CallError::Plugin(_))
    {
        return failed(report, format!("the build {error}"));
    }
    let answer = backend.answer_json(&result);
    let transcript = call.transcript().redacted(|s| backend.redact(s));
    let replayed = call.replayed().expect("a replay call has its recording");

    let mut differences = Vec::new();
    diff("/answer", &entry.answer, &answer, &mut differences);
    diff(
        "/state",
        &writes(&entry.events),
        &writes(&transcript.events),
        &mut differences,
    );
    requests(entry, replayed, &mut differences);
    for unrecorded in replayed.unrecorded() {
        if let Unrecorded::Read { key } = unrecorded {
            differences.push(Difference {
                path: format!("/reads/{}", escape(&key)),
                recorded: Value::Null,
                replayed: json!("read, but the recording never saw this key (answered: not set)"),
            });
        }
    }
    let (ignored, kept): (Vec<_>, Vec<_>) = differences
        .into_iter()
        .partition(|d| rules.ignores(&d.path));
    report.ignored = ignored.len();
    report.verdict = if kept.is_empty() {
        Verdict::Same
    } else {
        Verdict::Different
    };
    report.differences = kept;
    report
}

fn failed(mut report: CallReport, error: String) -> CallReport {
    report.verdict = Verdict::Failed;
    report.error = Some(error);
    report
}

/// A JSON pointer segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The differences between `recorded` and `replayed` under `base`, one per changed leaf or
/// subtree (RFC 6902's diff, both sides shown).
fn diff(base: &str, recorded: &Value, replayed: &Value, out: &mut Vec<Difference>) {
    for operation in json_patch::diff(recorded, replayed).iter() {
        let path = operation.path().to_string();
        out.push(Difference {
            path: format!("{base}{path}"),
            recorded: recorded.pointer(&path).cloned().unwrap_or(Value::Null),
            replayed: replayed.pointer(&path).cloned().unwrap_or(Value::Null),
        });
    }
}

/// What a call's transcript left in the state: each key written, with its last value (as
/// JSON when it is JSON text), or its version when the value was not shown; `null` when
/// deleted.
fn writes(events: &[Event]) -> Value {
    let mut state = BTreeMap::new();
    for event in events {
        if let Event::StateWrite {
            key,
            value,
            new_version,
            written: true,
            ..
        } = event
        {
            let shown = match (value, new_version.as_str()) {
                (_, "absent") => Value::Null,
                (Some(text), _) => {
                    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
                }
                (None, version) => json!({ "version": version }),
            };
            state.insert(key.clone(), shown);
        }
    }
    json!(state)
}

/// The requests' differences: a request the recording lacks (with the body diff against the
/// recorded one of the same method and URL, if any), and recorded requests the replay never
/// made.
fn requests(entry: &Entry, replayed: &tape::Replayed, out: &mut Vec<Difference>) {
    for (n, (method, url, body, answered)) in replayed.requests().into_iter().enumerate() {
        let recorded = answered.and_then(|i| entry.tape.http.get(i));
        match recorded {
            Some(recorded) if recorded.request_body.value.bytes() == body.bytes() => {}
            Some(recorded) => diff(
                &format!("/requests/{n}/body"),
                &structured(&recorded.request_body.value.bytes()),
                &structured(&body.bytes()),
                out,
            ),
            None => out.push(Difference {
                path: format!("/requests/{n}"),
                recorded: Value::Null,
                replayed: json!(format!("{method} {url}: not in the recording, not sent")),
            }),
        }
    }
    for i in replayed.unused() {
        let exchange = &entry.tape.http[i];
        out.push(Difference {
            path: format!("/requests/unmade/{i}"),
            recorded: json!(format!("{} {}", exchange.method, exchange.url)),
            replayed: Value::Null,
        });
    }
}

/// A body as something to diff field by field: JSON as itself, a form
/// (`a=1&b=2`, as the EC2 query API sends) as an object, anything else as text.
fn structured(body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body);
    if let Ok(value) = serde_json::from_str::<Value>(&text) {
        return value;
    }
    let looks_like_form = !text.is_empty()
        && !text.contains(char::is_whitespace)
        && text.split('&').all(|pair| pair.contains('='));
    if looks_like_form {
        let fields: serde_json::Map<String, Value> = text
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| {
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(&s.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned()
                };
                (decode(k), Value::String(decode(v)))
            })
            .collect();
        return Value::Object(fields);
    }
    Value::String(text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_rules_match_a_path_or_one_above_it_and_stars_stay_in_a_segment() {
        let rules = Rules::new(&[
            "/answer/ok/node_ids".into(),
            "/requests/*/body/InstanceType".into(),
        ])
        .unwrap();
        assert!(rules.ignores("/answer/ok/node_ids"));
        assert!(rules.ignores("/answer/ok/node_ids/0"));
        assert!(!rules.ignores("/answer/ok/count"));
        assert!(rules.ignores("/requests/3/body/InstanceType"));
        assert!(!rules.ignores("/requests/3/body/ImageId"));
        assert!(!rules.ignores("/requests/3/x/body/InstanceType"));
        assert!(Rules::new(&["/a/[".into()]).is_err());
    }

    #[test]
    fn differences_name_the_changed_fields_with_both_sides() {
        let mut out = Vec::new();
        diff(
            "/answer",
            &json!({ "ok": { "count": 1, "node_ids": ["m1"] } }),
            &json!({ "ok": { "count": 1, "node_ids": ["m3"] } }),
            &mut out,
        );
        assert_eq!(
            out,
            [Difference {
                path: "/answer/ok/node_ids/0".into(),
                recorded: json!("m1"),
                replayed: json!("m3"),
            }]
        );
        let form = structured(
            b"Action=RunInstances&InstanceType=m5.large&TagSpecification.1.Tag.1.Value=a%20b",
        );
        assert_eq!(form["InstanceType"], "m5.large");
        assert_eq!(form["TagSpecification.1.Tag.1.Value"], "a b");
        assert_eq!(structured(b"plain text"), json!("plain text"));
    }
}
