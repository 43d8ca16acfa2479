//! State: the `replicante:platform/state` interface over the gateway's [`StateStore`], in the
//! backend's own namespace.
//!
//! Operations are futures under the call's deadline (the whole call is dropped when it passes).
//! A call whose deadline has already passed gets `unavailable` instead of starting another store
//! operation, so a plugin looping on the store cannot outlive its deadline.
//!
//! Writes go through the backend's [`StateQuota`] ([`crate::state::quota`]): a write over the
//! keys, bytes or value size is `too-large`, one over the write rate `unavailable` (retry
//! later), each with a message naming the limit, and each counted in
//! `platform_gateway_state_quota_refusals_total`. Contract 0.1's `list-keys`, which has no
//! pages, answers at most [`LIST_MAX_KEYS`] keys or [`LIST_MAX_BYTES`] of them.
//!
//! Each operation consults the call's [`CallContext`] here, and only here: in a dry mode (plan,
//! shadow) writes go to the call's overlay, within the same quotas, and reads see them; the
//! store is only read. A replayed call reads its recording's state instead of the store.

use std::sync::Arc;
use std::time::Instant;

use super::call::{CallContext, Mode, WriteOp};
use crate::metrics::Metrics;
use crate::model::BackendId;
use crate::state::quota::{QuotaError, Refusal};
use crate::state::{MAX_PAGE, StateError, StateQuota, StateStore, Usage};

/// The most keys one contract 0.1 `list-keys` answers; past it the listing is `too-large`.
pub const LIST_MAX_KEYS: usize = 10_000;
/// The most bytes of keys one contract 0.1 `list-keys` answers.
pub const LIST_MAX_BYTES: usize = 4 << 20;

/// Why a state operation failed, before a contract version puts it in its words.
pub enum Failure {
    /// Not now: the store is unavailable, the deadline has passed, the write rate is used up.
    Unavailable(String),
    /// Over a quota or a bound: retrying will not help.
    TooLarge(String),
}

/// A backend's state quotas, its namespace's usage (shared by its generations) and where
/// refusals are counted.
#[derive(Clone)]
pub struct Quotas {
    /// The limits, from the backend's config.
    pub quota: StateQuota,
    /// The namespace's usage and write rate.
    pub usage: Arc<Usage>,
    /// The backend, for the refusals metric.
    pub backend: BackendId,
    /// Where refusals are counted.
    pub metrics: Arc<Metrics>,
}

/// The per-call state capability.
pub struct PluginState {
    namespace: Arc<str>,
    store: Option<Arc<dyn StateStore>>,
    deadline: Instant,
    quotas: Quotas,
    call: Arc<CallContext>,
}

impl PluginState {
    /// State for one call of the backend whose namespace is `namespace`, until `deadline`,
    /// within `quotas`; without a store (a plugin instantiated only to be checked) every
    /// operation is `unavailable`.
    pub fn new(
        namespace: Arc<str>,
        store: Option<Arc<dyn StateStore>>,
        deadline: Instant,
        quotas: Quotas,
    ) -> PluginState {
        PluginState {
            namespace,
            store,
            deadline,
            quotas,
            call: CallContext::live(),
        }
    }

    /// The same capability, in `call`'s mode and transcript.
    pub fn in_call(mut self, call: Arc<CallContext>) -> PluginState {
        self.call = call;
        self
    }

    /// A refusal, counted and put in the contract's words: a rate is worth retrying later
    /// (`unavailable`), a full namespace or a large value is not (`too-large`).
    fn refused(&self, refusal: Refusal) -> Failure {
        self.quotas
            .metrics
            .record_state_refusal(self.quotas.backend.as_str(), refusal.reason());
        tracing::debug!(namespace = %self.namespace, "state write refused: {refusal}");
        match refusal {
            Refusal::Rate { .. } => Failure::Unavailable(refusal.to_string()),
            _ => Failure::TooLarge(refusal.to_string()),
        }
    }

    fn quota_error(&self, e: QuotaError) -> Failure {
        match e {
            QuotaError::Refused(refusal) => self.refused(refusal),
            QuotaError::Store(e) => self.error(e),
        }
    }

    /// The store, while the call may still use it.
    fn open(&self) -> Result<Arc<dyn StateStore>, Failure> {
        if Instant::now() >= self.deadline {
            return Err(Failure::Unavailable(
                "the call's deadline has passed".into(),
            ));
        }
        if let Some(recorded) = self.call.replay_store() {
            return Ok(recorded);
        }
        self.store.clone().ok_or_else(|| {
            Failure::Unavailable("no state store while the plugin is checked".into())
        })
    }

