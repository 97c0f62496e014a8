//! HTTP caching semantics (RFC 9111, as a shared cache): how long a response
//! is fresh, how long it may be served stale, and what the request asks.
//!
//! We compute these few figures directly rather than through
//! `http-cache-semantics`: that crate's `CachePolicy` would have to be
//! serialized into every entry and re-evaluated on every hit, while a hit
//! here only compares two integers stored in the entry.

use super::http_date::{self, DELTA_SECONDS_MAX};
use http::{header, HeaderMap, HeaderName};
use std::time::{Duration, SystemTime};

/// The cache directives cachegate acts on, from `Cache-Control` or from a
/// targeted field (`targeted.rs`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    pub public: bool,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    /// RFC 9110 §7.7: no intermediary may transform the content (here:
    /// encode it before storing).
    pub no_transform: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// From a targeted field (RFC 9213): `Expires` does not count then.
    pub targeted: bool,
}

/// The `name[=value]` members of a comma-separated directive list, commas
/// inside quoted strings kept (`private="a, b"`); names lower-cased.
fn members(headers: &HeaderMap, name: &HeaderName) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            // A line that is not visible ASCII cannot be read: fail closed.
            out.push(("no-store".to_string(), None));
            continue;
        };
        let mut member = String::new();
        let mut quoted = false;
        let mut escaped = false;
        for c in value.chars().chain(std::iter::once(',')) {
            match c {
                _ if escaped => {
                    escaped = false;
                    member.push(c);
                }
                '\\' if quoted => {
                    escaped = true;
                    member.push(c);
                }
                '"' => {
                    quoted = !quoted;
                    member.push(c);
                }
                ',' if !quoted => {
                    let (n, arg) = match member.trim().split_once('=') {
                        // No whitespace around `=` (RFC 9111 §5.2): `max-age =60`
                        // and `max-age= 60` carry an invalid argument.
                        Some((n, a)) if n.ends_with([' ', '\t']) || a.starts_with([' ', '\t']) => {
                            (n, Some(String::new()))
                        }
                        Some((n, a)) => (n, Some(unquoted(a).to_string())),
                        None => (member.as_str(), None),
                    };
                    let n = n.trim().to_ascii_lowercase();
                    if !n.is_empty() {
                        out.push((n, arg));
                    }
                    member.clear();
                }
                _ => member.push(c),
            }
        }
        if quoted {
            // An unterminated quoted string may hide anything after it:
            // fail closed, as if the line said no-store.
            out.push(("no-store".to_string(), None));
        }
    }
    out
}

/// A quoted-string argument without its quotes (`max-age="60"` is 60).
fn unquoted(arg: &str) -> &str {
    arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')).unwrap_or(arg)
}

impl Directives {
    /// The directives of `Cache-Control`; a directive given twice counts
    /// once, as first given (RFC 9111 §4.2.1).
    pub fn parse(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for (name, arg) in members(headers, &header::CACHE_CONTROL) {
            // `no-cache="field"` and `private="field"` restrict fields only;
            // taken whole (stricter).
            if !d.set_flag(&name) {
                d.set_seconds(&name, arg.as_deref().and_then(http_date::delta_seconds));
            }
        }
        d
    }

    /// Sets a directive that takes no argument; false when `name` is none.
    pub(super) fn set_flag(&mut self, name: &str) -> bool {
        let flag = match name {
            "public" => &mut self.public,
            "no-store" => &mut self.no_store,
            "no-cache" => &mut self.no_cache,
            "private" => &mut self.private,
            "must-revalidate" => &mut self.must_revalidate,
            "proxy-revalidate" => &mut self.proxy_revalidate,
            "must-understand" => &mut self.must_understand,
            "no-transform" => &mut self.no_transform,
            _ => return false,
        };
        *flag = true;
        true
    }

    /// Sets a directive's seconds (`None`: invalid), the first given
    /// winning; an invalid `max-age` or `s-maxage` is 0, since invalid
    /// freshness is stale (§4.2.1). Unknown names are ignored.
    pub(super) fn set_seconds(&mut self, name: &str, secs: Option<u64>) {
        let (slot, invalid) = match name {
            "max-age" => (&mut self.max_age, Some(0)),
            "s-maxage" => (&mut self.s_maxage, Some(0)),
            "stale-while-revalidate" => (&mut self.stale_while_revalidate, None),
            "stale-if-error" => (&mut self.stale_if_error, None),
            _ => return,
        };
        if slot.is_none() {
            *slot = secs.map(|s| s.min(DELTA_SECONDS_MAX)).or(invalid);
        }
    }

