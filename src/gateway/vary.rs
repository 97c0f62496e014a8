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

/// The names a variant is keyed on: [`names`], without `Accept-Encoding`
/// when compression is negotiated once (`compression.rs`): every client
/// is then served from one stored coding, so equivalent and different
/// spellings alike share one variant.
pub fn keyed_names(response: &HeaderMap, negotiated: bool) -> Vec<HeaderName> {
    let mut names = names(response);
    if negotiated {
        names.retain(|n| n != header::ACCEPT_ENCODING);
    }
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
        hash.update(normalised(name, request).as_bytes());
        hash.update(b"\n");
    }
    format!("{scope}#{}", hex::encode(&hash.finalize()[..12]))
}

/// A request field's value in one form for all the spellings RFC 9110 makes
/// equivalent, so equivalent requests share a variant: lines joined as one
/// list (§5.3), whitespace around members and parameters dropped; for the
/// `Accept` family, tokens lower-cased (case-insensitive, §12.5), `q`
/// written canonically (`q=1` dropped, `0.50` as `0.5`), and members
/// ordered by `q`: by name among equal `q` for `Accept-Encoding` and
/// `Accept-Charset` (no server ranks codings by order), in the client's
/// order for `Accept` and `Accept-Language`, whose equal-`q` order real
/// backends (Express's negotiator, Django) use to choose.
fn normalised(name: &HeaderName, request: &HeaderMap) -> String {
    let accept_family = matches!(
        name.as_str(),
        "accept" | "accept-encoding" | "accept-charset" | "accept-language"
    );
    let mut members: Vec<(String, u16)> = request
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|m| String::from_utf8_lossy(m).trim().to_string())
        .filter(|m| !m.is_empty())
        .map(|m| if accept_family { weighted(&m) } else { (m, 1000) })
        .collect();
    match name.as_str() {
        "accept-encoding" | "accept-charset" => {
            members.sort_by(|(a, qa), (b, qb)| qb.cmp(qa).then_with(|| a.cmp(b)));
        }
        // Backends (Express's negotiator, Django) pick the first among
        // equal q: their order is kept, only q ranks across.
        "accept" | "accept-language" => members.sort_by(|(_, qa), (_, qb)| qb.cmp(qa)),
        _ => {}
    }
    let written: Vec<String> = members
        .into_iter()
        .map(|(m, q)| match q {
            1000 => m,
            q => format!("{m};q={}", q_text(q)),
        })
        .collect();
    written.join(",")
}

/// A member of an `Accept`-family field, lower-cased, its parameters
/// without whitespace, its `q` (in thousandths, 1000 when absent) apart.
fn weighted(member: &str) -> (String, u16) {
    let mut parts = member.split(';').map(|p| p.trim().to_ascii_lowercase());
    let mut text = parts.next().unwrap_or_default();
    let mut q = 1000;
    for param in parts {
        let (k, v) = param
            .split_once('=')
            .map_or((param.as_str(), ""), |(k, v)| (k.trim(), v.trim()));
        match (k, qvalue(v)) {
            ("q", Some(parsed)) => q = parsed,
            _ => {
                text.push(';');
                text.push_str(k);
                if !v.is_empty() {
                    text.push('=');
                    text.push_str(v);
                }
            }
        }
    }
    (text, q)
}

/// A qvalue (RFC 9110 §12.4.2: 0 to 1, at most three decimals) in
/// thousandths.
fn qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn q_text(q: u16) -> String {
    let text = format!("0.{q:03}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::gateway::test_headers as h;

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

    #[test]
    fn equivalent_spellings_share_a_variant() {
        let field = |name: &str, values: &[&str]| {
            let names = vec![HeaderName::from_bytes(name.as_bytes()).unwrap()];
            let pairs: Vec<(&str, &str)> = values.iter().map(|v| (name, *v)).collect();
            variant_field("anon", &names, &h(&pairs))
        };
        let same = |name: &str, a: &[&str], b: &[&str]| {
            assert_eq!(field(name, a), field(name, b), "{name}: {a:?} ~ {b:?}");
        };
        let differ = |name: &str, a: &[&str], b: &[&str]| {
            assert_ne!(field(name, a), field(name, b), "{name}: {a:?} !~ {b:?}");
        };
        same("accept-encoding", &["gzip, br"], &["br,gzip"]);
        same("accept-encoding", &["GZIP;Q=0.50, br"], &["br", "gzip; q=0.5"]);
        same("accept-encoding", &["gzip;q=1.0"], &["gzip"]);
        differ("accept-encoding", &["gzip"], &["gzip;q=0"]);
        same(
            "accept",
            &["text/html, application/json;q=0.9"],
            &["Application/JSON; q=0.900,text/html"],
        );
        same("accept-language", &["en;q=0.5, de"], &["de, en;q=0.5"]);
        same("accept-language", &["EN-us, fr"], &["en-US,fr"]);
        differ("accept-language", &["en, de"], &["de, en"]);
        differ("accept-language", &["en;q=0.9, de"], &["en, de;q=0.9"]);
        // Other fields: whitespace only; case may matter.
        same("x-lang", &[" en , de"], &["en,de"]);
        differ("x-lang", &["EN"], &["en"]);
        differ("x-lang", &["en,de"], &["de,en"]);
        // A malformed q is kept as written, not taken for another value.
        differ("accept-encoding", &["gzip;q=2"], &["gzip"]);
    }
}
