//! State: the `replicante:platform/state` interface over the gateway's [`StateStore`], in the
//! backend's own namespace.
//!
//! Store calls block (every write is fsynced), so they run on the call's blocking thread. A call
//! whose deadline has passed gets `unavailable` instead of starting another store operation, so
//! a plugin looping on the store cannot outlive its deadline by much.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker};

use crate::runtime::bindings::replicante::platform::state::{Error, Host, add_to_linker as link};
use crate::state::{StateError, StateStore};

/// The per-call state capability.
pub struct PluginState {
    namespace: crate::routing::BackendId,
    store: Arc<dyn StateStore>,
    deadline: Instant,
}

impl PluginState {
    /// State for one call of `namespace`'s backend, until `deadline`.
    pub fn new(
        namespace: crate::routing::BackendId,
        store: Arc<dyn StateStore>,
        deadline: Instant,
    ) -> PluginState {
        PluginState {
            namespace,
            store,
            deadline,
        }
    }

    fn run<R>(
        &self,
        op: impl FnOnce(&dyn StateStore, &str) -> Result<R, StateError>,
    ) -> Result<R, Error> {
        if Instant::now() >= self.deadline {
            return Err(Error::Unavailable("the call's deadline has passed".into()));
        }
        op(&*self.store, self.namespace.as_str()).map_err(|e| match e {
            StateError::TooLarge(message) => Error::TooLarge(message),
            StateError::Storage(message) => {
                tracing::error!(backend = %self.namespace, "state store: {message}");
                Error::Unavailable("the state store failed; see the gateway log".into())
            }
        })
    }
}

impl Host for PluginState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.run(|s, ns| s.get(ns, &key))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.run(|s, ns| s.set(ns, &key, &value))
    }

    fn delete(&mut self, key: String) -> Result<(), Error> {
        self.run(|s, ns| s.delete(ns, &key))
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, Error> {
        self.run(|s, ns| s.compare_and_swap(ns, &key, expected.as_deref(), new.as_deref()))
    }

    fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, Error> {
        self.run(|s, ns| s.list_keys(ns, &prefix))
    }
}

/// Link `replicante:platform/state`.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut PluginState,
) -> wasmtime::Result<()> {
    link::<T, HasSelf<PluginState>>(linker, get)
}