    fn error(&self, e: StateError) -> Failure {
        match e {
            StateError::TooLarge(message) => Failure::TooLarge(message),
            StateError::Unavailable(message) => {
                // The plugin may pass its message on to the client: where the store lives
                // (etcd's endpoints) stays in the log.
                tracing::warn!(namespace = %self.namespace, "state store: {message}");
                Failure::Unavailable(
                    "the state store is unavailable now; see the gateway log".into(),
                )
            }
            StateError::Storage(message) => {
                tracing::error!(namespace = %self.namespace, "state store: {message}");
                Failure::Unavailable("the state store failed; see the gateway log".into())
            }
        }
    }

    /// The value of `key`, if set.
    pub async fn get(&self, key: String) -> Result<Option<Vec<u8>>, Failure> {
        if let Some(value) = self.call.overlaid(&key) {
            self.open()?;
            self.call.read(&key, value.as_deref(), true);
            return Ok(value);
        }
        let value = self
            .open()?
            .get(&self.namespace, &key)
            .await
            .map_err(|e| self.error(e))?;
        self.call.read(&key, value.as_deref(), false);
        Ok(value)
    }

    /// A dry call's view of `key` before it writes: its own write, else the store's value
    /// (remembered for a plan's check). Refused like the store would refuse the write: a value
    /// over the quota, or an overlay that outgrows the namespace's quotas.
    async fn dry_write(
        &self,
        key: &str,
        value: Option<&[u8]>,
        swap: bool,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let store = self.open()?;
        let quota = &self.quotas.quota;
        let size = value.map_or(0, <[u8]>::len);
        let (keys, bytes) = self.call.overlay_size();
        if size > quota.value {
            let refusal = Refusal::Value {
                size,
                limit: quota.value,
            };
            return Err(Failure::TooLarge(refusal.to_string()));
        }
        if keys as u64 >= quota.keys || (bytes + key.len() + size) as u64 > quota.bytes {
            return Err(Failure::TooLarge(format!(
                "a dry call (plan or shadow) may write at most {} keys or {} bytes                  (limits.state_keys, limits.state_bytes)",
                quota.keys, quota.bytes
            )));
        }
        if let Some(old) = self.call.overlaid(key) {
            return Ok(old);
        }
        if self.call.mode() == Mode::Replay && !swap {
            // Only a swap depends on the value before; a replay reads no more than it must, so
            // that what it reads beyond its recording means something.
            return Ok(None);
        }
        let old = store
            .get(&self.namespace, key)
            .await
            .map_err(|e| self.error(e))?;
        self.call.saw(key, old.as_deref());
        Ok(old)
    }

    /// Set `key` to `value`, within the quotas.
    pub async fn set(&self, key: String, value: Vec<u8>) -> Result<(), Failure> {
        if self.call.mode().dry() {
            let old = self.dry_write(&key, Some(&value), false).await?;
            let old = Some(old.as_deref());
            self.call.write(WriteOp::Set, &key, old, Some(&value), true);
            return Ok(());
        }
        let store = self.open()?;
        let Quotas { quota, usage, .. } = &self.quotas;
        usage
            .set(quota, &*store, &self.namespace, &key, &value)
            .await
            .map_err(|e| self.quota_error(e))?;
        self.call
            .write(WriteOp::Set, &key, None, Some(&value), true);
        Ok(())
    }

    /// Delete `key` (a write, within the quotas).
    pub async fn delete(&self, key: String) -> Result<(), Failure> {
        if self.call.mode().dry() {
            let old = self.dry_write(&key, None, false).await?;
            let old = Some(old.as_deref());
            self.call.write(WriteOp::Delete, &key, old, None, true);
            return Ok(());
        }
        let store = self.open()?;
        let Quotas { quota, usage, .. } = &self.quotas;
        usage
            .delete(quota, &*store, &self.namespace, &key)
            .await
            .map_err(|e| self.quota_error(e))?;
        self.call.write(WriteOp::Delete, &key, None, None, true);
        Ok(())
    }

    /// Set `key` to `new` (unset if None) if its value is `expected` (unset if None); whether it did.
    pub async fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, Failure> {
        let (old, swapped) = if self.call.mode().dry() {
            let current = self.dry_write(&key, new.as_deref(), true).await?;
            let swapped = current == expected;
            (Some(current), swapped)
        } else {
            let store = self.open()?;
            let Quotas { quota, usage, .. } = &self.quotas;
            let swapped = usage
                .compare_and_swap(
                    quota,
                    &*store,
                    &self.namespace,
                    &key,
                    expected.as_deref(),
                    new.as_deref(),
                )
                .await
                .map_err(|e| self.quota_error(e))?;
            if swapped {
                // The key held what the plugin expected: a replay's swap finds it there.
                self.call.tape(|tape| tape.read(&key, expected.as_deref()));
            }
            (None, swapped)
        };
        let old = old.as_ref().map(|old| old.as_deref());
        self.call
            .write(WriteOp::CompareAndSwap, &key, old, new.as_deref(), swapped);
        Ok(swapped)
    }

