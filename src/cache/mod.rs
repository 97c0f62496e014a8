//! The life of a request, in named phases, each in one place:
//!
//! 1. [`Gateway::handle`] **admit**: reject oversized or malformed requests
//!    (414 / 431 / 400, JSON).
//! 2. **route**: an `[[invalidate]]` match goes to [`Gateway::invalidate`],
//!    a `[[rule]]` match to [`Gateway::cached`], anything else is passed
//!    through by [`Gateway::pass`].
//! 3. **key** ([`Gateway::cache_key`]): render the logical key and the
//!    credential scope field; an unusable key bypasses the cache.
//! 4. **lookup**: one store call; a fresh decodable entry is a hit and is
//!    answered by [`Gateway::serve_hit`] without contacting the backend.
//! 5. **forward** ([`crate::proxy::Forwarder`]): the backend gets the request
//!    (HEAD as GET, so the answer can fill the GET entry).
//! 6. **fill** ([`Gateway::fill`]): a storable response is stored under the
//!    guard read at lookup, then answered; a larger or unknown-length body
//!    streams through and is stored only if it ends complete and small.
//! 7. **purge** (in [`Gateway::invalidate`]): after the backend answered a
//!    write, rendered keys and patterns are purged before the client gets
//!    the answer, so it reads its own write.
//!
//! A store failure anywhere is "no cache" for this request (fail open).

mod coalesce;
mod credential_end;
mod fill;
mod freshness;
mod implicit;
mod inputs;
mod pending_purges;
mod scope;
mod status;
mod suspect_credentials;
mod vary;
mod write_guard;

pub use scope::{scope_field, scope_field_keyed, ScopeKey, ANONYMOUS, PUBLIC};
pub use status::Outcome;

use crate::access_log::AccessLog;
use crate::config::{Config, DuplicateInputs, Scope, StoreKind, TtlMode, When};
use crate::metrics::Metrics;
use crate::proxy::{self, Body, ClientInfo, ForwardError, Forwarder};
use crate::rules::{CacheRule, RequestView};
use crate::store::entry::{now_ms, Entry, Lifetime};
use crate::store::memory::MemoryStore;
use crate::store::protocol::Protocol;
use crate::store::redis::{RedisBackend, RedisSettings};
use crate::store::tiered::{Tier, TierSettings};
use crate::store::{FillGuard, Store, StoreError, StoreResult};
use crate::BoxError;
use coalesce::{HeldFillLock, Inflight, Leader, Role, Shared};
use freshness::RequestDirectives;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use pending_purges::{PendingPurges, Purge};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a miss waiting on another instance's fill waits for the
/// pub/sub notice before it looks at the store anyway (the fallback for a
/// lost notice or a crashed lock owner).
const LOCK_POLL: Duration = Duration::from_millis(200);

/// How long a stale entry with a validator is kept for revalidation.
const KEEP_FOR_REVALIDATION: Duration = Duration::from_secs(60);

/// Everything a request needs: config, store, backend client.
///
/// One `Gateway` is one generation of the config: a reload
/// (`crate::reload`) makes a new one that shares everything but the
/// config, the backend client and the rule counters, so in-flight requests
/// finish on the generation they started on.
pub struct Gateway {
    config: Arc<Config>,
    forwarder: Forwarder,
    /// This generation's rules' counters, by rule index.
    rule_counters: Vec<Arc<crate::metrics::RuleCounters>>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    inflight: Arc<Inflight>,
    scope_key: Arc<OnceLock<ScopeKey>>,
    /// One keyspace walk (admin `keys`, pattern `clear`) at a time.
    keyspace_walks: Arc<tokio::sync::Semaphore>,
    /// Purges that failed (or may have been lost), replayed as soon as the
    /// store answers; and whether an outage repair is under way.
    pending: Arc<PendingPurges>,
    access_log: Option<Arc<AccessLog>>,
    /// The live generations' holder, for the admin reload route.
    live: Arc<OnceLock<std::sync::Weak<crate::reload::Live>>>,
}

/// What the access log line needs from inside a request's phases.
#[derive(Default)]
struct Trace {
    rule: Option<usize>,
    /// The first `[[invalidate]]` rule a write matched.
    invalidate: Option<usize>,
    key: Option<String>,
    backend_status: Option<u16>,
    backend_time: Option<Duration>,
}

tokio::task_local! {
    /// The request's trace, while an access log is written.
    static TRACE: std::cell::RefCell<Trace>;
}

/// The counters of `config`'s rules, by rule index; made here, before the
/// generation serves, so every rule shows in `/metrics` from the start.
fn rule_counters(metrics: &Metrics, config: &Config) -> Vec<Arc<crate::metrics::RuleCounters>> {
    let names: Vec<String> = config.rules.cache.iter().map(|r| r.name.clone()).collect();
    metrics.rule_counters(&names)
}

/// Notes something for the access log line (nothing when it is off).
fn trace(note: impl FnOnce(&mut Trace)) {
    let _ = TRACE.try_with(|t| note(&mut t.borrow_mut()));
}

/// Where a cacheable request's entry lives: the logical key and the
/// credential scope's field; and the rule's tags for it.
#[derive(Clone)]
struct CacheKey {
    key: String,
    field: String,
    tags: Vec<String>,
}

/// What phase 4 found.
struct Found {
    entry: Option<Entry>,
    /// The field the entry lives in (the scope's, or a `Vary` variant's).
    field: String,
    guard: FillGuard,
}

