//! The read-your-writes history harness shared by `write_history.rs` and
//! `fleet_history.rs`: a versioned backend, clients that record each
//! operation's start and end, and the checker.
//!
//! The backend's `GET /api/v1/tasks/{id}` answers the id's version as it was
//! when the backend *started* handling the GET, then waits 0-5 ms (so fills
//! race with writes); `PUT` bumps the version on arrival and answers it.
//! The checker asserts: every GET that started after some PUT's response had
//! arrived returns a version at least that PUT's.

use crate::common::Client;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rand::Rng;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Hot ids.
pub const IDS: usize = 16;
/// One operation in this many is a PUT (about 4 GETs to 1 PUT).
pub const PUT_ONE_IN: u32 = 5;

// ---------------------------------------------------------------------------
// The versioned backend
// ---------------------------------------------------------------------------

pub struct VersionedBackend {
    addr: SocketAddr,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

pub struct State {
    versions: Vec<AtomicU64>,
    pub gets: AtomicU64,
    pub puts: AtomicU64,
}

impl VersionedBackend {
    pub async fn start() -> VersionedBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            versions: (0..IDS).map(|_| AtomicU64::new(0)).collect(),
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
        });
        let task = tokio::spawn(crate::common::serve_http1(listener, state.clone(), handle));
        VersionedBackend { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for VersionedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json(status: u16, body: serde_json::Value) -> Response<Full<Bytes>> {
    let bytes = Bytes::from(body.to_string());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", bytes.len())
        .body(Full::new(bytes))
        .unwrap()
}

async fn jitter() {
    let micros = rand::thread_rng().gen_range(0..=5000u64);
    // Creates the condition: fills race with writes.
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let id = req
        .uri()
        .path()
        .strip_prefix("/api/v1/tasks/")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|id| *id < IDS);
    // Read the request body to the end before answering.
    let _ = req.into_body().collect().await;
    let Some(id) = id else {
        return Ok(json(404, serde_json::json!({"error": "not_found"})));
    };
    match method.as_str() {
        "GET" => {
            state.gets.fetch_add(1, Ordering::SeqCst);
            // The answer is the version when handling started...
            let version = state.versions[id].load(Ordering::SeqCst);
            // ...and reaches the proxy a little later, so writes overtake it.
            jitter().await;
            Ok(json(200, serde_json::json!({"id": id, "version": version})))
        }
        "PUT" => {
            state.puts.fetch_add(1, Ordering::SeqCst);
            let version = state.versions[id].fetch_add(1, Ordering::SeqCst) + 1;
            jitter().await;
            Ok(json(200, serde_json::json!({"id": id, "version": version})))
        }
        _ => Ok(json(405, serde_json::json!({"error": "method"}))),
    }
}

/// The task rules of the documented config, with `store` as the store
/// sections (and anything else to add).
pub fn config(backend: &VersionedBackend, store: &str) -> String {
    format!(
        r#"
[backend]
url = "{backend}"
timeout_ms = 10000
pool_idle_per_host = 64

{store}

[[rule]]
name = "task"
methods = ["GET", "HEAD"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{{task_id}}"
ttl = 300
statuses = [200]

[[invalidate]]
name = "task-write"
methods = ["PUT", "PATCH", "DELETE"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{{task_id}}"]
when = "success"
"#,
        backend = backend.url()
    )
}

// ---------------------------------------------------------------------------
// The history
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Get,
    Put,
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub instance: usize,
    pub id: usize,
    pub kind: Kind,
    /// Since the run began.
    pub start: Duration,
    pub end: Duration,
    /// GET: the version read; PUT: the version it produced.
    pub version: u64,
    pub x_cache: String,
}

/// Which instance an operation goes to.
#[derive(Debug, Clone, Copy)]
pub enum Routing {
    /// Client `c` always uses instance `c % n`.
    ByClient,
    /// Each operation picks an instance at random.
    Random,
    /// PUTs through instance 0, GETs through instance 1.
    Split,
}

/// How long a run goes on: at least `min_ops` operations, and for as long
/// as `hold` is set (a fault in progress holds the run open).
pub struct Progress {
    pub ops: AtomicUsize,
    pub hold: AtomicBool,
    pub min_ops: usize,
}

impl Progress {
    pub fn new(min_ops: usize) -> Arc<Progress> {
        Arc::new(Progress {
            ops: AtomicUsize::new(0),
            hold: AtomicBool::new(false),
            min_ops,
        })
    }

    fn more(&self) -> bool {
        self.ops.load(Ordering::SeqCst) < self.min_ops || self.hold.load(Ordering::SeqCst)
    }

    /// Waits until `n` more operations have completed (a guard against a
    /// hang: panics after a minute).
    pub async fn wait_for(&self, n: usize) {
        let target = self.ops.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.ops.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < deadline, "the history stopped making progress");
            tokio::time::sleep(Duration::from_millis(5)).await; // the polling interval
        }
    }
}

