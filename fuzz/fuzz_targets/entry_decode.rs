//! `store::entry::Entry::decode` on arbitrary bytes, and the
//! `Entry::encode` → `Entry::decode` round trip on arbitrary entries.
//!
//! Every input is used twice:
//!
//! 1. As a stored value: decoding never panics; a value that decodes
//!    re-encodes to a canonical form that decodes to the same entry and is a
//!    fixed point of decode+encode; its body is the tail of the value; a soft
//!    purge (zeroing `ttl_ms` in place at `TTL_OFFSET`) leaves an entry that
//!    differs only by a zero TTL; the freshness helpers never panic.
//! 2. As the description of an entry (status 100-999, up to 16 headers from
//!    arbitrary bytes that `http` accepts, times, lifetimes, body): encoding
//!    then decoding gives the same status, headers (same order per name),
//!    body and times back; lifetimes given with sub-millisecond parts come
//!    back truncated to whole milliseconds.

#![no_main]

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use cachegate::store::entry::{Entry, Lifetime, TTL_OFFSET};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fn same(a: &Entry, b: &Entry) {
    assert_eq!(a.status, b.status);
    assert_eq!(a.stored_at_ms, b.stored_at_ms);
    assert_eq!(a.lifetime, b.lifetime);
    assert_eq!(a.headers, b.headers);
    assert_eq!(a.body, b.body);
}

fn encode(e: &Entry) -> Bytes {
    Entry::encode(e.status, &e.headers, &e.body, e.stored_at_ms, &e.lifetime)
}

fn exercise_helpers(e: &Entry) {
    for now in [0, e.stored_at_ms, e.stored_at_ms.wrapping_add(1), u64::MAX] {
        let _ = e.stale_for_ms(now);
        let _ = e.within_stale_while_revalidate(now);
        let _ = e.within_stale_if_error(now);
        let _ = e.age_secs(now);
        let _ = e.is_fresh(now);
        let _ = e.ttl_left_secs(now);
    }
    let _ = e.lifetime.retain();
}

fn decode_raw(data: &[u8]) {
    let value = Bytes::copy_from_slice(data);
    let Some(e) = Entry::decode(&value) else {
        return;
    };
    assert!(data.ends_with(&e.body), "the body must be the tail of the value");
    exercise_helpers(&e);

    let canonical = encode(&e);
    let again = Entry::decode(&canonical).expect("a re-encoded entry must decode");
    same(&e, &again);
    assert_eq!(encode(&again), canonical, "encode(decode(x)) must be a fixed point");

    // A soft purge zeroes ttl_ms in place.
    let mut stale = data.to_vec();
    stale[TTL_OFFSET..TTL_OFFSET + 8].fill(0);
    let s = Entry::decode(&Bytes::from(stale)).expect("a soft-purged entry must decode");
    assert_eq!(s.lifetime.ttl, Duration::ZERO);
    let expected = Lifetime {
        ttl: Duration::ZERO,
        ..e.lifetime
    };
    assert_eq!(s.lifetime, expected);
    assert_eq!(
        (s.status, s.stored_at_ms, &s.headers, &s.body),
        (e.status, e.stored_at_ms, &e.headers, &e.body)
    );
}

/// A duration and what it reads back as after encoding.
fn duration(u: &mut Unstructured<'_>) -> Result<(Duration, Duration)> {
    if u.arbitrary::<bool>()? {
        let ms = u.arbitrary::<u64>()?;
        Ok((Duration::from_millis(ms), Duration::from_millis(ms)))
    } else {
        let d = Duration::new(u.arbitrary::<u64>()?, u.int_in_range(0..=999_999_999)?);
        let ms = d.as_millis().min(u128::from(u64::MAX)) as u64;
        Ok((d, Duration::from_millis(ms)))
    }
}

fn round_trip(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let status = StatusCode::from_u16(u.int_in_range(100..=999)?).expect("100-999 is a status");
    let mut headers = HeaderMap::new();
    for _ in 0..u.int_in_range(0..=16)? {
        let name: &[u8] = u.arbitrary()?;
        let value: &[u8] = u.arbitrary()?;
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let stored_at_ms: u64 = u.arbitrary()?;
    let (ttl, ttl_back) = duration(&mut u)?;
    let (swr, swr_back) = duration(&mut u)?;
    let (sie, sie_back) = duration(&mut u)?;
    let must_revalidate: bool = u.arbitrary()?;
    let body = u.take_rest();

    let lifetime = Lifetime {
        ttl,
        stale_while_revalidate: swr,
        stale_if_error: sie,
        must_revalidate,
    };
    let buf = Entry::encode(status, &headers, body, stored_at_ms, &lifetime);
    let e = Entry::decode(&buf).expect("an encoded entry must decode");
    assert_eq!(e.status, status);
    assert_eq!(e.stored_at_ms, stored_at_ms);
    assert_eq!(
        e.lifetime,
        Lifetime {
            ttl: ttl_back,
            stale_while_revalidate: swr_back,
            stale_if_error: sie_back,
            must_revalidate,
        }
    );
    assert_eq!(e.headers, headers);
    // Same values in the same order for every name.
    for name in headers.keys() {
        assert!(headers.get_all(name).iter().eq(e.headers.get_all(name).iter()));
    }
    assert_eq!(&e.body[..], body);
    exercise_helpers(&e);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    decode_raw(data);
    let _ = round_trip(data);
});
