//! The self-test's findings: the JSON shape (`--json`; field names are
//! stable, only ever added to) and the terminal rendering.

use super::plan::Plan;
use super::stats::{Histogram, Slice, Summary};
use serde::Serialize;
use std::time::Duration;

/// The version of the JSON shape.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    Failed,
    Skipped,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Failed => "failed",
            CheckStatus::Skipped => "skipped",
        }
    }
}

/// One check: `proxy`, `backend`, `store`, `hit_miss`, `invalidation`, `concurrency`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub phase: &'static str,
    pub status: CheckStatus,
    /// Why it failed or was skipped; `null` when it passed.
    pub reason: Option<String>,
    /// What was seen when it passed; `null` otherwise.
    pub detail: Option<String>,
}

impl Check {
    pub fn ok(name: &'static str, phase: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            phase,
            status: CheckStatus::Ok,
            reason: None,
            detail: Some(detail.into()),
        }
    }

    pub fn failed(name: &'static str, phase: &'static str, reason: impl Into<String>) -> Check {
        Check {
            name,
            phase,
            status: CheckStatus::Failed,
            reason: Some(reason.into()),
            detail: None,
        }
    }

    pub fn skipped(name: &'static str, phase: &'static str, reason: impl Into<String>) -> Check {
        Check {
            name,
            phase,
            status: CheckStatus::Skipped,
            reason: Some(reason.into()),
            detail: None,
        }
    }

    fn text(&self) -> &str {
        self.detail.as_deref().or(self.reason.as_deref()).unwrap_or("")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub url: String,
    pub admin_url: String,
    pub admin_prefix: String,
    pub path: String,
    pub ids: usize,
    pub requests: u32,
    pub concurrency: u32,
    pub write: Option<String>,
    pub purge_key: Option<String>,
}

/// Latency summaries: `cold` = answers marked MISS, `warm` = HIT (both from
/// the hit/miss phase), `concurrent` = every successful answer of the
/// concurrency phase.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    pub cold: Option<Summary>,
    pub warm: Option<Summary>,
    pub concurrent: Option<Summary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HitMiss {
    pub cold_requests: usize,
    pub cold_misses: usize,
    pub warm_requests: usize,
    pub warm_hits: usize,
    pub errors: usize,
    pub without_cache_header: usize,
    pub other_cache_status: usize,
    pub purged_before_cold: bool,
    /// Cold p50 ÷ warm p50.
    pub speedup_p50: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Invalidation {
    pub write: String,
    pub write_status: u16,
    pub read: String,
    pub cached_before: bool,
    pub read_status: u16,
    pub read_cache: String,
    pub nonce: Option<String>,
    pub shows_new_data: bool,
    pub cached_again: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Concurrency {
    pub workers: usize,
    pub requests_per_worker: usize,
    pub requests: usize,
    pub errors: usize,
    pub hits: usize,
    pub hit_rate: f64,
    pub elapsed_s: f64,
    pub throughput_rps: f64,
    pub timeline: Vec<Slice>,
}

/// Everything `cachegate selftest` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub tool: &'static str,
    pub version: &'static str,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_s: f64,
    /// True when no check failed.
    pub ok: bool,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub target: Target,
    pub checks: Vec<Check>,
    /// The header the cache status was read from (`x-cache` or `cache-status`).
    pub cache_header: Option<String>,
    pub latency: Latency,
    pub histogram: Histogram,
    pub hit_miss: Option<HitMiss>,
    pub invalidation: Option<Invalidation>,
    pub concurrency: Option<Concurrency>,
    /// `{prefix}/basic-stats` at the end, when the admin token allows it.
    pub store_stats: Option<serde_json::Value>,
}

impl Report {
    pub fn new(plan: &Plan) -> Report {
        Report {
            schema: SCHEMA,
            tool: "cachegate selftest",
            version: env!("CARGO_PKG_VERSION"),
            started_at: rfc3339_now(),
            duration_s: 0.0,
            ok: true,
            passed: 0,
            failed: 0,
            skipped: 0,
            target: Target {
                url: plan.base.prefix.clone(),
                admin_url: plan.admin.prefix.clone(),
                admin_prefix: plan.admin_prefix.clone(),
                path: plan.path.clone(),
                ids: plan.ids.len(),
                requests: plan.requests,
                concurrency: plan.concurrency,
                write: plan.write.as_ref().map(|w| w.describe()),
                purge_key: plan.purge_key.clone(),
            },
            checks: Vec::new(),
            cache_header: None,
            latency: Latency::default(),
            histogram: Histogram::default(),
            hit_miss: None,
            invalidation: None,
            concurrency: None,
            store_stats: None,
        }
    }

    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    pub fn finish(&mut self, took: Duration) {
        self.duration_s = (took.as_secs_f64() * 1000.0).round() / 1000.0;
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        self.passed = count(CheckStatus::Ok);
        self.failed = count(CheckStatus::Failed);
        self.skipped = count(CheckStatus::Skipped);
        self.ok = self.failed == 0;
    }
}

/// Now as `2026-11-27T03:04:05Z`.
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The bucket label `0.15-0.20`.
fn bucket_label(lo: f64, hi: f64) -> String {
    let f = |v: f64| {
        if v >= 10.0 {
            format!("{v:.0}")
        } else if v >= 1.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.3}").trim_end_matches('0').to_string()
        }
    };
    format!("{}-{}", f(lo), f(hi))
}

/// A bar of `count / max` of `width` characters (at least one for a
/// non-zero count).
fn bar(count: u64, max: u64, width: usize, ch: char) -> String {
    if count == 0 || max == 0 {
        return String::new();
    }
    let n = ((count as f64 / max as f64) * width as f64).round().max(1.0) as usize;
    ch.to_string().repeat(n)
}

