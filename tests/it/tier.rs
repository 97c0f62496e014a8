//! The in-process tier in front of Redis: hits it serves never reach Redis,
//! it stays coherent across instances through Redis client tracking, and it
//! is emptied when the tracking connection drops.
//!
//! Store: Redis with the tier, except `without_the_tier_*` (Redis alone,
//! `[tier] enabled = false`).

use crate::common::*;

const PATH: &str = "/api/v1/tasks/1";

fn tier_config(backend: &Backend, redis: &RedisServer, tier: bool) -> String {
    let text = render(&std_config(), Kind::Redis, &backend.url(), Some(&redis.url()));
    format!("{text}\n[tier]\nenabled = {tier}\n")
}

/// Reads until the tier has the entry: a hit that sends Redis no command.
async fn warm_tier(client: &Client, redis: &RedisServer) {
    eventually("the tier serves the entry", PATIENCE, || async {
        let before = redis.command_calls("hget").await;
        let r = client.get(PATH).await;
        let after = redis.command_calls("hget").await;
        r.x_cache() == Some("HIT") && after == before
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_hits_never_reach_redis() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let proxy = Proxy::start(&tier_config(&backend, &redis, true)).await;
    let client = Client::new(proxy.addr);
    assert_eq!(client.get(PATH).await.x_cache(), Some("MISS"));
    warm_tier(&client, &redis).await;
    let lookups = redis.command_calls("hget").await;
    for _ in 0..50 {
        assert_eq!(client.get(PATH).await.x_cache(), Some("HIT"));
    }
    assert_eq!(
        redis.command_calls("hget").await,
        lookups,
        "50 tier hits, no Redis lookup"
    );
    assert_eq!(backend.count("GET", PATH), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_tier_every_hit_reads_redis() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let proxy = Proxy::start(&tier_config(&backend, &redis, false)).await;
    let client = Client::new(proxy.addr);
    client.get(PATH).await;
    let lookups = redis.command_calls("hget").await;
    for _ in 0..5 {
        assert_eq!(client.get(PATH).await.x_cache(), Some("HIT"));
    }
    assert_eq!(redis.command_calls("hget").await, lookups + 5);
}

/// A write through instance A, an admin purge on A, and a write by another
/// Redis client all reach instance B's tier: B stops serving the old entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_on_another_instance_drop_the_entry_from_the_tier() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let text = tier_config(&backend, &redis, true);
    let a = Proxy::start(&text).await;
    let b = Proxy::start(&text).await;
    let (ca, cb) = (Client::new(a.addr), Client::new(b.addr));

    cb.get(PATH).await;
    warm_tier(&cb, &redis).await;
    let old = cb.get(PATH).await.json()["version"].clone();

    assert_eq!(ca.put(PATH).await.status, 200);
    eventually("B serves the new version", PATIENCE, || async {
        cb.get(PATH).await.json()["version"] != old
    })
    .await;
    let new = cb.get(PATH).await.json()["version"].clone();
    assert_ne!(new, old);

    // Another program deleting the key also reaches the tier: B's next
    // misses go to the backend again (before the DEL, its reads are tier
    // hits that reach neither Redis nor the backend).
    warm_tier(&cb, &redis).await;
    let fetched = backend.count("GET", PATH);
    assert_eq!(cb.get(PATH).await.x_cache(), Some("HIT"));
    assert_eq!(backend.count("GET", PATH), fetched, "a tier hit fetches nothing");
    let _: i64 = redis.cmd(&["DEL", "task:1"]).await;
    eventually("B fetches again after a foreign DEL", PATIENCE, || async {
        cb.get(PATH).await;
        backend.count("GET", PATH) > fetched
    })
    .await;
}

/// The instance that takes a write never serves the old entry from its
/// tier afterwards, without waiting for Redis's push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writing_instance_reads_its_own_write_at_once() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let proxy = Proxy::start(&tier_config(&backend, &redis, true)).await;
    let client = Client::new(proxy.addr);
    for round in 0..20 {
        client.get(PATH).await;
        warm_tier(&client, &redis).await;
        let before = client.get(PATH).await.json()["version"].as_u64().unwrap();
        assert_eq!(client.put(PATH).await.status, 200);
        let after = client.get(PATH).await.json()["version"].as_u64().unwrap();
        assert!(
            after > before,
            "round {round}: read {after} after writing past {before}"
        );
    }
}

/// Tracking lost: the tier is emptied and not used until tracking is back,
/// so an entry purged meanwhile is never served from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tracking_connection_empties_the_tier() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let proxy = Proxy::start(&tier_config(&backend, &redis, true)).await;
    let client = Client::new(proxy.addr);
    client.get(PATH).await;
    warm_tier(&client, &redis).await;

    redis.kill();
    eventually("the tier stops serving once Redis is gone", PATIENCE, || async {
        client.get(PATH).await.x_cache() == Some("BYPASS")
    })
    .await;
    // Redis comes back empty (it keeps nothing on disk): the old entry must
    // not come back from the tier.
    redis.restart();
    let gets_before = backend.count("GET", PATH);
    eventually("caching resumes", PATIENCE, || async {
        client.get(PATH).await.x_cache() == Some("HIT")
    })
    .await;
    assert!(
        backend.count("GET", PATH) > gets_before,
        "after the restart the entry was fetched again, not served from the old tier"
    );
}
