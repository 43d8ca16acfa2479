//! The host side of the `replicante:platform` world, generated from `wit/`. Private: the rest
//! of the gateway uses the re-exports in [`super::wit`].

wasmtime::component::bindgen!({
    path: "../wit",
    world: "replicante:platform/plugin",
});
