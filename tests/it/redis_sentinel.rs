//! cachegate on a Sentinel-managed primary and replica (spawned here, one
//! Sentinel, quorum 1): the cache-behaviour suite, and the primary killed
//! under steady requests: every request succeeds (fail open), and caching
//! resumes on the promoted replica.

use crate::common::topology::RedisSentinel;
use crate::common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_suite_on_sentinel() {
    let s = RedisSentinel::start();
    crate::common::suite::run_all(&format!("url = \"{}\"\ndb = 0", s.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_fails_open_and_caching_resumes() {
    let s = RedisSentinel::start();
    let e = crate::common::suite::Env::start(&format!("url = \"{}\"\ndb = 0", s.url()), "failover:").await;
    let paths = crate::common::suite::fail_over_under_load(&e, 8, async {
        let victim = s.kill_primary();
        s.wait_failover(victim).await;
    })
    .await;

    // Caching resumes on the new primary: hits that never reach the
    // backend, and the records there, as an independent client sees.
    eventually(
        "the store to be up on the new primary",
        Duration::from_secs(30),
        || async { e.proxy.gateway().store().is_up() },
    )
    .await;
    let fresh = "/api/v1/tasks/after-failover";
    let outages_before = e.proxy.gateway().store().outages();
    let first = e.client.get(fresh).await;
    assert_eq!(first.x_cache(), Some("MISS"));
    let seen = std::sync::Mutex::new(vec![first.cache_status().to_string()]);
    let (client, seen_ref) = (&e.client, &seen);
    eventually("the fresh path to be a HIT", PATIENCE, || async move {
        let r = client.get(fresh).await;
        seen_ref.lock().unwrap().push(r.cache_status().to_string());
        r.x_cache() == Some("HIT")
    })
    .await;
    for p in &paths {
        e.until_hit(p).await;
    }
    let backend_before = e.backend.total();
    for p in &paths {
        assert_eq!(e.client.get(p).await.x_cache(), Some("HIT"));
    }
    assert_eq!(e.backend.total(), backend_before, "hits never reach the backend");
    assert_eq!(
        e.backend.count("GET", fresh),
        1,
        "one fill after the failover; the GETs: {:?}; outages {outages_before} -> {}",
        seen.lock().unwrap(),
        e.proxy.gateway().store().outages()
    );
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
