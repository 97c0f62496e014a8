//! Rules: which requests are cached or purge, and under which keys.
//!
//! Everything here is compiled once at start (regexes, key templates); the
//! request path only runs [`RuleSet::match_cache`] and
//! [`RuleSet::match_invalidate`] and renders templates into strings.

mod template;

pub use template::{glob_escape, query_param, RequestView, Template};

use crate::config::{CacheConfig, InvalidateConfig, RuleConfig, Scope, TtlMode, When};
use http::Method;
use regex::{Captures, Regex};
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
    pub path: Regex,
    pub key: Template,
    pub ttl: TtlMode,
    pub max_ttl: Option<Duration>,
    /// With `TtlMode::Origin`, the lifetime when the origin gives none.
    pub default_ttl: Option<Duration>,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub statuses: Vec<u16>,
    /// Per-status TTLs that override `ttl` (negative caching).
    pub ttl_by_status: Vec<(u16, Duration)>,
    pub scope: Scope,
    pub max_body_bytes: usize,
    pub tags: Vec<Template>,
}

impl CacheRule {
    /// The rule's own TTL for an answer with this status: `Some(Fixed)` or
    /// `Some(Origin)` when the status is stored, `None` when it is not.
    pub fn ttl_for(&self, status: u16) -> Option<TtlMode> {
        if status >= 500 {
            return None;
        }
        if let Some((_, ttl)) = self.ttl_by_status.iter().find(|(s, _)| *s == status) {
            return Some(TtlMode::Fixed(*ttl));
        }
        self.statuses.contains(&status).then_some(self.ttl)
    }
}

/// A compiled `[[invalidate]]`.
#[derive(Debug)]
pub struct InvalidateRule {
    pub name: String,
    pub methods: Vec<Method>,
    pub path: Regex,
    pub keys: Vec<Template>,
    /// Glob patterns; captured values are escaped when rendered.
    pub patterns: Vec<Template>,
    pub tags: Vec<Template>,
    pub when: When,
    pub soft: bool,
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
    pub captures: Captures<'p>,
}

/// Internal keys live under this prefix (after the key prefix); rule keys may not.
pub const INTERNAL_PREFIX: &str = "__cg:";

impl RuleSet {
    pub fn compile(
        rules: &[RuleConfig],
        invalidations: &[InvalidateConfig],
        cache: &CacheConfig,
    ) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet {
            max_key_bytes: cache.max_key_bytes,
            ..RuleSet::default()
        };
        for r in rules {
            let methods = parse_methods(&r.methods, &r.methods_span, true)?;
            let path = compile_regex(&r.path, &r.path_span)?;
            let key = Template::parse(&r.key, &path, false).map_err(|m| err(&r.key_span, m))?;
            let tags = r
                .tags
                .iter()
                .map(|(t, span)| Template::parse(t, &path, false).map_err(|m| err(span, m)))
                .collect::<Result<Vec<_>, _>>()?;
            if r.key.starts_with(INTERNAL_PREFIX) {
                return Err(err(
                    &r.key_span,
                    format!("keys may not start with {INTERNAL_PREFIX:?}, which cachegate keeps for itself"),
                ));
            }
            set.cache.push(CacheRule {
                index: set.cache.len(),
                name: r.name.clone(),
                methods,
                path,
                key,
                ttl: r.ttl.unwrap_or(TtlMode::Fixed(cache.default_ttl)),
                max_ttl: r.max_ttl,
                default_ttl: r.default_ttl,
                stale_while_revalidate: r.stale_while_revalidate,
                stale_if_error: r.stale_if_error,
                statuses: r.statuses.clone(),
                ttl_by_status: r.ttl_by_status.clone(),
                scope: r.scope,
                max_body_bytes: r.max_body_bytes.unwrap_or(cache.max_body_bytes),
                tags,
            });
        }
        for i in invalidations {
            let methods = parse_methods(&i.methods, &i.methods_span, false)?;
            let path = compile_regex(&i.path, &i.path_span)?;
            let keys = i
                .keys
                .iter()
                .map(|(k, span)| Template::parse(k, &path, false).map_err(|m| err(span, m)))
                .collect::<Result<Vec<_>, _>>()?;
            let patterns = i
                .patterns
                .iter()
                .map(|(p, span)| Template::parse(p, &path, true).map_err(|m| err(span, m)))
                .collect::<Result<Vec<_>, _>>()?;
            let tags = i
                .tags
                .iter()
                .map(|(t, span)| Template::parse(t, &path, false).map_err(|m| err(span, m)))
                .collect::<Result<Vec<_>, _>>()?;
            set.invalidate.push(InvalidateRule {
                name: i.name.clone(),
                methods,
                path,
                keys,
                patterns,
                tags,
                when: i.when,
                soft: i.soft,
            });
        }
        Ok(set)
    }

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

    /// Renders a key template; `None` when the key is empty or too long, in
    /// which case the request bypasses the cache.
    pub fn render_key(&self, template: &Template, req: &RequestView<'_>, captures: &Captures<'_>) -> Option<String> {
        let key = template.render(req, captures)?;
        (!key.is_empty() && key.len() <= self.max_key_bytes).then_some(key)
    }
}

