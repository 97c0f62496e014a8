//! What cachegate counts: the Prometheus registry behind `/metrics`, and the
//! hit/miss figures behind the admin `stats` route, which are summed over
//! every instance sharing the store (each instance adds its deltas to a
//! shared hash in batches, never one extra round trip per request).

mod process;

use crate::outcome::Outcome;
pub use crate::store::coherence_metrics::CoherenceMetrics;
use crate::store::{Store, StoreError};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CacheStatus {
    hit,
    miss,
    stale,
    bypass,
}

/// One family for all traffic. A request a `[[rule]]` covers carries its
/// rule and cache status; the others (`route="pass"` or `"admin"`) carry
/// them empty, which Prometheus reads as absent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    rule: String,
    cache_status: Option<CacheStatus>,
    route: Route,
    status_class: &'static str,
}

/// What answered a request, as `cachegate_requests_total{route}` says it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Route {
    /// A `[[rule]]` covers it (whatever the cache did with it).
    rule,
    /// Anything else the gateway answered: no rule, a write, a request
    /// refused (at admission, or by a rule's `duplicate_inputs = "reject"`).
    pass,
    /// The admin API, health and `/metrics`.
    admin,
}

/// `status_class` values, by the status's first digit less one.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index of a status's class in [`STATUS_CLASSES`] (anything outside
/// 100..=599, which hyper never sends, counts as 5xx).
fn status_class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WarmLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CompressionLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpgradeLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PurgeLabels {
    kind: &'static str,
}

/// Per-rule counters, resolved once per config generation so the request
/// path never hashes labels. Kept by rule name: a reload that keeps a rule
/// keeps its counts.
pub struct RuleCounters {
    name: String,
    /// By cache status (hit, miss, stale, bypass), then status class.
    by_status: [[Counter; 5]; 4],
    hits: AtomicU64,
    misses: AtomicU64,
}

