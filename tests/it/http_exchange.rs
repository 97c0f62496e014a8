//! One HTTP exchange as the cache sees it, end to end: interim (1xx)
//! responses from the backend and `Expect: 100-continue` from the client
//! (RFC 9110 §15.2), a backend answer that breaks off mid-body with and
//! without a stale entry to fall back on (RFC 9111 §4.2.4, RFC 5861
//! stale-if-error), what a 304 or a HEAD does to the stored entry (RFC 9111
//! §3.2, §4.3.4, §4.3.5), the client's own request directives (RFC 9111
//! §5.2.1: `max-stale`, `min-fresh`, `max-age`, `only-if-cached`,
//! `no-cache`, and the operator's switch to ignore them), and `Vary`
//! variants shared by equivalent spellings of the request fields (RFC 9110
//! §12.5.3, §12.5.4).
//!
//! The acceptance of issue 17, items 6 to 10.

use crate::common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

both_stores!(
    // 7. a body that breaks off (RFC 9111 §4.2.4, RFC 5861)
    a_broken_body_is_answered_from_the_stale_entry_within_stale_if_error,
    a_broken_body_under_must_revalidate_is_a_502,
    a_broken_body_without_stale_if_error_is_a_502,
    // 8. 304 and HEAD updates (RFC 9111 §3.2, §4.3.4, §4.3.5)
    a_304_replaces_every_line_of_a_field_but_never_the_framing,
    a_head_refreshes_the_entry_it_shares_with_get,
    a_304_with_set_cookie_is_answered_but_never_stored,
    // 9. request directives (RFC 9111 §5.2.1)
    max_stale_takes_a_stale_entry_without_asking_the_backend,
    max_stale_finds_nothing_once_an_entry_with_nothing_to_keep_it_expired,
    max_stale_takes_a_stale_entry_with_a_validator,
    max_stale_never_takes_a_must_revalidate_entry,
    min_fresh_refuses_an_entry_about_to_go_stale,
    a_request_max_age_refuses_an_entry_older_than_it,
    only_if_cached_never_asks_the_backend,
    no_cache_on_a_fresh_entry_refills_it,
    request_directives_ignored_by_the_operator,
    // 10. Vary normalisation (RFC 9110 §12.5.3, §12.5.4)
    accept_encoding_spellings_share_a_variant,
    accept_language_keeps_the_order_of_equal_weights,
);

// ---------------------------------------------------------------------------
// Helpers (local: the shared harness is not edited)
// ---------------------------------------------------------------------------

/// `shared`: one entry for GET and HEAD (no `{method}` in the key); `all`:
/// the catch-all of an RFC 9111 shared cache.
const RULES: &str = r#"
[[rule]]
name = "shared"
path = '^/shared/(?P<id>[^/]+)$'
key = "shared:{id}"
ttl = "origin"
scope = "public"

[[rule]]
name = "all"
path = '^/'
key = "{method}:{host}{path}?{query}"
ttl = "origin"
scope = "public"
"#;

fn template(rules: &str) -> String {
    format!("{HEAD}\n{rules}")
}

/// A world on [`RULES`] (the Redis store with its patient call timeout).
async fn world(kind: Kind) -> World {
    World::start(kind, &patient(&template(RULES), kind)).await
}

/// A programmed answer: these headers and this body (status 200).
fn reply(headers: &[(&str, &str)], body: &str) -> Reply {
    headers
        .iter()
        .fold(Reply::new().body(body.to_string()), |r, (n, v)| r.header(n, v))
}

/// A GET through the proxy; `Err` when it fails (a body that breaks off
/// included).
async fn get(w: &World, path: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    w.client.try_send("GET", path, hv(headers), empty()).await
}

fn header_of(headers: &Option<http::HeaderMap>, name: &str) -> Option<String> {
    headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.to_str().unwrap().to_string())
}

