//! State: the embedded, durable store behind the plugins' key-value data and the ownership index.
//!
//! [`StateStore`] is the seam: [`RedbStore`] (one file, no server, every write fsynced before it
//! returns) is the default, and a store shared by several gateway replicas can implement the same
//! trait. Plugins' keys live in one namespace per backend; the ownership index maps
//! `(cluster_id, node_id)` to the backend that owns the node.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Plugin key-value data: `(backend, key) -> value`.
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
/// Ownership index: `(cluster_id, node_id) -> backend`.
const OWNERS: TableDefinition<(&str, &str), &str> = TableDefinition::new("owners");

/// The largest key a plugin may store.
pub const MAX_KEY_SIZE: usize = 1024;
/// The largest value a plugin may store.
pub const MAX_VALUE_SIZE: usize = 1 << 20;

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store failed (I/O, corruption). Nothing was written.
    #[error("state store failure: {0}")]
    Storage(String),
    /// A key or value over the size limits.
    #[error("{0}")]
    TooLarge(String),
}

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

/// A node's owner, as the ownership index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The cluster the node belongs to.
    pub cluster_id: String,
    /// The node.
    pub node_id: String,
    /// The backend that owns it.
    pub backend: String,
}

/// The durable store. Every method blocks until its write is durable; call it off the async
/// runtime's worker threads.
pub trait StateStore: Send + Sync + 'static {
    /// The value under `key` in `namespace`.
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Store `value` under `key` in `namespace`.
    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StateError>;
    /// Remove `key` from `namespace`.
    fn delete(&self, namespace: &str, key: &str) -> Result<(), StateError>;
    /// Replace `expected` (None: absent) with `new` (None: delete) atomically; whether it did.
    fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError>;
    /// The keys of `namespace` that start with `prefix`, in ascending order.
    fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, StateError>;

    /// The backend that owns `(cluster_id, node_id)`, if recorded.
    fn owner(&self, cluster_id: &str, node_id: &str) -> Result<Option<String>, StateError>;
    /// Record owners; records that are already right cost no write.
    fn record_owners(&self, owners: &[Ownership]) -> Result<(), StateError>;
    /// Forget the owner of a node (it was deprovisioned).
    fn forget_owner(&self, cluster_id: &str, node_id: &str) -> Result<(), StateError>;
}

/// The default store: a redb database file in the state directory.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Open (or create) the store in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path) -> Result<RedbStore, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StateError::Storage(format!(
                "cannot create state directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("state.redb");
        let db = Database::create(&path).map_err(|e| {
            StateError::Storage(format!("cannot open state store {}: {e}", path.display()))
        })?;
        // Create the tables up front so that readers never meet a missing table.
        let txn = db.begin_write()?;
        txn.open_table(KV)?;
        txn.open_table(OWNERS)?;
        txn.commit()?;
        Ok(RedbStore { db })
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

