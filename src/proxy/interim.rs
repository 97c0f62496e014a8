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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

/// A connection's relay of interim answers; the server runs the
/// connection (and so every request hyper polls on it) in its scope
/// ([`relaying`]).
#[derive(Clone, Default)]
pub struct InterimRelay {
    state: Arc<Mutex<RelayState>>,
    /// Whether a backend call is open or bytes are queued: the socket
    /// wrapper looks at this alone on every write (no lock on a hit).
    active: Arc<AtomicBool>,
}

tokio::task_local! {
    static RELAY: InterimRelay;
}

/// Runs a connection's future with its relay in scope: a task local, set
/// once per connection, so a request costs nothing for it (a request
/// extension would cost allocations, a scope per request a move of the
/// request's future); a task spawned from a request (a background
/// refresh) has no client to relay to and sees none.
pub async fn relaying<F: std::future::Future>(relay: InterimRelay, request: F) -> F::Output {
    RELAY.scope(relay, request).await
}

/// The relay of the connection the running request came on, if any.
pub fn current() -> Option<InterimRelay> {
    RELAY.try_with(InterimRelay::clone).ok()
}

#[derive(Default)]
struct RelayState {
    /// Encoded interim answers waiting for a boundary.
    queued: BytesMut,
    /// The connection's task (hyper polls the request's future on it),
    /// woken when something is queued.
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
            self.relay.active.store(!state.queued.is_empty(), Ordering::Release);
        }
    }
}

impl InterimRelay {
    fn lock(&self) -> std::sync::MutexGuard<'_, RelayState> {
        // A poisoned lock only means a panic elsewhere; the bytes are whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the relay for one backend call, made by the connection's task
    /// (whose `waker` is woken when a 1xx is queued); it closes when the
    /// returned value is dropped.
    pub fn open(&self, waker: &Waker) -> OpenInterim {
        let mut state = self.lock();
        state.next += 1;
        let id = state.next;
        state.open = Some(id);
        state.waker = Some(waker.clone());
        self.active.store(true, Ordering::Release);
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
        if let Some(waker) = &state.waker {
            waker.wake_by_ref();
        }
    }

    /// What is queued, taken, or `None`.
    pub(crate) fn take(&self) -> Option<Bytes> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        if state.queued.is_empty() {
            return None;
        }
        let queued = state.queued.split().freeze();
        self.active.store(state.open.is_some(), Ordering::Release);
        Some(queued)
    }

    /// Drops what is queued if its backend call has ended: hyper is writing
    /// bytes that were buffered after an earlier answer's unwritten tail,
    /// and the final answer may be among them, so no boundary for a 1xx
    /// is left (1xx answers are advisory; losing one is safe).
    pub(crate) fn discard_if_closed(&self) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.lock();
        if state.open.is_none() {
            state.queued.clear();
            self.active.store(false, Ordering::Release);
        }
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
        assert!(relay.take().is_none(), "no request open: dropped");
        let open = relay.open(&waker());
        relay.queue(open.id, StatusCode::from_u16(103).unwrap(), &h);
        relay.queue(open.id, StatusCode::CONTINUE, &h);
        let sent = relay.take().expect("queued");
        assert_eq!(
            &sent[..],
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
        );
        let id = open.id;
        drop(open);
        relay.queue(id, StatusCode::PROCESSING, &h);
        assert!(relay.take().is_none(), "closed: a late 1xx is dropped");
        assert!(
            !relay.active.load(Ordering::Acquire),
            "nothing for the socket wrapper to look at"
        );
        assert_eq!(relay.relayed(), 1);
    }
}
