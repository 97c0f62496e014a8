//! The access log: one line per request, as text or JSON, written by a
//! thread of its own so that a request never waits on a terminal or a disk.
//! Lines are formatted straight into a shared 64 KiB batch (no allocation
//! per line) and handed over a batch at a time, or every 200 ms; batches the
//! writer cannot keep up with are dropped and their lines counted, never
//! queued without bound. No header value is logged but the request id and
//! the user agent (never Authorization nor Cookie), and no query string (it
//! may carry tokens). Timestamps are RFC 3339 in UTC with milliseconds,
//! durations integer microseconds: no float is formatted.

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
    /// `X-Request-Id` (the client's, or the one made for this request).
    pub request_id: &'a str,
    pub user_agent: Option<&'a str>,
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
    /// The request's body bytes, as declared (0 without a body; unknown
    /// for a chunked one).
    pub bytes_in: Option<u64>,
    /// The answer's body bytes, when known when the head is sent.
    pub bytes_out: Option<u64>,
    /// Time to the response head.
    pub took: Duration,
}

/// Lines not yet handed to the writer.
#[derive(Default)]
struct Batch {
    text: Vec<u8>,
    lines: u64,
    clock: Clock,
}

/// The RFC 3339 text of the current second, made once a second, not once
/// a line: only the milliseconds are written per line.
#[derive(Default, Clone, Copy)]
struct Clock {
    second: u64,
    /// `2026-12-06T02:13:14.`
    prefix: [u8; 20],
}

