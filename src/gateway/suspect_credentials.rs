//! Credential detection that fails safe.
//!
//! The listed `[cache] credential_headers` give a request a scope of its
//! own (`gateway/scope.rs`). A backend may know callers by another header
//! (`X-Tenant-Token`, `X-My-Api-Key`): a request carrying a header whose
//! name looks like a credential (contains `auth`, `token`, `key`,
//! `session` or `secret`) that is neither listed as a credential nor as a
//! non-credential would otherwise land in the shared `anon` or `public`
//! scope, its private answer served to anyone. By default it bypasses the
//! cache instead (`suspect_credential_headers = "bypass"`); `"scope"`
//! hashes such headers into the scope like listed ones; `"ignore"` is the
//! old behaviour.

use super::scope::{scope_field_keyed, ScopeKey, ANONYMOUS, PUBLIC};
use crate::config::{CacheConfig, Scope, SuspectCredentials, CREDENTIAL_WORDS};
use http::{HeaderMap, HeaderName};

/// The `detail` of a request bypassed for an unlisted credential.
pub const UNLISTED: &str = "unlisted-credential";

/// Whether a (lower-case) header name looks like a credential's.
pub fn looks_like_credential(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    // One pass, trying the words only where their first letter is: this
    // runs for every header of every cached request.
    (0..name.len()).any(|at| {
        CREDENTIAL_WORDS
            .iter()
            .any(|word| word.as_bytes()[0] == name[at] && name[at..].starts_with(word.as_bytes()))
    })
}

/// The request's headers that look like credentials and are not listed
/// either way.
fn unlisted<'a>(headers: &'a HeaderMap, cache: &'a CacheConfig) -> impl Iterator<Item = &'a HeaderName> {
    headers.keys().filter(|name| {
        looks_like_credential(name)
            && !cache.credential_headers.contains(name)
            && !cache.non_credential_headers.contains(name)
    })
}

/// The store field of the request's credential scope, or why it has none:
/// `scope-secret` (the secret is not known yet) or [`UNLISTED`].
pub fn scope_field(
    scope: Scope,
    headers: &HeaderMap,
    cache: &CacheConfig,
    key: Option<&ScopeKey>,
) -> Result<String, &'static str> {
    let listed = |names: &[HeaderName]| scope_field_keyed(scope, headers, names, key).ok_or("scope-secret");
    match cache.suspect_credentials {
        SuspectCredentials::Ignore => listed(&cache.credential_headers),
        SuspectCredentials::Bypass => {
            let field = listed(&cache.credential_headers)?;
            let shared = field == ANONYMOUS || field == PUBLIC;
            if shared && unlisted(headers, cache).next().is_some() {
                return Err(UNLISTED);
            }
            Ok(field)
        }
        SuspectCredentials::Scope => {
            let mut extra: Vec<HeaderName> = unlisted(headers, cache).cloned().collect();
            if extra.is_empty() {
                return listed(&cache.credential_headers);
            }
            // Sorted: the same headers give the same scope in any order.
            extra.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            let mut names = cache.credential_headers.clone();
            names.extend(extra);
            listed(&names)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_look_like_credentials() {
        for name in [
            "x-tenant-token",
            "x-my-api-key",
            "x-auth-user",
            "x-session-id",
            "client-secret",
        ] {
            assert!(looks_like_credential(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["accept", "x-lang", "keep-alive", "x-request-id", "origin", "user-agent"] {
            assert!(!looks_like_credential(&HeaderName::from_static(name)), "{name}");
        }
        // The same verdict as a plain substring search, on names built
        // from the words' pieces.
        let pieces = [
            "a", "au", "auth", "t", "tok", "token", "k", "ke", "key", "s", "sess", "session", "secret", "-", "x",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let name = format!("{a}{b}{c}");
                    let want = CREDENTIAL_WORDS.iter().any(|w| name.contains(w));
                    assert_eq!(
                        looks_like_credential(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
                        want,
                        "{name}"
                    );
                }
            }
        }
    }
}
