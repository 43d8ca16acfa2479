//! What a plugin hands the gateway (log messages and their context, stdout, stderr, error
//! messages, the address of a denied outbound request) reaches the log and the client with the
//! backend's secrets cut out; what it prints is bounded and never fails the call.

use crate::support::{
    Workdir, fault_backend, fault_backend_with, plugin, provision_body, toml_str,
};

#[tokio::test]
async fn a_secret_is_cut_out_of_every_string_a_plugin_hands_the_gateway() {
    let token = "hunter2-do-not-print";
    let host = "s3cret-host.invalid:9";
    let dir = Workdir::new();
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    std::fs::write(dir.path().join("target"), host).unwrap();
    let config = format!(
        "{}[backends.caller]\nplugin = {}\ngrants = {{ http = [\"http://127.0.0.1:1\"] }}\n\
         [backends.caller.settings]\ntarget = {{ from_file = \"target\" }}\n\n\
         [[routes]]\nstore = \"leak\"\nbackend = \"leaky\"\n\n[[routes]]\nbackend = \"caller\"\n",
        fault_backend_with("leaky", "leak", "", "token = { from_file = \"token\" }"),
        toml_str(&plugin("http_probe").display().to_string()),
    );
    // stdout is logged at debug level.
    // At the default level: stdout (a Python `print`, a `console.log`) is logged like stderr.
    let gw = dir.start_logging(&config, "info").await;

    let (status, body) = gw
        .post("/provision", &provision_body("c", "leak", "g", "small"))
        .await;
    assert_eq!(status, 500, "{body}");
    let message = body["error_msg"].as_str().unwrap();
    assert!(message.contains("the token is [redacted]"), "{message}");
    gw.wait_for_log("the token is [redacted]").await;
    gw.wait_for_log("stdout: stdout says the token is [redacted]")
        .await;
    gw.wait_for_log("stderr: stderr says the token is [redacted]")
        .await;

    // The probe asks for the address in its secret, which the grant does not allow.
    let (status, body) = gw
        .post("/provision", &provision_body("c", "s", "g", "small"))
        .await;
    assert_eq!(status, 500, "{body}");
    let message = body["error_msg"].as_str().unwrap();
    assert!(message.contains("HttpRequestDenied"), "{message}");
    gw.wait_for_log("outbound request to http://[redacted] denied")
        .await;

    // Each request's own line comes after everything its call logged.
    gw.wait_for_log("request failed").await;
    let log = gw.log();
    assert!(!log.contains(token), "{log}");
    assert!(!log.contains("s3cret-host"), "{log}");
}

#[tokio::test]
async fn a_plugin_that_prints_megabytes_still_answers_and_its_output_is_bounded() {
    let dir = Workdir::new();
    let config = format!(
        "{}[[routes]]\nbackend = \"chatty\"\n",
        fault_backend("chatty", "chatty", "")
    );
    // At the default level: stdout (a Python `print`, a `console.log`) is logged like stderr.
    let gw = dir.start_logging(&config, "info").await;
    let (status, body) = gw
        .post("/provision", &provision_body("c", "s", "g", "small"))
        .await;
    assert_eq!(status, 200, "{body}");
    // 1 MiB printed to each, 16 KiB kept of each.
    let dropped = format!("[{} more bytes dropped]", (1 << 20) - (16 << 10));
    gw.wait_for_log("stdout: xxx").await;
    gw.wait_for_log("stderr: xxx").await;
    let log = gw.log();
    assert_eq!(
        log.matches(&dropped).count(),
        2,
        "{}",
        &log[..log.len().min(4000)]
    );
    assert!(log.len() < 200 << 10, "the log took {} bytes", log.len());
}
