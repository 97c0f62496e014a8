//! One store contract, every store: the memory store, Redis without the
//! in-process tier, Redis with it, and a Redis Cluster (3 primaries) must
//! all keep the same promises to the gateway: a fill stores only under the
//! guard read before it (key, pattern, tag and scope purges and clears in
//! between refuse it), a soft purge (by key, pattern or tag) keeps the
//! entry but stale and findable, tags purge what they index and nothing
//! else, a scope purge removes one credential's entries and no other's,
//! records and key listings leave internal fields, internal keys and
//! tombstones out, no purge touches internal keys, `clear` removes only
//! what cachegate wrote, and counters sum over instances.

mod common;

use bytes::Bytes;
use cachegate::store::entry::{now_ms, Entry, Lifetime};
use cachegate::store::memory::MemoryStore;
use cachegate::store::{EntryFill, Store};
use common::topology::RedisCluster;
use common::*;
use redis::AsyncCommands;
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
        s.fill(EntryFill::new(&k("a"), "anon", entry("a1"), HOUR, miss.guard))
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
        !s.fill(EntryFill::new(&k("b"), "anon", entry("old"), HOUR, miss.guard))
            .await
            .unwrap(),
        "[{label}] a fill from before a key purge must not store"
    );
    assert!(s.lookup(&k("b"), "anon").await.unwrap().entry.is_none(), "[{label}]");

    // A purge of a held key removes every field.
    let miss = s.lookup(&k("c"), "anon").await.unwrap();
    assert!(s
        .fill(EntryFill::new(&k("c"), "anon", entry("c"), HOUR, miss.guard))
        .await
        .unwrap());
    let miss = s.lookup(&k("c"), "scope1").await.unwrap();
    assert!(s
        .fill(EntryFill::new(&k("c"), "scope1", entry("c1"), HOUR, miss.guard))
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
        !s.fill(EntryFill::new(&k("d"), "anon", entry("old"), HOUR, miss.guard))
            .await
            .unwrap(),
        "[{label}] a fill from before a pattern purge must not store"
    );

    // A pattern purge removes what it matches, and only that.
    for n in ["p1", "p2", "q1"] {
        let miss = s.lookup(&k(n), "anon").await.unwrap();
        assert!(s
            .fill(EntryFill::new(&k(n), "anon", entry(n), HOUR, miss.guard))
            .await
            .unwrap());
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
        assert!(s
            .fill(EntryFill::new(&k(n), "anon", entry(n), HOUR, miss.guard).tagged(&tags))
            .await
            .unwrap());
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
        !s.fill(EntryFill::new(&k("t3"), "anon", entry("old"), HOUR, miss.guard).tagged(&tags))
            .await
            .unwrap(),
        "[{label}] a fill from before a tag purge must not store"
    );

    // A soft purge keeps the entry, stale; a guard read before it no longer
    // lets a fill store.
    let miss = s.lookup(&k("s"), "anon").await.unwrap();
    assert!(s
        .fill(EntryFill::new(&k("s"), "anon", entry("s1"), HOUR, miss.guard))
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
        !s.fill(EntryFill::new(&k("s"), "anon", entry("old"), HOUR, before))
            .await
            .unwrap(),
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

/// Two credential scopes (32 hex digits, as the gateway renders them).
const SCOPE_A: &str = "0123456789abcdef0123456789abcdef";
const SCOPE_B: &str = "fedcba9876543210fedcba9876543210";

/// Stores `body` under a fresh guard; the fill must store.
async fn put(s: &dyn Store, key: &str, field: &str, body: &str, tags: &[&str]) {
    let guard = s.lookup(key, field).await.unwrap().guard;
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    assert!(
        s.fill(EntryFill::new(key, field, entry(body), HOUR, guard).tagged(&tags))
            .await
            .unwrap(),
        "fill {key}/{field}"
    );
}

/// Whether `field` of `key` holds an entry, and whether it is fresh.
async fn held(s: &dyn Store, key: &str, field: &str) -> Option<bool> {
    let raw = s.lookup(key, field).await.unwrap().entry;
    raw.as_ref().and_then(Entry::decode).map(|e| e.is_fresh(now_ms()))
}

/// The Redis behind a store, for keys cachegate did not write.
enum Raw<'a> {
    Server(&'a RedisServer),
    Cluster(&'a RedisCluster),
}

impl Raw<'_> {
    async fn set(&self, key: &str) {
        match self {
            Raw::Server(redis) => redis.cmd::<()>(&["SET", key, "foreign"]).await,
            Raw::Cluster(cluster) => cluster.conn().await.set::<_, _, ()>(key, "foreign").await.unwrap(),
        }
    }

    async fn exists(&self, key: &str) -> bool {
        match self {
            Raw::Server(redis) => redis.exists(key).await,
            Raw::Cluster(cluster) => cluster.conn().await.exists::<_, bool>(key).await.unwrap(),
        }
    }
}

/// The promises past the basics, on keys of their own (`more:`), run after
/// [`contract`] on the same store.
async fn more_promises(store: Arc<dyn Store>, label: &str, raw: Option<Raw<'_>>) {
    let s = store.as_ref();
    let m = |n: &str| format!("more:{n}");

    // Guards: a clear or a scope purge in between refuses a fill (both move
    // the epoch); a guard read afterwards stores.
    let guard = s.fill_guard(&m("g")).await.unwrap();
    s.clear(Some(&m("nothing*"))).await.unwrap();
    assert!(
        !s.fill(EntryFill::new(&m("g"), "anon", entry("old"), HOUR, guard))
            .await
            .unwrap(),
        "[{label}] a fill from before a clear must not store"
    );
    let guard = s.fill_guard(&m("g")).await.unwrap();
    s.purge_scope(SCOPE_B).await.unwrap();
    assert!(
        !s.fill(EntryFill::new(&m("g"), "anon", entry("old"), HOUR, guard))
            .await
            .unwrap(),
        "[{label}] a fill from before a scope purge must not store"
    );
    let guard = s.fill_guard(&m("g")).await.unwrap();
    assert!(
        s.fill(EntryFill::new(&m("g"), "anon", entry("g"), HOUR, guard))
            .await
            .unwrap(),
        "[{label}] a fresh guard stores"
    );

    // Soft tag purges keep the entries, stale, and still indexed: a hard
    // purge of the tag then finds them. A guard from before refuses.
    for n in ["st1", "st2"] {
        put(s, &m(n), "anon", n, &["soft"]).await;
    }
    let before = s.fill_guard(&m("st1")).await.unwrap();
    assert_eq!(s.purge_tags(&["soft".into()], true).await.unwrap(), 2, "[{label}]");
    for n in ["st1", "st2"] {
        assert_eq!(held(s, &m(n), "anon").await, Some(false), "[{label}] {n} kept, stale");
    }
    assert!(
        !s.fill(EntryFill::new(&m("st1"), "anon", entry("old"), HOUR, before))
            .await
            .unwrap(),
        "[{label}] a fill from before a soft tag purge must not store"
    );
    assert_eq!(
        s.purge_tags(&["soft".into()], false).await.unwrap(),
        2,
        "[{label}] still indexed after a soft purge"
    );
    assert_eq!(held(s, &m("st1"), "anon").await, None, "[{label}]");

    // A soft pattern purge, likewise.
    put(s, &m("sp1"), "anon", "sp1", &[]).await;
    assert_eq!(s.purge_pattern(&m("sp*"), true).await.unwrap(), 1, "[{label}]");
    assert_eq!(held(s, &m("sp1"), "anon").await, Some(false), "[{label}] kept, stale");

    // A key under two purged tags is purged, and counted, once.
    put(s, &m("two"), "anon", "two", &["x", "y"]).await;
    assert_eq!(
        s.purge_tags(&["x".into(), "y".into()], false).await.unwrap(),
        1,
        "[{label}]"
    );
    assert_eq!(held(s, &m("two"), "anon").await, None, "[{label}]");

    // A scope purge removes one credential's entries (and its variants),
    // and no other scope's.
    let variant = format!("{SCOPE_A}#v1");
    for field in [SCOPE_A, variant.as_str(), SCOPE_B, "anon"] {
        put(s, &m("sc"), field, field, &[]).await;
    }
    let inflight = s.lookup(&m("sc"), SCOPE_A).await.unwrap().guard;
    assert_eq!(s.purge_scope(SCOPE_A).await.unwrap(), 1, "[{label}] scope count");
    assert_eq!(held(s, &m("sc"), SCOPE_A).await, None, "[{label}]");
    assert_eq!(held(s, &m("sc"), &variant).await, None, "[{label}] its variant");
    assert_eq!(held(s, &m("sc"), SCOPE_B).await, Some(true), "[{label}] another scope");
    assert_eq!(held(s, &m("sc"), "anon").await, Some(true), "[{label}] anon");
    assert!(
        !s.fill(EntryFill::new(&m("sc"), SCOPE_A, entry("old"), HOUR, inflight))
            .await
            .unwrap(),
        "[{label}] a fill from before a scope purge must not store"
    );

    // A record shows entry fields only (no generation, mark, incarnation).
    let record = s.record(&m("sc")).await.unwrap().expect("a record");
    let mut fields: Vec<&str> = record.fields.iter().map(|(f, _)| f.as_str()).collect();
    fields.sort();
    assert_eq!(fields, vec!["anon", SCOPE_B], "[{label}] record fields");
    assert!(record.ttl.is_some_and(|t| t <= HOUR), "[{label}] {:?}", record.ttl);

    // Listings of everything: this test's records only, never the epoch,
    // tag or scope indexes, counters or locks; the first ones in order.
    let listed = vec![m("g"), m("sc"), m("sp1")];
    assert_eq!(s.scan_keys("*", 100).await.unwrap(), (3, listed), "[{label}] listing");
    assert_eq!(
        s.scan_keys("*", 1).await.unwrap(),
        (3, vec![m("g")]),
        "[{label}] the first"
    );

    // No purge touches internal keys: a hard purge of everything leaves the
    // counters (and the epoch: a guard from before still refuses).
    let before = s.fill_guard(&m("after")).await.unwrap();
    // (Tombstones count too, as the keys they are.)
    let purged = s.purge_pattern("*", false).await.unwrap();
    assert!(purged >= 3, "[{label}] purge all: {purged}");
    let hits = s.counters().await.unwrap().into_iter().find(|(n, _)| n == "hits");
    assert_eq!(hits.map(|(_, v)| v), Some(7), "[{label}] counters survive");
    assert!(
        !s.fill(EntryFill::new(&m("after"), "anon", entry("old"), HOUR, before))
            .await
            .unwrap(),
        "[{label}] the epoch survives"
    );
    assert_eq!(s.scan_keys("*", 100).await.unwrap().0, 0, "[{label}]");

    // Clear removes what cachegate wrote, and leaves other keys alone.
    put(s, &m("c"), "anon", "c", &[]).await;
    if let Some(raw) = &raw {
        raw.set(&m("foreign")).await;
    }
    assert_eq!(s.clear(None).await.unwrap(), 1, "[{label}] clear count");
    assert_eq!(held(s, &m("c"), "anon").await, None, "[{label}]");
    if let Some(raw) = &raw {
        assert!(
            raw.exists(&m("foreign")).await,
            "[{label}] a foreign key survives clear"
        );
    }
    println!("[{label}] the promises past the basics hold");
}

fn redis_config(url: &str, tier: bool) -> String {
    format!(
        "[backend]\nurl = \"http://127.0.0.1:9\"\n\n[store]\nkind = \"redis\"\ntimeout_ms = 2000\n\n[redis]\nurl = \"{url}\"\n\n[tier]\nenabled = {tier}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_keeps_the_contract() {
    let store = Arc::new(MemoryStore::new(10_000, 64 << 20, Duration::from_secs(60), None));
    contract(store.clone(), "memory").await;
    more_promises(store, "memory", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_without_the_tier_keeps_the_contract() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis_config(&redis.url(), false)).await;
    let store = proxy.gateway().store().clone();
    assert!(store.peek("x", "y").is_none());
    contract(store.clone(), "redis").await;
    more_promises(store, "redis", Some(Raw::Server(&redis))).await;
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
    more_promises(
        proxy.gateway().store().clone(),
        "redis + tier",
        Some(Raw::Server(&redis)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_the_contract() {
    let cluster = RedisCluster::start();
    let proxy = Proxy::start(&redis_config(&cluster.url(), true)).await;
    assert!(!proxy.gateway().config().tier_in_use(), "no tier on a cluster");
    contract(proxy.gateway().store().clone(), "cluster").await;
    more_promises(proxy.gateway().store().clone(), "cluster", Some(Raw::Cluster(&cluster))).await;
}
