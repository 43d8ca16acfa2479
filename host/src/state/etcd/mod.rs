//! The etcd store (v3 API): the state of several gateway replicas in one etcd cluster.
//!
//! Every key lives under the configured prefix: plugin data at `{prefix}/kv/{namespace}\0{key}`,
//! owners at `{prefix}/owners/{cluster}\0{node}`, with NUL bytes inside names escaped so that
//! etcd's byte order of keys is the order of the tuples (`codec`). Compare-and-swap is one
//! transaction, listings are bounded ranges, and every operation (retries included) ends within
//! the configured timeout, answering [`StateError::Unavailable`] when etcd cannot serve it.

mod codec;
mod failure;

use std::future::Future;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient,
    LeaseClient, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
};
use tokio::time::Instant;

use self::failure::Failure;
use super::{
    EtcdSettings, EtcdTls, MAX_PAGE, MAX_VALUE_SIZE, Ownership, StateError, StateStore, check_sizes,
};

/// How many operations one transaction of `record_owners` holds (etcd allows 128 by default).
const TXN_CHUNK: usize = 64;
/// The first pause between two attempts of an operation; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(200);
/// The shortest life of a compare-and-swap's marker (see [`EtcdStore::compare_and_swap`]);
/// [`marker_ttl`] gives the life for a configured timeout.
const MIN_MARKER_TTL: Duration = Duration::from_secs(60);
/// About how many bytes of values one page of a usage scan asks for: etcd's answers are
/// bounded (gRPC's 4 MiB), and a value may be 1 MiB.
const USAGE_PAGE_BYTES: usize = 2 << 20;
/// How long a member that failed an attempt is passed over while others may answer.
const AVOID: Duration = Duration::from_secs(1);

/// The store in etcd.
pub struct EtcdStore {
    settings: EtcdSettings,
    options: ConnectOptions,
    keys: codec::Layout,
    /// One connection per member, so that a member that fails is passed over (a balancing
    /// channel over all of them keeps choosing a dead member: it is never busy).
    members: Vec<Member>,
    /// Spreads attempts over the members in turn.
    next_member: AtomicUsize,
    /// The lease of compare-and-swap markers, and when it was granted.
    lease: Mutex<Option<(i64, Instant)>>,
    /// Names this store's compare-and-swap markers apart from other stores' (and replicas').
    swaps: String,
    next_swap: AtomicU64,
}

/// The etcd clients one attempt uses.
#[derive(Clone)]
struct Clients {
    kv: KvClient,
    lease: LeaseClient,
}

/// One etcd member, as this store sees it. The locks are never held across an await.
struct Member {
    endpoint: String,
    /// Built on first use; dropped when an attempt hangs, so the next one connects anew.
    clients: Mutex<Option<Clients>>,
    /// Passed over until then, after a failed attempt.
    avoid_until: Mutex<Option<Instant>>,
}

