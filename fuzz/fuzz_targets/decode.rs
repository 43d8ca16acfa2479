//! Request decoding and validation, as the API runs it on every body: decode strictly into the
//! HTTP models, then resolve into what a plugin would receive. Whatever the bytes, this must not
//! panic, and a body that decodes must either resolve or be refused with a 4xx.

#![no_main]

use libfuzzer_sys::fuzz_target;
use platform_gateway::api::model::{DeprovisionRequest, ProvisionRequest};
use platform_gateway::api::validate;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<ProvisionRequest>(data) {
        // With and without a client's Idempotency-Key (already checked by then).
        let key = (data.len() % 2 == 0).then_some("order-17");
        match validate::provision_request(request, key) {
            Ok(resolved) => {
                assert!(resolved.count >= 1);
                assert!(
                    resolved.request_id.len() <= 64
                        && resolved
                            .request_id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                );
                for id in [
                    &resolved.cluster_id,
                    &resolved.node_group,
                    &resolved.store,
                    &resolved.store_version,
                ] {
                    assert_id(id);
                }
                assert!(
                    resolved.node_class.len() <= SPEC_MAX_ID_BYTES
                        && !resolved.node_class.chars().any(char::is_control)
                );
                let attributes: serde_json::Value =
                    serde_json::from_str(&resolved.attributes).expect("attributes are JSON");
                assert!(attributes.is_object());
            }
            Err(error) => assert!(error.status.is_client_error()),
        }
    }
    if let Ok(request) = serde_json::from_slice::<DeprovisionRequest>(data) {
        match validate::deprovision_request(request) {
            Ok(resolved) => {
                assert_id(&resolved.cluster_id);
                assert_id(&resolved.node_id);
            }
            Err(error) => assert!(error.status.is_client_error()),
        }
    }
});

/// The specification's bound on IDs, in bytes.
const SPEC_MAX_ID_BYTES: usize = 253;

/// What the README promises of an accepted ID: 1 to 253 bytes, not blank, no control
/// characters.
fn assert_id(id: &str) {
    assert!(
        !id.trim().is_empty()
            && id.len() <= SPEC_MAX_ID_BYTES
            && !id.chars().any(char::is_control),
        "accepted ID {id:?}"
    );
}
