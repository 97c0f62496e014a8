//! Large bodies stream: a 100 MB upload and 100 MB downloads (with and
//! without Content-Length) pass through while this process (proxy, backend
//! and client all run in it) grows far less than the body size.
//!
//! The tests of this file take turns (a lock), so that one's memory does not
//! count against another's. They are a test binary of their own
//! (not a module of `tests/it`) because they measure this process's memory,
//! which tests running beside them would disturb.

mod common;

use common::*;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SIZE: u64 = 100 * 1024 * 1024;
const MAX_GROWTH: u64 = 50 * 1024 * 1024;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The resident set size of this process, in bytes (Linux `/proc/self/status`).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

/// Samples the RSS in the background and keeps the peak.
pub struct RssPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    pub fn start() -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes()));
        let task = tokio::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await; // the sampling interval
                }
            }
        });
        RssPeak { stop, peak, task }
    }

    /// The highest RSS seen, in bytes.
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed).max(rss_bytes())
    }
}

/// Checks a stream of bytes against the pattern without keeping it.
#[derive(Debug, Default)]
pub struct PatternCheck {
    pub len: u64,
    pub mismatch_at: Option<u64>,
}

impl PatternCheck {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let start = (self.len % CHUNK as u64) as usize;
            let n = (CHUNK - start).min(data.len());
            if self.mismatch_at.is_none() && data[..n] != PATTERN[start..start + n] {
                self.mismatch_at = Some(self.len);
            }
            self.len += n as u64;
            data = &data[n..];
        }
    }
}

fn mb(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// GETs `path` and checks the streamed body against the pattern without
/// keeping it; returns the response headers and the byte count.
async fn download(w: &World, path: &str) -> (http::HeaderMap, PatternCheck) {
    let resp = w.client.open("GET", path, vec![], empty()).await.expect("GET");
    assert_eq!(resp.status(), 200);
    let (parts, mut body) = resp.into_parts();
    let mut check = PatternCheck::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap_or_else(|e| panic!("download broke off after {} bytes: {e}", check.len));
        if let Some(d) = frame.data_ref() {
            check.feed(d);
        }
    }
    (parts.headers, check)
}

async fn download_streams(chunked: bool) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let w = World::std(Kind::Redis).await;
    let path = "/api/v1/tasks/big";
    w.backend.on("GET", path, Reply::new().generated(SIZE, chunked));
    // Warm up: connections, pools, the first allocations.
    w.client.get("/api/v1/tasks/1").await;

    let before = rss_bytes();
    let peak = RssPeak::start();
    let (headers, check) = download(&w, path).await;
    let peak = peak.finish().await;

    assert_eq!(check.len, SIZE, "the whole body arrived");
    assert_eq!(check.mismatch_at, None, "the body arrived unchanged");
    if !chunked {
        assert_eq!(headers.get("content-length").unwrap(), &SIZE.to_string());
    }
    assert_eq!(headers.get("x-cache").unwrap(), "MISS");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "download (chunked: {chunked}): RSS {:.1} MB -> peak {:.1} MB",
        mb(before),
        mb(peak)
    );
    assert!(
        growth < MAX_GROWTH,
        "RSS grew {:.1} MB while streaming {} MB: the body is being buffered",
        mb(growth),
        mb(SIZE)
    );
    // Too large to store, in either form.
    assert!(!w.proxy.stored("task:big", "anon").await);
    assert_eq!(w.redis().entry_fields("task:big").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_of_100_mb_with_content_length_streams_through() {
    download_streams(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_download_of_100_mb_streams_through() {
    download_streams(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_100_mb_streams_through() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let w = World::std(Kind::Redis).await;
    w.client.put("/api/v1/tasks/1").await;

    for (path, exact) in [("/api/v1/tasks/upload", true), ("/plain/upload", false)] {
        let before = rss_bytes();
        let peak = RssPeak::start();
        let body = GenBody::new(SIZE, exact).boxed();
        let resp = w.client.send("PUT", path, &[], body).await;
        let peak = peak.finish().await;

        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.json()["received"], SIZE, "{path}");
        assert_eq!(w.backend.body_sizes(path), vec![SIZE], "{path}");
        let growth = peak.saturating_sub(before);
        eprintln!("upload {path}: RSS {:.1} MB -> peak {:.1} MB", mb(before), mb(peak));
        assert!(
            growth < MAX_GROWTH,
            "{path}: RSS grew {:.1} MB while streaming {} MB up: the body is being buffered",
            mb(growth),
            mb(SIZE)
        );
    }
}
