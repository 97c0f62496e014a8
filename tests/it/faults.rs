//! Fault injection (issue 7, part 1): Redis killed, paused, stalled on
//! writes or out of memory while clients keep asking; the backend down
//! (refusing, or a connect that hangs), slow, or cutting a body short;
//! foreign and corrupted values under cache keys.
//!
//! "Under load" here means 16-24 client tasks looping requests for a couple
//! of seconds; every answer is checked (status and body), and each fault
//! must cost no client an error and no client a wrong answer, except where
//! the issue says otherwise (a body the backend cuts short is an aborted
//! response). Time bounds are the issue's, plus a generous slack for a
//! loaded two-core machine.
//!
//! Already covered elsewhere (not repeated here):
//! - `proxy_fail_open::redis_killed_then_restarted_on_the_same_port`,
//!   `redis_paused_requests_are_still_answered` (sequential requests),
//! - `tier::a_lost_tracking_connection_empties_the_tier`,
//! - `http_stale::stale_if_error_serves_stale_when_the_backend_fails`
//!   (backend answering 503, then stopped),
//! - `proxy_forwarding::unreachable_backend_is_a_json_502`,
//!   `backend_slower_than_timeout_is_a_json_504`,
//! - `proxy_storing::a_body_that_breaks_off_is_not_stored` (one request, a
//!   harness backend breaking off with and without Content-Length).

use crate::common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Slack on every time bound, for a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------
// A small load generator
// ---------------------------------------------------------------------------

/// One request of a load run.
#[derive(Debug, Clone)]
struct Sample {
    path: String,
    started: Instant,
    ended: Instant,
    /// 0 for a transport error (no answer, or a body that broke off).
    status: u16,
    x_cache: String,
    cache_status: String,
    /// The backend's `version` of the answer, when it has one.
    version: u64,
    /// Why the answer is not the one the path must get.
    problem: Option<String>,
}

impl Sample {
    fn took(&self) -> Duration {
        self.ended - self.started
    }
}

/// Checks one answer for a path: `Some(why)` when it is wrong.
type Check = Arc<dyn Fn(&str, &Resp) -> Option<String> + Send + Sync>;

/// The default check: 200 with the backend's JSON for this task id.
fn task_check() -> Check {
    Arc::new(|path: &str, r: &Resp| {
        if r.status != 200 {
            return Some(format!("status {}: {}", r.status, r.text()));
        }
        let id = path.rsplit('/').next().unwrap_or("");
        match serde_json::from_slice::<Value>(&r.body) {
            Ok(v) if v["id"] == id => None,
            Ok(v) => Some(format!("the body of another resource: {v}")),
            Err(e) => Some(format!("body is not JSON ({e}): {}", r.text())),
        }
    })
}

async fn sample(client: &Client, path: String, check: &Check) -> Sample {
    let started = Instant::now();
    let got = client.try_send("GET", &path, vec![], empty()).await;
    let ended = Instant::now();
    let mut s = Sample {
        path,
        started,
        ended,
        status: 0,
        x_cache: String::new(),
        cache_status: String::new(),
        version: 0,
        problem: None,
    };
    match got {
        Err(e) => s.problem = Some(format!("transport error: {e}")),
        Ok(r) => {
            s.status = r.status.as_u16();
            s.x_cache = r.x_cache().unwrap_or("").to_string();
            s.cache_status = r.cache_status().to_string();
            s.version = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["version"].as_u64())
                .unwrap_or(0);
            s.problem = check(&s.path, &r);
        }
    }
    s
}

