//! The recordings' ring on local disk: one redb file (`recordings.redb` in the state directory,
//! never in etcd: each replica keeps what it served), a table keyed by backend and sequence
//! number. One writer thread takes entries from a bounded queue, writes what has queued up in
//! one transaction (made durable once a second, not each time), and drops the oldest entries of
//! a backend past its bounds (calls and bytes). A full queue drops the new entry and counts it: recording never slows a call.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Entry, RecordConfig};

const CALLS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("calls");
/// How many entries may wait for the writer.
pub const QUEUE: usize = 1024;
/// The most entries the writer puts in one transaction.
const BATCH: usize = 1024;
/// How long the writer waits for more entries before it writes a transaction.
const LINGER: std::time::Duration = std::time::Duration::from_millis(100);
/// How often the writer makes what it wrote durable (an fsync).
const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How many entries one page of a read holds.
pub const PAGE: usize = 64;

/// A backend's ring: where its next entry goes and what it holds.
#[derive(Debug, Clone, Copy, Default)]
struct Extent {
    /// The sequence number of its oldest entry.
    first: u64,
    /// The sequence number its next entry gets.
    next: u64,
    /// The bytes its entries hold.
    bytes: u64,
}

/// What is waiting for the writer.
enum Job {
    Entry(Box<Entry>, RecordConfig),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The recordings of this gateway (one per process).
pub struct Recordings {
    db: Arc<Database>,
    /// `None` once dropped: the writer then ends, and is waited for.
    queue: Option<SyncSender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    dropped: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Drop for Recordings {
    fn drop(&mut self) {
        // The writer writes what is queued, then ends; the file is closed when it has.
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recordings")
    }
}

impl Recordings {
    /// Open (or create) `recordings.redb` in `dir` and start its writer.
    pub fn open(dir: &Path) -> Result<Arc<Recordings>, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("recordings.redb");
        let db = Database::create(&path)
            .map_err(|e| format!("cannot open the recordings at {}: {e}", path.display()))?;
        let db = Arc::new(db);
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(CALLS).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        let (queue, jobs) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = db.clone();
        let writer = std::thread::Builder::new()
            .name("recordings".into())
            .spawn(move || write(&writer, jobs))
            .map_err(|e| format!("cannot start the recordings' writer: {e}"))?;
        Ok(Arc::new(Recordings {
            db,
            queue: Some(queue),
            writer: Some(writer),
            dropped: Arc::default(),
        }))
    }

    /// Keep `entry` within `bounds`, unless the queue is full (then it is counted as dropped).
    pub fn record(&self, entry: Entry, bounds: RecordConfig) {
        let backend = entry.backend.clone();
        let Some(queue) = &self.queue else { return };
        match queue.try_send(Job::Entry(Box::new(entry), bounds)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
                *dropped.entry(backend).or_default() += 1;
            }
        }
    }

    /// Entries dropped because the queue was full, by backend.
    pub fn dropped(&self) -> BTreeMap<String, u64> {
        self.dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wait until every entry queued so far is written.
    pub fn flush(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if let Some(queue) = &self.queue
            && queue.send(Job::Flush(done)).is_ok()
        {
            let _ = wait.recv();
        }
    }

    /// Up to [`PAGE`] entries of `backend` (as JSON) after sequence number `after`, oldest
    /// first, with the sequence number of the last.
    pub fn page(&self, backend: &str, after: Option<u64>) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(CALLS).map_err(|e| e.to_string())?;
        let start = after.map_or(0, |n| n.saturating_add(1));
        let range = table
            .range((backend, start)..=(backend, u64::MAX))
            .map_err(|e| e.to_string())?;
        let mut page = Vec::new();
        for item in range.take(PAGE) {
            let (key, value) = item.map_err(|e| e.to_string())?;
            page.push((key.value().1, value.value().to_vec()));
        }
        Ok(page)
    }

