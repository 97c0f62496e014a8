//! Bad input: an over-long URI is a JSON 414, too many or too large headers
//! a 431, and a key that renders empty or too long bypasses the cache.

use crate::common::*;
use http::{HeaderName, HeaderValue};

const LIMITS: &str = r#"
[server]
max_uri_bytes = 1024
max_header_bytes = 4096
max_headers = 20
"#;

async fn world() -> World {
    World::start(Kind::Redis, &format!("{HEAD}\n{LIMITS}\n{STD_RULES}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_uri_is_a_json_414() {
    let w = world().await;
    let base = "/api/v1/tasks/1?q=";
    let ok = format!("{base}{}", "a".repeat(1024 - base.len()));
    assert_eq!(ok.len(), 1024);
    assert_eq!(w.client.get(&ok).await.status, 200, "exactly at the limit is fine");
    assert_eq!(w.backend.total(), 1);

    for path in [
        format!("{ok}b"),
        format!("{base}{}", "a".repeat(5000)),
        format!("/x/{}", "y".repeat(2000)),
    ] {
        let r = w.client.get(&path).await;
        assert_eq!(r.status, 414, "{} bytes", path.len());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json()["error"], "uri_too_long");
    }
    let put = w.client.put(&format!("/api/v1/tasks/{}", "1".repeat(2000))).await;
    assert_eq!(put.status, 414);
    assert_eq!(w.backend.total(), 1, "rejected requests never reach the backend");
}

fn many(n: usize) -> Vec<(HeaderName, HeaderValue)> {
    (0..n)
        .map(|i| {
            (
                HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_is_a_431() {
    let w = world().await;
    // The client adds Host: 19 + Host = 20 is at the limit.
    let ok = w
        .client
        .try_send("GET", "/api/v1/tasks/1", many(19), empty())
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(w.backend.total(), 1);

    // 20 + Host = 21: over our limit (and within hyper's): our JSON answer.
    let r = w
        .client
        .try_send("GET", "/api/v1/tasks/1", many(20), empty())
        .await
        .unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"], "request_header_fields_too_large");

    // Far too many: still a 431 (hyper may answer before cachegate sees it).
    let r = w
        .client
        .try_send("GET", "/api/v1/tasks/1", many(200), empty())
        .await
        .expect("a 431 answer, not a dropped connection");
    assert_eq!(r.status, 431);
    assert_eq!(w.backend.total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_headers_are_a_431() {
    let w = world().await;
    let big = |n: usize| {
        vec![(
            HeaderName::from_static("x-big"),
            HeaderValue::from_str(&"z".repeat(n)).unwrap(),
        )]
    };
    let ok = w
        .client
        .try_send("GET", "/api/v1/tasks/1", big(3000), empty())
        .await
        .unwrap();
    assert_eq!(ok.status, 200);

    let r = w
        .client
        .try_send("GET", "/api/v1/tasks/1", big(5000), empty())
        .await
        .unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], "request_header_fields_too_large");

    // Many medium headers that add up.
    let adding_up: Vec<_> = (0..5)
        .map(|i| {
            (
                HeaderName::from_bytes(format!("x-m{i}").as_bytes()).unwrap(),
                HeaderValue::from_str(&"m".repeat(1000)).unwrap(),
            )
        })
        .collect();
    let r = w.client.try_send("GET", "/plain", adding_up, empty()).await.unwrap();
    assert_eq!(r.status, 431);

    // Beyond even hyper's buffer.
    let r = w
        .client
        .try_send("GET", "/api/v1/tasks/1", big(64 * 1024), empty())
        .await
        .expect("a 431 answer, not a dropped connection");
    assert_eq!(r.status, 431);
    assert_eq!(w.backend.total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_keys_bypass_the_cache_and_still_answer() {
    let template = format!(
        "{HEAD}\n{}",
        r#"
[[rule]]
name = "search"
path = '^/api/v1/search$'
key = "{query.q}"

[[rule]]
name = "tenant"
path = '^/api/v1/tenant$'
key = "tenant:{header.x-tenant}"
"#
    );
    let w = World::start(Kind::Redis, &template).await;

    // Renders empty: no q.
    for i in 1..=2 {
        let r = w.client.get("/api/v1/search").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.x_cache(), Some("BYPASS"));
        assert_eq!(r.cache_status(), "cachegate; fwd=bypass; detail=key");
        assert_eq!(w.backend.count("GET", "/api/v1/search"), i);
    }
    let r = w.client.get("/api/v1/search?q=").await;
    assert_eq!(r.x_cache(), Some("BYPASS"));

    // Longer than 1 KiB.
    let long = format!("/api/v1/search?q={}", "k".repeat(1025));
    for _ in 0..2 {
        let r = w.client.get(&long).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.x_cache(), Some("BYPASS"));
    }
    // Exactly 1 KiB is a key.
    let edge = format!("/api/v1/search?q={}", "k".repeat(1024));
    assert_eq!(w.client.get(&edge).await.x_cache(), Some("MISS"));
    assert_eq!(w.client.get(&edge).await.x_cache(), Some("HIT"));
    assert_eq!(w.backend.count("GET", "/api/v1/search"), 6);

    // A header value that is not text.
    let raw = vec![(
        HeaderName::from_static("x-tenant"),
        HeaderValue::from_bytes(b"acme\xff").unwrap(),
    )];
    let r = w.client.try_send("GET", "/api/v1/tenant", raw, empty()).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.x_cache(), Some("BYPASS"));

    // Nothing of these reached Redis.
    let keys = w.redis().keys("*").await;
    assert!(
        keys.iter().all(|k| k.starts_with("__cg:") || k == &"k".repeat(1024)),
        "{keys:?}"
    );
}

/// A URI longer than the limit is a 414 even when it is longer than the
/// buffer hyper reads the request head into (here 9 KiB), not hyper's bare
/// 431 for a too-large head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uri_longer_than_the_head_buffer_is_still_a_414() {
    let w = world().await;
    for len in [8_000usize, 10_000, 20_000] {
        let path = format!("/api/v1/tasks/1?q={}", "a".repeat(len));
        let r = w
            .client
            .try_send("GET", &path, vec![], empty())
            .await
            .expect("an answer");
        assert_eq!(r.status, 414, "a {}-byte URI (limit 1024) got {}", path.len(), r.status);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json()["error"], "uri_too_long");
    }
    assert_eq!(w.backend.total(), 0);
}
