//! `cachegate selftest`: the reference document's `test_cache.py` as a
//! built-in command against a running deployment.
//!
//! Four phases, each ending in checks, then a report:
//! 1. connectivity: the proxy answers, the backend answers through it, the
//!    store is up (the admin health route);
//! 2. hit/miss: cold fetches (first fetch of each id, or after purging its
//!    key through the admin API) against warm ones, classified by the
//!    `X-Cache` header cachegate sets;
//! 3. invalidation: a configured write through the proxy, then a read that
//!    must show the new data;
//! 4. concurrency: C workers × N requests, throughput, errors, hit rate.
//!
//! The report is a table and a text histogram, JSON (`--json`), and an HTML
//! file with inline SVG plots (`--html`). Exit status: 0 when every check
//! passed (skipped ones do not count), 1 when one failed, 2 for usage errors.

mod client;
mod html;
mod plan;
mod report;
mod stats;

pub use plan::SelftestArgs;
pub use report::{Check, CheckStatus, Report};

use client::{Answer, CacheClass, Http};
use http::Method;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use plan::Plan;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit status for a usage error.
pub const USAGE: u8 = 2;

/// Share of warm fetches that must be hits for the hit/miss check.
const WARM_HIT_FLOOR: f64 = 0.9;

/// Runs the self-test and prints the report; returns the exit status.
// Boxed here so that the lib compiles this future's code; polled only from
// the binary, it would otherwise be compiled again there (38 s of a release build).
pub fn run(args: SelftestArgs) -> crate::BoxFuture<'static, u8> {
    Box::pin(run_selftest(args))
}

async fn run_selftest(args: SelftestArgs) -> u8 {
    let plan = match plan::plan(&args, std::io::stderr().is_terminal()) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("cachegate selftest: {msg}");
            return USAGE;
        }
    };
    if let Some(path) = &plan.html {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            eprintln!(
                "cachegate selftest: --html: the folder of {} does not exist",
                path.display()
            );
            return USAGE;
        }
    }
    let report = execute(&plan).await;
    let mut status = if report.ok { 0 } else { 1 };
    if let Some(path) = &plan.html {
        if let Err(e) = std::fs::write(path, html::render(&report)) {
            eprintln!("cachegate selftest: cannot write {}: {e}", path.display());
            status = 1;
        }
    }
    let out = if plan.json {
        let mut s = serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    } else {
        let mut s = report::render_text(&report);
        if let Some(path) = &plan.html {
            s.push_str(&format!("HTML report: {}\n", path.display()));
        }
        s
    };
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    status
}

/// Progress bars on standard error, or hidden ones.
struct Progress {
    enabled: bool,
}

impl Progress {
    fn bar(&self, len: u64, phase: &'static str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(phase);
        bar
    }
}

/// Results of one read, kept for the figures.
#[derive(Clone, Copy)]
struct Sample {
    latency_us: u64,
    class: CacheClass,
    ok: bool,
}

fn sample(result: &Result<Answer, String>, elapsed: Duration) -> Sample {
    match result {
        Ok(a) => Sample {
            latency_us: a.elapsed.as_micros() as u64,
            class: a.class,
            ok: a.success(),
        },
        Err(_) => Sample {
            latency_us: elapsed.as_micros() as u64,
            class: CacheClass::Absent,
            ok: false,
        },
    }
}

fn failure(result: &Result<Answer, String>) -> String {
    match result {
        Ok(a) => format!("answered {}: {}", a.status, a.body_snippet()),
        Err(e) => e.clone(),
    }
}

struct Ctx<'a> {
    plan: &'a Plan,
    http: Arc<Http>,
    progress: Progress,
}

impl Ctx<'_> {
    async fn read(&self, id: &str) -> (Result<Answer, String>, Duration) {
        let started = Instant::now();
        let r = self
            .http
            .send(
                Method::GET,
                &self.plan.base.url(&self.plan.read_path(id)),
                self.plan.token.as_deref(),
                None,
            )
            .await;
        (r, started.elapsed())
    }

    fn admin_url(&self, route: &str) -> String {
        self.plan.admin.url(&format!("{}{route}", self.plan.admin_prefix))
    }

    async fn admin(&self, method: Method, route: &str) -> Result<Answer, String> {
        self.http
            .send(method, &self.admin_url(route), self.plan.admin_token.as_deref(), None)
            .await
    }
}

