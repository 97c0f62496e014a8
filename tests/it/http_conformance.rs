//! HTTP caching conformance, round two (issue 17, items 1–5), with the
//! proxy as a plain shared cache (`ttl = "origin"`): every status family
//! the origin gives a lifetime (RFC 9111 §3, §4.2.2, `must-understand`),
//! targeted cache control (RFC 9213), ranges from a stored response
//! (RFC 9110 §14), dates and ages (RFC 9110 §5.6.7, RFC 9111 §4.2.3, §5.1,
//! §5.3) and heuristic freshness (RFC 9111 §4.2.2). Items 6–10 are in
//! `http_exchange.rs`; `docs/http-caching.md` maps every behaviour to its test.

use crate::common::*;
use std::time::{Duration, SystemTime};

both_stores!(
    // 1. status codes
    statuses_2xx_with_a_lifetime_are_stored_and_go_stale_like_200,
    statuses_3xx_with_a_lifetime_are_stored_and_go_stale_like_200,
    statuses_4xx_with_a_lifetime_are_stored_and_go_stale_like_200,
    statuses_5xx_with_a_lifetime_are_stored_and_go_stale_like_200,
    must_understand_stores_only_understood_statuses_and_overrides_no_store,
    statuses_stays_the_override_and_a_fixed_ttl_keeps_its_default,
    // 2. targeted cache control
    a_targeted_field_alone_decides_freshness_and_storability,
    targeted_fields_are_configurable_and_may_be_kept_from_clients,
    // 3. ranges
    ranges_are_answered_from_a_stored_response,
    if_range_holds_only_for_a_strong_validator,
    a_range_miss_is_forwarded_and_its_206_not_stored,
    // 4. dates and ages
    every_http_date_format_sets_the_lifetime,
    age_uses_the_first_value_and_ignores_what_is_not_a_number,
    // 5. heuristic freshness
    heuristic_freshness_is_off_by_default_and_capped_when_on,
);

const ORIGIN: &str = r#"
[[rule]]
name = "all"
path = '^/'
key = "{method}:{host}{path}?{query}"
ttl = "origin"
scope = "public"
"#;

/// A header name and value.
type Field<'a> = (&'a str, &'a str);
/// The `ttl=` range a hit must show, or `None`: not reused.
type TtlRange = Option<(u64, u64)>;

fn template(rules: &str) -> String {
    format!("{HEAD}\n{rules}")
}

/// A programmed answer: status, headers, body.
fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    headers
        .iter()
        .fold(Reply::new().status(status).body(body.to_string()), |r, (n, v)| {
            r.header(n, v)
        })
}

fn ttl_of(r: &Resp) -> u64 {
    r.cache_status()
        .split(';')
        .find_map(|p| p.trim().strip_prefix("ttl="))
        .unwrap_or_else(|| panic!("no ttl= in cache-status {:?}", r.cache_status()))
        .parse()
        .expect("ttl is a number")
}

/// Two GETs: the first stored, the second a hit with the same status and
/// body; the backend asked once. Returns the hit.
async fn stored_and_hit(w: &World, path: &str, what: &str) -> Resp {
    let before = w.backend.count("GET", path);
    let a = w.client.get(path).await;
    assert_eq!(a.cache_status(), "cachegate; fwd=miss; stored", "{what}: first answer");
    let b = w.client.get(path).await;
    assert_eq!(b.x_cache(), Some("HIT"), "{what}: second answer {:?}", b.cache_status());
    assert_eq!(
        (b.status, &b.body),
        (a.status, &a.body),
        "{what}: the hit is the stored answer"
    );
    assert_eq!(w.backend.count("GET", path) - before, 1, "{what}: backend asked once");
    b
}