/// The table, latencies, histogram and verdict, for a terminal (plain
/// ASCII apart from '×', no colour codes).
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let t = &r.target;
    out.push_str(&format!(
        "cachegate selftest: {} GET {} ({} id{}, {} requests per phase, {} workers)\n\n",
        t.url,
        t.path,
        t.ids,
        if t.ids == 1 { "" } else { "s" },
        t.requests,
        t.concurrency
    ));
    out.push_str(&format!(
        "{:<14} {:<14} {:<8} {}\n",
        "check", "phase", "result", "detail"
    ));
    for c in &r.checks {
        out.push_str(&format!(
            "{:<14} {:<14} {:<8} {}\n",
            c.name,
            c.phase,
            c.status.as_str(),
            c.text()
        ));
    }
    let rows = [
        ("cold (MISS)", &r.latency.cold),
        ("warm (HIT)", &r.latency.warm),
        ("concurrent", &r.latency.concurrent),
    ];
    if rows.iter().any(|(_, s)| s.is_some()) {
        out.push_str(&format!(
            "\n{:<14} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "latency (ms)", "count", "min", "p50", "p90", "p99", "max", "mean"
        ));
        for (name, s) in rows {
            if let Some(s) = s {
                out.push_str(&format!(
                    "{:<14} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                    name,
                    s.count,
                    fmt_ms(s.min_ms),
                    fmt_ms(s.p50_ms),
                    fmt_ms(s.p90_ms),
                    fmt_ms(s.p99_ms),
                    fmt_ms(s.max_ms),
                    fmt_ms(s.mean_ms)
                ));
            }
        }
    }
    let h = &r.histogram;
    if !h.cold.is_empty() {
        let (cmax, wmax) = (
            h.cold.iter().copied().max().unwrap_or(0),
            h.warm.iter().copied().max().unwrap_or(0),
        );
        // Leave out empty buckets at both ends.
        let used = |i: usize| h.cold[i] + h.warm[i] > 0;
        let first = (0..h.cold.len()).find(|&i| used(i)).unwrap_or(0);
        let last = (0..h.cold.len()).rfind(|&i| used(i)).unwrap_or(0);
        out.push_str(&format!(
            "\nlatency histogram (ms; each series scaled to its own largest bucket)\n{:>13}  {:<31} {}\n",
            "bucket", "cold (MISS) #", "warm (HIT) ="
        ));
        let mut i = first;
        while i <= last {
            // A run of two or more empty buckets (between outliers) is one line.
            let empty_run = (i..=last).take_while(|&j| !used(j)).count();
            if empty_run >= 2 {
                out.push_str(&format!(
                    "{:>13}  (none)\n",
                    bucket_label(h.bounds_ms[i], h.bounds_ms[i + empty_run])
                ));
                i += empty_run;
                continue;
            }
            let (c, w) = (h.cold[i], h.warm[i]);
            let cold = format!(
                "{} {}",
                bar(c, cmax, 22, '#'),
                if c > 0 { c.to_string() } else { String::new() }
            );
            let warm = format!(
                "{} {}",
                bar(w, wmax, 22, '='),
                if w > 0 { w.to_string() } else { String::new() }
            );
            out.push_str(&format!(
                "{:>13}  {:<31} {}\n",
                bucket_label(h.bounds_ms[i], h.bounds_ms[i + 1]),
                cold.trim_start(),
                warm.trim_start()
            ));
            i += 1;
        }
    }
    if let Some(c) = &r.concurrency {
        out.push_str(&format!(
            "\nconcurrency: {} requests, {} workers, {:.2} s, {} req/s, {} errors, hit rate {:.1}%\n",
            c.requests,
            c.workers,
            c.elapsed_s,
            c.throughput_rps,
            c.errors,
            c.hit_rate * 100.0
        ));
        if !c.timeline.is_empty() {
            const LEVELS: &[u8] = b" .:-=+*#%@";
            let max = c.timeline.iter().map(|s| s.rps).fold(0.0, f64::max);
            let line: String = c
                .timeline
                .iter()
                .map(|s| {
                    let i = if max > 0.0 {
                        ((s.rps / max) * (LEVELS.len() - 1) as f64).round() as usize
                    } else {
                        0
                    };
                    LEVELS[i.min(LEVELS.len() - 1)] as char
                })
                .collect();
            out.push_str(&format!("throughput over time (max {max:.0} req/s): [{line}]\n"));
        }
    }
    if let Some(s) = &r.store_stats {
        out.push_str(&format!(
            "store stats: hits {}, misses {}, hit rate {}, entries {}\n",
            s["hits"], s["misses"], s["hit_rate"], s["entries"]
        ));
    }
    out.push('\n');
    if r.ok {
        out.push_str(&format!(
            "result: ok ({} passed, {} skipped) in {:.2} s\n",
            r.passed, r.skipped, r.duration_s
        ));
    } else {
        let names: Vec<&str> = r
            .checks
            .iter()
            .filter(|c| c.status == CheckStatus::Failed)
            .map(|c| c.name)
            .collect();
        out.push_str(&format!(
            "result: FAILED ({} failed: {}; {} passed, {} skipped)\n",
            r.failed,
            names.join(", "),
            r.passed,
            r.skipped
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_bars() {
        assert_eq!(bucket_label(0.15, 0.2), "0.15-0.2");
        assert_eq!(bucket_label(1.5, 2.0), "1.5-2.0");
        assert_eq!(bucket_label(10.0, 15.0), "10-15");
        assert_eq!(bar(1, 100, 20, '#'), "#");
        assert_eq!(bar(100, 100, 20, '#').len(), 20);
        assert_eq!(bar(0, 100, 20, '#'), "");
    }

    #[test]
    fn timestamp_shape() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
