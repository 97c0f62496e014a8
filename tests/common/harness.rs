//! The integration-test harness: real parts, no mocks.
//!
//! - [`RedisServer`]: a private `redis-server` on a free port (never the one on
//!   6379), with kill / restart on the same port / pause (SIGSTOP) / resume,
//!   and a `redis` crate client to look at what cachegate wrote.
//! - [`Backend`]: an in-process hyper 1.x server whose answers each test
//!   programs, and which counts and records what it receives.
//! - [`Proxy`]: cachegate itself, started in-process on 127.0.0.1:0 from
//!   config text with `{backend}`, `{redis}` and `{store}` placeholders.
//! - [`Client`]: a hyper-util client returning status, headers and body.
//! - [`World`]: all of the above for one test.
//! - [`RawConn`] / [`raw_exchange`]: exact bytes to a server and the raw
//!   reply (split into [`RawResponse`]s), for inputs no HTTP client sends.
//! - [`RawBackend`]: a backend that answers with exact bytes, then closes
//!   (FIN or RST); [`Blackhole`]: a port where connects hang.

pub mod admin;
pub mod framework;
pub mod suite;
pub mod topology;

use bytes::Bytes;
use cachegate::config::{Config, Overrides, Scope};
use cachegate::gateway::{scope_field, Gateway};
use cachegate::reload::Loader;
use cachegate::server::{self, Running};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// How long a test waits for something that must happen before it calls
/// it a hang. Only a guard: no test's outcome depends on how long anything
/// took within it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` until it returns true; panics with `what` after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_some(what, within, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `check` until it gives a value; panics with `what` after `within`.
pub async fn eventually_some<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await; // the polling interval
    }
}

/// `template` with its `{store}` filled in for `kind`, the Redis store's
/// call timeout raised from 100 ms to 1 s: for tests of other things, so
/// that a starved CPU on a loaded machine does not turn into a store fault
/// (a bypass where the test expects a hit).
pub fn patient(template: &str, kind: Kind) -> String {
    template.replace(
        "{store}",
        &store_section(kind).replace("timeout_ms = 100\n", "timeout_ms = 1000\n"),
    )
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// A deterministic byte pattern for large bodies (checkable while streaming)
// ---------------------------------------------------------------------------

pub const CHUNK: usize = 64 * 1024;

const fn make_pattern() -> [u8; CHUNK] {
    let mut a = [0u8; CHUNK];
    let mut i = 0;
    while i < CHUNK {
        a[i] = (i % 251) as u8;
        i += 1;
    }
    a
}

/// Byte `o` of every generated body is `PATTERN[o % CHUNK]`.
pub static PATTERN: [u8; CHUNK] = make_pattern();

/// A body of `len` pattern bytes, produced 64 KiB at a time from a static
/// buffer (nothing is held in memory). `exact` gives it a known length.
pub struct GenBody {
    remaining: u64,
    sent: u64,
    exact: bool,
}

impl GenBody {
    pub fn new(len: u64, exact: bool) -> GenBody {
        GenBody {
            remaining: len,
            sent: 0,
            exact,
        }
    }
}

impl http_body::Body for GenBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let start = (self.sent % CHUNK as u64) as usize;
        let n = ((CHUNK - start) as u64).min(self.remaining) as usize;
        self.remaining -= n as u64;
        self.sent += n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PATTERN[start..start + n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

/// A body of given frames with no known length (sent chunked); an `Err`
/// frame aborts it mid-way.
pub struct FramesBody {
    frames: VecDeque<Result<Bytes, String>>,
}

impl FramesBody {
    pub fn new(frames: impl IntoIterator<Item = Result<Bytes, String>>) -> FramesBody {
        FramesBody {
            frames: frames.into_iter().collect(),
        }
    }
}

impl http_body::Body for FramesBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.frames.pop_front() {
            None => Poll::Ready(None),
            Some(Ok(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
        }
    }
}

/// Sends `sent`, waits a moment (so the head and that part are on the
/// wire), then fails: the connection breaks mid-body.
pub struct TruncBody {
    sent: Option<Bytes>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for TruncBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(b) = self.sent.take() {
            // Creates the condition: the head and this part go out before
            // the break.
            self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))));
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if let Some(p) = self.pause.as_mut() {
            std::task::ready!(p.as_mut().poll(cx));
        }
        Poll::Ready(Some(Err("backend closes mid-body".into())))
    }
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

// ---------------------------------------------------------------------------
// RedisServer
// ---------------------------------------------------------------------------