/// Every line of a header, in order.
fn lines(r: &Resp, name: &str) -> Vec<String> {
    r.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// A response in one line, for assertion messages.
fn shown(r: &Resp) -> String {
    format!("{} {:?} {:?}", r.status, r.cache_status(), r.text())
}

/// Lets a `max-age=2` entry go stale (the sleep creates the condition).
// Two seconds, not one: the backend's `Date` has whole seconds, so an
// answer that crosses a second boundary on its way arrives 1 s old
// (RFC 9111 §4.2.3), and a 1 s entry would already be stale on the
// immediate second GET that `store` expects to be a hit.
async fn until_stale() {
    tokio::time::sleep(Duration::from_millis(2500)).await;
}

/// GETs `path`: the answer must be stored. Then a second GET is a hit.
async fn store(w: &World, path: &str) -> Resp {
    let before = w.backend.count("GET", path);
    let first = w.client.get(path).await;
    assert_eq!(
        first.cache_status(),
        "cachegate; fwd=miss; stored",
        "{path}: the first answer is stored ({})",
        shown(&first)
    );
    let hit = w.client.get(path).await;
    assert_eq!(hit.x_cache(), Some("HIT"), "{path}: {}", shown(&hit));
    assert_eq!(hit.body, first.body, "{path}");
    assert_eq!(
        w.backend.count("GET", path) - before,
        1,
        "{path}: the backend is asked once"
    );
    first
}

// ---------------------------------------------------------------------------
// 6. Interim responses (RFC 9110 §15.2)
// ---------------------------------------------------------------------------

/// 103 Early Hints and 102 Processing, then the final 200, in one answer.
const WITH_INTERIM: &str = "HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n\
     HTTP/1.1 102 Processing\r\n\r\n\
     HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncache-control: max-age=60\r\n\r\nhello";

/// RFC 9110 §15.2: a client (here, cachegate towards the backend) must
/// accept interim responses before the final one. Their fields are not the
/// final answer's, and the final answer is stored (this client reads the
/// final answer only; the relay is shown below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_from_the_backend_are_skipped_and_the_final_answer_stored() {
    let raw = RawBackend::start(WITH_INTERIM, false).await;
    let proxy = Proxy::start(&render(&template(RULES), Kind::Memory, &raw.url(), None)).await;
    let client = Client::new(proxy.addr);
    let r = tokio::time::timeout(Duration::from_secs(5), client.get("/interim"))
        .await
        .expect("the final answer after 103 and 102 comes within 5 s");
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hello"), "{}", shown(&r));
    assert_eq!(
        r.header("link"),
        None,
        "the 103's Link is not a field of the final answer"
    );
    assert_eq!(r.cache_status(), "cachegate; fwd=miss; stored");
    assert_eq!(raw.requests(), 1);

    let hit = tokio::time::timeout(Duration::from_secs(5), client.get("/interim"))
        .await
        .expect("the hit comes within 5 s");
    assert_eq!(hit.x_cache(), Some("HIT"), "{}", shown(&hit));
    assert_eq!((hit.status.as_u16(), hit.text().as_str()), (200, "hello"));
    assert_eq!(hit.header("link"), None, "nor is it stored");
    assert_eq!(raw.requests(), 1, "the backend is asked once");
}

/// A backend that answers every request with `103 Early Hints`, then,
/// `delay` later, `102 Processing` and the final 200 (`max-age=60`).
struct EarlyHintsBackend {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl EarlyHintsBackend {
    async fn start(delay: Duration) -> EarlyHintsBackend {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let early = b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n";
                    let _ = stream.write_all(early).await;
                    tokio::time::sleep(delay).await;
                    let last = "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\
                                cache-control: max-age=60\r\nconnection: close\r\n\r\nhello";
                    let _ = stream.write_all(last.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        EarlyHintsBackend { addr, requests, task }
    }
}

impl Drop for EarlyHintsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// RFC 9110 §15.2: the backend's `103 Early Hints` (with its fields) and
/// `102 Processing` reach an HTTP/1.1 client as they come, before the final
/// answer (here the 103 arrives while the final answer is still 700 ms
/// away); the final answer carries none of their fields and is stored; a
/// hit on the same connection relays nothing; an HTTP/1.0 client is never
/// sent a 1xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_reach_an_http11_client_before_the_final_answer() {
    let backend = EarlyHintsBackend::start(Duration::from_millis(700)).await;
    let url = format!("http://{}", backend.addr);
    let proxy = Proxy::start(&render(&template(RULES), Kind::Memory, &url, None)).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let get = |path: &str, version: &str| format!("GET {path} HTTP/{version}\r\nhost: localhost\r\n\r\n");
    conn.send(get("/early", "1.1").as_bytes()).await.expect("send");
    let early = conn.read_responses(1, Duration::from_millis(500)).await;
    assert_eq!(
        early.first().map(|r| r.status),
        Some(103),
        "the 103 before the final answer; got {:?}",
        String::from_utf8_lossy(&conn.received)
    );
    assert_eq!(early[0].header("link").as_deref(), Some("</s.css>; rel=preload"));
    let all = conn.read_responses(3, Duration::from_secs(5)).await;
    let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [103, 102, 200],
        "{:?}",
        String::from_utf8_lossy(&conn.received)
    );
    assert_eq!(all[2].body, b"hello");
    assert_eq!(
        all[2].header("link"),
        None,
        "the final answer does not carry the 103's fields"
    );
    assert_eq!(all[2].header("x-cache").as_deref(), Some("MISS"));

    conn.send(get("/early", "1.1").as_bytes()).await.expect("send");
    let all = conn.read_responses(4, Duration::from_secs(5)).await;
    let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [103, 102, 200, 200], "a hit relays nothing");
    assert_eq!(all[3].header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(all[3].header("link"), None, "nor is the 103 stored");
    assert_eq!(backend.requests.load(Ordering::SeqCst), 1);

    let mut old = RawConn::connect(proxy.addr).await;
    old.send(get("/early-1.0", "1.0").as_bytes()).await.expect("send");
    let answers = old.read_responses(1, Duration::from_secs(5)).await;
    assert_eq!(
        answers.first().map(|r| r.status),
        Some(200),
        "no 1xx to an HTTP/1.0 client: {:?}",
        String::from_utf8_lossy(&old.received)
    );
    assert_eq!(backend.requests.load(Ordering::SeqCst), 2);
}

