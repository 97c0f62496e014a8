//! The access log: one line per request, as text or JSON, written by a
//! thread of its own so that a request never waits on a terminal or a disk.
//! Lines are formatted straight into a shared 64 KiB batch (no allocation
//! per line) and handed over a batch at a time, or every 200 ms; batches the
//! writer cannot keep up with are dropped and their lines counted, never
//! queued without bound. No header value is ever logged (no Authorization,
//! no Cookie), and no query string (it may carry tokens).

use crate::config::AccessLogConfig;
use crate::metrics::Metrics;
use serde::Serialize;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Lines are gathered in a buffer of this size before the writer gets them,
/// as nginx's `access_log … buffer=64k` does: one handoff per few hundred
/// lines, not one per line.
const BATCH_BYTES: usize = 64 * 1024;
/// Full batches queued for the writer before new ones are dropped (4 MiB).
const QUEUE: usize = 64;
/// A partly filled batch is written after at most this long.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// What one request's line says.
pub struct Line<'a> {
    pub client: IpAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// The `[[rule]]` a read matched, or the first `[[invalidate]]` rule a
    /// write matched.
    pub rule: Option<&'a str>,
    pub key: Option<&'a str>,
    pub cache: Option<&'a str>,
    pub backend_status: Option<u16>,
    pub backend_time: Option<Duration>,
    /// Body bytes, when known when the head is sent.
    pub bytes: Option<u64>,
    /// Time to the response head.
    pub took: Duration,
}

/// Lines not yet handed to the writer.
#[derive(Default)]
struct Batch {
    text: Vec<u8>,
    lines: u64,
}

impl Batch {
    fn take(&mut self) -> Batch {
        std::mem::replace(
            self,
            Batch {
                text: Vec::with_capacity(BATCH_BYTES + 1024),
                lines: 0,
            },
        )
    }
}

pub struct AccessLog {
    batch: Arc<Mutex<Batch>>,
    tx: Option<SyncSender<Batch>>,
    writer: Option<JoinHandle<()>>,
    json: bool,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Starts the writer thread; `None` when the log is off.
    pub fn start(cfg: &AccessLogConfig, metrics: Arc<Metrics>) -> std::io::Result<Option<AccessLog>> {
        if !cfg.enabled {
            return Ok(None);
        }
        let out: Box<dyn std::io::Write + Send> = match &cfg.path {
            None => Box::new(std::io::stdout()),
            Some(p) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        };
        let (tx, rx) = sync_channel::<Batch>(QUEUE);
        let batch = Arc::new(Mutex::new(Batch::default().take()));
        let pending = batch.clone();
        let writer = std::thread::Builder::new()
            .name("cachegate-access-log".into())
            .spawn(move || write_batches(out, &rx, &pending))?;
        Ok(Some(AccessLog {
            batch,
            tx: Some(tx),
            writer: Some(writer),
            json: cfg.json,
            metrics,
        }))
    }

    pub fn log(&self, line: &Line<'_>) {
        let full = {
            let Ok(mut batch) = self.batch.lock() else {
                return;
            };
            if self.json {
                json(&mut batch.text, line);
            } else {
                text(&mut batch.text, line);
            }
            batch.lines += 1;
            (batch.text.len() >= BATCH_BYTES).then(|| batch.take())
        };
        if let (Some(full), Some(tx)) = (full, &self.tx) {
            if let Err(TrySendError::Full(dropped)) = tx.try_send(full) {
                self.metrics.access_log_dropped.inc_by(dropped.lines);
            }
        }
    }
}

