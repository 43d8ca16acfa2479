//! The contract every [`StateStore`] passes, run unchanged against the embedded store and etcd.
//!
//! It uses namespaces and clusters of its own (`contract-*`), so it can run on a store that
//! holds other data, but it expects no other writer on those names.

use std::sync::Arc;

use super::{MAX_KEY_SIZE, MAX_PAGE, MAX_VALUE_SIZE, Ownership, StateError, StateStore, all_keys};

/// Run the whole suite; panics on the first broken promise.
pub async fn run(store: Arc<dyn StateStore>) {
    namespaces_do_not_see_each_other(&*store).await;
    compare_and_swap_only_swaps_the_expected_value(&*store).await;
    concurrent_compare_and_swap_has_one_winner_per_round(store.clone()).await;
    list_keys_stays_inside_prefix_and_namespace_and_pages(&*store).await;
    oversized_keys_and_values_are_refused(&*store).await;
    usage_counts_the_keys_and_bytes_of_one_namespace(&*store).await;
    owners_are_recorded_listed_and_forgotten(&*store).await;
    store
        .check()
        .await
        .expect("a healthy store passes its check");
}

async fn namespaces_do_not_see_each_other(s: &dyn StateStore) {
    s.set("contract-a", "k", b"1").await.unwrap();
    assert_eq!(
        s.get("contract-a", "k").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(s.get("contract-b", "k").await.unwrap(), None);
    assert!(
        s.list_keys("contract-b", "", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    s.set("contract-a", "k", b"2").await.unwrap();
    assert_eq!(
        s.get("contract-a", "k").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    s.delete("contract-a", "k").await.unwrap();
    s.delete("contract-a", "k").await.unwrap();
    assert_eq!(s.get("contract-a", "k").await.unwrap(), None);
    // An empty value is a value, not an absence.
    s.set("contract-a", "empty", b"").await.unwrap();
    assert_eq!(
        s.get("contract-a", "empty").await.unwrap().as_deref(),
        Some(&b""[..])
    );
    s.delete("contract-a", "empty").await.unwrap();
}

async fn compare_and_swap_only_swaps_the_expected_value(s: &dyn StateStore) {
    let ns = "contract-cas";
    assert!(s.compare_and_swap(ns, "k", None, Some(b"1")).await.unwrap());
    assert!(!s.compare_and_swap(ns, "k", None, Some(b"2")).await.unwrap());
    assert!(
        !s.compare_and_swap(ns, "k", Some(b"9"), Some(b"2"))
            .await
            .unwrap()
    );
    assert!(
        s.compare_and_swap(ns, "k", Some(b"1"), Some(b"2"))
            .await
            .unwrap()
    );
    assert_eq!(s.get(ns, "k").await.unwrap().as_deref(), Some(&b"2"[..]));
    assert!(s.compare_and_swap(ns, "k", Some(b"2"), None).await.unwrap());
    assert_eq!(s.get(ns, "k").await.unwrap(), None);
    // Expecting a value of a missing key fails; expecting absence of a present key fails.
    assert!(
        !s.compare_and_swap(ns, "k", Some(b""), Some(b"x"))
            .await
            .unwrap()
    );
    s.set(ns, "k", b"").await.unwrap();
    assert!(!s.compare_and_swap(ns, "k", None, Some(b"x")).await.unwrap());
    assert!(s.compare_and_swap(ns, "k", Some(b""), None).await.unwrap());
}

async fn concurrent_compare_and_swap_has_one_winner_per_round(s: Arc<dyn StateStore>) {
    let ns = "contract-race";
    for round in 0..4u32 {
        let expected = (round > 0).then(|| (round - 1).to_string().into_bytes());
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (s, expected) = (s.clone(), expected.clone());
                tokio::spawn(async move {
                    s.compare_and_swap(
                        ns,
                        "k",
                        expected.as_deref(),
                        Some(round.to_string().as_bytes()),
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            winners += task.await.unwrap() as usize;
        }
        assert_eq!(winners, 1, "round {round}: {winners} winners");
    }
    s.delete(ns, "k").await.unwrap();
}

async fn list_keys_stays_inside_prefix_and_namespace_and_pages(s: &dyn StateStore) {
    for (ns, k) in [
        ("contract-l", "m/1"),
        ("contract-l", "m/2"),
        ("contract-l", "n/1"),
        ("contract-lb", "m/3"),
        ("contract-l", "m"),
    ] {
        s.set(ns, k, b"x").await.unwrap();
    }
    assert_eq!(
        all_keys(s, "contract-l", "m/").await.unwrap(),
        ["m/1", "m/2"]
    );
    assert_eq!(
        all_keys(s, "contract-l", "").await.unwrap(),
        ["m", "m/1", "m/2", "n/1"]
    );
    assert_eq!(
        s.list_keys("contract-l", "", Some("m/1"), 2).await.unwrap(),
        ["m/2", "n/1"]
    );
    assert_eq!(
        s.list_keys("contract-l", "m/", None, 1).await.unwrap(),
        ["m/1"]
    );
    // Namespaces are listed once each, in order, a page at a time.
    let names = s.namespaces(Some("contract-k"), 100).await.unwrap();
    let ours: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("contract-l"))
        .collect();
    assert_eq!(ours, ["contract-l", "contract-lb"]);
    assert_eq!(
        s.namespaces(Some("contract-l"), 1).await.unwrap(),
        ["contract-lb"]
    );

    // A namespace larger than one page is listed completely, a page at a time.
    let many: Vec<String> = (0..MAX_PAGE + 5).map(|i| format!("p/{i:05}")).collect();
    for k in &many {
        s.set("contract-page", k, b"").await.unwrap();
    }
    assert_eq!(
        s.list_keys("contract-page", "p/", None, usize::MAX)
            .await
            .unwrap()
            .len(),
        MAX_PAGE
    );
    assert_eq!(all_keys(s, "contract-page", "p/").await.unwrap(), many);
    for k in &many {
        s.delete("contract-page", k).await.unwrap();
    }
}

async fn oversized_keys_and_values_are_refused(s: &dyn StateStore) {
    let long = "k".repeat(MAX_KEY_SIZE + 1);
    assert!(matches!(
        s.set("contract-big", &long, b"x").await,
        Err(StateError::TooLarge(_))
    ));
    let big = vec![0u8; MAX_VALUE_SIZE + 1];
    assert!(matches!(
        s.set("contract-big", "k", &big).await,
        Err(StateError::TooLarge(_))
    ));
    assert!(matches!(
        s.compare_and_swap("contract-big", "k", None, Some(&big))
            .await,
        Err(StateError::TooLarge(_))
    ));
    assert_eq!(s.get("contract-big", "k").await.unwrap(), None);
    // The largest allowed value round-trips.
    let largest = vec![7u8; MAX_VALUE_SIZE];
    s.set("contract-big", "k", &largest).await.unwrap();
    assert_eq!(s.get("contract-big", "k").await.unwrap(), Some(largest));
    s.delete("contract-big", "k").await.unwrap();
}

async fn usage_counts_the_keys_and_bytes_of_one_namespace(s: &dyn StateStore) {
    let ns = "contract-usage";
    assert_eq!(s.usage(ns).await.unwrap(), (0, 0));
    // Large values among small ones, and more keys than one page of any listing: the scan's
    // pages (bounded in bytes on etcd) add up to the right totals.
    let mut expected = (0u64, 0u64);
    for i in 0..(MAX_PAGE + 5) {
        let key = format!("k{i:05}");
        let value = if i % 250 == 7 {
            vec![b'x'; MAX_VALUE_SIZE]
        } else {
            vec![b'y'; i % 13]
        };
        s.set(ns, &key, &value).await.unwrap();
        expected.0 += 1;
        expected.1 += (key.len() + value.len()) as u64;
    }
    s.set("contract-usage-other", "k", b"not counted")
        .await
        .unwrap();
    s.set("contract-usag", "k", b"not counted").await.unwrap();
    assert_eq!(s.usage(ns).await.unwrap(), expected);
    s.delete(ns, "k00007").await.unwrap();
    assert_eq!(
        s.usage(ns).await.unwrap(),
        (expected.0 - 1, expected.1 - 6 - MAX_VALUE_SIZE as u64)
    );
}

async fn owners_are_recorded_listed_and_forgotten(s: &dyn StateStore) {
    let owner = |c: &str, n: &str, b: &str| Ownership {
        cluster_id: c.into(),
        node_id: n.into(),
        backend: b.into(),
    };
    // IDs with separators and odd characters stay apart.
    let records = [
        owner("contract-c1", "n/1", "a"),
        owner("contract-c1", "n 2", "a"),
        owner("contract-c1/n", "1", "b"),
        owner("contract-c2", "%2F", "b"),
    ];
    s.record_owners(&records).await.unwrap();
    for r in &records {
        assert_eq!(
            s.owner(&r.cluster_id, &r.node_id).await.unwrap().as_deref(),
            Some(r.backend.as_str()),
            "{r:?}"
        );
    }
    assert_eq!(s.owner("contract-c1", "n").await.unwrap(), None);
    s.record_owners(&[owner("contract-c1", "n/1", "b")])
        .await
        .unwrap();
    assert_eq!(
        s.owner("contract-c1", "n/1").await.unwrap().as_deref(),
        Some("b")
    );

    let listed: Vec<Ownership> = s
        .owners(Some(("contract-c0", "")), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.cluster_id.starts_with("contract-c"))
        .collect();
    assert_eq!(listed.len(), 4, "{listed:?}");
    let first_two = s.owners(Some(("contract-c0", "")), 2).await.unwrap();
    let next = s
        .owners(Some((&first_two[1].cluster_id, &first_two[1].node_id)), 100)
        .await
        .unwrap();
    assert!(
        !next.contains(&first_two[0]) && !next.contains(&first_two[1]),
        "pages overlap: {first_two:?} then {next:?}"
    );
    for r in &records {
        s.forget_owner(&r.cluster_id, &r.node_id).await.unwrap();
        assert_eq!(s.owner(&r.cluster_id, &r.node_id).await.unwrap(), None);
    }
}
