//! Server-Sent Events: an event stream reaches the client event by event,
//! the first before the backend has written the second, on a path no rule
//! covers and on one a rule does; it is never stored.

use crate::common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;

/// A backend that answers every request with an event stream: one event,
/// then (once the test says so) a second, then the end. Counts requests.
struct EventBackend {
    url: String,
    requests: Arc<AtomicU64>,
    release: Arc<Notify>,
}

impl EventBackend {
    async fn start() -> EventBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let release = Arc::new(Notify::new());
        let (count, go) = (requests.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (count, go) = (count.clone(), go.clone());
                tokio::spawn(async move {
                    let (rd, mut wr) = stream.into_split();
                    let mut rd = BufReader::new(rd);
                    let mut line = String::new();
                    // The request head, up to its blank line.
                    loop {
                        line.clear();
                        if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                    let first = "data: one\n\n";
                    let _ = wr
                        .write_all(format!("{head}{:x}\r\n{first}\r\n", first.len()).as_bytes())
                        .await;
                    go.notified().await;
                    let second = "data: two\n\n";
                    let _ = wr
                        .write_all(format!("{:x}\r\n{second}\r\n0\r\n\r\n", second.len()).as_bytes())
                        .await;
                });
            }
        });
        EventBackend { url, requests, release }
    }
}

/// Reads from the proxy until `needle` has arrived, or fails after a while.
async fn read_until(stream: &mut tokio::net::TcpStream, seen: &mut Vec<u8>, needle: &str) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(seen).contains(needle) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "the stream ended before {needle:?}: {}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "{needle:?} did not arrive: {}",
        String::from_utf8_lossy(seen)
    );
}

/// Returns the proxy's answer heads, one per round.
async fn first_event_arrives_before_the_backend_finishes(path: &str) -> Vec<String> {
    let backend = EventBackend::start().await;
    let text = format!(
        "[backend]\nurl = \"{}\"\ntimeout_ms = 5000\n\n[store]\nkind = \"memory\"\n\n{STD_RULES}",
        backend.url
    );
    let proxy = Proxy::start(&text).await;
    let mut heads = Vec::new();
    for round in 1..=2 {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\naccept: text/event-stream\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        // The backend holds its second event until the first is here.
        read_until(&mut stream, &mut seen, "data: one").await;
        assert!(!String::from_utf8_lossy(&seen).contains("data: two"));
        backend.release.notify_one();
        read_until(&mut stream, &mut seen, "data: two").await;
        assert_eq!(
            backend.requests.load(Ordering::SeqCst),
            round,
            "an event stream is never answered from the cache"
        );
        let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
        heads.push(text[..text.find("\r\n\r\n").unwrap()].to_string());
    }
    heads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_no_rule_covers_streams_event_by_event() {
    first_event_arrives_before_the_backend_finishes("/events").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_under_a_rule_streams_event_by_event_and_is_not_stored() {
    // `/api/v1/tasks/{task_id}` covers it; its answer says max-age=60.
    let heads = first_event_arrives_before_the_backend_finishes("/api/v1/tasks/events").await;
    for head in heads {
        assert!(head.contains("detail=event-stream"), "{head}");
    }
}
