//! `PURGE /any/path?query` on the main listener (the method is `[admin]
//! purge_method`): purges the entry a GET of that URL would use, in every
//! credential scope and variant and every instance's in-process tier, as
//! Varnish and nginx users purge one URL. It needs an admin token with the
//! purge scope, names only this proxy's own URLs (an absolute-form target
//! must name the request's `Host`), and never reaches the backend.

use super::token_refusal;
use crate::config::AdminScope;
use crate::gateway::{Gateway, UrlPurge};
use crate::proxy::{self, Body};
use http::{header, HeaderValue, Request, Response, StatusCode};
use serde_json::json;

/// Whether the request is a purge of one URL (its method is the
/// configured purge method).
pub fn is_purge(gateway: &Gateway, req: &Request<Body>) -> bool {
    gateway
        .config()
        .admin
        .purge_method
        .as_ref()
        .is_some_and(|m| m == req.method())
}

/// Answers a purge of one URL; the caller has checked [`is_purge`] and
/// admitted the request (its path is in its normal form, its `Host` valid).
pub async fn purge_url(gateway: &Gateway, req: Request<Body>) -> Response<Body> {
    let mut resp = answer(gateway, &req).await;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn answer(gateway: &Gateway, req: &Request<Body>) -> Response<Body> {
    if let Some(refused) = token_refusal(req.headers(), &gateway.config().admin.tokens, AdminScope::Purge) {
        return refused;
    }
    if names_another_host(req) {
        return proxy::json_error(
            StatusCode::BAD_REQUEST,
            "other_host",
            "a purge names a URL of this host only: the target's authority must be the request's Host",
        );
    }
    match gateway.purge_url(req).await {
        UrlPurge::NoRule => proxy::json(
            StatusCode::NOT_FOUND,
            &json!({
                "purged": false,
                "error": "no_rule",
                "message": "no [[rule]] caches a GET of this URL",
                "keys": [],
                "entries": 0,
            }),
        ),
        UrlPurge::Purged { keys, entries } => proxy::json(
            if entries > 0 {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            },
            &json!({
                "purged": entries > 0,
                "key": keys.first(),
                "keys": keys,
                "entries": entries,
            }),
        ),
        UrlPurge::Queued { keys, error } => proxy::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "purged": false,
                "error": "store_unavailable",
                "message": format!(
                    "the cache store did not answer ({error}); the purge is kept and applied when it does, and until then this URL is not served from the cache"
                ),
                "queued": true,
                "key": keys.first(),
                "keys": keys,
            }),
        ),
    }
}

/// Whether an absolute-form target (`PURGE http://other/path`) names an
/// authority other than the request's `Host`.
fn names_another_host(req: &Request<Body>) -> bool {
    let Some(authority) = req.uri().authority() else {
        return false;
    };
    match req.headers().get(header::HOST) {
        Some(host) => {
            proxy::host::normalized(host.as_bytes()) != proxy::host::normalized(authority.as_str().as_bytes())
        }
        None => false,
    }
}
