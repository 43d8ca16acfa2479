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
                assert!(!resolved.cluster_id.is_empty() && !resolved.node_group.is_empty());
                let attributes: serde_json::Value =
                    serde_json::from_str(&resolved.attributes).expect("attributes are JSON");
                assert!(attributes.is_object());
            }
            Err(error) => assert!(error.status.is_client_error()),
        }
    }
    if let Ok(request) = serde_json::from_slice::<DeprovisionRequest>(data) {
        if let Err(error) = validate::deprovision_request(request) {
            assert!(error.status.is_client_error());
        }
    }
});
