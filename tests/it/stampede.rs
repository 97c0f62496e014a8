//! Stampede protection: concurrent cold misses for one entry make one
//! backend request, within one instance (request coalescing) and across
//! instances sharing a Redis (the fill lock); waiters forward on their own
//! when the answer cannot be shared, when they have waited
//! `coalesce_timeout_ms`, and when a lock owner died holding the lock.

use crate::common::*;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

both_stores!(
    five_hundred_cold_gets_make_one_backend_request,
    an_unstorable_answer_sends_waiters_to_the_backend,
    waiters_give_up_after_the_coalesce_timeout,
);

const PATH: &str = "/api/v1/tasks/1";

/// A config whose store calls are bounded generously: hundreds of requests
/// at once on two cores must not turn slow store calls into fail-open
/// bypasses (which would reach the backend and blur what is measured).
fn config(kind: Kind, backend: &Backend, redis: Option<&RedisServer>, coalesce_ms: Option<u64>) -> String {
    let mut t = format!(
        "[backend]\nurl = \"{}\"\ntimeout_ms = 10000\npool_idle_per_host = 64\n\n",
        backend.url()
    );
    match kind {
        Kind::Redis => {
            let redis = redis.expect("a redis server for Kind::Redis");
            t += "[store]\nkind = \"redis\"\ntimeout_ms = 3000\n\n";
            t += &format!("[redis]\nurl = \"{}\"\npool_size = 8\n\n", redis.url());
        }
        Kind::Memory => t += "[store]\nkind = \"memory\"\n\n",
    }
    if let Some(ms) = coalesce_ms {
        t += &format!("[cache]\ncoalesce_timeout_ms = {ms}\n\n");
    }
    t += r#"
[[rule]]
name = "task"
methods = ["GET", "HEAD"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"
ttl = 300
statuses = [200]
"#;
    t
}

/// A backend, a Redis when `kind` asks for one, and one proxy.
async fn start(kind: Kind, coalesce_ms: Option<u64>) -> (Backend, Option<RedisServer>, Proxy) {
    let backend = Backend::start().await;
    let redis = (kind == Kind::Redis).then(RedisServer::start);
    let proxy = Proxy::start(&config(kind, &backend, redis.as_ref(), coalesce_ms)).await;
    (backend, redis, proxy)
}

/// `n` concurrent GETs of `path` through each proxy, started together; every
/// answer (or the error, as text).
async fn burst(proxies: &[&Proxy], n: usize, path: &str) -> Vec<Result<Resp, String>> {
    let gate = Arc::new(tokio::sync::Barrier::new(n * proxies.len()));
    let mut tasks = Vec::new();
    for proxy in proxies {
        let client = Arc::new(Client::new(proxy.addr));
        for _ in 0..n {
            let (client, gate, path) = (client.clone(), gate.clone(), path.to_string());
            tasks.push(tokio::spawn(async move {
                gate.wait().await;
                client.try_send("GET", &path, Vec::new(), empty()).await
            }));
        }
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task panicked"));
    }
    out
}

/// Answers by X-Cache value, for messages.
fn outcomes(answers: &[Result<Resp, String>]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in answers {
        let k = match a {
            Ok(r) => format!("{} {}", r.status.as_u16(), r.cache_status()),
            Err(e) => format!("error {e}"),
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// Every answer is a 200; returns the bodies.
fn all_ok(answers: Vec<Result<Resp, String>>, what: &str) -> Vec<Bytes> {
    let summary = outcomes(&answers);
    answers
        .into_iter()
        .map(|a| match a {
            Ok(r) if r.status == 200 => r.body,
            Ok(r) => panic!("{what}: a {} answer ({}); all: {summary:?}", r.status, r.text()),
            Err(e) => panic!("{what}: a request failed: {e}; all: {summary:?}"),
        })
        .collect()
}

async fn five_hundred_cold_gets_make_one_backend_request(kind: Kind) {
    let (backend, _redis, proxy) = start(kind, None).await;
    backend.on("GET", PATH, Reply::new().delay(Duration::from_millis(300)));

    let answers = burst(&[&proxy], 500, PATH).await;
    let summary = outcomes(&answers);
    let bodies = all_ok(answers, "500 cold GETs");
    assert_eq!(
        backend.count("GET", PATH),
        1,
        "500 concurrent cold GETs must reach the backend once; outcomes: {summary:?}"
    );
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "every client gets the one backend answer; outcomes: {summary:?}"
    );
    assert!(!bodies[0].is_empty(), "the shared answer has the backend's body");
    // And it is stored: the next GET is a plain hit.
    let again = Client::new(proxy.addr).get(PATH).await;
    assert_eq!(again.x_cache(), Some("HIT"));
    assert_eq!(again.body, bodies[0]);
    assert_eq!(backend.count("GET", PATH), 1);
}

/// Two instances on one Redis, 250 cold GETs each at the same moment: the
/// cross-instance fill lock makes one backend request between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_make_one_backend_request() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let text = config(Kind::Redis, &backend, Some(&redis), None);
    let a = Proxy::start(&text).await;
    let b = Proxy::start(&text).await;
    backend.on("GET", PATH, Reply::new().delay(Duration::from_millis(300)));

    let answers = burst(&[&a, &b], 250, PATH).await;
    let summary = outcomes(&answers);
    let bodies = all_ok(answers, "2 x 250 cold GETs");
    assert_eq!(
        backend.count("GET", PATH),
        1,
        "two instances sharing a Redis must make one backend request; outcomes: {summary:?}"
    );
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "all 500 clients get the same answer; outcomes: {summary:?}"
    );
    for p in [&a, &b] {
        let hit = Client::new(p.addr).get(PATH).await;
        assert_eq!(hit.x_cache(), Some("HIT"));
        assert_eq!(hit.body, bodies[0]);
    }
    assert_eq!(backend.count("GET", PATH), 1);
}

/// The answer turns out not storable (no-store): it cannot be shared, so
/// the waiters forward on their own, and all of them get an answer.
async fn an_unstorable_answer_sends_waiters_to_the_backend(kind: Kind) {
    let (backend, _redis, proxy) = start(kind, None).await;
    backend.on(
        "GET",
        PATH,
        Reply::new()
            .header("cache-control", "no-store")
            .delay(Duration::from_millis(300)),
    );
    let answers = burst(&[&proxy], 40, PATH).await;
    let summary = outcomes(&answers);
    all_ok(answers, "GETs of a no-store answer");
    assert!(
        backend.count("GET", PATH) > 1,
        "a no-store answer must not be shared with waiters; they forward themselves; outcomes: {summary:?}"
    );
    assert!(!proxy.stored("task:1", "anon").await, "no-store is not stored");
}

/// A leader whose backend takes 2 s: the others wait at most
/// `coalesce_timeout_ms` (200) and then forward on their own. (Only that
/// they forward is asserted, not when.)
async fn waiters_give_up_after_the_coalesce_timeout(kind: Kind) {
    let (backend, _redis, proxy) = start(kind, Some(200)).await;
    backend.on("GET", PATH, Reply::new().delay(Duration::from_secs(2)));
    let answers = burst(&[&proxy], 20, PATH).await;
    let summary = outcomes(&answers);
    all_ok(answers, "GETs behind a slow leader");
    assert!(
        backend.count("GET", PATH) > 1,
        "waiters must stop waiting after coalesce_timeout_ms and forward; outcomes: {summary:?}"
    );
}

/// An instance died holding the fill lock: the lock key stays until its PX
/// (1 s) runs out. A GET must still be answered (after at most the lock's
/// expiry, not after the 30 s coalesce timeout) and fill the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_left_by_a_crashed_owner_does_not_block_forever() {
    // Waiters would give up on a lock only after 30 s: an answer well
    // within that shows the lock's expiry was noticed.
    let (backend, redis, proxy) = start(Kind::Redis, Some(30_000)).await;
    let redis = redis.unwrap();
    let client = Client::new(proxy.addr);
    // RedisStore::lock_key: <prefix>__cg:lock:<field>:<key>; anonymous
    // requests use the field "anon". First make sure that is the lock a
    // fill takes (else the hand-made lock below would prove nothing).
    let other = "/api/v1/tasks/2";
    backend.on("GET", other, Reply::new().delay(Duration::from_millis(600)));
    let slow = tokio::spawn({
        let client = Client::new(proxy.addr);
        async move { client.get(other).await }
    });
    eventually("a fill in flight holds __cg:lock:anon:task:2", PATIENCE, || async {
        redis.exists("__cg:lock:anon:task:2").await
    })
    .await;
    assert_eq!(slow.await.unwrap().status, 200);
    eventually("the lock is released after the fill", PATIENCE, || async {
        !redis.exists("__cg:lock:anon:task:2").await
    })
    .await;

    let lock = "__cg:lock:anon:task:1";
    let set: Option<String> = redis
        .cmd(&["SET", lock, "token-of-a-dead-instance", "PX", "1000", "NX"])
        .await;
    assert_eq!(set.as_deref(), Some("OK"));

    let locked_at = std::time::Instant::now();
    let get = tokio::spawn({
        let client = Client::new(proxy.addr);
        async move { client.get(PATH).await }
    });
    // Honoured: the GET reaches the backend only once the dead owner's lock
    // is gone. Watch both while the GET is pending. The count is read
    // before the lock, so a forward seen together with the dead token
    // happened while the lock was held. (The GET's own fill takes a lock
    // under the same key, with its own token.)
    while !get.is_finished() {
        let forwarded = backend.count("GET", PATH);
        let holder: Option<String> = redis.cmd(&["GET", lock]).await;
        assert!(
            forwarded == 0 || holder.as_deref() != Some("token-of-a-dead-instance"),
            "the GET reached the backend while the dead owner's lock was held"
        );
        tokio::time::sleep(Duration::from_millis(5)).await; // the polling interval
    }
    // The bound is the behaviour: waiters give up on a lock only after the
    // coalesce timeout (30 s here); answered well within it (15 s, against a
    // lock that expires after 1 s) shows the lock's expiry was noticed.
    let got = tokio::time::timeout(Duration::from_secs(15), get)
        .await
        .expect("a GET behind a dead owner's lock is answered once the lock expired")
        .expect("the GET task");
    // And the forward came no sooner than the lock's PX (a lower bound, which
    // a slow machine cannot break).
    let arrived = *backend.arrivals().last().expect("the GET's forward");
    assert!(
        arrived >= locked_at + Duration::from_millis(1000),
        "the GET was forwarded {:?} after the dead owner's 1 s lock was set",
        arrived - locked_at
    );
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.version(), 1);
    assert_eq!(backend.count("GET", PATH), 1);
    eventually("the GET filled the cache", PATIENCE, || async {
        proxy.stored("task:1", "anon").await
    })
    .await;
    let hit = client.get(PATH).await;
    assert_eq!(hit.x_cache(), Some("HIT"), "{}", hit.cache_status());
    assert_eq!(hit.body, got.body);
    assert_eq!(backend.count("GET", PATH), 1);
    // The dead owner's token was never ours to delete; it only expired.
    assert!(!redis.exists(lock).await);
}

