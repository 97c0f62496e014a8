//! The admin API (`docs/admin-api.md`, after the reference's "Cache
//! Management API"): the route × edition × token matrix, response shapes
//! field by field, keys / key / clear behaviour over a real Redis, fleet-wide
//! stats over two instances, `/metrics` parsed with `prometheus-parse`, the
//! separate admin listener, health while Redis is down, and a clear over a
//! large keyspace.

use crate::common::admin::*;
use crate::common::{eventually, free_port, Backend, Client, RedisServer, Reply, Resp, Scrape, PATIENCE};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const P: &str = "/api/v1/cache";

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn assert_json(r: &Resp, what: &str) -> Value {
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{what}: content-type {ct:?}, body {}",
        r.text()
    );
    r.json()
}

/// Admin answers come from cachegate itself: never a cache header.
fn assert_not_cached(r: &Resp, what: &str) {
    assert!(
        r.x_cache().is_none(),
        "{what}: admin answer carries X-Cache {:?}",
        r.x_cache()
    );
    assert!(
        r.header("cache-status").is_none(),
        "{what}: admin answer carries Cache-Status"
    );
}

fn rank(edition: &str) -> usize {
    EDITIONS.iter().position(|e| *e == edition).expect("edition")
}

// ---------------------------------------------------------------------------
// 1. The matrix: route × edition × token
// ---------------------------------------------------------------------------

struct RouteCase {
    method: &'static str,
    path: &'static str,
    edition: &'static str,
    scope: &'static str,
}

const ROUTES: &[RouteCase] = &[
    RouteCase {
        method: "GET",
        path: "/api/v1/cache/health",
        edition: "community",
        scope: "read",
    },
    RouteCase {
        method: "GET",
        path: "/api/v1/cache/basic-stats",
        edition: "community",
        scope: "read",
    },
    RouteCase {
        method: "GET",
        path: "/api/v1/cache/stats",
        edition: "business",
        scope: "read",
    },
    RouteCase {
        method: "GET",
        path: "/api/v1/cache/keys?pattern=task:*",
        edition: "enterprise",
        scope: "inspect",
    },
    RouteCase {
        method: "GET",
        path: "/api/v1/cache/key/task:1",
        edition: "enterprise",
        scope: "inspect",
    },
    RouteCase {
        method: "DELETE",
        path: "/api/v1/cache/key/task:1",
        edition: "business",
        scope: "purge",
    },
    RouteCase {
        method: "DELETE",
        path: "/api/v1/cache/clear",
        edition: "business",
        scope: "purge",
    },
];

/// The token holding `scope` (INSPECT comes from `token_env`).
fn token_with(scope: &str) -> &'static str {
    match scope {
        "read" => READ,
        "purge" => PURGE,
        "inspect" => INSPECT,
        _ => unreachable!(),
    }
}

/// A known token that lacks `scope`.
fn token_without(scope: &str) -> &'static str {
    match scope {
        "read" => PURGE,
        "purge" => INSPECT,
        "inspect" => READ,
        _ => unreachable!(),
    }
}

/// The right token with its last character changed: same length, unknown.
fn same_length_wrong(token: &str) -> String {
    let mut t = token.to_string();
    let last = t.pop().unwrap();
    t.push(if last == 'x' { 'y' } else { 'x' });
    assert_eq!(t.len(), token.len());
    t
}

