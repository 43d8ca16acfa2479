//! Settings: the backend's `settings` table, served through the standard `wasi:config/store`.
//!
//! The table is converted once per backend at load; every call shares it through an `Arc`.

use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};

/// A backend's settings, shared by all its calls.
#[derive(Clone, Default)]
pub struct Settings(Arc<WasiConfigVariables>);

impl Settings {
    /// Settings from key-value pairs (non-string values already JSON-encoded by the config).
    pub fn new(pairs: &[(String, String)]) -> Settings {
        Settings(Arc::new(WasiConfigVariables::from_iter(
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )))
    }

    /// The view `wasi:config/store` reads through.
    pub fn view(&self) -> WasiConfig<'_> {
        WasiConfig::from(&*self.0)
    }
}

/// Link `wasi:config/store`, reading the settings that `get` finds in the store data.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> WasiConfig<'_>,
) -> wasmtime::Result<()> {
    wasmtime_wasi_config::add_to_linker(linker, get)
}
