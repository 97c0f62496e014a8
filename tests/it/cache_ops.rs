//! Operator tools on the cache: `CACHE_TTL` as the default TTL of rules
//! that set none (and `check` naming each rule's TTL source), `PURGE` of
//! one URL on the main listener, the opt-in `X-Cache-Key` header, and
//! `cachegate inspect`.

use crate::common::*;
use std::process::Command;

/// Runs the binary with `CACHE_TTL` set (or removed, for `None`).
fn cachegate(args: &[&str], cache_ttl: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachegate"));
    cmd.args(args)
        .env("CACHEGATE_ADMIN_TOKEN", "test-token")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST")
        .env_remove("REDIS_PORT")
        .env_remove("REDIS_DB")
        .env_remove("CACHEGATE_LISTEN");
    match cache_ttl {
        Some(v) => cmd.env("CACHE_TTL", v),
        None => cmd.env_remove("CACHE_TTL"),
    };
    let out = cmd.output().expect("run cachegate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `check` line of one rule.
fn rule_line<'a>(stdout: &'a str, name: &str) -> &'a str {
    let start = format!("rule {name:?}:");
    stdout
        .lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("no line for rule {name}: {stdout}"))
}

/// The shipped configs leave the task rule's TTL to `CACHE_TTL`, then
/// `[redis] default_ttl`; `check` says which one each rule uses.
#[test]
fn check_prints_each_rules_ttl_and_its_source() {
    for file in [
        "proxy.toml",
        "config/community.toml",
        "config/business.toml",
        "config/enterprise.toml",
    ] {
        let (code, stdout, stderr) = cachegate(&["check", "--config", file], Some("7"));
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(
            rule_line(&stdout, "task").contains("ttl 7s (CACHE_TTL env)"),
            "{file}: {stdout}"
        );
        assert!(
            rule_line(&stdout, "task-list").contains("ttl 60s (rule)"),
            "{file}: a rule's own ttl wins over CACHE_TTL: {stdout}"
        );
        let (code, stdout, stderr) = cachegate(&["check", "--config", file], None);
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(
            rule_line(&stdout, "task").contains("ttl 300s ([redis] default_ttl)"),
            "{file}: {stdout}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, "[[rule]]\nname = \"r\"\npath = '^/r$'\nkey = \"r\"\n").unwrap();
    let (code, stdout, stderr) = cachegate(&["check", "--config", &bare.display().to_string()], None);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        rule_line(&stdout, "r").contains("ttl 300s (built-in default)"),
        "{stdout}"
    );
}

#[test]
fn a_bad_cache_ttl_is_a_config_error() {
    for bad in ["abc", "0", "-5", "1.5"] {
        let (code, _, stderr) = cachegate(&["check", "--config", "proxy.toml"], Some(bad));
        assert_eq!(code, 2, "CACHE_TTL={bad}: {stderr}");
        assert!(
            stderr.contains("CACHE_TTL") && stderr.contains("positive number of seconds"),
            "CACHE_TTL={bad}: {stderr}"
        );
    }
}

const TTL_RULES: &str = r#"
[[rule]]
name = "defaulted"
path = '^/d/(?P<id>[^/]+)$'
key = "d:{id}"

[[rule]]
name = "own"
path = '^/o/(?P<id>[^/]+)$'
key = "o:{id}"
ttl = 120
"#;

fn cache_ttl_7(name: &str) -> Option<String> {
    match name {
        "CACHE_TTL" => Some("7".to_string()),
        _ => admin::test_env(name),
    }
}

/// What Redis holds: a rule without `ttl` stores for `CACHE_TTL`
/// seconds; one with its own `ttl` ignores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_ttl_is_the_ttl_of_rules_without_one() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let text = render(
        &format!("{HEAD}\n{TTL_RULES}"),
        Kind::Redis,
        &backend.url(),
        Some(&redis.url()),
    );
    let proxy = Proxy::start_with_env(&text, cache_ttl_7).await;
    let client = proxy.client();
    for path in ["/d/1", "/o/1"] {
        backend.on("GET", path, Reply::new().body("x"));
        assert_eq!(client.get(path).await.x_cache(), Some("MISS"));
        assert_eq!(client.get(path).await.x_cache(), Some("HIT"));
    }
    let defaulted = redis.pttl("d:1").await;
    assert!((1..=7_000).contains(&defaulted), "CACHE_TTL=7: pttl {defaulted}");
    let own = redis.pttl("o:1").await;
    assert!((100_000..=120_000).contains(&own), "ttl = 120 kept: pttl {own}");
}

