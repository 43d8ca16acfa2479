//! Upkeep of what the gateway remembers about nodes beside the plugins: forgetting owners of
//! nodes that vanished outside the gateway, and recent deprovisions, so that a client's retry of
//! a deprovision that succeeded is answered 204 rather than 404. A deprovision is marked pending
//! before its plugin is called: when the call's outcome is lost (the state store stopped
//! answering after the plugin's write committed, so the client got a 503), the retry finds the
//! node unknown to its plugin and the mark says why, and it is answered 204 too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::gauge::Gauge;

use crate::model;
use crate::state::{MAX_PAGE, StateStore};

/// How many keys of a day-bucketed namespace one pruning step lists. Old keys sort first, so a
/// call that finds none reads one page of this size, not the namespace (a deprovision listed up
/// to [`MAX_PAGE`] keys each time before).
const PRUNE_PAGE: usize = 64;

/// The shortest time between the starts of two passes of [`Upkeep`].
pub const PASS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The gateway's own namespace for recent deprovisions (backend names cannot start with `@`).
pub const DEPROVISIONED: &str = "@deprovisioned";
/// How long a deprovision is remembered: between one and two days (keys are bucketed by day).
const DAY_SECONDS: u64 = 24 * 3600;

fn today() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / DAY_SECONDS)
}

fn deprovision_key(day: u64, request: &model::DeprovisionRequest) -> String {
    format!("{day:08}/{}\u{0}{}", request.cluster_id, request.node_id)
}

/// What the gateway remembers of a node's deprovisioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deprovision {
    /// Nothing: not asked today or yesterday, or the store could not say.
    Unknown,
    /// Asked, and its plugin was called, but the outcome never came back.
    Pending,
    /// Done through the gateway.
    Done,
}

/// The value of a pending deprovision's record; a done one's is empty.
const PENDING: &[u8] = b"pending";

/// What the gateway remembers of the node's deprovisioning, today or yesterday. A store failure
/// reads as unknown: the request then goes on to its owner or to discovery, which answer for
/// themselves.
pub async fn deprovision_record(
    state: &dyn StateStore,
    request: &model::DeprovisionRequest,
) -> Deprovision {
    let today = today();
    let mut found = Deprovision::Unknown;
    for day in [today, today.saturating_sub(1)] {
        match state
            .get(DEPROVISIONED, &deprovision_key(day, request))
            .await
        {
            Ok(Some(value)) if value == PENDING => found = Deprovision::Pending,
            Ok(Some(_)) => return Deprovision::Done,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("cannot read recent deprovisions: {e}");
                return Deprovision::Unknown;
            }
        }
    }
    found
}

/// Mark the node's deprovision as pending, before its plugin is called. Best effort: without
/// the mark, a retry after a lost outcome answers 404 (the node is gone either way).
pub async fn mark_pending(state: &dyn StateStore, request: &model::DeprovisionRequest) {
    let key = deprovision_key(today(), request);
    if key.len() > crate::state::MAX_KEY_SIZE {
        return;
    }
    if let Err(e) = state.set(DEPROVISIONED, &key, PENDING).await {
        tracing::warn!("cannot mark the deprovision pending: {e}");
    }
}

/// Forget that these nodes were deprovisioned: their IDs were just handed out again (a pool
/// reuses machine IDs), so a deprovision of them must reach their backend.
pub async fn clear_deprovisions(state: &dyn StateStore, cluster_id: &str, node_ids: &[String]) {
    let today = today();
    for node_id in node_ids {
        let request = model::DeprovisionRequest {
            cluster_id: cluster_id.to_string(),
            node_id: node_id.clone(),
        };
        for day in [today, today.saturating_sub(1)] {
            if let Err(e) = state
                .delete(DEPROVISIONED, &deprovision_key(day, &request))
                .await
            {
                tracing::warn!("cannot clear the deprovision record of a reused node ID: {e}");
            }
        }
    }
}

