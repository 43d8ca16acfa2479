//! A misbehaving plugin costs its own request and nothing else: limits it cannot start under,
//! and an instance pool it cannot grow past.

use serde_json::json;

use crate::support::{
    Workdir, arrivals_of, assert_error_shape, fault_backend, fault_backend_with, provision_body,
    run_cli, with_arrival,
};

/// The admin API (for reloads), and no watching: the tests reload when they choose.
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n[reload]\nwatch = false\n\n";

// Loops, traps, panics and the memory cap are in `hardening`'s table of faults
// (`each_fault_gets_its_error_and_the_gateway_keeps_serving_every_backend`), beside the pool.

#[tokio::test]
async fn a_memory_limit_below_what_the_plugin_needs_to_start_is_refused_by_check_and_reload() {
    // A Rust plugin starts with over 1 MiB of memory (its stack): 128 KiB cannot even start it.
    let tiny = format!(
        "{ADMIN}{}[[routes]]\nbackend = \"tiny\"\n",
        fault_backend("tiny", "echo", "memory = \"128KiB\"")
    );
    let work = Workdir::new();
    let path = work.write_config(&tiny);
    let (ok, _, stderr) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok, "check passed a plugin that cannot start: {stderr}");
    for needle in [
        "backend `tiny`",
        "of memory to start",
        "`limits.memory` of 128.0 KiB",
    ] {
        assert!(stderr.contains(needle), "no `{needle}` in: {stderr}");
    }

    // At load, the running generation keeps serving and the reload says why.
    let fine = format!(
        "{ADMIN}{}[[routes]]\nbackend = \"tiny\"\n",
        fault_backend("tiny", "echo", "memory = \"16MiB\"")
    );
    let gw = work.start(&fine).await;
    work.write_config(&tiny);
    let (status, body) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 422, "{body}");
    let reason = body.to_string();
    assert!(reason.contains("of memory to start"), "{reason}");
    assert_eq!(gw.admin_generation().await["generation"], json!(1));
    // And generation 1 serves: a request is answered by it.
    let (status, headers, reply) = gw
        .post_with_headers("/provision", &provision_body("c1", "s", "g", "small"))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(crate::support::generation_of(&headers), 1);
}

#[tokio::test]
async fn calls_beyond_the_instance_pool_sized_at_start_get_503_with_a_retry_hint() {
    let sleepy = |concurrency: usize| {
        format!(
            "{ADMIN}{}[[routes]]\nbackend = \"sleepy\"\n",
            fault_backend_with(
                "sleepy",
                "sleep",
                &format!("timeout = \"20s\", concurrency = {concurrency}, queue = 0"),
                "sleep_ms = 3000"
            )
        )
    };
    // One call at a time: the pool gets its fewest slots (16). The reload allows 40 at once,
    // which the pool cannot hold until a restart, and says so.
    let work = Workdir::new();
    let gw = work.start(&sleepy(1)).await;
    work.write_config(&sleepy(40));
    let (status, body) = gw.admin("/admin/reload", Some(&json!({}))).await;
    assert_eq!(status, 200, "{body}");
    gw.wait_for_log("instance pool is sized at start").await;

    let body = provision_body("c1", "mongodb", "data", "small");
    let replies = with_arrival((0..40).map(|_| gw.post_with_headers("/provision", &body))).await;
    let (refusals, services) = (arrivals_of(&replies, 503), arrivals_of(&replies, 200));
    let replies: Vec<_> = replies.iter().map(|(_, reply)| reply).collect();
    let (mut served, mut refused) = (0, 0);
    for (status, headers, reply) in &replies {
        match status {
            200 => served += 1,
            503 => {
                assert_error_shape(*status, reply);
                assert!(headers.contains_key("retry-after"), "{reply}");
                let message = reply["error_msg"].as_str().unwrap();
                assert!(message.contains("every instance slot"), "{message}");
                refused += 1;
            }
            other => panic!("{other}: {reply}"),
        }
    }
    // 16 slots: some calls ran, never more than 16, and every other one was refused.
    assert!(served >= 1, "no call was served: {replies:?}");
    assert!(served <= 16, "{served} calls ran on 16 instance slots");
    assert_eq!(served + refused, 40, "{replies:?}");
    // Refused at once: every refusal arrived before the first served call (each holds its slot
    // for 3 s) had answered, so none of them waited for a slot.
    assert!(
        refusals.last() < services.first(),
        "a refusal waited for a served call: 503 at {refusals:?}, 200 at {services:?}"
    );
}