impl Gateway {
    /// Builds the store and the backend client. Never fails because Redis
    /// is down (fail open); fails only on a store URL fred cannot use.
    pub async fn new(config: Arc<Config>) -> Result<Gateway, BoxError> {
        let tombstone_ttl = Duration::from_secs(60).max(config.backend.timeout * 2);
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn Store> = match (&config.store, &config.redis) {
            (StoreKind::Redis, Some(redis)) => {
                let settings = RedisSettings {
                    prefix: &config.cache.key_prefix,
                    timeout: config.cache.store_timeout,
                    tombstone_ttl,
                    connect_wait: Duration::from_secs(2),
                    share_secret: config.cache.scope_secret.is_none(),
                };
                let backend = RedisBackend::connect(redis, settings).await?;
                let store = Protocol::over(backend.clone(), config.cache.scope_secret.as_deref());
                if config.tier.enabled && !config.tier_in_use() {
                    tracing::info!(target: "cachegate::store", "in-process tier is off on a Redis Cluster (client tracking cannot follow every primary)");
                }
                if config.tier_in_use() {
                    let settings = TierSettings {
                        redis,
                        prefix: &config.cache.key_prefix,
                        tier: &config.tier,
                        metrics: metrics.coherence(),
                    };
                    Arc::new(store.with_tier(Tier::start(backend, settings)?))
                } else {
                    Arc::new(store)
                }
            }
            _ => Arc::new(MemoryStore::new(
                config.memory.max_entries,
                config.memory.max_bytes,
                tombstone_ttl,
                config.cache.scope_secret.as_deref(),
            )),
        };
        crate::metrics::spawn_flusher(metrics.clone(), store.clone(), Duration::from_millis(500));
        let access_log = AccessLog::start(&config.access_log, metrics.clone())
            .map_err(|e| format!("cannot open the access log: {e}"))?;
        let pending = Arc::new(PendingPurges::open(config.cache.purge_journal.clone()));
        pending_purges::spawn_repair(&pending, store.clone(), metrics.clone());
        Ok(Gateway {
            forwarder: Forwarder::new(&config.backend),
            rule_counters: rule_counters(&metrics, &config),
            config,
            store,
            metrics,
            inflight: Arc::default(),
            scope_key: Arc::default(),
            keyspace_walks: Arc::new(tokio::sync::Semaphore::new(1)),
            pending,
            access_log: access_log.map(Arc::new),
            live: Arc::default(),
        })
    }

    /// The next generation: `config`'s rules, TTLs, tokens, limits and
    /// backend, with this one's store, metrics, fills in flight, pending
    /// purges and access log. The caller keeps restart-only settings as
    /// they are (`crate::reload`).
    pub fn reconfigured(&self, config: Arc<Config>) -> Gateway {
        Gateway {
            forwarder: Forwarder::new(&config.backend),
            rule_counters: rule_counters(&self.metrics, &config),
            config,
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            inflight: self.inflight.clone(),
            scope_key: self.scope_key.clone(),
            keyspace_walks: self.keyspace_walks.clone(),
            pending: self.pending.clone(),
            access_log: self.access_log.clone(),
            live: self.live.clone(),
        }
    }

    /// The holder of the live generation, once the server made one.
    pub fn live(&self) -> Option<Arc<crate::reload::Live>> {
        self.live.get().and_then(std::sync::Weak::upgrade)
    }

    /// Links this generation (and the ones made from it) to its holder.
    pub(crate) fn link_live(&self, live: &Arc<crate::reload::Live>) {
        let _ = self.live.set(Arc::downgrade(live));
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Leave to walk the whole keyspace (SCAN), if no other walk runs in
    /// this instance: an admin loop of pattern requests must not keep Redis
    /// scanning end to end.
    pub fn keyspace_walk(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.keyspace_walks.try_acquire().ok()
    }

    /// A request's whole life, and its access log line.
    pub async fn handle(self: &Arc<Self>, req: Request<Body>, from: ClientInfo) -> Response<Body> {
        let Some(log) = &self.access_log else {
            return self.route(req, from).await;
        };
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let (resp, t) = TRACE
            .scope(std::cell::RefCell::new(Trace::default()), async {
                let resp = self.route(req, from).await;
                (resp, TRACE.with(|t| t.take()))
            })
            .await;
        let rules = &self.config.rules;
        let rule = match (t.rule, t.invalidate) {
            (Some(i), _) => rules.cache.get(i).map(|r| r.name.as_str()),
            (None, Some(i)) => rules.invalidate.get(i).map(|r| r.name.as_str()),
            (None, None) => None,
        };
        log.log(&crate::access_log::Line {
            client: from.addr.ip(),
            method: method.as_str(),
            path: &path,
            status: resp.status().as_u16(),
            rule,
            key: t.key.as_deref(),
            cache: resp.headers().get("x-cache").and_then(|v| v.to_str().ok()),
            backend_status: t.backend_status,
            backend_time: t.backend_time,
            bytes: http_body::Body::size_hint(resp.body()).exact(),
            took: started.elapsed(),
        });
        resp
    }

    /// Phase 1 and 2: admit and route. The admin routes are answered here
    /// unless they have a listener of their own.
    async fn route(self: &Arc<Self>, mut req: Request<Body>, from: ClientInfo) -> Response<Body> {
        if let Some(rejected) = self.admit(&req) {
            return rejected;
        }
        // One normal form of the path for the rules, the key and the backend
        // alike (see proxy/normalize.rs), so no spelling of a path reaches
        // another resource's entry.
        if let Some(rejected) = normalize_uri(&mut req) {
            return rejected;
        }
        // Hop-by-hop headers (and any a client names in Connection) never
        // reach the backend, so they must not reach a key either: drop them
        // before anything reads the request.
        proxy::strip_hop_by_hop(req.headers_mut());
        proxy::remove_named(req.headers_mut(), &self.config.server.strip_request_headers);
        if !self.config.server.underscores_in_headers {
            proxy::drop_underscored(req.headers_mut());
        }
        let path = req.uri().path();
        if self.config.admin.listen.is_none() && crate::admin::owns(self, path) {
            return crate::admin::handle(self, req).await;
        }
        let rules = &self.config.rules;
        if is_unsafe(req.method()) || rules.match_invalidate(req.method(), path).next().is_some() {
            return self.invalidate(req, from).await;
        }
        if let Some(m) = rules.match_cache(req.method(), path) {
            let rule = m.rule;
            if inputs::has_body(&req) {
                return self.cached(req, from, rule, Err(inputs::REQUEST_BODY)).await;
            }
            if inputs::is_ambiguous(&req, rule, self.config.server.underscores_in_headers) {
                match rule.duplicate_inputs {
                    DuplicateInputs::Bypass => return self.cached(req, from, rule, Err(inputs::AMBIGUOUS)).await,
                    DuplicateInputs::Reject => return inputs::rejection(rule),
                    DuplicateInputs::First => {
                        drop(m);
                        inputs::keep_first(&mut req, rule, self.config.server.underscores_in_headers);
                        let Some(m) = rules.match_cache(req.method(), req.uri().path()) else {
                            return self.pass(req, from).await;
                        };
                        let rule = m.rule;
                        let key = self.cache_key(&req, rule, &m.captures);
                        drop(m);
                        return self.cached(req, from, rule, key).await;
                    }
                }
            }
            let key = self.cache_key(&req, rule, &m.captures);
            return self.cached(req, from, rule, key).await;
        }
        self.pass(req, from).await
    }

    /// Phase 1: limits on the request head.
    fn admit(&self, req: &Request<Body>) -> Option<Response<Body>> {
        if let Some(why) = req.extensions().get::<proxy::framing::Refusal>() {
            return Some(proxy::framing::refusal_response(*why));
        }
        let limits = &self.config.server;
        let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if uri_len > limits.max_uri_bytes {
            return Some(proxy::json_error(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                &format!("the request URI is longer than {} bytes", limits.max_uri_bytes),
            ));
        }
        let header_bytes: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
        if header_bytes > limits.max_header_bytes || req.headers().len() > limits.max_headers {
            return Some(proxy::json_error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_header_fields_too_large",
                &format!(
                    "request headers exceed {} bytes or {} fields",
                    limits.max_header_bytes, limits.max_headers
                ),
            ));
        }
        if proxy::host::is_bad(req.headers()) {
            return Some(proxy::json_error(
                StatusCode::BAD_REQUEST,
                "bad_host",
                "the request needs one Host of the form host[:port]",
            ));
        }
        None
    }

