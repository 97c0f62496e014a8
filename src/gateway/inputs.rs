//! A request that gives an input its rule's key reads more than once
//! (`?q=a&q=evil`, two `X-Lang` headers) is ambiguous: the key reads the
//! first, the backend may read the last or all of them, so its answer must
//! not be stored under the key, nor a stored answer served for it. What it
//! gets is the rule's `duplicate_inputs`: bypass (default), first, reject.
//!
//! Rules whose key reads no query parameter or header by name (the usual
//! `task:{task_id}`) cost nothing here. A GET with a body is bypassed too:
//! no key holds a body.

use crate::proxy::{self, Body};
use crate::rules::CacheRule;
use http::{HeaderName, Request, Response, StatusCode};

/// The `detail` of the `Cache-Status` of a request bypassed as ambiguous.
pub const AMBIGUOUS: &str = "ambiguous-input";

/// The `detail` of a GET or HEAD bypassed because it has a body.
pub const REQUEST_BODY: &str = "request-body";

/// Whether a request a rule covers has a body: it is forwarded, and a
/// backend that reads GET bodies (search APIs) would answer for it, but no
/// key holds it, so such a request is neither served nor stored.
pub fn has_body(req: &Request<Body>) -> bool {
    http_body::Body::size_hint(req.body()).exact() != Some(0)
}

/// Whether the request gives a keyed input more than once. With
/// `underscores` (headers with `_` kept), `X_Lang` counts as another
/// `X-Lang`: WSGI-style backends read both as `HTTP_X_LANG`.
pub fn is_ambiguous(req: &Request<Body>, rule: &CacheRule, underscores: bool) -> bool {
    let inputs = &rule.inputs;
    if inputs.is_empty() {
        return false;
    }
    inputs.query_repeats(req.uri().query())
        || inputs
            .headers
            .iter()
            .any(|name| req.headers().get_all(name).iter().nth(1).is_some())
        || (underscores && req.headers().keys().any(|n| is_underscored_twin(n, rule)))
}

/// Another spelling of a keyed header with `_` for `-` or back (`x_lang`
/// when the key reads `x-lang`), which WSGI reads as the same header.
fn is_underscored_twin(name: &HeaderName, rule: &CacheRule) -> bool {
    let name = name.as_str();
    rule.inputs.headers.iter().any(|keyed| {
        keyed.as_str().len() == name.len()
            && keyed != name
            && keyed
                .as_str()
                .bytes()
                .zip(name.bytes())
                .all(|(k, n)| k == n || (k == b'-' || k == b'_') && (n == b'-' || n == b'_'))
    })
}

/// Keeps only the first occurrence of each keyed input, so the key and the
/// backend read the same values (`duplicate_inputs = "first"`).
pub fn keep_first(req: &mut Request<Body>, rule: &CacheRule, underscores: bool) {
    let inputs = &rule.inputs;
    if underscores {
        while let Some(twin) = req.headers().keys().find(|n| is_underscored_twin(n, rule)).cloned() {
            req.headers_mut().remove(twin);
        }
    }
    for name in &inputs.headers {
        if let Some(first) = req.headers().get(name).cloned() {
            req.headers_mut().insert(name.clone(), first);
        }
    }
    let Some(query) = req.uri().query().filter(|q| inputs.query_repeats(Some(q))) else {
        return;
    };
    let kept = inputs.first_params_only(query);
    let path_and_query = if kept.is_empty() {
        req.uri().path().to_string()
    } else {
        format!("{}?{kept}", req.uri().path())
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(path_and_query)) {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// The answer under `duplicate_inputs = "reject"`.
pub fn rejection(rule: &CacheRule) -> Response<Body> {
    proxy::json_error(
        StatusCode::BAD_REQUEST,
        "ambiguous_input",
        &format!(
            "the request gives one of {} more than once; give each once",
            rule.inputs
        ),
    )
}
