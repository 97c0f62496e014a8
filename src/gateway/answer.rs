//! Phase 9, answer: a response from an entry, with `Age`, or a 304 when the
//! client's conditional request is satisfied by its validators; HEAD gets
//! the head alone. (`Cache-Status` and `X-Cache` are set by
//! [`crate::outcome::Outcome::apply`].)

use super::{compression, freshness, Outcome};
use crate::config::CompressionConfig;
use crate::proxy::{self, Body};
use crate::store::entry::Entry;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;

/// Answers from a stored entry: the stored response with `Age`, or 304 when
/// the client's conditional request is satisfied by its validators.
pub(super) fn answer(
    request: &http::HeaderMap,
    entry: Entry,
    now: u64,
    is_head: bool,
    compression: &CompressionConfig,
) -> Response<Body> {
    let age = freshness::age(&entry.headers) + entry.age_secs(now);
    answer_with_age(request, entry, Some(age), is_head, compression)
}

/// Answers with an entry just fetched: the backend's own headers (no `Age`
/// added), or 304 for a satisfied conditional request. `identity` is the
/// body before cachegate encoded it for storing: a client that does not
/// accept the coding gets it as it is, with no decoding of what was just
/// encoded (the head as any decoded answer's).
pub(super) fn answer_fetched(
    request: &http::HeaderMap,
    mut entry: Entry,
    identity: Option<Bytes>,
    is_head: bool,
    compression: &CompressionConfig,
) -> Response<Body> {
    match identity {
        Some(identity) if compression::must_decode(request, &entry.headers).is_some() => {
            compression::decoded_head(&mut entry.headers);
            entry.body = identity;
            answer_as_stored(request, entry, None, is_head, false)
        }
        _ => answer_with_age(request, entry, None, is_head, compression),
    }
}

/// The entry as this client takes it: as stored (the common case costs one
/// header lookup, or an in-place scan of `Accept-Encoding` for an encoded
/// entry), or decoded on the fly when it does not accept the stored coding
/// (`compression.rs`): then no range is applied (a range of the encoded
/// bytes is not one of the decoded ones) and the validators are weak.
fn answer_with_age(
    request: &http::HeaderMap,
    mut entry: Entry,
    age: Option<u64>,
    is_head: bool,
    compression: &CompressionConfig,
) -> Response<Body> {
    if let Some(coding) = compression::must_decode(request, &entry.headers) {
        compression::decoded_head(&mut entry.headers);
        let mut resp = answer_as_stored(request, entry, age, is_head, false);
        if resp.status() != StatusCode::NOT_MODIFIED && !is_head {
            let (parts, body) = resp.into_parts();
            let body = compression::Decoding::new(body, coding, compression.max_decoded_bytes).boxed();
            resp = Response::from_parts(parts, body);
        }
        return resp;
    }
    answer_as_stored(request, entry, age, is_head, true)
}

fn answer_as_stored(
    request: &http::HeaderMap,
    entry: Entry,
    age: Option<u64>,
    is_head: bool,
    ranges: bool,
) -> Response<Body> {
    if entry.status == StatusCode::OK && freshness::not_modified(request, &entry.headers) {
        let mut resp = Response::new(proxy::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        for name in freshness::NOT_MODIFIED_HEADERS {
            for value in entry.headers.get_all(&name) {
                resp.headers_mut().append(name.clone(), value.clone());
            }
        }
        if let Some(age) = age {
            resp.headers_mut().insert(header::AGE, HeaderValue::from(age));
        }
        return resp;
    }
    // A `Range` on a GET is answered from the whole stored body (RFC 9110 §14.2).
    if ranges && !is_head && request.contains_key(header::RANGE) {
        if let Some(mut resp) = super::range::ranged(request, &entry) {
            if let Some(age) = age {
                resp.headers_mut().insert(header::AGE, HeaderValue::from(age));
            }
            return resp;
        }
    }
    let mut resp = Response::new(if is_head {
        proxy::empty()
    } else {
        proxy::full(entry.body)
    });
    *resp.status_mut() = entry.status;
    *resp.headers_mut() = entry.headers;
    if let Some(age) = age {
        resp.headers_mut().insert(header::AGE, HeaderValue::from(age));
    }
    resp
}

pub(super) fn miss(stored: bool, detail: Option<&'static str>) -> Outcome {
    Outcome::Miss {
        stored,
        detail,
        requested: false,
    }
}