    /// Requests no rule covers go straight through.
    async fn pass(&self, req: Request<Body>, from: ClientInfo) -> Response<Body> {
        match self.forward(req, from).await {
            Ok(resp) => resp,
            Err(e) => e.to_response(),
        }
    }

    /// Phase 3: the logical key and scope field, or why there is none.
    fn cache_key(
        &self,
        req: &Request<Body>,
        rule: &CacheRule,
        captures: &regex::Captures<'_>,
    ) -> Result<CacheKey, &'static str> {
        let view = request_view(req);
        let Some(key) = self.config.rules.render_key(&rule.key, &view, captures) else {
            tracing::debug!(rule = %rule.name, "key renders empty or too long; bypassing the cache");
            return Err("key");
        };
        let field = suspect_credentials::scope_field(rule.scope, req.headers(), &self.config.cache, self.scope_key())?;
        let field = implicit::field(field, req.headers(), &self.config);
        let tags = rule
            .tags
            .iter()
            .filter_map(|t| self.config.rules.render_key(t, &view, captures))
            .collect();
        Ok(CacheKey { key, field, tags })
    }

    /// The scope HMAC, keyed once the store knows its secret (it never
    /// changes after that).
    fn scope_key(&self) -> Option<&ScopeKey> {
        if let Some(key) = self.scope_key.get() {
            return Some(key);
        }
        let key = ScopeKey::new(&self.store.scope_secret()?)?;
        Some(self.scope_key.get_or_init(|| key))
    }

    /// Phases 4 to 6 for a request a rule covers; the outcome is set on the
    /// response's headers and counted here, once.
    async fn cached(
        self: &Arc<Self>,
        req: Request<Body>,
        from: ClientInfo,
        rule: &CacheRule,
        key: Result<CacheKey, &'static str>,
    ) -> Response<Body> {
        trace(|t| {
            t.rule = Some(rule.index);
            t.key = key.as_ref().ok().map(|k| k.key.clone());
        });
        let (mut resp, outcome) = self.lookup_or_fill(req, from, rule, key).await;
        outcome.apply(resp.headers_mut());
        if let Some(counters) = self.rule_counters.get(rule.index) {
            self.metrics.record(counters, &outcome);
        }
        resp
    }

    async fn lookup_or_fill(
        self: &Arc<Self>,
        req: Request<Body>,
        from: ClientInfo,
        rule: &CacheRule,
        key: Result<CacheKey, &'static str>,
    ) -> (Response<Body>, Outcome) {
        let key = match key {
            Ok(k) => k,
            Err(detail) => return (self.pass(req, from).await, Outcome::Bypass { detail }),
        };
        let asks = RequestDirectives::parse(req.headers());
        let found = match self.read(&key, req.headers()).await {
            Ok(f) => f,
            Err(e) => {
                return (
                    self.pass(req, from).await,
                    Outcome::Bypass {
                        detail: store_detail(&e),
                    },
                )
            }
        };
        let now = now_ms();
        let is_head = req.method() == Method::HEAD;
        let stale = match found.entry {
            Some(entry) if entry.is_fresh(now) && !asks.revalidate => {
                let ttl = entry.ttl_left_secs(now);
                return (answer(req.headers(), entry, now, is_head), Outcome::Hit { ttl });
            }
            Some(entry) if !asks.revalidate && entry.within_stale_while_revalidate(now) => {
                self.refresh_in_background(&req, from, rule, &key, &found.field);
                return (
                    answer(req.headers(), entry, now, is_head),
                    Outcome::Stale { detail: "revalidating" },
                );
            }
            // Stale: kept for validation or stale-if-error.
            other => other,
        };
        match self.inflight.join(&key.key, &found.field) {
            Role::Leader(leader) => {
                self.lead(req, from, rule, key, found.field, found.guard, stale, leader)
                    .await
            }
            Role::Follower(follower) => match follower.wait(self.config.cache.coalesce_timeout).await {
                // The leader's answer, if it is the variant this request selects.
                Some(shared) if shared.field == field_for(&key.field, &shared.entry.headers, req.headers()) => {
                    let now = now_ms();
                    let ttl = shared.entry.ttl_left_secs(now);
                    let resp = answer(req.headers(), shared.entry.clone(), now, is_head);
                    (resp, Outcome::Collapsed { ttl })
                }
                _ => self.fill(req, from, rule, key, found.guard, stale, None).await,
            },
        }
    }

    /// The first miss in this instance: take the cross-instance fill lock
    /// and fill; or, if another instance holds it, wait (bounded) for its
    /// fill and serve that. Local followers get whatever this gets.
    #[allow(clippy::too_many_arguments)]
    async fn lead(
        &self,
        req: Request<Body>,
        from: ClientInfo,
        rule: &CacheRule,
        key: CacheKey,
        field: String,
        guard: FillGuard,
        stale: Option<Entry>,
        leader: Leader<'_>,
    ) -> (Response<Body>, Outcome) {
        let lock_ttl = self.config.cache.coalesce_timeout.min(self.config.backend.timeout);
        match self
            .timed("lock", self.store.try_lock(&key.key, &field, lock_ttl))
            .await
        {
            Ok(Some(token)) => {
                let _held = HeldFillLock {
                    store: self.store.clone(),
                    key: key.key.clone(),
                    field: field.clone(),
                    token,
                };
                self.fill(req, from, rule, key, guard, stale, Some(leader)).await
            }
            Ok(None) => {
                let deadline = Instant::now() + self.config.cache.coalesce_timeout;
                let mut found = Found {
                    entry: stale,
                    field,
                    guard,
                };
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.store
                        .wait_unlocked(&key.key, &found.field, left.min(LOCK_POLL))
                        .await;
                    // Take no more followers before the read whose result is
                    // shared: one arriving after a write must not get an
                    // entry read before that write's purge (see coalesce.rs).
                    leader.close();
                    let Ok(now) = self.read(&key, req.headers()).await else {
                        break;
                    };
                    found = now;
                    if let Some(entry) = found.entry.take_if(|e| e.is_fresh(now_ms())) {
                        let now = now_ms();
                        let ttl = entry.ttl_left_secs(now);
                        leader.finish(Some(Arc::new(Shared {
                            entry: entry.clone(),
                            field: found.field,
                        })));
                        return (
                            answer(req.headers(), entry, now, req.method() == Method::HEAD),
                            Outcome::Collapsed { ttl },
                        );
                    }
                    // The lock is gone and left nothing: fetch ourselves.
                    if !self.store.is_locked(&key.key, &found.field).await.unwrap_or(false) {
                        break;
                    }
                }
                self.fill(req, from, rule, key, found.guard, found.entry, Some(leader))
                    .await
            }
            // Fail open: without the lock, fill as if alone.
            Err(_) => self.fill(req, from, rule, key, guard, stale, Some(leader)).await,
        }
    }

    /// Phase 4's store reads: the scope's field, and the `Vary` variant it
    /// points to if it holds a marker. Returns the decoded entry (fresh or
    /// not), the field it lives in, and the guard a fill must present.
    async fn read(&self, key: &CacheKey, request: &http::HeaderMap) -> StoreResult<Found> {
        self.unsettled(key)?;
        // The in-process tier's decoded entry: no store call, no decoding.
        if let Some(entry) = self.store.peek(&key.key, &key.field) {
            self.pending.note_outages(self.store.outages());
            if entry.is_fresh(now_ms()) && !self.pending.must_revalidate(entry.stored_at_ms) {
                self.metrics.tier_hit();
                return Ok(Found {
                    entry: Some(Entry::clone(&entry)),
                    field: key.field.clone(),
                    guard: FillGuard::default(),
                });
            }
        }
        let lookup = self.timed("lookup", self.store.lookup(&key.key, &key.field)).await?;
        let Some(raw) = lookup.entry else {
            return Ok(Found {
                entry: None,
                field: key.field.clone(),
                guard: lookup.guard,
            });
        };
        let (entry, field) = match vary::parse_marker(&raw) {
            None => (Entry::decode(&raw), key.field.clone()),
            Some(names) => {
                let field = vary::variant_field(&key.field, &names, request);
                let variant = self.timed("lookup", self.store.lookup(&key.key, &field)).await?;
                (variant.entry.as_ref().and_then(Entry::decode), field)
            }
        };
        let entry = entry.map(|e| self.unless_repairing(e));
        if entry.as_ref().is_some_and(|e| e.is_fresh(now_ms())) {
            return Ok(Found {
                entry,
                field,
                guard: FillGuard::default(),
            });
        }
        // The record exists but gives no fresh entry: a fill will follow and
        // needs the guard covering the record as it is now.
        let guard = self.timed("fill_guard", self.store.fill_guard(&key.key)).await?;
        Ok(Found { entry, field, guard })
    }

    /// An entry as it may be used now: while an outage repair is under way
    /// somewhere (`pending_purges.rs`), one stored before it is stale, so it
    /// is revalidated, not served (a purge of it may not be applied yet).
    fn unless_repairing(&self, mut entry: Entry) -> Entry {
        self.pending.note_outages(self.store.outages());
        if self.pending.must_revalidate(entry.stored_at_ms) {
            entry.lifetime.ttl = Duration::ZERO;
            entry.lifetime.stale_while_revalidate = Duration::ZERO;
        }
        entry
    }

    /// Within stale-while-revalidate: one background request (coalesced with
    /// any fill already in flight) refreshes the entry.
    fn refresh_in_background(
        self: &Arc<Self>,
        req: &Request<Body>,
        from: ClientInfo,
        rule: &CacheRule,
        key: &CacheKey,
        field: &str,
    ) {
        let mut refresh = Request::new(proxy::empty());
        *refresh.method_mut() = Method::GET;
        *refresh.uri_mut() = req.uri().clone();
        *refresh.headers_mut() = req.headers().clone();
        for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::CONTENT_LENGTH] {
            refresh.headers_mut().remove(name);
        }
        let gateway = self.clone();
        let rule_index = rule.index;
        let (key, field) = (key.clone(), field.to_string());
        tokio::spawn(async move {
            let Some(rule) = gateway.config.rules.cache.get(rule_index) else {
                return;
            };
            // The same coalescing slot a miss for this variant would take.
            let Role::Leader(leader) = gateway.inflight.join(&key.key, &field) else {
                return; // someone is already fetching it
            };
            // Re-read: the entry may have been refreshed or purged meanwhile.
            let Ok(found) = gateway.read(&key, refresh.headers()).await else {
                return;
            };
            if found.entry.as_ref().is_some_and(|e| e.is_fresh(now_ms())) {
                return;
            }
            let (resp, _) = gateway
                .fill(refresh, from, rule, key, found.guard, found.entry, Some(leader))
                .await;
            // Drain the body: a streamed fill stores only once it is read.
            let _ = resp.into_body().collect().await;
        });
    }

    /// Runs a store call, recording its latency and any error.
    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.store_call(op, started.elapsed(), &result);
        result
    }

    /// Forwards to the backend, recording the time to the response head.
    async fn forward(&self, req: Request<Body>, from: ClientInfo) -> Result<Response<Body>, ForwardError> {
        let started = Instant::now();
        let result = self.forwarder.forward(req, from).await;
        let took = started.elapsed();
        self.metrics.backend_latency(took);
        trace(|t| {
            t.backend_status = result.as_ref().ok().map(|r| r.status().as_u16());
            t.backend_time = Some(took);
        });
        result
    }

    /// Phases 5 and 6: forward a miss (conditionally, when a stale entry has
    /// validators), store what may be stored, answer. A `leader` shares a
    /// stored entry with the requests waiting on it; a `stale` entry is
    /// served instead of a backend failure within its stale-if-error window.
    #[allow(clippy::too_many_arguments)]
    async fn fill(
        &self,
        mut req: Request<Body>,
        from: ClientInfo,
        rule: &CacheRule,
        key: CacheKey,
        guard: FillGuard,
        stale: Option<Entry>,
        leader: Option<Leader<'_>>,
    ) -> (Response<Body>, Outcome) {
        let is_head = req.method() == Method::HEAD;
        // The client's own validators are answered here, against what is
        // stored; the backend gets ours (or none) so its answer can fill.
        let client = req.headers().clone();
        req.headers_mut().remove(header::IF_NONE_MATCH);
        req.headers_mut().remove(header::IF_MODIFIED_SINCE);
        if is_head {
            // Fetch the GET answer so it can fill the entry HEAD shares.
            *req.method_mut() = Method::GET;
        }
        let validating = stale
            .as_ref()
            .is_some_and(|e| add_validators(req.headers_mut(), &e.headers));
        let result = self.forward(req, from).await;

        let failed = match &result {
            Err(_) => true,
            Ok(resp) => resp.status().is_server_error(),
        };
        if failed && stale.as_ref().is_some_and(|e| e.within_stale_if_error(now_ms())) {
            if let Some(entry) = stale {
                let resp = answer(&client, entry, now_ms(), is_head);
                return (
                    resp,
                    Outcome::Stale {
                        detail: "backend-error",
                    },
                );
            }
        }
        let mut resp = match result {
            Ok(r) => r,
            // A stale entry that must not be used unvalidated: the cache
            // could not validate it, so it answers 504 (RFC 9111 §5.2.2.2).
            Err(ForwardError::Unreachable(_) | ForwardError::NotSent(_))
                if stale.as_ref().is_some_and(|e| e.lifetime.must_revalidate) =>
            {
                return (ForwardError::Timeout.to_response(), miss(false, Some("backend")));
            }
            Err(e) => return (e.to_response(), miss(false, Some("backend"))),
        };
        if rule.ttl == TtlMode::Origin {
            freshness::correct_age(resp.headers_mut(), std::time::SystemTime::now());
        }
        if validating && resp.status() == StatusCode::NOT_MODIFIED {
            if let Some(entry) = stale {
                return self
                    .refresh_validated(resp, entry, rule, key, guard, &client, is_head, leader)
                    .await;
            }
        }
        let lifetime = match freshness::lifetime(rule, resp.status().as_u16(), resp.headers())
            .and_then(|l| fill::unstorable_reason(&resp).map_or(Ok(l), Err))
        {
            Ok(l) => credential_end::capped(l, &key.field, self.config.cache.credential_max_ttl),
            Err(reason) => return (strip_body(resp, is_head), miss(false, Some(reason))),
        };
        if RequestDirectives::parse(&client).no_store {
            return (strip_body(resp, is_head), miss(false, Some("request-no-store")));
        }
        if !shareable_with_authorization(rule, &client, resp.headers()) {
            return (strip_body(resp, is_head), miss(false, Some("authorization")));
        }
        let limit = rule.max_body_bytes;
        match fill::content_length(resp.headers()) {
            Some(len) if len as usize <= limit => {
                let (parts, body) = resp.into_parts();
                let collected =
                    tokio::time::timeout(self.config.backend.timeout, fill::collect(body, len as usize)).await;
                let chunks = match collected {
                    Ok(Ok(chunks)) => chunks,
                    Ok(Err((chunks, err))) => {
                        tracing::debug!(key = %key.key, error = %err, "backend body failed; nothing stored");
                        let resp = Response::from_parts(parts, fill::aborted_body(chunks, err));
                        return (strip_body(resp, is_head), miss(false, Some("backend")));
                    }
                    Err(_) => {
                        let resp = Response::from_parts(
                            parts,
                            fill::aborted_body(Vec::new(), "backend body timed out".into()),
                        );
                        return (strip_body(resp, is_head), miss(false, Some("backend")));
                    }
                };
                let entry = Entry {
                    status: parts.status,
                    stored_at_ms: now_ms(),
                    lifetime,
                    headers: parts.headers,
                    body: fill::concat(&chunks),
                };
                let stored = self.store_entry(&key, &entry, &client, guard, leader).await;
                (answer_fetched(&client, entry, is_head), stored)
            }
            Some(_) => (strip_body(resp, is_head), miss(false, Some("too-large"))),
            None => {
                let field = field_for(&key.field, resp.headers(), &client);
                self.fill_streamed(resp, lifetime, limit, key, field, guard, is_head)
            }
        }
    }

    /// Stores a complete entry under the guard; a leader shares it with its
    /// followers only if it was stored (one the guard refused may predate a
    /// write that a waiting request must see).
    async fn store_entry(
        &self,
        key: &CacheKey,
        entry: &Entry,
        request: &http::HeaderMap,
        guard: FillGuard,
        leader: Option<Leader<'_>>,
    ) -> Outcome {
        let encoded = Entry::encode(
            entry.status,
            &entry.headers,
            &entry.body,
            entry.stored_at_ms,
            &entry.lifetime,
        );
        let size = encoded.len();
        if let Some(leader) = &leader {
            // Take no more followers before storing (see coalesce.rs).
            leader.close();
        }
        let retain = retain_for(&entry.lifetime, &entry.headers);
        let names = vary::names(&entry.headers);
        let field = field_for(&key.field, &entry.headers, request);
        let tags = entry_tags(&key.tags, &entry.headers);
        let mut stored = self
            .timed("fill", self.store.fill(&key.key, &field, encoded, retain, guard, &tags))
            .await;
        if !names.is_empty() && matches!(stored, Ok(true)) {
            // Point the scope's field at the variants.
            let marker = vary::marker(&names);
            stored = self
                .timed(
                    "fill",
                    self.store.fill(&key.key, &key.field, marker, retain, guard, &[]),
                )
                .await;
        }
        match stored {
            Ok(true) => {
                self.metrics.stored(size);
                if let Some(leader) = leader {
                    leader.finish(Some(Arc::new(Shared {
                        entry: entry.clone(),
                        field,
                    })));
                }
                miss(true, None)
            }
            Ok(false) => miss(false, Some("superseded")),
            Err(e) => miss(false, Some(store_detail(&e))),
        }
    }

    /// A 304 to our conditional request: the stored body is still good;
    /// refresh its headers and lifetime and store it again (RFC 9111 §4.3.4).
    #[allow(clippy::too_many_arguments)]
    async fn refresh_validated(
        &self,
        not_modified: Response<Body>,
        stale: Entry,
        rule: &CacheRule,
        key: CacheKey,
        guard: FillGuard,
        client: &http::HeaderMap,
        is_head: bool,
        leader: Option<Leader<'_>>,
    ) -> (Response<Body>, Outcome) {
        let mut headers = stale.headers;
        for (name, value) in not_modified.headers() {
            if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
                headers.insert(name.clone(), value.clone());
            }
        }
        let entry = Entry {
            status: stale.status,
            stored_at_ms: now_ms(),
            lifetime: stale.lifetime,
            headers,
            body: stale.body,
        };
        let entry = match freshness::lifetime(rule, entry.status.as_u16(), &entry.headers) {
            Ok(lifetime) => Entry {
                lifetime: credential_end::capped(lifetime, &key.field, self.config.cache.credential_max_ttl),
                ..entry
            },
            // No longer storable (e.g. now no-store): answer, keep nothing.
            Err(reason) => return (answer(client, entry, now_ms(), is_head), miss(false, Some(reason))),
        };
        let stored = self.store_entry(&key, &entry, client, guard, leader).await;
        let outcome = match stored {
            Outcome::Miss { stored, .. } => Outcome::Revalidated { stored },
            other => other,
        };
        (answer(client, entry, now_ms(), is_head), outcome)
    }

    /// A body of unknown length streams to the client; a copy is stored in
    /// the background if it ends complete and within the limit.
    #[allow(clippy::too_many_arguments)]
    fn fill_streamed(
        &self,
        resp: Response<Body>,
        lifetime: Lifetime,
        limit: usize,
        key: CacheKey,
        field: String,
        guard: FillGuard,
        is_head: bool,
    ) -> (Response<Body>, Outcome) {
        let (parts, body) = resp.into_parts();
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let (status, headers) = (parts.status, parts.headers.clone());
        let tee = fill::TeeBody::new(body, limit, move |chunks| {
            let body = fill::concat(&chunks);
            let encoded = Entry::encode(status, &headers, &body, now_ms(), &lifetime);
            let size = encoded.len();
            let names = vary::names(&headers);
            let tags = entry_tags(&key.tags, &headers);
            let retain = retain_for(&lifetime, &headers);
            tokio::spawn(async move {
                let mut stored = store.fill(&key.key, &field, encoded, retain, guard, &tags).await;
                if !names.is_empty() && matches!(stored, Ok(true)) {
                    let marker = vary::marker(&names);
                    stored = store.fill(&key.key, &key.field, marker, retain, guard, &[]).await;
                }
                match stored {
                    Ok(true) => metrics.stored(size),
                    Ok(false) => {}
                    Err(e) => tracing::debug!(key = %key.key, error = %e, "background fill failed"),
                }
            });
        });
        // HEAD was fetched as GET: the body must still be read to the end
        // to be stored, so drain it in the background.
        let body = if is_head {
            tokio::spawn(async move {
                let _ = tee.collect().await;
            });
            proxy::empty()
        } else {
            tee.boxed()
        };
        (Response::from_parts(parts, body), miss(false, Some("streamed")))
    }

    /// Phase 7: forward a write, purge what it invalidates, then answer.
    ///
    /// Besides the `[[invalidate]]` rules, an unsafe method purges its own
    /// target URI under any rule that would cache it when the answer is not
    /// an error, or its outcome is unknown (5xx, no answer) and no matching
    /// rule says `when = "success"`; and the
    /// same-host `Location` / `Content-Location` URIs of a non-error answer
    /// (RFC 9111 §4.4). If the client goes away while the backend has the
    /// write, what an unknown outcome purges is still purged (`WriteGuard`).
    async fn invalidate(self: &Arc<Self>, req: Request<Body>, from: ClientInfo) -> Response<Body> {
        let rules = &self.config.rules;
        // Render before the request (and its headers) goes to the forwarder.
        let view = request_view(&req);
        let mut due = Vec::new();
        for m in rules.match_invalidate(req.method(), req.uri().path()) {
            if due.is_empty() {
                trace(|t| t.invalidate = rules.invalidate.iter().position(|r| std::ptr::eq(r, m.rule)));
            }
            let render = |t| rules.render_key(t, &view, &m.captures);
            let (when, soft) = (m.rule.when, m.rule.soft);
            due.push((
                when,
                Purge {
                    soft,
                    keys: m.rule.keys.iter().filter_map(render).collect(),
                    patterns: m.rule.patterns.iter().filter_map(render).collect(),
                    tags: m.rule.tags.iter().filter_map(render).collect(),
                    scopes: m
                        .rule
                        .purge_credential
                        .then(|| self.credential_scope_of(req.headers()))
                        .flatten()
                        .into_iter()
                        .collect(),
                },
            ));
        }
        let own_keys = self.keys_for_uri(req.uri().path(), req.uri().query(), &view);
        let host = view.host.to_string();
        let headers = req.headers().clone();

        let guard = write_guard::WriteGuard::arm(self, &due, &own_keys);
        let result = self.forward(req, from).await;
        guard.disarm();
        let status = result.as_ref().ok().map(|r| r.status());
        let success = status.is_some_and(|s| s.is_success());
        let non_error = status.is_some_and(|s| s.as_u16() < 400);
        let mut own = Purge::default();
        if non_error || (write_guard::outcome_unknown(&result) && write_guard::purges_on_unknown(&due)) {
            own.keys.extend(own_keys);
        }
        if non_error {
            if let Ok(resp) = &result {
                for name in [header::LOCATION, header::CONTENT_LOCATION] {
                    if let Some(uri) = resp.headers().get(name).and_then(|v| same_host_uri(v, &host)) {
                        let view = RequestView {
                            method: &Method::GET,
                            host: &host,
                            path: uri.path(),
                            query: uri.query(),
                            headers: &headers,
                        };
                        own.keys.extend(self.keys_for_uri(uri.path(), uri.query(), &view));
                    }
                }
            }
        }
        let due = due.into_iter().filter(|(when, _)| *when == When::Always || success);
        let (hard, soft) = write_guard::combine(own, due.map(|(_, purge)| purge));
        if !hard.is_empty() || !soft.is_empty() {
            // In a task of its own: a client that goes away now must not
            // cancel the purge of a write the backend has taken.
            let gateway = self.clone();
            let settle = tokio::spawn(async move {
                gateway.purge(hard).await;
                gateway.purge(soft).await;
                // Read-your-writes across instances: answer once no tier in
                // the fleet can serve what was purged (a failed purge too:
                // peers' leases must run out before the answer).
                gateway.store.fence().await;
            });
            let _ = settle.await;
        }
        match result {
            Ok(resp) => resp,
            Err(e) => e.to_response(),
        }
    }

    /// The keys GET and HEAD of this URI would be cached under, where a
    /// rule caches them (the same key, unless the template has `{method}`).
    fn keys_for_uri(&self, path: &str, query: Option<&str>, view: &RequestView<'_>) -> Vec<String> {
        let mut keys = Vec::new();
        for method in [Method::GET, Method::HEAD] {
            let Some(m) = self.config.rules.match_cache(&method, path) else {
                continue;
            };
            let view = RequestView {
                method: &method,
                host: view.host,
                path,
                query,
                headers: view.headers,
            };
            keys.extend(self.config.rules.render_key(&m.rule.key, &view, &m.captures));
        }
        keys.dedup();
        keys
    }

    /// Runs a write's purges; whatever fails (the store down or stalled, or
    /// on a cluster one primary) is kept, journalled, announced to the other
    /// instances, and replayed as soon as that part of the store answers.
    async fn purge(&self, purge: Purge) {
        if purge.is_empty() {
            return;
        }
        match pending_purges::apply(
            self.store.as_ref(),
            &self.metrics,
            purge.clone(),
            pending_purges::Log::Warn,
        )
        .await
        {
            None => self.pending.went_through(&purge),
            Some(failed) => {
                self.pending.keep(failed, &self.metrics).await;
                // Where the store still takes the announcement (a cluster
                // with one primary down), the other instances read it within
                // a tick: wait that long before the write is answered, so
                // none of them serves what it covers after the answer.
                if self
                    .pending
                    .announce(self.store.as_ref(), self.metrics.instance())
                    .await
                {
                    tokio::time::sleep(pending_purges::PEERS_READ_WITHIN).await;
                }
            }
        }
    }

    /// Whether a purge not yet applied (this instance's or a peer's) covers
    /// the entry: then it is neither served nor filled (`Unavailable`:
    /// answered uncached) until the purge goes through.
    fn unsettled(&self, key: &CacheKey) -> StoreResult<()> {
        if self.pending.covers(&key.key, &key.tags, &key.field) {
            Err(StoreError::Unavailable)
        } else {
            Ok(())
        }
    }

    /// Whether this instance is revalidating the entries stored before a
    /// store outage ended (for 1.5 s after it, or while a peer repairs).
    pub fn revalidating_after_outage(&self) -> bool {
        self.pending.is_revalidating()
    }

    /// Applies what is pending before a graceful exit, until `deadline`;
    /// whether nothing is left (what is left stays in the journal).
    pub async fn flush_pending_purges(&self, deadline: Instant) -> bool {
        self.pending.flush(self.store.as_ref(), &self.metrics, deadline).await
    }
}

