//! HTTP caching semantics (RFC 9111, as a shared cache) end to end: origin
//! freshness (`ttl = "origin"`), what is never stored, `Vary` variants,
//! `no-cache` / `must-revalidate`, `Age` and `Date`, invalidation by unsafe
//! methods (§4.4), conditional requests and revalidation (§4.3), negative
//! caching, and a catch-all rule run against a table of origin responses.
//!
//! Stale serving (stale-while-revalidate, stale-if-error, metrics and the
//! admin view of stale entries) is in `tests/http_stale.rs`.

use crate::common::*;
use std::time::{Duration, SystemTime};

both_stores!(
    // 1. ttl = "origin"
    origin_s_maxage_beats_max_age,
    origin_max_age_sets_the_lifetime,
    origin_expires_minus_date_sets_the_lifetime,
    origin_age_is_subtracted_from_the_lifetime,
    origin_max_ttl_caps_the_lifetime,
    origin_without_freshness_is_stored_only_with_default_ttl,
    no_store_and_private_are_never_stored_whatever_the_rule,
    vary_star_is_never_stored_whatever_the_rule,
    a_fixed_rule_ttl_overrides_the_origin,
    // 2. Vary
    vary_keeps_a_variant_per_request_header_value,
    purging_the_logical_key_removes_every_variant,
    // 3. no-cache, must-revalidate
    no_cache_with_a_validator_is_revalidated_before_every_use,
    no_cache_without_a_validator_is_not_stored,
    must_revalidate_is_never_served_stale,
    // 4. Age, Date
    age_grows_on_hits_and_includes_the_upstream_age_and_date_is_kept,
    // 5. invalidation by unsafe methods
    unsafe_methods_invalidate_their_own_uri_without_an_invalidate_rule,
    error_answers_to_unsafe_methods_do_not_invalidate,
    same_host_location_and_content_location_are_invalidated,
    location_on_another_host_is_never_invalidated,
    // 6. conditional requests and revalidation
    conditional_requests_are_answered_from_the_cache,
    a_conditional_first_request_still_fills_the_cache,
    a_stale_entry_with_an_etag_is_revalidated_and_a_304_refreshes_it,
    a_stale_entry_kept_by_a_stale_window_is_revalidated_and_a_304_refreshes_it,
    // 8. negative caching
    negative_caching_by_status,
    // 9. the catch-all rule as an RFC 9111 shared cache
    catch_all_rfc_9111_response_table,
    catch_all_keys_by_method_host_and_query,
    catch_all_request_directives,
    catch_all_a_write_invalidates_get_and_head_of_its_uri,
    catch_all_an_old_date_counts_toward_the_age,
    catch_all_credential_scope_keeps_authorization_apart,
    catch_all_public_scope_shares_an_authorized_answer_only_if_the_origin_allows,
);

// ---------------------------------------------------------------------------
// Helpers (local: the shared harness is not edited)
// ---------------------------------------------------------------------------

/// A bearer token with every admin scope (the config keeps its SHA-256).
const TOKEN: &str = "http-semantics-admin-token-0123456789abcdef0123";

fn template(rules: &str) -> String {
    format!("{HEAD}\n{rules}")
}

/// An enterprise config with [`TOKEN`] configured, so the admin key routes
/// are available.
fn admin_template(rules: &str) -> String {
    format!(
        "edition = \"enterprise\"\n\n{HEAD}\n[admin]\n\n{}{rules}",
        crate::common::admin::token_toml("semantics", TOKEN, crate::common::admin::EVERY_SCOPE)
    )
}

async fn admin(w: &World, method: &str, path: &str) -> Resp {
    let auth = format!("Bearer {TOKEN}");
    w.client.send(method, path, &[("authorization", &auth)], empty()).await
}

/// A programmed answer: these headers and this body (status 200).
fn reply(headers: &[(&str, &str)], body: &str) -> Reply {
    headers
        .iter()
        .fold(Reply::new().body(body.to_string()), |r, (n, v)| r.header(n, v))
}

/// The `ttl=` of a hit's `Cache-Status`.
fn ttl_of(r: &Resp) -> u64 {
    r.cache_status()
        .split(';')
        .find_map(|p| p.trim().strip_prefix("ttl="))
        .unwrap_or_else(|| panic!("no ttl= in cache-status {:?}", r.cache_status()))
        .parse()
        .expect("ttl is a number")
}

fn age_of(r: &Resp) -> u64 {
    r.header("age")
        .unwrap_or_else(|| panic!("no Age header (cache-status {:?})", r.cache_status()))
        .parse()
        .expect("Age is a number")
}

/// An HTTP date `offset` seconds from `base`.
fn date_at(base: SystemTime, offset: i64) -> String {
    let t = if offset >= 0 {
        base + Duration::from_secs(offset as u64)
    } else {
        base - Duration::from_secs(offset.unsigned_abs())
    };
    httpdate::fmt_http_date(t)
}

/// Two GETs: the first is stored, the second is a hit with the same body and
/// the backend was asked once. Returns the hit.
async fn assert_stored(w: &World, path: &str, what: &str) -> Resp {
    let before = w.backend.count("GET", path);
    let a = w.client.get(path).await;
    assert_eq!(
        a.cache_status(),
        "cachegate; fwd=miss; stored",
        "{what}: the first answer must be stored"
    );
    let b = w.client.get(path).await;
    assert_eq!(
        b.x_cache(),
        Some("HIT"),
        "{what}: second answer, cache-status {:?}",
        b.cache_status()
    );
    assert_eq!(b.status, a.status, "{what}");
    assert_eq!(b.body, a.body, "{what}: a hit answers the stored body");
    assert_eq!(
        w.backend.count("GET", path) - before,
        1,
        "{what}: the backend is asked once"
    );
    b
}

/// Two GETs, both forwarded: nothing reusable was stored. Returns the first.
async fn assert_not_reused(w: &World, path: &str, what: &str) -> Resp {
    let before = w.backend.count("GET", path);
    let a = w.client.get(path).await;
    let b = w.client.get(path).await;
    assert!(
        !matches!(b.x_cache(), Some("HIT") | Some("STALE")),
        "{what}: second answer must not come from the cache; cache-status {:?}",
        b.cache_status()
    );
    assert_eq!(
        w.backend.count("GET", path) - before,
        2,
        "{what}: both requests must reach the backend"
    );
    a
}

fn header_of(headers: &Option<http::HeaderMap>, name: &str) -> Option<String> {
    headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.to_str().unwrap().to_string())
}

// ---------------------------------------------------------------------------
// 1. ttl = "origin"
// ---------------------------------------------------------------------------

const ORIGIN_RULES: &str = r#"
[[rule]]
name = "origin"
path = '^/o/(?P<id>[^/]+)$'
key = "o:{id}"
ttl = "origin"

[[rule]]
name = "capped"
path = '^/capped/(?P<id>[^/]+)$'
key = "capped:{id}"
ttl = "origin"
max_ttl = 5

[[rule]]
name = "fallback"
path = '^/fallback/(?P<id>[^/]+)$'
key = "fallback:{id}"
ttl = "origin"
default_ttl = 20

[[rule]]
name = "fixed"
path = '^/fixed/(?P<id>[^/]+)$'
key = "fixed:{id}"
ttl = 100

[[rule]]
name = "lenient"
path = '^/mr/(?P<id>[^/]+)$'
key = "mr:{id}"
ttl = "origin"
stale_if_error = 30
"#;

async fn origin_world(kind: Kind) -> World {
    World::start(kind, &template(ORIGIN_RULES)).await
}