/// A private `redis-server` for one test (or one test binary).
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let child = match spawn_redis(port, dir.path()) {
                Ok(c) => Mutex::new(Some(c)),
                Err(e) => panic!("{e}"),
            };
            match wait_ready(port, &child) {
                Ok(()) => return RedisServer { port, dir, child },
                Err(e) => {
                    // Most likely the port was taken meanwhile: try another.
                    kill_child(&child);
                    last_err = e;
                }
            }
        }
        panic!("could not start redis-server: {last_err}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id())
    }

    /// Kills the server (SIGKILL); the port is then closed.
    pub fn kill(&self) {
        kill_child(&self.child);
    }

    /// Starts a fresh (empty) server on the same port.
    pub fn restart(&self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = spawn_redis(self.port, self.dir.path()).unwrap_or_else(|e| panic!("{e}"));
            *self.child.lock().unwrap() = Some(child);
            match wait_ready(self.port, &self.child) {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("redis-server restart on port {} failed ({e}); retrying", self.port);
                    self.kill();
                    std::thread::sleep(Duration::from_millis(100)); // before the next attempt
                }
                Err(e) => panic!("redis-server would not restart on port {}: {e}", self.port),
            }
        }
    }

    /// Stops the process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Continues a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("redis-server is not running");
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    // --- looking at what is in Redis -------------------------------------

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("redis url");
        client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("connect to test redis {}: {e}", self.url()))
    }

    /// A blocking connection, for tests without a runtime.
    pub fn sync_conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("connect to test redis {}: {e}", self.url()))
    }

    /// Runs one command on a fresh connection.
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut conn = self.conn().await;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    pub async fn hgetall(&self, key: &str) -> HashMap<String, Vec<u8>> {
        self.cmd(&["HGETALL", key]).await
    }

    /// Field names of a hash, sorted.
    pub async fn hkeys(&self, key: &str) -> Vec<String> {
        let mut v: Vec<String> = self.cmd(&["HKEYS", key]).await;
        v.sort();
        v
    }

    /// Field names that hold entries (internal `__gen` / `__cg` left out).
    pub async fn entry_fields(&self, key: &str) -> Vec<String> {
        self.hkeys(key)
            .await
            .into_iter()
            .filter(|f| !f.starts_with("__"))
            .collect()
    }

    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut v: Vec<String> = self.cmd(&["KEYS", pattern]).await;
        v.sort();
        v
    }

    pub async fn exists(&self, key: &str) -> bool {
        self.cmd::<i64>(&["EXISTS", key]).await == 1
    }

    pub async fn pttl(&self, key: &str) -> i64 {
        self.cmd(&["PTTL", key]).await
    }

    pub async fn key_type(&self, key: &str) -> String {
        let v: redis::Value = self.cmd(&["TYPE", key]).await;
        match v {
            redis::Value::SimpleString(s) => s,
            redis::Value::Okay => "ok".into(),
            other => format!("{other:?}"),
        }
    }

    /// Every key with every byte string stored under it (hash fields and
    /// values, string values, set members), for scanning for secrets.
    pub async fn dump(&self) -> Vec<(String, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        for key in self.keys("*").await {
            let mut parts = Vec::new();
            match self.key_type(&key).await.as_str() {
                "hash" => {
                    let all: Vec<Vec<u8>> = self.cmd(&["HGETALL", &key]).await;
                    parts.extend(all);
                }
                "string" => {
                    let v: Vec<u8> = self.cmd(&["GET", &key]).await;
                    parts.push(v);
                }
                "set" => {
                    let v: Vec<Vec<u8>> = self.cmd(&["SMEMBERS", &key]).await;
                    parts.extend(v);
                }
                "list" => {
                    let v: Vec<Vec<u8>> = self.cmd(&["LRANGE", &key, "0", "-1"]).await;
                    parts.extend(v);
                }
                "zset" => {
                    let v: Vec<Vec<u8>> = self.cmd(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]).await;
                    parts.extend(v);
                }
                other => panic!("unexpected redis type {other} for {key}"),
            }
            out.push((key, parts));
        }
        out
    }

    /// How many times Redis ran `command` (from INFO commandstats).
    pub async fn command_calls(&self, command: &str) -> u64 {
        let info: String = self.cmd(&["INFO", "commandstats"]).await;
        let prefix = format!("cmdstat_{}:", command.to_ascii_lowercase());
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').find_map(|kv| kv.strip_prefix("calls=")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Keyspace notifications from a [`RedisServer`], as they happen: for
/// waiting on a write that no reply shows (e.g. a command Redis runs late).
pub struct KeyEvents {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    task: tokio::task::JoinHandle<()>,
}

impl RedisServer {
    /// Turns keyspace notifications on and subscribes to those of the keys
    /// matching `pattern` (db 0).
    pub async fn key_events(&self, pattern: &str) -> KeyEvents {
        self.config_set("notify-keyspace-events", "KA").await;
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut pubsub = client.get_async_pubsub().await.expect("a pubsub connection");
        pubsub
            .psubscribe(format!("__keyspace@0__:{pattern}"))
            .await
            .expect("PSUBSCRIBE");
        let mut messages = pubsub.into_on_message();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(m) = futures_util::StreamExt::next(&mut messages).await {
                let key = m.get_channel_name().trim_start_matches("__keyspace@0__:").to_string();
                let event: String = m.get_payload().unwrap_or_default();
                if tx.send((key, event)).is_err() {
                    return;
                }
            }
        });
        KeyEvents { rx, task }
    }
}

impl KeyEvents {
    /// Waits for the next `event` on any subscribed key; the key. Panics
    /// after [`PATIENCE`].
    pub async fn next_event(&mut self, event: &str) -> String {
        let found = tokio::time::timeout(PATIENCE, async {
            while let Some((k, e)) = self.rx.recv().await {
                if e == event {
                    return Some(k);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(key)) => key,
            _ => panic!("no `{event}` within {PATIENCE:?}"),
        }
    }
}

impl Drop for KeyEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        kill_child(&self.child);
    }
}

