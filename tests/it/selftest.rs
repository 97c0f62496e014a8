//! `cachegate selftest` as an operator runs it: the binary against
//! `cachegate demo` (memory store, and Redis from a private redis-server),
//! the line the demo prints, JSON and HTML reports, failing checks (exit 1)
//! and usage errors (exit 2). Everything real: child processes, in-process
//! cachegate and backends on free ports.

use crate::common::Proxy;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cachegate");

/// Splits a command line as a POSIX shell would, for the words the demo
/// prints: bare words and single-quoted ones (`'\''` included).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// `cachegate demo` as a child process; killed on drop.
struct Demo {
    child: Child,
    /// The selftest line's arguments, after `cachegate selftest`.
    selftest: Vec<String>,
    /// The whole banner.
    banner: String,
}

impl Demo {
    fn start(redis_url: Option<&str>) -> Demo {
        let port = crate::common::free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(["demo", "--listen", &format!("127.0.0.1:{port}")])
            .env_remove("CACHEGATE_ADMIN_TOKEN")
            .env_remove("REDIS_URL")
            .env_remove("REDIS_HOST")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(url) = redis_url {
            cmd.env("REDIS_URL", url);
        }
        let mut child = cmd.spawn().expect("start cachegate demo");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = String::new();
        let mut selftest = None;
        for line in lines.by_ref() {
            let line = line.expect("read the demo's banner");
            banner.push_str(&line);
            banner.push('\n');
            // `<the demo's own binary> selftest ...`: pasteable even when
            // cachegate is not on PATH.
            let words = shell_words(line.trim());
            if words.get(1).map(String::as_str) == Some("selftest") {
                let program = std::fs::canonicalize(&words[0]).expect("the selftest line names a file");
                assert_eq!(program, std::fs::canonicalize(BIN).unwrap(), "{line}");
                selftest = Some(words[2..].to_vec());
            }
            if line.contains("Press Ctrl-C") {
                break;
            }
        }
        // Keep reading (and dropping) its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let selftest = selftest.unwrap_or_else(|| panic!("no selftest line in the banner:\n{banner}"));
        Demo {
            child,
            selftest,
            banner,
        }
    }

