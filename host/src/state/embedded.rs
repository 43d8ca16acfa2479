//! The embedded store: one redb file in the state directory, no server to run. Every write is
//! fsynced before it returns. redb lets one process open the file, so this store serves one
//! gateway; several replicas share [`super::etcd::EtcdStore`] instead.
//!
//! A write waits for its fsync, so it runs on tokio's blocking pool. A read is a lookup in
//! redb's page cache (MVCC: it never waits for a writer) and runs where it is asked, which
//! spares each discovery the thread hand-offs of its index reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{MAX_PAGE, Ownership, StateError, StateStore, check_sizes};

/// Plugin key-value data: `(namespace, key) -> value`.
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
/// Ownership index: `(cluster_id, node_id) -> backend namespace`.
const OWNERS: TableDefinition<(&str, &str), &str> = TableDefinition::new("owners");

impl From<redb::Error> for StateError {
    fn from(e: redb::Error) -> Self {
        StateError::Storage(e.to_string())
    }
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StateError {
            fn from(e: $t) -> Self {
                StateError::from(redb::Error::from(e))
            }
        }
    )*};
}
storage_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The default store: a redb database file in the state directory.
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl RedbStore {
    /// Open (or create) the store in `dir`. Fails if another process holds it. Blocks.
    pub fn open(dir: &Path) -> Result<RedbStore, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StateError::Storage(format!(
                "cannot create state directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("state.redb");
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StateError::Storage(format!(
                "the state store {} is in use by a running gateway",
                path.display()
            )),
            e => StateError::Storage(format!("cannot open state store {}: {e}", path.display())),
        })?;
        // Create the tables up front so that readers never meet a missing table.
        let txn = db.begin_write()?;
        txn.open_table(KV)?;
        txn.open_table(OWNERS)?;
        txn.commit()?;
        Ok(RedbStore {
            db: Arc::new(db),
            path,
        })
    }

    /// Run the read-only `f` here.
    fn read<R>(&self, f: impl FnOnce(&Database) -> Result<R, StateError>) -> Result<R, StateError> {
        f(&self.db)
    }

    /// Run `f` (which writes) on the blocking pool.
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, StateError> + Send + 'static,
    ) -> Result<R, StateError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StateError::Storage(format!("the store's thread failed: {e}")))?
    }
}