    /// Contract 0.1: every key at once (the store is read a page at a time), up to
    /// [`LIST_MAX_KEYS`] keys and [`LIST_MAX_BYTES`]; a longer list is `too-large`, since 0.1
    /// cannot say that a list is cut short.
    pub async fn all_keys(&self, prefix: String) -> Result<Vec<String>, Failure> {
        self.keys_within(prefix, LIST_MAX_KEYS, LIST_MAX_BYTES)
            .await
    }

    /// Every key that starts with `prefix`, if there are at most `max_keys` of them and
    /// `max_bytes` of their text.
    async fn keys_within(
        &self,
        prefix: String,
        max_keys: usize,
        max_bytes: usize,
    ) -> Result<Vec<String>, Failure> {
        let store = self.open()?;
        let mut keys: Vec<String> = Vec::new();
        let mut bytes = 0;
        loop {
            let page = store
                .list_keys(
                    &self.namespace,
                    &prefix,
                    keys.last().map(String::as_str),
                    MAX_PAGE,
                )
                .await
                .map_err(|e| self.error(e))?;
            let done = page.len() < MAX_PAGE;
            bytes += page.iter().map(String::len).sum::<usize>();
            keys.extend(page);
            if keys.len() > max_keys || bytes > max_bytes {
                self.quotas
                    .metrics
                    .record_state_refusal(self.quotas.backend.as_str(), "list_size");
                return Err(Failure::TooLarge(format!(
                    "more than {max_keys} keys (or {max_bytes} bytes of them) start with \
                     `{prefix}`: list a longer prefix (contract 0.2 lists a page at a time)"
                )));
            }
            if done {
                return Ok(self.call.list(&prefix, keys));
            }
        }
    }

