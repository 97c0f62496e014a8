//! Forwarding to the backend: a pooled HTTP/1 client, hop-by-hop header
//! removal (RFC 9110 §7.6.1), `X-Forwarded-*`, the response-head timeout,
//! and the JSON error answers for an unreachable or slow backend. A request
//! that fails on an established connection is retried once on a fresh one
//! where that is safe (`retry.rs`); the backend's `Keep-Alive: timeout=`
//! lowers the pool's idle timeout (`keep_alive.rs`).

pub mod framing;
pub mod host;
pub mod interim;
mod keep_alive;
pub mod listener_tls;
pub mod normalize;
pub mod request_id;
mod retry;
pub mod tls;
pub mod upgrade;

use crate::config::BackendConfig;
use crate::BoxError;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;

/// How the backend is reached: TCP, and TLS for an `https://` backend
/// (with HTTP/2 when it offers it by ALPN and `[backend] http2` allows).
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The body type used throughout: streamed, boxed, errors boxed.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body from bytes in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A JSON error answer: `{"error": code, "message": message}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": code, "message": message }))
}

/// Why forwarding failed.
#[derive(Debug)]
pub enum ForwardError {
    /// The request was sent (or may have been) but no answer came (reset,
    /// closed): the write may have committed.
    Unreachable(String),
    /// The backend could not be reached (refused, connect timeout): the
    /// request never left, so nothing it asked for happened.
    NotSent(String),
    /// No response head within the backend timeout.
    Timeout,
}

impl ForwardError {
    /// The answer a client gets: 502 or 504 with a JSON body.
    pub fn to_response(&self) -> Response<Body> {
        match self {
            ForwardError::Unreachable(why) | ForwardError::NotSent(why) => json_error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                &format!("the backend could not be reached: {why}"),
            ),
            ForwardError::Timeout => json_error(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "the backend did not answer in time",
            ),
        }
    }
}

/// The pooled client to the one backend.
pub struct Forwarder {
    /// Swapped for one with a shorter idle timeout when the backend
    /// announces a keep-alive timeout below ours (`keep_alive.rs`).
    client: arc_swap::ArcSwap<Client<Connector, Body>>,
    /// No pool: every request on a connection of its own (retries).
    fresh: Client<Connector, Body>,
    /// Kept for the pools made later (a lower keep-alive timeout).
    connector: Connector,
    /// The pooled client's idle timeout now, in ms.
    idle_timeout_ms: std::sync::atomic::AtomicU64,
    pool_idle_per_host: usize,
    base: Uri,
    timeout: Duration,
    forwarded_headers: bool,
    /// `None` with `preserve_host`; else the backend URL's authority, the
    /// `Host` the backend gets, and the prefix of the links it builds on it.
    own_host: Option<(HeaderValue, String)>,
}

/// Where a request came from, for `X-Forwarded-*`.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    pub addr: SocketAddr,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::PROXY_AUTHENTICATE
}

/// Removes hop-by-hop headers, including those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests carry none: one pass over their few names is cheaper
    // than nine hashed removals.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Names `Connection` lists beyond the standard ones (`keep-alive` and
    // `close` are the usual tokens: no allocation for those).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    while let Some(name) = headers.keys().find(|n| is_hop_by_hop(n)).cloned() {
        headers.remove(name);
    }
}

/// Removes every header named in `names` (a configured list): one pass
/// over the message's names, and a removal only for those present.
pub fn remove_named(headers: &mut HeaderMap, names: &[HeaderName]) {
    while let Some(name) = headers.keys().find(|n| names.contains(n)).cloned() {
        headers.remove(name);
    }
}

/// Removes every header whose name contains `_` (nginx's default,
/// `underscores_in_headers off`): WSGI-style backends read `X_Lang` as
/// `X-Lang`, so it could change an answer keyed on `X-Lang` unseen.
pub fn drop_underscored(headers: &mut HeaderMap) {
    while let Some(name) = headers.keys().find(|n| n.as_str().contains('_')).cloned() {
        headers.remove(name);
    }
}

impl Forwarder {
    pub fn new(cfg: &BackendConfig) -> Forwarder {
        let connector = connector(cfg);
        Forwarder {
            client: arc_swap::ArcSwap::from_pointee(pooled_client(
                &connector,
                cfg.pool_idle_per_host,
                cfg.pool_idle_timeout,
            )),
            fresh: pooled_client(&connector, 0, Duration::ZERO),
            connector,
            idle_timeout_ms: (cfg.pool_idle_timeout.as_millis() as u64).into(),
            pool_idle_per_host: cfg.pool_idle_per_host,
            base: cfg.url.clone(),
            timeout: cfg.timeout,
            forwarded_headers: cfg.forwarded_headers,
            own_host: own_host(cfg),
        }
    }

    /// The backend URI for a request path and query.
    fn target(&self, uri: &Uri) -> Result<Uri, ForwardError> {
        let base_path = self.base.path().trim_end_matches('/');
        if base_path.is_empty() {
            // The common case: the request's own path and query, shared.
            let mut parts = http::uri::Parts::default();
            parts.scheme = self.base.scheme().cloned();
            parts.authority = self.base.authority().cloned();
            parts.path_and_query = Some(
                uri.path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            );
            return Uri::from_parts(parts).map_err(|e| ForwardError::Unreachable(format!("bad target URI: {e}")));
        }
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut builder = Uri::builder();
        if let Some(s) = self.base.scheme() {
            builder = builder.scheme(s.clone());
        }
        if let Some(a) = self.base.authority() {
            builder = builder.authority(a.clone());
        }
        builder
            .path_and_query(format!("{base_path}{path_and_query}"))
            .build()
            .map_err(|e| ForwardError::Unreachable(format!("bad target URI: {e}")))
    }

    /// Forwards a request (its body streamed) and returns the response head
    /// with its body still streaming, hop-by-hop headers removed.
    pub async fn forward(&self, req: Request<Body>, from: ClientInfo) -> Result<Response<Body>, ForwardError> {
        let (mut parts, body) = req.into_parts();
        // The backend's 1xx answers go to an HTTP/1.1 client (never to 1.0,
        // RFC 9110 §15.2) while this call is open.
        let relay = interim::current().filter(|_| parts.version == http::Version::HTTP_11);
        let open = match relay {
            Some(relay) => {
                // This task is the connection's: hyper polls the request on it.
                let waker = std::future::poll_fn(|cx| std::task::Poll::Ready(cx.waker().clone())).await;
                let open = relay.open(&waker);
                Some((relay, open))
            }
            None => None,
        };
        let relayed = |mut req: Request<Body>| {
            if let Some((relay, open)) = &open {
                relay.attach(&mut req, open);
            }
            req
        };
        parts.uri = self.target(&parts.uri)?;
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        let upgrading = parts.extensions.get::<upgrade::Requested>().is_some();
        if let Some(upgrade::Requested(protocol)) = parts.extensions.get::<upgrade::Requested>() {
            upgrade::restore(&mut parts.headers, protocol.clone());
        }
        if self.forwarded_headers {
            add_forwarded(&mut parts.headers, from);
        } else {
            parts.headers.remove(X_FORWARDED_HOST);
        }
        // After add_forwarded has copied the client's Host.
        if let Some((host, _)) = &self.own_host {
            parts.headers.insert(header::HOST, host.clone());
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        // A slow upload counts against the backend timeout like the rest.
        let body = match tokio::time::timeout_at(deadline, retry::buffer(body)).await {
            Err(_) => return Err(ForwardError::NotSent("the request body did not arrive in time".into())),
            Ok(body) => body.map_err(|e| ForwardError::NotSent(format!("the request body broke off: {e}")))?,
        };
        let client = self.client.load_full();
        // Whether an attempt before the last may have reached the backend:
        // then the outcome is unknown whatever the retry's error says.
        let mut first_may_have_arrived = false;
        let result = match body {
            retry::Outgoing::Streamed(body) => send(&client, relayed(Request::from_parts(parts, body)), deadline).await,
            retry::Outgoing::Replayable(bytes) => {
                let first = relayed(retry::again(&parts, bytes.clone()));
                match send(&client, first, deadline).await {
                    Err(Failure::Client(e)) if retry::worth_retrying(&e, &parts.method) => {
                        tracing::debug!(error = %describe(&e), "backend connection failed before the answer; retrying once on a fresh one");
                        first_may_have_arrived = !e.is_connect() && !retry::never_sent(&e);
                        send(&self.fresh, relayed(retry::again(&parts, bytes)), deadline).await
                    }
                    other => other,
                }
            }
        };
        let resp = match result {
            Err(Failure::Timeout) => return Err(ForwardError::Timeout),
            Err(Failure::Client(e)) if e.is_connect() && !first_may_have_arrived => {
                return Err(ForwardError::NotSent(describe(&e)))
            }
            Err(Failure::Client(e)) => return Err(ForwardError::Unreachable(describe(&e))),
            Ok(resp) => resp,
        };
        if let Some(announced) = keep_alive::announced_timeout(resp.headers()) {
            self.follow_keep_alive(announced);
        }
        let (mut parts, body) = resp.into_parts();
        // A 101's Upgrade says what the tunnel now speaks: kept for the client.
        let switched = match parts.headers.get(header::UPGRADE) {
            Some(p) if upgrading && parts.status == StatusCode::SWITCHING_PROTOCOLS => Some(p.clone()),
            _ => None,
        };
        strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = switched {
            upgrade::restore(&mut parts.headers, protocol);
        }
        if let Some((_, links)) = &self.own_host {
            host::relativize_links(&mut parts.headers, links);
        }
        Ok(Response::from_parts(parts, body.map_err(BoxError::from).boxed()))
    }

    /// The backend keeps idle connections for `announced`: keep ours
    /// shorter (a new pool, once per lower value).
    fn follow_keep_alive(&self, announced: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let current = Duration::from_millis(self.idle_timeout_ms.load(Relaxed));
        let Some(idle) = keep_alive::idle_timeout_for(announced, current) else {
            return;
        };
        let ms = idle.as_millis() as u64;
        if self
            .idle_timeout_ms
            .compare_exchange(current.as_millis() as u64, ms, Relaxed, Relaxed)
            .is_ok()
        {
            tracing::info!(
                idle_ms = ms,
                "the backend announces Keep-Alive: timeout={}s; idle pooled connections are dropped sooner",
                announced.as_secs()
            );
            self.client.store(std::sync::Arc::new(pooled_client(
                &self.connector,
                self.pool_idle_per_host,
                idle,
            )));
        }
    }
}

/// Why one attempt failed.
enum Failure {
    Timeout,
    Client(hyper_util::client::legacy::Error),
}

async fn send(
    client: &Client<Connector, Body>,
    req: Request<Body>,
    deadline: tokio::time::Instant,
) -> Result<Response<hyper::body::Incoming>, Failure> {
    match tokio::time::timeout_at(deadline, client.request(req)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(result) => result.map_err(Failure::Client),
    }
}

/// A client to the backend keeping up to `idle_per_host` idle connections
/// for `idle_timeout` (none with 0).
fn pooled_client(connector: &Connector, idle_per_host: usize, idle_timeout: Duration) -> Client<Connector, Body> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle_per_host)
        .pool_idle_timeout(idle_timeout)
        .build(connector.clone())
}

/// TCP with cachegate's settings, wrapped in TLS for an `https://`
/// backend: SNI from the URL's host, the CA of `tls_ca_file` or the
/// system's, a client certificate when configured, ALPN `h2` (if
/// `http2`) and `http/1.1`. A plain `http://` backend never handshakes.
fn connector(cfg: &BackendConfig) -> Connector {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(cfg.connect_timeout));
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let tls = match &cfg.tls {
        Some(files) => tls::client_config(files).unwrap_or_else(|e| {
            // The files were checked when the config was read; one that
            // changed since must not mean a connection without checks.
            tracing::error!("[backend] TLS settings unusable, every https connection will fail: {e}");
            tls::refusing_config()
        }),
        None => tls::refusing_config(),
    };
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1();
    if cfg.http2 && cfg.tls.is_some() {
        builder.enable_http2().wrap_connector(tcp)
    } else {
        builder.wrap_connector(tcp)
    }
}

