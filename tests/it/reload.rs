//! Hot reload: a new proxy.toml swapped in while requests run (SIGHUP,
//! `cachegate reload`, `POST {prefix}/reload`). In-flight requests finish on
//! the config they started with; an invalid file is refused with its
//! file:line:col and the old config keeps serving.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const OLD_TOKEN: &str = "reload-old-token-0123456789abcdef0123456789";
const NEW_TOKEN: &str = "reload-new-token-0123456789abcdef0123456789";

/// One proxy.toml: what a test changes between generations.
#[derive(Clone)]
struct Settings {
    backend: String,
    /// `[redis] url`; `None`: the memory store.
    redis: Option<String>,
    key: &'static str,
    ttl: u64,
    token: &'static str,
    listen: String,
    log_level: Option<&'static str>,
}

impl Settings {
    fn new(backend: &Backend, redis: Option<&RedisServer>) -> Settings {
        Settings {
            backend: backend.url(),
            redis: redis.map(|r| r.url()),
            key: "task:{task_id}",
            ttl: 300,
            token: OLD_TOKEN,
            listen: "127.0.0.1:0".into(),
            log_level: None,
        }
    }

    fn toml(&self) -> String {
        let store = match &self.redis {
            Some(url) => format!("[store]\nkind = \"redis\"\ntimeout_ms = 100\n\n[redis]\nurl = \"{url}\"\ndb = 0\n"),
            None => "[store]\nkind = \"memory\"\n".to_string(),
        };
        let log = match self.log_level {
            Some(level) => format!("[log]\nlevel = \"{level}\"\n"),
            None => String::new(),
        };
        format!(
            "edition = \"business\"\n\n[server]\nlisten = \"{listen}\"\nshutdown_timeout_ms = 5000\n\n\
             [backend]\nurl = \"{backend}\"\ntimeout_ms = 5000\n\n{store}\n{log}\n\
             [access_log]\nenabled = false\n\n\
             {tokens}\
             [[rule]]\nname = \"task\"\nmethods = [\"GET\", \"HEAD\"]\npath = '^/api/v1/tasks/(?P<task_id>[^/]+)$'\n\
             key = \"{key}\"\nttl = {ttl}\nstatuses = [200]\n",
            listen = self.listen,
            backend = self.backend,
            tokens = crate::common::admin::token_toml("ops", self.token, crate::common::admin::EVERY_SCOPE),
            key = self.key,
            ttl = self.ttl,
        )
    }
}

/// cachegate in-process, loaded from a file that reloads read again.
struct Site {
    path: PathBuf,
    proxy: Proxy,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Site {
    async fn start(settings: &Settings) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, settings.toml()).expect("write proxy.toml");
        let proxy = Proxy::start_file(&path).await;
        let client = proxy.client();
        Site {
            path,
            proxy,
            client,
            _dir: dir,
        }
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).expect("rewrite proxy.toml");
    }

    async fn reload(&self, token: &str) -> Resp {
        let auth = format!("Bearer {token}");
        self.client
            .send(
                "POST",
                "/api/v1/cache/reload",
                &[("authorization", auth.as_str())],
                empty(),
            )
            .await
    }

    fn generation(&self) -> u64 {
        self.proxy.running().live().generation()
    }
}

fn json(resp: &Resp) -> serde_json::Value {
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", resp.body))
}

