//! Phase 3, key: where a cacheable request's entry lives. The logical key
//! and tags the rule renders, the credential scope's field (with any
//! implicit variant), and the `Vary` variant a response selects.

use super::scope::{ANONYMOUS, PUBLIC};
use super::{implicit, suspect_credentials, vary, Gateway};
use crate::config::DebugKeyHeader;
use crate::proxy::Body;
use crate::rules::{CacheRule, RequestView};
use http::{header, Method, Request};

/// Where a cacheable request's entry lives: the logical key and the
/// credential scope's field; and the rule's tags for it.
#[derive(Clone)]
pub(super) struct CacheKey {
    pub(super) key: String,
    pub(super) field: String,
    pub(super) tags: Vec<String>,
}

/// The opt-in debug header naming the key an answer was stored under.
pub(super) const X_CACHE_KEY: http::HeaderName = http::HeaderName::from_static("x-cache-key");

impl CacheKey {
    /// Whether the entry is shared by callers (`anon`, `public`, with or
    /// without an implicit variant), rather than one credential's.
    fn is_shared(&self) -> bool {
        let scope = self.field.split('#').next().unwrap_or("");
        scope == ANONYMOUS || scope == PUBLIC
    }
}

impl Gateway {
    /// The `X-Cache-Key` value for this key, when `[cache]
    /// debug_key_header` shows it: only the logical key (as `{prefix}` is
    /// not part of it, nor the scope field, no caller's hash is shown).
    /// Off by default: nothing is computed then.
    pub(super) fn shown_key(&self, key: &CacheKey) -> Option<http::HeaderValue> {
        let shown = match self.generation.config.cache.debug_key_header {
            DebugKeyHeader::Off => false,
            DebugKeyHeader::Private => !key.is_shared(),
            DebugKeyHeader::All => true,
        };
        shown.then(|| http::HeaderValue::from_str(&key.key).ok()).flatten()
    }

    /// The logical key and scope field, or why there is none.
    pub(super) fn cache_key(
        &self,
        req: &Request<Body>,
        rule: &CacheRule,
        captures: &crate::rules::PathCaptures<'_>,
    ) -> Result<CacheKey, &'static str> {
        let config = &self.generation.config;
        let view = request_view(req);
        let Some(key) = config.rules.render_key(&rule.key, &view, captures) else {
            tracing::debug!(rule = %rule.name, "key renders empty or too long; bypassing the cache");
            return Err("key");
        };
        let field = suspect_credentials::scope_field(rule.scope, req.headers(), &config.cache, self.scope_key())?;
        let field = implicit::field(field, req.headers(), config);
        let tags = rule
            .tags
            .iter()
            .filter_map(|t| config.rules.render_key(t, &view, captures))
            .collect();
        Ok(CacheKey { key, field, tags })
    }

    /// The keys GET and HEAD of this URI would be cached under, where a
    /// rule caches them (the same key, unless the template has `{method}`).
    pub(super) fn keys_for_uri(&self, path: &str, query: Option<&str>, view: &RequestView<'_>) -> Vec<String> {
        let rules = &self.generation.config.rules;
        let mut keys = Vec::new();
        for method in [Method::GET, Method::HEAD] {
            let Some(m) = rules.match_cache(&method, path) else {
                continue;
            };
            let view = RequestView {
                method: &method,
                host: view.host,
                path,
                query,
                headers: view.headers,
            };
            keys.extend(rules.render_key(&m.rule.key, &view, &m.captures));
        }
        keys.dedup();
        keys
    }
}

/// What a rule's templates read from a request.
pub(super) fn request_view(req: &Request<Body>) -> RequestView<'_> {
    RequestView {
        method: req.method(),
        host: req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or(""),
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    }
}

/// The field a response is stored in for a request: the scope's own, or
/// the variant the request selects when the response has `Vary`
/// (`Accept-Encoding` aside when compression is `negotiated`).
pub(super) fn field_for(
    scope: &str,
    response: &http::HeaderMap,
    request: &http::HeaderMap,
    negotiated: bool,
) -> String {
    field_of_variant(scope, &vary::keyed_names(response, negotiated), request)
}

/// [`field_for`] once the response's keyed `Vary` names are known.
pub(super) fn field_of_variant(scope: &str, names: &[http::HeaderName], request: &http::HeaderMap) -> String {
    if names.is_empty() {
        scope.to_string()
    } else {
        vary::variant_field(scope, names, request)
    }
}
