//! Settings: the backend's `settings` table, read by contract 0.1 plugins through the standard
//! `wasi:config/store` (one entry per top-level key) and by 0.2 plugins through
//! `replicante:platform/settings` (the whole table as one JSON object); each version's module in
//! [`crate::contract`] links its form.
//!
//! Both forms are built once per backend at load; every call shares them through an `Arc`. The
//! table is read from the config here too ([`Setting`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use toml::Spanned;
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};

use crate::config_file::{ConfigError, Source, is_secret_reference};

/// One setting of a backend, in the two forms plugins read.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Its key in the `settings` table.
    pub key: String,
    /// Its value as JSON (contract 0.2 reads the whole table as one object of these).
    pub json: serde_json::Value,
    /// Its value as contract 0.1 reads it through `wasi:config/store`: a string as is, any other
    /// value (a date included) as its JSON encoding.
    pub text: String,
}

/// A backend's `settings` table as JSON values (dates and times as RFC 3339 strings), secret
/// references resolved; and the values that came from secrets.
pub(crate) fn parse(
    raw: BTreeMap<String, Spanned<toml::Value>>,
    backend: &str,
    source: &Source,
) -> Result<(Vec<Setting>, Vec<String>), ConfigError> {
    let mut settings = Vec::new();
    let mut secrets = Vec::new();
    for (key, value) in raw {
        let span = value.span();
        let value = match value.into_inner() {
            toml::Value::String(text) => (serde_json::Value::String(text.clone()), text),
            toml::Value::Table(table) if is_secret_reference(&table) => {
                let secret = source.secret(&table).map_err(|message| {
                    source.invalid(span, format!("backends.{backend}.settings.{key}"), message)
                })?;
                secrets.push(secret.clone());
                (serde_json::Value::String(secret.clone()), secret)
            }
            other => {
                let json = toml_to_json(other);
                let text = json.to_string();
                (json, text)
            }
        };
        let (json, text) = value;
        settings.push(Setting { key, json, text });
    }
    Ok((settings, secrets))
}

/// A TOML value as JSON; TOML's dates and times become RFC 3339 strings.
fn toml_to_json(value: toml::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        toml::Value::String(s) => Json::String(s),
        toml::Value::Integer(i) => Json::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        toml::Value::Boolean(b) => Json::Bool(b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => Json::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Json::Object(
            table
                .into_iter()
                .map(|(k, v)| (k, toml_to_json(v)))
                .collect(),
        ),
    }
}

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
