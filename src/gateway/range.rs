//! `Range` requests answered from a stored complete response (RFC 9110 §14):
//! a 206 with the part(s) asked for, or a 416, so that a client resuming a
//! download or seeking in a file need not get the whole body from the cache.
//!
//! Anything doubtful (another unit, a range set that does not parse, an
//! `If-Range` that does not hold, too many ranges) is answered with the
//! whole response, which RFC 9110 §14.2 always allows.

use crate::proxy::{self, Body};
use crate::store::entry::Entry;
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

/// More range-specs than this and the `Range` header is ignored: many small
/// or overlapping ranges make a small request cost a lot (CVE-2011-3192).
const MAX_SPECS: usize = 16;

/// Optional whitespace (RFC 9110 §5.6.3).
const OWS: [char; 2] = [' ', '\t'];

/// An inclusive byte range `(first, last)` inside the body.
type Span = (u64, u64);

/// One range-spec as written, before it meets the body's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last` or `first-`.
    From(u64, Option<u64>),
    /// `-length`: the last `length` bytes.
    Suffix(u64),
}

impl Spec {
    /// The bytes this spec selects in a body of `len` bytes, `None` when it
    /// is unsatisfiable (§14.1.1).
    fn resolve(self, len: u64) -> Option<Span> {
        let last = len.checked_sub(1)?;
        match self {
            Spec::From(first, end) => (first <= last).then(|| (first, end.map_or(last, |e| e.min(last)))),
            Spec::Suffix(n) => (n > 0).then(|| (len.saturating_sub(n), last)),
        }
    }
}

/// The answer to a `Range` request from a stored complete response, or `None`
/// when the whole response is the answer.
pub(super) fn ranged(request: &HeaderMap, entry: &Entry) -> Option<Response<Body>> {
    if entry.status != StatusCode::OK {
        return None;
    }
    let specs = specs(only_value(request, &header::RANGE)?)?;
    if !if_range_holds(request, &entry.headers) {
        return None;
    }
    let len = entry.body.len() as u64;
    let spans: Vec<Span> = specs.iter().filter_map(|s| s.resolve(len)).collect();
    if spans.is_empty() {
        return Some(unsatisfiable(len));
    }
    match coalesce(spans).as_slice() {
        [span] => single(entry, *span),
        spans => multipart(entry, spans),
    }
}

/// The value of a field sent on exactly one line, as text.
fn only_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// The range-specs of a `bytes` range set; `None` for another unit, a set
/// that does not parse, or more than [`MAX_SPECS`] specs.
fn specs(value: &str) -> Option<Vec<Spec>> {
    let (unit, set) = value.split_once('=')?;
    if !unit.trim_matches(OWS).eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // Empty list elements are ignored (§5.6.1.2).
    for part in set.split(',').map(|p| p.trim_matches(OWS)).filter(|p| !p.is_empty()) {
        if specs.len() == MAX_SPECS {
            return None;
        }
        specs.push(spec(part)?);
    }
    (!specs.is_empty()).then_some(specs)
}

/// One range-spec: `first-last`, `first-` or `-length`.
fn spec(s: &str) -> Option<Spec> {
    let (first, last) = s.split_once('-')?;
    if first.is_empty() {
        return Some(Spec::Suffix(number(last)?));
    }
    let from = number(first)?;
    if last.is_empty() {
        return Some(Spec::From(from, None));
    }
    let to = number(last)?;
    // Compared as written: both may have saturated.
    if greater(first, last) {
        return None;
    }
    Some(Spec::From(from, Some(to)))
}

/// A run of digits as a number, `u64::MAX` when it is larger.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        s.bytes()
            .fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))),
    )
}

/// Whether the digits `a` are a larger number than the digits `b`.
fn greater(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    (a.len(), a) > (b.len(), b)
}

/// Whether `If-Range`, if sent, names the stored representation (§13.1.5):
/// a strong entity-tag equal to the stored `ETag`, or exactly its
/// `Last-Modified` date. Anything else (a weak tag, two field lines, a date
/// that does not parse) does not hold.
fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut values = request.get_all(header::IF_RANGE).iter();
    let Some(value) = values.next() else {
        return true;
    };
    if values.next().is_some() {
        return false;
    }
    let value = value.as_bytes().trim_ascii();
    if value.starts_with(b"\"") {
        let etag = stored.get(header::ETAG).map(|v| v.as_bytes().trim_ascii());
        return strong_tag(value) && etag == Some(value);
    }
    let date = |v: &[u8]| super::http_date::parse(std::str::from_utf8(v).ok()?);
    let modified = stored.get(header::LAST_MODIFIED).and_then(|v| date(v.as_bytes()));
    date(value).is_some_and(|d| Some(d) == modified)
}

