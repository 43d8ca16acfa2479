//! The JavaScript example plugin (`examples/plugins/js-inventory`, the JavaScript SDK in
//! `sdk/js`, bundled with esbuild and built by its `build.sh` with componentize-js): the
//! conformance kit passes it, and the real gateway serves its lifecycle, its errors (with the
//! plugin's retry hint) and its unexpected exceptions. What it shares with the Python example's
//! tests is in `inventory.rs`.

use std::sync::OnceLock;

use crate::inventory::{self, Example, Unexpected};

/// The example: a component carrying its engine (SpiderMonkey, 14 MB of WebAssembly), which
/// needs about 10 MiB of memory to start: 32 MiB is ample. Its 503 carries its own retry hint
/// (`new Unavailable(..., { retryAfter: 60 })`).
static JAVASCRIPT: Example = Example {
    name: "js-inventory",
    memory: "32MiB",
    retry_after: "60",
    unknown_class: "the inventory has no machine of node class `huge`",
    compiled: OnceLock::new(),
};

#[test]
fn the_javascript_example_passes_the_conformance_kit() {
    inventory::passes_the_conformance_kit(&JAVASCRIPT);
}

#[test]
fn a_javascript_plugin_without_the_memory_its_engine_needs_fails_to_start() {
    let (ok, stdout, _) = JAVASCRIPT.kit(&["--memory", "8MiB"]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("FAIL  loads and starts within its limits")
            && stdout.contains("of memory to start"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_javascript_example_serves_the_lifecycle_through_the_gateway() {
    inventory::serves_the_lifecycle_through_the_gateway(&JAVASCRIPT).await;
}

#[tokio::test]
async fn an_unknown_node_class_is_a_400_naming_the_backend() {
    inventory::an_unknown_node_class_is_a_400_naming_the_backend(&JAVASCRIPT).await;
}

#[tokio::test]
async fn a_retried_provision_with_one_idempotency_key_gets_the_same_machines() {
    inventory::a_retried_provision_with_one_idempotency_key_gets_the_same_machines(&JAVASCRIPT)
        .await;
}

#[tokio::test]
async fn an_unexpected_javascript_exception_is_a_500_with_its_stack_logged_not_a_502() {
    // A machine whose `agent_address` is not a URL: the example checks it with `new URL(...)`
    // and catches nothing, so SpiderMonkey throws a TypeError that only the SDK catches. The
    // stack, from the provider's code on, goes to the gateway's log at error.
    let unexpected = Unexpected {
        settings: r#"machines = [{ id = "m1", agent_address = "not a url", node_class = "small" }]"#,
        message: &["TypeError: URL constructor: not a url is not a valid URL"],
        trace: "provision: uncaught TypeError",
        error: "provision: uncaught TypeError",
        frame: "provision@build/plugin.js:",
    };
    inventory::an_unexpected_exception_is_a_500_with_its_trace_logged(&JAVASCRIPT, unexpected)
        .await;
}
