//! Compiling the rule tables, once at start: each `[[rule]]` and
//! `[[invalidate]]` as written ([`RawRule`], [`RawInvalidate`]) is checked
//! and becomes a [`CacheRule`] or [`InvalidateRule`] (regexes compiled,
//! templates parsed); an error names the span of the setting at fault.

use super::file::{ContentCoding, RawInvalidate, RawRule, RawTtl, RuleCompress, RuleDefaults, TtlSource};
use super::path::PathPattern;
use super::{
    CacheRule, DuplicateInputs, Heuristic, InvalidateRule, KeyInputs, RuleError, RuleSet, Scope, Template, TtlMode,
    When, INTERNAL_PREFIX,
};
use http::Method;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

impl RuleSet {
    pub fn compile(
        rules: &[RawRule],
        invalidations: &[RawInvalidate],
        defaults: &RuleDefaults,
    ) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet {
            max_key_bytes: defaults.max_key_bytes,
            ..RuleSet::default()
        };
        for r in rules {
            let rule = cache_rule(r, set.cache.len(), defaults)?;
            set.cache.push(rule);
        }
        for i in invalidations {
            set.invalidate.push(invalidate_rule(i)?);
        }
        Ok(set)
    }
}

fn cache_rule(r: &RawRule, index: usize, defaults: &RuleDefaults) -> Result<CacheRule, RuleError> {
    // The settings first, then the path and templates, each in file order.
    let (ttl, ttl_source) = match ttl(&r.ttl)? {
        Some(given) => (given, TtlSource::Rule),
        None => (TtlMode::Fixed(defaults.ttl), defaults.ttl_source),
    };
    let max_ttl = seconds(&r.max_ttl, "max_ttl")?;
    let default_ttl = seconds(&r.default_ttl, "default_ttl")?;
    let stale_while_revalidate = window(&r.stale_while_revalidate, "stale_while_revalidate")?;
    let stale_if_error = window(&r.stale_if_error, "stale_if_error")?;
    let statuses = statuses(&r.statuses, ttl)?;
    let heuristic = heuristic(r, ttl)?;
    let ttl_by_status = ttl_by_status(&r.ttl_by_status)?;
    let scope = scope(&r.scope)?;
    let duplicate_inputs = duplicate_inputs(&r.duplicate_inputs)?;
    let compress = compress(&r.compress)?;
    let methods = parse_methods(&r.methods, &["GET", "HEAD"], r.name.span(), true)?;
    let path = compile_regex(&r.path)?;
    let key = template(&r.key, &path, false)?;
    let tags = r
        .tags
        .iter()
        .map(|t| template(t, &path, false))
        .collect::<Result<Vec<_>, _>>()?;
    if r.key.get_ref().starts_with(INTERNAL_PREFIX) {
        return Err(err(
            r.key.span(),
            format!("keys may not start with {INTERNAL_PREFIX:?}, which cachegate keeps for itself"),
        ));
    }
    Ok(CacheRule {
        index,
        inputs: KeyInputs::of(std::iter::once(&key).chain(&tags)),
        duplicate_inputs,
        compress,
        name: r.name.get_ref().clone(),
        methods,
        path,
        key,
        ttl,
        ttl_source,
        max_ttl,
        default_ttl,
        stale_while_revalidate,
        stale_if_error,
        statuses,
        heuristic,
        ttl_by_status,
        scope,
        max_body_bytes: r.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        tags,
    })
}