/// Runs the history: `clients` clients over the instances at `addrs`.
/// Every answer must be a 200 (fail open: a fault is never a client error).
pub async fn run_history(
    addrs: &[SocketAddr],
    routing: Routing,
    clients: usize,
    progress: Arc<Progress>,
) -> (Vec<Op>, Duration) {
    let began = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let per_instance: Vec<Client> = addrs.iter().map(|a| Client::new(*a)).collect();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut ops = Vec::new();
            while progress.more() {
                let (id, kind, instance) = {
                    let mut rng = rand::thread_rng();
                    let kind = if rng.gen_range(0..PUT_ONE_IN) == 0 {
                        Kind::Put
                    } else {
                        Kind::Get
                    };
                    let instance = match routing {
                        Routing::ByClient => c % per_instance.len(),
                        Routing::Random => rng.gen_range(0..per_instance.len()),
                        Routing::Split => usize::from(kind == Kind::Get),
                    };
                    (rng.gen_range(0..IDS), kind, instance)
                };
                let client = &per_instance[instance];
                let path = format!("/api/v1/tasks/{id}");
                let start = began.elapsed();
                let resp = match kind {
                    Kind::Get => client.get(&path).await,
                    Kind::Put => client.put(&path).await,
                };
                let end = began.elapsed();
                assert_eq!(resp.status, 200, "{kind:?} {path} via {instance}: {}", resp.text());
                let version = resp.json()["version"].as_u64().expect("version in body");
                ops.push(Op {
                    client: c,
                    instance,
                    id,
                    kind,
                    start,
                    end,
                    version,
                    x_cache: resp.x_cache().unwrap_or("").to_string(),
                });
                progress.ops.fetch_add(1, Ordering::SeqCst);
            }
            ops
        }));
    }
    let mut ops = Vec::new();
    for t in tasks {
        ops.extend(t.await.expect("a client panicked"));
    }
    (ops, began.elapsed())
}

/// A GET that started after a PUT's response arrived but read an older
/// version.
#[derive(Debug)]
pub struct Violation {
    pub get: Op,
    pub put: Op,
}

/// Every GET that started after some PUT on its id had ended must read at
/// least that PUT's version. For each id, PUTs sorted by end with a running
/// maximum of their versions; each GET looks up the PUTs ended before it
/// started.
pub fn check(ops: &[Op]) -> Vec<Violation> {
    let mut violations = Vec::new();
    for id in 0..IDS {
        let mut puts: Vec<&Op> = ops.iter().filter(|o| o.id == id && o.kind == Kind::Put).collect();
        puts.sort_by_key(|p| p.end);
        // best[i]: the PUT with the highest version among puts[..=i].
        let mut best: Vec<&Op> = Vec::with_capacity(puts.len());
        for p in &puts {
            let keep = match best.last() {
                Some(b) if b.version >= p.version => *b,
                _ => *p,
            };
            best.push(keep);
        }
        for get in ops.iter().filter(|o| o.id == id && o.kind == Kind::Get) {
            let ended_before = puts.partition_point(|p| p.end < get.start);
            if ended_before == 0 {
                continue;
            }
            let put = best[ended_before - 1];
            if get.version < put.version {
                violations.push(Violation {
                    get: get.clone(),
                    put: put.clone(),
                });
            }
        }
    }
    violations.sort_by_key(|v| v.get.start);
    violations
}

