//! The host imports served natively, for plugin unit tests and the gateway's native baseline.
//!
//! A [`Host`] holds what the gateway would give a backend: its settings (a JSON object, as the
//! gateway passes them), a private key-value state (in memory, or in a [`Store`] of your own),
//! and the log lines. [`Host::run`] makes it the host of the calls made inside, on that
//! thread:
//!
//! ```ignore
//! let host = Host::with_settings(serde_json::json!({ "machines": [...] }));
//! let clusters = host.run(|| <MyProvider as Provider>::discover())?;
//! assert!(host.logs().is_empty());
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::Error;
use crate::log::Level;

/// How many log lines a host keeps (the oldest go first).
const LOG_CAPACITY: usize = 10_000;

/// What runs before each state operation: the host, the operation, the key.
type Hook = Arc<dyn Fn(&Host, &str, &str) + Send + Sync>;

/// Where a native host keeps its backend's state instead of memory ([`Host::with_store`]): a
/// durable store, to compare a provider's native build with the gateway on equal terms.
pub trait Store: Send + Sync {
    /// The value under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Set (`new`) or delete (`None`) `key` if it holds `expected` (`None`: absent), or
    /// whatever it holds when `unconditional`, atomically; whether it was changed.
    fn swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        unconditional: bool,
    ) -> Result<bool, Error>;
    /// At most `limit` keys that start with `prefix` and sort after `start_after`, ascending.
    fn keys(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Error>;
}

/// The state in memory: a host's unless it was given a [`Store`].
#[derive(Default)]
struct Memory(Mutex<BTreeMap<String, Vec<u8>>>);

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for Memory {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.lock().get(key).cloned())
    }

    fn swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        unconditional: bool,
    ) -> Result<bool, Error> {
        let mut state = self.lock();
        if !unconditional && state.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        match new {
            Some(value) => state.insert(key.to_string(), value.to_vec()),
            None => state.remove(key),
        };
        Ok(true)
    }

    fn keys(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        Ok(self
            .lock()
            .range(prefix.to_string()..)
            .map(|(key, _)| key)
            .take_while(|key| key.starts_with(prefix))
            .filter(|key| start_after.is_none_or(|after| key.as_str() > after))
            .take(limit)
            .cloned()
            .collect())
    }
}

/// The native stand-in for the gateway: settings, state and logs of one backend.
#[derive(Default)]
pub struct Host {
    settings: serde_json::Map<String, serde_json::Value>,
    state: Memory,
    /// Where the state is kept instead of `state`.
    store: Option<Box<dyn Store>>,
    logs: Mutex<VecDeque<(Level, String)>>,
    before_state_call: Mutex<Option<Hook>>,
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
            "no native host: call the provider inside platform_gateway_sdk::native::Host::run"
                .into(),
        )),
    })
}

pub(crate) fn log(level: Level, message: &str) {
    let _ = with(|host| {
        let mut logs = host.logs.lock().unwrap_or_else(|e| e.into_inner());
        if logs.len() == LOG_CAPACITY {
            logs.pop_front();
        }
        logs.push_back((level, message.to_string()));
        Ok(())
    });
}

impl Host {
    /// A host with no settings and an empty state.
    pub fn new() -> Arc<Host> {
        Arc::new(Host::default())
    }

