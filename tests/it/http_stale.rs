//! Serving stale: stale-while-revalidate (the rule's window and the
//! backend's directive) with exactly one background refresh, stale-if-error
//! within its window (backend answering 503, or down) and not beyond it,
//! the `/metrics` stale counter, and the admin view of a stale entry.

use crate::common::*;
use std::time::{Duration, Instant};

both_stores!(
    stale_while_revalidate_serves_stale_and_refreshes_once,
    the_backends_stale_while_revalidate_directive_works_without_the_rule,
    stale_if_error_serves_stale_when_the_backend_fails,
    stale_if_error_ends_with_its_window,
    metrics_count_stale_answers,
    admin_key_ttl_is_the_fresh_seconds_left,
);

// ---------------------------------------------------------------------------
// Helpers (local: the shared harness is not edited)
// ---------------------------------------------------------------------------

const TOKEN: &str = "http-stale-admin-token-0123456789abcdef0123456789";

const RULES: &str = r#"
[[rule]]
name = "swr"
path = '^/swr/(?P<id>[^/]+)$'
key = "swr:{id}"
ttl = 1
stale_while_revalidate = 5

[[rule]]
name = "origin"
path = '^/o/(?P<id>[^/]+)$'
key = "o:{id}"
ttl = "origin"

[[rule]]
name = "sie"
path = '^/sie/(?P<id>[^/]+)$'
key = "sie:{id}"
ttl = 1
stale_if_error = 30

[[rule]]
name = "sie-short"
path = '^/sie-short/(?P<id>[^/]+)$'
key = "sie-short:{id}"
ttl = 1
stale_if_error = 1

[[rule]]
name = "adm"
path = '^/adm/(?P<id>[^/]+)$'
key = "adm:{id}"
ttl = 2
stale_while_revalidate = 30
"#;

/// An enterprise config with [`TOKEN`] (every admin scope) and [`RULES`].
fn config() -> String {
    format!(
        "edition = \"enterprise\"\n\n{HEAD}\n[admin]\n\n{}{RULES}",
        crate::common::admin::token_toml("stale", TOKEN, crate::common::admin::EVERY_SCOPE)
    )
}

async fn world(kind: Kind) -> World {
    World::start(kind, &config()).await
}

async fn admin_get(w: &World, path: &str) -> Resp {
    let auth = format!("Bearer {TOKEN}");
    w.client.send("GET", path, &[("authorization", &auth)], empty()).await
}

// ---------------------------------------------------------------------------
// stale-while-revalidate
// ---------------------------------------------------------------------------

/// The entry at `path` was just filled (serial `first`) and expires after
/// about a second: the first request after that is served stale at once,
/// one background request refreshes it, and the refreshed answer is then a
/// hit.
async fn swr_flow(w: &World, path: &str, first: u64, programmed: Reply) {
    // The refresh is held until the test lets it go: requests meanwhile
    // stay stale.
    let gate = Gate::closed();
    w.backend.on("GET", path, programmed.gate(&gate));

    let stale = w.client.first_non_hit(path, &[]).await;
    assert_eq!(stale.x_cache(), Some("STALE"), "{}", stale.cache_status());
    assert!(stale.cache_status().contains("fwd=stale"), "{}", stale.cache_status());
    assert_eq!(stale.status, 200);
    assert_eq!(stale.serial(), first, "the stale answer is the stored one");
    // Served without waiting for the backend: its refresh is still held back.
    let during = w.client.get(path).await;
    assert_eq!(
        during.x_cache(),
        Some("STALE"),
        "still stale while the refresh is under way: {}",
        during.cache_status()
    );
    assert_eq!(during.serial(), first);
    // Concurrent stale requests add no refresh of their own.
    let (a, b, c) = tokio::join!(w.client.get(path), w.client.get(path), w.client.get(path));
    for r in [&a, &b, &c] {
        assert!(
            matches!(r.x_cache(), Some("STALE") | Some("HIT")),
            "{}",
            r.cache_status()
        );
    }

    // Every request so far was answered while the refresh was held: none
    // waited for it. Now let it land.
    let released = Instant::now();
    gate.open();
    // Poll until the refreshed answer is served as a hit.
    let deadline = Instant::now() + PATIENCE;
    let refreshed = loop {
        let r = w.client.get(path).await;
        // The refreshed answer: a hit, or (when the machine is so loaded that
        // its own max-age=1 ran out before this poll) stale in its turn.
        if matches!(r.x_cache(), Some("HIT") | Some("STALE")) && r.serial() != first {
            break r;
        }
        assert!(
            matches!(r.x_cache(), Some("STALE")) && r.serial() == first,
            "before the refresh lands the old answer is served stale: {} serial {}",
            r.cache_status(),
            r.serial()
        );
        assert!(Instant::now() < deadline, "the background refresh never landed");
        tokio::time::sleep(Duration::from_millis(25)).await; // the polling interval
    };
    assert!(refreshed.serial() > first);
    // One background request refreshed the entry: no stale answer started
    // another while it was held. On a loaded machine the refreshed entry
    // (1 s TTL) can go stale again before the poll sees it, and be
    // refreshed once more; such a refresh starts only after the first was
    // let go.
    let arrivals = w.backend.arrivals();
    assert!(arrivals.len() >= 2 && w.backend.count("GET", path) == arrivals.len() as u64);
    assert_eq!(w.backend.max_in_flight(), 1, "a refresh at a time");
    for later in &arrivals[2..] {
        assert!(
            *later >= released,
            "a second refresh started while the first was under way"
        );
    }
}

