//! The Redis backend on a Redis Cluster: its fill primitive and the
//! per-primary parts of its walks.
//!
//! A cluster runs a script or a MULTI only when all its keys share one hash
//! slot, and a record, its tag indexes and the purge epoch live in slots of
//! their own. So on a cluster:
//!
//! - Every single-key operation (lookup, purge of one key, fill locks,
//!   counters) is as on one server: one slot each.
//! - A fill cannot check the epoch, write the record and index its tags in
//!   one script. It *reserves* instead: (1) in the record's slot, if the
//!   generation is still the guard's, a pending marker `__pend:<field>`
//!   holding a random token is set; (2) each tag index gets the key; (3) the
//!   epoch is read, and the fill gives up if it moved; (4) in the record's
//!   slot again, the entry is written only if the marker still holds the
//!   token and the generation is unchanged. Any purge that covers the key
//!   after (3) removes the record (and so the marker) or bumps the
//!   generation, since the record, and after (2) its tag entries, exist
//!   before (3); any purge before (3) moved the epoch first. So a fill
//!   racing a purge never stores, as on one server. See ARCHITECTURE.md.
//! - Keyspace walks (pattern purges, `keys`, `clear`, key counts in stats)
//!   visit every primary in turn; deletes are grouped by hash slot.

use super::backend::Fill;
use super::entry::now_ms;
use super::redis::{parse_info, RedisBackend, SCAN_BATCH};
use super::{StoreError, StoreInfo, StoreResult};
use fred::prelude::*;
use fred::types::scan::ScanType;
use fred::types::{Key, Value};

/// The epoch a guard holds when the primary serving the epoch key was
/// down as it was read. Every purge that bumps the epoch bumps it first, so
/// while that primary stays down none completes: a fill under this guard
/// may store if the epoch is still unreachable at step 3, and never once
/// it is readable again (it then cannot know what it missed).
pub const EPOCH_UNREACHABLE: u64 = u64::MAX;

/// Field-name prefix of a fill's pending marker; never an entry field.
pub const PENDING_PREFIX: &str = "__pend:";

/// Step 1 of a cluster fill. KEYS[1] record; ARGV: field, token, ttl_ms,
/// generation, the record's incarnation as the guard saw it (`0`: none).
/// Returns the record's TTL in ms, or -1 when the generation moved or the
/// incarnation ended (a purge, or an eviction, since the lookup).
pub const RESERVE_LUA: &str = r#"
if ARGV[5] ~= '0' and redis.call('HGET', KEYS[1], '__inc') ~= ARGV[5] then return -1 end
if num(redis.call('HGET', KEYS[1], '__gen')) ~= tonumber(ARGV[4]) then return -1 end
-- A record holding no entry yet (a guard's, a tombstone) takes this
-- entry's lifetime, not the tombstone's.
local first = redis.call('HEXISTS', KEYS[1], '__cg') == 0
redis.call('HSET', KEYS[1], '__pend:' .. ARGV[1], ARGV[2], '__cg', '1')
local pttl = redis.call('PTTL', KEYS[1])
if first or pttl < tonumber(ARGV[3]) then
  pttl = tonumber(ARGV[3])
  redis.call('PEXPIRE', KEYS[1], pttl)
end
return pttl
"#;

/// Step 4. KEYS[1] record; ARGV: field, token, value, generation. Stores
/// only if the marker still holds the token and the generation is the same.
pub const COMMIT_LUA: &str = r#"
local pend = '__pend:' .. ARGV[1]
if redis.call('HGET', KEYS[1], pend) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], pend)
if num(redis.call('HGET', KEYS[1], '__gen')) ~= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], '__cg', '1')
return 1
"#;

/// A fill that gave up drops its marker (if still its own), and the
/// record's `__cg` mark when it holds no entry.
pub const ABORT_LUA: &str = r#"
local pend = '__pend:' .. ARGV[1]
if redis.call('HGET', KEYS[1], pend) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], pend)
-- A record that holds no entry is not one of ours to list: drop the mark
-- step 1 set (its generation and incarnation stay).
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) ~= '__' then return 0 end
end
redis.call('HDEL', KEYS[1], '__cg')
return 0
"#;

/// Step 2, one tag index. KEYS[1] tag; ARGV: score, member, pttl, now.
pub const TAG_ADD_LUA: &str = r#"
redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"#;

impl RedisBackend {
    /// The nodes a keyspace walk visits: `[None]` (the one server), or
    /// every cluster primary, from a freshly synced slot map.
    pub(super) async fn primaries(&self, client: &Client) -> StoreResult<Vec<Option<Server>>> {
        if !self.cluster {
            return Ok(vec![None]);
        }
        // A walk must visit every primary: with one down it cannot, so it
        // fails at once (a pattern purge is then kept and replayed) rather
        // than wait on the cluster client's reconnection.
        if self.shard_states().iter().any(|(_, up)| !up) {
            return Err(StoreError::Unavailable);
        }
        // After a failover the cached map may still name a dead primary:
        // re-read it, at most once a second (writes purge by pattern often).
        let now = now_ms();
        let last = self.last_sync_ms.load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000 {
            self.last_sync_ms.store(now, std::sync::atomic::Ordering::Relaxed);
            let _: StoreResult<()> = self.bounded_by(self.bulk_timeout(), client.sync_cluster()).await;
        }
        let nodes = client
            .cached_cluster_state()
            .map(|s| s.unique_primary_nodes())
            .unwrap_or_default();
        if nodes.is_empty() {
            return Err(StoreError::Unavailable);
        }
        Ok(nodes.into_iter().map(Some).collect())
    }

