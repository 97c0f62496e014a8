//! No 502 that a reconnect would have avoided: a backend that drops a
//! kept-alive connection (a reset, or a close without `Connection: close`)
//! after answering a write 500, as uvicorn does, must not turn the next
//! request through cachegate into a 502.
//!
//! The backend here is raw tokio TCP so it can misbehave exactly: it
//! answers, keeps the connection open, and breaks it when (or right after)
//! the next request arrives on it.

use crate::common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the raw backend breaks a connection after answering a write 500.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Break {
    /// Reads the next request on it, then resets (SO_LINGER 0).
    ResetOnReuse,
    /// Reads the next request on it, then closes (FIN) without answering.
    CloseOnReuse,
    /// Resets as soon as the 500 is written.
    ResetAtOnce,
    /// Each of the above in turn, by the write's version.
    Mixed,
}

/// A task backend: `GET /api/v1/tasks/{id}` answers `{"version": n}`, `PUT`
/// bumps the version (it commits) and answers 500, then breaks the
/// connection as `Break` says. Counts connections and requests.
struct RawBackend {
    addr: std::net::SocketAddr,
    version: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    async fn start(how: Break) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let version = Arc::new(AtomicU64::new(1));
        let connections = Arc::new(AtomicU64::new(0));
        let (v, c) = (version.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, v.clone(), how));
            }
        });
        RawBackend {
            addr,
            version,
            connections,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request head (and its Content-Length body): the method, or `None`
/// at EOF.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + len);
            return head.split(' ').next().map(str::to_string);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(mut stream: TcpStream, version: Arc<AtomicU64>, how: Break) {
    let mut buf = Vec::new();
    while let Some(method) = read_request(&mut stream, &mut buf).await {
        if method == "PUT" {
            let v = version.fetch_add(1, Ordering::SeqCst);
            let how = match how {
                Break::Mixed => [Break::ResetOnReuse, Break::CloseOnReuse, Break::ResetAtOnce][v as usize % 3],
                other => other,
            };
            let body = r#"{"detail":"internal error"}"#;
            let answer = format!(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            match how {
                Break::ResetAtOnce | Break::Mixed => {}
                Break::ResetOnReuse | Break::CloseOnReuse => {
                    // Kept alive as far as the client can tell, until it is used.
                    let _ = read_request(&mut stream, &mut buf).await;
                }
            }
            if how != Break::CloseOnReuse {
                let _ = stream.set_zero_linger();
            }
            return; // dropped: RST with linger 0, else FIN
        }
        let body = format!(r#"{{"version":{}}}"#, version.load(Ordering::SeqCst));
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

const RULES: &str = r#"
[backend]
url = "{backend}"
timeout_ms = 5000

[store]
kind = "memory"

[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"

[[invalidate]]
name = "task-write"
methods = ["PUT"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{task_id}"]
"#;

async fn start(how: Break) -> (RawBackend, Proxy, Client) {
    let backend = RawBackend::start(how).await;
    let proxy = Proxy::start(&RULES.replace("{backend}", &backend.url())).await;
    let client = Client::new(proxy.addr);
    (backend, proxy, client)
}

fn version(r: &Resp) -> u64 {
    r.json()["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version: {}", r.text()))
}

async fn after_a_500_the_next_get_gets_a_real_answer(how: Break) {
    let (backend, _proxy, client) = start(how).await;
    let path = "/api/v1/tasks/1";
    let first = client.get(path).await;
    assert_eq!((first.status.as_u16(), version(&first)), (200, 1), "{how:?}");
    let put = client.put(path).await;
    assert_eq!(put.status, 500, "{how:?}");
    assert_eq!(backend.version.load(Ordering::SeqCst), 2);
    // The pooled connection is the one the backend is breaking.
    let after = client.get(path).await;
    assert_eq!(
        after.status.as_u16(),
        200,
        "{how:?}: the GET after the 500 must not fail on the dead pooled connection: {}",
        after.text()
    );
    assert_eq!(version(&after), 2, "{how:?}: the write's purge and a real answer");
    // And normal service: stored, then a hit.
    assert_eq!(client.get(path).await.x_cache(), Some("HIT"), "{how:?}");
    assert!(backend.connections.load(Ordering::SeqCst) >= 2, "{how:?}: reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_of_the_pooled_connection_on_reuse_is_retried() {
    after_a_500_the_next_get_gets_a_real_answer(Break::ResetOnReuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_of_the_pooled_connection_without_connection_close_is_retried() {
    after_a_500_the_next_get_gets_a_real_answer(Break::CloseOnReuse).await;
}

/// The load case of the issue: writes that answer 500 and break the
/// connection (each way in turn), each followed by GETs (its own id and
/// others): no 502 at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_writes_that_break_the_connection_after_a_500_cause_no_502() {
    let (backend, _proxy, client) = start(Break::Mixed).await;
    let mut failures = Vec::new();
    let mut gets = 0;
    for i in 0..60u64 {
        let path = format!("/api/v1/tasks/{}", i % 4);
        assert_eq!(client.put(&path).await.status, 500);
        for id in [i % 4, (i + 1) % 4] {
            let p = format!("/api/v1/tasks/{id}");
            let r = client.get(&p).await;
            gets += 1;
            if r.status != 200 {
                failures.push(format!("{i} GET {p}: {} {}", r.status, r.text()));
            }
        }
        // The write committed and purged: its id reads the new version.
        let r = client.get(&path).await;
        gets += 1;
        if r.status != 200 || version(&r) != backend.version.load(Ordering::SeqCst) {
            failures.push(format!("{i} GET {path} after the write: {} {}", r.status, r.text()));
        }
    }
    println!(
        "60 writes, {gets} GETs, {} backend connections, {} failures",
        backend.connections.load(Ordering::SeqCst),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A POST is not idempotent: once it may have reached the backend it is
/// not sent again (the backend sees it once), and the client gets the 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_may_have_arrived_is_not_sent_twice() {
    let backend = RawBackend::start(Break::ResetOnReuse).await;
    let proxy = Proxy::start(&RULES.replace("{backend}", &backend.url())).await;
    let client = Client::new(proxy.addr);
    assert_eq!(client.put("/api/v1/tasks/1").await.status, 500);
    let connections = backend.connections.load(Ordering::SeqCst);
    let post = client.send("POST", "/api/v1/tasks/1", &[], full("{}")).await;
    assert_eq!(post.status, 502, "{}", post.text());
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        connections,
        "no second connection: the POST was not retried"
    );
    // A later GET is served normally.
    let r = client.get("/api/v1/tasks/1").await;
    assert_eq!((r.status.as_u16(), version(&r)), (200, 2));
}

/// A backend that takes a PUT (the version moves: it committed), then goes
/// away: it stops listening and resets the connection without answering,
/// as a backend restarting mid-write does.
async fn vanishing_backend(version: Arc<AtomicU64>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gone = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                // Dropping the listener: new connections are refused.
                _ = gone.notified() => return,
            };
            let (version, gone) = (version.clone(), gone.clone());
            tokio::spawn(async move {
                let mut stream = stream;
                let mut buf = Vec::new();
                while let Some(method) = read_request(&mut stream, &mut buf).await {
                    if method == "PUT" {
                        version.fetch_add(1, Ordering::SeqCst);
                        gone.notify_one();
                        let _ = stream.set_zero_linger();
                        return;
                    }
                    let body = format!(r#"{{"version":{}}}"#, version.load(Ordering::SeqCst));
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A PUT sent on a pooled connection that breaks before any answer may
/// have committed. When its retry then cannot even connect (the backend
/// is gone), the outcome is still unknown, not "never sent": the write's
/// own URI is purged (RFC 9111 §4.4 on an unknown outcome), so the old
/// entry is not served once the backend is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_may_have_arrived_is_purged_when_its_retry_cannot_connect() {
    let committed = Arc::new(AtomicU64::new(1));
    let addr = vanishing_backend(committed.clone()).await;
    // No [[invalidate]] rule: only the write's own-URI purge can act.
    let rules = format!(
        "[backend]\nurl = \"http://{addr}\"\ntimeout_ms = 5000\n\n[store]\nkind = \"memory\"\n\n\
         [[rule]]\nname = \"task\"\npath = '^/api/v1/tasks/(?P<task_id>[^/]+)$'\nkey = \"task:{{task_id}}\"\n"
    );
    let proxy = Proxy::start(&rules).await;
    let client = Client::new(proxy.addr);
    let path = "/api/v1/tasks/1";
    assert_eq!(version(&client.get(path).await), 1);
    assert_eq!(client.get(path).await.x_cache(), Some("HIT"));

    let put = client.put(path).await;
    assert!(put.status.is_server_error(), "the PUT got no answer: {}", put.status);
    assert_eq!(committed.load(Ordering::SeqCst), 2, "the backend took the write");
    assert!(
        !proxy.stored("task:1", "anon").await,
        "the entry from before a write that may have committed is still stored"
    );
    let after = client.get(path).await;
    assert_ne!(after.x_cache(), Some("HIT"), "{}", after.cache_status());
}