/// RFC 9110 §10.1.1, §15.2.1: a client that sent `Expect: 100-continue`
/// gets `100 Continue` before it sends the body, then the final answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_100_then_the_final_answer() {
    let w = world(Kind::Memory).await;
    let path = "/upload/1";
    w.backend.on(
        "PUT",
        path,
        Reply::new().status(201).header("x-upload", "done").body("created"),
    );
    let mut conn = RawConn::connect(w.proxy.addr).await;
    conn.send(
        format!("PUT {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("send the head");
    let interim = conn.read_responses(1, Duration::from_secs(5)).await;
    assert_eq!(
        interim.first().map(|r| r.status),
        Some(100),
        "100 Continue before the body is sent; got {:?}",
        String::from_utf8_lossy(&conn.received)
    );
    assert!(
        interim[0].head.starts_with("HTTP/1.1 100 Continue"),
        "{:?}",
        interim[0].head
    );
    conn.send(b"data").await.expect("send the body");
    let all = conn.read_responses(2, Duration::from_secs(5)).await;
    assert_eq!(
        all.len(),
        2,
        "the final answer after the body; got {:?}",
        String::from_utf8_lossy(&conn.received)
    );
    let done = &all[1];
    assert_eq!(done.status, 201, "{}", done.head);
    assert_eq!(done.header("x-upload").as_deref(), Some("done"));
    assert_eq!(done.body, b"created");
    assert_eq!(w.backend.count("PUT", path), 1, "the backend is asked once");
    assert_eq!(w.backend.body_sizes(path), vec![4], "with the whole body");
}

// ---------------------------------------------------------------------------
// 7. A body that breaks off (RFC 9111 §4.2.4, RFC 5861 §4)
// ---------------------------------------------------------------------------

const WHOLE: &str = "the whole stored body";
const NEW: &str = "a new and complete body";

/// What a broken refresh must give the client.
#[derive(Clone, Copy, PartialEq)]
enum Broken {
    /// The stale entry: 200, its whole body, `x-cache: STALE`.
    Stale,
    /// 502 with the JSON error `bad_gateway`.
    BadGateway,
}

/// The two ways a refresh breaks off: without cache directives (the answer
/// itself would not be storable) and carrying the entry's own
/// `Cache-Control` (it would be).
fn broken_replies(cc: &str) -> [(&'static str, Reply); 2] {
    let cut = || Reply::new().truncated(vec![b'x'; 40], Some(100));
    [("plain", cut()), ("cc", cut().header("cache-control", cc))]
}

/// Stores `cc` entries (one per broken reply), lets them go stale, has the
/// backend break off mid-body, checks the answer, then that nothing of the
/// broken body was stored: the next good answer is what clients get.
async fn broken_refreshes(kind: Kind, name: &str, cc: &str, expect: Broken) {
    let w = world(kind).await;
    let cases = broken_replies(cc);
    for (variant, _) in &cases {
        let path = format!("/broken/{name}-{variant}");
        w.backend.on("GET", &path, reply(&[("cache-control", cc)], WHOLE));
        store(&w, &path).await;
    }
    until_stale().await;
    let mut failures = Vec::new();
    for (variant, broken) in cases {
        let path = format!("/broken/{name}-{variant}");
        let what = format!("{path} (stored {cc:?}, refresh breaks off after 40 of 100 bytes, {variant})");
        w.backend.on("GET", &path, broken);
        let got = get(&w, &path, &[]).await;
        if w.backend.count("GET", &path) != 2 {
            failures.push(format!(
                "{what}: the backend was asked {}x",
                w.backend.count("GET", &path)
            ));
        }
        match (&got, expect) {
            (Ok(r), Broken::Stale)
                if r.status == 200
                    && r.text() == WHOLE
                    && r.x_cache() == Some("STALE")
                    && r.cache_status() == "cachegate; hit; fwd=stale; detail=backend-error" => {}
            (Ok(r), Broken::BadGateway)
                if r.status == 502 && r.header("content-type").is_some_and(|t| t.contains("json")) =>
            {
                if r.json()["error"] != "bad_gateway" {
                    failures.push(format!("{what}: 502 with {:?}", r.text()));
                }
            }
            (Ok(r), _) => failures.push(format!(
                "{what}: expected {}, got {} ({} bytes)",
                if expect == Broken::Stale {
                    "the stale entry (200, x-cache STALE, detail=backend-error)"
                } else {
                    "502 bad_gateway"
                },
                shown(r),
                r.body.len()
            )),
            (Err(e), _) => failures.push(format!(
                "{what}: expected {}, the client got a response whose body broke off: {e}",
                if expect == Broken::Stale {
                    "the stale entry"
                } else {
                    "502 bad_gateway"
                }
            )),
        }
        // Nothing of the broken body was stored: the next good answer
        // reaches the client whole, and is then a hit.
        w.backend.reset(&path);
        w.backend
            .on("GET", &path, reply(&[("cache-control", "max-age=60")], NEW));
        match get(&w, &path, &[]).await {
            Ok(r) if r.status == 200 && r.text() == NEW => {}
            Ok(r) => failures.push(format!("{what}: after the backend recovered: {}", shown(&r))),
            Err(e) => failures.push(format!("{what}: after the backend recovered: {e}")),
        }
        match get(&w, &path, &[]).await {
            Ok(r) if r.x_cache() == Some("HIT") && r.text() == NEW => {}
            Ok(r) => failures.push(format!("{what}: the recovered answer is not a hit: {}", shown(&r))),
            Err(e) => failures.push(format!("{what}: the recovered answer: {e}")),
        }
        if w.backend.count("GET", &path) != 3 {
            failures.push(format!(
                "{what}: the backend was asked {}x in all (3 expected)",
                w.backend.count("GET", &path)
            ));
        }
    }
    assert!(failures.is_empty(), "a broken body:\n  {}", failures.join("\n  "));
}

/// RFC 9111 §4.2.4 and RFC 5861 §4: an answer that breaks off is an error;
/// within `stale-if-error` the stale entry answers instead, whole.
async fn a_broken_body_is_answered_from_the_stale_entry_within_stale_if_error(kind: Kind) {
    broken_refreshes(kind, "sie", "max-age=2, stale-if-error=60", Broken::Stale).await;
}

/// RFC 9111 §5.2.2.2: `must-revalidate` forbids the stale entry even
/// within `stale-if-error`: the broken answer is a 502.
async fn a_broken_body_under_must_revalidate_is_a_502(kind: Kind) {
    broken_refreshes(
        kind,
        "mr",
        "max-age=2, stale-if-error=60, must-revalidate",
        Broken::BadGateway,
    )
    .await;
}

/// RFC 9111 §4.2.4: without a stale window nothing stale may answer; the
/// broken answer is a 502, never the truncated body as if whole.
async fn a_broken_body_without_stale_if_error_is_a_502(kind: Kind) {
    broken_refreshes(kind, "plain", "max-age=2", Broken::BadGateway).await;
}

/// A backend that sends a head declaring 100 bytes, 40 of them, and then
/// nothing more (the connection stays open): a stall mid-body.
struct StallingBackend {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingBackend {
    async fn start() -> StallingBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let requests = requests.clone();
            async move {
                let mut held = Vec::new();
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        continue;
                    };
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if head.is_empty() {
                        // A connection that sent nothing (the backend
                        // probe's TCP connect) is no request.
                        continue;
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: 100\r\ncache-control: max-age=60\r\n\r\n{}",
                        "s".repeat(40)
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.flush().await;
                    // The stall: the connection is held open, silent.
                    held.push(stream);
                }
            }
        });
        StallingBackend { addr, requests, task }
    }
}