    /// A host whose settings are `settings`, a JSON object as a backend's `settings` table
    /// reaches the plugin. Anything but an object gives no settings.
    pub fn with_settings(settings: serde_json::Value) -> Arc<Host> {
        let settings = match settings {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        Arc::new(Host {
            settings,
            ..Host::default()
        })
    }

    /// A host whose settings are `settings` (as [`Host::with_settings`]) and whose state is kept
    /// in `store` ([`Host::state`] is then empty).
    pub fn with_store(settings: serde_json::Value, store: impl Store + 'static) -> Arc<Host> {
        let mut host = Host::with_settings(settings);
        if let Some(host) = Arc::get_mut(&mut host) {
            host.store = Some(Box::new(store));
        }
        host
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

    /// Run `hook(host, operation, key)` before each state operation (`get`, `set`, `delete`,
    /// `compare-and-swap`, `list-keys` with the prefix as the key), as the Python and
    /// JavaScript test hosts do: it may change the state with [`Host::set_state`], to play
    /// another call's write between the provider's read and its compare-and-swap. It stays
    /// until [`Host::clear_before_state_call`] (which it may call itself, to run once).
    pub fn before_state_call(&self, hook: impl Fn(&Host, &str, &str) + Send + Sync + 'static) {
        *self
            .before_state_call
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    /// Remove the hook of [`Host::before_state_call`].
    pub fn clear_before_state_call(&self) {
        self.before_state_call
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Set (`Some`) or remove (`None`) a state key: to seed the state, or from a hook. Panics
    /// if a [`Store`] fails (this is for tests).
    pub fn set_state(&self, key: &str, value: Option<&[u8]>) {
        if let Err(e) = self.state_swap(key, None, value, true) {
            panic!("the host's store could not set `{key}`: {e:?}");
        }
    }

    pub(crate) fn before(&self, operation: &str, key: &str) {
        // Cloned out of the lock: the hook may clear itself.
        let hook = self
            .before_state_call
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(self, operation, key);
        }
    }

    /// A copy of the state kept in memory (empty with a [`Store`]).
    pub fn state(&self) -> BTreeMap<String, Vec<u8>> {
        self.state.lock().clone()
    }

    /// The log lines so far, oldest first.
    pub fn logs(&self) -> Vec<(Level, String)> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.iter().cloned().collect()
    }

    pub(crate) fn settings_json(&self) -> String {
        serde_json::Value::Object(self.settings.clone()).to_string()
    }

    /// Where the state is kept.
    fn store(&self) -> &dyn Store {
        self.store.as_deref().unwrap_or(&self.state)
    }

    pub(crate) fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.store().get(key)
    }

    /// Set (`new`) or delete (`None`) `key` if it holds `expected`, or whatever it holds when
    /// `unconditional`; whether it was changed.
    pub(crate) fn state_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        unconditional: bool,
    ) -> Result<bool, Error> {
        self.store().swap(key, expected, new, unconditional)
    }