async fn origin_s_maxage_beats_max_age(kind: Kind) {
    let w = origin_world(kind).await;
    // s-maxage longer than max-age: the shared cache keeps it for s-maxage.
    w.backend.on(
        "GET",
        "/o/long",
        reply(&[("cache-control", "max-age=10, s-maxage=100")], "long"),
    );
    let hit = assert_stored(&w, "/o/long", "s-maxage=100, max-age=10").await;
    let ttl = ttl_of(&hit);
    assert!(
        (95..=100).contains(&ttl),
        "s-maxage=100 must win over max-age=10: ttl {ttl}"
    );

    // s-maxage shorter than max-age: it expires after s-maxage.
    w.backend.on(
        "GET",
        "/o/short",
        reply(&[("cache-control", "s-maxage=2, max-age=100")], "short"),
    );
    let hit = assert_stored(&w, "/o/short", "s-maxage=2, max-age=100").await;
    assert!(ttl_of(&hit) <= 2, "ttl {}", ttl_of(&hit));
    let again = w.client.first_non_hit("/o/short", &[]).await;
    assert_eq!(again.x_cache(), Some("MISS"), "{}", again.cache_status());
    assert_eq!(w.backend.count("GET", "/o/short"), 2, "refetched once s-maxage is over");
}

async fn origin_max_age_sets_the_lifetime(kind: Kind) {
    let w = origin_world(kind).await;
    w.backend
        .on("GET", "/o/m", reply(&[("cache-control", "max-age=100")], "m"));
    let hit = assert_stored(&w, "/o/m", "max-age=100").await;
    let ttl = ttl_of(&hit);
    assert!((95..=100).contains(&ttl), "max-age=100: ttl {ttl}");

    w.backend
        .on("GET", "/o/m2", reply(&[("cache-control", "public, max-age=2")], "m2"));
    let hit = assert_stored(&w, "/o/m2", "max-age=2").await;
    assert!(ttl_of(&hit) <= 2);
    let again = w.client.first_non_hit("/o/m2", &[]).await;
    assert_eq!(again.x_cache(), Some("MISS"), "{}", again.cache_status());
    assert_eq!(w.backend.count("GET", "/o/m2"), 2);
}

async fn origin_expires_minus_date_sets_the_lifetime(kind: Kind) {
    let w = origin_world(kind).await;
    let now = SystemTime::now();
    let (date, in_100, ago_10) = (date_at(now, 0), date_at(now, 100), date_at(now, -10));
    w.backend
        .on("GET", "/o/exp", reply(&[("date", &date), ("expires", &in_100)], "exp"));
    let hit = assert_stored(&w, "/o/exp", "Expires = Date + 100").await;
    let ttl = ttl_of(&hit);
    assert!((95..=100).contains(&ttl), "Expires - Date = 100: ttl {ttl}");

    // Expires before Date: already expired.
    w.backend.on(
        "GET",
        "/o/past",
        reply(&[("date", &date), ("expires", &ago_10)], "past"),
    );
    assert_not_reused(&w, "/o/past", "Expires before Date").await;
    // An invalid Expires means already expired (RFC 9111 §5.3).
    w.backend.on("GET", "/o/zero", reply(&[("expires", "0")], "zero"));
    assert_not_reused(&w, "/o/zero", "Expires: 0").await;
    // max-age wins over Expires (RFC 9111 §5.3).
    w.backend.on(
        "GET",
        "/o/both",
        reply(
            &[("cache-control", "max-age=100"), ("date", &date), ("expires", &ago_10)],
            "both",
        ),
    );
    let hit = assert_stored(&w, "/o/both", "max-age with a past Expires").await;
    assert!(ttl_of(&hit) >= 95, "ttl {}", ttl_of(&hit));
}

async fn origin_age_is_subtracted_from_the_lifetime(kind: Kind) {
    let w = origin_world(kind).await;
    w.backend.on(
        "GET",
        "/o/aged",
        reply(&[("cache-control", "max-age=100"), ("age", "30")], "aged"),
    );
    let hit = assert_stored(&w, "/o/aged", "max-age=100, Age: 30").await;
    let ttl = ttl_of(&hit);
    assert!((65..=70).contains(&ttl), "100 - 30 s: ttl {ttl}");
    let age = age_of(&hit);
    assert!((30..40).contains(&age), "Age {age} must include the upstream 30 s");

    // Already older than its max-age: never fresh here.
    w.backend.on(
        "GET",
        "/o/old",
        reply(&[("cache-control", "max-age=10"), ("age", "20")], "old"),
    );
    assert_not_reused(&w, "/o/old", "max-age=10, Age: 20").await;
}

async fn origin_max_ttl_caps_the_lifetime(kind: Kind) {
    let w = origin_world(kind).await;
    for (id, cc) in [("a", "max-age=100"), ("b", "s-maxage=100"), ("c", "max-age=3")] {
        let path = format!("/capped/{id}");
        w.backend.on("GET", &path, reply(&[("cache-control", cc)], id));
        let hit = assert_stored(&w, &path, cc).await;
        assert!(ttl_of(&hit) <= 5, "{cc} under max_ttl = 5: ttl {}", ttl_of(&hit));
    }
    // The same answer under the uncapped rule keeps its own lifetime.
    w.backend
        .on("GET", "/o/uncapped", reply(&[("cache-control", "max-age=100")], "u"));
    assert!(ttl_of(&assert_stored(&w, "/o/uncapped", "uncapped").await) > 5);
}

async fn origin_without_freshness_is_stored_only_with_default_ttl(kind: Kind) {
    let w = origin_world(kind).await;
    // The default backend answer carries no Cache-Control nor Expires.
    let first = assert_not_reused(&w, "/o/plain", "no explicit freshness").await;
    assert_eq!(first.cache_status(), "cachegate; fwd=miss; detail=no-freshness");
    assert!(!w.proxy.stored("o:plain", "anon").await);
    // A validator alone gives no freshness either (no heuristic freshness).
    w.backend
        .on("GET", "/o/validator", reply(&[("etag", "\"v\"")], "validator"));
    assert_not_reused(&w, "/o/validator", "ETag only").await;

    // With default_ttl, the same answer is stored for that long.
    let hit = assert_stored(&w, "/fallback/plain", "default_ttl = 20").await;
    let ttl = ttl_of(&hit);
    assert!((15..=20).contains(&ttl), "default_ttl 20: ttl {ttl}");
    // ... and it does not replace a lifetime the origin gives.
    w.backend.on(
        "GET",
        "/fallback/given",
        reply(&[("cache-control", "max-age=100")], "g"),
    );
    let ttl = ttl_of(&assert_stored(&w, "/fallback/given", "origin max-age with default_ttl").await);
    assert!((95..=100).contains(&ttl), "ttl {ttl}");
}

async fn no_store_and_private_are_never_stored_whatever_the_rule(kind: Kind) {
    let w = origin_world(kind).await;
    let values = [
        "no-store",
        "private",
        "max-age=60, no-store",
        "public, max-age=60, private",
        "s-maxage=60, No-Store",
        "private=\"x-user\", s-maxage=60",
    ];
    for prefix in ["o", "fallback", "fixed", "capped"] {
        for (i, cc) in values.iter().enumerate() {
            let path = format!("/{prefix}/cc{i}");
            w.backend.on("GET", &path, reply(&[("cache-control", cc)], "secret"));
            let first = assert_not_reused(&w, &path, &format!("{path} Cache-Control: {cc}")).await;
            assert_eq!(
                first.cache_status(),
                "cachegate; fwd=miss; detail=cache-control",
                "{path} {cc}"
            );
            assert_eq!(
                first.header("cache-control"),
                Some(*cc),
                "the header reaches the client"
            );
            assert!(!w.proxy.stored(&format!("{prefix}:cc{i}"), "anon").await, "{path}");
        }
    }
}

async fn vary_star_is_never_stored_whatever_the_rule(kind: Kind) {
    let w = origin_world(kind).await;
    for prefix in ["o", "fallback", "fixed"] {
        for (i, vary) in ["*", "Accept-Encoding, *"].iter().enumerate() {
            let path = format!("/{prefix}/star{i}");
            w.backend.on(
                "GET",
                &path,
                reply(&[("cache-control", "max-age=60"), ("vary", vary)], "star"),
            );
            let first = assert_not_reused(&w, &path, &format!("{path} Vary: {vary}")).await;
            assert_eq!(
                first.cache_status(),
                "cachegate; fwd=miss; detail=vary",
                "{path} Vary: {vary}"
            );
        }
    }
}

