//! A purge accepted is a purge applied (issue 15): a write's purge that
//! failed while Redis was stalled is replayed as soon as Redis answers,
//! with no request to the instance that took the write; before a graceful
//! exit; and, from the journal, at the next start after `kill -9`. Meanwhile
//! no instance serves the entry the write replaced. Store: Redis without
//! the in-process tier (the tier's own coherence is tested elsewhere).

use crate::common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TASK: &str = "/api/v1/tasks/1";

/// Redis without the tier, the documented rules, a journal at `journal`.
fn config(backend: &Backend, redis: &RedisServer, journal: &std::path::Path) -> String {
    let text = render(&std_config(), Kind::Redis, &backend.url(), Some(&redis.url()));
    format!("{text}\n[tier]\nenabled = false\n").replace(
        "[store]\n",
        &format!("[cache]\npurge_journal = \"{}\"\n\n[store]\n", journal.display()),
    )
}

fn gauge(proxy: &Proxy, name: &str) -> f64 {
    let text = proxy.gateway().metrics().encode();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// Fills task 1 (version 1) through `proxy` and checks it hits.
async fn fill(client: &Client) {
    let first = client.get(TASK).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.version(), 1);
    let second = client.get(TASK).await;
    assert_eq!(second.x_cache(), Some("HIT"), "the entry is stored before the outage");
}

/// Pauses Redis and PUTs through `writer`, whose purge then fails and is
/// kept; returns once the write's answer is in and the purge is pending.
async fn write_during_stall(redis: &RedisServer, writer: &Proxy, backend: &Backend) {
    redis.pause();
    let put = Client::new(writer.addr).put(TASK).await;
    assert_eq!(put.status, 200, "a store outage is never a client error");
    assert_eq!(backend.version(TASK), 2);
    assert!(
        gauge(writer, "cachegate_purges_pending") >= 1.0,
        "the failed purge is pending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_instance_replays_its_purge_within_a_second_and_no_peer_serves_the_old_entry() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let reader = Proxy::start(&config(&backend, &redis, &dir.path().join("a.json"))).await;
    let writer = Proxy::start(&config(&backend, &redis, &dir.path().join("b.json"))).await;
    let reads = Client::new(reader.addr);
    fill(&reads).await;

    write_during_stall(&redis, &writer, &backend).await;
    assert!(dir.path().join("b.json").exists(), "the pending purge is journalled");
    // Both instances notice the stall (the reader with no failed request of
    // its own: its repair task probes the store).
    eventually("both instances see the stall", PATIENCE, || async {
        !reader.gateway().store().is_up() && !writer.gateway().store().is_up()
    })
    .await;

    redis.resume();
    let resumed = Instant::now();
    // No request goes to the writer from here on. The reader is read in a
    // loop from the moment Redis answers: every read starts after the PUT
    // was answered, so each must see version 2 (never the purged version 1).
    let (mut reads_done, mut hits, mut replayed_after) = (0u64, 0u64, None);
    // Creates the condition: 3 s of reads after Redis is back (a window to
    // read in, not a wait for a state).
    while resumed.elapsed() < Duration::from_secs(3) {
        let r = reads.get(TASK).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.version(),
            2,
            "read {reads_done} ({:?} after Redis came back, X-Cache {:?}) went backwards",
            resumed.elapsed(),
            r.x_cache()
        );
        reads_done += 1;
        hits += u64::from(r.x_cache() == Some("HIT"));
        if replayed_after.is_none() && gauge(&writer, "cachegate_purges_pending") == 0.0 {
            replayed_after = Some(resumed.elapsed());
        }
    }
    let replayed_after = replayed_after.expect("the idle writer replayed its purge");
    println!("reads {reads_done}, hits {hits}, writer replayed after {replayed_after:?}");
    // The bound is the behaviour asked for (within 1 s, no request needed).
    assert!(
        replayed_after <= Duration::from_secs(1),
        "replayed {replayed_after:?} after Redis came back"
    );
    assert!(hits > 0, "the reader caches version 2 once the repair is over");
    assert_eq!(
        writer_requests(&backend),
        1,
        "only the PUT reached the backend from the writer"
    );
    assert!(!dir.path().join("b.json").exists(), "the journal is gone once applied");
    assert!(gauge(&writer, "cachegate_purges_replayed_total") >= 1.0);
}

