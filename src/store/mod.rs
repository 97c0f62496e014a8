//! Where cached entries live. The gateway holds one [`Store`]: the cache
//! protocol (`protocol.rs`, [`protocol::Protocol`]) on top of a backend's
//! storage primitives (`backend.rs`, [`backend::Backend`]): the embedded
//! in-process one (`memory.rs`) or Redis (`redis.rs` and its `redis_*`
//! files), with, on Redis, the in-process tier in front of its reads
//! (`tiered.rs`, kept coherent by `coherence.rs`).
//!
//! # Data model (the same on every backend)
//!
//! A *logical key* (`task:123`, as rules render it and operators see it) is
//! one hash-like record holding a *field* per credential scope (and, later,
//! per variant). Purging the logical key removes every scope at once.
//! Besides its entry fields, a record may hold a generation counter
//! ([`GEN_FIELD`]); a purge deletes every entry field and bumps the
//! generation, leaving a short-lived tombstone. A global *purge epoch* is
//! bumped by every pattern, tag and scope purge and every clear, before it
//! walks what it covers.
//!
//! A fill (storing a response fetched after a miss) carries the
//! [`FillGuard`] read at lookup time and stores only if neither the key's
//! generation nor the epoch moved in between (nor, on Redis, the record's
//! incarnation ended), atomically. So a body fetched before a purge that
//! covers it is never stored.

pub mod backend;
pub mod coherence;
pub mod coherence_metrics;
pub mod entry;
pub mod health;
// Redis glob matching lives with the rules that write the patterns.
pub use crate::rules::glob;
pub mod memory;
mod memory_index;
pub mod protocol;
pub mod redis;
mod redis_cluster;
pub mod redis_connect;
mod redis_lock;
mod redis_lua;
mod redis_repair;
mod redis_shards;
mod redis_walk;
pub mod scope_index;
pub mod tiered;

use async_trait::async_trait;
use bytes::Bytes;
use entry::Entry;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The record field holding the generation counter.
pub const GEN_FIELD: &str = "__gen";
/// The record field marking a record as written by cachegate.
pub const MARK_FIELD: &str = "__cg";

/// The result of a lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The encoded entry stored under the field, if any.
    pub entry: Option<Bytes>,
    /// What a fill after this lookup must present to store.
    pub guard: FillGuard,
}

/// The generation of a key and the purge epoch as a lookup saw them; on
/// Redis also the record's incarnation, set before the backend is asked and
/// ended by any purge of the record (and by its eviction), so a fill never
/// relies on a tombstone Redis may have evicted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FillGuard {
    pub generation: u64,
    pub epoch: u64,
    /// The incarnation's token; 0 for none (the memory store, which bumps
    /// the epoch on evictions instead; or a foreign value under the key).
    pub reservation: u64,
}