fn err(span: &Range<usize>, message: impl Into<String>) -> RuleError {
    RuleError {
        span: span.clone(),
        message: message.into(),
    }
}

fn compile_regex(src: &str, span: &Range<usize>) -> Result<Regex, RuleError> {
    Regex::new(src).map_err(|e| err(span, format!("invalid path regex: {e}")))
}

fn parse_methods(methods: &[String], span: &Range<usize>, cacheable_only: bool) -> Result<Vec<Method>, RuleError> {
    if methods.is_empty() {
        return Err(err(span, "methods must not be empty"));
    }
    methods
        .iter()
        .map(|m| {
            let method =
                Method::from_bytes(m.as_bytes()).map_err(|_| err(span, format!("{m:?} is not an HTTP method")))?;
            if cacheable_only && method != Method::GET && method != Method::HEAD {
                return Err(err(
                    span,
                    format!("only GET and HEAD responses are cached; {m} cannot be in a [[rule]]"),
                ));
            }
            Ok(method)
        })
        .collect()
}

impl fmt::Display for RuleSet {
    /// The compiled rules, as `cachegate check` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.cache {
            let methods: Vec<&str> = r.methods.iter().map(|m| m.as_str()).collect();
            writeln!(
                f,
                "rule {:?}: {} {} -> key {:?} ttl {} statuses {:?} scope {} max_body {} B",
                r.name,
                methods.join(","),
                r.path.as_str(),
                r.key.source(),
                match r.ttl {
                    TtlMode::Fixed(t) => format!("{}s", t.as_secs()),
                    TtlMode::Origin => "origin".to_string(),
                },
                r.statuses,
                match r.scope {
                    Scope::Credential => "credential",
                    Scope::Public => "public",
                },
                r.max_body_bytes
            )?;
        }
        for i in &self.invalidate {
            let methods: Vec<&str> = i.methods.iter().map(|m| m.as_str()).collect();
            let keys: Vec<&str> = i.keys.iter().map(|t| t.source()).collect();
            let patterns: Vec<&str> = i.patterns.iter().map(|t| t.source()).collect();
            let tags: Vec<&str> = i.tags.iter().map(|t| t.source()).collect();
            writeln!(
                f,
                "invalidate {:?}: {} {} -> keys {:?} patterns {:?} tags {:?}{} when {}",
                i.name,
                methods.join(","),
                i.path.as_str(),
                keys,
                patterns,
                tags,
                if i.soft { " (soft)" } else { "" },
                match i.when {
                    When::Success => "success",
                    When::Always => "always",
                }
            )?;
        }
        Ok(())
    }
}
