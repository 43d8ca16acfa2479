//! The host side of the `replicante:platform` world, generated from `wit/`. Private: the rest
//! of the gateway uses the re-exports in [`super::wit`].

wasmtime::component::bindgen!({
    path: "../wit",
    world: "replicante:platform/plugin",
    // Exports are called as futures, so that a deadline can stop a call that waits in a host
    // call; the host's own imports answer synchronously.
    exports: { default: async },
});
