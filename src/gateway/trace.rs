//! The access log line of a request: what the phases note about it on the
//! way (rule, key, backend status and time), written once it is answered;
//! and the request's `X-Request-Id`, given to the backend and the answer.

use super::Gateway;
use crate::proxy::request_id::RequestId;
use crate::proxy::{Body, ClientInfo};
use http::{Request, Response};
use std::future::Future;
use std::time::{Duration, Instant};

/// What the access log line needs from inside a request's phases.
#[derive(Default)]
pub(super) struct Trace {
    pub(super) rule: Option<usize>,
    /// The first `[[invalidate]]` rule a write matched.
    pub(super) invalidate: Option<usize>,
    pub(super) key: Option<String>,
    pub(super) backend_status: Option<u16>,
    pub(super) backend_time: Option<Duration>,
}

tokio::task_local! {
    /// The request's trace, while an access log is written.
    static TRACE: std::cell::RefCell<Trace>;
}

/// Notes something for the access log line (nothing when it is off).
pub(super) fn note(note: impl FnOnce(&mut Trace)) {
    let _ = TRACE.try_with(|t| note(&mut t.borrow_mut()));
}

impl Gateway {
    /// Runs `serve` on the request with its `X-Request-Id` (`serve` sets it
    /// on the request once admitted; the answer gets it here) and writes
    /// its access log line (when the log is on). The server wraps whatever
    /// answers a request on the main listener in this, admin routes included.
    pub async fn logged<F, Fut>(&self, req: Request<Body>, from: ClientInfo, serve: F) -> Response<Body>
    where
        F: FnOnce(Request<Body>, RequestId) -> Fut,
        Fut: Future<Output = Response<Body>>,
    {
        let id = RequestId::of(req.headers());
        let Some(log) = &self.shared.access_log else {
            let mut resp = serve(req, id.clone()).await;
            id.stamp(resp.headers_mut());
            return resp;
        };
        let started = Instant::now();
        let method = req.method().clone();
        // A Uri or HeaderValue clone shares its bytes: no copy per line.
        let uri = req.uri().clone();
        let user_agent = req.headers().get(http::header::USER_AGENT).cloned();
        let bytes_in = http_body::Body::size_hint(req.body()).exact();
        let (mut resp, t) = TRACE
            .scope(std::cell::RefCell::new(Trace::default()), async {
                let resp = serve(req, id.clone()).await;
                (resp, TRACE.with(|t| t.take()))
            })
            .await;
        let rules = &self.generation.config.rules;
        let rule = match (t.rule, t.invalidate) {
            (Some(i), _) => rules.cache.get(i).map(|r| r.name.as_str()),
            (None, Some(i)) => rules.invalidate.get(i).map(|r| r.name.as_str()),
            (None, None) => None,
        };
        log.log(&crate::access_log::Line {
            client: from.addr.ip(),
            request_id: id.as_str(),
            user_agent: user_agent.as_ref().and_then(|v| v.to_str().ok()),
            method: method.as_str(),
            path: uri.path(),
            status: resp.status().as_u16(),
            rule,
            key: t.key.as_deref(),
            cache: resp.headers().get("x-cache").and_then(|v| v.to_str().ok()),
            backend_status: t.backend_status,
            backend_time: t.backend_time,
            bytes_in,
            bytes_out: http_body::Body::size_hint(resp.body()).exact(),
            took: started.elapsed(),
        });
        id.stamp(resp.headers_mut());
        resp
    }
}