    /// The printed arguments with one option's value replaced.
    fn with(&self, option: &str, value: &str) -> Vec<String> {
        let mut args = self.selftest.clone();
        let i = args.iter().position(|a| a == option).expect(option);
        args[i + 1] = value.to_string();
        args
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `cachegate selftest ARGS` with piped (non-terminal) output.
fn selftest<S: AsRef<str>>(args: &[S]) -> Run {
    let out = Command::new(BIN)
        .arg("selftest")
        .args(args.iter().map(|a| a.as_ref()))
        .env_remove("CACHEGATE_ADMIN_TOKEN")
        .env_remove("CACHEGATE_API_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run cachegate selftest");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Small phases: the tests check behaviour, not figures.
fn small(mut args: Vec<String>) -> Vec<String> {
    args.extend(["--requests", "40", "--concurrency", "4"].map(String::from));
    args
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report:#}"))
}

#[test]
fn demo_prints_an_admin_token_and_a_selftest_line() {
    let demo = Demo::start(None);
    assert!(demo.banner.contains("  admin   "), "{}", demo.banner);
    let args = &demo.selftest;
    for option in [
        "--url",
        "--path",
        "--id",
        "--token",
        "--admin-token",
        "--purge-key",
        "--write",
    ] {
        assert!(args.iter().any(|a| a == option), "{option} in {args:?}");
    }
    let token = &args[args.iter().position(|a| a == "--admin-token").unwrap() + 1];
    assert!(token.len() >= 32, "a random admin token: {token}");
    assert!(demo.banner.contains(&format!("admin   {token}")));
    // A second demo gets another token.
    let other = Demo::start(None);
    assert_ne!(other.with("--admin-token", "x"), demo.with("--admin-token", "x"));
}

#[test]
fn selftest_against_the_demo_passes_and_writes_the_html_report() {
    let demo = Demo::start(None);
    let dir = tempfile::tempdir().unwrap();
    let html_path = dir.path().join("report.html");
    let mut args = small(demo.selftest.clone());
    args.extend(["--html".to_string(), html_path.display().to_string()]);
    let run = selftest(&args);
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);

    // The table, the latency rows, the histogram and the verdict.
    for want in [
        "proxy          connectivity   ok",
        "backend        connectivity   ok",
        "store          connectivity   ok",
        "hit_miss       performance    ok",
        "invalidation   invalidation   ok",
        "concurrency    concurrency    ok",
        "cold (MISS)",
        "warm (HIT)",
        "latency histogram",
        "throughput over time",
        "result: ok (6 passed, 0 skipped)",
    ] {
        assert!(run.stdout.contains(want), "{want:?} in:\n{}", run.stdout);
    }
    // Not a terminal: no progress bars, no escape codes, no carriage returns.
    for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(!text.contains('\x1b'), "escape codes on {name}: {text:?}");
        assert!(!text.contains('\r'), "carriage returns on {name}: {text:?}");
    }
    assert!(run.stderr.trim().is_empty(), "stderr: {}", run.stderr);

    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    // Both plots, with their marks.
    let hist = &html[html.find("<svg id=\"latency-histogram\"").expect("histogram")..];
    let hist = &hist[..hist.find("</svg>").unwrap()];
    assert!(hist.contains("class=\"bar cold\""), "cold bars");
    assert!(hist.contains("class=\"bar warm\""), "warm bars");
    let thr = &html[html.find("<svg id=\"throughput\"").expect("throughput plot")..];
    let thr = &thr[..thr.find("</svg>").unwrap()];
    assert!(thr.contains("<polyline id=\"throughput-line\""), "throughput line");
    assert!(thr.matches("<circle class=\"point\"").count() >= 10);
    // Self-contained: nothing to fetch.
    for bad in ["<script src", "<link", "url(", "@import", "<img"] {
        assert!(!html.contains(bad), "{bad} in the HTML");
    }
    // The embedded data is the JSON report.
    let start = html.find("id=\"selftest-data\">").unwrap() + "id=\"selftest-data\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    let data: Value = serde_json::from_str(&html[start..end]).unwrap();
    assert_eq!(data["ok"], true);
}

#[test]
fn json_report_has_the_documented_fields() {
    let demo = Demo::start(None);
    let mut args = small(demo.selftest.clone());
    args.push("--json".into());
    let run = selftest(&args);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON only");
    assert_eq!(r["schema"], 1);
    assert_eq!(r["ok"], true);
    assert_eq!((r["passed"].as_u64(), r["failed"].as_u64()), (Some(6), Some(0)));
    assert_eq!(r["cache_header"], "x-cache");
    let names: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["proxy", "backend", "store", "hit_miss", "invalidation", "concurrency"]
    );
    for c in r["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c["reason"].is_null() && c["detail"].is_string(), "{c}");
        assert!(c["phase"].is_string());
    }
    for series in ["cold", "warm", "concurrent"] {
        let s = &r["latency"][series];
        for field in ["count", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"] {
            assert!(s[field].is_number(), "latency.{series}.{field}: {s}");
        }
        assert!(s["p50_ms"].as_f64() <= s["p99_ms"].as_f64());
    }
    // With --purge-key, every cold fetch is a miss and every warm one a hit.
    let hm = &r["hit_miss"];
    assert_eq!(hm["purged_before_cold"], true);
    assert_eq!(hm["cold_requests"], 40);
    assert_eq!(hm["cold_misses"], 40);
    assert_eq!(hm["warm_hits"], 40);
    assert_eq!(hm["errors"], 0);
    assert!(hm["speedup_p50"].is_number());
    let inv = &r["invalidation"];
    assert_eq!(inv["write"], "PUT /api/v1/tasks/1");
    assert_eq!(inv["write_status"], 200);
    assert_eq!(inv["cached_before"], true);
    assert_eq!(inv["read_cache"], "MISS");
    assert_eq!(inv["shows_new_data"], true);
    assert!(inv["nonce"].as_str().unwrap().starts_with("selftest-"));
    let c = &r["concurrency"];
    assert_eq!((c["workers"].as_u64(), c["requests"].as_u64()), (Some(4), Some(160)));
    assert_eq!(c["errors"], 0);
    assert!(c["throughput_rps"].as_f64().unwrap() > 0.0);
    assert!(c["hit_rate"].as_f64().unwrap() > 0.9, "{c}");
    let timeline = c["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 10);
    assert!(timeline.iter().all(|s| s["t_s"].is_number() && s["rps"].is_number()));
    let h = &r["histogram"];
    let bounds = h["bounds_ms"].as_array().unwrap().len();
    assert_eq!(h["cold"].as_array().unwrap().len() + 1, bounds);
    assert_eq!(h["warm"].as_array().unwrap().len() + 1, bounds);
    let total: u64 = h["cold"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 40);
    assert!(r["store_stats"]["hits"].is_number(), "{}", r["store_stats"]);
    assert_eq!(r["target"]["ids"], 3);
}

#[test]
fn a_wrong_admin_token_fails_the_store_check() {
    let demo = Demo::start(None);
    let mut args = small(demo.with("--admin-token", "not-the-token"));
    // Without the purge (which needs the token), the rest still runs.
    let i = args.iter().position(|a| a == "--purge-key").unwrap();
    args.drain(i..i + 2);
    args.push("--json".into());
    let run = selftest(&args);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(r["ok"], false);
    let store = check(&r, "store");
    assert_eq!(store["status"], "failed");
    assert!(store["reason"].as_str().unwrap().contains("401"), "{store}");
    assert_eq!(check(&r, "proxy")["status"], "ok");
    assert_eq!(check(&r, "hit_miss")["status"], "ok");
    assert_eq!(check(&r, "invalidation")["status"], "ok");
    // Without --purge-key the cold fetches are the first fetch of each id.
    assert_eq!(r["hit_miss"]["purged_before_cold"], false);
    assert_eq!(r["hit_miss"]["cold_requests"], 3);

    // The table says which check failed.
    let run = selftest(&args[..args.len() - 1]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("result: FAILED (1 failed: store"), "{}", run.stdout);
}

#[test]
fn skipped_checks_do_not_fail_the_run() {
    let demo = Demo::start(None);
    let args = demo.selftest.clone();
    let url = &args[args.iter().position(|a| a == "--url").unwrap() + 1];
    let token = &args[args.iter().position(|a| a == "--token").unwrap() + 1];
    let run = selftest(&[
        "--url", url, "--id", "1-3", "--token", token, "-n", "20", "-j", "2", "--json",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(check(&r, "store")["status"], "skipped");
    assert_eq!(check(&r, "invalidation")["status"], "skipped");
    assert!(check(&r, "invalidation")["reason"]
        .as_str()
        .unwrap()
        .contains("--write"));
    assert_eq!(r["skipped"], 2);
}

#[test]
fn a_missing_api_token_fails_connectivity_and_skips_the_rest() {
    let demo = Demo::start(None);
    let mut args = demo.selftest.clone();
    let i = args.iter().position(|a| a == "--token").unwrap();
    args.drain(i..i + 2);
    args.push("--json".into());
    let run = selftest(&args);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(check(&r, "proxy")["status"], "ok");
    let backend = check(&r, "backend");
    assert_eq!(backend["status"], "failed");
    assert!(backend["reason"].as_str().unwrap().contains("401"), "{backend}");
    for name in ["hit_miss", "invalidation", "concurrency"] {
        assert_eq!(check(&r, name)["status"], "skipped");
    }
}

#[test]
fn nothing_listening_fails_with_exit_1() {
    let port = crate::common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("r.html").display().to_string();
    let run = selftest(&["--url", &format!("http://127.0.0.1:{port}"), "--json", "--html", &html]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    let proxy = check(&r, "proxy");
    assert_eq!(proxy["status"], "failed");
    assert!(!proxy["reason"].as_str().unwrap().is_empty());
    for name in ["backend", "hit_miss", "invalidation", "concurrency"] {
        assert_eq!(check(&r, name)["status"], "skipped", "{name}");
    }
    // The report is still written, its plots saying there is nothing to show.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg id=\"latency-histogram\"") && page.contains("<svg id=\"throughput\""));
    assert!(page.contains("no latencies measured") && page.contains("FAILED"));
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &[],
        &["--url", "not a url"],
        &["--url", "127.0.0.1:8080"],
        &["--url", "https://127.0.0.1:8443"],
        &["--url", "http://127.0.0.1:1", "--path", "no-slash"],
        &["--url", "http://127.0.0.1:1", "--id", "9-1"],
        &["--url", "http://127.0.0.1:1", "--requests", "0"],
        &["--url", "http://127.0.0.1:1", "--concurrency", "x"],
        &["--url", "http://127.0.0.1:1", "--write", "GET /api/v1/tasks/1"],
        &["--url", "http://127.0.0.1:1", "--write", "PUT"],
        &["--url", "http://127.0.0.1:1", "--purge-key", "task:{id}"],
        &["--url", "http://127.0.0.1:1", "--header", "no colon"],
        &["--url", "http://127.0.0.1:1", "--html", "/no/such/dir/report.html"],
        &["--url", "http://127.0.0.1:1", "--bogus"],
    ];
    for args in cases {
        let run = selftest(args);
        assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(!run.stderr.trim().is_empty(), "{args:?} explains itself");
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
    }
}

// ---------------------------------------------------------------------------
// Deployments that are wrong in ways the self-test must catch
// ---------------------------------------------------------------------------

/// A task backend that answers every GET with the same task and accepts
/// writes without changing anything.
async fn stubborn_backend() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let body = match *req.method() {
                        http::Method::GET | http::Method::HEAD => r#"{"id":"1","name":"never changes"}"#,
                        _ => r#"{"status":"accepted"}"#,
                    };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(StatusCode::OK)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

fn proxy_config(backend: &str, rules: &str) -> String {
    format!("edition = \"business\"\n[server]\nlisten = \"127.0.0.1:0\"\n[backend]\nurl = \"{backend}\"\n{rules}")
}

async fn selftest_async(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || selftest(&args)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_ignores_writes_fails_the_invalidation_check() {
    let (backend, task) = stubborn_backend().await;
    let proxy = Proxy::start(&proxy_config(&format!("http://{backend}"), cachegate::demo::TASK_RULES)).await;
    let args: Vec<String> = [
        "--url",
        &format!("http://{}", proxy.addr),
        "--id",
        "1",
        "-n",
        "20",
        "-j",
        "2",
        "--write",
        r#"PUT /api/v1/tasks/{id} {"name":"selftest {nonce}"}"#,
        "--json",
    ]
    .map(String::from)
    .to_vec();
    let run = selftest_async(args).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    let inv = check(&r, "invalidation");
    assert_eq!(inv["status"], "failed", "{inv}");
    let reason = inv["reason"].as_str().unwrap();
    // cachegate did purge (the read was a MISS); the backend kept the old data.
    assert!(
        reason.contains("X-Cache: MISS") && reason.contains("old data"),
        "{reason}"
    );
    assert_eq!(r["invalidation"]["shows_new_data"], false);
    assert_eq!(check(&r, "hit_miss")["status"], "ok");
    assert_eq!(check(&r, "concurrency")["status"], "ok");
    proxy.shutdown_within(Duration::from_secs(2)).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_without_invalidation_rules_fails_the_invalidation_check() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = cachegate::demo::serve_sample_api(listener).await;
    // The read rule only: no [[invalidate]] rule purges task:{id}. (A write
    // to the read's own URI would still purge it, RFC 9111 §4.4; the write
    // below goes to an alias the sample API accepts, with a trailing slash.)
    let rules = cachegate::demo::TASK_RULES;
    let rules = &rules[..rules.find("[[invalidate]]").unwrap()];
    let proxy = Proxy::start(&proxy_config(&api.url(), rules)).await;
    let args: Vec<String> = [
        "--url",
        &format!("http://{}", proxy.addr),
        "--id",
        "2",
        "--token",
        api.token("acme").unwrap(),
        "-n",
        "20",
        "-j",
        "2",
        "--write",
        r#"PUT /api/v1/tasks/{id}/ {"name":"selftest {nonce}"}"#,
        "--json",
    ]
    .map(String::from)
    .to_vec();
    let run = selftest_async(args).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    let inv = check(&r, "invalidation");
    assert_eq!(inv["status"], "failed", "{inv}");
    assert!(
        inv["reason"].as_str().unwrap().contains("cache HIT with the old data"),
        "{inv}"
    );
    assert_eq!(r["invalidation"]["read_cache"], "HIT");
    proxy.shutdown_within(Duration::from_secs(2)).await;
    api.shutdown().await;
}

#[test]
fn selftest_against_the_demo_on_redis_passes() {
    let redis = crate::common::RedisServer::start();
    let demo = Demo::start(Some(&redis.url()));
    let mut args = small(demo.selftest.clone());
    args.push("--json".into());
    let run = selftest(&args);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    let store = check(&r, "store");
    assert!(
        store["detail"].as_str().unwrap().starts_with("redis store up"),
        "{store}"
    );
    // Purging through the admin API reached Redis: every cold fetch missed.
    assert_eq!(r["hit_miss"]["cold_misses"], 40);
    assert_eq!(check(&r, "invalidation")["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_listener_of_its_own_is_reached_with_admin_url() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = cachegate::demo::serve_sample_api(listener).await;
    let admin = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}{}",
        crate::common::admin::token_toml("ops", "ops-token", &["read", "purge"]),
        cachegate::demo::TASK_RULES
    );
    let proxy = Proxy::start(&proxy_config(&api.url(), &admin)).await;
    let admin_addr = proxy.admin_addr.expect("an admin listener");
    let base: Vec<String> = [
        "--url",
        &format!("http://{}", proxy.addr),
        "--id",
        "1-3",
        "--token",
        api.token("acme").unwrap(),
        "--admin-token",
        "ops-token",
        "-n",
        "20",
        "-j",
        "2",
        "--json",
    ]
    .map(String::from)
    .to_vec();

    // The admin routes are not on the main listener: the health read goes
    // to the backend, and the reason says where to look.
    let run = selftest_async(base.clone()).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    let store = check(&r, "store");
    assert!(store["reason"].as_str().unwrap().contains("--admin-url"), "{store}");

    // With --admin-url (and the purge there) everything passes.
    let mut args = base;
    args.extend(
        [
            "--admin-url",
            &format!("http://{admin_addr}"),
            "--purge-key",
            "task:{id}",
        ]
        .map(String::from),
    );
    let run = selftest_async(args).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(check(&r, "store")["status"], "ok");
    assert_eq!(r["hit_miss"]["cold_misses"], 20);
    assert_eq!(r["target"]["admin_url"], format!("http://{admin_addr}"));
    proxy.shutdown_within(Duration::from_secs(2)).await;
    api.shutdown().await;
}