/// Two GETs, both to the backend. Returns the first answer.
async fn not_reused(w: &World, path: &str, what: &str) -> Resp {
    let before = w.backend.count("GET", path);
    let a = w.client.get(path).await;
    let b = w.client.get(path).await;
    assert_ne!(b.x_cache(), Some("HIT"), "{what}: {:?}", b.cache_status());
    assert_eq!(
        w.backend.count("GET", path) - before,
        2,
        "{what}: both reach the backend"
    );
    a
}

// ---------------------------------------------------------------------------
// 1. Status codes (RFC 9111 §3, §4.2.2, §5.2.2.3)
// ---------------------------------------------------------------------------

/// Each status, given `max-age=2` and an ETag by the origin, is stored and
/// hit; once stale it is revalidated (a 304 refreshes it: REVALIDATED, the
/// stored status and body), and, with `stale-if-error`, served stale when
/// the backend then fails — exactly as a 200 is.
async fn status_family(kind: Kind, statuses: &[u16]) {
    let w = World::start(kind, &template(ORIGIN)).await;
    let body = |s: u16| if s == 204 { String::new() } else { format!("status {s}") };
    for &s in statuses {
        let cc = "max-age=2";
        w.backend.on(
            "GET",
            &format!("/reval/{s}"),
            reply(s, &[("cache-control", cc), ("etag", "\"e\"")], &body(s)),
        );
        let sie = "max-age=2, stale-if-error=60";
        w.backend.on(
            "GET",
            &format!("/sie/{s}"),
            reply(s, &[("cache-control", sie)], &body(s)),
        );
        for path in [format!("/reval/{s}"), format!("/sie/{s}")] {
            let hit = stored_and_hit(&w, &path, &format!("{s}")).await;
            assert_eq!(hit.status.as_u16(), s);
        }
    }
    // Two-second lifetimes (a 1 s one can arrive already 1 s old: the
    // backend's `Date` has whole seconds), so every entry is stale here.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for &s in statuses {
        let path = format!("/reval/{s}");
        w.backend.on(
            "GET",
            &path,
            reply(304, &[("cache-control", "max-age=60"), ("etag", "\"e\"")], ""),
        );
        let r = w.client.get(&path).await;
        assert_eq!(
            w.backend
                .last_headers(&path)
                .and_then(|h| h.get("if-none-match").cloned()),
            Some(http::HeaderValue::from_static("\"e\"")),
            "{s}: a stale entry is validated with its ETag"
        );
        assert_eq!(r.x_cache(), Some("REVALIDATED"), "{s}: {:?}", r.cache_status());
        assert_eq!((r.status.as_u16(), r.text()), (s, body(s)), "{s}: the stored answer");
        let next = w.client.get(&path).await;
        assert_eq!(next.x_cache(), Some("HIT"), "{s}: refreshed by the 304");
        assert_eq!(w.backend.count("GET", &path), 2, "{s}");

        let path = format!("/sie/{s}");
        w.backend.on("GET", &path, reply(502, &[], "backend down"));
        let r = w.client.get(&path).await;
        assert_eq!(
            r.x_cache(),
            Some("STALE"),
            "{s}: stale-if-error: {:?}",
            r.cache_status()
        );
        assert_eq!((r.status.as_u16(), r.text()), (s, body(s)), "{s}: the stale answer");
    }
    println!("statuses {statuses:?}: stored, hit, revalidated and served stale");
}

async fn statuses_2xx_with_a_lifetime_are_stored_and_go_stale_like_200(kind: Kind) {
    status_family(kind, &[200, 203, 204, 299]).await;
}

async fn statuses_3xx_with_a_lifetime_are_stored_and_go_stale_like_200(kind: Kind) {
    status_family(kind, &[300, 301, 302, 303, 307, 308]).await;
}

async fn statuses_4xx_with_a_lifetime_are_stored_and_go_stale_like_200(kind: Kind) {
    status_family(kind, &[400, 403, 404, 405, 410, 414, 499]).await;
}

