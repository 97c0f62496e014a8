//! Upgrades: a WebSocket handshake through cachegate reaches a real
//! WebSocket backend (tokio-tungstenite on both ends), messages flow both
//! ways through the tunnel, several tunnels at once, each handshake reaching
//! the backend even on a path a rule covers; the tunnel closes when a side does or when it
//! idles out; a backend that declines keeps its answer; `upgrades = false`
//! drops the upgrade headers.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request as WsRequest, Response as WsResponse};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket echo server; counts handshakes and keeps the last
/// handshake's headers.
struct EchoServer {
    url: String,
    handshakes: Arc<AtomicU64>,
    last_headers: Arc<std::sync::Mutex<Option<http::HeaderMap>>>,
}

impl EchoServer {
    // tungstenite's handshake callback returns its own (large) error type.
    #[allow(clippy::result_large_err)]
    async fn start() -> EchoServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handshakes = Arc::new(AtomicU64::new(0));
        let last_headers = Arc::new(std::sync::Mutex::new(None));
        let (count, seen) = (handshakes.clone(), last_headers.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (count, seen) = (count.clone(), seen.clone());
                tokio::spawn(async move {
                    let note = |req: &WsRequest, resp: WsResponse| {
                        *seen.lock().unwrap() = Some(req.headers().clone());
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, note).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() || msg.is_binary() {
                            if ws.send(msg).await.is_err() {
                                break;
                            }
                        } else if msg.is_close() {
                            break;
                        }
                    }
                });
            }
        });
        EchoServer {
            url,
            handshakes,
            last_headers,
        }
    }
}

fn config(backend: &str, extra: &str) -> String {
    format!(
        "[backend]\nurl = \"{backend}\"\ntimeout_ms = 5000\n{extra}\n\n[store]\nkind = \"memory\"\n\n{}",
        STD_RULES
    )
}

async fn connect(
    proxy: &Proxy,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = format!("ws://{}{path}", proxy.addr).into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer tenant-a".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("the handshake through cachegate");
    assert_eq!(resp.status(), 101);
    ws
}

fn metric(proxy: &Proxy, line_start: &str) -> f64 {
    let text = proxy.gateway().metrics().encode();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_cross_the_tunnel_both_ways_and_nothing_is_cached() {
    let echo = EchoServer::start().await;
    let proxy = Proxy::start(&config(&echo.url, "")).await;
    // A path the task rule covers: the upgrade skips the rules all the same.
    let path = "/api/v1/tasks/stream";
    let mut first = connect(&proxy, path).await;
    let mut second = connect(&proxy, path).await;
    assert_eq!(
        echo.handshakes.load(Ordering::SeqCst),
        2,
        "each handshake reached the backend"
    );
    let seen = echo.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen["authorization"], "Bearer tenant-a");
    assert!(seen.contains_key("x-forwarded-for"), "{seen:?}");
    // Counted once both sides have handed their connections over.
    eventually("both tunnels open", PATIENCE, || async {
        metric(&proxy, "cachegate_tunnels_open") == 2.0
    })
    .await;

    let big = vec![7u8; 200 * 1024];
    first.send(Message::text("hello")).await.unwrap();
    second.send(Message::binary(big.clone())).await.unwrap();
    first.send(Message::text("again")).await.unwrap();
    assert_eq!(first.next().await.unwrap().unwrap(), Message::text("hello"));
    assert_eq!(first.next().await.unwrap().unwrap(), Message::text("again"));
    assert_eq!(second.next().await.unwrap().unwrap(), Message::binary(big));

    first.close(None).await.unwrap();
    second.close(None).await.unwrap();
    eventually("both tunnels closed", PATIENCE, || async {
        metric(&proxy, "cachegate_tunnels_open") == 0.0
    })
    .await;
    assert_eq!(metric(&proxy, "cachegate_upgrades_total{result=\"tunnelled\"}"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_closes_when_the_backend_does_and_when_it_idles() {
    let echo = EchoServer::start().await;
    let proxy = Proxy::start(&config(&echo.url, "tunnel_idle_timeout_ms = 300")).await;
    let mut ws = connect(&proxy, "/live").await;
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
    // Then silence: the tunnel idles out and the client sees its end.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the idle tunnel was not closed");
    eventually("the tunnel is gone", PATIENCE, || async {
        metric(&proxy, "cachegate_tunnels_open") == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_declines_keeps_its_answer_and_upgrades_off_drops_the_headers() {
    let backend = Backend::start().await;
    backend.on(
        "GET",
        "/live",
        Reply::new().status(426).body("{\"detail\":\"upgrade elsewhere\"}"),
    );
    let proxy = Proxy::start(&render(&config("{backend}", ""), Kind::Memory, &backend.url(), None)).await;
    let headers = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
    ];
    let resp = proxy.client().send("GET", "/live", &headers, empty()).await;
    assert_eq!(resp.status, 426);
    let seen = backend.last_headers("/live").unwrap();
    assert_eq!(seen["upgrade"], "websocket", "the upgrade reached the backend");
    assert_eq!(metric(&proxy, "cachegate_upgrades_total{result=\"declined\"}"), 1.0);

    let off = Proxy::start(&render(
        &config("{backend}", "upgrades = false"),
        Kind::Memory,
        &backend.url(),
        None,
    ))
    .await;
    let resp = off.client().send("GET", "/live", &headers, empty()).await;
    assert_eq!(resp.status, 426);
    let seen = backend.last_headers("/live").unwrap();
    assert!(
        !seen.contains_key("upgrade"),
        "upgrades = false: hop-by-hop as ever: {seen:?}"
    );
    assert_eq!(metric(&off, "cachegate_upgrades_total{result=\"declined\"}"), 0.0);
}
