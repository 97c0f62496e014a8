//! Credential isolation: callers with different credentials never share an
//! entry; anonymous callers never get a credentialed one; `scope = "public"`
//! shares; Redis never holds a raw token; purging a key drops every scope.

use crate::common::framework::Framework;
use crate::common::*;

both_stores!(
    tenants_and_anonymous_callers_never_see_each_others_entries,
    a_cookie_is_a_credential,
    a_public_rule_shares_one_entry,
    purging_a_key_removes_every_scope,
    an_api_key_is_a_credential_by_default,
    a_header_named_like_a_credential_is_never_shared,
);

const A: &[(&str, &str)] = &[("authorization", "Bearer token-a")];
const B: &[(&str, &str)] = &[("authorization", "Bearer token-b")];

async fn tenants_and_anonymous_callers_never_see_each_others_entries(kind: Kind) {
    let w = World::std(kind).await;
    let path = "/api/v1/tasks/1";

    let a1 = w.client.get_h(path, A).await;
    assert_eq!(a1.x_cache(), Some("MISS"));
    assert_eq!(a1.caller(), "Bearer token-a");

    let b1 = w.client.get_h(path, B).await;
    assert_eq!(b1.x_cache(), Some("MISS"), "B must not get A's entry");
    assert_eq!(b1.caller(), "Bearer token-b");

    let anon1 = w.client.get(path).await;
    assert_eq!(anon1.x_cache(), Some("MISS"), "anonymous must not get a tenant's entry");
    assert_eq!(anon1.caller(), "");
    assert_eq!(w.backend.count("GET", path), 3);

    // Each now hits its own entry.
    for _ in 0..2 {
        let a = w.client.get_h(path, A).await;
        assert_eq!(a.x_cache(), Some("HIT"));
        assert_eq!(a.body, a1.body);
        let b = w.client.get_h(path, B).await;
        assert_eq!(b.x_cache(), Some("HIT"));
        assert_eq!(b.body, b1.body);
        let anon = w.client.get(path).await;
        assert_eq!(anon.x_cache(), Some("HIT"));
        assert_eq!(anon.body, anon1.body);
    }
    assert_eq!(w.backend.count("GET", path), 3);

    // A tenant that was served first does not leak to anonymous on another key.
    let path2 = "/api/v1/tasks/2";
    assert_eq!(w.client.get_h(path2, A).await.caller(), "Bearer token-a");
    let anon2 = w.client.get(path2).await;
    assert_eq!(anon2.x_cache(), Some("MISS"));
    assert_eq!(anon2.caller(), "");
    // A HEAD by B never answers from A's entry either.
    let head_b = w.client.head_h(path2, B).await;
    assert_eq!(head_b.x_cache(), Some("MISS"));

    if let Some(redis) = &w.redis {
        let fields = redis.entry_fields("task:1").await;
        let mut want = vec!["anon".to_string(), w.proxy.scope_of(A), w.proxy.scope_of(B)];
        want.sort();
        assert_eq!(fields, want, "one field per scope, in one hash");
        assert_ne!(w.proxy.scope_of(A), w.proxy.scope_of(B));
    }
}

async fn a_cookie_is_a_credential(kind: Kind) {
    let w = World::std(kind).await;
    let path = "/api/v1/tasks/3";
    let anon = w.client.get(path).await;
    assert_eq!(anon.x_cache(), Some("MISS"));

    let c1 = w.client.get_h(path, &[("cookie", "session=one")]).await;
    assert_eq!(
        c1.x_cache(),
        Some("MISS"),
        "a cookie caller must not get the anonymous entry"
    );
    assert_eq!(c1.json()["cookie"], "session=one");
    let c2 = w.client.get_h(path, &[("cookie", "session=two")]).await;
    assert_eq!(c2.x_cache(), Some("MISS"), "another cookie is another caller");
    assert_eq!(c2.json()["cookie"], "session=two");

    let c1_again = w.client.get_h(path, &[("cookie", "session=one")]).await;
    assert_eq!(c1_again.x_cache(), Some("HIT"));
    assert_eq!(c1_again.body, c1.body);
    let anon_again = w.client.get(path).await;
    assert_eq!(anon_again.x_cache(), Some("HIT"));
    assert_eq!(anon_again.json()["cookie"], "");
    assert_eq!(w.backend.count("GET", path), 3);

    // A cookie together with A's token is neither A's scope nor the cookie's.
    let both = w
        .client
        .get_h(path, &[("authorization", "Bearer token-a"), ("cookie", "session=one")])
        .await;
    assert_eq!(both.x_cache(), Some("MISS"));
    assert_eq!(w.backend.count("GET", path), 4);
}

