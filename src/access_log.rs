//! The access log: one line per request, as text or JSON, written by a
//! thread of its own so that a request never waits on a terminal or a disk.
//! Lines the writer cannot keep up with are dropped and counted, never
//! queued without bound. No header value is ever logged (no Authorization,
//! no Cookie), and no query string (it may carry tokens).

use crate::config::AccessLogConfig;
use crate::metrics::Metrics;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Lines queued for the writer before new ones are dropped.
const QUEUE: usize = 8192;

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

pub struct AccessLog {
    tx: SyncSender<String>,
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
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("cachegate-access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    // Write what is queued, then flush once it is drained.
                    while let Ok(line) = rx.try_recv() {
                        let _ = out.write_all(line.as_bytes());
                    }
                    let _ = out.flush();
                }
            })?;
        Ok(Some(AccessLog {
            tx,
            json: cfg.json,
            metrics,
        }))
    }

    pub fn log(&self, line: &Line<'_>) {
        let text = if self.json { json(line) } else { text(line) };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(text) {
            self.metrics.access_log_dropped.inc();
        }
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `ts client method path status rule= key= cache= backend= backend_ms= bytes= ms=`,
/// `-` for what does not apply; the path and key are quoted (they may hold
/// spaces once decoded).
fn text(l: &Line<'_>) -> String {
    let mut s = String::with_capacity(160);
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let _ = writeln!(
        s,
        "{:.3} {} {} {:?} {} rule={} key={} cache={} backend={} backend_ms={} bytes={} ms={:.3}",
        now(),
        l.client,
        l.method,
        l.path,
        l.status,
        l.rule.unwrap_or("-"),
        dash(l.key.map(|k| format!("{k:?}"))),
        l.cache.unwrap_or("-"),
        dash(l.backend_status.map(|s| s.to_string())),
        dash(l.backend_time.map(|t| format!("{:.3}", ms(t)))),
        dash(l.bytes.map(|b| b.to_string())),
        ms(l.took),
    );
    s
}

fn json(l: &Line<'_>) -> String {
    let mut s = serde_json::json!({
        "ts": now(),
        "client": l.client.to_string(),
        "method": l.method,
        "path": l.path,
        "status": l.status,
        "rule": l.rule,
        "key": l.key,
        "cache": l.cache,
        "backend_status": l.backend_status,
        "backend_ms": l.backend_time.map(ms),
        "bytes": l.bytes,
        "ms": ms(l.took),
    })
    .to_string();
    s.push('\n');
    s
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
        let t = text(&line());
        let rest = t.split_once(' ').unwrap().1;
        assert_eq!(
            rest,
            "127.0.0.1 GET \"/api/v1/tasks/1\" 200 rule=task key=\"task:1\" cache=HIT backend=- backend_ms=- bytes=432 ms=0.210\n"
        );
    }

    #[test]
    fn json_lines_parse() {
        let v: serde_json::Value = serde_json::from_str(&json(&line())).unwrap();
        assert_eq!(v["path"], "/api/v1/tasks/1");
        assert_eq!(v["cache"], "HIT");
        assert_eq!(v["backend_status"], serde_json::Value::Null);
        assert_eq!(v["bytes"], 432);
    }
}
