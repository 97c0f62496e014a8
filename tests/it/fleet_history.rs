//! Read-your-writes across a fleet with the in-process tier on (issue 14):
//! two cachegate instances share one Redis, 24 clients GET and PUT 16 hot
//! ids, 20,000+ operations, and no GET that started after a PUT's answer
//! arrived may read an older version (the checker of `history/mod.rs`).
//!
//! Each run prints its operations, hits and tier hits
//! (`cachegate_tier_hits_total`), and asserts that the tier served and that
//! reads did start within 1 ms after a write answered on the other instance,
//! so the window a stale tier would show in was exercised; and that the
//! fences did their work (acknowledged by the peer).
//!
//! Routings: at random across both instances; split (writes through A,
//! reads through B). Faults, on separate processes: Redis paused (SIGSTOP)
//! for 2 s, a peer paused for 2 s, Redis restarted; every answer must still
//! be a 200 (fail open) and no read stale.
//!
//! A longer run that prints figures: `bench/fleet_history.sh`.

use crate::common::{eventually, free_port, ChildGuard, Client, Proxy, RedisServer, PATIENCE};
use crate::history::{
    check, config, metric, reads_right_after_writes, report, run_history, Progress, Routing, VersionedBackend,
};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const CLIENTS: usize = 24;

/// Operations per run: 20,000, or `FLEET_OPS` (the longer runs of
/// `bench/fleet_history.sh`).
fn min_ops() -> usize {
    std::env::var("FLEET_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
        .max(20_000)
}

/// The store sections: Redis, the tier on with `consistency`, the default
/// store timeout (a stalled Redis is the case under test, not avoided).
fn store(redis: &RedisServer, consistency: &str) -> String {
    format!(
        "[store]\nkind = \"redis\"\n\n[redis]\nurl = \"{}\"\npool_size = 8\n\n\
         [tier]\nenabled = true\nconsistency = \"{consistency}\"\n",
        redis.url()
    )
}

/// Figures of a run, summed over the instances.
#[derive(Debug, Default)]
struct Figures {
    tier_hits: f64,
    fence_waits: f64,
    peers_acked: f64,
    peers_timed_out: f64,
    leases_lost: f64,
}

async fn figures(addrs: &[SocketAddr]) -> Figures {
    let mut f = Figures::default();
    for a in addrs {
        f.tier_hits += metric(*a, "cachegate_tier_hits_total").await;
        f.fence_waits += metric(*a, "cachegate_fence_waits_total").await;
        f.peers_acked += metric(*a, "cachegate_fence_peers_acked_total").await;
        f.peers_timed_out += metric(*a, "cachegate_fence_peers_timed_out_total").await;
        f.leases_lost += metric(*a, "cachegate_tier_leases_lost_total").await;
    }
    f
}

/// What a run saw, for the assertions.
struct Run {
    violations: usize,
    near: usize,
    figures: Figures,
}

/// Runs one history over `addrs` while `fault` (if any) runs once a third
/// of the operations are done; the history goes on for 3,000 operations
/// after the fault ended.
async fn run<F, Fut>(label: &str, addrs: &[SocketAddr], routing: Routing, backend: &VersionedBackend, fault: F) -> Run
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let before = figures(addrs).await;
    let progress = Progress::new(min_ops());
    let faulting = {
        let progress = progress.clone();
        tokio::spawn(async move {
            progress.wait_for(min_ops() / 3).await;
            progress.hold.store(true, Ordering::SeqCst);
            fault().await;
            progress.wait_for(3_000).await;
            progress.hold.store(false, Ordering::SeqCst);
        })
    };
    let (ops, took) = run_history(addrs, routing, CLIENTS, progress).await;
    faulting.await.expect("the fault task panicked");
    let after = figures(addrs).await;
    let figures = Figures {
        tier_hits: after.tier_hits - before.tier_hits,
        fence_waits: after.fence_waits - before.fence_waits,
        peers_acked: after.peers_acked - before.peers_acked,
        peers_timed_out: after.peers_timed_out - before.peers_timed_out,
        leases_lost: after.leases_lost - before.leases_lost,
    };
    let violations = check(&ops);
    report(label, &ops, took, backend, &violations);
    let near = reads_right_after_writes(&ops, Duration::from_millis(1), true);
    eprintln!("[{label}] {figures:?}; {near} GETs started within 1 ms after a PUT answered on the other instance");
    Run {
        violations: violations.len(),
        near,
        figures,
    }
}

/// The run proves something: the tier served, the race window was entered,
/// fences were acknowledged; and nothing was stale.
fn assert_sound(label: &str, r: &Run) {
    assert!(
        r.figures.tier_hits > 0.0,
        "[{label}] no tier hit: the run proves nothing"
    );
    assert!(
        r.near >= 20,
        "[{label}] only {} reads started within 1 ms after a write's answer",
        r.near
    );
    assert!(
        r.figures.fence_waits > 0.0 && r.figures.peers_acked > 0.0,
        "[{label}] fences: {:?}",
        r.figures
    );
    assert_eq!(r.violations, 0, "[{label}] stale reads after an answered write");
}