/// The one `redis-server` command line of the tests (single servers and
/// the nodes of every topology): `port` on 127.0.0.1, nothing persisted,
/// files in `dir`.
pub fn redis_server(port: u16, dir: &std::path::Path) -> Command {
    let mut c = Command::new("redis-server");
    c.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir);
    c
}

fn spawn_redis(port: u16, dir: &std::path::Path) -> Result<Child, String> {
    redis_server(port, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "redis-server is not installed (not found on PATH); install it with `apt-get install -y redis-server`"
                    .to_string()
            } else {
                format!("cannot run redis-server: {e}")
            }
        })
}

fn kill_child(child: &Mutex<Option<Child>>) {
    let taken = child.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut c) = taken {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Waits until the server on `port` answers PING (or its process exits).
fn wait_ready(port: u16, child: &Mutex<Option<Child>>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(c) = child.lock().unwrap().as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(format!("redis-server on port {port} exited: {status}"));
            }
        }
        if ping(port) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("redis-server on port {port} did not answer PING"));
        }
        std::thread::sleep(Duration::from_millis(10)); // the polling interval
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

// ---------------------------------------------------------------------------
// Backend
// ---------------------------------------------------------------------------

/// What a programmed backend route answers.
#[derive(Clone, Default)]
pub enum BodySpec {
    /// The default handler's JSON.
    #[default]
    Default,
    /// These bytes, with a Content-Length.
    Fixed(Bytes),
    /// These chunks, chunked (no Content-Length).
    Chunked(Vec<Bytes>),
    /// `len` pattern bytes generated on the fly; `chunked` leaves out the
    /// Content-Length.
    #[allow(dead_code)] // only tests/streaming.rs sends bodies this large
    Generated { len: u64, chunked: bool },
    /// Sends `sent`, then breaks the connection; `declared` is the
    /// Content-Length claimed (None: chunked).
    Truncated { sent: Bytes, declared: Option<u64> },
}

/// A programmed answer for one route.
#[derive(Clone, Default)]
pub struct Reply {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: BodySpec,
    /// Wait this long before sending the response head.
    pub delay: Option<Duration>,
    /// Hold the response head until the gate opens.
    pub gate: Option<Gate>,
}

/// Holds back a backend's answers until the test opens it: an answer sent
/// when the test says so, not after a guessed time.
#[derive(Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Gate {
    pub fn closed() -> Gate {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    /// Lets every held answer (and every later one) go.
    pub fn open(&self) {
        self.0.close();
    }

    async fn pass(&self) {
        // A closed semaphore fails every acquire at once: the gate is open.
        let _ = self.0.acquire().await;
    }
}

impl Reply {
    pub fn new() -> Reply {
        Reply::default()
    }
    pub fn status(mut self, s: u16) -> Reply {
        self.status = Some(s);
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn body(mut self, b: impl Into<Bytes>) -> Reply {
        self.body = BodySpec::Fixed(b.into());
        self
    }
    pub fn chunked<B: Into<Bytes>>(mut self, chunks: impl IntoIterator<Item = B>) -> Reply {
        self.body = BodySpec::Chunked(chunks.into_iter().map(Into::into).collect());
        self
    }
    #[allow(dead_code)] // only tests/streaming.rs sends bodies this large
    pub fn generated(mut self, len: u64, chunked: bool) -> Reply {
        self.body = BodySpec::Generated { len, chunked };
        self
    }
    pub fn truncated(mut self, sent: impl Into<Bytes>, declared: Option<u64>) -> Reply {
        self.body = BodySpec::Truncated {
            sent: sent.into(),
            declared,
        };
        self
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = Some(d);
        self
    }
    pub fn gate(mut self, gate: &Gate) -> Reply {
        self.gate = Some(gate.clone());
        self
    }
}

#[derive(Default)]
struct BackendState {
    /// (method or None for any, exact path) -> reply.
    routes: Mutex<HashMap<(Option<String>, String), Reply>>,
    counts: Mutex<HashMap<(String, String), u64>>,
    total: AtomicU64,
    last_headers: Mutex<HashMap<String, HeaderMap>>,
    last_uri: Mutex<HashMap<String, String>>,
    body_sizes: Mutex<HashMap<String, Vec<u64>>>,
    versions: Mutex<HashMap<String, u64>>,
    serial: AtomicU64,
    hide_caller: AtomicBool,
    /// Requests being handled now, and the most at once so far.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// When each request arrived, in order.
    arrivals: Mutex<Vec<Instant>>,
}

/// Counts a request in flight until dropped (the handler's end).
struct InFlight<'a>(&'a BackendState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a BackendState) -> InFlight<'a> {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        state.arrivals.lock().unwrap().push(Instant::now());
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The in-process backend. The default handler answers every path:
/// GET/HEAD (and anything not a write) with JSON
/// `{"id", "path", "query", "version", "caller", "cookie", "tenant", "serial", "method"}`
/// (`id` is the last segment of `/api/v1/tasks/{id}`, `version` a per-path
/// counter, `caller` the Authorization value, `tenant` the X-Tenant value,
/// `serial` counts every answer); the body is made when the request
/// arrives, before any programmed delay;
/// POST/PUT/PATCH/DELETE bump the path's version and answer 200
/// `{"path", "version", "method", "received"}`.
pub struct Backend {
    pub addr: SocketAddr,
    state: Arc<BackendState>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState::default());
        let task = tokio::spawn(serve_http1(listener, state.clone(), backend_handle));
        Backend {
            addr,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listener and every connection: the port refuses from now on.
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    /// Programs `method path` (exact path, no query).
    pub fn on(&self, method: &str, path: &str, reply: Reply) {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert((Some(method.to_ascii_uppercase()), path.to_string()), reply);
    }

    /// Programs every method of `path`.
    pub fn on_path(&self, path: &str, reply: Reply) {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert((None, path.to_string()), reply);
    }

    /// Back to the default handler for `path` (every method).
    pub fn reset(&self, path: &str) {
        self.state.routes.lock().unwrap().retain(|(_, p), _| p != path);
    }

    /// Echo a digest of the Authorization value instead of the value itself.
    pub fn hide_caller(&self, hide: bool) {
        self.state.hide_caller.store(hide, Ordering::Relaxed);
    }

    /// Requests received for `method path` (path as received, no query).
    pub fn count(&self, method: &str, path: &str) -> u64 {
        *self
            .state
            .counts
            .lock()
            .unwrap()
            .get(&(method.to_ascii_uppercase(), path.to_string()))
            .unwrap_or(&0)
    }

    /// Requests received for `path`, any method.
    pub fn count_path(&self, path: &str) -> u64 {
        self.state
            .counts
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, p), _)| p == path)
            .map(|(_, n)| *n)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.state.total.load(Ordering::SeqCst)
    }

    /// The headers of the last request for `path`.
    pub fn last_headers(&self, path: &str) -> Option<HeaderMap> {
        self.state.last_headers.lock().unwrap().get(path).cloned()
    }

    /// The request target (path and query) of the last request for `path`.
    pub fn last_uri(&self, path: &str) -> Option<String> {
        self.state.last_uri.lock().unwrap().get(path).cloned()
    }

    /// Body sizes of the requests for `path` whose body was read completely.
    pub fn body_sizes(&self, path: &str) -> Vec<u64> {
        self.state
            .body_sizes
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// The most requests the backend was handling at once (a request
    /// counts from its arrival until its response head is ready).
    pub fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// When each request arrived, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// The current version of `path` (1 + number of writes).
    pub fn version(&self, path: &str) -> u64 {
        1 + self.state.versions.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(t) = self.task.get_mut().unwrap().take() {
            t.abort();
        }
    }
}

