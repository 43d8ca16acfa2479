//! The etcd store (v3 API): the state of several gateway replicas in one etcd cluster.
//!
//! Every key lives under the configured prefix: plugin data at `{prefix}/kv/{namespace}\0{key}`,
//! owners at `{prefix}/owners/{cluster}\0{node}`, with NUL bytes inside names escaped so that
//! etcd's byte order of keys is the order of the tuples ([`keys`]). Compare-and-swap is one
//! transaction, listings are bounded ranges, and every operation (retries included) ends within
//! the configured timeout, answering [`StateError::Unavailable`] when etcd cannot serve it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient,
    LeaseClient, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
};
use tokio::time::Instant;

use super::{MAX_PAGE, MAX_VALUE_SIZE, Ownership, StateError, StateStore, check_sizes};

/// How to reach etcd, from the config's `[state]` section. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs of the members (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Every key of this platform lives under it (`/platform-gateway/prod`).
    pub prefix: String,
    /// The deadline of one state operation.
    pub timeout: Duration,
    /// Credentials, when etcd has authentication on.
    pub username: Option<String>,
    /// The password that goes with `username`.
    pub password: Option<String>,
    /// TLS to etcd.
    pub tls: Option<EtcdTls>,
}

impl std::fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// TLS files for etcd: the CA that signed the members' certificates, and an optional client
/// certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA bundle (PEM).
    pub ca: Option<PathBuf>,
    /// The client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// The client key (PEM).
    pub key: Option<PathBuf>,
}

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
    keys: keys::Layout,
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
            keys: keys::Layout::new(&settings.prefix),
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
        Some(ca) => options.ca_certificate(Certificate::from_pem(read("CA", ca)?)),
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

/// Whether etcd's answer says the credentials are missing, wrong or short of a permission
/// (etcd answers some of these as invalid arguments).
fn refused_credentials(message: &str) -> bool {
    [
        "etcdserver: authentication failed",
        "etcdserver: user name is empty",
        "etcdserver: invalid auth token",
        "etcdserver: permission denied",
        "etcdserver: user name not found",
    ]
    .iter()
    .any(|known| message.starts_with(known))
}

/// Why one attempt failed.
enum Failure {
    /// Worth another attempt within the deadline.
    Transient(String),
    /// Retrying will not help.
    Final(StateError),
}

impl From<StateError> for Failure {
    fn from(e: StateError) -> Self {
        Failure::Final(e)
    }
}

