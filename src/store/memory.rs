//! The embedded in-process backend: the primitives of [`super::backend`]
//! on a bounded [`moka`] cache, with the same data model and guard
//! semantics as Redis (see [`super`] and `redis_lua.rs`). The cache
//! protocol on top is `protocol.rs`; [`MemoryStore`] is the two together.
//!
//! - One cache entry per logical key: a record of entry fields (scope →
//!   encoded entry), a generation counter, a "written by cachegate" mark,
//!   the tags indexing it and an expiry. Records are never changed in place:
//!   every change builds a new record (a new *version*, with a new id) inside
//!   moka's per-key `and_compute_with`, so a fill and a purge of the same key
//!   are serialized.
//! - The purge epoch is an atomic counter. Its bumps wait behind a write
//!   fence that fills hold (shared) across their check and store, so once a
//!   bump is done every fill that passed the old epoch has landed in the
//!   cache (and in the tag index), and the walk that follows sees it.
//! - The cache is bounded by entries and bytes at once: a record weighs at
//!   least `max_bytes / max_entries`, and the capacity is `max_bytes`. When
//!   moka evicts a record that carries a generation (a tombstone, or a
//!   record refilled after a purge) for size, the epoch is bumped: the key's
//!   generation falls back to 0 and could otherwise meet an old guard again.
//!   moka runs that listener under its key lock, which a later write of the
//!   same key waits for, so no purge can recreate the key before the bump.
//! - Tags and credential scopes: a [`TagIndex`] (`memory_index.rs`). Every
//!   version put with tags indexes the key under all of them (a record
//!   keeps the tags of earlier fills while it lives); a version removed
//!   (evicted, purged, cleared) takes its members with it, so members leave
//!   with their records and the index never outgrows the live records.
//! - Expired records are invisible, whether or not moka has dropped them yet.

use super::backend::{Backend, Change, Fill, Index, Keys, Member, Page};
use super::entry::TTL_OFFSET;
use super::glob::glob_match;
use super::memory_index::TagIndex;
use super::protocol::Protocol;
use super::scope_index;
use super::{FillGuard, Record, StoreResult};
use crate::rules::INTERNAL_PREFIX;
use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// The memory store: the cache protocol on the in-process backend.
pub type MemoryStore = Protocol<MemoryBackend>;

impl MemoryStore {
    /// A store holding at most `max_entries` records and about `max_bytes`
    /// bytes of keys, entries and tags. `secret` keys credential-scope
    /// hashes; a random one is made when none is configured.
    pub fn new(max_entries: u64, max_bytes: u64, tombstone_ttl: Duration, secret: Option<&str>) -> MemoryStore {
        let backend = MemoryBackend::new(max_entries, max_bytes, tombstone_ttl);
        Protocol::over(Arc::new(backend), secret)
    }

    /// See [`MemoryBackend::run_pending_tasks`].
    pub fn run_pending_tasks(&self) {
        self.backend().run_pending_tasks();
    }
}

/// Records visited between two yields to the runtime while sweeping.
const SWEEP_BATCH: usize = 256;
/// Bytes a record costs besides its key, field names and values.
const RECORD_OVERHEAD: u64 = 64;
/// Bytes a field costs besides its name and value.
const FIELD_OVERHEAD: u64 = 16;
/// Bytes a tag costs (in the record and in the index) besides twice its
/// name and the key.
const TAG_OVERHEAD: u64 = 96;
/// How an encoded entry starts (see [`super::entry`]); other fields (such
/// as `Vary` markers) are not entries, and a soft purge leaves them alone.
const ENTRY_MAGIC: &[u8] = b"CG";
/// Length of the `ttl_ms` field a soft purge zeroes.
const TTL_LEN: usize = 8;

/// One version of a logical key's record.
pub(super) struct Rec {
    /// Entry fields (scope → encoded entry).
    fields: BTreeMap<String, Bytes>,
    /// The purge generation (`__gen`); 0 when never purged.
    generation: u64,
    /// Written by a fill (`__cg`); a bare tombstone is not.
    marked: bool,
    /// `None`: never expires (only when `now + ttl` overflows).
    pub(super) expires_at: Option<Instant>,
    /// The tags indexing the key (those of every fill since it was created).
    pub(super) tags: BTreeSet<String>,
    /// Unique to this version: the tag index names the version that indexed
    /// a key, so removing an old version never unindexes a newer one.
    pub(super) id: u64,
}