/// Serves HTTP/1.1 on `listener`, each request answered by `handle` with
/// `state`: the accept loop of every in-process test backend. Dropping this
/// future (abort) drops its set of connections, which aborts them all.
pub async fn serve_http1<S, H, Fut, B>(listener: tokio::net::TcpListener, state: Arc<S>, handle: H)
where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        conns.spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while conns.try_join_next().is_some() {}
    }
}

fn digest(s: &str) -> String {
    // FNV-1a: a stable tag that differs per caller but is not the value.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("caller-{h:016x}")
}

async fn backend_handle(state: Arc<BackendState>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let _in_flight = InFlight::enter(&state);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let query = req.uri().query().map(str::to_string);
    *state
        .counts
        .lock()
        .unwrap()
        .entry((method.as_str().to_string(), path.clone()))
        .or_insert(0) += 1;
    state.total.fetch_add(1, Ordering::SeqCst);
    state
        .last_headers
        .lock()
        .unwrap()
        .insert(path.clone(), req.headers().clone());
    state.last_uri.lock().unwrap().insert(path.clone(), target);
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let caller = header("authorization");
    let cookie = header("cookie");
    let tenant = header("x-tenant");

    // Read (and count) the whole request body without keeping it.
    let mut body = req.into_body();
    let mut received = 0u64;
    let mut body_ok = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    received += d.len() as u64;
                }
            }
            Err(_) => {
                body_ok = false;
                break;
            }
        }
    }
    if body_ok {
        state
            .body_sizes
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default()
            .push(received);
    }

    let reply = {
        let routes = state.routes.lock().unwrap();
        routes
            .get(&(Some(method.as_str().to_string()), path.clone()))
            .or_else(|| routes.get(&(None, path.clone())))
            .cloned()
            .unwrap_or_default()
    };
    let is_write = matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let serial = state.serial.fetch_add(1, Ordering::SeqCst) + 1;
    let default_json = || {
        if is_write {
            let mut versions = state.versions.lock().unwrap();
            let v = versions.entry(path.clone()).or_insert(0);
            *v += 1;
            serde_json::json!({
                "path": path,
                "version": *v + 1,
                "method": method.as_str(),
                "received": received,
                "serial": serial,
            })
        } else {
            let version = 1 + state.versions.lock().unwrap().get(&path).copied().unwrap_or(0);
            let id = path.strip_prefix("/api/v1/tasks/").map(str::to_string);
            let caller = if state.hide_caller.load(Ordering::Relaxed) && !caller.is_empty() {
                digest(&caller)
            } else {
                caller.clone()
            };
            let cookie = if state.hide_caller.load(Ordering::Relaxed) && !cookie.is_empty() {
                digest(&cookie)
            } else {
                cookie.clone()
            };
            serde_json::json!({
                "id": id,
                "path": path,
                "query": query,
                "version": version,
                "caller": caller,
                "cookie": cookie,
                "tenant": tenant,
                "serial": serial,
                "method": method.as_str(),
            })
        }
    };
    // The answer is what the backend held when the request arrived (and a
    // write takes effect on arrival); a programmed delay only holds it back.
    let json = match reply.body {
        BodySpec::Default => Some(default_json()),
        BodySpec::Fixed(_) if is_write => Some(default_json()),
        _ => None,
    };
    if let Some(d) = reply.delay {
        // A slow backend, as programmed.
        tokio::time::sleep(d).await;
    }
    if let Some(g) = &reply.gate {
        g.pass().await;
    }

    let mut builder = Response::builder().status(reply.status.unwrap_or(200));
    for (n, v) in &reply.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    let body: Body = match reply.body {
        BodySpec::Default => {
            let bytes = Bytes::from(json.expect("default body").to_string());
            builder = builder
                .header("content-type", "application/json")
                .header("content-length", bytes.len());
            full(bytes)
        }
        BodySpec::Fixed(b) => {
            builder = builder.header("content-length", b.len());
            full(b)
        }
        BodySpec::Chunked(chunks) => FramesBody::new(chunks.into_iter().map(Ok)).boxed(),
        BodySpec::Generated { len, chunked } => {
            if !chunked {
                builder = builder.header("content-length", len);
            }
            GenBody::new(len, !chunked).boxed()
        }
        BodySpec::Truncated { sent, declared } => {
            if let Some(n) = declared {
                builder = builder.header("content-length", n);
            }
            TruncBody {
                sent: Some(sent),
                pause: None,
            }
            .boxed()
        }
    };
    Ok(builder.body(body).expect("backend response"))
}