impl Drop for StallingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A backend that stalls mid-body: after the backend timeout the client
/// gets 504 (nothing of the body), and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_stalling_mid_body_is_a_504_and_nothing_is_stored() {
    let stall = StallingBackend::start().await;
    let text = template(RULES).replace("timeout_ms = 5000", "timeout_ms = 1000");
    let proxy = Proxy::start(&render(&text, Kind::Memory, &format!("http://{}", stall.addr), None)).await;
    let client = Client::new(proxy.addr);
    for round in 1..=2u64 {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            client.try_send("GET", "/stall", vec![], empty()),
        )
        .await
        .expect("an answer within 10 s");
        let r = r.unwrap_or_else(|e| panic!("round {round}: a 504 expected, the body broke off: {e}"));
        assert_eq!(r.status, 504, "round {round}: {}", shown(&r));
        assert_eq!(r.json()["error"], "gateway_timeout", "round {round}");
        assert_eq!(
            stall.requests.load(Ordering::SeqCst),
            round,
            "nothing stored: asked again"
        );
    }
}

// ---------------------------------------------------------------------------
// 8. 304 and HEAD updates (RFC 9111 §3.2, §4.3.4, §4.3.5)
// ---------------------------------------------------------------------------

/// RFC 9111 §3.2, §4.3.4: a 304 replaces each stored field it carries, all
/// lines of it; the framing (`Content-Length`) stays the stored body's.
async fn a_304_replaces_every_line_of_a_field_but_never_the_framing(kind: Kind) {
    let w = world(kind).await;
    let path = "/r/links";
    let body = "the stored body";
    w.backend.on(
        "GET",
        path,
        reply(
            &[("cache-control", "max-age=2"), ("etag", "\"v1\""), ("x-version", "1")],
            body,
        ),
    );
    let first = store(&w, path).await;
    assert_eq!(first.header("content-length"), Some(body.len().to_string().as_str()));
    until_stale().await;
    w.backend.on(
        "GET",
        path,
        reply(
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("x-version", "2"),
                ("link", "</a>; rel=preload"),
                ("link", "</b>; rel=preload"),
            ],
            "",
        )
        .status(304),
    );
    let r = w.client.get(path).await;
    assert_eq!(w.backend.count("GET", path), 2);
    assert_eq!(
        header_of(&w.backend.last_headers(path), "if-none-match").as_deref(),
        Some("\"v1\""),
        "validated with the stored ETag"
    );
    assert_eq!(r.status, 200, "the client gets the stored answer: {}", shown(&r));
    assert_eq!(r.text(), body);
    assert_eq!(r.x_cache(), Some("REVALIDATED"), "{}", shown(&r));

    let hit = w.client.get(path).await;
    assert_eq!(hit.x_cache(), Some("HIT"), "refreshed by the 304: {}", shown(&hit));
    assert_eq!(w.backend.count("GET", path), 2, "the backend is not asked");
    assert_eq!(hit.text(), body);
    assert_eq!(
        hit.header("x-version"),
        Some("2"),
        "the 304's field replaces the stored one"
    );
    assert_eq!(
        lines(&hit, "link"),
        vec!["</a>; rel=preload", "</b>; rel=preload"],
        "both lines of the 304's Link are kept"
    );
    assert_eq!(lines(&hit, "x-version").len(), 1, "x-version replaced, not added");
    assert_eq!(
        hit.header("content-length"),
        Some(body.len().to_string().as_str()),
        "the stored body's framing, not the 304's"
    );
}

