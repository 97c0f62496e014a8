//! The stored form of a cached response: a compact binary record that a hit
//! decodes without parsing JSON and without copying the body.
//!
//! Layout (all integers big-endian):
//! ```text
//! "CG" version:u8 status:u16 stored_at_ms:u64 ttl_ms:u64
//! stale_while_revalidate_ms:u64 stale_if_error_ms:u64 flags:u8
//! header_count:u16 { name_len:u16 name value_len:u32 value }*
//! body_len:u64 body
//! ```
//! Anything that does not decode (a foreign value, a truncated one, another
//! version, a body that is not exactly `body_len` long) is treated as a miss
//! and overwritten by the next fill.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 2] = b"CG";
/// 2: the body's length is stored, so a cut-short value never decodes.
const VERSION: u8 = 2;
const FIXED_LEN: usize = 2 + 1 + 2 + 8 + 8 + 8 + 8 + 1 + 2 + 8;
/// More headers than any response hyper accepts (100 by default); a
/// record claiming more is not ours.
const MAX_HEADERS: usize = 4096;
/// Byte offset of `ttl_ms`: a soft purge rewrites it in place.
pub const TTL_OFFSET: usize = 2 + 1 + 2 + 8;
const FLAG_MUST_REVALIDATE: u8 = 1;

/// How long an entry is fresh, and how long it may be served stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifetime {
    /// Fresh for this long after it was stored.
    pub ttl: Duration,
    /// After that, served stale while one background request refreshes it.
    pub stale_while_revalidate: Duration,
    /// After that, served stale when the backend fails.
    pub stale_if_error: Duration,
    /// Never served stale without a successful validation.
    pub must_revalidate: bool,
}

impl Lifetime {
    pub fn fixed(ttl: Duration) -> Lifetime {
        Lifetime {
            ttl,
            ..Lifetime::default()
        }
    }

    /// How long the store must keep the entry: fresh plus the longer stale window.
    pub fn retain(&self) -> Duration {
        self.ttl + self.stale_while_revalidate.max(self.stale_if_error)
    }
}

