//! Invalidation: a write purges what it invalidates before the client gets
//! the answer; `when` decides on failures; patterns purge many keys; a
//! captured `*` purges only its literal key.

use crate::common::*;
use std::time::Duration;

both_stores!(
    a_write_then_a_get_returns_the_new_version,
    success_rules_do_not_purge_on_a_500,
    always_rules_purge_on_a_500_and_when_the_backend_is_down,
    patterns_purge_every_matching_key,
    a_literal_star_purges_only_its_own_key,
    a_fill_that_started_before_a_write_does_not_store_the_old_answer,
    by_default_a_write_that_commits_and_answers_500_purges,
    a_write_whose_client_went_away_still_purges,
);

async fn a_write_then_a_get_returns_the_new_version(kind: Kind) {
    let w = World::std(kind).await;
    let path = "/api/v1/tasks/1";
    let other = "/api/v1/tasks/2";
    assert_eq!(w.client.get(path).await.version(), 1);
    assert_eq!(w.client.get(other).await.version(), 1);
    let hit = w.client.get(path).await;
    assert_eq!((hit.x_cache(), hit.version()), (Some("HIT"), 1));

    let mut expected = 1;
    for method in ["PUT", "PATCH", "DELETE"] {
        let write = w.client.method(method, path).await;
        assert_eq!(write.status, 200, "{method}");
        expected += 1;
        assert_eq!(w.backend.version(path), expected);
        let after = w.client.get(path).await;
        assert_eq!(after.x_cache(), Some("MISS"), "{method} purged the entry");
        assert_eq!(after.version(), expected, "{method}: the client reads its own write");
        let again = w.client.get(path).await;
        assert_eq!(
            (again.x_cache(), again.version()),
            (Some("HIT"), expected),
            "{method}: stored again"
        );
    }
    // Another task was not touched.
    let o = w.client.get(other).await;
    assert_eq!((o.x_cache(), o.version()), (Some("HIT"), 1));
    assert_eq!(w.backend.count("GET", other), 1);
}

async fn success_rules_do_not_purge_on_a_500(kind: Kind) {
    let w = World::std(kind).await;
    let path = "/api/v1/tasks/1";
    assert_eq!(w.client.get(path).await.version(), 1);
    // The write takes effect in the backend but answers 500.
    w.backend
        .on("PUT", path, Reply::new().status(500).body("{\"error\":\"boom\"}"));
    let put = w.client.put(path).await;
    assert_eq!(put.status, 500);
    assert_eq!(w.backend.version(path), 2);
    let after = w.client.get(path).await;
    assert_eq!(
        after.x_cache(),
        Some("HIT"),
        "when = success keeps the entry after a 500"
    );
    assert_eq!(after.version(), 1);
    assert_eq!(w.backend.count("GET", path), 1);
    // A 4xx is not a success either.
    w.backend.on("PUT", path, Reply::new().status(409).body("{}"));
    assert_eq!(w.client.put(path).await.status, 409);
    assert_eq!(w.client.get(path).await.x_cache(), Some("HIT"));
    // A 2xx purges.
    w.backend.reset(path);
    assert_eq!(w.client.put(path).await.status, 200);
    let after = w.client.get(path).await;
    assert_eq!((after.x_cache(), after.version()), (Some("MISS"), 4));
}