// ---------------------------------------------------------------------------
// Proxy
// ---------------------------------------------------------------------------

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A private Redis with the in-process tier in front of it (the tier is
    /// on by default; a test of Redis alone adds `[tier] enabled = false`
    /// and says so).
    Redis,
    /// The in-process memory store.
    Memory,
}

/// The `[store]` (and `[redis]`) sections for a store kind; `{redis}` is
/// filled in later.
pub fn store_section(kind: Kind) -> &'static str {
    match kind {
        Kind::Redis => "[store]\nkind = \"redis\"\ntimeout_ms = 100\n\n[redis]\nurl = \"{redis}\"\n",
        Kind::Memory => "[store]\nkind = \"memory\"\n",
    }
}

/// `[backend]` and the store, for tests that add their own rules.
pub const HEAD: &str = "[backend]\nurl = \"{backend}\"\ntimeout_ms = 5000\n\n{store}\n";

/// The rules of the documented `proxy.toml`.
pub const STD_RULES: &str = cachegate::demo::TASK_RULES;

/// `HEAD` + `STD_RULES`.
pub fn std_config() -> String {
    format!("{HEAD}\n{STD_RULES}")
}

/// Fills in `{store}`, then `{backend}` and `{redis}`.
pub fn render(template: &str, kind: Kind, backend: &str, redis: Option<&str>) -> String {
    let text = template
        .replace("{store}", store_section(kind))
        .replace("{backend}", backend);
    match redis {
        Some(r) => text.replace("{redis}", r),
        None => {
            assert!(
                !text.contains("{redis}"),
                "config needs a redis URL but there is no RedisServer"
            );
            text
        }
    }
}

/// cachegate, in-process: the one way the tests start it. The config text
/// is read with [`admin::test_env`] as the environment, and a reload
/// (`POST {prefix}/reload`) reads the same text (or file) again.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The admin listener's address, when `[admin] listen` gives one.
    pub admin_addr: Option<SocketAddr>,
    running: Option<Running>,
}

impl Proxy {
    /// Starts cachegate from complete config text (placeholders already
    /// rendered) on 127.0.0.1:0.
    pub async fn start(text: &str) -> Proxy {
        let text = text.to_string();
        Proxy::start_loading(Box::new(move || {
            let mut config = Config::from_toml(&text, "test.toml", &admin::test_env, &Overrides::default())?;
            // The access log (on by default) would flood the test output;
            // the tests of the log itself name an [access_log] section.
            if !text.contains("[access_log]") {
                config.access_log.enabled = false;
            }
            Ok(config)
        }))
        .await
    }

    /// As [`Proxy::start`], with `env` standing for the process environment.
    pub async fn start_with_env(text: &str, env: fn(&str) -> Option<String>) -> Proxy {
        let text = text.to_string();
        Proxy::start_loading(Box::new(move || {
            let mut config = Config::from_toml(&text, "test.toml", &env, &Overrides::default())?;
            config.access_log.enabled = false;
            Ok(config)
        }))
        .await
    }

    /// Starts cachegate from a config file (with the process environment),
    /// as the binary does; a reload reads the file again.
    pub async fn start_file(path: &std::path::Path) -> Proxy {
        let path = path.to_path_buf();
        Proxy::start_loading(Box::new(move || Config::load(&path, &Overrides::default()))).await
    }

