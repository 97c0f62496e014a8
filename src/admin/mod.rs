//! The admin API under `[admin] prefix` (default `/api/v1/cache`), plus
//! `/metrics`, `/healthz` and `/readyz`.
//!
//! Every admin route is checked in the same order: known path (404), method
//! (405 with `Allow`), edition (403 `feature_not_available`, whatever the
//! token), token (401 with `WWW-Authenticate`), scope (403
//! `insufficient_scope`). Response shapes follow the reference document;
//! fields are only ever added. Admin routes never reach the backend and are
//! never cached.

mod auth;
pub mod inspect;
mod purge_url;
mod routes;
mod scope_purge;

pub use auth::{hash_token, new_token};
pub use purge_url::{is_purge, purge_url};

use crate::config::{AdminScope, AdminToken, Edition};
use crate::gateway::Gateway;
use crate::proxy::{self, Body};
use crate::reload::Live;
use auth::Access;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use std::sync::Arc;

/// An admin route, with the still-encoded key for `/key/{key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Health,
    BasicStats,
    Stats,
    Clear,
    Keys,
    Key(String),
    Reload,
    ScopePurge,
    Metrics,
    Healthz,
    Readyz,
    /// A path under the prefix that is no route: 404, never forwarded.
    Unknown,
}

impl Route {
    fn methods(&self) -> &'static [Method] {
        match self {
            Route::Clear => &[Method::DELETE],
            Route::Reload | Route::ScopePurge => &[Method::POST],
            Route::Key(_) => &[Method::GET, Method::DELETE],
            _ => &[Method::GET],
        }
    }

    /// The edition and token scope a method on this route needs; `None`
    /// scope means no token at all.
    fn needs(&self, method: &Method) -> (Edition, Option<AdminScope>) {
        match self {
            Route::Health | Route::BasicStats => (Edition::Community, Some(AdminScope::Read)),
            Route::Stats => (Edition::Business, Some(AdminScope::Read)),
            Route::Clear => (Edition::Business, Some(AdminScope::Purge)),
            Route::Reload => (Edition::Community, Some(AdminScope::Purge)),
            Route::ScopePurge => (Edition::Business, Some(AdminScope::Purge)),
            Route::Keys => (Edition::Enterprise, Some(AdminScope::Inspect)),
            Route::Key(_) if method == Method::DELETE => (Edition::Business, Some(AdminScope::Purge)),
            Route::Key(_) => (Edition::Enterprise, Some(AdminScope::Inspect)),
            Route::Metrics => (Edition::Community, Some(AdminScope::Read)),
            Route::Healthz | Route::Readyz | Route::Unknown => (Edition::Community, None),
        }
    }
}

/// Whether the path is one the admin side answers (on the listener that
/// serves admin routes).
pub fn owns(gateway: &Gateway, path: &str) -> bool {
    route(&gateway.config().admin.prefix, path).is_some()
}

fn route(prefix: &str, path: &str) -> Option<Route> {
    match path {
        "/metrics" => return Some(Route::Metrics),
        "/healthz" => return Some(Route::Healthz),
        "/readyz" => return Some(Route::Readyz),
        _ => {}
    }
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        return Some(Route::Health);
    }
    let rest = rest.strip_prefix('/')?;
    Some(match rest {
        "" | "health" => Route::Health,
        "basic-stats" => Route::BasicStats,
        "stats" => Route::Stats,
        "clear" => Route::Clear,
        "keys" => Route::Keys,
        "reload" => Route::Reload,
        "scope/purge" => Route::ScopePurge,
        _ => match rest.strip_prefix("key/") {
            Some(key) => Route::Key(key.to_string()),
            None => Route::Unknown,
        },
    })
}

/// The 401 (no or unknown token) or 403 (token without `scope`) for a
/// request, or `None` when its token grants the scope.
fn token_refusal(headers: &http::HeaderMap, tokens: &[AdminToken], scope: AdminScope) -> Option<Response<Body>> {
    match auth::check(headers, tokens, scope) {
        Access::Granted => None,
        Access::Unauthenticated => {
            let mut resp = proxy::json_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin token is required: Authorization: Bearer <token>",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cachegate\""),
            );
            Some(resp)
        }
        Access::MissingScope => Some(proxy::json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({
                "error": "insufficient_scope",
                "message": format!("this token lacks the {:?} scope", scope.as_str()),
                "required_scope": scope.as_str(),
            }),
        )),
    }
}

/// Answers an admin request; the caller has checked [`owns`].
pub async fn handle(live: &Arc<Live>, gateway: &Gateway, req: Request<Body>) -> Response<Body> {
    let config = gateway.config();
    let Some(route) = route(&config.admin.prefix, req.uri().path()) else {
        return proxy::json_error(StatusCode::NOT_FOUND, "not_found", "no such admin route");
    };
    if route == Route::Unknown {
        return proxy::json_error(StatusCode::NOT_FOUND, "not_found", "no such admin route");
    }
    let allowed = route.methods();
    let method = if req.method() == Method::HEAD {
        &Method::GET
    } else {
        req.method()
    };
    if !allowed.contains(method) {
        let mut resp = proxy::json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} is not allowed here", req.method()),
        );
        let mut allow: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
        if allowed.contains(&Method::GET) {
            allow.push("HEAD");
        }
        if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return resp;
    }
    let (edition, scope) = route.needs(method);
    if config.edition < edition {
        return proxy::json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({
                "error": "feature_not_available",
                "message": format!(
                    "this feature needs the {} edition or higher; this deployment runs {}",
                    edition.as_str(),
                    config.edition.as_str()
                ),
                "required_edition": edition.as_str(),
                "edition": config.edition.as_str(),
            }),
        );
    }
    let token_needed = match route {
        Route::Metrics => config.admin.metrics_require_token,
        _ => scope.is_some(),
    };
    if let (true, Some(scope)) = (token_needed, scope) {
        if let Some(refused) = token_refusal(req.headers(), &config.admin.tokens, scope) {
            return refused;
        }
    }
    let mut resp = match route {
        Route::Health => routes::health(gateway).await,
        Route::BasicStats => routes::basic_stats(gateway).await,
        Route::Stats => routes::stats(gateway).await,
        Route::Clear => routes::clear(gateway, req.uri().query()).await,
        Route::Keys => routes::keys(gateway, req.uri().query()).await,
        Route::Key(key) if req.method() == Method::DELETE => routes::delete_key(gateway, &key).await,
        Route::Key(key) => routes::get_key(gateway, &key).await,
        Route::Reload => routes::reload(live).await,
        Route::ScopePurge => scope_purge::purge(gateway, req).await,
        Route::Metrics => routes::metrics(gateway),
        Route::Healthz => proxy::json(StatusCode::OK, &serde_json::json!({"status": "alive"})),
        Route::Readyz => routes::readyz(gateway),
        Route::Unknown => proxy::json_error(StatusCode::NOT_FOUND, "not_found", "no such admin route"),
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