#[async_trait]
impl StateStore for RedbStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(KV)?;
            Ok(table
                .get((namespace.as_str(), key.as_str()))?
                .map(|v| v.value().to_vec()))
        })
    }

    async fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StateError> {
        check_sizes(key, Some(value))?;
        let (namespace, key, value) = (namespace.to_string(), key.to_string(), value.to_vec());
        self.run(move |db| {
            let txn = db.begin_write()?;
            txn.open_table(KV)?
                .insert((namespace.as_str(), key.as_str()), value.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), StateError> {
        check_sizes(key, None)?;
        // Deleting a key that is not there costs a read, not a write and its fsync (the
        // gateway clears records that are usually absent on every provision).
        if self.get(namespace, key).await?.is_none() {
            return Ok(());
        }
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.run(move |db| {
            let txn = db.begin_write()?;
            txn.open_table(KV)?
                .remove((namespace.as_str(), key.as_str()))?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        check_sizes(key, new)?;
        let (namespace, key) = (namespace.to_string(), key.to_string());
        let (expected, new) = (expected.map(<[u8]>::to_vec), new.map(<[u8]>::to_vec));
        self.run(move |db| {
            // redb runs one write transaction at a time: the read and the write are atomic.
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(KV)?;
                let k = (namespace.as_str(), key.as_str());
                let current = table.get(k)?.map(|v| v.value().to_vec());
                if current != expected {
                    return Ok(false);
                }
                match &new {
                    Some(value) => {
                        table.insert(k, value.as_slice())?;
                    }
                    None => {
                        table.remove(k)?;
                    }
                }
            }
            txn.commit()?;
            Ok(true)
        })
        .await
    }

    async fn list_keys(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        let limit = limit.min(MAX_PAGE);
        let (namespace, prefix) = (namespace.to_string(), prefix.to_string());
        let after = after.map(str::to_string);
        self.read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(KV)?;
            let start = match &after {
                Some(after) if after.as_str() >= prefix.as_str() => after.as_str(),
                _ => prefix.as_str(),
            };
            let mut keys = Vec::new();
            for entry in table.range((namespace.as_str(), start)..)? {
                if keys.len() >= limit {
                    break;
                }
                let (k, _) = entry?;
                let (ns, key) = k.value();
                if ns != namespace || !key.starts_with(prefix.as_str()) {
                    break;
                }
                if after.as_deref().is_some_and(|a| key <= a) {
                    continue;
                }
                keys.push(key.to_string());
            }
            Ok(keys)
        })
    }

    async fn namespaces(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        let after = after.map(str::to_string);
        self.read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(KV)?;
            let mut names: Vec<String> = Vec::new();
            // Keys sort by namespace first: jump from one namespace to the first key after it
            // (backend names never hold a NUL, so `ns\0` sorts right after every key of `ns`).
            let mut from = after.map(|a| format!("{a}\u{0}")).unwrap_or_default();
            while names.len() < limit {
                let next = match table.range((from.as_str(), "")..)?.next() {
                    Some(entry) => entry?.0.value().0.to_string(),
                    None => break,
                };
                from = format!("{next}\u{0}");
                names.push(next);
            }
            Ok(names)
        })
    }

    async fn usage(&self, namespace: &str) -> Result<(u64, u64), StateError> {
        // One read transaction over the namespace's range: a consistent count.
        let namespace = namespace.to_string();
        self.run(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(KV)?;
            let (mut keys, mut bytes) = (0u64, 0u64);
            for entry in table.range((namespace.as_str(), "")..)? {
                let (k, v) = entry?;
                let (ns, key) = k.value();
                if ns != namespace {
                    break;
                }
                keys += 1;
                bytes += (key.len() + v.value().len()) as u64;
            }
            Ok((keys, bytes))
        })
        .await
    }

    async fn owner(&self, cluster_id: &str, node_id: &str) -> Result<Option<String>, StateError> {
        let (cluster_id, node_id) = (cluster_id.to_string(), node_id.to_string());
        self.read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(OWNERS)?;
            Ok(table
                .get((cluster_id.as_str(), node_id.as_str()))?
                .map(|v| v.value().to_string()))
        })
    }

    async fn record_owners(&self, owners: &[Ownership]) -> Result<(), StateError> {
        // Discovery refreshes the index on every call: read first so that an unchanged index
        // costs no write (and no fsync, and no trip to the blocking pool).
        let stale: Vec<Ownership> = self.read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(OWNERS)?;
            let mut stale = Vec::new();
            for o in owners {
                let known = table.get((o.cluster_id.as_str(), o.node_id.as_str()))?;
                if known.as_ref().map(|v| v.value()) != Some(o.backend.as_str()) {
                    stale.push(o.clone());
                }
            }
            Ok(stale)
        })?;
        if stale.is_empty() {
            return Ok(());
        }
        self.run(move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(OWNERS)?;
                for o in &stale {
                    table.insert(
                        (o.cluster_id.as_str(), o.node_id.as_str()),
                        o.backend.as_str(),
                    )?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn forget_owner(&self, cluster_id: &str, node_id: &str) -> Result<(), StateError> {
        let (cluster_id, node_id) = (cluster_id.to_string(), node_id.to_string());
        self.run(move |db| {
            let txn = db.begin_write()?;
            txn.open_table(OWNERS)?
                .remove((cluster_id.as_str(), node_id.as_str()))?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn owners(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Ownership>, StateError> {
        let after = after.map(|(c, n)| (c.to_string(), n.to_string()));
        self.read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(OWNERS)?;
            let mut out = Vec::new();
            let range = match &after {
                Some((c, n)) => table.range((c.as_str(), n.as_str())..)?,
                None => table.range::<(&str, &str)>(..)?,
            };
            for entry in range {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = entry?;
                let (cluster_id, node_id) = k.value();
                if after
                    .as_ref()
                    .is_some_and(|(c, n)| (cluster_id, node_id) <= (c.as_str(), n.as_str()))
                {
                    continue;
                }
                out.push(Ownership {
                    cluster_id: cluster_id.to_string(),
                    node_id: node_id.to_string(),
                    backend: v.value().to_string(),
                });
            }
            Ok(out)
        })
    }

    async fn check(&self) -> Result<(), StateError> {
        Ok(())
    }

    fn describe(&self) -> String {
        format!("embedded store {}", self.path.display())
    }
}

/// The owner of a node as recorded in the store in `dir`, for inspection tools. `Ok(None)` when
/// there is no store yet. Fails while a running gateway holds the store (redb allows one
/// process); ask that gateway's admin API instead.
pub fn read_owner(
    dir: &Path,
    cluster_id: &str,
    node_id: &str,
) -> Result<Option<String>, StateError> {
    let path = dir.join("state.redb");
    if !path.exists() {
        return Ok(None);
    }
    let db = redb::ReadOnlyDatabase::open(&path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StateError::Storage(format!(
            "the state store {} is in use by a running gateway",
            path.display()
        )),
        e => StateError::Storage(format!("cannot read state store {}: {e}", path.display())),
    })?;
    let txn = db.begin_read()?;
    let table = match txn.open_table(OWNERS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(table
        .get((cluster_id, node_id))?
        .map(|v| v.value().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_embedded_store_passes_the_contract_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).unwrap());
        super::super::contract::run(store).await;
    }

    #[tokio::test]
    async fn data_and_owners_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RedbStore::open(dir.path()).unwrap();
            s.set("a", "k", b"v").await.unwrap();
            s.record_owners(&[Ownership {
                cluster_id: "c".into(),
                node_id: "n".into(),
                backend: "a".into(),
            }])
            .await
            .unwrap();
            // A second process cannot read it while it is open...
            let err = read_owner(dir.path(), "c", "n").unwrap_err().to_string();
            assert!(err.contains("in use by a running gateway"), "{err}");
        }
        // ...but can once it is closed.
        assert_eq!(
            read_owner(dir.path(), "c", "n").unwrap().as_deref(),
            Some("a")
        );
        assert_eq!(read_owner(dir.path(), "c", "x").unwrap(), None);
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.get("a", "k").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.owner("c", "n").await.unwrap().as_deref(), Some("a"));
        s.forget_owner("c", "n").await.unwrap();
        assert_eq!(s.owner("c", "n").await.unwrap(), None);
    }
}