async fn a_fixed_rule_ttl_overrides_the_origin(kind: Kind) {
    let w = origin_world(kind).await;
    for (id, cc) in [("short", "max-age=1"), ("zero", "max-age=0"), ("s", "s-maxage=1")] {
        let path = format!("/fixed/{id}");
        w.backend.on("GET", &path, reply(&[("cache-control", cc)], id));
        let hit = assert_stored(&w, &path, cc).await;
        assert!(
            ttl_of(&hit) >= 95,
            "rule ttl = 100 wins over {cc}: ttl {}",
            ttl_of(&hit)
        );
    }
    // Past the origin's second it is still a hit (the sleep creates the
    // condition: the origin's max-age=1 has run out).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = w.client.get("/fixed/short").await;
    assert_eq!(r.x_cache(), Some("HIT"), "{}", r.cache_status());
    assert_eq!(w.backend.count("GET", "/fixed/short"), 1);
}

// ---------------------------------------------------------------------------
// 2. Vary
// ---------------------------------------------------------------------------

const VARY_RULES: &str = r#"
[[rule]]
name = "vary"
path = '^/v/(?P<id>[^/]+)$'
key = "v:{id}"
ttl = 60
"#;

async fn vary_keeps_a_variant_per_request_header_value(kind: Kind) {
    let w = World::start(kind, &template(VARY_RULES)).await;
    let path = "/v/1";
    // The default body carries a per-answer serial: each variant is distinct.
    w.backend
        .on("GET", path, Reply::new().header("vary", "Accept-Language"));
    let en = [("accept-language", "en")];
    let de = [("accept-language", "de")];
    let en1 = w.client.get_h(path, &en).await;
    let de1 = w.client.get_h(path, &de).await;
    assert_eq!(en1.cache_status(), "cachegate; fwd=miss; stored");
    assert_eq!(
        de1.x_cache(),
        Some("MISS"),
        "de is another variant: {}",
        de1.cache_status()
    );
    assert_ne!(en1.serial(), de1.serial());
    let en2 = w.client.get_h(path, &en).await;
    let de2 = w.client.get_h(path, &de).await;
    assert_eq!(en2.x_cache(), Some("HIT"), "{}", en2.cache_status());
    assert_eq!(de2.x_cache(), Some("HIT"), "{}", de2.cache_status());
    assert_eq!(en2.body, en1.body, "en gets its own variant");
    assert_eq!(de2.body, de1.body, "de gets its own variant");
    assert_eq!(en2.header("vary"), Some("Accept-Language"));
    assert_eq!(w.backend.count("GET", path), 2);
    // A third value is a third variant.
    let fr = w.client.get_h(path, &[("accept-language", "fr")]).await;
    assert_eq!(fr.x_cache(), Some("MISS"));
    assert_eq!(w.backend.count("GET", path), 3);
    if let Some(redis) = &w.redis {
        // One logical key: the scope's marker and one field per variant.
        assert_eq!(redis.keys("v:*").await, vec!["v:1"]);
        assert_eq!(redis.entry_fields("v:1").await.len(), 4);
    }
}

async fn purging_the_logical_key_removes_every_variant(kind: Kind) {
    let w = World::start(kind, &admin_template(VARY_RULES)).await;
    let path = "/v/2";
    w.backend
        .on("GET", path, Reply::new().header("vary", "Accept-Language"));
    let en = [("accept-language", "en")];
    let de = [("accept-language", "de")];
    for h in [&en, &de] {
        w.client.get_h(path, h).await;
        let hit = w.client.get_h(path, h).await;
        assert_eq!(hit.x_cache(), Some("HIT"), "{h:?}: {}", hit.cache_status());
    }
    assert_eq!(w.backend.count("GET", path), 2);

    // A write through the proxy purges its own URI: every variant.
    let put = w.client.put(path).await;
    assert_eq!(put.status, 200);
    for h in [&en, &de] {
        let r = w.client.get_h(path, h).await;
        assert_eq!(r.x_cache(), Some("MISS"), "{h:?} after PUT: {}", r.cache_status());
    }
    assert_eq!(w.backend.count("GET", path), 4);

    // An admin DELETE of the logical key, too.
    for h in [&en, &de] {
        assert_eq!(w.client.get_h(path, h).await.x_cache(), Some("HIT"));
    }
    let del = admin(&w, "DELETE", "/api/v1/cache/key/v:2").await;
    assert_eq!(del.status, 200, "{}", del.text());
    for h in [&en, &de] {
        let r = w.client.get_h(path, h).await;
        assert_eq!(
            r.x_cache(),
            Some("MISS"),
            "{h:?} after DELETE key: {}",
            r.cache_status()
        );
    }
    assert_eq!(w.backend.count("GET", path), 6);
}

// ---------------------------------------------------------------------------
// 3. no-cache, must-revalidate
// ---------------------------------------------------------------------------

