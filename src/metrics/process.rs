//! The process's own figures under Prometheus's standard names
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, …), read
//! from `/proc` at scrape time, as the Go client's process collector does.
//! `prometheus-client` has no such collector; reading four small files is
//! less than a dependency. Elsewhere than Linux the series are absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc` figures: `USER_HZ`, 100 on every
/// Linux architecture Rust targets (the Go procfs library assumes it too).
const USER_HZ: f64 = 100.0;

#[derive(Debug)]
pub(crate) struct ProcessCollector {
    /// Seconds since the epoch the process started at; constant, read once.
    start_time: Option<f64>,
}

impl ProcessCollector {
    pub(crate) fn new() -> ProcessCollector {
        ProcessCollector {
            start_time: start_time_seconds(),
        }
    }
}

/// `/proc/self/stat`'s fields after the command name (which may hold
/// spaces and parentheses, hence the last `)`): index 0 is field 3, state.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// (user + system CPU seconds, start in ticks since boot).
fn cpu_and_start_ticks() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields = stat_fields(&stat)?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let start: u64 = fields.get(19)?.parse().ok()?;
    Some(((utime + stime) as f64 / USER_HZ, start))
}

fn start_time_seconds() -> Option<f64> {
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let (_, start_ticks) = cpu_and_start_ticks()?;
    Some(btime as f64 + start_ticks as f64 / USER_HZ)
}

/// A `kB` figure of `/proc/self/status` (`VmRSS:`, `VmSize:`), in bytes.
fn status_bytes(status: &str, field: &str) -> Option<i64> {
    let kb: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_fds() -> Option<i64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn open_fds() -> Option<i64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: Option<i64>) -> std::fmt::Result {
    let Some(value) = value else { return Ok(()) };
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        if let Some((cpu, _)) = cpu_and_start_ticks() {
            let metric = ConstCounter::new(cpu);
            // The encoder adds `_total` to a counter's name.
            metric.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                metric.metric_type(),
            )?)?;
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            status_bytes(&status, "VmRSS:"),
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            status_bytes(&status, "VmSize:"),
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors",
            open_fds(),
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors",
            max_fds(),
        )?;
        if let Some(start) = self.start_time {
            let metric = ConstGauge::new(start);
            metric.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                metric.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 12345 1000 200";
        let f = stat_fields(stat).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!((f[11], f[12], f[19]), ("250", "50", "12345"));
    }

    #[test]
    fn status_figures_are_bytes() {
        let status = "Name:\tcachegate\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_bytes(status, "VmRSS:"), Some(2048 * 1024));
        assert_eq!(status_bytes(status, "VmSize:"), Some(123_456 * 1024));
        assert_eq!(status_bytes(status, "VmSwap:"), None);
    }
}