impl Rec {
    fn alive(&self, now: Instant) -> bool {
        self.expires_at.map_or(true, |t| t > now)
    }

    fn has_entries(&self) -> bool {
        !self.fields.is_empty()
    }

    /// Whether cachegate wrote it and it holds entries (what scans, records
    /// and clears deal with).
    fn is_cached(&self) -> bool {
        self.marked && self.has_entries()
    }

    /// Whether a field holds an encoded entry (what a soft purge marks stale).
    fn holds_entry(&self) -> bool {
        self.fields.values().any(|v| is_entry(v))
    }

    fn bytes(&self, key: &str) -> u64 {
        let fields: u64 = self
            .fields
            .iter()
            .map(|(f, v)| f.len() as u64 + v.len() as u64 + FIELD_OVERHEAD)
            .sum();
        let tags: u64 = self
            .tags
            .iter()
            .map(|t| 2 * (t.len() as u64 + key.len() as u64) + TAG_OVERHEAD)
            .sum();
        RECORD_OVERHEAD + key.len() as u64 + fields + tags
    }
}

type Value = Arc<Rec>;

fn is_entry(value: &[u8]) -> bool {
    value.starts_with(ENTRY_MAGIC)
}

/// An entry with its `ttl_ms` set to 0 (stale from now on, still servable
/// within its stale windows); the same bytes when it already was, or when
/// it is too short to have the field.
fn stale_entry(value: &Bytes) -> Bytes {
    let ttl = TTL_OFFSET..TTL_OFFSET + TTL_LEN;
    match value.get(ttl.clone()) {
        Some(ms) if ms.iter().any(|&b| b != 0) => {
            let mut stale = value.to_vec();
            stale[ttl].fill(0);
            Bytes::from(stale)
        }
        _ => value.clone(),
    }
}

/// Tells moka when a record expires: exactly at its `expires_at`.
struct RecordExpiry;

impl Expiry<String, Value> for RecordExpiry {
    fn expire_after_create(&self, _key: &String, value: &Value, created_at: Instant) -> Option<Duration> {
        value.expires_at.map(|t| t.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Value,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        value.expires_at.map(|t| t.saturating_duration_since(updated_at))
    }
}

/// Turns the two bounds into moka weights: `capacity` weight units in all,
/// and a record weighs at least `floor` units, so at most `max_entries` fit.
#[derive(Debug, Clone, Copy)]
struct Sizing {
    /// Bytes per weight unit (1 unless `max_bytes` exceeds `u32::MAX`, since
    /// a weight is a `u32`).
    unit: u64,
    capacity: u64,
    floor: u64,
}

impl Sizing {
    fn new(max_entries: u64, max_bytes: u64) -> Sizing {
        let unit = max_bytes.div_ceil(u64::from(u32::MAX)).max(1);
        let capacity = max_bytes / unit;
        // Rounded up, so that capacity / floor <= max_entries.
        let floor = capacity.div_ceil(max_entries.max(1));
        Sizing { unit, capacity, floor }
    }

    fn weight(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.unit).max(self.floor)
    }

    fn moka_weight(&self, bytes: u64) -> u32 {
        u32::try_from(self.weight(bytes)).unwrap_or(u32::MAX)
    }
}

pub struct MemoryBackend {
    cache: Cache<String, Value>,
    /// The purge epoch; also bumped by the eviction listener.
    epoch: Arc<AtomicU64>,
    /// Fills hold it shared from their epoch check to their store; epoch
    /// bumps by pattern and tag purges and clears take it exclusively.
    fence: RwLock<()>,
    /// Shared with the eviction listener. A leaf lock: nothing else is
    /// locked, and no cache call made, while it is held.
    tags: Arc<Mutex<TagIndex>>,
    /// The id of the next record version.
    next_id: AtomicU64,
    sizing: Sizing,
    tombstone_ttl: Duration,
    /// Running totals by instance, then by counter name.
    counters: Mutex<BTreeMap<String, BTreeMap<String, i64>>>,
}

