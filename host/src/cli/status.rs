//! `status`: what a running gateway serves, read from its admin API (`/admin/generation`,
//! `/admin/backends`, `/admin/routes`, `/metrics`) as the typed answers the API serves, for a
//! person at a terminal or, as JSON, for a script.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::admin_client::{Access, Client, TIMEOUT};
use super::{Outcome, Output, OutputArgs};
use crate::api::answers;
use crate::config::DiscoveryPolicy;
use crate::reload::ReloadStatus;

#[derive(Args)]
pub(super) struct StatusArgs {
    /// The gateway's admin API.
    #[arg(
        long,
        env = "PLATFORM_GATEWAY_ADMIN",
        default_value = "http://127.0.0.1:9090",
        value_name = "URL"
    )]
    admin: String,
    /// The admin token (`[admin] token`), sent as `Authorization: Bearer`.
    #[arg(
        long,
        env = "PLATFORM_GATEWAY_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    admin_token: Option<String>,
    /// The CA bundle (PEM) that signed an `https://` admin API's certificate [default: the
    /// public web roots].
    #[arg(long, env = "PLATFORM_GATEWAY_ADMIN_CA", value_name = "FILE")]
    admin_ca: Option<PathBuf>,
    /// A client certificate chain (PEM, leaf first) to present to an `https://` admin API
    /// that requires one (`[admin] tls.client_ca`); with `--admin-key`.
    #[arg(
        long,
        env = "PLATFORM_GATEWAY_ADMIN_CERT",
        value_name = "FILE",
        requires = "admin_key"
    )]
    admin_cert: Option<PathBuf>,
    /// The private key (PEM) of `--admin-cert`.
    #[arg(
        long,
        env = "PLATFORM_GATEWAY_ADMIN_KEY",
        value_name = "FILE",
        requires = "admin_cert"
    )]
    admin_key: Option<PathBuf>,
    #[command(flatten)]
    pub(super) output: OutputArgs,
}

impl StatusArgs {
    /// The credentials these flags give.
    pub(super) fn access(&self) -> Access<'_> {
        Access {
            token: self.admin_token.as_deref(),
            ca: self.admin_ca.as_deref(),
            cert: self.admin_cert.as_deref(),
            key: self.admin_key.as_deref(),
        }
    }

    /// The admin API's base URL.
    pub(super) fn admin(&self) -> &str {
        &self.admin
    }
}

pub(super) fn run(args: StatusArgs) -> Outcome {
    let runtime = super::runtime(true)?;
    let status = runtime.block_on(fetch(&args.admin, &args.access()))?;
    match args.output.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Output::Text => print!("{}", status.render()),
    }
    Ok(ExitCode::SUCCESS)
}

/// One backend as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct BackendStatus {
    /// The backend's name.
    name: String,
    /// Its plugin file.
    plugin: String,
    /// `sha256:...` of the plugin.
    digest: String,
    /// Its call slots (`limits.concurrency`).
    concurrency: u64,
    /// Plugin calls since the gateway started.
    calls: u64,
    /// Those whose outcome was not `ok`.
    errors: u64,
    /// Calls running now.
    in_flight: u64,
    /// Calls waiting for a slot now.
    queued: u64,
    /// Its candidate, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate: Option<answers::CandidateInfo>,
}

/// What a running gateway serves.
#[derive(Debug, Clone, Serialize)]
struct Status {
    /// The admin API's base URL.
    admin: String,
    /// `GET /admin/generation`.
    generation: ReloadStatus,
    /// Each backend, from `/admin/backends` and `/metrics`.
    backends: Vec<BackendStatus>,
    /// `GET /admin/routes`.
    routes: answers::Routes,
}

/// Read the status of the gateway whose admin API is at `admin` (`http://host:port` or
/// `https://host:port`).
async fn fetch(admin: &str, access: &Access<'_>) -> anyhow::Result<Status> {
    tokio::time::timeout(TIMEOUT, read(admin, access))
        .await
        .map_err(|_| anyhow::anyhow!("{admin} did not answer within {TIMEOUT:?}"))?
}

async fn read(admin: &str, access: &Access<'_>) -> anyhow::Result<Status> {
    let client = Client::new(admin, access)?;
    let generation = client.json("/admin/generation").await?;
    let backends: answers::Backends = client.json("/admin/backends").await?;
    let routes = client.json("/admin/routes").await?;
    let metrics = Samples::parse(&client.text("/metrics").await?);
    Ok(Status {
        admin: client.base().to_string(),
        generation,
        backends: backend_rows(&backends, &metrics),
        routes,
    })
}

