//! The one accept loop every listener runs (the proxy, the admin listener,
//! the demo's sample API): accept until told to stop, serve each connection
//! in a task of its own, then let each finish gracefully before returning.

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
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
pub async fn serve_http2<I, S, B>(
    builder: &http2::Builder<TokioExecutor>,
    io: I,
    service: S,
    stop: watch::Receiver<bool>,
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
    let conn = builder.serve_connection(io, service);
    until_stopped(conn, stop, |c| c.graceful_shutdown()).await
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