both_stores!(
    purge_by_url_removes_every_scope_and_variant_and_is_never_forwarded,
    purge_method_is_configurable_and_can_be_disabled,
    x_cache_key_is_off_by_default_and_shown_when_enabled,
);

/// One credential-scoped rule whose backend varies on `Accept-Language`,
/// with the tests' admin tokens.
fn purge_config(extra: &str) -> String {
    format!(
        "{HEAD}\n{extra}\n{}\n{}",
        admin::tokens_toml(),
        r#"
[[rule]]
name = "task"
path = '^/t/(?P<id>[^/]+)$'
key = "task:{id}"
ttl = 300

[[rule]]
name = "doc"
path = '^/doc/(?P<id>[^/]+)$'
key = "doc:{id}"
ttl = 300
scope = "public"
"#
    )
}

/// The requests whose entries a purge of `/t/1` must remove: the shared
/// (`anon`) entry in two `Vary` variants, and two callers' own entries.
const CALLERS: [&[(&str, &str)]; 4] = [
    &[("accept-language", "en")],
    &[("accept-language", "de")],
    &[("authorization", "Bearer alice"), ("accept-language", "en")],
    &[("authorization", "Bearer bob"), ("accept-language", "en")],
];

fn purge_header(token: &str) -> String {
    format!("Bearer {token}")
}

async fn purge_by_url_removes_every_scope_and_variant_and_is_never_forwarded(kind: Kind) {
    let w = World::start(kind, &purge_config("")).await;
    w.backend.on(
        "GET",
        "/t/1",
        Reply::new().header("vary", "accept-language").body("task one"),
    );
    w.backend.on("GET", "/t/2", Reply::new().body("task two"));
    for headers in CALLERS {
        assert_eq!(
            w.client.get_h("/t/1", headers).await.x_cache(),
            Some("MISS"),
            "{headers:?}"
        );
    }
    w.client.get("/t/2").await;
    for headers in CALLERS {
        w.client.until_hit("/t/1", headers).await;
    }
    w.client.until_hit("/t/2", &[]).await;
    let fetched = w.backend.count("GET", "/t/1");
    assert_eq!(fetched, 4);

    // Refused: no token, a token without the purge scope, another host.
    let r = w.client.send("PURGE", "/t/1", &[], empty()).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "unauthorized");
    assert!(r.header("www-authenticate").is_some());
    let read = purge_header(admin::READ);
    let r = w
        .client
        .send("PURGE", "/t/1", &[("authorization", &read)], empty())
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "insufficient_scope");
    let request = format!(
        "PURGE http://elsewhere.example/t/1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        w.proxy.addr,
        admin::PURGE
    );
    let reply = raw_exchange(w.proxy.addr, request.as_bytes(), PATIENCE).await;
    let answers = reply.responses();
    assert_eq!(answers.len(), 1, "{}", reply.text());
    assert_eq!(answers[0].status, 400, "another host's URL: {}", reply.text());
    assert!(String::from_utf8_lossy(&answers[0].body).contains("other_host"));
    for headers in CALLERS {
        assert_eq!(
            w.client.get_h("/t/1", headers).await.x_cache(),
            Some("HIT"),
            "refused purges purge nothing"
        );
    }

    // The purge: every scope and variant of the key, nothing else.
    let purge = purge_header(admin::PURGE);
    let r = w
        .client
        .send("PURGE", "/t/1", &[("authorization", &purge)], empty())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["purged"], true, "{body}");
    assert_eq!(body["key"], "task:1", "{body}");
    assert_eq!(body["entries"], 1, "one logical key held entries: {body}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    for headers in CALLERS {
        let again = w.client.get_h("/t/1", headers).await;
        assert_eq!(again.x_cache(), Some("MISS"), "{headers:?} after the purge");
        assert_eq!(again.text(), "task one");
    }
    assert_eq!(w.backend.count("GET", "/t/1"), fetched + 4, "each entry fetched again");
    assert_eq!(w.client.get("/t/2").await.x_cache(), Some("HIT"), "another URL is kept");

    // Nothing left to purge; a URL no rule caches.
    w.client
        .send("PURGE", "/t/3", &[("authorization", &purge)], empty())
        .await;
    let r = w
        .client
        .send("PURGE", "/t/3", &[("authorization", &purge)], empty())
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["purged"], false);
    let r = w
        .client
        .send("PURGE", "/uncached/x", &[("authorization", &purge)], empty())
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"], "no_rule");

    assert_eq!(w.backend.count_path("/t/1") - w.backend.count("GET", "/t/1"), 0);
    assert_eq!(w.backend.count("PURGE", "/t/1"), 0, "a PURGE never reaches the backend");
    assert_eq!(w.backend.count("PURGE", "/t/3"), 0);
    assert_eq!(w.backend.count("PURGE", "/uncached/x"), 0);
    let scrape = admin::scrape(&w.client).await;
    assert!(
        scrape.sum("cachegate_purges_total", &[("kind", "url")]) >= 2.0,
        "purges by URL are counted"
    );
}