fn request_view(req: &Request<Body>) -> RequestView<'_> {
    RequestView {
        method: req.method(),
        host: req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or(""),
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    }
}

/// Rewrites the request's path to its normal form; a path that has none
/// gets the 400 returned. Already normal paths (nearly all) are left untouched.
fn normalize_uri(req: &mut Request<Body>) -> Option<Response<Body>> {
    let bad = |message: &str| Some(proxy::json_error(StatusCode::BAD_REQUEST, "bad_path", message));
    let pq = req.uri().path_and_query().filter(|pq| pq.as_str() != "*")?; // CONNECT, `OPTIONS *`
    let normal = match proxy::normalize::normalize_path_and_query(pq.as_str()) {
        Ok(std::borrow::Cow::Borrowed(_)) => return None,
        Ok(std::borrow::Cow::Owned(normal)) => normal,
        Err(e) => return bad(&e.to_string()),
    };
    let mut parts = req.uri().clone().into_parts();
    let Ok(pq) = http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(normal)) else {
        return bad("unusable request path");
    };
    parts.path_and_query = Some(pq);
    let Ok(uri) = http::Uri::from_parts(parts) else {
        return bad("unusable request path");
    };
    *req.uri_mut() = uri;
    None
}

/// Methods that may change the resource (RFC 9110 §9.2.1).
fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// The path and query of a `Location`-like header when it points at the
/// same host (relative, or absolute with the request's host); never another.
fn same_host_uri(value: &HeaderValue, host: &str) -> Option<http::Uri> {
    let uri: http::Uri = value.to_str().ok()?.parse().ok()?;
    match uri.authority() {
        None if uri.path().starts_with('/') => Some(uri),
        Some(a) if a.as_str().eq_ignore_ascii_case(host) => {
            let pq = uri.path_and_query()?.as_str().parse().ok()?;
            Some(pq)
        }
        _ => None,
    }
}