pub struct Metrics {
    registry: Registry,
    /// Hits answered from the in-process tier (no store call).
    tier_hits: Counter,
    coherence: CoherenceMetrics,
    requests: Family<RequestLabels, Counter>,
    /// `route="pass"` and `route="admin"` by status class, resolved once.
    unruled: [[Counter; 5]; 2],
    /// Every rule counted since start, the current config's and earlier ones.
    rules: std::sync::Mutex<Vec<Arc<RuleCounters>>>,
    /// Config reloads, by result.
    reloads: Family<ReloadLabels, Counter>,
    backend_latency: Histogram,
    /// The per-operation histograms of the store calls the request path
    /// makes, resolved once (the family's label lookup hashes and locks).
    store_ops: Vec<(&'static str, Histogram)>,
    store_latency: Family<OpLabels, Histogram>,
    /// Store errors by cause (`store::health::ERROR_KINDS`), every kind
    /// present from start; the store counts, scrapes copy its figures.
    store_errors: Family<ErrorLabels, Counter>,
    store_errors_synced: std::sync::Mutex<()>,
    /// 1 while the backend probe (`crate::gateway::backend_probe`) finds
    /// the backend up.
    backend_up: Gauge,
    purges: Family<PurgeLabels, Counter>,
    purged_keys: Counter,
    stored_bytes: Counter,
    store_up: Gauge,
    store_shard_up: Family<ShardLabels, Gauge>,
    /// Access log lines dropped because the writer could not keep up.
    pub access_log_dropped: Counter,
    /// Paths warmed (`crate::warm`), by result: stored, skipped, failed.
    warm_paths: Family<WarmLabels, Counter>,
    /// Paths a warm run has yet to finish.
    warm_pending: Gauge,
    purges_pending: Gauge,
    purges_replayed: Counter,
    /// Upgrade requests (WebSocket), by result; and tunnels open now.
    upgrades: Family<UpgradeLabels, Counter>,
    tunnels_open: Gauge,
    /// Bodies cachegate encoded before storing (`[compression] encode`):
    /// `stage="identity"` bytes in, `stage="encoded"` bytes out.
    compression_bytes: Family<CompressionLabels, Counter>,
    /// A start-up warm run with `ready_waits` is going: `/readyz` says 503.
    warming: std::sync::atomic::AtomicBool,
    pub started: Instant,
    /// This process's id among the instances sharing the store.
    instance: String,
    flushing: tokio::sync::Mutex<()>,
}

/// An open tunnel, counted in `cachegate_tunnels_open` while it lives.
pub struct TunnelOpen(Gauge);

impl Drop for TunnelOpen {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Hit and miss figures of one instance or of the fleet.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HitMiss {
    pub hits: u64,
    pub misses: u64,
    /// Percent, one decimal.
    pub hit_rate: f64,
}

impl HitMiss {
    pub fn new(hits: u64, misses: u64) -> HitMiss {
        let total = hits + misses;
        let hit_rate = if total == 0 {
            0.0
        } else {
            (hits as f64 * 1000.0 / total as f64).round() / 10.0
        };
        HitMiss { hits, misses, hit_rate }
    }
}

/// Store operations timed on the request path (see `Gateway::timed`).
const STORE_OPS: [&str; 4] = ["lookup", "fill_guard", "fill", "lock"];

const SHARED_HITS: &str = "hits";
const SHARED_MISSES: &str = "misses";

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Purge kinds counted in `cachegate_purges_total`, present from start.
const PURGE_KINDS: [&str; 6] = ["key", "pattern", "tag", "scope", "clear", "url"];

impl Metrics {
    pub fn new() -> Metrics {
        // The process_* series are unprefixed (Prometheus's standard names);
        // everything else is cachegate_*.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector::new()));
        let registry = root.sub_registry_with_prefix("cachegate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered: by route (rule, pass, admin) and status class; for route=rule also by rule and cache status",
            requests.clone(),
        );
        let unruled = [Route::pass, Route::admin].map(|route| {
            STATUS_CLASSES.map(|status_class| {
                requests
                    .get_or_create(&RequestLabels {
                        rule: String::new(),
                        cache_status: None,
                        route,
                        status_class,
                    })
                    .clone()
            })
        });
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "Always 1; the labels say which build runs (commit: git at build time, CACHEGATE_COMMIT, or unknown)",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("CACHEGATE_COMMIT"),
            })
            .set(1);
        let backend_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "backend_duration_seconds",
            "Time to the backend's response head",
            backend_latency.clone(),
        );
        let store_latency = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 14))
        });
        registry.register(
            "store_duration_seconds",
            "Store call latency by operation",
            store_latency.clone(),
        );
        let store_ops = STORE_OPS
            .iter()
            .map(|op| (*op, store_latency.get_or_create(&OpLabels { op }).clone()))
            .collect();
        let store_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Store errors by cause: failed connection attempts and calls (auth_failed, db_out_of_range, tls_error, connection_refused, dns_failed, timeout, unreachable, error)",
            store_errors.clone(),
        );
        for kind in crate::store::health::ERROR_KINDS {
            let _ = store_errors.get_or_create(&ErrorLabels { kind });
        }
        let backend_up = Gauge::default();
        registry.register(
            "backend_up",
            "1 while the backend probe reaches the backend ([health] probe), 0 while it does not",
            backend_up.clone(),
        );
        // Up until a probe says otherwise (no probe: never down).
        backend_up.set(1);
        let purges = Family::<PurgeLabels, Counter>::default();
        registry.register("purges", "Purge operations, by kind", purges.clone());
        for kind in PURGE_KINDS {
            let _ = purges.get_or_create(&PurgeLabels { kind });
        }
        let purged_keys = Counter::default();
        registry.register("purged_keys", "Keys removed by purges", purged_keys.clone());
        let stored_bytes = Counter::default();
        registry.register(
            "stored_bytes",
            "Bytes of entries written to the store",
            stored_bytes.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "1 while the whole store is reachable (on a cluster, every primary: see store_shard_up)",
            store_up.clone(),
        );
        let store_shard_up = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "store_shard_up",
            "On a Redis Cluster, 1 while the primary is reachable (its keys are cached), by primary",
            store_shard_up.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the output could not keep up",
            access_log_dropped.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads, by result (ok, error)",
            reloads.clone(),
        );
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ReloadLabels { result });
        }
        let warm_paths = Family::<WarmLabels, Counter>::default();
        registry.register(
            "warm_paths",
            "Paths fetched by cache warming, by result (stored, skipped, failed)",
            warm_paths.clone(),
        );
        for result in ["stored", "skipped", "failed"] {
            let _ = warm_paths.get_or_create(&WarmLabels { result });
        }
        let upgrades = Family::<UpgradeLabels, Counter>::default();
        registry.register(
            "upgrades",
            "Upgrade requests (WebSocket), by result: tunnelled, declined by the backend, failed",
            upgrades.clone(),
        );
        for result in ["tunnelled", "declined", "failed"] {
            let _ = upgrades.get_or_create(&UpgradeLabels { result });
        }
        let compression_bytes = Family::<CompressionLabels, Counter>::default();
        registry.register(
            "compression_bytes",
            "Bodies cachegate encoded before storing: bytes as the backend sent them (stage=identity) and as stored (stage=encoded)",
            compression_bytes.clone(),
        );
        for stage in ["identity", "encoded"] {
            let _ = compression_bytes.get_or_create(&CompressionLabels { stage });
        }
        let tunnels_open = Gauge::default();
        registry.register(
            "tunnels_open",
            "Upgraded connections being tunnelled now",
            tunnels_open.clone(),
        );
        let warm_pending = Gauge::default();
        registry.register(
            "warm_pending",
            "Paths cache warming has yet to finish",
            warm_pending.clone(),
        );
        let purges_pending = Gauge::default();
        registry.register(
            "purges_pending",
            "Purges that failed and wait to be replayed (journalled); 0 when every purge is applied",
            purges_pending.clone(),
        );
        let purges_replayed = Counter::default();
        registry.register(
            "purges_replayed",
            "Purges replayed after a store outage (failed ones, and recent ones a failover may have lost)",
            purges_replayed.clone(),
        );
        let tier_hits = Counter::default();
        registry.register(
            "tier_hits",
            "Hits answered from the in-process tier, without a store call",
            tier_hits.clone(),
        );
        let coherence = CoherenceMetrics::new();
        coherence.register(registry);
        Metrics {
            purges_pending,
            purges_replayed,
            tier_hits,
            coherence,
            access_log_dropped,
            warm_paths,
            warm_pending,
            upgrades,
            tunnels_open,
            compression_bytes,
            warming: std::sync::atomic::AtomicBool::new(false),
            registry: root,
            requests,
            unruled,
            rules: std::sync::Mutex::new(Vec::new()),
            reloads,
            backend_latency,
            store_ops,
            store_latency,
            store_errors,
            store_errors_synced: std::sync::Mutex::new(()),
            backend_up,
            purges,
            purged_keys,
            stored_bytes,
            store_up,
            store_shard_up,
            started: Instant::now(),
            instance: hex::encode(rand::random::<[u8; 8]>()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// The counters of `names` in order (a rule set's), made on first use.
    pub fn rule_counters(&self, names: &[String]) -> Vec<Arc<RuleCounters>> {
        let mut all = self.rules.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        names
            .iter()
            .map(|name| {
                if let Some(known) = all.iter().find(|r| &r.name == name) {
                    return known.clone();
                }
                let counter = |cache_status: CacheStatus| {
                    STATUS_CLASSES.map(|status_class| {
                        self.requests
                            .get_or_create(&RequestLabels {
                                rule: name.clone(),
                                cache_status: Some(cache_status.clone()),
                                route: Route::rule,
                                status_class,
                            })
                            .clone()
                    })
                };
                let made = Arc::new(RuleCounters {
                    name: name.clone(),
                    by_status: [
                        counter(CacheStatus::hit),
                        counter(CacheStatus::miss),
                        counter(CacheStatus::stale),
                        counter(CacheStatus::bypass),
                    ],
                    hits: AtomicU64::new(0),
                    misses: AtomicU64::new(0),
                });
                all.push(made.clone());
                made
            })
            .collect()
    }

    /// Counts a config reload.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    fn all_rules(&self) -> Vec<Arc<RuleCounters>> {
        self.rules
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Counts a request a rule covers (whose counters are `r`), answered
    /// with `status`.
    pub fn record(&self, r: &RuleCounters, outcome: &Outcome, status: u16) {
        let http_status = status;
        let (status, hit) = match outcome {
            Outcome::Hit { .. } | Outcome::Collapsed { .. } => (0, Some(true)),
            Outcome::Miss { .. } => (1, Some(false)),
            Outcome::Stale { .. } => (2, Some(true)),
            Outcome::Revalidated { .. } => (1, Some(false)),
            Outcome::Bypass { .. } => (3, None),
        };
        r.by_status[status][status_class(http_status)].inc();
        match hit {
            Some(true) => {
                r.hits.fetch_add(1, Ordering::Relaxed);
            }
            Some(false) => {
                r.misses.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
    }

    /// Counts a request no rule covers: `route` is [`Route::pass`] or
    /// [`Route::admin`] (rule traffic is counted by [`Metrics::record`]).
    pub fn answered(&self, route: Route, status: u16) {
        let by_class = match route {
            Route::rule => return,
            Route::pass => &self.unruled[0],
            Route::admin => &self.unruled[1],
        };
        by_class[status_class(status)].inc();
    }

    pub fn backend_latency(&self, took: Duration) {
        self.backend_latency.observe(took.as_secs_f64());
    }

    /// This process's id among the instances sharing the store.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Records a store call's latency. Its errors are counted by the store
    /// itself, by cause, and copied at each scrape (`set_store_health`).
    pub fn store_call<T>(&self, op: &'static str, took: Duration, _result: &Result<T, StoreError>) {
        match self.store_ops.iter().find(|(known, _)| *known == op) {
            Some((_, histogram)) => histogram.observe(took.as_secs_f64()),
            None => self
                .store_latency
                .get_or_create(&OpLabels { op })
                .observe(took.as_secs_f64()),
        }
    }

    /// Sets `backend_up` from the backend probe.
    pub fn set_backend_up(&self, up: bool) {
        self.backend_up.set(up as i64);
    }

    pub fn purged(&self, kind: &'static str, keys: u64) {
        self.purges.get_or_create(&PurgeLabels { kind }).inc();
        self.purged_keys.inc_by(keys);
    }

    pub fn stored(&self, bytes: usize) {
        self.stored_bytes.inc_by(bytes as u64);
    }

    /// A body encoded before storing: its size before and after.
    pub fn compressed(&self, identity: usize, encoded: usize) {
        let stage = |stage| self.compression_bytes.get_or_create(&CompressionLabels { stage });
        stage("identity").inc_by(identity as u64);
        stage("encoded").inc_by(encoded as u64);
    }

    /// Counts a warmed path by result (`stored`, `skipped`, `failed`).
    pub fn warmed(&self, result: &'static str) {
        self.warm_paths.get_or_create(&WarmLabels { result }).inc();
    }

    /// Counts an upgrade request by result (`tunnelled`, `declined`, `failed`).
    pub fn upgrade(&self, result: &'static str) {
        self.upgrades.get_or_create(&UpgradeLabels { result }).inc();
    }

    /// One more open tunnel, until the guard is dropped.
    pub fn tunnel_opened(&self) -> TunnelOpen {
        self.tunnels_open.inc();
        TunnelOpen(self.tunnels_open.clone())
    }

    /// Adds to (or, negative, takes from) the paths warming has to do.
    pub fn warm_pending_add(&self, n: i64) {
        self.warm_pending.inc_by(n);
    }

    pub fn warm_pending(&self) -> i64 {
        self.warm_pending.get()
    }

    /// Whether readiness waits for a warm run in progress.
    pub fn warming(&self) -> bool {
        self.warming.load(Ordering::Acquire)
    }

    pub fn set_warming(&self, warming: bool) {
        self.warming.store(warming, Ordering::Release);
    }

    /// Counts a hit answered from the in-process tier.
    pub fn tier_hit(&self) {
        self.tier_hits.inc();
    }

    /// The lease and fence series, for the store to count into.
    pub fn coherence(&self) -> CoherenceMetrics {
        self.coherence.clone()
    }

    /// Purges waiting to be replayed (parts of a write's purge count one each).
    pub fn set_purges_pending(&self, n: usize) {
        self.purges_pending.set(n as i64);
    }

    pub fn purges_replayed(&self, n: usize) {
        self.purges_replayed.inc_by(n as u64);
    }

    /// Sets `store_up`, and on a cluster `store_shard_up` for each primary
    /// (a primary no longer serving slots is dropped).
    pub fn set_store_health(&self, store: &dyn Store) {
        // Connected but refused (NOAUTH) is not up either.
        let usable = store.health().state == crate::store::health::StoreState::Ok;
        self.store_up.set(usable as i64);
        {
            // One copy at a time, so two scrapes never add the same errors.
            let _one = self.store_errors_synced.lock().unwrap_or_else(|p| p.into_inner());
            let counts = store.error_counts();
            for (kind, total) in crate::store::health::ERROR_KINDS.into_iter().zip(counts) {
                let counter = self.store_errors.get_or_create(&ErrorLabels { kind });
                let seen = counter.get();
                if total > seen {
                    counter.inc_by(total - seen);
                }
            }
        }
        let shards = store.shards();
        if !shards.is_empty() {
            self.store_shard_up.clear();
            for (shard, up) in shards {
                self.store_shard_up.get_or_create(&ShardLabels { shard }).set(up as i64);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// This instance's own figures: overall and per rule.
    pub fn local(&self) -> (HitMiss, Vec<(String, HitMiss)>) {
        let mut total = (0, 0);
        let per_rule = self
            .all_rules()
            .iter()
            .map(|r| {
                let (h, m) = (r.hits.load(Ordering::Relaxed), r.misses.load(Ordering::Relaxed));
                total.0 += h;
                total.1 += m;
                (r.name.clone(), HitMiss::new(h, m))
            })
            .collect();
        (HitMiss::new(total.0, total.1), per_rule)
    }

    /// Publishes this instance's running totals to the shared figures.
    /// Totals, not deltas: a flush that timed out but landed anyway is
    /// simply overwritten by the next one, never counted twice.
    pub async fn flush(&self, store: &dyn Store) {
        // One flush at a time, so the stats route's own flush waits for a
        // background one already in flight.
        let _one = self.flushing.lock().await;
        let rules = self.all_rules();
        let mut totals = Vec::with_capacity(rules.len() * 2 + 2);
        let (mut hits, mut misses) = (0i64, 0i64);
        for r in &rules {
            let h = r.hits.load(Ordering::Relaxed) as i64;
            let m = r.misses.load(Ordering::Relaxed) as i64;
            totals.push((format!("rule:{}:hits", r.name), h));
            totals.push((format!("rule:{}:misses", r.name), m));
            hits += h;
            misses += m;
        }
        if hits + misses == 0 {
            return;
        }
        totals.push((SHARED_HITS.to_string(), hits));
        totals.push((SHARED_MISSES.to_string(), misses));
        let _ = store.publish_counters(&self.instance, &totals).await;
    }

    /// The fleet's figures from the shared counters: overall and per rule.
    pub fn fleet(counters: &[(String, i64)]) -> (HitMiss, Vec<(String, HitMiss)>) {
        let get = |name: &str| {
            counters
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| (*v).max(0) as u64)
        };
        let mut rules: Vec<String> = counters
            .iter()
            .filter_map(|(n, _)| n.strip_prefix("rule:")?.rsplit_once(':').map(|(r, _)| r.to_string()))
            .collect();
        rules.sort();
        rules.dedup();
        let per_rule = rules
            .into_iter()
            .map(|r| {
                let hm = HitMiss::new(get(&format!("rule:{r}:hits")), get(&format!("rule:{r}:misses")));
                (r, hm)
            })
            .collect();
        (HitMiss::new(get(SHARED_HITS), get(SHARED_MISSES)), per_rule)
    }
}

/// Flushes pending figures every `every` until the metrics are dropped.
pub fn spawn_flusher(metrics: Arc<Metrics>, store: Arc<dyn Store>, every: Duration) {
    let weak = Arc::downgrade(&metrics);
    drop(metrics);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(metrics) = weak.upgrade() else { return };
            metrics.set_store_health(store.as_ref());
            metrics.flush(store.as_ref()).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_is_a_percentage() {
        assert_eq!(HitMiss::new(1200, 300).hit_rate, 80.0);
        assert_eq!(HitMiss::new(0, 0).hit_rate, 0.0);
        assert_eq!(HitMiss::new(1, 2).hit_rate, 33.3);
    }

    #[test]
    fn fleet_figures_come_from_shared_counters() {
        let c = vec![
            ("hits".to_string(), 3),
            ("misses".to_string(), 1),
            ("rule:task:hits".to_string(), 3),
            ("rule:task:misses".to_string(), 1),
        ];
        let (all, rules) = Metrics::fleet(&c);
        assert_eq!((all.hits, all.misses), (3, 1));
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].0, "task");
        assert_eq!(rules[0].1.hit_rate, 75.0);
    }
}
