//! The Redis backend, on fred: a pool of connections that reconnect with
//! backoff, `redis://` and `rediss://`, AUTH with a password or ACL user;
//! the primitives of [`super::backend`] as Redis commands and Lua scripts
//! (`redis_lua.rs`). The cache protocol on top is `protocol.rs`.
//!
//! Layout (with `P` the configured key prefix; ARCHITECTURE.md has it all):
//! - `P<logical key>`: a hash; one field per scope holding an encoded
//!   [`Entry`](super::entry::Entry), plus `__cg` (marks it as ours),
//!   `__gen` (the purge generation) and `__inc` (its incarnation). Its TTL
//!   is the longest entry TTL.
//! - `P__cg:epoch`: the purge epoch.
//! - `P__cg:secret`: the random secret keying credential-scope hashes,
//!   created once by whichever instance connects first.
//!
//! Every call is bounded by the store timeout and refused at once while the
//! pool is disconnected, so an outage costs the request path nothing. The
//! keyspace and index walks are in `redis_walk.rs`, the cluster's fill and
//! per-primary walks in `redis_cluster.rs`, per-primary health in
//! `redis_shards.rs`, the fill lock in `redis_lock.rs`, the repairing marks
//! in `redis_repair.rs`.

use super::backend::{Backend, Change, Fill, Index, Keys, Member, Page};
use super::entry::{now_ms, TTL_OFFSET};
use super::health::{HealthTracker, StoreHealth, StoreState, ERROR_KINDS};
use super::redis_lua::Scripts;
use super::redis_walk::RedisCursor;
use super::{FillGuard, Record, StoreError, StoreInfo, StoreResult, GEN_FIELD, MARK_FIELD};
use crate::config::RedisConfig;
use crate::rules::INTERNAL_PREFIX;
use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::Value;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long an instance's published counters outlive its last flush.
const STATS_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

/// Keys per SCAN page and per UNLINK batch: small enough that no single
/// command holds Redis for long.
pub(super) const SCAN_BATCH: u32 = 1000;

/// How the Redis backend is set up, besides the server's address.
pub struct RedisSettings<'a> {
    /// Prepended to every key.
    pub prefix: &'a str,
    /// The bound of one request-path call.
    pub timeout: Duration,
    /// How long a purge's tombstone (and a guard's record) lives.
    pub tombstone_ttl: Duration,
    /// How long `connect` waits for a first connection.
    pub connect_wait: Duration,
    /// Whether the scope secret is shared through Redis (none configured).
    pub share_secret: bool,
}

pub struct RedisBackend {
    pool: Pool,
    pub(super) prefix: String,
    pub(super) epoch_key: String,
    timeout: Duration,
    pub(super) tombstone_ttl: Duration,
    pub(super) scripts: Scripts,
    /// Fill locks: tokens of this instance's running fills (`redis_lock.rs`).
    pub(super) locks: super::redis_lock::FillLocks,
    /// Receives lock-release notices (pub/sub), for waiters on other
    /// instances' fills.
    notices: SubscriberClient,
    pub(super) channel: String,
    secret: Arc<OnceLock<Bytes>>,
    /// Whether the last call found Redis up; flips are logged once each.
    up: AtomicBool,
    /// Consecutive calls that timed out. A Redis that is connected but does
    /// not answer (paused, overloaded) counts as down after a few, so that
    /// requests stop paying the store timeout one after another.
    timeouts: AtomicU64,
    /// How many times Redis came back after being unreachable.
    outages: AtomicU64,
    /// Why Redis is unusable, by cause (`health.rs`).
    health: Arc<HealthTracker>,
    /// On a Redis Cluster: fills reserve then commit (`redis_cluster.rs`),
    /// and keyspace walks visit every primary.
    pub(super) cluster: bool,
    /// When a keyspace walk last re-read the cluster's slot map (ms).
    pub(super) last_sync_ms: AtomicU64,
    /// On a cluster: a client per primary for single-key commands, so one
    /// primary's outage stays its own (`redis_shards.rs`).
    pub(super) shards: Option<super::redis_shards::Shards>,
}

