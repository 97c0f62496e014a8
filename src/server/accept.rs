//! The one accept loop every listener runs (the proxy, the admin listener,
//! the demo's sample API): accept until told to stop, serve each connection
//! in a task of its own, then let each finish gracefully before returning.

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Accepts connections on `listener` until `stopped` turns true, running
/// `serve(stream, peer, stopped)` for each in its own task; then stops
/// accepting and returns once every connection's task has finished.
pub async fn accept_loop<F, Fut>(listener: TcpListener, mut stopped: watch::Receiver<bool>, serve: F)
where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: back off a moment, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve(stream, peer, stopped.clone()));
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves one HTTP/1.1 connection until it ends, or, once `stop` turns
/// true, until its in-flight request is answered (graceful shutdown).
pub async fn serve_http1<I, S, B>(
    builder: &http1::Builder,
    io: I,
    service: S,
    stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    // Upgrades on: a 101 hands the connection to a tunnel (gateway/tunnel.rs).
    let conn = builder.serve_connection(io, service).with_upgrades();
    until_stopped(conn, stop, |c| c.graceful_shutdown()).await
}

/// Serves one HTTP/2 connection until it ends, or, once `stop` turns true,
/// until its open streams are answered (GOAWAY, then graceful shutdown).
/// A connection with no stream open for `idle.1` is shut down the same
/// way, and dropped if it is still idle `idle.1` later (a client that
/// never answers the shutdown's PING): hyper's HTTP/2 has no header
/// timeout, so this is what ends a connection that opens no stream, or
/// trickles a header block it never finishes (slowloris over HTTP/2).
pub async fn serve_http2<I, S, B>(
    builder: &http2::Builder<TokioExecutor>,
    io: I,
    service: S,
    mut stop: watch::Receiver<bool>,
    idle: (Arc<Streams>, Duration),
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (streams, idle_after) = idle;
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => return res,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            return conn.await;
        }
        () = streams.idle_for(idle_after) => conn.as_mut().graceful_shutdown(),
    }
    // The GOAWAY is out; the client has `idle_after` to finish the
    // shutdown (answer its PING) before the connection is dropped. (Idle
    // already, `idle_for` would return at once and cut the GOAWAY off.)
    tokio::time::timeout(idle_after, conn).await.unwrap_or(Ok(()))
}

/// The streams of one HTTP/2 connection being answered (their answers'
/// bodies included), and when the last one ended: what tells an idle
/// connection from a busy one.
pub struct Streams {
    open: AtomicUsize,
    /// When the last stream ended, in ms after `born`.
    last_end_ms: AtomicU64,
    born: Instant,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            open: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            born: Instant::now(),
        }
    }
}

impl Streams {
    /// A stream begins; it ends when the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> StreamGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.clone())
    }

    /// Resolves once no stream has been open for `quiet`.
    async fn idle_for(&self, quiet: Duration) {
        loop {
            let wait = if self.open.load(Ordering::Acquire) > 0 {
                quiet
            } else {
                let since = Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
                let idle = self.born.elapsed().saturating_sub(since);
                match quiet.checked_sub(idle) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One open stream of [`Streams`].
pub struct StreamGuard(Arc<Streams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let now = self.0.born.elapsed().as_millis() as u64;
        self.0.last_end_ms.fetch_max(now, Ordering::AcqRel);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Drives a connection to its end; once `stop` turns true, asks it to
/// shut down gracefully (`graceful`: each protocol's own) and waits.
async fn until_stopped<C, E>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => res,
        _ = stop.changed() => {
            graceful(conn.as_mut());
            conn.await
        }
    }
}
