//! Cache warming: fetch a list of paths through the cache so that the first
//! clients find them stored.
//!
//! Each path is a GET handed to [`Gateway::handle`], the very code a
//! client's request runs: the rule that matches, its key and credential
//! scope (from the configured headers), its tags, the fill guard and the
//! fleet-wide fill lock all apply, and nothing is written to the store any
//! other way. What happened is read back from the answer's `Cache-Status`
//! (RFC 9211) and sorted into stored, skipped (already fresh, not cacheable
//! by the rules, an uncacheable response) and failed (the backend or the
//! store failed), each with its reason.
//!
//! Two ways in: `[warm]` in proxy.toml runs in the background at start
//! ([`spawn_at_start`]; failures are logged, never fatal, and `/readyz` can
//! wait for it), and `cachegate warm` ([`cli`]) runs a list once and prints
//! a summary.

pub mod cli;

pub use cli::WarmArgs;

use crate::config::{check_path, WarmConfig};
use crate::gateway::Gateway;
use crate::proxy::{self, ClientInfo};
use crate::reload::Live;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long warming at start waits for the store (and its shared scope
/// secret) before it starts anyway.
const STORE_WAIT: Duration = Duration::from_secs(10);

/// Failed paths a start-up run logs one by one (the rest are counted).
const LOGGED_FAILURES: usize = 10;

/// The client address warm requests carry (`X-Forwarded-For`, the access log).
const WARM_CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// The note on a stored path whose body had no length: the gateway stores
/// it in the background once read to its end.
pub const STREAMED: &str = "streamed";

/// How a warm run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests in flight at once (at least 1).
    pub concurrency: usize,
    /// Requests started per second, at most; `None`: as fast as they finish.
    pub rate: Option<f64>,
    /// Sent with every request: credentials pick the scope entries fill.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Options {
    pub fn from_config(warm: &WarmConfig) -> Options {
        Options {
            concurrency: warm.concurrency,
            rate: warm.rate,
            headers: warm.headers.clone(),
        }
    }
}

/// What became of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The answer was stored.
    Stored,
    /// Nothing to do or nothing that may be stored: already fresh, no rule
    /// caches it, the response is not cacheable.
    Skipped,
    /// The backend or the store failed.
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Stored => "stored",
            Verdict::Skipped => "skipped",
            Verdict::Failed => "failed",
        }
    }
}

/// One path's result.
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    pub path: String,
    pub result: Verdict,
    /// Why it was skipped or failed (or a note on a stored one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The answer's status; none when no request was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub ms: u64,
}

/// A whole run's results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub total: usize,
    pub stored: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Reason -> number of paths.
    pub skipped_reasons: BTreeMap<String, usize>,
    pub failed_reasons: BTreeMap<String, usize>,
    pub elapsed_ms: u64,
    /// Every path, in the order given.
    pub paths: Vec<PathReport>,
}

impl Summary {
    fn add(&mut self, report: PathReport) {
        let reasons = match report.result {
            Verdict::Stored => {
                self.stored += 1;
                None
            }
            Verdict::Skipped => {
                self.skipped += 1;
                Some(&mut self.skipped_reasons)
            }
            Verdict::Failed => {
                self.failed += 1;
                Some(&mut self.failed_reasons)
            }
        };
        if let Some(reasons) = reasons {
            let reason = report.reason.clone().unwrap_or_else(|| "unknown".into());
            *reasons.entry(reason).or_default() += 1;
        }
        self.paths.push(report);
    }
}