    /// How many entries and bytes `backend`'s ring holds.
    pub fn extent(&self, backend: &str) -> Result<(u64, u64), String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(CALLS).map_err(|e| e.to_string())?;
        let extent = measure(&table, backend).map_err(|e| e.to_string())?;
        Ok((extent.next - extent.first, extent.bytes))
    }
}

/// The recordings of a gateway, opened when first needed: a gateway none of whose backends
/// record never creates the file.
#[derive(Debug)]
pub struct Lazy {
    dir: std::path::PathBuf,
    opened: std::sync::OnceLock<Result<Arc<Recordings>, String>>,
}

impl Lazy {
    /// The recordings in `dir`, not yet opened.
    pub fn new(dir: std::path::PathBuf) -> Arc<Lazy> {
        Arc::new(Lazy {
            dir,
            opened: std::sync::OnceLock::new(),
        })
    }

    /// Open them (once; later calls answer the same).
    pub fn open(&self) -> Result<Arc<Recordings>, String> {
        self.opened
            .get_or_init(|| Recordings::open(&self.dir))
            .clone()
    }

    /// Them, if they are open or their file exists (recorded before a restart); else `None`.
    pub fn existing(&self) -> Option<Result<Arc<Recordings>, String>> {
        if self.opened.get().is_none() && !self.dir.join("recordings.redb").exists() {
            return None;
        }
        Some(self.open())
    }
}

/// What `table` holds of `backend`.
fn measure(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    backend: &str,
) -> Result<Extent, redb::Error> {
    let mut extent = Extent::default();
    let mut seen = false;
    for item in table.range((backend, 0)..=(backend, u64::MAX))? {
        let (key, value) = item?;
        let seq = key.value().1;
        if !seen {
            extent.first = seq;
            seen = true;
        }
        extent.next = seq + 1;
        extent.bytes += value.value().len() as u64;
    }
    if !seen {
        extent.first = 0;
        extent.next = 0;
    }
    Ok(extent)
}