fn check_success(route: &RouteCase, edition: &str, body: &Value) {
    let what = format!("{} {} on {edition}", route.method, route.path);
    match (route.method, route.path) {
        (_, p) if p.ends_with("/health") => {
            assert_eq!(body["status"], "healthy", "{what}: {body}");
            assert_eq!(body["store"]["kind"], "redis", "{what}");
            assert_eq!(body["store"]["state"], "ok", "{what}");
            assert_eq!(body["store_up"], true, "{what}");
            assert_eq!(body["edition"], edition, "{what}");
            assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{what}");
            assert!(body["uptime_seconds"].is_u64(), "{what}: {body}");
            let r = rank(edition);
            assert_eq!(
                body["features"],
                json!({
                    "health": true, "basic_stats": true, "stats": r >= 1, "clear": r >= 1,
                    "delete_key": r >= 1, "keys": r >= 2, "key": r >= 2,
                }),
                "{what}"
            );
        }
        (_, p) if p.ends_with("/basic-stats") => {
            for f in ["hits", "misses", "entries", "uptime_seconds"] {
                assert!(body[f].is_u64(), "{what}: {f} in {body}");
            }
            assert!(body["hit_rate"].is_number(), "{what}: {body}");
            assert_eq!(body["scope"], "fleet", "{what}");
        }
        (_, p) if p.ends_with("/stats") => {
            assert_eq!(body["status"], "enabled", "{what}: {body}");
            assert!(body["server"].is_object() && body["memory"].is_object() && body["stats"].is_object());
        }
        ("GET", p) if p.contains("/keys") => {
            assert_eq!(body["pattern"], "task:*", "{what}: {body}");
            assert_eq!(body["limit"], 100, "{what}");
            assert_eq!(body["total_found"], 1, "{what}: {body}");
            assert_eq!(body["keys"], json!(["task:1"]), "{what}");
        }
        ("GET", p) if p.contains("/key/") => {
            assert_eq!(body["key"], "task:1", "{what}: {body}");
            assert_eq!(body["type"], "dict", "{what}");
            assert_eq!(body["value"]["id"], "1", "{what}");
        }
        ("DELETE", p) if p.contains("/key/") => {
            assert_eq!(
                body,
                &json!({"status": "deleted", "key": "task:1", "deleted": 1}),
                "{what}"
            );
        }
        ("DELETE", p) if p.ends_with("/clear") => {
            assert_eq!(body["status"], "cleared", "{what}: {body}");
            assert_eq!(body["pattern"], Value::Null, "{what}");
            assert!(
                body["deleted"].as_u64().unwrap() >= 1,
                "{what}: task:1 was cached: {body}"
            );
        }
        _ => unreachable!("{what}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_of_routes_editions_and_tokens() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    for edition in EDITIONS {
        // Each edition in its own default DB, as deployed.
        let mut setup = Setup::new(edition, &backend.url(), &redis);
        setup.db = None;
        let inst = setup.start().await;
        let c = inst.client();
        for route in ROUTES {
            // task:1 is cached before every route, so key / delete / clear
            // have something to show or remove.
            let warm = c.get("/api/v1/tasks/1").await;
            assert_eq!(warm.status, 200);
            let right = token_with(route.scope);
            let wrong_same = same_length_wrong(right);
            let cases: [(&str, Option<&str>); 5] = [
                ("no token", None),
                ("wrong token, same length", Some(&wrong_same)),
                ("wrong token, other length", Some("nope")),
                ("token without the scope", Some(token_without(route.scope))),
                ("token with the scope", Some(right)),
            ];
            for (i, (case, token)) in cases.iter().enumerate() {
                let what = format!("{} {} on {edition} with {case}", route.method, route.path);
                let r = call(&c, route.method, route.path, *token).await;
                assert_not_cached(&r, &what);
                let body = assert_json(&r, &what);
                if rank(edition) < rank(route.edition) {
                    assert_eq!(r.status, 403, "{what}: {body}");
                    assert_eq!(body["error"], "feature_not_available", "{what}: {body}");
                    assert!(
                        body["message"].as_str().is_some_and(|m| !m.is_empty()),
                        "{what}: message in {body}"
                    );
                    assert_eq!(body["required_edition"], route.edition, "{what}: {body}");
                    assert!(r.header("www-authenticate").is_none(), "{what}");
                    continue;
                }
                match i {
                    0..=2 => {
                        assert_eq!(r.status, 401, "{what}: {body}");
                        let challenge = r
                            .header("www-authenticate")
                            .unwrap_or_else(|| panic!("{what}: WWW-Authenticate"));
                        assert!(
                            challenge.starts_with("Bearer"),
                            "{what}: WWW-Authenticate {challenge:?}"
                        );
                        assert_eq!(body["error"], "unauthorized", "{what}: {body}");
                        assert!(body["message"].is_string(), "{what}: {body}");
                    }
                    3 => {
                        assert_eq!(r.status, 403, "{what}: {body}");
                        assert_eq!(body["error"], "insufficient_scope", "{what}: {body}");
                        assert_eq!(body["required_scope"], route.scope, "{what}: {body}");
                        assert!(body["message"].is_string(), "{what}: {body}");
                    }
                    _ => {
                        assert_eq!(r.status, 200, "{what}: {body}");
                        check_success(route, edition, &body);
                    }
                }
            }
        }
        // An absent key with the right token is a 404, where the edition allows it.
        let absent = call(&c, "GET", &format!("{P}/key/task:absent"), Some(INSPECT)).await;
        if edition == "enterprise" {
            assert_eq!(absent.status, 404, "{}", absent.text());
            assert_eq!(absent.json()["error"], "not_found");
        } else {
            assert_eq!(absent.status, 403);
            assert_eq!(absent.json()["error"], "feature_not_available");
        }
        // The config also holds `ghost`, a token_env token whose variable is
        // unset: it loaded and is disabled. An empty bearer or another scheme is no token.
        let empty = c
            .send(
                "GET",
                &format!("{P}/health"),
                &[("authorization", "Bearer ")],
                crate::common::empty(),
            )
            .await;
        assert_eq!(empty.status, 401);
        let basic = c
            .send(
                "GET",
                &format!("{P}/health"),
                &[("authorization", &format!("Basic {READ}"))],
                crate::common::empty(),
            )
            .await;
        assert_eq!(basic.status, 401, "only the Bearer scheme counts");
    }
    // None of it reached the backend: only the warm-up requests did.
    let admin_hits: u64 = [
        "health",
        "basic-stats",
        "stats",
        "keys",
        "key/task:1",
        "clear",
        "key/task:absent",
    ]
    .iter()
    .map(|r| backend.count_path(&format!("{P}/{r}")))
    .sum();
    assert_eq!(admin_hits, 0, "admin routes must never reach the backend");
}

// ---------------------------------------------------------------------------
// 2. Shapes, field by field
// ---------------------------------------------------------------------------

/// `2.5MB` back to bytes.
fn parse_human(s: &str) -> f64 {
    let unit_at = s.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (n, unit) = s.split_at(unit_at);
    let mult = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => panic!("unit {unit}"),
    };
    n.parse::<f64>().unwrap() * mult
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_shape_matches_the_reference() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let inst = Setup::new("enterprise", &backend.url(), &redis).start().await;
    let c = inst.client();
    // 2 misses, 3 hits.
    for p in [
        "/api/v1/tasks/1",
        "/api/v1/tasks/1",
        "/api/v1/tasks/2",
        "/api/v1/tasks/1",
        "/api/v1/tasks/2",
    ] {
        assert_eq!(c.get(p).await.status, 200);
    }
    // The figures are read back from the shared hash; poll (a background
    // flush may be in flight when the route answers).
    let deadline = Instant::now() + PATIENCE;
    let s = loop {
        let s = get_ok(&c, &format!("{P}/stats")).await;
        if s["stats"]["hits"] == 3 && s["stats"]["misses"] == 2 {
            break s;
        }
        assert!(Instant::now() < deadline, "stats never showed 3 hits / 2 misses: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await; // the polling interval
    };
    assert_eq!(s["status"], "enabled");
    assert_eq!(s["store"], "redis");

    let server = &s["server"];
    let version = server["version"].as_str().expect("server.version is a string");
    let re_version = regex::Regex::new(r"^\d+\.\d+\.\d+").unwrap();
    assert!(re_version.is_match(version), "server.version {version:?}");
    assert!(server["uptime_seconds"].is_u64(), "{server}");
    assert!(server["connected_clients"].as_u64().unwrap() >= 1, "{server}");

    let human = regex::Regex::new(r"^\d+(\.\d)?(B|KB|MB|GB|TB)$").unwrap();
    let memory = &s["memory"];
    for f in ["used_memory", "peak_memory", "total_system_memory"] {
        let v = memory[f]
            .as_str()
            .unwrap_or_else(|| panic!("memory.{f} is a string: {memory}"));
        assert!(human.is_match(v), "memory.{f} = {v:?} is not like 2.5MB");
        let bytes = memory[format!("{f}_bytes")]
            .as_u64()
            .unwrap_or_else(|| panic!("memory.{f}_bytes"));
        assert!(bytes > 0, "memory.{f}_bytes is 0");
        let back = parse_human(v);
        let err = (back - bytes as f64).abs() / bytes as f64;
        assert!(err < 0.05, "memory.{f} = {v} does not describe {bytes} bytes");
    }

    let stats = &s["stats"];
    assert!(stats["total_keys"].as_u64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["hits"], 3, "{stats}");
    assert_eq!(stats["misses"], 2, "{stats}");
    assert_eq!(stats["hit_rate"].as_f64(), Some(60.0), "{stats}");
    assert_eq!(
        stats["rules"]["task"],
        json!({"hits": 3, "misses": 2, "hit_rate": 60.0})
    );
    assert_eq!(stats["instance"]["hits"], 3);
    assert_eq!(stats["instance"]["misses"], 2);
    assert_eq!(stats["instance"]["hit_rate"].as_f64(), Some(60.0));

    let basic = get_ok(&c, &format!("{P}/basic-stats")).await;
    assert_eq!(basic["hits"], 3);
    assert_eq!(basic["misses"], 2);
    assert_eq!(basic["hit_rate"].as_f64(), Some(60.0));
    assert_eq!(basic["scope"], "fleet");
    assert!(basic["entries"].as_u64().unwrap() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_key_and_clear_shapes() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let inst = Setup::new("enterprise", &backend.url(), &redis).start().await;
    let c = inst.client();

    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "t-dict",
            br#"{"id":"t-dict","name":"Sample Task","status":"pending"}"#.to_vec(),
            "application/json",
            "dict",
        ),
        ("t-list", b"[1,2,3]".to_vec(), "application/json", "list"),
        ("t-str", br#""hello""#.to_vec(), "application/json", "str"),
        ("t-int", b"42".to_vec(), "application/json", "int"),
        ("t-float", b"2.5".to_vec(), "application/json", "float"),
        ("t-bool", b"true".to_vec(), "application/json", "bool"),
        ("t-null", b"null".to_vec(), "application/json", "NoneType"),
        ("t-text", b"plain text, not JSON".to_vec(), "text/plain", "str"),
        (
            "t-bin",
            vec![0xff, 0xfe, 0x00, 0x01, 0x80, 0x7f],
            "application/octet-stream",
            "bytes",
        ),
    ];
    let before = now_secs();
    for (id, body, ct, _) in &cases {
        let path = format!("/api/v1/tasks/{id}");
        backend.on("GET", &path, Reply::new().header("content-type", ct).body(body.clone()));
        let r = c.get(&path).await;
        assert_eq!(r.x_cache(), Some("MISS"), "{path}: {}", r.cache_status());
        assert_eq!(r.body.as_ref(), body.as_slice());
    }
    let after = now_secs();

    for (id, body, ct, ty) in &cases {
        let k = get_ok(&c, &format!("{P}/key/task:{id}")).await;
        let what = format!("key task:{id}: {k}");
        assert_eq!(k["key"], format!("task:{id}"), "{what}");
        assert_eq!(k["type"], *ty, "{what}");
        match *id {
            "t-bin" => {
                assert_eq!(k["encoding"], "base64", "{what}");
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(k["value"].as_str().expect("base64 string"))
                    .expect("valid base64");
                assert_eq!(&decoded, body, "{what}");
            }
            "t-text" => {
                assert_eq!(k["value"], "plain text, not JSON", "{what}");
                assert!(k.get("encoding").is_none(), "{what}");
            }
            _ => {
                let parsed: Value = serde_json::from_slice(body).unwrap();
                assert_eq!(k["value"], parsed, "{what}");
                assert!(k.get("encoding").is_none(), "{what}");
            }
        }
        let ttl = k["ttl"].as_u64().unwrap_or_else(|| panic!("ttl: {what}"));
        assert!(ttl > 0 && ttl <= 300, "{what}");
        assert_eq!(k["status"], 200, "{what}");
        assert_eq!(k["headers"]["content-type"], *ct, "{what}");
        let stored_at = k["stored_at"].as_u64().unwrap();
        assert!(
            stored_at >= before && stored_at <= after + 1,
            "stored_at {stored_at} not in [{before}, {after}]"
        );
        assert!(k["age"].is_u64(), "{what}");
        assert_eq!(k["fresh"], true, "{what}");
        let record_ttl = k["record_ttl"].as_u64().unwrap_or_else(|| panic!("record_ttl: {what}"));
        assert!(record_ttl > 0 && record_ttl <= 300, "{what}");
        assert_eq!(k["scopes"], 1, "{what}");
        assert_eq!(k["size"], body.len(), "{what}");
    }

    let keys = get_ok(&c, &format!("{P}/keys?pattern=task:t-*&limit=100")).await;
    let obj = keys.as_object().unwrap();
    let fields: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        BTreeSet::from(["pattern", "total_found", "limit", "keys"]),
        "{keys}"
    );
    assert_eq!(keys["pattern"], "task:t-*");
    assert_eq!(keys["total_found"], cases.len());
    assert_eq!(keys["limit"], 100);
    let mut want: Vec<String> = cases.iter().map(|(id, ..)| format!("task:{id}")).collect();
    want.sort();
    assert_eq!(keys["keys"], json!(want));

    let cleared = delete_ok(&c, &format!("{P}/clear?pattern=task:t-*")).await;
    assert_eq!(
        cleared,
        json!({"status": "cleared", "pattern": "task:t-*", "deleted": cases.len()})
    );
}