fn lock_tags(tags: &Mutex<TagIndex>) -> MutexGuard<'_, TagIndex> {
    tags.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryBackend {
    /// A backend holding at most `max_entries` records and about
    /// `max_bytes` bytes of keys, entries and tags.
    pub fn new(max_entries: u64, max_bytes: u64, tombstone_ttl: Duration) -> MemoryBackend {
        let sizing = Sizing::new(max_entries, max_bytes);
        let epoch = Arc::new(AtomicU64::new(0));
        let tags = Arc::new(Mutex::new(TagIndex::default()));
        let listener_epoch = epoch.clone();
        let listener_tags = tags.clone();
        let cache = Cache::builder()
            .max_capacity(sizing.capacity)
            .weigher(move |key: &String, value: &Value| sizing.moka_weight(value.bytes(key)))
            .expire_after(RecordExpiry)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |key: Arc<String>, value: Value, cause| {
                if cause == RemovalCause::Size && value.generation > 0 {
                    listener_epoch.fetch_add(1, Ordering::SeqCst);
                }
                // A replacing version indexed itself already (under a new id).
                if cause != RemovalCause::Replaced && !value.tags.is_empty() {
                    lock_tags(&listener_tags).unindex(&key, &value);
                }
            })
            .build();
        MemoryBackend {
            cache,
            epoch,
            fence: RwLock::new(()),
            tags,
            next_id: AtomicU64::new(1),
            sizing,
            tombstone_ttl,
            counters: Mutex::new(BTreeMap::new()),
        }
    }

    /// Runs moka's pending maintenance now (evictions, expirations), which
    /// otherwise happens in small steps along with later calls, and drops
    /// expired tag index members.
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
        lock_tags(&self.tags).prune(Instant::now());
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Bumps the epoch once every fill that passed the old one has stored.
    fn bump_epoch_now(&self) {
        let _fence = self.fence.write().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn live(&self, key: &str) -> Option<Value> {
        self.cache.get(key).filter(|r| r.alive(Instant::now()))
    }

    /// Indexes a version about to be put (after dropping expired members).
    fn index_version(&self, key: &str, record: &Rec, now: Instant) {
        if record.tags.is_empty() {
            return;
        }
        let mut tags = lock_tags(&self.tags);
        tags.prune(now);
        tags.index(key, record);
    }

    /// Unindexes a version about to be replaced by a tombstone or removed.
    fn unindex_version(&self, key: &str, record: Option<&Rec>) {
        if let Some(record) = record.filter(|r| !r.tags.is_empty()) {
            lock_tags(&self.tags).unindex(key, record);
        }
    }

    fn fill_now(&self, fill: Fill<'_>) -> bool {
        let (key, guard) = (fill.key, fill.guard);
        // As the Redis script: the record lives at least max(ttl, 1 ms).
        let ttl = fill.ttl.max(Duration::from_millis(1));
        let _fence = self.fence.read().unwrap_or_else(PoisonError::into_inner);
        let mut stored = false;
        self.cache.entry_by_ref(key).and_compute_with(|current| {
            let now = Instant::now();
            let current = current.map(|e| e.into_value()).filter(|r| r.alive(now));
            let generation = current.as_ref().map_or(0, |r| r.generation);
            if generation != guard.generation || self.epoch() != guard.epoch {
                return Op::Nop;
            }
            let wanted = now.checked_add(ttl);
            let expires_at = match current.as_ref().map(|r| r.expires_at) {
                None => wanted,
                Some(None) => None,
                Some(Some(t)) => wanted.map(|w| w.max(t)),
            };
            let (mut fields, mut record_tags) = current.map(|r| (r.fields.clone(), r.tags.clone())).unwrap_or_default();
            fields.insert(fill.field.to_string(), fill.value);
            record_tags.extend(fill.indexes.iter().map(|index| tag_name(*index)));
            let record = Rec {
                fields,
                generation,
                marked: true,
                expires_at,
                tags: record_tags,
                id: self.next_id(),
            };
            if self.sizing.weight(record.bytes(key)) > self.sizing.capacity {
                // It could never stay: moka would evict it (and the key's
                // other entries) at once.
                return Op::Nop;
            }
            // Under the fence: a tag purge that bumps the epoch after this
            // fill passed the old one finds the key in the index.
            self.index_version(key, &record, now);
            stored = true;
            Op::Put(Arc::new(record))
        });
        stored
    }

    /// What a soft purge leaves of a live record: its entries marked stale
    /// (other fields, its expiry and its tags as they were) under the next
    /// generation, and whether it held an entry.
    fn softened(&self, record: &Rec) -> (Rec, bool) {
        let fields = record
            .fields
            .iter()
            .map(|(f, v)| (f.clone(), if is_entry(v) { stale_entry(v) } else { v.clone() }))
            .collect();
        let softened = Rec {
            fields,
            generation: record.generation.wrapping_add(1),
            marked: record.marked,
            expires_at: record.expires_at,
            tags: record.tags.clone(),
            id: self.next_id(),
        };
        (softened, record.holds_entry())
    }

    /// Purges one key; returns whether it held entries (any field for a
    /// hard purge, an encoded entry for a soft one). Hard: the key becomes a
    /// tombstone of the next generation, unindexed from its tags. Soft: a
    /// live record with fields is [softened](Self::softened); any other key
    /// becomes a tombstone as with a hard purge.
    fn purge_now(&self, key: &str, soft: bool) -> bool {
        let mut had = false;
        self.cache.entry_by_ref(key).and_compute_with(|current| {
            let now = Instant::now();
            let current = current.map(|e| e.into_value()).filter(|r| r.alive(now));
            if let Some(record) = current.as_ref().filter(|r| soft && r.has_entries()) {
                let (softened, held) = self.softened(record);
                had = held;
                self.index_version(key, &softened, now);
                return Op::Put(Arc::new(softened));
            }
            had = current.as_ref().is_some_and(|r| r.has_entries());
            self.unindex_version(key, current.as_deref());
            let generation = current.map_or(0, |r| r.generation).wrapping_add(1);
            Op::Put(Arc::new(Rec {
                fields: BTreeMap::new(),
                generation,
                marked: false,
                expires_at: now.checked_add(self.tombstone_ttl),
                tags: BTreeSet::new(),
                id: self.next_id(),
            }))
        });
        had
    }

    /// Removes `scope`'s fields (and variants) from `key`'s record, under
    /// the next generation, unindexed from the scope's `tag`; a record left
    /// without fields becomes a tombstone. Returns whether it held any.
    fn unscope_now(&self, key: &str, scope: &str, tag: &str) -> bool {
        let mut had = false;
        self.cache.entry_by_ref(key).and_compute_with(|current| {
            let now = Instant::now();
            let Some(record) = current.map(|e| e.into_value()).filter(|r| r.alive(now)) else {
                return Op::Nop;
            };
            let fields: BTreeMap<String, Bytes> = record
                .fields
                .iter()
                .filter(|(f, _)| !scope_index::belongs_to(f, scope))
                .map(|(f, v)| (f.clone(), v.clone()))
                .collect();
            had = fields.len() != record.fields.len();
            self.unindex_version(key, Some(&record));
            let generation = record.generation.wrapping_add(1);
            let replacement = if fields.is_empty() {
                Rec {
                    fields,
                    generation,
                    marked: false,
                    expires_at: now.checked_add(self.tombstone_ttl),
                    tags: BTreeSet::new(),
                    id: self.next_id(),
                }
            } else {
                let mut tags = record.tags.clone();
                tags.remove(tag);
                Rec {
                    fields,
                    generation,
                    marked: record.marked,
                    expires_at: record.expires_at,
                    tags,
                    id: self.next_id(),
                }
            };
            self.index_version(key, &replacement, now);
            Op::Put(Arc::new(replacement))
        });
        had
    }

    /// Removes `key` if it is alive and `pred` holds; returns whether it
    /// did. An expired record is dropped too, but not counted.
    fn remove_if(&self, key: &str, pred: impl FnOnce(&Rec) -> bool) -> bool {
        let mut removed = false;
        self.cache.entry_by_ref(key).and_compute_with(|current| match current {
            None => Op::Nop,
            Some(entry) => {
                let record = entry.into_value();
                if !record.alive(Instant::now()) {
                    Op::Remove
                } else if pred(&record) {
                    self.unindex_version(key, Some(&record));
                    removed = true;
                    Op::Remove
                } else {
                    Op::Nop
                }
            }
        });
        removed
    }
}

