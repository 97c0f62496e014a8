//! A randomized history check of read-your-writes through the proxy: 32
//! concurrent clients GET and PUT (about 4:1) 16 ids, 20,000+ operations in
//! all, against a backend whose per-id version grows by one on every PUT
//! (the harness and the checker are in `history/mod.rs`).
//!
//! A cache that stored a body fetched before a write's purge (a fill not
//! refused by its guard), shared such a body with a waiter, or purged after
//! answering the write would break it.
//!
//! Runs: one instance on Redis with the tier; one instance on the memory
//! store; two instances sharing one Redis without the tier, with the
//! clients spread over both (the tier across instances, with faults, is
//! `fleet_history.rs`); two instances on a Redis Cluster (the tier is off
//! on a cluster).

use crate::common::{Proxy, RedisServer};
use crate::history::{check, config, report, run_history, Kind, Progress, Routing, VersionedBackend};
use std::sync::atomic::Ordering;

const CLIENTS: usize = 32;
const MIN_OPS: usize = 20_000;

/// The store sections. The store timeout is generous: a purge that timed
/// out would be fail-open by design (and a violation here), which is not
/// what this test is about.
fn store(redis: Option<&RedisServer>, tier: bool) -> String {
    match redis {
        Some(r) => format!(
            "[store]\nkind = \"redis\"\ntimeout_ms = 3000\n\n[redis]\nurl = \"{}\"\npool_size = 8\n\n[tier]\nenabled = {tier}\n",
            r.url()
        ),
        None => "[store]\nkind = \"memory\"\n".to_string(),
    }
}

/// Runs the history and checks it. `min_hits` is the share of GETs the
/// cache must have served: a history with few hits tests the backend, not
/// the cache.
async fn history(label: &str, proxies: &[&Proxy], backend: &VersionedBackend, min_hits: f64) {
    let addrs: Vec<_> = proxies.iter().map(|p| p.addr).collect();
    let (ops, took) = run_history(&addrs, Routing::ByClient, CLIENTS, Progress::new(MIN_OPS)).await;
    assert!(ops.len() >= MIN_OPS);
    let violations = check(&ops);
    report(label, &ops, took, backend, &violations);
    let hits = ops.iter().filter(|o| o.x_cache == "HIT").count();
    let gets = ops.iter().filter(|o| o.kind == Kind::Get).count();
    assert!(
        hits as f64 >= min_hits * gets as f64,
        "[{label}] the cache served {hits} of {gets} GETs, under {:.0} %: the history proves little",
        min_hits * 100.0
    );
    assert_eq!(
        backend.state.puts.load(Ordering::SeqCst) as usize,
        ops.iter().filter(|o| o.kind == Kind::Put).count(),
        "every PUT reached the backend once"
    );
    assert!(
        violations.is_empty(),
        "[{label}] {} GETs read a version older than a PUT that had already been answered \
         (first: {:?})",
        violations.len(),
        violations.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_redis_with_the_tier() {
    let backend = VersionedBackend::start().await;
    let redis = RedisServer::start();
    let proxy = Proxy::start(&config(&backend, &store(Some(&redis), true))).await;
    history("one instance, redis", &[&proxy], &backend, 0.5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_memory_store() {
    let backend = VersionedBackend::start().await;
    let proxy = Proxy::start(&config(&backend, &store(None, false))).await;
    history("one instance, memory", &[&proxy], &backend, 0.5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_one_redis_without_the_tier() {
    let backend = VersionedBackend::start().await;
    let redis = RedisServer::start();
    let text = config(&backend, &store(Some(&redis), false));
    let a = Proxy::start(&text).await;
    let b = Proxy::start(&text).await;
    history("two instances, one redis", &[&a, &b], &backend, 0.5).await;
}

#[test]
fn the_checker_catches_a_stale_read() {
    crate::history::checker_self_test();
}

/// Two instances on a Redis Cluster (3 primaries), where a fill reserves,
/// indexes its tag, checks the epoch and commits in four steps; writes
/// purge by key, by tag and by pattern, so tag and pattern purges (which
/// bump the epoch, then walk) race those steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_one_cluster_with_tag_and_pattern_purges() {
    let backend = VersionedBackend::start().await;
    let cluster = crate::common::topology::RedisCluster::start();
    let store = format!(
        "[store]\nkind = \"redis\"\ntimeout_ms = 3000\n\n[redis]\nurl = \"{}\"\npool_size = 8\n",
        cluster.url()
    );
    let text = config(&backend, &store)
        .replace("statuses = [200]\n", "statuses = [200]\ntags = [\"task:{task_id}\"]\n")
        .replace(
            "keys = [\"task:{task_id}\"]\n",
            "keys = [\"task:{task_id}\"]\ntags = [\"task:{task_id}\"]\npatterns = [\"task:{task_id}\"]\n",
        );
    assert!(text.contains("patterns = ["), "{text}");
    let a = Proxy::start(&text).await;
    let b = Proxy::start(&text).await;
    // Every write's pattern purge moves the epoch, which refuses the fills
    // in flight: few GETs are hits here (about 3 %), still hundreds.
    history(
        "two instances, one cluster, tag and pattern purges",
        &[&a, &b],
        &backend,
        0.01,
    )
    .await;
}
