//! [`MeteredStore`]: any [`StateStore`], with the time and the failures of each operation
//! counted. The gateway wraps its store in it once, where the store is opened, so plugin state,
//! the ownership index and the gateway's own records are all measured, and each operation runs
//! in a `state` span (debug level) inside the request or plugin call that made it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::Metrics;
use crate::state::{Ownership, StateError, StateStore};

/// A state store that records each operation's latency and errors in [`Metrics`].
pub struct MeteredStore {
    inner: Arc<dyn StateStore>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// `inner`, measured into `metrics`.
    pub fn wrap(inner: Arc<dyn StateStore>, metrics: Arc<Metrics>) -> Arc<dyn StateStore> {
        if let Some(counts) = inner.commit_counts() {
            metrics.follow_commits(counts);
        }
        Arc::new(MeteredStore { inner, metrics })
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        let started = Instant::now();
        let span = tracing::debug_span!("state", operation);
        let result = tracing::Instrument::instrument(work, span).await;
        let error = result.as_ref().err().map(kind);
        self.metrics
            .record_state(operation, started.elapsed(), error);
        result
    }
}

/// The label value of a state error.
fn kind(error: &StateError) -> &'static str {
    match error {
        StateError::Unavailable(_) => "unavailable",
        StateError::Storage(_) => "storage",
        StateError::TooLarge(_) => "too_large",
    }
}

#[async_trait]
impl StateStore for MeteredStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.timed("get", self.inner.get(namespace, key)).await
    }

    async fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StateError> {
        self.timed("set", self.inner.set(namespace, key, value))
            .await
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), StateError> {
        self.timed("delete", self.inner.delete(namespace, key))
            .await
    }

    async fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        self.timed(
            "compare_and_swap",
            self.inner.compare_and_swap(namespace, key, expected, new),
        )
        .await
    }

    async fn list_keys(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        self.timed(
            "list_keys",
            self.inner.list_keys(namespace, prefix, after, limit),
        )
        .await
    }

    async fn namespaces(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        self.timed("namespaces", self.inner.namespaces(after, limit))
            .await
    }

    async fn owner(&self, cluster_id: &str, node_id: &str) -> Result<Option<String>, StateError> {
        self.timed("owner", self.inner.owner(cluster_id, node_id))
            .await
    }

    async fn record_owners(&self, owners: &[Ownership]) -> Result<(), StateError> {
        self.timed("record_owners", self.inner.record_owners(owners))
            .await
    }

    async fn forget_owner(&self, cluster_id: &str, node_id: &str) -> Result<(), StateError> {
        self.timed("forget_owner", self.inner.forget_owner(cluster_id, node_id))
            .await
    }

    async fn owners(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Ownership>, StateError> {
        self.timed("owners", self.inner.owners(after, limit)).await
    }

    async fn usage(&self, namespace: &str) -> Result<(u64, u64), StateError> {
        self.timed("usage", self.inner.usage(namespace)).await
    }

    async fn check(&self) -> Result<(), StateError> {
        self.timed("check", self.inner.check()).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn commit_counts(&self) -> Option<Arc<crate::state::CommitCounts>> {
        self.inner.commit_counts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MAX_VALUE_SIZE, RedbStore};

    #[tokio::test]
    async fn each_operation_is_timed_and_each_failure_counted_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let store = MeteredStore::wrap(
            Arc::new(RedbStore::open(dir.path()).unwrap()),
            metrics.clone(),
        );
        store.set("pool", "a", b"1").await.unwrap();
        assert_eq!(
            store.get("pool", "a").await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert!(store.get("pool", "missing").await.unwrap().is_none());
        let huge = vec![0u8; MAX_VALUE_SIZE + 1];
        assert!(matches!(
            store.set("pool", "b", &huge).await,
            Err(StateError::TooLarge(_))
        ));
        assert!(
            store.describe().contains("state.redb"),
            "{}",
            store.describe()
        );

        let text = metrics.encode_prometheus();
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has("platform_gateway_state_operation_duration_seconds_count{operation=\"get\"} 2"),
            "{text}"
        );
        assert!(
            has("platform_gateway_state_operation_duration_seconds_count{operation=\"set\"} 2"),
            "{text}"
        );
        assert!(
            has("platform_gateway_state_errors_total{operation=\"set\",kind=\"too_large\"} 1"),
            "{text}"
        );
        assert!(!text.contains("operation=\"get\",kind="), "{text}");
    }
}