/// Why a store call did not succeed. None of these reach a client: the
/// request path treats every one as "no cache" (fail open).
#[derive(Debug)]
pub enum StoreError {
    /// Not connected; the proxy forwards uncached until it is back.
    Unavailable,
    /// The call took longer than the store timeout.
    Timeout,
    /// The store answered with an error.
    Backend(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable => f.write_str("store unavailable"),
            StoreError::Timeout => f.write_str("store timeout"),
            StoreError::Backend(e) => write!(f, "store error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

/// One entry for [`Store::fill`]: `value` under `field` of `key`, stored
/// only under `guard`. The record lives at least `ttl`, and each of `tags`
/// indexes the key for as long.
#[derive(Debug, Clone)]
pub struct EntryFill<'a> {
    pub key: &'a str,
    pub field: &'a str,
    pub value: Bytes,
    pub ttl: Duration,
    pub guard: FillGuard,
    pub tags: &'a [String],
}

impl<'a> EntryFill<'a> {
    /// An untagged entry; [`EntryFill::tagged`] adds tags.
    pub fn new(key: &'a str, field: &'a str, value: Bytes, ttl: Duration, guard: FillGuard) -> Self {
        EntryFill {
            key,
            field,
            value,
            ttl,
            guard,
            tags: &[],
        }
    }

    /// The same entry, indexed under `tags`.
    pub fn tagged(self, tags: &'a [String]) -> Self {
        EntryFill { tags, ..self }
    }
}

/// One logical key's record, as the admin API shows it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Entry fields (scope, and later variant) with their encoded entries;
    /// the internal `__gen` / `__cg` fields are left out.
    pub fields: Vec<(String, Bytes)>,
    /// Time left before the record expires, if it expires.
    pub ttl: Option<Duration>,
}

/// What the store's server says about itself, for the admin `stats` route.
/// The memory store describes the cachegate process.
#[derive(Debug, Clone, Default)]
pub struct StoreInfo {
    pub version: String,
    pub uptime_seconds: u64,
    pub connected_clients: u64,
    pub used_memory: u64,
    pub peak_memory: u64,
    pub total_system_memory: u64,
    /// Cache records holding entries (a logical key with its scopes and
    /// variants counts one); internal keys and foreign keys left out.
    pub total_keys: u64,
    /// cachegate's internal keys under the prefix (`__cg:`: epoch, secret,
    /// indexes, stats, marks); 0 for the memory store.
    pub internal_keys: u64,
    /// Every key in the database, cachegate's or not (Redis `DBSIZE`;
    /// summed over the primaries of a cluster).
    pub db_keys: u64,
}

/// The cache as the gateway sees it, implemented once by
/// [`protocol::Protocol`] over any backend. Keys passed in are logical
/// keys; a store adds its own prefix. Never blocks the runtime.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `redis` or `memory`.
    fn kind(&self) -> &'static str;

    /// Whether the store is reachable right now (cheap; no I/O).
    fn is_up(&self) -> bool;

    /// On a Redis Cluster, each primary's address and whether it is
    /// reachable (cheap; no I/O); empty for other stores.
    fn shards(&self) -> Vec<(String, bool)> {
        Vec::new()
    }

    /// How many times the store came back after being unreachable (cheap;
    /// no I/O). A read that sees this move knows an outage just ended, even
    /// before any background task does (`gateway/pending_purges.rs`).
    fn outages(&self) -> u64 {
        0
    }

    /// Why the store is unusable, if it is (cheap; no I/O): `/readyz` and
    /// the admin `health` route show it.
    fn health(&self) -> health::StoreHealth {
        if self.is_up() {
            health::StoreHealth::ok()
        } else {
            health::StoreHealth::unreachable()
        }
    }

    /// Store errors counted so far, by kind ([`health::ERROR_KINDS`]).
    fn error_counts(&self) -> [u64; health::ERROR_KINDS.len()] {
        [0; health::ERROR_KINDS.len()]
    }

    /// The secret that keys credential-scope hashes. Shared by every
    /// instance on the same Redis, so they share scopes; `None` until known.
    fn scope_secret(&self) -> Option<Bytes>;

    /// An entry held in this process, already decoded, if the store keeps
    /// one for `field` of `key` (the in-process tier); no I/O, so a hit
    /// costs no store round trip and no decoding. Callers still check its
    /// freshness; anything else goes through [`Store::lookup`].
    fn peek(&self, _key: &str, _field: &str) -> Option<Arc<Entry>> {
        None
    }

    /// Called after a purge completed (or failed): returns once no other
    /// instance sharing the store can serve, from an in-process tier, an
    /// entry the purge removed (`coherence.rs`). Nothing to wait for where
    /// no instance keeps such a tier.
    async fn fence(&self) {}

    /// Reads `field` of `key`; on a miss, also the guard a fill must present.
    async fn lookup(&self, key: &str, field: &str) -> StoreResult<Lookup>;

    /// The guard a fill must present to replace what `key` holds now (used
    /// when a lookup found an expired or undecodable entry).
    async fn fill_guard(&self, key: &str) -> StoreResult<FillGuard>;