/// Spaces request starts `1 / rate` apart, whatever the concurrency.
struct Pacer {
    every: Option<Duration>,
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Pacer {
        Pacer {
            every: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn wait(&self) {
        let Some(every) = self.every else {
            return;
        };
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + every;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Keeps `warm_pending` honest when a run ends early (shutdown).
struct Pending {
    metrics: Arc<crate::metrics::Metrics>,
    left: i64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.metrics.warm_pending_add(-self.left);
    }
}

/// Warms `paths` with `gateway()` (asked again for each path, so a run
/// under the server follows config reloads); `progress` sees each path's
/// report as it finishes.
pub async fn run(
    gateway: impl Fn() -> Arc<Gateway> + Send + Sync + 'static,
    paths: Vec<String>,
    options: &Options,
    mut progress: impl FnMut(&PathReport),
) -> Summary {
    let started = Instant::now();
    let total = paths.len();
    let metrics = gateway().metrics().clone();
    metrics.warm_pending_add(total as i64);
    let mut pending = Pending {
        metrics: metrics.clone(),
        left: total as i64,
    };
    let paths = Arc::new(paths);
    let gateway = Arc::new(gateway);
    let next = Arc::new(AtomicUsize::new(0));
    let pacer = Arc::new(Pacer::new(options.rate));
    let mut headers = HeaderMap::new();
    for (name, value) in &options.headers {
        headers.insert(name.clone(), value.clone());
    }
    let headers = Arc::new(headers);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency.max(1).min(total) {
        let (paths, gateway, next, pacer, headers, tx) = (
            paths.clone(),
            gateway.clone(),
            next.clone(),
            pacer.clone(),
            headers.clone(),
            tx.clone(),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                pacer.wait().await;
                let report = warm_one(&gateway(), path, &headers).await;
                if tx.send((i, report)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut reports: Vec<Option<PathReport>> = vec![None; total];
    while let Some((i, report)) = rx.recv().await {
        metrics.warmed(report.result.as_str());
        metrics.warm_pending_add(-1);
        pending.left -= 1;
        progress(&report);
        reports[i] = Some(report);
    }
    let mut summary = Summary {
        total,
        ..Summary::default()
    };
    for report in reports.into_iter().flatten() {
        summary.add(report);
    }
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    summary
}

/// One path through the gateway, as a client's GET.
async fn warm_one(gateway: &Arc<Gateway>, path: &str, headers: &HeaderMap) -> PathReport {
    let started = Instant::now();
    let report = |result, reason: Option<String>, status: Option<u16>| PathReport {
        path: path.to_string(),
        result,
        reason,
        status,
        ms: started.elapsed().as_millis() as u64,
    };
    if let Err(e) = check_path(path) {
        return report(Verdict::Failed, Some(format!("bad path: {e}")), None);
    }
    // The rules see the path's normal form, as they do a client's.
    let normal = match proxy::normalize::normalize_path_and_query(path) {
        Ok(n) => n.into_owned(),
        Err(e) => return report(Verdict::Failed, Some(format!("bad path: {e}")), None),
    };
    let only_path = normal.split('?').next().unwrap_or_default();
    let config = gateway.config();
    let not_by_rules = |why: &str| Some(format!("not cacheable by rules: {why}"));
    if config.admin.listen.is_none() && crate::admin::owns(gateway, only_path) {
        return report(Verdict::Skipped, not_by_rules("an admin route"), None);
    }
    // Warming never purges.
    if config.rules.match_invalidate(&Method::GET, only_path).next().is_some() {
        return report(
            Verdict::Skipped,
            not_by_rules("an [[invalidate]] rule covers GET"),
            None,
        );
    }
    let Some(max_body_bytes) = config
        .rules
        .match_cache(&Method::GET, only_path)
        .map(|m| m.rule.max_body_bytes)
    else {
        return report(Verdict::Skipped, not_by_rules("no rule covers it"), None);
    };
    // With the store down the gateway would pass the request through
    // uncached: the backend's work would be for nothing.
    if !gateway.store().is_up() {
        return report(Verdict::Failed, Some("store unavailable".into()), None);
    }
    let mut req = Request::new(proxy::empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return report(Verdict::Failed, Some("bad path".into()), None),
    };
    *req.headers_mut() = headers.clone();
    let resp = gateway
        .handle(
            req,
            ClientInfo {
                addr: WARM_CLIENT,
                tls: false,
            },
        )
        .await;
    let status = resp.status().as_u16();
    let cache_status = resp
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Read the answer to its end: a streamed fill is stored only then.
    let body = match tokio::time::timeout(config.backend.timeout, resp.into_body().collect()).await {
        Ok(Ok(body)) => Some(body.to_bytes().len()),
        _ => None,
    };
    let (verdict, reason) = match classify(status, cache_status.as_deref(), body.is_some()) {
        // A streamed body is stored (in the background) only within the
        // rule's size limit.
        (Verdict::Stored, Some(r)) if r == STREAMED && body.is_some_and(|len| len > max_body_bytes) => (
            Verdict::Skipped,
            Some(format!("uncacheable response: too-large (status {status})")),
        ),
        other => other,
    };
    report(verdict, reason, Some(status))
}

/// Sorts an answer by its status and `Cache-Status` (see `src/outcome.rs`
/// for what the gateway writes there).
fn classify(status: u16, cache_status: Option<&str>, body_ok: bool) -> (Verdict, Option<String>) {
    use Verdict::*;
    let Some(cache_status) = cache_status else {
        // No rule took it after all (the request was answered elsewhere).
        return if status >= 400 {
            (Failed, Some(format!("answered {status} without reaching a rule")))
        } else {
            (Skipped, Some("not cacheable by rules: no rule covers it".into()))
        };
    };
    if !body_ok {
        return (Failed, Some("the backend's body failed or timed out".into()));
    }
    let params: Vec<&str> = cache_status.split(';').map(str::trim).collect();
    let has = |p: &str| params.contains(&p);
    let detail = params.iter().find_map(|p| p.strip_prefix("detail="));
    let store_failed = |d: &str| (Failed, Some(format!("store unavailable ({d})")));
    if has("hit") {
        return match (has("fwd=stale"), detail) {
            (true, Some("backend-error")) => (Failed, Some(format!("backend {status}; a stale entry was served"))),
            (true, _) => (Skipped, Some("stale; refreshed in the background".into())),
            (false, _) => (Skipped, Some("already fresh".into())),
        };
    }
    if has("fwd=bypass") {
        return match detail {
            Some(d) if d.starts_with("store-") => store_failed(d),
            Some("scope-secret") => (Failed, Some("the store's scope secret is not known yet".into())),
            Some(d) => (Skipped, Some(format!("not cacheable by rules: {d}"))),
            None => (Skipped, Some("not cacheable by rules".into())),
        };
    }
    if has("stored") {
        return (Stored, None);
    }
    if has("fwd-status=304") {
        return (Skipped, Some("revalidated; not stored".into()));
    }
    match detail {
        Some("backend") => (
            Failed,
            Some(match status {
                502 => "backend unreachable (502)".to_string(),
                504 => "backend timed out (504)".to_string(),
                s => format!("backend failed ({s})"),
            }),
        ),
        _ if status >= 500 => (Failed, Some(format!("backend {status}"))),
        Some(d) if d.starts_with("store-") => store_failed(d),
        // Unknown length: stored in the background once read to its end
        // (which warm_one did), if within the rule's max_body_bytes.
        Some("streamed") => (Stored, Some(STREAMED.into())),
        Some("superseded") => (Skipped, Some("superseded by a purge meanwhile".into())),
        Some(d) => (Skipped, Some(format!("uncacheable response: {d} (status {status})"))),
        None => (Skipped, Some(format!("uncacheable response (status {status})"))),
    }
}

/// Waits (up to `within`) until the store is reachable and knows the
/// shared scope secret, without which credentialed requests bypass the cache.
pub async fn wait_for_store(gateway: &Gateway, within: Duration) -> bool {
    let store = gateway.store();
    let deadline = Instant::now() + within;
    loop {
        if store.is_up() && store.scope_secret().is_some() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the `[warm]` run of the live config in the background, if it
/// lists paths. With `ready_waits`, `/readyz` answers 503 until it ends
/// (done, or stopped by `stopped`). Failures are logged, never fatal.
pub fn spawn_at_start(live: Arc<Live>, mut stopped: watch::Receiver<bool>) {
    let gateway = live.gateway();
    let warm = &gateway.config().warm;
    if warm.paths.is_empty() {
        return;
    }
    if let Some((_, unset)) = warm.unset_env.first() {
        tracing::warn!(error = %unset, "not warming the cache: a secret for its headers is missing");
        return;
    }
    let metrics = gateway.metrics().clone();
    if warm.ready_waits {
        metrics.set_warming(true);
    }
    let paths = warm.paths.clone();
    let options = Options::from_config(warm);
    tokio::spawn(async move {
        let work = async {
            if !wait_for_store(&gateway, STORE_WAIT).await {
                tracing::warn!("the store is not ready; warming anyway (paths will fail or bypass)");
            }
            drop(gateway);
            tracing::info!(
                paths = paths.len(),
                concurrency = options.concurrency,
                rate = options.rate,
                "warming the cache"
            );
            // The first failures one by one; then only the count by reason.
            let mut logged = 0;
            let summary = run(move || live.gateway(), paths, &options, |r| {
                if r.result == Verdict::Failed && logged < LOGGED_FAILURES {
                    logged += 1;
                    tracing::warn!(path = %r.path, reason = r.reason.as_deref().unwrap_or(""), "warming a path failed");
                }
            })
            .await;
            if summary.failed > 0 {
                tracing::warn!(
                    total = summary.total,
                    stored = summary.stored,
                    skipped = summary.skipped,
                    failed = summary.failed,
                    failed_reasons = ?summary.failed_reasons,
                    elapsed_ms = summary.elapsed_ms,
                    "cache warming done, with failures"
                );
            } else {
                tracing::info!(
                    total = summary.total,
                    stored = summary.stored,
                    skipped = summary.skipped,
                    elapsed_ms = summary.elapsed_ms,
                    "cache warming done"
                );
            }
        };
        tokio::select! {
            _ = work => {}
            _ = stopped.changed() => {}
        }
        metrics.set_warming(false);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_sorts_into_results() {
        let c = |status, cs: &str| classify(status, Some(cs), true);
        assert_eq!(c(200, "cachegate; fwd=miss; stored").0, Verdict::Stored);
        assert_eq!(
            c(200, "cachegate; hit; ttl=30"),
            (Verdict::Skipped, Some("already fresh".into()))
        );
        assert_eq!(
            c(500, "cachegate; fwd=miss; detail=status"),
            (Verdict::Failed, Some("backend 500".into()))
        );
        assert_eq!(
            c(502, "cachegate; fwd=miss; detail=backend"),
            (Verdict::Failed, Some("backend unreachable (502)".into()))
        );
        assert_eq!(
            c(404, "cachegate; fwd=miss; detail=status"),
            (
                Verdict::Skipped,
                Some("uncacheable response: status (status 404)".into())
            )
        );
        assert_eq!(
            c(200, "cachegate; fwd=bypass; detail=store-unavailable").0,
            Verdict::Failed
        );
        assert_eq!(classify(200, None, true).0, Verdict::Skipped);
        assert_eq!(
            classify(200, Some("cachegate; fwd=miss; stored"), false).0,
            Verdict::Failed
        );
    }
}