async fn statuses_5xx_with_a_lifetime_are_stored_and_go_stale_like_200(kind: Kind) {
    status_family(kind, &[500, 501, 502, 503, 504, 599]).await;
}

/// RFC 9111 §5.2.2.3: with `must-understand`, a status whose caching rules
/// the cache implements is stored even with `no-store`; an unknown one
/// (299) is not stored at all.
async fn must_understand_stores_only_understood_statuses_and_overrides_no_store(kind: Kind) {
    let w = World::start(kind, &template(ORIGIN)).await;
    let cc = ("cache-control", "max-age=60, must-understand, no-store");
    for s in [200u16, 404, 301] {
        let path = format!("/mu/{s}");
        w.backend.on("GET", &path, reply(s, &[cc], "understood"));
        stored_and_hit(&w, &path, &format!("must-understand {s}")).await;
    }
    w.backend.on("GET", "/mu/299", reply(299, &[cc], "unknown"));
    let first = not_reused(&w, "/mu/299", "must-understand 299").await;
    assert_eq!(first.cache_status(), "cachegate; fwd=miss; detail=must-understand");
    // Without must-understand, no-store still wins.
    w.backend.on(
        "GET",
        "/ns",
        reply(200, &[("cache-control", "max-age=60, no-store")], "x"),
    );
    not_reused(&w, "/ns", "no-store").await;
}

const OVERRIDES: &str = r#"
[[rule]]
name = "listed"
path = '^/listed/'
key = "listed:{path}"
ttl = "origin"
statuses = [200, 404]

[[rule]]
name = "fixed"
path = '^/fixed/'
key = "fixed:{path}"
ttl = 60
"#;

/// `statuses` listed: only those, whatever the origin says; a fixed TTL
/// without `statuses` stores 200 only (its safe default), however fresh the
/// origin says an error is.
async fn statuses_stays_the_override_and_a_fixed_ttl_keeps_its_default(kind: Kind) {
    let w = World::start(kind, &template(OVERRIDES)).await;
    let cc = [("cache-control", "max-age=60")];
    w.backend.on("GET", "/listed/404", reply(404, &cc, "nf"));
    stored_and_hit(&w, "/listed/404", "listed 404").await;
    w.backend.on("GET", "/listed/410", reply(410, &cc, "gone"));
    let first = not_reused(&w, "/listed/410", "unlisted 410").await;
    assert_eq!(first.cache_status(), "cachegate; fwd=miss; detail=status");
    for s in [404u16, 301, 503] {
        let path = format!("/fixed/{s}");
        w.backend.on("GET", &path, reply(s, &cc, "e"));
        let first = not_reused(&w, &path, &format!("fixed ttl, {s}")).await;
        assert_eq!(first.cache_status(), "cachegate; fwd=miss; detail=status");
    }
    w.backend.on("GET", "/fixed/ok", reply(200, &[], "ok"));
    stored_and_hit(&w, "/fixed/ok", "fixed ttl, 200").await;
}

// ---------------------------------------------------------------------------
// 2. Targeted cache control (RFC 9213)
// ---------------------------------------------------------------------------

