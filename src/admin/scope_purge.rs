//! `POST {prefix}/scope/purge`: purge every entry of one credential, given
//! the credential itself (a revoked token, a user locked out).
//!
//! Body: `{"headers": {"Authorization": "Bearer …", "Cookie": "…"}}`, the
//! credential headers exactly as that caller sends them. They are hashed as
//! a request's scope is (`[cache] credential_headers`, the scope secret)
//! and dropped; the answer names only the scope's hash.

use crate::gateway::Gateway;
use crate::proxy::{self, Body};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;

/// The largest body accepted.
const MAX_BODY: usize = 64 * 1024;

fn invalid(message: &str) -> Response<Body> {
    proxy::json_error(StatusCode::BAD_REQUEST, "invalid_body", message)
}

/// The credential headers of the body; a message saying what is wrong.
fn credential_headers(body: &[u8]) -> Result<HeaderMap, &'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
    let given = value
        .get("headers")
        .and_then(|h| h.as_object())
        .ok_or(r#"expected {"headers": {"Authorization": "..."}}"#)?;
    let mut headers = HeaderMap::new();
    for (name, value) in given {
        let name =
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| "a header name is not valid")?;
        let values: Vec<&str> = match value {
            serde_json::Value::String(s) => vec![s.as_str()],
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => return Err("a header value must be a string or a list of strings"),
        };
        for v in values {
            let v = HeaderValue::from_str(v).map_err(|_| "a header value is not valid")?;
            headers.append(name.clone(), v);
        }
    }
    Ok(headers)
}

/// The whole body, if readable and within [`MAX_BODY`].
async fn read_body(mut body: Body) -> Option<Vec<u8>> {
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if read.len() + data.len() > MAX_BODY {
                return None;
            }
            read.extend_from_slice(&data);
        }
    }
    Some(read)
}

pub async fn purge(gw: &Gateway, req: Request<Body>) -> Response<Body> {
    let Some(body) = read_body(req.into_body()).await else {
        return invalid("the body is unreadable or larger than 64 KiB");
    };
    let headers = match credential_headers(&body) {
        Ok(h) => h,
        Err(message) => return invalid(message),
    };
    let Some(scope) = gw.credential_scope_of(&headers) else {
        let names: Vec<&str> = gw
            .config()
            .cache
            .credential_headers
            .iter()
            .map(|h| h.as_str())
            .collect();
        return invalid(&format!(
            "no credential header given (the configured ones: {}), or the scope secret is not known yet",
            names.join(", ")
        ));
    };
    match gw.store().purge_scope(&scope).await {
        Ok(n) => {
            gw.metrics().purged("scope", n);
            // No instance's tier may serve that credential's entries after
            // this answer (read-your-writes, `store/coherence.rs`).
            gw.store().fence().await;
            proxy::json(
                StatusCode::OK,
                &json!({"status": "purged", "scope": scope, "purged": n}),
            )
        }
        Err(e) => proxy::json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            &format!("the cache store did not answer: {e}"),
        ),
    }
}