async fn a_public_rule_shares_one_entry(kind: Kind) {
    let template = format!(
        "{HEAD}\n{}",
        r#"
[[rule]]
name = "public-task"
path = '^/api/v1/public/(?P<id>[^/]+)$'
key = "public:{id}"
scope = "public"

[[rule]]
name = "private-task"
path = '^/api/v1/tasks/(?P<id>[^/]+)$'
key = "task:{id}"
"#
    );
    let w = World::start(kind, &template).await;
    let path = "/api/v1/public/1";
    let a = w.client.get_h(path, A).await;
    assert_eq!(a.x_cache(), Some("MISS"));
    let b = w.client.get_h(path, B).await;
    assert_eq!(b.x_cache(), Some("HIT"), "a public rule shares across callers");
    assert_eq!(b.body, a.body);
    let anon = w.client.get(path).await;
    assert_eq!(anon.x_cache(), Some("HIT"));
    assert_eq!(anon.body, a.body);
    let cookie = w.client.get_h(path, &[("cookie", "s=1")]).await;
    assert_eq!(cookie.x_cache(), Some("HIT"));
    assert_eq!(w.backend.count("GET", path), 1);
    assert!(w.proxy.stored("public:1", "public").await);
    if let Some(redis) = &w.redis {
        assert_eq!(redis.entry_fields("public:1").await, vec!["public"]);
    }
    // The credential rule next to it still separates.
    w.client.get_h("/api/v1/tasks/1", A).await;
    assert_eq!(w.client.get_h("/api/v1/tasks/1", B).await.x_cache(), Some("MISS"));
}

