//! cachegate on a Sentinel-managed primary and replica (spawned here, one
//! Sentinel, quorum 1): the cache-behaviour suite, and the primary killed
//! under steady requests: every request succeeds (fail open), and caching
//! resumes on the promoted replica.

mod common;

use common::topology::RedisSentinel;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_suite_on_sentinel() {
    let s = RedisSentinel::start();
    common::suite::run_all(&format!("url = \"{}\"\ndb = 0", s.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_fails_open_and_caching_resumes() {
    let s = RedisSentinel::start();
    let e = common::suite::Env::start(&format!("url = \"{}\"\ndb = 0", s.url()), "failover:").await;
    let paths: Vec<String> = (0..8).map(|i| format!("/api/v1/tasks/f{i}")).collect();
    for p in &paths {
        e.client.get(p).await;
        e.until_hit(p).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (client, stop, ok, failed, paths) = (
            e.client.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            paths.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                match client
                    .try_send("GET", &paths[i % paths.len()], Vec::new(), empty())
                    .await
                {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    eventually("some requests before the kill", Duration::from_secs(10), || async {
        ok.load(Ordering::Relaxed) > 50
    })
    .await;

    let victim = s.kill_primary();
    s.wait_failover(victim).await;
    let at_failover = ok.load(Ordering::Relaxed);
    eventually("requests after the failover", Duration::from_secs(20), || async {
        ok.load(Ordering::Relaxed) > at_failover + 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "every request succeeds (fail open)");

    // Caching resumes on the new primary: hits that never reach the
    // backend, and the records there, as an independent client sees.
    eventually(
        "the store to be up on the new primary",
        Duration::from_secs(30),
        || async { e.proxy.gateway().store().is_up() },
    )
    .await;
    let fresh = "/api/v1/tasks/after-failover";
    assert_eq!(e.client.get(fresh).await.x_cache(), Some("MISS"));
    e.until_hit(fresh).await;
    for p in &paths {
        e.until_hit(p).await;
    }
    let backend_before = e.backend.total();
    for p in &paths {
        assert_eq!(e.client.get(p).await.x_cache(), Some("HIT"));
    }
    assert_eq!(e.backend.total(), backend_before, "hits never reach the backend");
    assert_eq!(e.backend.count("GET", fresh), 1);
    let mut conn = s.conn().await;
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg("failover:task:after-failover")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        fields.iter().any(|f| !f.starts_with("__")),
        "the entry is on the promoted primary: {fields:?}"
    );
}