async fn purge_method_is_configurable_and_can_be_disabled(kind: Kind) {
    let w = World::start(kind, &purge_config("[admin]\npurge_method = \"BAN\"\n")).await;
    w.backend.on("GET", "/doc/1", Reply::new().body("doc"));
    w.client.get("/doc/1").await;
    w.client.until_hit("/doc/1", &[]).await;
    let purge = purge_header(admin::PURGE);
    // PURGE is now an ordinary unsafe method: forwarded (and, as any
    // write, it invalidates its own URI, RFC 9111 §4.4).
    w.client
        .send("PURGE", "/doc/1", &[("authorization", &purge)], empty())
        .await;
    assert_eq!(w.backend.count("PURGE", "/doc/1"), 1);
    w.client.until_hit("/doc/1", &[]).await;
    let r = w
        .client
        .send("BAN", "/doc/1", &[("authorization", &purge)], empty())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["key"], "doc:1");
    assert_eq!(w.client.get("/doc/1").await.x_cache(), Some("MISS"));
    assert_eq!(w.backend.count("BAN", "/doc/1"), 0);

    let off = World::start(kind, &purge_config("[admin]\npurge_method = \"\"\n")).await;
    off.backend.on("GET", "/doc/1", Reply::new().body("doc"));
    off.client.get("/doc/1").await;
    off.client.until_hit("/doc/1", &[]).await;
    off.client
        .send("PURGE", "/doc/1", &[("authorization", &purge)], empty())
        .await;
    assert_eq!(off.backend.count("PURGE", "/doc/1"), 1, "disabled: forwarded");
}

async fn x_cache_key_is_off_by_default_and_shown_when_enabled(kind: Kind) {
    let alice = [("authorization", "Bearer alice")];
    for (setting, shared_shown, private_shown) in [
        ("", false, false),
        ("[cache]\ndebug_key_header = \"off\"\n", false, false),
        ("[cache]\ndebug_key_header = \"private\"\n", false, true),
        ("[cache]\ndebug_key_header = \"all\"\n", true, true),
    ] {
        let w = World::start(kind, &purge_config(setting)).await;
        w.backend.on("GET", "/t/1", Reply::new().body("task"));
        w.backend.on("GET", "/doc/1", Reply::new().body("doc"));
        for _ in 0..2 {
            let public = w.client.get("/doc/1").await;
            let anonymous = w.client.get("/t/1").await;
            let own = w.client.get_h("/t/1", &alice).await;
            assert_eq!(
                public.header("x-cache-key").is_some(),
                shared_shown,
                "{setting}: public"
            );
            assert_eq!(
                anonymous.header("x-cache-key").is_some(),
                shared_shown,
                "{setting}: anon"
            );
            assert_eq!(
                own.header("x-cache-key"),
                private_shown.then_some("task:1"),
                "{setting}: credential"
            );
            if shared_shown {
                assert_eq!(public.header("x-cache-key"), Some("doc:1"));
            }
        }
    }
}

