//! `--html`: one self-contained file (no script, font or style from the
//! network) with the checks, the latency table and two inline SVG plots:
//! the latency distribution of cold and warm fetches (`#latency-histogram`)
//! and the concurrency phase's throughput over time (`#throughput`). The
//! report's JSON is embedded too (`#selftest-data`).

use super::report::{CheckStatus, Report};
use std::fmt::Write;

const COLD: &str = "#d9622b";
const WARM: &str = "#2b6cd9";
const LINE: &str = "#1f9d55";
const ERRORS: &str = "#c81e1e";

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The smallest 1-2-5 × 10^k at or above `v`.
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let exp = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * exp >= v - 1e-9 {
            return m * exp;
        }
    }
    10.0 * exp
}

fn num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

// Plot geometry shared by both plots.
const W: f64 = 760.0;
const H: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 52.0;

fn axes(svg: &mut String, y_max: f64, y_label: &str, x_label: &str) {
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let y = y0 - (y0 - y1) * i as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            num(v)
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#555"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#555"/>"##
    );
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="label">{}</text>"##,
        (x0 + x1) / 2.0,
        H - 8.0,
        esc(x_label)
    );
    let _ = write!(
        svg,
        r##"<text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle" class="label">{}</text>"##,
        (y0 + y1) / 2.0,
        esc(y_label)
    );
}

fn no_data(svg: &mut String, what: &str) {
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="nodata">{}</text>"##,
        W / 2.0,
        H / 2.0,
        esc(what)
    );
}

/// Cold and warm latencies as shares of their own totals, side by side per bucket.
fn histogram_svg(r: &Report) -> String {
    let h = &r.histogram;
    let mut svg = format!(
        r##"<svg id="latency-histogram" class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="Latency distribution, cold against warm">"##
    );
    let (cold_n, warm_n) = (h.cold.iter().sum::<u64>(), h.warm.iter().sum::<u64>());
    if h.cold.is_empty() || cold_n + warm_n == 0 {
        axes(&mut svg, 100.0, "share of fetches (%)", "latency (ms)");
        no_data(&mut svg, "no latencies measured");
        svg.push_str("</svg>");
        return svg;
    }
    let share = |c: u64, n: u64| if n == 0 { 0.0 } else { c as f64 * 100.0 / n as f64 };
    // Leave out empty buckets at both ends.
    let used = |i: usize| h.cold[i] + h.warm[i] > 0;
    let first = (0..h.cold.len()).find(|&i| used(i)).unwrap_or(0);
    let last = (0..h.cold.len()).rfind(|&i| used(i)).unwrap_or(0);
    let buckets: Vec<usize> = (first..=last).collect();
    let top = buckets
        .iter()
        .map(|&i| share(h.cold[i], cold_n).max(share(h.warm[i], warm_n)))
        .fold(0.0, f64::max);
    let y_max = nice_ceil(top).min(100.0);
    axes(
        &mut svg,
        y_max,
        "share of fetches (%)",
        "latency (ms), bucket lower edge",
    );
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let slot = (x1 - x0) / buckets.len() as f64;
    let bar_w = (slot * 0.4).max(1.0);
    let label_every = (buckets.len() as f64 / 12.0).ceil().max(1.0) as usize;
    for (k, &i) in buckets.iter().enumerate() {
        let x = x0 + slot * k as f64;
        let range = format!("{}–{} ms", num(h.bounds_ms[i]), num(h.bounds_ms[i + 1]));
        for (series, count, n, color, dx) in [
            ("cold", h.cold[i], cold_n, COLD, slot * 0.1),
            ("warm", h.warm[i], warm_n, WARM, slot * 0.5),
        ] {
            if count == 0 {
                continue;
            }
            let s = share(count, n);
            let bh = ((y0 - y1) * s / y_max).max(1.0);
            let _ = write!(
                svg,
                r##"<rect class="bar {series}" x="{:.1}" y="{:.1}" width="{bar_w:.1}" height="{bh:.1}" fill="{color}"><title>{series}: {count} of {n} fetches ({s:.1}%) in {}</title></rect>"##,
                x + dx,
                y0 - bh,
                esc(&range)
            );
        }
        if k % label_every == 0 {
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"##,
                x + slot / 2.0,
                y0 + 16.0,
                num(h.bounds_ms[i])
            );
        }
    }
    let _ = write!(
        svg,
        r##"<rect x="{:.1}" y="8" width="12" height="12" fill="{COLD}"/><text x="{:.1}" y="18" class="tick">cold (MISS), n={cold_n}</text><rect x="{:.1}" y="8" width="12" height="12" fill="{WARM}"/><text x="{:.1}" y="18" class="tick">warm (HIT), n={warm_n}</text>"##,
        W - 330.0,
        W - 314.0,
        W - 170.0,
        W - 154.0
    );
    svg.push_str("</svg>");
    svg
}