impl EtcdStore {
    /// A store over the etcd cluster of `settings`. Does not need etcd to be up: the connection
    /// is made on first use and remade after failures, and operations answer `Unavailable`
    /// until etcd serves. Fails only on settings that can never work (no endpoint, unreadable
    /// TLS files, a username without a password).
    pub async fn connect(settings: &EtcdSettings) -> Result<EtcdStore, StateError> {
        if settings.endpoints.is_empty() {
            return Err(StateError::Storage("etcd: no endpoint configured".into()));
        }
        if settings.timeout.is_zero() {
            return Err(StateError::Storage(
                "etcd: the timeout must not be zero".into(),
            ));
        }
        let mut options = ConnectOptions::new()
            // A member without a leader answers at once instead of waiting.
            .with_require_leader(true)
            .with_connect_timeout(settings.timeout)
            // Find dead connections; etcd sends pings more often than every 5 s, or pings on a
            // connection without a call, away (GOAWAY "too_many_pings").
            .with_keep_alive(Duration::from_secs(10), settings.timeout)
            .with_keep_alive_while_idle(false);
        match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                options = options
                    .with_user(user.clone(), password.clone())
                    .with_auto_token_refresh(true);
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(StateError::Storage(
                    "etcd: a username needs a password".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(StateError::Storage(
                    "etcd: a password needs a username".into(),
                ));
            }
        }
        if let Some(tls) = &settings.tls {
            if let Some(plain) = settings.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(StateError::Storage(format!(
                    "etcd: endpoint {plain} is plain http but tls is configured; use https://"
                )));
            }
            options = options.with_tls(tls_options(tls)?);
        }
        Ok(EtcdStore {
            keys: codec::Layout::new(&settings.prefix),
            settings: settings.clone(),
            options,
            members: settings
                .endpoints
                .iter()
                .map(|endpoint| Member {
                    endpoint: endpoint.clone(),
                    clients: Mutex::new(None),
                    avoid_until: Mutex::new(None),
                })
                .collect(),
            next_member: AtomicUsize::new(0),
            lease: Mutex::new(None),
            swaps: swaps_id(),
            next_swap: AtomicU64::new(0),
        })
    }

    /// The member for the next attempt: the next in turn that is not being passed over, or
    /// if every one is, the one passed over the longest.
    fn pick(&self) -> &Member {
        let count = self.members.len();
        let start = self.next_member.fetch_add(1, Ordering::Relaxed) % count;
        let now = Instant::now();
        let mut fallback: Option<(&Member, Instant)> = None;
        for k in 0..count {
            let member = &self.members[(start + k) % count];
            match *lock(&member.avoid_until) {
                Some(until) if until > now => {
                    if fallback.is_none_or(|(_, earliest)| until < earliest) {
                        fallback = Some((member, until));
                    }
                }
                _ => return member,
            }
        }
        fallback.map_or(&self.members[start], |(member, _)| member)
    }

    /// The clients of `member`, built if there are none. Building needs no network unless
    /// credentials are configured (then it authenticates).
    async fn clients(&self, member: &Member) -> Result<Clients, etcd_client::Error> {
        if let Some(clients) = &*lock(&member.clients) {
            return Ok(clients.clone());
        }
        let client = Client::connect([&member.endpoint], Some(self.options.clone())).await?;
        let built = Clients {
            kv: client.kv_client(),
            lease: client.lease_client(),
        };
        // Another call may have built them meanwhile: keep the first.
        Ok(lock(&member.clients).get_or_insert(built).clone())
    }

    /// The lease for compare-and-swap markers, granted anew once a third of its life is over.
    async fn marker_lease(&self, lease: &mut LeaseClient) -> Result<i64, Failure> {
        let ttl = marker_ttl(self.settings.timeout);
        if let Some((id, granted)) = *lock(&self.lease)
            && granted.elapsed() < ttl / 3
        {
            return Ok(id);
        }
        // Taken before asking: etcd starts the lease's life later, never earlier.
        let granted = Instant::now();
        let id = lease.grant(ttl.as_secs() as i64, None).await?.id();
        *lock(&self.lease) = Some((id, granted));
        Ok(id)
    }

    fn forget_lease(&self) {
        *lock(&self.lease) = None;
    }

    fn unavailable(&self, why: impl std::fmt::Display) -> StateError {
        StateError::Unavailable(format!(
            "etcd at {}: {why}",
            self.settings.endpoints.join(", ")
        ))
    }

    /// Delete the key `k` (a plugin's key or an ownership record), as [`EtcdStore::run`] runs.
    async fn delete_key(&self, k: Vec<u8>) -> Result<(), StateError> {
        self.run(|Clients { mut kv, .. }| {
            let k = k.clone();
            async move {
                kv.delete(k, None).await?;
                Ok(())
            }
        })
        .await
    }

    /// Run `op` until it succeeds, fails for good, or the deadline passes. Each attempt goes to
    /// a member, in turn; a member that fails or hangs (stopping, cut off from the quorum,
    /// still catching up) is given up after a third of the deadline and passed over for a
    /// while, and the attempt is made again on another. Every operation is safe to repeat:
    /// compare-and-swap sees whether an earlier attempt of it applied.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StateError>
    where
        F: Fn(Clients) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let timeout = self.settings.timeout;
        let deadline = Instant::now() + timeout;
        let patience = (timeout / 3).max(Duration::from_millis(200));
        let mut pause = FIRST_PAUSE;
        let last_error = loop {
            let member = self.pick();
            let attempt = async { op(self.clients(member).await?).await };
            let give_up = deadline.min(Instant::now() + patience);
            let error = match tokio::time::timeout_at(give_up, attempt).await {
                Ok(Ok(value)) => {
                    *lock(&member.avoid_until) = None;
                    return Ok(value);
                }
                Ok(Err(Failure::Final(e))) => return Err(e),
                Ok(Err(Failure::Transient(message))) => message,
                Err(_) => {
                    // A connection that hangs may be half open: the next attempt connects anew.
                    *lock(&member.clients) = None;
                    format!("no answer within {patience:?}")
                }
            };
            *lock(&member.avoid_until) = Some(Instant::now() + AVOID);
            let error = format!("{}: {error}", member.endpoint);
            if Instant::now() + pause >= deadline {
                break error;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        };
        Err(self.unavailable(format!(
            "no answer within {timeout:?} (last error, from {last_error})"
        )))
    }

    /// One page of the keys in `[start, end)`, keys only.
    async fn range_keys(
        kv: &mut KvClient,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, Failure> {
        if limit == 0 || start >= end {
            return Ok(Vec::new());
        }
        let options = GetOptions::new()
            .with_range(end)
            .with_keys_only()
            .with_limit(limit as i64);
        let mut reply = kv.get(start, Some(options)).await?;
        Ok(reply
            .take_kvs()
            .into_iter()
            .map(|kv| kv.into_key_value().0)
            .collect())
    }

    fn decode_text(&self, what: &str, bytes: Vec<u8>) -> Result<String, StateError> {
        String::from_utf8(bytes).map_err(|_| {
            StateError::Storage(format!(
                "etcd: a {what} under {} is not UTF-8 (written by something else?)",
                self.settings.prefix
            ))
        })
    }
}