/// The first present and valid targeted field (Cachegate-Cache-Control,
/// then CDN-Cache-Control) alone decides; Cache-Control and Expires are
/// ignored for this cache but still reach the client; an invalid targeted
/// field is ignored as a whole.
async fn a_targeted_field_alone_decides_freshness_and_storability(kind: Kind) {
    let w = World::start(kind, &template(ORIGIN)).await;
    let cases: Vec<(&str, Vec<Field>, TtlRange)> = vec![
        (
            "cdn-over-no-store",
            vec![("cache-control", "no-store"), ("cdn-cache-control", "max-age=60")],
            Some((55, 60)),
        ),
        (
            "cdn-no-store",
            vec![("cache-control", "max-age=60"), ("cdn-cache-control", "no-store")],
            None,
        ),
        (
            "cdn-private",
            vec![
                ("cache-control", "public, max-age=60"),
                ("cdn-cache-control", "private"),
            ],
            None,
        ),
        (
            "own-field-first",
            vec![
                ("cdn-cache-control", "max-age=60"),
                ("cachegate-cache-control", "max-age=30"),
            ],
            Some((25, 30)),
        ),
        (
            "invalid-own-field-ignored",
            vec![
                ("cdn-cache-control", "max-age=60"),
                ("cachegate-cache-control", "max-age=30,,"),
            ],
            Some((55, 60)),
        ),
        (
            "invalid-field-falls-back-to-cache-control",
            vec![
                ("cache-control", "max-age=10"),
                ("cdn-cache-control", "max-age=\"60\", =x"),
            ],
            Some((5, 10)),
        ),
        (
            "s-maxage",
            vec![("cache-control", "max-age=5"), ("cdn-cache-control", "s-maxage=40")],
            Some((35, 40)),
        ),
        (
            "expires-ignored",
            vec![("expires", &EXPIRES_IN_60), ("cdn-cache-control", "must-revalidate")],
            None,
        ),
    ];
    for (name, headers, expect) in &cases {
        let path = format!("/t/{name}");
        w.backend.on("GET", &path, reply(200, headers, name));
        match expect {
            Some((lo, hi)) => {
                let hit = stored_and_hit(&w, &path, name).await;
                let ttl = ttl_of(&hit);
                assert!((*lo..=*hi).contains(&ttl), "{name}: ttl {ttl} not in {lo}..={hi}");
                for (n, v) in headers {
                    assert_eq!(hit.header(n), Some(*v), "{name}: {n} reaches the client");
                }
            }
            None => {
                not_reused(&w, &path, name).await;
            }
        }
    }
}

static EXPIRES_IN_60: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60)));

/// `[cache] targeted_cache_control` names the fields (here one of the
/// operator's own) and `forward_targeted_cache_control = false` keeps them
/// from clients, on misses and hits alike.
async fn targeted_fields_are_configurable_and_may_be_kept_from_clients(kind: Kind) {
    let cache = "[cache]\ntargeted_cache_control = [\"Edge-Control\"]\nforward_targeted_cache_control = false\n";
    let w = World::start(kind, &format!("{HEAD}\n{cache}\n{ORIGIN}")).await;
    w.backend.on(
        "GET",
        "/own",
        reply(
            200,
            &[("cache-control", "no-store"), ("edge-control", "max-age=60")],
            "x",
        ),
    );
    let hit = stored_and_hit(&w, "/own", "Edge-Control").await;
    assert_eq!(hit.header("edge-control"), None, "kept from clients");
    assert_eq!(
        hit.header("cache-control"),
        Some("no-store"),
        "Cache-Control still reaches them"
    );
    // CDN-Cache-Control is not among the configured fields now.
    w.backend.on(
        "GET",
        "/cdn",
        reply(
            200,
            &[("cache-control", "no-store"), ("cdn-cache-control", "max-age=60")],
            "x",
        ),
    );
    not_reused(&w, "/cdn", "CDN-Cache-Control not configured").await;
    let bad = format!("{HEAD}\n[cache]\ntargeted_cache_control = [\"bad name\"]\n{ORIGIN}");
    let text = render(&bad, Kind::Memory, "http://127.0.0.1:1", None);
    let err = cachegate::config::Config::from_toml_str(&text).expect_err("a bad header name is refused");
    assert!(err.to_string().contains("bad name"), "{err}");
}

// ---------------------------------------------------------------------------
// 3. Ranges (RFC 9110 §14, §13.1.5; RFC 9111 §3.3–3.4)
// ---------------------------------------------------------------------------

const DIGITS: &str = "0123456789";

async fn ranged(w: &World, path: &str, headers: &[(&str, &str)]) -> Resp {
    w.client.get_h(path, headers).await
}