    /// What decides this cache's handling of a response: the first
    /// present and valid targeted field in `targeted`, else `Cache-Control`.
    pub fn of_response(headers: &HeaderMap, targeted: &[HeaderName]) -> Directives {
        if targeted.is_empty() {
            return Directives::parse(headers);
        }
        super::targeted::directives(headers, targeted).unwrap_or_else(|| Directives::parse(headers))
    }

    /// Whether stale use without validation is forbidden (RFC 9111 §5.2.2.2,
    /// §5.2.2.8; `s-maxage` implies `proxy-revalidate` for shared caches).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

/// The freshness lifetime the origin gave (s-maxage, max-age, Expires),
/// less the age the response already had; `None` when it gave none.
pub fn origin_lifetime(headers: &HeaderMap, d: &Directives) -> Option<Duration> {
    let lifetime = if let Some(s) = d.s_maxage {
        s
    } else if let Some(m) = d.max_age {
        m
    } else if d.targeted {
        return None;
    } else {
        let expires = http_date::parse(headers.get(header::EXPIRES)?.to_str().unwrap_or(""))
            // An invalid Expires (such as "0") means already expired.
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let date = date(headers).unwrap_or_else(SystemTime::now);
        expires.duration_since(date).map(|d| d.as_secs()).unwrap_or(0)
    };
    Some(Duration::from_secs(lifetime.saturating_sub(age(headers))))
}

/// Heuristic freshness (RFC 9111 §4.2.2): `percent` of the time since
/// `Last-Modified` (as of `Date`), at most `max`; `None` without a usable
/// `Last-Modified`.
pub fn heuristic_lifetime(headers: &HeaderMap, percent: u32, max: Duration) -> Option<Duration> {
    let modified = http_date::parse(headers.get(header::LAST_MODIFIED)?.to_str().ok()?)?;
    let date = date(headers).unwrap_or_else(SystemTime::now);
    let since = date.duration_since(modified).ok()?;
    let lifetime = (since * percent / 100).min(max);
    Some(Duration::from_secs(lifetime.as_secs().saturating_sub(age(headers))))
}

fn date(headers: &HeaderMap) -> Option<SystemTime> {
    http_date::parse(headers.get(header::DATE)?.to_str().ok()?)
}

/// Raises a response's `Age` to its corrected initial age (RFC 9111
/// §4.2.3): the larger of `now − Date` and `Age` plus the time the backend
/// took to answer, so time the response spent before it reached us counts
/// against its freshness and shows in `Age` on hits. `Date` is kept.
pub fn correct_age(headers: &mut HeaderMap, asked_at: SystemTime, now: SystemTime) {
    let delay = now.duration_since(asked_at).map(|d| d.as_secs()).unwrap_or(0);
    let apparent = date(headers)
        .and_then(|date| now.duration_since(date).ok())
        .map_or(0, |d| d.as_secs());
    let corrected = apparent.max(age(headers).saturating_add(delay)).min(DELTA_SECONDS_MAX);
    if corrected > 0 || headers.contains_key(header::AGE) {
        headers.insert(header::AGE, http::HeaderValue::from(corrected));
    }
}

/// The `Age` header's seconds: the first member of the first line (RFC 9111
/// §5.1), without parameters; 0 when absent or not a number (then it is
/// ignored).
pub fn age(headers: &HeaderMap) -> u64 {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        // `Age: 7200;foo=bar` reads as 7200 (a parameter never makes it younger).
        .and_then(|v| http_date::delta_seconds(v.split([',', ';']).next().unwrap_or("")))
        .unwrap_or(0)
}

/// What the request's own `Cache-Control` / `Pragma` ask of the cache
/// (RFC 9111 §5.2.1, §5.4).
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestDirectives {
    /// `no-cache`, `max-age=0` or `Pragma: no-cache`: validate before use.
    pub revalidate: bool,
    /// `no-store`: do not store the answer.
    pub no_store: bool,
    /// `max-age=N` (N > 0): nothing older than N seconds.
    pub max_age: Option<u64>,
    /// `max-stale[=N]`: stale up to N seconds is acceptable (bare: any).
    pub max_stale: Option<u64>,
    /// `min-fresh=N`: fresh for at least N more seconds.
    pub min_fresh: Option<u64>,
    /// `only-if-cached`: never ask the backend; 504 when nothing usable.
    pub only_if_cached: bool,
}

impl RequestDirectives {
    pub fn parse(headers: &HeaderMap) -> RequestDirectives {
        if !headers.contains_key(header::CACHE_CONTROL) && !headers.contains_key(header::PRAGMA) {
            return RequestDirectives::default();
        }
        let mut r = RequestDirectives::default();
        for (name, arg) in members(headers, &header::CACHE_CONTROL) {
            let secs = || arg.as_deref().and_then(http_date::delta_seconds);
            match name.as_str() {
                "no-cache" => r.revalidate = true,
                "no-store" => r.no_store = true,
                "max-age" => match secs() {
                    Some(0) | None => r.revalidate = true,
                    Some(n) => r.max_age = Some(n),
                },
                "max-stale" => r.max_stale = Some(secs().unwrap_or(if arg.is_some() { 0 } else { u64::MAX })),
                "min-fresh" => r.min_fresh = secs(),
                "only-if-cached" => r.only_if_cached = true,
                _ => {}
            }
        }
        // Pragma counts only without Cache-Control (§5.4).
        if !headers.contains_key(header::CACHE_CONTROL) {
            r.revalidate |= members(headers, &header::PRAGMA).iter().any(|(n, _)| n == "no-cache");
        }
        r
    }