async fn stale_while_revalidate_serves_stale_and_refreshes_once(kind: Kind) {
    let w = world(kind).await;
    let path = "/swr/1";
    let miss = w.client.get(path).await;
    assert_eq!(miss.cache_status(), "cachegate; fwd=miss; stored");
    swr_flow(&w, path, miss.serial(), Reply::new()).await;
}

async fn the_backends_stale_while_revalidate_directive_works_without_the_rule(kind: Kind) {
    let w = world(kind).await;
    // The rule "origin" sets no stale_while_revalidate.
    let path = "/o/swr";
    let programmed = Reply::new().header("cache-control", "max-age=1, stale-while-revalidate=5");
    w.backend.on("GET", path, programmed.clone());
    let miss = w.client.get(path).await;
    assert_eq!(miss.cache_status(), "cachegate; fwd=miss; stored");
    swr_flow(&w, path, miss.serial(), programmed).await;

    // Control: without the directive the expired entry is fetched again.
    let plain = "/o/plain";
    w.backend
        .on("GET", plain, Reply::new().header("cache-control", "max-age=1"));
    w.client.get(plain).await;
    let after = w.client.first_non_hit(plain, &[]).await;
    assert_eq!(after.x_cache(), Some("MISS"), "{}", after.cache_status());
}

// ---------------------------------------------------------------------------
// stale-if-error
// ---------------------------------------------------------------------------

async fn stale_if_error_serves_stale_when_the_backend_fails(kind: Kind) {
    let w = world(kind).await;
    let path = "/sie/1";
    let miss = w.client.get(path).await;
    assert_eq!(miss.cache_status(), "cachegate; fwd=miss; stored");

    // The backend answers 503: the stale entry is served instead.
    w.backend.on("GET", path, Reply::new().status(503).body("unavailable"));
    let stale = w.client.first_non_hit(path, &[]).await;
    assert_eq!(stale.x_cache(), Some("STALE"), "{}", stale.cache_status());
    assert_eq!(stale.cache_status(), "cachegate; hit; fwd=stale; detail=backend-error");
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, miss.body);
    assert_eq!(w.backend.count("GET", path), 2, "the backend was asked, and failed");

    // The backend is gone: still the stale entry.
    w.backend.stop().await;
    let stale = w.client.get(path).await;
    assert_eq!(stale.x_cache(), Some("STALE"), "{}", stale.cache_status());
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, miss.body);

    // Control: an entry never stored has nothing to fall back on.
    let none = w.client.get("/sie/never").await;
    assert!(none.status.is_server_error(), "{}", none.status);
}

