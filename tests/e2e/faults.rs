//! A misbehaving plugin costs its own request and nothing else.

use std::time::{Duration, Instant};

use crate::support::{Gateway, assert_error_shape, fault_backend, pool_backend, provision_body};

fn with_fault(mode: &str, limits: &str) -> String {
    format!(
        "{}{}[[routes]]\nstore = \"faulty\"\nbackend = \"faulty\"\n\n[[routes]]\nbackend = \"pool\"\n",
        fault_backend("faulty", mode, limits),
        pool_backend("pool", &[("m1", "small"), ("m2", "small"), ("m3", "small")])
    )
}

async fn expect_failure(gw: &Gateway, status: u16, needle: &str) -> Duration {
    let started = Instant::now();
    let (got, reply) = gw
        .post(
            "/provision",
            &provision_body("c1", "faulty", "data", "small"),
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(got, status, "{reply}");
    assert_error_shape(got, &reply);
    let message = reply["error_msg"].as_str().unwrap();
    assert!(message.contains("backend `faulty`"), "{message}");
    assert!(message.contains(needle), "{message}");
    elapsed
}

async fn pool_still_serves(gw: &Gateway) {
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c2", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn a_plugin_that_loops_forever_gets_504_at_its_deadline_and_the_gateway_keeps_serving() {
    let gw = Gateway::start(&with_fault("loop", "timeout = \"500ms\"")).await;
    for _ in 0..2 {
        let elapsed = expect_failure(&gw, 504, "did not answer within 500ms").await;
        // Without the deadline the call would never return; the bound is loose on purpose.
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
        pool_still_serves(&gw).await;
    }
}

#[tokio::test]
async fn a_plugin_over_its_memory_cap_gets_502_and_the_gateway_keeps_serving() {
    let gw = Gateway::start(&with_fault("oom", "memory = \"16MiB\"")).await;
    expect_failure(&gw, 502, "ran out of memory").await;
    pool_still_serves(&gw).await;
    expect_failure(&gw, 502, "ran out of memory").await;
}

#[tokio::test]
async fn a_plugin_that_traps_or_panics_gets_502_and_the_gateway_keeps_serving() {
    for mode in ["trap", "panic"] {
        let gw = Gateway::start(&with_fault(mode, "")).await;
        expect_failure(&gw, 502, "crashed").await;
        pool_still_serves(&gw).await;
        if mode == "panic" {
            // The panic message reaches the operator's log, tagged with the backend.
            gw.wait_for_log("panics on purpose").await;
        }
    }
}