const ALWAYS: &str = r#"
[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"

[[invalidate]]
name = "task-write"
methods = ["PUT", "PATCH", "DELETE"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{task_id}"]
when = "always"
"#;

async fn always_rules_purge_on_a_500_and_when_the_backend_is_down(kind: Kind) {
    let w = World::start(kind, &format!("{HEAD}\n{ALWAYS}")).await;
    let path = "/api/v1/tasks/1";
    assert_eq!(w.client.get(path).await.version(), 1);
    assert_eq!(w.client.get(path).await.x_cache(), Some("HIT"));

    w.backend.on("PUT", path, Reply::new().status(500).body("{}"));
    assert_eq!(w.client.put(path).await.status, 500);
    let after = w.client.get(path).await;
    assert_eq!(after.x_cache(), Some("MISS"), "when = always purges after a 500");
    assert_eq!(after.version(), 2);
    assert_eq!(w.client.get(path).await.x_cache(), Some("HIT"));
    assert!(w.proxy.stored("task:1", "anon").await);

    // The backend goes away: the write fails with a 502, and still purges.
    w.backend.stop().await;
    let put = w.client.put(path).await;
    assert_eq!(put.status, 502);
    assert_eq!(put.json()["error"], "bad_gateway");
    assert!(
        !w.proxy.stored("task:1", "anon").await,
        "purged although the backend is down"
    );
    if let Some(redis) = &w.redis {
        assert_eq!(redis.entry_fields("task:1").await, Vec::<String>::new());
    }
}

async fn patterns_purge_every_matching_key(kind: Kind) {
    let w = World::std(kind).await;
    let pages = ["/api/v1/tasks?page=1", "/api/v1/tasks?page=2", "/api/v1/tasks"];
    for p in pages {
        assert_eq!(w.client.get(p).await.x_cache(), Some("MISS"), "{p}");
        assert_eq!(w.client.get(p).await.x_cache(), Some("HIT"), "{p}");
    }
    assert_eq!(w.client.get("/api/v1/tasks/1").await.x_cache(), Some("MISS"));
    if let Some(redis) = &w.redis {
        assert_eq!(
            redis.keys("tasks:*").await,
            vec!["tasks:", "tasks:page=1", "tasks:page=2"]
        );
    }

    let epoch_before = match &w.redis {
        Some(r) => r.cmd::<Option<u64>>(&["GET", "__cg:epoch"]).await.unwrap_or(0),
        None => 0,
    };

    // POST /api/v1/tasks purges tasks:* (and nothing else).
    let post = w.client.send("POST", "/api/v1/tasks", &[], full("{}")).await;
    assert_eq!(post.status, 200);
    for p in pages {
        assert_eq!(
            w.client.get(p).await.x_cache(),
            Some("MISS"),
            "{p} purged by the pattern"
        );
    }
    assert_eq!(
        w.client.get("/api/v1/tasks/1").await.x_cache(),
        Some("HIT"),
        "task:1 does not match tasks:*"
    );
    if let Some(redis) = &w.redis {
        let epoch: u64 = redis.cmd::<Option<u64>>(&["GET", "__cg:epoch"]).await.unwrap_or(0);
        assert!(
            epoch > epoch_before,
            "a pattern purge bumps __cg:epoch ({epoch_before} -> {epoch})"
        );
    }

    // A task write purges its key and the lists.
    for p in pages {
        assert_eq!(w.client.get(p).await.x_cache(), Some("HIT"));
    }
    assert_eq!(w.client.put("/api/v1/tasks/1").await.status, 200);
    for p in pages {
        assert_eq!(w.client.get(p).await.x_cache(), Some("MISS"), "{p} purged by PUT");
    }
    assert_eq!(w.client.get("/api/v1/tasks/1").await.x_cache(), Some("MISS"));
}

const STAR: &str = r#"
[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"

[[invalidate]]
name = "task-write"
methods = ["PUT"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{task_id}"]
patterns = ["task:{task_id}", "task:{task_id}:*"]
"#;

async fn a_literal_star_purges_only_its_own_key(kind: Kind) {
    let w = World::start(kind, &format!("{HEAD}\n{STAR}")).await;
    let tasks = [
        "/api/v1/tasks/1",
        "/api/v1/tasks/2",
        "/api/v1/tasks/*",
        "/api/v1/tasks/%2A",
        "/api/v1/tasks/1?x",
    ];
    for p in tasks {
        w.client.get(p).await;
        assert_eq!(w.client.get(p).await.x_cache(), Some("HIT"), "{p}");
    }
    // The regex sees the path as sent: `*` stays `*`, `%2A` stays `%2A`.
    assert_eq!(
        w.backend.last_uri("/api/v1/tasks/*").as_deref(),
        Some("/api/v1/tasks/*")
    );
    assert!(w.proxy.stored("task:*", "anon").await);
    // A substituted value has its `%` (and `:`) percent-encoded in the key.
    assert!(w.proxy.stored("task:%252A", "anon").await);

    let put = w.client.put("/api/v1/tasks/*").await;
    assert_eq!(put.status, 200);
    assert_eq!(w.backend.count("PUT", "/api/v1/tasks/*"), 1);
    assert_eq!(
        w.client.get("/api/v1/tasks/*").await.x_cache(),
        Some("MISS"),
        "its own key is purged"
    );
    for p in ["/api/v1/tasks/1", "/api/v1/tasks/2", "/api/v1/tasks/%2A"] {
        assert_eq!(
            w.client.get(p).await.x_cache(),
            Some("HIT"),
            "PUT /api/v1/tasks/* must not purge {p}"
        );
    }
    if let Some(redis) = &w.redis {
        for k in ["task:1", "task:2", "task:%252A"] {
            assert_eq!(redis.entry_fields(k).await, vec!["anon"], "{k}");
        }
    }

    // The percent-encoded form purges its own (different) key, and only that.
    assert_eq!(w.client.put("/api/v1/tasks/%2A").await.status, 200);
    assert_eq!(w.client.get("/api/v1/tasks/%2A").await.x_cache(), Some("MISS"));
    assert_eq!(w.client.get("/api/v1/tasks/*").await.x_cache(), Some("HIT"));
    assert_eq!(w.client.get("/api/v1/tasks/1").await.x_cache(), Some("HIT"));

    // Other glob characters are literal too: `1*` would match task:1 and
    // `[12]` task:1 and task:2 if they were not escaped.
    for p in ["/api/v1/tasks/1*", "/api/v1/tasks/[12]"] {
        w.client.get(p).await;
        assert_eq!(w.client.put(p).await.status, 200, "{p}");
        assert_eq!(w.client.get(p).await.x_cache(), Some("MISS"), "{p}");
    }
    for p in ["/api/v1/tasks/1", "/api/v1/tasks/2", "/api/v1/tasks/*"] {
        assert_eq!(w.client.get(p).await.x_cache(), Some("HIT"), "{p}");
    }
}

const KEYS_ONLY: &str = r#"
[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"

[[rule]]
name = "task-list"
path = '^/api/v1/tasks$'
key = "tasks:{query}"

[[invalidate]]
name = "task-write"
methods = ["PUT"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{task_id}"]

[[invalidate]]
name = "task-create"
methods = ["POST"]
path = '^/api/v1/tasks$'
patterns = ["tasks:*"]
"#;

/// Starts a GET whose backend answer is made at once but held back, then
/// runs `write` while it is in flight; the GET's old answer must not be
/// stored, so the next GET reads the write.
async fn slow_get_then_write(w: &World, get_path: &str, write_method: &str, write_path: &str) {
    // The backend counts and programs by path, without the query.
    let bare = get_path.split('?').next().unwrap();
    w.backend
        .on("GET", bare, Reply::new().delay(Duration::from_millis(800)));
    let before = w.backend.count("GET", bare);
    let slow_get = tokio::spawn({
        let client = Client::new(w.proxy.addr);
        let get_path = get_path.to_string();
        async move { client.get(&get_path).await }
    });
    eventually("the slow GET reached the backend", PATIENCE, || async move {
        w.backend.count("GET", bare) == before + 1
    })
    .await;

    let write = w.client.send(write_method, write_path, &[], full("{}")).await;
    assert_eq!(write.status, 200);
    let old = slow_get.await.unwrap();
    assert_eq!(old.status, 200);
    assert_ne!(
        old.cache_status(),
        "cachegate; fwd=miss; stored",
        "{get_path}: an answer fetched before the purge must not be stored"
    );
    w.backend.reset(bare);
    let after = w.client.get(get_path).await;
    assert_eq!(after.x_cache(), Some("MISS"), "{get_path}: {}", after.cache_status());
}

/// A GET whose backend answer was made before a write, but arrives after
/// the write's purge, must not store that old answer: the next GET reads
/// the write. Once for a key purge (the key's generation guards it), once
/// for a pattern purge (the purge epoch guards it).
async fn a_fill_that_started_before_a_write_does_not_store_the_old_answer(kind: Kind) {
    let w = World::start(kind, &format!("{HEAD}\n{KEYS_ONLY}")).await;
    let path = "/api/v1/tasks/1";
    slow_get_then_write(&w, path, "PUT", path).await;
    assert_eq!(w.backend.version(path), 2);
    assert_eq!(w.client.get(path).await.version(), 2);

    let list = "/api/v1/tasks?page=1";
    slow_get_then_write(&w, list, "POST", "/api/v1/tasks").await;
    assert_eq!(
        w.client.get(list).await.x_cache(),
        Some("HIT"),
        "the fresh answer is stored"
    );
}

/// A rule that names no `when`, and a cache rule with no invalidation of
/// its own (`/api/v1/notes/{id}`: only the write's own URI purges it).
const DEFAULT_WHEN: &str = r#"
[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"

[[rule]]
name = "note"
path = '^/api/v1/notes/(?P<id>[^/]+)$'
key = "note:{id}"

[[invalidate]]
name = "task-write"
methods = ["PUT", "PATCH", "DELETE"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{task_id}"]
"#;

/// AICtrlNet's PUT commits and then answers 500: with the default `when`
/// the next GET gets the new data, through a rule and through the write's
/// own URI alike; a later normal write and read behave normally.
async fn by_default_a_write_that_commits_and_answers_500_purges(kind: Kind) {
    let w = World::start(kind, &format!("{HEAD}\n{DEFAULT_WHEN}")).await;
    for path in ["/api/v1/tasks/1", "/api/v1/notes/1"] {
        assert_eq!(w.client.get(path).await.version(), 1);
        assert_eq!(w.client.get(path).await.x_cache(), Some("HIT"), "{path}");
        w.backend.on("PUT", path, Reply::new().status(500).body("{}"));
        assert_eq!(w.client.put(path).await.status, 500);
        assert_eq!(w.backend.version(path), 2, "{path}: the backend committed");
        let after = w.client.get(path).await;
        assert_eq!(
            (after.x_cache(), after.version()),
            (Some("MISS"), 2),
            "{path}: a 500 to a write that committed purges by default"
        );
        // Normal service afterwards: stored again, a 200 write purges.
        assert_eq!(w.client.get(path).await.x_cache(), Some("HIT"), "{path}");
        w.backend.reset(path);
        assert_eq!(w.client.put(path).await.status, 200);
        let after = w.client.get(path).await;
        assert_eq!((after.x_cache(), after.version()), (Some("MISS"), 3), "{path}");
    }
}

/// The client gives up while the backend holds the write (which commits):
/// the purge runs anyway, and the next GET gets the new data.
async fn a_write_whose_client_went_away_still_purges(kind: Kind) {
    let w = World::start(kind, &format!("{HEAD}\n{DEFAULT_WHEN}")).await;
    let path = "/api/v1/tasks/1";
    assert_eq!(w.client.get(path).await.version(), 1);
    assert!(w.proxy.stored("task:1", "anon").await);
    w.backend
        .on("PUT", path, Reply::new().delay(Duration::from_secs(2)).body("{}"));
    let client = Client::new(w.proxy.addr);
    let put = tokio::spawn(async move { client.put("/api/v1/tasks/1").await });
    eventually("the backend got the write", PATIENCE, || async {
        w.backend.count("PUT", path) == 1
    })
    .await;
    // The client goes away (its connection closes) before the answer.
    put.abort();
    let _ = put.await;
    eventually(
        "the write's purge ran although its client went away",
        PATIENCE,
        || async { !w.proxy.stored("task:1", "anon").await },
    )
    .await;
    let after = w.client.get(path).await;
    assert_eq!((after.x_cache(), after.version()), (Some("MISS"), 2));
    assert_eq!(w.client.get(path).await.x_cache(), Some("HIT"));
}
