//! The request inputs a rule's key and tags read by name, and a request
//! that gives one of them more than once.
//!
//! The key takes the first value; a backend may take the last (Starlette,
//! Django: `?q=a&q=evil` answers for `evil`) or join them (`X-Lang: en` and
//! `X-Lang: evil` read as `en,evil`). Either way its answer would be stored
//! under the first value's key, for everyone who asks for that value. So a
//! request that repeats a keyed input is ambiguous (`gateway/inputs.rs`
//! decides what it gets). Names are compared the way the key reads them:
//! query names percent-decoded (`%71` is `q`), header names without case.

use super::Template;
use http::HeaderName;
use percent_encoding::percent_decode_str;
use std::fmt;

/// What a rule's templates read by name (no duplicates).
#[derive(Debug, Clone, Default)]
pub struct KeyInputs {
    pub query: Vec<String>,
    pub headers: Vec<HeaderName>,
}

impl KeyInputs {
    /// The inputs of every template given.
    pub fn of<'a>(templates: impl IntoIterator<Item = &'a Template>) -> KeyInputs {
        let mut inputs = KeyInputs::default();
        for t in templates {
            for q in t.query_names() {
                if !inputs.query.iter().any(|n| n == q) {
                    inputs.query.push(q.to_string());
                }
            }
            for h in t.header_names() {
                if !inputs.headers.contains(h) {
                    inputs.headers.push(h.clone());
                }
            }
        }
        inputs
    }

    pub fn is_empty(&self) -> bool {
        self.query.is_empty() && self.headers.is_empty()
    }

    /// Whether `query` gives one of the keyed parameters more than once.
    pub fn query_repeats(&self, query: Option<&str>) -> bool {
        let Some(query) = query.filter(|_| !self.query.is_empty()) else {
            return false;
        };
        let mut seen = vec![false; self.query.len()];
        for pair in query.split('&') {
            let name = pair.split_once('=').map_or(pair, |(k, _)| k);
            if let Some(i) = self.query.iter().position(|q| param_name_is(name, q)) {
                if std::mem::replace(&mut seen[i], true) {
                    return true;
                }
            }
        }
        false
    }

    /// `query` with only the first occurrence of each keyed parameter.
    pub fn first_params_only(&self, query: &str) -> String {
        let mut seen = vec![false; self.query.len()];
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let name = pair.split_once('=').map_or(*pair, |(k, _)| k);
                match self.query.iter().position(|q| param_name_is(name, q)) {
                    Some(i) => !std::mem::replace(&mut seen[i], true),
                    None => true,
                }
            })
            .collect();
        kept.join("&")
    }
}

/// Whether a raw query parameter name reads as `name` once decoded (`+` as
/// space), as the key template reads it; no allocation for a plain name.
pub fn param_name_is(raw: &str, name: &str) -> bool {
    if !raw.contains(['%', '+']) {
        return raw == name;
    }
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).eq(name.bytes())
}

impl fmt::Display for KeyInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .query
            .iter()
            .map(|q| format!("query.{q}"))
            .chain(self.headers.iter().map(|h| format!("header.{h}")))
            .collect();
        f.write_str(&names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(query: &[&str]) -> KeyInputs {
        KeyInputs {
            query: query.iter().map(|s| s.to_string()).collect(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_keyed_parameter_given_twice_in_any_spelling_repeats() {
        let q = inputs(&["q", "a b"]);
        for repeated in ["q=a&q=evil", "q=a&%71=evil", "%71=a&q", "a+b=1&a%20b=2", "x=1&q&q="] {
            assert!(q.query_repeats(Some(repeated)), "{repeated}");
        }
        for single in ["q=a", "q=a&qq=b", "q=a&Q=b", "%71=a&a+b=1", "", "x=1&x=2"] {
            assert!(!q.query_repeats(Some(single)), "{single}");
        }
        assert!(!q.query_repeats(None));
        assert!(!inputs(&[]).query_repeats(Some("q=a&q=b")));
    }

    #[test]
    fn keeping_the_first_drops_only_later_repeats_of_keyed_names() {
        let q = inputs(&["q"]);
        assert_eq!(q.first_params_only("q=a&x=1&%71=evil&x=2&q=b"), "q=a&x=1&x=2");
        assert_eq!(q.first_params_only("x=1"), "x=1");
    }
}
