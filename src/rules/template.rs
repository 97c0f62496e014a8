//! Key templates: `task:{task_id}`, `list:{query.page}`, `user:{header.x-user}`.
//!
//! A template is parsed once into literal and placeholder parts. Every
//! substituted value has `:` and `%` percent-encoded (`%3A`, `%25`), so a
//! value cannot run into the next part of the key: `pair:{query.a}:{query.b}`
//! renders `a=x:y&b=z` as `pair:x%3Ay:z` and `a=x&b=y:z` as `pair:x:y%3Az`.
//! In a pattern template (used for purges) the literal text is a Redis glob
//! and every substituted value is, after that encoding, glob-escaped, so a
//! request for `/api/v1/tasks/*` purges the key `task:*` literally, not
//! every task. Keys, patterns and tags are rendered alike, so a purge finds
//! what a fill stored.

use super::path::PathCaptures;
use http::{HeaderMap, HeaderName, Method};
use percent_encoding::percent_decode_str;
use regex::Regex;

/// What a template may read from a request.
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    /// `{name|lower}`: the value ASCII-lowercased, for inputs the backend
    /// reads case-insensitively (a UUID, a hostname), so that every
    /// spelling shares one key and a purge through any spelling finds it.
    Lower(Box<Part>),
    Capture(usize),
    Query(String),
    Header(HeaderName),
    Method,
    Host,
    Path,
    QueryString,
}

/// A parsed key or pattern template.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
    escape_values: bool,
}