/// Remember that the node was deprovisioned, and drop what is older than yesterday.
pub async fn remember_deprovision(state: &dyn StateStore, request: &model::DeprovisionRequest) {
    let today = today();
    let key = deprovision_key(today, request);
    if key.len() > crate::state::MAX_KEY_SIZE {
        return;
    }
    if let Err(e) = state.set(DEPROVISIONED, &key, b"").await {
        tracing::warn!("cannot remember the deprovision (a retry may answer 404): {e}");
        return;
    }
    // Days sort in key order: everything before yesterday's first key is old, and comes first.
    // Usually nothing is: the first key listed says so.
    let cutoff = format!("{:08}/", today.saturating_sub(1));
    loop {
        let page = match state.list_keys(DEPROVISIONED, "", None, PRUNE_PAGE).await {
            Ok(page) => page,
            Err(_) => return,
        };
        let old: Vec<&String> = page.iter().take_while(|k| **k < cutoff).collect();
        if old.is_empty() {
            return;
        }
        for key in &old {
            if state.delete(DEPROVISIONED, key).await.is_err() {
                return;
            }
        }
        if old.len() < page.len() {
            return;
        }
    }
}

/// The gateway's own namespace for the requests made with an idempotency key: what each asked
/// for (its fingerprint), kept one to two days like recent deprovisions.
pub const KEYED_REQUESTS: &str = "@requests";

/// Check that `request`, made with an idempotency key, asks for what the first request with
/// that key asked for, and remember it if it is the first. `Ok(false)`: the key was used for
/// another request. A store failure passes (best effort, like the other records): the plugin
/// still sees one request ID, as before.
pub async fn check_keyed_request(
    state: &dyn StateStore,
    request: &model::ProvisionRequest,
) -> bool {
    let fingerprint = request.fingerprint();
    let today = today();
    for day in [today, today.saturating_sub(1)] {
        let key = format!("{day:08}/{}", request.request_id);
        match state.get(KEYED_REQUESTS, &key).await {
            Ok(Some(value)) => return value == fingerprint.as_bytes(),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("cannot read the idempotency record: {e}");
                return true;
            }
        }
    }
    let key = format!("{today:08}/{}", request.request_id);
    // A concurrent first use of the key with another body: the compare-and-swap decides.
    match state
        .compare_and_swap(KEYED_REQUESTS, &key, None, Some(fingerprint.as_bytes()))
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return matches!(
                state.get(KEYED_REQUESTS, &key).await,
                Ok(Some(value)) if value == fingerprint.as_bytes()
            );
        }
        Err(e) => tracing::warn!("cannot record the idempotency key: {e}"),
    }
    // Days sort in key order: drop a page of what is older than yesterday.
    let cutoff = format!("{:08}/", today.saturating_sub(1));
    if let Ok(page) = state.list_keys(KEYED_REQUESTS, "", None, PRUNE_PAGE).await {
        for old in page.iter().take_while(|k| **k < cutoff) {
            if state.delete(KEYED_REQUESTS, old).await.is_err() {
                break;
            }
        }
    }
    true
}

/// Runs at most one pass at a time of forgetting vanished nodes, in the background. Each pass
/// that reads the whole index sets `records` to the number of records it kept.
///
/// A record is forgotten only when a discovery that *started after* the record was first found
/// unreported still does not report its node. A node provisioned while a discovery runs is
/// missing from that discovery, but its allocation was written before its record, so any
/// discovery started after the record was seen reports it: no live node loses its record.
///
/// A pass starts at most every [`PASS_INTERVAL`]: one asked for sooner waits for it (the
/// discovery that asked does not), and the discoveries meanwhile ask for nothing. A pass reads
/// the whole index, so one per discovery made a busy gateway's discoveries pay for the index
/// over and over (a fifth of a 10,200-node discovery's CPU).
#[derive(Default)]
pub struct Upkeep {
    running: Arc<AtomicBool>,
    /// When the last pass started.
    last: Arc<Mutex<Option<Instant>>>,
    records: Gauge,
    /// Records found unreported, and when first.
    suspects: Arc<Mutex<HashMap<(String, String), Instant>>>,
}

impl Upkeep {
    /// An upkeep that reports the index's size on `records`.
    pub fn counting(records: Gauge) -> Upkeep {
        Upkeep {
            records,
            ..Upkeep::default()
        }
    }

