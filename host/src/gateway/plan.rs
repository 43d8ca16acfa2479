//! Plans: what a provision or deprovision would do, with no side effects, and applying one.
//!
//! A plan runs the real operation (the same routing, the same plugin calls) with every call in
//! [`Mode::Plan`]: the plugin's state writes go to an overlay, its non-read requests are
//! withheld, and the gateway's own records (ownership index, idempotency and deprovision
//! records) are not written ([`Calls::records`]). What the calls did is kept as their
//! transcripts.
//!
//! A plan is saved in the state store (namespace [`PLANS`]) for the generation's `plan_ttl`, so
//! that any replica can apply it: `POST /provision` with its ID runs for real only if the
//! request, the configuration, the plugin and every state key the plan read are unchanged, and
//! says whether the real call matched the plan.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Error, Gateway, Generation};
use crate::capability::call::{CallContext, Mode, Transcript, version};
use crate::model::{self, BackendId};
use crate::runtime::Backend;
use crate::state::{MAX_PAGE, MAX_VALUE_SIZE, Ownership, StateError, StateStore};

/// How many saved plans may wait to be applied at once, over every replica: one page of the
/// store, so that one listing both sweeps the expired and counts the rest.
pub const MAX_SAVED_PLANS: usize = MAX_PAGE;

/// The gateway's own namespace for saved plans (backend names cannot start with `@`). Plans
/// are short-lived: `state export` leaves them out.
pub use crate::state::transfer::PLANS;

/// The plugin calls one gateway operation makes, all in one mode; each call's context is kept
/// when the operation is recorded (plans, applied plans).
pub struct Calls {
    mode: Mode,
    record: bool,
    made: Mutex<Vec<MadeCall>>,
}

/// One plugin call of an operation, with its context.
#[derive(Clone)]
pub struct MadeCall {
    /// The backend called.
    pub backend: Arc<Backend>,
    /// `discover`, `provision` or `deprovision`.
    pub operation: &'static str,
    /// Its mode and transcript.
    pub context: Arc<CallContext>,
}

impl Calls {
    /// The public API's: live, recording nothing.
    pub fn live() -> Calls {
        Calls::new(Mode::Live, false)
    }

    /// Calls in `mode`, recorded if `record` (dry modes always are).
    pub fn new(mode: Mode, record: bool) -> Calls {
        Calls {
            mode,
            record: record || mode.dry(),
            made: Mutex::default(),
        }
    }

    /// The mode of its calls.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The context of the next call: `backend`'s `operation`.
    pub fn context(&self, backend: &Arc<Backend>, operation: &'static str) -> Arc<CallContext> {
        if !self.record {
            return CallContext::live();
        }
        let context = CallContext::new(self.mode, true);
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(MadeCall {
                backend: backend.clone(),
                operation,
                context: context.clone(),
            });
        context
    }

    /// The calls made so far, in order.
    pub fn made(&self) -> Vec<MadeCall> {
        self.made.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last call of `operation`: the one that answered the request.
    fn answering(&self, operation: &str) -> Option<MadeCall> {
        self.made()
            .into_iter()
            .rev()
            .find(|c| c.operation == operation)
    }

    /// Where the gateway writes its own records for this operation: the store, or in a dry
    /// mode a view of it that reads through and writes nowhere.
    pub fn records(&self, store: &Arc<dyn StateStore>) -> Arc<dyn StateStore> {
        if self.mode.dry() {
            Arc::new(ReadOnly(store.clone()))
        } else {
            store.clone()
        }
    }
}

/// A store seen by a dry operation: reads pass through, writes succeed and change nothing (a
/// compare-and-swap answers whether it would have swapped).
struct ReadOnly(Arc<dyn StateStore>);

#[async_trait]
impl StateStore for ReadOnly {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.0.get(ns, key).await
    }
    async fn set(&self, _: &str, _: &str, _: &[u8]) -> Result<(), StateError> {
        Ok(())
    }
    async fn delete(&self, _: &str, _: &str) -> Result<(), StateError> {
        Ok(())
    }
    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        _: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        Ok(self.0.get(ns, key).await?.as_deref() == expected)
    }
    async fn list_keys(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        self.0.list_keys(ns, prefix, after, limit).await
    }
    async fn namespaces(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        self.0.namespaces(after, limit).await
    }
    async fn owner(&self, cluster: &str, node: &str) -> Result<Option<String>, StateError> {
        self.0.owner(cluster, node).await
    }
    async fn record_owners(&self, _: &[Ownership]) -> Result<(), StateError> {
        Ok(())
    }
    async fn forget_owner(&self, _: &str, _: &str) -> Result<(), StateError> {
        Ok(())
    }
    async fn owners(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Ownership>, StateError> {
        self.0.owners(after, limit).await
    }
    async fn check(&self) -> Result<(), StateError> {
        self.0.check().await
    }
    fn describe(&self) -> String {
        format!("{} (read only)", self.0.describe())
    }
}