/// Under steady load, a reload changes the backend, the rule's key and TTL
/// and the admin tokens, and not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_swaps_backend_rules_ttl_and_tokens_without_a_failed_request() {
    let redis = RedisServer::start();
    let (old_backend, new_backend) = (Backend::start().await, Backend::start().await);
    let v1 = Settings::new(&old_backend, Some(&redis));
    let site = Site::start(&v1).await;

    // Mostly hits on a small set, and a steady trickle of misses.
    let load = SteadyLoad::start(site.proxy.addr, 4, Duration::ZERO, |w, n| {
        if n % 4 == 0 {
            format!("/api/v1/tasks/load-{w}-{n}")
        } else {
            format!("/api/v1/tasks/{}", n % 20)
        }
    });
    load.run_for(200, "the load before the reload").await;
    let v2 = Settings {
        backend: new_backend.url(),
        key: "v2:task:{task_id}",
        ttl: 7,
        token: NEW_TOKEN,
        ..v1.clone()
    };
    site.write(&v2.toml());
    let resp = site.reload(OLD_TOKEN).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let body = json(&resp);
    assert_eq!(body["reloaded"], true);
    assert_eq!(body["generation"], 2);
    assert_eq!(body["restart_required"], serde_json::json!([]));
    load.run_for(200, "the load after the reload").await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed, {ok} succeeded: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(new_backend.total() > 0, "misses after the reload go to the new backend");

    // A miss now: the new backend, the new key, the new TTL.
    let before_old = old_backend.total();
    let first = site.client.get("/api/v1/tasks/after-reload").await;
    assert_eq!(first.status, 200);
    assert_eq!(new_backend.count_path("/api/v1/tasks/after-reload"), 1);
    assert_eq!(old_backend.total(), before_old, "the old backend gets nothing new");
    let keys = redis.keys("*after-reload*").await;
    assert!(
        keys.iter().any(|k| k.starts_with("v2:task:after-reload")),
        "stored under the new key: {keys:?}"
    );
    let ttl_ms = redis.pttl("v2:task:after-reload").await;
    assert!(
        ttl_ms > 0 && ttl_ms <= 7_000 + 60_000,
        "TTL from the new rule (7 s plus any stale window): {ttl_ms} ms"
    );
    let again = site.client.get("/api/v1/tasks/after-reload").await;
    assert_eq!(again.status, 200);
    assert_eq!(
        new_backend.count_path("/api/v1/tasks/after-reload"),
        1,
        "the second read is a hit"
    );

    // The tokens changed with the file.
    assert_eq!(site.reload(OLD_TOKEN).await.status, 401, "the old token is gone");
    let resp = site.reload(NEW_TOKEN).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(json(&resp)["generation"], 3);
}

/// A request that started before the reload finishes on the old config
/// (its backend); the next one uses the new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_the_config_they_started_with() {
    let (old_backend, new_backend) = (Backend::start().await, Backend::start().await);
    old_backend.on_path(
        "/api/v1/tasks/slow",
        Reply::new().body(r#"{"from":"old"}"#).delay(Duration::from_millis(800)),
    );
    let v1 = Settings::new(&old_backend, None);
    let site = Site::start(&v1).await;

    let client = Client::new(site.proxy.addr);
    let slow = tokio::spawn(async move { client.get("/api/v1/tasks/slow").await });
    eventually("the slow request reached the old backend", PATIENCE, || async {
        old_backend.count_path("/api/v1/tasks/slow") == 1
    })
    .await;
    site.write(
        &Settings {
            backend: new_backend.url(),
            ..v1.clone()
        }
        .toml(),
    );
    assert_eq!(site.reload(OLD_TOKEN).await.status, 200);
    let slow = slow.await.expect("slow request");
    assert_eq!(slow.status, 200);
    assert_eq!(&slow.body[..], br#"{"from":"old"}"#, "finished on the old backend");
    assert_eq!(new_backend.count_path("/api/v1/tasks/slow"), 0);

    assert_eq!(site.client.get("/api/v1/tasks/next").await.status, 200);
    assert_eq!(new_backend.count_path("/api/v1/tasks/next"), 1);
    assert_eq!(old_backend.count_path("/api/v1/tasks/next"), 0);
}

/// A file that does not load: 422 with its file, line and column, the
/// refusal counted, and the running config keeps serving (its cache too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_with_its_place_and_the_old_config_keeps_serving() {
    let backend = Backend::start().await;
    let v1 = Settings::new(&backend, None);
    let site = Site::start(&v1).await;
    assert_eq!(site.client.get("/api/v1/tasks/1").await.status, 200);

    let good = v1.toml();
    let bad = good.replace("ttl = 300", "ttl = \"five minutes\"");
    let line = bad.lines().position(|l| l.starts_with("ttl = ")).expect("ttl line") + 1;
    site.write(&bad);
    let resp = site.reload(OLD_TOKEN).await;
    assert_eq!(resp.status, 422, "{:?}", resp.body);
    let body = json(&resp);
    assert_eq!(body["error"], "invalid_config");
    assert!(
        body["file"].as_str().is_some_and(|f| f.ends_with("proxy.toml")),
        "{body}"
    );
    assert_eq!(body["line"], line as u64, "{body}");
    assert_eq!(body["column"], 7, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("proxy.toml:{line}:7"))),
        "{body}"
    );
    assert_eq!(site.generation(), 1, "nothing swapped in");

    let hit = site.client.get("/api/v1/tasks/1").await;
    assert_eq!(hit.status, 200);
    assert_eq!(
        backend.count_path("/api/v1/tasks/1"),
        1,
        "the old generation still serves from its cache"
    );
    let auth = format!("Bearer {OLD_TOKEN}");
    let metrics = site.client.get_h("/metrics", &[("authorization", auth.as_str())]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines()
            .any(|l| l.contains("config_reloads_total{result=\"error\"} 1")),
        "the refusal is counted:\n{text}"
    );

    site.write(&good);
    assert_eq!(site.reload(OLD_TOKEN).await.status, 200);
    assert_eq!(site.generation(), 2);
}