/// Redis down: the purge answers 503 with JSON saying so (never a crash,
/// never forwarded), is kept, and is applied once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_url_with_the_store_down_is_queued_and_applied_later() {
    let w = World::start(Kind::Redis, &purge_config("")).await;
    w.backend.on("GET", "/doc/1", Reply::new().body("doc"));
    w.client.get("/doc/1").await;
    w.client.until_hit("/doc/1", &[]).await;
    w.redis().kill();
    let purge = purge_header(admin::PURGE);
    let r = w
        .client
        .send("PURGE", "/doc/1", &[("authorization", &purge)], empty())
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "store_unavailable", "{body}");
    assert_eq!(body["queued"], true, "{body}");
    assert_eq!(w.backend.count("PURGE", "/doc/1"), 0);
    w.redis().restart();
    eventually("the kept purge is applied", PATIENCE, || async {
        !w.redis().exists("doc:1").await
    })
    .await;
    let fetched = w.backend.count("GET", "/doc/1");
    eventually("the URL is filled again", PATIENCE, || async {
        w.client.get("/doc/1").await.x_cache() == Some("HIT")
    })
    .await;
    assert!(
        w.backend.count("GET", "/doc/1") > fetched,
        "fetched again after the purge"
    );
}

#[test]
fn bad_purge_method_or_debug_key_header_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    for (text, says) in [
        ("[admin]\npurge_method = \"GET\"\n", "purge_method"),
        ("[cache]\ndebug_key_header = \"yes\"\n", "debug_key_header"),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let (code, _, stderr) = cachegate(&["check", "--config", &file.display().to_string()], None);
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("bad.toml:2:"),
            "{text}: {stderr}"
        );
    }
}