/// How long the markers of compare-and-swaps live, for operations that end within `timeout`.
///
/// A marker is read only by later attempts of its own swap, which all start before the
/// operation's deadline, `timeout` after it began ([`EtcdStore::run`]); nothing reads it after
/// the operation returns, so the plugin call's own deadline (`limits.timeout`, up to an hour)
/// does not matter, only `state.timeout` (also up to an hour). Markers go on a lease that is
/// used for a third of its life, so a marker lives at least two thirds of this after it is
/// written: twice the timeout outlives every retry with room to spare.
fn marker_ttl(timeout: Duration) -> Duration {
    // Whole seconds, as etcd takes them, rounded up.
    MIN_MARKER_TTL.max(Duration::from_secs((timeout * 2).as_secs() + 1))
}

/// Lock `mutex`; a panic elsewhere while it was held does not make its value wrong here.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A name for one store's compare-and-swap markers that no other store (in this process or
/// another replica) uses: the host, the process, the time and a counter.
fn swaps_id() -> String {
    static STORES: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_string())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{host}-{}-{nanos:x}-{}",
        std::process::id(),
        STORES.fetch_add(1, Ordering::Relaxed)
    )
}

/// A CA and an optional client identity for `tls`.
fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, StateError> {
    fn read(what: &str, path: &Path) -> Result<Vec<u8>, StateError> {
        std::fs::read(path).map_err(|e| {
            StateError::Storage(format!(
                "etcd: cannot read the TLS {what} {}: {e}",
                path.display()
            ))
        })
    }
    let mut options = TlsOptions::new();
    options = match &tls.ca {
        Some(ca) => {
            let bundle = crate::pem::ca_bundle(ca)
                .map_err(|e| StateError::Storage(format!("etcd: the TLS CA: {e}")))?;
            options.ca_certificate(Certificate::from_pem(bundle.pem))
        }
        None => options.with_native_roots(),
    };
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Ok(options.identity(Identity::from_pem(
            read("certificate", cert)?,
            read("key", key)?,
        ))),
        (None, None) => Ok(options),
        _ => Err(StateError::Storage(
            "etcd: a TLS client certificate needs its key, and the other way round".into(),
        )),
    }
}