    /// Whether any fresh entry will do: nothing asked of its age.
    pub fn takes_any_fresh(&self) -> bool {
        !self.revalidate && self.max_age.is_none() && self.min_fresh.is_none()
    }

    /// Whether a stored entry may answer this request without the backend;
    /// a stale one only where `may_serve_stale` (no response directive
    /// forbids it) and the request's `max-stale` allows.
    pub fn accepts(&self, entry: &EntryAge, may_serve_stale: bool) -> bool {
        if self.revalidate || self.max_age.is_some_and(|m| entry.current_age > m) {
            return false;
        }
        if entry.fresh {
            return self.min_fresh.map_or(true, |m| entry.fresh_left >= m);
        }
        may_serve_stale && self.min_fresh.is_none() && self.max_stale.is_some_and(|m| entry.stale_for <= m)
    }
}

/// A stored entry's age figures, in whole seconds, as the request
/// directives compare them.
pub struct EntryAge {
    pub fresh: bool,
    pub fresh_left: u64,
    pub stale_for: u64,
    pub current_age: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::gateway::test_headers as h;

    #[test]
    fn parses_directives() {
        let d = Directives::parse(&h(&[
            ("cache-control", "public, max-age=60, S-MAXAGE=\"120\""),
            ("cache-control", "stale-while-revalidate=30, must-revalidate"),
        ]));
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(120));
        assert_eq!(d.stale_while_revalidate, Some(30));
        assert!(d.must_revalidate && d.forbids_stale());
    }

    #[test]
    fn parsing_follows_the_grammar() {
        let cc = |v: &str| Directives::parse(&h(&[("cache-control", v)]));
        // Commas inside quoted strings do not split; quoted max-age is read.
        assert_eq!(cc("private=\"a, max-age=5\", max-age=60").max_age, Some(60));
        assert_eq!(cc("extension=\"max-age=3600\", max-age=1").max_age, Some(1));
        assert_eq!(cc("max-age=\"3600\"").max_age, Some(3600));
        // The first of two wins; whitespace around `=` or single quotes: invalid (stale).
        assert_eq!(cc("max-age=1800, max-age=1").max_age, Some(1800));
        assert_eq!(cc("max-age =3600").max_age, Some(0));
        assert_eq!(cc("max-age= 3600").max_age, Some(0));
        assert_eq!(cc("max-age='3600'").max_age, Some(0));
        assert_eq!(cc("max-age=003600").max_age, Some(3600));
        assert_eq!(cc("max-age=99999999999999999999").max_age, Some(DELTA_SECONDS_MAX));
        assert!(cc("MUST-UNDERSTAND, no-store").must_understand);
        // An escaped quote does not end a quoted string; one left open fails closed.
        assert!(cc("max-age=3600, ext=\"a\\\"b\", private").private);
        assert!(cc("max-age=60, x=\"oops, private").no_store);
    }