/// RFC 9111 §4.3.5 (and §4.3.4 for the GET it is fetched as): a HEAD on a
/// stale entry is forwarded as a GET, whose full answer refreshes the entry
/// HEAD and GET share; the HEAD gets its head and no body.
async fn a_head_refreshes_the_entry_it_shares_with_get(kind: Kind) {
    let w = world(kind).await;
    let path = "/shared/head";
    w.backend.on(
        "GET",
        path,
        reply(
            &[("cache-control", "max-age=2"), ("etag", "\"h1\""), ("x-version", "1")],
            "the old body",
        ),
    );
    store(&w, path).await;
    until_stale().await;
    let new_body = "the new body, a little longer";
    w.backend.on(
        "GET",
        path,
        reply(
            &[("cache-control", "max-age=60"), ("etag", "\"h2\""), ("x-version", "3")],
            new_body,
        ),
    );
    let head = w.client.head(path).await;
    assert_eq!(head.status, 200, "{}", shown(&head));
    assert_eq!(
        head.header("x-version"),
        Some("3"),
        "the new answer's head: {}",
        shown(&head)
    );
    assert_eq!(head.header("etag"), Some("\"h2\""));
    assert!(head.body.is_empty(), "a HEAD answer has no body");
    assert_eq!(w.backend.count("HEAD", path), 0, "HEAD is forwarded as GET");
    assert_eq!(w.backend.count("GET", path), 2);
    assert_eq!(
        header_of(&w.backend.last_headers(path), "if-none-match").as_deref(),
        Some("\"h1\""),
        "validated with the stored ETag"
    );

    let get = w.client.get(path).await;
    assert_eq!(
        get.x_cache(),
        Some("HIT"),
        "the HEAD refreshed the entry: {}",
        shown(&get)
    );
    assert_eq!(get.header("x-version"), Some("3"));
    assert_eq!(get.text(), new_body);
    assert_eq!(w.backend.count("GET", path), 2, "the backend is asked twice in all");
    assert_eq!(w.backend.count("HEAD", path), 0);
}

/// RFC 9111 §3.2 / §4.3.4 with cachegate's rule that a cookie is one
/// client's: a 304 carrying `Set-Cookie` answers its client (cookie
/// included) but refreshes nothing for others, and no later hit carries it.
async fn a_304_with_set_cookie_is_answered_but_never_stored(kind: Kind) {
    let w = world(kind).await;
    let path = "/r/cookie";
    let body = "cookie-free body";
    w.backend.on(
        "GET",
        path,
        reply(&[("cache-control", "max-age=2"), ("etag", "\"c1\"")], body),
    );
    store(&w, path).await;
    until_stale().await;
    let with_cookie = reply(
        &[
            ("cache-control", "max-age=60"),
            ("etag", "\"c1\""),
            ("set-cookie", "s=1"),
        ],
        "",
    )
    .status(304);
    w.backend.on("GET", path, with_cookie);
    let r = w.client.get(path).await;
    assert_eq!(w.backend.count("GET", path), 2);
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, body), "{}", shown(&r));
    assert_eq!(r.header("set-cookie"), Some("s=1"), "its client gets the cookie");
    assert_eq!(r.cache_status(), "cachegate; fwd=miss; detail=set-cookie");

    // Not refreshed: the next request revalidates again.
    let next = w.client.get(path).await;
    assert_ne!(
        next.x_cache(),
        Some("HIT"),
        "the 304 with Set-Cookie must not refresh the entry: {}",
        shown(&next)
    );
    assert_eq!(w.backend.count("GET", path), 3);

    // A 304 without a cookie refreshes it; no hit carries the cookie.
    w.backend.on(
        "GET",
        path,
        reply(&[("cache-control", "max-age=60"), ("etag", "\"c1\"")], "").status(304),
    );
    let refreshed = w.client.get(path).await;
    assert_eq!(refreshed.x_cache(), Some("REVALIDATED"), "{}", shown(&refreshed));
    assert_eq!(refreshed.header("set-cookie"), None);
    assert_eq!(w.backend.count("GET", path), 4);
    for _ in 0..2 {
        let hit = w.client.get(path).await;
        assert_eq!(hit.x_cache(), Some("HIT"), "{}", shown(&hit));
        assert_eq!(hit.text(), body);
        assert_eq!(hit.header("set-cookie"), None, "no hit carries another client's cookie");
    }
    assert_eq!(w.backend.count("GET", path), 4);
}