impl Drop for AccessLog {
    /// The writer writes what is left and stops, before the process may exit.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: full batches as they come, a partial one every
/// [`FLUSH_EVERY`], what is left when the log is dropped.
fn write_batches(out: Box<dyn std::io::Write + Send>, rx: &Receiver<Batch>, pending: &Mutex<Batch>) {
    let mut out = std::io::BufWriter::with_capacity(BATCH_BYTES, out);
    let take_pending = || pending.lock().map(|mut b| b.take()).unwrap_or_default();
    loop {
        let stopping = match rx.recv_timeout(FLUSH_EVERY) {
            Ok(full) => {
                let _ = out.write_all(&full.text);
                continue;
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let _ = out.write_all(&take_pending().text);
        let _ = out.flush();
        if stopping {
            return;
        }
    }
}

/// Seconds since the epoch, with milliseconds.
fn write_timestamp(out: &mut Vec<u8>) {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    write_fixed3(out, since.as_secs(), since.subsec_millis());
}

/// `whole.fraction` with three fraction digits, without float formatting.
fn write_fixed3(out: &mut Vec<u8>, whole: u64, thousandths: u32) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(whole).as_bytes());
    out.push(b'.');
    let t = thousandths.min(999);
    out.extend_from_slice(&[
        b'0' + (t / 100) as u8,
        b'0' + (t / 10 % 10) as u8,
        b'0' + (t % 10) as u8,
    ]);
}

/// A duration in milliseconds with three fraction digits.
fn write_ms(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
    write_fixed3(out, micros / 1000, (micros % 1000) as u32);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A string in double quotes, escaped as Rust's `{:?}` does; plain
/// printable ASCII (the usual path or key) is copied as is.
fn write_quoted(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

fn write_or_dash(out: &mut Vec<u8>, v: Option<&str>) {
    out.extend_from_slice(v.unwrap_or("-").as_bytes());
}

/// `ts client method path status rule= key= cache= backend= backend_ms= bytes= ms=`,
/// `-` for what does not apply; the path and key are quoted (they may hold
/// spaces once decoded).
fn text(out: &mut Vec<u8>, l: &Line<'_>) {
    let mut digits = itoa::Buffer::new();
    write_timestamp(out);
    out.push(b' ');
    crate::proxy::write_ip(out, l.client);
    out.push(b' ');
    out.extend_from_slice(l.method.as_bytes());
    out.push(b' ');
    write_quoted(out, l.path);
    out.push(b' ');
    out.extend_from_slice(digits.format(l.status).as_bytes());
    out.extend_from_slice(b" rule=");
    write_or_dash(out, l.rule);
    out.extend_from_slice(b" key=");
    match l.key {
        Some(k) => write_quoted(out, k),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" cache=");
    write_or_dash(out, l.cache);
    out.extend_from_slice(b" backend=");
    write_or_dash(out, l.backend_status.map(|s| digits.format(s)));
    out.extend_from_slice(b" backend_ms=");
    match l.backend_time {
        Some(t) => write_ms(out, t),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" bytes=");
    write_or_dash(out, l.bytes.map(|b| digits.format(b)));
    out.extend_from_slice(b" ms=");
    write_ms(out, l.took);
    out.push(b'\n');
}

/// One JSON object per line (serialised straight into the batch).
#[derive(Serialize)]
struct JsonLine<'a> {
    ts: f64,
    client: IpAddr,
    method: &'a str,
    path: &'a str,
    status: u16,
    rule: Option<&'a str>,
    key: Option<&'a str>,
    cache: Option<&'a str>,
    backend_status: Option<u16>,
    backend_ms: Option<f64>,
    bytes: Option<u64>,
    ms: f64,
}

fn json(out: &mut Vec<u8>, l: &Line<'_>) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let line = JsonLine {
        ts,
        client: l.client,
        method: l.method,
        path: l.path,
        status: l.status,
        rule: l.rule,
        key: l.key,
        cache: l.cache,
        backend_status: l.backend_status,
        backend_ms: l.backend_time.map(ms),
        bytes: l.bytes,
        ms: ms(l.took),
    };
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line<'static> {
        Line {
            client: IpAddr::from([127, 0, 0, 1]),
            method: "GET",
            path: "/api/v1/tasks/1",
            status: 200,
            rule: Some("task"),
            key: Some("task:1"),
            cache: Some("HIT"),
            backend_status: None,
            backend_time: None,
            bytes: Some(432),
            took: Duration::from_micros(210),
        }
    }

    #[test]
    fn text_lines_name_every_field() {
        let mut buf = Vec::new();
        text(&mut buf, &line());
        let t = String::from_utf8(buf).unwrap();
        let rest = t.split_once(' ').unwrap().1;
        assert_eq!(
            rest,
            "127.0.0.1 GET \"/api/v1/tasks/1\" 200 rule=task key=\"task:1\" cache=HIT backend=- backend_ms=- bytes=432 ms=0.210\n"
        );
    }

    #[test]
    fn quoting_and_figures_read_as_the_std_formatting_would() {
        for s in ["/api/v1/tasks/1", "/a b", "/q\"uote", "/back\\slash", "/tab\t", "/é"] {
            let mut buf = Vec::new();
            write_quoted(&mut buf, s);
            assert_eq!(String::from_utf8(buf).unwrap(), format!("{s:?}"));
        }
        for micros in [0, 7, 999, 1_000, 12_345, 3_600_000_123] {
            let d = Duration::from_micros(micros);
            let mut buf = Vec::new();
            write_ms(&mut buf, d);
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                format!("{:.3}", micros as f64 / 1000.0)
            );
        }
    }

    #[test]
    fn a_partial_batch_is_written_without_more_traffic_and_all_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let cfg = AccessLogConfig {
            enabled: true,
            json: false,
            path: Some(path.clone()),
        };
        let log = AccessLog::start(&cfg, Arc::new(Metrics::new())).unwrap().unwrap();
        log.log(&line());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&path).unwrap_or_default().lines().count() < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the partial batch was never written"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..1000 {
            log.log(&line());
        }
        drop(log);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1001);
    }

    #[test]
    fn json_lines_parse() {
        let v: serde_json::Value = {
            let mut buf = Vec::new();
            json(&mut buf, &line());
            serde_json::from_slice(&buf).unwrap()
        };
        assert_eq!(v["path"], "/api/v1/tasks/1");
        assert_eq!(v["cache"], "HIT");
        assert_eq!(v["backend_status"], serde_json::Value::Null);
        assert_eq!(v["bytes"], 432);
    }
}
