//! Settings: the backend's `settings` table, read by contract 0.1 plugins through the standard
//! `wasi:config/store` (one entry per top-level key) and by 0.2 plugins through
//! `replicante:platform/settings` (the whole table as one JSON object); each version's module in
//! [`crate::contract`] links its form.
//!
//! Both forms are built once per backend at load; every call shares them through an `Arc`.

use std::sync::Arc;

use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};

use crate::config::Setting;

/// A backend's settings, shared by all its calls.
#[derive(Clone, Default)]
pub struct Settings(Arc<Forms>);

#[derive(Default)]
struct Forms {
    /// For `wasi:config/store`.
    entries: WasiConfigVariables,
    /// For `replicante:platform/settings`.
    json: String,
}

impl Settings {
    /// Settings from the config's.
    pub fn new(settings: &[Setting]) -> Settings {
        let entries = WasiConfigVariables::from_iter(
            settings.iter().map(|s| (s.key.as_str(), s.text.as_str())),
        );
        let object: serde_json::Map<String, serde_json::Value> = settings
            .iter()
            .map(|s| (s.key.clone(), s.json.clone()))
            .collect();
        Settings(Arc::new(Forms {
            entries,
            json: serde_json::Value::Object(object).to_string(),
        }))
    }

    /// The view `wasi:config/store` reads through.
    pub fn view(&mut self) -> WasiConfig<'_> {
        WasiConfig::from(&self.0.entries)
    }

    /// The whole table as one JSON object, for `replicante:platform/settings`.
    pub fn json(&self) -> &str {
        &self.0.json
    }
}
