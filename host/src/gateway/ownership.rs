//! Upkeep of what the gateway remembers about nodes beside the plugins: forgetting owners of
//! nodes that vanished outside the gateway, and recent deprovisions, so that a client's retry of
//! a deprovision that succeeded is answered 204 rather than 404.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::gauge::Gauge;

use crate::runtime::wit;
use crate::state::{MAX_PAGE, StateStore};

/// The gateway's own namespace for recent deprovisions (backend names cannot start with `@`).
pub const DEPROVISIONED: &str = "@deprovisioned";
/// How long a deprovision is remembered: between one and two days (keys are bucketed by day).
const DAY_SECONDS: u64 = 24 * 3600;

fn today() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / DAY_SECONDS)
}

fn deprovision_key(day: u64, request: &wit::DeprovisionRequest) -> String {
    format!("{day:08}/{}\u{0}{}", request.cluster_id, request.node_id)
}

/// Whether the node was deprovisioned through the gateway today or yesterday. A store failure
/// reads as "no": the request then goes on to discovery, which answers for itself.
pub async fn was_deprovisioned(state: &dyn StateStore, request: &wit::DeprovisionRequest) -> bool {
    let today = today();
    for day in [today, today.saturating_sub(1)] {
        match state
            .get(DEPROVISIONED, &deprovision_key(day, request))
            .await
        {
            Ok(Some(_)) => return true,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("cannot read recent deprovisions: {e}");
                return false;
            }
        }
    }
    false
}

/// Remember that the node was deprovisioned, and drop what is older than yesterday.
pub async fn remember_deprovision(state: &dyn StateStore, request: &wit::DeprovisionRequest) {
    let today = today();
    let key = deprovision_key(today, request);
    if key.len() > crate::state::MAX_KEY_SIZE {
        return;
    }
    if let Err(e) = state.set(DEPROVISIONED, &key, b"").await {
        tracing::warn!("cannot remember the deprovision (a retry may answer 404): {e}");
        return;
    }
    // Days sort in key order: everything before yesterday's first key is old.
    let cutoff = format!("{:08}/", today.saturating_sub(1));
    loop {
        let page = match state.list_keys(DEPROVISIONED, "", None, MAX_PAGE).await {
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

/// Runs at most one pass at a time of forgetting vanished nodes, in the background. Each pass
/// that reads the whole index sets `records` to the number of records it kept.
#[derive(Default)]
pub struct Upkeep {
    running: Arc<AtomicBool>,
    records: Gauge,
}

impl Upkeep {
    /// An upkeep that reports the index's size on `records`.
    pub fn counting(records: Gauge) -> Upkeep {
        Upkeep {
            running: Arc::default(),
            records,
        }
    }

    /// Forget the owner records of backends (by namespace) that answered discovery
    /// successfully but no longer report the node. `seen` is every `(cluster, node)` that
    /// discovery found, from any backend (a node two backends report keeps its record). Skipped while a pass is still running.
    pub fn forget_vanished(
        &self,
        state: Arc<dyn StateStore>,
        answered: Vec<String>,
        seen: HashSet<(String, String)>,
    ) {
        if answered.is_empty() || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (running, records) = (self.running.clone(), self.records.clone());
        tokio::spawn(async move {
            let answered: HashSet<String> = answered.into_iter().collect();
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
                    if answered.contains(&record.backend) && !seen.contains(&key) {
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
            running.store(false, Ordering::Release);
        });
    }
}