impl From<etcd_client::Error> for Failure {
    fn from(e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        match e {
            E::GRpcStatus(status) if refused_credentials(status.message()) => {
                Failure::Final(StateError::Unavailable(format!(
                    "etcd refused the credentials: {}",
                    status.message()
                )))
            }
            E::GRpcStatus(status) => {
                let message = format!("{}: {}", status.code(), status.message());
                // gRPC codes by number (etcd-client does not re-export tonic's `Code`).
                match status.code() as i32 {
                    // Cancelled, Unknown, DeadlineExceeded, Aborted, Internal, Unavailable: the
                    // transport failed, or etcd could not serve now (no leader, a timeout).
                    1 | 2 | 4 | 10 | 13 | 14 => Failure::Transient(message),
                    // PermissionDenied, Unauthenticated.
                    7 | 16 => Failure::Final(StateError::Unavailable(format!(
                        "etcd refused the credentials: {message}"
                    ))),
                    _ => Failure::Final(StateError::Storage(format!("etcd: {message}"))),
                }
            }
            E::TransportError(e) => Failure::Transient(e.to_string()),
            E::IoError(e) => Failure::Transient(e.to_string()),
            other => Failure::Final(StateError::Storage(format!("etcd: {other}"))),
        }
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
        let k = self.keys.kv(namespace, key);
        self.run(|Clients { mut kv, .. }| {
            let k = k.clone();
            async move {
                kv.delete(k, None).await?;
                Ok(())
            }
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
                Some((last, _)) if found.len() == page => start = keys::successor(last),
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
        let k = self.keys.owner(cluster_id, node_id);
        self.run(|Clients { mut kv, .. }| {
            let k = k.clone();
            async move {
                kv.delete(k, None).await?;
                Ok(())
            }
        })
        .await
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
                            Some((last, _)) if !done => start = keys::successor(last),
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

/// The key layout. Names are escaped so that byte order of keys is tuple order: a NUL inside a
/// name becomes `\0\xFF` and a name ends with a lone `\0`. UTF-8 never holds `\xFF`, so the end
/// of a name (`\0` then the next name, whose bytes are below `\xFF`) sorts before a NUL inside
/// it (`\0\xFF`), just as the shorter of two names with the same start sorts first.
mod keys {
    pub struct Layout {
        /// `{prefix}/`
        root: Vec<u8>,
        /// `{prefix}/kv/`
        kv: Vec<u8>,
        /// `{prefix}/owners/`
        owners: Vec<u8>,
        /// `{prefix}/swaps/`
        swaps: Vec<u8>,
    }

    impl Layout {
        pub fn new(prefix: &str) -> Layout {
            let mut root = prefix.trim_end_matches('/').as_bytes().to_vec();
            root.push(b'/');
            let join = |part: &str| [root.as_slice(), part.as_bytes()].concat();
            Layout {
                kv: join("kv/"),
                owners: join("owners/"),
                swaps: join("swaps/"),
                root,
            }
        }

        pub fn root(&self) -> &[u8] {
            &self.root
        }

        /// The marker of compare-and-swap number `n` of the store named `store`.
        pub fn marker(&self, store: &str, n: u64) -> Vec<u8> {
            [
                self.swaps.as_slice(),
                format!("{store}/{n:016x}").as_bytes(),
            ]
            .concat()
        }

        /// Where the keys of `namespace` start: `{prefix}/kv/{namespace}\0`.
        pub fn kv_namespace(&self, namespace: &str) -> Vec<u8> {
            let mut k = self.kv.clone();
            escape_into(&mut k, namespace);
            k.push(0);
            k
        }

        pub fn kv(&self, namespace: &str, key: &str) -> Vec<u8> {
            // The key is the last part: kept as it is, so a key prefix is a byte prefix.
            [self.kv_namespace(namespace).as_slice(), key.as_bytes()].concat()
        }

        /// The range `[start, end)` of the keys of `namespace` that start with `prefix` and
        /// sort after `after`.
        pub fn kv_page(
            &self,
            namespace: &str,
            prefix: &str,
            after: Option<&str>,
        ) -> (Vec<u8>, Vec<u8>) {
            let base = self.kv_namespace(namespace);
            let end = prefix_end(&[base.as_slice(), prefix.as_bytes()].concat());
            let start = match after {
                Some(after) if after >= prefix => {
                    successor(&[base.as_slice(), after.as_bytes()].concat())
                }
                _ => [base.as_slice(), prefix.as_bytes()].concat(),
            };
            (start, end)
        }

        pub fn kv_end(&self) -> Vec<u8> {
            prefix_end(&self.kv)
        }

        /// The first key of any namespace that sorts after `after` (or of any namespace).
        pub fn namespaces_after(&self, after: Option<&str>) -> Vec<u8> {
            match after {
                Some(after) => self.after_namespace(after.as_bytes()),
                None => self.kv.clone(),
            }
        }

        /// Past every key of `namespace`: `{prefix}/kv/{namespace}\0\xFF`. A key of the
        /// namespace continues `\0` with UTF-8 (never `\xFF`); a longer name that continues
        /// with a NUL is escaped `\0\xFF` and so sorts after, as it should.
        pub fn after_namespace(&self, namespace: &[u8]) -> Vec<u8> {
            let mut k = self.kv.clone();
            escape_bytes_into(&mut k, namespace);
            k.extend_from_slice(&[0, 0xFF]);
            k
        }

        /// The namespace of a plugin data key (unescaped bytes).
        pub fn namespace_of(&self, key: &[u8]) -> Option<Vec<u8>> {
            let rest = key.strip_prefix(self.kv.as_slice())?;
            split_name(rest).map(|(name, _)| name)
        }

        pub fn owner(&self, cluster_id: &str, node_id: &str) -> Vec<u8> {
            let mut k = self.owners.clone();
            escape_into(&mut k, cluster_id);
            k.push(0);
            escape_into(&mut k, node_id);
            k
        }

        pub fn owners_after(&self, after: Option<(&str, &str)>) -> Vec<u8> {
            match after {
                Some((cluster_id, node_id)) => successor(&self.owner(cluster_id, node_id)),
                None => self.owners.clone(),
            }
        }

        pub fn owners_end(&self) -> Vec<u8> {
            prefix_end(&self.owners)
        }

        /// The (unescaped) cluster and node IDs of an ownership key.
        pub fn owner_ids(&self, key: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
            let rest = key.strip_prefix(self.owners.as_slice())?;
            let (cluster_id, rest) = split_name(rest)?;
            let node_id = unescape(rest)?;
            Some((cluster_id, node_id))
        }
    }

    fn escape_into(out: &mut Vec<u8>, name: &str) {
        escape_bytes_into(out, name.as_bytes())
    }

    fn escape_bytes_into(out: &mut Vec<u8>, name: &[u8]) {
        for &b in name {
            out.push(b);
            if b == 0 {
                out.push(0xFF);
            }
        }
    }

    /// The unescaped bytes of an escaped name that fills `escaped`.
    fn unescape(escaped: &[u8]) -> Option<Vec<u8>> {
        match split_name(escaped) {
            // A lone NUL in the last name: not a key this layout writes.
            Some(_) => None,
            None => {
                let mut out = Vec::with_capacity(escaped.len());
                let mut bytes = escaped.iter();
                while let Some(&b) = bytes.next() {
                    out.push(b);
                    if b == 0 {
                        bytes.next();
                    }
                }
                Some(out)
            }
        }
    }

    /// Split an escaped, terminated name off the front of `key`: (the name, the rest after its
    /// terminating NUL).
    fn split_name(key: &[u8]) -> Option<(Vec<u8>, &[u8])> {
        let mut name = Vec::new();
        let mut i = 0;
        while i < key.len() {
            match (key[i], key.get(i + 1)) {
                (0, Some(0xFF)) => {
                    name.push(0);
                    i += 2;
                }
                (0, _) => return Some((name, &key[i + 1..])),
                (b, _) => {
                    name.push(b);
                    i += 1;
                }
            }
        }
        None
    }

    /// The smallest key after `key`.
    pub fn successor(key: &[u8]) -> Vec<u8> {
        let mut k = key.to_vec();
        k.push(0);
        k
    }

    /// The smallest key after every key that starts with `prefix` (etcd's range end for a
    /// prefix).
    pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < 0xFF {
                end.push(last + 1);
                return end;
            }
        }
        // Every byte was 0xFF: up to the end of the key space.
        vec![0]
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn layout() -> Layout {
            Layout::new("/pg/test/")
        }

        #[test]
        fn owner_keys_sort_as_the_id_tuples() {
            let ids = [
                "",
                "\0",
                "\0\0",
                "\0a",
                "a",
                "a\0",
                "a\0\0",
                "a\0b",
                "a\u{1}",
                "a/",
                "ab",
                "b",
                "é",
                "\u{10FFFF}",
            ];
            let l = layout();
            let mut tuples = Vec::new();
            for c in ids {
                for n in ids {
                    tuples.push((c, n));
                }
            }
            let mut by_key = tuples.clone();
            by_key.sort_by_key(|(c, n)| l.owner(c, n));
            tuples.sort();
            assert_eq!(by_key, tuples);
            for (c, n) in tuples {
                let (cluster, node) = l.owner_ids(&l.owner(c, n)).unwrap();
                assert_eq!(
                    (cluster.as_slice(), node.as_slice()),
                    (c.as_bytes(), n.as_bytes())
                );
                // The page after a record starts right after it.
                let next = l.owners_after(Some((c, n)));
                assert!(next > l.owner(c, n));
            }
        }

        #[test]
        fn data_keys_sort_by_namespace_then_key_and_namespaces_skip_whole() {
            let l = layout();
            let names = ["a", "a\0", "a\0b", "ab", "b"];
            let keys = ["", "\0", "k", "k/1", "\u{7F}", "é"];
            let mut pairs = Vec::new();
            for ns in names {
                for k in keys {
                    pairs.push((ns, k));
                }
            }
            let mut by_key = pairs.clone();
            by_key.sort_by_key(|(ns, k)| l.kv(ns, k));
            pairs.sort();
            assert_eq!(by_key, pairs);
            for (ns, k) in &pairs {
                let key = l.kv(ns, k);
                assert_eq!(l.namespace_of(&key).unwrap(), ns.as_bytes());
                // Every key of a namespace sorts before the first of the next namespace.
                assert!(key < l.after_namespace(ns.as_bytes()));
                for other in names.iter().filter(|other| *other > ns) {
                    assert!(l.kv(other, k) >= l.after_namespace(ns.as_bytes()));
                }
            }
        }

        #[test]
        fn a_page_stays_inside_namespace_and_prefix_and_starts_after_after() {
            let l = layout();
            let (start, end) = l.kv_page("ns", "m/", None);
            for inside in ["m/", "m/1", "m/\u{10FFFF}"] {
                let k = l.kv("ns", inside);
                assert!(start <= k && k < end, "{inside:?}");
            }
            for outside in ["m", "n", "m0", "l/1"] {
                let k = l.kv("ns", outside);
                assert!(!(start <= k && k < end), "{outside:?}");
            }
            assert!(l.kv("ns\0", "m/1") >= end);
            assert!(l.kv("nr", "m/1") < start);

            let (start, _) = l.kv_page("ns", "m/", Some("m/1"));
            assert!(l.kv("ns", "m/1") < start && start <= l.kv("ns", "m/1\0"));
            // `after` before the prefix starts the page at the prefix.
            assert_eq!(l.kv_page("ns", "m/", Some("a")).0, l.kv("ns", "m/"));
        }

        #[test]
        fn prefix_end_carries_past_ff_bytes() {
            assert_eq!(prefix_end(b"ab"), b"ac");
            assert_eq!(prefix_end(b"a\xFF"), b"b");
            assert_eq!(prefix_end(b"a\0"), b"a\x01");
            assert_eq!(prefix_end(b"\xFF\xFF"), b"\0");
        }

        #[test]
        fn the_prefix_is_one_folder() {
            assert_eq!(Layout::new("/x").root(), b"/x/");
            assert_eq!(Layout::new("/x/").root(), b"/x/");
            assert!(Layout::new("/x").kv("n", "k").starts_with(b"/x/kv/n\0"));
            assert!(
                Layout::new("/x")
                    .owner("c", "n")
                    .starts_with(b"/x/owners/c\0")
            );
        }
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
        let config = crate::config::StoreConfig::Etcd(s);
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
        assert!(e.contains("cannot read the TLS CA"), "{e}");
    }
}

/// The store against a real etcd cluster, started by the tests (Debian's `etcd-server`).
#[cfg(test)]
mod cluster_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures::future::join_all;
    use xtask::etcd::EtcdCluster;

    use super::*;
    use crate::state::contract;

    fn settings(cluster: &EtcdCluster, test: &str, timeout: Duration) -> EtcdSettings {
        EtcdSettings {
            endpoints: cluster.endpoints(),
            prefix: format!("/platform-gateway/{test}"),
            timeout,
            username: None,
            password: None,
            tls: None,
        }
    }

    fn owner(c: &str, n: &str, b: &str) -> Ownership {
        Ownership {
            cluster_id: c.into(),
            node_id: n.into(),
            backend: b.into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_etcd_store_passes_the_contract_suite_on_a_three_member_cluster() {
        let cluster = EtcdCluster::start(3);
        let store = EtcdStore::connect(&settings(&cluster, "contract", Duration::from_secs(5)))
            .await
            .unwrap();
        contract::run(Arc::new(store)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn credentials_are_used_and_refused_ones_answer_unavailable_naming_them() {
        let cluster = EtcdCluster::start(1);
        let mut admin = Client::connect(cluster.endpoints(), None).await.unwrap();
        admin.user_add("root", "secret", None).await.unwrap();
        admin.user_grant_role("root", "root").await.unwrap();
        admin.auth_enable().await.unwrap();

        let t = Duration::from_secs(30);
        let mut with = settings(&cluster, "auth", t);
        with.username = Some("root".into());
        with.password = Some("secret".into());
        let store = EtcdStore::connect(&with).await.unwrap();
        store.set("ns", "k", b"v").await.unwrap();
        assert!(
            store
                .compare_and_swap("ns", "k", Some(b"v"), Some(b"w"))
                .await
                .unwrap()
        );
        store.check().await.unwrap();

        with.password = Some("wrong".into());
        let wrong = EtcdStore::connect(&with).await.unwrap();
        let anonymous = EtcdStore::connect(&settings(&cluster, "auth", t))
            .await
            .unwrap();
        for store in [wrong, anonymous] {
            let started = std::time::Instant::now();
            match store.get("ns", "k").await {
                Err(StateError::Unavailable(m)) => {
                    assert!(m.contains("etcd refused the credentials"), "{m}")
                }
                other => panic!("{other:?}"),
            }
            // Refused at once, not retried until the deadline: retried, it would take the
            // whole 30 s; at once is under a tenth of that.
            assert!(started.elapsed() < t / 10, "{:?}", started.elapsed());
            assert!(store.check().await.is_err());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_prefixes_on_one_cluster_do_not_see_each_other() {
        let cluster = EtcdCluster::start(1);
        let t = Duration::from_secs(5);
        let a = EtcdStore::connect(&settings(&cluster, "a", t))
            .await
            .unwrap();
        let b = EtcdStore::connect(&settings(&cluster, "a-b", t))
            .await
            .unwrap();
        a.set("ns", "k", b"v").await.unwrap();
        a.record_owners(&[owner("c", "n", "ns")]).await.unwrap();
        assert_eq!(b.get("ns", "k").await.unwrap(), None);
        assert!(b.namespaces(None, 10).await.unwrap().is_empty());
        assert!(b.owners(None, 10).await.unwrap().is_empty());
        assert_eq!(a.namespaces(None, 10).await.unwrap(), ["ns"]);
        assert_eq!(a.owners(None, 10).await.unwrap(), [owner("c", "n", "ns")]);
    }

    /// Every operation of the trait once, with its name; all of them need a quorum.
    async fn every_operation(
        store: &EtcdStore,
    ) -> Vec<(&'static str, Result<(), StateError>, Duration)> {
        async fn timed<T>(
            name: &'static str,
            op: impl Future<Output = Result<T, StateError>>,
        ) -> (&'static str, Result<(), StateError>, Duration) {
            let started = std::time::Instant::now();
            let result = op.await.map(|_| ());
            (name, result, started.elapsed())
        }
        let o = [owner("c", "n2", "ns")];
        let ops: Vec<std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>>> = vec![
            Box::pin(timed("get", store.get("ns", "k"))),
            Box::pin(timed("set", store.set("ns", "k2", b"v"))),
            Box::pin(timed("delete", store.delete("ns", "k3"))),
            Box::pin(timed(
                "compare_and_swap",
                store.compare_and_swap("ns", "k", Some(b"v"), Some(b"w")),
            )),
            Box::pin(timed("list_keys", store.list_keys("ns", "", None, 10))),
            Box::pin(timed("namespaces", store.namespaces(None, 10))),
            Box::pin(timed("owner", store.owner("c", "n"))),
            Box::pin(timed("record_owners", store.record_owners(&o))),
            Box::pin(timed("forget_owner", store.forget_owner("c", "n3"))),
            Box::pin(timed("owners", store.owners(None, 10))),
            Box::pin(timed("check", store.check())),
        ];
        join_all(ops).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_quorum_every_operation_is_unavailable_in_time_and_the_same_store_recovers() {
        let mut cluster = EtcdCluster::start(3);
        let timeout = Duration::from_millis(500);
        let store = EtcdStore::connect(&settings(&cluster, "quorum", timeout))
            .await
            .unwrap();
        store.set("ns", "k", b"v").await.unwrap();
        store.record_owners(&[owner("c", "n", "ns")]).await.unwrap();

        cluster.stop_member(1);
        cluster.stop_member(2);
        for (name, result, elapsed) in every_operation(&store).await {
            match result {
                Err(StateError::Unavailable(message)) => {
                    assert!(message.contains("etcd at "), "{name}: {message}")
                }
                other => panic!("{name} without quorum answered {other:?}"),
            }
            // In time is a bound: each operation gives up at its 500 ms deadline instead of
            // waiting for the quorum to return; ten deadlines is the margin.
            assert!(
                elapsed < timeout * 10,
                "{name} took {elapsed:?} without quorum"
            );
        }
        assert!(store.check().await.is_err());

        // The members come back: the same store serves again, by itself, with the data intact.
        cluster.start_member(1);
        cluster.start_member(2);
        cluster.wait_healthy();
        let started = std::time::Instant::now();
        while let Err(e) = store.check().await {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no recovery after the members returned: {e}\n{}",
                cluster.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            store.get("ns", "k").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(store.owner("c", "n").await.unwrap().as_deref(), Some("ns"));
        for (name, result, _) in every_operation(&store).await {
            assert!(result.is_ok(), "{name} after recovery: {result:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_member_stopped_under_load_fails_no_operation() {
        let mut cluster = EtcdCluster::start(3);
        let store = Arc::new(
            EtcdStore::connect(&settings(&cluster, "load", Duration::from_secs(2)))
                .await
                .unwrap(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        // Each worker counts up its own key by compare-and-swap and records an owner per step:
        // a failed or repeated swap would break its count.
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let (store, stop, done) = (store.clone(), stop.clone(), done.clone());
                tokio::spawn(async move {
                    let key = format!("counter-{w}");
                    let mut n: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (old, new) = (n.to_string(), (n + 1).to_string());
                        let expected = (n > 0).then_some(old.as_bytes());
                        let swapped = store
                            .compare_and_swap("load", &key, expected, Some(new.as_bytes()))
                            .await
                            .unwrap_or_else(|e| panic!("worker {w} step {n}: {e}"));
                        assert!(swapped, "worker {w} step {n}: lost its own swap");
                        store
                            .record_owners(&[owner("load", &format!("{w}-{n}"), "load")])
                            .await
                            .unwrap_or_else(|e| panic!("worker {w} owner {n}: {e}"));
                        n += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    (key, n)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = done.load(Ordering::Relaxed);
        // The leader stops the operator's way (it hands leadership over first), then a
        // follower is killed outright, then a follower stops; the other two keep a quorum.
        // (A leader that crashes leaves no leader for an election timeout, a second or two:
        // calls whose deadline passes meanwhile answer Unavailable; see the quorum test.)
        for step in 0..3 {
            tokio::task::block_in_place(|| {
                let crash = step == 1;
                let member = match step {
                    0 => cluster.leader(),
                    _ => cluster.follower(),
                }
                .expect("a leader and followers");
                if crash {
                    cluster.kill_member(member);
                } else {
                    cluster.stop_member(member);
                }
                std::thread::sleep(Duration::from_secs(1));
                cluster.start_member(member);
                cluster.wait_healthy();
            });
        }
        stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for worker in workers {
            let (key, n) = worker.await.unwrap();
            assert_eq!(
                store.get("load", &key).await.unwrap(),
                Some(n.to_string().into_bytes())
            );
            total += n;
        }
        let owners = store.owners(None, usize::MAX).await.unwrap();
        assert_eq!(owners.len() as u64, total);
        assert!(
            done.load(Ordering::Relaxed) > before,
            "no progress while members stopped"
        );
        eprintln!(
            "{total} swaps and as many owner records, the leader stopped, a follower killed, a follower stopped: none failed"
        );
    }
}