fn check_sizes(key: &str, value: Option<&[u8]>) -> Result<(), StateError> {
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

impl StateStore for RedbStore {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        Ok(table.get((namespace, key))?.map(|v| v.value().to_vec()))
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StateError> {
        check_sizes(key, Some(value))?;
        let txn = self.db.begin_write()?;
        txn.open_table(KV)?.insert((namespace, key), value)?;
        txn.commit()?;
        Ok(())
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<(), StateError> {
        check_sizes(key, None)?;
        let txn = self.db.begin_write()?;
        txn.open_table(KV)?.remove((namespace, key))?;
        txn.commit()?;
        Ok(())
    }

    fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        check_sizes(key, new)?;
        // redb runs one write transaction at a time: the read and the write below are atomic.
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(KV)?;
            let current = table.get((namespace, key))?.map(|v| v.value().to_vec());
            if current.as_deref() != expected {
                return Ok(false);
            }
            match new {
                Some(value) => {
                    table.insert((namespace, key), value)?;
                }
                None => {
                    table.remove((namespace, key))?;
                }
            }
        }
        txn.commit()?;
        Ok(true)
    }

    fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, StateError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        let mut keys = Vec::new();
        for entry in table.range((namespace, prefix)..)? {
            let (key, _) = entry?;
            let (ns, key) = key.value();
            if ns != namespace || !key.starts_with(prefix) {
                break;
            }
            keys.push(key.to_string());
        }
        Ok(keys)
    }

    fn owner(&self, cluster_id: &str, node_id: &str) -> Result<Option<String>, StateError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OWNERS)?;
        Ok(table
            .get((cluster_id, node_id))?
            .map(|v| v.value().to_string()))
    }

    fn record_owners(&self, owners: &[Ownership]) -> Result<(), StateError> {
        // Discovery refreshes the index on every call: read first so that an unchanged index
        // costs no write (and no fsync).
        let stale: Vec<&Ownership> = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(OWNERS)?;
            let mut stale = Vec::new();
            for o in owners {
                let known = table.get((o.cluster_id.as_str(), o.node_id.as_str()))?;
                if known.as_ref().map(|v| v.value()) != Some(o.backend.as_str()) {
                    stale.push(o);
                }
            }
            stale
        };
        if stale.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(OWNERS)?;
            for o in stale {
                table.insert(
                    (o.cluster_id.as_str(), o.node_id.as_str()),
                    o.backend.as_str(),
                )?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn forget_owner(&self, cluster_id: &str, node_id: &str) -> Result<(), StateError> {
        let txn = self.db.begin_write()?;
        txn.open_table(OWNERS)?.remove((cluster_id, node_id))?;
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn namespaces_do_not_see_each_other() {
        let (_dir, s) = store();
        s.set("a", "k", b"1").unwrap();
        assert_eq!(s.get("a", "k").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(s.get("b", "k").unwrap(), None);
        assert_eq!(s.list_keys("b", "").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn compare_and_swap_only_swaps_the_expected_value() {
        let (_dir, s) = store();
        assert!(s.compare_and_swap("a", "k", None, Some(b"1")).unwrap());
        assert!(!s.compare_and_swap("a", "k", None, Some(b"2")).unwrap());
        assert!(
            !s.compare_and_swap("a", "k", Some(b"9"), Some(b"2"))
                .unwrap()
        );
        assert!(
            s.compare_and_swap("a", "k", Some(b"1"), Some(b"2"))
                .unwrap()
        );
        assert_eq!(s.get("a", "k").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(s.compare_and_swap("a", "k", Some(b"2"), None).unwrap());
        assert_eq!(s.get("a", "k").unwrap(), None);
    }

    #[test]
    fn concurrent_compare_and_swap_has_one_winner() {
        let (_dir, s) = store();
        let s = std::sync::Arc::new(s);
        let winners: usize = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    s.compare_and_swap("a", "k", None, Some(format!("{i}").as_bytes()))
                        .unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap() as usize)
            .sum();
        assert_eq!(winners, 1);
    }

    #[test]
    fn list_keys_stays_inside_prefix_and_namespace() {
        let (_dir, s) = store();
        for (ns, k) in [
            ("a", "m/1"),
            ("a", "m/2"),
            ("a", "n/1"),
            ("ab", "m/3"),
            ("a", "m"),
        ] {
            s.set(ns, k, b"x").unwrap();
        }
        assert_eq!(s.list_keys("a", "m/").unwrap(), vec!["m/1", "m/2"]);
        assert_eq!(
            s.list_keys("a", "").unwrap(),
            vec!["m", "m/1", "m/2", "n/1"]
        );
    }

    #[test]
    fn oversized_keys_and_values_are_refused() {
        let (_dir, s) = store();
        let long = "k".repeat(MAX_KEY_SIZE + 1);
        assert!(matches!(
            s.set("a", &long, b"x"),
            Err(StateError::TooLarge(_))
        ));
        let big = vec![0u8; MAX_VALUE_SIZE + 1];
        assert!(matches!(
            s.set("a", "k", &big),
            Err(StateError::TooLarge(_))
        ));
        assert_eq!(s.get("a", "k").unwrap(), None);
    }

    #[test]
    fn data_and_owners_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RedbStore::open(dir.path()).unwrap();
            s.set("a", "k", b"v").unwrap();
            s.record_owners(&[Ownership {
                cluster_id: "c".into(),
                node_id: "n".into(),
                backend: "a".into(),
            }])
            .unwrap();
        }
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.get("a", "k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.owner("c", "n").unwrap().as_deref(), Some("a"));
        // A second process cannot read it while it is open...
        let err = read_owner(dir.path(), "c", "n").unwrap_err().to_string();
        assert!(err.contains("in use by a running gateway"), "{err}");
        drop(s);
        // ...but can once it is closed.
        assert_eq!(
            read_owner(dir.path(), "c", "n").unwrap().as_deref(),
            Some("a")
        );
        assert_eq!(read_owner(dir.path(), "c", "x").unwrap(), None);
        let s = RedbStore::open(dir.path()).unwrap();
        s.forget_owner("c", "n").unwrap();
        assert_eq!(s.owner("c", "n").unwrap(), None);
    }
}