    /// Stores the entry unless a purge covering its key happened since its
    /// guard was read. Returns whether it stored.
    async fn fill(&self, entry: EntryFill<'_>) -> StoreResult<bool>;

    /// Purges logical keys (every field); returns how many held entries.
    /// A `soft` purge keeps the entries but marks them stale (their TTL
    /// becomes 0), so they are refreshed rather than missed. Either way the
    /// key's generation moves, so no fill that started before stores.
    async fn purge_keys(&self, keys: &[String], soft: bool) -> StoreResult<u64>;

    /// Purges every logical key matching a Redis glob pattern, in batches
    /// that never block the store for long; returns how many were removed
    /// (or, `soft`, marked stale). Bumps the purge epoch first.
    async fn purge_pattern(&self, pattern: &str, soft: bool) -> StoreResult<u64>;

    /// Purges every key a tag indexes (in time proportional to those keys,
    /// not to the keyspace); returns how many held entries. Bumps the purge
    /// epoch first: a fill in flight may be about to add its key to the tag.
    async fn purge_tags(&self, tags: &[String], soft: bool) -> StoreResult<u64>;

    /// Removes every entry of one credential scope (its field and `Vary`
    /// variants, in every record the scope's index names; other scopes'
    /// entries stay); returns how many records held one. Bumps the purge
    /// epoch first: a fill in flight for the scope must not store after it.
    /// See `scope_index.rs`.
    async fn purge_scope(&self, scope: &str) -> StoreResult<u64>;

    /// Logical keys of records cachegate wrote that match `pattern` (tombstones
    /// and internal keys left out): how many matched, and up to `limit` of them.
    async fn scan_keys(&self, pattern: &str, limit: usize) -> StoreResult<(u64, Vec<String>)>;

    /// One record, or `None` when the key holds no entry.
    async fn record(&self, key: &str) -> StoreResult<Option<Record>>;

    /// Removes the records cachegate wrote (matching `pattern`, or all), and
    /// nothing else; returns how many. Bumps the purge epoch first.
    async fn clear(&self, pattern: Option<&str>) -> StoreResult<u64>;

    /// Records one instance's running totals of named counters. Setting
    /// totals (not adding deltas) makes a retry after an ambiguous failure
    /// (a timeout) harmless.
    async fn publish_counters(&self, instance: &str, totals: &[(String, i64)]) -> StoreResult<()>;

    /// Every counter, summed over the instances that published it.
    async fn counters(&self) -> StoreResult<Vec<(String, i64)>>;

    /// Server and memory figures.
    async fn info(&self) -> StoreResult<StoreInfo>;

    /// Announces (`Some(mark)`, renewed while it lasts) or withdraws
    /// (`None`) that `instance` has purges not yet applied; `mark` is opaque
    /// here (the gateway's JSON: until when, and which purges;
    /// `gateway/pending_purges.rs`). A store no other instance shares has
    /// nobody to tell.
    async fn mark_repairing(&self, _instance: &str, _mark: Option<&str>) -> StoreResult<()> {
        Ok(())
    }

    /// Every instance's mark, as `(instance, mark)`.
    async fn repairing(&self) -> StoreResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    /// Takes the cross-instance fill lock for one entry (`SET NX PX` with a
    /// random token), so that instances sharing the store make one backend
    /// request between them. `Some(token)` when taken. A store no other
    /// instance shares has nothing to lock: it grants with an empty token.
    async fn try_lock(&self, _key: &str, _field: &str, _ttl: Duration) -> StoreResult<Option<String>> {
        Ok(Some(String::new()))
    }

    /// Releases a lock, only if `token` still owns it; then tells waiting
    /// instances that the entry was filled (or not: they look it up).
    async fn unlock(&self, _key: &str, _field: &str, _token: &str) -> StoreResult<()> {
        Ok(())
    }

    /// Whether another instance holds the fill lock for the entry.
    async fn is_locked(&self, _key: &str, _field: &str) -> StoreResult<bool> {
        Ok(false)
    }

    /// Waits up to `timeout` for a notice that a lock on the entry was
    /// released (a fill finished somewhere). Returns early on the notice;
    /// callers poll the store too, so a lost notice only costs time.
    async fn wait_unlocked(&self, _key: &str, _field: &str, timeout: Duration) {
        tokio::time::sleep(timeout).await
    }
}
