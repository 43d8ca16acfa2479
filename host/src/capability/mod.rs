//! Host capabilities given to plugins, one module each: what a plugin can reach is exactly
//! what is linked here. Each module owns its per-call state and its linker setup.
//!
//! WASI itself (clocks, random, stdio) is linked with no files, no environment, no sockets and
//! no network names: std's plumbing works, but a plugin reaches nothing outside the sandbox.

pub mod logging;
pub mod settings;
pub mod state;
