//! The plugin's state store with a hook before every write, so that the kit can hold one call
//! there while another runs to its end.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::state::{Ownership, StateError, StateStore};

/// The plugin's state store, which can hold one call at its first write while the kit runs
/// another call to its end: the deterministic race of the scenario.
pub(super) struct Interleave {
    inner: Arc<dyn StateStore>,
    /// Armed: told when a write arrives, and waited on before the write goes on.
    armed: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

impl Interleave {
    pub(super) fn new(inner: Arc<dyn StateStore>) -> Interleave {
        Interleave {
            inner,
            armed: Mutex::new(None),
        }
    }

    /// Hold the next write: the first receiver hears when it arrives, and it goes on when the
    /// sender is used (or dropped).
    pub(super) fn arm(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (paused_tx, paused_rx) = oneshot::channel();
        let (resume_tx, resume_rx) = oneshot::channel();
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some((paused_tx, resume_rx));
        (paused_rx, resume_tx)
    }

    pub(super) fn disarm(&self) {
        self.armed.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Called before every write: the armed one waits (once) for the kit.
    async fn before_write(&self) {
        let armed = self.armed.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((paused, resume)) = armed
            && paused.send(()).is_ok()
        {
            let _ = resume.await;
        }
    }
}

#[async_trait]
impl StateStore for Interleave {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.inner.get(namespace, key).await
    }
    async fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StateError> {
        self.before_write().await;
        self.inner.set(namespace, key, value).await
    }
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), StateError> {
        self.before_write().await;
        self.inner.delete(namespace, key).await
    }
    async fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        self.before_write().await;
        self.inner
            .compare_and_swap(namespace, key, expected, new)
            .await
    }
    async fn list_keys(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        self.inner.list_keys(namespace, prefix, after, limit).await
    }
    async fn namespaces(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        self.inner.namespaces(after, limit).await
    }
    async fn owner(&self, cluster_id: &str, node_id: &str) -> Result<Option<String>, StateError> {
        self.inner.owner(cluster_id, node_id).await
    }
    async fn record_owners(&self, owners: &[Ownership]) -> Result<(), StateError> {
        self.inner.record_owners(owners).await
    }
    async fn forget_owner(&self, cluster_id: &str, node_id: &str) -> Result<(), StateError> {
        self.inner.forget_owner(cluster_id, node_id).await
    }
    async fn owners(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Ownership>, StateError> {
        self.inner.owners(after, limit).await
    }
    async fn check(&self) -> Result<(), StateError> {
        self.inner.check().await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}
