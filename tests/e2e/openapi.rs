//! The OpenAPI documents: printed by `platform-gateway openapi`, served by the gateway, valid
//! OpenAPI 3.1 (openapi-spec-validator), and true: Schemathesis generates requests from them,
//! valid and invalid, and chains provision, discover and deprovision by the documents' links,
//! and every answer must match the document (no 5xx, no undocumented status, header or body).
//!
//! The Python tools come from `target/venv` (`cargo xtask setup` installs them; the tests run
//! with its `bin` first on `PATH`).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{Gateway, pool_backend, run_cli};

/// The admin token of the gateway the admin document is tested against.
const TOKEN: &str = "openapi-test-admin-token-0123456789";

/// A pool of small machines behind a catch-all route, with the admin API (a token, no reload on
/// file changes). No static backend: deprovisioning one of its nodes (which the discovery's link
/// would) answers 501, the status of a backend that does not do an operation, and Schemathesis
/// counts every 5xx as a failure.
fn config() -> String {
    let machines: Vec<(String, &str)> = (1..=40).map(|i| (format!("m{i}"), "small")).collect();
    let machines: Vec<(&str, &str)> = machines.iter().map(|(id, c)| (id.as_str(), *c)).collect();
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n[reload]\nwatch = false\n\n\
         {}[[routes]]\nbackend = \"pool\"\n",
        pool_backend("pool", &machines)
    )
}

/// The document `platform-gateway openapi [--admin]` prints.
fn printed(admin: bool) -> Value {
    let args: &[&str] = if admin {
        &["openapi", "--admin"]
    } else {
        &["openapi"]
    };
    let (ok, stdout, stderr) = run_cli(args);
    assert!(ok, "openapi {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).expect("the printed document is JSON")
}

/// Run `program` with `args` in `dir` (Schemathesis keeps a cache in its working directory):
/// whether it succeeded, and its output.
fn run(program: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (is target/venv/bin on PATH? `cargo xtask setup`): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn both_documents_are_printed_as_valid_openapi_3_1() {
    let dir = tempfile::tempdir().unwrap();
    for admin in [false, true] {
        let document = printed(admin);
        assert_eq!(document["openapi"], "3.1.0", "{document}");
        let paths = document["paths"].as_object().expect("paths");
        let expected: &[&str] = if admin {
            &[
                "/admin/backends",
                "/admin/route",
                "/admin/reload",
                "/metrics",
            ]
        } else {
            &[
                "/discover",
                "/provision",
                "/deprovision",
                "/healthz",
                "/readyz",
            ]
        };
        for path in expected {
            assert!(paths.contains_key(*path), "{path} missing");
        }
        // The public document shows nothing of the admin API.
        assert_eq!(
            paths
                .keys()
                .any(|p| p.starts_with("/admin") || p == "/metrics"),
            admin
        );
        let file = dir.path().join(format!("openapi-{admin}.json"));
        std::fs::write(&file, document.to_string()).unwrap();
        let (ok, output) = run(
            "openapi-spec-validator",
            &[file.to_str().unwrap()],
            dir.path(),
        );
        assert!(ok, "openapi-spec-validator refused the document: {output}");
    }
}

/// Schemathesis against the document at `url` (served by `gw`): every phase (the examples, the
/// coverage of each constraint, fuzzing, and stateful sequences along the links), valid and
/// invalid data, every check but `positive_data_acceptance` (valid-by-schema bodies are refused
/// when they break a rule a schema cannot state, such as `node_group_id` naming a key of
/// `cluster.nodes`), within `seconds`. The number of cases it generated.
fn schemathesis(url: &str, seconds: u32, extra: &[&str], dir: &Path) -> u64 {
    let seconds = seconds.to_string();
    let mut args = vec![
        "run",
        url,
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--mode",
        "all",
        "--max-examples",
        "100",
        "--max-time",
        &seconds,
        "--workers",
        "2",
        "--seed",
        "31",
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--no-color",
    ];
    args.extend_from_slice(extra);
    let (ok, output) = run("schemathesis", &args, dir);
    assert!(ok, "Schemathesis found failures:\n{output}");
    println!("{output}");
    generated(&output)
}

/// The number in Schemathesis's summary, `Test cases:` then `N generated, ...`.
fn generated(output: &str) -> u64 {
    let summary = output
        .rsplit_once("Test cases:")
        .unwrap_or_else(|| panic!("no `Test cases:` in:\n{output}"))
        .1;
    let (count, _) = summary
        .trim_start()
        .split_once(" generated")
        .unwrap_or_else(|| panic!("no `N generated` after `Test cases:` in:\n{output}"));
    count.parse().expect("a number of cases")
}

#[tokio::test]
async fn schemathesis_finds_every_answer_as_the_documents_say() {
    let gw = Gateway::start(&config()).await;
    let dir = tempfile::tempdir().unwrap();

    // What is served is what is printed; the admin document needs the token.
    let fetch = |url: String, token: Option<&str>| {
        let mut request = gw.client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    assert_eq!(
        fetch(gw.url("/openapi.json"), None).await,
        (200, printed(false))
    );
    let admin = gw.admin.clone().expect("the admin listener");
    let admin_document = format!("{admin}/admin/openapi.json");
    assert_eq!(fetch(admin_document.clone(), None).await.0, 401);
    assert_eq!(
        fetch(admin_document.clone(), Some(TOKEN)).await,
        (200, printed(true))
    );

    let public = schemathesis(&gw.url("/openapi.json"), 75, &[], dir.path());
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let admin = schemathesis(&admin_document, 25, &["--header", &bearer], dir.path());
    println!(
        "Schemathesis generated {public} cases for the Platform API, {admin} for the admin API"
    );
    assert!(public > 100 && admin > 20, "{public} and {admin} cases");
}