/// `tasks` clients GET in a loop until `until`; `pick(task, n)` names the
/// n-th path of a task.
async fn run_load(
    addr: SocketAddr,
    tasks: usize,
    until: Instant,
    pick: fn(usize, u64) -> String,
    check: Check,
) -> Vec<Sample> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let check = check.clone();
        handles.push(tokio::spawn(async move {
            let client = Client::new(addr);
            let mut out = Vec::new();
            let mut n = 0u64;
            while Instant::now() < until {
                out.push(sample(&client, pick(t, n), &check).await);
                n += 1;
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("a load task panicked"));
    }
    all.sort_by_key(|s| s.started);
    all
}

/// Panics with the first few problems, if any.
fn assert_no_problems(what: &str, samples: &[Sample]) {
    let bad: Vec<&Sample> = samples.iter().filter(|s| s.problem.is_some()).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} answers were errors or wrong, e.g.:\n{}",
        bad.len(),
        samples.len(),
        bad.iter()
            .take(8)
            .map(|s| format!(
                "  GET {} ({:?}, {}): {}",
                s.path,
                s.took(),
                s.cache_status,
                s.problem.as_deref().unwrap()
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A one-line summary of a run, printed for the report.
fn summary(what: &str, samples: &[Sample], from: Instant) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for s in samples {
        *by.entry(s.x_cache.as_str()).or_default() += 1;
    }
    let max = samples.iter().map(Sample::took).max().unwrap_or_default();
    let span = samples.last().map(|s| s.ended - from).unwrap_or_default();
    format!(
        "{what}: {} requests in {:.1} s ({:.0}/s), by X-Cache {by:?}, slowest {max:?}",
        samples.len(),
        span.as_secs_f64(),
        samples.len() as f64 / span.as_secs_f64().max(0.001)
    )
}

/// The first answer after `at` that shows the store working again (a hit,
/// or a miss that was stored), and how long after `at` it ended.
fn caching_resumed_after(samples: &[Sample], at: Instant) -> Option<Duration> {
    samples
        .iter()
        .filter(|s| s.started >= at)
        .filter(|s| s.x_cache == "HIT" || s.cache_status.contains("stored"))
        .map(|s| s.ended - at)
        .min()
}

/// Half the requests go to a hot set cached before the fault, half to
/// fresh task ids (each a miss that stores when the store works).
const HOT: usize = 16;

fn hot_or_fresh(task: usize, n: u64) -> String {
    if n % 2 == 0 {
        format!("/api/v1/tasks/h{}", (task * 7 + n as usize / 2) % HOT)
    } else {
        format!("/api/v1/tasks/f{task}-{n}")
    }
}

async fn warm_hot_set(w: &World) {
    for i in 0..HOT {
        let path = format!("/api/v1/tasks/h{i}");
        w.client.get(&path).await;
        let r = w.client.get(&path).await;
        assert_eq!(r.x_cache(), Some("HIT"), "{path}: {}", r.cache_status());
    }
}

// ---------------------------------------------------------------------------
// Redis killed under load
// ---------------------------------------------------------------------------

/// A PUT that completed, and the version it produced.
#[derive(Debug, Clone, Copy)]
struct Write {
    ended: Instant,
    version: u64,
}

/// Every GET of a hot key that started after a PUT of that key had
/// answered must carry at least that PUT's version.
fn assert_reads_follow_writes(samples: &[Sample], writes: &HashMap<String, Vec<Write>>) {
    let mut stale = Vec::new();
    for s in samples.iter().filter(|s| s.status == 200) {
        let Some(ws) = writes.get(&s.path) else { continue };
        let due = ws
            .iter()
            .filter(|w| w.ended < s.started)
            .map(|w| w.version)
            .max()
            .unwrap_or(0);
        if s.version < due {
            stale.push(format!(
                "  GET {} got version {} ({}), but version {due} had been written before it started",
                s.path, s.version, s.cache_status
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "{} answers were older than a write that had completed:\n{}",
        stale.len(),
        stale.into_iter().take(8).collect::<Vec<_>>().join("\n")
    );
}

/// Redis is killed (SIGKILL) while 24 clients keep reading and one keeps
/// writing, then started again, empty, on the same port. No client sees an
/// error or a wrong body; no read returns a version older than a write that
/// had completed before it (the in-process tier, on by default, must drop
/// what it can no longer prove fresh); while Redis is down nothing is a
/// hit; caching resumes within 1 s of Redis answering again (+ slack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_costs_no_client_an_error() {
    let w = Arc::new(World::std(Kind::Redis).await);
    warm_hot_set(&w).await;

    let t0 = Instant::now();
    let end = t0 + Duration::from_millis(4200);
    let load = tokio::spawn(run_load(w.proxy.addr, 24, end, hot_or_fresh, task_check()));

    // One writer, all along: PUTs to the hot set.
    let writes: Arc<Mutex<HashMap<String, Vec<Write>>>> = Arc::default();
    let writer = tokio::spawn({
        let (w, writes) = (w.clone(), writes.clone());
        async move {
            let client = Client::new(w.proxy.addr);
            let mut n = 0usize;
            while Instant::now() < end {
                let path = format!("/api/v1/tasks/h{}", n % HOT);
                let r = client.put(&path).await;
                assert_eq!(r.status, 200, "PUT {path}: {}", r.text());
                let version = r.version();
                writes.lock().unwrap().entry(path).or_default().push(Write {
                    ended: Instant::now(),
                    version,
                });
                n += 1;
                tokio::time::sleep(Duration::from_millis(40)).await; // the writer's pace
            }
        }
    });

    // The timeline is the condition under test, not a wait for a state:
    // 1 s of load with Redis up, then 1.2 s with Redis gone.
    tokio::time::sleep_until((t0 + Duration::from_millis(1000)).into()).await;
    let killed_at = Instant::now();
    w.redis().kill();
    tokio::time::sleep_until((t0 + Duration::from_millis(2200)).into()).await;
    tokio::task::block_in_place(|| w.redis().restart());
    let back_at = Instant::now();

    let samples = load.await.unwrap();
    writer.await.expect("the writer failed");
    println!("{}", summary("redis killed", &samples, t0));

    assert_no_problems("Redis killed under load", &samples);
    assert_reads_follow_writes(&samples, &writes.lock().unwrap());

    // Down: nothing can be proven fresh, so nothing is a hit (after a
    // moment for the loss to be noticed).
    let grace = Duration::from_millis(500);
    let hits_while_down: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started > killed_at + grace && s.ended < back_at && s.x_cache == "HIT")
        .collect();
    assert!(
        hits_while_down.is_empty(),
        "{} hits while Redis was down, e.g. {:?}",
        hits_while_down.len(),
        hits_while_down.first()
    );
    let during = samples
        .iter()
        .filter(|s| s.started > killed_at && s.ended < back_at)
        .count();
    assert!(during > 50, "only {during} requests were answered while Redis was down");

    let resumed = caching_resumed_after(&samples, back_at).expect("caching never resumed after the restart");
    println!("caching resumed {resumed:?} after Redis was back");
    // The bound is the behaviour: caching resumes within 1 s of Redis
    // answering again (the documented promise), + SLACK for the machine's
    // noise.
    assert!(
        resumed <= Duration::from_secs(1) + SLACK,
        "caching resumed only {resumed:?} after Redis was back (issue: within 1 s)"
    );
    // The restarted Redis holds what was filled since.
    let w = &w;
    eventually("a hot key is a hit again", PATIENCE, || async move {
        w.client.get("/api/v1/tasks/h1").await.x_cache() == Some("HIT")
    })
    .await;
}

// ---------------------------------------------------------------------------
// Redis paused under load
// ---------------------------------------------------------------------------

/// The documented rules with the in-process tier off, so that every request
/// goes to the store and pays for a stall.
fn no_tier_config() -> String {
    format!("{}\n[tier]\nenabled = false\n", std_config())
}

/// Redis is stopped (SIGSTOP) for 5 s under load, then continued. No
/// client sees an error or a wrong body; no request started during the
/// pause is held for the pause (each waits at most the store timeout,
/// 100 ms, plus the backend's time; the bound checked is half the pause,
/// far above a loaded machine's noise); answers keep flowing; caching
/// resumes after SIGCONT and the entries from before the pause are hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_under_load_never_holds_a_request_for_the_pause() {
    let w = Arc::new(World::start(Kind::Redis, &no_tier_config()).await);
    warm_hot_set(&w).await;
    // The backend's own time, measured: a pass-through request.
    let started = Instant::now();
    w.client.get("/plain/probe").await;
    let backend_time = started.elapsed();

    let t0 = Instant::now();
    let pause = Duration::from_millis(5000);
    let end = t0 + Duration::from_millis(800) + pause + Duration::from_millis(1700);
    let load = tokio::spawn(run_load(w.proxy.addr, 24, end, hot_or_fresh, task_check()));
    // The timeline is the condition under test: 0.8 s of load with Redis
    // answering, then the pause.
    tokio::time::sleep_until((t0 + Duration::from_millis(800)).into()).await;
    let paused_at = Instant::now();
    w.redis().pause();
    tokio::time::sleep_until((paused_at + pause).into()).await;
    w.redis().resume();
    let resumed_at = Instant::now();
    let samples = load.await.unwrap();
    println!("{}", summary("redis paused", &samples, t0));

    assert_no_problems("Redis paused under load", &samples);
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started >= paused_at && s.started < resumed_at)
        .collect();
    assert!(
        during.len() > 50,
        "only {} requests started during the 5 s pause: clients were held up",
        during.len()
    );
    // The bound is the behaviour: no request is held for the pause. Half
    // the pause (2.5 s) against an expected 100 ms + the backend's time.
    let bound = pause / 2 + backend_time;
    let slowest = during.iter().max_by_key(|s| s.took()).unwrap();
    println!(
        "during the pause: {} requests, slowest {:?} ({}), bound {bound:?}",
        during.len(),
        slowest.took(),
        slowest.cache_status
    );
    assert!(
        slowest.took() <= bound,
        "GET {} started during the pause took {:?} ({}): it was held for the pause",
        slowest.path,
        slowest.took(),
        slowest.cache_status
    );
    let after_slowest = samples
        .iter()
        .filter(|s| s.started >= resumed_at)
        .map(Sample::took)
        .max();
    println!("after the resume: slowest {after_slowest:?}");

    let resumed = caching_resumed_after(&samples, resumed_at).expect("caching never resumed after SIGCONT");
    println!("caching resumed {resumed:?} after SIGCONT");
    // The bound is the behaviour: caching resumes within 1 s of Redis
    // answering again (the documented promise), + SLACK for the machine's
    // noise.
    assert!(
        resumed <= Duration::from_secs(1) + SLACK,
        "caching resumed only {resumed:?} after SIGCONT"
    );
    // What was cached before the pause is still there.
    for i in 0..HOT {
        let path = format!("/api/v1/tasks/h{i}");
        let w = &w;
        let path = &path;
        eventually(&format!("{path} is a hit again"), PATIENCE, || async move {
            w.client.get(path).await.x_cache() == Some("HIT")
        })
        .await;
    }
}

/// A write answered while Redis was paused must not be undone when Redis
/// continues: the entry cached before the pause still sits in Redis, the
/// write's purge could not reach it, and the next read must not be served
/// that entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_while_redis_is_paused_is_not_undone_when_it_continues() {
    let w = World::std(Kind::Redis).await;
    let path = "/api/v1/tasks/1";
    assert_eq!(w.client.get(path).await.x_cache(), Some("MISS"));
    let cached = w.client.get(path).await;
    assert_eq!(cached.x_cache(), Some("HIT"));
    assert_eq!(cached.version(), 1);

    w.redis().pause();
    let outcome = async {
        // A few requests so the proxy has noticed the stall.
        for _ in 0..4 {
            assert_eq!(w.client.get("/api/v1/tasks/2").await.status, 200);
        }
        let put = w.client.put(path).await;
        assert_eq!(put.status, 200);
        assert_eq!(put.version(), 2);
        let during = w.client.get(path).await;
        assert_eq!(during.version(), 2, "read during the pause: {}", during.cache_status());
    };
    let result = tokio::time::timeout(Duration::from_secs(20), outcome).await;
    w.redis().resume();
    result.expect("requests hung while Redis was paused");

    // Redis answers again (another key gets stored).
    let w = &w;
    eventually("caching resumes", PATIENCE, || async move {
        w.client.get("/api/v1/tasks/3").await.x_cache() == Some("HIT")
    })
    .await;
    for i in 0..5 {
        let r = w.client.get(path).await;
        assert_eq!(
            r.version(),
            2,
            "read {i} after SIGCONT returned version {} ({}); the write before it made version 2",
            r.version(),
            r.cache_status()
        );
    }
}

