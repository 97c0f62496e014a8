//! Interim (1xx) answers relayed from the backend to the client (RFC 9110
//! §15.2): `102 Processing`, `103 Early Hints` and other informational
//! answers reach the client before the final answer, never stored.
//!
//! hyper 1.x's server has no API to send an informational response
//! (hyperium/hyper#2426), so they are written under it: every client
//! connection has an [`InterimRelay`], which the backend client's
//! `hyper::ext::on_informational` callback feeds, and which the
//! connection's socket wrapper (`framing::Guarded`) writes out only at a
//! boundary: when hyper has handed over everything it wrote before (it
//! flushes its buffer before it flushes the socket), and only for the
//! request whose backend call is still open. A request's relay closes when
//! its backend call ends (answered, failed or dropped), so a late 1xx can
//! never land inside another answer. `100 Continue` is hyper's own (sent
//! when the request body is read); `101` is never relayed.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use std::sync::{Arc, Mutex};
use std::task::Waker;

/// A connection's relay of interim answers; cloned into each request's
/// extensions by the server.
#[derive(Clone, Default)]
pub struct InterimRelay {
    state: Arc<Mutex<RelayState>>,
}

#[derive(Default)]
struct RelayState {
    /// Encoded interim answers waiting for a boundary.
    queued: BytesMut,
    /// The socket wrapper's task, woken when something is queued.
    waker: Option<Waker>,
    /// The request whose backend call may relay, if any.
    open: Option<u64>,
    next: u64,
    /// Relayed so far on this connection (for tests and logs).
    relayed: u64,
}

/// While held, the request's backend call may relay interim answers.
pub struct OpenInterim {
    relay: InterimRelay,
    id: u64,
}

impl Drop for OpenInterim {
    fn drop(&mut self) {
        let mut state = self.relay.lock();
        if state.open == Some(self.id) {
            state.open = None;
        }
    }
}

impl InterimRelay {
    fn lock(&self) -> std::sync::MutexGuard<'_, RelayState> {
        // A poisoned lock only means a panic elsewhere; the bytes are whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the relay for one backend call; it closes when the returned
    /// value is dropped.
    pub fn open(&self) -> OpenInterim {
        let mut state = self.lock();
        state.next += 1;
        let id = state.next;
        state.open = Some(id);
        OpenInterim {
            relay: self.clone(),
            id,
        }
    }

    /// Attaches the relay to a request to the backend: its 1xx answers are
    /// queued for the client while `open` is held.
    pub fn attach<B>(&self, req: &mut http::Request<B>, open: &OpenInterim) {
        let (relay, id) = (self.clone(), open.id);
        hyper::ext::on_informational(req, move |res| relay.queue(id, res.status(), res.headers()));
    }

    fn queue(&self, id: u64, status: StatusCode, headers: &HeaderMap) {
        if matches!(status.as_u16(), 100 | 101) {
            return;
        }
        let mut state = self.lock();
        if state.open != Some(id) {
            return;
        }
        encode(&mut state.queued, status, headers);
        state.relayed += 1;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// What is queued, taken, or `None`; `waker` is kept to be woken when
    /// something is queued later.
    pub(crate) fn take(&self, waker: &Waker) -> Option<Bytes> {
        let mut state = self.lock();
        if state.queued.is_empty() {
            if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                state.waker = Some(waker.clone());
            }
            return None;
        }
        Some(state.queued.split().freeze())
    }

    /// How many interim answers this connection has relayed.
    pub fn relayed(&self) -> u64 {
        self.lock().relayed
    }
}

/// Fields never relayed: the connection's own.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "content-length",
];

fn encode(out: &mut BytesMut, status: StatusCode, headers: &HeaderMap) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("Informational").as_bytes());
    out.extend_from_slice(b"\r\n");
    let named_by_connection = |name: &str| {
        headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|n| n.trim().eq_ignore_ascii_case(name))
    };
    for (name, value) in headers {
        if HOP_BY_HOP.contains(&name.as_str()) || named_by_connection(name.as_str()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waker() -> Waker {
        futures_util::task::noop_waker()
    }

    #[test]
    fn only_the_open_request_relays_and_hop_by_hop_fields_stay_behind() {
        let relay = InterimRelay::default();
        let mut h = HeaderMap::new();
        h.insert("link", "</a.css>; rel=preload".parse().unwrap());
        h.insert("connection", "x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        relay.queue(1, StatusCode::from_u16(103).unwrap(), &h);
        assert!(relay.take(&waker()).is_none(), "no request open: dropped");
        let open = relay.open();
        relay.queue(open.id, StatusCode::from_u16(103).unwrap(), &h);
        relay.queue(open.id, StatusCode::CONTINUE, &h);
        let sent = relay.take(&waker()).expect("queued");
        assert_eq!(
            &sent[..],
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
        );
        let id = open.id;
        drop(open);
        relay.queue(id, StatusCode::PROCESSING, &h);
        assert!(relay.take(&waker()).is_none(), "closed: a late 1xx is dropped");
        assert_eq!(relay.relayed(), 1);
    }
}