/// The samples of a Prometheus text exposition: (name, labels) -> value. Enough of the format
/// for what the gateway writes (label values may hold escaped quotes).
#[derive(Debug, Default)]
struct Samples(Vec<(String, BTreeMap<String, String>, f64)>);

impl Samples {
    fn parse(text: &str) -> Samples {
        Samples(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(sample)
                .collect(),
        )
    }

    /// The sum of `name`'s samples whose labels satisfy `keep`.
    fn sum(&self, name: &str, keep: impl Fn(&BTreeMap<String, String>) -> bool) -> f64 {
        self.0
            .iter()
            .filter(|(n, labels, _)| n == name && keep(labels))
            .map(|(_, _, v)| v)
            .sum()
    }
}

/// One sample line: `name{k="v",...} value [timestamp]`.
fn sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(mut rest) = rest.strip_prefix('{') {
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                break after;
            }
            let (key, after) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.trim().to_string(), value);
            rest = &after[end + 1..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name.to_string(), labels, value))
}

fn backend_rows(backends: &answers::Backends, metrics: &Samples) -> Vec<BackendStatus> {
    backends
        .backends
        .iter()
        .map(|b| {
            let name = b.name.clone();
            let of = |labels: &BTreeMap<String, String>| labels.get("backend") == Some(&name);
            let count = |v: f64| v.max(0.0) as u64;
            BackendStatus {
                plugin: b.plugin.clone(),
                digest: b.digest.clone(),
                concurrency: b.limits.concurrency,
                calls: count(metrics.sum("platform_gateway_plugin_calls_total", of)),
                errors: count(metrics.sum("platform_gateway_plugin_calls_total", |l| {
                    of(l) && l.get("outcome").map(String::as_str) != Some("ok")
                })),
                in_flight: count(metrics.sum("platform_gateway_plugin_calls_in_flight", of)),
                queued: count(metrics.sum("platform_gateway_plugin_calls_queued", of)),
                candidate: b.candidate.clone(),
                name,
            }
        })
        .collect()
}

/// One line of a backend's candidate: its state, weight, window and shadow comparisons.
fn candidate_line(backend: &str, c: &answers::CandidateInfo) -> String {
    let digest = c.digest.get(..19).unwrap_or(&c.digest);
    let state = serde_json::to_value(c.state)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let mut line = format!(
        "candidate of {backend}: {} ({digest}...) {state}, weight {}% of {}%, {} calls, {} failed \
         ({:.1}%), shadow {}/{} differ",
        c.plugin,
        c.weight,
        c.configured_weight
            .max(c.steps.last().copied().unwrap_or(0)),
        c.calls,
        c.failures,
        c.error_rate * 100.0,
        c.shadow_different,
        c.shadow_compared,
    );
    if let Some(gate) = &c.replay {
        match &gate.report {
            Some(r) => line.push_str(&format!(
                ", replay {} ({} of {} recorded calls differ or fail, at most {})",
                gate.state,
                r.different + r.failed,
                r.calls,
                r.max_differences
            )),
            None => line.push_str(&format!(", replay {}", gate.state)),
        }
    }
    if let Some(v) = &c.rolled_back {
        let what = if v.reason == "replay" {
            "replayed calls differed or failed"
        } else {
            "calls failed"
        };
        line.push_str(&format!(
            "; rolled back ({}: {} of {} {what})",
            v.reason, v.failures, v.calls
        ));
    }
    line
}

