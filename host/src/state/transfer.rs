//! Moving state between stores: `platform-gateway state export` and `state import`.
//!
//! A [`Dump`] holds every namespace with every key and value, and the ownership index, read a
//! page at a time. It is JSON with a format version; values are base64, so any bytes survive.
//! Export from a store no gateway is writing to: the pages are not one snapshot.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{MAX_PAGE, Ownership, StateError, StateStore, all_keys};

/// The version of the dump format this gateway writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// How many ownership records one `record_owners` call of an import writes.
const OWNERS_CHUNK: usize = 500;
/// How many reads or writes an export or import has in flight (etcd answers over the network).
const IN_FLIGHT: usize = 16;

/// Everything a state store holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dump {
    /// [`FORMAT_VERSION`] when written by this gateway.
    pub version: u32,
    /// Namespace -> key -> value.
    pub namespaces: BTreeMap<String, BTreeMap<String, Value>>,
    /// The ownership index, by cluster then node.
    pub owners: Vec<Ownership>,
}

/// A stored value, as base64 in the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value(pub Vec<u8>);

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64
            .decode(text.as_bytes())
            .map(Value)
            .map_err(|e| serde::de::Error::custom(format!("a value is not base64: {e}")))
    }
}

impl Dump {
    /// How many keys the dump holds, over every namespace.
    pub fn key_count(&self) -> usize {
        self.namespaces.values().map(BTreeMap::len).sum()
    }
}

/// Why an import did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The target holds data and the import was not told to replace it.
    #[error(
        "the target store ({store}) already holds data ({found}); importing would mix two \
         states. To replace everything it holds with the dump, import with --replace"
    )]
    NotEmpty {
        /// The target store, described.
        store: String,
        /// What was found first.
        found: String,
    },
    /// A dump of another format version.
    #[error("the dump is format version {found}; this gateway reads version {FORMAT_VERSION}")]
    Version {
        /// The dump's version.
        found: u32,
    },
}

/// The gateway's namespace for saved plans: short-lived records (minutes) that an export
/// leaves out, so that restoring a backup never brings back a plan.
pub const PLANS: &str = "@plans";

/// Read everything `store` holds but saved plans, a page at a time.
pub async fn export(store: &dyn StateStore) -> Result<Dump, StateError> {
    let mut namespaces = BTreeMap::new();
    for namespace in all_namespaces(store).await? {
        if namespace == PLANS {
            continue;
        }
        let keys = all_keys(store, &namespace, "").await?;
        let values: BTreeMap<String, Value> = stream::iter(keys)
            .map(|key| {
                let namespace = &namespace;
                async move { Ok::<_, StateError>((store.get(namespace, &key).await?, key)) }
            })
            .buffered(IN_FLIGHT)
            // A key deleted between the listing and the read is simply not exported.
            .try_filter_map(|(value, key)| async move { Ok(value.map(|v| (key, Value(v)))) })
            .try_collect()
            .await?;
        namespaces.insert(namespace, values);
    }
    Ok(Dump {
        version: FORMAT_VERSION,
        namespaces,
        owners: all_owners(store).await?,
    })
}

/// Write `dump` into `store`. Refuses when the store holds any data, unless `replace`: then
/// everything it held is removed first, so that afterwards it holds exactly the dump.
pub async fn import(
    store: &dyn StateStore,
    dump: &Dump,
    replace: bool,
) -> Result<(), TransferError> {
    if dump.version != FORMAT_VERSION {
        return Err(TransferError::Version {
            found: dump.version,
        });
    }
    let namespaces = all_namespaces(store).await?;
    let owners = all_owners(store).await?;
    if !replace {
        let found = match (namespaces.first(), owners.first()) {
            (Some(namespace), _) => Some(format!("namespace `{namespace}`")),
            (None, Some(o)) => Some(format!(
                "the owner of node `{}` of cluster `{}`",
                o.node_id, o.cluster_id
            )),
            (None, None) => None,
        };
        if let Some(found) = found {
            return Err(TransferError::NotEmpty {
                store: store.describe(),
                found,
            });
        }
    }
    for namespace in &namespaces {
        let keys = all_keys(store, namespace, "").await?;
        stream::iter(keys.iter().map(|key| store.delete(namespace, key)))
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await?;
    }
    stream::iter(
        owners
            .iter()
            .map(|o| store.forget_owner(&o.cluster_id, &o.node_id)),
    )
    .buffer_unordered(IN_FLIGHT)
    .try_collect::<()>()
    .await?;
    let writes = dump.namespaces.iter().flat_map(|(namespace, values)| {
        values
            .iter()
            .map(move |(key, value)| store.set(namespace, key, &value.0))
    });
    stream::iter(writes)
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    for chunk in dump.owners.chunks(OWNERS_CHUNK) {
        store.record_owners(chunk).await?;
    }
    Ok(())
}

/// Every namespace that holds a key, a page at a time.
async fn all_namespaces(store: &dyn StateStore) -> Result<Vec<String>, StateError> {
    let mut names: Vec<String> = Vec::new();
    loop {
        let page = store
            .namespaces(names.last().map(String::as_str), MAX_PAGE)
            .await?;
        let done = page.len() < MAX_PAGE;
        names.extend(page);
        if done {
            return Ok(names);
        }
    }
}