/// Settings built at start (the listener, the store) keep their running
/// values and are named in the answer; the rest of the file still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_only_settings_are_kept_and_named() {
    let (old_backend, new_backend) = (Backend::start().await, Backend::start().await);
    let v1 = Settings::new(&old_backend, None);
    let site = Site::start(&v1).await;
    let v2 = Settings {
        listen: format!("127.0.0.1:{}", free_port()),
        backend: new_backend.url(),
        ..v1.clone()
    };
    site.write(&v2.toml().replace(
        "[store]\nkind = \"memory\"\n",
        "[store]\nkind = \"memory\"\ntimeout_ms = 900\n",
    ));
    let resp = site.reload(OLD_TOKEN).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let kept = json(&resp)["restart_required"].clone();
    assert_eq!(kept, serde_json::json!(["server.listen", "cache.store_timeout_ms"]));
    // Still on the old port, and the backend change took effect.
    assert_eq!(site.client.get("/api/v1/tasks/7").await.status, 200);
    assert_eq!(new_backend.count_path("/api/v1/tasks/7"), 1);
}

/// The binary: SIGHUP reloads (with the new `[log] level`), an invalid file
/// on SIGHUP is logged with file:line:col and changes nothing, `cachegate
/// reload` checks the file before asking and exits 2 on an invalid one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_the_reload_command_on_the_binary() {
    let (first, second, third) = (Backend::start().await, Backend::start().await, Backend::start().await);
    let port = free_port();
    let v1 = Settings {
        listen: format!("127.0.0.1:{port}"),
        log_level: Some("error"),
        ..Settings::new(&first, None)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, v1.toml()).expect("write");
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_cachegate"))
            .args(["--config", path.to_str().expect("utf-8")])
            .env_remove("RUST_LOG")
            .env_remove("CACHEGATE_LISTEN")
            .env_remove("CACHEGATE_BACKEND")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start cachegate"),
    );
    let pid = child.0.id().to_string();
    let client = Client::new(([127, 0, 0, 1], port).into());
    eventually("the binary serves", PATIENCE, || async {
        client
            .try_send("GET", "/api/v1/tasks/a", Vec::new(), empty())
            .await
            .is_ok()
    })
    .await;
    assert_eq!(first.count_path("/api/v1/tasks/a"), 1);
    let stderr = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // SIGHUP with a new backend and a chattier log level.
    let v2 = Settings {
        backend: second.url(),
        log_level: Some("info"),
        ..v1.clone()
    };
    std::fs::write(&path, v2.toml()).expect("write v2");
    hangup(&pid);
    // Each probe is a new path: a probe answered by the old backend is cached.
    let probe = AtomicU64::new(0);
    eventually("SIGHUP swapped in the new backend", PATIENCE, || async {
        let path = format!("/api/v1/tasks/b{}", probe.fetch_add(1, Ordering::Relaxed));
        client.get(&path).await.status == 200 && second.count_path(&path) == 1
    })
    .await;
    eventually("the reload is logged at the new level", PATIENCE, || async {
        stderr().contains("config reloaded")
    })
    .await;
    // The first backend saw /a and every probe but the last.
    assert_eq!(first.total(), probe.load(Ordering::Relaxed));

    // An invalid file on SIGHUP: logged with its place, the running config stays.
    let bad = v2.toml().replace("ttl = 300", "ttl = -1");
    let line = bad.lines().position(|l| l.starts_with("ttl = ")).expect("ttl line") + 1;
    std::fs::write(&path, &bad).expect("write bad");
    hangup(&pid);
    let place = format!("proxy.toml:{line}:7");
    eventually("the refusal is logged with file:line:col", PATIENCE, || async {
        stderr().contains(&place)
    })
    .await;
    assert_eq!(client.get("/api/v1/tasks/c").await.status, 200);
    assert_eq!(second.count_path("/api/v1/tasks/c"), 1, "still the second backend");

    // `cachegate reload`: the invalid file never reaches the proxy.
    let out = reload_command(&path);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&place), "{out:?}");

    let v3 = Settings {
        backend: third.url(),
        ..v2.clone()
    };
    std::fs::write(&path, v3.toml()).expect("write v3");
    let out = reload_command(&path);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the route's JSON on stdout");
    assert_eq!(answer["generation"], 3, "SIGHUP made 2; the refused one made none");
    assert_eq!(client.get("/api/v1/tasks/d").await.status, 200);
    assert_eq!(third.count_path("/api/v1/tasks/d"), 1);

    // A wrong token: the proxy refuses, exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args([
            "reload",
            "--config",
            path.to_str().expect("utf-8"),
            "--admin-token",
            "wrong",
        ])
        .env_remove("CACHEGATE_ADMIN_TOKEN")
        .output()
        .expect("cachegate reload");
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "cachegate did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await; // the polling interval
    }
}

