//! `Vary`: one logical key keeps a variant per combination of the request
//! headers the response varies on (RFC 9111 §4.1), so purging the key still
//! removes them all.
//!
//! The scope's field then holds a small marker naming those headers, and
//! each variant lives in the field `<scope>#<hash of their values>`. A
//! lookup that finds a marker makes one more read for the variant.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

const MARKER: &[u8] = b"CV1\n";

/// The header names a response varies on, lower-case, sorted; empty when
/// it has no `Vary` (a `Vary: *` response is never stored at all).
pub fn names(response: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

/// The marker stored under the scope's field.
pub fn marker(names: &[HeaderName]) -> Bytes {
    let mut out = MARKER.to_vec();
    let list: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
    out.extend_from_slice(list.join(",").as_bytes());
    Bytes::from(out)
}

/// The header names of a marker, or `None` if `raw` is not one.
pub fn parse_marker(raw: &[u8]) -> Option<Vec<HeaderName>> {
    let rest = raw.strip_prefix(MARKER)?;
    let list = std::str::from_utf8(rest).ok()?;
    Some(
        list.split(',')
            .filter(|n| !n.is_empty())
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect(),
    )
}

/// The field of the variant a request selects.
pub fn variant_field(scope: &str, names: &[HeaderName], request: &HeaderMap) -> String {
    let mut hash = Sha256::new();
    for name in names {
        hash.update(name.as_str().as_bytes());
        hash.update(b"\0");
        // Values joined as one field value would be (RFC 9110 §5.3),
        // with whitespace around commas normalised.
        let values: Vec<String> = request
            .get_all(name)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .collect();
        hash.update(values.join(",").as_bytes());
        hash.update(b"\n");
    }
    format!("{scope}#{}", hex::encode(&hash.finalize()[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    #[test]
    fn variants() {
        let n = names(&h(&[
            ("vary", "Accept-Language, accept-encoding"),
            ("vary", "Accept-Language"),
        ]));
        assert_eq!(n.len(), 2);
        assert_eq!(parse_marker(&marker(&n)), Some(n.clone()));
        assert_eq!(parse_marker(b"CG\x01"), None);
        let en = variant_field("anon", &n, &h(&[("accept-language", "en")]));
        let de = variant_field("anon", &n, &h(&[("accept-language", "de")]));
        let en_spaced = variant_field("anon", &n, &h(&[("accept-language", " en ")]));
        assert_ne!(en, de);
        assert_eq!(en, en_spaced);
        assert!(en.starts_with("anon#"));
        assert!(names(&HeaderMap::new()).is_empty());
    }
}
