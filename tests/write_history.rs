//! A randomized history check of read-your-writes through the proxy: 32
//! concurrent clients GET and PUT (about 4:1) 8 ids, 20,000+ operations in
//! all, against a backend whose per-id version grows by one on every PUT and
//! whose GET answers carry the version as it was when the backend *started*
//! handling the GET (then wait 0-3 ms, so that fills race with writes).
//!
//! Each operation's start and end instants are recorded (and, for a PUT,
//! the version it produced). The checker asserts: every GET that started
//! after some PUT's response had arrived returns a version at least that
//! PUT's. A cache that stored a body fetched before a write's purge (a fill
//! not refused by its guard), shared such a body with a waiter, or purged
//! after answering the write would break it.
//!
//! Runs: one instance on Redis; one instance on the memory store; two
//! instances sharing one Redis, with the clients spread over both.

mod common;

use bytes::Bytes;
use common::{Client, Proxy, RedisServer};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::Rng;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IDS: usize = 8;
const CLIENTS: usize = 32;
const MIN_OPS: usize = 20_000;
/// One operation in this many is a PUT (about 4 GETs to 1 PUT).
const PUT_ONE_IN: u32 = 5;

// ---------------------------------------------------------------------------
// The versioned backend
// ---------------------------------------------------------------------------

/// The backend of this test: `GET /api/v1/tasks/{id}` answers
/// `{"id", "version"}` with the id's version read on arrival, after a random
/// 0-3 ms; `PUT` bumps the version on arrival and answers the new one.
struct VersionedBackend {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    versions: Vec<AtomicU64>,
    gets: AtomicU64,
    puts: AtomicU64,
}

impl VersionedBackend {
    async fn start() -> VersionedBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            versions: (0..IDS).map(|_| AtomicU64::new(0)).collect(),
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
        });
        let task = tokio::spawn({
            let state = state.clone();
            async move {
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
        });
        VersionedBackend { addr, state, task }
    }

    fn url(&self) -> String {
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
    let micros = rand::thread_rng().gen_range(0..=3000u64);
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

// ---------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------

/// The documented task rules. The store timeout is generous: a purge that
/// timed out would be fail-open by design (and a violation here), which is
/// not what this test is about.
/// `tier`: whether the in-process tier runs in front of Redis. It keeps the
/// guarantee for reads on the instance that took the write; across
/// instances it holds only once Redis's invalidation push has arrived (a
/// window the benchmark measures), so the two-instance history runs
/// without it.
fn config(backend: &VersionedBackend, redis: Option<&RedisServer>, tier: bool) -> String {
    let store = match redis {
        Some(r) => format!(
            "[store]\nkind = \"redis\"\ntimeout_ms = 3000\n\n[redis]\nurl = \"{}\"\npool_size = 8\n\n[tier]\nenabled = {tier}\n",
            r.url()
        ),
        None => "[store]\nkind = \"memory\"\n".to_string(),
    };
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
enum Kind {
    Get,
    Put,
}

#[derive(Debug, Clone)]
struct Op {
    client: usize,
    instance: usize,
    id: usize,
    kind: Kind,
    /// Since the run began.
    start: Duration,
    end: Duration,
    /// GET: the version read; PUT: the version it produced.
    version: u64,
    x_cache: String,
}

/// Runs the history: `CLIENTS` clients over `proxies` (client `c` uses
/// proxy `c % proxies.len()`), `MIN_OPS` operations in all.
async fn run_history(proxies: &[&Proxy]) -> (Vec<Op>, Duration) {
    let per_client = MIN_OPS.div_ceil(CLIENTS);
    let began = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let instance = c % proxies.len();
        let client = Client::new(proxies[instance].addr);
        tasks.push(tokio::spawn(async move {
            let mut ops = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let (id, kind) = {
                    let mut rng = rand::thread_rng();
                    let kind = if rng.gen_range(0..PUT_ONE_IN) == 0 {
                        Kind::Put
                    } else {
                        Kind::Get
                    };
                    (rng.gen_range(0..IDS), kind)
                };
                let path = format!("/api/v1/tasks/{id}");
                let start = began.elapsed();
                let resp = match kind {
                    Kind::Get => client.get(&path).await,
                    Kind::Put => client.put(&path).await,
                };
                let end = began.elapsed();
                assert_eq!(resp.status, 200, "{kind:?} {path}: {}", resp.text());
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
struct Violation {
    get: Op,
    put: Op,
}

/// Every GET that started after some PUT on its id had ended must read at
/// least that PUT's version. For each id, PUTs sorted by end with a running
/// maximum of their versions; each GET looks up the PUTs ended before it
/// started.
fn check(ops: &[Op]) -> Vec<Violation> {
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

fn report(label: &str, ops: &[Op], took: Duration, backend: &VersionedBackend, violations: &[Violation]) {
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

async fn history(label: &str, proxies: &[&Proxy], backend: &VersionedBackend) {
    let (ops, took) = run_history(proxies).await;
    assert!(ops.len() >= MIN_OPS);
    let violations = check(&ops);
    report(label, &ops, took, backend, &violations);
    let hits = ops.iter().filter(|o| o.x_cache == "HIT").count();
    assert!(
        hits > 0,
        "[{label}] the cache served no hit: the history proves nothing"
    );
    assert_eq!(
        backend.state.puts.load(Ordering::SeqCst) as usize,
        ops.iter().filter(|o| o.kind == Kind::Put).count(),
        "every PUT reached the backend once"
    );
    assert!(
        violations.is_empty(),
        "[{label}] {} GETs read a version older than a PUT that had already been answered \
         (first: {:?})",
        violations.len(),
        violations.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_redis_store() {
    let backend = VersionedBackend::start().await;
    let redis = RedisServer::start();
    let proxy = Proxy::start(&config(&backend, Some(&redis), true)).await;
    history("one instance, redis", &[&proxy], &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_memory_store() {
    let backend = VersionedBackend::start().await;
    let proxy = Proxy::start(&config(&backend, None, false)).await;
    history("one instance, memory", &[&proxy], &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_one_redis() {
    let backend = VersionedBackend::start().await;
    let redis = RedisServer::start();
    let text = config(&backend, Some(&redis), false);
    let a = Proxy::start(&text).await;
    let b = Proxy::start(&text).await;
    history("two instances, one redis", &[&a, &b], &backend).await;
}

/// The checker itself: a GET after an answered PUT that reads an older
/// version is caught; overlapping operations are not.
#[test]
fn the_checker_catches_a_stale_read() {
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
}
