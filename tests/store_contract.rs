//! One store contract, every store: the memory store, Redis without the
//! in-process tier, Redis with it, and a Redis Cluster (3 primaries) must
//! all keep the same promises to the gateway: a fill stores only under the
//! guard read before it (key purges, pattern and tag purges in between
//! refuse it), a soft purge keeps the entry but stale, tags purge what they
//! index and nothing else, key listings leave internal keys and tombstones
//! out, `clear` removes only what cachegate wrote, and counters sum over
//! instances.

mod common;

use bytes::Bytes;
use cachegate::store::entry::{now_ms, Entry, Lifetime};
use cachegate::store::memory::MemoryStore;
use cachegate::store::Store;
use common::topology::RedisCluster;
use common::*;
use std::sync::Arc;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

fn entry(body: &str) -> Bytes {
    let lifetime = Lifetime {
        ttl: HOUR,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        must_revalidate: false,
    };
    Entry::encode(
        http::StatusCode::OK,
        &http::HeaderMap::new(),
        body.as_bytes(),
        now_ms(),
        &lifetime,
    )
}

fn body_of(raw: &Option<Bytes>) -> Option<String> {
    raw.as_ref()
        .and_then(Entry::decode)
        .map(|e| String::from_utf8_lossy(&e.body).into_owned())
}

/// Every promise, in turn, against one store (keys under `p`).
async fn contract(store: Arc<dyn Store>, label: &str) {
    let s = store.as_ref();
    let k = |n: &str| format!("contract:{n}");

    // A fill under a fresh guard stores; a lookup then hits.
    let miss = s.lookup(&k("a"), "anon").await.unwrap();
    assert!(miss.entry.is_none(), "[{label}] cold");
    assert!(
        s.fill(&k("a"), "anon", entry("a1"), HOUR, miss.guard, &[])
            .await
            .unwrap(),
        "[{label}] fill"
    );
    let hit = s.lookup(&k("a"), "anon").await.unwrap();
    assert_eq!(body_of(&hit.entry).as_deref(), Some("a1"), "[{label}] hit");

    // A key purge between the guard and the fill refuses the fill.
    let miss = s.lookup(&k("b"), "anon").await.unwrap();
    assert_eq!(
        s.purge_keys(&[k("b")], false).await.unwrap(),
        0,
        "[{label}] nothing held"
    );
    assert!(
        !s.fill(&k("b"), "anon", entry("old"), HOUR, miss.guard, &[])
            .await
            .unwrap(),
        "[{label}] a fill from before a key purge must not store"
    );
    assert!(s.lookup(&k("b"), "anon").await.unwrap().entry.is_none(), "[{label}]");

    // A purge of a held key removes every field.
    let miss = s.lookup(&k("c"), "anon").await.unwrap();
    assert!(s
        .fill(&k("c"), "anon", entry("c"), HOUR, miss.guard, &[])
        .await
        .unwrap());
    let miss = s.lookup(&k("c"), "scope1").await.unwrap();
    assert!(s
        .fill(&k("c"), "scope1", entry("c1"), HOUR, miss.guard, &[])
        .await
        .unwrap());
    assert_eq!(
        s.purge_keys(&[k("c")], false).await.unwrap(),
        1,
        "[{label}] one record held entries"
    );
    for field in ["anon", "scope1"] {
        assert!(
            s.lookup(&k("c"), field).await.unwrap().entry.is_none(),
            "[{label}] {field} purged"
        );
    }

    // A pattern purge between the guard and the fill refuses it (the
    // epoch), even for a key the pattern does not name.
    let miss = s.lookup(&k("d"), "anon").await.unwrap();
    s.purge_pattern("unrelated:*", false).await.unwrap();
    assert!(
        !s.fill(&k("d"), "anon", entry("old"), HOUR, miss.guard, &[])
            .await
            .unwrap(),
        "[{label}] a fill from before a pattern purge must not store"
    );

    // A pattern purge removes what it matches, and only that.
    for n in ["p1", "p2", "q1"] {
        let miss = s.lookup(&k(n), "anon").await.unwrap();
        assert!(s.fill(&k(n), "anon", entry(n), HOUR, miss.guard, &[]).await.unwrap());
    }
    assert_eq!(
        s.purge_pattern(&k("p*"), false).await.unwrap(),
        2,
        "[{label}] pattern count"
    );
    assert!(s.lookup(&k("p1"), "anon").await.unwrap().entry.is_none());
    assert!(
        s.lookup(&k("q1"), "anon").await.unwrap().entry.is_some(),
        "[{label}] q1 stays"
    );

    // Tags: a tag purge removes what the tag indexes, and refuses a fill in
    // flight (it may be about to index its key).
    let tags = vec!["group:1".to_string()];
    for n in ["t1", "t2"] {
        let miss = s.lookup(&k(n), "anon").await.unwrap();
        assert!(s.fill(&k(n), "anon", entry(n), HOUR, miss.guard, &tags).await.unwrap());
    }
    let miss = s.lookup(&k("t3"), "anon").await.unwrap();
    assert_eq!(s.purge_tags(&tags, false).await.unwrap(), 2, "[{label}] tag count");
    assert!(
        s.lookup(&k("t1"), "anon").await.unwrap().entry.is_none(),
        "[{label}] t1 purged"
    );
    assert!(
        s.lookup(&k("q1"), "anon").await.unwrap().entry.is_some(),
        "[{label}] untagged stays"
    );
    assert!(
        !s.fill(&k("t3"), "anon", entry("old"), HOUR, miss.guard, &tags)
            .await
            .unwrap(),
        "[{label}] a fill from before a tag purge must not store"
    );

    // A soft purge keeps the entry, stale; a guard read before it no longer
    // lets a fill store.
    let miss = s.lookup(&k("s"), "anon").await.unwrap();
    assert!(s
        .fill(&k("s"), "anon", entry("s1"), HOUR, miss.guard, &[])
        .await
        .unwrap());
    let before = s.fill_guard(&k("s")).await.unwrap();
    assert_eq!(
        s.purge_keys(&[k("s")], true).await.unwrap(),
        1,
        "[{label}] soft purge count"
    );
    let soft = s.lookup(&k("s"), "anon").await.unwrap().entry;
    let decoded = soft.as_ref().and_then(Entry::decode).expect("the entry stays");
    assert!(!decoded.is_fresh(now_ms()), "[{label}] but stale");
    assert!(
        !s.fill(&k("s"), "anon", entry("old"), HOUR, before, &[]).await.unwrap(),
        "[{label}] a fill from before a soft purge must not store"
    );

    // Listings: what holds entries, no tombstones, no internal keys.
    let (count, keys) = s.scan_keys(&k("*"), 100).await.unwrap();
    let mut keys = keys;
    keys.sort();
    let expected: Vec<String> = ["a", "q1", "s"].iter().map(|n| k(n)).collect();
    assert_eq!(keys, expected, "[{label}] listing");
    assert_eq!(count, 3, "[{label}]");
    assert!(
        s.record(&k("b")).await.unwrap().is_none(),
        "[{label}] a tombstone is no record"
    );

    // Counters sum over instances (totals, so a re-publish never doubles).
    s.publish_counters("one", &[("hits".into(), 3)]).await.unwrap();
    s.publish_counters("two", &[("hits".into(), 4)]).await.unwrap();
    s.publish_counters("two", &[("hits".into(), 4)]).await.unwrap();
    let counters = s.counters().await.unwrap();
    let hits = counters.iter().find(|(n, _)| n == "hits").map(|(_, v)| *v);
    assert_eq!(hits, Some(7), "[{label}] {counters:?}");

    // Clear removes what cachegate wrote.
    let cleared = s.clear(Some(&k("*"))).await.unwrap();
    assert_eq!(cleared, 3, "[{label}] cleared");
    assert_eq!(s.scan_keys(&k("*"), 100).await.unwrap().0, 0, "[{label}]");
    println!("[{label}] the store contract holds");
}

