//! Rules: which requests are cached or purge, and under which keys.
//!
//! Everything here is compiled once at start (regexes, key templates); the
//! request path only runs [`RuleSet::match_cache`] and
//! [`RuleSet::match_invalidate`] and renders templates into strings.

mod compile;
mod file;
pub mod glob;
mod inputs;
mod path;
mod template;

pub use file::{
    ContentCoding, DuplicateInputs, RawInvalidate, RawRule, RawTtl, RuleCompress, RuleDefaults, Scope, TtlMode,
    TtlSource, When,
};
pub use inputs::KeyInputs;
pub use path::{PathCaptures, PathPattern};
pub use template::{glob_escape, query_param, RequestView, Template};

use http::Method;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

/// A rule problem at a span of the config file.
#[derive(Debug)]
pub struct RuleError {
    pub span: Range<usize>,
    pub message: String,
}

/// A compiled `[[rule]]`.
#[derive(Debug)]
pub struct CacheRule {
    /// Position in the rule set (metrics are kept per index).
    pub index: usize,
    pub name: String,
    pub methods: Vec<Method>,
    pub path: PathPattern,
    pub key: Template,
    pub ttl: TtlMode,
    /// Where `ttl` came from (the rule, or a default and which).
    pub ttl_source: TtlSource,
    pub max_ttl: Option<Duration>,
    /// With `TtlMode::Origin`, the lifetime when the origin gives none.
    pub default_ttl: Option<Duration>,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// The statuses stored, as `statuses` lists them; `None`: the default
    /// (200 with a fixed TTL; with `ttl = "origin"`, any final status the
    /// origin gives a lifetime, but 206 and 304).
    pub statuses: Option<Vec<u16>>,
    /// `heuristic`: a lifetime for answers with `Last-Modified` and no
    /// explicit freshness, with `ttl = "origin"`; `None`: never guess.
    pub heuristic: Option<Heuristic>,
    /// Per-status TTLs that override `ttl` (negative caching).
    pub ttl_by_status: Vec<(u16, Duration)>,
    pub scope: Scope,
    pub max_body_bytes: usize,
    pub tags: Vec<Template>,
    /// The query parameters and headers the key and tags read, found once
    /// here so a request is checked for repeats without parsing templates.
    pub inputs: KeyInputs,
    /// What a request that repeats one of them gets.
    pub duplicate_inputs: DuplicateInputs,
    /// What an identity answer is encoded to before it is stored.
    pub compress: RuleCompress,
}

/// Heuristic freshness: `percent` of the time since `Last-Modified`, at
/// most `max_ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heuristic {
    pub percent: u32,
    pub max_ttl: Duration,
}

impl CacheRule {
    /// The rule's own TTL for an answer with this status: `Some(Fixed)` or
    /// `Some(Origin)` when the status is stored, `None` when it is not.
    pub fn ttl_for(&self, status: u16) -> Option<TtlMode> {
        if let Some((_, ttl)) = self.ttl_by_status.iter().find(|(s, _)| *s == status) {
            return Some(TtlMode::Fixed(*ttl));
        }
        match (&self.statuses, self.ttl) {
            (Some(listed), _) => listed.contains(&status).then_some(self.ttl),
            (None, TtlMode::Fixed(_)) => (status == 200).then_some(self.ttl),
            // Following the origin: whatever final status it gives a
            // lifetime (`freshness::lifetime` decides the rest).
            (None, TtlMode::Origin) => {
                ((200..=599).contains(&status) && status != 206 && status != 304).then_some(self.ttl)
            }
        }
    }

    /// Whether the status is one the rule stores without the origin's say:
    /// those `statuses` lists (200 by default); `default_ttl` applies to these.
    pub fn stores_by_default(&self, status: u16) -> bool {
        self.statuses.as_ref().map_or(status == 200, |s| s.contains(&status))
    }
}

/// A compiled `[[invalidate]]`.
#[derive(Debug)]
pub struct InvalidateRule {
    pub name: String,
    pub methods: Vec<Method>,
    pub path: PathPattern,
    pub keys: Vec<Template>,
    /// Glob patterns; captured values are escaped when rendered.
    pub patterns: Vec<Template>,
    pub tags: Vec<Template>,
    pub when: When,
    pub soft: bool,
    /// Also purge every entry of the calling credential (a logout).
    pub purge_credential: bool,
}

/// All rules, in file order.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub cache: Vec<CacheRule>,
    pub invalidate: Vec<InvalidateRule>,
    max_key_bytes: usize,
}