/// The tag an index stands for in the [`TagIndex`].
fn tag_name(index: Index<'_>) -> String {
    match index {
        Index::Tag(tag) => tag.to_string(),
        Index::Scope(scope) => scope_index::internal_tag(scope),
    }
}

/// Whether a walk with `pattern` covers `key`, as the Redis backend's
/// `SCAN MATCH <escaped prefix><pattern>` would cover `<prefix><key>`:
/// internal keys are left out, and behind a prefix the empty key matches
/// any pattern made only of `*`s (Redis's matcher skips trailing stars once
/// the string is used up), where a bare `glob_match("*", "")` is false.
fn selects(pattern: &str, key: &str) -> bool {
    if key.starts_with(INTERNAL_PREFIX) {
        false
    } else if key.is_empty() {
        pattern.bytes().all(|c| c == b'*')
    } else {
        glob_match(pattern.as_bytes(), key.as_bytes())
    }
}

impl Backend for MemoryBackend {
    const KIND: &'static str = "memory";
    const SHARED: bool = false;
    /// Every walk is one page.
    type Cursor = ();

    async fn read(&self, key: &str, field: &str) -> StoreResult<Option<Bytes>> {
        Ok(self.live(key).and_then(|r| r.fields.get(field).cloned()))
    }

    async fn record(&self, key: &str) -> StoreResult<Option<Record>> {
        let Some(record) = self.live(key).filter(|r| r.is_cached()) else {
            return Ok(None);
        };
        let now = Instant::now();
        Ok(Some(Record {
            fields: record.fields.iter().map(|(f, v)| (f.clone(), v.clone())).collect(),
            ttl: record.expires_at.map(|t| t.saturating_duration_since(now)),
        }))
    }

