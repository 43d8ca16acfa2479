//! State quotas: how many keys and bytes one backend's namespace may hold, how large one value
//! may be and how many writes a second it may make, so that one plugin cannot fill the store
//! (or keep etcd busy) for every other backend.
//!
//! Precision. A namespace's usage (its keys, and its bytes: each key's length plus its value's)
//! is counted in this process by [`Usage`]: read from the store at the first write
//! ([`StateStore::usage`], a scan), read again at the first write [`REREAD`] after that, and
//! moved by each write's delta in between. This process's writes to one namespace are checked
//! one at a time, each reserving its change before it writes, so concurrent writers never pass
//! a quota together, and then write concurrently (the store's own write path is not
//! serialised by the quota). With the embedded store, which one process holds, the count is
//! exact, except that two concurrent plain sets of one key may count it off by that key until
//! the next re-read. With etcd each
//! replica counts its own writes exactly and sees the other replicas' at its next re-read: N
//! replicas may together go over the key and byte quotas by what the other N-1 wrote since
//! then, at most (N-1) x `state_writes_per_second` x [`REREAD`] writes. The write rate is per
//! replica, like the call limits. A write that does not add keys or bytes is never refused for
//! size (a plugin over a lowered quota can always delete).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{MAX_VALUE_SIZE, StateError, StateStore};

/// How long a namespace's count is trusted before it is read from the store again (to see
/// other replicas' writes, and to heal a count left unknown by a failed write).
pub const REREAD: Duration = Duration::from_secs(30);

/// A backend's state quotas, from its `limits` (`state_keys`, `state_bytes`, `state_value_size`,
/// `state_writes_per_second`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateQuota {
    /// How many keys the namespace may hold.
    pub keys: u64,
    /// How many bytes (keys plus values) the namespace may hold.
    pub bytes: u64,
    /// The largest value one write may store (at most [`MAX_VALUE_SIZE`]).
    pub value: usize,
    /// How many writes (set, delete, compare-and-swap) a second, with a burst of one second's
    /// worth.
    pub writes_per_second: u32,
}

impl Default for StateQuota {
    fn default() -> Self {
        StateQuota {
            keys: 100_000,
            bytes: 64 << 20,
            value: MAX_VALUE_SIZE,
            writes_per_second: 2_000,
        }
    }
}

/// A write refused by a quota: what the plugin is told, and the metric's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The write would add a key to a namespace that holds its quota of keys.
    #[error(
        "over the state quota: the namespace holds {held} keys and may hold {limit} \
         (limits.state_keys); delete keys first"
    )]
    Keys {
        /// Keys held now.
        held: u64,
        /// The quota.
        limit: u64,
    },
    /// The write would take the namespace over its quota of bytes.
    #[error(
        "over the state quota: this write would make the namespace {after} bytes, over its \
         {limit} (limits.state_bytes); delete keys first"
    )]
    Bytes {
        /// The namespace's size after the write.
        after: u64,
        /// The quota.
        limit: u64,
    },
    /// The value is over the backend's value size.
    #[error("value of {size} bytes is over the {limit}-byte limit (limits.state_value_size)")]
    Value {
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The namespace has made its writes for this second.
    #[error(
        "over the state write rate of {limit} writes a second (limits.state_writes_per_second); \
         retry later"
    )]
    Rate {
        /// The limit.
        limit: u32,
    },
}

impl Refusal {
    /// The label value of the refusals metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Keys { .. } => "keys",
            Refusal::Bytes { .. } => "bytes",
            Refusal::Value { .. } => "value_size",
            Refusal::Rate { .. } => "write_rate",
        }
    }
}

/// Why a write under a quota did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QuotaError {
    /// A quota refused it; the store was not written.
    #[error("{0}")]
    Refused(Refusal),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StateError),
}

/// The size a key and its value count for.
fn footprint(key: &str, value: Option<&[u8]>) -> u64 {
    value.map_or(0, |v| (key.len() + v.len()) as u64)
}

#[derive(Default)]
struct Counted {
    keys: u64,
    bytes: u64,
    /// When the count was read from the store; `None`: unknown (never read, or a write failed
    /// with an unknown outcome).
    read_at: Option<Instant>,
}