/// Consecutive timeouts after which a connected Redis counts as down.
const STALL_AFTER: u64 = 3;
/// While Redis counts as stalled, one call in this many ms probes it.
const PROBE_EVERY_MS: u64 = 250;

impl RedisBackend {
    /// Creates the pool and starts connecting in the background. Never fails
    /// because Redis is down: it waits up to `connect_wait` for a first
    /// connection, then serves uncached until Redis is reachable.
    pub async fn connect(cfg: &RedisConfig, settings: RedisSettings<'_>) -> Result<Arc<RedisBackend>, crate::BoxError> {
        let prefix = settings.prefix;
        let config = super::redis_connect::fred_config(cfg)?;
        let shards = cfg
            .topology
            .is_cluster()
            .then(|| super::redis_shards::Shards::new(config.clone()));
        let builder = super::redis_connect::builder(config, 2);
        let pool = builder.build_pool(cfg.pool_size)?;
        let health = Arc::new(HealthTracker::new());
        // Listening before connecting, so the first attempt's cause is seen.
        for client in pool.clients() {
            follow_errors(client.error_rx(), health.clone());
        }
        pool.connect_pool();
        let notices = builder.build_subscriber_client()?;
        follow_errors(notices.error_rx(), health.clone());
        notices.connect();
        // Re-subscribes after every reconnect.
        notices.manage_subscriptions();
        let channel = format!("{prefix}{INTERNAL_PREFIX}unlocked");
        {
            let (notices, channel) = (notices.clone(), channel.clone());
            tokio::spawn(async move {
                loop {
                    if notices.wait_for_connect().await.is_ok() && notices.subscribe(channel.as_str()).await.is_ok() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        let _ = tokio::time::timeout(settings.connect_wait, pool.wait_for_connect()).await;

        let store = Arc::new(RedisBackend {
            pool,
            prefix: prefix.to_string(),
            epoch_key: format!("{prefix}{INTERNAL_PREFIX}epoch"),
            timeout: settings.timeout,
            tombstone_ttl: settings.tombstone_ttl,
            scripts: Scripts::new(),
            locks: super::redis_lock::FillLocks::new(),
            notices,
            channel,
            secret: Arc::new(OnceLock::new()),
            up: AtomicBool::new(true),
            timeouts: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            health,
            cluster: cfg.topology.is_cluster(),
            last_sync_ms: AtomicU64::new(0),
            shards,
        });
        store.is_up_logged();
        tokio::spawn(probe_while_stalled(Arc::downgrade(&store)));
        if store.shards.is_some() {
            tokio::spawn(super::redis_shards::follow_cluster(Arc::downgrade(&store)));
        }
        if settings.share_secret {
            tokio::spawn(fetch_shared_secret(store.clone()));
        }
        Ok(store)
    }

    /// The store timeout of one request-path call.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A pool client, connected or not (for reading its slot map).
    pub(super) fn pool_client(&self) -> &Client {
        self.pool.next()
    }

    pub(super) fn key(&self, logical: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + logical.len());
        k.push_str(&self.prefix);
        k.push_str(logical);
        k
    }

    /// A connected client, or `Unavailable`; logs outage start and end once.
    /// While Redis counts as stalled no request's call goes through: the
    /// background PING (`probe_while_stalled`) finds out when it answers
    /// again, so no request waits the store timeout on a stalled Redis.
    pub(super) fn client(&self) -> StoreResult<&Client> {
        let client = self.pool.next_connected();
        if self.is_up_logged() {
            return Ok(client);
        }
        Err(StoreError::Unavailable)
    }

    /// The bound of one page of a bulk operation (purges by pattern or tag,
    /// clear, key listing): longer than a read's, since a page does more
    /// work; short enough that a write whose pattern purge meets a dying
    /// primary is not held long (the purge is kept and replayed).
    pub(super) fn bulk_timeout(&self) -> Duration {
        self.timeout.max(Duration::from_millis(500))
    }

    fn stalled(&self) -> bool {
        self.timeouts.load(Ordering::Relaxed) >= STALL_AFTER
    }

    fn is_up_logged(&self) -> bool {
        let now = self.pool.next_connected().is_connected() && !self.stalled();
        if self.up.swap(now, Ordering::Relaxed) != now {
            if now {
                self.health.connected();
                self.health.recovered();
                self.outages.fetch_add(1, Ordering::SeqCst);
                tracing::info!(target: "cachegate::store", "redis is reachable again; caching resumes");
            } else {
                let cause = self.health.health(false).state;
                tracing::warn!(target: "cachegate::store", state = cause.as_str(), "redis is unreachable; forwarding uncached until it is back");
            }
        }
        now
    }

    pub(super) async fn bounded<T>(&self, fut: impl Future<Output = Result<T, Error>>) -> StoreResult<T> {
        self.bounded_by(self.timeout, fut).await
    }

    /// A store call bounded by `timeout`; timeouts in a row mark Redis as
    /// stalled (see `timeouts`), any answer clears that.
    pub(super) async fn bounded_by<T>(
        &self,
        timeout: Duration,
        fut: impl Future<Output = Result<T, Error>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(timeout, fut).await {
            Ok(result) => {
                if self.timeouts.swap(0, Ordering::Relaxed) >= STALL_AFTER {
                    self.is_up_logged();
                }
                match result {
                    Ok(value) => {
                        self.health.call_ok();
                        Ok(value)
                    }
                    Err(e) => {
                        let message = e.to_string();
                        self.health.call_failed(&message);
                        Err(StoreError::Backend(message))
                    }
                }
            }
            Err(_) => {
                self.health.call_timed_out();
                if self.timeouts.fetch_add(1, Ordering::Relaxed) + 1 == STALL_AFTER {
                    self.is_up_logged();
                }
                Err(StoreError::Timeout)
            }
        }
    }

    /// `SET <prefix><logical> 1 PX <ttl>`: the tier's heartbeats and fences
    /// (`coherence.rs`), whose only use is the invalidation push they cause.
    pub(super) async fn mark(&self, logical: &str, ttl: Duration) -> StoreResult<()> {
        let client = self.client()?;
        let px = Expiration::PX(ttl.as_millis().max(1) as i64);
        let set = Box::pin(client.set::<Value, _, _>(self.key(logical), 1, Some(px), None, false));
        self.bounded(set).await.map(|_| ())
    }

    /// Sets and deletes `<prefix><logical>` in one script: one invalidation
    /// push of the key to every tracking client, and nothing left behind
    /// (an expiring key would be pushed a second time when it expires).
    pub(super) async fn touch(&self, logical: &str) -> StoreResult<()> {
        let client = self.client()?;
        let run = Box::pin(self.run_script(client, &self.scripts.touch, vec![self.key(logical)], Vec::new()));
        self.bounded(run).await.map(|_| ())
    }

    /// `PUBLISH <prefix><logical channel> message`.
    pub(super) async fn publish(&self, channel: &str, message: String) -> StoreResult<()> {
        let client = self.client()?;
        let publish = Box::pin(client.publish::<Value, _, _>(self.key(channel), message));
        self.bounded(publish).await.map(|_| ())
    }

    /// A fill's guard with its reservation (`GUARD_LUA`); on a cluster
    /// the epoch is read apart, from the primary serving its slot.
    async fn reserve(&self, redis_key: &str) -> StoreResult<FillGuard> {
        let client = self.on(redis_key)?;
        let token = rand::random::<u64>() | 1;
        let mut keys = vec![redis_key.to_string()];
        if !self.cluster {
            keys.push(self.epoch_key.clone());
        }
        let args: Vec<Value> = vec![
            format!("{token:x}").into(),
            (self.tombstone_ttl.as_millis() as i64).into(),
        ];
        let script = &self.scripts.guard;
        let call = Box::pin(async {
            script
                .evalsha_with_reload::<(i64, i64, String), _, _>(&client, keys, args)
                .await
        });
        let reply = match self.bounded_on(&client, call).await {
            // Out of memory under `noeviction`, Redis refuses any script
            // that may write; nothing is evicted then, so a guard without a
            // reservation is as safe (and the fill will be refused anyway).
            Err(StoreError::Backend(e)) if e.contains("OOM") => return self.read_guard(redis_key).await,
            other => other?,
        };
        let (generation, epoch, incarnation) = reply;
        Ok(FillGuard {
            generation: generation.max(0) as u64,
            epoch: if self.cluster {
                self.epoch().await?
            } else {
                epoch.max(0) as u64
            },
            // A value this code did not write (not hex) checks nothing.
            reservation: u64::from_str_radix(&incarnation, 16).unwrap_or(0),
        })
    }

    /// A guard read without a reservation (Redis out of memory).
    async fn read_guard(&self, redis_key: &str) -> StoreResult<FillGuard> {
        let client = self.on(redis_key)?;
        let generation: Option<Bytes> = match self.bounded_on(&client, client.hget(redis_key, GEN_FIELD)).await {
            Ok(g) => g,
            Err(StoreError::Backend(e)) if e.contains("WRONGTYPE") => None,
            Err(e) => return Err(e),
        };
        Ok(FillGuard {
            generation: to_u64(generation),
            epoch: self.epoch().await?,
            reservation: 0,
        })
    }

    /// The purge epoch (on a cluster, from the primary serving its slot).
    pub(super) async fn epoch(&self) -> StoreResult<u64> {
        let client = match self.on(&self.epoch_key) {
            // On a cluster whose primary serving the epoch is down, no
            // pattern, tag or scope purge can bump it, so none can complete:
            // fills elsewhere go on, under a guard saying so
            // (`redis_cluster.rs`, step 3).
            Err(StoreError::Unavailable) if self.shards.is_some() && self.is_up_elsewhere() => {
                return Ok(super::redis_cluster::EPOCH_UNREACHABLE)
            }
            other => other?,
        };
        let epoch: Option<Bytes> = self.bounded_on(&client, Box::pin(client.get(&self.epoch_key))).await?;
        Ok(to_u64(epoch))
    }

    /// Bumps the purge epoch. Redis out of memory refuses the INCR, but
    /// also every fill the epoch would stop, so the purge goes on without it
    /// rather than leave old entries served.
    async fn incr_epoch(&self) -> StoreResult<()> {
        let client = self.on(&self.epoch_key)?;
        match self.bounded_on(&client, client.incr::<i64, _>(&self.epoch_key)).await {
            Err(StoreError::Backend(e)) if e.contains("OOM") => {
                tracing::warn!(target: "cachegate::store", error = %e, "Redis is out of memory: purging without bumping the epoch");
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// Runs a script by SHA, loading it first when Redis does not know it.
    pub(super) async fn run_script(
        &self,
        client: &Client,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<i64, Error> {
        match script.evalsha::<i64, _, _, _>(client, keys.clone(), args.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") || e.to_string().contains("NOSCRIPT") => {
                script.load(client).await?;
                script.evalsha(client, keys, args).await
            }
            other => other,
        }
    }

    pub(super) fn lock_key(&self, key: &str, field: &str) -> String {
        format!("{}{INTERNAL_PREFIX}lock:{field}:{key}", self.prefix)
    }

    pub(super) fn internal_prefix(&self) -> String {
        format!("{}{INTERNAL_PREFIX}", self.prefix)
    }
}

/// While Redis counts as stalled, PINGs it now and then, so that it counts
/// as up again as soon as it answers, even when no request comes.
async fn probe_while_stalled(store: std::sync::Weak<RedisBackend>) {
    loop {
        tokio::time::sleep(Duration::from_millis(PROBE_EVERY_MS)).await;
        let Some(store) = store.upgrade() else { return };
        if store.stalled() {
            let client = store.pool.next_connected();
            let _: StoreResult<String> = store.bounded(client.ping(None)).await;
        }
    }
}

/// Classifies every connection error a fred client reports (each failed
/// connection attempt included) until the client is dropped.
fn follow_errors(
    mut errors: tokio::sync::broadcast::Receiver<(Error, Option<fred::types::config::Server>)>,
    health: Arc<HealthTracker>,
) {
    tokio::spawn(async move {
        loop {
            match errors.recv().await {
                Ok((error, server)) => {
                    let server = server.map(|s| s.to_string());
                    health.connect_failed(&error.to_string(), server.as_deref());
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

async fn fetch_shared_secret(store: Arc<RedisBackend>) {
    let key = format!("{}{INTERNAL_PREFIX}secret", store.prefix);
    loop {
        if let Ok(client) = store.client() {
            let candidate = hex::encode(rand::random::<[u8; 32]>());
            let result: Result<Option<Bytes>, Error> = async {
                let _: Value = client.set(&key, candidate, None, Some(SetOptions::NX), false).await?;
                client.get(&key).await
            }
            .await;
            if let Ok(Some(secret)) = result {
                let _ = store.secret.set(secret);
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The admin figures from an `INFO` reply and a key count.
pub(super) fn parse_info(text: &str, total_keys: u64) -> StoreInfo {
    let field = |name: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let num = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    StoreInfo {
        version: field("redis_version").unwrap_or("").to_string(),
        uptime_seconds: num("uptime_in_seconds"),
        connected_clients: num("connected_clients"),
        used_memory: num("used_memory"),
        peak_memory: num("used_memory_peak"),
        total_system_memory: num("total_system_memory"),
        total_keys,
        internal_keys: 0,
        db_keys: total_keys,
    }
}

/// The record field holding its incarnation (see [`GUARD_LUA`]).
pub(super) const INC_FIELD: &str = "__inc";

/// A reservation token as the scripts take it: hex, or `0` for none.
pub(super) fn reservation_arg(token: u64) -> String {
    if token == 0 {
        "0".to_string()
    } else {
        format!("{token:x}")
    }
}

/// A generation or epoch as the Lua scripts read it (`num` there): 1 to 15
/// ASCII digits, anything else 0. Both sides must agree, or a fill's guard
/// never matches a record holding a value like `-1`, `1.5` or `0x10`.
pub(super) fn to_u64(v: Option<Bytes>) -> u64 {
    match v {
        Some(b) if !b.is_empty() && b.len() <= 15 && b.iter().all(u8::is_ascii_digit) => {
            b.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'))
        }
        _ => 0,
    }
}

impl Backend for RedisBackend {
    const KIND: &'static str = "redis";
    const SHARED: bool = true;
    type Cursor = RedisCursor;

    async fn read(&self, key: &str, field: &str) -> StoreResult<Option<Bytes>> {
        let key = self.key(key);
        let client = self.on(&key)?;
        // fred's command futures are ~7 KB; boxed once here, the rest of this
        // call (and async_trait's box around it) moves a pointer, not 7 KB,
        // at each step. Measured: 3 copies of it were 27% of a Redis hit.
        let hget = Box::pin(client.hget(&key, field));
        match self.bounded_on(&client, hget).await {
            Ok(entry) => Ok(entry),
            // A foreign value under the key (WRONGTYPE): a miss that the
            // fill will overwrite.
            Err(StoreError::Backend(e)) if e.contains("WRONGTYPE") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn record(&self, key: &str) -> StoreResult<Option<Record>> {
        let client = self.client()?;
        let key = self.key(key);
        let got: Result<Vec<(String, Bytes)>, StoreError> = self.bounded(client.hgetall(&key)).await;
        let fields = match got {
            Ok(f) => f,
            Err(StoreError::Backend(e)) if e.contains("WRONGTYPE") => return Ok(None),
            Err(e) => return Err(e),
        };
        let fields: Vec<(String, Bytes)> = fields
            .into_iter()
            .filter(|(f, _)| {
                f != GEN_FIELD
                    && f != MARK_FIELD
                    && f != INC_FIELD
                    && !f.starts_with(super::redis_cluster::PENDING_PREFIX)
            })
            .collect();
        if fields.is_empty() {
            return Ok(None);
        }
        let pttl: i64 = self.bounded(client.pttl(&key)).await?;
        Ok(Some(Record {
            fields,
            ttl: u64::try_from(pttl).ok().map(Duration::from_millis),
        }))
    }

    async fn guard(&self, key: &str) -> StoreResult<FillGuard> {
        // A miss reserves its fill and reads the generation with it, at once.
        self.reserve(&self.key(key)).await
    }

    async fn write(&self, fill: Fill<'_>) -> StoreResult<bool> {
        if self.cluster {
            return self.fill_across_slots(fill).await;
        }
        let client = self.client()?;
        let mut keys = vec![self.key(fill.key), self.epoch_key.clone()];
        keys.extend(fill.indexes.iter().map(|index| self.index_key(*index)));
        let args: Vec<Value> = vec![
            fill.field.into(),
            fill.value.into(),
            (fill.ttl.as_millis().max(1) as i64).into(),
            (fill.guard.generation as i64).into(),
            (fill.guard.epoch as i64).into(),
            (now_ms() as i64).into(),
            fill.key.into(),
            reservation_arg(fill.guard.reservation).into(),
        ];
        let stored = self
            .bounded(self.run_script(client, &self.scripts.fill, keys, args))
            .await?;
        Ok(stored == 1)
    }

    async fn change(&self, keys: &[String], change: Change<'_>) -> StoreResult<u64> {
        let tombstone_ttl = self.tombstone_ttl.as_millis() as i64;
        let (script, args): (&Script, Vec<Value>) = match change {
            Change::Drop => (&self.scripts.drop, vec![tombstone_ttl.into()]),
            Change::Stale => (
                &self.scripts.stale,
                vec![(TTL_OFFSET as i64).into(), tombstone_ttl.into()],
            ),
            Change::Unscope(scope) => return self.unscope(keys, scope).await,
            Change::Unlink => {
                let client = self.client()?;
                return self
                    .unlink_keys(client, keys.iter().map(|k| self.key(k)).collect())
                    .await;
            }
        };
        let mut changed = 0;
        // One script call per key: each key may live in its own cluster slot.
        for batch in keys.chunks(SCAN_BATCH as usize) {
            let calls = batch.iter().map(|k| async {
                let key = self.key(k);
                let client = self.on(&key)?;
                self.bounded_on(&client, self.run_script(&client, script, vec![key], args.clone()))
                    .await
            });
            for result in futures_util::future::join_all(calls).await {
                changed += result? as u64;
            }
        }
        Ok(changed)
    }

    async fn bump_epoch(&self) -> StoreResult<()> {
        self.incr_epoch().await
    }

    async fn scan(&self, pattern: &str, keys: Keys, cursor: RedisCursor) -> StoreResult<Page<String, RedisCursor>> {
        self.scan_keys(pattern, keys, cursor).await
    }

    async fn index_page(&self, index: Index<'_>, cursor: RedisCursor) -> StoreResult<Page<Member, RedisCursor>> {
        self.index_members(index, cursor).await
    }

    async fn unindex(&self, index: Index<'_>, members: Vec<Member>) -> StoreResult<()> {
        self.drop_index_members(index, members).await
    }

    async fn publish_counters(&self, instance: &str, totals: &[(String, i64)]) -> StoreResult<()> {
        let client = self.client()?;
        let key = format!("{}stats:{instance}", self.internal_prefix());
        let index = format!("{}stats", self.internal_prefix());
        let pipeline = client.pipeline();
        let pairs: Vec<(&str, i64)> = totals.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let queued: Result<(), Error> = async {
            let _: () = pipeline.hset(&key, pairs).await?;
            // An instance gone for 30 days stops counting.
            let _: () = pipeline.pexpire(&key, STATS_RETENTION_MS, None).await?;
            let _: () = pipeline.sadd(&index, instance).await?;
            Ok(())
        }
        .await;
        queued.map_err(|e| StoreError::Backend(e.to_string()))?;
        let _: Vec<Value> = self.bounded(pipeline.all()).await?;
        Ok(())
    }

    async fn counter_totals(&self) -> StoreResult<Vec<Vec<(String, i64)>>> {
        let client = self.client()?;
        let index = format!("{}stats", self.internal_prefix());
        let instances: Vec<String> = self.bounded(client.smembers(&index)).await?;
        let mut all = Vec::with_capacity(instances.len());
        let mut gone = Vec::new();
        for instance in instances {
            let key = format!("{}stats:{instance}", self.internal_prefix());
            let totals: Vec<(String, i64)> = self.bounded(client.hgetall(&key)).await?;
            if totals.is_empty() {
                gone.push(instance);
            }
            all.push(totals);
        }
        if !gone.is_empty() {
            let _: i64 = self.bounded(client.srem(&index, gone)).await?;
        }
        Ok(all)
    }

    async fn info(&self) -> StoreResult<StoreInfo> {
        let client = self.client()?;
        if self.cluster {
            return self.cluster_info(client).await;
        }
        let text: String = self.bounded(client.info(None)).await?;
        let db_keys: u64 = self.bounded(client.dbsize()).await?;
        let (records, internal) = self.count_keys().await?;
        Ok(StoreInfo {
            total_keys: records,
            internal_keys: internal,
            ..parse_info(&text, db_keys)
        })
    }

    fn shared_secret(&self) -> Option<Bytes> {
        self.secret.get().cloned()
    }

    fn is_up(&self) -> bool {
        self.is_up_logged()
    }

    fn outages(&self) -> u64 {
        self.outages.load(Ordering::SeqCst)
    }

    fn health(&self) -> StoreHealth {
        let up = self.is_up_logged();
        if !up && self.stalled() {
            return StoreHealth {
                state: StoreState::Timeout,
                detail: format!("redis did not answer in time ({STALL_AFTER} calls in a row got no answer within the store timeout)"),
                was_up: true,
            };
        }
        self.health.health(up)
    }

    fn error_counts(&self) -> [u64; ERROR_KINDS.len()] {
        self.health.counts()
    }

    fn shards(&self) -> Vec<(String, bool)> {
        self.shard_states()
    }

    async fn mark_repairing(&self, instance: &str, mark: Option<&str>) -> StoreResult<()> {
        self.set_repairing(instance, mark).await
    }

    async fn repairing(&self) -> StoreResult<Vec<(String, String)>> {
        self.all_repairing().await
    }

    async fn try_lock(&self, key: &str, field: &str, ttl: Duration) -> StoreResult<Option<String>> {
        self.take_fill_lock(key, field, ttl).await
    }

    async fn unlock(&self, key: &str, field: &str, token: &str) -> StoreResult<()> {
        self.release_fill_lock(key, field, token).await
    }

    async fn is_locked(&self, key: &str, field: &str) -> StoreResult<bool> {
        self.fill_lock_held(key, field).await
    }

    async fn wait_unlocked(&self, key: &str, field: &str, timeout: Duration) {
        let lock = self.lock_key(key, field);
        let mut rx = self.notices.message_rx();
        let _ = tokio::time::timeout(timeout, async {
            while let Ok(message) = rx.recv().await {
                if message.value.as_str().is_some_and(|v| v == lock) {
                    return;
                }
            }
        })
        .await;
    }
}
