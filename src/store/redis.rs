//! The Redis store, on fred: a pool of connections that reconnect with
//! backoff, `redis://` and `rediss://`, AUTH with a password or ACL user.
//!
//! Layout (with `P` the configured key prefix):
//! - `P<logical key>`: a hash; one field per scope holding an encoded
//!   [`Entry`](super::entry::Entry), plus `__cg` (marks it as ours) and
//!   `__gen` (the purge generation). Its TTL is the longest entry TTL.
//! - `P__cg:epoch`: the purge epoch, bumped by every pattern purge.
//! - `P__cg:secret`: the random secret keying credential-scope hashes,
//!   created once by whichever instance connects first.
//!
//! Every call is bounded by the store timeout and refused at once while the
//! pool is disconnected, so an outage costs the request path nothing.

use super::entry::{now_ms, TTL_OFFSET};
use super::{FillGuard, Lookup, Record, Store, StoreError, StoreInfo, StoreResult, GEN_FIELD, MARK_FIELD};
use crate::config::RedisConfig;
use crate::rules::{glob_escape, INTERNAL_PREFIX};
use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scan::ScanType;
use fred::types::scripts::Script;
use fred::types::Value;
use fred::types::{ClusterHash, CustomCommand};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Stores `value` under `field` only if the key's generation and the purge
/// epoch are what the fill's lookup saw. A foreign value under the key
/// (another type) is replaced. Each tag index (KEYS[3..], sorted sets scored
/// by expiry) gets the key; expired members leave it on every add.
/// ARGV: field, value, ttl_ms, generation, epoch, now_ms, logical key,
/// the record's incarnation as the guard saw it (`0`: none). With one, the
/// fill stores only into that incarnation (`__inc`, see [`GUARD_LUA`]): a
/// purge or an eviction of the record since the guard ended it.
const FILL_LUA: &str = r#"
local function num(v)
  if v and #v <= 15 and string.match(v, '^%d+$') then return tonumber(v) end
  return 0
end
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' and t ~= 'none' then redis.call('DEL', KEYS[1]) end
if ARGV[8] ~= '0' and redis.call('HGET', KEYS[1], '__inc') ~= ARGV[8] then return 0 end
if num(redis.call('HGET', KEYS[1], '__gen')) ~= tonumber(ARGV[4]) then return 0 end
if num(redis.call('GET', KEYS[2])) ~= tonumber(ARGV[5]) then return 0 end
-- A record holding no entry yet (a guard's, a tombstone) takes this
-- entry's lifetime, not the tombstone's.
local first = redis.call('HEXISTS', KEYS[1], '__cg') == 0
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], '__cg', '1')
local pttl = redis.call('PTTL', KEYS[1])
if first or pttl < tonumber(ARGV[3]) then
  pttl = tonumber(ARGV[3])
  redis.call('PEXPIRE', KEYS[1], pttl)