// ---------------------------------------------------------------------------
// 9. Request directives (RFC 9111 §5.2.1)
// ---------------------------------------------------------------------------

/// `max-stale` on an entry stored with `headers` (`max-age=2`, no stale
/// window): stale by more than a second, it is served for `max-stale=60`
/// and bare `max-stale` without the backend, and refused for `max-stale=0`.
async fn max_stale_flow(kind: Kind, path: &str, headers: &[(&str, &str)]) {
    let w = world(kind).await;
    w.backend.on("GET", path, reply(headers, "aging"));
    store(&w, path).await;
    // Stale by more than a whole second, so max-stale=0 refuses it (the
    // sleep creates the condition).
    tokio::time::sleep(Duration::from_millis(3200)).await;
    for asks in ["max-stale=60", "max-stale"] {
        let r = w.client.get_h(path, &[("cache-control", asks)]).await;
        assert_eq!(
            (r.x_cache(), r.cache_status(), r.text().as_str()),
            (Some("STALE"), "cachegate; hit; fwd=stale; detail=max-stale", "aging"),
            "{path} stored with {headers:?}, request cache-control: {asks}: the stale entry"
        );
        assert_eq!(
            w.backend.count("GET", path),
            1,
            "{path} {asks}: the backend is not asked"
        );
    }
    let r = w.client.get_h(path, &[("cache-control", "max-stale=0")]).await;
    assert_ne!(r.x_cache(), Some("STALE"), "{path} max-stale=0: {}", shown(&r));
    assert_eq!(r.text(), "aging");
    assert_eq!(
        w.backend.count("GET", path),
        2,
        "{path} max-stale=0 goes to the backend"
    );
}

/// RFC 9111 §5.2.1.2: `max-stale[=N]` accepts a stale entry (stale for at
/// most N seconds; bare: any), `max-stale=0` none; here an entry with no
/// stale window and no validator.
async fn max_stale_takes_a_stale_entry_without_asking_the_backend(kind: Kind) {
    // Kept past its lifetime by its stale-if-error window (which alone would
    // never serve it without a backend error).
    max_stale_flow(kind, "/ms/plain", &[("cache-control", "max-age=2, stale-if-error=60")]).await;
}

/// An entry with neither a validator nor a stale window is dropped when it
/// expires (RFC 9111 never requires keeping one), so `max-stale` finds
/// nothing: the backend answers, and the answer is stored again.
async fn max_stale_finds_nothing_once_an_entry_with_nothing_to_keep_it_expired(kind: Kind) {
    let w = world(kind).await;
    let path = "/ms/gone";
    w.backend
        .on("GET", path, reply(&[("cache-control", "max-age=2")], "short"));
    store(&w, path).await;
    until_stale().await;
    let r = w.client.get_h(path, &[("cache-control", "max-stale=60")]).await;
    assert_eq!(
        (r.x_cache(), r.cache_status(), r.text().as_str()),
        (Some("MISS"), "cachegate; fwd=miss; stored", "short"),
        "{path}: nothing was kept to serve stale"
    );
    assert_eq!(w.backend.count("GET", path), 2);
}

/// RFC 9111 §5.2.1.2, as above, on an entry with an ETag (which the store
/// keeps past its lifetime for revalidation, RFC 9111 §4.3).
async fn max_stale_takes_a_stale_entry_with_a_validator(kind: Kind) {
    max_stale_flow(kind, "/ms/etag", &[("cache-control", "max-age=2"), ("etag", "\"m\"")]).await;
}

/// RFC 9111 §5.2.2.2: an entry with `must-revalidate` is never used stale,
/// whatever `max-stale` the request allows.
async fn max_stale_never_takes_a_must_revalidate_entry(kind: Kind) {
    let w = world(kind).await;
    let path = "/ms/strict";
    w.backend.on(
        "GET",
        path,
        reply(
            &[("cache-control", "max-age=2, must-revalidate"), ("etag", "\"s\"")],
            "strict",
        ),
    );
    store(&w, path).await;
    for (asked, asks) in [(2, "max-stale=60"), (3, "max-stale")] {
        // Stale again (the refresh is stored with max-age=2 too).
        until_stale().await;
        let r = w.client.get_h(path, &[("cache-control", asks)]).await;
        assert_ne!(r.x_cache(), Some("STALE"), "{asks}: {}", shown(&r));
        assert_eq!(
            w.backend.count("GET", path),
            asked,
            "{asks}: a must-revalidate entry goes to the backend"
        );
    }
}