    async fn start_loading(load: Loader) -> Proxy {
        let config = load().unwrap_or_else(|e| panic!("the config does not load: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let running = server::start_on(config, listener).await.expect("start the proxy");
        running.live().set_loader(load);
        let store = running.gateway().store().clone();
        if store.kind() == "redis" && store.is_up() {
            // The Redis store learns the shared scope secret in the
            // background; until then credentialed requests bypass.
            eventually("the store learns the scope secret", PATIENCE, || async {
                store.scope_secret().is_some()
            })
            .await;
        }
        Proxy {
            addr: running.addr,
            admin_addr: running.admin_addr,
            running: Some(running),
        }
    }

    /// A client for the main listener.
    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    /// The running server (its reload machinery, for the reload tests).
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("the proxy runs")
    }

    /// Renders `template` and starts.
    pub async fn start_with(template: &str, kind: Kind, backend: &Backend, redis: Option<&RedisServer>) -> Proxy {
        let redis_url = redis.map(|r| r.url());
        Proxy::start(&render(template, kind, &backend.url(), redis_url.as_deref())).await
    }

    pub fn gateway(&self) -> Arc<Gateway> {
        self.running.as_ref().unwrap().gateway()
    }

    /// The store field a request with these headers uses under a
    /// credential-scoped rule.
    pub fn scope_of(&self, headers: &[(&str, &str)]) -> String {
        let gw = self.gateway();
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let secret = gw.store().scope_secret();
        scope_field(
            Scope::Credential,
            &map,
            &gw.config().cache.credential_headers,
            secret.as_deref(),
        )
        .expect("scope secret is known")
    }

    /// Whether the store holds an entry under `key` / `field` (any store).
    pub async fn stored(&self, key: &str, field: &str) -> bool {
        match self.gateway().store().lookup(key, field).await {
            Ok(l) => l.entry.is_some(),
            Err(e) => panic!("store lookup {key}/{field} failed: {e}"),
        }
    }

    /// Shuts down within `grace` (pending purges included); whether all
    /// of it finished.
    pub async fn shutdown_within(mut self, grace: Duration) -> bool {
        match self.running.take() {
            Some(r) => r.shutdown(grace).await,
            None => true,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stopper().send(true);
        }
    }
}

// ---------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------

/// A `/metrics` body parsed with `prometheus-parse`.
pub struct Scrape {
    pub text: String,
    pub parsed: prometheus_parse::Scrape,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("prometheus-parse reads /metrics");
        Scrape {
            text: text.to_string(),
            parsed,
        }
    }

    /// Samples named `name` whose labels include every pair in `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&prometheus_parse::Sample> {
        self.parsed
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect()
    }

    /// The single scalar sample (counter, gauge or untyped) named `name`
    /// with these labels.
    pub fn scalar(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.find(name, labels);
        assert_eq!(
            found.len(),
            1,
            "one sample {name}{labels:?} expected, got {found:?}\n{}",
            self.text
        );
        match &found[0].value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{name}{labels:?} is not a scalar: {other:?}"),
        }
    }

    /// The sum of the samples named `name` whose labels include every pair
    /// in `labels` (0 when there are none: a counter not yet touched).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .iter()
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{name}{labels:?} is not a scalar: {other:?}"),
            })
            .sum()
    }

    /// The single sample named `name` with these labels, if there is one.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        (!self.find(name, labels).is_empty()).then(|| self.scalar(name, labels))
    }

    /// `cachegate_requests_total` for a rule, by cache status (summed over
    /// status classes).
    pub fn requests(&self, rule: &str) -> HashMap<String, f64> {
        ["hit", "miss", "stale", "bypass"]
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    self.sum("cachegate_requests_total", &[("rule", rule), ("cache_status", s)]),
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// A whole response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("header is text"))
    }

    pub fn x_cache(&self) -> Option<&str> {
        self.header("x-cache")
    }

    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The backend's serial number of this answer.
    pub fn serial(&self) -> u64 {
        self.json()["serial"].as_u64().expect("serial in body")
    }

    pub fn version(&self) -> u64 {
        self.json()["version"].as_u64().expect("version in body")
    }

    pub fn caller(&self) -> String {
        self.json()["caller"].as_str().expect("caller in body").to_string()
    }
}

