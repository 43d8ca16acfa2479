//! The embedded store: one redb file in the state directory, no server to run. Every write is
//! fsynced before it returns. redb lets one process open the file, so this store serves one
//! gateway; several replicas share [`super::etcd::EtcdStore`] instead.
//!
//! Writes are group-committed: one thread owns redb's write transaction, takes every write
//! that is waiting when it starts a commit, applies them in arrival order in one transaction
//! and fsyncs once; each caller is answered only after that commit is durable, so nothing
//! acknowledged can be lost, and concurrent provisions share fsyncs instead of queueing for
//! one each. A read is a lookup in redb's page cache (MVCC: it never waits for a writer) and
//! runs where it is asked, which spares each discovery the thread hand-offs of its index reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::{CommitCounts, MAX_PAGE, Ownership, StateError, StateStore, check_sizes};

/// How many writes wait for the committer at most; callers beyond it wait to be queued.
const QUEUE: usize = 1024;
/// How many writes one commit takes at most, so a commit's latency stays bounded under load.
const MAX_GROUP: usize = 256;

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
    committer: Committer,
}

/// One write waiting for the committer: applied inside a shared transaction, then answered
/// with the commit's outcome.
trait Write: Send {
    /// Apply the write to `txn`, keeping its result until the commit's outcome is known.
    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StateError>;
    /// Answer the caller: its result if `committed` is `Ok`, the commit's error otherwise.
    fn finish(self: Box<Self>, committed: Result<(), StateError>);
}

struct Job<R, F> {
    work: F,
    result: Option<R>,
    reply: oneshot::Sender<Result<R, StateError>>,
}

impl<R, F> Write for Job<R, F>
where
    R: Send,
    F: Fn(&WriteTransaction) -> Result<R, StateError> + Send,
{
    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StateError> {
        self.result = Some((self.work)(txn)?);
        Ok(())
    }

    fn finish(self: Box<Self>, committed: Result<(), StateError>) {
        let Job { result, reply, .. } = *self;
        let answer = committed.and_then(|()| {
            result.ok_or_else(|| StateError::Storage("a write was not applied".into()))
        });
        // The caller may have gone (its request was cancelled): the write stands regardless.
        let _ = reply.send(answer);
    }
}

/// The thread that owns redb's write transaction, and the queue to it. Dropping it lets the
/// thread finish the writes already queued and waits for it, so the database file is closed
/// (and may be reopened) once the store is dropped.
struct Committer {
    queue: Option<mpsc::Sender<Box<dyn Write>>>,
    thread: Option<JoinHandle<()>>,
    counts: Arc<CommitCounts>,
}