/// A matched rule and the regex captures of the request path.
pub struct Matched<'r, 'p, R> {
    pub rule: &'r R,
    pub captures: PathCaptures<'p>,
}

/// Internal keys live under this prefix (after the key prefix); rule keys may not.
pub const INTERNAL_PREFIX: &str = "__cg:";

impl RuleSet {
    /// The first cache rule whose methods and path match.
    pub fn match_cache<'r, 'p>(&'r self, method: &Method, path: &'p str) -> Option<Matched<'r, 'p, CacheRule>> {
        self.cache.iter().find_map(|rule| {
            if !rule.methods.contains(method) {
                return None;
            }
            rule.path.captures(path).map(|captures| Matched { rule, captures })
        })
    }

    /// Every invalidation rule whose methods and path match.
    pub fn match_invalidate<'r, 'p>(
        &'r self,
        method: &'r Method,
        path: &'p str,
    ) -> impl Iterator<Item = Matched<'r, 'p, InvalidateRule>> + 'r
    where
        'p: 'r,
    {
        self.invalidate.iter().filter_map(move |rule| {
            if !rule.methods.contains(method) {
                return None;
            }
            rule.path.captures(path).map(|captures| Matched { rule, captures })
        })
    }

    /// Renders a key, pattern or tag template; `None` when it is unusable, in
    /// which case the request bypasses the cache (a purge skips it): a value
    /// that is not text, an empty result, one in cachegate's internal
    /// namespace ([`INTERNAL_PREFIX`]), or one longer than `max_key_bytes`.
    /// For a pattern the limit applies to the shortest key it can match, not
    /// to its glob-escaped spelling: a pattern for a key that fits is kept.
    pub fn render_key(
        &self,
        template: &Template,
        req: &RequestView<'_>,
        captures: &PathCaptures<'_>,
    ) -> Option<String> {
        let (key, key_len) = template.render_measured(req, captures)?;
        let usable = !key.is_empty() && !key.starts_with(INTERNAL_PREFIX) && key_len <= self.max_key_bytes;
        usable.then_some(key)
    }
}