/// An HTTP/1 client for the proxy.
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, Body>,
    base: String,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    pub fn host(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Sends a request; the response head and its still-streaming body.
    pub async fn open(
        &self,
        method: &str,
        path: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Body,
    ) -> Result<Response<Incoming>, String> {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("{}{}", self.base, path))
            .body(body)
            .map_err(|e| e.to_string())?;
        for (n, v) in headers {
            req.headers_mut().append(n, v);
        }
        self.inner.request(req).await.map_err(|e| format!("{e:?}"))
    }

    /// Sends a request and reads the whole body; `Err` if anything fails
    /// (including a body that breaks off).
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Body,
    ) -> Result<Resp, String> {
        let resp = self.open(method, path, headers, body).await?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body of {method} {path} broke off: {e:?}"))?
            .to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Resp {
        self.try_send(method, path, hv(headers), body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, &[], empty()).await
    }

    pub async fn get_h(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("GET", path, headers, empty()).await
    }

    pub async fn head(&self, path: &str) -> Resp {
        self.send("HEAD", path, &[], empty()).await
    }

    pub async fn head_h(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("HEAD", path, headers, empty()).await
    }

    pub async fn put(&self, path: &str) -> Resp {
        self.send("PUT", path, &[], full(r#"{"title":"new"}"#)).await
    }

    pub async fn method(&self, method: &str, path: &str) -> Resp {
        self.send(method, path, &[], empty()).await
    }

    /// `GET /metrics` (no token), parsed.
    pub async fn scrape(&self) -> Scrape {
        let r = self.get("/metrics").await;
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        Scrape::parse(&r.text())
    }

    /// GETs `path` until an answer is a HIT (the MISS that stores comes
    /// first, and a fill may land after its response).
    pub async fn until_hit(&self, path: &str, headers: &[(&str, &str)]) {
        eventually(&format!("GET {path} to be a HIT"), PATIENCE, || async {
            let r = self.get_h(path, headers).await;
            assert_eq!(r.status, 200, "GET {path}: {}", r.text());
            r.x_cache() == Some("HIT")
        })
        .await;
    }

    /// GETs `path` until an answer is not a fresh hit; returns it.
    pub async fn first_non_hit(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        eventually_some(
            &format!("GET {path} to be other than a fresh hit"),
            PATIENCE,
            || async {
                let r = self.get_h(path, headers).await;
                (r.x_cache() != Some("HIT")).then_some(r)
            },
        )
        .await
    }
}

/// A child process (the cachegate binary) killed when the test ends, even
/// when it fails half-way.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Steady GETs from a few workers until `finish`: the tests that change
/// the world under load (failover, reload) count what succeeded and keep
/// every failure (a transport error or a status other than 200).
pub struct SteadyLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl SteadyLoad {
    /// `path(worker, n)` names the n-th request of a worker; `pause` is the
    /// wait between one answer and the next request.
    pub fn start<P>(addr: SocketAddr, workers: usize, pause: Duration, path: P) -> SteadyLoad
    where
        P: Fn(usize, u64) -> String + Send + Sync + 'static,
    {
        let path = Arc::new(path);
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let workers = (0..workers)
            .map(|w| {
                let (stop, ok, path) = (stop.clone(), ok.clone(), path.clone());
                tokio::spawn(async move {
                    let client = Client::new(addr);
                    let mut failures = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let p = path(w, n);
                        match client.try_send("GET", &p, Vec::new(), empty()).await {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => failures.push(format!("{p}: {}", r.status)),
                            Err(e) => failures.push(format!("{p}: {e}")),
                        }
                        if !pause.is_zero() {
                            // The load's pace, as the caller asked.
                            tokio::time::sleep(pause).await;
                        }
                    }
                    failures
                })
            })
            .collect();
        SteadyLoad { stop, ok, workers }
    }

    /// Requests answered 200 so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until `more` requests beyond those already counted
    /// have succeeded.
    pub async fn run_for(&self, more: u64, what: &str) {
        let target = self.ok() + more;
        eventually(what, Duration::from_secs(30), || async { self.ok() >= target }).await;
    }

    /// Stops the workers: the successes and every failure.
    pub async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for w in self.workers {
            failures.extend(w.await.expect("load worker"));
        }
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// Header pairs as typed names and values.
pub fn hv(headers: &[(&str, &str)]) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// World
// ---------------------------------------------------------------------------

/// A backend, a store (a private Redis for `Kind::Redis`), cachegate in
/// front, and a client.
pub struct World {
    pub backend: Backend,
    pub redis: Option<RedisServer>,
    pub proxy: Proxy,
    pub client: Client,
}

impl World {
    /// Starts everything from a config template (see [`render`]).
    pub async fn start(kind: Kind, template: &str) -> World {
        let backend = Backend::start().await;
        let redis = (kind == Kind::Redis).then(RedisServer::start);
        let proxy = Proxy::start_with(template, kind, &backend, redis.as_ref()).await;
        let client = Client::new(proxy.addr);
        World {
            backend,
            redis,
            proxy,
            client,
        }
    }

    /// The documented rules.
    pub async fn std(kind: Kind) -> World {
        World::start(kind, &std_config()).await
    }

    pub fn redis(&self) -> &RedisServer {
        self.redis.as_ref().expect("this world has no redis")
    }
}

/// Declares one `#[tokio::test]` per store for each `async fn name(kind: Kind)`:
/// `redis_with_tier::name` (Redis with the in-process tier, as deployed by
/// default) and `memory_store::name`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod redis_with_tier {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Kind::Redis).await
                }
            )*
        }
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Kind::Memory).await
                }
            )*
        }
    };
}

// ---------------------------------------------------------------------------
// Raw TCP: exact bytes in, exact bytes out
// ---------------------------------------------------------------------------

/// A plain TCP connection for sending bytes no HTTP client would send
/// (smuggling shapes, slow heads) and reading back exactly what came.
pub struct RawConn {
    stream: tokio::net::TcpStream,
    /// Everything read so far.
    pub received: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        RawConn {
            stream,
            received: Vec::new(),
        }
    }

    /// Writes `bytes`; an error means the peer has closed (or reset) the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads until the peer closes the connection (true) or `within` has
    /// passed (false). A reset counts as closed.
    pub async fn read_until_closed(&mut self, within: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.received.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Reads until `received` holds at least `count` complete responses, the
    /// peer closes, or `within` passes.
    pub async fn read_responses(&mut self, count: usize, within: Duration) -> Vec<RawResponse> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let parsed = parse_responses(&self.received, false);
            if parsed.len() >= count {
                return parsed;
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return parse_responses(&self.received, true),
                Ok(Ok(n)) => self.received.extend_from_slice(&buf[..n]),
            }
        }
    }
}

/// What one raw exchange got back.
#[derive(Debug)]
pub struct RawReply {
    pub bytes: Vec<u8>,
    /// Whether the server closed the connection within the wait.
    pub closed: bool,
}

