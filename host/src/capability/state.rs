//! State: the `replicante:platform/state` interface over the gateway's [`StateStore`], in the
//! backend's own namespace.
//!
//! Operations are futures under the call's deadline (the whole call is dropped when it passes).
//! A call whose deadline has already passed gets `unavailable` instead of starting another store
//! operation, so a plugin looping on the store cannot outlive its deadline.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::replicante::platform::state::{Error, Host, add_to_linker as link};
use crate::state::{StateError, StateStore, all_keys};

/// The per-call state capability.
pub struct PluginState {
    namespace: Arc<str>,
    store: Option<Arc<dyn StateStore>>,
    deadline: Instant,
}

impl PluginState {
    /// State for one call of the backend whose namespace is `namespace`, until `deadline`;
    /// without a store (a plugin instantiated only to be checked) every operation is
    /// `unavailable`.
    pub fn new(
        namespace: Arc<str>,
        store: Option<Arc<dyn StateStore>>,
        deadline: Instant,
    ) -> PluginState {
        PluginState {
            namespace,
            store,
            deadline,
        }
    }

    /// The store, while the call may still use it.
    fn open(&self) -> Result<Arc<dyn StateStore>, Error> {
        if Instant::now() >= self.deadline {
            return Err(Error::Unavailable("the call's deadline has passed".into()));
        }
        self.store
            .clone()
            .ok_or_else(|| Error::Unavailable("no state store while the plugin is checked".into()))
    }

    fn error(&self, e: StateError) -> Error {
        match e {
            StateError::TooLarge(message) => Error::TooLarge(message),
            StateError::Unavailable(message) => {
                tracing::warn!(namespace = %self.namespace, "state store: {message}");
                Error::Unavailable(format!("the state store is unavailable: {message}"))
            }
            StateError::Storage(message) => {
                tracing::error!(namespace = %self.namespace, "state store: {message}");
                Error::Unavailable("the state store failed; see the gateway log".into())
            }
        }
    }
}

impl Host for PluginState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.open()?
            .get(&self.namespace, &key)
            .await
            .map_err(|e| self.error(e))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.open()?
            .set(&self.namespace, &key, &value)
            .await
            .map_err(|e| self.error(e))
    }

    async fn delete(&mut self, key: String) -> Result<(), Error> {
        self.open()?
            .delete(&self.namespace, &key)
            .await
            .map_err(|e| self.error(e))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, Error> {
        self.open()?
            .compare_and_swap(&self.namespace, &key, expected.as_deref(), new.as_deref())
            .await
            .map_err(|e| self.error(e))
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, Error> {
        // Contract 0.1 returns every key at once; the store is read a page at a time.
        let store = self.open()?;
        all_keys(&*store, &self.namespace, &prefix)
            .await
            .map_err(|e| self.error(e))
    }
}

/// Link `replicante:platform/state`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut PluginState,
) -> wasmtime::Result<()> {
    link::<T, HasSelf<PluginState>>(linker, get)
}
