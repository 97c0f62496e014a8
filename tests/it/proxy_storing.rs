//! Storing: only the rule's statuses; never Set-Cookie, `no-store` or
//! `private`; a body above the limit streams through whole and uncached; a
//! chunked body within the limit is stored; a body that breaks off is not.

use crate::common::*;

both_stores!(
    only_the_rules_statuses_are_stored,
    set_cookie_no_store_and_private_are_never_stored,
    a_body_above_the_limit_streams_through_whole_and_uncached,
    a_chunked_body_within_the_limit_is_stored,
    a_body_that_breaks_off_is_not_stored,
);

const RULES: &str = r#"
[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"
max_body_bytes = 4096

[[rule]]
name = "gone"
path = '^/api/v1/gone/(?P<id>[^/]+)$'
key = "gone:{id}"
statuses = [200, 404, 410]
"#;

async fn world(kind: Kind) -> World {
    World::start(kind, &format!("{HEAD}\n{RULES}")).await
}

/// Two GETs; returns both answers.
async fn twice(w: &World, path: &str) -> (Resp, Resp) {
    (w.client.get(path).await, w.client.get(path).await)
}

async fn only_the_rules_statuses_are_stored(kind: Kind) {
    let w = world(kind).await;

    // 404 is not in the first rule's statuses ([200] by default).
    let path = "/api/v1/tasks/missing";
    w.backend
        .on("GET", path, Reply::new().status(404).body("{\"error\":\"not found\"}"));
    let (a, b) = twice(&w, path).await;
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (404, 404));
    assert_eq!(b.x_cache(), Some("MISS"));
    assert_eq!(b.cache_status(), "cachegate; fwd=miss; detail=status");
    assert_eq!(w.backend.count("GET", path), 2);
    assert!(!w.proxy.stored("task:missing", "anon").await);

    // Nor a 201, nor a 5xx.
    for (status, id) in [(201u16, "created"), (500, "broken"), (503, "down")] {
        let path = format!("/api/v1/tasks/{id}");
        w.backend.on("GET", &path, Reply::new().status(status).body("x"));
        let (_, b) = twice(&w, &path).await;
        assert_eq!(b.status.as_u16(), status);
        assert_eq!(b.x_cache(), Some("MISS"), "{status}");
        assert_eq!(w.backend.count("GET", &path), 2, "{status} must not be stored");
    }

    // The second rule lists 404 and 410: those are stored.
    for (status, id) in [(404u16, "a"), (410, "b"), (200, "c")] {
        let path = format!("/api/v1/gone/{id}");
        w.backend.on("GET", &path, Reply::new().status(status).body("gone"));
        let (a, b) = twice(&w, &path).await;
        assert_eq!(a.cache_status(), "cachegate; fwd=miss; stored", "{status}");
        assert_eq!(b.status.as_u16(), status);
        assert_eq!(b.x_cache(), Some("HIT"), "{status}");
        assert_eq!(b.text(), "gone");
        assert_eq!(w.backend.count("GET", &path), 1);
    }
    // ... but not a 500 there either.
    w.backend
        .on("GET", "/api/v1/gone/err", Reply::new().status(500).body("e"));
    twice(&w, "/api/v1/gone/err").await;
    assert_eq!(w.backend.count("GET", "/api/v1/gone/err"), 2);
}

async fn set_cookie_no_store_and_private_are_never_stored(kind: Kind) {
    let w = world(kind).await;
    let cases = [
        ("cookie", "set-cookie", "session=abc; Path=/", "set-cookie"),
        ("nostore", "cache-control", "no-store", "cache-control"),
        (
            "nostore2",
            "cache-control",
            "public, max-age=60, No-Store",
            "cache-control",
        ),
        ("private", "cache-control", "private", "cache-control"),
        (
            "private2",
            "cache-control",
            "private=\"x-user\", max-age=60",
            "cache-control",
        ),
    ];
    for (id, name, value, detail) in cases {
        let path = format!("/api/v1/tasks/{id}");
        w.backend.on("GET", &path, Reply::new().header(name, value).body("{}"));
        let (a, b) = twice(&w, &path).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header(name), Some(value), "{id}: the header still reaches the client");
        assert_eq!(
            a.cache_status(),
            format!("cachegate; fwd=miss; detail={detail}"),
            "{id}"
        );
        assert_eq!(b.x_cache(), Some("MISS"), "{id}");
        assert_eq!(w.backend.count("GET", &path), 2, "{id} must not be stored");
        assert!(!w.proxy.stored(&format!("task:{id}"), "anon").await, "{id}");
    }
    // Control: an ordinary Cache-Control is stored.
    let path = "/api/v1/tasks/cacheable";
    w.backend.on(
        "GET",
        path,
        Reply::new().header("cache-control", "public, max-age=60").body("{}"),
    );
    let (_, b) = twice(&w, path).await;
    assert_eq!(b.x_cache(), Some("HIT"));
    assert_eq!(b.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(w.backend.count("GET", path), 1);
}

