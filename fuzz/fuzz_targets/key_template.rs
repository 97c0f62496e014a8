//! Key and pattern templates: `rules::Template::parse` / `render`, and the
//! same template through `RuleSet::compile` + `match_cache` /
//! `match_invalidate` + `render_key`.
//!
//! Input: UTF-8 text, one field per line:
//!
//! ```text
//! template
//! regex selector (the first character's code picks one of REGEXES)
//! method
//! host
//! path
//! query            (a missing line is no query; an empty one is `?`)
//! name: value      (request headers, any number)
//! ```
//!
//! Checked: nothing panics; a template parses as a key exactly when it
//! parses as a pattern (same error); a key and its pattern render together
//! (or both fail on a non-text header value); when the template's literal
//! text has no glob metacharacter (`*?[\`), the rendered pattern matches the
//! rendered key and nothing else tried (the key plus a byte, minus its last
//! byte, with its last byte changed) — substituted values are glob-escaped;
//! compiled into a rule set, the rule matches the path, `render_key` gives
//! the rendered key unless empty or over `max_key_bytes`, and the
//! invalidation rule renders the same key and pattern.

#![no_main]

use cachegate::rules::{RawInvalidate, RawRule, RequestView, RuleDefaults, RuleSet, Template, INTERNAL_PREFIX};
use cachegate::store::glob::glob_match;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use regex::Regex;
use std::sync::OnceLock;
use std::time::Duration;
use toml::Spanned;

const REGEXES: &[&str] = &[
    r"^/api/v1/tasks/(?P<task_id>[^/]+)$",
    r"(?s)^(?P<all>.*)$",
    r"^/(?P<a>[^/]*)(?:/(?P<b>.*))?$",
    r"^/u/(?P<user>\w+)(?P<rest>/.*)?$",
    r"(?P<x>.)(?P<y>.)?(?P<z>.)?",
    r"^/(?P<id>\d+)$|^/n/(?P<name>[^/]+)$",
    r"^/plain/(.*)$",
];

const MAX_KEY_BYTES: usize = 32;

fn regexes() -> &'static [Regex] {
    static RE: OnceLock<Vec<Regex>> = OnceLock::new();
    RE.get_or_init(|| REGEXES.iter().map(|r| Regex::new(r).unwrap()).collect())
}

/// The template's literal text (placeholders removed, `{{` `}}` unescaped),
/// for a template that parsed.
fn literal_text(t: &str) -> String {
    let mut out = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn defaults() -> RuleDefaults {
    RuleDefaults {
        ttl: Duration::from_secs(300),
        ttl_source: cachegate::rules::TtlSource::BuiltIn,
        max_body_bytes: 1 << 20,
        max_key_bytes: MAX_KEY_BYTES,
    }
}

fn spanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = input.split('\n');
    let template = lines.next().unwrap_or("");
    let selector = lines.next().and_then(|l| l.chars().next()).map_or(0, |c| c as usize);
    let method = lines.next().unwrap_or("GET");
    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
    let host = lines.next().unwrap_or("");
    let path = lines.next().unwrap_or("/");
    let query = lines.next();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.trim_start().as_bytes()),
        ) {
            headers.append(n, v);
        }
    }
    let re = &regexes()[selector % REGEXES.len()];

    let key_t = Template::parse(template, re, false);
    let pat_t = Template::parse(template, re, true);
    let (key_t, pat_t) = match (key_t, pat_t) {
        (Ok(k), Ok(p)) => (k, p),
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            return;
        }
        (k, p) => panic!("key and pattern parse differ: {k:?} vs {p:?}"),
    };
    assert_eq!(key_t.source(), template);
    assert_eq!(pat_t.source(), template);

    let Some(caps) = re.captures(path) else {
        return;
    };
    let view = RequestView {
        method: &method,
        host,
        path,
        query,
        headers: &headers,
    };
    let key = key_t.render(&view, &caps);
    let pat = pat_t.render(&view, &caps);
    assert_eq!(key.is_some(), pat.is_some(), "{key:?} vs {pat:?}");

    if let (Some(key), Some(pat)) = (&key, &pat) {
        if !literal_text(template).contains(['*', '?', '[', '\\']) {
            if key.is_empty() {
                assert!(pat.is_empty(), "{pat:?}");
            } else {
                let (k, p) = (key.as_bytes(), pat.as_bytes());
                assert!(glob_match(p, k), "pattern {pat:?} must match key {key:?}");
                let mut longer = k.to_vec();
                longer.push(b'x');
                assert!(!glob_match(p, &longer), "pattern {pat:?} matches {longer:?}");
                assert!(!glob_match(p, &k[..k.len() - 1]), "pattern {pat:?} matches a prefix");
                let mut changed = k.to_vec();
                *changed.last_mut().unwrap() ^= 1;
                assert!(!glob_match(p, &changed), "pattern {pat:?} matches {changed:?}");
            }
        }
    }

    // The same template in a compiled rule set.
    let rule = RawRule {
        name: spanned("fuzz".into()),
        methods: Some(spanned(vec!["GET".into(), "HEAD".into()])),
        path: spanned(re.as_str().into()),
        key: spanned(template.into()),
        ttl: None,
        max_ttl: None,
        default_ttl: None,
        stale_while_revalidate: None,
        stale_if_error: None,
        statuses: None,
        scope: Some(spanned("public".into())),
        max_body_bytes: None,
        ttl_by_status: None,
        tags: vec![spanned(template.into())],
        duplicate_inputs: None,
    };
    let invalidate = RawInvalidate {
        name: spanned("fuzz".into()),
        methods: Some(spanned(vec!["POST".into()])),
        path: spanned(re.as_str().into()),
        keys: vec![spanned(template.into())],
        patterns: vec![spanned(template.into())],
        tags: vec![spanned(template.into())],
        when: Some(spanned("success".into())),
        soft: None,
        purge_credential: None,
    };
    let set = match RuleSet::compile(&[rule], &[invalidate], &defaults()) {
        Ok(set) => set,
        Err(e) => {
            assert!(
                template.starts_with(INTERNAL_PREFIX),
                "unexpected rule error: {}",
                e.message
            );
            return;
        }
    };
    let m = set
        .match_cache(&Method::GET, path)
        .expect("the rule's regex matched the path");
    let rendered = set.render_key(&m.rule.key, &view, &m.captures);
    let expected = key
        .clone()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_BYTES && !k.starts_with(INTERNAL_PREFIX));
    assert_eq!(rendered, expected);
    assert_eq!(m.rule.tags[0].render(&view, &m.captures), key);

    let post = Method::POST;
    let inv: Vec<_> = set.match_invalidate(&post, path).collect();
    assert_eq!(inv.len(), 1);
    let i = &inv[0];
    assert_eq!(i.rule.keys[0].render(&view, &i.captures), key);
    assert_eq!(i.rule.patterns[0].render(&view, &i.captures), pat);
    let _ = set.to_string();
});