// ---------------------------------------------------------------------------
// 3. Behaviour
// ---------------------------------------------------------------------------

/// A record in cachegate's layout, written straight into Redis.
async fn put_record(redis: &RedisServer, key: &str) {
    redis.cmd::<i64>(&["HSET", key, "anon", "x", "__cg", "1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_lists_logical_keys_with_limits_and_validates_parameters() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let mut setup = Setup::new("enterprise", &backend.url(), &redis);
    setup.key_prefix = "cg:".into();
    let inst = setup.start().await;
    let c = inst.client();
    for p in [
        "/api/v1/tasks/1",
        "/api/v1/tasks/2",
        "/api/v1/tasks/3",
        "/api/v1/tasks?page=1",
    ] {
        assert_eq!(c.get(p).await.x_cache(), Some("MISS"), "{p}");
    }
    // The internal layout carries the prefix; the API shows logical keys.
    assert!(redis.exists("cg:task:1").await);
    let k = get_ok(&c, &format!("{P}/keys?pattern=task:*")).await;
    assert_eq!(k["keys"], json!(["task:1", "task:2", "task:3"]), "{k}");
    assert_eq!(k["total_found"], 3);
    assert_eq!(k["limit"], 100, "limit defaults to 100");

    // Every key: no internal keys (secret, epoch, stats) are listed.
    let all = get_ok(&c, &format!("{P}/keys")).await;
    assert_eq!(all["pattern"], "*");
    let listed: Vec<&str> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 4, "{all}");
    assert!(listed.iter().all(|k| !k.contains("__cg")), "{all}");
    assert!(listed.iter().any(|k| k.starts_with("tasks:")), "{all}");

    // limit truncates, total_found counts every match.
    let two = get_ok(&c, &format!("{P}/keys?pattern=task:*&limit=2")).await;
    assert_eq!(two["limit"], 2);
    assert_eq!(two["total_found"], 3);
    let two_keys = two["keys"].as_array().unwrap();
    assert_eq!(two_keys.len(), 2, "{two}");
    assert!(two_keys
        .iter()
        .all(|k| ["task:1", "task:2", "task:3"].contains(&k.as_str().unwrap())));

    // More than 100 records: the default limit bites; the cap is 10000.
    for n in 0..150 {
        put_record(&redis, &format!("cg:task:bulk{n}")).await;
    }
    // A foreign hash and string under the pattern are not cachegate's.
    redis.cmd::<i64>(&["HSET", "cg:task:foreign-hash", "a", "b"]).await;
    redis.cmd::<()>(&["SET", "cg:task:foreign-string", "x"]).await;
    let d = get_ok(&c, &format!("{P}/keys?pattern=task:*")).await;
    assert_eq!(d["limit"], 100);
    assert_eq!(d["keys"].as_array().unwrap().len(), 100);
    assert_eq!(d["total_found"], 153, "foreign keys are not counted");
    let capped = get_ok(&c, &format!("{P}/keys?pattern=task:*&limit=99999")).await;
    assert_eq!(capped["limit"], 10000);
    assert_eq!(capped["keys"].as_array().unwrap().len(), 153);
    assert_eq!(
        get_ok(&c, &format!("{P}/keys?pattern=task:*&limit=10000")).await["limit"],
        10000
    );

    // A tombstone left by deleting a key is not listed.
    delete_ok(&c, &format!("{P}/key/task:3")).await;
    assert!(redis.exists("cg:task:3").await, "the purge leaves a tombstone");
    let t = get_ok(&c, &format!("{P}/keys?pattern=task:*&limit=10000")).await;
    assert_eq!(t["total_found"], 152, "{}", t["total_found"]);
    assert!(!t["keys"].as_array().unwrap().contains(&json!("task:3")));

    // Bad limits name `limit`.
    for bad in ["0", "-1", "abc", "", "1.5"] {
        let r = call(&c, "GET", &format!("{P}/keys?pattern=task:*&limit={bad}"), Some(ALL)).await;
        assert_eq!(r.status, 400, "limit={bad}: {}", r.text());
        let b = r.json();
        assert_eq!(b["error"], "invalid_parameter", "limit={bad}: {b}");
        assert_eq!(b["parameter"], "limit", "limit={bad}: {b}");
    }
    // A pattern of 1 KiB is fine, one byte more is not (keys and clear).
    let at_limit = format!("task:{}", "a".repeat(1024 - 5));
    assert_eq!(at_limit.len(), 1024);
    let ok = get_ok(&c, &format!("{P}/keys?pattern={at_limit}")).await;
    assert_eq!(ok["total_found"], 0);
    let over = format!("{at_limit}a");
    for (method, path) in [
        ("GET", format!("{P}/keys?pattern={over}")),
        ("DELETE", format!("{P}/clear?pattern={over}")),
    ] {
        let r = call(&c, method, &path, Some(ALL)).await;
        assert_eq!(r.status, 400, "{method} with a 1025-byte pattern: {}", r.text());
        let b = r.json();
        assert_eq!(b["error"], "invalid_parameter");
        assert_eq!(b["parameter"], "pattern", "{b}");
    }
    assert_eq!(backend.count_path(&format!("{P}/keys")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_route_decodes_percent_encoding_and_reports_absent_keys() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let inst = Setup::new("enterprise", &backend.url(), &redis).start().await;
    let c = inst.client();
    assert_eq!(c.get("/api/v1/tasks/1").await.x_cache(), Some("MISS"));

    let plain = get_ok(&c, &format!("{P}/key/task:1")).await;
    let encoded = get_ok(&c, &format!("{P}/key/task%3A1")).await;
    assert_eq!(encoded["key"], "task:1");
    assert_eq!(encoded["value"], plain["value"]);
    let lower = get_ok(&c, &format!("{P}/key/task%3a1")).await;
    assert_eq!(lower["key"], "task:1");

    for bad in ["%FF", "task%FF1", "%C3%28"] {
        let r = call(&c, "GET", &format!("{P}/key/{bad}"), Some(ALL)).await;
        assert_eq!(r.status, 400, "key/{bad}: {}", r.text());
        let b = r.json();
        assert_eq!(b["error"], "invalid_parameter", "{b}");
        assert_eq!(b["parameter"], "key", "{b}");
        let d = call(&c, "DELETE", &format!("{P}/key/{bad}"), Some(ALL)).await;
        assert_eq!(d.status, 400, "DELETE key/{bad}: {}", d.text());
    }

    let absent = call(&c, "GET", &format!("{P}/key/task:404"), Some(ALL)).await;
    assert_eq!(absent.status, 404);
    assert_eq!(assert_json(&absent, "absent key")["error"], "not_found");

    // A foreign value under a name is no cached entry.
    redis.cmd::<()>(&["SET", "task:foreign", "x"]).await;
    let foreign = call(&c, "GET", &format!("{P}/key/task:foreign"), Some(ALL)).await;
    assert_eq!(foreign.status, 404, "{}", foreign.text());
    assert_eq!(backend.count_path(&format!("{P}/key/task:1")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_key_removes_every_scope() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let inst = Setup::new("enterprise", &backend.url(), &redis).start().await;
    let c = inst.client();
    let path = "/api/v1/tasks/1";
    let a = [("authorization", "Bearer tenant-a")];
    let b = [("authorization", "Bearer tenant-b")];
    assert_eq!(c.get_h(path, &a).await.x_cache(), Some("MISS"));
    assert_eq!(c.get_h(path, &b).await.x_cache(), Some("MISS"));
    assert_eq!(c.get_h(path, &a).await.x_cache(), Some("HIT"));
    assert_eq!(c.get_h(path, &b).await.x_cache(), Some("HIT"));
    assert_eq!(redis.entry_fields("task:1").await.len(), 2);

    let k = get_ok(&c, &format!("{P}/key/task:1")).await;
    assert_eq!(k["scopes"], 2, "{k}");

    let d = delete_ok(&c, &format!("{P}/key/task:1")).await;
    assert_eq!(d, json!({"status": "deleted", "key": "task:1", "deleted": 1}));
    assert!(redis.entry_fields("task:1").await.is_empty(), "every scope is gone");
    let gone = call(&c, "GET", &format!("{P}/key/task:1"), Some(ALL)).await;
    assert_eq!(gone.status, 404);

    let before = backend.count("GET", path);
    assert_eq!(c.get_h(path, &a).await.x_cache(), Some("MISS"));
    assert_eq!(c.get_h(path, &b).await.x_cache(), Some("MISS"));
    assert_eq!(backend.count("GET", path), before + 2);

    // Deleting an absent key is not an error; nothing was deleted.
    let none = delete_ok(&c, &format!("{P}/key/task:never")).await;
    assert_eq!(none, json!({"status": "deleted", "key": "task:never", "deleted": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_removes_only_cachegate_records() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let mut setup = Setup::new("business", &backend.url(), &redis);
    setup.key_prefix = "cg:".into();
    let inst = setup.start().await;
    let c = inst.client();

    // Another program's keys in the same DB, first: inside and outside the
    // prefix, matching the pattern or not.
    let foreign_strings = ["cg:task:foreign-string", "task:9", "other:string"];
    let foreign_hashes = ["cg:task:foreign-hash", "cg:other-hash", "task:10"];
    for k in foreign_strings {
        redis.cmd::<()>(&["SET", k, "someone else's"]).await;
    }
    for k in foreign_hashes {
        redis.cmd::<i64>(&["HSET", k, "owner", "someone else", "n", "1"]).await;
    }

    let paths = [
        "/api/v1/tasks/1",
        "/api/v1/tasks/2",
        "/api/v1/tasks?page=1",
        "/api/v1/tasks?page=2",
    ];
    for p in paths {
        assert_eq!(c.get(p).await.x_cache(), Some("MISS"), "{p}");
    }
    assert!(redis.exists("cg:task:1").await, "the prefix is part of the layout");

    // clear?pattern=task:* removes task:1 and task:2 only.
    let cleared = delete_ok(&c, &format!("{P}/clear?pattern=task:*")).await;
    assert_eq!(cleared, json!({"status": "cleared", "pattern": "task:*", "deleted": 2}));
    assert!(!redis.exists("cg:task:1").await && !redis.exists("cg:task:2").await);
    assert_eq!(c.get(paths[0]).await.x_cache(), Some("MISS"));
    assert_eq!(
        c.get(paths[2]).await.x_cache(),
        Some("HIT"),
        "tasks:* did not match task:*"
    );

    // Without a pattern: everything cachegate wrote, nothing else.
    let all = delete_ok(&c, &format!("{P}/clear")).await;
    assert_eq!(all["status"], "cleared");
    assert_eq!(all["pattern"], Value::Null);
    assert_eq!(all["deleted"], 3, "task:1 (again), tasks page 1 and 2: {all}");
    for p in paths {
        assert_eq!(c.get(p).await.x_cache(), Some("MISS"), "{p} after clear");
    }
    for k in foreign_strings {
        let v: String = redis.cmd(&["GET", k]).await;
        assert_eq!(v, "someone else's", "{k} must survive clear");
    }
    for k in foreign_hashes {
        let v: String = redis.cmd(&["HGET", k, "owner"]).await;
        assert_eq!(v, "someone else", "{k} must survive clear");
    }
    assert!(
        redis.exists("cg:__cg:secret").await,
        "the shared scope secret survives clear"
    );

    // Credentialed entries still work after the clear (same secret).
    let a = [("authorization", "Bearer tenant-a")];
    assert_eq!(c.get_h("/api/v1/tasks/5", &a).await.x_cache(), Some("MISS"));
    assert_eq!(c.get_h("/api/v1/tasks/5", &a).await.x_cache(), Some("HIT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_wrong_methods_never_reach_the_backend() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let inst = Setup::new("enterprise", &backend.url(), &redis).start().await;
    let c = inst.client();

    for path in [
        format!("{P}/nope"),
        format!("{P}/stats/extra"),
        format!("{P}/keys/task:1"),
    ] {
        for token in [None, Some(ALL)] {
            let r = call(&c, "GET", &path, token).await;
            assert_eq!(r.status, 404, "GET {path}: {}", r.text());
            assert_eq!(assert_json(&r, &path)["error"], "not_found");
            assert_not_cached(&r, &path);
        }
    }
    let cases = [
        ("POST", format!("{P}/stats"), "GET, HEAD"),
        ("DELETE", format!("{P}/stats"), "GET, HEAD"),
        ("PUT", format!("{P}/health"), "GET, HEAD"),
        ("GET", format!("{P}/clear"), "DELETE"),
        ("POST", format!("{P}/clear"), "DELETE"),
        ("POST", format!("{P}/key/task:1"), "GET, HEAD, DELETE"),
        ("PATCH", format!("{P}/keys"), "GET, HEAD"),
    ];
    for (method, path, allow) in &cases {
        for token in [None, Some(ALL)] {
            let r = call(&c, method, path, token).await;
            assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
            let allowed: BTreeSet<&str> = r
                .header("allow")
                .unwrap_or_else(|| panic!("{method} {path}: Allow"))
                .split(',')
                .map(str::trim)
                .collect();
            let want: BTreeSet<&str> = allow.split(',').map(str::trim).collect();
            assert_eq!(allowed, want, "{method} {path}");
            assert_json(&r, path);
            assert_not_cached(&r, path);
        }
    }
    // Successful admin answers carry no cache headers either.
    for path in ["health", "basic-stats", "stats", "keys", "key/task:x"] {
        let r = call(&c, "GET", &format!("{P}/{path}"), Some(ALL)).await;
        assert_not_cached(&r, path);
    }
    let r = call(&c, "DELETE", &format!("{P}/clear"), Some(ALL)).await;
    assert_eq!(r.status, 200);
    assert_not_cached(&r, "clear");
    assert_eq!(backend.total(), 0, "admin requests must never reach the backend");
}

// ---------------------------------------------------------------------------
// 4. Fleet-wide hit / miss figures
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_sum_hits_and_misses_over_instances_sharing_redis() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let setup = Setup::new("business", &backend.url(), &redis);
    let a = setup.start().await;
    let b = setup.start().await;
    let (ca, cb) = (a.client(), b.client());

    // A: 2 misses, 3 hits.
    for (p, want) in [
        ("/api/v1/tasks/a1", "MISS"),
        ("/api/v1/tasks/a2", "MISS"),
        ("/api/v1/tasks/a1", "HIT"),
        ("/api/v1/tasks/a1", "HIT"),
        ("/api/v1/tasks/a2", "HIT"),
    ] {
        assert_eq!(ca.get(p).await.x_cache(), Some(want), "A {p}");
    }
    // B: 1 miss, 4 hits (two of them on A's entries, shared through Redis).
    for (p, want) in [
        ("/api/v1/tasks/b1", "MISS"),
        ("/api/v1/tasks/b1", "HIT"),
        ("/api/v1/tasks/b1", "HIT"),
        ("/api/v1/tasks/a1", "HIT"),
        ("/api/v1/tasks/a2", "HIT"),
    ] {
        assert_eq!(cb.get(p).await.x_cache(), Some(want), "B {p}");
    }

    for (name, c, own) in [("A", &ca, (3, 2)), ("B", &cb, (4, 1))] {
        let deadline = Instant::now() + PATIENCE;
        let last = loop {
            let last = get_ok(c, &format!("{P}/stats")).await;
            if last["stats"]["hits"] == 7 && last["stats"]["misses"] == 3 {
                break last;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: fleet figures never reached 7 hits / 3 misses: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await; // the polling interval
        };
        let stats = &last["stats"];
        assert_eq!(stats["hit_rate"].as_f64(), Some(70.0), "{name}: {stats}");
        assert_eq!(
            stats["rules"]["task"],
            json!({"hits": 7, "misses": 3, "hit_rate": 70.0}),
            "{name}"
        );
        let inst = &stats["instance"];
        assert_eq!(
            (inst["hits"].as_u64(), inst["misses"].as_u64()),
            (Some(own.0), Some(own.1)),
            "{name}: {inst}"
        );
        assert_eq!(inst["rules"]["task"]["hits"], own.0, "{name}: {inst}");
        let basic = get_ok(c, &format!("{P}/basic-stats")).await;
        assert_eq!(
            (basic["hits"].as_u64(), basic["misses"].as_u64()),
            (Some(7), Some(3)),
            "{name}: {basic}"
        );
        assert_eq!(basic["scope"], "fleet");
    }
    // Asking again does not count anything twice.
    let again = get_ok(&ca, &format!("{P}/stats")).await;
    assert_eq!(
        (again["stats"]["hits"].as_u64(), again["stats"]["misses"].as_u64()),
        (Some(7), Some(3))
    );
}

// ---------------------------------------------------------------------------
// 5. /metrics
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_exactly_the_requests_made() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let inst = Setup::new("business", &backend.url(), &redis).start().await;
    let c = inst.client();

    let raw = c.get("/metrics").await;
    assert_eq!(raw.status, 200, "no token needed by default: {}", raw.text());
    let ct = raw.header("content-type").unwrap_or("");
    assert!(ct.starts_with("application/openmetrics-text"), "content-type {ct}");
    assert!(raw.text().trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");
    assert_not_cached(&raw, "/metrics");
    let before = Scrape::parse(&raw.text());
    let task_before = before.requests("task");
    let list_before = before.requests("task-list");

    assert_eq!(c.get("/api/v1/tasks/m1").await.x_cache(), Some("MISS"));
    assert_eq!(c.get("/api/v1/tasks/m1").await.x_cache(), Some("HIT"));
    assert_eq!(c.get("/api/v1/tasks/m1").await.x_cache(), Some("HIT"));
    assert_eq!(c.get("/api/v1/tasks?page=1").await.x_cache(), Some("MISS"));

    let after = scrape(&c).await;
    let task_after = after.requests("task");
    let list_after = after.requests("task-list");
    let moved =
        |a: &std::collections::HashMap<String, f64>, b: &std::collections::HashMap<String, f64>, s: &str| a[s] - b[s];
    assert_eq!(moved(&task_after, &task_before, "hit"), 2.0, "{}", after.text);
    assert_eq!(moved(&task_after, &task_before, "miss"), 1.0, "{}", after.text);
    assert_eq!(moved(&task_after, &task_before, "stale"), 0.0);
    assert_eq!(moved(&task_after, &task_before, "bypass"), 0.0);
    assert_eq!(moved(&list_after, &list_before, "miss"), 1.0);
    assert_eq!(moved(&list_after, &list_before, "hit"), 0.0);

    // How prometheus-parse types the counter: the TYPE line names the family
    // (`cachegate_requests`), the samples carry `_total`.
    let sample = after.find("cachegate_requests_total", &[("rule", "task"), ("cache_status", "hit")])[0];
    if !matches!(sample.value, prometheus_parse::Value::Counter(_)) {
        println!(
            "note: prometheus-parse reads cachegate_requests_total as {:?}, not Counter \
             (OpenMetrics `# TYPE cachegate_requests counter` vs sample `_total`)",
            sample.value
        );
    }

    // Histograms: backend latency (two backend calls) and store latency by op.
    let backend_h = after.find("cachegate_backend_duration_seconds", &[]);
    assert_eq!(backend_h.len(), 1, "backend histogram: {}", after.text);
    let prometheus_parse::Value::Histogram(buckets) = &backend_h[0].value else {
        panic!("backend latency is not a histogram: {:?}", backend_h[0].value);
    };
    assert!(buckets.len() >= 2);
    let inf = buckets.iter().find(|b| b.less_than.is_infinite()).expect("+Inf bucket");
    assert_eq!(inf.count, 2.0, "two requests reached the backend");
    assert_eq!(after.scalar("cachegate_backend_duration_seconds_count", &[]), 2.0);

    let lookups = after.find("cachegate_store_duration_seconds", &[("op", "lookup")]);
    assert_eq!(lookups.len(), 1, "store histogram for op=lookup: {}", after.text);
    let prometheus_parse::Value::Histogram(buckets) = &lookups[0].value else {
        panic!("store latency is not a histogram");
    };
    let inf = buckets.iter().find(|b| b.less_than.is_infinite()).expect("+Inf bucket");
    assert!(inf.count >= 4.0, "4 lookups at least: {}", inf.count);
    assert!(!after
        .find("cachegate_store_duration_seconds", &[("op", "fill")])
        .is_empty());

    assert_eq!(after.scalar("cachegate_store_up", &[]), 1.0);

    // Purges are counted too.
    delete_ok(&c, &format!("{P}/key/task:m1")).await;
    let purged = scrape(&c).await;
    assert_eq!(purged.scalar("cachegate_purges_total", &[("kind", "key")]), 1.0);
    assert_eq!(purged.scalar("cachegate_purged_keys_total", &[]), 1.0);
    assert_eq!(backend.count_path("/metrics"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_token_and_health_probes() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let mut setup = Setup::new("community", &backend.url(), &redis);
    setup.admin_extra = "metrics_require_token = true".into();
    let inst = setup.start().await;
    let c = inst.client();

    let none = call(&c, "GET", "/metrics", None).await;
    assert_eq!(none.status, 401, "{}", none.text());
    assert!(none.header("www-authenticate").unwrap_or("").starts_with("Bearer"));
    assert_eq!(none.json()["error"], "unauthorized");
    let wrong = call(&c, "GET", "/metrics", Some(&same_length_wrong(READ))).await;
    assert_eq!(wrong.status, 401);
    let purge = call(&c, "GET", "/metrics", Some(PURGE)).await;
    assert_eq!(purge.status, 403);
    assert_eq!(purge.json()["error"], "insufficient_scope");
    assert_eq!(purge.json()["required_scope"], "read");
    let ok = call(&c, "GET", "/metrics", Some(READ)).await;
    assert_eq!(ok.status, 200);
    let s = Scrape::parse(&ok.text());
    assert_eq!(s.scalar("cachegate_store_up", &[]), 1.0);

    for (path, status) in [("/healthz", "alive"), ("/readyz", "ready")] {
        let r = call(&c, "GET", path, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(assert_json(&r, path)["status"], status);
    }
    let ready = call(&c, "GET", "/readyz", None).await.json();
    assert_eq!(ready["store"]["state"], "ok", "{ready}");
    assert_eq!(ready["backend"]["state"], "up", "{ready}");
    assert_eq!(backend.total(), 0);
}

// ---------------------------------------------------------------------------
// 6. A separate admin listener
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_of_its_own() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let mut setup = Setup::new("business", &backend.url(), &redis);
    let port = free_port();
    setup.admin_extra = format!("listen = \"127.0.0.1:{port}\"");
    let inst = setup.start().await;
    let admin_addr = inst.admin_addr.expect("admin_addr with [admin] listen");
    assert_eq!(admin_addr.port(), port);
    let admin = Client::new(admin_addr);
    let main = inst.client();

    // The admin side answers admin routes, /metrics and the probes.
    let stats = call(&admin, "GET", &format!("{P}/stats"), Some(READ)).await;
    assert_eq!(stats.status, 200, "{}", stats.text());
    assert_eq!(stats.json()["status"], "enabled");
    assert_eq!(call(&admin, "GET", &format!("{P}/stats"), None).await.status, 401);
    assert_eq!(call(&admin, "GET", "/metrics", None).await.status, 200);
    assert_eq!(call(&admin, "GET", "/healthz", None).await.status, 200);
    // ... and nothing else: the proxy is not served there.
    let not_here = call(&admin, "GET", "/api/v1/tasks/1", None).await;
    assert_eq!(not_here.status, 404);
    assert_eq!(backend.total(), 0);

    // On the main listener those paths belong to the backend.
    let fwd = call(&main, "GET", &format!("{P}/stats"), Some(READ)).await;
    assert_eq!(fwd.status, 200);
    assert_eq!(
        fwd.json()["path"],
        format!("{P}/stats"),
        "the backend answered: {}",
        fwd.text()
    );
    assert_eq!(backend.count("GET", &format!("{P}/stats")), 1);
    let m = main.get("/metrics").await;
    assert_eq!(m.json()["path"], "/metrics");
    assert_eq!(backend.count("GET", "/metrics"), 1);
    // The proxy itself still works on the main listener.
    assert_eq!(main.get("/api/v1/tasks/1").await.x_cache(), Some("MISS"));
}

// ---------------------------------------------------------------------------
// 7. Health while Redis is down
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_redis_is_down() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let inst = Setup::new("business", &backend.url(), &redis).start().await;
    let c = inst.client();

    let h = get_ok(&c, &format!("{P}/health")).await;
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["store_up"], true);

    redis.kill();
    let health_url = format!("{P}/health");
    eventually("health says degraded", PATIENCE, || {
        let (c, u) = (&c, &health_url);
        async move { get_ok(c, u).await["status"] == "degraded" }
    })
    .await;
    let h = get_ok(&c, &health_url).await;
    assert_eq!(h["store_up"], false);
    assert_eq!(h["edition"], "business");

    // Redis down (nothing listens: not a misconfiguration) leaves the
    // instance ready by default: it serves, uncached.
    for (path, status) in [("/readyz", "ready"), ("/healthz", "alive")] {
        let r = call(&c, "GET", path, None).await;
        assert_eq!(r.status, 200, "{path} while Redis is down");
        assert_eq!(r.json()["status"], status);
    }
    assert_eq!(h["store"]["state"], "connection_refused", "{h}");
    // The proxy fails open; stats answer with a status and this instance's
    // figures; basic-stats falls back to this instance.
    let t = c.get("/api/v1/tasks/1").await;
    assert_eq!(t.status, 200);
    assert_eq!(t.x_cache(), Some("BYPASS"));
    let s = call(&c, "GET", &format!("{P}/stats"), Some(READ)).await;
    assert_eq!(s.status, 200, "{}", s.text());
    assert_eq!(s.json()["status"], "degraded");
    let b = get_ok(&c, &format!("{P}/basic-stats")).await;
    assert_eq!(b["scope"], "instance");
    assert_eq!(scrape(&c).await.scalar("cachegate_store_up", &[]), 0.0);

    redis.restart();
    eventually("health is healthy again", PATIENCE, || {
        let (c, u) = (&c, &health_url);
        async move { get_ok(c, u).await["status"] == "healthy" }
    })
    .await;
}

/// A Redis that stops answering (SIGSTOP: the TCP connections stay open) is
/// as unreachable for the proxy as a dead one: every request bypasses after
/// the store timeout. `health` must say so too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_redis_stalls() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let inst = Setup::new("business", &backend.url(), &redis).start().await;
    let c = inst.client();
    let health_url = format!("{P}/health");
    assert_eq!(get_ok(&c, &health_url).await["status"], "healthy");

    redis.pause();
    let t = c.get("/api/v1/tasks/1").await;
    assert_eq!(t.status, 200);
    assert_eq!(
        t.x_cache(),
        Some("BYPASS"),
        "the stalled store is not used: {}",
        t.cache_status()
    );
    let deadline = Instant::now() + PATIENCE;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        // Keep traffic flowing so a store-call based detector has evidence.
        let t = c.get("/api/v1/tasks/1").await;
        assert_eq!(t.x_cache(), Some("BYPASS"));
        last = get_ok(&c, &health_url).await;
        if last["status"] == "degraded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the polling interval
    }
    redis.resume();
    assert_eq!(
        last["status"], "degraded",
        "Redis answered nothing for {PATIENCE:?} and every request bypassed, yet health says: {last}"
    );
    assert_eq!(last["store_up"], false);
    assert_eq!(
        last["store"]["state"], "timeout",
        "a silent Redis is named a timeout: {last}"
    );
    eventually("health is healthy again", PATIENCE, || {
        let (c, u) = (&c, &health_url);
        async move { get_ok(c, u).await["status"] == "healthy" }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 8. Clear over a large keyspace
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_over_200k_entries_keeps_foreign_keys() {
    const ENTRIES: usize = 200_000;
    const FOREIGN: usize = 1_000;
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let mut setup = Setup::new("business", &backend.url(), &redis);
    setup.store_timeout_ms = None; // the built-in default, as deployed
    let inst = setup.start().await;
    let c = inst.client();

    let mut conn = redis.conn().await;
    let payload = [0xabu8; 64];
    let ids: Vec<usize> = (0..ENTRIES).collect();
    for chunk in ids.chunks(10_000) {
        let mut pipe = redis::pipe();
        for n in chunk {
            pipe.cmd("HSET")
                .arg(format!("task:{n}"))
                .arg("anon")
                .arg(&payload[..])
                .arg("__cg")
                .arg("1")
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.expect("fill entries");
    }
    let mut pipe = redis::pipe();
    for n in 0..FOREIGN {
        pipe.cmd("SET")
            .arg(format!("task:foreign:{n}"))
            .arg("not cachegate's")
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await.expect("fill foreign keys");
    let size: u64 = redis.cmd(&["DBSIZE"]).await;
    assert!(size >= (ENTRIES + FOREIGN) as u64);

    let keys_calls = redis.command_calls("keys").await;
    let scan_calls = redis.command_calls("scan").await;
    let started = Instant::now();
    let r = call(&c, "DELETE", &format!("{P}/clear?pattern=task:*"), Some(PURGE)).await;
    let took = started.elapsed();
    println!("clear?pattern=task:* over {ENTRIES} entries + {FOREIGN} foreign keys took {took:?}");
    assert_eq!(r.status, 200, "{}", r.text());
    // The walk is paged (SCAN), never one KEYS that would block Redis for
    // the whole keyspace.
    assert_eq!(redis.command_calls("keys").await, keys_calls, "clear ran KEYS");
    let pages = redis.command_calls("scan").await - scan_calls;
    assert!(pages >= 20, "{pages} SCAN pages for {} keys", ENTRIES + FOREIGN);
    assert_eq!(
        r.json(),
        json!({"status": "cleared", "pattern": "task:*", "deleted": ENTRIES})
    );

    let left: Vec<String> = redis.keys("task:*").await;
    assert_eq!(left.len(), FOREIGN, "only the foreign keys are left");
    assert!(left.iter().all(|k| k.starts_with("task:foreign:")));
    let v: String = redis.cmd(&["GET", "task:foreign:7"]).await;
    assert_eq!(v, "not cachegate's");
}

// ---------------------------------------------------------------------------
// 4b. Fleet figures survive a store stall without double counting
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_figures_are_not_double_counted_after_a_store_stall() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let mut setup = Setup::new("business", &backend.url(), &redis);
    setup.store_timeout_ms = None; // the built-in 100 ms, as deployed
    let inst = setup.start().await;
    let c = inst.client();
    for (p, want) in [
        ("/api/v1/tasks/1", "MISS"),
        ("/api/v1/tasks/1", "HIT"),
        ("/api/v1/tasks/1", "HIT"),
    ] {
        assert_eq!(c.get(p).await.x_cache(), Some(want));
    }
    let s = get_ok(&c, &format!("{P}/stats")).await;
    assert_eq!(
        (s["stats"]["hits"].as_u64(), s["stats"]["misses"].as_u64()),
        (Some(2), Some(1)),
        "{s}"
    );

    // Two more hits are pending when Redis stalls (SIGSTOP: connections stay
    // open, nothing answers). The background flush sends them and times out.
    for _ in 0..2 {
        assert_eq!(c.get("/api/v1/tasks/1").await.x_cache(), Some("HIT"));
    }
    redis.pause();
    // Creates the condition (not a wait for a state): a stall spanning three
    // 500 ms flush periods, so flushes are sent into it and time out (and
    // land once Redis goes on).
    tokio::time::sleep(Duration::from_millis(1600)).await;
    redis.resume();

    // Once Redis answers again the figures settle; they must be what was
    // served: 4 hits, 1 miss (the instance's own figures say so too).
    let url = format!("{P}/stats");
    eventually("stats answers again", PATIENCE, || {
        let (c, u) = (&c, &url);
        async move { call(c, "GET", u, Some(ALL)).await.status == 200 }
    })
    .await;
    // Let the background flusher run twice more: two writes of this
    // instance's totals (nothing else writes them meanwhile).
    let mut flushes = redis.key_events("__cg:stats:*").await;
    for _ in 0..2 {
        let key = flushes.next_event("hset").await;
        assert!(key.starts_with("__cg:stats:"), "{key}");
    }
    let s = get_ok(&c, &url).await;
    let inst_figures = (
        s["stats"]["instance"]["hits"].as_u64(),
        s["stats"]["instance"]["misses"].as_u64(),
    );
    assert_eq!(inst_figures, (Some(4), Some(1)), "{s}");
    let instances: Vec<String> = redis.cmd(&["SMEMBERS", "__cg:stats"]).await;
    assert_eq!(
        (s["stats"]["hits"].as_u64(), s["stats"]["misses"].as_u64()),
        (Some(4), Some(1)),
        "fleet figures counted timed-out flushes more than once; instances {instances:?}; stats {s}"
    );
}

/// One keyspace walk at a time per instance: while a `keys` scan over a
/// large keyspace runs, another `keys` or a pattern `clear` is 429 with
/// `Retry-After`; a tag purge (no walk) is not held up; and once the walk is
/// over, the next one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_keyspace_walk_runs_at_a_time() {
    let redis = RedisServer::start();
    // A keyspace a full SCAN takes a while to walk: 1,000 round trips.
    // Written before cachegate starts: the script holds Redis for seconds
    // on a busy machine, and cachegate's own calls meanwhile would time out
    // and count Redis as stalled (a 503 for the tag purge below).
    let populate = "for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'foreign:' .. i, 'x') end return 1";
    redis.cmd::<i64>(&["EVAL", populate, "0", "1000000"]).await;
    let backend = Backend::start().await;
    let setup = Setup::new("enterprise", &backend.url(), &redis);
    let inst = setup.start().await;
    let c = inst.client();

    // Three walks asked at once (each takes well over a second here): one
    // runs, the others are told to come back.
    let mut calls = Vec::new();
    for path in [
        format!("{P}/keys?pattern=nomatch*"),
        format!("{P}/keys?pattern=other*"),
        format!("{P}/clear?pattern=task:*"),
    ] {
        let c = inst.client();
        let method = if path.contains("/clear") { "DELETE" } else { "GET" };
        calls.push(tokio::spawn(async move { call(&c, method, &path, Some(ALL)).await }));
    }
    let tag = call(&c, "DELETE", &format!("{P}/clear?tag=t1"), Some(ALL)).await;
    assert_eq!(tag.status, 200, "a tag purge walks nothing: {}", tag.text());
    let (mut ran, mut busy) = (0, 0);
    for handle in calls {
        let r = handle.await.expect("walk task");
        match r.status.as_u16() {
            200 => ran += 1,
            429 => {
                busy += 1;
                assert_eq!(assert_json(&r, "busy")["error"], "busy");
                assert_eq!(r.header("retry-after"), Some("1"));
            }
            other => panic!("a walk answered {other}: {}", r.text()),
        }
    }
    assert!(ran >= 1 && busy >= 1, "{ran} walks ran, {busy} were told to wait");
    let after = call(&c, "GET", &format!("{P}/keys?pattern=nomatch*&limit=1"), Some(ALL)).await;
    assert_eq!(after.status, 200, "the permit is returned: {}", after.text());
}