/// Single ranges `a-b`, `a-`, `-n`, clipping, 416 with `bytes */len`, and
/// two ranges as `multipart/byteranges`, all from the stored entry.
async fn ranges_are_answered_from_a_stored_response(kind: Kind) {
    let w = World::start(kind, &template(ORIGIN)).await;
    let path = "/r/digits";
    w.backend.on(
        "GET",
        path,
        reply(
            200,
            &[("cache-control", "max-age=60"), ("content-type", "text/plain")],
            DIGITS,
        ),
    );
    stored_and_hit(&w, path, "digits").await;
    for (range, body, content_range) in [
        ("bytes=2-4", "234", "bytes 2-4/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=5-100", "56789", "bytes 5-9/10"),
        ("bytes=-20", DIGITS, "bytes 0-9/10"),
        ("BYTES = 0-0", "0", "bytes 0-0/10"),
    ] {
        let r = ranged(&w, path, &[("range", range)]).await;
        assert_eq!(r.status, 206, "{range}: {:?}", r.text());
        assert_eq!(r.text(), body, "{range}");
        assert_eq!(r.header("content-range"), Some(content_range), "{range}");
        assert_eq!(
            r.header("content-length"),
            Some(body.len().to_string().as_str()),
            "{range}"
        );
        assert_eq!(r.x_cache(), Some("HIT"), "{range}");
    }
    for range in ["bytes=10-", "bytes=20-30", "bytes=-0"] {
        let r = ranged(&w, path, &[("range", range)]).await;
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.x_cache(), Some("HIT"), "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */10"), "{range}");
    }
    // Ignored (the whole answer): another unit, bad syntax, HEAD.
    for range in ["items=0-1", "bytes=4-2", "bytes=x-"] {
        let r = ranged(&w, path, &[("range", range)]).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, DIGITS), "{range}");
        assert_eq!(r.x_cache(), Some("HIT"), "{range}");
    }
    // HEAD (its own key under this rule: `{method}` is part of it).
    let head = w.client.head_h(path, &[("range", "bytes=0-1")]).await;
    assert_eq!(head.status, 200, "HEAD ignores Range");
    // Two ranges: multipart/byteranges.
    let r = ranged(&w, path, &[("range", "bytes=0-1, 8-9")]).await;
    assert_eq!(r.status, 206);
    let content_type = r.header("content-type").unwrap_or_default().to_string();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("multipart content type, got {content_type:?}"));
    let text = r.text();
    assert!(text.contains("Content-Range: bytes 0-1/10\r\n\r\n01\r\n"), "{text:?}");
    assert!(text.contains("Content-Range: bytes 8-9/10\r\n\r\n89\r\n"), "{text:?}");
    assert!(text.contains("Content-Type: text/plain\r\n"), "{text:?}");
    assert!(text.ends_with(&format!("--{boundary}--\r\n")), "{text:?}");
    assert_eq!(
        w.backend.count("GET", path),
        2,
        "every GET range came from the cache (and the HEAD's fill)"
    );
}

/// `If-Range` holds for the stored strong ETag or the exact Last-Modified
/// date: 206; a weak or different validator: the whole 200 (§13.1.5).
async fn if_range_holds_only_for_a_strong_validator(kind: Kind) {
    let w = World::start(kind, &template(ORIGIN)).await;
    let modified = "Thu, 01 Jan 2026 00:00:00 GMT";
    let headers = [
        ("cache-control", "max-age=60"),
        ("etag", "\"d1\""),
        ("last-modified", modified),
    ];
    w.backend.on("GET", "/ir", reply(200, &headers, DIGITS));
    stored_and_hit(&w, "/ir", "if-range").await;
    for (if_range, partial) in [
        ("\"d1\"", true),
        (modified, true),
        ("W/\"d1\"", false),
        ("\"d2\"", false),
        ("Thu, 01 Jan 2026 00:00:01 GMT", false),
    ] {
        let r = ranged(&w, "/ir", &[("range", "bytes=0-2"), ("if-range", if_range)]).await;
        let expect = if partial { (206, "012") } else { (200, DIGITS) };
        assert_eq!((r.status.as_u16(), r.text().as_str()), expect, "If-Range {if_range}");
    }
    assert_eq!(w.backend.count("GET", "/ir"), 1);
}