    /// A page of keys, as the gateway pages them (at most 1,000; `next` only when a key
    /// follows).
    pub(crate) fn state_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, Option<String>), Error> {
        let limit = match limit {
            0 => 1000,
            n => n.min(1000) as usize,
        };
        // One key more than the page says whether another page follows.
        let mut page = self.store().keys(prefix, start_after, limit + 1)?;
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().cloned()
        });
        Ok((page, next.flatten()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{settings, state};

    #[test]
    fn settings_arrive_as_the_gateway_passes_them() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Typed {
            name: String,
            list: Vec<u32>,
            #[serde(default)]
            absent: Option<String>,
        }
        let host = Host::with_settings(serde_json::json!({ "name": "x", "list": [1, 2] }));
        host.run(|| {
            assert_eq!(
                settings::get::<Typed>().unwrap(),
                Typed {
                    name: "x".into(),
                    list: vec![1, 2],
                    absent: None
                }
            );
            assert_eq!(settings::text("name").unwrap().as_deref(), Some("x"));
            assert_eq!(settings::text("list").unwrap().as_deref(), Some("[1,2]"));
            assert_eq!(
                settings::value::<Vec<u32>>("list").unwrap(),
                Some(vec![1, 2])
            );
            assert_eq!(settings::text("absent").unwrap(), None);
            let missing = settings::require::<String>("absent").unwrap_err();
            assert!(matches!(missing, Error::Internal(m) if m.contains("`absent`")));
            // A setting of the wrong type is named, and so is its key.
            let wrong = settings::value::<Vec<String>>("list").unwrap_err();
            assert!(matches!(wrong, Error::Internal(m) if m.contains("setting `list` is invalid")));
            let escaped =
                Host::with_settings(serde_json::json!({ "quote\"d": { "a": "\u{e9}\n" } }));
            escaped.run(|| {
                let value = settings::value::<serde_json::Value>("quote\"d").unwrap();
                assert_eq!(value, Some(serde_json::json!({ "a": "é\n" })));
            });
            // A mistyped field is named.
            let wrong = settings::get::<std::collections::HashMap<String, u32>>().unwrap_err();
            assert!(matches!(wrong, Error::Internal(m) if m.contains("settings are invalid")));
        });
    }

    #[test]
    fn a_hook_before_a_state_call_can_make_a_compare_and_swap_lose_a_race() {
        let host = Host::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        host.before_state_call(move |host, operation, key| {
            log.lock().unwrap().push(format!("{operation} {key}"));
            if operation == "compare-and-swap" {
                host.clear_before_state_call();
                host.set_state(key, Some(b"theirs"));
            }
        });
        host.run(|| {
            assert_eq!(state::get("k").unwrap(), None);
            assert!(!state::compare_and_swap("k", None, Some(b"mine")).unwrap());
            assert!(state::compare_and_swap("k", Some(b"theirs"), Some(b"mine")).unwrap());
        });
        assert_eq!(
            *seen.lock().unwrap(),
            ["get k", "compare-and-swap k"],
            "the hook ran once per operation until it cleared itself"
        );
        assert_eq!(host.state()["k"], b"mine");
    }

    #[test]
    fn keys_are_listed_a_page_at_a_time_and_update_retries_its_swap() {
        let host = Host::new();
        host.run(|| {
            for i in 0..2500 {
                state::set(&format!("k/{i:04}"), b"x").unwrap();
            }
            let (first, next) = state::list_keys_page("k/", None, 0).unwrap();
            assert_eq!(first.len(), 1000);
            assert_eq!(next.as_deref(), Some("k/0999"));
            let (last, end) = state::list_keys_page("k/", Some("k/1999"), 1000).unwrap();
            assert_eq!((last.len(), end), (500, None));
            assert_eq!(state::list_keys("k/").unwrap().len(), 2500);

            let written = state::update("counter", 3, |current| {
                let n = current.map_or(0, |v| v[0]);
                Ok(Some(vec![n + 1]))
            });
            assert_eq!(written.unwrap(), Some(vec![1]));
            assert_eq!(state::get("counter").unwrap(), Some(vec![1]));
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

    /// A store of its own: a map, and every operation it was asked.
    #[derive(Default)]
    struct Recording {
        map: Memory,
        asked: Mutex<Vec<String>>,
    }

    impl Store for Arc<Recording> {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
            self.asked.lock().unwrap().push(format!("get {key}"));
            self.map.get(key)
        }

        fn swap(
            &self,
            key: &str,
            expected: Option<&[u8]>,
            new: Option<&[u8]>,
            unconditional: bool,
        ) -> Result<bool, Error> {
            self.asked.lock().unwrap().push(format!("swap {key}"));
            self.map.swap(key, expected, new, unconditional)
        }

        fn keys(
            &self,
            prefix: &str,
            start_after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<String>, Error> {
            self.asked.lock().unwrap().push(format!("keys {prefix}"));
            self.map.keys(prefix, start_after, limit)
        }
    }

    #[test]
    fn a_host_with_a_store_keeps_the_state_there_and_pages_its_keys() {
        let store = Arc::new(Recording::default());
        let host = Host::with_store(serde_json::json!({}), store.clone());
        host.run(|| {
            assert!(state::compare_and_swap("m/1", None, Some(b"a")).unwrap());
            assert!(!state::compare_and_swap("m/1", None, Some(b"b")).unwrap());
            for i in 0..1500 {
                state::set(&format!("p/{i:04}"), b"x").unwrap();
            }
            // Two pages: the first of 1,000 says where the next starts.
            let (page, next) = state::list_keys_page("p/", None, 0).unwrap();
            assert_eq!((page.len(), next.as_deref()), (1000, Some("p/0999")));
            assert_eq!(state::list_keys("p/").unwrap().len(), 1500);
            state::delete("m/1").unwrap();
            assert_eq!(state::get("m/1").unwrap(), None);
        });
        assert!(host.state().is_empty());
        assert_eq!(store.map.lock().len(), 1500);
        let asked = store.asked.lock().unwrap();
        assert_eq!(asked[..2], ["swap m/1", "swap m/1"]);
        assert_eq!(asked.last().map(String::as_str), Some("get m/1"));
    }

    #[test]
    fn outside_a_host_the_imports_fail_with_a_message() {
        let error = settings::text("x").unwrap_err();
        assert!(matches!(error, Error::Internal(m) if m.contains("Host::run")));
        crate::log::info("dropped: no host");
    }
}
