//! Request-path normalisation: one rule set, applied to every request before
//! rule matching and before forwarding, so the rules, the cache key and the
//! backend all see the same path, and no encoding trick lets a request read
//! or purge another resource's key.
//!
//! [`normalize_path`] takes the raw path of the request-target (the caller
//! splits off the query; [`normalize_path_and_query`] keeps it unchanged):
//!
//! 1. The path must start with `/`.
//! 2. Every `%` must be followed by two hex digits. Escapes of unreserved
//!    characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are decoded
//!    (§6.2.2.2); every other escape stays encoded with its hex digits
//!    uppercased (§6.2.2.1): `%2f` → `%2F`, `%3a` → `%3A`. An encoded slash
//!    is never a separator; `%2e%2E` becomes `..` (step 4). Decoding is a
//!    single pass: `%252e` stays `%252e`.
//! 3. `%00` is rejected, and so is any raw byte RFC 3986 does not allow in a
//!    path: only unreserved characters, sub-delims (`! $ & ' ( ) * + , ; =`),
//!    `:`, `@`, `/`, `%` (escapes), and `[` `]` (outside RFC 3986's path
//!    grammar, but sent unencoded by common clients) may appear, so controls,
//!    space, non-ASCII bytes and `"` `#` `<` `>` `?` `\` `^` `` ` `` `{` `|`
//!    `}` are errors. A backslash is rejected, never read as `/`.
//! 4. Runs of `/` are merged into one (as nginx's `merge_slashes`), then dot
//!    segments are removed (RFC 3986 §5.2.4): `.` is dropped, `..` drops the
//!    segment before it and stays at the root when there is none. A trailing
//!    `/` is kept, and a final `.` or `..` leaves one: `/a/b/.` → `/a/b/`,
//!    `/a/..` → `/`.
//! 5. An input that is already normal is returned borrowed (no allocation);
//!    otherwise an owned string is returned.
//!
//! Errors ([`PathError`]) are answered with 400. The output is a fixed point:
//! normalising it again returns it unchanged.

use std::borrow::Cow;
use std::fmt;

/// Why a request path was refused (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%00`: an encoded NUL byte.
    EncodedNul,
    /// A raw byte that RFC 3986 does not allow in a path.
    ForbiddenByte(u8),
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::NotAbsolute => f.write_str("the request path must start with '/'"),
            PathError::BadEscape => {
                f.write_str("malformed percent-escape in the request path ('%' must be followed by two hex digits)")
            }
            PathError::EncodedNul => f.write_str("encoded NUL (%00) in the request path"),
            PathError::ForbiddenByte(b) if b.is_ascii_graphic() => {
                write!(f, "character '{}' is not allowed in the request path", char::from(*b))
            }
            PathError::ForbiddenByte(b) => write!(f, "byte 0x{b:02X} is not allowed in the request path"),
        }
    }
}

impl std::error::Error for PathError {}

/// Normalises the raw path of a request-target (no query) as the module
/// documentation describes: borrowed when already normal, owned otherwise.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path.as_bytes())? {
        Ok(Cow::Borrowed(path))
    } else {
        rewrite(path).map(Cow::Owned)
    }
}

/// Normalises the path part of a path-and-query (everything before the first
/// `?`) and keeps the `?` and the query after it byte for byte.
pub fn normalize_path_and_query(pq: &str) -> Result<Cow<'_, str>, PathError> {
    let (path, query) = match pq.find('?') {
        Some(i) => pq.split_at(i),
        None => (pq, ""),
    };
    match normalize_path(path)? {
        Cow::Borrowed(_) => Ok(Cow::Borrowed(pq)),
        Cow::Owned(mut p) => {
            p.push_str(query);
            Ok(Cow::Owned(p))
        }
    }
}

/// RFC 3986 §2.3 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A byte allowed raw in a path segment other than `%`: unreserved,
/// sub-delims, ":" and "@" (RFC 3986 §3.3 pchar), and `[` `]`, which
/// clients send unencoded (see the module doc).
fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' | b'[' | b']'
        )
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The escape starting at `bytes[i]` (a `%`): its value, and whether its hex
/// digits are already in normal form (uppercase).
fn escape_at(bytes: &[u8], i: usize) -> Result<(u8, bool), PathError> {
    let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
        (Some(&hi), Some(&lo)) => (hi, lo),
        _ => return Err(PathError::BadEscape),
    };
    let value = match (hex_value(hi), hex_value(lo)) {
        (Some(h), Some(l)) => (h << 4) | l,
        _ => return Err(PathError::BadEscape),
    };
    if value == 0 {
        return Err(PathError::EncodedNul);
    }
    let upper = !hi.is_ascii_lowercase() && !lo.is_ascii_lowercase();
    Ok((value, upper))
}

fn is_dot_segment(seg: &[u8]) -> bool {
    seg == b"." || seg == b".."
}

/// Validates the whole path and tells whether it is already normal. Every
/// error is found here, so the rewrite runs only on valid input.
fn is_normal(bytes: &[u8]) -> Result<bool, PathError> {
    let mut normal = true;
    // The path starts with '/': segments start after it.
    let mut seg_start = 1;
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'/' => {
                // An empty segment (a run of '/') or a dot segment.
                if i == seg_start || is_dot_segment(&bytes[seg_start..i]) {
                    normal = false;
                }
                seg_start = i + 1;
            }
            b'%' => {
                let (value, upper) = escape_at(bytes, i)?;
                if is_unreserved(value) || !upper {
                    normal = false;
                }
                i += 3;
                continue;
            }
            b if is_pchar(b) => {}
            b => return Err(PathError::ForbiddenByte(b)),
        }
        i += 1;
    }
    if is_dot_segment(&bytes[seg_start..]) {
        normal = false;
    }
    Ok(normal)
}

/// Builds the normal form of `path` (which starts with '/').
fn rewrite(path: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    // Where each kept segment's leading '/' sits in `out`, for `..`.
    let mut starts: Vec<usize> = Vec::new();
    // Whether the output ends with '/': the last segment was empty, `.` or `..`.
    let mut trailing = false;
    for raw in path[1..].split('/') {
        let mark = out.len();
        out.push('/');
        push_segment(raw.as_bytes(), &mut out)?;
        let seg = &out.as_bytes()[mark + 1..];
        if seg.is_empty() || seg == b"." {
            out.truncate(mark);
            trailing = true;
        } else if seg == b".." {
            out.truncate(mark);
            if let Some(start) = starts.pop() {
                out.truncate(start);
            }
            trailing = true;
        } else {
            starts.push(mark);
            trailing = false;
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Appends one segment with its escapes normalised (step 2).
fn push_segment(seg: &[u8], out: &mut String) -> Result<(), PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut i = 0;
    while i < seg.len() {
        let b = seg[i];
        if b == b'%' {
            let (value, _) = escape_at(seg, i)?;
            if is_unreserved(value) {
                out.push(char::from(value));
            } else {
                out.push('%');
                out.push(char::from(HEX[usize::from(value >> 4)]));
                out.push(char::from(HEX[usize::from(value & 0xF)]));
            }
            i += 3;
        } else if is_pchar(b) {
            out.push(char::from(b));
            i += 1;
        } else {
            return Err(PathError::ForbiddenByte(b));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "normalize_tests.rs"]
mod tests;
