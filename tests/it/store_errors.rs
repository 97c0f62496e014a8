//! Errors that name their cause (issue 19, item 2) against real servers: a
//! `redis-server` with `requirepass` and a wrong password (or none), one
//! with `databases 2` and db 5, TLS with a CA that did not sign the
//! server, a port nothing listens on, a `.invalid` host name. Each shows
//! its own state and message in `/readyz`, the admin `health` route and
//! `cachegate_store_errors_total{kind}` (every kind present from start),
//! and requests are still served (fail open). Also: `stats` answers 200
//! with a status while Redis is down and counts entries apart from
//! internal keys; `check` names a bad `REDIS_PORT`; the backend probe
//! drives `cachegate_backend_up`, `health` and (when asked) `/readyz`; and
//! a cause is logged once, not once per reconnect attempt.

use crate::common::admin::call;
use crate::common::suite::{config, TOKEN};
use crate::common::topology::{cli, Proc, TlsRedis};
use crate::common::*;
use serde_json::Value;

const KINDS: [&str; 8] = [
    "auth_failed",
    "db_out_of_range",
    "tls_error",
    "connection_refused",
    "dns_failed",
    "timeout",
    "unreachable",
    "error",
];

const PATH: &str = "/api/v1/tasks/1";

async fn start(redis_section: &str, health: &str) -> (Backend, Proxy) {
    let backend = Backend::start().await;
    let text = format!("{}\n[health]\n{health}\n", config(&backend, redis_section, "se:"));
    let proxy = Proxy::start(&text).await;
    (backend, proxy)
}

async fn admin(c: &Client, route: &str) -> Resp {
    call(c, "GET", &format!("/api/v1/cache/{route}"), Some(TOKEN)).await
}

/// Waits until `health` names `state`, then checks `/readyz` (its status
/// code is `ready_code`), the counter, and that requests are still served.
async fn shows(proxy: &Proxy, backend: &Backend, state: &str, words: &str, ready_code: u16) -> Value {
    let c = proxy.client();
    let health = eventually_some(&format!("health says {state}"), PATIENCE, || async {
        let h = admin(&c, "health").await.json();
        (h["store"]["state"] == state).then_some(h)
    })
    .await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["store_up"], false, "{health}");
    assert_eq!(health["store"]["kind"], "redis", "{health}");
    let detail = health["store"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(words), "health's detail should say {words:?}: {health}");

    let ready = c.get("/readyz").await;
    assert_eq!(ready.status, ready_code, "/readyz: {}", ready.text());
    let ready = ready.json();
    assert_eq!(ready["store"]["state"], state, "{ready}");
    assert_eq!(ready["status"], if ready_code == 200 { "ready" } else { "not_ready" });
    if ready_code == 503 {
        let reasons = ready["reasons"].to_string();
        assert!(reasons.contains(state) && reasons.contains(words), "{ready}");
    }

    let scrape = scrape_when(&c, state).await;
    for kind in KINDS {
        // Present from start, every one (a rate() alert sees the first error).
        scrape.scalar("cachegate_store_errors_total", &[("kind", kind)]);
    }
    assert_eq!(scrape.scalar("cachegate_store_up", &[]), 0.0);

    let before = backend.count("GET", PATH);
    for _ in 0..2 {
        let r = c.get(PATH).await;
        assert_eq!(r.status, 200, "fail open: {}", r.text());
        assert_eq!(r.x_cache(), Some("BYPASS"));
    }
    assert_eq!(backend.count("GET", PATH), before + 2, "nothing is cached");
    health
}