/// `cachegate inspect KEY` reads an entry from the config's Redis: its
/// scope fields, status, TTL, headers and body (cut and flagged when long).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_what_a_key_holds() {
    let w = World::start(Kind::Redis, &purge_config("")).await;
    let long = "x".repeat(5000);
    w.backend.on(
        "GET",
        "/t/1",
        Reply::new()
            .header("content-type", "application/json")
            .body(r#"{"id":"1","name":"Sample Task"}"#),
    );
    w.backend.on("GET", "/t/2", Reply::new().body(long.clone()));
    w.client.until_hit("/t/1", &[]).await;
    w.client.until_hit("/t/1", &[("authorization", "Bearer alice")]).await;
    w.client.until_hit("/t/2", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inspect.toml");
    std::fs::write(
        &file,
        "[store]\nkind = \"redis\"\n\n[redis]\nurl = \"redis://127.0.0.1:1\"\n",
    )
    .unwrap();
    let config = file.display().to_string();
    let url = w.redis().url();
    let inspect = |key: &str, more: &[&str]| {
        let mut args = vec!["inspect", key, "--config", &config, "--redis-url", &url];
        args.extend_from_slice(more);
        cachegate(&args, None)
    };
    let (code, stdout, stderr) = inspect("task:1", &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("key task:1\nrecord ttl "), "{stdout}");
    assert!(stdout.contains("entry anon: status 200, fresh, ttl "), "{stdout}");
    assert!(stdout.contains("  content-type: application/json"), "{stdout}");
    assert!(stdout.contains(r#"{"id":"1","name":"Sample Task"}"#), "{stdout}");
    assert_eq!(stdout.matches("\nentry ").count(), 2, "anon and alice's: {stdout}");

    let (code, stdout, stderr) = inspect("task:2", &["--json", "--max-body", "100"]);
    assert_eq!(code, 0, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let entry = &shown["entries"][0];
    assert_eq!(entry["truncated"], true, "{shown}");
    assert_eq!(entry["body_bytes"], 5000);
    assert_eq!(entry["body"].as_str().unwrap().len(), 100);
    assert!(shown["record_ttl"].as_u64().is_some_and(|t| t > 200), "{shown}");

    let (code, _, stderr) = inspect("task:absent", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no cached entry"), "{stderr}");
    let (code, _, stderr) = inspect("__cg:secret", &[]);
    assert_eq!(code, 2, "{stderr}");
    let memory = dir.path().join("memory.toml");
    std::fs::write(&memory, "[store]\nkind = \"memory\"\n").unwrap();
    let (code, _, stderr) = cachegate(&["inspect", "task:1", "--config", &memory.display().to_string()], None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("memory store"), "{stderr}");
}

/// The `redis-cli` lines of docs/redis-cli.md, run against a real Redis
/// holding what the proxy stored (their `-n 2` pointed at the test's DB):
/// each works, and shows what the page says it shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_recipes_work_as_documented() {
    let rules = r#"
[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"
ttl = 300
tags = ["tasks"]
"#;
    let w = World::start(Kind::Redis, &format!("{HEAD}\n{rules}")).await;
    w.backend
        .on("GET", "/api/v1/tasks/123", Reply::new().body(r#"{"id":"123"}"#));
    w.client.until_hit("/api/v1/tasks/123", &[]).await;
    w.client
        .until_hit("/api/v1/tasks/123", &[("authorization", "Bearer alice")])
        .await;
    let doc = std::fs::read_to_string("docs/redis-cli.md").unwrap();
    let lines: Vec<&str> = doc.lines().filter(|l| l.starts_with("redis-cli -n 2 ")).collect();
    assert!(lines.len() >= 8, "{lines:?}");
    let port = w.redis().port().to_string();
    let mut shown = std::collections::HashMap::new();
    for line in lines {
        let args: Vec<String> = line
            .split_whitespace()
            .skip(3)
            .map(|a| a.trim_matches('\'').to_string())
            .collect();
        let out = Command::new("redis-cli")
            .args(["-p", &port, "-n", "0"])
            .args(&args)
            .output()
            .expect("redis-cli");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success() && !stdout.contains("ERR"), "{line}: {stdout}");
        shown.insert(args.join(" "), stdout);
    }
    assert_eq!(shown["TYPE task:123"].trim(), "hash");
    let fields = &shown["HKEYS task:123"];
    assert!(fields.lines().any(|f| f == "anon"), "{fields}");
    assert!(
        fields
            .lines()
            .any(|f| f.len() == 32 && f.bytes().all(|b| b.is_ascii_hexdigit())),
        "a credential's field: {fields}"
    );
    assert!(shown["HGET task:123 anon"].contains(r#"{"id":"123"}"#));
    assert!(shown["HGETALL task:123"].contains("__cg"));
    let ttl: i64 = shown["TTL task:123"].trim().parse().unwrap();
    assert!((200..=300).contains(&ttl), "{ttl}");
    assert_eq!(shown["--scan --pattern task:*"].trim(), "task:123");
    assert_eq!(shown["ZRANGE __cg:tag:tasks 0 -1"].trim(), "task:123");
    assert!(shown["INFO memory"].contains("used_memory_human"));
}

/// Two instances sharing Redis, each with its in-process tier: after a
/// `PURGE` answered by one, neither serves the URL from its tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_url_reaches_every_instances_tier() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let setup = admin::Setup::new("community", &backend.url(), &redis);
    let (one, two) = (setup.start().await, setup.start().await);
    assert!(
        one.gateway().config().tier_in_use(),
        "the tier is on by default on Redis"
    );
    let (a, b) = (one.client(), two.client());
    backend.on("GET", "/api/v1/tasks/1", Reply::new().body("one"));
    a.until_hit("/api/v1/tasks/1", &[]).await;
    b.until_hit("/api/v1/tasks/1", &[]).await;
    let fetched = backend.count("GET", "/api/v1/tasks/1");
    let purge = purge_header(admin::PURGE);
    let r = a
        .send("PURGE", "/api/v1/tasks/1", &[("authorization", &purge)], empty())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Right after the answer: the other instance's tier no longer has it.
    assert_eq!(b.get("/api/v1/tasks/1").await.x_cache(), Some("MISS"));
    assert_eq!(backend.count("GET", "/api/v1/tasks/1"), fetched + 1);
    assert_eq!(backend.count("PURGE", "/api/v1/tasks/1"), 0);
}