/// A range request that misses is forwarded with its `Range`; the origin's
/// 206 reaches the client and is not stored (cachegate stores complete
/// answers only); an origin that ignores `Range` (200) fills the entry and
/// the client still gets its range.
async fn a_range_miss_is_forwarded_and_its_206_not_stored(kind: Kind) {
    let w = World::start(kind, &template(ORIGIN)).await;
    w.backend.on(
        "GET",
        "/p",
        reply(
            206,
            &[("cache-control", "max-age=60"), ("content-range", "bytes 0-2/10")],
            "012",
        ),
    );
    let r = ranged(&w, "/p", &[("range", "bytes=0-2")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (206, "012"));
    assert_eq!(
        w.backend.last_headers("/p").and_then(|h| h.get("range").cloned()),
        Some(http::HeaderValue::from_static("bytes=0-2")),
        "the Range reaches the backend"
    );
    let again = ranged(&w, "/p", &[("range", "bytes=0-2")]).await;
    assert_ne!(again.x_cache(), Some("HIT"), "a 206 is never stored");
    assert_eq!(w.backend.count("GET", "/p"), 2);

    w.backend
        .on("GET", "/whole", reply(200, &[("cache-control", "max-age=60")], DIGITS));
    let r = ranged(&w, "/whole", &[("range", "bytes=3-4")]).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (206, "34"),
        "{:?}",
        r.cache_status()
    );
    assert_eq!(r.cache_status(), "cachegate; fwd=miss; stored");
    let hit = w.client.get("/whole").await;
    assert_eq!((hit.x_cache(), hit.text().as_str()), (Some("HIT"), DIGITS));
}

// ---------------------------------------------------------------------------
// 4. Dates and ages (RFC 9110 §5.6.7; RFC 9111 §4.2.3, §5.1, §5.3)
// ---------------------------------------------------------------------------

/// `Expires` − `Date` in IMF-fixdate, RFC 850 and asctime, names in any
/// case; an invalid `Expires` (near misses of those formats included) is
/// already expired. `Date` is kept on hits.
async fn every_http_date_format_sets_the_lifetime(kind: Kind) {
    let w = World::start(kind, &template(ORIGIN)).await;
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now);
    let later = now + Duration::from_secs(120);
    let imf = httpdate::fmt_http_date(later);
    // "Sun, 06 Nov 1994 08:49:37 GMT" → the other shapes of the same instant.
    let parts: Vec<&str> = imf.split(' ').collect();
    let (weekday, day, month, year, time) = (parts[0].trim_end_matches(','), parts[1], parts[2], parts[3], parts[4]);
    let long_weekday = match weekday {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    let rfc850 = format!("{long_weekday}, {day}-{month}-{} {time} GMT", &year[2..]);
    let asctime = format!("{weekday} {month} {:>2} {time} {year}", day.trim_start_matches('0'));
    // Names in any case are still the same date.
    let cased = [imf.to_lowercase(), imf.to_uppercase().replace("GMT", "gmt")];
    let mut cases = vec![("imf", imf.clone()), ("rfc850", rfc850), ("asctime", asctime)];
    cases.extend(
        cased
            .iter()
            .enumerate()
            .map(|(i, d)| (["lowercase", "uppercase"][i], d.clone())),
    );
    for (name, expires) in &cases {
        let path = format!("/d/{name}");
        w.backend
            .on("GET", &path, reply(200, &[("date", &date), ("expires", expires)], name));
        let hit = stored_and_hit(&w, &path, &format!("Expires {expires:?}")).await;
        let ttl = ttl_of(&hit);
        assert!((110..=120).contains(&ttl), "{name} ({expires}): ttl {ttl}");
        assert_eq!(hit.header("date"), Some(date.as_str()), "{name}: Date kept");
    }
    // Near misses of the three formats are invalid, so already expired
    // (RFC 9111 §5.3), however far in the future they look.
    let near_misses = [
        ("utc", imf.replace("GMT", "UTC")),
        ("no-comma", imf.replacen(',', "", 1)),
        ("two-spaces", imf.replacen(' ', "  ", 2)),
        ("no-weekday", format!("{day} {month} {year} {time} GMT")),
        (
            "two-digit-year",
            format!("{weekday}, {day} {month} {} {time} GMT", &year[2..]),
        ),
    ];
    for (name, expires) in &near_misses {
        let path = format!("/d/{name}");
        w.backend
            .on("GET", &path, reply(200, &[("date", &date), ("expires", expires)], name));
        not_reused(&w, &path, &format!("Expires {expires:?} is no date")).await;
    }
    for (name, expires) in [
        ("invalid", "soon"),
        ("zero", "0"),
        ("past", "Thu, 01 Jan 1998 00:00:00 GMT"),
    ] {
        w.backend.on(
            "GET",
            &format!("/d/{name}"),
            reply(200, &[("date", &date), ("expires", expires)], name),
        );
        not_reused(
            &w,
            &format!("/d/{name}"),
            &format!("Expires {expires:?} is already expired"),
        )
        .await;
    }
}