fn invalidate_rule(i: &RawInvalidate) -> Result<InvalidateRule, RuleError> {
    // Default: any outcome. A write that answered 5xx, timed out or was
    // cut off may have committed (see README, "Invalidation").
    let when = match &i.when {
        None => When::Always,
        Some(w) => match w.get_ref().as_str() {
            "success" => When::Success,
            "always" => When::Always,
            other => {
                return Err(err(
                    w.span(),
                    format!("unknown when {other:?}; expected success or always"),
                ))
            }
        },
    };
    let methods = parse_methods(&i.methods, &["POST", "PUT", "PATCH", "DELETE"], i.name.span(), false)?;
    let path = compile_regex(&i.path)?;
    let templates = |list: &[Spanned<String>], glob: bool| {
        list.iter()
            .map(|t| template(t, &path, glob))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(InvalidateRule {
        name: i.name.get_ref().clone(),
        methods,
        keys: templates(&i.keys, false)?,
        patterns: templates(&i.patterns, true)?,
        tags: templates(&i.tags, false)?,
        path,
        when,
        soft: i.soft.unwrap_or(false),
        purge_credential: i.purge_credential.unwrap_or(false),
    })
}

fn err(span: Range<usize>, message: impl Into<String>) -> RuleError {
    RuleError {
        span,
        message: message.into(),
    }
}

fn template(src: &Spanned<String>, path: &PathPattern, glob: bool) -> Result<Template, RuleError> {
    Template::parse(src.get_ref(), path.regex(), glob).map_err(|m| err(src.span(), m))
}

fn compile_regex(src: &Spanned<String>) -> Result<PathPattern, RuleError> {
    PathPattern::new(src.get_ref()).map_err(|e| err(src.span(), format!("invalid path regex: {e}")))
}

/// The listed methods (upper-cased), or `default` when the rule lists none.
fn parse_methods(
    listed: &Option<Spanned<Vec<String>>>,
    default: &[&str],
    fallback_span: Range<usize>,
    cacheable_only: bool,
) -> Result<Vec<Method>, RuleError> {
    let (names, span): (Vec<String>, _) = match listed {
        Some(m) => (m.get_ref().iter().map(|s| s.to_ascii_uppercase()).collect(), m.span()),
        None => (default.iter().map(|s| s.to_string()).collect(), fallback_span),
    };
    if names.is_empty() {
        return Err(err(span, "methods must not be empty"));
    }
    names
        .iter()
        .map(|m| {
            let method = Method::from_bytes(m.as_bytes())
                .map_err(|_| err(span.clone(), format!("{m:?} is not an HTTP method")))?;
            if cacheable_only && method != Method::GET && method != Method::HEAD {
                return Err(err(
                    span.clone(),
                    format!("only GET and HEAD responses are cached; {m} cannot be in a [[rule]]"),
                ));
            }
            Ok(method)
        })
        .collect()
}

fn ttl(raw: &Option<Spanned<RawTtl>>) -> Result<Option<TtlMode>, RuleError> {
    let Some(t) = raw else {
        return Ok(None);
    };
    Ok(Some(match t.get_ref() {
        RawTtl::Word(w) if w == "origin" => TtlMode::Origin,
        RawTtl::Word(w) => {
            return Err(err(t.span(), format!("ttl must be seconds or \"origin\", got {w:?}")));
        }
        RawTtl::Seconds(n) => TtlMode::Fixed(Duration::from_secs(
            u64::try_from(*n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| err(t.span(), "ttl must be a positive number of seconds or \"origin\""))?,
        )),
    }))
}

/// A positive number of seconds, if given.
fn seconds(v: &Option<Spanned<i64>>, what: &str) -> Result<Option<Duration>, RuleError> {
    let Some(v) = v else {
        return Ok(None);
    };
    u64::try_from(*v.get_ref())
        .ok()
        .filter(|t| *t > 0)
        .map(|s| Some(Duration::from_secs(s)))
        .ok_or_else(|| err(v.span(), format!("{what} must be a positive number of seconds")))
}

/// Zero or more seconds; zero when not given.
fn window(v: &Option<Spanned<i64>>, what: &str) -> Result<Duration, RuleError> {
    match v {
        None => Ok(Duration::ZERO),
        Some(v) => u64::try_from(*v.get_ref())
            .map(Duration::from_secs)
            .map_err(|_| err(v.span(), format!("{what} must be zero or a positive number of seconds"))),
    }
}

fn statuses(raw: &Option<Spanned<Vec<u16>>>, ttl: TtlMode) -> Result<Option<Vec<u16>>, RuleError> {
    let Some(s) = raw else {
        return Ok(None);
    };
    let v = s.get_ref();
    if v.is_empty() || v.iter().any(|c| !(200..=599).contains(c)) {
        return Err(err(s.span(), "statuses must list final HTTP status codes (200-599)"));
    }
    if let Some(c) = v.iter().find(|c| **c == 206 || **c == 304) {
        return Err(err(
            s.span(),
            format!("{c} is never stored (cachegate stores complete answers only); remove it from statuses"),
        ));
    }
    if v.iter().any(|c| *c >= 500) && ttl != TtlMode::Origin {
        return Err(err(
            s.span(),
            "5xx answers are stored only with ttl = \"origin\" (for the lifetime the origin gives them); remove them from statuses",
        ));
    }
    Ok(Some(v.clone()))
}

/// `heuristic = "N%"` (0 < N <= 100) and its cap, `heuristic_max_ttl`
/// (default one day, as Squid and Traffic Server cap it).
fn heuristic(r: &RawRule, ttl: TtlMode) -> Result<Option<Heuristic>, RuleError> {
    let max_ttl = seconds(&r.heuristic_max_ttl, "heuristic_max_ttl")?;
    let Some(h) = &r.heuristic else {
        if let Some(m) = &r.heuristic_max_ttl {
            return Err(err(
                m.span(),
                "heuristic_max_ttl needs heuristic (for example heuristic = \"10%\")",
            ));
        }
        return Ok(None);
    };
    let percent = h
        .get_ref()
        .trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<u32>().ok())
        .filter(|n| (1..=100).contains(n))
        .ok_or_else(|| err(h.span(), "heuristic must be a percentage from 1% to 100%, like \"10%\""))?;
    if ttl != TtlMode::Origin {
        return Err(err(h.span(), "heuristic applies only with ttl = \"origin\""));
    }
    Ok(Some(Heuristic {
        percent,
        max_ttl: max_ttl.unwrap_or(Duration::from_secs(86_400)),
    }))
}