/// RFC 9111 §5.2.1.3: `min-fresh=N` wants an entry fresh for N more seconds.
async fn min_fresh_refuses_an_entry_about_to_go_stale(kind: Kind) {
    let w = world(kind).await;
    let path = "/mf/1";
    w.backend.on(
        "GET",
        path,
        reply(&[("cache-control", "max-age=60")], "fresh for a minute"),
    );
    store(&w, path).await;
    let r = w.client.get_h(path, &[("cache-control", "min-fresh=30")]).await;
    assert_eq!(r.x_cache(), Some("HIT"), "min-fresh=30 of 60: {}", shown(&r));
    assert_eq!(w.backend.count("GET", path), 1);
    let r = w.client.get_h(path, &[("cache-control", "min-fresh=120")]).await;
    assert_ne!(r.x_cache(), Some("HIT"), "min-fresh=120 of 60: {}", shown(&r));
    assert_eq!(r.text(), "fresh for a minute");
    assert_eq!(w.backend.count("GET", path), 2, "min-fresh=120 goes to the backend");
}

/// RFC 9111 §5.2.1.1: `max-age=N` from the client refuses an entry whose
/// current age (the origin's `Age` included) is above N.
async fn a_request_max_age_refuses_an_entry_older_than_it(kind: Kind) {
    let w = world(kind).await;
    let path = "/ma/1";
    w.backend.on(
        "GET",
        path,
        reply(&[("cache-control", "max-age=100"), ("age", "20")], "twenty seconds old"),
    );
    store(&w, path).await;
    let r = w.client.get_h(path, &[("cache-control", "max-age=60")]).await;
    assert_eq!(r.x_cache(), Some("HIT"), "age ~20 within max-age=60: {}", shown(&r));
    assert_eq!(w.backend.count("GET", path), 1);
    let r = w.client.get_h(path, &[("cache-control", "max-age=10")]).await;
    assert_ne!(r.x_cache(), Some("HIT"), "age ~20 beyond max-age=10: {}", shown(&r));
    assert_eq!(r.text(), "twenty seconds old");
    assert_eq!(w.backend.count("GET", path), 2, "max-age=10 goes to the backend");
}

/// RFC 9111 §5.2.1.7: `only-if-cached` never asks the backend: 504 when
/// nothing usable is stored, the entry when it is.
async fn only_if_cached_never_asks_the_backend(kind: Kind) {
    let w = world(kind).await;
    let path = "/oic/1";
    w.backend
        .on("GET", path, reply(&[("cache-control", "max-age=60")], "cached"));
    let only = [("cache-control", "only-if-cached")];
    let r = w.client.get_h(path, &only).await;
    assert_eq!(r.status, 504, "{}", shown(&r));
    assert_eq!(r.json()["error"], "only_if_cached");
    assert_eq!(r.cache_status(), "cachegate; fwd=miss; detail=only-if-cached");
    assert_eq!(w.backend.count("GET", path), 0, "the backend is not asked");

    store(&w, path).await;
    let r = w.client.get_h(path, &only).await;
    assert_eq!(r.x_cache(), Some("HIT"), "{}", shown(&r));
    assert_eq!(r.text(), "cached");
    assert_eq!(w.backend.count("GET", path), 1);
}

/// RFC 9111 §5.2.1.4: `no-cache` from the client goes to the backend even
/// for a fresh entry; the new answer replaces it for everyone.
async fn no_cache_on_a_fresh_entry_refills_it(kind: Kind) {
    let w = world(kind).await;
    let path = "/nc/1";
    w.backend
        .on("GET", path, reply(&[("cache-control", "max-age=60")], "first"));
    store(&w, path).await;
    w.backend
        .on("GET", path, reply(&[("cache-control", "max-age=60")], "second"));
    let r = w.client.get_h(path, &[("cache-control", "no-cache")]).await;
    assert_eq!(w.backend.count("GET", path), 2, "no-cache goes to the backend");
    assert_eq!(r.text(), "second", "{}", shown(&r));
    // RFC 9211 §2.2: the request's directives, not a miss, sent it on.
    assert_eq!(r.cache_status(), "cachegate; fwd=request; stored");
    let next = w.client.get(path).await;
    assert_eq!(next.x_cache(), Some("HIT"), "{}", shown(&next));
    assert_eq!(next.text(), "second", "the new answer replaced the entry");
    assert_eq!(w.backend.count("GET", path), 2);
}

/// `[cache] request_directives = "ignore"`: the operator's cache answers as
/// if the client had sent no directives (RFC 9111 §5.2.1 leaves a cache
/// free to be configured so).
async fn request_directives_ignored_by_the_operator(kind: Kind) {
    let text = format!("{HEAD}\n[cache]\nrequest_directives = \"ignore\"\n{RULES}");
    let w = World::start(kind, &patient(&text, kind)).await;
    let path = "/ign/stored";
    w.backend
        .on("GET", path, reply(&[("cache-control", "max-age=60")], "kept"));
    store(&w, path).await;
    let r = w.client.get_h(path, &[("cache-control", "no-cache")]).await;
    assert_eq!(r.x_cache(), Some("HIT"), "no-cache ignored: {}", shown(&r));
    assert_eq!(r.text(), "kept");
    assert_eq!(w.backend.count("GET", path), 1);

    let missing = "/ign/missing";
    w.backend
        .on("GET", missing, reply(&[("cache-control", "max-age=60")], "fetched"));
    let r = w.client.get_h(missing, &[("cache-control", "only-if-cached")]).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "fetched"),
        "only-if-cached ignored: {}",
        shown(&r)
    );
    assert_eq!(w.backend.count("GET", missing), 1, "forwarded normally");
}

