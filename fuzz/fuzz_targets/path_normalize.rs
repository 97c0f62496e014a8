//! `proxy::normalize::{normalize_path, normalize_path_and_query}`.
//!
//! Input: any bytes; only UTF-8 is used (request targets reach the
//! normaliser as `&str`). Checked on every input:
//!
//! - no panic;
//! - the answer equals an independent reference (escapes normalised byte by
//!   byte, `//` merged, then RFC 3986 §5.2.4's input/output-buffer
//!   algorithm as the RFC writes it; the reference of the unit tests in
//!   `src/proxy/normalize.rs`, with raw `[` `]` allowed as the module
//!   documents), errors included;
//! - the output starts with `/`, never contains `//` or a `.`/`..` segment,
//!   holds only allowed bytes and uppercase escapes of reserved bytes;
//! - the output is a fixed point (normalising it again returns it borrowed);
//! - `Cow::Borrowed` if and only if the output equals the input;
//! - `normalize_path_and_query` normalises the part before the first `?`
//!   exactly as `normalize_path` does and keeps the rest byte for byte.

#![no_main]

use cachegate::proxy::normalize::{normalize_path, normalize_path_and_query, PathError};
use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// Allowed raw besides `/` and `%`: RFC 3986 pchar, plus `[` and `]`,
/// which the normaliser accepts raw (common clients send them unencoded).
fn is_pchar(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,;=:@[]".contains(&b)
}

fn reference(p: &str) -> Result<String, PathError> {
    if !p.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let b = p.as_bytes();
    let mut s = String::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(PathError::BadEscape);
                }
                let v = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
                if v == 0 {
                    return Err(PathError::EncodedNul);
                }
                if is_unreserved(v) {
                    s.push(char::from(v));
                } else {
                    s.push_str(&format!("%{v:02X}"));
                }
                i += 3;
            }
            c if c == b'/' || is_pchar(c) => {
                s.push(char::from(c));
                i += 1;
            }
            c => return Err(PathError::ForbiddenByte(c)),
        }
    }
    while s.contains("//") {
        s = s.replace("//", "/");
    }
    // RFC 3986 §5.2.4.
    let mut input = s.as_str();
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/" } else { &input[3..] };
            match output.rfind('/') {
                Some(j) => output.truncate(j),
                None => output.clear(),
            }
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |j| j + start);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    Ok(output)
}

fn assert_invariants(out: &str) {
    let b = out.as_bytes();
    assert_eq!(b.first(), Some(&b'/'), "{out:?} must start with '/'");
    assert!(!out.contains("//"), "{out:?} contains '//'");
    for seg in out[1..].split('/') {
        assert!(seg != "." && seg != "..", "{out:?} has a dot segment");
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = &b[i + 1..i + 3];
            assert!(
                hex.iter().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)),
                "{out:?} has a non-uppercase escape"
            );
            let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(!is_unreserved(v), "{out:?} has an escaped unreserved character");
            assert_ne!(v, 0, "{out:?} has %00");
            i += 3;
        } else {
            assert!(b[i] == b'/' || is_pchar(b[i]), "{out:?} has a forbidden byte");
            i += 1;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };

    // The path alone.
    let got = normalize_path(input);
    assert_eq!(
        got.as_deref().map_err(|e| *e),
        reference(input).as_deref().map_err(|e| *e),
        "reference disagrees on {input:?}"
    );
    if let Ok(out) = &got {
        match out {
            Cow::Borrowed(b) => assert_eq!(*b, input, "borrowed but changed"),
            Cow::Owned(o) => assert_ne!(o, input, "owned but unchanged: {input:?}"),
        }
        assert_invariants(out);
        match normalize_path(out) {
            Ok(Cow::Borrowed(again)) => assert_eq!(again, &**out),
            other => panic!("{input:?} -> {out:?} is not a fixed point: {other:?}"),
        }
    }

    // Path and query.
    let (path, query) = input.split_at(input.find('?').unwrap_or(input.len()));
    let got = normalize_path_and_query(input);
    let expected = normalize_path(path).map(|p| format!("{p}{query}"));
    assert_eq!(
        got.as_deref().map_err(|e| *e),
        expected.as_deref().map_err(|e| *e),
        "path-and-query {input:?}"
    );
    if let Ok(out) = got {
        match out {
            Cow::Borrowed(b) => assert_eq!(b, input, "borrowed but changed"),
            Cow::Owned(o) => assert_ne!(o, input, "owned but unchanged: {input:?}"),
        }
    }
});