async fn no_cache_with_a_validator_is_revalidated_before_every_use(kind: Kind) {
    let w = origin_world(kind).await;
    // (validator header and value, the conditional header the backend must get)
    let validators = [
        ("etag", "\"nc1\"", "if-none-match"),
        ("last-modified", "Thu, 01 Jan 2026 00:00:00 GMT", "if-modified-since"),
    ];
    // Under an origin rule without and with a lifetime, and under a fixed TTL.
    let rules = [("o", "no-cache"), ("o", "no-cache, max-age=60"), ("fixed", "no-cache")];
    let mut failures = Vec::new();
    for (r, (prefix, cc)) in rules.into_iter().enumerate() {
        for (v, (name, value, conditional)) in validators.into_iter().enumerate() {
            let path = format!("/{prefix}/nc{r}{v}");
            let what = format!("{path} ({cc}, {name})");
            if let Err(e) = no_cache_flow(&w, &path, cc, (name, value, conditional)).await {
                failures.push(format!("{what}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "no-cache with a validator:\n  {}",
        failures.join("\n  ")
    );
}

/// Stored on the first GET; then every GET is a conditional request to the
/// backend (which answers 304 without a body) and the client gets the
/// stored body with 200.
/// `validator` is the header the backend sends, its value, and the
/// conditional header it must then get.
async fn no_cache_flow(w: &World, path: &str, cc: &str, validator: (&str, &str, &str)) -> Result<(), String> {
    let (name, value, conditional) = validator;
    w.backend
        .on("GET", path, reply(&[("cache-control", cc), (name, value)], "original"));
    let first = w.client.get(path).await;
    if first.status != 200 || first.cache_status() != "cachegate; fwd=miss; stored" {
        return Err(format!("not stored: {} {:?}", first.status, first.cache_status()));
    }
    // From now on the backend only confirms: 304, no body.
    w.backend.on("GET", path, reply(&[(name, value)], "").status(304));
    for round in 2..=3u64 {
        // A use a moment later (not within the same millisecond) must be
        // revalidated just the same (the sleep creates that condition).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = w.client.get(path).await;
        let asked = w.backend.count("GET", path);
        let sent = header_of(&w.backend.last_headers(path), conditional);
        if asked != round {
            return Err(format!(
                "round {round}: backend asked {asked}x ({:?})",
                r.cache_status()
            ));
        }
        if sent.as_deref() != Some(value) {
            return Err(format!(
                "round {round}: the backend got {conditional}: {sent:?} (no revalidation; client got {} {:?})",
                r.status,
                r.cache_status()
            ));
        }
        if r.status != 200 || r.text() != "original" || r.x_cache() != Some("REVALIDATED") {
            return Err(format!(
                "round {round}: client got {} {:?} {:?}",
                r.status,
                r.text(),
                r.cache_status()
            ));
        }
    }
    Ok(())
}

async fn no_cache_without_a_validator_is_not_stored(kind: Kind) {
    let w = origin_world(kind).await;
    for prefix in ["o", "fixed", "fallback"] {
        let path = format!("/{prefix}/ncplain");
        w.backend
            .on("GET", &path, reply(&[("cache-control", "no-cache, max-age=60")], "x"));
        let first = assert_not_reused(&w, &path, &format!("{path}: no-cache without validator")).await;
        assert_eq!(first.cache_status(), "cachegate; fwd=miss; detail=no-cache");
    }
}

async fn must_revalidate_is_never_served_stale(kind: Kind) {
    let w = origin_world(kind).await;
    // The rule "lenient" sets stale_if_error = 30.
    let cases = [
        ("lax", "max-age=1", true),
        ("strict", "max-age=1, must-revalidate", false),
        ("proxy", "max-age=1, proxy-revalidate", false),
        ("shared", "s-maxage=1", false),
    ];
    for (id, cc, _) in cases {
        let path = format!("/mr/{id}");
        w.backend.on("GET", &path, reply(&[("cache-control", cc)], id));
        assert_eq!(w.client.get(&path).await.cache_status(), "cachegate; fwd=miss; stored");
    }
    for (id, _, _) in cases {
        w.backend
            .on("GET", &format!("/mr/{id}"), Reply::new().status(503).body("down"));
    }
    for (id, cc, stale_ok) in cases {
        let path = format!("/mr/{id}");
        let r = w.client.first_non_hit(&path, &[]).await;
        if stale_ok {
            assert_eq!(r.x_cache(), Some("STALE"), "{cc}: {}", r.cache_status());
            assert_eq!((r.status.as_u16(), r.text().as_str()), (200, id));
        } else {
            assert_ne!(r.x_cache(), Some("STALE"), "{cc} must never be served stale");
            assert_eq!(r.status, 503, "{cc}: the error goes through");
            assert_eq!(r.text(), "down");
        }
    }
}

// ---------------------------------------------------------------------------
// 4. Age and Date
// ---------------------------------------------------------------------------

async fn age_grows_on_hits_and_includes_the_upstream_age_and_date_is_kept(kind: Kind) {
    let w = origin_world(kind).await;
    let path = "/o/dated";
    let date = date_at(SystemTime::now(), 0);
    w.backend.on(
        "GET",
        path,
        reply(
            &[("cache-control", "max-age=100"), ("age", "10"), ("date", &date)],
            "dated",
        ),
    );
    let miss = w.client.get(path).await;
    assert_eq!(miss.header("date"), Some(date.as_str()));
    let hit = w.client.get(path).await;
    assert_eq!(hit.x_cache(), Some("HIT"));
    let first_age = age_of(&hit);
    assert!(
        (10..=11).contains(&first_age),
        "Age {first_age}: upstream 10 + resident ~0"
    );
    assert_eq!(hit.header("date"), Some(date.as_str()), "Date is the backend's");
    let w = &w;
    let date = &date;
    eventually("Age grows while the entry is resident", PATIENCE, || async move {
        let r = w.client.get(path).await;
        assert_eq!(r.x_cache(), Some("HIT"));
        assert_eq!(r.header("date"), Some(date.as_str()), "Date is still the backend's");
        assert_eq!(r.headers.get_all("age").iter().count(), 1, "one Age header");
        age_of(&r) >= 12
    })
    .await;
    assert_eq!(w.backend.count("GET", path), 1);
}

// ---------------------------------------------------------------------------
// 5. Invalidation by unsafe methods (RFC 9111 §4.4)
// ---------------------------------------------------------------------------

/// One cache rule and no `[[invalidate]]` at all.
const ITEM_RULES: &str = r#"
[[rule]]
name = "items"
path = '^/items/(?P<id>[^/]+)$'
key = "item:{id}"
ttl = 60
"#;

async fn unsafe_methods_invalidate_their_own_uri_without_an_invalidate_rule(kind: Kind) {
    let w = World::start(kind, &template(ITEM_RULES)).await;
    // FROB: a method whose safety is unknown counts as unsafe.
    for method in ["POST", "PUT", "PATCH", "DELETE", "FROB"] {
        let path = format!("/items/{}", method.to_ascii_lowercase());
        assert_stored(&w, &path, method).await;
        let write = w.client.method(method, &path).await;
        assert_eq!(write.status, 200, "{method}");
        let r = w.client.get(&path).await;
        assert_eq!(
            r.x_cache(),
            Some("MISS"),
            "{method} {path} must invalidate its URI: {}",
            r.cache_status()
        );
        assert_eq!(w.backend.count("GET", &path), 2, "{method}");
    }
    // A safe method does not.
    assert_stored(&w, "/items/safe", "safe").await;
    w.client.method("OPTIONS", "/items/safe").await;
    assert_eq!(
        w.client.get("/items/safe").await.x_cache(),
        Some("HIT"),
        "OPTIONS is safe"
    );
    // A write to another item leaves this one alone.
    w.client.method("POST", "/items/other").await;
    assert_eq!(w.client.get("/items/safe").await.x_cache(), Some("HIT"));
}

async fn error_answers_to_unsafe_methods_do_not_invalidate(kind: Kind) {
    // No pooled connections: the write after the backend stopped must fail
    // to connect (never sent), not meet a connection the backend is closing
    // (sent, outcome unknown: purged).
    let unpooled = template(ITEM_RULES).replace("timeout_ms = 5000", "timeout_ms = 5000\npool_idle_per_host = 0");
    let w = World::start(kind, &unpooled).await;
    // A 4xx says the write did not happen: nothing purged.
    for (method, status) in [("POST", 400u16), ("PUT", 404), ("PATCH", 409)] {
        let path = format!("/items/e{status}");
        assert_stored(&w, &path, &format!("{method} {status}")).await;
        w.backend.on(method, &path, Reply::new().status(status).body("no"));
        let write = w.client.method(method, &path).await;
        assert_eq!(write.status.as_u16(), status);
        let r = w.client.get(&path).await;
        assert_eq!(
            r.x_cache(),
            Some("HIT"),
            "{method} answered {status} must not invalidate: {}",
            r.cache_status()
        );
    }
    // A 5xx leaves the outcome unknown (the write may have committed, as
    // AICtrlNet's PUT does before its 500): its URI is purged.
    for (method, status) in [("DELETE", 500u16), ("POST", 503)] {
        let path = format!("/items/e{status}");
        assert_stored(&w, &path, &format!("{method} {status}")).await;
        w.backend.on(method, &path, Reply::new().status(status).body("no"));
        let write = w.client.method(method, &path).await;
        assert_eq!(write.status.as_u16(), status);
        let r = w.client.get(&path).await;
        assert_eq!(
            r.x_cache(),
            Some("MISS"),
            "{method} answered {status} may have committed: {}",
            r.cache_status()
        );
    }
    // A backend that cannot be connected to never got the write: nothing purged.
    assert_stored(&w, "/items/kept", "kept").await;
    w.backend.stop().await;
    let write = w.client.method("DELETE", "/items/kept").await;
    assert!(write.status.is_server_error(), "{}", write.status);
    assert_eq!(w.client.get("/items/kept").await.x_cache(), Some("HIT"));
}

async fn same_host_location_and_content_location_are_invalidated(kind: Kind) {
    let w = World::start(kind, &template(ITEM_RULES)).await;
    let host = w.client.host().to_string();
    let cases: Vec<(&str, u16, &str, String)> = vec![
        ("rel", 201, "location", "/items/5".into()),
        ("abs", 201, "location", format!("http://{host}/items/6")),
        ("cl-rel", 200, "content-location", "/items/7".into()),
        ("cl-abs", 200, "content-location", format!("http://{host}/items/8")),
        ("see-other", 303, "location", "/items/12".into()),
    ];
    for (name, status, header, value) in &cases {
        let target = value.rsplit('/').next().unwrap();
        let item = format!("/items/{target}");
        assert_stored(&w, &item, name).await;
        let create = format!("/create/{name}");
        w.backend
            .on("POST", &create, Reply::new().status(*status).header(header, value));
        let r = w.client.method("POST", &create).await;
        assert_eq!(r.status.as_u16(), *status);
        let after = w.client.get(&item).await;
        assert_eq!(
            after.x_cache(),
            Some("MISS"),
            "{name}: {status} with {header}: {value} must purge {item}: {}",
            after.cache_status()
        );
    }
}

/// A write's name, its status, and the headers of its answer.
type LocationCase<'a> = (&'a str, u16, Vec<(&'a str, &'a str)>);

async fn location_on_another_host_is_never_invalidated(kind: Kind) {
    let w = World::start(kind, &template(ITEM_RULES)).await;
    let cases: Vec<LocationCase> = vec![
        (
            "other",
            201,
            vec![
                ("location", "http://other.example/items/9"),
                ("content-location", "http://other.example/items/9"),
            ],
        ),
        ("other-port", 201, vec![("location", "http://127.0.0.1:1/items/9")]),
        (
            "https-other",
            200,
            vec![("content-location", "https://evil.example/items/9")],
        ),
        // Same host, but an error answer: nothing is purged.
        ("error", 409, vec![("location", "/items/9")]),
    ];
    assert_stored(&w, "/items/9", "item 9").await;
    for (name, status, headers) in cases {
        let create = format!("/create/{name}");
        let programmed = headers
            .iter()
            .fold(Reply::new().status(status), |r, (n, v)| r.header(n, v));
        w.backend.on("POST", &create, programmed);
        let r = w.client.method("POST", &create).await;
        assert_eq!(r.status.as_u16(), status);
        let after = w.client.get("/items/9").await;
        assert_eq!(
            after.x_cache(),
            Some("HIT"),
            "{name}: {headers:?} must not purge /items/9: {}",
            after.cache_status()
        );
    }
    assert_eq!(w.backend.count("GET", "/items/9"), 1);
}

// ---------------------------------------------------------------------------
// 6. Conditional requests and revalidation
// ---------------------------------------------------------------------------

const LAST_MODIFIED: &str = "Thu, 01 Jan 2026 00:00:00 GMT";

async fn conditional_requests_are_answered_from_the_cache(kind: Kind) {
    let w = World::start(kind, &template(ITEM_RULES)).await;
    let path = "/items/cond";
    w.backend.on(
        "GET",
        path,
        reply(&[("etag", "\"abc\""), ("last-modified", LAST_MODIFIED)], "the body"),
    );
    assert_stored(&w, path, "conditional").await;

    let not_modified: &[(&str, &[(&str, &str)])] = &[
        ("matching If-None-Match", &[("if-none-match", "\"abc\"")]),
        ("weak If-None-Match", &[("if-none-match", "W/\"abc\"")]),
        ("If-None-Match list", &[("if-none-match", "\"x\", \"abc\"")]),
        ("If-None-Match *", &[("if-none-match", "*")]),
        (
            "If-Modified-Since = Last-Modified",
            &[("if-modified-since", LAST_MODIFIED)],
        ),
        (
            "If-Modified-Since later",
            &[("if-modified-since", "Fri, 02 Jan 2026 00:00:00 GMT")],
        ),
    ];
    for (what, headers) in not_modified {
        let r = w.client.get_h(path, headers).await;
        assert_eq!(r.status, 304, "{what}: {}", r.cache_status());
        assert!(r.body.is_empty(), "{what}: a 304 has no body");
        assert_eq!(r.header("etag"), Some("\"abc\""), "{what}: 304 carries the ETag");
        assert_eq!(r.x_cache(), Some("HIT"), "{what}");
    }
    let modified: &[(&str, &[(&str, &str)])] = &[
        ("other If-None-Match", &[("if-none-match", "\"zzz\"")]),
        (
            "If-Modified-Since earlier",
            &[("if-modified-since", "Wed, 31 Dec 2025 00:00:00 GMT")],
        ),
        (
            // If-None-Match is evaluated instead of If-Modified-Since.
            "other If-None-Match with a later If-Modified-Since",
            &[
                ("if-none-match", "\"zzz\""),
                ("if-modified-since", "Fri, 02 Jan 2026 00:00:00 GMT"),
            ],
        ),
    ];
    for (what, headers) in modified {
        let r = w.client.get_h(path, headers).await;
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(r.text(), "the body", "{what}: the full body");
        assert_eq!(r.x_cache(), Some("HIT"), "{what}");
    }
    assert_eq!(w.backend.count("GET", path), 1, "all answered from the cache");
}

async fn a_conditional_first_request_still_fills_the_cache(kind: Kind) {
    let w = World::start(kind, &template(ITEM_RULES)).await;
    let path = "/items/cond2";
    w.backend.on("GET", path, reply(&[("etag", "\"abc\"")], "full"));
    let r = w.client.get_h(path, &[("if-none-match", "\"abc\"")]).await;
    assert_eq!(r.status, 304, "{}", r.cache_status());
    assert!(r.body.is_empty());
    assert_eq!(
        header_of(&w.backend.last_headers(path), "if-none-match"),
        None,
        "the backend gets an unconditional request, so its answer can be stored"
    );
    let full = w.client.get(path).await;
    assert_eq!(full.x_cache(), Some("HIT"), "{}", full.cache_status());
    assert_eq!((full.status.as_u16(), full.text().as_str()), (200, "full"));
    assert_eq!(w.backend.count("GET", path), 1);
}

const REVALIDATE_RULES: &str = r#"
[[rule]]
name = "reval"
path = '^/reval/(?P<id>[^/]+)$'
key = "reval:{id}"
ttl = "origin"

[[rule]]
name = "kept"
path = '^/kept/(?P<id>[^/]+)$'
key = "kept:{id}"
ttl = "origin"
stale_if_error = 60
"#;

/// A stale entry with an ETag: the backend gets If-None-Match, answers 304
/// without a body, the client gets the stored body (200), and the entry is
/// fresh again (with the lifetime the 304 gives).
async fn revalidation_flow(w: &World, path: &str) {
    w.backend.on(
        "GET",
        path,
        reply(&[("cache-control", "max-age=2"), ("etag", "\"e1\"")], "first"),
    );
    assert_stored(w, path, "max-age=2 with an ETag").await;
    w.backend.on(
        "GET",
        path,
        reply(&[("cache-control", "max-age=30"), ("etag", "\"e1\"")], "").status(304),
    );
    // Some time after it went stale (RFC 9111 §4.3: any later use of a stale
    // entry with a validator may be a conditional request); the sleep
    // creates that condition: max-age=2 has run out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = w.client.get(path).await;
    assert_eq!(w.backend.count("GET", path), 2);
    assert_eq!(
        header_of(&w.backend.last_headers(path), "if-none-match").as_deref(),
        Some("\"e1\""),
        "{path}: the stale entry must be revalidated with a conditional request (cache-status {:?}, \
         status {})",
        r.cache_status(),
        r.status
    );
    assert_eq!(r.status, 200, "{path}: the client gets the stored answer, not the 304");
    assert_eq!(r.text(), "first");
    assert_eq!(r.x_cache(), Some("REVALIDATED"), "{}", r.cache_status());
    assert_eq!(r.cache_status(), "cachegate; fwd=stale; fwd-status=304; stored");

    let next = w.client.get(path).await;
    assert_eq!(
        next.x_cache(),
        Some("HIT"),
        "refreshed by the 304: {}",
        next.cache_status()
    );
    assert_eq!(next.text(), "first");
    assert!(
        ttl_of(&next) >= 25,
        "the 304's max-age=30 applies: ttl {}",
        ttl_of(&next)
    );
    assert_eq!(
        next.header("cache-control"),
        Some("max-age=30"),
        "headers updated from the 304"
    );
    assert_eq!(w.backend.count("GET", path), 2);
}

async fn a_stale_entry_with_an_etag_is_revalidated_and_a_304_refreshes_it(kind: Kind) {
    let w = World::start(kind, &template(REVALIDATE_RULES)).await;
    // No stale window on this rule: the entry must still be kept once stale,
    // for revalidation (RFC 9111 §4.3).
    revalidation_flow(&w, "/reval/1").await;
}

async fn a_stale_entry_kept_by_a_stale_window_is_revalidated_and_a_304_refreshes_it(kind: Kind) {
    let w = World::start(kind, &template(REVALIDATE_RULES)).await;
    revalidation_flow(&w, "/kept/1").await;
}

// ---------------------------------------------------------------------------
// 8. Negative caching
// ---------------------------------------------------------------------------

const NEGATIVE_RULES: &str = r#"
[[rule]]
name = "neg"
path = '^/neg/(?P<id>[^/]+)$'
key = "neg:{id}"
ttl = 60
ttl_by_status = { "404" = 30 }

[[rule]]
name = "neg-origin"
path = '^/nego/(?P<id>[^/]+)$'
key = "nego:{id}"
ttl = "origin"
ttl_by_status = { "404" = 30 }
"#;

async fn negative_caching_by_status(kind: Kind) {
    let w = World::start(kind, &template(NEGATIVE_RULES)).await;
    for prefix in ["neg", "nego"] {
        let path = format!("/{prefix}/missing");
        w.backend.on("GET", &path, Reply::new().status(404).body("not found"));
        let hit = assert_stored(&w, &path, &format!("{prefix}: 404")).await;
        assert_eq!(hit.status, 404);
        assert_eq!(hit.text(), "not found");
        let ttl = ttl_of(&hit);
        assert!((25..=30).contains(&ttl), "{prefix}: 404 for 30 s: ttl {ttl}");

        // A listed status is still never stored when the origin forbids it.
        for cc in ["no-store", "private"] {
            let path = format!("/{prefix}/missing-{cc}");
            w.backend.on(
                "GET",
                &path,
                Reply::new().status(404).header("cache-control", cc).body("nf"),
            );
            let first = assert_not_reused(&w, &path, &format!("{prefix}: 404 {cc}")).await;
            assert_eq!(first.cache_status(), "cachegate; fwd=miss; detail=cache-control");
        }

        // Not listed, no lifetime from the origin: not stored.
        let path = format!("/{prefix}/gone");
        w.backend.on("GET", &path, Reply::new().status(410).body("gone"));
        let first = assert_not_reused(&w, &path, &format!("{prefix}: 410")).await;
        let why = if prefix == "neg" { "status" } else { "no-freshness" };
        assert_eq!(first.cache_status(), format!("cachegate; fwd=miss; detail={why}"));

        // 5xx with a fixed TTL: never, whatever the headers say. Following
        // the origin, a 5xx it gives a lifetime is stored (RFC 9111 §3):
        // tests/it/http_conformance.rs.
        if prefix == "nego" {
            continue;
        }
        for status in [500u16, 503] {
            let path = format!("/{prefix}/down{status}");
            w.backend.on(
                "GET",
                &path,
                Reply::new()
                    .status(status)
                    .header("cache-control", "public, max-age=60")
                    .body("down"),
            );
            let first = assert_not_reused(&w, &path, &format!("{prefix}: {status}")).await;
            assert_eq!(first.status.as_u16(), status);
            assert_eq!(first.cache_status(), "cachegate; fwd=miss; detail=status");
        }
    }
}

#[test]
fn config_rejects_5xx_in_statuses_and_ttl_by_status() {
    let with = |line: &str| {
        format!(
            "[backend]\nurl = \"http://127.0.0.1:1\"\n\n[store]\nkind = \"memory\"\n\n[[rule]]\nname = \"r\"\npath = '^/x$'\nkey = \"x\"\n{line}\n"
        )
    };
    cachegate::config::Config::from_toml_str(&with("ttl_by_status = { \"404\" = 30 }"))
        .unwrap_or_else(|e| panic!("a 404 TTL is fine: {e}"));
    // Following the origin, a listed 5xx is stored for the lifetime it gives.
    cachegate::config::Config::from_toml_str(&with("ttl = \"origin\"\nstatuses = [200, 503]"))
        .unwrap_or_else(|e| panic!("5xx with ttl = origin is fine: {e}"));
    for line in [
        "statuses = [200, 503]",
        "statuses = [500]",
        "ttl = 60\nstatuses = [500]",
        "ttl_by_status = { \"503\" = 30 }",
        "ttl_by_status = { \"500\" = 30 }",
    ] {
        let err = match cachegate::config::Config::from_toml_str(&with(line)) {
            Ok(_) => panic!("{line} must be rejected"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("5xx"), "{line}: {err}");
    }
}

// ---------------------------------------------------------------------------
// 9. The catch-all rule as an RFC 9111 shared cache
// ---------------------------------------------------------------------------

const CATCH_ALL: &str = r#"
[[rule]]
name = "all"
path = '^/'
key = "{method}:{host}{path}?{query}"
ttl = "origin"
scope = "public"
"#;

const CATCH_ALL_CREDENTIAL: &str = r#"
[[rule]]
name = "all"
path = '^/'
key = "{method}:{host}{path}?{query}"
ttl = "origin"
scope = "credential"
"#;

enum Expect {
    /// Stored and reused while fresh, with a `ttl=` in this range.
    Fresh(u64, u64),
    /// Not reused: the second request reaches the backend.
    NotReused,
}

struct Row {
    name: &'static str,
    status: u16,
    headers: Vec<(&'static str, String)>,
    expect: Expect,
    /// RFC reference, and where cachegate is stricter than the RFC, why.
    why: &'static str,
}

fn row(name: &'static str, status: u16, headers: &[(&'static str, &str)], expect: Expect, why: &'static str) -> Row {
    Row {
        name,
        status,
        headers: headers.iter().map(|(n, v)| (*n, v.to_string())).collect(),
        expect,
        why,
    }
}

fn rfc_table() -> Vec<Row> {
    use Expect::*;
    let now = SystemTime::now();
    let (date, in_60, ago_60) = (date_at(now, 0), date_at(now, 60), date_at(now, -60));
    let cc = "cache-control";
    vec![
        row("max-age", 200, &[(cc, "max-age=60")], Fresh(55, 60), "§4.2.1 max-age"),
        row(
            "public-max-age",
            200,
            &[(cc, "public, max-age=60")],
            Fresh(55, 60),
            "§5.2.2.9",
        ),
        row(
            "s-maxage-over-max-age",
            200,
            &[(cc, "max-age=5, s-maxage=60")],
            Fresh(55, 60),
            "§4.2.1: a shared cache uses s-maxage first",
        ),
        row(
            "s-maxage-zero",
            200,
            &[(cc, "max-age=60, s-maxage=0")],
            NotReused,
            "§5.2.2.10: s-maxage=0 overrides max-age for a shared cache",
        ),
        row(
            "expires",
            200,
            &[("date", &date), ("expires", &in_60)],
            Fresh(55, 60),
            "§4.2.1 Expires - Date",
        ),
        row(
            "expires-past",
            200,
            &[("date", &date), ("expires", &ago_60)],
            NotReused,
            "§4.2.1: Expires before Date is already stale",
        ),
        row(
            "expires-invalid",
            200,
            &[("expires", "0")],
            NotReused,
            "§5.3: an invalid Expires means already expired",
        ),
        row(
            "max-age-over-expires",
            200,
            &[(cc, "max-age=60"), ("date", &date), ("expires", &ago_60)],
            Fresh(55, 60),
            "§5.3: Expires is ignored when max-age is present",
        ),
        row(
            "age-counts",
            200,
            &[(cc, "max-age=60"), ("age", "20")],
            Fresh(35, 40),
            "§4.2.3: Age is part of the current age",
        ),
        row(
            "age-beyond-max-age",
            200,
            &[(cc, "max-age=10"), ("age", "20")],
            NotReused,
            "§4.2: current age beyond the lifetime is stale",
        ),
        row("max-age-zero", 200, &[(cc, "max-age=0")], NotReused, "§4.2"),
        row(
            "max-age-invalid",
            200,
            &[(cc, "max-age=soon")],
            NotReused,
            "§4.2.1: invalid freshness information is treated as stale",
        ),
        row(
            "directives-case-insensitive",
            200,
            &[(cc, "MAX-AGE=60")],
            Fresh(55, 60),
            "§5.2: directive names are case-insensitive",
        ),
        row(
            "split-header",
            200,
            &[(cc, "public"), (cc, "max-age=60")],
            Fresh(55, 60),
            "RFC 9110 §5.3: field lines combine",
        ),
        row(
            "unknown-extension",
            200,
            &[(cc, "max-age=60, community=\"UCI\"")],
            Fresh(55, 60),
            "§5.2.3: unknown extensions are ignored",
        ),
        row(
            "must-revalidate-fresh",
            200,
            &[(cc, "max-age=60, must-revalidate")],
            Fresh(55, 60),
            "§5.2.2.2 restricts stale use only",
        ),
        row(
            "proxy-revalidate-fresh",
            200,
            &[(cc, "max-age=60, proxy-revalidate")],
            Fresh(55, 60),
            "§5.2.2.8 restricts stale use only",
        ),
        row(
            "response-pragma-ignored",
            200,
            &[(cc, "max-age=60"), ("pragma", "no-cache")],
            Fresh(55, 60),
            "§5.4: Pragma has no meaning in responses",
        ),
        row(
            "vary-field",
            200,
            &[(cc, "max-age=60"), ("vary", "Accept-Language")],
            Fresh(55, 60),
            "§4.1: stored as a variant",
        ),
        row(
            "heuristic-last-modified",
            200,
            &[("last-modified", "Thu, 01 Jan 2026 00:00:00 GMT")],
            NotReused,
            "§4.2.2 allows (MAY) heuristic freshness for 200; cachegate uses none \
             (without default_ttl such answers are not stored)",
        ),
        row(
            "etag-only",
            200,
            &[("etag", "\"x\"")],
            NotReused,
            "no explicit freshness, no heuristic",
        ),
        row("no-store", 200, &[(cc, "no-store")], NotReused, "§5.2.2.5"),
        row(
            "no-store-with-max-age",
            200,
            &[(cc, "max-age=60, no-store")],
            NotReused,
            "§5.2.2.5",
        ),
        row("private", 200, &[(cc, "private, max-age=60")], NotReused, "§5.2.2.7"),
        row(
            "private-qualified",
            200,
            &[(cc, "private=\"x-user\", max-age=60")],
            NotReused,
            "§5.2.2.7 would allow storing without the named field; cachegate \
             conservatively stores nothing",
        ),
        row(
            "no-cache-without-validator",
            200,
            &[(cc, "no-cache, max-age=60")],
            NotReused,
            "§5.2.2.4: must validate, and cannot without a validator",
        ),
        row(
            "set-cookie",
            200,
            &[(cc, "max-age=60"), ("set-cookie", "session=abc")],
            NotReused,
            "RFC 9111 allows storing; cachegate never stores Set-Cookie answers \
             (they are per user)",
        ),
        row(
            "vary-star",
            200,
            &[(cc, "max-age=60"), ("vary", "*")],
            NotReused,
            "§4.1: Vary: * always fails to match",
        ),
        row(
            "404-max-age",
            404,
            &[(cc, "max-age=60")],
            Fresh(55, 60),
            "§3: any final status with explicit freshness may be stored; ttl = \"origin\" follows the origin",
        ),
        row("410-max-age", 410, &[(cc, "max-age=60")], Fresh(55, 60), "§3"),
        row(
            "301-max-age",
            301,
            &[(cc, "max-age=60"), ("location", "/rfc/elsewhere")],
            Fresh(55, 60),
            "§3",
        ),
        row(
            "500-max-age",
            500,
            &[(cc, "max-age=60")],
            Fresh(55, 60),
            "§3: a 5xx too, when the origin says so",
        ),
        row("503-max-age", 503, &[(cc, "max-age=60")], Fresh(55, 60), "§3"),
        row(
            "404-no-freshness",
            404,
            &[],
            NotReused,
            "no explicit freshness; heuristics are off unless a rule turns them on",
        ),
        row(
            "500-no-freshness",
            500,
            &[("last-modified", "Thu, 01 Jan 2026 00:00:00 GMT")],
            NotReused,
            "§4.2.2: 500 is not heuristically cacheable",
        ),
    ]
}

async fn catch_all_rfc_9111_response_table(kind: Kind) {
    let w = World::start(kind, &template(CATCH_ALL)).await;
    let mut failures = Vec::new();
    for r in rfc_table() {
        let path = format!("/rfc/{}", r.name);
        let programmed = r
            .headers
            .iter()
            .fold(Reply::new().status(r.status).body(r.name), |p, (n, v)| p.header(n, v));
        w.backend.on("GET", &path, programmed);
        let a = w.client.get(&path).await;
        let b = w.client.get(&path).await;
        let asked = w.backend.count("GET", &path);
        let problem = if a.status.as_u16() != r.status || b.text() != r.name {
            Some(format!("answers {} / {:?}", b.status, b.text()))
        } else {
            match r.expect {
                Expect::Fresh(lo, hi) => {
                    if b.x_cache() != Some("HIT") || asked != 1 {
                        Some(format!(
                            "expected a hit; got {:?} / {:?}, backend asked {asked}x",
                            a.cache_status(),
                            b.cache_status()
                        ))
                    } else {
                        let ttl = ttl_of(&b);
                        (!(lo..=hi).contains(&ttl)).then(|| format!("ttl {ttl} not in {lo}..={hi}"))
                    }
                }
                Expect::NotReused => (matches!(b.x_cache(), Some("HIT") | Some("STALE")) || asked != 2).then(|| {
                    format!(
                        "expected no reuse; got {:?} / {:?}, backend asked {asked}x",
                        a.cache_status(),
                        b.cache_status()
                    )
                }),
            }
        };
        if let Some(p) = problem {
            failures.push(format!("{} ({}): {p}", r.name, r.why));
        }
    }
    assert!(failures.is_empty(), "RFC 9111 table:\n  {}", failures.join("\n  "));
}

async fn catch_all_keys_by_method_host_and_query(kind: Kind) {
    let w = World::start(kind, &template(CATCH_ALL)).await;
    w.backend
        .on("GET", "/k", Reply::new().header("cache-control", "max-age=60"));
    // The query is part of the key.
    let q1 = w.client.get("/k?a=1").await;
    let q2 = w.client.get("/k?a=2").await;
    assert_eq!((q1.x_cache(), q2.x_cache()), (Some("MISS"), Some("MISS")));
    assert_eq!(w.client.get("/k?a=1").await.body, q1.body);
    assert_eq!(w.client.get("/k?a=2").await.body, q2.body);
    assert_eq!(w.backend.count("GET", "/k"), 2);
    // So is the host.
    let a = w.client.get_h("/k", &[("host", "a.example")]).await;
    let b = w.client.get_h("/k", &[("host", "b.example")]).await;
    assert_eq!((a.x_cache(), b.x_cache()), (Some("MISS"), Some("MISS")));
    let a2 = w.client.get_h("/k", &[("host", "a.example")]).await;
    assert_eq!(a2.x_cache(), Some("HIT"));
    assert_eq!(a2.body, a.body);
    assert_eq!(w.backend.count("GET", "/k"), 4);
    // And the method: with {method} in the key, HEAD keeps an entry of its
    // own (fetched from the backend as GET) rather than sharing GET's.
    let head = w.client.head("/k?h=1").await;
    assert_eq!(head.x_cache(), Some("MISS"));
    assert!(head.body.is_empty());
    assert_eq!(w.client.head("/k?h=1").await.x_cache(), Some("HIT"));
    assert_eq!(w.client.get("/k?h=1").await.x_cache(), Some("MISS"));
    assert_eq!(w.backend.count("HEAD", "/k"), 0, "HEAD is fetched as GET");
}

async fn catch_all_request_directives(kind: Kind) {
    let w = World::start(kind, &template(CATCH_ALL)).await;
    let path = "/req";
    w.backend.on(
        "GET",
        path,
        Reply::new()
            .header("cache-control", "max-age=60")
            .header("etag", "\"r\""),
    );
    assert_stored(&w, path, "request directives").await;
    // no-cache / max-age=0 / Pragma: no-cache: not from the cache without
    // validation (RFC 9111 §5.2.1.1, §5.2.1.4, §5.4).
    let mut asked = 1;
    for headers in [
        &[("cache-control", "no-cache")][..],
        &[("cache-control", "max-age=0")][..],
        &[("pragma", "no-cache")][..],
    ] {
        let r = w.client.get_h(path, headers).await;
        asked += 1;
        assert_eq!(
            w.backend.count("GET", path),
            asked,
            "{headers:?} must reach the backend"
        );
        assert_ne!(r.x_cache(), Some("HIT"), "{headers:?}");
        // RFC 9211 §2.2: forwarded because of the request, not a miss.
        assert_eq!(r.cache_status(), "cachegate; fwd=request; stored", "{headers:?}");
        assert_eq!(
            header_of(&w.backend.last_headers(path), "if-none-match").as_deref(),
            Some("\"r\""),
            "{headers:?}: validated with the stored ETag"
        );
    }
    // A request's no-store: its answer is not stored (§5.2.1.5).
    w.backend
        .on("GET", "/req-ns", Reply::new().header("cache-control", "max-age=60"));
    let r = w.client.get_h("/req-ns", &[("cache-control", "no-store")]).await;
    assert_eq!(r.cache_status(), "cachegate; fwd=miss; detail=request-no-store");
    assert_eq!(w.client.get("/req-ns").await.x_cache(), Some("MISS"));
    assert_eq!(w.backend.count("GET", "/req-ns"), 2);
}

async fn catch_all_a_write_invalidates_get_and_head_of_its_uri(kind: Kind) {
    let w = World::start(kind, &template(CATCH_ALL)).await;
    let path = "/doc";
    w.backend
        .on("GET", path, Reply::new().header("cache-control", "max-age=60"));
    // Fill both the GET and (its own key under {method}) the HEAD entry.
    assert_stored(&w, path, "GET").await;
    w.client.head(path).await;
    let head = w.client.head(path).await;
    assert_eq!(head.x_cache(), Some("HIT"), "{}", head.cache_status());

    let post = w.client.method("POST", path).await;
    assert_eq!(post.status, 200);
    let get = w.client.get(path).await;
    assert_eq!(get.x_cache(), Some("MISS"), "POST invalidates GET {path}");
    let head = w.client.head(path).await;
    assert_eq!(
        head.x_cache(),
        Some("MISS"),
        "POST must invalidate every stored response for {path} (RFC 9111 §4.4), the \
         HEAD one included: {}",
        head.cache_status()
    );
}

/// RFC 9111 §4.2.3: the current age starts at max(Age, response_time -
/// Date), so an answer the origin dated long ago is stale on arrival.
async fn catch_all_an_old_date_counts_toward_the_age(kind: Kind) {
    let w = World::start(kind, &template(CATCH_ALL)).await;
    // The origin says the response was generated an hour ago (Date), with
    // 60 s of freshness: its apparent age (RFC 9111 §4.2.3, response_time -
    // date_value = 3600 s) exceeds the lifetime, so it is stale on arrival.
    let now = SystemTime::now();
    let hour_ago = date_at(now, -3600);
    w.backend.on(
        "GET",
        "/old/max-age",
        reply(&[("cache-control", "max-age=60"), ("date", &hour_ago)], "old"),
    );
    let hit_or_not = w.client.get("/old/max-age").await;
    assert_eq!(hit_or_not.status, 200);
    let again = w.client.get("/old/max-age").await;
    assert_ne!(
        again.x_cache(),
        Some("HIT"),
        "Date an hour old, max-age=60: the apparent age (3600 s) makes it stale \
         (RFC 9111 §4.2.3); cache-status {:?}, Age {:?}",
        again.cache_status(),
        again.header("age")
    );
    // Expires in the past by wall clock (Expires - Date = 60 s, an hour ago).
    w.backend.on(
        "GET",
        "/old/expires",
        reply(&[("date", &hour_ago), ("expires", &date_at(now, -3540))], "old"),
    );
    w.client.get("/old/expires").await;
    let again = w.client.get("/old/expires").await;
    assert_ne!(
        again.x_cache(),
        Some("HIT"),
        "Expires an hour minus 60 s ago must not be served fresh; cache-status {:?}",
        again.cache_status()
    );
}

async fn catch_all_credential_scope_keeps_authorization_apart(kind: Kind) {
    let w = World::start(kind, &template(CATCH_ALL_CREDENTIAL)).await;
    let path = "/who";
    w.backend
        .on("GET", path, Reply::new().header("cache-control", "public, max-age=60"));
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    let a1 = w.client.get_h(path, &alice).await;
    let b1 = w.client.get_h(path, &bob).await;
    assert_eq!(a1.caller(), "Bearer alice");
    assert_eq!(b1.x_cache(), Some("MISS"), "bob must not get alice's answer");
    assert_eq!(b1.caller(), "Bearer bob");
    let a2 = w.client.get_h(path, &alice).await;
    let b2 = w.client.get_h(path, &bob).await;
    assert_eq!((a2.x_cache(), a2.caller().as_str()), (Some("HIT"), "Bearer alice"));
    assert_eq!((b2.x_cache(), b2.caller().as_str()), (Some("HIT"), "Bearer bob"));
    // No credentials: a scope of its own, never a credentialed answer.
    let anon = w.client.get(path).await;
    assert_eq!((anon.x_cache(), anon.caller().as_str()), (Some("MISS"), ""));
    assert_eq!(w.backend.count("GET", path), 3);
}

/// RFC 9111 §3.5 under the catch-all (`ttl = "origin"`, `scope = "public"`).
/// A public rule with a fixed TTL shares every answer by contract
/// (tests/proxy_credentials.rs `a_public_rule_shares_one_entry`); with
/// `ttl = "origin"` the operator delegates storability to the origin, and
/// then an answer to an authorized request is shared only if it allows it.
async fn catch_all_public_scope_shares_an_authorized_answer_only_if_the_origin_allows(kind: Kind) {
    let w = World::start(kind, &template(CATCH_ALL)).await;
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    // public, s-maxage and must-revalidate allow a shared cache to reuse an
    // answer to a request with Authorization (RFC 9111 §3.5).
    for (id, cc) in [
        ("public", "public, max-age=60"),
        ("s-maxage", "s-maxage=60"),
        ("must-revalidate", "max-age=60, must-revalidate"),
    ] {
        let path = format!("/shared/{id}");
        w.backend.on("GET", &path, Reply::new().header("cache-control", cc));
        let a = w.client.get_h(&path, &alice).await;
        let b = w.client.get_h(&path, &bob).await;
        assert_eq!(b.x_cache(), Some("HIT"), "{cc}: {}", b.cache_status());
        assert_eq!(b.body, a.body);
        assert_eq!(w.backend.count("GET", &path), 1, "{cc}");
    }
    // Without any of them, the answer to alice's request must not serve bob.
    let path = "/shared/plain";
    w.backend
        .on("GET", path, Reply::new().header("cache-control", "max-age=60"));
    let a = w.client.get_h(path, &alice).await;
    assert_eq!(a.caller(), "Bearer alice");
    let b = w.client.get_h(path, &bob).await;
    assert_eq!(
        b.caller(),
        "Bearer bob",
        "RFC 9111 §3.5: a shared cache must not reuse an answer to a request with \
         Authorization unless it is public / s-maxage / must-revalidate; \
         cache-status {:?}",
        b.cache_status()
    );
}
