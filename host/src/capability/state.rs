//! State: the `replicante:platform/state` interface over the gateway's [`StateStore`], in the
//! backend's own namespace.
//!
//! Operations are futures under the call's deadline (the whole call is dropped when it passes).
//! A call whose deadline has already passed gets `unavailable` instead of starting another store
//! operation, so a plugin looping on the store cannot outlive its deadline.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{v0_1, v0_2};
use crate::state::{MAX_PAGE, StateError, StateStore, all_keys};

/// Why a state operation failed, before it is put in a contract version's words.
enum Failure {
    Unavailable(String),
    TooLarge(String),
}

impl From<Failure> for v0_1::replicante::platform::state::Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unavailable(m) => Self::Unavailable(m),
            Failure::TooLarge(m) => Self::TooLarge(m),
        }
    }
}

impl From<Failure> for v0_2::replicante::platform::state::StateError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unavailable(m) => Self::Unavailable(m),
            Failure::TooLarge(m) => Self::TooLarge(m),
        }
    }
}

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
    fn open(&self) -> Result<Arc<dyn StateStore>, Failure> {
        if Instant::now() >= self.deadline {
            return Err(Failure::Unavailable(
                "the call's deadline has passed".into(),
            ));
        }
        self.store.clone().ok_or_else(|| {
            Failure::Unavailable("no state store while the plugin is checked".into())
        })
    }

    fn error(&self, e: StateError) -> Failure {
        match e {
            StateError::TooLarge(message) => Failure::TooLarge(message),
            StateError::Unavailable(message) => {
                tracing::warn!(namespace = %self.namespace, "state store: {message}");
                Failure::Unavailable(format!("the state store is unavailable: {message}"))
            }
            StateError::Storage(message) => {
                tracing::error!(namespace = %self.namespace, "state store: {message}");
                Failure::Unavailable("the state store failed; see the gateway log".into())
            }
        }
    }

    async fn get(&self, key: String) -> Result<Option<Vec<u8>>, Failure> {
        self.open()?
            .get(&self.namespace, &key)
            .await
            .map_err(|e| self.error(e))
    }

    async fn set(&self, key: String, value: Vec<u8>) -> Result<(), Failure> {
        self.open()?
            .set(&self.namespace, &key, &value)
            .await
            .map_err(|e| self.error(e))
    }

    async fn delete(&self, key: String) -> Result<(), Failure> {
        self.open()?
            .delete(&self.namespace, &key)
            .await
            .map_err(|e| self.error(e))
    }

    async fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, Failure> {
        self.open()?
            .compare_and_swap(&self.namespace, &key, expected.as_deref(), new.as_deref())
            .await
            .map_err(|e| self.error(e))
    }

    /// Contract 0.1: every key at once (the store is read a page at a time).
    async fn all_keys(&self, prefix: String) -> Result<Vec<String>, Failure> {
        let store = self.open()?;
        all_keys(&*store, &self.namespace, &prefix)
            .await
            .map_err(|e| self.error(e))
    }

    /// Contract 0.2: one page of at most `limit` keys, and where the next starts, if a key
    /// follows (a full page looks one key further, so the last page always says `none`).
    async fn page(
        &self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<(Vec<String>, Option<String>), Failure> {
        let store = self.open()?;
        let limit = match limit as usize {
            0 => MAX_PAGE,
            n => n.min(MAX_PAGE),
        };
        let keys = store
            .list_keys(&self.namespace, &prefix, start_after.as_deref(), limit)
            .await
            .map_err(|e| self.error(e))?;
        let next = match keys.last() {
            Some(last) if keys.len() == limit => {
                let more = store
                    .list_keys(&self.namespace, &prefix, Some(last), 1)
                    .await
                    .map_err(|e| self.error(e))?;
                (!more.is_empty()).then(|| last.clone())
            }
            _ => None,
        };
        Ok((keys, next))
    }
}

impl v0_1::replicante::platform::state::Host for PluginState {
    async fn get(
        &mut self,
        key: String,
    ) -> Result<Option<Vec<u8>>, v0_1::replicante::platform::state::Error> {
        Ok(PluginState::get(self, key).await?)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), v0_1::replicante::platform::state::Error> {
        Ok(PluginState::set(self, key, value).await?)
    }

    async fn delete(
        &mut self,
        key: String,
    ) -> Result<(), v0_1::replicante::platform::state::Error> {
        Ok(PluginState::delete(self, key).await?)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, v0_1::replicante::platform::state::Error> {
        Ok(PluginState::compare_and_swap(self, key, expected, new).await?)
    }

    async fn list_keys(
        &mut self,
        prefix: String,
    ) -> Result<Vec<String>, v0_1::replicante::platform::state::Error> {
        Ok(self.all_keys(prefix).await?)
    }
}

impl v0_2::replicante::platform::state::Host for PluginState {
    async fn get(
        &mut self,
        key: String,
    ) -> Result<Option<Vec<u8>>, v0_2::replicante::platform::state::StateError> {
        Ok(PluginState::get(self, key).await?)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), v0_2::replicante::platform::state::StateError> {
        Ok(PluginState::set(self, key, value).await?)
    }

    async fn delete(
        &mut self,
        key: String,
    ) -> Result<(), v0_2::replicante::platform::state::StateError> {
        Ok(PluginState::delete(self, key).await?)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, v0_2::replicante::platform::state::StateError> {
        Ok(PluginState::compare_and_swap(self, key, expected, new).await?)
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<
        v0_2::replicante::platform::state::KeyPage,
        v0_2::replicante::platform::state::StateError,
    > {
        let (keys, next) = self.page(prefix, start_after, limit).await?;
        Ok(v0_2::replicante::platform::state::KeyPage { keys, next })
    }
}

/// Link `replicante:platform/state@0.1.0`.
pub fn add_to_linker_v0_1<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut PluginState,
) -> wasmtime::Result<()> {
    v0_1::replicante::platform::state::add_to_linker::<T, HasSelf<PluginState>>(linker, get)
}

/// Link `replicante:platform/state@0.2.0`.
pub fn add_to_linker_v0_2<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut PluginState,
) -> wasmtime::Result<()> {
    v0_2::replicante::platform::state::add_to_linker::<T, HasSelf<PluginState>>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::embedded::RedbStore;

    #[tokio::test(flavor = "multi_thread")]
    async fn contract_0_2_lists_keys_a_page_at_a_time_and_says_none_after_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).unwrap());
        for i in 0..7 {
            store.set("ns", &format!("k/{i}"), b"x").await.unwrap();
        }
        store.set("ns", "other", b"x").await.unwrap();
        store.set("elsewhere", "k/9", b"x").await.unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let state = PluginState::new("ns".into(), Some(store), deadline);

        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let (keys, next) = state.page("k/".into(), after, 3).await.ok().unwrap();
            pages.push(keys);
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        // 7 keys in pages of 3: the last page is short and says so; a page that ends exactly at
        // the last key says `none` too, so no empty page is ever asked for.
        assert_eq!(
            pages,
            [
                vec!["k/0", "k/1", "k/2"],
                vec!["k/3", "k/4", "k/5"],
                vec!["k/6"]
            ]
        );
        let (keys, next) = state
            .page("k/".into(), Some("k/3".into()), 3)
            .await
            .ok()
            .unwrap();
        assert_eq!((keys.len(), next), (3, None));
        // 0 means the largest page.
        let (keys, next) = state.page("".into(), None, 0).await.ok().unwrap();
        assert_eq!((keys.len(), next), (8, None));
    }
}
