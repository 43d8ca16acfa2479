//! Metrics and `platform-gateway status`: after a scripted mix of requests (successes, every
//! fault the fault plugin makes, a 503 for capacity, a refused reload), `/metrics` parses as the
//! Prometheus text format and its counters equal what was sent; `status` shows it to a person.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Gateway, Workdir, fault_backend_with, pool_backend, provision_body, run_cli};

/// The fault backends beside the pool: (name, mode, limits, settings). Each is reached by
/// provisions for the store of its name, and every one is asked by a discovery.
const FAULTS: &[(&str, &str, &str, &str)] = &[
    ("echo", "echo", "", ""),
    (
        "slow",
        "sleep",
        "concurrency = 1, queue = 0, timeout = \"10s\"",
        "sleep_ms = 1500",
    ),
    ("looping", "loop", "timeout = \"300ms\"", ""),
    ("trapping", "trap", "", ""),
    ("panicking", "panic", "", ""),
    ("hungry", "oom", "memory = \"8MiB\"", ""),
    ("invalid", "invalid", "", ""),
    ("failing", "probe", "", ""),
    (
        "huge",
        "huge",
        "max_response = \"1MiB\"",
        "huge_nodes = 100000",
    ),
];

/// The pool serves store `mongodb`; each fault backend the store of its name; no default
/// route, so any other store gets 422.
fn config() -> String {
    let mut config =
        String::from("[admin]\nlisten = \"127.0.0.1:0\"\n\n[reload]\nwatch = false\n\n");
    config += &pool_backend("pool", &[("m1", "small"), ("m2", "small")]);
    for (name, mode, limits, settings) in FAULTS {
        config += &fault_backend_with(name, mode, limits, settings);
    }
    for (name, ..) in FAULTS {
        config += &format!("[[routes]]\nstore = \"{name}\"\nbackend = \"{name}\"\n\n");
    }
    config + "[[routes]]\nstore = \"mongodb\"\nbackend = \"pool\"\n"
}

/// `/metrics` as Prometheus reads it (no `Accept`: the text format 0.0.4).
async fn scrape(gw: &Gateway) -> prometheus_parse::Scrape {
    let admin = gw.admin.as_ref().expect("admin API");
    let response = gw
        .client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the exposition parses")
}

/// Every sample of `metric`: its labels (those in `keys`, in that order) -> its value.
fn series(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    keys: &[&str],
) -> BTreeMap<Vec<String>, f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .map(|s| {
            let labels = keys
                .iter()
                .map(|k| s.labels.get(k).unwrap_or_default().to_string())
                .collect();
            let value = match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{metric}: not a single value: {other:?}"),
            };
            (labels, value)
        })
        .collect()
}

fn single(scrape: &prometheus_parse::Scrape, metric: &str) -> f64 {
    let all = series(scrape, metric, &[]);
    assert_eq!(all.len(), 1, "{metric}: {all:?}");
    all.into_values().next().unwrap()
}

fn expect(rows: &[(&[&str], f64)]) -> BTreeMap<Vec<String>, f64> {
    rows.iter()
        .map(|(labels, n)| (labels.iter().map(|l| l.to_string()).collect(), *n))
        .collect()
}

async fn provision(gw: &Gateway, store: &str, class: &str) -> (u16, Value) {
    gw.post(
        "/provision",
        &provision_body(&format!("c-{store}"), store, "data", class),
    )
    .await
}