/// One plugin call of a plan, as reported.
#[derive(Debug, Clone)]
pub struct CallReport {
    /// The backend.
    pub backend: BackendId,
    /// Its state namespace.
    pub namespace: String,
    /// `sha256:<hex>` of its plugin.
    pub digest: String,
    /// The contract version its plugin implements.
    pub contract: String,
    /// `discover`, `provision` or `deprovision`.
    pub operation: &'static str,
    /// The call's host calls, the backend's secrets cut out.
    pub transcript: Transcript,
}

/// Where a saved plan can be found, and until when.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The ID to apply it with (`X-Platform-Plan`).
    pub plan_id: String,
    /// When it expires, in seconds since the Unix epoch.
    pub expires_at: u64,
}

/// What an operation would do.
pub struct Plan<T> {
    /// The generation it was planned on.
    pub generation: u64,
    /// What the operation answered (in plan mode).
    pub outcome: Result<T, Error>,
    /// Every plugin call it made, in order.
    pub calls: Vec<CallReport>,
    /// The call that answered the request, an index into `calls`.
    pub answering: Option<usize>,
    /// Where the plan is saved, or why it is not.
    pub saved: Result<Saved, String>,
}

/// A saved plan: what applying it checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    operation: String,
    /// A digest of the request (see [`planned`]).
    request: String,
    /// The provision request ID the plugin saw: an unkeyed request applied with the plan gets
    /// it too, so that the real call is the planned one.
    request_id: Option<String>,
    generation: u64,
    /// A digest of what the generation serves (routes, backends, plugins, settings, limits).
    config: String,
    backend: Option<String>,
    digest: Option<String>,
    /// (namespace, key, version) of every key the plan's calls read from the store.
    reads: Vec<(String, String, String)>,
    /// (namespace, prefix, digest of the keys) of every listing.
    lists: Vec<(String, String, String)>,
    /// The answering call's effects, up to its first withheld one.
    effects: Vec<String>,
    /// Whether the answering call stopped at a withheld effect.
    stopped: bool,
    /// A digest of the answer, when the plan ran to its end.
    answer: Option<String>,
    expires_at: u64,
    applied: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A digest of what `generation` serves, the same on every replica that loaded the same
/// configuration and plugins (generation numbers are per replica).
fn config_digest(generation: &Generation) -> String {
    let mut text = format!("{:?}\n", generation.config.routes);
    for (id, backend) in &generation.backends {
        let config = &generation.config.backends[id];
        let settings: Vec<(&str, &serde_json::Value)> = config
            .settings
            .iter()
            .map(|s| (s.key.as_str(), &s.json))
            .collect();
        let patterns = config.grants.http.as_ref().map(|a| a.patterns());
        text.push_str(&format!(
            "{id} {} {} {settings:?} {:?} {patterns:?}\n",
            backend.digest(),
            config.state_namespace,
            config.limits,
        ));
    }
    version(Some(text.as_bytes()))
}

/// What identifies a provision request for its plan: what it asks for, and its ID when the
/// client chose it (an `Idempotency-Key`; an unkeyed request gets a new ID each time).
fn planned(request: &model::ProvisionRequest) -> String {
    if request.is_keyed() {
        format!("{}\u{0}{}", request.request_id, request.fingerprint())
    } else {
        request.fingerprint()
    }
}

/// A digest of an operation's outcome, to compare a plan's with the real one's.
fn outcome_digest<T: std::fmt::Debug>(outcome: &Result<T, Error>) -> String {
    version(Some(format!("{outcome:?}").as_bytes()))
}

/// A plan ID: random, after its expiry (so that the namespace sorts by expiry).
fn new_plan_id(expires_at: u64) -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a plan ID: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{expires_at:012}-{hex}"))
}

