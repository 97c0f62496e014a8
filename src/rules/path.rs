//! A rule's path pattern: the regex as written, and, for the shape most
//! rules have (`^/literal/prefix$` or `^/literal/prefix/(?P<name>[^/]+)$`),
//! a matcher that compares the prefix and checks one segment instead of
//! running the regex engine on every request. Both give the same captures;
//! anything else runs the regex.

use regex::{Captures, Regex};

/// A compiled rule path.
#[derive(Debug)]
pub struct PathPattern {
    regex: Regex,
    literal: Option<Literal>,
}

/// `^prefix$`, or `^prefix(?P<name>[^/]+)$` when `segment` is set.
#[derive(Debug)]
struct Literal {
    prefix: String,
    segment: bool,
}

/// The captures of a matched path, by group index (0 is the whole path).
pub enum PathCaptures<'p> {
    Regex(Captures<'p>),
    Literal { whole: &'p str, segment: Option<&'p str> },
}

impl PathCaptures<'_> {
    /// Group `i`'s text, if it took part in the match.
    pub fn get(&self, i: usize) -> Option<&str> {
        match self {
            PathCaptures::Regex(c) => c.get(i).map(|m| m.as_str()),
            PathCaptures::Literal { whole, .. } if i == 0 => Some(whole),
            PathCaptures::Literal { segment, .. } if i == 1 => *segment,
            PathCaptures::Literal { .. } => None,
        }
    }
}

impl<'p> From<Captures<'p>> for PathCaptures<'p> {
    fn from(c: Captures<'p>) -> Self {
        PathCaptures::Regex(c)
    }
}

impl PathPattern {
    pub fn new(src: &str) -> Result<PathPattern, regex::Error> {
        let regex = Regex::new(src)?;
        Ok(PathPattern {
            literal: literal_form(src),
            regex,
        })
    }

    /// The regex (templates resolve capture names against it).
    pub fn regex(&self) -> &Regex {
        &self.regex
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    pub fn captures<'p>(&self, path: &'p str) -> Option<PathCaptures<'p>> {
        let Some(lit) = &self.literal else {
            return self.regex.captures(path).map(PathCaptures::Regex);
        };
        let rest = path.strip_prefix(lit.prefix.as_str())?;
        if !lit.segment {
            return rest.is_empty().then_some(PathCaptures::Literal {
                whole: path,
                segment: None,
            });
        }
        (!rest.is_empty() && !rest.contains('/')).then_some(PathCaptures::Literal {
            whole: path,
            segment: Some(rest),
        })
    }
}

/// The literal form of `src`, when it has one: `^`, characters no regex
/// treats specially, optionally one named `[^/]+` group, `$`.
fn literal_form(src: &str) -> Option<Literal> {
    let body = src.strip_prefix('^')?.strip_suffix('$')?;
    let (prefix, segment) = match body.find('(') {
        None => (body, false),
        Some(open) => {
            let group = &body[open..];
            let name_end = group
                .strip_prefix("(?P<")
                .or_else(|| group.strip_prefix("(?<"))?
                .find('>')?;
            let opener = if group.starts_with("(?P<") { 4 } else { 3 };
            let name = &group[opener..opener + name_end];
            let valid_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid_name || &group[opener + name_end..] != ">[^/]+)" {
                return None;
            }
            (&body[..open], true)
        }
    };
    let plain = prefix.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'_' | b'-' | b'~' | b'%' | b'=' | b'&' | b',' | b';' | b':' | b'@' | b'!' | b'\'' | b'"'
            )
    });
    plain.then(|| Literal {
        prefix: prefix.to_string(),
        segment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Groups = Option<Vec<Option<String>>>;

    fn both(p: &PathPattern, path: &str) -> (Groups, Groups) {
        let groups = p.regex.captures_len();
        let take = |c: Option<PathCaptures<'_>>| c.map(|c| (0..groups).map(|i| c.get(i).map(str::to_string)).collect());
        (
            take(p.captures(path)),
            take(p.regex.captures(path).map(PathCaptures::Regex)),
        )
    }

    #[test]
    fn the_common_shapes_take_the_literal_form_and_others_do_not() {
        for src in [
            r"^/api/v1/tasks/(?P<task_id>[^/]+)$",
            r"^/api/v1/tasks$",
            r"^/t/(?<id>[^/]+)$",
            r"^(?P<all>[^/]+)$",
        ] {
            assert!(PathPattern::new(src).unwrap().literal.is_some(), "{src}");
        }
        for src in [
            r"^/api/v1/tasks/(?P<id>\d+)$",
            r"^/api/v1/tasks/(?P<id>[^/]+)",
            r"/api/v1/tasks/(?P<id>[^/]+)$",
            r"^/api/v1.0/tasks$",
            r"^/a/(?P<x>[^/]+)/(?P<y>[^/]+)$",
            r"^/a/(?P<x>[^/]+)/b$",
            r"^(?i)/a$",
            r"^/a+$",
            r"^/a|/b$",
        ] {
            assert!(PathPattern::new(src).unwrap().literal.is_none(), "{src}");
        }
    }

    #[test]
    fn the_literal_form_matches_exactly_as_the_regex_does() {
        let paths = [
            "/api/v1/tasks/42",
            "/api/v1/tasks/",
            "/api/v1/tasks",
            "/api/v1/tasks/4/2",
            "/api/v1/tasks/4/",
            "/api/v1/tasksX",
            "/api/v1/tasks/é-ü",
            "/api/v1/tasks/a%2Fb",
            "/api/v1/tasks/a\nb",
            "/API/v1/tasks/1",
            "/api/v1/tasks//",
            "",
            "/",
            "x",
        ];
        for src in [
            r"^/api/v1/tasks/(?P<task_id>[^/]+)$",
            r"^/api/v1/tasks$",
            r"^/api/v1/tasks/$",
            r"^(?P<all>[^/]+)$",
            r"^/api/v1/tasks(?P<rest>[^/]+)$",
        ] {
            let p = PathPattern::new(src).unwrap();
            for path in paths {
                let (fast, slow) = both(&p, path);
                assert_eq!(fast, slow, "{src} on {path:?}");
            }
        }
        // Random paths over an alphabet that hits every edge.
        let p = PathPattern::new(r"^/api/v1/tasks/(?P<task_id>[^/]+)$").unwrap();
        let alphabet: Vec<char> = "/aT1%é\n".chars().collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..5000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 9) as usize;
            let tail: String = (0..len)
                .map(|i| alphabet[((seed >> (i * 5)) % alphabet.len() as u64) as usize])
                .collect();
            for path in [
                format!("/api/v1/tasks/{tail}"),
                format!("/api/v1/tasks{tail}"),
                tail.clone(),
            ] {
                let (fast, slow) = both(&p, &path);
                assert_eq!(fast, slow, "{path:?}");
            }
        }
    }
}
