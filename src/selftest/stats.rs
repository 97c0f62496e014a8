//! Latency summaries, histogram buckets and the throughput timeline.

use serde::Serialize;

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 1000.0).round() / 1000.0
}

/// Summarises latencies given in microseconds; `None` when there are none.
pub fn summarize(samples_us: &[u64]) -> Option<Summary> {
    if samples_us.is_empty() {
        return None;
    }
    let mut s = samples_us.to_vec();
    s.sort_unstable();
    let sum: u128 = s.iter().map(|&v| v as u128).sum();
    let mean = sum as f64 / s.len() as f64;
    Some(Summary {
        count: s.len(),
        min_ms: ms(s[0]),
        mean_ms: (mean / 1000.0 * 1000.0).round() / 1000.0,
        p50_ms: ms(percentile(&s, 50.0)),
        p90_ms: ms(percentile(&s, 90.0)),
        p99_ms: ms(percentile(&s, 99.0)),
        max_ms: ms(s[s.len() - 1]),
    })
}

/// Counts of cold and warm latencies in shared buckets.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Histogram {
    /// Bucket edges in ms: bucket `i` is `[bounds_ms[i], bounds_ms[i+1])`.
    pub bounds_ms: Vec<f64>,
    pub cold: Vec<u64>,
    pub warm: Vec<u64>,
}

/// Edges on a 1-1.2-1.5-2-2.5-3-4-5-6-7-8-9 series (µs), from below the
/// smallest sample to above the largest.
fn edges(min_us: u64, max_us: u64) -> Vec<u64> {
    const STEPS: [u64; 12] = [10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90];
    let mut all = Vec::new();
    let mut decade = 1u64; // STEPS × decade / 10 µs
    while all.last().map_or(true, |&e| e <= max_us) {
        for s in STEPS {
            all.push(s * decade / 10);
        }
        decade = decade.saturating_mul(10);
        if decade > 10_000_000_000 {
            break;
        }
    }
    all.dedup();
    let first = all.iter().rposition(|&e| e <= min_us).unwrap_or(0);
    let last = all.iter().position(|&e| e > max_us).unwrap_or(all.len() - 1);
    all[first..=last].to_vec()
}

/// Buckets both sets on the same edges.
pub fn histogram(cold_us: &[u64], warm_us: &[u64]) -> Histogram {
    let all = cold_us.iter().chain(warm_us);
    let (Some(&min), Some(&max)) = (all.clone().min(), all.max()) else {
        return Histogram::default();
    };
    let e = edges(min, max);
    let count = |samples: &[u64]| {
        let mut counts = vec![0u64; e.len() - 1];
        for &s in samples {
            let i = e.partition_point(|&edge| edge <= s).saturating_sub(1);
            let last = counts.len() - 1;
            counts[i.min(last)] += 1;
        }
        counts
    };
    Histogram {
        bounds_ms: e.iter().map(|&v| v as f64 / 1000.0).collect(),
        cold: count(cold_us),
        warm: count(warm_us),
    }
}

/// One slice of the concurrency phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Slice {
    /// Start of the slice, seconds from the phase's start.
    pub t_s: f64,
    /// Requests completed in the slice, per second.
    pub rps: f64,
    /// Of those, per second, answers that failed.
    pub errors_per_s: f64,
}

/// Requests completed per second over time, in 10 to 60 slices of about
/// 100 ms. `done` holds (completion time in µs from the start, failed).
pub fn timeline(done: &[(u64, bool)], elapsed_us: u64) -> Vec<Slice> {
    if done.is_empty() || elapsed_us == 0 {
        return Vec::new();
    }
    let n = ((elapsed_us as f64 / 100_000.0).round() as usize).clamp(10, 60);
    let width = elapsed_us as f64 / n as f64;
    let mut counts = vec![(0u64, 0u64); n];
    for &(t, failed) in done {
        let i = ((t as f64 / width) as usize).min(n - 1);
        counts[i].0 += 1;
        if failed {
            counts[i].1 += 1;
        }
    }
    let secs = width / 1_000_000.0;
    counts
        .iter()
        .enumerate()
        .map(|(i, &(c, f))| Slice {
            t_s: ((i as f64 * secs) * 1000.0).round() / 1000.0,
            rps: (c as f64 / secs).round(),
            errors_per_s: (f as f64 / secs).round(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let s = summarize(&v).unwrap();
        assert_eq!((s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.mean_ms, 50.5);
        assert!(summarize(&[]).is_none());
        let one = summarize(&[1500]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms), (1.5, 1.5));
    }

    #[test]
    fn histogram_shares_edges_and_counts_everything() {
        let cold = [900, 1200, 5000];
        let warm = [80, 90, 120, 130, 140];
        let h = histogram(&cold, &warm);
        assert_eq!(h.cold.len() + 1, h.bounds_ms.len());
        assert_eq!(h.cold.iter().sum::<u64>(), 3);
        assert_eq!(h.warm.iter().sum::<u64>(), 5);
        assert!(
            h.bounds_ms[0] <= 0.08 && *h.bounds_ms.last().unwrap() > 5.0,
            "{:?}",
            h.bounds_ms
        );
        // Sorted, increasing edges.
        assert!(h.bounds_ms.windows(2).all(|w| w[0] < w[1]));
        // The 120, 130 and 140 µs samples share the [0.12, 0.15) bucket.
        let i = h.bounds_ms.iter().position(|&b| b == 0.12).unwrap();
        assert_eq!(h.warm[i], 3);
    }

    #[test]
    fn timeline_slices() {
        let done: Vec<(u64, bool)> = (0..1000).map(|i| (i * 1000, i % 100 == 0)).collect();
        let t = timeline(&done, 1_000_000);
        assert_eq!(t.len(), 10);
        assert!(t.iter().all(|s| s.rps == 1000.0), "{t:?}");
        assert_eq!(t.iter().map(|s| s.errors_per_s).sum::<f64>(), 100.0);
    }
}