impl Clock {
    /// `2026-12-06T02:13:14.123Z` for now.
    fn now(&mut self) -> [u8; 24] {
        self.stamp(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
    }

    fn stamp(&mut self, since_epoch: Duration) -> [u8; 24] {
        let second = since_epoch.as_secs();
        if second != self.second || self.prefix[0] == 0 {
            self.second = second;
            self.prefix = rfc3339_second(second);
        }
        let ms = since_epoch.subsec_millis().min(999);
        let mut out = [0u8; 24];
        out[..20].copy_from_slice(&self.prefix);
        out[20..].copy_from_slice(&[
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
        out
    }
}

/// `YYYY-MM-DDThh:mm:ss.` for seconds since the epoch (UTC; years 1970 to
/// 9999), by the days-to-civil algorithm (Howard Hinnant's).
fn rfc3339_second(secs: u64) -> [u8; 20] {
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + u64::from(month <= 2)).min(9999);
    let mut out = *b"0000-00-00T00:00:00.";
    let put = |out: &mut [u8; 20], at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut out, 0, 4, year);
    put(&mut out, 5, 2, month);
    put(&mut out, 8, 2, day);
    put(&mut out, 11, 2, in_day / 3600);
    put(&mut out, 14, 2, in_day / 60 % 60);
    put(&mut out, 17, 2, in_day % 60);
    out
}

impl Batch {
    fn take(&mut self) -> Batch {
        std::mem::replace(
            self,
            Batch {
                text: Vec::with_capacity(BATCH_BYTES + 1024),
                lines: 0,
                clock: self.clock,
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
            let Batch { text: out, clock, .. } = &mut *batch;
            if self.json {
                json(out, clock, line);
            } else {
                text(out, clock, line);
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

/// A duration in integer microseconds.
fn write_us(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
    out.extend_from_slice(itoa::Buffer::new().format(micros).as_bytes());
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
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

/// `ts client method path status id= rule= key= cache= backend= backend_us=
/// bytes_in= bytes_out= us= ua=`, `-` for what does not apply; the path, key and
/// user agent are quoted (they may hold spaces).
fn text(out: &mut Vec<u8>, clock: &mut Clock, l: &Line<'_>) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(&clock.now());
    out.push(b' ');
    crate::proxy::write_ip(out, l.client);
    out.push(b' ');
    out.extend_from_slice(l.method.as_bytes());
    out.push(b' ');
    write_quoted(out, l.path);
    out.push(b' ');
    out.extend_from_slice(digits.format(l.status).as_bytes());
    out.extend_from_slice(b" id=");
    out.extend_from_slice(l.request_id.as_bytes());
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
    out.extend_from_slice(b" backend_us=");
    match l.backend_time {
        Some(t) => write_us(out, t),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" bytes_in=");
    write_or_dash(out, l.bytes_in.map(|b| digits.format(b)));
    out.extend_from_slice(b" bytes_out=");
    write_or_dash(out, l.bytes_out.map(|b| digits.format(b)));
    out.extend_from_slice(b" us=");
    write_us(out, l.took);
    out.extend_from_slice(b" ua=");
    match l.user_agent {
        Some(ua) => write_quoted(out, ua),
        None => out.push(b'-'),
    }
    out.push(b'\n');
}

/// One JSON object per line (serialised straight into the batch).
#[derive(Serialize)]
struct JsonLine<'a> {
    /// RFC 3339, UTC, milliseconds.
    ts: &'a str,
    client: IpAddr,
    method: &'a str,
    path: &'a str,
    status: u16,
    request_id: &'a str,
    rule: Option<&'a str>,
    key: Option<&'a str>,
    cache: Option<&'a str>,
    backend_status: Option<u16>,
    backend_us: Option<u64>,
    bytes_in: Option<u64>,
    bytes_out: Option<u64>,
    us: u64,
    user_agent: Option<&'a str>,
}

fn json(out: &mut Vec<u8>, clock: &mut Clock, l: &Line<'_>) {
    let stamp = clock.now();
    let line = JsonLine {
        ts: std::str::from_utf8(&stamp).unwrap_or(""),
        client: l.client,
        method: l.method,
        path: l.path,
        status: l.status,
        request_id: l.request_id,
        rule: l.rule,
        key: l.key,
        cache: l.cache,
        backend_status: l.backend_status,
        backend_us: l.backend_time.map(us),
        bytes_in: l.bytes_in,
        bytes_out: l.bytes_out,
        us: us(l.took),
        user_agent: l.user_agent,
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
            request_id: "r-42",
            user_agent: Some("curl/8.5.0"),
            method: "GET",
            path: "/api/v1/tasks/1",
            status: 200,
            rule: Some("task"),
            key: Some("task:1"),
            cache: Some("HIT"),
            backend_status: None,
            backend_time: None,
            bytes_in: Some(0),
            bytes_out: Some(432),
            took: Duration::from_micros(210),
        }
    }

    #[test]
    fn text_lines_name_every_field() {
        let mut buf = Vec::new();
        text(&mut buf, &mut Clock::default(), &line());
        let t = String::from_utf8(buf).unwrap();
        let (ts, rest) = t.split_once(' ').unwrap();
        assert!(is_rfc3339_ms(ts), "{ts}");
        assert_eq!(
            rest,
            "127.0.0.1 GET \"/api/v1/tasks/1\" 200 id=r-42 rule=task key=\"task:1\" cache=HIT backend=- backend_us=- bytes_in=0 bytes_out=432 us=210 ua=\"curl/8.5.0\"\n"
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
            let mut buf = Vec::new();
            write_us(&mut buf, Duration::from_micros(micros));
            assert_eq!(String::from_utf8(buf).unwrap(), micros.to_string());
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
            json(&mut buf, &mut Clock::default(), &line());
            serde_json::from_slice(&buf).unwrap()
        };
        assert_eq!(v["path"], "/api/v1/tasks/1");
        assert_eq!(v["cache"], "HIT");
        assert_eq!(v["backend_status"], serde_json::Value::Null);
        assert_eq!(v["bytes_out"], 432);
        assert_eq!(v["bytes_in"], 0);
        assert_eq!(v["us"], 210);
        assert_eq!(v["request_id"], "r-42");
        assert_eq!(v["user_agent"], "curl/8.5.0");
        assert!(is_rfc3339_ms(v["ts"].as_str().unwrap()), "{v}");
    }

    /// `YYYY-MM-DDThh:mm:ss.mmmZ`.
    fn is_rfc3339_ms(ts: &str) -> bool {
        let b = ts.as_bytes();
        b.len() == 24
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'.',
                23 => *c == b'Z',
                _ => c.is_ascii_digit(),
            })
    }

    #[test]
    fn timestamps_are_utc_calendar_dates_with_milliseconds() {
        let mut clock = Clock::default();
        let at = |clock: &mut Clock, secs: u64, ms: u64| {
            String::from_utf8(clock.stamp(Duration::from_millis(secs * 1000 + ms)).to_vec()).unwrap()
        };
        assert_eq!(at(&mut clock, 0, 0), "1970-01-01T00:00:00.000Z");
        // 2026-12-06T02:13:14.123Z, then the cached second with other ms.
        assert_eq!(at(&mut clock, 1_796_523_194, 123), "2026-12-06T02:13:14.123Z");
        assert_eq!(at(&mut clock, 1_796_523_194, 7), "2026-12-06T02:13:14.007Z");
        assert_eq!(at(&mut clock, 1_796_523_195, 999), "2026-12-06T02:13:15.999Z");
        // A leap day, and the last second of a year.
        assert_eq!(at(&mut clock, 951_782_400, 0), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(&mut clock, 1_767_225_599, 500), "2025-12-31T23:59:59.500Z");
    }
}
