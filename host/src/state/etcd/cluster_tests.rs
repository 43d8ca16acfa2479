//! The store against a real etcd cluster, started by the tests (Debian's `etcd-server`).

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