    async fn guard(&self, key: &str) -> StoreResult<FillGuard> {
        // The epoch before the record: an eviction of the record in between
        // then shows as an epoch change, never as a generation that a later
        // purge could recreate.
        let epoch = self.epoch();
        let generation = self.live(key).map_or(0, |r| r.generation);
        Ok(FillGuard {
            generation,
            epoch,
            ..FillGuard::default()
        })
    }

    async fn write(&self, fill: Fill<'_>) -> StoreResult<bool> {
        Ok(self.fill_now(fill))
    }

    async fn change(&self, keys: &[String], change: Change<'_>) -> StoreResult<u64> {
        let scope_tag = match change {
            Change::Unscope(scope) => scope_index::internal_tag(scope),
            _ => String::new(),
        };
        let mut changed = 0;
        for (i, key) in keys.iter().enumerate() {
            if i % SWEEP_BATCH == SWEEP_BATCH - 1 {
                tokio::task::yield_now().await;
            }
            let done = match change {
                Change::Drop => self.purge_now(key, false),
                Change::Stale => self.purge_now(key, true),
                Change::Unscope(scope) => self.unscope_now(key, scope, &scope_tag),
                // As Redis's UNLINK count: every live key removed counts.
                Change::Unlink => self.remove_if(key, |_| true),
            };
            changed += u64::from(done);
        }
        Ok(changed)
    }

    async fn bump_epoch(&self) -> StoreResult<()> {
        self.bump_epoch_now();
        Ok(())
    }

    async fn scan(&self, pattern: &str, keys: Keys, _cursor: ()) -> StoreResult<Page<String, ()>> {
        let now = Instant::now();
        let mut items = Vec::new();
        for (i, (key, record)) in self.cache.iter().enumerate() {
            if i % SWEEP_BATCH == SWEEP_BATCH - 1 {
                tokio::task::yield_now().await;
            }
            let wanted = match keys {
                Keys::Any => true,
                Keys::Records => record.is_cached(),
            };
            if wanted && record.alive(now) && selects(pattern, &key) {
                items.push(key.as_str().to_string());
            }
        }
        Ok(Page { items, next: None })
    }

    async fn index_page(&self, index: Index<'_>, _cursor: ()) -> StoreResult<Page<Member, ()>> {
        let tag = tag_name(index);
        let mut tags = lock_tags(&self.tags);
        tags.prune(Instant::now());
        let items = tags
            .members(&tag)
            .map(|(key, id)| Member {
                key: key.clone(),
                version: id.to_string(),
                live: true,
            })
            .collect();
        Ok(Page { items, next: None })
    }

    async fn publish_counters(&self, instance: &str, totals: &[(String, i64)]) -> StoreResult<()> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = counters.entry(instance.to_string()).or_default();
        for (name, total) in totals {
            mine.insert(name.clone(), *total);
        }
        Ok(())
    }

    async fn counter_totals(&self) -> StoreResult<Vec<Vec<(String, i64)>>> {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(counters
            .values()
            .map(|totals| totals.iter().map(|(n, v)| (n.clone(), *v)).collect())
            .collect())
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "memory_purge_tests.rs"]
mod purge_tests;