/// Every ownership record, a page at a time.
async fn all_owners(store: &dyn StateStore) -> Result<Vec<Ownership>, StateError> {
    let mut owners: Vec<Ownership> = Vec::new();
    loop {
        let after = owners
            .last()
            .map(|o| (o.cluster_id.as_str(), o.node_id.as_str()));
        let page = store.owners(after, MAX_PAGE).await?;
        let done = page.len() < MAX_PAGE;
        owners.extend(page);
        if done {
            return Ok(owners);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RedbStore;

    fn owner(c: &str, n: &str, b: &str) -> Ownership {
        Ownership {
            cluster_id: c.into(),
            node_id: n.into(),
            backend: b.into(),
        }
    }

    /// A store with a bit of everything: several namespaces (a gateway one too), odd keys,
    /// binary and empty values, more keys and owners than one page.
    async fn filled(dir: &std::path::Path) -> RedbStore {
        let store = RedbStore::open(dir).unwrap();
        store
            .set("pool", "alloc/m1", b"{\"node\":1}")
            .await
            .unwrap();
        store
            .set("pool", "alloc/m 2\u{0}é", &[0, 255, 1])
            .await
            .unwrap();
        store.set("pool", "empty", b"").await.unwrap();
        store
            .set("@gateway", "deprovisioned/c/n", b"t")
            .await
            .unwrap();
        for i in 0..MAX_PAGE + 3 {
            store
                .set("big", &format!("k{i:05}"), i.to_string().as_bytes())
                .await
                .unwrap();
        }
        let owners: Vec<Ownership> = (0..MAX_PAGE + 2)
            .map(|i| owner(&format!("c{}", i % 3), &format!("n/{i}"), "pool"))
            .collect();
        store.record_owners(&owners).await.unwrap();
        store
    }

    #[tokio::test]
    async fn a_dump_carries_everything_between_two_embedded_stores() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = filled(a.path()).await;
        let dump = export(&source).await.unwrap();
        assert_eq!(dump.namespaces.len(), 3);
        assert_eq!(dump.key_count(), 4 + MAX_PAGE + 3);
        assert_eq!(dump.owners.len(), MAX_PAGE + 2);
        assert_eq!(
            dump.namespaces["pool"]["alloc/m 2\u{0}é"],
            Value(vec![0, 255, 1])
        );

        // Through JSON, as the command line moves it.
        let text = serde_json::to_string(&dump).unwrap();
        assert!(text.contains("\"version\":1"), "{}", &text[..200]);
        let read: Dump = serde_json::from_str(&text).unwrap();
        assert_eq!(read, dump);

        let target = RedbStore::open(b.path()).unwrap();
        import(&target, &read, false).await.unwrap();
        assert_eq!(export(&target).await.unwrap(), dump);
        assert_eq!(
            target.get("pool", "empty").await.unwrap().as_deref(),
            Some(&b""[..])
        );
        assert_eq!(
            target.owner("c1", "n/1").await.unwrap().as_deref(),
            Some("pool")
        );
    }

    #[tokio::test]
    async fn importing_over_data_is_refused_unless_replacing_and_replacing_leaves_only_the_dump() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let dump = export(&filled(a.path()).await).await.unwrap();
        let target = RedbStore::open(b.path()).unwrap();

        target.set("other", "stray", b"x").await.unwrap();
        let refused = import(&target, &dump, false).await.unwrap_err();
        assert!(matches!(refused, TransferError::NotEmpty { .. }));
        let message = refused.to_string();
        assert!(
            message.contains("--replace") && message.contains("namespace `other`"),
            "{message}"
        );
        // Refused means untouched.
        assert_eq!(target.get("pool", "empty").await.unwrap(), None);

        // Only an ownership record counts as data too.
        target.delete("other", "stray").await.unwrap();
        target
            .record_owners(&[owner("c9", "n9", "gone")])
            .await
            .unwrap();
        let message = import(&target, &dump, false).await.unwrap_err().to_string();
        assert!(message.contains("node `n9` of cluster `c9`"), "{message}");

        target.set("other", "stray", b"x").await.unwrap();
        import(&target, &dump, true).await.unwrap();
        assert_eq!(export(&target).await.unwrap(), dump);
        assert_eq!(target.owner("c9", "n9").await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dump_moves_from_the_embedded_store_into_etcd_and_back() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let dump = export(&filled(a.path()).await).await.unwrap();
        let cluster = xtask::etcd::EtcdCluster::start(1);
        let etcd = crate::state::EtcdStore::connect(&crate::state::EtcdSettings {
            endpoints: cluster.endpoints(),
            prefix: "/platform-gateway/transfer".into(),
            timeout: std::time::Duration::from_secs(5),
            username: None,
            password: None,
            tls: None,
        })
        .await
        .unwrap();
        import(&etcd, &dump, false).await.unwrap();
        let from_etcd = export(&etcd).await.unwrap();
        assert_eq!(from_etcd, dump);
        let back = RedbStore::open(b.path()).unwrap();
        import(&back, &from_etcd, false).await.unwrap();
        assert_eq!(export(&back).await.unwrap(), dump);
    }

    #[tokio::test]
    async fn a_dump_of_another_version_or_with_a_bad_value_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let future: Dump =
            serde_json::from_str(r#"{"version": 2, "namespaces": {}, "owners": []}"#).unwrap();
        let e = import(&store, &future, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 2"), "{e}");
        let bad = serde_json::from_str::<Dump>(
            r#"{"version": 1, "namespaces": {"n": {"k": "not base64!"}}, "owners": []}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("not base64"), "{bad}");
    }
}
