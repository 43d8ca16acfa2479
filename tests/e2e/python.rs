//! The Python example plugin (`examples/plugins/python-inventory`, the Python SDK in
//! `sdk/python`, built by its `build.sh` with componentize-py): the conformance kit passes it,
//! and the real gateway serves its lifecycle, its errors and its unexpected exceptions. What it
//! shares with the JavaScript example's tests is in `inventory.rs`.

use std::sync::OnceLock;

use crate::inventory::{self, Example, Unexpected};

/// The example: an 18 MB Python component that takes seconds to compile. It needs more memory
/// than a Rust one (the interpreter's heap, 12.7 MiB to start): 32 MiB is ample. Its 503 gives
/// no retry hint; its 400 for an unknown class lists the classes it has.
static PYTHON: Example = Example {
    name: "python-inventory",
    memory: "32MiB",
    retry_after: "1",
    unknown_class: "the inventory has no machine of node class `huge` (it has: large, small)",
    compiled: OnceLock::new(),
};

#[test]
fn the_python_example_passes_the_conformance_kit() {
    inventory::passes_the_conformance_kit(&PYTHON);
}

#[tokio::test]
async fn the_python_example_serves_the_lifecycle_through_the_gateway() {
    inventory::serves_the_lifecycle_through_the_gateway(&PYTHON).await;
}

#[tokio::test]
async fn an_unknown_node_class_is_a_400_naming_the_backend() {
    inventory::an_unknown_node_class_is_a_400_naming_the_backend(&PYTHON).await;
}

#[tokio::test]
async fn a_retried_provision_with_one_idempotency_key_gets_the_same_machines() {
    inventory::a_retried_provision_with_one_idempotency_key_gets_the_same_machines(&PYTHON).await;
}

#[tokio::test]
async fn an_unexpected_python_exception_is_a_500_with_its_traceback_logged_not_a_502() {
    // A machine without its `agent_address`: the example builds its machines with
    // `Machine(**entry)`, so Python raises a TypeError, which no code catches but the SDK. The
    // traceback, from the provider's code on, goes to the gateway's log at error.
    let unexpected = Unexpected {
        settings: r#"machines = [{ id = "m1", node_class = "small" }]"#,
        message: &["provision failed: TypeError:", "agent_address"],
        trace: "Traceback (most recent call last)",
        error: "provision failed: TypeError",
        frame: "app.py\", line",
    };
    inventory::an_unexpected_exception_is_a_500_with_its_trace_logged(&PYTHON, unexpected).await;
}

#[test]
fn the_python_example_needs_about_thirteen_mib_to_start_and_runs_in_sixteen() {
    let kit =
        |memory: &str| PYTHON.kit(&["--node-class", "small", "--provisions", "--memory", memory]);
    // 12.7 MiB when measured (the guide's figure): CPython's heap, the snapshot of the import.
    let (ok, stdout, _) = kit("12MiB");
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("FAIL  loads and starts within its limits")
            && stdout.contains("of memory to start"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = kit("16MiB");
    crate::support::assert_kit_passed_everything(&(ok, stdout, stderr));
}