impl Committer {
    fn start(db: Arc<Database>) -> Result<Committer, StateError> {
        let (queue, mut waiting) = mpsc::channel::<Box<dyn Write>>(QUEUE);
        let counts = Arc::new(CommitCounts::default());
        let thread_counts = counts.clone();
        let thread = std::thread::Builder::new()
            .name("state-commit".into())
            .spawn(move || {
                while let Some(first) = waiting.blocking_recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match waiting.try_recv() {
                            Ok(write) => group.push(write),
                            Err(_) => break,
                        }
                    }
                    commit_group(&db, group, &thread_counts);
                }
            })
            .map_err(|e| StateError::Storage(format!("cannot start the state committer: {e}")))?;
        Ok(Committer {
            queue: Some(queue),
            thread: Some(thread),
            counts,
        })
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Apply `group` in one transaction and commit it once. If one write fails, the transaction is
/// abandoned and each write is retried in a transaction of its own, so one write's failure is
/// its own.
fn commit_group(db: &Database, mut group: Vec<Box<dyn Write>>, counts: &CommitCounts) {
    let shared = (|| {
        let txn = db.begin_write()?;
        for write in group.iter_mut() {
            if let Err(e) = write.apply(&txn) {
                let _ = txn.abort();
                return Err(e);
            }
        }
        txn.commit()?;
        Ok(())
    })();
    match shared {
        Ok(()) => {
            counts.record(group.len());
            for write in group {
                write.finish(Ok(()));
            }
        }
        Err(_) if group.len() > 1 => {
            for mut write in group {
                let alone = (|| {
                    let txn = db.begin_write()?;
                    write.apply(&txn)?;
                    txn.commit()?;
                    Ok(())
                })();
                if alone.is_ok() {
                    counts.record(1);
                }
                write.finish(alone);
            }
        }
        Err(e) => {
            for write in group {
                write.finish(Err(e.clone()));
            }
        }
    }
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
        let db = Arc::new(db);
        Ok(RedbStore {
            committer: Committer::start(db.clone())?,
            db,
            path,
        })
    }

    /// Run the read-only `f` here.
    fn read<R>(&self, f: impl FnOnce(&Database) -> Result<R, StateError>) -> Result<R, StateError> {
        f(&self.db)
    }

    /// Run the long read `f` (a scan) on the blocking pool.
    async fn scan<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, StateError> + Send + 'static,
    ) -> Result<R, StateError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StateError::Storage(format!("the store's thread failed: {e}")))?
    }

    /// Apply `work` in the committer's next group commit and return its result once that
    /// commit is durable. `work` may run twice (alone, if another write of its group failed),
    /// so it only writes to the transaction it is given.
    async fn write<R: Send + 'static>(
        &self,
        work: impl Fn(&WriteTransaction) -> Result<R, StateError> + Send + 'static,
    ) -> Result<R, StateError> {
        let gone = || StateError::Storage("the state committer has stopped".into());
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Write> = Box::new(Job {
            work,
            result: None,
            reply,
        });
        self.committer
            .queue
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
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
        self.write(move |txn| {
            txn.open_table(KV)?
                .insert((namespace.as_str(), key.as_str()), value.as_slice())?;
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
        self.write(move |txn| {
            txn.open_table(KV)?
                .remove((namespace.as_str(), key.as_str()))?;
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
        self.write(move |txn| {
            // The read sees the writes committed before and those earlier in this group (one
            // write transaction at a time, applied in order): the compare and the swap are atomic.
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
        self.scan(move |db| {
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
        self.write(move |txn| {
            let mut table = txn.open_table(OWNERS)?;
            for o in &stale {
                table.insert(
                    (o.cluster_id.as_str(), o.node_id.as_str()),
                    o.backend.as_str(),
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn forget_owner(&self, cluster_id: &str, node_id: &str) -> Result<(), StateError> {
        let (cluster_id, node_id) = (cluster_id.to_string(), node_id.to_string());
        self.write(move |txn| {
            txn.open_table(OWNERS)?
                .remove((cluster_id.as_str(), node_id.as_str()))?;
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

    fn commit_counts(&self) -> Option<Arc<CommitCounts>> {
        Some(self.committer.counts.clone())
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

    /// A write for [`commit_group`] that sets `key` to `value` if it holds `expected`, and
    /// where its answer arrives.
    fn cas_job(
        key: &'static str,
        expected: Option<&'static [u8]>,
        value: &'static [u8],
    ) -> (Box<dyn Write>, oneshot::Receiver<Result<bool, StateError>>) {
        let (reply, answer) = oneshot::channel();
        let work = move |txn: &WriteTransaction| {
            let mut table = txn.open_table(KV)?;
            if table
                .get(("ns", key))?
                .map(|v| v.value().to_vec())
                .as_deref()
                != expected
            {
                return Ok(false);
            }
            table.insert(("ns", key), value)?;
            Ok(true)
        };
        let job: Box<dyn Write> = Box::new(Job {
            work,
            result: None,
            reply,
        });
        (job, answer)
    }

    #[tokio::test]
    async fn a_group_commits_once_and_applies_its_writes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let counts = CommitCounts::default();
        // Two creations of the same key in one group: the first wins, the second sees it.
        let (a, a_answer) = cas_job("k", None, b"first");
        let (b, b_answer) = cas_job("k", None, b"second");
        let (c, c_answer) = cas_job("k", Some(b"first"), b"third");
        commit_group(&store.db, vec![a, b, c], &counts);
        assert!(a_answer.await.unwrap().unwrap());
        assert!(!b_answer.await.unwrap().unwrap());
        assert!(c_answer.await.unwrap().unwrap());
        assert_eq!(counts.get(), (1, 3), "one commit carried the three writes");
        assert_eq!(
            store.get("ns", "k").await.unwrap().as_deref(),
            Some(&b"third"[..])
        );
    }

    #[tokio::test]
    async fn a_failing_write_fails_alone_and_its_group_still_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let counts = CommitCounts::default();
        let (a, a_answer) = cas_job("a", None, b"1");
        let (reply, failed) = oneshot::channel::<Result<(), StateError>>();
        let failing: Box<dyn Write> = Box::new(Job {
            work: |_: &WriteTransaction| Err(StateError::Storage("disk on fire".into())),
            result: None,
            reply,
        });
        let (c, c_answer) = cas_job("c", None, b"3");
        commit_group(&store.db, vec![a, failing, c], &counts);
        assert!(a_answer.await.unwrap().unwrap());
        assert!(c_answer.await.unwrap().unwrap());
        let err = failed.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("disk on fire"), "{err}");
        assert_eq!(counts.get(), (2, 2), "the two good writes, each alone");
        assert_eq!(
            store.get("ns", "a").await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(
            store.get("ns", "c").await.unwrap().as_deref(),
            Some(&b"3"[..])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_are_all_durable_and_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Arc::new(RedbStore::open(dir.path()).unwrap());
            let tasks: Vec<_> = (0..200)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store.set("ns", &format!("k{i:03}"), b"v").await.unwrap();
                        // A counter every task bumps: no increment may be lost in a group.
                        loop {
                            let now = store.get("ns", "n").await.unwrap();
                            let n: u32 = now
                                .as_deref()
                                .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                            let next = (n + 1).to_string();
                            if store
                                .compare_and_swap("ns", "n", now.as_deref(), Some(next.as_bytes()))
                                .await
                                .unwrap()
                            {
                                break;
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            let (commits, writes) = store.commit_counts().unwrap().get();
            assert!(writes >= 400, "{writes} writes");
            println!("{writes} writes in {commits} commits");
        }
        // Reopened (the committer closed the file when the store was dropped): all of it is there.
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get("ns", "n").await.unwrap().as_deref(),
            Some(&b"200"[..])
        );
        assert_eq!(
            store.list_keys("ns", "k", None, 1000).await.unwrap().len(),
            200
        );
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
