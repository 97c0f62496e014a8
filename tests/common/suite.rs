//! The cache-behaviour suite run against each Redis deployment (cluster,
//! Sentinel, TLS): [`run_all`] takes the body of a `[redis]` section.
//! Every case uses its own key prefix, so they share one deployment.

use super::*;
use serde_json::Value;
use std::sync::Arc;

/// The admin token holding every scope.
pub const TOKEN: &str = "suite-admin-token-0123456789abcdef";

const RULES: &str = r#"
[[rule]]
name = "task"
methods = ["GET", "HEAD"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"
ttl = 300
tags = ["tasks", "task:{task_id}"]

[[rule]]
name = "task-list"
path = '^/api/v1/tasks$'
key = "tasks:{query}"
ttl = 60

[[invalidate]]
name = "task-write"
methods = ["PUT", "PATCH", "DELETE"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{task_id}"]
patterns = ["tasks:*"]

[[invalidate]]
name = "task-create"
methods = ["POST"]
path = '^/api/v1/tasks$'
patterns = ["tasks:*"]

[[invalidate]]
name = "task-complete"
methods = ["POST"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)/complete$'
tags = ["task:{task_id}"]
"#;

/// Enterprise edition (every admin route), one all-scope token, the Redis
/// section given plus `key_prefix`, and [`RULES`].
pub fn config(backend: &Backend, redis_section: &str, prefix: &str) -> String {
    format!(
        "edition = \"enterprise\"\n\n[backend]\nurl = \"{}\"\ntimeout_ms = 5000\n\n\
         [store]\nkind = \"redis\"\ntimeout_ms = 2000\n\n[redis]\n{redis_section}\nkey_prefix = \"{prefix}\"\npool_size = 4\n\n\
         {}{RULES}",
        backend.url(),
        crate::common::admin::token_toml("all", TOKEN, crate::common::admin::EVERY_SCOPE)
    )
}

pub struct Env {
    pub backend: Backend,
    pub proxy: Proxy,
    pub client: Arc<Client>,
}

impl Env {
    pub async fn start(redis_section: &str, prefix: &str) -> Env {
        let backend = Backend::start().await;
        let proxy = Proxy::start(&config(&backend, redis_section, prefix)).await;
        assert!(
            proxy.gateway().store().is_up(),
            "the store is up at start ({redis_section})"
        );
        let client = Arc::new(Client::new(proxy.addr));
        Env { backend, proxy, client }
    }

    /// An admin call with the all-scope token; 200 expected; its JSON.
    pub async fn admin(&self, method: &str, path: &str) -> Value {
        let r = self
            .client
            .send(
                method,
                &format!("/api/v1/cache/{path}"),
                &[("authorization", &format!("Bearer {TOKEN}"))],
                empty(),
            )
            .await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        r.json()
    }

    pub async fn keys_found(&self, pattern: &str) -> u64 {
        self.admin("GET", &format!("keys?pattern={pattern}&limit=1000")).await["total_found"]
            .as_u64()
            .expect("total_found")
    }

    /// GETs `path` until it is a HIT (a fill lands after its response).
    pub async fn until_hit(&self, path: &str) {
        self.client.until_hit(path, &[]).await
    }
}

/// The failover tests' common part: `n` task paths cached, then `failover`
/// run under steady requests from 4 workers, every one of which must be a
/// 200 (fail open). The paths, for the caller to check caching resumes.
pub async fn fail_over_under_load(e: &Env, n: usize, failover: impl Future<Output = ()>) -> Vec<String> {
    let paths: Vec<String> = (0..n).map(|i| format!("/api/v1/tasks/f{i}")).collect();
    for p in &paths {
        e.client.get(p).await;
        e.until_hit(p).await;
    }
    let load = {
        let paths = paths.clone();
        SteadyLoad::start(e.proxy.addr, 4, Duration::from_millis(5), move |w, n| {
            paths[(w + n as usize) % paths.len()].clone()
        })
    };
    load.run_for(50, "some requests before the failover").await;
    failover.await;
    load.run_for(100, "requests after the failover").await;
    let (_, failures) = load.finish().await;
    assert!(failures.is_empty(), "every request succeeds (fail open): {failures:?}");
    paths
}

/// Runs every case in turn, each under its own key prefix.
pub async fn run_all(redis_section: &str) {
    a_hit_never_reaches_the_backend(redis_section).await;
    a_write_purges_and_no_fill_from_before_it_stores(redis_section).await;
    pattern_purge_reaches_every_slot(redis_section).await;
    tags_purge_what_they_index(redis_section).await;
    credentials_get_scopes_of_their_own(redis_section).await;
    admin_routes_see_every_primary(redis_section).await;
    two_instances_coalesce_on_one_fill(redis_section).await;
}

pub async fn a_hit_never_reaches_the_backend(redis: &str) {
    let e = Env::start(redis, "hit:").await;
    let path = "/api/v1/tasks/1";
    let first = e.client.get(path).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.x_cache(), Some("MISS"));
    e.until_hit(path).await;
    for _ in 0..5 {
        let r = e.client.get(path).await;
        assert_eq!(r.x_cache(), Some("HIT"));
        assert_eq!(r.serial(), first.serial(), "a hit is the stored answer");
    }
    assert_eq!(e.backend.count("GET", path), 1, "hits never reach the backend");
}

pub async fn a_write_purges_and_no_fill_from_before_it_stores(redis: &str) {
    let e = Env::start(redis, "write:").await;
    let path = "/api/v1/tasks/7";
    e.client.get(path).await;
    e.until_hit(path).await;
    assert_eq!(e.client.put(path).await.status, 200);
    let after = e.client.get(path).await;
    assert_eq!(after.x_cache(), Some("MISS"), "a write purges its task");
    assert_eq!(e.backend.count("GET", path), 2);

    // A fill in flight when a write purges must not store its old body:
    // a key purge (generation), a pattern purge (epoch) and a tag purge
    // (epoch, tag index) each stop it, on a cluster across slots too.
    slow_fill_then(&e, "/api/v1/tasks/race", "PUT", "/api/v1/tasks/race").await;
    slow_fill_then(&e, "/api/v1/tasks?page=race", "POST", "/api/v1/tasks").await;
    slow_fill_then(&e, "/api/v1/tasks/race2", "POST", "/api/v1/tasks/race2/complete").await;
}

/// GETs `path` from a slow backend; while that fill is in flight, sends
/// `method write`; then `path` must still be a miss.
async fn slow_fill_then(e: &Env, path: &str, method: &str, write: &str) {
    // The backend programs and counts by path, without the query.
    let bare = path.split('?').next().unwrap_or(path);
    e.backend
        .on("GET", bare, Reply::new().delay(Duration::from_millis(700)));
    let c = e.client.clone();
    let owned = path.to_string();
    let fill = tokio::spawn(async move { c.get(&owned).await });
    eventually("the slow fill to reach the backend", PATIENCE, || async {
        e.backend.count("GET", bare) == 1
    })
    .await;
    assert_eq!(e.client.method(method, write).await.status, 200, "{method} {write}");
    let old = fill.await.expect("fill task");
    assert_eq!(old.status, 200);
    e.backend.reset(bare);
    let next = e.client.get(path).await;
    assert_eq!(
        next.x_cache(),
        Some("MISS"),
        "{path}: the fill that started before {method} {write} must not have stored"
    );
    assert_eq!(e.backend.count("GET", bare), 2);
}

pub async fn pattern_purge_reaches_every_slot(redis: &str) {
    let e = Env::start(redis, "pattern:").await;
    let n = 24;
    let paths: Vec<String> = (0..n).map(|i| format!("/api/v1/tasks?page={i}")).collect();
    for p in &paths {
        assert_eq!(e.client.get(p).await.x_cache(), Some("MISS"));
    }
    for p in &paths {
        e.until_hit(p).await;
    }
    assert_eq!(e.keys_found("tasks:*").await, n as u64);
    let before = e.backend.count_path("/api/v1/tasks");
    assert_eq!(e.client.method("POST", "/api/v1/tasks").await.status, 200);
    assert_eq!(
        e.keys_found("tasks:*").await,
        0,
        "the pattern purge visits every primary"
    );
    for p in &paths {
        let r = e.client.get(p).await;
        assert_eq!(r.x_cache(), Some("MISS"), "{p} after the purge: {:?}", r.headers);
    }
    // n list GETs after the purge, plus the POST itself.
    assert_eq!(e.backend.count_path("/api/v1/tasks"), before + n as u64 + 1);
}

pub async fn tags_purge_what_they_index(redis: &str) {
    let e = Env::start(redis, "tags:").await;
    let paths: Vec<String> = (10..20).map(|i| format!("/api/v1/tasks/{i}")).collect();
    for p in &paths {
        e.client.get(p).await;
        e.until_hit(p).await;
    }
    assert_eq!(e.client.method("POST", "/api/v1/tasks/12/complete").await.status, 200);
    for p in &paths {
        let want = if p.ends_with("/12") { "MISS" } else { "HIT" };
        assert_eq!(
            e.client.get(p).await.x_cache(),
            Some(want),
            "{p} after the task:12 tag purge"
        );
    }
    e.until_hit("/api/v1/tasks/12").await;
    let cleared = e.admin("DELETE", "clear?tag=tasks").await;
    assert!(
        cleared["deleted"].as_u64().unwrap_or(0) >= 10,
        "clear?tag=tasks: {cleared}"
    );
    for p in &paths {
        assert_eq!(
            e.client.get(p).await.x_cache(),
            Some("MISS"),
            "{p} after clear?tag=tasks"
        );
    }
}

pub async fn credentials_get_scopes_of_their_own(redis: &str) {
    let e = Env::start(redis, "scopes:").await;
    let path = "/api/v1/tasks/s";
    let a = [("authorization", "Bearer alice")];
    let b = [("authorization", "Bearer bob")];
    let first_a = e.client.get_h(path, &a).await;
    assert_eq!(first_a.x_cache(), Some("MISS"));
    eventually("alice's entry to be a HIT", PATIENCE, || async {
        e.client.get_h(path, &a).await.x_cache() == Some("HIT")
    })
    .await;
    let first_b = e.client.get_h(path, &b).await;
    assert_eq!(first_b.x_cache(), Some("MISS"), "bob never gets alice's entry");
    assert_ne!(first_b.serial(), first_a.serial());
    let again_a = e.client.get_h(path, &a).await;
    assert_eq!(again_a.serial(), first_a.serial());
    let anon = e.client.get(path).await;
    assert_eq!(
        anon.x_cache(),
        Some("MISS"),
        "anonymous callers never get a credentialed entry"
    );
    assert_eq!(e.backend.count("GET", path), 3);
}

pub async fn admin_routes_see_every_primary(redis: &str) {
    let e = Env::start(redis, "admin:").await;
    let n = 30u64;
    for i in 0..n {
        let p = format!("/api/v1/tasks/a{i}");
        e.client.get(&p).await;
        e.until_hit(&p).await;
    }
    assert_eq!(e.keys_found("task:*").await, n);
    let record = e.admin("GET", "key/task:a3").await;
    assert_eq!(record["key"], "task:a3", "{record}");
    let stats = e.admin("GET", "stats").await;
    assert!(
        stats["stats"]["total_keys"].as_u64().unwrap_or(0) >= n,
        "total_keys counts every primary: {stats}"
    );
    eventually("fleet-wide hit counters", PATIENCE, || async {
        let s = e.admin("GET", "stats").await;
        s["stats"]["hits"].as_u64().unwrap_or(0) >= n
    })
    .await;
    let deleted = e.admin("DELETE", "key/task:a3").await;
    assert_eq!(deleted["deleted"], 1, "{deleted}");
    let cleared = e.admin("DELETE", "clear").await;
    assert_eq!(
        cleared["deleted"].as_u64(),
        Some(n - 1),
        "clear removes every record: {cleared}"
    );
    assert_eq!(e.keys_found("task:*").await, 0);
}

pub async fn two_instances_coalesce_on_one_fill(redis: &str) {
    let e = Env::start(redis, "coalesce:").await;
    let other = Proxy::start(&config(&e.backend, redis, "coalesce:")).await;
    // Both instances connected (TLS handshakes can outlast Proxy::start's
    // wait): an instance without its store forwards uncached.
    eventually("the second instance's store to be up", PATIENCE, || async {
        other.gateway().store().is_up() && e.proxy.gateway().store().is_up()
    })
    .await;
    let path = "/api/v1/tasks/coalesce";
    // A slow backend: every request reaches its instance (and its lookup
    // and lock attempt are done) long before the one fill lands, even on a
    // loaded machine; a request arriving after the fill would be a hit.
    e.backend
        .on("GET", path, Reply::new().delay(Duration::from_millis(1500)));
    let clients = [Arc::new(Client::new(e.proxy.addr)), Arc::new(Client::new(other.addr))];
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = clients[i % 2].clone();
        tasks.push(tokio::spawn(async move { c.get(path).await }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("request task").status, 200);
    }
    assert_eq!(
        e.backend.count("GET", path),
        1,
        "two instances on one store make one backend request"
    );
}
