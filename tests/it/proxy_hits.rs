//! Hits: a stored answer is served without contacting the backend, HEAD
//! shares the GET entry, and hits say so in `Cache-Status`, `X-Cache`, `Age`.

use crate::common::*;

both_stores!(
    second_get_is_a_hit_that_never_reaches_the_backend,
    head_after_get_is_a_hit_from_the_get_entry,
    head_first_fills_the_entry_a_get_then_hits,
    age_on_a_hit_adds_the_upstream_age,
    an_expired_entry_is_fetched_again,
);

async fn second_get_is_a_hit_that_never_reaches_the_backend(kind: Kind) {
    let w = World::std(kind).await;
    let path = "/api/v1/tasks/1";

    let first = w.client.get(path).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.x_cache(), Some("MISS"));
    assert_eq!(first.cache_status(), "cachegate; fwd=miss; stored");
    assert!(first.header("age").is_none(), "a miss carries no Age");
    assert_eq!(first.json()["id"], "1");
    assert_eq!(w.backend.count("GET", path), 1);

    let second = w.client.get(path).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.x_cache(), Some("HIT"), "cache-status: {}", second.cache_status());
    assert!(
        second.cache_status().starts_with("cachegate; hit"),
        "cache-status: {}",
        second.cache_status()
    );
    let age: u64 = second
        .header("age")
        .expect("Age on a hit")
        .parse()
        .expect("Age is a number");
    assert!(age < 60, "age {age}");
    assert_eq!(second.body, first.body, "a hit answers the stored body");
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(w.backend.count("GET", path), 1, "a hit must not reach the backend");
    assert_eq!(w.backend.total(), 1);

    // A third one, too; and another id is its own entry.
    assert_eq!(w.client.get(path).await.x_cache(), Some("HIT"));
    let other = w.client.get("/api/v1/tasks/2").await;
    assert_eq!(other.x_cache(), Some("MISS"));
    assert_eq!(other.json()["id"], "2");
    assert_eq!(w.backend.total(), 2);

    // A path no rule covers carries no cache headers and is never cached.
    let plain = w.client.get("/api/v1/users/1").await;
    assert!(plain.x_cache().is_none() && plain.header("cache-status").is_none());
    w.client.get("/api/v1/users/1").await;
    assert_eq!(w.backend.count("GET", "/api/v1/users/1"), 2);

    if let Some(redis) = &w.redis {
        assert_eq!(redis.entry_fields("task:1").await, vec!["anon"]);
        let ttl = redis.pttl("task:1").await;
        assert!(ttl > 0 && ttl <= 300_000, "record TTL {ttl} ms");
    }
}

async fn head_after_get_is_a_hit_from_the_get_entry(kind: Kind) {
    let w = World::std(kind).await;
    let path = "/api/v1/tasks/7";
    let get = w.client.get(path).await;
    assert_eq!(get.x_cache(), Some("MISS"));

    let head = w.client.head(path).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.x_cache(), Some("HIT"), "cache-status: {}", head.cache_status());
    assert!(head.body.is_empty(), "HEAD has no body");
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str()),
        "HEAD tells the GET body's length"
    );
    assert!(head.header("age").is_some());
    assert_eq!(w.backend.count("HEAD", path), 0);
    assert_eq!(w.backend.count("GET", path), 1);
    assert_eq!(w.backend.total(), 1);
}

async fn head_first_fills_the_entry_a_get_then_hits(kind: Kind) {
    let w = World::std(kind).await;
    let path = "/api/v1/tasks/8";
    let head = w.client.head(path).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.x_cache(), Some("MISS"));
    // The backend was asked with GET, so the answer can fill the GET entry.
    assert_eq!(w.backend.count("HEAD", path), 0);
    assert_eq!(w.backend.count("GET", path), 1);

    let get = w.client.get(path).await;
    assert_eq!(get.x_cache(), Some("HIT"), "cache-status: {}", get.cache_status());
    assert_eq!(get.json()["id"], "8");
    assert_eq!(get.json()["method"], "GET");
    assert_eq!(w.backend.total(), 1);
}

async fn age_on_a_hit_adds_the_upstream_age(kind: Kind) {
    let w = World::std(kind).await;
    let path = "/api/v1/tasks/aged";
    w.backend
        .on("GET", path, Reply::new().header("age", "100").body("{\"aged\":true}"));
    let miss = w.client.get(path).await;
    assert_eq!(miss.x_cache(), Some("MISS"));
    let hit = w.client.get(path).await;
    assert_eq!(hit.x_cache(), Some("HIT"));
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!((100..160).contains(&age), "age {age} must count the upstream 100 s");
    assert_eq!(hit.headers.get_all("age").iter().count(), 1, "one Age header");
}

async fn an_expired_entry_is_fetched_again(kind: Kind) {
    let template = format!(
        "{HEAD}\n{}",
        r#"
[[rule]]
name = "short"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"
ttl = 1
"#
    );
    let w = World::start(kind, &template).await;
    let path = "/api/v1/tasks/1";
    assert_eq!(w.client.get(path).await.x_cache(), Some("MISS"));
    let hit = w.client.get(path).await;
    assert_eq!(hit.x_cache(), Some("HIT"));
    let ttl_left: u64 = hit
        .cache_status()
        .split(';')
        .find_map(|p| p.trim().strip_prefix("ttl="))
        .expect("ttl= in cache-status")
        .parse()
        .unwrap();
    assert!(ttl_left <= 1, "ttl {ttl_left}");
    // Once the second is over the entry is stale: the backend is asked again.
    let w = &w;
    eventually("the entry expires and is fetched again", PATIENCE, || async move {
        w.client.get(path).await.x_cache() == Some("MISS")
    })
    .await;
    assert_eq!(w.backend.count("GET", path), 2);
    assert_eq!(
        w.client.get(path).await.x_cache(),
        Some("HIT"),
        "the refetch was stored"
    );
}