#[async_trait]
impl StateStore for EtcdStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let k = self.keys.kv(namespace, key);
        self.run(|Clients { mut kv, .. }| {
            let k = k.clone();
            async move {
                let mut reply = kv.get(k, None).await?;
                Ok(reply.take_kvs().pop().map(|kv| kv.into_key_value().1))
            }
        })
        .await
    }

    async fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StateError> {
        check_sizes(key, Some(value))?;
        let k = self.keys.kv(namespace, key);
        self.run(|Clients { mut kv, .. }| {
            let k = k.clone();
            async move {
                kv.put(k, value, None).await?;
                Ok(())
            }
        })
        .await
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), StateError> {
        check_sizes(key, None)?;
        self.delete_key(self.keys.kv(namespace, key)).await
    }

    async fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        check_sizes(key, new)?;
        let k = self.keys.kv(namespace, key);
        let compare = match expected {
            // Comparing the value of a missing key is false in etcd, as it must be here.
            Some(value) => Compare::value(k.clone(), CompareOp::Equal, value),
            None => Compare::create_revision(k.clone(), CompareOp::Equal, 0),
        };
        let then = match new {
            Some(value) => TxnOp::put(k.clone(), value, None),
            None => TxnOp::delete(k.clone(), None),
        };
        // Each swap writes a marker of its own in the same transaction, and succeeds only
        // while its marker is absent. An attempt whose answer was lost (a member stopped
        // mid-call) may have applied: the next attempt then finds its marker and reports the
        // swap, instead of failing its comparison or applying it twice. Markers live on a
        // lease and vanish once no attempt of their swap can come ([`marker_ttl`]).
        let marker = self
            .keys
            .marker(&self.swaps, self.next_swap.fetch_add(1, Ordering::Relaxed));
        self.run(|Clients { mut kv, mut lease }| {
            let (k, compare, then, marker) = (k.clone(), compare.clone(), then.clone(), &marker);
            async move {
                let lease = self.marker_lease(&mut lease).await?;
                let txn = Txn::new()
                    .when([
                        compare,
                        Compare::create_revision(marker.clone(), CompareOp::Equal, 0),
                    ])
                    .and_then([
                        then,
                        TxnOp::put(marker.clone(), k, Some(PutOptions::new().with_lease(lease))),
                    ])
                    .or_else([TxnOp::get(
                        marker.clone(),
                        Some(GetOptions::new().with_count_only()),
                    )]);
                let reply = match kv.txn(txn).await {
                    Ok(reply) => reply,
                    Err(etcd_client::Error::GRpcStatus(status))
                        if status.message().contains("lease not found") =>
                    {
                        // Expired while etcd was away (or revoked): take a new one.
                        self.forget_lease();
                        return Err(Failure::Transient(status.message().to_string()));
                    }
                    Err(e) => return Err(e.into()),
                };
                if reply.succeeded() {
                    return Ok(true);
                }
                let marked = reply.op_responses().into_iter().any(|r| match r {
                    TxnOpResponse::Get(get) => get.count() > 0,
                    _ => false,
                });
                Ok(marked)
            }
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
        let (start, end) = self.keys.kv_page(namespace, prefix, after);
        let base = self.keys.kv_namespace(namespace).len();
        let limit = limit.min(MAX_PAGE);
        let found = self
            .run(|Clients { mut kv, .. }| {
                let (start, end) = (&start, &end);
                async move { Self::range_keys(&mut kv, start, end, limit).await }
            })
            .await?;
        found
            .into_iter()
            .map(|k| self.decode_text("key", k[base..].to_vec()))
            .collect()
    }

    async fn namespaces(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        // etcd cannot skip from one namespace to the next: ask for the first key after each
        // namespace found, one small reply at a time.
        let end = self.keys.kv_end();
        let first = self.keys.namespaces_after(after);
        let names = self
            .run(|Clients { mut kv, .. }| {
                let (end, first) = (&end, &first);
                async move {
                    let mut names = Vec::new();
                    let mut start = first.clone();
                    while names.len() < limit {
                        let Some(key) = Self::range_keys(&mut kv, &start, end, 1).await?.pop()
                        else {
                            break;
                        };
                        let name = self.keys.namespace_of(&key).ok_or_else(|| {
                            StateError::Storage(format!(
                                "etcd: a malformed key under {}",
                                self.settings.prefix
                            ))
                        })?;
                        start = self.keys.after_namespace(&name);
                        names.push(name);
                    }
                    Ok(names)
                }
            })
            .await?;
        names
            .into_iter()
            .map(|n| self.decode_text("namespace", n))
            .collect()
    }

    async fn usage(&self, namespace: &str) -> Result<(u64, u64), StateError> {
        // Values must be read to be measured. A page holds as many as fit in USAGE_PAGE_BYTES
        // at the size of the largest value of the page before (the first page assumes the
        // largest possible); a page whose answer is over gRPC's bound anyway (a run of large
        // values after small ones) is asked again at half the size, until it passes.
        let (mut start, end) = self.keys.kv_page(namespace, "", None);
        let base = self.keys.kv_namespace(namespace).len();
        let (mut keys, mut bytes) = (0u64, 0u64);
        let mut largest = MAX_VALUE_SIZE;
        loop {
            let mut page = (USAGE_PAGE_BYTES / largest.max(1)).clamp(1, MAX_PAGE);
            let found = loop {
                let asked = self
                    .run(|Clients { mut kv, .. }| {
                        let (start, end) = (&start, &end);
                        async move {
                            let options = GetOptions::new()
                                .with_range(end.clone())
                                .with_limit(page as i64);
                            match kv.get(start.clone(), Some(options)).await {
                                Ok(mut reply) => Ok(Some(
                                    reply
                                        .take_kvs()
                                        .into_iter()
                                        .map(|kv| (kv.key().to_vec(), kv.value().len()))
                                        .collect::<Vec<_>>(),
                                )),
                                // OutOfRange: the answer is over gRPC's bound.
                                Err(etcd_client::Error::GRpcStatus(status))
                                    if status.code() as i32 == 11 && page > 1 =>
                                {
                                    Ok(None)
                                }
                                Err(e) => Err(e.into()),
                            }
                        }
                    })
                    .await?;
                match asked {
                    Some(found) => break found,
                    None => page = (page / 2).max(1),
                }
            };
            for (key, value) in &found {
                keys += 1;
                bytes += (key.len().saturating_sub(base) + value) as u64;
            }
            largest = found.iter().map(|(_, v)| *v).max().unwrap_or(1);
            match found.last() {
                Some((last, _)) if found.len() == page => start = codec::successor(last),
                _ => return Ok((keys, bytes)),
            }
        }
    }

    async fn owner(&self, cluster_id: &str, node_id: &str) -> Result<Option<String>, StateError> {
        let k = self.keys.owner(cluster_id, node_id);
        let found = self
            .run(|Clients { mut kv, .. }| {
                let k = k.clone();
                async move {
                    let mut reply = kv.get(k, None).await?;
                    Ok(reply.take_kvs().pop().map(|kv| kv.into_key_value().1))
                }
            })
            .await?;
        found
            .map(|b| self.decode_text("backend name", b))
            .transpose()
    }

    async fn record_owners(&self, owners: &[Ownership]) -> Result<(), StateError> {
        for chunk in owners.chunks(TXN_CHUNK) {
            let records: Vec<(Vec<u8>, &str)> = chunk
                .iter()
                .map(|o| {
                    (
                        self.keys.owner(&o.cluster_id, &o.node_id),
                        o.backend.as_str(),
                    )
                })
                .collect();
            // Discovery refreshes the index on every call: read the chunk in one (read-only)
            // transaction and write only what differs, so an unchanged index costs no write.
            let reads: Vec<TxnOp> = records
                .iter()
                .map(|(k, _)| TxnOp::get(k.clone(), None))
                .collect();
            let read = Txn::new().and_then(reads);
            let stale: Vec<TxnOp> = self
                .run(|Clients { mut kv, .. }| {
                    let (read, records) = (read.clone(), &records);
                    async move {
                        let reply = kv.txn(read).await?;
                        let mut stale = Vec::new();
                        for ((k, backend), found) in records.iter().zip(reply.op_responses()) {
                            let known = match found {
                                TxnOpResponse::Get(mut get) => {
                                    get.take_kvs().pop().map(|kv| kv.into_key_value().1)
                                }
                                _ => None,
                            };
                            if known.as_deref() != Some(backend.as_bytes()) {
                                stale.push(TxnOp::put(k.clone(), *backend, None));
                            }
                        }
                        Ok(stale)
                    }
                })
                .await?;
            if stale.is_empty() {
                continue;
            }
            let write = Txn::new().and_then(stale);
            self.run(|Clients { mut kv, .. }| {
                let write = write.clone();
                async move {
                    kv.txn(write).await?;
                    Ok(())
                }
            })
            .await?;
        }
        Ok(())
    }

    async fn forget_owner(&self, cluster_id: &str, node_id: &str) -> Result<(), StateError> {
        self.delete_key(self.keys.owner(cluster_id, node_id)).await
    }

    async fn owners(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Ownership>, StateError> {
        let first = self.keys.owners_after(after);
        let end = self.keys.owners_end();
        let found = self
            .run(|Clients { mut kv, .. }| {
                let (first, end) = (&first, &end);
                async move {
                    // However many the caller asks for, no reply holds more than a page.
                    let mut found: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                    let mut start = first.clone();
                    while found.len() < limit {
                        let page = (limit - found.len()).min(MAX_PAGE);
                        let options = GetOptions::new()
                            .with_range(end.clone())
                            .with_limit(page as i64);
                        let mut reply = kv.get(start.clone(), Some(options)).await?;
                        let kvs = reply.take_kvs();
                        let done = kvs.len() < page;
                        found.extend(kvs.into_iter().map(|kv| kv.into_key_value()));
                        match found.last() {
                            Some((last, _)) if !done => start = codec::successor(last),
                            _ => break,
                        }
                    }
                    Ok(found)
                }
            })
            .await?;
        found
            .into_iter()
            .map(|(k, backend)| {
                let (cluster_id, node_id) = self.keys.owner_ids(&k).ok_or_else(|| {
                    StateError::Storage(format!(
                        "etcd: a malformed ownership key under {}",
                        self.settings.prefix
                    ))
                })?;
                Ok(Ownership {
                    cluster_id: self.decode_text("cluster ID", cluster_id)?,
                    node_id: self.decode_text("node ID", node_id)?,
                    backend: self.decode_text("backend name", backend)?,
                })
            })
            .collect()
    }

    async fn check(&self) -> Result<(), StateError> {
        // A linearizable read: the member must hear from a quorum to answer it.
        let k = self.keys.root().to_vec();
        self.run(|Clients { mut kv, .. }| {
            let k = k.clone();
            async move {
                kv.get(k, Some(GetOptions::new().with_count_only())).await?;
                Ok(())
            }
        })
        .await
    }

    fn describe(&self) -> String {
        format!("etcd at {}", self.settings.endpoints.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoints: Vec<String>, timeout: Duration) -> EtcdSettings {
        EtcdSettings {
            endpoints,
            prefix: "/platform-gateway/unit".into(),
            timeout,
            username: None,
            password: None,
            tls: None,
        }
    }

    #[tokio::test]
    async fn without_etcd_connect_succeeds_and_every_operation_is_unavailable_in_time() {
        // A port nobody listens on: connections are refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let timeout = Duration::from_millis(500);
        let store =
            EtcdStore::connect(&settings(vec![format!("http://127.0.0.1:{port}")], timeout))
                .await
                .unwrap();
        let started = std::time::Instant::now();
        let errors = [
            store.get("a", "k").await.unwrap_err(),
            store.set("a", "k", b"v").await.unwrap_err(),
            store
                .compare_and_swap("a", "k", None, Some(b"v"))
                .await
                .unwrap_err(),
            store.list_keys("a", "", None, 10).await.unwrap_err(),
            store.namespaces(None, 10).await.unwrap_err(),
            store.owners(None, 10).await.unwrap_err(),
            store.check().await.unwrap_err(),
        ];
        let elapsed = started.elapsed();
        for e in &errors {
            assert!(matches!(e, StateError::Unavailable(_)), "{e:?}");
            assert!(e.to_string().contains("etcd at http://127.0.0.1:"), "{e}");
        }
        // In time is a bound: a refused connection fails at once, and no operation may wait
        // past its 500 ms deadline (retrying, say); all seven within ten deadlines is the
        // margin for a loaded machine.
        assert!(elapsed < timeout * 10, "{elapsed:?}");
    }

    #[test]
    fn a_marker_outlives_every_attempt_of_its_swap_whatever_the_timeout() {
        for timeout in [1, 2_000, 30_000, 40_001, 600_000, 3_600_000] {
            let timeout = Duration::from_millis(timeout);
            let ttl = marker_ttl(timeout);
            // Written with a lease up to a third of its life old; read until `timeout` after
            // the operation began, which is no earlier than the write.
            assert!(ttl - ttl / 3 > timeout, "{timeout:?}: {ttl:?}");
            // Whole seconds, as etcd takes them.
            assert_eq!(ttl.subsec_nanos(), 0, "{timeout:?}");
        }
    }

    #[test]
    fn debug_shows_the_settings_but_never_the_password() {
        let mut s = settings(vec!["https://etcd-0:2379".into()], Duration::from_secs(1));
        s.username = Some("gateway".into());
        s.password = Some("hunter2-sekret".into());
        for shown in [format!("{s:?}"), format!("{s:#?}")] {
            assert!(!shown.contains("hunter2-sekret"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
            assert!(
                shown.contains("gateway") && shown.contains("etcd-0"),
                "{shown}"
            );
        }
        // Through the config that holds it, too.
        let config = crate::state::StoreConfig::Etcd(s);
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn settings_that_cannot_work_are_refused_at_connect() {
        let t = Duration::from_secs(1);
        assert!(EtcdStore::connect(&settings(vec![], t)).await.is_err());
        let mut s = settings(vec!["http://127.0.0.1:2379".into()], t);
        s.username = Some("u".into());
        let e = EtcdStore::connect(&s).await.err().unwrap().to_string();
        assert!(e.contains("needs a password"), "{e}");
        let mut s = settings(vec!["http://127.0.0.1:2379".into()], t);
        s.tls = Some(EtcdTls {
            ca: None,
            cert: None,
            key: None,
        });
        let e = EtcdStore::connect(&s).await.err().unwrap().to_string();
        assert!(e.contains("use https://"), "{e}");
        let mut s = settings(vec!["https://127.0.0.1:2379".into()], t);
        s.tls = Some(EtcdTls {
            ca: Some("/nonexistent/ca.pem".into()),
            cert: None,
            key: None,
        });
        let e = EtcdStore::connect(&s).await.err().unwrap().to_string();
        assert!(
            e.contains("TLS CA: cannot read CA bundle /nonexistent/ca.pem"),
            "{e}"
        );
    }
}

/// The store against a real etcd cluster, started by the tests (Debian's `etcd-server`).
#[cfg(test)]
mod cluster_tests;