/// Whether `id` has the shape of a plan ID (checked before it is used as a key).
pub fn is_plan_id(id: &str) -> bool {
    id.len() == 45
        && id.bytes().enumerate().all(|(i, b)| match i {
            12 => b == b'-',
            0..12 => b.is_ascii_digit(),
            _ => b.is_ascii_hexdigit() && !b.is_ascii_uppercase(),
        })
}

impl Gateway {
    /// What `POST /provision` would do with `request` now, with no side effects.
    pub async fn plan_provision(
        &self,
        generation: &Generation,
        request: model::ProvisionRequest,
    ) -> Plan<model::ProvisionResponse> {
        let calls = Calls::new(Mode::Plan, true);
        let fingerprint = planned(&request);
        let request_id = request.request_id.clone();
        let outcome = self.provision_with(generation, request, &calls).await;
        let request = (fingerprint.as_str(), Some(request_id));
        self.plan(generation, "provision", request, outcome, &calls)
            .await
    }

    /// What `POST /deprovision` would do with `request` now, with no side effects.
    pub async fn plan_deprovision(
        &self,
        generation: &Generation,
        request: model::DeprovisionRequest,
    ) -> Plan<()> {
        let calls = Calls::new(Mode::Plan, true);
        let fingerprint = format!("{}\u{0}{}", request.cluster_id, request.node_id);
        let outcome = self.deprovision_with(generation, request, &calls).await;
        self.plan(
            generation,
            "deprovision",
            (&fingerprint, None),
            outcome,
            &calls,
        )
        .await
    }

    /// The plan of an operation that ran with `calls` and ended with `outcome`, saved.
    /// `request`: what identifies the request (see [`planned`]), and the ID its plugin saw.
    async fn plan<T: std::fmt::Debug>(
        &self,
        generation: &Generation,
        operation: &'static str,
        request: (&str, Option<String>),
        outcome: Result<T, Error>,
        calls: &Calls,
    ) -> Plan<T> {
        let made = calls.made();
        let answering = made.iter().rposition(|c| c.operation == operation);
        let reports: Vec<CallReport> = made
            .iter()
            .map(|call| CallReport {
                backend: call.backend.id().clone(),
                namespace: call.backend.state_namespace().to_string(),
                digest: call.backend.digest().to_string(),
                contract: call.backend.contract().to_string(),
                operation: call.operation,
                transcript: call
                    .context
                    .transcript()
                    .redacted(|text| call.backend.redact(text)),
            })
            .collect();
        let saved = self
            .save(generation, operation, request, &outcome, &made, answering)
            .await;
        if let Err(why) = &saved {
            tracing::warn!("plan not saved: {why}");
        }
        Plan {
            generation: generation.number,
            outcome,
            calls: reports,
            answering,
            saved,
        }
    }

    /// Keep what applying the plan checks, for the generation's `plan_ttl`.
    async fn save<T: std::fmt::Debug>(
        &self,
        generation: &Generation,
        operation: &str,
        (request, request_id): (&str, Option<String>),
        outcome: &Result<T, Error>,
        made: &[MadeCall],
        answering: Option<usize>,
    ) -> Result<Saved, String> {
        let mut reads = Vec::new();
        let mut lists = Vec::new();
        for call in made {
            let transcript = call.context.transcript();
            if transcript.reads_overflow {
                return Err(format!(
                    "the plan read more than {} keys, too many to check when it is applied",
                    crate::capability::call::MAX_READS
                ));
            }
            let namespace = call.backend.state_namespace().to_string();
            reads.extend((transcript.reads.into_iter()).map(|(k, v)| (namespace.clone(), k, v)));
            lists.extend((transcript.lists.into_iter()).map(|(k, v)| (namespace.clone(), k, v)));
        }
        let answering = answering.map(|i| &made[i]);
        let transcript = answering.map(|c| c.context.transcript());
        let stopped = transcript.as_ref().is_some_and(|t| t.stopped_at.is_some());
        let expires_at = now() + generation.config.plan_ttl.as_secs();
        let record = Record {
            operation: operation.to_string(),
            request: version(Some(request.as_bytes())),
            request_id,
            generation: generation.number,
            config: config_digest(generation),
            backend: answering.map(|c| c.backend.id().to_string()),
            digest: answering.map(|c| c.backend.digest().to_string()),
            reads,
            lists,
            effects: transcript.map(|t| t.effects()).unwrap_or_default(),
            stopped,
            answer: (!stopped).then(|| outcome_digest(outcome)),
            expires_at,
            applied: false,
        };
        let value = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        if value.len() > MAX_VALUE_SIZE {
            return Err(format!(
                "the plan's record is {} bytes, over the store's {MAX_VALUE_SIZE}",
                value.len()
            ));
        }
        // Expired plans go first; what is left is bounded, so that plans cannot fill the store.
        if self.sweep_plans().await >= MAX_SAVED_PLANS {
            return Err(format!(
                "{MAX_SAVED_PLANS} plans are saved and not expired yet (admin.plan_ttl); plan \
                 again when some have expired"
            ));
        }
        let plan_id = new_plan_id(expires_at)?;
        self.state
            .set(PLANS, &plan_id, &value)
            .await
            .map_err(|e| format!("the state store did not take it: {e}"))?;
        Ok(Saved {
            plan_id,
            expires_at,
        })
    }