    /// One SCAN page through `client` on `node` (or the one server).
    pub(super) async fn scan_page_on(
        &self,
        (client, node): (&Client, Option<&Server>),
        cursor: String,
        full: &str,
        kind: Option<ScanType>,
    ) -> StoreResult<(String, Vec<String>)> {
        match node {
            None => {
                self.bounded_by(
                    self.bulk_timeout(),
                    client.scan_page(cursor, full.to_string(), Some(SCAN_BATCH), kind),
                )
                .await
            }
            Some(node) => {
                let on = client.with_cluster_node(node.clone());
                self.bounded_by(
                    self.bulk_timeout(),
                    on.scan_page(cursor, full.to_string(), Some(SCAN_BATCH), kind),
                )
                .await
            }
        }
    }

    /// UNLINKs keys; on a cluster one UNLINK per hash slot among them.
    pub(super) async fn unlink_keys(&self, client: &Client, keys: Vec<String>) -> StoreResult<u64> {
        if !self.cluster {
            let n: i64 = self.bounded_by(self.bulk_timeout(), client.unlink(keys)).await?;
            return Ok(n as u64);
        }
        let groups = fred::util::group_by_hash_slot(keys).map_err(|e| StoreError::Backend(e.to_string()))?;
        let calls = groups.into_values().map(|keys| {
            let keys: Vec<Key> = keys.into_iter().collect();
            self.bounded_by(self.bulk_timeout(), client.unlink::<i64, _>(keys))
        });
        let mut removed = 0u64;
        for n in futures_util::future::join_all(calls).await {
            removed += n? as u64;
        }
        Ok(removed)
    }

    /// A fill on a cluster: reserve, index, check the epoch, commit (see
    /// the module doc).
    pub(super) async fn fill_across_slots(&self, fill: Fill<'_>) -> StoreResult<bool> {
        let (key, field, guard) = (fill.key, fill.field, fill.guard);
        let record = self.key(key);
        let token = hex::encode(rand::random::<[u8; 12]>());
        let ttl_ms = fill.ttl.as_millis().max(1) as i64;
        let args: Vec<Value> = vec![
            field.into(),
            token.as_str().into(),
            ttl_ms.into(),
            (guard.generation as i64).into(),
            super::redis::reservation_arg(guard.reservation).into(),
        ];
        // Every step goes to the primary serving its own key's slot.
        let client = self.on(&record)?;
        let pttl = self
            .bounded_on(
                &client,
                self.run_script(&client, &self.scripts.reserve, vec![record.clone()], args),
            )
            .await?;
        if pttl < 0 {
            return Ok(false);
        }
        let committed: StoreResult<bool> = async {
            let now = now_ms() as i64;
            // Tag indexes and the credential scope's index alike.
            let adds = fill.indexes.iter().map(|index| async move {
                let index = self.index_key(*index);
                let args: Vec<Value> = vec![(now + pttl).into(), key.into(), pttl.into(), now.into()];
                let on = self.on(&index)?;
                self.bounded_on(
                    &on,
                    self.run_script(&on, &self.scripts.tag_add, vec![index.clone()], args),
                )
                .await
            });
            for added in futures_util::future::join_all(adds).await {
                added?;
            }
            // (An unreachable epoch reads as EPOCH_UNREACHABLE: equal only
            // to a guard read while it was unreachable too.)
            if self.epoch().await? != guard.epoch {
                return Ok(false);
            }
            let args: Vec<Value> = vec![
                field.into(),
                token.as_str().into(),
                fill.value.into(),
                (guard.generation as i64).into(),
            ];
            let stored = self
                .bounded_on(
                    &client,
                    self.run_script(&client, &self.scripts.commit, vec![record.clone()], args),
                )
                .await?;
            Ok(stored == 1)
        }
        .await;
        if !matches!(committed, Ok(true)) {
            // Best effort: a marker left behind only costs its bytes until
            // the record expires; it never serves.
            let args: Vec<Value> = vec![field.into(), token.as_str().into()];
            let _: StoreResult<i64> = self
                .bounded_on(
                    &client,
                    self.run_script(&client, &self.scripts.abort, vec![record], args),
                )
                .await;
        }
        committed
    }

    /// Server figures summed over every primary (version and uptime are
    /// the first primary's).
    pub(super) async fn cluster_info(&self, client: &Client) -> StoreResult<StoreInfo> {
        let mut total = StoreInfo::default();
        for node in self.primaries(client).await?.into_iter().flatten() {
            let on = client.with_cluster_node(node);
            let text: String = self.bounded_by(self.bulk_timeout(), on.info(None)).await?;
            let keys: u64 = self.bounded_by(self.bulk_timeout(), on.dbsize()).await?;
            let one = parse_info(&text, keys);
            if total.version.is_empty() {
                total.version = one.version;
                total.uptime_seconds = one.uptime_seconds;
                total.total_system_memory = one.total_system_memory;
            }
            total.connected_clients += one.connected_clients;
            total.used_memory += one.used_memory;
            total.peak_memory += one.peak_memory;
            total.db_keys += one.db_keys;
        }
        let (records, internal) = self.count_keys().await?;
        total.total_keys = records;
        total.internal_keys = internal;
        Ok(total)
    }
}
