//! SIGTERM / SIGINT on the real binary: stop accepting, let in-flight
//! requests finish (within `[server] shutdown_timeout_ms`), exit 0.

use crate::common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary on a free port with the memory store in front of `backend`.
struct Binary {
    /// Killed on drop: a test that fails half-way leaves nothing running.
    child: ChildGuard,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Binary {
    async fn start(backend: &Backend, shutdown_timeout_ms: u64) -> Binary {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_timeout_ms = {shutdown_timeout_ms}\n\n\
             [backend]\nurl = \"{}\"\ntimeout_ms = 10000\n\n[store]\nkind = \"memory\"\n",
            backend.url()
        );
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, config).expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_cachegate"))
            .args(["--config", path.to_str().expect("utf-8 path"), "--log", "warn"])
            .env_remove("CACHEGATE_LISTEN")
            .env_remove("CACHEGATE_BACKEND")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cachegate");
        let bin = Binary {
            child: ChildGuard(child),
            port,
            _dir: dir,
        };
        eventually("the binary listens", PATIENCE, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        bin
    }

    fn client(&self) -> Client {
        Client::new(([127, 0, 0, 1], self.port).into())
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.0.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits (bounded) for the process to exit; its exit code and stderr.
    async fn exit(mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.0.try_wait().expect("try_wait") {
                let mut err = String::new();
                if let Some(mut e) = self.child.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return (status.code(), err);
            }
            if Instant::now() > deadline {
                let _ = self.child.0.kill();
                panic!("cachegate did not exit within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // the polling interval
        }
    }
}

/// Requests in flight when SIGTERM arrives all finish with their whole
/// answer; new connections are refused; the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let backend = Backend::start().await;
    backend.on_path(
        "/slow",
        Reply::new().body(vec![b'x'; 100_000]).delay(Duration::from_millis(800)),
    );
    let bin = Binary::start(&backend, 10_000).await;
    let port = bin.port;

    let mut in_flight = Vec::new();
    for _ in 0..16 {
        let c = bin.client();
        in_flight.push(tokio::spawn(async move { c.get("/slow").await }));
    }
    eventually("all 16 reach the backend", PATIENCE, || async {
        backend.count_path("/slow") == 16
    })
    .await;
    bin.signal("-TERM");
    eventually("the listener closes", PATIENCE, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err()
    })
    .await;
    for r in in_flight {
        let resp = r.await.expect("request task");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body.len(), 100_000, "the whole body, not cut short");
    }
    let (code, stderr) = bin.exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{stderr}");
}

/// SIGINT drains the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_too() {
    let backend = Backend::start().await;
    backend.on_path("/slow", Reply::new().body("done").delay(Duration::from_millis(500)));
    let bin = Binary::start(&backend, 10_000).await;
    let c = bin.client();
    let pending = tokio::spawn(async move { c.get("/slow").await });
    eventually("the request reaches the backend", PATIENCE, || async {
        backend.count_path("/slow") == 1
    })
    .await;
    bin.signal("-INT");
    let resp = pending.await.expect("request task");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "done");
    let (code, stderr) = bin.exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{stderr}");
}

/// A request that outlives `shutdown_timeout_ms` does not hold the exit up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_bounds_the_drain() {
    let backend = Backend::start().await;
    backend.on_path("/stuck", Reply::new().body("late").delay(Duration::from_secs(30)));
    let bin = Binary::start(&backend, 300).await;
    let c = bin.client();
    let _stuck = tokio::spawn(async move { c.get("/stuck").await });
    eventually("the request reaches the backend", PATIENCE, || async {
        backend.count_path("/stuck") == 1
    })
    .await;
    let asked = Instant::now();
    bin.signal("-TERM");
    let (code, stderr) = bin.exit(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{stderr}");
    // The bound is the behaviour: cut at shutdown_timeout_ms (300 ms), not
    // after the 30 s request; a third of that is far above any noise.
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "exited after {:?}, not after the 30 s request",
        asked.elapsed()
    );
    assert!(stderr.contains("shutdown_timeout_ms"), "the cut is logged: {stderr}");
}
