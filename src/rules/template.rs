//! Key templates: `task:{task_id}`, `list:{query.page}`, `user:{header.x-user}`.
//!
//! A template is parsed once into literal and placeholder parts. In a
//! pattern template (used for purges) the literal text is a Redis glob and
//! every substituted value is glob-escaped, so a request for
//! `/api/v1/tasks/*` purges the key `task:*` literally, not every task.

use http::{HeaderMap, HeaderName, Method};
use percent_encoding::percent_decode_str;
use regex::{Captures, Regex};

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

    /// Renders the template; `None` when a header value is not valid text.
    pub fn render(&self, req: &RequestView<'_>, captures: &Captures<'_>) -> Option<String> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            let value: std::borrow::Cow<'_, str> = match part {
                Part::Literal(s) => {
                    out.push_str(s);
                    continue;
                }
                Part::Capture(i) => captures.get(*i).map(|m| m.as_str()).unwrap_or("").into(),
                Part::Query(name) => query_param(req.query, name).unwrap_or_default().into(),
                Part::Header(name) => match req.headers.get(name) {
                    Some(v) => v.to_str().ok()?.into(),
                    None => "".into(),
                },
                Part::Method => req.method.as_str().into(),
                Part::Host => req.host.into(),
                Part::Path => req.path.into(),
                Part::QueryString => req.query.unwrap_or("").into(),
            };
            if self.escape_values {
                glob_escape_into(&value, &mut out);
            } else {
                out.push_str(&value);
            }
        }
        Some(out)
    }
}

fn placeholder(name: &str, regex: &Regex, src: &str) -> Result<Part, String> {
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

/// The first value of a query parameter, percent-decoded (`+` as space).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = k.replace('+', " ");
        (percent_decode_str(&k).decode_utf8_lossy() == name).then(|| {
            percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
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
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
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
    fn renders_captures_query_and_headers() {
        let re = Regex::new(r"^/api/v1/tasks/(?P<task_id>[^/]+)$").unwrap();
        let t = Template::parse("task:{task_id}:{query.page}:{header.X-Tenant}:{{x}}", &re, false).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "acme".parse().unwrap());
        let caps = re.captures("/api/v1/tasks/42").unwrap();
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
        let caps = re.captures("/t/a*b?[c]").unwrap();
        assert_eq!(t.render(&view(&headers, None), &caps).unwrap(), r"task:a\*b\?\[c\]*");
    }
}