async fn purging_a_key_removes_every_scope(kind: Kind) {
    // Keys only (no pattern), so a purge must not need SCAN.
    let template = format!(
        "{HEAD}\n{}",
        r#"
[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"

[[invalidate]]
name = "task-write"
methods = ["PUT", "PATCH", "DELETE"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{task_id}"]
"#
    );
    let w = World::start(kind, &template).await;
    let path = "/api/v1/tasks/1";
    let cookie: &[(&str, &str)] = &[("cookie", "s=1")];
    let callers: [&[(&str, &str)]; 4] = [A, B, &[], cookie];
    for h in callers {
        assert_eq!(w.client.get_h(path, h).await.x_cache(), Some("MISS"));
        assert_eq!(w.client.get_h(path, h).await.x_cache(), Some("HIT"));
    }
    w.client.get("/api/v1/tasks/2").await;
    if let Some(redis) = &w.redis {
        assert_eq!(redis.entry_fields("task:1").await.len(), 4);
    }
    let scans_before = match &w.redis {
        Some(r) => r.command_calls("scan").await,
        None => 0,
    };

    let put = w.client.put(path).await;
    assert_eq!(put.status, 200);

    if let Some(redis) = &w.redis {
        assert_eq!(
            redis.entry_fields("task:1").await,
            Vec::<String>::new(),
            "every scope is gone"
        );
        assert!(
            redis.hkeys("task:1").await.iter().all(|f| f.starts_with("__")),
            "{:?}",
            redis.hkeys("task:1").await
        );
        assert_eq!(
            redis.command_calls("scan").await,
            scans_before,
            "purging a key must not SCAN"
        );
        assert_eq!(redis.entry_fields("task:2").await, vec!["anon"], "other keys stay");
    }
    for h in callers {
        assert!(!w.proxy.stored("task:1", &w.proxy.scope_of(h)).await);
        let r = w.client.get_h(path, h).await;
        assert_eq!(r.x_cache(), Some("MISS"), "{h:?}");
        assert_eq!(r.version(), 2, "{h:?} reads the write");
    }
    assert_eq!(w.client.get("/api/v1/tasks/2").await.x_cache(), Some("HIT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_never_holds_a_raw_token() {
    let w = World::std(Kind::Redis).await;
    // The backend echoes a digest, not the token: anything in Redis that
    // contains the token came from cachegate itself.
    w.backend.hide_caller(true);
    let token = "sekrit-token-9f3b2c";
    let cookie_secret = "cookie-secret-71aa0e";
    let auth = format!("Bearer {token}");
    let cookie = format!("sid={cookie_secret}");
    let headers: &[(&str, &str)] = &[("authorization", &auth), ("cookie", &cookie)];
    for path in ["/api/v1/tasks/1", "/api/v1/tasks/2", "/api/v1/tasks?page=1"] {
        assert_eq!(w.client.get_h(path, headers).await.x_cache(), Some("MISS"));
        assert_eq!(
            w.client.get_h(path, headers).await.x_cache(),
            Some("HIT"),
            "{path} was stored"
        );
        w.client.get_h(path, &[("authorization", &auth)]).await;
        w.client.get_h(path, &[("cookie", &cookie)]).await;
    }
    let dump = w.redis().dump().await;
    assert!(dump.len() >= 3, "{dump:?}");
    for secret in [token, cookie_secret] {
        for (key, parts) in &dump {
            assert!(!key.contains(secret), "key {key} holds a raw credential");
            for p in parts {
                assert!(
                    !String::from_utf8_lossy(p).contains(secret),
                    "{key} holds a raw credential: {:?}",
                    String::from_utf8_lossy(p)
                );
            }
        }
    }
}

/// cachegate in front of the framework-like backend (`common/framework.rs`),
/// with `cache` lines in `[cache]`; the rule caches `/api/v1/tasks/{id}`.
async fn framework_proxy(kind: Kind, cache: &str) -> (Framework, Option<RedisServer>, Proxy, Client) {
    let fw = Framework::start().await;
    let redis = (kind == Kind::Redis).then(RedisServer::start);
    let template = format!(
        "{HEAD}\n[cache]\n{cache}\n\n[[rule]]\nname = \"task\"\npath = '^/api/v1/tasks/(?P<id>[^/]+)$'\nkey = \"task:{{id}}\"\n"
    );
    let text = render(&template, kind, &fw.url(), redis.as_ref().map(|r| r.url()).as_deref());
    let proxy = Proxy::start(&text).await;
    let client = Client::new(proxy.addr);
    (fw, redis, proxy, client)
}

const PRIVATE: &str = "tenant-a's secret task";

async fn an_api_key_is_a_credential_by_default(kind: Kind) {
    let (fw, _redis, proxy, client) = framework_proxy(kind, "").await;
    let path = "/api/v1/tasks/7";
    let a = client.get_h(path, &[("x-api-key", "tenant-a")]).await;
    assert_eq!(a.x_cache(), Some("MISS"));
    assert_eq!(a.json()["data"]["private"], PRIVATE);
    assert_eq!(
        client.get_h(path, &[("x-api-key", "tenant-a")]).await.x_cache(),
        Some("HIT")
    );
    // No credentials: the backend is asked, the public view comes back.
    let anon = client.get(path).await;
    assert_eq!(anon.x_cache(), Some("MISS"));
    assert!(!anon.text().contains("secret"), "{}", anon.text());
    // A bogus key: the backend is asked and refuses.
    let bogus = client.get_h(path, &[("x-api-key", "bogus")]).await;
    assert_eq!(bogus.status, 401);
    assert!(!bogus.text().contains("secret"), "{}", bogus.text());
    // Another spelling of the same header is the same credential.
    let other_case = client.get_h(path, &[("X-API-KEY", "tenant-a")]).await;
    assert_eq!(other_case.x_cache(), Some("HIT"));
    assert_eq!(fw.count(path), 3);
    // And the normal answer for a later anonymous request.
    let anon = client.get(path).await;
    assert_eq!(anon.x_cache(), Some("HIT"));
    assert_eq!(anon.json()["data"]["tenant"], serde_json::Value::Null);
    assert_ne!(proxy.scope_of(&[("x-api-key", "tenant-a")]), "anon");
}

async fn a_header_named_like_a_credential_is_never_shared(kind: Kind) {
    let (fw, _redis, _proxy, client) = framework_proxy(kind, "").await;
    let path = "/api/v1/tasks/8";
    let token = [("x-tenant-token", "tenant-a")];
    let r = client.get_h(path, &token).await;
    assert_eq!(r.cache_status(), "cachegate; fwd=bypass; detail=unlisted-credential");
    assert_eq!(r.json()["data"]["private"], PRIVATE);
    let anon = client.get(path).await;
    assert_eq!(anon.x_cache(), Some("MISS"), "nothing was stored for anonymous callers");
    assert!(!anon.text().contains("secret"), "{}", anon.text());
    // Nor is the anonymous entry served to it.
    let r = client.get_h(path, &token).await;
    assert_eq!(r.x_cache(), Some("BYPASS"));
    assert_eq!(r.json()["data"]["private"], PRIVATE);
    let anon = client.get(path).await;
    assert_eq!(anon.x_cache(), Some("HIT"));
    assert!(!anon.text().contains("secret"), "{}", anon.text());
    assert_eq!(fw.count(path), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_named_like_a_credential_may_be_scoped_or_declared_harmless() {
    let cache = "suspect_credential_headers = \"scope\"\nnon_credential_headers = [\"X-Idempotency-Key\"]";
    let (fw, _redis, _proxy, client) = framework_proxy(Kind::Memory, cache).await;
    let path = "/api/v1/tasks/9";
    let token = [("x-tenant-token", "tenant-a")];
    // "scope": a scope of its own, like a listed credential.
    assert_eq!(client.get_h(path, &token).await.x_cache(), Some("MISS"));
    let again = client.get_h(path, &token).await;
    assert_eq!(again.x_cache(), Some("HIT"));
    assert_eq!(again.json()["data"]["private"], PRIVATE);
    let anon = client.get(path).await;
    assert_eq!(anon.x_cache(), Some("MISS"));
    assert!(!anon.text().contains("secret"));
    // A name declared harmless shares the anonymous entry.
    let harmless = client.get_h(path, &[("x-idempotency-key", "1")]).await;
    assert_eq!(harmless.x_cache(), Some("HIT"));
    assert!(!harmless.text().contains("secret"));
    assert_eq!(fw.count(path), 2);
}