async fn stale_if_error_ends_with_its_window(kind: Kind) {
    let w = world(kind).await;
    // ttl 1 s, stale_if_error 1 s: stale from 1 s to 2 s, then errors pass.
    let path = "/sie-short/1";
    let miss = w.client.get(path).await;
    assert_eq!(miss.cache_status(), "cachegate; fwd=miss; stored");
    w.backend.on("GET", path, Reply::new().status(503).body("unavailable"));
    let deadline = Instant::now() + PATIENCE;
    let mut stale_seen = 0;
    loop {
        let r = w.client.get(path).await;
        match r.x_cache() {
            Some("HIT") => {}
            Some("STALE") => {
                assert_eq!(r.body, miss.body);
                stale_seen += 1;
            }
            _ => {
                assert_eq!(r.status, 503, "beyond the window the error goes through");
                assert_eq!(r.text(), "unavailable");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "still served from the cache after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await; // the polling interval
    }
    assert!(stale_seen > 0, "within the window the stale entry was served");
}

// ---------------------------------------------------------------------------
// /metrics and the admin view
// ---------------------------------------------------------------------------

async fn metrics_count_stale_answers(kind: Kind) {
    let w = world(kind).await;
    assert_eq!(
        w.client.scrape().await.sum(
            "cachegate_requests_total",
            &[("rule", "sie"), ("cache_status", "stale")]
        ),
        0.0
    );
    let path = "/sie/m";
    w.client.get(path).await;
    w.backend.on("GET", path, Reply::new().status(503).body("down"));
    let first = w.client.first_non_hit(path, &[]).await;
    assert_eq!(first.x_cache(), Some("STALE"));
    let second = w.client.get(path).await;
    assert_eq!(second.x_cache(), Some("STALE"));
    assert_eq!(
        w.client.scrape().await.sum(
            "cachegate_requests_total",
            &[("rule", "sie"), ("cache_status", "stale")]
        ),
        2.0
    );
    // Stale-while-revalidate answers count as stale too.
    let swr = "/swr/m";
    w.client.get(swr).await;
    let s = w.client.first_non_hit(swr, &[]).await;
    assert_eq!(s.x_cache(), Some("STALE"));
    assert_eq!(
        w.client.scrape().await.sum(
            "cachegate_requests_total",
            &[("rule", "swr"), ("cache_status", "stale")]
        ),
        1.0
    );
}

async fn admin_key_ttl_is_the_fresh_seconds_left(kind: Kind) {
    let w = world(kind).await;
    let path = "/adm/1";
    let key = "/api/v1/cache/key/adm:1";
    let filled = Instant::now();
    w.client.get(path).await;
    let fresh = admin_get(&w, key).await;
    let since = filled.elapsed();
    assert_eq!(fresh.status, 200, "{}", fresh.text());
    let body = fresh.json();
    assert_eq!(body["fresh"], true, "{body}");
    let ttl = body["ttl"].as_u64().expect("ttl");
    // ttl = 2: the fresh seconds left are at most 2, and at least 2 less the
    // time since the fill (rounded up; a lower bound a slow machine only
    // loosens).
    let least = 2u64.saturating_sub(since.as_secs_f64().ceil() as u64);
    assert!(
        (least..=2).contains(&ttl),
        "ttl = 2: fresh seconds left {ttl}, {since:?} after the fill: {body}"
    );

    // Once stale (and kept for stale-while-revalidate), ttl is 0.
    let w = &w;
    eventually("the entry goes stale", PATIENCE, || async move {
        admin_get(w, key).await.json()["fresh"] == false
    })
    .await;
    let stale = admin_get(w, key).await;
    assert_eq!(stale.status, 200, "the record still exists: {}", stale.text());
    let body = stale.json();
    assert_eq!(body["ttl"], 0, "no fresh seconds left: {body}");
    assert!(
        body["record_ttl"].as_u64().is_some_and(|t| t > 0),
        "kept for the stale window: {body}"
    );
    assert_eq!(w.backend.count("GET", path), 1, "admin reads do not refresh");
}