fn redis_config(url: &str, tier: bool) -> String {
    format!(
        "[backend]\nurl = \"http://127.0.0.1:9\"\n\n[store]\nkind = \"redis\"\ntimeout_ms = 2000\n\n[redis]\nurl = \"{url}\"\n\n[tier]\nenabled = {tier}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_keeps_the_contract() {
    let store = Arc::new(MemoryStore::new(10_000, 64 << 20, Duration::from_secs(60), None));
    contract(store, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_without_the_tier_keeps_the_contract() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis_config(&redis.url(), false)).await;
    let store = proxy.gateway().store().clone();
    assert!(store.peek("x", "y").is_none());
    contract(store, "redis").await;
    // Clear leaves keys cachegate did not write alone.
    let _: () = redis.cmd(&["SET", "contract:foreign", "1"]).await;
    proxy.gateway().store().clear(None).await.unwrap();
    assert!(redis.exists("contract:foreign").await, "a foreign key survives clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_the_tier_keeps_the_contract() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis_config(&redis.url(), true)).await;
    assert!(proxy.gateway().config().tier_in_use(), "the tier is on");
    contract(proxy.gateway().store().clone(), "redis + tier").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_the_contract() {
    let cluster = RedisCluster::start();
    let proxy = Proxy::start(&redis_config(&cluster.url(), true)).await;
    assert!(!proxy.gateway().config().tier_in_use(), "no tier on a cluster");
    contract(proxy.gateway().store().clone(), "cluster").await;
}