/// A scrape once `cachegate_store_errors_total{kind}` has counted one.
async fn scrape_when(c: &Client, kind: &str) -> Scrape {
    eventually_some(
        &format!("cachegate_store_errors_total{{kind={kind:?}}} > 0"),
        PATIENCE,
        || async {
            let s = crate::common::admin::scrape(c).await;
            (s.scalar("cachegate_store_errors_total", &[("kind", kind)]) > 0.0).then_some(s)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_auth_failed() {
    let redis = RedisServer::start();
    assert_eq!(
        cli(redis.port(), &["CONFIG", "SET", "requirepass", "right-password"]).trim(),
        "OK"
    );
    let url = format!("redis://:wrong-password@127.0.0.1:{}", redis.port());
    let (backend, proxy) = start(&format!("url = \"{url}\""), "").await;
    shows(&proxy, &backend, "auth_failed", "refused the credentials", 503).await;
    // The status says why nothing is cached, and stats still answers.
    let s = admin(&proxy.client(), "stats").await;
    assert_eq!(s.status, 200, "{}", s.text());
    assert_eq!(s.json()["status"], "disabled", "{}", s.text());
    assert_eq!(s.json()["store_state"]["state"], "auth_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_for_a_server_that_requires_one_is_auth_failed() {
    let redis = RedisServer::start();
    assert_eq!(
        cli(redis.port(), &["CONFIG", "SET", "requirepass", "right-password"]).trim(),
        "OK"
    );
    let (backend, proxy) = start(&format!("url = \"{}\"", redis.url()), "").await;
    shows(&proxy, &backend, "auth_failed", "NOAUTH", 503).await;
    // Fixed at the server: caching resumes, the state is ok again.
    assert_eq!(
        cli(
            redis.port(),
            &["-a", "right-password", "CONFIG", "SET", "requirepass", ""]
        )
        .trim(),
        "OK"
    );
    let c = proxy.client();
    eventually("health says ok", PATIENCE, || async {
        c.get(PATH).await;
        admin(&c, "health").await.json()["store"]["state"] == "ok"
    })
    .await;
    assert_eq!(c.get("/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_db_index_the_server_lacks_is_db_out_of_range() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _redis = Proc::spawn(port, redis_server(port, dir.path()).args(["--databases", "2"]));
    eventually("redis answers PING", PATIENCE, || async {
        cli(port, &["ping"]).trim() == "PONG"
    })
    .await;
    let section = format!("url = \"redis://127.0.0.1:{port}\"\ndb = 5");
    let (backend, proxy) = start(&section, "").await;
    shows(&proxy, &backend, "db_out_of_range", "no such database", 503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_ca_did_not_sign_is_tls_error() {
    let t = TlsRedis::start(false);
    let section = format!("url = \"{}\"\ntls_ca_file = \"{}\"", t.url(), t.other_ca_file.display());
    let (backend, proxy) = start(&section, "").await;
    shows(&proxy, &backend, "tls_error", "TLS handshake", 503).await;
}

/// Nothing listens: Redis down or a wrong port look alike; readiness stays
/// 200 by default (every replica shares the Redis: taking them all out
/// would turn a cache outage into an outage), 503 with
/// `ready_requires_store = "up"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_nothing_listens_on_is_connection_refused() {
    let section = format!("url = \"redis://127.0.0.1:{}\"", free_port());
    let (backend, proxy) = start(&section, "").await;
    shows(
        &proxy,
        &backend,
        "connection_refused",
        "nothing accepts connections",
        200,
    )
    .await;
    let (backend, proxy) = start(&section, "ready_requires_store = \"up\"").await;
    shows(
        &proxy,
        &backend,
        "connection_refused",
        "nothing accepts connections",
        503,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_that_does_not_resolve_is_dns_failed() {
    let (backend, proxy) = start("url = \"redis://cachegate-no-such-host.invalid:6379\"", "").await;
    shows(&proxy, &backend, "dns_failed", "does not resolve", 503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_answers_with_a_status_while_redis_is_down() {
    let redis = RedisServer::start();
    let (backend, proxy) = start(&format!("url = \"{}\"", redis.url()), "").await;
    let c = proxy.client();
    c.get(PATH).await;
    eventually("a hit", PATIENCE, || async {
        c.get(PATH).await.x_cache() == Some("HIT")
    })
    .await;

    // One entry: internal keys (epoch, secret, indexes, stats) apart.
    let up = eventually_some("stats with the figures", PATIENCE, || async {
        let s = admin(&c, "stats").await.json();
        (s["stats"]["hits"].as_u64() >= Some(1)).then_some(s)
    })
    .await;
    assert_eq!(up["status"], "enabled", "{up}");
    assert_eq!(up["stats"]["total_keys"], 1, "{up}");
    let internal = up["stats"]["internal_keys"].as_u64().expect("internal_keys");
    assert!(internal >= 2, "the epoch and the secret at least: {up}");
    assert_eq!(up["stats"]["db_keys"].as_u64(), Some(1 + internal), "{up}");

    redis.kill();
    let down = eventually_some("stats says degraded", PATIENCE, || async {
        let r = admin(&c, "stats").await;
        assert_eq!(r.status, 200, "stats while Redis is down: {}", r.text());
        let s = r.json();
        (s["status"] == "degraded").then_some(s)
    })
    .await;
    assert_eq!(down["store"], "redis", "{down}");
    assert_eq!(down["store_state"]["state"], "connection_refused", "{down}");
    assert!(down["stats"]["total_keys"].is_null(), "{down}");
    assert!(
        down["stats"]["hits"].as_u64() >= Some(1),
        "this instance's figures: {down}"
    );
    assert!(down["server"].is_null() && down["memory"].is_null(), "{down}");
    drop(backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_probe_drives_backend_up_health_and_readiness() {
    let redis = RedisServer::start();
    let probe = "probe_interval_ms = 50\nprobe_timeout_ms = 500";
    for requires in [false, true] {
        let health = format!("{probe}\nready_requires_backend = {requires}");
        let (backend, proxy) = start(&format!("url = \"{}\"", redis.url()), &health).await;
        let c = proxy.client();
        let s = crate::common::admin::scrape(&c).await;
        assert_eq!(s.scalar("cachegate_backend_up", &[]), 1.0);
        eventually("health says the backend is up", PATIENCE, || async {
            admin(&c, "health").await.json()["backend"]["state"] == "up"
        })
        .await;
        assert_eq!(c.get("/readyz").await.status, 200);

        backend.stop().await;
        let h = eventually_some("health says the backend is down", PATIENCE, || async {
            let h = admin(&c, "health").await.json();
            (h["backend"]["state"] == "down").then_some(h)
        })
        .await;
        assert_eq!(h["status"], "degraded", "{h}");
        assert!(
            h["backend"]["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("TCP connect"),
            "{h}"
        );
        let s = crate::common::admin::scrape(&c).await;
        assert_eq!(s.scalar("cachegate_backend_up", &[]), 0.0);
        let ready = c.get("/readyz").await;
        assert_eq!(ready.status, if requires { 503 } else { 200 }, "{}", ready.text());
        assert_eq!(ready.json()["backend"]["state"], "down");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_probe_path_counts_an_error_status_as_down() {
    let redis = RedisServer::start();
    let health = "probe_interval_ms = 50\nprobe_path = \"/healthcheck\"\nprobe_fall = 1";
    let (backend, proxy) = start(&format!("url = \"{}\"", redis.url()), health).await;
    backend.on("GET", "/healthcheck", Reply::new().status(503).body("down"));
    let c = proxy.client();
    let h = eventually_some("health says the backend is down", PATIENCE, || async {
        let h = admin(&c, "health").await.json();
        (h["backend"]["state"] == "down").then_some(h)
    })
    .await;
    assert!(
        h["backend"]["detail"].as_str().unwrap_or_default().contains("503"),
        "{h}"
    );
    backend.on("GET", "/healthcheck", Reply::new().status(200).body("ok"));
    eventually("health says the backend is up", PATIENCE, || async {
        admin(&c, "health").await.json()["backend"]["state"] == "up"
    })
    .await;
    assert!(backend.count("GET", "/healthcheck") >= 2);
}

fn cachegate_check(env: &[(&str, &str)]) -> (i32, String) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(["check", "--config", path])
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST")
        .env_remove("REDIS_PORT")
        .env_remove("REDIS_DB")
        .envs(env.iter().copied())
        .output()
        .expect("run cachegate check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_rejects_redis_variables_start_up_cannot_use() {
    for (name, value) in [
        ("REDIS_PORT", "x"),
        ("REDIS_PORT", "70000"),
        ("REDIS_DB", "x"),
        ("REDIS_HOST", "bad host"),
    ] {
        let (code, err) = cachegate_check(&[(name, value)]);
        assert_eq!(code, 2, "{name}={value}: {err}");
        assert!(
            err.contains(&format!("environment variable {name}")),
            "{name}={value}: {err}"
        );
    }
    let (code, err) = cachegate_check(&[("REDIS_PORT", "6380"), ("REDIS_DB", "5")]);
    assert_eq!(code, 0, "{err}");
}

/// A cause is logged when it appears, not on each of the many reconnect
/// attempts that meet it.
#[test]
fn a_cause_is_logged_once_not_per_attempt() {
    use std::io::{BufRead, BufReader};
    let redis = RedisServer::start();
    assert_eq!(
        cli(redis.port(), &["CONFIG", "SET", "requirepass", "right-password"]).trim(),
        "OK"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let file = dir.path().join("proxy.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{listen}\"\n[backend]\nurl = \"http://127.0.0.1:{}\"\n\
         [store]\nkind = \"redis\"\n[redis]\nurl = \"redis://:wrong@127.0.0.1:{}\"\n{}",
        free_port(),
        redis.port(),
        crate::common::admin::token_toml("all", TOKEN, crate::common::admin::EVERY_SCOPE)
    );
    std::fs::write(&file, text).expect("write config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(["--config"])
        .arg(&file)
        .env_remove("REDIS_URL")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cachegate");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Wait until the server has refused at least ten attempts (the
    // counter), then read what was logged.
    let url = format!("127.0.0.1:{listen}");
    let deadline = std::time::Instant::now() + PATIENCE * 3;
    loop {
        let attempts = metric(&url, "cachegate_store_errors_total{kind=\"auth_failed\"}");
        if attempts >= 10.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {attempts} auth failures counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50)); // the polling interval
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines: Vec<String> = rx.try_iter().collect();
    let told = lines.iter().filter(|l| l.contains("refused the credentials")).count();
    assert_eq!(told, 1, "the cause once, not per attempt:\n{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("REDIS_PASSWORD") && l.contains("WRONGPASS")),
        "{}",
        lines.join("\n")
    );
}

/// One sample of `/metrics` at `addr`, by its full name with labels (0
/// while the server does not answer yet).
fn metric(addr: &str, series: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0.0;
    };
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return 0.0;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_bad_health_setting_is_reported_at_its_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (line, needle) in [
        ("probe_interval_ms = -1", "probe_interval_ms"),
        ("ready_requires_store = \"sometimes\"", "ready_requires_store"),
        ("probe_path = \"health\"", "probe_path"),
        ("probe_fall = 0", "probe_fall"),
        ("no_such_key = 1", "no_such_key"),
    ] {
        let file = dir.path().join("proxy.toml");
        std::fs::write(
            &file,
            format!("[backend]\nurl = \"http://127.0.0.1:8000\"\n\n[health]\n{line}\n"),
        )
        .expect("write config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cachegate"))
            .args(["check", "--config"])
            .arg(&file)
            .env_remove("REDIS_URL")
            .output()
            .expect("run cachegate check");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {err}");
        assert!(err.contains("proxy.toml:5:"), "{line}: file:line:col expected: {err}");
        assert!(err.contains(needle), "{line}: {err}");
    }
}
