//! The host side of each released `replicante:platform` contract, generated from `wit/`. Private
//! to the crate: the runtime calls the exports through [`crate::convert`], which turns each
//! version's records into the gateway's own (`crate::model`), and each capability implements its
//! imports for every version.
//!
//! Exports are called as futures, so that a deadline can stop a call that waits in a host call;
//! the state store's operations are futures too (etcd answers over the network), so the same
//! deadline bounds them. The other imports answer synchronously.

/// `replicante:platform@0.1.0`, frozen: plugins built against it keep loading.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "replicante:platform/plugin",
        exports: { default: async },
        imports: { "replicante:platform/state": async },
    });
}

/// `replicante:platform@0.2.0`. The WASI interfaces its world lists are wasmtime-wasi's.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2",
        world: "replicante:platform/plugin",
        exports: { default: async },
        imports: { "replicante:platform/state": async },
        with: {
            "wasi": wasmtime_wasi::p2::bindings,
        },
    });
}
