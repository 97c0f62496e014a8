//! Cache warming: `cachegate warm` (the binary, as an operator runs it) and
//! `[warm]` at start, against a private redis-server and the in-process
//! backend, which counts what reaches it.

use crate::common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const RULES: &str = r#"
[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"
ttl = 300
tags = ["tasks"]

[[rule]]
name = "mine"
path = '^/api/v1/me/(?P<what>[^/]+)$'
key = "me:{what}"
ttl = 300

[[rule]]
name = "small"
path = '^/small/(?P<x>[^/]+)$'
key = "small:{x}"
ttl = 300
max_body_bytes = 16
"#;

/// `HEAD` + `RULES` + `extra`, rendered for this backend and Redis.
fn config_text(backend: &str, redis: Option<&RedisServer>, extra: &str) -> String {
    let kind = if redis.is_some() { Kind::Redis } else { Kind::Memory };
    let url = redis.map(|r| r.url());
    render(&format!("{HEAD}\n{RULES}\n{extra}"), kind, backend, url.as_deref())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Runs the binary (off the runtime's threads, so the in-process backend
/// keeps answering) with `stdin` piped in, if any.
async fn cachegate(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachegate"));
        cmd.args(&args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "REDIS_URL",
            "REDIS_HOST",
            "REDIS_PORT",
            "REDIS_DB",
            "CACHEGATE_BACKEND",
            "RUST_LOG",
            "CACHE_TTL",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run cachegate");
        if let Some(text) = stdin {
            // Dropped at the end of the statement: the child sees EOF.
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().expect("wait for cachegate");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

fn arg(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_fills_the_cache_so_the_first_client_get_is_a_hit() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&backend.url(), Some(&redis), "");
    let config = write(dir.path(), "proxy.toml", &text);
    let paths = write(
        dir.path(),
        "paths.txt",
        "# the two hot tasks\n/api/v1/tasks/1\n\n/api/v1/tasks/2   # second\n",
    );
    let out = cachegate(&["warm", "--config", &arg(&config), "--paths", &arg(&paths)], None, &[]).await;
    assert_eq!(out.code, 0, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("2 stored, 0 skipped, 0 failed"), "{}", out.stdout);
    assert_eq!(backend.count("GET", "/api/v1/tasks/1"), 1);
    assert_eq!(backend.count("GET", "/api/v1/tasks/2"), 1);
    // Stored by the normal fill: the rule's key, the anonymous scope, the
    // rule's tag indexed.
    assert!(redis.entry_fields("task:1").await.contains(&"anon".to_string()));
    assert!(redis.exists("__cg:tag:tasks").await, "the rule's tag was not indexed");

    // A client's first request is a hit that never reaches the backend.
    let proxy = Proxy::start(&text).await;
    let client = Client::new(proxy.addr);
    for id in [1, 2] {
        let resp = client.get(&format!("/api/v1/tasks/{id}")).await;
        assert_eq!(resp.x_cache(), Some("HIT"), "task {id}: {}", resp.cache_status());
        assert_eq!(resp.json()["id"], id.to_string());
    }
    assert_eq!(backend.count("GET", "/api/v1/tasks/1"), 1);
    assert_eq!(backend.count("GET", "/api/v1/tasks/2"), 1);

    // Warming again finds them fresh and fetches nothing.
    let out = cachegate(&["warm", "--config", &arg(&config), "--paths", &arg(&paths)], None, &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("0 stored, 2 skipped"), "{}", out.stdout);
    assert!(out.stdout.contains("already fresh"), "{}", out.stdout);
    assert_eq!(backend.total(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentialed_warming_fills_that_callers_scope_only() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // The secret comes from the environment, not the file.
    let text = config_text(
        &backend.url(),
        Some(&redis),
        "[warm]\npaths = [\"/api/v1/me/profile\"]\nheaders_env = { Authorization = \"WARM_AUTHORIZATION\" }\n",
    );
    assert!(!text.contains("Bearer"));
    let config = write(dir.path(), "proxy.toml", &text);
    let out = cachegate(
        &["warm", "--config", &arg(&config)],
        None,
        &[("WARM_AUTHORIZATION", "Bearer alice")],
    )
    .await;
    assert_eq!(out.code, 0, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("1 stored"), "{}", out.stdout);
    // --header replaces the config's header of that name.
    let out = cachegate(
        &[
            "warm",
            "--config",
            &arg(&config),
            "--header",
            "Authorization: Bearer bob",
        ],
        None,
        &[("WARM_AUTHORIZATION", "Bearer alice")],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("1 stored"), "bob's scope was empty: {}", out.stdout);
    assert_eq!(backend.count("GET", "/api/v1/me/profile"), 2);

    let proxy = Proxy::start(&text).await;
    for who in ["alice", "bob"] {
        let auth = format!("Bearer {who}");
        assert!(
            proxy
                .stored("me:profile", &proxy.scope_of(&[("authorization", &auth)]))
                .await
        );
    }
    assert!(
        !proxy.stored("me:profile", "anon").await,
        "an anonymous entry was filled"
    );
    let client = Client::new(proxy.addr);
    for who in ["alice", "bob"] {
        let auth = format!("Bearer {who}");
        let resp = client.get_h("/api/v1/me/profile", &[("authorization", &auth)]).await;
        assert_eq!(resp.x_cache(), Some("HIT"), "{who}: {}", resp.cache_status());
        assert_eq!(resp.caller(), auth, "{who} got another caller's entry");
    }
    assert_eq!(backend.count("GET", "/api/v1/me/profile"), 2);
    // Nobody else's request is served from those scopes.
    let resp = client.get("/api/v1/me/profile").await;
    assert_eq!(resp.x_cache(), Some("MISS"));
    assert_eq!(resp.caller(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bounds_the_requests_in_flight() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "proxy.toml", &config_text(&backend.url(), None, ""));
    let mut list = String::new();
    for i in 0..12 {
        let path = format!("/api/v1/tasks/{i}");
        backend.on("GET", &path, Reply::new().delay(Duration::from_millis(150)));
        list.push_str(&path);
        list.push('\n');
    }
    let paths = write(dir.path(), "paths.txt", &list);
    let out = cachegate(
        &[
            "warm",
            "--config",
            &arg(&config),
            "--paths",
            &arg(&paths),
            "--concurrency",
            "3",
            "--json",
        ],
        None,
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["stored"], 12);
    assert_eq!(backend.total(), 12);
    assert_eq!(backend.max_in_flight(), 3, "--concurrency 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_spaces_the_requests() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "proxy.toml", &config_text(&backend.url(), None, ""));
    let list: String = (0..10).map(|i| format!("/api/v1/tasks/{i}\n")).collect();
    let out = cachegate(
        &[
            "warm",
            "--config",
            &arg(&config),
            "--paths",
            "-",
            "--rate",
            "20",
            "--concurrency",
            "10",
        ],
        Some(&list),
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let arrivals = backend.arrivals();
    assert_eq!(arrivals.len(), 10);
    // 10 starts at 20/s, one every 50 ms from the first: the k-th arrival
    // comes no earlier than k × 50 ms after the run began, so at least
    // k × 50 ms less the first request's own latency after the first
    // arrival (a burst would put them all within a few milliseconds).
    let slack = Duration::from_millis(60);
    for (k, at) in arrivals.iter().enumerate() {
        let since_first = *at - arrivals[0];
        assert!(
            since_first + slack >= Duration::from_millis(50) * k as u32,
            "request {k} arrived {since_first:?} after the first at --rate 20"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_paths_and_the_json_summary() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "proxy.toml", &config_text(&backend.url(), Some(&redis), ""));
    backend.on(
        "GET",
        "/api/v1/tasks/gone",
        Reply::new().status(404).body("no such task"),
    );
    backend.on("GET", "/api/v1/tasks/boom", Reply::new().status(500).body("it broke"));
    // Already stored before the run.
    let out = cachegate(
        &["warm", "--config", &arg(&config), "--paths", "-"],
        Some("/api/v1/tasks/2\n"),
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    let list = "/api/v1/tasks/1\n/api/v1/tasks/2\n/static/logo.png\n/api/v1/tasks/gone\n/api/v1/tasks/boom\n";
    let out = cachegate(
        &["warm", "--config", &arg(&config), "--paths", "-", "--json"],
        Some(list),
        &[],
    )
    .await;
    assert_eq!(out.code, 1, "a failed path exits 1: {}\n{}", out.stdout, out.stderr);
    let s = out.json();
    assert_eq!(s["total"], 5, "{s:#}");
    assert_eq!(s["stored"], 1, "{s:#}");
    assert_eq!(s["skipped"], 3, "{s:#}");
    assert_eq!(s["failed"], 1, "{s:#}");
    assert_eq!(s["skipped_reasons"]["already fresh"], 1, "{s:#}");
    assert_eq!(
        s["skipped_reasons"]["not cacheable by rules: no rule covers it"], 1,
        "{s:#}"
    );
    let uncacheable: Vec<&String> = s["skipped_reasons"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("uncacheable response") && k.contains("404"))
        .collect();
    assert_eq!(uncacheable.len(), 1, "{s:#}");
    assert_eq!(s["failed_reasons"]["backend 500"], 1, "{s:#}");
    assert!(s["elapsed_ms"].is_u64());
    // Every path, in the order given, with its result.
    let paths = s["paths"].as_array().unwrap();
    let got: Vec<(&str, &str)> = paths
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("/api/v1/tasks/1", "stored"),
            ("/api/v1/tasks/2", "skipped"),
            ("/static/logo.png", "skipped"),
            ("/api/v1/tasks/gone", "skipped"),
            ("/api/v1/tasks/boom", "failed"),
        ]
    );
    assert_eq!(paths[4]["status"], 500);
    assert_eq!(paths[4]["reason"], "backend 500");
    assert!(paths[0].get("reason").is_none(), "{s:#}");
    // A path no rule covers is not fetched at all.
    assert_eq!(backend.count_path("/static/logo.png"), 0);
    assert_eq!(backend.count_path("/api/v1/tasks/2"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_is_reported_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let config = write(dir.path(), "proxy.toml", &config_text(&nobody, None, ""));
    let out = cachegate(
        &["warm", "--config", &arg(&config), "--paths", "-"],
        Some("/api/v1/tasks/1\n/api/v1/tasks/2\n"),
        &[],
    )
    .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("0 stored, 0 skipped, 2 failed"), "{}", out.stdout);
    assert!(out.stdout.contains("backend unreachable (502)"), "{}", out.stdout);
    assert!(
        out.stdout.contains("/api/v1/tasks/2"),
        "failed paths are listed: {}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_warm_config_exits_2_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let paths = arg(&write(dir.path(), "paths.txt", "/api/v1/tasks/1\n"));
    let cases = [
        ("concurrency.toml", "[warm]\nconcurrency = 0\n", ":2:15:"),
        ("path.toml", "[warm]\npaths = [\"/ok\", \"nope\"]\n", ":2:17:"),
        ("rate.toml", "[warm]\nrate = -1\n", ":2:8:"),
        ("file.toml", "[warm]\npaths_file = \"missing.txt\"\n", ":2:14:"),
        ("unknown.toml", "[warm]\nconcurency = 3\n", ":2:1:"),
        ("header.toml", "[warm]\nheaders = { \"bad name\" = \"x\" }\n", ":2:11:"),
        (
            "env.toml",
            "[warm]\nheaders_env = { Authorization = \"CACHEGATE_TEST_UNSET\" }\n",
            ":2:15:",
        ),
    ];
    for (name, text, position) in cases {
        let file = arg(&write(dir.path(), name, text));
        let mut commands = vec![vec!["warm", "--config", &file, "--paths", &paths]];
        // A secret missing from the environment stops `warm`, not the
        // server (which logs it and skips warming).
        if name != "env.toml" {
            commands.push(vec!["check", "--config", &file]);
        }
        for args in commands {
            let out = cachegate(&args, None, &[]).await;
            assert_eq!(out.code, 2, "{name} {args:?}: {}{}", out.stdout, out.stderr);
            assert!(
                out.stderr.contains(&format!("{file}{position}")),
                "{name}: expected {file}{position} in {:?}",
                out.stderr
            );
        }
    }
    let env_file = arg(&dir.path().join("env.toml"));
    let out = cachegate(&["check", "--config", &env_file], None, &[]).await;
    assert_eq!(out.code, 0, "the server starts without the secret: {}", out.stderr);
    // A bad line in a paths file names the file and the line.
    let good = arg(&write(dir.path(), "good.toml", "[warm]\n"));
    let bad_paths = arg(&write(dir.path(), "bad.txt", "/a\n# fine\nnot-a-path\n"));
    let out = cachegate(&["warm", "--config", &good, "--paths", &bad_paths], None, &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains(&format!("{bad_paths}:3:")), "{}", out.stderr);
    // So does a paths_file in the config (relative to the config's folder).
    write(dir.path(), "listed.txt", "/a\nnope\n");
    let listed = arg(&write(
        dir.path(),
        "listed.toml",
        "[warm]\npaths_file = \"listed.txt\"\n",
    ));
    let out = cachegate(&["check", "--config", &listed], None, &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains(&format!("{listed}:2:14:")), "{}", out.stderr);
    assert!(out.stderr.contains("listed.txt:2:"), "{}", out.stderr);
    // Usage errors: nothing to warm, a bad flag value.
    for args in [
        vec!["warm", "--config", &good],
        vec!["warm", "--config", &good, "--paths", &paths, "--concurrency", "0"],
        vec!["warm", "--config", &good, "--paths", &paths, "--rate", "0"],
        vec!["warm", "--config", &good, "--paths", &paths, "--header", "no colon"],
    ] {
        let out = cachegate(&args, None, &[]).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_warming_at_start() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    for id in 1..=3 {
        backend.on(
            "GET",
            &format!("/api/v1/tasks/{id}"),
            Reply::new().delay(Duration::from_millis(300)),
        );
    }
    let text = config_text(
        &backend.url(),
        Some(&redis),
        "[warm]\npaths = [\"/api/v1/tasks/1\", \"/api/v1/tasks/2\", \"/api/v1/tasks/3\"]\nconcurrency = 1\nready_waits = true\n",
    );
    let proxy = Proxy::start(&text).await;
    let client = Client::new(proxy.addr);
    let resp = client.get("/readyz").await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.json()["status"], "warming");
    // Alive all the same, and serving.
    assert_eq!(client.get("/healthz").await.status, 200);
    eventually("warm_pending counts the paths left", PATIENCE, || async {
        let metrics = client.scrape().await;
        metrics.get("cachegate_warm_pending", &[]).is_some_and(|n| n >= 1.0)
    })
    .await;
    eventually("readyz answers 200", PATIENCE, || async {
        client.get("/readyz").await.status == 200
    })
    .await;
    assert_eq!(client.get("/readyz").await.json()["status"], "ready");
    for id in 1..=3 {
        let resp = client.get(&format!("/api/v1/tasks/{id}")).await;
        assert_eq!(resp.x_cache(), Some("HIT"), "task {id}: {}", resp.cache_status());
    }
    assert_eq!(backend.total(), 3);
    let metrics = client.scrape().await;
    assert_eq!(
        metrics.get("cachegate_warm_paths_total", &[("result", "stored")]),
        Some(3.0),
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.get("cachegate_warm_pending", &[]),
        Some(0.0),
        "{}",
        metrics.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_failures_at_start_are_not_fatal() {
    let backend = Backend::start().await;
    backend.on("GET", "/api/v1/tasks/boom", Reply::new().status(500).body("it broke"));
    let text = config_text(
        &backend.url(),
        None,
        "[warm]\npaths = [\"/api/v1/tasks/boom\", \"/api/v1/tasks/1\", \"/nothing/caches/this\"]\nready_waits = true\n",
    );
    let proxy = Proxy::start(&text).await;
    let client = Client::new(proxy.addr);
    eventually("readyz answers 200", PATIENCE, || async {
        client.get("/readyz").await.status == 200
    })
    .await;
    let metrics = client.scrape().await;
    for (result, n) in [("stored", 1.0), ("skipped", 1.0), ("failed", 1.0)] {
        assert_eq!(
            metrics.get("cachegate_warm_paths_total", &[("result", result)]),
            Some(n),
            "{result}: {}",
            metrics.text
        );
    }
    assert_eq!(client.get("/api/v1/tasks/1").await.x_cache(), Some("HIT"));
    assert_eq!(client.get("/api/v1/tasks/boom").await.status, 500);
    assert_eq!(backend.count_path("/nothing/caches/this"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_unknown_length_are_stored_within_the_limit() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&backend.url(), Some(&redis), "");
    let config = write(dir.path(), "proxy.toml", &text);
    backend.on("GET", "/small/fits", Reply::new().chunked(["abc", "def"]));
    backend.on("GET", "/small/big", Reply::new().chunked(["0123456789", "0123456789"]));
    let out = cachegate(
        &["warm", "--config", &arg(&config), "--paths", "-", "--json"],
        Some("/small/fits\n/small/big\n"),
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = out.json();
    assert_eq!(s["paths"][0]["result"], "stored", "{s:#}");
    assert_eq!(s["paths"][0]["reason"], "streamed", "{s:#}");
    assert_eq!(s["paths"][1]["result"], "skipped", "{s:#}");
    assert_eq!(
        s["paths"][1]["reason"], "uncacheable response: too-large (status 200)",
        "{s:#}"
    );
    // What the summary said is what the store holds.
    assert!(redis.exists("small:fits").await, "the streamed body was not stored");
    // (A miss's guard may leave a record holding no entry: see
    // ARCHITECTURE.md, "No stale fill after a purge".)
    assert!(
        redis.entry_fields("small:big").await.is_empty(),
        "the too-large body was stored"
    );
    let proxy = Proxy::start(&text).await;
    let resp = Client::new(proxy.addr).get("/small/fits").await;
    assert_eq!(resp.x_cache(), Some("HIT"), "{}", resp.cache_status());
    assert_eq!(resp.text(), "abcdef");
    assert_eq!(backend.count_path("/small/fits"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_warming_wins_over_the_fetched_body() {
    // The write guard applies: a body fetched before a purge is not stored.
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // A fill lock lives (and is waited for) as long as the backend timeout
    // and the coalesce timeout allow: 60 s here, so that a miss held by a
    // lock the warm process left behind is told apart on any machine.
    let text = config_text(&backend.url(), Some(&redis), "[cache]\ncoalesce_timeout_ms = 60000\n").replacen(
        "timeout_ms = 5000",
        "timeout_ms = 60000",
        1,
    );
    let config = write(dir.path(), "proxy.toml", &text);
    let proxy = Proxy::start(&text).await;
    let client = Client::new(proxy.addr);
    // The warm GET's body (version 1) is made on arrival and sent once the
    // write below has gone through.
    let gate = Gate::closed();
    backend.on("GET", "/api/v1/tasks/7", Reply::new().gate(&gate));
    let config_arg = arg(&config);
    let args = ["warm", "--config", &config_arg, "--paths", "-", "--json"];
    let warm = cachegate(&args, Some("/api/v1/tasks/7\n"), &[]);
    let write = async {
        // Once the warm request reached the backend (its body is version
        // 1), a write goes through the proxy and purges task:7.
        eventually("the warm GET reaches the backend", PATIENCE, || async {
            backend.count("GET", "/api/v1/tasks/7") == 1
        })
        .await;
        assert_eq!(client.put("/api/v1/tasks/7").await.status, 200);
        gate.open();
    };
    let (out, ()) = tokio::join!(warm, write);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = out.json();
    assert_eq!(s["paths"][0]["result"], "skipped", "{s:#}");
    assert_eq!(s["paths"][0]["reason"], "superseded by a purge meanwhile", "{s:#}");
    assert!(!proxy.stored("task:7", "anon").await, "the pre-write body was stored");
    backend.reset("/api/v1/tasks/7");
    let started = std::time::Instant::now();
    let resp = client.get("/api/v1/tasks/7").await;
    // Not held up by a fill lock the warm process left behind. The bound is
    // the behaviour: such a lock would hold the miss 60 s.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the client waited {:?}",
        started.elapsed()
    );
    assert_eq!(resp.x_cache(), Some("MISS"), "{}", resp.cache_status());
    assert_eq!(resp.version(), 2, "served the body from before the write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_fails_every_path_without_loading_the_backend() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = render(
        &format!("{HEAD}\n{RULES}"),
        Kind::Redis,
        &backend.url(),
        Some(&format!("redis://127.0.0.1:{}", free_port())),
    );
    let config = write(dir.path(), "proxy.toml", &text);
    let out = cachegate(
        &["warm", "--config", &arg(&config), "--paths", "-", "--json"],
        Some("/api/v1/tasks/1\n/api/v1/tasks/2\n"),
        &[],
    )
    .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let s = out.json();
    assert_eq!(s["failed"], 2, "{s:#}");
    assert_eq!(s["failed_reasons"]["store unavailable"], 2, "{s:#}");
    assert_eq!(backend.total(), 0, "warming went to the backend with nowhere to store");
}