async fn no_fault() {}

// ---------------------------------------------------------------------------
// In process
// ---------------------------------------------------------------------------

async fn in_process(consistency: &str) -> (VersionedBackend, RedisServer, Proxy, Proxy) {
    let backend = VersionedBackend::start().await;
    let redis = RedisServer::start();
    let text = config(&backend, &store(&redis, consistency));
    let a = Proxy::start(&text).await;
    let b = Proxy::start(&text).await;
    (backend, redis, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_tiers_read_your_writes_at_random() {
    let (backend, _redis, a, b) = in_process("read-your-writes").await;
    let r = run("tier, random", &[a.addr, b.addr], Routing::Random, &backend, no_fault).await;
    assert_sound("tier, random", &r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_tiers_read_your_writes_split() {
    let (backend, _redis, a, b) = in_process("read-your-writes").await;
    let r = run("tier, split", &[a.addr, b.addr], Routing::Split, &backend, no_fault).await;
    assert_sound("tier, split", &r);
}

/// `"eventual"`: no lease, no fence. The same run, split; it reports how
/// many reads were stale and checks that no fence ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_runs_no_fence() {
    let (backend, _redis, a, b) = in_process("eventual").await;
    let r = run("eventual, split", &[a.addr, b.addr], Routing::Split, &backend, no_fault).await;
    assert!(r.figures.tier_hits > 0.0);
    assert_eq!(r.figures.fence_waits, 0.0);
}

// ---------------------------------------------------------------------------
// Separate processes, under faults
// ---------------------------------------------------------------------------

/// The cachegate binary, serving `text` on a port of its own.
struct Instance {
    addr: SocketAddr,
    child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Instance {
    async fn spawn(text: &str) -> Instance {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.toml");
        let text = format!(
            "{text}\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n[access_log]\nenabled = false\n\n[log]\nlevel = \"warn\"\n"
        );
        std::fs::write(&path, text).expect("write config");
        let child = ChildGuard(
            Command::new(env!("CARGO_BIN_EXE_cachegate"))
                .args(["--config", path.to_str().expect("utf-8")])
                .env_remove("RUST_LOG")
                .env_remove("CACHEGATE_LISTEN")
                .env_remove("CACHEGATE_BACKEND")
                .env_remove("REDIS_URL")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start cachegate"),
        );
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let client = Client::new(addr);
        eventually("the instance serves", PATIENCE, || async {
            matches!(client.try_send("GET", "/readyz", Vec::new(), crate::common::empty()).await, Ok(r) if r.status == 200)
        })
        .await;
        Instance { addr, child, _dir: dir }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} failed");
    }
}

async fn processes() -> (VersionedBackend, Arc<RedisServer>, Instance, Instance) {
    let backend = VersionedBackend::start().await;
    let redis = Arc::new(RedisServer::start());
    let text = config(&backend, &store(&redis, "read-your-writes"));
    let a = Instance::spawn(&text).await;
    let b = Instance::spawn(&text).await;
    (backend, redis, a, b)
}

const PAUSE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_for_two_seconds() {
    let (backend, redis, a, b) = processes().await;
    let paused = redis.clone();
    let r = run(
        "redis paused",
        &[a.addr, b.addr],
        Routing::Random,
        &backend,
        move || async move {
            paused.pause();
            // Creates the condition: a 2 s stall under the history's load.
            tokio::time::sleep(PAUSE).await;
            paused.resume();
        },
    )
    .await;
    assert_sound("redis paused", &r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_paused_for_two_seconds() {
    let (backend, _redis, a, b) = processes().await;
    let b = Arc::new(b);
    let peer = b.clone();
    let writer = Client::new(a.addr);
    let r = run(
        "peer paused",
        &[a.addr, b.addr],
        Routing::Random,
        &backend,
        move || async move {
            peer.signal("-STOP");
            // A write through A while B is stopped, whatever the history's
            // clients (most soon wait on B) happen to send: A's fence must
            // wait B out. Outside the history, it can only raise versions.
            let put = writer.put("/api/v1/tasks/0").await;
            assert_eq!(put.status, 200, "a PUT through A while B is stopped");
            // Creates the condition: a peer stalled 2 s under the load.
            tokio::time::sleep(PAUSE).await;
            peer.signal("-CONT");
        },
    )
    .await;
    assert_sound("peer paused", &r);
    assert!(
        r.figures.peers_timed_out > 0.0,
        "A waited out the paused B: {:?}",
        r.figures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted() {
    let (backend, redis, a, b) = processes().await;
    let restarted = redis.clone();
    let r = run(
        "redis restarted",
        &[a.addr, b.addr],
        Routing::Random,
        &backend,
        move || async move {
            tokio::task::spawn_blocking(move || restarted.restart())
                .await
                .expect("restart");
        },
    )
    .await;
    assert_sound("redis restarted", &r);
}