// ---------------------------------------------------------------------------
// 10. Vary normalisation (RFC 9110 §12.5.3, §12.5.4)
// ---------------------------------------------------------------------------

/// GETs `path` with one request header; whether it was a hit, and the body.
async fn variant(w: &World, path: &str, name: &str, value: &str) -> (Option<String>, String) {
    let r = w.client.get_h(path, &[(name, value)]).await;
    assert_eq!(r.status, 200, "{name}: {value}: {}", shown(&r));
    (r.x_cache().map(str::to_string), r.text())
}

/// RFC 9110 §12.5.3: `Accept-Encoding` members are case-insensitive tokens
/// whose order carries no meaning (only `q` ranks them), and `q=1.0` is the
/// default: equivalent spellings share one variant. With `[compression]`
/// on (the default) every spelling shares it (the backend is asked with
/// cachegate's own `Accept-Encoding`, tests/it/compression.rs); with it
/// off, each ranking is a variant of its own.
async fn accept_encoding_spellings_share_a_variant(kind: Kind) {
    for negotiated in [true, false] {
        let text = template(RULES);
        let text = if negotiated {
            text
        } else {
            format!("{text}\n[compression]\nenabled = false\n")
        };
        let w = World::start(kind, &patient(&text, kind)).await;
        let path = "/vary/ae";
        // The default body carries a per-answer serial: each variant is distinct.
        w.backend.on(
            "GET",
            path,
            Reply::new()
                .header("cache-control", "max-age=60")
                .header("vary", "accept-encoding"),
        );
        let ae = "accept-encoding";
        let (x, stored) = variant(&w, path, ae, "gzip, br").await;
        assert_eq!(x.as_deref(), Some("MISS"));
        for same in ["br,gzip", "BR;q=1.0, GZIP"] {
            let (x, body) = variant(&w, path, ae, same).await;
            assert_eq!(x.as_deref(), Some("HIT"), "{same:?} is \"gzip, br\"");
            assert_eq!(body, stored, "{same:?}");
        }
        assert_eq!(w.backend.count("GET", path), 1);
        let (x, body) = variant(&w, path, ae, "gzip").await;
        if negotiated {
            assert_eq!(
                x.as_deref(),
                Some("HIT"),
                "negotiated once: one variant for every spelling"
            );
            assert_eq!(body, stored);
            assert_eq!(w.backend.count("GET", path), 1);
        } else {
            assert_eq!(x.as_deref(), Some("MISS"), "\"gzip\" alone is another variant");
            assert_ne!(body, stored);
            assert_eq!(w.backend.count("GET", path), 2, "the backend is asked again");
        }
    }
}

/// RFC 9110 §12.4.2, §12.5.4: `Accept-Language` members are ranked by
/// `q`, whatever their order across weights; among equal `q` the client's
/// order is kept (backends such as Django pick the first), so `en, de` and
/// `de, en` are two variants.
async fn accept_language_keeps_the_order_of_equal_weights(kind: Kind) {
    let w = world(kind).await;
    let path = "/vary/al";
    w.backend.on(
        "GET",
        path,
        Reply::new()
            .header("cache-control", "max-age=60")
            .header("vary", "accept-language"),
    );
    let al = "accept-language";
    let (x, weighted) = variant(&w, path, al, "en;q=0.5, de").await;
    assert_eq!(x.as_deref(), Some("MISS"));
    let (x, body) = variant(&w, path, al, "de, en;q=0.5").await;
    assert_eq!(x.as_deref(), Some("HIT"), "the same ranking, differently ordered");
    assert_eq!(body, weighted);
    assert_eq!(w.backend.count("GET", path), 1);

    let (x, equal) = variant(&w, path, al, "en, de").await;
    assert_eq!(x.as_deref(), Some("MISS"), "another ranking than en;q=0.5, de");
    assert_ne!(equal, weighted);
    let (x, body) = variant(&w, path, al, "de, en").await;
    assert_eq!(x.as_deref(), Some("MISS"), "equal weights: the order may choose");
    assert_ne!(body, equal);
    assert_eq!(w.backend.count("GET", path), 3);

    // Different weights on the same languages: different rankings.
    let (x, de_above) = variant(&w, path, al, "en;q=0.9, de").await;
    assert_eq!(x.as_deref(), Some("MISS"));
    let (x, en_above) = variant(&w, path, al, "en, de;q=0.9").await;
    assert_eq!(x.as_deref(), Some("MISS"), "de ranked below en is another variant");
    assert_ne!(de_above, en_above);
    assert_eq!(w.backend.count("GET", path), 5);
    // Every variant kept.
    for (value, body) in [
        ("de;q=0.9, en", &en_above),
        ("de, en;q=0.9", &de_above),
        ("de,en;q=0.5", &weighted),
        ("en,de", &equal),
    ] {
        assert_eq!(
            variant(&w, path, al, value).await,
            (Some("HIT".to_string()), body.clone()),
            "{value:?}"
        );
    }
    assert_eq!(w.backend.count("GET", path), 5);
}