    #[test]
    fn age_is_the_first_member_without_parameters() {
        let a = |v: &[(&str, &str)]| age(&h(v));
        assert_eq!(a(&[("age", "7200, 0")]), 7200);
        assert_eq!(a(&[("age", "0"), ("age", "7200")]), 0);
        assert_eq!(a(&[("age", "7200;foo=bar")]), 7200);
        assert_eq!(a(&[("age", "abc")]), 0);
        assert_eq!(a(&[("age", "-7200")]), 0);
        assert_eq!(a(&[("age", "7200.0")]), 0);
        assert_eq!(a(&[("age", "2147483649")]), DELTA_SECONDS_MAX);
    }

    #[test]
    fn origin_lifetime_prefers_s_maxage_then_max_age_then_expires_less_age() {
        let with = |cc: &str| {
            let headers = h(&[("cache-control", cc), ("age", "10")]);
            origin_lifetime(&headers, &Directives::parse(&headers))
        };
        assert_eq!(with("max-age=60, s-maxage=100"), Some(Duration::from_secs(90)));
        assert_eq!(with("max-age=60"), Some(Duration::from_secs(50)));
        assert_eq!(with("max-age=5"), Some(Duration::ZERO));
        assert_eq!(with("public"), None);
        let headers = h(&[
            ("date", "Thu, 26 Nov 2026 10:00:00 GMT"),
            ("expires", "Thu, 26 Nov 2026 10:05:00 GMT"),
        ]);
        assert_eq!(
            origin_lifetime(&headers, &Directives::default()),
            Some(Duration::from_secs(300))
        );
        let headers = h(&[("expires", "0")]);
        assert_eq!(origin_lifetime(&headers, &Directives::default()), Some(Duration::ZERO));
    }

    #[test]
    fn age_is_corrected_by_date() {
        let mut headers = h(&[("date", "Thu, 26 Nov 2026 10:00:00 GMT"), ("age", "5")]);
        let date = httpdate::parse_http_date("Thu, 26 Nov 2026 10:00:00 GMT").unwrap();
        let now = date + Duration::from_secs(3600);
        correct_age(&mut headers, now, now);
        assert_eq!(age(&headers), 3600);
        // A smaller apparent age leaves a larger Age alone.
        let now = date + Duration::from_secs(10);
        correct_age(&mut headers, now, now);
        assert_eq!(age(&headers), 3600);
        // The time the backend took to answer counts (Age + response delay).
        let mut headers = h(&[("age", "5")]);
        correct_age(&mut headers, now - Duration::from_secs(2), now);
        assert_eq!(age(&headers), 7);
    }

    #[test]
    fn request_directives() {
        assert!(RequestDirectives::parse(&h(&[("cache-control", "no-cache")])).revalidate);
        assert!(RequestDirectives::parse(&h(&[("cache-control", "max-age=0")])).revalidate);
        assert!(RequestDirectives::parse(&h(&[("pragma", "no-cache")])).revalidate);
        assert!(!RequestDirectives::parse(&h(&[("cache-control", "max-age=10")])).revalidate);
        assert!(RequestDirectives::parse(&h(&[("cache-control", "no-store")])).no_store);
    }
}

/// How long an answer is kept under a rule, or why it is not stored (as
/// `Cache-Status` `detail=` names it). `d` are the response's directives
/// (`Directives::of_response`). `no-store` (unless `must-understand` and
/// the status is understood), `private` and a missing lifetime are never
/// stored; a `no-cache` answer is stored only with a validator, and then
/// always revalidated before use.
pub fn lifetime(
    rule: &crate::rules::CacheRule,
    status: u16,
    headers: &HeaderMap,
    d: &Directives,
) -> Result<crate::store::entry::Lifetime, &'static str> {
    use crate::config::TtlMode;
    if d.must_understand && !understood(status) {
        return Err("must-understand");
    }
    // must-understand with an understood status overrides no-store (§5.2.2.3).
    if (d.no_store && !d.must_understand) || d.private {
        return Err("cache-control");
    }
    let mut ttl = match rule.ttl_for(status).ok_or("status")? {
        TtlMode::Fixed(t) => t,
        // Stored only to be revalidated before every use (below).
        TtlMode::Origin if d.no_cache => Duration::ZERO,
        TtlMode::Origin => origin_lifetime(headers, d)
            .or_else(|| guessed_lifetime(rule, status, headers, d))
            .ok_or("no-freshness")?,
    };
    if let Some(max) = rule.max_ttl {
        ttl = ttl.min(max);
    }
    if d.no_cache {
        if !has_validator(headers) {
            return Err("no-cache");
        }
        ttl = Duration::ZERO;
    }
    let window =
        |directive: Option<u64>, rule_window: Duration| directive.map(Duration::from_secs).unwrap_or(rule_window);
    Ok(crate::store::entry::Lifetime {
        ttl,
        stale_while_revalidate: window(d.stale_while_revalidate, rule.stale_while_revalidate),
        stale_if_error: window(d.stale_if_error, rule.stale_if_error),
        must_revalidate: d.forbids_stale(),
    })
}

