//! A backend that reads requests the way common Python frameworks do, for
//! the poisoning tests (`common::framework`, a module of the harness):
//!
//! - a repeated query parameter: the last value wins (Starlette, Django);
//! - a repeated header: the values joined with `,` (WSGI servers, RFC 9110);
//! - `X_Lang` is `X-Lang` (WSGI's `HTTP_X_LANG` for both);
//! - absolute links (`self`, and `Location` on `/redirect`) built from `Host`
//!   (FastAPI's `url_for`);
//! - a caller known by `X-API-Key` (or `Authorization`, or `X-Tenant-Token`)
//!   gets that tenant's private data (`tenant-*`; any other key is a 401),
//!   anyone else the public view;
//! - a GET body is read (search APIs do) and echoed as `body`;
//! - CORS: any `Origin` is echoed in `Access-Control-Allow-Origin`, with no
//!   `Vary: Origin` (Starlette's middleware for a wildcard-like allow list).
//!
//! Every GET answers JSON with what it read and a serial number, so a test
//! sees whether an answer came from the backend now or from the cache.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct State {
    serial: AtomicU64,
    counts: Mutex<HashMap<String, u64>>,
}

/// The framework-like backend on a port of its own.
pub struct Framework {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Framework {
    pub async fn start() -> Framework {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| handle(state.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Framework { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received for `path` (no query).
    pub fn count(&self, path: &str) -> u64 {
        self.state.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for Framework {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The last value of a query parameter, names and values percent-decoded
/// (`+` as space), as `parse_qsl` and Starlette's `QueryParams[...]` read it.
fn last_param(query: &str, name: &str) -> Option<String> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query.split('&').rev().find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

/// A header as WSGI reads it: `_` and `-` alike, repeated values joined.
fn wsgi_header(req: &Request<Incoming>, name: &str) -> Option<String> {
    let values: Vec<String> = req
        .headers()
        .iter()
        .filter(|(n, _)| n.as_str().replace('_', "-") == name)
        .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    *state.counts.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
    let serial = state.serial.fetch_add(1, Ordering::SeqCst) + 1;
    let host = wsgi_header(&req, "host").unwrap_or_default();
    let key = wsgi_header(&req, "x-api-key")
        .or_else(|| wsgi_header(&req, "authorization"))
        .or_else(|| wsgi_header(&req, "x-tenant-token"));
    let data = match &key {
        Some(k) if k.starts_with("tenant-") => {
            serde_json::json!({ "tenant": k, "private": format!("{k}'s secret task") })
        }
        Some(_) => serde_json::json!({ "error": "invalid api key" }),
        None => serde_json::json!({ "tenant": null }),
    };
    let status = if key.as_deref().is_some_and(|k| !k.starts_with("tenant-")) {
        401
    } else {
        200
    };
    let body = serde_json::json!({
        "path": path,
        "q": last_param(&query, "q"),
        "lang": wsgi_header(&req, "x-lang"),
        "self": format!("http://{host}{path}"),
        "data": data,
        "serial": serial,
    });
    let mut resp = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if path == "/redirect" {
        resp = resp.status(307).header("location", format!("http://{host}/target"));
    }
    if let Some(origin) = req.headers().get("origin") {
        resp = resp.header("access-control-allow-origin", origin.clone());
    }
    let mut body = body;
    let received = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !received.is_empty() {
        body["body"] = String::from_utf8_lossy(&received).into();
    }
    let bytes = Bytes::from(body.to_string());
    Ok(resp
        .header("content-length", bytes.len())
        .body(Full::new(bytes).map_err(|n| match n {}).boxed())
        .unwrap())
}