fn store_detail(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unavailable => "store-unavailable",
        StoreError::Timeout => "store-timeout",
        StoreError::Backend(_) => "store-error",
    }
}

/// Answers from an entry: the stored response with `Age`, or 304 when the
/// client's conditional request is satisfied by its validators.
fn answer(request: &http::HeaderMap, entry: Entry, now: u64, is_head: bool) -> Response<Body> {
    let age = freshness::age(&entry.headers) + entry.age_secs(now);
    answer_with_age(request, entry, Some(age), is_head)
}

/// Answers with an entry just fetched: the backend's own headers (no `Age`
/// added), or 304 for a satisfied conditional request.
fn answer_fetched(request: &http::HeaderMap, entry: Entry, is_head: bool) -> Response<Body> {
    answer_with_age(request, entry, None, is_head)
}

fn answer_with_age(request: &http::HeaderMap, entry: Entry, age: Option<u64>, is_head: bool) -> Response<Body> {
    if entry.status == StatusCode::OK && freshness::not_modified(request, &entry.headers) {
        let mut resp = Response::new(proxy::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        for name in freshness::NOT_MODIFIED_HEADERS {
            for value in entry.headers.get_all(&name) {
                resp.headers_mut().append(name.clone(), value.clone());
            }
        }
        if let Some(age) = age {
            resp.headers_mut().insert(header::AGE, HeaderValue::from(age));
        }
        return resp;
    }
    let mut resp = Response::new(if is_head {
        proxy::empty()
    } else {
        proxy::full(entry.body)
    });
    *resp.status_mut() = entry.status;
    *resp.headers_mut() = entry.headers;
    if let Some(age) = age {
        resp.headers_mut().insert(header::AGE, HeaderValue::from(age));
    }
    resp
}

/// Puts our validators for a stale entry on a request to the backend;
/// returns whether there were any.
fn add_validators(request: &mut http::HeaderMap, stored: &http::HeaderMap) -> bool {
    let mut added = false;
    if let Some(etag) = stored.get(header::ETAG) {
        request.insert(header::IF_NONE_MATCH, etag.clone());
        added = true;
    }
    if let Some(lm) = stored.get(header::LAST_MODIFIED) {
        request.insert(header::IF_MODIFIED_SINCE, lm.clone());
        added = true;
    }
    added
}

/// How long the store keeps an entry: fresh plus its stale windows, and,
/// when it has a validator, long enough after that to be revalidated with
/// a conditional request rather than fetched again.
fn retain_for(lifetime: &Lifetime, headers: &http::HeaderMap) -> Duration {
    let retain = lifetime.retain();
    if freshness::has_validator(headers) {
        retain.max(lifetime.ttl + KEEP_FOR_REVALIDATION)
    } else {
        retain
    }
}

/// RFC 9111 §3.5: an answer to a request with `Authorization` is shared
/// only if the origin allows it (`public`, `s-maxage`, `must-revalidate`).
/// Credential-scoped rules never share it anyway; fixed-TTL public rules
/// are the operator's explicit decision.
fn shareable_with_authorization(rule: &CacheRule, request: &http::HeaderMap, response: &http::HeaderMap) -> bool {
    if rule.scope != Scope::Public || rule.ttl != TtlMode::Origin || !request.contains_key(header::AUTHORIZATION) {
        return true;
    }
    let d = freshness::Directives::parse(response);
    d.public || d.s_maxage.is_some() || d.must_revalidate
}

/// An entry's tags: the rule's, and those the backend names in
/// `Surrogate-Key` (space-separated) and `Cache-Tag` (comma-separated).
fn entry_tags(rule_tags: &[String], response: &http::HeaderMap) -> Vec<String> {
    let mut tags = rule_tags.to_vec();
    let listed = |name: &str, sep: char| {
        response
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(move |v| v.split(sep))
            .map(str::trim)
            // `__cg:` names cachegate's own indexes (store/scope_index.rs).
            .filter(|t| !t.is_empty() && t.len() <= 1024 && !t.starts_with(crate::rules::INTERNAL_PREFIX))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    tags.extend(listed("surrogate-key", ' '));
    tags.extend(listed("cache-tag", ','));
    tags.sort();
    tags.dedup();
    tags
}

/// The field a response is stored in for a request: the scope's own, or
/// the variant the request selects when the response has `Vary`.
fn field_for(scope: &str, response: &http::HeaderMap, request: &http::HeaderMap) -> String {
    let names = vary::names(response);
    if names.is_empty() {
        scope.to_string()
    } else {
        vary::variant_field(scope, &names, request)
    }
}

fn miss(stored: bool, detail: Option<&'static str>) -> Outcome {
    Outcome::Miss { stored, detail }
}

/// A HEAD answer carries the GET answer's head without its body.
fn strip_body(resp: Response<Body>, is_head: bool) -> Response<Body> {
    if !is_head {
        return resp;
    }
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, proxy::empty())
}
