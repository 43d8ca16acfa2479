//! The operator's console (`GET /admin/ui`) in a real browser: headless Chromium driven by
//! Selenium (`console.py`, from `target/venv`) against a gateway started here, with the admin
//! token, traffic on two backends, a candidate rolled back and a refused reload. What the page
//! showed is checked against the admin API's own answers and the CLI's.
//!
//! `CONSOLE_SCREENSHOTS=docs/images` writes the screenshots (one per view) where the README
//! shows them; they go under `target/console-screenshots` otherwise.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

use crate::support::{Gateway, Workdir, plugin, pool_backend, provision_body, run_cli, toml_str};

const TOKEN: &str = "console-test-admin-token-0123456789";

/// What the page's responses must carry.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `pool` (with a candidate that crashes on every call: rolled back after five) for everything
/// but PostgreSQL, which goes to `archive`; the admin API with a token.
fn config() -> String {
    let machines: Vec<(String, &str)> = (1..=60).map(|i| (format!("m{i}"), "small")).collect();
    let archive: Vec<(String, &str)> = (1..=10).map(|i| (format!("a{i}"), "small")).collect();
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {}\n\n[reload]\nwatch = false\n\n{}{}\
         [backends.pool.candidate]\nplugin = {}\nsettings = {{ mode = \"panic\" }}\nweight = 50\n\
         shadow = false\n[backends.pool.candidate.rollback]\nmin_calls = 5\nmax_error_rate = 0.2\n\n\
         [[routes]]\nname = {}\nstore = \"postgres\"\nbackend = \"archive\"\n\n\
         [[routes]]\nbackend = \"pool\"\n",
        toml_str(TOKEN),
        pool_backend("pool", &machines),
        pool_backend("archive", &archive),
        toml_str(&plugin("fault").display().to_string()),
        toml_str(ROUTE),
    )
}

/// The first route's name: markup, which the page must show as text.
const ROUTE: &str = "postgres-to-archive <img id=\"injected\" src=\"x\">";

/// `GET` or (with a body) `POST` on the admin API, with the token.
async fn admin(gw: &Gateway, path: &str, body: Option<&Value>) -> (u16, Value) {
    let url = format!("{}{path}", gw.admin.as_ref().unwrap());
    let request = match body {
        Some(body) => gw.client.post(url).json(body),
        None => gw.client.get(url),
    };
    let response = request.bearer_auth(TOKEN).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Where the screenshots go: `CONSOLE_SCREENSHOTS` (relative to the repository), or under
/// `target/`.
fn screenshots() -> PathBuf {
    let root = xtask::root();
    match std::env::var_os("CONSOLE_SCREENSHOTS") {
        Some(dir) => root.join(dir),
        None => root.join("target/console-screenshots"),
    }
}

/// Run `console.py` with `input`: what the browser showed.
fn browse(input: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (input_path, output_path) = (dir.path().join("in.json"), dir.path().join("out.json"));
    std::fs::write(&input_path, input.to_string()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/console.py");
    let started = Instant::now();
    let out = Command::new("python3")
        .arg(&script)
        .args([&input_path, &output_path])
        .env("SE_OFFLINE", "true")
        .output()
        .expect("run python3 (target/venv/bin first on PATH: `cargo xtask setup`)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the browser script failed (Selenium, chromium and chromium-driver come from `cargo xtask \
         setup`):\n{log}"
    );
    println!("the browser took {:?}", started.elapsed());
    let report: Value = serde_json::from_slice(&std::fs::read(&output_path).unwrap()).unwrap();
    assert!(report.get("failed").is_none(), "{report:#}\n{log}");
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_in_a_browser_what_the_admin_api_answers() {
    let dir = Workdir::new();
    let gw = dir.start(&config()).await;
    let config_path = dir.path().join("gateway.toml");
    let base = gw.admin.clone().unwrap();

    // The shell holds no data and loads without the token, under the CSP; the data does not.
    for (path, kind) in [
        ("/admin/ui", "text/html; charset=utf-8"),
        ("/admin/ui/app.js", "text/javascript; charset=utf-8"),
        ("/admin/ui/app.css", "text/css; charset=utf-8"),
        ("/admin/ui/icon.svg", "image/svg+xml"),
    ] {
        let response = gw.client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], kind, "{path}");
        assert_eq!(headers["content-security-policy"], CSP, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    }
    for path in [
        "/admin/generation",
        "/admin/state",
        "/admin/backends",
        "/admin/backends/pool",
        "/admin/activity",
        "/admin/routes",
        "/admin/openapi.json",
        "/metrics",
        "/admin/ui/",
        "/admin/ui/missing.js",
    ] {
        let response = gw.client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 401, "GET {path} without the token");
    }
    for path in ["/admin/ui", "/admin/route", "/admin/reload"] {
        let response = gw
            .client
            .post(format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "POST {path} without the token");
    }
    // The Host and Origin checks still guard the shell.
    let foreign = gw
        .client
        .get(format!("{base}/admin/ui"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);

    // Traffic: provisions on both backends, until the pool's candidate is rolled back.
    let mut statuses = Vec::new();
    for i in 0..40 {
        let (status, body) = gw
            .post(
                "/provision",
                &provision_body(&format!("c-{i}"), "mongodb", "data", "small"),
            )
            .await;
        assert!(status == 200 || status == 502, "{status} {body}");
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 502).count(), 5);
    for i in 0..3 {
        let (status, body) = gw
            .post(
                "/provision",
                &provision_body(&format!("pg-{i}"), "postgres", "data", "small"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, pool) = admin(&gw, "/admin/backends/pool", None).await;
    assert_eq!(pool["candidate"]["state"], "rolled-back", "{pool}");
    assert_eq!(pool["candidate"]["rolled_back"]["reason"], "error_rate");
    let (status, activity) = admin(&gw, "/admin/activity", None).await;
    assert_eq!(status, 200, "{activity}");
    let calls_of = |name: &str| {
        activity["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {activity}"))
            .clone()
    };
    let (pool_calls, archive_calls) = (calls_of("pool"), calls_of("archive"));
    // The client was told 43 answers; each is one plugin call.
    assert_eq!(pool_calls["calls"], 40, "{pool_calls}");
    assert_eq!(pool_calls["errors"], 5, "{pool_calls}");
    assert_eq!(pool_calls["outcomes"]["trap"], 5, "{pool_calls}");
    assert_eq!(archive_calls["calls"], 3, "{archive_calls}");
    assert!(
        !pool_calls["samples"].as_array().unwrap().is_empty(),
        "{pool_calls}"
    );

    // The request the route form explains, as the CLI explains it from the config.
    let explain = provision_body("explain-me", "postgres", "data", "small");
    let request_file = dir.path().join("explain.json");
    std::fs::write(&request_file, explain.to_string()).unwrap();
    let (ok, cli_explanation, stderr) = run_cli(&[
        "route",
        "--config",
        config_path.to_str().unwrap(),
        request_file.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let (status, api_explanation) = admin(&gw, "/admin/route", Some(&explain)).await;
    assert_eq!(status, 200, "{api_explanation}");
    assert_eq!(api_explanation["decision"]["backend"], "archive");

    // A refused reload: the file no longer parses.
    std::fs::write(&config_path, "[backends.pool\nplugin = ").unwrap();
    let (status, refusal) = admin(&gw, "/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 422, "{refusal}");
    let (_, generation) = admin(&gw, "/admin/generation", None).await;
    let history = generation["history"].as_array().unwrap();
    let last = history.last().expect("the refused reload in the history");
    assert_eq!(last["outcome"], "refused", "{generation}");
    let reason = last["reason"].as_str().unwrap().to_string();
    assert_eq!(refusal["error_cause"], reason.as_str());

    let report = browse(&json!({
        "admin": base,
        "token": TOKEN,
        "screenshots": screenshots(),
        "route_request": explain.to_string(),
        "plan_request": provision_body("planned", "mongodb", "data", "small").to_string(),
    }));
    let text = |key: &str| report[key].as_str().unwrap_or_default().to_string();

    // Refused without the token: the API's own words, and nothing else shown.
    assert!(
        text("auth_error").contains("the admin API needs the admin token"),
        "{report:#}"
    );
    assert_eq!(report["nav_shown_without_token"], false);
    // Chromium logs the refused fetch (a 401) as an error; nothing else may be.
    for message in report["auth_console"].as_array().unwrap() {
        assert!(message.as_str().unwrap().contains("401"), "{message}");
    }

    // Overview: the generation, and the refused reload with its message.
    assert!(
        text("overview").contains("Generation1"),
        "{}",
        text("overview")
    );
    let rows = report["history"].as_array().unwrap();
    assert_eq!(rows.len(), history.len(), "{report:#}");
    let first = rows[0].as_str().unwrap();
    assert!(
        first.contains("refused") && first.contains(&reason),
        "{first}\nwanted {reason}"
    );

    // Backends: the config's, with the calls sent.
    let backends = report["backends"].as_object().unwrap();
    assert_eq!(
        backends.keys().collect::<Vec<_>>(),
        ["archive", "pool"],
        "{report:#}"
    );
    assert_eq!(backends["pool"]["calls"], "40");
    assert_eq!(backends["pool"]["errors"], "5");
    assert_eq!(backends["archive"]["calls"], "3");
    assert!(backends["pool"]["text"].as_str().unwrap().contains("trap"));
    assert_eq!(
        backends["pool"]["lines"], 2,
        "the latency chart's mean and max"
    );

    // Routes: the explanation, as the CLI prints it.
    assert_eq!(text("route_explanation"), cli_explanation);
    assert!(text("route_table").contains(ROUTE), "shown as text");
    assert_eq!(report["injected"], 0, "a config string became markup");

    // Rollouts: the rollback and its reason.
    let rollback = text("rollback");
    assert!(
        rollback.contains("Rolled back") && rollback.contains("error_rate"),
        "{rollback}"
    );
    assert!(
        rollback.contains("5 of 5 calls failed"),
        "{rollback}: the verdict's numbers"
    );
    assert!(text("rollouts").contains("rolled-back"));
    assert!(text("rollouts").contains("of 20.0%"), "the threshold");

    // The reset button re-armed the candidate, as the API says.
    assert!(text("after_reset").contains("Weight now50%"), "{report:#}");
    let (_, pool) = admin(&gw, "/admin/backends/pool", None).await;
    assert_eq!(pool["candidate"]["state"], "active", "{pool}");

    // Plans: the effects of a planned provision; the place kept for replay reports.
    let plan = text("plan");
    assert!(plan.contains("would answer200"), "{plan}");
    // The pool plugin claims a machine by compare-and-swap: the plan shows the write it withheld.
    assert!(plan.contains("state compare_and_swapmachine/m"), "{plan}");
    assert!(text("replays").contains("Replay reports"));

    // The token stayed in the tab: no cookie, not in the URL.
    assert_eq!(report["stored_token"], TOKEN);
    assert_eq!(report["cookies"], json!([]));
    assert!(!text("url").contains(TOKEN));
    // No console error once signed in.
    assert_eq!(report["console"], json!([]), "browser console errors");
    gw.stop();
}