/// A decoded entry; `body` shares the buffer it was decoded from.
#[derive(Debug, Clone)]
pub struct Entry {
    pub status: StatusCode,
    /// When the response was stored, in milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
    pub lifetime: Lifetime,
    pub headers: HeaderMap,
    pub body: Bytes,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Entry {
    /// Encodes status, headers and body into one buffer.
    pub fn encode(
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        stored_at_ms: u64,
        lifetime: &Lifetime,
    ) -> Bytes {
        let headers_len: usize = headers.iter().map(|(n, v)| 6 + n.as_str().len() + v.len()).sum();
        let mut buf = BytesMut::with_capacity(FIXED_LEN + headers_len + body.len());
        buf.put_slice(MAGIC);
        buf.put_u8(VERSION);
        buf.put_u16(status.as_u16());
        buf.put_u64(stored_at_ms);
        buf.put_u64(ms(lifetime.ttl));
        buf.put_u64(ms(lifetime.stale_while_revalidate));
        buf.put_u64(ms(lifetime.stale_if_error));
        buf.put_u8(if lifetime.must_revalidate {
            FLAG_MUST_REVALIDATE
        } else {
            0
        });
        let count = headers.len().min(u16::MAX as usize);
        buf.put_u16(count as u16);
        for (name, value) in headers.iter().take(count) {
            buf.put_u16(name.as_str().len() as u16);
            buf.put_slice(name.as_str().as_bytes());
            buf.put_u32(value.len() as u32);
            buf.put_slice(value.as_bytes());
        }
        buf.put_u64(body.len() as u64);
        buf.put_slice(body);
        buf.freeze()
    }

    /// Decodes an entry; `None` for anything that is not a valid entry.
    pub fn decode(buf: &Bytes) -> Option<Entry> {
        let mut r = Reader { buf, pos: 0 };
        if r.take(2)? != MAGIC || r.u8()? != VERSION {
            return None;
        }
        let status = StatusCode::from_u16(r.u16()?).ok()?;
        let stored_at_ms = r.u64()?;
        let lifetime = Lifetime {
            ttl: Duration::from_millis(r.u64()?),
            stale_while_revalidate: Duration::from_millis(r.u64()?),
            stale_if_error: Duration::from_millis(r.u64()?),
            must_revalidate: r.u8()? & FLAG_MUST_REVALIDATE != 0,
        };
        let count = r.u16()? as usize;
        if count > MAX_HEADERS {
            return None;
        }
        let mut headers = HeaderMap::try_with_capacity(count).ok()?;
        for _ in 0..count {
            let name_len = r.u16()? as usize;
            let name = HeaderName::from_bytes(r.take(name_len)?).ok()?;
            let value_len = r.u32()? as usize;
            let start = r.pos;
            r.take(value_len)?;
            let value = HeaderValue::from_maybe_shared(buf.slice(start..start + value_len)).ok()?;
            headers.try_append(name, value).ok()?;
        }
        let body_len = usize::try_from(r.u64()?).ok()?;
        if buf.len() - r.pos != body_len {
            return None;
        }
        let body = buf.slice(r.pos..);
        Some(Entry {
            status,
            stored_at_ms,
            lifetime,
            headers,
            body,
        })
    }

    /// Milliseconds since the entry went stale (0 while fresh).
    pub fn stale_for_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_at_ms.saturating_add(ms(self.lifetime.ttl)))
    }

    /// Whether a stale entry may be served while it is refreshed.
    pub fn within_stale_while_revalidate(&self, now_ms: u64) -> bool {
        !self.lifetime.must_revalidate && self.stale_for_ms(now_ms) < ms(self.lifetime.stale_while_revalidate)
    }

    /// Whether a stale entry may be served because the backend failed.
    pub fn within_stale_if_error(&self, now_ms: u64) -> bool {
        !self.lifetime.must_revalidate && self.stale_for_ms(now_ms) < ms(self.lifetime.stale_if_error)
    }

    /// Seconds since the entry was stored.
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_at_ms) / 1000
    }

    /// Whether the entry is still fresh at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.stored_at_ms.saturating_add(ms(self.lifetime.ttl))
    }

    /// Whole seconds of freshness left at `now_ms`.
    pub fn ttl_left_secs(&self, now_ms: u64) -> u64 {
        self.stored_at_ms
            .saturating_add(ms(self.lifetime.ttl))
            .saturating_sub(now_ms)
            / 1000
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let lifetime = Lifetime {
            ttl: Duration::from_secs(300),
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(60),
            must_revalidate: true,
        };
        let buf = Entry::encode(StatusCode::OK, &h, b"{\"id\":1}", 1000, &lifetime);
        let e = Entry::decode(&buf).unwrap();
        assert_eq!(e.status, StatusCode::OK);
        assert_eq!(e.stored_at_ms, 1000);
        assert_eq!(e.lifetime, lifetime);
        assert_eq!(lifetime.retain(), Duration::from_secs(360));
        assert_eq!(e.headers, h);
        assert_eq!(&e.body[..], b"{\"id\":1}");
        assert!(e.is_fresh(1000 + 299_999) && !e.is_fresh(1000 + 300_000));
    }

    #[test]
    fn garbage_and_truncation_do_not_decode() {
        let buf = Entry::encode(StatusCode::OK, &HeaderMap::new(), b"x", 0, &Lifetime::default());
        assert!(Entry::decode(&Bytes::from_static(b"{\"id\":1}")).is_none());
        assert!(Entry::decode(&Bytes::from_static(b"")).is_none());
        for cut in 0..FIXED_LEN {
            assert!(Entry::decode(&buf.slice(..cut)).is_none());
        }
        let mut h = HeaderMap::new();
        h.insert("x-long", HeaderValue::from_static("value"));
        let buf = Entry::encode(StatusCode::OK, &h, b"", 0, &Lifetime::default());
        assert!(Entry::decode(&buf.slice(..buf.len() - 2)).is_none());
    }

    /// A body cut short (or grown) never decodes: its length is stored.
    #[test]
    fn a_body_of_the_wrong_length_does_not_decode() {
        let buf = Entry::encode(
            StatusCode::OK,
            &HeaderMap::new(),
            b"0123456789",
            0,
            &Lifetime::default(),
        );
        assert!(Entry::decode(&buf).is_some());
        for cut in 1..=10 {
            assert!(Entry::decode(&buf.slice(..buf.len() - cut)).is_none(), "cut {cut}");
        }
        let mut longer = buf.to_vec();
        longer.push(b'x');
        assert!(Entry::decode(&Bytes::from(longer)).is_none());
    }

    /// A header count no response has is refused, not allocated (65,535
    /// made HeaderMap::with_capacity panic).
    #[test]
    fn an_absurd_header_count_does_not_decode_or_panic() {
        let buf = Entry::encode(StatusCode::OK, &HeaderMap::new(), b"", 0, &Lifetime::default());
        let mut v = buf.to_vec();
        let at = FIXED_LEN - 8 - 2;
        v[at..at + 2].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(Entry::decode(&Bytes::from(v)).is_none());
    }

    /// The version before the body length was stored is a miss.
    #[test]
    fn version_1_records_are_misses() {
        let buf = Entry::encode(StatusCode::OK, &HeaderMap::new(), b"x", 0, &Lifetime::default());
        let mut v = buf.to_vec();
        v[2] = 1;
        assert!(Entry::decode(&Bytes::from(v)).is_none());
    }
}

#[cfg(test)]
mod stale_tests {
    use super::*;

    #[test]
    fn stale_windows() {
        let lifetime = Lifetime {
            ttl: Duration::from_secs(10),
            stale_while_revalidate: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
            must_revalidate: false,
        };
        let buf = Entry::encode(StatusCode::OK, &HeaderMap::new(), b"", 0, &lifetime);
        let e = Entry::decode(&buf).unwrap();
        assert!(e.is_fresh(9_999) && !e.is_fresh(10_000));
        assert!(e.within_stale_while_revalidate(14_999) && !e.within_stale_while_revalidate(15_000));
        assert!(e.within_stale_if_error(69_999) && !e.within_stale_if_error(70_000));
        let strict = Lifetime {
            must_revalidate: true,
            ..lifetime
        };
        let e = Entry::decode(&Entry::encode(StatusCode::OK, &HeaderMap::new(), b"", 0, &strict)).unwrap();
        assert!(!e.within_stale_while_revalidate(10_001) && !e.within_stale_if_error(10_001));
    }
}