/// A token bucket: one second's worth of writes at most, refilled continuously.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One namespace's usage, as this process counts it, and its write rate. Shared by every
/// generation of the backend that owns the namespace.
pub struct Usage {
    /// Held while a write is checked and its change reserved, not across the write itself:
    /// writers to one namespace check one at a time, each seeing the others' reservations, and
    /// then write concurrently.
    counted: tokio::sync::Mutex<Counted>,
    bucket: Mutex<Option<Bucket>>,
    /// A write's outcome was lost (its call cut off at the deadline mid-write): the count is
    /// read again at the next write.
    stale: std::sync::atomic::AtomicBool,
}

impl Default for Usage {
    fn default() -> Self {
        Usage::new()
    }
}

impl Usage {
    /// A namespace not counted yet.
    pub fn new() -> Usage {
        Usage {
            counted: tokio::sync::Mutex::new(Counted::default()),
            bucket: Mutex::new(None),
            stale: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The keys and bytes counted now, if known.
    pub async fn counted(&self) -> Option<(u64, u64)> {
        let counted = self.counted.lock().await;
        counted.read_at.map(|_| (counted.keys, counted.bytes))
    }

    /// Take one write from the bucket at `now`.
    fn take_write(&self, quota: &StateQuota, now: Instant) -> Result<(), Refusal> {
        let rate = f64::from(quota.writes_per_second.max(1));
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = bucket.get_or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(Refusal::Rate {
                limit: quota.writes_per_second,
            });
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// Store `value` under `key`, within `quota`.
    pub async fn set(
        &self,
        quota: &StateQuota,
        store: &dyn StateStore,
        namespace: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), QuotaError> {
        self.write(quota, store, namespace, key, None, Some(value))
            .await
            .map(|_| ())
    }

    /// Remove `key`, within the write rate (a delete never adds keys or bytes).
    pub async fn delete(
        &self,
        quota: &StateQuota,
        store: &dyn StateStore,
        namespace: &str,
        key: &str,
    ) -> Result<(), QuotaError> {
        self.write(quota, store, namespace, key, None, None)
            .await
            .map(|_| ())
    }

    /// Compare-and-swap, within `quota`. A swap that would go over a quota is refused before
    /// the comparison, whatever the comparison would have said.
    pub async fn compare_and_swap(
        &self,
        quota: &StateQuota,
        store: &dyn StateStore,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, QuotaError> {
        self.write(quota, store, namespace, key, Some(expected), new)
            .await
    }

    /// One write: `swap` is `Some(expected)` for a compare-and-swap, `None` for a plain set
    /// (`new` is `Some`) or delete (`new` is `None`).
    async fn write(
        &self,
        quota: &StateQuota,
        store: &dyn StateStore,
        namespace: &str,
        key: &str,
        swap: Option<Option<&[u8]>>,
        new: Option<&[u8]>,
    ) -> Result<bool, QuotaError> {
        if let Some(value) = new
            && value.len() > quota.value
        {
            return Err(QuotaError::Refused(Refusal::Value {
                size: value.len(),
                limit: quota.value,
            }));
        }
        self.take_write(quota, Instant::now())
            .map_err(QuotaError::Refused)?;
        let mut counted = self.counted.lock().await;
        let stale = self.stale.swap(false, std::sync::atomic::Ordering::AcqRel);
        if stale || counted.read_at.is_none_or(|at| at.elapsed() >= REREAD) {
            let (keys, bytes) = store.usage(namespace).await?;
            *counted = Counted {
                keys,
                bytes,
                read_at: Some(Instant::now()),
            };
        }
        // What the write replaces: for a swap that happens, exactly `expected`; otherwise the
        // value now (a concurrent writer of the same key may change it before this write lands:
        // the count is then off by that key until the next re-read).
        let current;
        let old = match swap {
            Some(expected) => expected,
            None => {
                current = store.get(namespace, key).await?;
                current.as_deref()
            }
        };
        let (keys_after, bytes_after) = (
            (counted.keys + u64::from(new.is_some())).saturating_sub(u64::from(old.is_some())),
            (counted.bytes + footprint(key, new)).saturating_sub(footprint(key, old)),
        );
        if keys_after > counted.keys && keys_after > quota.keys {
            return Err(QuotaError::Refused(Refusal::Keys {
                held: counted.keys,
                limit: quota.keys,
            }));
        }
        if bytes_after > counted.bytes && bytes_after > quota.bytes {
            return Err(QuotaError::Refused(Refusal::Bytes {
                after: bytes_after,
                limit: quota.bytes,
            }));
        }
        // Reserve the change, so that writers checked after this one see it, and write without
        // holding the count (a slow write, or one a test holds, does not stop the others).
        let (keys_before, bytes_before) = (counted.keys, counted.bytes);
        counted.keys = keys_after;
        counted.bytes = bytes_after;
        drop(counted);
        let reserved = Reserved {
            usage: self,
            done: false,
        };
        let written = match swap {
            Some(expected) => store.compare_and_swap(namespace, key, expected, new).await,
            None => match new {
                Some(value) => store.set(namespace, key, value).await.map(|()| true),
                None => store.delete(namespace, key).await.map(|()| true),
            },
        };
        match written {
            Ok(true) => {
                reserved.defuse();
                Ok(true)
            }
            Ok(false) => {
                // Not written: give the reservation back.
                reserved.defuse();
                let mut counted = self.counted.lock().await;
                counted.keys = (counted.keys + keys_before).saturating_sub(keys_after);
                counted.bytes = (counted.bytes + bytes_before).saturating_sub(bytes_after);
                Ok(false)
            }
            // The write may have happened: the count is read again at the next write (the
            // reservation's guard marks it stale).
            Err(e) => Err(e.into()),
        }
    }
}

/// A write's reserved change whose outcome is not known yet: dropped undefused (an error, or
/// the call cut off mid-write), it marks the count stale.
struct Reserved<'a> {
    usage: &'a Usage,
    done: bool,
}

impl Reserved<'_> {
    fn defuse(mut self) {
        self.done = true;
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.usage
                .stale
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::RedbStore;

    fn store() -> (tempfile::TempDir, Arc<dyn StateStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).unwrap());
        (dir, store)
    }

    fn quota(keys: u64, bytes: u64) -> StateQuota {
        StateQuota {
            keys,
            bytes,
            value: 64,
            writes_per_second: 1_000_000,
        }
    }

    #[tokio::test]
    async fn a_namespace_holds_its_quota_of_keys_and_no_more_and_others_are_not_counted() {
        let (_dir, store) = store();
        let q = quota(3, 1 << 20);
        let usage = Usage::new();
        for k in ["a", "b"] {
            usage.set(&q, &*store, "ns", k, b"v").await.unwrap();
        }
        usage.set(&q, &*store, "ns", "", b"").await.unwrap();
        // Replacing a key adds none; another namespace's keys count for it, not for this one;
        // the empty key with an empty value is a key too.
        usage.set(&q, &*store, "ns", "a", b"w").await.unwrap();
        store.set("other", "x", b"v").await.unwrap();
        let err = usage.set(&q, &*store, "ns", "d", b"v").await.unwrap_err();
        assert!(
            matches!(
                err,
                QuotaError::Refused(Refusal::Keys { held: 3, limit: 3 })
            ),
            "{err:?}"
        );
        assert_eq!(store.get("ns", "d").await.unwrap(), None);
        // A swap that would add a key is refused too, and so is one that only a quota stops.
        let err = usage
            .compare_and_swap(&q, &*store, "ns", "d", None, Some(b"v"))
            .await
            .unwrap_err();
        assert!(matches!(err, QuotaError::Refused(Refusal::Keys { .. })));
        // Deleting makes room (through either operation).
        usage.delete(&q, &*store, "ns", "a").await.unwrap();
        usage.set(&q, &*store, "ns", "d", b"v").await.unwrap();
        assert!(
            usage
                .compare_and_swap(&q, &*store, "ns", "d", Some(b"v"), None)
                .await
                .unwrap()
        );
        assert!(
            usage
                .compare_and_swap(&q, &*store, "ns", "e", None, Some(b"v"))
                .await
                .unwrap()
        );
        assert_eq!(usage.counted().await, Some((3, 4)));
        assert_eq!(store.usage("ns").await.unwrap(), (3, 4));
    }

    #[tokio::test]
    async fn bytes_count_keys_and_values_and_a_write_that_shrinks_always_passes() {
        let (_dir, store) = store();
        let usage = Usage::new();
        let q = quota(100, 20);
        usage.set(&q, &*store, "ns", "k1", &[0; 8]).await.unwrap(); // 10 bytes
        usage.set(&q, &*store, "ns", "k2", &[0; 8]).await.unwrap(); // 20 bytes
        let err = usage.set(&q, &*store, "ns", "k3", b"").await.unwrap_err();
        assert!(
            matches!(
                err,
                QuotaError::Refused(Refusal::Bytes {
                    after: 22,
                    limit: 20
                })
            ),
            "{err:?}"
        );
        // Growing a value is refused; the same size, or smaller, passes.
        let err = usage
            .set(&q, &*store, "ns", "k1", &[0; 9])
            .await
            .unwrap_err();
        assert!(matches!(err, QuotaError::Refused(Refusal::Bytes { .. })));
        usage.set(&q, &*store, "ns", "k1", &[1; 8]).await.unwrap();
        // A quota lowered under what the namespace holds still lets it shrink.
        let lowered = quota(1, 5);
        usage
            .set(&lowered, &*store, "ns", "k1", &[1; 2])
            .await
            .unwrap();
        usage.delete(&lowered, &*store, "ns", "k2").await.unwrap();
        assert_eq!(usage.counted().await, Some((1, 4)));
        // The value size is refused before anything is read or written.
        let err = usage
            .set(&q, &*store, "ns", "k9", &[0; 65])
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            QuotaError::Refused(Refusal::Value {
                size: 65,
                limit: 64
            })
        ));
    }

    #[tokio::test]
    async fn usage_already_in_the_store_counts_from_the_first_write() {
        let (_dir, store) = store();
        for i in 0..5 {
            store.set("ns", &format!("k{i}"), b"v").await.unwrap();
        }
        let usage = Usage::new();
        assert_eq!(usage.counted().await, None);
        let err = usage
            .set(&quota(5, 1 << 20), &*store, "ns", "new", b"v")
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            QuotaError::Refused(Refusal::Keys { held: 5, limit: 5 })
        ));
    }

    #[test]
    fn the_write_rate_allows_a_second_s_burst_then_refills_at_the_rate() {
        let usage = Usage::new();
        let q = StateQuota {
            writes_per_second: 4,
            ..StateQuota::default()
        };
        let t0 = Instant::now();
        for _ in 0..4 {
            usage.take_write(&q, t0).unwrap();
        }
        assert_eq!(usage.take_write(&q, t0), Err(Refusal::Rate { limit: 4 }));
        // A quarter of a second brings one write back, not two.
        let t1 = t0 + Duration::from_millis(250);
        usage.take_write(&q, t1).unwrap();
        assert!(usage.take_write(&q, t1).is_err());
        // An idle minute refills one second's worth, not sixty.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..4 {
            usage.take_write(&q, t2).unwrap();
        }
        assert!(usage.take_write(&q, t2).is_err());
    }

    #[tokio::test]
    async fn writes_over_the_rate_are_refused_before_the_store_and_deletes_are_writes() {
        let (_dir, store) = store();
        let usage = Usage::new();
        // One write a second: the second write comes a few milliseconds after the first (one
        // fsync), far from the second that would refill the bucket.
        let q = StateQuota {
            writes_per_second: 1,
            ..StateQuota::default()
        };
        usage.set(&q, &*store, "ns", "k0", b"v").await.unwrap();
        assert!(matches!(
            usage.set(&q, &*store, "ns", "k1", b"v").await,
            Err(QuotaError::Refused(Refusal::Rate { limit: 1 }))
        ));
        assert!(matches!(
            usage.delete(&q, &*store, "ns", "k0").await,
            Err(QuotaError::Refused(Refusal::Rate { .. }))
        ));
        assert_eq!(store.get("ns", "k1").await.unwrap(), None);
        assert_eq!(
            store.get("ns", "k0").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_never_take_a_namespace_over_its_keys() {
        let (_dir, store) = store();
        let usage = Arc::new(Usage::new());
        let q = quota(10, 1 << 20);
        let writers: Vec<_> = (0..40)
            .map(|i| {
                let (usage, store) = (usage.clone(), store.clone());
                tokio::spawn(async move {
                    usage
                        .compare_and_swap(&q, &*store, "ns", &format!("k{i:02}"), None, Some(b"v"))
                        .await
                })
            })
            .collect();
        let mut stored = 0;
        for w in writers {
            if let Ok(true) = w.await.unwrap() {
                stored += 1;
            }
        }
        // Whichever ten won, each is 3 + 1 bytes.
        assert_eq!(stored, 10);
        assert_eq!(store.usage("ns").await.unwrap(), (10, 40));
    }
}