/// The backend's own `Host` and link prefix, unless the client's is kept.
fn own_host(cfg: &BackendConfig) -> Option<(HeaderValue, String)> {
    if cfg.preserve_host {
        return None;
    }
    let authority = cfg.url.authority()?.as_str();
    let value = HeaderValue::from_str(authority).ok()?;
    let scheme = cfg.url.scheme_str().unwrap_or("http");
    let links = format!("{scheme}://{authority}{}", cfg.url.path().trim_end_matches('/')).to_ascii_lowercase();
    Some((value, links))
}

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

// Constants, so the names are not parsed again on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

fn add_forwarded(headers: &mut HeaderMap, from: ClientInfo) {
    // Room for the three headers below, so the map grows at most once.
    headers.reserve(3);
    let mut xff = Vec::with_capacity(64);
    if let Some(prev) = headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        if !prev.trim().is_empty() {
            xff.extend_from_slice(prev.as_bytes());
            xff.extend_from_slice(b", ");
        }
    }
    write_ip(&mut xff, from.addr.ip());
    // The buffer becomes the value's: no second copy.
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let proto = if from.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    // Always our own value: a client-sent one must not reach the backend.
    match headers.get(header::HOST).cloned() {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// An address as `Display` writes it; an IPv4 one (nearly every client)
/// without the formatting machinery: this runs for every forwarded request
/// and every access log line.
pub fn write_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        v6 => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_display_writes_them() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.20.3.4",
            "::1",
            "2001:db8::7",
            "::ffff:1.2.3.4",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut s = Vec::new();
            write_ip(&mut s, ip);
            assert_eq!(String::from_utf8(s).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
