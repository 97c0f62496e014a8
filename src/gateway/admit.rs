//! Phase 1, admit: limits on the request head, one normal form of the path,
//! and the headers that must never reach a key or the backend dropped.
//! A request refused here gets a 4xx with a JSON body.

use super::Gateway;
use crate::proxy::{self, Body};
use http::{Request, Response, StatusCode};

impl Gateway {
    /// Admits the request (rewriting it to its normal form), or answers the
    /// refusal. The server runs this before it routes admin paths, so they
    /// are matched on the same normal form.
    pub fn admit(&self, req: &mut Request<Body>) -> Option<Response<Body>> {
        if let Some(rejected) = self.limits(req) {
            return Some(rejected);
        }
        // A reverse proxy opens no tunnel to where a client says, whatever
        // the target's form (hyper's HTTP/1.1 parser takes a path too).
        if req.method() == http::Method::CONNECT {
            let mut refused = proxy::json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "CONNECT is not proxied",
            );
            // RFC 9110 §15.5.6: a 405 lists the methods the target has.
            refused.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"),
            );
            return Some(refused);
        }
        // One normal form of the path for the rules, the key and the backend
        // alike (see proxy/normalize.rs), so no spelling of a path reaches
        // another resource's entry.
        if let Some(rejected) = normalize_uri(req) {
            return Some(rejected);
        }
        // Hop-by-hop headers (and any a client names in Connection) never
        // reach the backend, so they must not reach a key either: drop them
        // before anything reads the request.
        let server = &self.generation.config.server;
        // An upgrade (WebSocket) is tunnelled by `tunnel.rs`: what it asks
        // for is kept aside before its hop-by-hop headers go.
        if req.headers().contains_key(http::header::UPGRADE) && self.generation.config.backend.upgrades {
            if let Some(requested) = proxy::upgrade::requested(req.method(), req.headers()) {
                req.extensions_mut().insert(requested);
            }
        }
        proxy::strip_hop_by_hop(req.headers_mut());
        proxy::remove_named(req.headers_mut(), &server.strip_request_headers);
        if !server.underscores_in_headers {
            proxy::drop_underscored(req.headers_mut());
        }
        None
    }

    /// Limits on the request head.
    fn limits(&self, req: &Request<Body>) -> Option<Response<Body>> {
        if let Some(why) = req.extensions().get::<proxy::framing::Refusal>() {
            return Some(proxy::framing::refusal_response(*why));
        }
        let limits = &self.generation.config.server;
        let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if uri_len > limits.max_uri_bytes {
            return Some(proxy::json_error(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                &format!("the request URI is longer than {} bytes", limits.max_uri_bytes),
            ));
        }
        let header_bytes: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
        if header_bytes > limits.max_header_bytes || req.headers().len() > limits.max_headers {
            return Some(proxy::json_error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_header_fields_too_large",
                &format!(
                    "request headers exceed {} bytes or {} fields",
                    limits.max_header_bytes, limits.max_headers
                ),
            ));
        }
        if proxy::host::is_bad(req.headers()) {
            return Some(proxy::json_error(
                StatusCode::BAD_REQUEST,
                "bad_host",
                "the request needs one Host of the form host[:port]",
            ));
        }
        None
    }
}

/// Rewrites the request's path to its normal form; a path that has none
/// gets the 400 returned. Already normal paths (nearly all) are left untouched.
fn normalize_uri(req: &mut Request<Body>) -> Option<Response<Body>> {
    let bad = |message: &str| Some(proxy::json_error(StatusCode::BAD_REQUEST, "bad_path", message));
    let pq = req.uri().path_and_query()?;
    if pq.as_str() == "*" {
        // RFC 9112 §3.2.4: the asterisk form is for OPTIONS alone; HTTP/2
        // passes a `:path` of `*` on any method, HTTP/1.1 parsers too.
        if req.method() == http::Method::OPTIONS {
            return None;
        }
        return bad("the target `*` is for OPTIONS only");
    }
    let normal = match proxy::normalize::normalize_path_and_query(pq.as_str()) {
        Ok(std::borrow::Cow::Borrowed(_)) => return None,
        Ok(std::borrow::Cow::Owned(normal)) => normal,
        Err(e) => return bad(&e.to_string()),
    };
    let mut parts = req.uri().clone().into_parts();
    let Ok(pq) = http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(normal)) else {
        return bad("unusable request path");
    };
    parts.path_and_query = Some(pq);
    let Ok(uri) = http::Uri::from_parts(parts) else {
        return bad("unusable request path");
    };
    *req.uri_mut() = uri;
    None
}
