//! Targeted cache control (RFC 9213): `CDN-Cache-Control` and cachegate's
//! own field (`Cachegate-Cache-Control` by default). The first of the
//! configured fields that is present and a valid Structured Fields
//! Dictionary alone decides this cache's freshness and storability;
//! `Cache-Control` and `Expires` are then ignored for that (they still
//! reach the client). An invalid field is ignored as a whole.

use super::freshness::Directives;
use http::{HeaderMap, HeaderName};
use sfv::{BareItem, Dictionary, ListEntry, Parser};

/// The directives of the first targeted field in `names` that is present
/// and valid, or `None` when none is.
pub fn directives(headers: &HeaderMap, names: &[HeaderName]) -> Option<Directives> {
    names.iter().find_map(|name| parse(headers, name))
}

fn parse(headers: &HeaderMap, name: &HeaderName) -> Option<Directives> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    // Field lines combine as one list (RFC 9110 §5.3).
    let mut joined = String::new();
    for line in lines {
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(line.to_str().ok()?);
    }
    let dictionary: Dictionary = Parser::new(joined.as_str()).parse().ok()?;
    // An empty field is no targeted field (RFC 9213 §2.1).
    if dictionary.is_empty() {
        return None;
    }
    let mut d = Directives {
        targeted: true,
        ..Directives::default()
    };
    for (key, member) in &dictionary {
        let ListEntry::Item(item) = member else {
            // `no-cache=("a" "b")` and the like: field-qualified forms
            // count as the plain directive (stricter, never looser).
            if key.as_str() == "no-cache" || key.as_str() == "private" {
                d.set_flag(key.as_str());
            }
            continue;
        };
        match &item.bare_item {
            BareItem::Boolean(true) => {
                d.set_flag(key.as_str());
            }
            BareItem::Integer(i) => {
                // A negative integer is a malformed directive: ignored.
                if let Ok(secs) = u64::try_from(i64::from(*i)) {
                    d.set_seconds(key.as_str(), Some(secs));
                }
            }
            // `private="x"` and `no-cache="x"` as strings: as above.
            BareItem::String(_) if matches!(key.as_str(), "no-cache" | "private") => {
                d.set_flag(key.as_str());
            }
            // Other types for known directives are invalid: ignored.
            _ => {}
        }
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::gateway::test_headers as h;

    fn names() -> Vec<HeaderName> {
        vec![
            HeaderName::from_static("cachegate-cache-control"),
            HeaderName::from_static("cdn-cache-control"),
        ]
    }

    #[test]
    fn the_first_present_and_valid_field_wins() {
        let d = directives(
            &h(&[
                ("cdn-cache-control", "max-age=60"),
                ("cachegate-cache-control", "max-age=10, must-revalidate"),
            ]),
            &names(),
        )
        .unwrap();
        assert_eq!(d.max_age, Some(10));
        assert!(d.must_revalidate && d.targeted);
        // An invalid first field is ignored as a whole: the next one counts.
        let d = directives(
            &h(&[
                ("cdn-cache-control", "max-age=60"),
                ("cachegate-cache-control", "max-age=10, Must-Revalidate"),
            ]),
            &names(),
        )
        .unwrap();
        assert_eq!(d.max_age, Some(60));
        assert!(!d.must_revalidate);
        assert!(directives(&h(&[("cache-control", "max-age=60")]), &names()).is_none());
        assert!(directives(&h(&[("cdn-cache-control", "")]), &names()).is_none());
        assert!(directives(&h(&[("cdn-cache-control", "max-age=\"60\",,")]), &names()).is_none());
    }

    #[test]
    fn directives_of_a_dictionary() {
        let d = directives(
            &h(&[
                ("cdn-cache-control", "no-store, private"),
                ("cdn-cache-control", "s-maxage=5"),
            ]),
            &names(),
        )
        .unwrap();
        assert!(d.no_store && d.private);
        assert_eq!(d.s_maxage, Some(5));
        // Wrong types are ignored, not taken for zero.
        let d = directives(&h(&[("cdn-cache-control", "max-age=\"60\", no-store=?0")]), &names()).unwrap();
        assert_eq!(d.max_age, None);
        assert!(!d.no_store);
        let d = directives(&h(&[("cdn-cache-control", "max-age=-5, stale-if-error=30")]), &names()).unwrap();
        assert_eq!((d.max_age, d.stale_if_error), (None, Some(30)));
    }
}