impl Status {
    /// The status as lines for a terminal.
    fn render(&self) -> String {
        let g = &self.generation;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "gateway at {}: generation {}, loaded at {} in {} ms; {} reloads, {} refused",
            self.admin, g.generation, g.loaded_at, g.load_ms, g.reloads, g.refused,
        );
        match &g.last_refused {
            Some(refusal) => {
                let _ = writeln!(out, "last refused reload, at {}:", refusal.at);
                for line in refusal.reason.lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            None => out.push_str("no refused reload\n"),
        }
        if !g.restart_needed.is_empty() {
            let _ = writeln!(
                out,
                "changed, taking effect at restart: {}",
                g.restart_needed.join(", ")
            );
        }

        out.push('\n');
        let mut rows = vec![
            [
                "BACKEND",
                "CALLS",
                "ERRORS",
                "IN FLIGHT",
                "QUEUED",
                "SLOTS",
                "PLUGIN",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for b in &self.backends {
            let digest = b.digest.get(..19).unwrap_or(&b.digest);
            rows.push(vec![
                b.name.clone(),
                b.calls.to_string(),
                b.errors.to_string(),
                b.in_flight.to_string(),
                b.queued.to_string(),
                b.concurrency.to_string(),
                format!("{} ({digest}...)", b.plugin),
            ]);
        }
        table(
            &mut out,
            &rows,
            &[false, true, true, true, true, true, false],
        );
        for b in &self.backends {
            if let Some(c) = &b.candidate {
                let _ = writeln!(out, "{}", candidate_line(&b.name, c));
            }
        }

        out.push('\n');
        let mut rows = vec![
            ["ROUTE", "CONDITIONS", "BACKEND"]
                .map(String::from)
                .to_vec(),
        ];
        for route in &self.routes.routes {
            rows.push(vec![
                route.name.clone(),
                route.conditions.clone(),
                route.backend.clone(),
            ]);
        }
        table(&mut out, &rows, &[false, false, false]);
        let policy = match self.routes.discovery.on_backend_failure {
            DiscoveryPolicy::Fail => "fail",
            DiscoveryPolicy::Partial => "partial",
        };
        let _ = writeln!(out, "discovery: on_backend_failure = {policy}");
        out
    }
}

/// Rows in columns two spaces apart; `right`: which columns align right (numbers).
fn table(out: &mut String, rows: &[Vec<String>], right: &[bool]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let last = c + 1 == row.len();
                match right.get(c) {
                    Some(true) => format!("{cell:>w$}", w = widths[c]),
                    _ if last => cell.clone(),
                    _ => format!("{cell:<w$}", w = widths[c]),
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    const METRICS: &str = r#"# HELP platform_gateway_plugin_calls_total Plugin calls.
# TYPE platform_gateway_plugin_calls_total counter
platform_gateway_plugin_calls_total{backend="pool",operation="provision",outcome="ok"} 5
platform_gateway_plugin_calls_total{backend="pool",operation="discover",outcome="ok"} 2
platform_gateway_plugin_calls_total{backend="pool",operation="provision",outcome="unavailable"} 1
platform_gateway_plugin_calls_total{backend="pool-2",operation="provision",outcome="trap"} 3
platform_gateway_plugin_calls_in_flight{backend="pool"} 1
platform_gateway_plugin_calls_queued{backend="pool"} 4
platform_gateway_http_requests_total{endpoint="/a\"b\\c",method="GET",status="200"} 1
"#;

    #[test]
    fn samples_are_read_with_their_labels_even_with_escaped_quotes() {
        let samples = Samples::parse(METRICS);
        assert_eq!(samples.0.len(), 7);
        let (name, labels, value) = &samples.0[6];
        assert_eq!(name, "platform_gateway_http_requests_total");
        assert_eq!(labels["endpoint"], "/a\"b\\c");
        assert_eq!(labels["method"], "GET");
        assert_eq!(*value, 1.0);
        assert_eq!(sample("up 1"), Some(("up".into(), BTreeMap::new(), 1.0)));
        assert_eq!(sample("broken{a=\"1\" 2"), None);
    }

    #[test]
    fn backends_get_their_calls_errors_and_slots_and_render_as_a_table() {
        // The answers as the admin API writes them, read through the shared types.
        let backend = |name: &str, plugin: &str, digest: &str, concurrency: u64| {
            json!({"name": name, "plugin": plugin, "digest": digest,
                "contract": "replicante:platform@0.2.0",
                "limits": {"memory_bytes": 1, "timeout_ms": 1, "concurrency": concurrency,
                    "state": {"keys": 1, "bytes": 1, "value_bytes": 1, "writes_per_second": 1}}})
        };
        let backends = json!({"generation": 3, "backends": [
            backend("pool", "plugins/pool.wasm", "sha256:0123456789abcdef0123", 16),
            backend("pool-2", "p2.wasm", "sha256:ff", 2),
            backend("idle", "i.wasm", "sha256:ee", 1),
        ]});
        let backends = serde_json::from_value(backends).unwrap();
        let rows = backend_rows(&backends, &Samples::parse(METRICS));
        let counts: Vec<(u64, u64, u64, u64)> = rows
            .iter()
            .map(|b| (b.calls, b.errors, b.in_flight, b.queued))
            .collect();
        // `pool` does not count `pool-2`'s calls: labels are matched whole.
        assert_eq!(counts, [(8, 1, 1, 4), (3, 3, 0, 0), (0, 0, 0, 0)]);

        let status = Status {
            admin: "http://127.0.0.1:9090".into(),
            generation: serde_json::from_value(json!({"generation": 3, "loaded_at": "2025-01-01T00:00:00.000Z",
                "load_ms": 12, "reloads": 2, "refused": 1,
                "last_refused": {"at": "2025-01-01T00:01:00.000Z", "reason": "gateway.toml:3: bad\nsecond line"},
                "restart_needed": ["server.listen"]}))
            .unwrap(),
            backends: rows,
            routes: serde_json::from_value(json!({"routes": [
                {"name": "kafka", "conditions": "store = \"kafka\"", "backend": "pool-2"},
                {"name": "routes[1]", "conditions": "default", "backend": "pool"}],
                "discovery": {"on_backend_failure": "fail"}}))
            .unwrap(),
        };
        let text = status.render();
        let expected = "\
gateway at http://127.0.0.1:9090: generation 3, loaded at 2025-01-01T00:00:00.000Z in 12 ms; 2 reloads, 1 refused
last refused reload, at 2025-01-01T00:01:00.000Z:
  gateway.toml:3: bad
  second line
changed, taking effect at restart: server.listen

BACKEND  CALLS  ERRORS  IN FLIGHT  QUEUED  SLOTS  PLUGIN
pool         8       1          1       4     16  plugins/pool.wasm (sha256:0123456789ab...)
pool-2       3       3          0       0      2  p2.wasm (sha256:ff...)
idle         0       0          0       0      1  i.wasm (sha256:ee...)

ROUTE      CONDITIONS       BACKEND
kafka      store = \"kafka\"  pool-2
routes[1]  default          pool
discovery: on_backend_failure = fail
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[tokio::test]
    async fn a_gateway_that_is_not_there_is_named_in_the_error() {
        // A port nothing listens on: bind one, then free it.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let admin = format!("http://{address}");
        let error = fetch(&admin, &Access::default()).await.unwrap_err();
        assert!(format!("{error:#}").contains(&admin), "{error:#}");
        let error = fetch("ftp://127.0.0.1:1", &Access::default())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("http and https"), "{error}");
    }

    #[tokio::test]
    async fn a_client_certificate_needs_its_key_and_an_https_admin_url() {
        let (cert, key) = (Path::new("operator.pem"), Path::new("operator-key.pem"));
        let access = Access {
            cert: Some(cert),
            key: Some(key),
            ..Access::default()
        };
        let error = fetch("http://127.0.0.1:1", &access).await.unwrap_err();
        assert!(error.to_string().contains("use an https:// URL"), "{error}");
        let alone = Access {
            cert: Some(cert),
            ..Access::default()
        };
        let error = fetch("https://127.0.0.1:1", &alone).await.unwrap_err();
        assert!(error.to_string().contains("go together"), "{error}");
    }

    #[test]
    fn a_candidate_renders_as_one_line_with_its_rollback() {
        // As `GET /admin/backends/pool` answered after a rollback (the session's demo).
        let answer = r#"{
            "plugin": "plugins/fault.wasm",
            "digest": "sha256:459db14ed1bec35b739cbe3b7a798ce0a9194bc6333ea9a84236921e2de3e6c2",
            "contract": "replicante:platform@0.2.0",
            "configured_weight": 50, "steps": [], "weight": 0, "state": "rolled-back",
            "armed_at_ms": 1796299605714, "calls": 10, "failures": 10, "error_rate": 1.0,
            "shadow": false, "shadow_compared": 0, "shadow_different": 0, "shadow_failed": 0,
            "last_differences": [],
            "rolled_back": { "at_ms": 1796299605995, "reason": "error_rate", "calls": 10,
                             "failures": 10, "error_rate": 1.0 }
        }"#;
        let candidate: answers::CandidateInfo = serde_json::from_str(answer).unwrap();
        assert_eq!(
            candidate_line("pool", &candidate),
            "candidate of pool: plugins/fault.wasm (sha256:459db14ed1be...) rolled-back, weight 0% \
             of 50%, 10 calls, 10 failed (100.0%), shadow 0/0 differ; rolled back (error_rate: 10 \
             of 10 calls failed)"
        );
        // Staged with steps: the weight it rises to is the last step.
        let staged = answer
            .replace(r#""steps": []"#, r#""steps": [75, 100]"#)
            .replace(r#""state": "rolled-back""#, r#""state": "active""#)
            .replace(r#""weight": 0"#, r#""weight": 50"#);
        let mut candidate: answers::CandidateInfo = serde_json::from_str(&staged).unwrap();
        candidate.rolled_back = None;
        let line = candidate_line("pool", &candidate);
        assert!(line.contains("active, weight 50% of 100%"), "{line}");
        assert!(!line.contains("rolled back"), "{line}");
    }
}
