//! Fail open: Redis down, killed, restarted or paused never costs a client
//! its answer; caching resumes when Redis is back.

use crate::common::*;
use std::time::Duration;

const PATH: &str = "/api/v1/tasks/1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_started_while_redis_is_down_serves_uncached_then_caches() {
    let redis = RedisServer::start();
    redis.kill();
    let backend = Backend::start().await;
    let proxy = Proxy::start_with(&std_config(), Kind::Redis, &backend, Some(&redis)).await;
    let client = Client::new(proxy.addr);

    for i in 1..=3 {
        let r = client.get(PATH).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.x_cache(), Some("BYPASS"), "cache-status: {}", r.cache_status());
        assert!(
            r.cache_status().starts_with("cachegate; fwd=bypass"),
            "{}",
            r.cache_status()
        );
        assert_eq!(backend.count("GET", PATH), i);
    }
    let r = client.get_h(PATH, &[("authorization", "Bearer a")]).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, Some("BYPASS")));
    assert_eq!(r.caller(), "Bearer a");
    // Writes and uncovered paths work too.
    assert_eq!(client.put(PATH).await.status, 200);
    assert_eq!(client.get("/plain").await.status, 200);

    // Redis comes up: caching starts without a restart of the proxy.
    redis.restart();
    let w = World {
        backend,
        redis: Some(redis),
        proxy,
        client,
    };
    w.client.until_hit(PATH, &[]).await;
    let a = &[("authorization", "Bearer a")];
    let w = &w;
    eventually("credentialed requests are cached too", PATIENCE, || async move {
        w.client.get_h(PATH, a).await.x_cache() == Some("HIT")
    })
    .await;
    assert!(w.redis().exists("task:1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_then_restarted_on_the_same_port() {
    let w = World::std(Kind::Redis).await;
    assert_eq!(w.client.get(PATH).await.x_cache(), Some("MISS"));
    assert_eq!(w.client.get(PATH).await.x_cache(), Some("HIT"));
    let port = w.redis().port();

    w.redis().kill();
    for i in 0..5 {
        let before = w.backend.count("GET", PATH);
        let r = w.client.get(PATH).await;
        assert_eq!(r.status, 200, "request {i} after the kill");
        assert_eq!(r.json()["id"], "1");
        assert_ne!(r.x_cache(), Some("HIT"), "nothing can be a hit with Redis gone");
        assert_eq!(w.backend.count("GET", PATH), before + 1);
    }
    let r = w.client.get(PATH).await;
    assert_eq!(r.x_cache(), Some("BYPASS"), "cache-status: {}", r.cache_status());
    assert_eq!(
        w.client.put(PATH).await.status,
        200,
        "a write answers although its purge cannot run"
    );
    let other = w
        .client
        .get_h("/api/v1/tasks/2", &[("authorization", "Bearer a")])
        .await;
    assert_eq!(other.status, 200);

    w.redis().restart();
    assert_eq!(w.redis().port(), port);
    w.client.until_hit(PATH, &[]).await;
    assert!(w.redis().exists("task:1").await, "written to the restarted Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_requests_are_still_answered() {
    let w = World::std(Kind::Redis).await;
    assert_eq!(w.client.get(PATH).await.x_cache(), Some("MISS"));
    assert_eq!(w.client.get(PATH).await.x_cache(), Some("HIT"));

    w.redis().pause();
    let outcome = async {
        for i in 0..3 {
            let before = w.backend.count("GET", PATH);
            let r = w.client.get(PATH).await;
            assert_eq!(r.status, 200, "request {i} while Redis is paused");
            assert_eq!(r.x_cache(), Some("BYPASS"), "cache-status: {}", r.cache_status());
            assert_eq!(r.json()["id"], "1");
            assert_eq!(w.backend.count("GET", PATH), before + 1);
        }
        let other = w.client.get("/api/v1/tasks/2").await;
        assert_eq!(other.status, 200);
        assert_eq!(w.client.put("/api/v1/tasks/3").await.status, 200);
        assert_eq!(w.client.get("/api/v1/tasks?page=1").await.status, 200);
    };
    // Never leave Redis stopped, whatever the outcome.
    let result = tokio::time::timeout(Duration::from_secs(30), outcome).await;
    w.redis().resume();
    result.expect("requests hung while Redis was paused");

    // The entry stored before the pause is still there and served again.
    let w = &w;
    eventually("task 1 is a HIT after resume", PATIENCE, || async move {
        w.client.get(PATH).await.x_cache() == Some("HIT")
    })
    .await;
    w.client.until_hit("/api/v1/tasks/4", &[]).await;
}
