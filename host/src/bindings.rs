//! The host side of the `replicante:platform` world, generated from `wit/`. Private to the crate:
//! the runtime calls the exports, each capability implements its import, and the rest of the
//! gateway uses the records re-exported by hand in [`wit`].

wasmtime::component::bindgen!({
    path: "../wit",
    world: "replicante:platform/plugin",
    // Exports are called as futures, so that a deadline can stop a call that waits in a host
    // call; the state store's operations are futures too (etcd answers over the network), so
    // the same deadline bounds them. The other imports answer synchronously.
    exports: { default: async },
    imports: { "replicante:platform/state": async },
});

/// The WIT types plugins exchange with the host.
pub mod wit {
    pub use super::replicante::platform::types::{
        Cluster, DeprovisionRequest, Error, Node, ProvisionRequest, ProvisionResponse,
    };
}