fn hangup(pid: &str) {
    let ok = Command::new("kill")
        .args(["-HUP", pid])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -HUP");
}

fn reload_command(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(["reload", "--config", config.to_str().expect("utf-8")])
        .env("CACHEGATE_ADMIN_TOKEN", OLD_TOKEN)
        .env_remove("CACHEGATE_LISTEN")
        .env_remove("CACHEGATE_BACKEND")
        .env_remove("REDIS_URL")
        .output()
        .expect("cachegate reload")
}

/// `cachegate reload` finds an instance started with `--listen` (not the
/// file's address) without being told, and takes a base URL with `--url`;
/// the instance's note of its address goes away when it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_finds_an_instance_started_with_listen() {
    let backend = Backend::start().await;
    let (file_port, real_port) = (free_port(), free_port());
    let settings = Settings {
        listen: format!("127.0.0.1:{file_port}"),
        log_level: Some("error"),
        ..Settings::new(&backend, None)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, settings.toml()).expect("write");
    let real = format!("127.0.0.1:{real_port}");
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_cachegate"))
            .args(["--config", path.to_str().expect("utf-8"), "--listen", &real])
            .env_remove("CACHEGATE_LISTEN")
            .env_remove("CACHEGATE_BACKEND")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cachegate"),
    );
    let client = Client::new(([127, 0, 0, 1], real_port).into());
    eventually("the binary serves", PATIENCE, || async {
        client
            .try_send("GET", "/api/v1/tasks/a", Vec::new(), empty())
            .await
            .is_ok()
    })
    .await;

    let out = reload_command(&path);
    assert_eq!(out.status.code(), Some(0), "reload without --url: {out:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(["reload", "--config", path.to_str().expect("utf-8")])
        .args(["--url", &format!("http://{real}")])
        .env("CACHEGATE_ADMIN_TOKEN", OLD_TOKEN)
        .output()
        .expect("cachegate reload");
    assert_eq!(out.status.code(), Some(0), "reload --url with a base URL: {out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the route's JSON on stdout");
    assert_eq!(answer["generation"], 3);

    let note = cachegate::reload::instance_note_path(&path);
    assert!(note.exists(), "the running instance noted its address");
    let pid = child.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = tokio::task::block_in_place(|| child.0.wait()).expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(!note.exists(), "the note is removed at exit");
}