/// `Age` with several values uses the first; one that is not a number is
/// ignored; one beyond any lifetime makes the answer stale; the current
/// age (stored Age + time in the cache) shows on hits.
async fn age_uses_the_first_value_and_ignores_what_is_not_a_number(kind: Kind) {
    let w = World::start(kind, &template(ORIGIN)).await;
    let cases: [(&str, &[Field], TtlRange); 5] = [
        ("list", &[("age", "20, 40")], Some((35, 40))),
        ("lines", &[("age", "20"), ("age", "40")], Some((35, 40))),
        ("word", &[("age", "old")], Some((55, 60))),
        ("negative", &[("age", "-30")], Some((55, 60))),
        ("huge", &[("age", "99999999999999999999")], None),
    ];
    for (name, ages, expect) in cases {
        let path = format!("/a/{name}");
        let mut headers = vec![("cache-control", "max-age=60")];
        headers.extend_from_slice(ages);
        w.backend.on("GET", &path, reply(200, &headers, name));
        match expect {
            Some((lo, hi)) => {
                let hit = stored_and_hit(&w, &path, &format!("Age {ages:?}")).await;
                let ttl = ttl_of(&hit);
                assert!((lo..=hi).contains(&ttl), "{name}: ttl {ttl} not in {lo}..={hi}");
                let age: u64 = hit.header("age").expect("Age on a hit").parse().expect("one number");
                // The initial age (the first Age, 0 if ignored), plus at most
                // a second in the cache.
                assert!((60 - hi..=61 - hi).contains(&age), "{name}: current age {age}");
            }
            None => {
                not_reused(&w, &path, &format!("Age {ages:?}")).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 5. Heuristic freshness (RFC 9111 §4.2.2)
// ---------------------------------------------------------------------------

const HEURISTIC: &str = r#"
[[rule]]
name = "guess"
path = '^/guess/'
key = "guess:{path}"
ttl = "origin"
heuristic = "10%"
heuristic_max_ttl = 3600

[[rule]]
name = "no-guess"
path = '^/'
key = "plain:{path}"
ttl = "origin"
"#;

/// Off by default: `Last-Modified` alone is not stored. With `heuristic =
/// "10%"`: 10 % of the time since Last-Modified, capped by
/// `heuristic_max_ttl`, for heuristically cacheable statuses (and `public`
/// answers of others), never over explicit freshness.
async fn heuristic_freshness_is_off_by_default_and_capped_when_on(kind: Kind) {
    let w = World::start(kind, &template(HEURISTIC)).await;
    let now = SystemTime::now();
    let ago = |secs: u64| httpdate::fmt_http_date(now - Duration::from_secs(secs));
    let (ten_days, ten_minutes) = (ago(864_000), ago(600));
    let lm = |v: &str| vec![("last-modified", v.to_string())];
    let on = |path: &str, status: u16, headers: Vec<(&str, String)>| {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        w.backend.on("GET", path, reply(status, &pairs, "h"));
    };
    on("/plain", 200, lm(&ten_days));
    let first = not_reused(&w, "/plain", "no heuristic by default").await;
    assert_eq!(first.cache_status(), "cachegate; fwd=miss; detail=no-freshness");

    on("/guess/capped", 200, lm(&ten_days));
    let ttl = ttl_of(&stored_and_hit(&w, "/guess/capped", "10% of 10 days, capped").await);
    assert!((3590..=3600).contains(&ttl), "capped at heuristic_max_ttl: {ttl}");
    on("/guess/short", 404, lm(&ten_minutes));
    let ttl = ttl_of(&stored_and_hit(&w, "/guess/short", "10% of 10 minutes").await);
    assert!((55..=60).contains(&ttl), "10% of 600 s: {ttl}");
    on("/guess/500", 500, lm(&ten_days));
    not_reused(&w, "/guess/500", "500 is not heuristically cacheable").await;
    let mut public = lm(&ten_days);
    public.push(("cache-control", "public".to_string()));
    on("/guess/302", 302, public);
    stored_and_hit(&w, "/guess/302", "public makes any status heuristically cacheable").await;
    let mut explicit = lm(&ten_days);
    explicit.push(("cache-control", "max-age=30".to_string()));
    on("/guess/explicit", 200, explicit);
    let ttl = ttl_of(&stored_and_hit(&w, "/guess/explicit", "explicit wins").await);
    assert!((25..=30).contains(&ttl), "explicit freshness over heuristics: {ttl}");

    for (rule, wrong) in [
        ("heuristic = \"ten\"", "heuristic must be a percentage"),
        ("heuristic = \"0%\"", "heuristic must be a percentage"),
        ("ttl = 60\nheuristic = \"10%\"", "only with ttl = \"origin\""),
        ("heuristic_max_ttl = 60", "needs heuristic"),
    ] {
        let text = format!(
            "[backend]\nurl = \"http://127.0.0.1:1\"\n\n[store]\nkind = \"memory\"\n\n[[rule]]\nname = \"r\"\npath = '^/x$'\nkey = \"x\"\n{}{rule}\n",
            if rule.starts_with("ttl") { "" } else { "ttl = \"origin\"\n" }
        );
        let err = cachegate::config::Config::from_toml_str(&text)
            .expect_err(rule)
            .to_string();
        assert!(err.contains(wrong), "{rule}: {err}");
    }
}

/// `docs/http-caching.md` maps each RFC behaviour to a test as
/// `module::name`: every one it names exists (a renamed test fails here).
#[test]
fn the_http_caching_doc_names_only_tests_that_exist() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/http-caching.md")).expect("docs/http-caching.md");
    let named = regex::Regex::new(r"`([a-z_]+)::([a-z0-9_]+)`").unwrap();
    let mut checked = 0;
    for c in named.captures_iter(&doc) {
        let (module, name) = (&c[1], &c[2]);
        let file = format!("{root}/tests/it/{module}.rs");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|_| panic!("{module}::{name}: no {file}"));
        assert!(
            text.contains(&format!("fn {name}(")),
            "{module}::{name}: no such test in {file}"
        );
        checked += 1;
    }
    assert!(checked >= 50, "the doc names {checked} tests");
}