impl RawReply {
    /// The complete responses in the bytes, in order (a response without
    /// framing runs to the close).
    pub fn responses(&self) -> Vec<RawResponse> {
        parse_responses(&self.bytes, self.closed)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// One HTTP/1.x response as read off the wire (body de-chunked).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The head, status line included, lines joined with `\n`.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Splits bytes into responses; an incomplete trailing one is dropped,
/// unless `closed` and it has no framing (then it ran to the close).
pub fn parse_responses(bytes: &[u8], closed: bool) -> Vec<RawResponse> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(end) = find(&bytes[pos..], b"\r\n\r\n").map(|i| pos + i) else {
            break;
        };
        let head = String::from_utf8_lossy(&bytes[pos..end]).replace("\r\n", "\n");
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut r = RawResponse {
            status,
            head,
            body: Vec::new(),
        };
        let start = end + 4;
        let chunked = r
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if let Some(len) = r.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if bytes.len() < start + len {
                break;
            }
            r.body = bytes[start..start + len].to_vec();
            pos = start + len;
        } else if chunked {
            let mut p = start;
            let mut complete = false;
            while let Some(line_end) = find(&bytes[p..], b"\r\n").map(|i| p + i) {
                let size_text = String::from_utf8_lossy(&bytes[p..line_end]);
                let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else {
                    break;
                };
                let data = line_end + 2;
                if size == 0 {
                    // No trailers expected: the final CRLF.
                    if bytes.len() >= data + 2 {
                        p = data + 2;
                        complete = true;
                    }
                    break;
                }
                if bytes.len() < data + size + 2 {
                    break;
                }
                r.body.extend_from_slice(&bytes[data..data + size]);
                p = data + size + 2;
            }
            if !complete {
                break;
            }
            pos = p;
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            pos = start;
        } else {
            if !closed {
                break;
            }
            r.body = bytes[start..].to_vec();
            pos = bytes.len();
        }
        out.push(r);
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `bytes` on a fresh connection and reads until the server closes
/// it or `within` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], within: Duration) -> RawReply {
    let mut conn = RawConn::connect(addr).await;
    if conn.send(bytes).await.is_err() {
        // Closed while we were still writing: whatever came back counts.
        let closed = conn.read_until_closed(within).await;
        return RawReply {
            bytes: conn.received,
            closed,
        };
    }
    let closed = conn.read_until_closed(within).await;
    RawReply {
        bytes: conn.received,
        closed,
    }
}

// ---------------------------------------------------------------------------
// Backends that misbehave at the TCP level
// ---------------------------------------------------------------------------

/// A backend that answers every request with exactly the given bytes and
/// then ends the connection: with a FIN, or (`reset`) with an RST after a
/// short pause (so the bytes are read before the reset). For answers no
/// well-behaved HTTP server would send, e.g. fewer body bytes than the
/// `Content-Length` it declares.
pub struct RawBackend {
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    pub async fn start(reply: impl Into<Bytes>, reset: bool) -> RawBackend {
        let reply: Bytes = reply.into();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw backend");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let requests = requests.clone();
            async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (reply, requests) = (reply.clone(), requests.clone());
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while find(&head, b"\r\n\r\n").is_none() {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        requests.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.write_all(&reply).await;
                        let _ = stream.flush().await;
                        if reset {
                            // The misbehaviour itself: an RST a moment after
                            // the bytes (so they are read first).
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            let _ = stream.set_zero_linger();
                        } else {
                            let _ = stream.shutdown().await;
                        }
                    });
                }
            }
        });
        RawBackend { addr, requests, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests whose head arrived.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port where TCP connects hang: a listener that never accepts, with its
/// accept queue filled, so the kernel drops further SYNs. A backend "down"
/// in the way a dead host or a dropped route is, rather than refusing.
pub struct Blackhole {
    _listener: tokio::net::TcpListener,
    _held: Vec<tokio::net::TcpStream>,
}

impl Blackhole {
    /// On `port` (e.g. the one a stopped [`Backend`] used).
    pub async fn on_port(port: u16) -> Blackhole {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .unwrap_or_else(|e| panic!("bind blackhole on port {port}: {e}"));
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..64 {
            match tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(s)) => held.push(s),
                Ok(Err(e)) => panic!("filling the blackhole's accept queue: {e}"),
                // A connect hangs: the queue is full.
                Err(_) => {
                    return Blackhole {
                        _listener: listener,
                        _held: held,
                    }
                }
            }
        }
        panic!("connects to {addr} never started to hang");
    }
}

// ---------------------------------------------------------------------------
// More Redis helpers
// ---------------------------------------------------------------------------

impl RedisServer {
    /// Runs one command with binary arguments on a fresh connection.
    pub async fn cmd_bytes<T: redis::FromRedisValue>(&self, args: &[&[u8]]) -> T {
        let mut conn = self.conn().await;
        let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("command name is text"));
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn).await.unwrap_or_else(|e| {
            let shown: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            panic!("redis {shown:?}: {e}")
        })
    }

    /// `CONFIG SET name value` (e.g. `maxmemory`, `maxmemory-policy`).
    pub async fn config_set(&self, name: &str, value: &str) {
        let _: () = self.cmd(&["CONFIG", "SET", name, value]).await;
    }

    /// The raw bytes of one hash field, if present.
    pub async fn hget_bytes(&self, key: &str, field: &str) -> Option<Vec<u8>> {
        self.cmd(&["HGET", key, field]).await
    }
}