/// The writer: batches of queued entries, one transaction each, until the gateway stops. A
/// recording is not acknowledged data: batches are committed without an fsync, and made durable
/// at most once per [`DURABLE_EVERY`], on a flush and when the gateway stops, so that recording
/// costs the disk one fsync a second rather than one a batch (a crash loses at most the last
/// second of recorded calls, never a call).
fn write(db: &Database, jobs: Receiver<Job>) {
    let mut extents: BTreeMap<String, Extent> = BTreeMap::new();
    let mut durable_at = std::time::Instant::now();
    let mut pending = false;
    loop {
        let first = if pending {
            match jobs.recv_timeout(DURABLE_EVERY.saturating_sub(durable_at.elapsed())) {
                Ok(job) => job,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    pending = !make_durable(db);
                    durable_at = std::time::Instant::now();
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        // Entries that arrive within LINGER share the transaction: a transaction rewrites the
        // tree's path to each change, so fewer and larger ones cost the disk and the CPU less.
        let linger_until = std::time::Instant::now() + LINGER;
        let mut batch = vec![first];
        while batch.len() < BATCH && !matches!(batch.last(), Some(Job::Flush(_))) {
            let left = linger_until.saturating_duration_since(std::time::Instant::now());
            match jobs.recv_timeout(left) {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let flush = batch.iter().any(|job| matches!(job, Job::Flush(_)));
        let durable = flush || durable_at.elapsed() >= DURABLE_EVERY;
        match write_batch(db, &mut extents, &mut batch, durable) {
            Ok(()) if durable => {
                pending = false;
                durable_at = std::time::Instant::now();
            }
            Ok(()) => pending = true,
            Err(e) => {
                tracing::warn!(
                    "recordings: a batch of {} entries was lost: {e}",
                    batch.len()
                );
                // What is known of the extents may be wrong now: measure again.
                extents.clear();
            }
        }
        for job in batch {
            if let Job::Flush(done) = job {
                let _ = done.send(());
            }
        }
    }
    if pending {
        make_durable(db);
    }
}

/// Commit an empty durable transaction: what earlier non-durable ones wrote is then on disk.
fn make_durable(db: &Database) -> bool {
    let done = db
        .begin_write()
        .map_err(redb::Error::from)
        .and_then(|txn| txn.commit().map_err(redb::Error::from));
    if let Err(e) = &done {
        tracing::warn!("recordings: cannot make the last entries durable: {e}");
    }
    done.is_ok()
}

fn write_batch(
    db: &Database,
    extents: &mut BTreeMap<String, Extent>,
    batch: &mut [Job],
    durable: bool,
) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    if !durable {
        // Never refused here: this transaction creates no savepoint and deletes no table.
        let _ = txn.set_durability(redb::Durability::None);
    }
    {
        let mut table = txn.open_table(CALLS)?;
        for job in batch.iter_mut() {
            let Job::Entry(entry, bounds) = job else {
                continue;
            };
            let backend = entry.backend.clone();
            let extent = match extents.get(&backend) {
                Some(extent) => *extent,
                None => measure(&table, &backend)?,
            };
            let mut extent = extent;
            entry.seq = extent.next;
            let line = serde_json::to_vec(&**entry).unwrap_or_default();
            table.insert((backend.as_str(), extent.next), line.as_slice())?;
            extent.next += 1;
            extent.bytes += line.len() as u64;
            while extent.first < extent.next
                && (extent.next - extent.first > bounds.calls || extent.bytes > bounds.bytes)
            {
                if let Some(old) = table.remove((backend.as_str(), extent.first))? {
                    extent.bytes = extent.bytes.saturating_sub(old.value().len() as u64);
                }
                extent.first += 1;
            }
            extents.insert(backend, extent);
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::tape::TapeRecord;
    use crate::recording::Build;

    fn entry(backend: &str, n: usize) -> Entry {
        Entry {
            format: super::super::FORMAT,
            seq: 0,
            at: "2026-01-01T00:00:00Z".into(),
            backend: backend.into(),
            operation: "discover".into(),
            request: serde_json::Value::Null,
            answer: serde_json::json!({ "ok": n }),
            build: Build {
                digest: "d".into(),
                contract: "0.2.0".into(),
                version: "stable".into(),
            },
            duration_ms: 1.0,
            events: Vec::new(),
            dropped_events: 0,
            tape: TapeRecord::default(),
        }
    }

    #[test]
    fn the_ring_keeps_its_bound_of_calls_and_bytes_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let bounds = RecordConfig {
            calls: 10,
            bytes: 1 << 20,
        };
        {
            let recordings = Recordings::open(dir.path()).unwrap();
            for n in 0..100 {
                recordings.record(entry("pool", n), bounds);
                if n % 7 == 0 {
                    recordings.flush();
                }
            }
            recordings.record(entry("other", 0), bounds);
            recordings.flush();
            assert_eq!(recordings.extent("pool").unwrap().0, 10);
            let page = recordings.page("pool", None).unwrap();
            let answers: Vec<u64> = page
                .iter()
                .map(|(_, line)| {
                    let entry: Entry = serde_json::from_slice(line).unwrap();
                    entry.answer["ok"].as_u64().unwrap()
                })
                .collect();
            assert_eq!(answers, (90..100).collect::<Vec<u64>>());
            assert!(recordings.dropped().is_empty());
        }
        let recordings = Recordings::open(dir.path()).unwrap();
        assert_eq!(recordings.extent("pool").unwrap().0, 10);
        assert_eq!(recordings.extent("other").unwrap().0, 1);
        // The sequence goes on where it stopped.
        recordings.record(entry("pool", 100), bounds);
        recordings.flush();
        let page = recordings.page("pool", None).unwrap();
        assert_eq!(page.len(), 10);
        assert_eq!(page.last().unwrap().0, 100);
        // A byte bound of about three entries (later ones are a few bytes longer) keeps three.
        let line = page[0].1.len() as u64;
        let small = RecordConfig {
            calls: 10,
            bytes: line * 3 + 16,
        };
        recordings.record(entry("pool", 101), small);
        recordings.flush();
        assert_eq!(recordings.extent("pool").unwrap().0, 3);
    }
}
