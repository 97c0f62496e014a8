//! `X-Request-Id`: the id that ties a request's access log line to the
//! backend's logs and to what the client saw. A client's own id is kept
//! when well-formed (1 to 128 of `A-Z a-z 0-9 . _ : -`), otherwise replaced;
//! a request without one gets a new id: a random per-process prefix and a
//! counter, in hex (no clock, no lock, unique per process run), made in
//! blocks so that an id costs no allocation of its own. The id goes
//! to the backend and back to the client on every answer. It is never part
//! of a cache key, and the answer's header is set last, over whatever a
//! stored entry or the backend carried, so a hit bears this request's id.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::cell::RefCell;
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

/// Ids are made this many at a time per thread, into one buffer that each
/// id shares: one allocation per [`BLOCK`] requests, not one per request.
const BLOCK: usize = 64;
const ID_LEN: usize = 24;

thread_local! {
    /// The ids made for this thread and not yet handed out.
    static UNUSED: RefCell<Bytes> = const { RefCell::new(Bytes::new()) };
}

/// A new id: 12 hex digits of prefix, 12 of counter.
pub fn generate() -> HeaderValue {
    let id = UNUSED.with(|unused| {
        let mut unused = unused.borrow_mut();
        if unused.is_empty() {
            *unused = make_block();
        }
        unused.split_to(ID_LEN)
    });
    // A slice of the block: the header shares it, nothing is copied.
    HeaderValue::from_maybe_shared(id).unwrap_or(HeaderValue::from_static("0"))
}

/// [`BLOCK`] consecutive ids, numbers taken from the process's counter at once.
fn make_block() -> Bytes {
    let first = MADE.fetch_add(BLOCK as u64, Ordering::Relaxed);
    let mut block = BytesMut::with_capacity(BLOCK * ID_LEN);
    let mut id = [0u8; ID_LEN];
    hex_into(&mut id[..12], *PREFIX);
    for n in first..first + BLOCK as u64 {
        hex_into(&mut id[12..], n & 0xffff_ffff_ffff);
        block.extend_from_slice(&id);
    }
    block.freeze()
}

/// `out.len()` lowest hex digits of `v`, most significant first.
fn hex_into(out: &mut [u8], mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// A request's id: the client's if well-formed, else one made for it.
#[derive(Clone)]
pub struct RequestId {
    value: HeaderValue,
    /// Not the client's: the request's header must be set (or replaced).
    made: bool,
}

impl RequestId {
    /// Chooses the request's id; the request is left as it is, so that the
    /// admission limits count only what the client sent.
    pub fn of(request: &HeaderMap) -> RequestId {
        let mut given = request.get_all(&X_REQUEST_ID).iter();
        // One well-formed value kept as is (a shared copy, no allocation).
        if let (Some(v), None) = (given.next(), given.next()) {
            if well_formed(v.as_bytes()) {
                return RequestId {
                    value: v.clone(),
                    made: false,
                };
            }
        }
        RequestId {
            value: generate(),
            made: true,
        }
    }

    pub fn as_str(&self) -> &str {
        self.value.to_str().unwrap_or("-")
    }

    /// Sets the id on an admitted request, so the backend gets it.
    pub fn forward_on(&self, request: &mut HeaderMap) {
        if self.made {
            request.insert(X_REQUEST_ID, self.value.clone());
        }
    }

    /// Sets the id on an answer, over any the backend or a stored entry had.
    pub fn stamp(self, answer: &mut HeaderMap) {
        answer.insert(X_REQUEST_ID, self.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_client_id_is_kept_and_any_other_replaced() {
        let assign = |h: &mut HeaderMap| {
            let id = RequestId::of(h);
            id.forward_on(h);
            id.value
        };
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
        // Past a block's end, and from other threads (blocks of their own).
        let mut ids: Vec<HeaderValue> = (0..BLOCK * 2 + 3).map(|_| generate()).collect();
        for _ in 0..2 {
            ids.extend(
                std::thread::spawn(|| (0..BLOCK + 1).map(|_| generate()).collect::<Vec<_>>())
                    .join()
                    .unwrap(),
            );
        }
        let distinct: std::collections::HashSet<&[u8]> = ids.iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            assert_eq!(id.len(), ID_LEN);
            assert_eq!(id.as_bytes()[..12], ids[0].as_bytes()[..12]);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
    }
}