/// Writes the backend saw (the one PUT).
fn writer_requests(backend: &Backend) -> u64 {
    backend.count("PUT", TASK)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_shutdown_applies_a_pending_purge_before_it_returns() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("b.json");
    let writer = Proxy::start(&config(&backend, &redis, &journal)).await;
    fill(&Client::new(writer.addr)).await;
    write_during_stall(&redis, &writer, &backend).await;
    let stopping = tokio::spawn(writer.shutdown_within(Duration::from_secs(20)));
    redis.resume();
    let flushed = stopping.await.unwrap();
    assert!(flushed, "shutdown finished, purge applied");
    assert!(
        redis.entry_fields("task:1").await.is_empty(),
        "the purge was applied before the shutdown returned"
    );
    assert!(!journal.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shutdown_that_cannot_flush_leaves_the_journal_and_the_next_start_replays_it() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("b.json");
    let text = config(&backend, &redis, &journal);
    let writer = Proxy::start(&text).await;
    fill(&Client::new(writer.addr)).await;
    write_during_stall(&redis, &writer, &backend).await;
    let flushed = writer.shutdown_within(Duration::from_millis(300)).await;
    assert!(!flushed, "Redis is still paused: the shutdown cannot apply the purge");
    let kept = std::fs::read_to_string(&journal).expect("the journal is kept");
    assert!(kept.contains("task:1"), "journal: {kept}");
    redis.resume();
    assert_eq!(
        redis.entry_fields("task:1").await.len(),
        1,
        "the old entry is still in Redis"
    );

    let next = Proxy::start(&text).await;
    // The purge is applied first, then the journal emptied: wait for both.
    eventually(
        "the next start replays the journal, then removes it",
        PATIENCE,
        || async { redis.entry_fields("task:1").await.is_empty() && !journal.exists() },
    )
    .await;
    let r = Client::new(next.addr).get(TASK).await;
    assert_eq!(r.version(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_with_a_purge_pending_is_replayed_at_the_next_start() {
    let redis = RedisServer::start();
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("purges.json");
    let port = free_port();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n{}",
        config(&backend, &redis, &journal)
    );
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    let spawn = || async {
        let child = Command::new(env!("CARGO_BIN_EXE_cachegate"))
            .args(["--config", path.to_str().unwrap(), "--log", "warn"])
            .env_remove("CACHEGATE_LISTEN")
            .env_remove("CACHEGATE_BACKEND")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cachegate");
        let guard = ChildGuard(child);
        eventually("the binary listens", PATIENCE, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        guard
    };
    let client = Client::new(([127, 0, 0, 1], port).into());
    let first = spawn().await;
    eventually("the first entry is stored", PATIENCE, || async {
        client.get(TASK).await;
        !redis.entry_fields("task:1").await.is_empty()
    })
    .await;
    redis.pause();
    let put = client.put(TASK).await;
    assert_eq!(put.status, 200);
    let kept = std::fs::read_to_string(&journal).expect("journalled before the write was answered");
    assert!(kept.contains("task:1"), "journal: {kept}");
    drop(first); // SIGKILL
    redis.resume();
    assert_eq!(
        redis.entry_fields("task:1").await.len(),
        1,
        "the old entry outlived the crash"
    );

    let _second = spawn().await;
    eventually("the restarted instance replays the journal", PATIENCE, || async {
        redis.entry_fields("task:1").await.is_empty()
    })
    .await;
    let r = client.get(TASK).await;
    assert_eq!(r.version(), 2);
    assert!(!journal.exists());
}