/// A config whose fill lock, once taken, lives 60 s and is waited for as
/// long (`coalesce_timeout_ms` and the backend timeout both 60 s), tier
/// off: a miss held by a lock nobody releases would take a minute, so a
/// bound far below that tells the two apart on any machine.
fn long_lock_config() -> String {
    format!(
        "{}\n[cache]\ncoalesce_timeout_ms = 60000\n\n[tier]\nenabled = false\n",
        std_config()
    )
    .replacen("timeout_ms = 5000", "timeout_ms = 60000", 1)
}

/// The bound for a miss that must not wait on a lock: a third of the lock's
/// 60 s life. Far above any loaded machine's noise, far below the wait.
const NOT_HELD_BY_A_LOCK: Duration = Duration::from_secs(20);

/// A store call that times out on our side may still run in Redis later:
/// a fill lock (`SET NX PX`) sent while Redis stalls is taken once Redis
/// goes on, by nobody. The next miss for that entry must not wait for that
/// orphan: its token names this instance and no fill of this instance
/// runs under it, so the miss takes it over at once
/// (`src/store/redis_lock.rs`).
///
/// The orphan is made exactly as a late `SET` leaves it: the test learns
/// the instance's identity from a lock it really holds (a fill held at
/// the backend), then, once that fill is over, writes the lock key with a
/// token of that instance that no fill ran under, for 60 s. (A `CLIENT
/// PAUSE WRITE` does not produce one: the miss's fill reservation is a
/// write too, so it fails first and the miss takes no lock at all.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_lock_orphaned_by_a_stall_does_not_hold_later_misses() {
    let w = World::start(Kind::Redis, &long_lock_config()).await;
    let path = "/api/v1/tasks/ns";
    // An answer that is never stored: nothing fills the entry but the lock.
    let gate = Gate::closed();
    w.backend.on(
        "GET",
        path,
        Reply::new().header("cache-control", "no-store").gate(&gate),
    );
    // While the first miss is held at the backend, its lock names it.
    let observe = async {
        let redis = w.redis();
        let lock_key = eventually_some("the first miss takes the fill lock", PATIENCE, || async move {
            redis.keys("*__cg:lock:*").await.into_iter().next()
        })
        .await;
        let token: String = w.redis().cmd(&["GET", &lock_key]).await;
        gate.open();
        (lock_key, token)
    };
    let (held, (lock_key, token)) = tokio::join!(w.client.get(path), observe);
    assert_eq!(held.status, 200);
    let (instance, _) = token.split_once('.').expect("a lock token is <instance>.<random>");
    let redis = w.redis();
    let key = lock_key.clone();
    eventually("the finished fill releases its lock", PATIENCE, || {
        let key = key.clone();
        async move { !redis.exists(&key).await }
    })
    .await;

    let orphan = format!("{instance}.{}", "0".repeat(24));
    let _: () = w.redis().cmd(&["SET", &lock_key, &orphan, "PX", "60000"]).await;
    let started = Instant::now();
    let next = w.client.get(path).await;
    let took = started.elapsed();
    assert_eq!(next.status, 200);
    assert_eq!(w.backend.count("GET", path), 2, "every miss reached the backend");
    // Taken over and released: the orphan's token would have held the key
    // for 60 s. An unstored fill releases its lock after the answer is on
    // its way, so the release may land just after the client has it.
    let redis = w.redis();
    let key = lock_key.clone();
    eventually("the taken-over lock is released", PATIENCE, || {
        let key = key.clone();
        async move { !redis.exists(&key).await }
    })
    .await;
    // The bound is the behaviour: a miss held by the orphan would wait its
    // 60 s life (see NOT_HELD_BY_A_LOCK).
    assert!(
        took < NOT_HELD_BY_A_LOCK,
        "the first miss after the orphan took {took:?} ({}): it waited on the orphaned lock",
        next.cache_status()
    );
}

/// A request whose client goes away while it fills holds the fill lock;
/// dropping the request must release it, so the next miss fetches at once
/// instead of waiting out the lock (60 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_dropped_with_its_client_releases_the_fill_lock() {
    let w = World::start(Kind::Redis, &long_lock_config()).await;
    let path = "/api/v1/tasks/gone";
    w.backend.on("GET", path, Reply::new().delay(Duration::from_secs(30)));

    // The first client sends its GET and leaves once the backend has it.
    let mut first = tokio::net::TcpStream::connect(w.proxy.addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", w.proxy.addr);
    tokio::io::AsyncWriteExt::write_all(&mut first, head.as_bytes())
        .await
        .unwrap();
    let b = &w.backend;
    eventually(
        "the first GET reaches the backend",
        Duration::from_secs(30),
        || async move { b.count("GET", path) == 1 },
    )
    .await;
    drop(first);
    w.backend.on("GET", path, Reply::new().body("fresh"));

    let started = Instant::now();
    let next = w.client.get(path).await;
    let took = started.elapsed();
    assert_eq!(next.status, 200);
    assert_eq!(next.text(), "fresh");
    assert_eq!(w.backend.count("GET", path), 2);
    // The bound is the behaviour: a miss held by the dropped fill's lock
    // would wait its 60 s life (see NOT_HELD_BY_A_LOCK).
    assert!(
        took < NOT_HELD_BY_A_LOCK,
        "the miss after a dropped fill took {took:?} ({}): it waited on the dropped fill's lock",
        next.cache_status()
    );
}

