//! State: the durable store behind the plugins' key-value data, the ownership index and the
//! gateway's own records (recent deprovisions).
//!
//! [`StateStore`] is the seam, with two implementations that pass one contract suite
//! (`contract`, compiled for tests only): [`embedded::RedbStore`] (one file, no server, the default for one machine) and
//! [`etcd::EtcdStore`] (shared by several gateway replicas). Every method is async and returns
//! once its write is durable; a store that cannot be reached answers
//! [`StateError::Unavailable`], which the API turns into 503 with `Retry-After`.
//!
//! Plugins' keys live in one namespace per backend; the ownership index maps
//! `(cluster_id, node_id)` to the backend that owns the node. Gateway records use namespaces
//! that start with `@`, which no backend name can.

pub mod config;
#[cfg(test)]
pub mod contract;
pub mod embedded;
pub mod etcd;
pub mod quota;
pub mod transfer;

use async_trait::async_trait;

pub use config::{EtcdSettings, EtcdTls, StoreConfig};
pub use embedded::RedbStore;
pub use etcd::EtcdStore;
pub use quota::{StateQuota, Usage};

/// The largest key a plugin may store.
pub const MAX_KEY_SIZE: usize = 1024;
/// The largest value a plugin may store.
pub const MAX_VALUE_SIZE: usize = 1 << 20;
/// How many keys one `list_keys` page holds at most, whatever the caller asks for.
pub const MAX_PAGE: usize = 1000;

/// Why a state operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    /// The store cannot be reached or cannot serve now (no quorum, a timeout). Nothing was
    /// written, or the write's outcome is unknown; retrying later is right.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The store failed (I/O, corruption). Nothing was written.
    #[error("state store failure: {0}")]
    Storage(String),
    /// A key or value over the size limits.
    #[error("{0}")]
    TooLarge(String),
}

/// A node's owner, as the ownership index records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ownership {
    /// The cluster the node belongs to.
    pub cluster_id: String,
    /// The node.
    pub node_id: String,
    /// The namespace of the backend that owns it (the backend's `state_namespace`, by default
    /// its name).
    pub backend: String,
}

/// How many commits a store made and how many writes they carried: more writes than commits
/// means concurrent writes shared fsyncs (group commit).
#[derive(Debug, Default)]
pub struct CommitCounts {
    commits: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
}

impl CommitCounts {
    /// One durable commit that carried `writes` writes.
    pub fn record(&self, writes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.commits.fetch_add(1, Relaxed);
        self.writes.fetch_add(writes as u64, Relaxed);
    }

    /// `(commits, writes)` so far.
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.commits.load(Relaxed), self.writes.load(Relaxed))
    }
}

/// The durable store shared by every backend of a gateway (and by every replica, for stores
/// that support it).
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The value under `key` in `namespace`.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Store `value` under `key` in `namespace`.
    async fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StateError>;
    /// Remove `key` from `namespace`; removing a missing key is not an error.
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), StateError>;
    /// Replace `expected` (None: absent) with `new` (None: delete) atomically; whether it did.
    async fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError>;
    /// Up to `limit` (at most [`MAX_PAGE`]) keys of `namespace` that start with `prefix` and sort
    /// after `after`, in ascending byte order: one page of a listing.
    async fn list_keys(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError>;
    /// Up to `limit` namespaces that hold at least one key and sort after `after`, ascending.
    async fn namespaces(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError>;

    /// The backend that owns `(cluster_id, node_id)`, if recorded.
    async fn owner(&self, cluster_id: &str, node_id: &str) -> Result<Option<String>, StateError>;
    /// Record owners; records that are already right cost no write.
    async fn record_owners(&self, owners: &[Ownership]) -> Result<(), StateError>;
    /// Forget the owner of a node (it was deprovisioned, or vanished).
    async fn forget_owner(&self, cluster_id: &str, node_id: &str) -> Result<(), StateError>;
    /// Up to `limit` ownership records that sort after `after` (by cluster, then node).
    async fn owners(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Ownership>, StateError>;

    /// How many keys `namespace` holds, and how many bytes (each key's length plus its
    /// value's), read from the store: a scan, for [`quota::Usage`] to start counting from. This
    /// default reads every value through [`StateStore::get`]; stores override it with one pass.
    async fn usage(&self, namespace: &str) -> Result<(u64, u64), StateError> {
        let (mut keys, mut bytes) = (0u64, 0u64);
        let mut after: Option<String> = None;
        loop {
            let page = self
                .list_keys(namespace, "", after.as_deref(), MAX_PAGE)
                .await?;
            for key in &page {
                if let Some(value) = self.get(namespace, key).await? {
                    keys += 1;
                    bytes += (key.len() + value.len()) as u64;
                }
            }
            if page.len() < MAX_PAGE {
                return Ok((keys, bytes));
            }
            after = page.last().cloned();
        }
    }

    /// Whether the store can serve now (a cheap read that needs what a write needs, e.g. a
    /// quorum). `/readyz` asks it.
    async fn check(&self) -> Result<(), StateError>;
    /// A short name for messages and logs (`embedded store state/state.redb`, `etcd`).
    fn describe(&self) -> String;
    /// The store's commit counts, for stores that group writes into shared commits.
    fn commit_counts(&self) -> Option<std::sync::Arc<CommitCounts>> {
        None
    }
}

/// Every key of `namespace` that starts with `prefix`, read a page at a time.
pub async fn all_keys(
    store: &dyn StateStore,
    namespace: &str,
    prefix: &str,
) -> Result<Vec<String>, StateError> {
    let mut keys: Vec<String> = Vec::new();
    loop {
        let page = store
            .list_keys(namespace, prefix, keys.last().map(String::as_str), MAX_PAGE)
            .await?;
        let done = page.len() < MAX_PAGE;
        keys.extend(page);
        if done {
            return Ok(keys);
        }
    }
}

/// Whether `namespace` holds any key.
pub async fn holds_data(store: &dyn StateStore, namespace: &str) -> Result<bool, StateError> {
    Ok(!store.list_keys(namespace, "", None, 1).await?.is_empty())
}

/// Refuse keys and values over the limits, the same way in every store.
pub fn check_sizes(key: &str, value: Option<&[u8]>) -> Result<(), StateError> {
    if key.len() > MAX_KEY_SIZE {
        return Err(StateError::TooLarge(format!(
            "key of {} bytes is over the {MAX_KEY_SIZE}-byte limit",
            key.len()
        )));
    }
    if let Some(value) = value
        && value.len() > MAX_VALUE_SIZE
    {
        return Err(StateError::TooLarge(format!(
            "value of {} bytes is over the {MAX_VALUE_SIZE}-byte limit",
            value.len()
        )));
    }
    Ok(())
}

/// Open the store `config` names: the embedded store in `dir`, or etcd.
pub async fn open(
    config: &StoreConfig,
    dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn StateStore>, StateError> {
    Ok(match config {
        StoreConfig::Embedded => {
            let dir = dir.to_path_buf();
            let store = tokio::task::spawn_blocking(move || RedbStore::open(&dir))
                .await
                .map_err(|e| StateError::Storage(format!("opening the store failed: {e}")))??;
            std::sync::Arc::new(store)
        }
        StoreConfig::Etcd(settings) => std::sync::Arc::new(EtcdStore::connect(settings).await?),
    })
}