    /// Forget a page of expired plans (IDs sort by expiry); how many of the page are left.
    async fn sweep_plans(&self) -> usize {
        let cutoff = format!("{:012}", now());
        let Ok(page) = self.state.list_keys(PLANS, "", None, MAX_PAGE).await else {
            return 0;
        };
        let mut left = page.len();
        for old in page.iter().take_while(|k| **k < cutoff) {
            if self.state.delete(PLANS, old).await.is_err() {
                break;
            }
            left -= 1;
        }
        left
    }

    /// `POST /provision` with a plan: run `request` for real if the plan `plan_id` still holds
    /// (else [`Error::PlanRefused`]); the outcome, and whether the real call matched the plan.
    pub async fn apply_provision(
        &self,
        generation: &Generation,
        request: model::ProvisionRequest,
        plan_id: &str,
    ) -> Result<(Result<model::ProvisionResponse, Error>, bool), Error> {
        let mut request = request;
        let record = self
            .claim(generation, "provision", &planned(&request), plan_id)
            .await?;
        if !request.is_keyed()
            && let Some(id) = &record.request_id
        {
            request.request_id = id.clone();
        }
        let calls = Calls::new(Mode::Live, true);
        let outcome = self.provision_with(generation, request, &calls).await;
        let matched = matches(&record, &calls, &outcome);
        Ok((outcome, matched))
    }

    /// `POST /deprovision` with a plan, as [`Gateway::apply_provision`].
    pub async fn apply_deprovision(
        &self,
        generation: &Generation,
        request: model::DeprovisionRequest,
        plan_id: &str,
    ) -> Result<(Result<(), Error>, bool), Error> {
        let fingerprint = format!("{}\u{0}{}", request.cluster_id, request.node_id);
        let record = self
            .claim(generation, "deprovision", &fingerprint, plan_id)
            .await?;
        let calls = Calls::new(Mode::Live, true);
        let outcome = self.deprovision_with(generation, request, &calls).await;
        let matched = matches(&record, &calls, &outcome);
        Ok((outcome, matched))
    }