async fn execute(plan: &Plan) -> Report {
    let started = Instant::now();
    let ctx = Ctx {
        plan,
        http: Arc::new(Http::new(plan.timeout, plan.headers.clone(), plan.concurrency as usize)),
        progress: Progress { enabled: plan.progress },
    };
    let mut report = Report::new(plan);

    // 1. Connectivity.
    let first = plan.ids[0].clone();
    let (probe, probe_time) = ctx.read(&first).await;
    let read_desc = format!("GET {}", plan.read_path(&first));
    let reachable = match &probe {
        Err(e) => {
            report.push(Check::failed(
                "proxy",
                "connectivity",
                format!("{}: {e}", plan.base.prefix),
            ));
            report.push(Check::skipped("backend", "connectivity", "the proxy did not answer"));
            false
        }
        Ok(a) => {
            report.push(Check::ok(
                "proxy",
                "connectivity",
                format!("{} answered {} in {:.2} ms", plan.base.prefix, a.status, ms(a.elapsed)),
            ));
            if a.class != CacheClass::Absent {
                report.cache_header = a.cache_header.map(str::to_string);
            }
            if a.success() {
                report.push(Check::ok(
                    "backend",
                    "connectivity",
                    format!("{read_desc}: {}", a.status),
                ));
                true
            } else {
                let hint = match a.status {
                    401 | 403 => " (give the API's token with --token)",
                    404 => " (check --path and --id)",
                    502..=504 => " (the proxy could not reach the backend)",
                    _ => "",
                };
                report.push(Check::failed(
                    "backend",
                    "connectivity",
                    format!("{read_desc} answered {}{hint}: {}", a.status, a.body_snippet()),
                ));
                false
            }
        }
    };
    let store_ok = store_check(&ctx, &mut report).await;

    if reachable {
        let probe_sample = plan.purge_key.is_none().then(|| sample(&probe, probe_time));
        hit_miss(&ctx, &mut report, probe_sample).await;
        invalidation(&ctx, &mut report).await;
        concurrency(&ctx, &mut report).await;
    } else {
        let why = "reads through the proxy fail (see connectivity)";
        for (name, phase) in [
            ("hit_miss", "performance"),
            ("invalidation", "invalidation"),
            ("concurrency", "concurrency"),
        ] {
            report.push(Check::skipped(name, phase, why));
        }
    }

    if store_ok {
        if let Ok(a) = ctx.admin(Method::GET, "/basic-stats").await {
            if a.success() {
                report.store_stats = serde_json::from_slice(&a.body).ok();
            }
        }
    }
    report.finish(started.elapsed());
    report
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The store through `{prefix}/health`; true when it is up.
async fn store_check(ctx: &Ctx<'_>, report: &mut Report) -> bool {
    if ctx.plan.admin_token.is_none() {
        report.push(Check::skipped(
            "store",
            "connectivity",
            "no admin token: give --admin-token (or CACHEGATE_ADMIN_TOKEN) to check the store",
        ));
        return false;
    }
    let url = ctx.admin_url("/health");
    let check = match ctx.admin(Method::GET, "/health").await {
        Err(e) => Check::failed("store", "connectivity", format!("GET {url}: {e}")),
        Ok(a) if a.status == 401 => Check::failed(
            "store",
            "connectivity",
            format!("GET {url}: the admin token was refused (401)"),
        ),
        Ok(a) if a.status == 404 => Check::failed(
            "store",
            "connectivity",
            format!("GET {url}: 404; is the admin API elsewhere (--admin-url, --admin-prefix)?"),
        ),
        Ok(a) if !a.success() => Check::failed(
            "store",
            "connectivity",
            format!("GET {url} answered {}: {}", a.status, a.body_snippet()),
        ),
        Ok(a) => match serde_json::from_slice::<serde_json::Value>(&a.body) {
            Ok(v) => {
                // `store` is {"kind", "state", "detail"} (a bare kind before).
                let store = v["store"]["kind"]
                    .as_str()
                    .or(v["store"].as_str())
                    .unwrap_or("unknown")
                    .to_string();
                let status = v["status"].as_str().unwrap_or("unknown").to_string();
                if v["store_up"].as_bool() == Some(true) {
                    Check::ok(
                        "store",
                        "connectivity",
                        format!("{store} store up (admin health: {status})"),
                    )
                } else {
                    Check::failed(
                        "store",
                        "connectivity",
                        format!(
                            "the {store} store is down: {} (admin health: {status})",
                            v["store"]["detail"].as_str().unwrap_or("no detail")
                        ),
                    )
                }
            }
            Err(_) => Check::failed(
                "store",
                "connectivity",
                format!("GET {url}: not the admin health JSON: {}", a.body_snippet()),
            ),
        },
    };
    let ok = check.status == CheckStatus::Ok;
    report.push(check);
    ok
}

/// Cold fetches, then warm ones; classified by the cache status header.
async fn hit_miss(ctx: &Ctx<'_>, report: &mut Report, probe: Option<Sample>) {
    let plan = ctx.plan;
    let n = plan.requests as usize;
    let cold_n = if plan.purge_key.is_some() {
        n
    } else {
        n.min(plan.ids.len())
    };
    let mut cold: Vec<Sample> = Vec::with_capacity(cold_n);
    let mut first_error: Option<String> = None;
    let bar = ctx.progress.bar(cold_n as u64, "cold");
    for i in 0..cold_n {
        let id = &plan.ids[i % plan.ids.len()];
        if let Some(template) = &plan.purge_key {
            let key = template.replace("{id}", id);
            let route = format!("/key/{}", utf8_percent_encode(&key, NON_ALPHANUMERIC));
            match ctx.admin(Method::DELETE, &route).await {
                Ok(a) if a.success() => {}
                other => {
                    bar.finish_and_clear();
                    report.push(Check::failed(
                        "hit_miss",
                        "performance",
                        format!(
                            "purging {key:?} through DELETE {}: {}",
                            ctx.admin_url(&route),
                            failure(&other)
                        ),
                    ));
                    return;
                }
            }
        }
        if i == 0 {
            if let Some(s) = probe {
                // The connectivity read was this id's first fetch.
                cold.push(s);
                bar.inc(1);
                continue;
            }
        }
        let (r, t) = ctx.read(id).await;
        if first_error.is_none() && !r.as_ref().is_ok_and(Answer::success) {
            first_error = Some(format!("GET {}: {}", plan.read_path(id), failure(&r)));
        }
        cold.push(sample(&r, t));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let warm_ids = &plan.ids[..cold_n.min(plan.ids.len()).max(1)];
    let bar = ctx.progress.bar(n as u64, "warm");
    let mut warm: Vec<Sample> = Vec::with_capacity(n);
    for i in 0..n {
        let id = &warm_ids[i % warm_ids.len()];
        let (r, t) = ctx.read(id).await;
        if first_error.is_none() && !r.as_ref().is_ok_and(Answer::success) {
            first_error = Some(format!("GET {}: {}", plan.read_path(id), failure(&r)));
        }
        warm.push(sample(&r, t));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let all = cold.iter().chain(&warm);
    let miss_us: Vec<u64> = all
        .clone()
        .filter(|s| s.ok && s.class == CacheClass::Miss)
        .map(|s| s.latency_us)
        .collect();
    let hit_us: Vec<u64> = all
        .clone()
        .filter(|s| s.ok && s.class == CacheClass::Hit)
        .map(|s| s.latency_us)
        .collect();
    let errors = all.clone().filter(|s| !s.ok).count();
    let absent = all.clone().filter(|s| s.ok && s.class == CacheClass::Absent).count();
    let other = all.filter(|s| s.ok && s.class == CacheClass::Other).count();
    let warm_hits = warm.iter().filter(|s| s.ok && s.class == CacheClass::Hit).count();
    let cold_misses = cold.iter().filter(|s| s.ok && s.class == CacheClass::Miss).count();

    report.latency.cold = stats::summarize(&miss_us);
    report.latency.warm = stats::summarize(&hit_us);
    report.histogram = stats::histogram(&miss_us, &hit_us);
    let speedup = match (&report.latency.cold, &report.latency.warm) {
        (Some(c), Some(w)) if w.p50_ms > 0.0 => Some((c.p50_ms / w.p50_ms * 100.0).round() / 100.0),
        _ => None,
    };
    report.hit_miss = Some(report::HitMiss {
        cold_requests: cold.len(),
        cold_misses,
        warm_requests: warm.len(),
        warm_hits,
        errors,
        without_cache_header: absent,
        other_cache_status: other,
        purged_before_cold: plan.purge_key.is_some(),
        speedup_p50: speedup,
    });

    let total = cold.len() + warm.len();
    let check = if errors > 0 {
        Check::failed(
            "hit_miss",
            "performance",
            format!(
                "{errors} of {total} reads failed; first: {}",
                first_error.unwrap_or_default()
            ),
        )
    } else if absent == total {
        Check::failed(
            "hit_miss",
            "performance",
            format!(
                "no X-Cache or Cache-Status header on any answer: does a cache rule match {}?",
                plan.path
            ),
        )
    } else if (warm_hits as f64) < WARM_HIT_FLOOR * warm.len() as f64 {
        Check::failed(
            "hit_miss",
            "performance",
            format!(
                "only {warm_hits} of {} warm fetches were cache hits (need {:.0}%)",
                warm.len(),
                WARM_HIT_FLOOR * 100.0
            ),
        )
    } else {
        let mut detail = format!("{warm_hits}/{} warm fetches were hits", warm.len());
        match (&report.latency.cold, &report.latency.warm, speedup) {
            (Some(c), Some(w), Some(x)) => detail.push_str(&format!(
                "; p50 warm {:.3} ms vs cold {:.3} ms ({x:.2}× faster)",
                w.p50_ms, c.p50_ms
            )),
            _ => detail
                .push_str("; no cold miss seen: every id was cached already (give --purge-key or fresh --id values)"),
        }
        Check::ok("hit_miss", "performance", detail)
    };
    report.push(check);
}

/// The configured write, then a read that must show its data.
async fn invalidation(ctx: &Ctx<'_>, report: &mut Report) {
    let plan = ctx.plan;
    let Some(write) = &plan.write else {
        report.push(Check::skipped(
            "invalidation",
            "invalidation",
            "no --write given, e.g. --write 'PUT /api/v1/tasks/{id} {\"name\":\"selftest {nonce}\"}'",
        ));
        return;
    };
    let id = plan.ids[0].as_str();
    let nonce = format!("selftest-{}", hex::encode(rand::random::<[u8; 4]>()));
    let fill = |t: &str| t.replace("{id}", id).replace("{nonce}", &nonce);
    let read_path = plan.read_path(id);
    let write_path = fill(&write.path);
    let write_desc = format!("{} {write_path}", write.method);
    let fail = |reason: String| Check::failed("invalidation", "invalidation", reason);

    // Make sure the entry is cached before the write.
    let _ = ctx.read(id).await;
    let (before, _) = ctx.read(id).await;
    let before = match before {
        Ok(a) if a.success() => a,
        other => {
            report.push(fail(format!("GET {read_path} before the write: {}", failure(&other))));
            return;
        }
    };
    let body = write.body.as_deref().map(fill);
    let written = ctx
        .http
        .send(
            write.method.clone(),
            &plan.base.url(&write_path),
            plan.token.as_deref(),
            body.as_deref(),
        )
        .await;
    let written = match written {
        Ok(a) if a.success() => a,
        other => {
            report.push(fail(format!("{write_desc}: {}", failure(&other))));
            return;
        }
    };
    let (after, _) = ctx.read(id).await;
    let after = match after {
        Ok(a) if a.success() => a,
        other => {
            report.push(fail(format!("GET {read_path} after {write_desc}: {}", failure(&other))));
            return;
        }
    };
    let (again, _) = ctx.read(id).await;
    let cached_again = again.as_ref().is_ok_and(|a| a.class == CacheClass::Hit);
    let shows_new = if write.has_nonce() {
        memchr::memmem::find(&after.body, nonce.as_bytes()).is_some()
    } else {
        !(after.class == CacheClass::Hit && after.body == before.body)
    };
    report.invalidation = Some(report::Invalidation {
        write: write_desc.clone(),
        write_status: written.status,
        read: format!("GET {read_path}"),
        cached_before: before.class == CacheClass::Hit,
        read_status: after.status,
        read_cache: after.class.as_str().to_string(),
        nonce: write.has_nonce().then(|| nonce.clone()),
        shows_new_data: shows_new,
        cached_again,
    });
    let x_cache = after.cache_value.clone().unwrap_or_else(|| "none".into());
    let check = if shows_new {
        let what = if write.has_nonce() {
            format!("shows {nonce}")
        } else {
            "was not served from the old entry".to_string()
        };
        Check::ok(
            "invalidation",
            "invalidation",
            format!(
                "{write_desc} -> {}; the next read (X-Cache: {x_cache}) {what}{}",
                written.status,
                if cached_again { ", then is cached again" } else { "" }
            ),
        )
    } else if after.class == CacheClass::Hit {
        fail(format!(
            "after {write_desc} -> {}, GET {read_path} was a cache HIT with the old data: the write did not invalidate",
            written.status
        ))
    } else {
        fail(format!(
            "after {write_desc} -> {}, GET {read_path} (X-Cache: {x_cache}) does not show {nonce}: the backend kept the old data",
            written.status
        ))
    };
    report.push(check);
}

/// C workers, N reads each, over the ids.
async fn concurrency(ctx: &Ctx<'_>, report: &mut Report) {
    let plan = ctx.plan;
    let (c, n) = (plan.concurrency as usize, plan.requests as usize);
    let bar = ctx.progress.bar((c * n) as u64, "concurrency");
    let ids: Arc<Vec<String>> = Arc::new(plan.ids.clone());
    let urls: Arc<Vec<String>> = Arc::new(ids.iter().map(|id| plan.base.url(&plan.read_path(id))).collect());
    let start = Instant::now();
    let mut workers = Vec::with_capacity(c);
    for w in 0..c {
        let (http, urls, bar) = (ctx.http.clone(), urls.clone(), bar.clone());
        let token = plan.token.clone();
        workers.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(n);
            let mut first_error = None;
            for j in 0..n {
                let url = &urls[(w * n + j) % urls.len()];
                let t0 = Instant::now();
                let r = http.send(Method::GET, url, token.as_deref(), None).await;
                let s = sample(&r, t0.elapsed());
                if !s.ok && first_error.is_none() {
                    first_error = Some(failure(&r));
                }
                out.push((start.elapsed().as_micros() as u64, s));
                bar.inc(1);
            }
            (out, first_error)
        }));
    }
    let mut done = Vec::with_capacity(c * n);
    let mut first_error = None;
    for w in workers {
        match w.await {
            Ok((out, e)) => {
                done.extend(out);
                first_error = first_error.or(e);
            }
            Err(e) => first_error = first_error.or(Some(format!("a worker stopped: {e}"))),
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();

    let total = c * n;
    let errors = total - done.iter().filter(|(_, s)| s.ok).count();
    let hits = done.iter().filter(|(_, s)| s.ok && s.class == CacheClass::Hit).count();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let latencies: Vec<u64> = done.iter().filter(|(_, s)| s.ok).map(|(_, s)| s.latency_us).collect();
    report.latency.concurrent = stats::summarize(&latencies);
    let finished: Vec<(u64, bool)> = done.iter().map(|(t, s)| (*t, !s.ok)).collect();
    let throughput = (total as f64 / secs).round();
    let hit_rate = if total > 0 { hits as f64 / total as f64 } else { 0.0 };
    report.concurrency = Some(report::Concurrency {
        workers: c,
        requests_per_worker: n,
        requests: total,
        errors,
        hits,
        hit_rate: (hit_rate * 10_000.0).round() / 10_000.0,
        elapsed_s: (secs * 1000.0).round() / 1000.0,
        throughput_rps: throughput,
        timeline: stats::timeline(&finished, elapsed.as_micros() as u64),
    });
    let summary = format!(
        "{total} requests ({c} workers × {n}) in {secs:.2} s: {throughput} req/s, {:.1}% hits",
        hit_rate * 100.0
    );
    let check = if errors == 0 {
        Check::ok("concurrency", "concurrency", format!("{summary}, no errors"))
    } else {
        Check::failed(
            "concurrency",
            "concurrency",
            format!(
                "{errors} of {total} requests failed; first: {}",
                first_error.unwrap_or_default()
            ),
        )
    };
    report.push(check);
}
