//! Protocol upgrades (RFC 9110 §7.8), for WebSocket routes beside the REST
//! ones: a client's `Connection: upgrade` + `Upgrade: websocket` request
//! reaches the backend with those two headers kept (they are hop-by-hop
//! and dropped everywhere else), and a `101 Switching Protocols` answer
//! turns both connections into one tunnel, bytes copied each way until a
//! side closes or nothing moves for the idle timeout. Never cached.

use http::header::{self, HeaderMap, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol a client asked to switch to, kept in the request's
/// extensions from `admit` (which drops the hop-by-hop headers) to the
/// forwarder (which puts them back for the backend).
#[derive(Clone, Debug)]
pub struct Requested(pub HeaderValue);

/// The protocol a GET asks to switch to: `Connection` names `upgrade` and
/// there is exactly one `Upgrade`. `h2c` is not tunnelled: the backend is
/// spoken to in HTTP/1.1, and an h2c upgrade's answer is not a byte stream
/// both sides agree on.
pub fn requested(method: &http::Method, headers: &HeaderMap) -> Option<Requested> {
    if method != http::Method::GET {
        return None;
    }
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    let (Some(protocol), None) = (upgrades.next(), upgrades.next()) else {
        return None;
    };
    let names_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let h2c = protocol
        .to_str()
        .map_or(true, |p| p.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")));
    (names_upgrade && !h2c).then(|| Requested(protocol.clone()))
}

/// Puts the two upgrade headers back on a request or answer whose
/// hop-by-hop headers were dropped.
pub fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum TunnelEnd {
    /// One side closed (or failed); the other was closed after it.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
}

/// Copies bytes both ways, each direction on its own (a slow reader on one
/// side never stalls the other), until a side closes or fails, or neither
/// has sent anything for `idle`; then shuts both down.
pub async fn pump<A, B>(client: A, backend: B, idle: Duration) -> TunnelEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut backend_rd, mut backend_wr) = tokio::io::split(backend);
    let started = tokio::time::Instant::now();
    // Milliseconds since `started` of the last byte either way.
    let last = AtomicU64::new(0);
    // Either side closing ends the tunnel, as nginx ends its upgraded
    // connections: a WebSocket peer that closed has nothing more to say.
    let either = async {
        tokio::select! {
            _ = copy_half(&mut client_rd, &mut backend_wr, (started, &last)) => {}
            _ = copy_half(&mut backend_rd, &mut client_wr, (started, &last)) => {}
        }
    };
    let watchdog = async {
        loop {
            let quiet_until = started + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            if tokio::time::Instant::now() >= quiet_until {
                return;
            }
            tokio::time::sleep_until(quiet_until).await;
        }
    };
    let end = tokio::select! {
        _ = either => TunnelEnd::Closed,
        _ = watchdog => TunnelEnd::Idle,
    };
    let _ = client_wr.shutdown().await;
    let _ = backend_wr.shutdown().await;
    end
}

/// One direction: read, write, note the time, until end of stream or an
/// error; then shut the writer down, so what was written is flushed.
async fn copy_half<R, W>(from: &mut R, to: &mut W, (started, last): (tokio::time::Instant, &AtomicU64))
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Bytes arriving count as activity even while a slow peer
                // takes them: the idle timeout is for silence, not load.
                last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    #[test]
    fn a_websocket_get_is_an_upgrade_and_nothing_else_is() {
        let ws = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(requested(&Method::GET, &ws).unwrap().0, "websocket");
        assert!(requested(&Method::POST, &ws).is_none());
        for pairs in [
            &[("upgrade", "websocket")][..],
            &[("connection", "upgrade")][..],
            &[("connection", "upgrade"), ("upgrade", "h2c")][..],
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("upgrade", "websocket"),
            ][..],
            &[("connection", "upgraded"), ("upgrade", "websocket")][..],
        ] {
            assert!(requested(&Method::GET, &headers(pairs)).is_none(), "{pairs:?}");
        }
    }

    #[tokio::test]
    async fn the_pump_copies_both_ways_and_a_close_ends_it() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (backend, mut backend_peer) = tokio::io::duplex(64);
        let tunnel = tokio::spawn(pump(client, backend, Duration::from_secs(30)));
        client_peer.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        backend_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        backend_peer.write_all(b"pong").await.unwrap();
        client_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        drop(backend_peer);
        // The backend's close ends the tunnel: the client sees end of stream.
        assert_eq!(client_peer.read(&mut buf).await.unwrap(), 0);
        assert_eq!(tunnel.await.unwrap(), TunnelEnd::Closed);
    }

    #[tokio::test]
    async fn a_silent_tunnel_is_closed_after_the_idle_timeout() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (backend, _backend_peer) = tokio::io::duplex(64);
        let end = pump(client, backend, Duration::from_millis(50)).await;
        assert_eq!(end, TunnelEnd::Idle);
        let mut buf = [0u8; 1];
        assert_eq!(client_peer.read(&mut buf).await.unwrap(), 0);
    }
}