/// Whether `tag` is a strong entity-tag: `"` opaque `"`, no `W/`.
fn strong_tag(tag: &[u8]) -> bool {
    tag.strip_prefix(b"\"")
        .and_then(|t| t.strip_suffix(b"\""))
        .is_some_and(|opaque| !opaque.contains(&b'"'))
}

/// The spans in order, overlapping or adjacent ones merged.
fn coalesce(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_unstable();
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for (first, last) in spans {
        match merged.last_mut() {
            Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// The body's bytes in `span`, shared, or `None` if it is not inside.
fn part(body: &Bytes, (first, last): Span) -> Option<Bytes> {
    let (first, last) = (usize::try_from(first).ok()?, usize::try_from(last).ok()?);
    (first <= last && last < body.len()).then(|| body.slice(first..=last))
}

fn content_range((first, last): Span, len: u64) -> String {
    format!("bytes {first}-{last}/{len}")
}

/// 416, saying how long the representation is (§15.5.17).
fn unsatisfiable(len: u64) -> Response<Body> {
    let mut resp = proxy::json_error(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
        "no range asked for is inside the representation",
    );
    if let Ok(range) = HeaderValue::try_from(format!("bytes */{len}")) {
        resp.headers_mut().insert(header::CONTENT_RANGE, range);
    }
    if let Some(n) = http_body::Body::size_hint(resp.body()).exact() {
        resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    resp
}

/// 206 with one part: the stored headers, `Content-Range` (§15.3.7.1).
fn single(entry: &Entry, span: Span) -> Option<Response<Body>> {
    let body = part(&entry.body, span)?;
    let mut headers = entry.headers.clone();
    headers.remove(header::CONTENT_RANGE);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let range = content_range(span, entry.body.len() as u64);
    headers.insert(header::CONTENT_RANGE, HeaderValue::try_from(range).ok()?);
    Some(partial(headers, body))
}

/// 206 `multipart/byteranges` with a part per span (§14.6, §15.3.7.2);
/// `None` when the parts would add up to more than the body.
fn multipart(entry: &Entry, spans: &[Span]) -> Option<Response<Body>> {
    let len = entry.body.len() as u64;
    let total = spans.iter().fold(0u64, |t, (a, b)| {
        t.saturating_add(b.saturating_sub(*a).saturating_add(1))
    });
    if total > len {
        return None;
    }
    let boundary = hex::encode(rand::random::<[u8; 8]>());
    let content_type = entry.headers.get(header::CONTENT_TYPE);
    let mut out = BytesMut::with_capacity(usize::try_from(total).ok()? + spans.len() * 128);
    for &span in spans {
        let bytes = part(&entry.body, span)?;
        put_part_head(&mut out, &boundary, content_type, &content_range(span, len));
        out.put_slice(&bytes);
    }
    out.put_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut headers = entry.headers.clone();
    headers.remove(header::CONTENT_RANGE);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    let content_type = format!("multipart/byteranges; boundary={boundary}");
    headers.insert(header::CONTENT_TYPE, HeaderValue::try_from(content_type).ok()?);
    Some(partial(headers, out.freeze()))
}

/// A part's delimiter and header fields, up to and including the empty line.
fn put_part_head(out: &mut BytesMut, boundary: &str, content_type: Option<&HeaderValue>, range: &str) {
    out.put_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    if let Some(ct) = content_type {
        out.put_slice(b"Content-Type: ");
        out.put_slice(ct.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(format!("Content-Range: {range}\r\n\r\n").as_bytes());
}

fn partial(headers: HeaderMap, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(proxy::full(body));
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    *resp.headers_mut() = headers;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entry::Lifetime;
    use http_body_util::BodyExt;

    const BODY: &[u8] = b"0123456789";
    const ETAG: &str = "\"v1\"";
    const MODIFIED: &str = "Tue, 15 Nov 1994 08:12:31 GMT";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn entry_of(status: StatusCode, body: &'static [u8]) -> Entry {
        Entry {
            status,
            stored_at_ms: 0,
            lifetime: Lifetime::default(),
            headers: headers(&[
                ("content-type", "text/plain"),
                ("content-length", &body.len().to_string()),
                ("etag", ETAG),
                ("last-modified", MODIFIED),
                ("x-kept", "yes"),
            ]),
            body: Bytes::from_static(body),
        }
    }

    fn entry() -> Entry {
        entry_of(StatusCode::OK, BODY)
    }

    fn ask(range: &str) -> Option<Response<Body>> {
        ranged(&headers(&[("range", range)]), &entry())
    }

    async fn body(resp: Response<Body>) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    fn header<'a>(resp: &'a Response<Body>, name: &str) -> &'a str {
        resp.headers().get(name).unwrap().to_str().unwrap()
    }

    /// A single-part 206: its Content-Range, Content-Length and bytes.
    async fn assert_single(resp: Option<Response<Body>>, range: &str, bytes: &[u8]) {
        let resp = resp.expect("a 206");
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(header(&resp, "content-range"), range);
        assert_eq!(header(&resp, "content-length"), bytes.len().to_string());
        assert_eq!(header(&resp, "content-type"), "text/plain");
        assert_eq!(header(&resp, "x-kept"), "yes");
        assert_eq!(resp.headers().get_all("content-length").iter().count(), 1);
        assert_eq!(&body(resp).await[..], bytes);
    }

    async fn assert_416(resp: Option<Response<Body>>, len: usize) {
        let resp = resp.expect("a 416");
        assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(header(&resp, "content-range"), format!("bytes */{len}"));
        assert!(resp.headers().get("etag").is_none());
    }

    #[tokio::test]
    async fn each_single_range_form() {
        assert_single(ask("bytes=2-5"), "bytes 2-5/10", b"2345").await;
        assert_single(ask("bytes=0-0"), "bytes 0-0/10", b"0").await;
        assert_single(ask("bytes=7-"), "bytes 7-9/10", b"789").await;
        assert_single(ask("bytes=-3"), "bytes 7-9/10", b"789").await;
        assert_single(ask("bytes=9-9"), "bytes 9-9/10", b"9").await;
    }

    #[tokio::test]
    async fn the_last_position_is_clipped_to_the_body() {
        assert_single(ask("bytes=8-100"), "bytes 8-9/10", b"89").await;
        assert_single(ask("bytes=8-99999999999999999999999"), "bytes 8-9/10", b"89").await;
    }

    #[tokio::test]
    async fn a_suffix_longer_than_the_body_is_the_whole_body() {
        assert_single(ask("bytes=-11"), "bytes 0-9/10", BODY).await;
        assert_single(ask("bytes=-99999999999999999999999"), "bytes 0-9/10", BODY).await;
    }

    #[tokio::test]
    async fn unit_and_whitespace_are_lenient() {
        assert_single(ask("Bytes=1-2"), "bytes 1-2/10", b"12").await;
        assert_single(ask("bytes = 1-2"), "bytes 1-2/10", b"12").await;
        assert_single(ask("bytes=1-2 ,"), "bytes 1-2/10", b"12").await;
        assert_single(ask("bytes=, ,1-2"), "bytes 1-2/10", b"12").await;
    }

    /// The part shares the stored body rather than copying it.
    #[tokio::test]
    async fn a_single_part_is_not_copied() {
        let e = entry();
        let resp = ranged(&headers(&[("range", "bytes=3-4")]), &e).unwrap();
        let got = body(resp).await;
        assert_eq!(got.as_ptr(), e.body[3..].as_ptr());
    }

    #[tokio::test]
    async fn unsatisfiable_ranges_get_416() {
        assert_416(ask("bytes=10-"), 10).await;
        assert_416(ask("bytes=10-20"), 10).await;
        assert_416(ask("bytes=-0"), 10).await;
        assert_416(ask("bytes=99999999999999999999999-"), 10).await;
        assert_416(ask("bytes=10-12, 20-, -0"), 10).await;
        let empty = entry_of(StatusCode::OK, b"");
        assert_416(ranged(&headers(&[("range", "bytes=0-")]), &empty), 0).await;
        assert_416(ranged(&headers(&[("range", "bytes=-5")]), &empty), 0).await;
        let resp = ask("bytes=10-").unwrap();
        let declared = header(&resp, "content-length").to_string();
        assert_eq!(declared, body(resp).await.len().to_string());
    }

    #[test]
    fn one_unsatisfiable_spec_among_satisfiable_ones_is_dropped() {
        let resp = ask("bytes=20-30, 1-2").unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(header(&resp, "content-range"), "bytes 1-2/10");
    }

    #[test]
    fn invalid_syntax_is_ignored() {
        for range in [
            "bytes=5-2",
            "bytes=",
            "bytes=,",
            "bytes=-",
            "bytes=1",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=1 -2",
            "bytes=--1",
            "bytes=1-2,x",
            "bytes 1-2",
            "=1-2",
            "bytes=99999999999999999999999-99999999999999999999998",
        ] {
            assert!(ask(range).is_none(), "{range}");
        }
        // Equal overflowing numbers are not first > last.
        assert!(ask("bytes=99999999999999999999999-099999999999999999999999").is_some());
    }

    #[test]
    fn other_units_are_ignored() {
        assert!(ask("items=0-1").is_none());
        assert!(ask("none").is_none());
        assert!(ask("bytesx=0-1").is_none());
    }

    #[test]
    fn no_range_or_two_range_lines_are_ignored() {
        assert!(ranged(&HeaderMap::new(), &entry()).is_none());
        let two = headers(&[("range", "bytes=0-1"), ("range", "bytes=2-3")]);
        assert!(ranged(&two, &entry()).is_none());
    }

    #[test]
    fn only_a_200_is_ranged() {
        for status in [
            StatusCode::NOT_FOUND,
            StatusCode::NON_AUTHORITATIVE_INFORMATION,
            StatusCode::GONE,
        ] {
            let e = entry_of(status, BODY);
            assert!(ranged(&headers(&[("range", "bytes=0-1")]), &e).is_none());
        }
    }

    fn with_if_range(value: &str) -> Option<Response<Body>> {
        ranged(&headers(&[("range", "bytes=0-1"), ("if-range", value)]), &entry())
    }

    #[test]
    fn if_range_with_an_entity_tag_needs_a_strong_match() {
        assert!(with_if_range(ETAG).is_some());
        assert!(with_if_range("W/\"v1\"").is_none());
        assert!(with_if_range("\"v2\"").is_none());
        assert!(with_if_range("\"v1").is_none());
        // A weak stored tag never matches strongly.
        let mut weak = entry();
        weak.headers.insert(header::ETAG, HeaderValue::from_static("W/\"v1\""));
        let req = headers(&[("range", "bytes=0-1"), ("if-range", "W/\"v1\"")]);
        assert!(ranged(&req, &weak).is_none());
        let req = headers(&[("range", "bytes=0-1"), ("if-range", ETAG)]);
        assert!(ranged(&req, &weak).is_none());
        // No stored tag: nothing holds.
        let mut none = entry();
        none.headers.remove(header::ETAG);
        assert!(ranged(&req, &none).is_none());
    }

    #[test]
    fn if_range_with_a_date_needs_the_exact_last_modified() {
        assert!(with_if_range(MODIFIED).is_some());
        // The same instant in another HTTP-date form still matches.
        assert!(with_if_range("Tuesday, 15-Nov-94 08:12:31 GMT").is_some());
        assert!(with_if_range("Tue, 15 Nov 1994 08:12:32 GMT").is_none());
        assert!(with_if_range("Tue, 15 Nov 1994 08:12:30 GMT").is_none());
        assert!(with_if_range("yesterday").is_none());
        let mut none = entry();
        none.headers.remove(header::LAST_MODIFIED);
        let req = headers(&[("range", "bytes=0-1"), ("if-range", MODIFIED)]);
        assert!(ranged(&req, &none).is_none());
    }

    #[test]
    fn if_range_that_does_not_hold_wins_over_416() {
        let req = headers(&[("range", "bytes=50-"), ("if-range", "\"v2\"")]);
        assert!(ranged(&req, &entry()).is_none());
        let two = headers(&[("range", "bytes=0-1"), ("if-range", ETAG), ("if-range", ETAG)]);
        assert!(ranged(&two, &entry()).is_none());
    }

    /// The parts of a multipart/byteranges body: (headers, bytes) each.
    fn parse_multipart(resp_headers: &HeaderMap, body: &[u8]) -> Vec<(String, Vec<u8>)> {
        let ct = resp_headers["content-type"].to_str().unwrap();
        let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
        assert_eq!(boundary.len(), 16);
        let delimiter = format!("\r\n--{boundary}");
        let text = body.to_vec();
        let mut pieces = Vec::new();
        let mut rest = &text[..];
        assert!(rest.starts_with(delimiter.as_bytes()));
        while let Some(at) = find(rest, delimiter.as_bytes()) {
            pieces.push(rest[..at].to_vec());
            rest = &rest[at + delimiter.len()..];
        }
        assert_eq!(rest, b"--\r\n", "the close delimiter ends the body");
        assert!(pieces.remove(0).is_empty(), "nothing before the first delimiter");
        pieces
            .into_iter()
            .map(|p| {
                let p = p.strip_prefix(b"\r\n").unwrap();
                let at = find(p, b"\r\n\r\n").unwrap();
                (String::from_utf8(p[..at].to_vec()).unwrap(), p[at + 4..].to_vec())
            })
            .collect()
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    #[tokio::test]
    async fn two_disjoint_ranges_make_a_multipart_answer() {
        let resp = ask("bytes=7-8, 1-2").unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
        assert!(resp.headers().get("content-range").is_none());
        assert_eq!(header(&resp, "x-kept"), "yes");
        assert_eq!(header(&resp, "etag"), ETAG);
        assert_eq!(resp.headers().get_all("content-type").iter().count(), 1);
        let head = resp.headers().clone();
        let bytes = body(resp).await;
        assert_eq!(head["content-length"].to_str().unwrap(), bytes.len().to_string());
        let parts = parse_multipart(&head, &bytes);
        assert_eq!(
            parts,
            vec![
                (
                    "Content-Type: text/plain\r\nContent-Range: bytes 1-2/10".to_string(),
                    b"12".to_vec()
                ),
                (
                    "Content-Type: text/plain\r\nContent-Range: bytes 7-8/10".to_string(),
                    b"78".to_vec()
                ),
            ]
        );
    }

    #[tokio::test]
    async fn parts_have_no_content_type_when_the_response_had_none() {
        let mut e = entry();
        e.headers.remove(header::CONTENT_TYPE);
        let resp = ranged(&headers(&[("range", "bytes=0-0,-1")]), &e).unwrap();
        let head = resp.headers().clone();
        let parts = parse_multipart(&head, &body(resp).await);
        assert_eq!(
            parts,
            vec![
                ("Content-Range: bytes 0-0/10".to_string(), b"0".to_vec()),
                ("Content-Range: bytes 9-9/10".to_string(), b"9".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn overlapping_or_adjacent_ranges_are_coalesced() {
        assert_single(ask("bytes=4-6, 1-5"), "bytes 1-6/10", b"123456").await;
        assert_single(ask("bytes=0-1,2-3"), "bytes 0-3/10", b"0123").await;
        assert_single(ask("bytes=-2, 8-"), "bytes 8-9/10", b"89").await;
        assert_single(ask("bytes=0-,3-4,-5"), "bytes 0-9/10", BODY).await;
        let resp = ask("bytes=0-1,1-2,5-6,6-7").unwrap();
        let head = resp.headers().clone();
        let parts = parse_multipart(&head, &body(resp).await);
        let ranges: Vec<&str> = parts
            .iter()
            .map(|(h, _)| h.rsplit("Content-Range: ").next().unwrap())
            .collect();
        assert_eq!(ranges, ["bytes 0-2/10", "bytes 5-7/10"]);
    }

    #[test]
    fn more_than_sixteen_ranges_are_ignored() {
        let sixteen = (0..16).map(|_| "0-0").collect::<Vec<_>>().join(",");
        assert!(ask(&format!("bytes={sixteen}")).is_some());
        let seventeen = (0..17).map(|_| "0-0").collect::<Vec<_>>().join(",");
        assert!(ask(&format!("bytes={seventeen}")).is_none());
        let disjoint = (0..17).map(|i| format!("{i}-{i}")).collect::<Vec<_>>().join(",");
        assert!(ask(&format!("bytes={disjoint}")).is_none());
    }

    #[test]
    fn coalesce_merges_in_order() {
        assert_eq!(
            coalesce(vec![(5, 6), (0, 1), (2, 3), (8, 9)]),
            vec![(0, 3), (5, 6), (8, 9)]
        );
        assert_eq!(coalesce(vec![(0, 9), (2, 3)]), vec![(0, 9)]);
    }

    /// Whatever the header, no panic, and a 206 only ever describes bytes
    /// inside the body.
    #[tokio::test]
    async fn arbitrary_headers_do_not_panic() {
        use rand::{Rng, SeedableRng};
        let alphabet = b"0123456789-,= \tbytesBW/\"x";
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in [0usize, 1, 2, 10] {
            let stored: &'static [u8] = &BODY[..len];
            let e = entry_of(StatusCode::OK, stored);
            for _ in 0..2000 {
                let n = rng.gen_range(0..24);
                let mut s: String = (0..n)
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
                    .collect();
                if rng.gen_bool(0.7) {
                    s.insert_str(0, "bytes=");
                }
                let Ok(value) = HeaderValue::from_str(&s) else { continue };
                let mut req = HeaderMap::new();
                req.insert(header::RANGE, value);
                let Some(resp) = ranged(&req, &e) else { continue };
                let declared = resp
                    .headers()
                    .get("content-length")
                    .map(|v| v.to_str().unwrap().to_string());
                let status = resp.status();
                let got = body(resp).await;
                assert!(status == StatusCode::PARTIAL_CONTENT || status == StatusCode::RANGE_NOT_SATISFIABLE);
                assert_eq!(declared, Some(got.len().to_string()), "{s}");
            }
        }
    }
}
