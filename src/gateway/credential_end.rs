//! Credentials that end: what a logout (an `[[invalidate]]` rule with
//! `purge_credential = true`) or the admin API purges, and the cap
//! `[cache] credential_max_ttl` puts on a credential-scoped entry.
//!
//! A credential's entries are found through the store's per-scope index
//! (`store/scope_index.rs`), never by walking the keyspace. The credential
//! itself is hashed as a request's scope is (HMAC of the configured
//! credential headers) and never stored or logged.

use super::{scope_field_keyed, Gateway};
use crate::config::Scope;
use crate::store::entry::Lifetime;
use crate::store::scope_index::credential_scope;
use std::time::Duration;

impl Gateway {
    /// The credential scope of a request with `headers`: `None` when it
    /// carries no credential header (it is `anon`), or the scope secret is
    /// not known yet (nothing can have been stored under it then).
    pub fn credential_scope_of(&self, headers: &http::HeaderMap) -> Option<String> {
        let field = scope_field_keyed(
            Scope::Credential,
            headers,
            &self.generation.config.cache.credential_headers,
            self.scope_key(),
        )?;
        credential_scope(&field).is_some().then_some(field)
    }
}

/// `lifetime` capped for an entry stored in `field`: a credential-scoped
/// entry is servable without the backend (fresh, or stale within its
/// windows) for at most `cap`, so a revoked credential stops being served
/// by then even when nothing purged it.
pub(super) fn capped(lifetime: Lifetime, field: &str, cap: Option<Duration>) -> Lifetime {
    let Some(cap) = cap.filter(|_| credential_scope(field).is_some()) else {
        return lifetime;
    };
    let ttl = lifetime.ttl.min(cap);
    let left = cap - ttl;
    Lifetime {
        ttl,
        stale_while_revalidate: lifetime.stale_while_revalidate.min(left),
        stale_if_error: lifetime.stale_if_error.min(left),
        must_revalidate: lifetime.must_revalidate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_credential_scoped_entries_are_capped() {
        let long = Lifetime {
            ttl: Duration::from_secs(300),
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(600),
            must_revalidate: false,
        };
        let cap = Some(Duration::from_secs(60));
        let scoped = capped(long, "0123456789abcdef0123456789abcdef", cap);
        assert_eq!(scoped.ttl, Duration::from_secs(60));
        assert_eq!(scoped.retain(), Duration::from_secs(60));
        let short = Lifetime::fixed(Duration::from_secs(10));
        let kept = capped(short, "0123456789abcdef0123456789abcdef#ab", cap);
        assert_eq!(kept.ttl, Duration::from_secs(10));
        assert_eq!(capped(long, "anon", cap).ttl, Duration::from_secs(300));
        assert_eq!(capped(long, "public", cap).ttl, Duration::from_secs(300));
        assert_eq!(
            capped(long, "0123456789abcdef0123456789abcdef", None).ttl,
            Duration::from_secs(300)
        );
    }
}
