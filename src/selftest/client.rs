//! The HTTP side of the self-test: hyper-util's pooled client, timed
//! requests, and the cache status a response reports.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};

/// How a response says it was served, from `X-Cache` (or `Cache-Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheClass {
    Hit,
    Miss,
    /// `BYPASS`, `STALE`, `REVALIDATED` or anything else.
    Other,
    /// No cache status header at all: no rule matched, or not cachegate.
    Absent,
}

impl CacheClass {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheClass::Hit => "HIT",
            CacheClass::Miss => "MISS",
            CacheClass::Other => "OTHER",
            CacheClass::Absent => "none",
        }
    }
}

/// One answered request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub class: CacheClass,
    /// The raw `X-Cache` (or `Cache-Status`) value, for messages.
    pub cache_value: Option<String>,
    /// Which header gave the class.
    pub cache_header: Option<&'static str>,
    pub body: Bytes,
    /// From sending the request to the last byte of the body.
    pub elapsed: Duration,
}

impl Answer {
    pub fn success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The start of the body, for a failure's reason.
    pub fn body_snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        let mut end = text.len().min(160);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if end < text.len() {
            format!("{}…", &text[..end])
        } else {
            text.to_string()
        }
    }
}

/// Reads the cache status the way cachegate sets it: `X-Cache: HIT | MISS |
/// BYPASS | STALE | REVALIDATED`, else RFC 9211 `Cache-Status`.
pub fn classify(headers: &HeaderMap) -> (CacheClass, Option<String>, Option<&'static str>) {
    if let Some(v) = headers.get("x-cache").and_then(|v| v.to_str().ok()) {
        // Some CDNs write "HIT from host"; the first word decides.
        let word = v.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        let class = match word.as_str() {
            "HIT" => CacheClass::Hit,
            "MISS" => CacheClass::Miss,
            _ => CacheClass::Other,
        };
        return (class, Some(v.to_string()), Some("x-cache"));
    }
    if let Some(v) = headers.get("cache-status").and_then(|v| v.to_str().ok()) {
        // The last cache in the list is the one nearest this client.
        let last = v.rsplit(',').next().unwrap_or("");
        let params: Vec<&str> = last.split(';').map(str::trim).collect();
        let class = if params.iter().any(|p| p.starts_with("fwd=")) {
            if params.contains(&"fwd=miss") || params.contains(&"fwd=request") {
                CacheClass::Miss
            } else {
                CacheClass::Other
            }
        } else if params.contains(&"hit") {
            CacheClass::Hit
        } else {
            CacheClass::Other
        };
        return (class, Some(v.to_string()), Some("cache-status"));
    }
    (CacheClass::Absent, None, None)
}

/// A shared client with the run's headers and timeout.
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    headers: HeaderMap,
}

impl Http {
    pub fn new(timeout: Duration, headers: HeaderMap, pool: usize) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool.max(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Http {
            client,
            timeout,
            headers,
        }
    }

    /// Sends a request and reads the whole answer; `Err` is a reason
    /// (connection refused, timeout, bad URL).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<&str>,
    ) -> Result<Answer, String> {
        let mut builder = Request::builder().method(method).uri(url);
        if let Some(h) = builder.headers_mut() {
            for (name, value) in &self.headers {
                h.append(name, value.clone());
            }
            if let Some(token) = bearer {
                let v = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| "the token is not a valid header value".to_string())?;
                h.insert(header::AUTHORIZATION, v);
            }
            if let Some(b) = body {
                if !h.contains_key(header::CONTENT_TYPE) {
                    let t = b.trim_start();
                    let kind = if t.starts_with('{') || t.starts_with('[') {
                        "application/json"
                    } else {
                        "text/plain; charset=utf-8"
                    };
                    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
                }
            }
        }
        let req = builder
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .map_err(|e| format!("cannot build a request for {url}: {e}"))?;
        let started = Instant::now();
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| describe(&e))?;
            let status = resp.status().as_u16();
            let (class, cache_value, cache_header) = classify(resp.headers());
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("the answer's body broke off: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, class, cache_value, cache_header, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
            Ok(Err(e)) => Err(e),
            Ok(Ok((status, class, cache_value, cache_header, body))) => Ok(Answer {
                status,
                class,
                cache_value,
                cache_header,
                body,
                elapsed: started.elapsed(),
            }),
        }
    }
}

/// The innermost cause of a client error (hyper-util's outer message is
/// only "client error (Connect)").
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn classifies_x_cache_then_cache_status() {
        assert_eq!(classify(&headers(&[("x-cache", "HIT")])).0, CacheClass::Hit);
        assert_eq!(classify(&headers(&[("x-cache", "miss from edge")])).0, CacheClass::Miss);
        assert_eq!(classify(&headers(&[("x-cache", "BYPASS")])).0, CacheClass::Other);
        let hit = headers(&[("cache-status", "cachegate; hit; ttl=30")]);
        assert_eq!(classify(&hit).0, CacheClass::Hit);
        let miss = headers(&[("cache-status", "cachegate; fwd=miss; stored")]);
        assert_eq!(classify(&miss).0, CacheClass::Miss);
        let stale = headers(&[("cache-status", "cachegate; hit; fwd=stale; detail=x")]);
        assert_eq!(classify(&stale).0, CacheClass::Other);
        assert_eq!(classify(&HeaderMap::new()).0, CacheClass::Absent);
    }
}
