//! The host imports served natively, for plugin unit tests and the gateway's native baseline.
//!
//! A [`Host`] holds what the gateway would give a backend: its settings (as the gateway passes
//! them: a string as is, anything else as its JSON encoding), a private key-value state in
//! memory, and the log lines. [`Host::run`] makes it the host of the calls made inside, on that
//! thread:
//!
//! ```ignore
//! let host = Host::with_settings(serde_json::json!({ "machines": [...] }));
//! let clusters = host.run(|| <MyProvider as Provider>::discover())?;
//! assert!(host.logs().is_empty());
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::Error;
use crate::log::Level;

/// How many log lines a host keeps (the oldest go first).
const LOG_CAPACITY: usize = 10_000;

/// The native stand-in for the gateway: settings, state and logs of one backend.
#[derive(Default)]
pub struct Host {
    settings: HashMap<String, String>,
    state: Mutex<BTreeMap<String, Vec<u8>>>,
    logs: Mutex<VecDeque<(Level, String)>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Host>>> = const { RefCell::new(None) };
}

/// Run `f` with the host the calls on this thread are made in; without one, the import fails
/// with an error saying so.
pub(crate) fn with<T>(f: impl FnOnce(&Host) -> Result<T, Error>) -> Result<T, Error> {
    CURRENT.with(|current| match current.borrow().as_deref() {
        Some(host) => f(host),
        None => Err(Error::Internal(
            "no native host: call the provider inside platform_sdk::native::Host::run".into(),
        )),
    })
}

pub(crate) fn log(level: Level, context: &str, message: &str) {
    let _ = with(|host| {
        let mut logs = host.logs.lock().unwrap_or_else(|e| e.into_inner());
        if logs.len() == LOG_CAPACITY {
            logs.pop_front();
        }
        logs.push_back((level, format!("{context}: {message}")));
        Ok(())
    });
}

impl Host {
    /// A host with no settings and an empty state.
    pub fn new() -> Arc<Host> {
        Arc::new(Host::default())
    }

    /// A host whose settings are the members of a JSON object, as a backend's `settings`
    /// table reaches the plugin: strings as they are, other values as their JSON encoding.
    /// Anything but an object gives no settings.
    pub fn with_settings(settings: serde_json::Value) -> Arc<Host> {
        let settings = match settings {
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(key, value)| {
                    let text = match value {
                        serde_json::Value::String(text) => text,
                        other => other.to_string(),
                    };
                    (key, text)
                })
                .collect(),
            _ => HashMap::new(),
        };
        Arc::new(Host {
            settings,
            ..Host::default()
        })
    }

    /// Run `f` (calls of a provider) with this host serving its imports on this thread.
    pub fn run<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Arc<Host>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|current| *current.borrow_mut() = previous);
            }
        }
        let previous = CURRENT.with(|current| current.borrow_mut().replace(self.clone()));
        let _restore = Restore(previous);
        f()
    }

    /// A copy of the state.
    pub fn state(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock_state().clone()
    }

    /// The log lines so far, oldest first, each `plugin: <message>`.
    pub fn logs(&self) -> Vec<(Level, String)> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.iter().cloned().collect()
    }

    pub(crate) fn setting(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self.settings.get(key).cloned())
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn state_get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock_state().get(key).cloned()
    }

    /// Set (`new`) or delete (`None`) `key` if it holds `expected`, or whatever it holds when
    /// `unconditional`; whether it was changed.
    pub(crate) fn state_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        unconditional: bool,
    ) -> bool {
        let mut state = self.lock_state();
        if !unconditional && state.get(key).map(Vec::as_slice) != expected {
            return false;
        }
        match new {
            Some(value) => state.insert(key.to_string(), value.to_vec()),
            None => state.remove(key),
        };
        true
    }

    pub(crate) fn state_keys(&self, prefix: &str) -> Vec<String> {
        self.lock_state()
            .range(prefix.to_string()..)
            .map(|(key, _)| key)
            .take_while(|key| key.starts_with(prefix))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{settings, state};

    #[test]
    fn settings_arrive_as_the_gateway_passes_them() {
        let host = Host::with_settings(serde_json::json!({ "name": "x", "list": [1, 2] }));
        host.run(|| {
            assert_eq!(settings::get("name").unwrap().as_deref(), Some("x"));
            assert_eq!(settings::get("list").unwrap().as_deref(), Some("[1,2]"));
            assert_eq!(
                settings::json::<Vec<u32>>("list").unwrap(),
                Some(vec![1, 2])
            );
            assert_eq!(settings::get("absent").unwrap(), None);
        });
    }

    #[test]
    fn compare_and_swap_takes_a_key_once_and_lists_by_prefix() {
        let host = Host::new();
        host.run(|| {
            assert!(state::compare_and_swap("m/1", None, Some(b"a")).unwrap());
            assert!(!state::compare_and_swap("m/1", None, Some(b"b")).unwrap());
            assert!(!state::compare_and_swap("m/1", Some(b"b"), None).unwrap());
            state::set("m/2", b"c").unwrap();
            state::set("n/1", b"d").unwrap();
            assert_eq!(state::list_keys("m/").unwrap(), vec!["m/1", "m/2"]);
            assert!(state::compare_and_swap("m/1", Some(b"a"), None).unwrap());
            assert_eq!(state::get("m/1").unwrap(), None);
            state::delete("m/2").unwrap();
        });
        assert_eq!(host.state().keys().collect::<Vec<_>>(), vec!["n/1"]);
    }

    #[test]
    fn outside_a_host_the_imports_fail_with_a_message() {
        let error = settings::get("x").unwrap_err();
        assert!(matches!(error, Error::Internal(m) if m.contains("Host::run")));
        crate::log::info("dropped: no host");
    }
}