async fn a_body_above_the_limit_streams_through_whole_and_uncached(kind: Kind) {
    let w = world(kind).await;
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();

    // With a Content-Length above the limit (4096).
    let path = "/api/v1/tasks/big";
    w.backend.on("GET", path, Reply::new().body(body.clone()));
    let (a, b) = twice(&w, path).await;
    assert_eq!(a.body.len(), body.len());
    assert_eq!(&a.body[..], &body[..], "the whole body, unchanged");
    assert_eq!(a.cache_status(), "cachegate; fwd=miss; detail=too-large");
    assert_eq!(&b.body[..], &body[..]);
    assert_eq!(b.x_cache(), Some("MISS"));
    assert_eq!(w.backend.count("GET", path), 2);
    assert!(!w.proxy.stored("task:big", "anon").await);

    // Chunked, above the limit.
    let path = "/api/v1/tasks/bigchunked";
    w.backend
        .on("GET", path, Reply::new().chunked(body.chunks(1000).map(|c| c.to_vec())));
    let a = w.client.get(path).await;
    assert!(a.header("content-length").is_none());
    assert_eq!(&a.body[..], &body[..], "the whole chunked body, unchanged");
    assert_eq!(a.x_cache(), Some("MISS"));
    let b = w.client.get(path).await;
    assert_eq!(&b.body[..], &body[..]);
    assert_eq!(b.x_cache(), Some("MISS"));
    assert_eq!(w.backend.count("GET", path), 2);
    assert!(!w.proxy.stored("task:bigchunked", "anon").await);

    // Exactly at the limit is still stored.
    let path = "/api/v1/tasks/exact";
    w.backend.on("GET", path, Reply::new().body(body[..4096].to_vec()));
    let (_, b) = twice(&w, path).await;
    assert_eq!(b.x_cache(), Some("HIT"));
    assert_eq!(&b.body[..], &body[..4096]);
}

async fn a_chunked_body_within_the_limit_is_stored(kind: Kind) {
    let w = world(kind).await;
    let path = "/api/v1/tasks/chunked";
    let chunks = ["{\"part\":1,", "\"part2\":\"", &"x".repeat(2000), "\"}"];
    let whole: String = chunks.concat();
    w.backend.on(
        "GET",
        path,
        Reply::new()
            .header("content-type", "application/json")
            .chunked(chunks.map(String::from)),
    );

    let first = w.client.get(path).await;
    assert_eq!(first.text(), whole);
    assert_eq!(first.x_cache(), Some("MISS"));
    assert!(first.header("content-length").is_none(), "it did arrive chunked");

    // Stored in the background once the body ended.
    let w = &w;
    eventually("the chunked body is stored", PATIENCE, || async move {
        w.proxy.stored("task:chunked", "anon").await
    })
    .await;
    if let Some(redis) = &w.redis {
        assert_eq!(redis.entry_fields("task:chunked").await, vec!["anon"]);
    }
    let hit = w.client.get(path).await;
    assert_eq!(hit.x_cache(), Some("HIT"), "cache-status: {}", hit.cache_status());
    assert_eq!(hit.text(), whole);
    assert_eq!(hit.header("content-type"), Some("application/json"));
    assert_eq!(w.backend.count("GET", path), 1);
}

async fn a_body_that_breaks_off_is_not_stored(kind: Kind) {
    let w = world(kind).await;

    // Declared 100 bytes, sends 40, then the connection breaks.
    let path = "/api/v1/tasks/cut";
    w.backend
        .on("GET", path, Reply::new().truncated(vec![b'a'; 40], Some(100)));
    // The declared body is read whole before the head is sent: a 502, never
    // the 40 bytes as if they were the answer (RFC 9111 §4.2.4).
    let got = w.client.get(path).await;
    assert_eq!(got.status, 502, "the client must not get the broken body: {got:?}");
    assert_eq!(got.json()["error"], "bad_gateway");
    assert!(!w.proxy.stored("task:cut", "anon").await);

    // Chunked, breaks off after the first chunk.
    let path2 = "/api/v1/tasks/cutchunked";
    w.backend.on("GET", path2, Reply::new().truncated(vec![b'b'; 40], None));
    let got = w.client.try_send("GET", path2, vec![], empty()).await;
    assert!(
        got.is_err(),
        "the client must see the chunked body break off, got {got:?}"
    );

    // The backend recovers: the next request goes there and is complete.
    w.backend.reset(path);
    w.backend.reset(path2);
    for p in [path, path2] {
        let r = w.client.get(p).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.x_cache(), Some("MISS"), "{p}: nothing partial was stored");
        assert_eq!(w.backend.count("GET", p), 2, "{p}");
    }
}