impl Template {
    /// Parses `src`; `{name}` must be a named group of `regex`. With
    /// `is_pattern`, substituted values are glob-escaped.
    pub fn parse(src: &str, regex: &Regex, is_pattern: bool) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = src.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &src[i + 1..];
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed '{{' in template {src:?}"))?;
                    let name = &rest[..end];
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(placeholder(name, regex, src)?);
                }
                '}' => {
                    return Err(format!(
                        "unmatched '}}' in template {src:?} (write '}}}}' for a literal brace)"
                    ))
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if parts.is_empty() {
            return Err("a key template must not be empty".into());
        }
        Ok(Template {
            source: src.to_string(),
            parts,
            escape_values: is_pattern,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The query parameter names (`{query.NAME}`) the template reads.
    pub fn query_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p.unfiltered() {
            Part::Query(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The header names (`{header.NAME}`) the template reads.
    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.parts.iter().filter_map(|p| match p.unfiltered() {
            Part::Header(name) => Some(name),
            _ => None,
        })
    }

    /// Renders the template; `None` when a header value is not valid text,
    /// or a percent-decoded query value is not valid UTF-8 (lossy decoding
    /// would give different values one key).
    pub fn render(&self, req: &RequestView<'_>, captures: &PathCaptures<'_>) -> Option<String> {
        self.render_measured(req, captures).map(|(text, _)| text)
    }

    /// Renders the template, with the length of the shortest key the result
    /// names: its own length for a key or tag; for a pattern, the shortest
    /// key the glob can match (glob escapes and `*` not counted), so that a
    /// length limit applies to keys, not to their escaped spelling.
    pub(crate) fn render_measured(
        &self,
        req: &RequestView<'_>,
        captures: &PathCaptures<'_>,
    ) -> Option<(String, usize)> {
        let mut out = String::with_capacity(self.source.len() + 32);
        let mut key_len = 0;
        for part in &self.parts {
            if let Part::Literal(s) = part {
                out.push_str(s);
                key_len += if self.escape_values { glob_min_len(s) } else { s.len() };
                continue;
            }
            let value = part.value(req, captures)?;
            key_len += push_value(&value, self.escape_values, &mut out);
        }
        Some((out, key_len))
    }
}

impl Part {
    /// The part under its filter, if it has one.
    fn unfiltered(&self) -> &Part {
        match self {
            Part::Lower(inner) => inner.unfiltered(),
            other => other,
        }
    }

    /// A placeholder's value for a request (a literal has none of its own).
    fn value<'a>(&self, req: &'a RequestView<'_>, captures: &'a PathCaptures<'_>) -> Option<std::borrow::Cow<'a, str>> {
        Some(match self {
            Part::Literal(_) => "".into(),
            Part::Lower(inner) => {
                let value = inner.value(req, captures)?;
                if value.bytes().any(|b| b.is_ascii_uppercase()) {
                    value.to_ascii_lowercase().into()
                } else {
                    value
                }
            }
            Part::Capture(i) => captures.get(*i).unwrap_or("").into(),
            Part::Query(name) => match find_param(req.query, name) {
                Some(v) => String::from_utf8(v).ok()?.into(),
                None => "".into(),
            },
            Part::Header(name) => match req.headers.get(name) {
                Some(v) => v.to_str().ok()?.into(),
                None => "".into(),
            },
            Part::Method => req.method.as_str().into(),
            Part::Host => req.host.into(),
            Part::Path => req.path.into(),
            Part::QueryString => req.query.unwrap_or("").into(),
        })
    }
}

/// Appends a substituted value: `:` and `%` percent-encoded, then, in a
/// pattern, glob-escaped (the encoding adds no glob metacharacter). Returns
/// the length of the encoded value, i.e. of what it matches in a key.
fn push_value(value: &str, glob: bool, out: &mut String) -> usize {
    let mut len = 0;
    for c in value.chars() {
        match c {
            ':' => out.push_str("%3A"),
            '%' => out.push_str("%25"),
            c => {
                if glob && is_glob_meta(c) {
                    out.push('\\');
                }
                out.push(c);
                len += c.len_utf8();
                continue;
            }
        }
        len += 3;
    }
    len
}

/// The length of the shortest string the Redis glob `glob` matches: `*`
/// counts 0, `?` and a `[...]` class 1 byte, an escaped byte 1, anything
/// else itself. A lower bound (an empty class matches nothing at all).
fn glob_min_len(glob: &str) -> usize {
    let b = glob.as_bytes();
    let (mut i, mut len) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'*' => i += 1,
            b'[' => {
                len += 1;
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'\\' if i + 1 < b.len() => i += 2,
                        b']' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'\\' if i + 1 < b.len() => {
                len += 1;
                i += 2;
            }
            _ => {
                len += 1;
                i += 1;
            }
        }
    }
    len
}

fn placeholder(name: &str, regex: &Regex, src: &str) -> Result<Part, String> {
    if let Some((inner, filter)) = name.rsplit_once('|') {
        return match filter {
            "lower" => Ok(Part::Lower(Box::new(placeholder(inner, regex, src)?))),
            other => Err(format!(
                "unknown filter {other:?} in {{{name}}} (template {src:?}); the one filter is |lower"
            )),
        };
    }
    if let Some(q) = name.strip_prefix("query.") {
        if q.is_empty() {
            return Err(format!("empty query parameter name in template {src:?}"));
        }
        return Ok(Part::Query(q.to_string()));
    }
    if let Some(h) = name.strip_prefix("header.") {
        let h = HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("{h:?} is not a header name (template {src:?})"))?;
        return Ok(Part::Header(h));
    }
    match name {
        "method" => return Ok(Part::Method),
        "host" => return Ok(Part::Host),
        "path" => return Ok(Part::Path),
        "query" => return Ok(Part::QueryString),
        _ => {}
    }
    regex
        .capture_names()
        .position(|n| n == Some(name))
        .map(Part::Capture)
        .ok_or_else(|| {
            let groups: Vec<&str> = regex.capture_names().flatten().collect();
            format!(
                "template {src:?} names {{{name}}}, but the path regex has no such named group (it has: {})",
                if groups.is_empty() {
                    "none".to_string()
                } else {
                    groups.join(", ")
                }
            )
        })
}

/// The first value of a query parameter, percent-decoded (`+` as space),
/// with bytes that are not UTF-8 replaced by U+FFFD. For the admin API,
/// where that is harmless; templates use the exact bytes and refuse a value
/// that is not text.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    find_param(query, name).map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// The first value of the query parameter whose percent-decoded name (`+`
/// as space) is exactly `name`, as percent-decoded bytes.
fn find_param(query: Option<&str>, name: &str) -> Option<Vec<u8>> {
    let decode = |s: &str| -> Vec<u8> { percent_decode_str(&s.replace('+', " ")).collect() };
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name.as_bytes()).then(|| decode(v))
    })
}

