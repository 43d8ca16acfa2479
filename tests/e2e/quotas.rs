//! State quotas: a plugin that fills its state is refused at its backend's limits, with an
//! error naming the limit, counted in `/metrics`, while the other backends keep answering.

use crate::support::{
    Gateway, assert_error_shape, fault_backend_with, pool_backend, provision_body,
};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n[reload]\nwatch = false\n\n";

fn config() -> String {
    let mut config = String::from(ADMIN);
    // Keys: 40 at most. Bytes: 10 KiB with values of 1,000 bytes (and keys of 11). Rate: 5 a
    // second, with a key quota far away.
    config += &fault_backend_with("keys", "fill-state", "state_keys = 40", "");
    config += &fault_backend_with(
        "bytes",
        "fill-state",
        "state_bytes = \"10KiB\"",
        "fill_bytes = 1000",
    );
    config += &fault_backend_with("rate", "fill-state", "state_writes_per_second = 5", "");
    config += &pool_backend(
        "pool",
        &[
            ("m1", "small"),
            ("m2", "small"),
            ("m3", "small"),
            ("m4", "small"),
        ],
    );
    for name in ["keys", "bytes", "rate"] {
        config += &format!("[[routes]]\nstore = \"{name}\"\nbackend = \"{name}\"\n\n");
    }
    config + "[[routes]]\nbackend = \"pool\"\n"
}

/// Provision on the backend named by `store`: the status and the error message.
async fn fill(gw: &Gateway, store: &str) -> (u16, String) {
    let (status, reply) = gw
        .post("/provision", &provision_body("c1", store, "data", "small"))
        .await;
    assert_error_shape(status, &reply);
    (status, reply["error_msg"].as_str().unwrap().to_string())
}

fn refusals(metrics: &str, backend: &str, reason: &str) -> f64 {
    let prefix = format!(
        "platform_gateway_state_quota_refusals_total{{backend=\"{backend}\",reason=\"{reason}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn a_plugin_filling_its_state_is_refused_at_each_quota_while_other_backends_answer() {
    let gw = Gateway::start(&config()).await;

    // The key quota, while the pool provisions beside it: the fill stops at exactly 40 keys
    // and the pool's answer is unaffected.
    let pool_request = provision_body("c2", "mongodb", "data", "small");
    let (filled, pooled) = tokio::join!(fill(&gw, "keys"), gw.post("/provision", &pool_request));
    assert_eq!(pooled.0, 200, "{}", pooled.1);
    let (status, message) = filled;
    assert_eq!(status, 500, "{message}");
    assert!(message.contains("stored 40 keys, then:"), "{message}");
    assert!(message.contains("limits.state_keys"), "{message}");
    // A second call finds the namespace still full: replacing its 40 keys passes, the 41st
    // does not (the count survives calls).
    let (_, message) = fill(&gw, "keys").await;
    assert!(message.contains("stored 40 keys, then:"), "{message}");

    // The byte quota: 10 keys of 1,011 bytes fit in 10 KiB, the 11th does not.
    let (status, message) = fill(&gw, "bytes").await;
    assert_eq!(status, 500, "{message}");
    assert!(message.contains("stored 10 keys, then:"), "{message}");
    assert!(message.contains("limits.state_bytes"), "{message}");

    // The write rate: refused as `unavailable` (503), which is worth a retry. How many writes
    // pass first depends on how fast the store writes (5 at once, then one per 200 ms), so
    // only the refusal is asserted, not its count.
    let (status, message) = fill(&gw, "rate").await;
    assert_eq!(status, 503, "{message}");
    assert!(
        message.contains("limits.state_writes_per_second"),
        "{message}"
    );

    // The other backend still answers. (Not a discovery: the fault backends fill their state
    // on every operation.)
    let (status, reply) = gw
        .post(
            "/provision",
            &provision_body("c3", "mongodb", "data", "small"),
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    let admin = gw.admin.as_ref().expect("admin API");
    let metrics = gw
        .client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(refusals(&metrics, "keys", "keys"), 2.0, "{metrics}");
    assert_eq!(refusals(&metrics, "bytes", "bytes"), 1.0, "{metrics}");
    assert_eq!(refusals(&metrics, "rate", "write_rate"), 1.0, "{metrics}");
    assert_eq!(refusals(&metrics, "pool", "keys"), 0.0, "{metrics}");

    // The operator sees each backend's quotas.
    let (status, listing) = gw.admin("/admin/backends", None).await;
    assert_eq!(status, 200, "{listing}");
    let quota = |name: &str| {
        listing["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap()["limits"]["state"]
            .clone()
    };
    assert_eq!(quota("keys")["keys"], 40, "{listing}");
    assert_eq!(quota("bytes")["bytes"], 10 << 10, "{listing}");
    assert_eq!(quota("rate")["writes_per_second"], 5, "{listing}");
    assert_eq!(quota("pool")["value_bytes"], 1 << 20, "{listing}");
}
