//! One retry, on a fresh connection, for a request that failed on an
//! established backend connection before any of the answer arrived.
//!
//! A backend closes or resets an idle kept-alive connection when it likes
//! (uvicorn after a 500, or after its 5 s keep-alive); the pool may hand
//! that connection to the next request before it has seen the close, and
//! the request fails although a reconnect would have worked. So:
//!
//! - idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS, TRACE; RFC 9110
//!   §9.2.2) are sent again once, on a connection of their own, after any
//!   failure that is not a connect error and not the head timeout;
//! - other methods only when the request provably never left (hyper's
//!   "canceled": the connection was found closed before it was written);
//! - the body must be replayable: a request body of a known length up to
//!   [`REPLAY_LIMIT`] is read into memory first; a longer or streamed one is
//!   forwarded as it comes and never retried.
//!
//! hyper-util does not say whether the failed connection came from the
//! pool, so a failure on a connection just opened for the request is
//! retried too: one more attempt, on an idempotent request.

use super::Body;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;

/// The largest request body kept for a retry.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

/// A request body, as forwarded.
pub enum Outgoing {
    /// Read whole, so the request can be sent again.
    Replayable(Bytes),
    /// Too long or of unknown length: streamed once.
    Streamed(Body),
}

/// Reads a small body of known length into memory; any other streams.
pub async fn buffer(body: Body) -> Result<Outgoing, crate::BoxError> {
    let hint = http_body::Body::size_hint(&body);
    match hint.exact() {
        Some(0) => Ok(Outgoing::Replayable(Bytes::new())),
        Some(len) if len <= REPLAY_LIMIT => Ok(Outgoing::Replayable(body.collect().await?.to_bytes())),
        _ => Ok(Outgoing::Streamed(body)),
    }
}

/// RFC 9110 §9.2.2.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Whether a request that failed with `error` (no answer head) is sent
/// again on a fresh connection.
pub fn worth_retrying(error: &hyper_util::client::legacy::Error, method: &Method) -> bool {
    if error.is_connect() {
        // Already a fresh connection that could not be made.
        return false;
    }
    if is_idempotent(method) {
        return true;
    }
    never_sent(error)
}

/// hyper's "canceled": the request was not written before the connection
/// was found closed.
pub fn never_sent(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled) {
            return true;
        }
        source = e.source();
    }
    false
}

/// A copy of a request's head with `body`, for the retry.
pub fn again(head: &http::request::Parts, body: Bytes) -> Request<Body> {
    let mut req = Request::new(super::full(body));
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_methods_retry_after_the_request_may_have_left() {
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }

    #[tokio::test]
    async fn small_known_bodies_are_kept_for_a_retry_and_others_stream() {
        assert!(matches!(
            buffer(super::super::full("abc")).await.unwrap(),
            Outgoing::Replayable(b) if b == "abc"
        ));
        let big = vec![b'x'; REPLAY_LIMIT as usize + 1];
        assert!(matches!(
            buffer(super::super::full(big)).await.unwrap(),
            Outgoing::Streamed(_)
        ));
    }
}