    /// Forget the owner records of backends (by namespace) that answered discovery
    /// successfully but no longer report the node, as described on [`Upkeep`]. `seen` is every
    /// `(cluster, node)` that the discovery that `started` then found, from any backend (a node
    /// two backends report keeps its record), asked for only if a pass starts. Skipped while a
    /// pass is still running or waiting for its turn.
    pub fn forget_vanished(
        &self,
        state: Arc<dyn StateStore>,
        answered: Vec<String>,
        seen: impl FnOnce() -> HashSet<(String, String)>,
        started: Instant,
    ) {
        if answered.is_empty() || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let seen = seen();
        let (running, records) = (self.running.clone(), self.records.clone());
        let (suspects, last) = (self.suspects.clone(), self.last.clone());
        tokio::spawn(async move {
            let previous = *last.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(previous) = previous {
                tokio::time::sleep_until((previous + PASS_INTERVAL).into()).await;
            }
            *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            let answered: HashSet<String> = answered.into_iter().collect();
            let before = std::mem::take(&mut *suspects.lock().unwrap_or_else(|e| e.into_inner()));
            let mut now_suspect = HashMap::new();
            let mut after: Option<(String, String)> = None;
            let (mut kept, mut complete) = (0i64, true);
            loop {
                let page = match state
                    .owners(
                        after.as_ref().map(|(c, n)| (c.as_str(), n.as_str())),
                        MAX_PAGE,
                    )
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::debug!("ownership upkeep stopped: {e}");
                        complete = false;
                        break;
                    }
                };
                kept += page.len() as i64;
                for record in &page {
                    let key = (record.cluster_id.clone(), record.node_id.clone());
                    if !answered.contains(&record.backend) || seen.contains(&key) {
                        continue;
                    }
                    match before.get(&key) {
                        // Unreported by a discovery that started after it was first suspected.
                        Some(since) if started > *since => {}
                        since => {
                            now_suspect.insert(key, since.copied().unwrap_or_else(Instant::now));
                            continue;
                        }
                    }
                    {
                        tracing::info!(
                            cluster = %record.cluster_id, node = %record.node_id,
                            backend = %record.backend,
                            "forgetting the owner of a node its backend no longer reports"
                        );
                        if state
                            .forget_owner(&record.cluster_id, &record.node_id)
                            .await
                            .is_ok()
                        {
                            kept -= 1;
                        }
                    }
                }
                match page.last() {
                    Some(last) if page.len() == MAX_PAGE => {
                        after = Some((last.cluster_id.clone(), last.node_id.clone()));
                    }
                    _ => break,
                }
            }
            // Only a pass that read every page knows the size.
            if complete {
                records.set(kept);
            }
            *suspects.lock().unwrap_or_else(|e| e.into_inner()) = now_suspect;
            running.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Ownership;
    use crate::state::embedded::RedbStore;

    #[tokio::test]
    async fn a_pass_asked_for_within_a_second_of_the_last_waits_its_turn() {
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn StateStore> = Arc::new(RedbStore::open(dir.path()).unwrap());
        let gone = Ownership {
            cluster_id: "c".into(),
            node_id: "gone".into(),
            backend: "b".into(),
        };
        state.record_owners(&[gone]).await.unwrap();
        let upkeep = Upkeep::default();
        let asked = Instant::now();
        // The first pass finds the node unreported: a suspect, kept.
        upkeep.forget_vanished(
            state.clone(),
            vec!["b".into()],
            HashSet::new,
            Instant::now(),
        );
        while upkeep.running.load(Ordering::Acquire) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(state.owner("c", "gone").await.unwrap().is_some());
        // A discovery started after that misses it too: the next pass forgets it, but not
        // before a second after the first pass started.
        upkeep.forget_vanished(
            state.clone(),
            vec!["b".into()],
            HashSet::new,
            Instant::now(),
        );
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while state.owner("c", "gone").await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "the record was never forgotten");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(
            asked.elapsed() >= PASS_INTERVAL,
            "forgotten {:?} after the first pass was asked for",
            asked.elapsed()
        );
    }

    #[tokio::test]
    async fn a_deprovision_drops_every_record_older_than_yesterday_and_keeps_the_recent() {
        let dir = tempfile::tempdir().unwrap();
        let state = RedbStore::open(dir.path()).unwrap();
        let today = today();
        let node = |n: usize| model::DeprovisionRequest {
            cluster_id: "c".into(),
            node_id: format!("n{n}"),
        };
        // More old records than one page, of two old days, and yesterday's.
        for n in 0..150 {
            let day = today - 2 - (n as u64 % 2);
            state
                .set(DEPROVISIONED, &deprovision_key(day, &node(n)), b"")
                .await
                .unwrap();
        }
        state
            .set(DEPROVISIONED, &deprovision_key(today - 1, &node(1000)), b"")
            .await
            .unwrap();
        remember_deprovision(&state, &node(2000)).await;
        let left = state
            .list_keys(DEPROVISIONED, "", None, MAX_PAGE)
            .await
            .unwrap();
        assert_eq!(
            left,
            [
                deprovision_key(today - 1, &node(1000)),
                deprovision_key(today, &node(2000)),
            ]
        );
    }
}
