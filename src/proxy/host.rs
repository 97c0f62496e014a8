//! The `Host` a backend sees, and what a client's `Host` may be.
//!
//! By default the backend gets the backend URL's authority as `Host` (as
//! nginx's `proxy_set_header Host $proxy_host` does): a backend that builds
//! absolute URLs from `Host` (redirects, pagination links, `url_for`) then
//! builds the same ones for every caller, so no client can steer what is
//! stored for everyone. The client's `Host` travels in `X-Forwarded-Host`.
//! Links the backend builds on its own authority are made relative again
//! on the way back (nginx's `proxy_redirect default`).
//!
//! With `[backend] preserve_host = true` the client's `Host` is forwarded,
//! and its [`normalized`] form becomes part of every entry's identity
//! (`gateway/implicit.rs`).

use http::header::{self, HeaderMap, HeaderValue};

/// Whether a `Host` value is `host[:port]` as RFC 9110 §7.2 allows: a
/// reg-name (unreserved, sub-delims, pct-encoded) or an IP literal in
/// brackets, and digits after one `:`. No userinfo (`good@evil`), no path,
/// no spaces. An empty value is allowed (a request without authority).
pub fn is_valid(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => match value.iter().position(|b| *b == b']') {
            Some(end) => {
                let literal = &value[1..end];
                let ok = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.'));
                if !ok {
                    return false;
                }
                (&[][..], &value[end + 1..])
            }
            None => return false,
        },
        _ => match value.iter().position(|b| *b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        },
    };
    let reg_name_ok = host.iter().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    });
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit) && digits.len() <= 5,
        Some(_) => false,
    };
    reg_name_ok && port_ok
}

/// Whether a request's `Host` is unusable: more than one (RFC 9112 §3.2
/// requires a 400) or not [`is_valid`].
pub fn is_bad(headers: &HeaderMap) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => true,
        (Some(host), None) => !is_valid(host.as_bytes()),
        (None, None) => false,
    }
}

/// The form of a `Host` that a key holds: lower-case, the default port
/// (`:80`, or an empty port) dropped. Only spellings that name the same
/// origin are merged: `:443` on a plain-HTTP request is another origin.
pub fn normalized(host: &[u8]) -> Vec<u8> {
    let mut out = host.to_ascii_lowercase();
    if out.ends_with(b":80") {
        out.truncate(out.len() - 3);
    } else if out.ends_with(b":") {
        out.truncate(out.len() - 1);
    }
    out
}

/// `Location` and `Content-Location` that point at the backend's own
/// authority (and base path) are made relative, so a client is never sent
/// to the backend's internal address because the backend was given its
/// own name as `Host`. `prefix` is `http://authority[/base]`, lower-case.
pub fn relativize_links(headers: &mut HeaderMap, prefix: &str) {
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(value) = headers.get(&name) else {
            continue;
        };
        let Some(rest) = strip_prefix_ignore_case(value.as_bytes(), prefix.as_bytes()) else {
            continue;
        };
        let relative = match rest.first() {
            None => b"/".to_vec(),
            Some(b'/') => rest.to_vec(),
            Some(b'?') => [b"/".as_slice(), rest].concat(),
            Some(_) => continue, // `http://backend:80000`: another authority
        };
        if let Ok(v) = HeaderValue::from_bytes(&relative) {
            headers.insert(name, v);
        }
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)).then(|| &value[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_are_not_host_and_port_are_invalid() {
        for good in [
            "example.com",
            "EXAMPLE.com:8080",
            "127.0.0.1:80",
            "[::1]:8080",
            "[::1]",
            "x",
            "",
            "a:",
        ] {
            assert!(is_valid(good.as_bytes()), "{good}");
        }
        for bad in [
            "good.example@evil.example",
            "evil.example/path",
            "a b",
            "a:b",
            "a:80:80",
            "[::1",
            "[::1]x",
            "a\\b",
            "a:123456",
        ] {
            assert!(!is_valid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn normalising_merges_only_spellings_of_one_origin() {
        let n = |h: &str| String::from_utf8(normalized(h.as_bytes())).unwrap();
        assert_eq!(n("Example.COM"), "example.com");
        assert_eq!(n("example.com:80"), "example.com");
        assert_eq!(n("example.com:"), "example.com");
        assert_eq!(n("[::1]:80"), "[::1]");
        assert_eq!(n("example.com:8080"), "example.com:8080");
        assert_eq!(n("example.com:443"), "example.com:443");
        assert_eq!(n("example.com:180"), "example.com:180");
    }

    #[test]
    fn links_on_the_backend_authority_become_relative() {
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, "HTTP://127.0.0.1:8000/api/v1/tasks/".parse().unwrap());
        h.insert(header::CONTENT_LOCATION, "http://127.0.0.1:80001/x".parse().unwrap());
        relativize_links(&mut h, "http://127.0.0.1:8000");
        assert_eq!(h.get(header::LOCATION).unwrap(), "/api/v1/tasks/");
        assert_eq!(h.get(header::CONTENT_LOCATION).unwrap(), "http://127.0.0.1:80001/x");
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, "http://b:1/base?x=1".parse().unwrap());
        relativize_links(&mut h, "http://b:1/base");
        assert_eq!(h.get(header::LOCATION).unwrap(), "/?x=1");
    }
}