    /// Contract 0.2: one page of at most `limit` keys, and where the next starts, if a key
    /// follows (a full page looks one key further, so the last page always says `none`).
    pub async fn page(
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
        if self.call.mode().dry() {
            // The call's own writes change what a page holds: merge with the whole listing
            // (within contract 0.1's bounds), then cut the page.
            let all = self
                .keys_within(prefix, LIST_MAX_KEYS, LIST_MAX_BYTES)
                .await?;
            let rest: Vec<String> = all
                .into_iter()
                .filter(|k| start_after.as_ref().is_none_or(|after| k > after))
                .collect();
            let next = (rest.len() > limit).then(|| rest[limit - 1].clone());
            return Ok((rest.into_iter().take(limit).collect(), next));
        }
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
        self.call.tape(|tape| tape.listed(&keys));
        Ok((keys, next))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::state::embedded::RedbStore;

    fn quotas(quota: StateQuota) -> (Quotas, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let quotas = Quotas {
            quota,
            usage: Arc::new(Usage::new()),
            backend: BackendId::new("pool").unwrap(),
            metrics: metrics.clone(),
        };
        (quotas, metrics)
    }

    /// A call's state over a fresh embedded store, in namespace `ns` of backend `pool`.
    pub(crate) fn plugin_state(
        quota: StateQuota,
    ) -> (tempfile::TempDir, PluginState, Arc<Metrics>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).unwrap());
        let (quotas, metrics) = quotas(quota);
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let state = PluginState::new("ns".into(), Some(store), deadline, quotas);
        (dir, state, metrics)
    }

    /// How many writes `metrics` counts as refused for `reason`.
    pub(crate) fn refusals(metrics: &Metrics, reason: &str) -> u64 {
        let text = metrics.encode_prometheus();
        let prefix = format!(
            "platform_gateway_state_quota_refusals_total{{backend=\"pool\",reason=\"{reason}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0, |n| n.parse().unwrap())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn contract_0_1_lists_up_to_its_bounds_and_refuses_a_longer_list() {
        let (_dir, state, metrics) = plugin_state(StateQuota::default());
        let store = state.store.clone().unwrap();
        for i in 0..1005 {
            store.set("ns", &format!("k/{i:04}"), b"").await.unwrap();
        }
        // Past one page of the store, within the bounds: all of them.
        let keys = state
            .keys_within("k/".into(), 1005, 1 << 20)
            .await
            .ok()
            .unwrap();
        assert_eq!(keys.len(), 1005);
        // One key over the count, or one byte over the text: refused, and counted.
        for (max_keys, max_bytes) in [(1004, 1 << 20), (1005, 1005 * 6 - 1)] {
            match state.keys_within("k/".into(), max_keys, max_bytes).await {
                Err(Failure::TooLarge(m)) => assert!(m.contains("longer prefix"), "{m}"),
                Err(Failure::Unavailable(m)) => panic!("unavailable: {m}"),
                Ok(keys) => panic!("listed {} keys", keys.len()),
            }
        }
        // A longer prefix lists.
        let keys = state
            .keys_within("k/100".into(), 5, 1 << 20)
            .await
            .ok()
            .unwrap();
        assert_eq!(keys.len(), 5);
        assert_eq!(refusals(&metrics, "list_size"), 2);
        // The contract's own bounds: 0.1's list-keys answers through them.
        assert_eq!(state.all_keys("k/".into()).await.ok().unwrap().len(), 1005);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_dry_call_reads_its_own_writes_and_leaves_the_store_as_it_was() {
        use crate::capability::call::{CallContext, Event, Mode, version};
        for mode in [Mode::Plan, Mode::Shadow] {
            let (_dir, state, _) = plugin_state(StateQuota::default());
            let store = state.store.clone().unwrap();
            store.set("ns", "kept", b"old").await.unwrap();
            store.set("ns", "gone", b"x").await.unwrap();
            let call = CallContext::new(mode, false);
            let state = state.in_call(call.clone());
            state.set("new".into(), b"1".to_vec()).await.ok().unwrap();
            state
                .set("kept".into(), b"changed".to_vec())
                .await
                .ok()
                .unwrap();
            state.delete("gone".into()).await.ok().unwrap();
            let swapped = state
                .compare_and_swap("new".into(), Some(b"1".to_vec()), Some(b"2".to_vec()))
                .await
                .ok()
                .unwrap();
            assert!(swapped);
            // The call sees its own writes, in reads and in listings...
            assert_eq!(
                state.get("new".into()).await.ok().unwrap(),
                Some(b"2".to_vec())
            );
            assert_eq!(state.get("gone".into()).await.ok().unwrap(), None);
            let (keys, next) = state.page("".into(), None, 0).await.ok().unwrap();
            assert_eq!((keys, next), (vec!["kept".to_string(), "new".into()], None));
            assert_eq!(
                state.all_keys("".into()).await.ok().unwrap(),
                ["kept", "new"]
            );
            // ...and the store none of them.
            assert_eq!(
                store.get("ns", "kept").await.unwrap(),
                Some(b"old".to_vec())
            );
            assert_eq!(store.get("ns", "gone").await.unwrap(), Some(b"x".to_vec()));
            assert_eq!(store.get("ns", "new").await.unwrap(), None);
            // The transcript has each write with the version it replaces, and the versions
            // read from the store for a plan's check.
            let transcript = call.transcript();
            let writes: Vec<(String, Option<String>)> = transcript
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::StateWrite {
                        key, old_version, ..
                    } => Some((key.clone(), old_version.clone())),
                    _ => None,
                })
                .collect();
            assert_eq!(
                writes,
                [
                    ("new".to_string(), Some("absent".to_string())),
                    ("kept".into(), Some(version(Some(b"old")))),
                    ("gone".into(), Some(version(Some(b"x")))),
                    ("new".into(), Some(version(Some(b"1")))),
                ]
            );
            assert_eq!(transcript.reads["kept"], version(Some(b"old")));
            assert_eq!(transcript.reads["new"], "absent");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_dry_call_is_held_to_the_value_quota_and_a_live_one_records_only_when_asked() {
        use crate::capability::call::{CallContext, Mode};
        let quota = StateQuota {
            value: 4,
            ..StateQuota::default()
        };
        let (_dir, state, _) = plugin_state(quota);
        let state = state.in_call(CallContext::new(Mode::Plan, false));
        match state.set("k".into(), vec![0; 5]).await {
            Err(Failure::TooLarge(m)) => assert!(m.contains("limits.state_value_size"), "{m}"),
            _ => panic!("a value over the quota was taken"),
        }
        let (_dir, state, _) = plugin_state(StateQuota::default());
        let store = state.store.clone().unwrap();
        let call = CallContext::new(Mode::Live, true);
        let state = state.in_call(call.clone());
        state.set("k".into(), b"v".to_vec()).await.ok().unwrap();
        assert_eq!(store.get("ns", "k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(call.transcript().effects().len(), 1);
    }

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
        let state = PluginState::new(
            "ns".into(),
            Some(store),
            deadline,
            quotas(StateQuota::default()).0,
        );

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
