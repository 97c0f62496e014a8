//! The per-credential index: which logical keys hold entries of one
//! credential scope, so that a logout (or the admin API) purges that
//! credential's entries without walking the keyspace.
//!
//! Every fill into a credential scope's field (32 hex digits, or a `Vary`
//! variant of it, `<scope>#…`) indexes its logical key under the scope,
//! the way tags index keys: in Redis a sorted set `P__cg:scope:<scope>` of
//! logical keys scored by their record's expiry, written by the fill's own
//! script (on a cluster, in the fill's index step), expired members dropped
//! on every add, the set expiring with its longest member; in the memory
//! store an internal tag ([`internal_tag`]). A scope purge bumps the purge
//! epoch first (a fill in flight for the scope must not store after it),
//! then removes, in each indexed record, the scope's field and its
//! variants, and moves the record's generation; the other scopes' entries
//! stay. `anon` and `public` are never indexed: they are no credential.

use crate::rules::INTERNAL_PREFIX;

/// The credential scope a field belongs to, if it is one.
pub fn credential_scope(field: &str) -> Option<&str> {
    let scope = field.split_once('#').map_or(field, |(scope, _)| scope);
    (scope.len() == 32 && scope.bytes().all(|b| b.is_ascii_hexdigit())).then_some(scope)
}

/// Whether `field` is `scope`'s own field or one of its variants.
pub fn belongs_to(field: &str, scope: &str) -> bool {
    field
        .strip_prefix(scope)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('#'))
}

/// The memory store's tag standing for a scope (rendered tags never start
/// with `__cg:`, and the gateway drops backend tags that do).
pub fn internal_tag(scope: &str) -> String {
    format!("{INTERNAL_PREFIX}scope:{scope}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_credential_fields_have_a_scope() {
        let scope = "0123456789abcdef0123456789abcdef";
        assert_eq!(credential_scope(scope), Some(scope));
        assert_eq!(credential_scope(&format!("{scope}#ab12")), Some(scope));
        for field in ["anon", "public", "anon#ab12", "__gen", "__cg", "0123"] {
            assert_eq!(credential_scope(field), None, "{field}");
        }
        assert!(belongs_to(scope, scope));
        assert!(belongs_to(&format!("{scope}#x"), scope));
        assert!(!belongs_to(&format!("{scope}x"), scope));
        assert!(!belongs_to("anon", scope));
    }
}