/// Escapes Redis glob metacharacters so the value matches only itself.
pub fn glob_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    glob_escape_into(value, &mut out);
    out
}

fn glob_escape_into(value: &str, out: &mut String) {
    for c in value.chars() {
        if is_glob_meta(c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn is_glob_meta(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> RequestView<'a> {
        RequestView {
            method: &Method::GET,
            host: "h",
            path: "/api/v1/tasks/1",
            query,
            headers,
        }
    }

    #[test]
    fn lower_filter_lowercases_the_value_and_still_names_its_input() {
        let re = Regex::new(r"^/t/(?P<id>[^/]+)$").unwrap();
        let t = Template::parse("t:{id|lower}:{query.Q|lower}", &re, false).unwrap();
        let headers = HeaderMap::new();
        let view = RequestView {
            method: &Method::GET,
            host: "h",
            path: "/t/AbC",
            query: Some("Q=XyZ"),
            headers: &headers,
        };
        let caps = PathCaptures::from(re.captures("/t/AbC").unwrap());
        assert_eq!(t.render(&view, &caps).as_deref(), Some("t:abc:xyz"));
        assert_eq!(t.query_names().collect::<Vec<_>>(), ["Q"]);
        assert!(Template::parse("t:{id|upper}", &re, false).is_err());
        assert!(Template::parse("t:{nope|lower}", &re, false).is_err());
    }

    #[test]
    fn renders_captures_query_and_headers() {
        let re = Regex::new(r"^/api/v1/tasks/(?P<task_id>[^/]+)$").unwrap();
        let t = Template::parse("task:{task_id}:{query.page}:{header.X-Tenant}:{{x}}", &re, false).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "acme".parse().unwrap());
        let caps = PathCaptures::from(re.captures("/api/v1/tasks/42").unwrap());
        assert_eq!(
            t.render(&view(&headers, Some("a=1&page=a%20b")), &caps).as_deref(),
            Some("task:42:a b:acme:{x}")
        );
    }

    #[test]
    fn unknown_capture_is_an_error() {
        let re = Regex::new(r"^/t/(?P<id>\d+)$").unwrap();
        let e = Template::parse("task:{task_id}", &re, false).unwrap_err();
        assert!(e.contains("task_id") && e.contains("id"), "{e}");
    }

    #[test]
    fn pattern_values_are_escaped() {
        let re = Regex::new(r"^/t/(?P<id>.+)$").unwrap();
        let t = Template::parse("task:{id}*", &re, true).unwrap();
        let headers = HeaderMap::new();
        let caps = PathCaptures::from(re.captures("/t/a*b?[c]").unwrap());
        assert_eq!(t.render(&view(&headers, None), &caps).unwrap(), r"task:a\*b\?\[c\]*");
    }

    fn render_q(src: &str, query: &str, is_pattern: bool) -> Option<String> {
        let re = Regex::new(r"^/").unwrap();
        let t = Template::parse(src, &re, is_pattern).unwrap();
        let headers = HeaderMap::new();
        t.render(
            &view(&headers, Some(query)),
            &PathCaptures::from(re.captures("/").unwrap()),
        )
    }

    #[test]
    fn values_that_are_not_utf8_make_the_template_unusable() {
        for q in ["%FF", "%FE", "%C3%28", "%80", "a%FFb"] {
            for is_pattern in [false, true] {
                let got = render_q("search:{query.q}", &format!("q={q}&page=1"), is_pattern);
                assert_eq!(got, None, "q={q}");
            }
        }
        // The replacement character itself is text, and an absent value empty.
        assert_eq!(
            render_q("search:{query.q}", "q=%EF%BF%BD", false).as_deref(),
            Some("search:\u{FFFD}")
        );
        assert_eq!(
            render_q("search:{query.q}", "page=%FF", false).as_deref(),
            Some("search:")
        );
        // A parameter whose name is not text is no match for any name.
        assert_eq!(render_q("s:{query.\u{FFFD}}", "%FF=1", false).as_deref(), Some("s:"));
        // The admin API keeps its lossy reading.
        assert_eq!(query_param(Some("pattern=%FF"), "pattern").as_deref(), Some("\u{FFFD}"));
        assert_eq!(query_param(Some("a+b=c+d%20e"), "a b").as_deref(), Some("c d e"));
        assert_eq!(query_param(Some("x=1"), "pattern"), None);
    }

    #[test]
    fn values_holding_the_separator_never_collide() {
        let pair = |q| render_q("pair:{query.a}:{query.b}", q, false).unwrap();
        assert_eq!(pair("a=x%3Ay&b=z"), "pair:x%3Ay:z");
        assert_eq!(pair("a=x&b=y%3Az"), "pair:x:y%3Az");
        // An encoded separator in a value is encoded again.
        assert_eq!(pair("a=x%253Ay&b=z"), "pair:x%253Ay:z");
        let mut seen = std::collections::HashSet::new();
        for q in ["a=x%3Ay&b=z", "a=x%253Ay&b=z", "a=x%25&b=3Ay:z", "a=:&b=", "a=&b=:"] {
            assert!(seen.insert(pair(q)), "{q} renders like another query: {}", pair(q));
        }

        // Every placeholder is encoded alike.
        let re = Regex::new(r"^/t/(?P<id>[^/]+)$").unwrap();
        let t = Template::parse("{id}|{header.x-a}|{host}|{path}|{query}|{method}", &re, false).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-a", "h:1%".parse().unwrap());
        let req = RequestView {
            method: &Method::GET,
            host: "example.com:8080",
            path: "/t/a:b%2F",
            query: Some("q=1:2%3A"),
            headers: &headers,
        };
        let caps = PathCaptures::from(re.captures(req.path).unwrap());
        assert_eq!(
            t.render(&req, &caps).unwrap(),
            "a%3Ab%252F|h%3A1%25|example.com%3A8080|/t/a%3Ab%252F|q=1%3A2%253A|GET"
        );
    }

    #[test]
    fn patterns_encode_then_glob_escape_and_match_only_their_keys() {
        use crate::rules::glob::glob_match;
        let key = |q: &str| render_q("search:{query.q}:{query.page}", &format!("q={q}&page=1"), false).unwrap();
        let pattern = |q: &str| render_q("search:{query.q}:*", &format!("q={q}"), true).unwrap();
        assert_eq!(pattern("a%3A*"), r"search:a%3A\*:*");
        assert_eq!(pattern("%25-"), r"search:%25\-:*");
        let values = ["a", "a%3Ab", "a%3A*", "a%253Ab", "*", "%25", "%2525", "-", "a%3A"];
        for purged in values {
            for other in values {
                let hit = glob_match(pattern(purged).as_bytes(), key(other).as_bytes());
                assert_eq!(hit, purged == other, "pattern of q={purged} vs key of q={other}");
            }
        }
    }

    #[test]
    fn measured_length_is_the_shortest_key_a_pattern_matches() {
        let re = Regex::new(r"^/t/(?P<id>.+)$").unwrap();
        let headers = HeaderMap::new();
        let measure = |src: &str, path: &str, is_pattern: bool| {
            let t = Template::parse(src, &re, is_pattern).unwrap();
            t.render_measured(&view(&headers, None), &PathCaptures::from(re.captures(path).unwrap()))
                .unwrap()
        };
        let (text, len) = measure("s:{id}:*", "/t/-*-", true);
        assert_eq!((text.as_str(), len), (r"s:\-\*\-:*", 6));
        let (text, len) = measure("s:{id}", "/t/a:b", false);
        assert_eq!((text.as_str(), len), ("s:a%3Ab", 7));
        assert_eq!(measure("[abc]?x\\*y{id}", "/t/%", true).1, 5 + 3);
        assert_eq!(glob_min_len(""), 0);
        assert_eq!(glob_min_len("**"), 0);
        assert_eq!(glob_min_len(r"[a\]b]c"), 2);
        assert_eq!(glob_min_len("[abc"), 1);
        assert_eq!(glob_min_len("a\\"), 2);
        assert_eq!(glob_min_len("é*"), 2);
    }
}