impl fmt::Display for RuleSet {
    /// The compiled rules, as `cachegate check` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.cache {
            let methods: Vec<&str> = r.methods.iter().map(|m| m.as_str()).collect();
            write!(
                f,
                "rule {:?}: {} {} -> key {:?} ttl {} ({}) statuses {} scope {} max_body {} B",
                r.name,
                methods.join(","),
                r.path.as_str(),
                r.key.source(),
                match r.ttl {
                    TtlMode::Fixed(t) => format!("{}s", t.as_secs()),
                    TtlMode::Origin => "origin".to_string(),
                },
                r.ttl_source.as_str(),
                match &r.statuses {
                    Some(listed) => format!("{listed:?}"),
                    None if r.ttl == TtlMode::Origin => "origin's".to_string(),
                    None => "[200]".to_string(),
                },
                match r.scope {
                    Scope::Credential => "credential",
                    Scope::Public => "public",
                },
                r.max_body_bytes
            )?;
            if let Some(h) = r.heuristic {
                write!(f, " heuristic {}% max {}s", h.percent, h.max_ttl.as_secs())?;
            }
            if !r.inputs.is_empty() {
                write!(
                    f,
                    " key inputs {} (repeated: {})",
                    r.inputs,
                    r.duplicate_inputs.as_str()
                )?;
            }
            writeln!(f)?;
        }
        for i in &self.invalidate {
            let methods: Vec<&str> = i.methods.iter().map(|m| m.as_str()).collect();
            let keys: Vec<&str> = i.keys.iter().map(|t| t.source()).collect();
            let patterns: Vec<&str> = i.patterns.iter().map(|t| t.source()).collect();
            let tags: Vec<&str> = i.tags.iter().map(|t| t.source()).collect();
            writeln!(
                f,
                "invalidate {:?}: {} {} -> keys {:?} patterns {:?} tags {:?}{}{} when {}",
                i.name,
                methods.join(","),
                i.path.as_str(),
                keys,
                patterns,
                tags,
                if i.soft { " (soft)" } else { "" },
                if i.purge_credential {
                    " + the caller's credential"
                } else {
                    ""
                },
                match i.when {
                    When::Success => "success",
                    When::Always => "always",
                }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn set(max_key_bytes: usize) -> RuleSet {
        RuleSet {
            max_key_bytes,
            ..RuleSet::default()
        }
    }

    /// Renders `src` (a pattern when `is_pattern`) for `GET /?query`.
    fn render(set: &RuleSet, src: &str, query: &str, is_pattern: bool) -> Option<String> {
        let re = PathPattern::new(r"^/").unwrap();
        let t = Template::parse(src, re.regex(), is_pattern).unwrap();
        let headers = HeaderMap::new();
        let view = RequestView {
            method: &Method::GET,
            host: "h",
            path: "/",
            query: Some(query),
            headers: &headers,
        };
        set.render_key(&t, &view, &re.captures("/").unwrap())
    }

    #[test]
    fn rendered_values_never_address_internal_keys() {
        let set = set(1024);
        // A value's own ':' is encoded, so it cannot spell the prefix...
        assert_eq!(
            render(&set, "{query.q}", "q=__cg:secret", false).as_deref(),
            Some("__cg%3Asecret")
        );
        // ...but with the template's ':' it can: unusable, as a key, a tag
        // or a pattern.
        for is_pattern in [false, true] {
            assert_eq!(render(&set, "{query.a}:{query.b}", "a=__cg&b=secret", is_pattern), None);
            assert_eq!(render(&set, "{query.a}:epoch", "a=__cg", is_pattern), None);
            assert_eq!(render(&set, "{query.a}:*", "a=__cg", is_pattern), None);
            assert_eq!(render(&set, "__cg{query.a}:x", "", is_pattern), None);
        }
        assert_eq!(
            render(&set, "{query.a}:{query.b}", "a=_cg&b=x", false).as_deref(),
            Some("_cg:x")
        );
        assert_eq!(
            render(&set, "{query.a}x", "a=__cg:", false).as_deref(),
            Some("__cg%3Ax")
        );
    }

    #[test]
    fn values_that_are_not_utf8_are_unusable() {
        let set = set(1024);
        for q in ["%FF", "%FE", "%C3%28", "%80"] {
            for is_pattern in [false, true] {
                assert_eq!(render(&set, "s:{query.q}", &format!("q={q}"), is_pattern), None, "{q}");
            }
        }
        assert_eq!(
            render(&set, "s:{query.q}", "q=%EF%BF%BD", false).as_deref(),
            Some("s:\u{FFFD}")
        );
    }

    #[test]
    fn separator_escaping_is_injective_for_keys_and_patterns() {
        let set = set(1024);
        let a = render(&set, "pair:{query.a}:{query.b}", "a=x:y&b=z", false).unwrap();
        let b = render(&set, "pair:{query.a}:{query.b}", "a=x&b=y:z", false).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            render(&set, "s:{query.q}:*", "q=a:b", true).as_deref(),
            Some("s:a%3Ab:*")
        );
    }

    #[test]
    fn a_long_escaped_pattern_for_a_key_that_fits_is_kept() {
        let set = set(64);
        let q = "-".repeat(50);
        // The key fits (2 + 50 + 2 bytes)...
        let key = render(&set, "s:{query.q}:1", &format!("q={q}"), false).unwrap();
        assert_eq!(key.len(), 54);
        // ...so its pattern is kept, though 104 bytes once glob-escaped.
        let pattern = render(&set, "s:{query.q}:*", &format!("q={q}"), true).unwrap();
        assert_eq!(pattern.len(), 2 + 100 + 2);
        assert!(super::glob::glob_match(pattern.as_bytes(), key.as_bytes()));
        // A pattern whose shortest match is too long for any key is dropped,
        // and so is a key or tag over the limit.
        let long = "-".repeat(62);
        assert_eq!(render(&set, "s:{query.q}:*", &format!("q={long}"), true), None);
        assert_eq!(render(&set, "s:{query.q}:1", &format!("q={long}"), false), None);
        // Encoding counts: 21 ':' are 63 bytes in a key, 22 are 66.
        let colons = ":".repeat(21);
        assert_eq!(
            render(&set, "{query.q}", &format!("q={colons}"), false).map(|k| k.len()),
            Some(63)
        );
        assert_eq!(
            render(&set, "{query.q}", &format!("q={colons}"), true).map(|p| p.len()),
            Some(63)
        );
        let colons = ":".repeat(22);
        assert_eq!(render(&set, "{query.q}", &format!("q={colons}"), false), None);
        assert_eq!(render(&set, "{query.q}", &format!("q={colons}"), true), None);
        // Empty stays unusable.
        assert_eq!(render(&set, "{query.q}", "", false), None);
        assert_eq!(render(&set, "{query.q}", "", true), None);
    }
}