type StatusTtls = Spanned<std::collections::BTreeMap<String, i64>>;

fn ttl_by_status(raw: &Option<StatusTtls>) -> Result<Vec<(u16, Duration)>, RuleError> {
    let Some(map) = raw else {
        return Ok(Vec::new());
    };
    let mut ttls = Vec::new();
    for (status, ttl) in map.get_ref() {
        let code = status
            .parse::<u16>()
            .ok()
            .filter(|c| (200..=599).contains(c))
            .ok_or_else(|| {
                err(
                    map.span(),
                    format!("ttl_by_status: {status:?} is not a final HTTP status code"),
                )
            })?;
        if code == 206 || code == 304 {
            return Err(err(
                map.span(),
                format!("ttl_by_status: {code} is never stored (cachegate stores complete answers only)"),
            ));
        }
        if code >= 500 {
            return Err(err(
                map.span(),
                format!("ttl_by_status: {code}: 5xx answers are never cached"),
            ));
        }
        let secs = u64::try_from(*ttl).ok().filter(|t| *t > 0).ok_or_else(|| {
            err(
                map.span(),
                format!("ttl_by_status: {status:?} needs a positive number of seconds"),
            )
        })?;
        ttls.push((code, Duration::from_secs(secs)));
    }
    Ok(ttls)
}

fn scope(raw: &Option<Spanned<String>>) -> Result<Scope, RuleError> {
    let Some(s) = raw else {
        return Ok(Scope::Credential);
    };
    match s.get_ref().as_str() {
        "credential" => Ok(Scope::Credential),
        "public" => Ok(Scope::Public),
        other => Err(err(
            s.span(),
            format!("unknown scope {other:?}; expected credential or public"),
        )),
    }
}

/// `duplicate_inputs = "bypass" | "first" | "reject"`.
fn duplicate_inputs(raw: &Option<Spanned<String>>) -> Result<DuplicateInputs, RuleError> {
    let Some(v) = raw else {
        return Ok(DuplicateInputs::default());
    };
    match v.get_ref().as_str() {
        "bypass" => Ok(DuplicateInputs::Bypass),
        "first" => Ok(DuplicateInputs::First),
        "reject" => Ok(DuplicateInputs::Reject),
        other => Err(err(
            v.span(),
            format!("unknown duplicate_inputs {other:?}; expected bypass, first or reject"),
        )),
    }
}

/// `compress = "off" | "gzip" | "br" | "zstd"`; unset follows `[compression]
/// encode`.
fn compress(raw: &Option<Spanned<String>>) -> Result<RuleCompress, RuleError> {
    let Some(v) = raw else {
        return Ok(RuleCompress::Inherit);
    };
    match v.get_ref().as_str() {
        "off" => Ok(RuleCompress::Off),
        other => match ContentCoding::named(other) {
            Some(coding) => Ok(RuleCompress::Encode(coding)),
            None => Err(err(
                v.span(),
                format!("unknown compress {other:?}; expected off, gzip, br or zstd"),
            )),
        },
    }
}