/// The same on a Redis Cluster (3 primaries): the fill lock, its release
/// notice and the fill's four steps go to the primaries serving their
/// slots; 2 × 250 cold GETs still make one backend request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_cluster_make_one_backend_request() {
    let backend = Backend::start().await;
    let cluster = crate::common::topology::RedisCluster::start();
    let text = config(Kind::Memory, &backend, None, None).replace(
        "[store]\nkind = \"memory\"\n",
        &format!(
            "[store]\nkind = \"redis\"\ntimeout_ms = 3000\n\n[redis]\nurl = \"{}\"\npool_size = 8\n",
            cluster.url()
        ),
    );
    assert!(text.contains("redis-cluster://"), "{text}");
    let a = Proxy::start(&text).await;
    let b = Proxy::start(&text).await;
    backend.on("GET", PATH, Reply::new().delay(Duration::from_millis(300)));

    let answers = burst(&[&a, &b], 250, PATH).await;
    let summary = outcomes(&answers);
    let bodies = all_ok(answers, "2 x 250 cold GETs on a cluster");
    assert_eq!(
        backend.count("GET", PATH),
        1,
        "two instances sharing a cluster must make one backend request; outcomes: {summary:?}"
    );
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    for p in [&a, &b] {
        let hit = Client::new(p.addr).get(PATH).await;
        assert_eq!(hit.x_cache(), Some("HIT"));
    }
    assert_eq!(backend.count("GET", PATH), 1);
}
