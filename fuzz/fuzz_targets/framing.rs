//! `proxy::framing::Scanner`, the framing guard that reads a client
//! connection ahead of hyper.
//!
//! Input: the first byte picks a read size (1–256), the rest is the byte
//! stream a client sends. Checked on every input:
//!
//! - no panic, whatever the bytes;
//! - the verdicts do not depend on how the stream is split into reads: fed
//!   whole, fed in pieces of the chosen size, and fed one byte at a time,
//!   the first 16 requests get the same verdicts;
//! - once a request is refused, every later one is refused too.

#![no_main]

use cachegate::proxy::framing::{Scanner, Verdicts};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fn verdicts(bytes: &[u8], step: usize) -> Vec<bool> {
    let v = Arc::new(Verdicts::default());
    let mut s = Scanner::new(4096, v.clone());
    for piece in bytes.chunks(step.max(1)) {
        s.feed(piece);
    }
    (0..16).map(|_| v.next_request().is_some()).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let whole = verdicts(stream, stream.len());
    assert_eq!(verdicts(stream, step as usize + 1), whole);
    assert_eq!(verdicts(stream, 1), whole);
    if let Some(first) = whole.iter().position(|&r| r) {
        assert!(whole[first..].iter().all(|&r| r), "{whole:?}");
    }
});