// ---------------------------------------------------------------------------
// Redis out of memory
// ---------------------------------------------------------------------------

/// Redis at `maxmemory` with `noeviction`: every write fails. Requests
/// still succeed with the right bodies (reads are still served from what is
/// stored), the failed writes are counted in `cachegate_store_errors_total`,
/// a key purge still removes its entry, and caching resumes once memory is
/// available again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_fails_writes_but_no_request() {
    let w = World::start(Kind::Redis, &patient(&std_config(), Kind::Redis)).await;
    let cached = "/api/v1/tasks/1";
    w.client.get(cached).await;
    assert_eq!(w.client.get(cached).await.x_cache(), Some("HIT"));
    let errors_before = w
        .client
        .scrape()
        .await
        .sum("cachegate_store_errors_total", &[("kind", "error")]);

    w.redis().config_set("maxmemory-policy", "noeviction").await;
    w.redis().config_set("maxmemory", "1").await;
    let oom: redis::RedisResult<()> = async {
        let mut c = w.redis().conn().await;
        redis::cmd("SET").arg("probe").arg("x").query_async(&mut c).await
    }
    .await;
    assert!(
        oom.as_ref().is_err_and(|e| e.to_string().contains("OOM")),
        "Redis is not refusing writes: {oom:?}"
    );

    let check = task_check();
    for n in 0..20 {
        let path = format!("/api/v1/tasks/oom{n}");
        let r = w.client.get(&path).await;
        assert_eq!(check(&path, &r), None, "{path}");
        assert_eq!(r.x_cache(), Some("MISS"), "{path}");
        assert!(
            !r.cache_status().contains("stored"),
            "{path} cannot have been stored: {}",
            r.cache_status()
        );
    }
    let hit = w.client.get(cached).await;
    assert_eq!(hit.x_cache(), Some("HIT"), "reads still work: {}", hit.cache_status());
    let errors_during = w
        .client
        .scrape()
        .await
        .sum("cachegate_store_errors_total", &[("kind", "error")]);
    println!("store errors (kind=error): {errors_before} before, {errors_during} after 20 refused fills");
    assert!(
        errors_during >= errors_before + 20.0,
        "20 fills were refused with OOM, but cachegate_store_errors_total{{kind=\"error\"}} went from {errors_before} to {errors_during}"
    );

    // A write's key purge still takes the old entry out (deleting frees).
    assert_eq!(w.client.put(cached).await.status, 200);
    let after = w.client.get(cached).await;
    assert_eq!(
        after.version(),
        2,
        "read after a write under OOM: {}",
        after.cache_status()
    );

    w.redis().config_set("maxmemory", "0").await;
    let w = &w;
    eventually("caching resumes with memory", PATIENCE, || async move {
        let r = w.client.get("/api/v1/tasks/after-oom").await;
        r.x_cache() == Some("HIT")
    })
    .await;
}

/// A pattern purge under OOM: `INCR` of the purge epoch is refused, but the
/// entries the pattern covers must still go (UNLINK frees memory and is
/// allowed), or the write's readers get the old list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_purge_under_redis_out_of_memory_still_removes_entries() {
    let w = World::start(Kind::Redis, &patient(&std_config(), Kind::Redis)).await;
    let list = "/api/v1/tasks?page=1";
    w.client.get(list).await;
    let before = w.client.get(list).await;
    assert_eq!(before.x_cache(), Some("HIT"));
    assert_eq!(before.version(), 1);

    w.redis().config_set("maxmemory-policy", "noeviction").await;
    w.redis().config_set("maxmemory", "1").await;
    let created = w.client.send("POST", "/api/v1/tasks", &[], full("{}")).await;
    assert_eq!(created.status, 200);
    let after = w.client.get(list).await;
    w.redis().config_set("maxmemory", "0").await;
    assert_eq!(
        after.version(),
        2,
        "the list read after a create under OOM is the old one ({})",
        after.cache_status()
    );
}

// ---------------------------------------------------------------------------
// Foreign and corrupted values under cache keys
// ---------------------------------------------------------------------------

