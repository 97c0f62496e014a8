//! HTTP caching semantics (RFC 9111, as a shared cache): how long a response
//! is fresh, how long it may be served stale, and what the request asks.
//!
//! We compute these few figures directly rather than through
//! `http-cache-semantics`: that crate's `CachePolicy` would have to be
//! serialized into every entry and re-evaluated on every hit, while a hit
//! here only compares two integers stored in the entry.

use http::{header, HeaderMap};
use std::time::{Duration, SystemTime};

/// The `Cache-Control` directives cachegate acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    pub public: bool,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl Directives {
    pub fn parse(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for part in value.split(',') {
                let (name, arg) = match part.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (part.trim(), None),
                };
                let secs = || arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "public" => d.public = true,
                    "no-store" => d.no_store = true,
                    // `no-cache="field"` restricts fields only; treat as whole.
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "max-age" => d.max_age = secs().or(Some(0)),
                    "s-maxage" => d.s_maxage = secs().or(Some(0)),
                    "stale-while-revalidate" => d.stale_while_revalidate = secs(),
                    "stale-if-error" => d.stale_if_error = secs(),
                    _ => {}
                }
            }
        }
        d
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
    } else {
        let expires = http_date(headers.get(header::EXPIRES)?)
            // An invalid Expires (such as "0") means already expired.
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let date = headers
            .get(header::DATE)
            .and_then(|v| http_date(v).ok())
            .unwrap_or_else(SystemTime::now);
        expires.duration_since(date).map(|d| d.as_secs()).unwrap_or(0)
    };
    Some(Duration::from_secs(lifetime.saturating_sub(age(headers))))
}

/// Raises a response's `Age` to its corrected initial age, max(Age, now −
/// Date) (RFC 9111 §4.2.3), so that time the response spent before it
/// reached us counts against its freshness and shows in `Age` on hits.
pub fn correct_age(headers: &mut HeaderMap, now: SystemTime) {
    let Some(date) = headers.get(header::DATE).and_then(|v| http_date(v).ok()) else {
        return;
    };
    let apparent = now.duration_since(date).map(|d| d.as_secs()).unwrap_or(0);
    if apparent > age(headers) {
        headers.insert(header::AGE, http::HeaderValue::from(apparent));
    }
}

/// The `Age` header's seconds, 0 when absent or invalid.
pub fn age(headers: &HeaderMap) -> u64 {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
        .unwrap_or(0)
}

fn http_date(v: &http::HeaderValue) -> Result<SystemTime, ()> {
    httpdate::parse_http_date(v.to_str().map_err(|_| ())?).map_err(|_| ())
}

/// What the request's own `Cache-Control` / `Pragma` ask of the cache.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestDirectives {
    /// `no-cache`, `max-age=0` or `Pragma: no-cache`: validate before use.
    pub revalidate: bool,
    /// `no-store`: do not store the answer.
    pub no_store: bool,
}

impl RequestDirectives {
    pub fn parse(headers: &HeaderMap) -> RequestDirectives {
        if !headers.contains_key(header::CACHE_CONTROL) && !headers.contains_key(header::PRAGMA) {
            return RequestDirectives::default();
        }
        let d = Directives::parse(headers);
        let pragma_no_cache = !headers.contains_key(header::CACHE_CONTROL)
            && headers
                .get_all(header::PRAGMA)
                .iter()
                .any(|v| v.to_str().is_ok_and(|s| s.to_ascii_lowercase().contains("no-cache")));
        RequestDirectives {
            revalidate: d.no_cache || d.max_age == Some(0) || pragma_no_cache,
            no_store: d.no_store,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

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
        correct_age(&mut headers, date + Duration::from_secs(3600));
        assert_eq!(age(&headers), 3600);
        // A smaller apparent age leaves a larger Age alone.
        correct_age(&mut headers, date + Duration::from_secs(10));
        assert_eq!(age(&headers), 3600);
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
/// `Cache-Status` `detail=` names it). `no-store`, `private` and a missing
/// origin lifetime (without a rule `default_ttl`) are never stored; a
/// `no-cache` answer is stored only with a validator, and then always
/// revalidated before use.
pub fn lifetime(
    rule: &crate::rules::CacheRule,
    status: u16,
    headers: &HeaderMap,
) -> Result<crate::store::entry::Lifetime, &'static str> {
    use crate::config::TtlMode;
    let d = Directives::parse(headers);
    if d.no_store || d.private {
        return Err("cache-control");
    }
    let mut ttl = match rule.ttl_for(status).ok_or("status")? {
        TtlMode::Fixed(t) => t,
        // Stored only to be revalidated before every use (below).
        TtlMode::Origin if d.no_cache => Duration::ZERO,
        TtlMode::Origin => origin_lifetime(headers, &d)
            .or(rule.default_ttl)
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
    let Some(since) = request.get(header::IF_MODIFIED_SINCE).and_then(|v| http_date(v).ok()) else {
        return false;
    };
    let modified = stored.get(header::LAST_MODIFIED).and_then(|v| http_date(v).ok());
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

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

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
    }
}