    /// Check that the plan still holds, and mark it applied (once, whichever replica asks).
    async fn claim(
        &self,
        generation: &Generation,
        operation: &str,
        request: &str,
        plan_id: &str,
    ) -> Result<Record, Error> {
        let refuse = |problem: String| Error::PlanRefused {
            plan_id: plan_id.to_string(),
            problem,
        };
        let store_error = |error| Error::State {
            what: "reading the plan",
            error,
        };
        let stored = self
            .state
            .get(PLANS, plan_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| refuse("no such plan: it expired or never existed".into()))?;
        let mut record: Record = serde_json::from_slice(&stored)
            .map_err(|e| refuse(format!("the saved plan cannot be read: {e}")))?;
        if now() >= record.expires_at {
            return Err(refuse(format!(
                "the plan expired at {} (plan_ttl)",
                humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + Duration::from_secs(record.expires_at)
                )
            )));
        }
        if record.operation != operation || record.request != version(Some(request.as_bytes())) {
            return Err(refuse(format!(
                "this is not the request that was planned (a {} with another body)",
                record.operation
            )));
        }
        if record.applied {
            return Err(refuse("the plan was applied already".into()));
        }
        if let Some(name) = &record.backend {
            let now_digest = BackendId::new(name)
                .ok()
                .and_then(|id| generation.backends.get(&id))
                .map(|b| b.digest().to_string());
            if now_digest != record.digest {
                return Err(refuse(format!(
                    "the plugin of backend `{name}` changed since the plan ({} then, {} now)",
                    record.digest.as_deref().unwrap_or("none"),
                    now_digest.as_deref().unwrap_or("not loaded")
                )));
            }
        }
        if record.config != config_digest(generation) {
            return Err(refuse(format!(
                "the configuration changed since the plan (generation {} then, {} now)",
                record.generation, generation.number
            )));
        }
        let redact = |namespace: &str, text: &str| match generation.backend_by_namespace(namespace)
        {
            Some(backend) => backend.redact(text),
            None => text.to_string(),
        };
        for (namespace, key, seen) in &record.reads {
            let value = self.state.get(namespace, key).await.map_err(store_error)?;
            if version(value.as_deref()) != *seen {
                return Err(refuse(format!(
                    "state key `{}` of namespace `{namespace}` changed since the plan",
                    redact(namespace, key)
                )));
            }
        }
        for (namespace, prefix, seen) in &record.lists {
            let keys = crate::state::all_keys(&*self.state, namespace, prefix)
                .await
                .map_err(store_error)?;
            if version(Some(keys.join("\n").as_bytes())) != *seen {
                return Err(refuse(format!(
                    "the keys under `{}` of namespace `{namespace}` changed since the plan",
                    redact(namespace, prefix)
                )));
            }
        }
        record.applied = true;
        let applied = serde_json::to_vec(&record).map_err(|e| refuse(e.to_string()))?;
        let claimed = self
            .state
            .compare_and_swap(PLANS, plan_id, Some(&stored), Some(&applied))
            .await
            .map_err(store_error)?;
        if !claimed {
            return Err(refuse("the plan was applied already".into()));
        }
        Ok(record)
    }
}

/// Whether the real operation did what its plan said: the same effects in the same order, up
/// to where the plan stopped, and, when the plan ran to its end, the same answer.
fn matches<T: std::fmt::Debug>(record: &Record, calls: &Calls, outcome: &Result<T, Error>) -> bool {
    let effects = calls
        .answering(&record.operation)
        .map(|call| call.context.transcript().effects())
        .unwrap_or_default();
    if record.stopped {
        effects.len() >= record.effects.len() && effects[..record.effects.len()] == record.effects
    } else {
        effects == record.effects && record.answer.as_deref() == Some(&outcome_digest(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_ids_sort_by_expiry_and_only_their_shape_is_taken() {
        let a = new_plan_id(1_700_000_000).unwrap();
        let b = new_plan_id(1_700_000_001).unwrap();
        assert!(a < b);
        assert!(is_plan_id(&a), "{a}");
        assert_ne!(a[13..], b[13..]);
        for bad in [
            "",
            "x",
            &a[1..],
            &a.to_uppercase(),
            &format!("{a}0"),
            "../../etc/passwd",
        ] {
            assert!(!is_plan_id(bad), "{bad}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn saved_plans_are_bounded_and_expired_ones_make_room() {
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn StateStore> =
            Arc::new(crate::state::embedded::RedbStore::open(dir.path()).unwrap());
        let (generation, gateway) = super::super::tests::pool_gateway(dir.path(), &state, 2);
        let fill = |expires_at: u64| {
            let state = state.clone();
            async move {
                for _ in 0..MAX_SAVED_PLANS {
                    let id = new_plan_id(expires_at).unwrap();
                    state.set(PLANS, &id, b"{}").await.unwrap();
                }
            }
        };

        // A full store of plans that have not expired: the plan is made, and not saved.
        fill(now() + 3600).await;
        let plan = gateway
            .plan_provision(&generation, super::super::tests::provision(1))
            .await;
        let why = plan.saved.unwrap_err();
        assert!(why.contains("plans are saved and not expired"), "{why}");
        assert!(plan.outcome.is_ok(), "the plan itself is still made");

        // The same number expired: the next plan sweeps a page of them and is saved.
        for key in state.list_keys(PLANS, "", None, MAX_PAGE).await.unwrap() {
            state.delete(PLANS, &key).await.unwrap();
        }
        fill(now() - 1).await;
        let plan = gateway
            .plan_provision(&generation, super::super::tests::provision(1))
            .await;
        assert!(plan.saved.is_ok(), "{:?}", plan.saved.err());
        let left = state.list_keys(PLANS, "", None, MAX_PAGE).await.unwrap();
        assert_eq!(
            left.len(),
            1,
            "the expired plans are gone, the new one kept"
        );
    }
}