/// A cachegate entry built by hand (the layout of `src/store/entry.rs`), to
/// write well-formed-looking but wrong records.
/// `(version, status)` and `(stored_at_ms, ttl_ms)` as the entry's header holds them.
fn encode_entry(
    (version, status): (u8, u16),
    (stored_at_ms, ttl_ms): (u64, u64),
    headers: &[(&[u8], &[u8])],
    body: &[u8],
) -> Vec<u8> {
    let mut v = b"CG".to_vec();
    v.push(version);
    v.extend_from_slice(&status.to_be_bytes());
    v.extend_from_slice(&stored_at_ms.to_be_bytes());
    v.extend_from_slice(&ttl_ms.to_be_bytes());
    v.extend_from_slice(&0u64.to_be_bytes());
    v.extend_from_slice(&0u64.to_be_bytes());
    v.push(0);
    v.extend_from_slice(&(headers.len() as u16).to_be_bytes());
    for (n, val) in headers {
        v.extend_from_slice(&(n.len() as u16).to_be_bytes());
        v.extend_from_slice(n);
        v.extend_from_slice(&(val.len() as u32).to_be_bytes());
        v.extend_from_slice(val);
    }
    v.extend_from_slice(body);
    v
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// How a corrupt record is written under a key.
enum Foreign {
    /// `SET`, `RPUSH`, `SADD`, `ZADD`, `XADD`: another type.
    Type(&'static str),
    /// A hash whose `anon` field holds these bytes (no `__cg` mark).
    Field(Vec<u8>),
}

async fn plant(redis: &RedisServer, key: &str, what: &Foreign) {
    let _: i64 = redis.cmd(&["DEL", key]).await;
    match what {
        Foreign::Type("string") => redis.cmd::<()>(&["SET", key, r#"{"id":"evil"}"#]).await,
        Foreign::Type("list") => redis.cmd::<()>(&["RPUSH", key, "a", "b"]).await,
        Foreign::Type("set") => redis.cmd::<()>(&["SADD", key, "a"]).await,
        Foreign::Type("zset") => redis.cmd::<()>(&["ZADD", key, "1", "a"]).await,
        Foreign::Type("stream") => redis.cmd::<()>(&["XADD", key, "*", "id", "evil"]).await,
        Foreign::Type(t) => unreachable!("{t}"),
        Foreign::Field(bytes) => {
            redis
                .cmd_bytes::<()>(&[b"HSET", key.as_bytes(), b"anon", bytes.as_slice()])
                .await
        }
    }
}

fn cases(valid: &[u8]) -> Vec<(String, Foreign)> {
    let fresh = now_ms();
    let day = 86_400_000;
    let mut out: Vec<(String, Foreign)> = ["string", "list", "set", "zset", "stream"]
        .into_iter()
        .map(|t| (format!("a {t} written by another program"), Foreign::Type(t)))
        .collect();
    let mut field = |what: &str, bytes: Vec<u8>| out.push((what.to_string(), Foreign::Field(bytes)));
    field("JSON written by another program", br#"{"id":"evil"}"#.to_vec());
    field("an empty value", Vec::new());
    field("the magic alone", b"CG".to_vec());
    for cut in [3, 12, 39, 41, 45] {
        field(&format!("a real entry cut to {cut} bytes"), valid[..cut].to_vec());
    }
    for version in [0u8, 1, 3, 255] {
        let mut v = valid.to_vec();
        v[2] = version;
        field(&format!("a real entry marked as format version {version}"), v);
    }
    let mut many = valid.to_vec();
    many[38..40].copy_from_slice(&1000u16.to_be_bytes());
    field("a real entry claiming 1000 headers", many);
    field(
        "an entry whose header value holds CR LF (response splitting)",
        encode_entry(
            (1, 200),
            (fresh, day),
            &[(b"x-evil", b"a\r\nset-cookie: pwned=1")],
            br#"{"id":"evil"}"#,
        ),
    );
    field(
        "an entry with a header name that is no token",
        encode_entry((1, 200), (fresh, day), &[(b"bad name", b"v")], br#"{"id":"evil"}"#),
    );
    field(
        "an entry with status 0",
        encode_entry((1, 0), (fresh, day), &[], br#"{"id":"evil"}"#),
    );
    field(
        "an entry with status 1000",
        encode_entry((1, 1000), (fresh, day), &[], br#"{"id":"evil"}"#),
    );
    field("a Vary marker that is not text", b"CV1\n\xff\xfe".to_vec());
    field("a Vary marker naming junk", b"CV1\nx-a,,bad name,\0".to_vec());
    out
}

/// Enterprise edition with an all-scopes admin token, over `rules`.
const TOKEN: &str = "faults-admin-token-0123456789abcdef0123456789";

fn admin_config(rules: &str) -> String {
    format!(
        "edition = \"enterprise\"\n\n{HEAD}\n[admin]\n\n{}{rules}",
        crate::common::admin::token_toml("root", TOKEN, crate::common::admin::EVERY_SCOPE)
    )
}

async fn admin_get(client: &Client, key: &str) -> Resp {
    let auth = format!("Bearer {TOKEN}");
    client
        .send(
            "GET",
            &format!("/api/v1/cache/key/{key}"),
            &[("authorization", &auth)],
            empty(),
        )
        .await
}

/// Whatever another program left under a cache key (another type, JSON, a
/// truncated entry, another format version, an entry whose header would
/// split the response, a broken Vary marker) is a miss: the backend's
/// answer is served and stored over it, and the next request is a hit of
/// that answer. The admin view of the corrupt record answers too. Through
/// an instance with the in-process tier and one without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_or_corrupted_values_are_misses_and_are_overwritten() {
    let text = patient(&admin_config(STD_RULES), Kind::Redis);
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    // The URL's `/0` keeps the enterprise edition in the DB this test reads.
    let rendered = render(&text, Kind::Redis, &backend.url(), Some(&format!("{}/0", redis.url())));
    let tiered = Proxy::start(&rendered).await;
    let plain = Proxy::start(&format!("{rendered}\n[tier]\nenabled = false\n")).await;

    // A real entry to cut up.
    let template = Client::new(plain.addr);
    template.get("/api/v1/tasks/template").await;
    let valid = redis
        .hget_bytes("task:template", "anon")
        .await
        .expect("an entry was stored");
    assert!(valid.starts_with(b"CG\x02") && valid.len() > 60);

    let check = task_check();
    for (proxy_name, proxy) in [("tier", &tiered), ("no tier", &plain)] {
        let client = Client::new(proxy.addr);
        for (i, (what, foreign)) in cases(&valid).into_iter().enumerate() {
            let id = format!("c{i}-{}", proxy_name.replace(' ', ""));
            let (key, path) = (format!("task:{id}"), format!("/api/v1/tasks/{id}"));
            let ctx = format!("{what} ({proxy_name})");
            plant(&redis, &key, &foreign).await;

            let view = admin_get(&client, &key).await;
            assert!(
                view.status == 404 || view.status == 200,
                "{ctx}: the admin view answered {}: {}",
                view.status,
                view.text()
            );

            let before = backend.count("GET", &path);
            let first = client.get(&path).await;
            assert_eq!(check(&path, &first), None, "{ctx}");
            assert_eq!(first.x_cache(), Some("MISS"), "{ctx}: {}", first.cache_status());
            assert_eq!(
                first.cache_status(),
                "cachegate; fwd=miss; stored",
                "{ctx}: it must be overwritten"
            );
            assert_eq!(backend.count("GET", &path), before + 1, "{ctx}");
            assert!(first.header("set-cookie").is_none() && first.header("x-evil").is_none());

            let second = client.get(&path).await;
            assert_eq!(second.x_cache(), Some("HIT"), "{ctx}: {}", second.cache_status());
            assert_eq!(second.body, first.body, "{ctx}");
            assert_eq!(redis.key_type(&key).await, "hash", "{ctx}");
            let stored = redis.hget_bytes(&key, "anon").await.unwrap_or_default();
            assert!(stored.starts_with(b"CG\x02"), "{ctx}: anon now holds {stored:?}");
            assert_eq!(admin_get(&client, &key).await.status, 200, "{ctx}");
        }
    }
}

/// An entry claiming more headers than an `http::HeaderMap` can be sized
/// for (its count is a u16; `with_capacity` panics above 24576) is a miss
/// like any other
/// undecodable value: neither a lookup nor the admin view may panic on it
/// (a panic drops the client's connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_claiming_65535_headers_does_not_panic() {
    let text = patient(&admin_config(STD_RULES), Kind::Redis);
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let rendered = render(&text, Kind::Redis, &backend.url(), Some(&format!("{}/0", redis.url())));
    let proxy = Proxy::start(&rendered).await;
    let client = Client::new(proxy.addr);
    let mut huge = encode_entry((1, 200), (now_ms(), 86_400_000), &[], br#"{"id":"evil"}"#);
    huge[38..40].copy_from_slice(&u16::MAX.to_be_bytes());
    let mut broken = Vec::new();
    for (i, route) in ["admin", "proxy"].into_iter().enumerate() {
        let (key, path) = (format!("task:huge{i}"), format!("/api/v1/tasks/huge{i}"));
        plant(&redis, &key, &Foreign::Field(huge.clone())).await;
        let got = match route {
            "admin" => {
                let auth = format!("Bearer {TOKEN}");
                let headers = hv(&[("authorization", &auth)]);
                client
                    .try_send("GET", &format!("/api/v1/cache/key/{key}"), headers, empty())
                    .await
            }
            _ => client.try_send("GET", &path, vec![], empty()).await,
        };
        let r = match got {
            Ok(r) => r,
            Err(e) => {
                broken.push(format!("{route}: the connection broke (a panic serving it?): {e}"));
                continue;
            }
        };
        match route {
            "admin" => assert_eq!(r.status, 404, "{}", r.text()),
            _ => {
                assert_eq!(task_check()(&path, &r), None);
                assert_eq!(r.cache_status(), "cachegate; fwd=miss; stored");
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// An entry whose body was cut short (another program, a partial copy) is
/// a miss, never served: not as a hit with the stored `Content-Length`
/// (the client would see a broken response, for the entry's whole TTL),
/// and not as a shorter body presented as complete (an entry stored from a
/// chunked answer has no length to betray it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_with_a_truncated_body_is_never_served() {
    let w = World::start(Kind::Redis, &patient(&std_config(), Kind::Redis)).await;
    w.backend.on(
        "GET",
        "/api/v1/tasks/chunked",
        Reply::new()
            .header("content-type", "application/json")
            .chunked([r#"{"id":"chunked","#, r#""part":"two"}"#]),
    );
    let check = task_check();
    for source in ["/api/v1/tasks/sized", "/api/v1/tasks/chunked"] {
        let whole = w.client.get(source).await;
        assert_eq!(check(source, &whole), None);
        let source_key = format!("task:{}", source.rsplit('/').next().unwrap());
        let w = &w;
        let source_key = &source_key;
        eventually("the entry is stored", PATIENCE, || async move {
            w.redis().hget_bytes(source_key, "anon").await.is_some()
        })
        .await;
        let valid = w.redis().hget_bytes(source_key, "anon").await.unwrap();
        for cut in [1usize, 10] {
            let id = format!("cut{cut}-{}", source.rsplit('/').next().unwrap());
            let (key, path) = (format!("task:{id}"), format!("/api/v1/tasks/{id}"));
            w.backend.on("GET", &path, Reply::new().body(whole.body.clone()));
            plant(w.redis(), &key, &Foreign::Field(valid[..valid.len() - cut].to_vec())).await;
            let got = w.client.try_send("GET", &path, vec![], empty()).await;
            let r = got.unwrap_or_else(|e| panic!("{path} (body cut by {cut}): the client got a broken response: {e}"));
            assert_ne!(
                r.x_cache(),
                Some("HIT"),
                "{path}: an entry cut by {cut} bytes was served: {:?}",
                r.text()
            );
            assert_eq!(r.body, whole.body, "{path}");
        }
    }
}

/// A record's purge generation (`__gen`) that is not a plain number must
/// not stop the key from ever being cached again: the Lua fill script and
/// the lookup must read it the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_generation_never_stops_caching() {
    let w = World::start(Kind::Redis, &patient(&std_config(), Kind::Redis)).await;
    for (i, generation) in ["abc", "", "-1", "1.5", "99999999999999999999999", "0x10"]
        .iter()
        .enumerate()
    {
        let (key, path) = (format!("task:g{i}"), format!("/api/v1/tasks/g{i}"));
        let _: () = w.redis().cmd(&["HSET", &key, "__gen", generation]).await;
        let first = w.client.get(&path).await;
        assert_eq!(first.status, 200, "__gen = {generation:?}");
        assert_eq!(
            first.cache_status(),
            "cachegate; fwd=miss; stored",
            "__gen = {generation:?}: the answer was not stored"
        );
        assert_eq!(
            w.client.get(&path).await.x_cache(),
            Some("HIT"),
            "__gen = {generation:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The backend down, slow, or cutting bodies short
// ---------------------------------------------------------------------------

const SIE_RULES: &str = r#"
[[rule]]
name = "sie"
path = '^/sie/(?P<id>[^/]+)$'
key = "sie:{id}"
ttl = 1
stale_if_error = 60
"#;

/// The backend goes down twice over: first refusing connections, then as
/// a blackhole (connects hang). Under load, entries within stale-if-error
/// are served stale with their stored bodies; everything else is a JSON
/// 502 after the connect timeout (300 ms; checked: well under the 5 s
/// backend timeout), never the 504 of the backend timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_serves_stale_or_a_quick_502() {
    let template = format!(
        "[backend]\nurl = \"{{backend}}\"\nconnect_timeout_ms = 300\ntimeout_ms = 5000\n\n{{store}}\n{SIE_RULES}\n{STD_RULES}"
    );
    let w = World::start(Kind::Redis, &patient(&template, Kind::Redis)).await;
    let mut stored = HashMap::new();
    for i in 0..6 {
        let path = format!("/sie/{i}");
        let r = w.client.get(&path).await;
        assert_eq!(r.cache_status(), "cachegate; fwd=miss; stored", "{path}");
        stored.insert(path, r.body);
    }
    // Creates the condition: past their 1 s TTL, the entries are stale,
    // within the 60 s stale-if-error window.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let connect_timeout = Duration::from_millis(300);
    let stored = Arc::new(stored);
    let check: Check = {
        let stored = stored.clone();
        Arc::new(move |path: &str, r: &Resp| {
            if let Some(body) = stored.get(path) {
                if r.status != 200 || r.x_cache() != Some("STALE") || r.body != *body {
                    return Some(format!("{} {:?}: {}", r.status, r.x_cache(), r.text()));
                }
                return None;
            }
            let json: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            if r.status != 502 || json["error"] != "bad_gateway" || r.header("content-type") != Some("application/json")
            {
                return Some(format!("not a JSON 502: {} {}", r.status, r.text()));
            }
            None
        })
    };
    fn pick(task: usize, n: u64) -> String {
        if n % 2 == 0 {
            format!("/sie/{}", (task + n as usize) % 6)
        } else {
            format!("/api/v1/tasks/u{task}-{n}")
        }
    }

    let port = w.backend.addr.port();
    w.backend.stop().await;
    let t0 = Instant::now();
    let refused = run_load(w.proxy.addr, 16, t0 + Duration::from_millis(1500), pick, check.clone()).await;
    println!("{}", summary("backend refusing", &refused, t0));
    assert_no_problems("backend refusing connections", &refused);

    let _blackhole = Blackhole::on_port(port).await;
    let t1 = Instant::now();
    let hanging = run_load(w.proxy.addr, 16, t1 + Duration::from_millis(2000), pick, check).await;
    println!("{}", summary("backend blackholed", &hanging, t1));
    assert_no_problems("backend connects hanging", &hanging);

    // The bound is the behaviour: a quick 502 (the 300 ms connect timeout),
    // never the 5 s backend timeout. Half the backend timeout tells the two
    // apart far above a loaded machine's noise.
    let quick = Duration::from_millis(5000) / 2;
    for (what, samples) in [("refusing", &refused), ("blackholed", &hanging)] {
        let slowest = samples.iter().max_by_key(|s| s.took()).unwrap();
        assert!(
            slowest.took() <= quick,
            "backend {what}: GET {} took {:?} ({} {})",
            slowest.path,
            slowest.took(),
            slowest.status,
            slowest.cache_status
        );
        assert!(samples.iter().any(|s| s.status == 502) && samples.iter().any(|s| s.x_cache == "STALE"));
    }
    // The blackhole did make connects hang: the 502s waited for the timeout.
    let mut waits: Vec<Duration> = hanging.iter().filter(|s| s.status == 502).map(Sample::took).collect();
    waits.sort();
    let median = waits[waits.len() / 2];
    assert!(
        median >= connect_timeout - Duration::from_millis(50),
        "502s while blackholed took a median {median:?}: the connects did not hang"
    );
}

/// A slow backend: 24 concurrent requests that get no head within
/// `timeout_ms` (400 ms) are each a JSON 504 at that time (+ slack); then,
/// while the backend is still writing those late answers into connections
/// the proxy gave up, 16 clients get their own answers, every one right:
/// the pool recovers and never hands a late answer to another request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_slow_is_a_504_at_the_timeout_and_the_pool_recovers() {
    let template = format!("[backend]\nurl = \"{{backend}}\"\ntimeout_ms = 400\n\n{{store}}\n{STD_RULES}");
    let w = World::start(Kind::Redis, &template).await;
    let timeout = Duration::from_millis(400);
    let mut slow = Vec::new();
    for i in 0..12 {
        for path in [format!("/api/v1/tasks/slow{i}"), format!("/plain/slow{i}")] {
            w.backend
                .on("GET", &path, Reply::new().delay(Duration::from_millis(2000)));
            slow.push(path);
        }
    }
    let calls = slow.iter().map(|p| {
        let client = Client::new(w.proxy.addr);
        let p = p.clone();
        async move {
            let started = Instant::now();
            let r = client.get(&p).await;
            (p, r, started.elapsed())
        }
    });
    for (path, r, took) in futures_util::future::join_all(calls).await {
        assert_eq!(r.status, 504, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        assert_eq!(r.json()["error"], "gateway_timeout", "{path}");
        // The bound is the behaviour: the 504 comes at the timeout, not when
        // the backend answers (2 s); + SLACK for the machine's noise.
        assert!(
            took >= timeout - Duration::from_millis(5) && took <= timeout + SLACK,
            "{path}: 504 after {took:?}, the timeout is {timeout:?}"
        );
    }

    fn fast(task: usize, n: u64) -> String {
        if n % 2 == 0 {
            format!("/api/v1/tasks/fast{task}-{n}")
        } else {
            format!("/plain/fast{task}-{n}")
        }
    }
    let own_answer: Check = Arc::new(|path: &str, r: &Resp| {
        let json: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        (r.status != 200 || json["path"] != path).then(|| format!("{} {}", r.status, r.text()))
    });
    let t0 = Instant::now();
    let samples = run_load(w.proxy.addr, 16, t0 + Duration::from_millis(2500), fast, own_answer).await;
    println!("{}", summary("after the timeouts", &samples, t0));
    assert_no_problems("requests after a burst of timeouts", &samples);

    for path in &slow {
        w.backend.reset(path);
        let r = w.client.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["path"], path.as_str());
    }
}

/// Declared 100 bytes, sent 40, then the backend breaks off. Every one of
/// 16 concurrent clients (one fetching, the others waiting on it, then,
/// with nothing to share, each forwarding once on its own) sees a 502 (the
/// declared body is read whole before the head is sent, RFC 9111 §4.2.4)
/// or, for a chunked body already streaming, an aborted response: never a
/// short body presented as complete; nothing is stored; a HEAD of it
/// stores nothing either.
async fn truncated_bodies_abort_every_waiter_and_are_never_stored(kind: Kind) {
    let w = World::std(kind).await;
    for (id, declared) in [("cl", Some(100)), ("chunked", None)] {
        let path = format!("/api/v1/tasks/cut-{id}");
        w.backend
            .on("GET", &path, Reply::new().truncated(vec![b'a'; 40], declared));
        let calls = (0..16).map(|_| {
            let client = Client::new(w.proxy.addr);
            let path = path.clone();
            async move { client.try_send("GET", &path, vec![], empty()).await }
        });
        let answers = futures_util::future::join_all(calls).await;
        // One backend request per client: the fetcher's, and each waiter's
        // own once the fetch had nothing to share (never a retry).
        let fetched = w.backend.count("GET", &path);
        assert_eq!(fetched, 16, "{path}: backend requests for 16 concurrent clients");
        let complete_looking = |r: &&Resp| r.status != 502 || r.json()["error"] != "bad_gateway";
        if let Some(r) = answers
            .iter()
            .filter_map(|got| got.as_ref().ok())
            .find(complete_looking)
        {
            panic!(
                "{path}: a client got a complete-looking answer: {} {:?} {:?}",
                r.status,
                r.cache_status(),
                r.text()
            );
        }
        let head = w.client.try_send("HEAD", &path, vec![], empty()).await;
        assert!(head.is_err() || head.as_ref().is_ok_and(|r| r.x_cache() != Some("HIT")));
        assert!(!w.proxy.stored(&format!("task:cut-{id}"), "anon").await, "{path}");
        // The HEAD, not stored either, goes to the backend once.
        let n = w.backend.count("GET", &path) + w.backend.count("HEAD", &path);
        assert_eq!(n, fetched + 1, "{path}: backend requests after the HEAD");
    }
}

both_stores!(truncated_bodies_abort_every_waiter_and_are_never_stored);

/// The backend ends the connection at the TCP level before its body is
/// complete: a FIN or an RST after 40 of 100 declared bytes, a chunked body
/// without its last chunk, and a body declared larger than `max_body_bytes`
/// (streamed, not collected). The client sees a 502 (a declared body is
/// read whole before the head is sent) or an aborted response each time,
/// and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_early_at_the_tcp_level_is_never_stored() {
    let redis = RedisServer::start();
    let forty = "a".repeat(40);
    let variants: Vec<(&str, String, bool)> = vec![
        (
            "fin",
            format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\n{forty}"),
            false,
        ),
        (
            "rst",
            format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\n{forty}"),
            true,
        ),
        (
            "chunked",
            format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n28\r\n{forty}\r\n"),
            false,
        ),
        (
            "big",
            format!("HTTP/1.1 200 OK\r\ncontent-length: 5000000\r\n\r\n{}", "b".repeat(1000)),
            false,
        ),
    ];
    for (name, reply, reset) in variants {
        let raw = RawBackend::start(reply, reset).await;
        let text = render(
            &patient(&std_config(), Kind::Redis),
            Kind::Redis,
            &raw.url(),
            Some(&redis.url()),
        );
        let proxy = Proxy::start(&text).await;
        let client = Client::new(proxy.addr);
        let path = format!("/api/v1/tasks/{name}");
        for i in 0..3 {
            let got = client.try_send("GET", &path, vec![], empty()).await;
            match got {
                Err(_) => {}
                // A declared length is read whole before the head is sent:
                // a 502 is no partial body.
                Ok(r) if r.status == 502 && (reset || name == "fin") => {}
                Ok(r) => panic!(
                    "{name}, request {i}: the client got {} {:?} with {} bytes as if complete",
                    r.status,
                    r.cache_status(),
                    r.body.len()
                ),
            }
        }
        assert!(raw.requests() >= 3, "{name}: every request went to the backend");
        assert!(!proxy.stored(&format!("task:{name}"), "anon").await, "{name}");
        assert_eq!(redis.entry_fields(&format!("task:{name}")).await, Vec::<String>::new());
    }
}

/// A stale entry (kept for stale-if-error) whose refresh breaks off
/// mid-body keeps its stored bytes: the partial answer never replaces it.
/// The client of the failed refresh gets an aborted response (or the stale
/// entry); never the partial body as complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_breaks_off_leaves_the_stored_entry_intact() {
    let w = World::start(Kind::Redis, &patient(&format!("{HEAD}\n{SIE_RULES}"), Kind::Redis)).await;
    let path = "/sie/keep";
    let first = w.client.get(path).await;
    assert_eq!(first.cache_status(), "cachegate; fwd=miss; stored");
    let before = w.redis().hget_bytes("sie:keep", "anon").await.unwrap();
    w.backend
        .on("GET", path, Reply::new().truncated(vec![b'x'; 10], Some(500)));

    let outcome = eventually_some(&format!("{path} to go stale"), PATIENCE, || async {
        let got = w.client.try_send("GET", path, vec![], empty()).await;
        match &got {
            Ok(r) if r.x_cache() == Some("HIT") => None,
            _ => Some(got),
        }
    })
    .await;
    match outcome {
        Err(_) => {}
        Ok(r) => {
            assert_eq!(r.x_cache(), Some("STALE"), "{}: {:?}", r.cache_status(), r.text());
            assert_eq!(r.body, first.body);
        }
    }
    assert_eq!(
        w.redis().hget_bytes("sie:keep", "anon").await.as_deref(),
        Some(before.as_slice()),
        "the stored entry was changed by a refresh that broke off"
    );
    w.backend.reset(path);
    let r = w.client.get(path).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], path);
}

/// The 3-timeouts rule: once three store calls in a row timed out against a
/// paused Redis, the stall is detected and later requests bypass at once,
/// without waiting the store timeout. The timeout is 2 s here so that "at
/// once" is far from it on a loaded machine: the bound is the behaviour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_three_timeouts_a_stalled_redis_is_bypassed_at_once() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let text = render(&no_tier_config(), Kind::Redis, &backend.url(), Some(&redis.url()))
        .replace("timeout_ms = 100", "timeout_ms = 2000");
    let proxy = Proxy::start(&text).await;
    let client = Client::new(proxy.addr);
    let timeout = Duration::from_millis(2000);
    redis.pause();
    // Three requests trip the rule, each waiting (at most) the timeout.
    let mut tripping = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let r = client.get(&format!("/api/v1/tasks/trip{i}")).await;
        assert_eq!(r.status, 200, "fail open");
        tripping.push(started.elapsed());
    }
    assert!(
        !proxy.gateway().store().is_up(),
        "three timeouts mark the store down (took {tripping:?})"
    );
    let mut after = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let r = client.get(&format!("/api/v1/tasks/after{i}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.x_cache(), Some("BYPASS"));
        after.push(started.elapsed());
    }
    let slowest = after.iter().max().copied().unwrap();
    println!("tripping requests {tripping:?}; 20 after the trip, slowest {slowest:?}");
    // The bound is the behaviour: bypassed at once, not after the store
    // timeout (2 s; half of it is far above a loaded machine's noise).
    assert!(
        slowest < timeout / 2,
        "a request during a detected stall took {slowest:?}: it waited on the store"
    );
    redis.resume();
    eventually("the store is up again after SIGCONT", PATIENCE, || async {
        proxy.gateway().store().is_up()
    })
    .await;
}

/// A fill in flight whose key is purged, and whose tombstone Redis then
/// evicts (`maxmemory-policy allkeys-lru` under memory pressure), must not
/// store the body it fetched before the purge: the fill's reservation,
/// set in the record before the backend was asked, went with the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_evicted_under_allkeys_lru_never_lets_an_older_fill_store() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    // Writes purge by key only: a pattern purge would move the epoch, which
    // alone refuses the fill; this is about the key's own guard.
    let rules = r#"
[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"
ttl = 300

[[invalidate]]
name = "task-write"
methods = ["PUT"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{task_id}"]

[tier]
enabled = false
"#;
    let text = render(
        &format!("{HEAD}\n{rules}"),
        Kind::Redis,
        &backend.url(),
        Some(&redis.url()),
    );
    let proxy = Proxy::start(&text).await;
    let client = Arc::new(Client::new(proxy.addr));
    let path = "/api/v1/tasks/evicted";
    // The first GET's answer (version 1) is made on arrival, sent once the
    // purge and the eviction are done.
    let gate = Gate::closed();
    backend.on("GET", path, Reply::new().gate(&gate));
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.get(path).await })
    };
    eventually("the slow fill reached the backend", PATIENCE, || async {
        backend.count("GET", path) == 1
    })
    .await;
    backend.reset(path);
    let put = client.put(path).await;
    assert_eq!(put.status, 200);
    assert!(redis.exists("task:evicted").await, "the purge left a tombstone");
    // Memory pressure: allkeys-lru, a small maxmemory, and fresh keys
    // written (and read) until Redis evicts the idle tombstone.
    let used: String = redis.cmd(&["INFO", "memory"]).await;
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    let _: String = redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]).await;
    let _: String = redis
        .cmd(&["CONFIG", "SET", "maxmemory", &(used + 4 * 1024 * 1024).to_string()])
        .await;
    let filler = "x".repeat(64 * 1024);
    let mut written = 0;
    while redis.exists("task:evicted").await {
        assert!(written < 2000, "Redis never evicted the tombstone");
        let key = format!("junk:{written}");
        let _: redis::Value = redis.cmd(&["SET", &key, &filler]).await;
        let _: redis::Value = redis.cmd(&["GET", &key]).await;
        written += 1;
    }
    let evicted: String = redis.cmd(&["INFO", "stats"]).await;
    let evicted = evicted
        .lines()
        .find(|l| l.starts_with("evicted_keys:"))
        .unwrap_or("?")
        .to_string();
    println!("tombstone evicted after {written} junk keys ({evicted})");
    let _: String = redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]).await;

    gate.open();
    let first = slow.await.unwrap();
    assert_eq!(first.version(), 1, "the slow answer was made before the write");
    assert!(
        redis.entry_fields("task:evicted").await.is_empty(),
        "the fill from before the purge stored, its tombstone evicted"
    );
    let next = client.get(path).await;
    assert_eq!(next.version(), 2, "X-Cache {:?}", next.x_cache());
    assert_eq!(next.x_cache(), Some("MISS"));
}
