//! Admin bearer tokens: only their SHA-256 is configured, and a presented
//! token is compared against every configured hash in constant time.

use crate::config::{AdminScope, AdminToken};
use http::{header, HeaderMap};
use subtle::ConstantTimeEq;

/// The SHA-256 of a token, as `[[admin.tokens]] sha256` holds it.
pub use crate::config::hash_token;

/// A new random token (URL-safe) and its hash in hex. It never starts with
/// `-` (one in 64 did), which a command line would read as a flag
/// (`--admin-token -_x…`, the demo's printed selftest line).
pub fn new_token() -> (String, String) {
    use base64::Engine;
    let token = loop {
        let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        if !t.starts_with('-') {
            break t;
        }
    };
    let hash = hex::encode(hash_token(&token));
    (token, hash)
}

/// The outcome of checking a request's credentials for a scope.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// No token, or not a known one: 401.
    Unauthenticated,
    /// A known token without the scope: 403.
    MissingScope,
}

/// Checks `Authorization: Bearer <token>` against the configured tokens.
/// Hashing first makes every comparison the same length, and every
/// configured hash is compared, so timing reveals nothing about either.
pub fn check(headers: &HeaderMap, tokens: &[AdminToken], scope: AdminScope) -> Access {
    let Some(presented) = bearer(headers) else {
        return Access::Unauthenticated;
    };
    let digest = hash_token(presented);
    let mut found: Option<&AdminToken> = None;
    for t in tokens {
        if bool::from(t.sha256.ct_eq(&digest)) {
            found = Some(t);
        }
    }
    match found {
        None => Access::Unauthenticated,
        Some(t) if t.scopes.contains(&scope) => Access::Granted,
        Some(_) => Access::MissingScope,
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Vec<AdminToken> {
        vec![
            AdminToken {
                name: "ops".into(),
                sha256: hash_token("secret-ops"),
                scopes: vec![AdminScope::Read, AdminScope::Purge],
            },
            AdminToken {
                name: "ro".into(),
                sha256: hash_token("secret-ro"),
                scopes: vec![AdminScope::Read],
            },
        ]
    }

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn checks_tokens_and_scopes() {
        let t = tokens();
        assert_eq!(check(&HeaderMap::new(), &t, AdminScope::Read), Access::Unauthenticated);
        assert_eq!(
            check(&with("Bearer secret-ops"), &t, AdminScope::Purge),
            Access::Granted
        );
        assert_eq!(check(&with("bearer secret-ro"), &t, AdminScope::Read), Access::Granted);
        assert_eq!(
            check(&with("Bearer secret-ro"), &t, AdminScope::Purge),
            Access::MissingScope
        );
        // Wrong token of the same length, and of another length.
        assert_eq!(
            check(&with("Bearer secret-opx"), &t, AdminScope::Read),
            Access::Unauthenticated
        );
        assert_eq!(check(&with("Bearer s"), &t, AdminScope::Read), Access::Unauthenticated);
        assert_eq!(
            check(&with("Basic secret-ops"), &t, AdminScope::Read),
            Access::Unauthenticated
        );
    }

    #[test]
    fn new_tokens_hash_to_their_line() {
        let (token, hash) = new_token();
        assert_eq!(hex::encode(hash_token(&token)), hash);
        assert!(token.len() >= 40);
    }
}