#[tokio::test]
async fn after_a_scripted_mix_the_counters_equal_the_requests_sent() {
    let work = Workdir::new();
    let gw = work.start(&config()).await;

    // Successes and the pool's own errors.
    for _ in 0..2 {
        assert_eq!(provision(&gw, "mongodb", "small").await.0, 200);
    }
    assert_eq!(provision(&gw, "mongodb", "large").await.0, 400);
    assert_eq!(provision(&gw, "mongodb", "small").await.0, 503);
    let (status, body) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c-mongodb", "node_id": "m1" }),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    // A node the index gives to `echo`, which does not know it.
    let (status, body) = provision(&gw, "echo", "small").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = gw
        .post(
            "/deprovision",
            &json!({ "cluster_id": "c-echo", "node_id": body["node_ids"][0] }),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // Each fault.
    for (store, expected) in [
        ("looping", 504),
        ("trapping", 502),
        ("panicking", 502),
        ("hungry", 502),
        ("invalid", 502),
        ("failing", 500),
    ] {
        let (status, body) = provision(&gw, store, "small").await;
        assert_eq!(status, expected, "{store}: {body}");
    }

    // Capacity: `slow` has one slot and no queue; a second call while the first sleeps is 503.
    let first = {
        let (client, url) = (gw.client.clone(), gw.url("/provision"));
        tokio::spawn(async move {
            let body = provision_body("c-slow", "slow", "data", "small");
            client.post(url).json(&body).send().await.unwrap().status()
        })
    };
    let waiting_scrapes = gw.wait_calls_in_flight("slow", 1).await;
    let (status, body) = provision(&gw, "slow", "small").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(first.await.unwrap(), 200);

    // Refused before any plugin: no route, malformed JSON, wrong method, unknown path.
    assert_eq!(provision(&gw, "nothing", "small").await.0, 422);
    let (status, _) = gw
        .post_raw("/provision", "application/json", b"{".to_vec())
        .await;
    assert_eq!(status, 400);
    assert_eq!(gw.get("/provision").await.0, 405);
    assert_eq!(gw.get("/no/such/path").await.0, 404);

    // One discovery asks every backend: the faults fail it (502), `echo` and `slow` report
    // the same node (a conflict).
    let (status, body) = gw.get("/discover").await;
    assert_eq!(status, 502, "{body}");

    // A reload, then a refused one.
    let (status, body) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(
        (status, body["generation"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    work.write_config(&format!(
        "{}\n[[routes]]\nbackend = \"missing\"\n",
        config()
    ));
    let (status, body) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 422, "{body}");

    // The ownership upkeep after the discovery counts the index in the background: c-mongodb/m2
    // and slow's provisioned node are left (m1 was deprovisioned, echo's record forgotten). Slow
    // does not report its node, but one discovery only makes a record a suspect: it is forgotten
    // when a discovery started later misses it too.
    let mut scrapes = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let scrape = loop {
        let scrape = scrape(&gw).await;
        scrapes += 1;
        if single(&scrape, "platform_gateway_ownership_records") == 2.0 {
            break scrape;
        }
        assert!(
            Instant::now() < deadline,
            "the index was never counted as 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // This scrape's own request is counted after it answered.
    let scrapes_counted = waiting_scrapes + scrapes - 1;

    // HTTP requests by endpoint, method and status: every one sent, and nothing else (the
    // readiness probes before the first generation loaded answered 503 a varying number of
    // times).
    let mut requests = series(
        &scrape,
        "platform_gateway_http_requests_total",
        &["endpoint", "method", "status"],
    );
    requests.retain(|k, _| k != &["/readyz", "GET", "503"]);
    let mut expected = expect(&[
        (&["/provision", "POST", "200"], 4.0),
        (&["/provision", "POST", "400"], 2.0),
        (&["/provision", "POST", "422"], 1.0),
        (&["/provision", "POST", "500"], 1.0),
        (&["/provision", "POST", "502"], 4.0),
        (&["/provision", "POST", "503"], 2.0),
        (&["/provision", "POST", "504"], 1.0),
        (&["/provision", "GET", "405"], 1.0),
        (&["/deprovision", "POST", "204"], 1.0),
        (&["/deprovision", "POST", "404"], 1.0),
        (&["/discover", "GET", "502"], 1.0),
        (&["unmatched", "GET", "404"], 1.0),
        (&["/readyz", "GET", "200"], 1.0),
        (&["/admin/reload", "POST", "200"], 1.0),
        (&["/admin/reload", "POST", "422"], 1.0),
    ]);
    if scrapes_counted > 0 {
        expected.insert(
            vec!["/metrics".into(), "GET".into(), "200".into()],
            scrapes_counted as f64,
        );
    }
    assert_eq!(requests, expected);
    // The latency histogram saw each request once.
    let timed = series(
        &scrape,
        "platform_gateway_http_request_duration_seconds_count",
        &["endpoint", "method"],
    );
    assert_eq!(
        timed[&vec!["/provision".to_string(), "POST".to_string()]],
        15.0
    );
    assert_eq!(
        timed[&vec!["/deprovision".to_string(), "POST".to_string()]],
        2.0
    );

    // Plugin calls by backend, operation and outcome: exactly these.
    let calls = series(
        &scrape,
        "platform_gateway_plugin_calls_total",
        &["backend", "operation", "outcome"],
    );
    let expected_calls = expect(&[
        (&["pool", "provision", "ok"], 2.0),
        (&["pool", "provision", "invalid_request"], 1.0),
        (&["pool", "provision", "unavailable"], 1.0),
        (&["pool", "deprovision", "ok"], 1.0),
        (&["pool", "discover", "ok"], 1.0),
        (&["echo", "provision", "ok"], 1.0),
        (&["echo", "deprovision", "not_found"], 1.0),
        (&["echo", "discover", "ok"], 1.0),
        (&["slow", "provision", "ok"], 1.0),
        (&["slow", "provision", "busy"], 1.0),
        (&["slow", "discover", "ok"], 1.0),
        (&["looping", "provision", "timeout"], 1.0),
        (&["looping", "discover", "timeout"], 1.0),
        (&["trapping", "provision", "trap"], 1.0),
        (&["trapping", "discover", "trap"], 1.0),
        (&["panicking", "provision", "trap"], 1.0),
        (&["panicking", "discover", "trap"], 1.0),
        (&["hungry", "provision", "out_of_memory"], 1.0),
        (&["hungry", "discover", "out_of_memory"], 1.0),
        (&["invalid", "provision", "ok"], 1.0),
        // The gateway gives back the two node IDs of the answer it refused.
        (&["invalid", "deprovision", "not_found"], 2.0),
        (&["invalid", "discover", "ok"], 1.0),
        (&["failing", "provision", "internal"], 1.0),
        (&["failing", "discover", "internal"], 1.0),
        (&["huge", "discover", "too_large"], 1.0),
    ]);
    assert_eq!(calls, expected_calls);
    // The duration histogram saw every call once.
    let durations = series(
        &scrape,
        "platform_gateway_plugin_call_duration_seconds_count",
        &["backend", "operation"],
    );
    let mut per_operation: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for (labels, n) in &expected_calls {
        *per_operation.entry(labels[..2].to_vec()).or_default() += n;
    }
    assert_eq!(durations, per_operation);
    // The loop was stopped at its 300 ms deadline: not before (nothing under 250 ms), and not
    // long after (5 s, over ten times the deadline, is the bound: without a deadline the loop
    // would never end, and a loaded machine may be slow to stop it).
    let looping = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "platform_gateway_plugin_call_duration_seconds"
                && s.labels.get("backend") == Some("looping")
                && s.labels.get("operation") == Some("provision")
        })
        .expect("the loop's histogram");
    let prometheus_parse::Value::Histogram(buckets) = &looping.value else {
        panic!("not a histogram: {looping:?}");
    };
    let under = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
    assert_eq!((under(0.25), under(5.0)), (0.0, 1.0), "{buckets:?}");

    assert_eq!(
        series(
            &scrape,
            "platform_gateway_plugin_calls_refused_total",
            &["backend", "reason"]
        ),
        expect(&[(&["slow", "queue_full"], 1.0)])
    );
    assert_eq!(
        series(
            &scrape,
            "platform_gateway_plugin_invalid_answers_total",
            &["backend", "operation"]
        ),
        expect(&[
            (&["invalid", "discover"], 1.0),
            (&["invalid", "provision"], 1.0)
        ])
    );
    // Nothing runs or waits now; every backend has its series.
    for gauge in [
        "platform_gateway_plugin_calls_in_flight",
        "platform_gateway_plugin_calls_queued",
    ] {
        let values = series(&scrape, gauge, &["backend"]);
        assert_eq!(values.len(), FAULTS.len() + 1, "{gauge}: {values:?}");
        assert!(values.values().all(|v| *v == 0.0), "{gauge}: {values:?}");
    }

    // Reloads, generations, the cache.
    assert_eq!(single(&scrape, "platform_gateway_generation"), 2.0);
    assert_eq!(
        series(&scrape, "platform_gateway_reloads_total", &["outcome"]),
        expect(&[(&["ok"], 1.0), (&["refused"], 1.0)])
    );
    assert_eq!(
        single(
            &scrape,
            "platform_gateway_generation_build_duration_seconds_count"
        ),
        2.0
    );
    assert!(single(&scrape, "platform_gateway_compiled_cache_bytes") > 100_000.0);

    // The state store: timed by operation, no errors; one discovery saw one conflict.
    let state = series(
        &scrape,
        "platform_gateway_state_operation_duration_seconds_count",
        &["operation"],
    );
    // The two deprovisions looked their owner up.
    assert!(state[&vec!["owner".to_string()]] >= 2.0, "{state:?}");
    assert!(
        state[&vec!["record_owners".to_string()]] >= 3.0,
        "{state:?}"
    );
    assert!(
        series(
            &scrape,
            "platform_gateway_state_errors_total",
            &["operation"]
        )
        .is_empty()
    );
    assert_eq!(
        single(&scrape, "platform_gateway_discovery_conflicts_total"),
        1.0
    );
    // Types as declared.
    let kind = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| std::mem::discriminant(&s.value))
    };
    assert_eq!(
        kind("platform_gateway_plugin_calls_total"),
        Some(std::mem::discriminant(&prometheus_parse::Value::Counter(
            0.0
        )))
    );
    assert_eq!(
        kind("platform_gateway_plugin_calls_in_flight"),
        Some(std::mem::discriminant(&prometheus_parse::Value::Gauge(0.0)))
    );

    // A scraper that asks for OpenMetrics gets it.
    let response = gw
        .client
        .get(format!("{}/metrics", gw.admin.as_ref().unwrap()))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn status_shows_the_generation_backends_routes_and_the_last_refused_reload() {
    let work = Workdir::new();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[reload]\nwatch = false\n\n{}{}[[routes]]\nname = \"faulty\"\nstore = \"trapping\"\nbackend = \"trapping\"\n\n[[routes]]\nbackend = \"pool\"\n",
        pool_backend("pool", &[("m1", "small"), ("m2", "small")]),
        fault_backend_with("trapping", "trap", "", ""),
    );
    let gw = work.start(&config).await;
    for _ in 0..2 {
        assert_eq!(provision(&gw, "mongodb", "small").await.0, 200);
    }
    assert_eq!(provision(&gw, "mongodb", "large").await.0, 400);
    assert_eq!(provision(&gw, "trapping", "small").await.0, 502);
    work.write_config("[backends.broken\n");
    let (status, _) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 422);

    let admin = gw.admin.clone().unwrap();
    let (ok, out, err) = run_cli(&["status", "--admin", &admin]);
    assert!(ok, "{out}\n{err}");
    println!("{out}");
    assert!(out.contains("generation 1"), "{out}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // backend, calls, errors, in flight, queued
    assert_eq!(row("pool")[1..5], ["3", "1", "0", "0"], "{out}");
    assert_eq!(row("trapping")[1..5], ["1", "1", "0", "0"], "{out}");
    assert!(out.contains("faulty"), "{out}");
    assert!(out.contains("store = \"trapping\""), "{out}");
    assert!(out.contains("default"), "{out}");
    assert!(out.contains("last refused reload"), "{out}");
    assert!(
        out.contains("gateway.toml"),
        "the refusal's reason names the file: {out}"
    );

    // The same from the environment, as JSON for scripts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_platform-gateway"))
        .args(["status", "--output", "json"])
        .env("PLATFORM_GATEWAY_ADMIN", &admin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["generation"]["generation"], 1);
    assert_eq!(json["backends"][0]["name"], "pool");
    assert_eq!(json["backends"][0]["calls"], 3);
    assert_eq!(json["routes"]["routes"][0]["name"], "faulty");
    assert!(json["generation"]["last_refused"]["reason"].is_string());

    // Nothing listening: a clear failure, exit 1.
    drop(gw);
    let (ok, _, err) = run_cli(&["status", "--admin", &admin]);
    assert!(!ok);
    assert!(err.contains(&admin), "{err}");
}

#[tokio::test]
async fn status_sends_the_admin_token_and_speaks_tls_to_an_admin_api_that_needs_them() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let work = Workdir::new();
    let write = |name: &str, text: &str| {
        let path = work.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    // A CA, and a certificate it signs for 127.0.0.1.
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = write("ca.pem", &params.self_signed(&ca_key).unwrap().pem());
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let token = "status-admin-token-0123456789";
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {{ from_file = {} }}\ntls = {{ cert = {}, key = {} }}\n\n{}[[routes]]\nbackend = \"pool\"\n",
        crate::support::toml_str(&write("token", token)),
        crate::support::toml_str(&write("admin.pem", &cert.pem())),
        crate::support::toml_str(&write("admin-key.pem", &key.serialize_pem())),
        pool_backend("pool", &[("m1", "small")]),
    );
    let gw = work.start(&config).await;
    assert_eq!(provision(&gw, "mongodb", "small").await.0, 200);
    let admin = gw.admin.clone().unwrap();
    assert!(admin.starts_with("https://"), "{admin}");
    let status = |token: Option<&str>, ca: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_platform-gateway"));
        command.args(["status", "--admin", &admin]);
        if let Some(token) = token {
            command.env("PLATFORM_GATEWAY_ADMIN_TOKEN", token);
        }
        if let Some(ca) = ca {
            command.env("PLATFORM_GATEWAY_ADMIN_CA", ca);
        }
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, out, err) = status(Some(token), Some(&ca));
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("generation 1"), "{out}");
    let pool = out
        .lines()
        .find(|l| l.starts_with("pool "))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(pool.split_whitespace().nth(1), Some("1"), "{out}");

    // Without the token: the gateway's 401, said plainly; the token itself never printed.
    let (ok, _, err) = status(None, Some(&ca));
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("admin token"), "{err}");
    // A CA that did not sign the certificate: the handshake fails.
    let (ok, _, err) = status(Some(token), None);
    assert!(!ok);
    assert!(err.contains("TLS handshake"), "{err}");
    assert!(!err.contains(token), "{err}");
}
