//! Rules: the first matching rule decides; key templates render captures,
//! query parameters and headers into the Redis key; config mistakes are
//! reported at their line and column.

use crate::common::*;
use cachegate::config::{Config, Overrides};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_matching_rule_wins() {
    let template = format!(
        "{HEAD}\n{}",
        r#"
[[rule]]
name = "head-only"
methods = ["HEAD"]
path = '^/api/v1/tasks/(?P<id>[^/]+)$'
key = "head-only:{id}"

[[rule]]
name = "special"
path = '^/api/v1/tasks/special$'
key = "special"

[[rule]]
name = "first"
path = '^/api/v1/tasks/(?P<id>[^/]+)$'
key = "first:{id}"

[[rule]]
name = "second"
path = '^/api/v1/tasks/(?P<id>[^/]+)$'
key = "second:{id}"
"#
    );
    let w = World::start(Kind::Redis, &template).await;
    let redis = w.redis();

    assert_eq!(w.client.get("/api/v1/tasks/7").await.x_cache(), Some("MISS"));
    assert_eq!(w.client.get("/api/v1/tasks/special").await.x_cache(), Some("MISS"));
    assert_eq!(redis.keys("first:*").await, vec!["first:7"]);
    assert_eq!(redis.keys("special").await, vec!["special"]);
    assert!(redis.keys("second:*").await.is_empty(), "a later rule must not apply");
    assert!(
        redis.keys("head-only:*").await.is_empty(),
        "a rule for other methods must not apply"
    );
    assert_eq!(redis.key_type("first:7").await, "hash");
    assert_eq!(redis.entry_fields("first:7").await, vec!["anon"]);

    // HEAD matches the HEAD-only rule first.
    w.client.head("/api/v1/tasks/9").await;
    assert_eq!(redis.keys("head-only:*").await, vec!["head-only:9"]);
    assert!(redis.keys("first:9").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_render_captures_query_and_headers_under_the_prefix() {
    let template = r#"
[backend]
url = "{backend}"

[store]
kind = "redis"
timeout_ms = 100

[redis]
url = "{redis}"
key_prefix = "cg:"

[[rule]]
name = "project-tasks"
path = '^/api/v1/projects/(?P<project>[^/]+)/tasks$'
key = "proj:{project}:page={query.page}:tenant={header.X-Tenant}:{method}"
"#;
    let w = World::start(Kind::Redis, template).await;
    let redis = w.redis();

    let resp = w
        .client
        .get_h("/api/v1/projects/p9/tasks?x=1&page=3", &[("x-tenant", "acme")])
        .await;
    assert_eq!(resp.x_cache(), Some("MISS"));
    let key = "cg:proj:p9:page=3:tenant=acme:GET";
    // The fill lock (`cg:__cg:lock:...`) may still be on its way out.
    let records: Vec<String> = redis
        .keys("*proj*")
        .await
        .into_iter()
        .filter(|k| !k.starts_with("cg:__cg:"))
        .collect();
    assert_eq!(records, vec![key]);
    assert_eq!(redis.key_type(key).await, "hash");
    let fields = redis.hgetall(key).await;
    assert!(fields.contains_key("anon"), "{:?}", fields.keys());
    assert_eq!(fields.get("__cg").map(|v| &v[..]), Some(&b"1"[..]));

    // Percent-decoded query values; a missing header renders empty; each a key of its own.
    w.client.get("/api/v1/projects/p9/tasks?page=a%20b").await;
    assert!(
        redis.exists("cg:proj:p9:page=a b:tenant=:GET").await,
        "{:?}",
        redis.keys("*").await
    );
    w.client
        .get_h("/api/v1/projects/p9/tasks?page=3", &[("x-tenant", "globex")])
        .await;
    assert!(redis.exists("cg:proj:p9:page=3:tenant=globex:GET").await);

    // Each renders to its own entry: the acme one is a hit, the backend saw 3.
    let again = w
        .client
        .get_h("/api/v1/projects/p9/tasks?page=3", &[("x-tenant", "acme")])
        .await;
    assert_eq!(again.x_cache(), Some("HIT"));
    assert_eq!(w.backend.total(), 3);
    // Logical keys through the store API carry no prefix.
    assert!(w.proxy.stored("proj:p9:page=3:tenant=acme:GET", "anon").await);
}

/// 1-based line and column of the first occurrence of `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let offset = text.find(needle).expect("needle in text");
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = offset - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

#[test]
fn an_unknown_capture_fails_with_line_and_column() {
    let text = r#"[backend]
url = "http://127.0.0.1:8000"

[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<id>[^/]+)$'
key = "task:{task_id}"
"#;
    let err = Config::from_toml_str(text).expect_err("an unknown capture must not load");
    let msg = err.to_string();
    let (line, col) = position_of(text, "\"task:{task_id}\"");
    assert_eq!((line, col), (7, 7));
    assert!(
        msg.starts_with(&format!("<inline>:{line}:{col}: ")),
        "expected the error at {line}:{col}: {msg}"
    );
    assert!(msg.contains("task_id"), "{msg}");
    assert!(msg.contains("id"), "names the groups there are: {msg}");

    // The same through a named file, and in an invalidation pattern.
    let text = r#"[backend]
url = "http://127.0.0.1:8000"

[[invalidate]]
name = "w"
methods = ["PUT"]
path = '^/t/(?P<id>\d+)$'
keys = ["t:{id}"]
patterns = ["t:{nope}*"]
"#;
    let err = Config::from_toml(text, "proxy.toml", &|_| None, &Overrides::default()).unwrap_err();
    let (line, col) = position_of(text, "\"t:{nope}*\"");
    assert_eq!(err.position, Some((line, col)), "{err}");
    assert!(
        err.to_string().starts_with(&format!("proxy.toml:{line}:{col}: ")),
        "{err}"
    );
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn statuses_may_not_name_5xx() {
    let text = r#"[[rule]]
name = "task"
path = '^/t/(?P<id>\d+)$'
key = "t:{id}"
statuses = [200, 503]
"#;
    let err = Config::from_toml_str(text).unwrap_err();
    let (line, col) = position_of(text, "[200, 503]");
    assert_eq!(err.position, Some((line, col)), "{err}");
}