/// Requests completed per second over the concurrency phase.
fn throughput_svg(r: &Report) -> String {
    let mut svg = format!(
        r##"<svg id="throughput" class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="Throughput over time">"##
    );
    let Some(c) = r.concurrency.as_ref().filter(|c| !c.timeline.is_empty()) else {
        axes(&mut svg, 1.0, "requests per second", "time (s)");
        no_data(&mut svg, "the concurrency phase did not run");
        svg.push_str("</svg>");
        return svg;
    };
    let t = &c.timeline;
    let slice = if t.len() > 1 { t[1].t_s - t[0].t_s } else { c.elapsed_s };
    let t_end = (t[t.len() - 1].t_s + slice).max(1e-6);
    let y_max = nice_ceil(t.iter().map(|s| s.rps).fold(0.0, f64::max));
    axes(&mut svg, y_max, "requests per second", "time (s)");
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let px = |ts: f64| x0 + (x1 - x0) * ts / t_end;
    let py = |v: f64| y0 - (y0 - y1) * v / y_max;
    // Each slice's value at its middle.
    let points = |f: &dyn Fn(&super::stats::Slice) -> f64| -> Vec<(f64, f64)> {
        t.iter().map(|s| (px(s.t_s + slice / 2.0), py(f(s)))).collect()
    };
    let rps = points(&|s| s.rps);
    let join = |pts: &[(f64, f64)]| {
        pts.iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut area = vec![(rps[0].0, y0)];
    area.extend(&rps);
    area.push((rps[rps.len() - 1].0, y0));
    let _ = write!(
        svg,
        r##"<polygon class="area" points="{}" fill="{LINE}" fill-opacity="0.15"/><polyline id="throughput-line" class="line" points="{}" fill="none" stroke="{LINE}" stroke-width="2.5"/>"##,
        join(&area),
        join(&rps)
    );
    for (s, (x, y)) in t.iter().zip(&rps) {
        let _ = write!(
            svg,
            r##"<circle class="point" cx="{x:.1}" cy="{y:.1}" r="3" fill="{LINE}"><title>{}–{} s: {} req/s</title></circle>"##,
            num(s.t_s),
            num(s.t_s + slice),
            s.rps
        );
    }
    if t.iter().any(|s| s.errors_per_s > 0.0) {
        let errors = points(&|s| s.errors_per_s);
        let _ = write!(
            svg,
            r##"<polyline class="errors" points="{}" fill="none" stroke="{ERRORS}" stroke-width="2" stroke-dasharray="5 3"/>"##,
            join(&errors)
        );
    }
    for i in 0..=5 {
        let ts = t_end * i as f64 / 5.0;
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"##,
            px(ts),
            y0 + 16.0,
            num((ts * 100.0).round() / 100.0)
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{:.1}" y="8" width="12" height="12" fill="{LINE}"/><text x="{:.1}" y="18" class="tick">completed req/s ({} workers, mean {} req/s)</text>"##,
        W - 330.0,
        W - 314.0,
        c.workers,
        c.throughput_rps
    );
    svg.push_str("</svg>");
    svg
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut page = String::new();
    let verdict = if r.ok {
        format!("passed ({} ok, {} skipped)", r.passed, r.skipped)
    } else {
        format!("FAILED ({} failed, {} ok, {} skipped)", r.failed, r.passed, r.skipped)
    };
    let _ = write!(
        page,
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cachegate selftest: {}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; max-width: 820px; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }}
h2 {{ font-size: 17px; margin-top: 28px; }}
.meta {{ color: #666; font-size: 13px; }}
table {{ border-collapse: collapse; font-size: 13px; width: 100%; }}
th, td {{ text-align: left; padding: 4px 8px; border-bottom: 1px solid #e5e5e5; vertical-align: top; }}
td.num, th.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.ok {{ color: #137333; font-weight: 600; }}
.failed {{ color: #c5221f; font-weight: 600; }}
.skipped {{ color: #8a6d00; font-weight: 600; }}
.verdict.ok {{ background: #e6f4ea; }} .verdict.failed {{ background: #fce8e6; }}
.verdict {{ padding: 8px 12px; border-radius: 6px; display: inline-block; margin-top: 8px; }}
svg.plot {{ max-width: 100%; height: auto; background: #fff; border: 1px solid #ddd; border-radius: 6px; }}
svg .tick {{ font-size: 11px; fill: #444; }} svg .label {{ font-size: 12px; fill: #222; }}
svg .nodata {{ font-size: 14px; fill: #999; }}
</style></head><body>
<h1>cachegate selftest</h1>
<div class="meta">{} · GET {} · {} ids · {} requests per phase · {} workers · started {} · {:.2} s · cachegate {}</div>
<div class="verdict {}">{}</div>
"##,
        esc(&r.target.url),
        esc(&r.target.url),
        esc(&r.target.path),
        r.target.ids,
        r.target.requests,
        r.target.concurrency,
        esc(&r.started_at),
        r.duration_s,
        esc(r.version),
        if r.ok { "ok" } else { "failed" },
        esc(&verdict)
    );
    page.push_str(
        "<h2>Checks</h2>\n<table id=\"checks\"><tr><th>check</th><th>phase</th><th>result</th><th>detail</th></tr>\n",
    );
    for c in &r.checks {
        let class = c.status.as_str();
        let text = c.detail.as_deref().or(c.reason.as_deref()).unwrap_or("");
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{class}</td><td>{}</td></tr>",
            c.name,
            c.phase,
            esc(text)
        );
    }
    page.push_str("</table>\n");

    page.push_str("<h2>Latency</h2>\n<table id=\"latency\"><tr><th>fetches</th><th class=\"num\">count</th><th class=\"num\">min ms</th><th class=\"num\">p50 ms</th><th class=\"num\">p90 ms</th><th class=\"num\">p99 ms</th><th class=\"num\">max ms</th><th class=\"num\">mean ms</th></tr>\n");
    for (name, s) in [
        ("cold (X-Cache: MISS)", &r.latency.cold),
        ("warm (X-Cache: HIT)", &r.latency.warm),
        ("concurrency phase", &r.latency.concurrent),
    ] {
        if let Some(s) = s {
            let _ = writeln!(
                page,
                "<tr><td>{name}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                s.count, s.min_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.mean_ms
            );
        }
    }
    page.push_str("</table>\n");

    page.push_str("<h2>Latency distribution: cold against warm</h2>\n");
    page.push_str(&histogram_svg(r));
    page.push_str("\n<h2>Throughput over time (concurrency phase)</h2>\n");
    if let Some(c) = &r.concurrency {
        let _ = writeln!(
            page,
            "<div class=\"meta\">{} requests, {} errors, hit rate {:.1}%, {:.2} s, {} req/s</div>",
            c.requests,
            c.errors,
            c.hit_rate * 100.0,
            c.elapsed_s,
            c.throughput_rps
        );
    }
    page.push_str(&throughput_svg(r));
    // The data for machines; "</" cannot end the script element early.
    let json = serde_json::to_string(r)
        .unwrap_or_else(|_| "{}".into())
        .replace("</", "<\\/");
    let _ = write!(
        page,
        "\n<script type=\"application/json\" id=\"selftest-data\">{json}</script>\n</body></html>\n"
    );
    debug_assert!(r
        .checks
        .iter()
        .all(|c| c.status != CheckStatus::Ok || c.reason.is_none()));
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ceil(7.0), 10.0);
        assert_eq!(nice_ceil(42.0), 50.0);
        assert_eq!(nice_ceil(5321.0), 10000.0);
        assert_eq!(nice_ceil(1800.0), 2000.0);
        assert_eq!(num(0.25), "0.25");
        assert_eq!(num(2.0), "2");
        assert_eq!(esc("<a&'\">"), "&lt;a&amp;&#39;&quot;&gt;");
    }
}
