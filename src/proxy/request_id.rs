//! `X-Request-Id`: the id that ties a request's access log line to the
//! backend's logs and to what the client saw. A client's own id is kept
//! when well-formed (1 to 128 of `A-Z a-z 0-9 . _ : -`), otherwise replaced;
//! a request without one gets a new id: a random per-process prefix and a
//! counter, in hex (no clock, no lock, unique per process run). The id goes
//! to the backend and back to the client on every answer. It is never part
//! of a cache key, and the answer's header is set last, over whatever a
//! stored entry or the backend carried, so a hit bears this request's id.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client's id longer than this is replaced.
const MAX_LEN: usize = 128;

/// The process's 48-bit random prefix, and the ids made so far.
static PREFIX: LazyLock<u64> = LazyLock::new(|| rand::random::<u64>() & 0xffff_ffff_ffff);
static MADE: AtomicU64 = AtomicU64::new(0);

/// Whether a client's id can be kept: nothing a log line or a header could
/// be broken by.
pub fn well_formed(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A new id: 12 hex digits of prefix, 12 of counter, formatted on the stack.
pub fn generate() -> HeaderValue {
    let n = MADE.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff;
    let mut buf = [0u8; 24];
    hex_into(&mut buf[..12], *PREFIX);
    hex_into(&mut buf[12..], n);
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

/// `out.len()` lowest hex digits of `v`, most significant first.
fn hex_into(out: &mut [u8], mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// The request's id (the client's if well-formed, else a new one), set on
/// the request so the backend gets it; returned for the answer and the log.
pub fn assign(request: &mut HeaderMap) -> HeaderValue {
    let mut given = request.get_all(&X_REQUEST_ID).iter();
    // One well-formed value kept as is (a shared copy, no allocation).
    let id = match (given.next(), given.next()) {
        (Some(v), None) if well_formed(v.as_bytes()) => v.clone(),
        _ => generate(),
    };
    request.insert(X_REQUEST_ID, id.clone());
    id
}

/// Sets the id on an answer, over any the backend or a stored entry had.
pub fn stamp(answer: &mut HeaderMap, id: HeaderValue) {
    answer.insert(X_REQUEST_ID, id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_client_id_is_kept_and_any_other_replaced() {
        for kept in ["abc", "A.b_c:d-e", &"x".repeat(128)] {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, HeaderValue::from_str(kept).unwrap());
            assert_eq!(assign(&mut h), kept);
            assert_eq!(h.get(X_REQUEST_ID).unwrap(), kept);
        }
        for replaced in ["", "a b", "a\"b", "é", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, HeaderValue::from_bytes(replaced.as_bytes()).unwrap());
            let id = assign(&mut h);
            assert_ne!(id.as_bytes(), replaced.as_bytes());
            assert!(well_formed(id.as_bytes()));
            assert_eq!(h.get_all(X_REQUEST_ID).iter().count(), 1);
        }
        // Two ids: neither is trusted over the other.
        let mut h = HeaderMap::new();
        h.append(X_REQUEST_ID, HeaderValue::from_static("one"));
        h.append(X_REQUEST_ID, HeaderValue::from_static("two"));
        let id = assign(&mut h);
        assert!(id != "one" && id != "two");
        assert_eq!(h.get_all(X_REQUEST_ID).iter().count(), 1);
    }

    #[test]
    fn generated_ids_are_distinct_hex_of_one_prefix() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert_eq!(a.as_bytes()[..12], b.as_bytes()[..12]);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }
}
