//! Credential scopes: which callers may share a cached response.
//!
//! A request's scope is a keyed hash (HMAC-SHA256) of its credential headers,
//! so Redis never holds a raw token and one caller's entry is served only to
//! a request with the same credentials. Requests without credentials share
//! the `anon` scope; `scope = "public"` rules share `public`.

use crate::config::Scope;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use sha2::Sha256;

pub const ANONYMOUS: &str = "anon";
pub const PUBLIC: &str = "public";

/// The HMAC keyed once with the scope secret. Keying derives two SHA-256
/// states from the secret; cloning the keyed state per request skips that,
/// halving the hashing an authenticated request costs.
#[derive(Clone)]
pub struct ScopeKey(Hmac<Sha256>);

impl ScopeKey {
    pub fn new(secret: &[u8]) -> Option<ScopeKey> {
        Hmac::<Sha256>::new_from_slice(secret).ok().map(ScopeKey)
    }
}

/// The store field for a request under a rule's scope; `None` when the
/// secret is not known yet (the request then bypasses the cache).
pub fn scope_field(
    scope: Scope,
    headers: &HeaderMap,
    credential_headers: &[HeaderName],
    secret: Option<&[u8]>,
) -> Option<String> {
    let key = secret.and_then(ScopeKey::new);
    scope_field_keyed(scope, headers, credential_headers, key.as_ref())
}

/// [`scope_field`] with the secret's HMAC already keyed.
pub fn scope_field_keyed(
    scope: Scope,
    headers: &HeaderMap,
    credential_headers: &[HeaderName],
    key: Option<&ScopeKey>,
) -> Option<String> {
    if scope == Scope::Public {
        return Some(PUBLIC.to_string());
    }
    // Usually a request has fewer headers than there are credential names:
    // walk the shorter list (a hash lookup per credential name cost more
    // than the rest of the scope).
    let any_present = if headers.keys_len() < credential_headers.len() {
        headers.keys().any(|name| credential_headers.contains(name))
    } else {
        credential_headers.iter().any(|name| headers.contains_key(name))
    };
    if !any_present {
        return Some(ANONYMOUS.to_string());
    }
    let present = credential_headers.iter().filter(|name| headers.contains_key(*name));
    let mut mac = key?.0.clone();
    for name in present {
        for value in headers.get_all(name) {
            mac.update(name.as_str().as_bytes());
            mac.update(b"\0");
            mac.update(value.as_bytes());
            mac.update(b"\n");
        }
    }
    let digest = mac.finalize().into_bytes();
    Some(hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::gateway::test_headers as h;

    #[test]
    fn scopes_differ_by_credential_and_never_hold_the_secret() {
        let creds = [http::header::AUTHORIZATION, http::header::COOKIE];
        let a = scope_field(
            Scope::Credential,
            &h(&[("authorization", "Bearer a")]),
            &creds,
            Some(b"k"),
        )
        .unwrap();
        let b = scope_field(
            Scope::Credential,
            &h(&[("authorization", "Bearer b")]),
            &creds,
            Some(b"k"),
        )
        .unwrap();
        let a_cookie = scope_field(Scope::Credential, &h(&[("cookie", "Bearer a")]), &creds, Some(b"k")).unwrap();
        let anon = scope_field(Scope::Credential, &h(&[]), &creds, Some(b"k")).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, a_cookie);
        assert_eq!(anon, ANONYMOUS);
        assert!(!a.contains("Bearer"));
        assert_eq!(a.len(), 32);
        let other_key = scope_field(
            Scope::Credential,
            &h(&[("authorization", "Bearer a")]),
            &creds,
            Some(b"j"),
        )
        .unwrap();
        assert_ne!(a, other_key);
        assert_eq!(
            scope_field(Scope::Public, &h(&[("authorization", "x")]), &creds, None).unwrap(),
            PUBLIC
        );
        assert!(scope_field(Scope::Credential, &h(&[("authorization", "x")]), &creds, None).is_none());
    }
}