/// GETs that started within `window` after a PUT on their id was answered
/// (on another instance than the GET's, when `other_instance`): the race
/// window of a stale tier.
pub fn reads_right_after_writes(ops: &[Op], window: Duration, other_instance: bool) -> usize {
    let mut n = 0;
    for id in 0..IDS {
        let mut puts: Vec<&Op> = ops.iter().filter(|o| o.id == id && o.kind == Kind::Put).collect();
        puts.sort_by_key(|p| p.end);
        for get in ops.iter().filter(|o| o.id == id && o.kind == Kind::Get) {
            let from = puts.partition_point(|p| p.end + window < get.start);
            let to = puts.partition_point(|p| p.end < get.start);
            if puts[from..to]
                .iter()
                .any(|p| !other_instance || p.instance != get.instance)
            {
                n += 1;
            }
        }
    }
    n
}

pub fn report(label: &str, ops: &[Op], took: Duration, backend: &VersionedBackend, violations: &[Violation]) {
    let gets = ops.iter().filter(|o| o.kind == Kind::Get).count();
    let puts = ops.len() - gets;
    let hits = ops.iter().filter(|o| o.kind == Kind::Get && o.x_cache == "HIT").count();
    let per_instance: Vec<usize> = {
        let n = ops.iter().map(|o| o.instance).max().unwrap_or(0) + 1;
        (0..n).map(|i| ops.iter().filter(|o| o.instance == i).count()).collect()
    };
    eprintln!(
        "[{label}] {} operations ({gets} GET, {puts} PUT; per instance {per_instance:?}) in {took:.2?} \
         ({:.0} ops/s); {hits} hits ({:.1}% of GETs); backend saw {} GETs, {} PUTs; {} violations",
        ops.len(),
        ops.len() as f64 / took.as_secs_f64(),
        100.0 * hits as f64 / gets.max(1) as f64,
        backend.state.gets.load(Ordering::SeqCst),
        backend.state.puts.load(Ordering::SeqCst),
        violations.len()
    );
    for v in violations.iter().take(10) {
        eprintln!(
            "  violation: client {} (instance {}) GET id {} [{:?}..{:?}] read v{} ({}), but client {} \
             (instance {}) PUT v{} had ended at {:?}",
            v.get.client,
            v.get.instance,
            v.get.id,
            v.get.start,
            v.get.end,
            v.get.version,
            v.get.x_cache,
            v.put.client,
            v.put.instance,
            v.put.version,
            v.put.end
        );
    }
}

/// One counter from a cachegate's `/metrics`, summed over its labels (0
/// when absent).
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    Client::new(addr).scrape().await.sum(name, &[])
}

/// The checker itself: a GET after an answered PUT that reads an older
/// version is caught; overlapping operations are not.
pub fn checker_self_test() {
    let op = |kind, start: u64, end: u64, version| Op {
        client: 0,
        instance: 0,
        id: 1,
        kind,
        start: Duration::from_millis(start),
        end: Duration::from_millis(end),
        version,
        x_cache: String::new(),
    };
    // PUT v1 ends at 10; a GET from 11 reads v0: stale.
    let stale = [op(Kind::Put, 0, 10, 1), op(Kind::Get, 11, 12, 0)];
    assert_eq!(check(&stale).len(), 1);
    // A GET overlapping the PUT may read either.
    let overlapping = [op(Kind::Put, 0, 10, 1), op(Kind::Get, 5, 12, 0)];
    assert!(check(&overlapping).is_empty());
    // PUTs ended in another order than their versions: the highest counts.
    let reordered = [
        op(Kind::Put, 0, 10, 2),
        op(Kind::Put, 0, 11, 1),
        op(Kind::Get, 12, 13, 1),
    ];
    assert_eq!(check(&reordered).len(), 1);
    let fine = [
        op(Kind::Put, 0, 10, 2),
        op(Kind::Get, 12, 13, 2),
        op(Kind::Get, 12, 13, 3),
    ];
    assert!(check(&fine).is_empty());
    // The race window: a GET 0.5 ms after a PUT's answer counts, 2 ms does not.
    let near = [
        op(Kind::Put, 0, 10, 1),
        Op {
            start: Duration::from_micros(10_500),
            ..op(Kind::Get, 0, 12, 1)
        },
        op(Kind::Get, 12, 13, 1),
    ];
    assert_eq!(reads_right_after_writes(&near, Duration::from_millis(1), false), 1);
}
