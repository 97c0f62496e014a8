//! One normal form of the request path (src/proxy/normalize.rs) for rule
//! matching, the cache key and the backend alike: no spelling of a path
//! reads, fills or purges another resource's entry.

use crate::common::*;

/// Spellings of `/api/v1/tasks/1` share its entry, and the backend only
/// ever sees the normal form.
async fn spellings_of_one_path_share_one_entry(kind: Kind) {
    let w = World::std(kind).await;
    assert_eq!(w.client.get("/api/v1/tasks/1").await.x_cache(), Some("MISS"));
    for spelling in [
        "/api/v1//tasks/1",
        "/api/v1/tasks/%31",
        "/api/v1/./tasks/1",
        "/api/v1/x/../tasks/1",
        "/api/v1/x/%2e%2E/tasks/1",
        "/api//v1/tasks/./1",
    ] {
        let resp = w.client.get(spelling).await;
        assert_eq!(resp.status, 200, "{spelling}");
        assert_eq!(
            resp.x_cache(),
            Some("HIT"),
            "{spelling} must read /api/v1/tasks/1's entry"
        );
    }
    assert_eq!(w.backend.total(), 1, "every spelling but the first was a hit");
    assert_eq!(
        w.backend.last_uri("/api/v1/tasks/1").as_deref(),
        Some("/api/v1/tasks/1")
    );
}

/// A write under any spelling purges the normal path's key, so the next
/// read sees the new version.
async fn a_write_under_another_spelling_purges_the_entry(kind: Kind) {
    let w = World::std(kind).await;
    assert_eq!(w.client.get("/api/v1/tasks/2").await.version(), 1);
    assert_eq!(w.client.get("/api/v1/tasks/2").await.x_cache(), Some("HIT"));
    let put = w.client.put("/api/v1//tasks/%32").await;
    assert_eq!(put.status, 200);
    assert_eq!(
        w.backend.count("PUT", "/api/v1/tasks/2"),
        1,
        "the backend got the normal path"
    );
    let after = w.client.get("/api/v1/tasks/2").await;
    assert_eq!(after.x_cache(), Some("MISS"), "the write purged the entry");
    assert_eq!(after.version(), 2);
}

/// `..` cannot climb from a task into another resource's key, and an
/// encoded slash is never a separator: `%2F` stays inside the capture.
async fn dot_segments_and_encoded_slashes_never_reach_another_key(kind: Kind) {
    let w = World::std(kind).await;
    w.client.get("/api/v1/tasks/secret").await;
    // Climbs and comes back: the same resource by its normal name.
    let back = w.client.get("/api/v1/tasks/%2e%2e/%2e%2e/v1/tasks/secret").await;
    assert_eq!(back.x_cache(), Some("HIT"), "the same resource, by its normal name");
    // Climbs out of /api/v1/tasks/: no task rule covers the result, which
    // is what the backend gets.
    let out = w.client.get("/api/v1/tasks/%2e%2e/users/1").await;
    assert_eq!(out.x_cache(), None, "not a task any more");
    assert_eq!(w.backend.count("GET", "/api/v1/users/1"), 1);
    assert_eq!(w.backend.count_path("/api/v1/tasks/secret"), 1, "still one fill");
    // An encoded slash stays one segment: `a%2Fsecret` is its own id.
    let encoded = w.client.get("/api/v1/tasks/a%2fsecret").await;
    assert_eq!(encoded.x_cache(), Some("MISS"));
    assert_eq!(
        w.backend.last_uri("/api/v1/tasks/a%2Fsecret").as_deref(),
        Some("/api/v1/tasks/a%2Fsecret"),
        "forwarded with its hex uppercased, not decoded"
    );
    // Mixed-case hex is one key.
    assert_eq!(w.client.get("/api/v1/tasks/a%2Fsecret").await.x_cache(), Some("HIT"));
}

/// Paths with no normal form get a JSON 400 and never reach the backend.
async fn paths_without_a_normal_form_are_rejected(kind: Kind) {
    let w = World::std(kind).await;
    for bad in ["/api/v1/tasks/%zz", "/api/v1/tasks/%2", "/api/v1/tasks/a%00b"] {
        let resp = w.client.get(bad).await;
        assert_eq!(resp.status, 400, "{bad}");
        assert_eq!(resp.json()["error"], "bad_path", "{bad}");
    }
    assert_eq!(w.backend.total(), 0);
}

both_stores!(
    spellings_of_one_path_share_one_entry,
    a_write_under_another_spelling_purges_the_entry,
    dot_segments_and_encoded_slashes_never_reach_another_key,
    paths_without_a_normal_form_are_rejected,
);