/// A lifetime the origin did not give: the rule's heuristic for the
/// heuristically cacheable statuses (or `public` answers) with
/// `Last-Modified`, else the rule's `default_ttl` for the statuses it
/// stores by default.
fn guessed_lifetime(
    rule: &crate::rules::CacheRule,
    status: u16,
    headers: &HeaderMap,
    d: &Directives,
) -> Option<Duration> {
    let heuristic = rule
        .heuristic
        .filter(|_| heuristically_cacheable(status) || d.public)
        .and_then(|h| heuristic_lifetime(headers, h.percent, h.max_ttl));
    heuristic.or_else(|| rule.default_ttl.filter(|_| rule.stores_by_default(status)))
}

/// Final statuses whose meaning (and so whose caching rules) cachegate
/// implements: those RFC 9110 §15 defines, but 206 (cachegate stores only
/// complete answers) and 304 (an answer to a conditional request).
pub fn understood(status: u16) -> bool {
    matches!(
        status,
        200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421..=422 | 426 | 500..=505
    )
}

/// Statuses that may be given a heuristic lifetime (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(status, 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Whether a response carries `ETag` or `Last-Modified`.
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// Whether a client's conditional request is satisfied by a stored
/// response's validators, so it gets 304 (RFC 9110 §13.1.2, §13.1.3).
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(inm) = request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return inm.trim() == "*";
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return inm.split(',').any(|t| t.trim() == "*" || weak(t) == weak(etag));
    }
    // The stored date is parsed only when the request asks.
    let parsed = |v: &http::HeaderValue| http_date::parse(v.to_str().ok()?);
    let Some(since) = request.get(header::IF_MODIFIED_SINCE).and_then(parsed) else {
        return false;
    };
    // Without Last-Modified, the stored Date stands for it (RFC 9111 §4.3.2).
    let modified = stored
        .get(header::LAST_MODIFIED)
        .or_else(|| stored.get(header::DATE))
        .and_then(parsed);
    modified.is_some_and(|m| m <= since)
}

/// Headers a 304 answer carries from the stored response (RFC 9110 §15.4.5).
pub const NOT_MODIFIED_HEADERS: [header::HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

#[cfg(test)]
mod conditional_tests {
    use super::*;

    use crate::gateway::test_headers as h;

    #[test]
    fn conditionals() {
        let stored = h(&[("etag", "\"v1\""), ("last-modified", "Thu, 26 Nov 2026 10:00:00 GMT")]);
        assert!(not_modified(&h(&[("if-none-match", "\"v0\", W/\"v1\"")]), &stored));
        assert!(!not_modified(&h(&[("if-none-match", "\"v2\"")]), &stored));
        assert!(not_modified(&h(&[("if-none-match", "*")]), &stored));
        // If-None-Match wins over If-Modified-Since.
        assert!(!not_modified(
            &h(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Thu, 26 Nov 2026 11:00:00 GMT")
            ]),
            &stored
        ));
        assert!(not_modified(
            &h(&[("if-modified-since", "Thu, 26 Nov 2026 10:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &h(&[("if-modified-since", "Thu, 26 Nov 2026 09:59:59 GMT")]),
            &stored
        ));
        assert!(!not_modified(&HeaderMap::new(), &stored));
        // No Last-Modified: the stored Date stands for it (§4.3.2).
        let dated = h(&[("date", "Thu, 26 Nov 2026 10:00:00 GMT")]);
        let since = |d: &str| h(&[("if-modified-since", d)]);
        assert!(not_modified(&since("Thu, 26 Nov 2026 10:00:00 GMT"), &dated));
        assert!(!not_modified(&since("Thu, 26 Nov 2026 09:00:00 GMT"), &dated));
    }
}