end
local now = tonumber(ARGV[6])
for i = 3, #KEYS do
  redis.call('ZADD', KEYS[i], 'GT', now + pttl, ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('PTTL', KEYS[i]) < pttl then redis.call('PEXPIRE', KEYS[i], pttl) end
end
return 1
"#;

/// A fill's guard, read at once with the record's incarnation: `__inc`, a
/// random token the first guard of an absent record sets (creating the
/// record, expiring after ARGV[2] ms). Purges delete the record (a
/// tombstone has no `__inc`) and so does an eviction, so a fill that checks
/// its guard's incarnation never stores into a record that was purged and
/// evicted meanwhile, where `__gen` would read 0 again. Returns {generation,
/// epoch, incarnation}. KEYS[1] record, KEYS[2] the epoch (absent on a
/// cluster, where it lives in another slot: read apart). A foreign value
/// under the key is not touched (incarnation '0'; the fill replaces it).
const GUARD_LUA: &str = r#"
local function num(v)
  if v and #v <= 15 and string.match(v, '^%d+$') then return tonumber(v) end
  return 0
end
local epoch = 0
if KEYS[2] then epoch = num(redis.call('GET', KEYS[2])) end
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' and t ~= 'none' then return {0, epoch, '0'} end
local inc = redis.call('HGET', KEYS[1], '__inc')
if not inc then
  inc = ARGV[1]
  redis.call('HSET', KEYS[1], '__inc', inc)
  if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
end
return {num(redis.call('HGET', KEYS[1], '__gen')), epoch, inc}
"#;

/// Marks every entry of a key stale in place (its ttl_ms, at byte offset
/// ARGV[1], becomes 0) and bumps the generation; Vary markers and the
/// record's expiry stay. A key with no record gets a tombstone (expiring
/// after ARGV[2] ms), as a hard purge leaves, so a fill in flight for it
/// cannot store either. Returns 1 when the key held an entry.
const SOFT_PURGE_LUA: &str = r#"
local function num(v)
  if v and #v <= 15 and string.match(v, '^%d+$') then return tonumber(v) end
  return 0
end
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' then
  if t ~= 'none' then redis.call('DEL', KEYS[1]) end
  redis.call('HSET', KEYS[1], '__gen', 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
local off = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local had = 0
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  if f ~= '__gen' and f ~= '__cg' and string.sub(v, 1, 2) == 'CG' and #v > off + 8 then
    redis.call('HSET', KEYS[1], f, string.sub(v, 1, off) .. string.rep('\0', 8) .. string.sub(v, off + 9))
    had = 1
  end
end
redis.call('HSET', KEYS[1], '__gen', num(redis.call('HGET', KEYS[1], '__gen')) + 1)
return had
"#;

/// Removes every entry of a key and leaves a tombstone with the next
/// generation, so fills that started before this purge will not store.
/// Returns 1 when the key held an entry.
const PURGE_LUA: &str = r#"
local function num(v)
  if v and #v <= 15 and string.match(v, '^%d+$') then return tonumber(v) end
  return 0
end
local t = redis.call('TYPE', KEYS[1])['ok']
local had = 0
local g = 0
if t == 'hash' then
  g = num(redis.call('HGET', KEYS[1], '__gen'))
  local meta = redis.call('HEXISTS', KEYS[1], '__gen') + redis.call('HEXISTS', KEYS[1], '__cg')
    + redis.call('HEXISTS', KEYS[1], '__inc')
  if redis.call('HLEN', KEYS[1]) > meta then had = 1 end
  redis.call('DEL', KEYS[1])
elseif t ~= 'none' then
  redis.call('DEL', KEYS[1])
  had = 1
end
redis.call('HSET', KEYS[1], '__gen', g + 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return had
"#;

/// A key written and removed at once (the tier's fences, `coherence.rs`).
const TOUCH_LUA: &str = "redis.call('SET', KEYS[1], '1') redis.call('DEL', KEYS[1]) return 1";

/// How long an instance's published counters outlive its last flush.
const STATS_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

/// Removes tag members whose score is still the one read (ARGV: member,
/// score, member, score, ...); a member re-indexed since keeps its place.
const UNTAG_LUA: &str = r#"
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"#;

/// Keys per SCAN page and per UNLINK batch: small enough that no single
/// command holds Redis for long.
pub(super) const SCAN_BATCH: u32 = 1000;

pub struct RedisStore {
    pool: Pool,
    pub(super) prefix: String,
    pub(super) epoch_key: String,
    timeout: Duration,
    pub(super) tombstone_ttl: Duration,
    fill_script: Script,
    guard_script: Script,
    purge_script: Script,
    soft_purge_script: Script,
    pub(super) untag_script: Script,
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
    /// On a Redis Cluster: fills reserve then commit (see `cluster.rs`),
    /// and keyspace walks visit every primary.
    pub(super) cluster: bool,
    pub(super) reserve_script: Script,
    pub(super) commit_script: Script,
    pub(super) abort_script: Script,
    pub(super) tag_add_script: Script,
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

impl RedisStore {
    /// Creates the pool and starts connecting in the background. Never fails
    /// because Redis is down: it waits up to `connect_wait` for a first
    /// connection, then serves uncached until Redis is reachable.
    pub async fn connect(
        cfg: &RedisConfig,
        prefix: &str,
        timeout: Duration,
        tombstone_ttl: Duration,
        connect_wait: Duration,
        configured_secret: Option<&str>,
    ) -> Result<Arc<RedisStore>, crate::BoxError> {
        let config = super::redis_connect::fred_config(cfg)?;
        let shards = cfg
            .topology
            .is_cluster()
            .then(|| super::redis_shards::Shards::new(config.clone()));
        let builder = super::redis_connect::builder(config, 2);
        let pool = builder.build_pool(cfg.pool_size)?;
        pool.connect_pool();
        let notices = builder.build_subscriber_client()?;
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
        let _ = tokio::time::timeout(connect_wait, pool.wait_for_connect()).await;

        let secret = Arc::new(OnceLock::new());
        if let Some(s) = configured_secret {
            let _ = secret.set(Bytes::copy_from_slice(s.as_bytes()));
        }
        let store = Arc::new(RedisStore {
            pool,
            prefix: prefix.to_string(),
            epoch_key: format!("{prefix}{INTERNAL_PREFIX}epoch"),
            timeout,
            tombstone_ttl,
            fill_script: Script::from_lua(FILL_LUA),
            guard_script: Script::from_lua(GUARD_LUA),
            purge_script: Script::from_lua(PURGE_LUA),
            soft_purge_script: Script::from_lua(SOFT_PURGE_LUA),
            untag_script: Script::from_lua(UNTAG_LUA),
            locks: super::redis_lock::FillLocks::new(),
            notices,
            channel,
            secret,
            up: AtomicBool::new(true),
            timeouts: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            cluster: cfg.topology.is_cluster(),
            reserve_script: Script::from_lua(super::redis_cluster::RESERVE_LUA),
            commit_script: Script::from_lua(super::redis_cluster::COMMIT_LUA),
            abort_script: Script::from_lua(super::redis_cluster::ABORT_LUA),
            tag_add_script: Script::from_lua(super::redis_cluster::TAG_ADD_LUA),
            last_sync_ms: AtomicU64::new(0),
            shards,
        });
        store.is_up_logged();
        tokio::spawn(probe_while_stalled(Arc::downgrade(&store)));
        if store.shards.is_some() {
            tokio::spawn(super::redis_shards::follow_cluster(Arc::downgrade(&store)));
        }
        if store.secret.get().is_none() {
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
                self.outages.fetch_add(1, Ordering::SeqCst);
                tracing::info!(target: "cachegate::store", "redis is reachable again; caching resumes");
            } else {
                tracing::warn!(target: "cachegate::store", "redis is unreachable; forwarding uncached until it is back");
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
                result.map_err(|e| StoreError::Backend(e.to_string()))
            }
            Err(_) => {
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
        // EVALSHA like every other script: the documented ACL has no EVAL.
        static TOUCH: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        let script = TOUCH.get_or_init(|| Script::from_lua(TOUCH_LUA));
        let run = Box::pin(self.run_script(client, script, vec![self.key(logical)], Vec::new()));
        self.bounded(run).await.map(|_| ())
    }

    /// `PUBLISH <prefix><logical channel> message`.
    pub(super) async fn publish(&self, channel: &str, message: String) -> StoreResult<()> {
        let client = self.client()?;
        let publish = Box::pin(client.publish::<Value, _, _>(self.key(channel), message));
        self.bounded(publish).await.map(|_| ())
    }

    /// Purges every key the tags index; with `list` > 0, also returns the
    /// keys it purged (up to `list`; `None` past that), so the in-process
    /// tier can drop just those.
    pub async fn purge_tags_listing(
        &self,
        tags: &[String],
        soft: bool,
        list: usize,
    ) -> StoreResult<(u64, Option<Vec<String>>)> {
        self.bump_epoch().await?;
        let now = now_ms() as f64;
        let mut purged = 0u64;
        let mut listed = (list > 0).then(Vec::new);
        for tag in tags {
            let tag_key = self.tag_key(tag);
            // On a cluster, the primary serving the index's slot.
            let client = &*self.on(&tag_key)?;
            // ZSCAN, not offsets: a fill landing meanwhile raises its key's
            // score, which would shift an offset window and skip members.
            let mut cursor = String::from("0");
            loop {
                let (next, pairs) = self.index_page(client, &tag_key, &cursor).await?;
                let live: Vec<String> = pairs
                    .iter()
                    .filter(|(_, score)| score.parse::<f64>().is_ok_and(|s| s >= now))
                    .map(|(member, _)| member.clone())
                    .collect();
                if !live.is_empty() {
                    purged += Store::purge_keys(self, &live, soft).await?;
                    if let Some(keys) = &mut listed {
                        if keys.len() + live.len() > list {
                            listed = None;
                        } else {
                            keys.extend(live);
                        }
                    }
                }
                if !soft {
                    self.drop_index_members(client, &tag_key, pairs).await?;
                }
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok((purged, listed))
    }

    /// Bumps the purge epoch before a pattern, tag or clear purge. Redis out
    /// of memory refuses the INCR, but also every fill the epoch would stop,
    /// so the purge goes on without it rather than leave old entries served.
    /// A fill's guard with its reservation ([`GUARD_LUA`]); on a cluster
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
        let script = &self.guard_script;
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

    pub(super) async fn bump_epoch(&self) -> StoreResult<()> {
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

    pub(super) fn tag_key(&self, tag: &str) -> String {
        format!("{}{INTERNAL_PREFIX}tag:{tag}", self.prefix)
    }

    /// One `ZSCAN` page of an index (a tag's or a scope's): the next cursor
    /// and the `(member, score)` pairs read.
    pub(super) async fn index_page(
        &self,
        client: &Client,
        index: &str,
        cursor: &str,
    ) -> StoreResult<(String, Vec<(String, String)>)> {
        let zscan = CustomCommand::new_static("ZSCAN", ClusterHash::FirstKey, false);
        let args: Vec<Value> = vec![index.into(), cursor.into(), "COUNT".into(), (SCAN_BATCH as i64).into()];
        let (next, flat): (String, Vec<String>) =
            self.bounded_by(self.bulk_timeout(), client.custom(zscan, args)).await?;
        let mut flat = flat.into_iter();
        let mut pairs = Vec::with_capacity(flat.len() / 2);
        while let (Some(member), Some(score)) = (flat.next(), flat.next()) {
            pairs.push((member, score));
        }
        Ok((next, pairs))
    }

    /// Drops the members a purge read from an index (a tag's or a scope's),
    /// unless a fill re-indexed them since (ZADD GT raised the score):
    /// those stay findable.
    pub(super) async fn drop_index_members(
        &self,
        client: &Client,
        index: &str,
        pairs: Vec<(String, String)>,
    ) -> StoreResult<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut args: Vec<Value> = Vec::with_capacity(pairs.len() * 2);
        for (member, score) in pairs {
            args.push(member.into());
            args.push(score.into());
        }
        let script = self.run_script(client, &self.untag_script, vec![index.to_string()], args);
        let _: i64 = self.bounded_by(self.bulk_timeout(), script).await?;
        Ok(())
    }

    pub(super) fn internal_prefix(&self) -> String {
        format!("{}{INTERNAL_PREFIX}", self.prefix)
    }

    /// One SCAN page of the Redis keys of cachegate's records matching
    /// `full` (an already prefixed pattern): the next cursor and the keys.
    /// Tombstones, foreign keys and internal keys are left out.
    async fn record_page(
        &self,
        client: &Client,
        node: Option<&Server>,
        cursor: String,
        full: &str,
    ) -> StoreResult<(String, Vec<String>)> {
        let (next, keys) = self
            .scan_page_on(client, node, cursor, full, Some(ScanType::Hash))
            .await?;
        let internal = self.internal_prefix();
        let candidates: Vec<String> = keys.into_iter().filter(|k| !k.starts_with(&internal)).collect();
        if candidates.is_empty() {
            return Ok((next, candidates));
        }
        let pipeline = client.pipeline();
        for k in &candidates {
            let _: () = pipeline
                .hexists(k, MARK_FIELD)
                .await
                .map_err(|e| StoreError::Backend(e.to_string()))?;
        }
        let marks: Vec<bool> = self.bounded_by(self.bulk_timeout(), pipeline.all()).await?;
        let ours = candidates
            .into_iter()
            .zip(marks)
            .filter_map(|(k, ours)| ours.then_some(k))
            .collect();
        Ok((next, ours))
    }

    fn logical<'a>(&self, redis_key: &'a str) -> &'a str {
        redis_key.strip_prefix(self.prefix.as_str()).unwrap_or(redis_key)
    }
}

/// While Redis counts as stalled, PINGs it now and then, so that it counts
/// as up again as soon as it answers, even when no request comes.
async fn probe_while_stalled(store: std::sync::Weak<RedisStore>) {
    loop {
        tokio::time::sleep(Duration::from_millis(PROBE_EVERY_MS)).await;
        let Some(store) = store.upgrade() else { return };
        if store.stalled() {
            let client = store.pool.next_connected();
            let _: StoreResult<String> = store.bounded(client.ping(None)).await;
        }
    }
}

async fn fetch_shared_secret(store: Arc<RedisStore>) {
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

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn is_up(&self) -> bool {
        self.is_up_logged()
    }

    fn outages(&self) -> u64 {
        self.outages.load(Ordering::SeqCst)
    }

    fn shards(&self) -> Vec<(String, bool)> {
        self.shard_states()
    }

    fn scope_secret(&self) -> Option<Bytes> {
        self.secret.get().cloned()
    }

    async fn lookup(&self, key: &str, field: &str) -> StoreResult<Lookup> {
        let key = self.key(key);
        let client = self.on(&key)?;
        // fred's command futures are ~7 KB; boxed once here, the rest of this
        // call (and async_trait's box around it) moves a pointer, not 7 KB,
        // at each step. Measured: 3 copies of it were 27% of a Redis hit.
        let hget = Box::pin(client.hget(&key, field));
        let entry: Option<Bytes> = match self.bounded_on(&client, hget).await {
            Ok(entry) => entry,
            // A foreign value under the key (WRONGTYPE): a miss that the
            // fill will overwrite.
            Err(StoreError::Backend(e)) if e.contains("WRONGTYPE") => None,
            Err(e) => return Err(e),
        };
        if entry.is_some() {
            return Ok(Lookup {
                entry,
                guard: FillGuard::default(),
            });
        }
        // A miss reserves its fill and reads the generation with it, at once.
        Ok(Lookup {
            entry: None,
            guard: self.reserve(&key).await?,
        })
    }

    async fn fill_guard(&self, key: &str) -> StoreResult<FillGuard> {
        self.reserve(&self.key(key)).await
    }

    async fn fill(
        &self,
        key: &str,
        field: &str,
        value: Bytes,
        ttl: Duration,
        guard: FillGuard,
        tags: &[String],
    ) -> StoreResult<bool> {
        if self.cluster {
            return self.fill_across_slots(key, field, value, ttl, guard, tags).await;
        }
        let client = self.client()?;
        let mut keys = vec![self.key(key), self.epoch_key.clone()];
        keys.extend(self.index_keys(field, tags));
        let args: Vec<Value> = vec![
            field.into(),
            value.into(),
            (ttl.as_millis().max(1) as i64).into(),
            (guard.generation as i64).into(),
            (guard.epoch as i64).into(),
            (now_ms() as i64).into(),
            key.into(),
            reservation_arg(guard.reservation).into(),
        ];
        let stored = self
            .bounded(self.run_script(client, &self.fill_script, keys, args))
            .await?;
        Ok(stored == 1)
    }

    async fn purge_keys(&self, keys: &[String], soft: bool) -> StoreResult<u64> {
        let tombstone_ttl = self.tombstone_ttl.as_millis() as i64;
        let (script, args): (&Script, Vec<Value>) = if soft {
            (
                &self.soft_purge_script,
                vec![(TTL_OFFSET as i64).into(), tombstone_ttl.into()],
            )
        } else {
            (&self.purge_script, vec![tombstone_ttl.into()])
        };
        let mut purged = 0;
        // One script call per key: each key may live in its own cluster slot.
        for batch in keys.chunks(SCAN_BATCH as usize) {
            let calls = batch.iter().map(|k| async {
                let key = self.key(k);
                let client = self.on(&key)?;
                self.bounded_on(&client, self.run_script(&client, script, vec![key], args.clone()))
                    .await
            });
            for result in futures_util::future::join_all(calls).await {
                purged += result? as u64;
            }
        }
        Ok(purged)
    }

    async fn purge_pattern(&self, pattern: &str, soft: bool) -> StoreResult<u64> {
        let client = self.client()?;
        // Bump the epoch first: a fill that looked up before this point will
        // not store, even for a key this scan never sees.
        self.bump_epoch().await?;
        let full = format!("{}{}", glob_escape(&self.prefix), pattern);
        let internal = self.internal_prefix();
        let mut removed = 0u64;
        // Every primary of a cluster holds its own part of the keyspace.
        for node in self.primaries(client).await? {
            let mut cursor = String::from("0");
            loop {
                let (next, keys) = self.scan_page_on(client, node.as_ref(), cursor, &full, None).await?;
                let keys: Vec<String> = keys.into_iter().filter(|k| !k.starts_with(&internal)).collect();
                if !keys.is_empty() {
                    if soft {
                        let logical: Vec<String> = keys.iter().map(|k| self.logical(k).to_string()).collect();
                        removed += self.purge_keys(&logical, true).await?;
                    } else {
                        removed += self.unlink_keys(client, keys).await?;
                    }
                }
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    async fn purge_tags(&self, tags: &[String], soft: bool) -> StoreResult<u64> {
        self.purge_tags_listing(tags, soft, 0).await.map(|(n, _)| n)
    }

    async fn purge_scope(&self, scope: &str) -> StoreResult<u64> {
        self.purge_scope_listing(scope, 0).await.map(|(n, _)| n)
    }

    async fn scan_keys(&self, pattern: &str, limit: usize) -> StoreResult<(u64, Vec<String>)> {
        let client = self.client()?;
        let full = format!("{}{}", glob_escape(&self.prefix), pattern);
        let (mut total, mut keys) = (0u64, Vec::new());
        for node in self.primaries(client).await? {
            let mut cursor = String::from("0");
            loop {
                let (next, page) = self.record_page(client, node.as_ref(), cursor, &full).await?;
                total += page.len() as u64;
                let room = limit.saturating_sub(keys.len());
                keys.extend(page.iter().take(room).map(|k| self.logical(k).to_string()));
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        keys.sort();
        Ok((total, keys))
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

    async fn clear(&self, pattern: Option<&str>) -> StoreResult<u64> {
        let client = self.client()?;
        self.bump_epoch().await?;
        let full = format!("{}{}", glob_escape(&self.prefix), pattern.unwrap_or("*"));
        let mut removed = 0u64;
        for node in self.primaries(client).await? {
            let mut cursor = String::from("0");
            loop {
                let (next, page) = self.record_page(client, node.as_ref(), cursor, &full).await?;
                if !page.is_empty() {
                    removed += self.unlink_keys(client, page).await?;
                }
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    async fn publish_counters(&self, instance: &str, totals: &[(String, i64)]) -> StoreResult<()> {
        if totals.is_empty() {
            return Ok(());
        }
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

    async fn counters(&self) -> StoreResult<Vec<(String, i64)>> {
        let client = self.client()?;
        let index = format!("{}stats", self.internal_prefix());
        let instances: Vec<String> = self.bounded(client.smembers(&index)).await?;
        let mut sums: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        let mut gone = Vec::new();
        for instance in instances {
            let key = format!("{}stats:{instance}", self.internal_prefix());
            let totals: Vec<(String, i64)> = self.bounded(client.hgetall(&key)).await?;
            if totals.is_empty() {
                gone.push(instance);
            }
            for (name, v) in totals {
                let sum = sums.entry(name).or_insert(0);
                *sum = sum.saturating_add(v);
            }
        }
        if !gone.is_empty() {
            let _: i64 = self.bounded(client.srem(&index, gone)).await?;
        }
        Ok(sums.into_iter().collect())
    }

    async fn info(&self) -> StoreResult<StoreInfo> {
        let client = self.client()?;
        if self.cluster {
            return self.cluster_info(client).await;
        }
        let text: String = self.bounded(client.info(None)).await?;
        let total_keys: u64 = self.bounded(client.dbsize()).await?;
        Ok(parse_info(&text, total_keys))
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
