//! The embedded in-process store: the same data model and guard semantics
//! as the Redis store (see [`super`] and the Lua scripts in `redis.rs`),
//! kept in a bounded [`moka`] cache.
//!
//! - One cache entry per logical key: a record of entry fields (scope →
//!   encoded entry), a generation counter, a "written by cachegate" mark,
//!   the tags indexing it and an expiry. Records are never changed in place:
//!   every change builds a new record (a new *version*, with a new id) inside
//!   moka's per-key `and_compute_with`, so a fill and a purge of the same key
//!   are serialized.
//! - The purge epoch is an atomic counter. Pattern and tag purges and clears
//!   bump it behind a write fence that fills hold (shared) across their check
//!   and store, so once the bump is done every fill that passed the old epoch
//!   has landed in the cache (and in the tag index) and the following sweep
//!   sees it.
//! - The cache is bounded by entries and bytes at once: a record weighs at
//!   least `max_bytes / max_entries`, and the capacity is `max_bytes`. When
//!   moka evicts a record that carries a generation (a tombstone, or a
//!   record refilled after a purge) for size, the epoch is bumped: the key's
//!   generation falls back to 0 and could otherwise meet an old guard again.
//!   moka runs that listener under its key lock, which a later write of the
//!   same key waits for, so no purge can recreate the key before the bump.
//! - Tags: a [`TagIndex`] maps each tag to the keys it indexes, each with
//!   the id and expiry of the record version that indexed it. Every version
//!   put with tags indexes the key under all of them (a record keeps the tags
//!   of earlier fills while it lives); expired members leave the index on
//!   every index write, and a version removed otherwise (evicted, purged,
//!   cleared) takes its members with it, but only those still naming its id:
//!   a newer version of the key that indexed itself meanwhile stays. So the
//!   index never outgrows the live records, and a record's tags are weighed
//!   with it.
//! - Expired records are invisible, whether or not moka has dropped them yet.

use super::entry::TTL_OFFSET;
use super::glob::glob_match;
use super::scope_index;
use super::{FillGuard, Lookup, Record, Store, StoreInfo, StoreResult};
use crate::rules::INTERNAL_PREFIX;
use async_trait::async_trait;
use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

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
struct Rec {
    /// Entry fields (scope → encoded entry).
    fields: BTreeMap<String, Bytes>,
    /// The purge generation (`__gen`); 0 when never purged.
    generation: u64,
    /// Written by a fill (`__cg`); a bare tombstone is not.
    marked: bool,
    /// `None`: never expires (only when `now + ttl` overflows).
    expires_at: Option<Instant>,
    /// The tags indexing the key (those of every fill since it was created).
    tags: BTreeSet<String>,
    /// Unique to this version: the tag index names the version that indexed
    /// a key, so removing an old version never unindexes a newer one.
    id: u64,
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

/// A key's place in a tag's index: the record version that put it there,
/// and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    id: u64,
    expires_at: Option<Instant>,
}

/// Tag → logical key → [`Member`], and every member that expires ordered by
/// expiry, so expired ones leave in time proportional to their number.
/// Invariant: `(t, tag, key)` is in `by_expiry` iff
/// `tags[tag][key].expires_at == Some(t)`.
#[derive(Default)]
struct TagIndex {
    tags: HashMap<String, HashMap<String, Member>>,
    by_expiry: BTreeSet<(Instant, String, String)>,
}

impl TagIndex {
    /// Indexes `key` under `tag` (replacing what indexed it before).
    fn add(&mut self, tag: &str, key: &str, member: Member) {
        let members = match self.tags.get_mut(tag) {
            Some(members) => members,
            None => self.tags.entry(tag.to_string()).or_default(),
        };
        let old = members.insert(key.to_string(), member);
        if let Some(t) = old.and_then(|m| m.expires_at) {
            self.by_expiry.remove(&(t, tag.to_string(), key.to_string()));
        }
        if let Some(t) = member.expires_at {
            self.by_expiry.insert((t, tag.to_string(), key.to_string()));
        }
    }

    /// Unindexes `key` from `tag` if the version `id` indexed it.
    fn remove(&mut self, tag: &str, key: &str, id: u64) {
        let Some(members) = self.tags.get_mut(tag) else {
            return;
        };
        if members.get(key).map(|m| m.id) != Some(id) {
            return;
        }
        let old = members.remove(key);
        if members.is_empty() {
            self.tags.remove(tag);
        }
        if let Some(t) = old.and_then(|m| m.expires_at) {
            self.by_expiry.remove(&(t, tag.to_string(), key.to_string()));
        }
    }

    /// Indexes `key` under every tag of `record`.
    fn index(&mut self, key: &str, record: &Rec) {
        let member = Member {
            id: record.id,
            expires_at: record.expires_at,
        };
        for tag in &record.tags {
            self.add(tag, key, member);
        }
    }

    /// Unindexes `key` from every tag `record` indexed it under.
    fn unindex(&mut self, key: &str, record: &Rec) {
        for tag in &record.tags {
            self.remove(tag, key, record.id);
        }
    }

    /// Drops the members expired at `now`.
    fn prune(&mut self, now: Instant) {
        while self.by_expiry.first().is_some_and(|(t, _, _)| *t <= now) {
            let Some((_, tag, key)) = self.by_expiry.pop_first() else {
                break;
            };
            if let Some(members) = self.tags.get_mut(&tag) {
                members.remove(&key);
                if members.is_empty() {
                    self.tags.remove(&tag);
                }
            }
        }
    }

    /// The keys `tag` indexes, with the version that indexed each.
    fn members(&self, tag: &str) -> impl Iterator<Item = (&String, u64)> {
        self.tags.get(tag).into_iter().flatten().map(|(k, m)| (k, m.id))
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

pub struct MemoryStore {
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
    secret: Bytes,
    /// Running totals by instance, then by counter name.
    counters: Mutex<BTreeMap<String, BTreeMap<String, i64>>>,
    started: Instant,
}

fn lock_tags(tags: &Mutex<TagIndex>) -> MutexGuard<'_, TagIndex> {
    tags.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryStore {
    /// A store holding at most `max_entries` records and about `max_bytes`
    /// bytes of keys, entries and tags. `secret` keys credential-scope
    /// hashes; a random one is made when none is configured.
    pub fn new(max_entries: u64, max_bytes: u64, tombstone_ttl: Duration, secret: Option<&str>) -> MemoryStore {
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
        let secret = match secret {
            Some(s) => Bytes::copy_from_slice(s.as_bytes()),
            None => Bytes::from(hex::encode(rand::random::<[u8; 32]>())),
        };
        MemoryStore {
            cache,
            epoch,
            fence: RwLock::new(()),
            tags,
            next_id: AtomicU64::new(1),
            sizing,
            tombstone_ttl,
            secret,
            counters: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
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
    fn bump_epoch(&self) {
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
    fn index(&self, key: &str, record: &Rec, now: Instant) {
        if record.tags.is_empty() {
            return;
        }
        let mut tags = lock_tags(&self.tags);
        tags.prune(now);
        tags.index(key, record);
    }

    /// Unindexes a version about to be replaced by a tombstone or removed.
    fn unindex(&self, key: &str, record: Option<&Rec>) {
        if let Some(record) = record.filter(|r| !r.tags.is_empty()) {
            lock_tags(&self.tags).unindex(key, record);
        }
    }

    fn fill_now(&self, key: &str, field: &str, value: Bytes, ttl: Duration, guard: FillGuard, tags: &[String]) -> bool {
        // As the Redis script: the record lives at least max(ttl, 1 ms).
        let ttl = ttl.max(Duration::from_millis(1));
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
            fields.insert(field.to_string(), value);
            record_tags.extend(tags.iter().cloned());
            // A credential scope's entries are indexed like a tag's.
            record_tags.extend(scope_index::credential_scope(field).map(scope_index::internal_tag));
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
            self.index(key, &record, now);
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
                self.index(key, &softened, now);
                return Op::Put(Arc::new(softened));
            }
            had = current.as_ref().is_some_and(|r| r.has_entries());
            self.unindex(key, current.as_deref());
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
            self.unindex(key, Some(&record));
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
            self.index(key, &replacement, now);
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
                    self.unindex(key, Some(&record));
                    removed = true;
                    Op::Remove
                } else {
                    Op::Nop
                }
            }
        });
        removed
    }

    /// Soft-purges `key` if it is alive and holds an entry; returns whether
    /// it did. An expired record is dropped.
    fn soften_if_cached(&self, key: &str) -> bool {
        let mut softened = false;
        self.cache.entry_by_ref(key).and_compute_with(|current| {
            let Some(record) = current.map(|e| e.into_value()) else {
                return Op::Nop;
            };
            let now = Instant::now();
            if !record.alive(now) {
                return Op::Remove;
            }
            if !record.holds_entry() {
                return Op::Nop;
            }
            let (record, _) = self.softened(&record);
            self.index(key, &record, now);
            softened = true;
            Op::Put(Arc::new(record))
        });
        softened
    }

    /// Applies `purge` to every key (internal ones left out) matching
    /// `pattern` (all when `None`); returns for how many it returned true.
    async fn sweep(&self, pattern: Option<&str>, purge: impl Fn(&str) -> bool) -> u64 {
        let mut purged = 0;
        for (i, (key, _)) in self.cache.iter().enumerate() {
            if i % SWEEP_BATCH == SWEEP_BATCH - 1 {
                tokio::task::yield_now().await;
            }
            if !selects(pattern, &key) {
                continue;
            }
            if purge(&key) {
                purged += 1;
            }
        }
        purged
    }
}

/// Whether a sweep or scan with `pattern` (every key when `None`) covers
/// `key`, as the Redis store's `SCAN MATCH <escaped prefix><pattern>` would
/// cover `<prefix><key>`: internal keys are left out, and behind a prefix
/// the empty key matches any pattern made only of `*`s (Redis's matcher
/// skips trailing stars once the string is used up), where a bare
/// `glob_match("*", "")` is false.
fn selects(pattern: Option<&str>, key: &str) -> bool {
    if key.starts_with(INTERNAL_PREFIX) {
        return false;
    }
    match pattern {
        None => true,
        Some(p) if key.is_empty() => p.bytes().all(|c| c == b'*'),
        Some(p) => glob_match(p.as_bytes(), key.as_bytes()),
    }
}

/// Reads a `/proc` file, `None` when it cannot.
fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The value of a `Name:   123 kB` line, in bytes.
fn proc_kb(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb.saturating_mul(1024))
    })
}

/// Resident set size, from `/proc/self/statm`.
fn resident_bytes() -> u64 {
    read_proc("/proc/self/statm")
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages.saturating_mul(4096))
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn is_up(&self) -> bool {
        true
    }

    fn scope_secret(&self) -> Option<Bytes> {
        Some(self.secret.clone())
    }

    async fn lookup(&self, key: &str, field: &str) -> StoreResult<Lookup> {
        // The epoch is read before the record: an eviction of the record in
        // between then shows as an epoch change, never as a generation that
        // a later purge could recreate.
        let epoch = self.epoch();
        let record = self.live(key);
        if let Some(entry) = record.as_ref().and_then(|r| r.fields.get(field)) {
            return Ok(Lookup {
                entry: Some(entry.clone()),
                guard: FillGuard::default(),
            });
        }
        let generation = record.map_or(0, |r| r.generation);
        Ok(Lookup {
            entry: None,
            guard: FillGuard {
                generation,
                epoch,
                ..FillGuard::default()
            },
        })
    }

    async fn fill_guard(&self, key: &str) -> StoreResult<FillGuard> {
        let epoch = self.epoch();
        let generation = self.live(key).map_or(0, |r| r.generation);
        Ok(FillGuard {
            generation,
            epoch,
            ..FillGuard::default()
        })
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
        Ok(self.fill_now(key, field, value, ttl, guard, tags))
    }

    async fn purge_keys(&self, keys: &[String], soft: bool) -> StoreResult<u64> {
        Ok(keys.iter().filter(|k| self.purge_now(k, soft)).count() as u64)
    }

    async fn purge_pattern(&self, pattern: &str, soft: bool) -> StoreResult<u64> {
        // Bump the epoch first: a fill that looked up before this point will
        // not store, even for a key this sweep never sees.
        self.bump_epoch();
        if soft {
            // Every live record holding an entry counts.
            return Ok(self.sweep(Some(pattern), |key| self.soften_if_cached(key)).await);
        }
        // As Redis's UNLINK count, every live key removed counts, tombstones
        // included.
        Ok(self.sweep(Some(pattern), |key| self.remove_if(key, |_| true)).await)
    }

    async fn purge_tags(&self, tags: &[String], soft: bool) -> StoreResult<u64> {
        // Bump the epoch first: a fill that looked up before this point will
        // not store, even for a key it is about to add to one of the tags.
        // Once the bump is done, every fill that passed the old epoch is in
        // the index.
        self.bump_epoch();
        let indexed: Vec<(&String, String, u64)> = {
            let mut index = lock_tags(&self.tags);
            index.prune(Instant::now());
            tags.iter()
                .flat_map(|tag| index.members(tag).map(move |(key, id)| (tag, key.clone(), id)))
                .collect()
        };
        // A key under several of the tags is purged (and counted) once.
        let keys: BTreeSet<&str> = indexed.iter().map(|(_, key, _)| key.as_str()).collect();
        let mut purged = 0;
        for (i, key) in keys.into_iter().enumerate() {
            if i % SWEEP_BATCH == SWEEP_BATCH - 1 {
                tokio::task::yield_now().await;
            }
            if self.purge_now(key, soft) {
                purged += 1;
            }
        }
        if !soft {
            // Drop the tags' indexes as they were: each purge unindexed its
            // key's current version already; this drops members naming
            // versions gone otherwise, and leaves those of fills since.
            let mut index = lock_tags(&self.tags);
            for (tag, key, id) in &indexed {
                index.remove(tag, key, *id);
            }
        }
        Ok(purged)
    }

    async fn purge_scope(&self, scope: &str) -> StoreResult<u64> {
        // As a tag purge: once the bump is done, every fill that passed the
        // old epoch is in the index.
        self.bump_epoch();
        let tag = scope_index::internal_tag(scope);
        let indexed: Vec<(String, u64)> = {
            let mut index = lock_tags(&self.tags);
            index.prune(Instant::now());
            index.members(&tag).map(|(key, id)| (key.clone(), id)).collect()
        };
        let mut purged = 0;
        for (i, (key, _)) in indexed.iter().enumerate() {
            if i % SWEEP_BATCH == SWEEP_BATCH - 1 {
                tokio::task::yield_now().await;
            }
            if self.unscope_now(key, scope, &tag) {
                purged += 1;
            }
        }
        let mut index = lock_tags(&self.tags);
        for (key, id) in &indexed {
            index.remove(&tag, key, *id);
        }
        Ok(purged)
    }

    async fn scan_keys(&self, pattern: &str, limit: usize) -> StoreResult<(u64, Vec<String>)> {
        let now = Instant::now();
        let mut matched = 0u64;
        // The `limit` smallest keys so far (a max-heap).
        let mut smallest: BinaryHeap<String> = BinaryHeap::new();
        for (i, (key, record)) in self.cache.iter().enumerate() {
            if i % SWEEP_BATCH == SWEEP_BATCH - 1 {
                tokio::task::yield_now().await;
            }
            if !record.alive(now) || !record.is_cached() || !selects(Some(pattern), &key) {
                continue;
            }
            matched += 1;
            if limit == 0 {
                continue;
            }
            if smallest.len() < limit {
                smallest.push(key.as_str().to_string());
            } else if smallest.peek().is_some_and(|largest| key.as_str() < largest.as_str()) {
                smallest.pop();
                smallest.push(key.as_str().to_string());
            }
        }
        Ok((matched, smallest.into_sorted_vec()))
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

    async fn clear(&self, pattern: Option<&str>) -> StoreResult<u64> {
        self.bump_epoch();
        Ok(self.sweep(pattern, |key| self.remove_if(key, Rec::is_cached)).await)
    }

    async fn publish_counters(&self, instance: &str, totals: &[(String, i64)]) -> StoreResult<()> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = counters.entry(instance.to_string()).or_default();
        for (name, total) in totals {
            mine.insert(name.clone(), *total);
        }
        Ok(())
    }

    async fn counters(&self) -> StoreResult<Vec<(String, i64)>> {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sums: BTreeMap<String, i64> = BTreeMap::new();
        for totals in counters.values() {
            for (name, v) in totals {
                let sum = sums.entry(name.clone()).or_insert(0);
                *sum = sum.saturating_add(*v);
            }
        }
        Ok(sums.into_iter().collect())
    }

    async fn info(&self) -> StoreResult<StoreInfo> {
        let now = Instant::now();
        let mut total_keys = 0u64;
        for (i, (_, record)) in self.cache.iter().enumerate() {
            if i % SWEEP_BATCH == SWEEP_BATCH - 1 {
                tokio::task::yield_now().await;
            }
            if record.alive(now) && record.has_entries() {
                total_keys += 1;
            }
        }
        let status = read_proc("/proc/self/status").unwrap_or_default();
        let meminfo = read_proc("/proc/meminfo").unwrap_or_default();
        Ok(StoreInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs(),
            connected_clients: 0,
            used_memory: resident_bytes(),
            peak_memory: proc_kb(&status, "VmHWM").unwrap_or(0),
            total_system_memory: proc_kb(&meminfo, "MemTotal").unwrap_or(0),
            total_keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry::{now_ms, Entry, Lifetime};
    use super::*;
    use http::{HeaderMap, HeaderValue, StatusCode};
    use std::sync::Barrier;

    const MIB: u64 = 1 << 20;

    fn store() -> MemoryStore {
        MemoryStore::new(10_000, 64 * MIB, Duration::from_secs(60), Some("s3cret"))
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    const HOUR: Duration = Duration::from_secs(3600);

    async fn put(s: &MemoryStore, key: &str, field: &str, value: &str) {
        let guard = s.fill_guard(key).await.unwrap();
        assert!(
            s.fill(key, field, b(value), HOUR, guard, &[]).await.unwrap(),
            "fill {key}/{field}"
        );
    }

    async fn hit(s: &MemoryStore, key: &str, field: &str) -> Option<Bytes> {
        s.lookup(key, field).await.unwrap().entry
    }

    #[tokio::test]
    async fn hit_after_fill() {
        let s = store();
        let miss = s.lookup("task:1", "scope-a").await.unwrap();
        assert!(miss.entry.is_none());
        assert_eq!(
            miss.guard,
            FillGuard {
                generation: 0,
                epoch: 0,
                reservation: 0,
            }
        );
        assert!(s
            .fill("task:1", "scope-a", b("A"), HOUR, miss.guard, &[])
            .await
            .unwrap());
        assert_eq!(hit(&s, "task:1", "scope-a").await, Some(b("A")));
        // Another scope of the same key misses, with the key's guard.
        let other = s.lookup("task:1", "scope-b").await.unwrap();
        assert!(other.entry.is_none());
        assert!(s
            .fill("task:1", "scope-b", b("B"), HOUR, other.guard, &[])
            .await
            .unwrap());
        assert_eq!(hit(&s, "task:1", "scope-a").await, Some(b("A")));
        assert_eq!(hit(&s, "task:1", "scope-b").await, Some(b("B")));
        // Replacing a field works with a fresh guard.
        let guard = s.fill_guard("task:1").await.unwrap();
        assert!(s.fill("task:1", "scope-a", b("A2"), HOUR, guard, &[]).await.unwrap());
        assert_eq!(hit(&s, "task:1", "scope-a").await, Some(b("A2")));
        assert_eq!(s.kind(), "memory");
        assert!(s.is_up());
    }

    #[tokio::test]
    async fn guard_refuses_fill_after_purge_keys() {
        let s = store();
        put(&s, "task:1", "a", "old").await;
        let stale = s.lookup("task:1", "b").await.unwrap().guard;
        let stale_absent = s.lookup("task:2", "a").await.unwrap().guard;
        assert_eq!(
            s.purge_keys(&["task:1".into(), "task:2".into(), "task:1".into()], false)
                .await
                .unwrap(),
            1
        );
        assert!(hit(&s, "task:1", "a").await.is_none());
        assert!(!s.fill("task:1", "b", b("stale"), HOUR, stale, &[]).await.unwrap());
        assert!(!s
            .fill("task:2", "a", b("stale"), HOUR, stale_absent, &[])
            .await
            .unwrap());
        assert!(hit(&s, "task:1", "b").await.is_none());
        assert!(hit(&s, "task:2", "a").await.is_none());
        // The tombstones carry the next generation (twice for task:1).
        let fresh = s.lookup("task:1", "b").await.unwrap().guard;
        assert_eq!(fresh.generation, 2);
        assert_eq!(s.fill_guard("task:2").await.unwrap().generation, 1);
        assert!(s.fill("task:1", "b", b("new"), HOUR, fresh, &[]).await.unwrap());
        assert_eq!(hit(&s, "task:1", "b").await, Some(b("new")));
        // The refilled record keeps its generation; purging again bumps it.
        assert_eq!(s.fill_guard("task:1").await.unwrap().generation, 2);
        assert_eq!(s.purge_keys(&["task:1".into()], false).await.unwrap(), 1);
        assert_eq!(s.fill_guard("task:1").await.unwrap().generation, 3);
    }

    #[tokio::test]
    async fn guard_refuses_fill_after_purge_pattern() {
        let s = store();
        put(&s, "task:1", "a", "x").await;
        put(&s, "task:2", "a", "x").await;
        put(&s, "user:1", "a", "x").await;
        s.purge_keys(&["task:3".into()], false).await.unwrap();
        let inflight_task = s.lookup("task:9", "a").await.unwrap().guard;
        let inflight_user = s.lookup("user:9", "a").await.unwrap().guard;
        // Removes both entries and the task:3 tombstone.
        assert_eq!(s.purge_pattern("task:*", false).await.unwrap(), 3);
        assert!(hit(&s, "task:1", "a").await.is_none());
        assert_eq!(hit(&s, "user:1", "a").await, Some(b("x")));
        // The epoch moved: no fill that looked up before stores, whatever key.
        assert!(!s
            .fill("task:9", "a", b("stale"), HOUR, inflight_task, &[])
            .await
            .unwrap());
        assert!(!s
            .fill("user:9", "a", b("stale"), HOUR, inflight_user, &[])
            .await
            .unwrap());
        let fresh = s.lookup("task:9", "a").await.unwrap().guard;
        assert_eq!(
            fresh,
            FillGuard {
                generation: 0,
                epoch: 1,
                reservation: 0,
            }
        );
        assert!(s.fill("task:9", "a", b("new"), HOUR, fresh, &[]).await.unwrap());
        assert_eq!(s.purge_pattern("nothing*", false).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn tombstone_expires() {
        let s = MemoryStore::new(100, MIB, Duration::from_millis(400), None);
        s.purge_keys(&["k".into()], false).await.unwrap();
        assert_eq!(s.fill_guard("k").await.unwrap().generation, 1);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(s.fill_guard("k").await.unwrap().generation, 0);
        assert!(s.fill("k", "a", b("v"), HOUR, FillGuard::default(), &[]).await.unwrap());
    }

    #[tokio::test]
    async fn entries_expire() {
        let s = store();
        let guard = s.fill_guard("k").await.unwrap();
        assert!(s
            .fill("k", "a", b("v"), Duration::from_millis(400), guard, &[])
            .await
            .unwrap());
        assert!(hit(&s, "k", "a").await.is_some());
        let ttl = s.record("k").await.unwrap().unwrap().ttl.unwrap();
        assert!(ttl <= Duration::from_millis(400) && ttl > Duration::ZERO, "{ttl:?}");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(hit(&s, "k", "a").await.is_none());
        assert!(s.record("k").await.unwrap().is_none());
        assert_eq!(s.scan_keys("*", 10).await.unwrap(), (0, vec![]));
        assert_eq!(s.clear(None).await.unwrap(), 0);
        assert_eq!(s.purge_keys(&["k".into()], false).await.unwrap(), 0);
        assert_eq!(s.info().await.unwrap().total_keys, 0);
    }

    #[tokio::test]
    async fn fill_extends_ttl_never_shortens() {
        let s = store();
        let guard = s.fill_guard("k").await.unwrap();
        assert!(s
            .fill("k", "a", b("v"), Duration::from_secs(100), guard, &[])
            .await
            .unwrap());
        assert!(s
            .fill("k", "b", b("v"), Duration::from_secs(1), guard, &[])
            .await
            .unwrap());
        let ttl = s.record("k").await.unwrap().unwrap().ttl.unwrap();
        assert!(ttl > Duration::from_secs(90), "{ttl:?}");
        assert!(s
            .fill("k", "c", b("v"), Duration::from_secs(1000), guard, &[])
            .await
            .unwrap());
        let ttl = s.record("k").await.unwrap().unwrap().ttl.unwrap();
        assert!(ttl > Duration::from_secs(990), "{ttl:?}");
        // A fill on a tombstone outlives the tombstone.
        s.purge_keys(&["t".into()], false).await.unwrap();
        let guard = s.fill_guard("t").await.unwrap();
        assert!(s.fill("t", "a", b("v"), HOUR, guard, &[]).await.unwrap());
        assert!(s.record("t").await.unwrap().unwrap().ttl.unwrap() > Duration::from_secs(3000));
    }

    fn live_records(s: &MemoryStore) -> (u64, u64) {
        s.run_pending_tasks();
        let now = Instant::now();
        s.cache
            .iter()
            .filter(|(_, r)| r.alive(now))
            .fold((0, 0), |(n, bytes), (k, r)| (n + 1, bytes + r.bytes(&k)))
    }

    #[tokio::test]
    async fn bounded_by_entries() {
        let s = MemoryStore::new(100, 64 * MIB, Duration::from_secs(60), None);
        for i in 0..1000 {
            put(&s, &format!("k{i}"), "a", "v").await;
        }
        let (n, _) = live_records(&s);
        assert!((50..=100).contains(&n), "{n} records");
        // The latest fill is there (LRU).
        assert!(hit(&s, "k999", "a").await.is_some());
    }

    #[tokio::test]
    async fn bounded_by_bytes() {
        let s = MemoryStore::new(1_000_000, 100_000, Duration::from_secs(60), None);
        let body = "x".repeat(1000);
        for i in 0..1000 {
            put(&s, &format!("k{i}"), "a", &body).await;
        }
        let (n, bytes) = live_records(&s);
        assert!(bytes <= 100_000 && n >= 50, "{n} records, {bytes} bytes");
        // A record that could never fit is refused, and leaves the key alone.
        put(&s, "big", "a", "small").await;
        let guard = s.fill_guard("big").await.unwrap();
        let huge = Bytes::from(vec![0u8; 200_000]);
        assert!(!s.fill("big", "b", huge, HOUR, guard, &[]).await.unwrap());
        assert_eq!(hit(&s, "big", "a").await, Some(b("small")));
    }

    #[test]
    fn sizing_bounds_both() {
        let s = Sizing::new(300, 1000);
        assert_eq!((s.unit, s.capacity, s.floor), (1, 1000, 4));
        assert!(s.capacity / s.floor <= 300);
        assert_eq!(s.weight(1), 4);
        assert_eq!(s.weight(50), 50);
        let s = Sizing::new(0, 0);
        assert_eq!(s.capacity, 0);
        let s = Sizing::new(1, 100 * u64::from(u32::MAX));
        assert!(s.capacity <= u64::from(u32::MAX));
        assert_eq!(s.floor, s.capacity);
        assert_eq!(s.moka_weight(u64::MAX), u32::MAX);
    }

    #[tokio::test]
    async fn evicting_a_generation_bumps_the_epoch() {
        let s = MemoryStore::new(10, 64 * MIB, Duration::from_secs(60), None);
        s.purge_keys(&["victim".into()], false).await.unwrap();
        let stale = s.fill_guard("victim").await.unwrap();
        assert_eq!(stale.generation, 1);
        s.run_pending_tasks();
        for i in 0..50 {
            put(&s, &format!("k{i}"), "a", "v").await;
            s.run_pending_tasks();
        }
        // The tombstone is gone and a new purge recreates generation 1, but
        // the epoch moved, so the stale fill still cannot store.
        assert_eq!(s.fill_guard("victim").await.unwrap().generation, 0);
        s.purge_keys(&["victim".into()], false).await.unwrap();
        assert_eq!(s.fill_guard("victim").await.unwrap().generation, 1);
        assert_ne!(s.epoch(), stale.epoch);
        assert!(!s.fill("victim", "a", b("stale"), HOUR, stale, &[]).await.unwrap());
    }

    #[tokio::test]
    async fn evicting_plain_records_keeps_the_epoch() {
        let s = MemoryStore::new(10, 64 * MIB, Duration::from_secs(60), None);
        for i in 0..50 {
            put(&s, &format!("k{i}"), "a", "v").await;
            s.run_pending_tasks();
        }
        assert_eq!(s.epoch(), 0);
    }

    #[tokio::test]
    async fn scan_record_and_clear() {
        let s = store();
        for i in 0..20 {
            put(&s, &format!("task:{i:02}"), "scope-a", "A").await;
        }
        put(&s, "task:05", "scope-b", "B").await;
        put(&s, "user:1", "scope-a", "U").await;
        // Tombstones are not listed.
        s.purge_keys(&["task:99".into()], false).await.unwrap();

        let (n, keys) = s.scan_keys("task:*", 3).await.unwrap();
        assert_eq!(n, 20);
        assert_eq!(keys, vec!["task:00", "task:01", "task:02"]);
        let (n, keys) = s.scan_keys("task:1[5-9]", 100).await.unwrap();
        assert_eq!((n, keys.len()), (5, 5));
        assert_eq!(keys[0], "task:15");
        assert_eq!(s.scan_keys("*", 0).await.unwrap(), (21, vec![]));

        let record = s.record("task:05").await.unwrap().unwrap();
        assert_eq!(
            record.fields,
            vec![("scope-a".to_string(), b("A")), ("scope-b".to_string(), b("B"))]
        );
        let ttl = record.ttl.unwrap();
        assert!(ttl > Duration::from_secs(3500) && ttl <= HOUR, "{ttl:?}");
        assert!(s.record("task:99").await.unwrap().is_none());
        assert!(s.record("nope").await.unwrap().is_none());

        let inflight = s.fill_guard("task:50").await.unwrap();
        assert_eq!(s.clear(Some("task:1*")).await.unwrap(), 10);
        assert_eq!(s.scan_keys("task:1*", 100).await.unwrap(), (0, vec![]));
        assert_eq!(s.scan_keys("*", 0).await.unwrap().0, 11);
        assert!(!s.fill("task:50", "a", b("stale"), HOUR, inflight, &[]).await.unwrap());
        // The tombstone stays.
        assert_eq!(s.fill_guard("task:99").await.unwrap().generation, 1);

        assert_eq!(s.info().await.unwrap().total_keys, 11);
        assert_eq!(s.clear(None).await.unwrap(), 11);
        assert_eq!(s.scan_keys("*", 100).await.unwrap(), (0, vec![]));
        assert_eq!(s.info().await.unwrap().total_keys, 0);
        assert_eq!(s.fill_guard("task:99").await.unwrap().generation, 1);
    }

    #[tokio::test]
    async fn internal_keys_are_left_out_of_patterns() {
        let s = store();
        let internal = format!("{INTERNAL_PREFIX}x");
        put(&s, &internal, "a", "v").await;
        assert_eq!(s.scan_keys("*", 10).await.unwrap().0, 0);
        assert_eq!(s.purge_pattern("*", false).await.unwrap(), 0);
        assert_eq!(s.clear(None).await.unwrap(), 0);
        assert!(hit(&s, &internal, "a").await.is_some());
    }

    #[test]
    fn selects_mirrors_a_prefixed_redis_scan() {
        assert!(selects(None, ""));
        assert!(selects(Some("*"), ""));
        assert!(selects(Some("**"), ""));
        assert!(selects(Some(""), ""));
        assert!(!selects(Some("?"), ""));
        assert!(!selects(Some("*a"), ""));
        assert!(selects(Some("a*"), "a"));
        assert!(!selects(Some(""), "a"));
        assert!(!selects(None, "__cg:epoch"));
    }

    #[tokio::test]
    async fn counters_sum_instances_and_republishing_is_idempotent() {
        let s = store();
        assert!(s.counters().await.unwrap().is_empty());
        s.publish_counters("a", &[("hits".into(), 2), ("misses".into(), 1)])
            .await
            .unwrap();
        // The same totals again (a retry) change nothing.
        s.publish_counters("a", &[("hits".into(), 2), ("misses".into(), 1)])
            .await
            .unwrap();
        s.publish_counters("b", &[("hits".into(), 3), ("errors".into(), -1)])
            .await
            .unwrap();
        assert_eq!(
            s.counters().await.unwrap(),
            vec![
                ("errors".to_string(), -1),
                ("hits".to_string(), 5),
                ("misses".to_string(), 1)
            ]
        );
    }

    #[tokio::test]
    async fn secret_and_info() {
        assert_eq!(store().scope_secret(), Some(b("s3cret")));
        let random = MemoryStore::new(10, MIB, Duration::from_secs(1), None);
        let secret = random.scope_secret().unwrap();
        assert_eq!(secret.len(), 64);
        assert!(secret.iter().all(u8::is_ascii_hexdigit));
        assert_eq!(random.scope_secret(), Some(secret.clone()));
        assert_ne!(
            MemoryStore::new(10, MIB, Duration::from_secs(1), None).scope_secret(),
            Some(secret)
        );

        let s = store();
        put(&s, "a", "x", "1").await;
        s.purge_keys(&["b".into()], false).await.unwrap();
        let info = s.info().await.unwrap();
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.connected_clients, 0);
        assert_eq!(info.total_keys, 1);
        assert!(info.used_memory > 0);
        assert!(info.peak_memory >= info.used_memory / 2);
        assert!(info.total_system_memory > info.used_memory);
    }

    #[test]
    fn proc_parsing_is_lenient() {
        assert_eq!(
            proc_kb("VmPeak:\t 10 kB\nVmHWM:\t  2048 kB\n", "VmHWM"),
            Some(2048 * 1024)
        );
        assert_eq!(proc_kb("VmHWMx: 1 kB", "VmHWM"), None);
        assert_eq!(proc_kb("VmHWM: junk", "VmHWM"), None);
        assert_eq!(proc_kb("", "MemTotal"), None);
        assert!(read_proc("/proc/nonexistent/file").is_none());
    }

    fn fresh_entry(body: &str) -> Bytes {
        let lifetime = Lifetime {
            ttl: HOUR,
            stale_while_revalidate: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(600),
            must_revalidate: false,
        };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        Entry::encode(StatusCode::OK, &headers, body.as_bytes(), now_ms(), &lifetime)
    }

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|t| t.to_string()).collect()
    }

    async fn put_tagged(s: &MemoryStore, key: &str, field: &str, value: Bytes, ttl: Duration, with: &[&str]) {
        let guard = s.fill_guard(key).await.unwrap();
        assert!(
            s.fill(key, field, value, ttl, guard, &tags(with)).await.unwrap(),
            "fill {key}/{field}"
        );
    }

    /// The keys `tag` indexes, sorted; checks the index's invariant too.
    fn indexed(s: &MemoryStore, tag: &str) -> Vec<String> {
        let index = lock_tags(&s.tags);
        let members: usize = index.tags.values().map(HashMap::len).sum();
        assert_eq!(index.by_expiry.len(), members, "by_expiry and members disagree");
        for (t, tag, key) in &index.by_expiry {
            assert_eq!(index.tags[tag][key].expires_at, Some(*t));
        }
        let mut keys: Vec<String> = index.members(tag).map(|(k, _)| k.clone()).collect();
        keys.sort();
        keys
    }

    fn decoded(value: Option<Bytes>) -> Entry {
        Entry::decode(&value.expect("an entry")).expect("a valid entry")
    }

    #[tokio::test]
    async fn tags_index_keys_and_hard_purge_removes_them() {
        let s = store();
        for key in ["a", "b"] {
            put_tagged(&s, key, "x", fresh_entry(key), HOUR, &["t1"]).await;
        }
        put_tagged(&s, "c", "x", fresh_entry("c"), HOUR, &["t2"]).await;
        put_tagged(&s, "d", "x", fresh_entry("d"), HOUR, &["t1", "t2"]).await;
        put(&s, "e", "x", "untagged").await;
        // A later fill without tags keeps the key under its earlier ones.
        put_tagged(&s, "f", "x", fresh_entry("f"), HOUR, &["t3"]).await;
        put(&s, "f", "y", "second").await;
        assert_eq!(indexed(&s, "t1"), vec!["a", "b", "d"]);
        assert_eq!(indexed(&s, "t2"), vec!["c", "d"]);
        assert_eq!(indexed(&s, "t3"), vec!["f"]);

        let inflight = s.fill_guard("a").await.unwrap();
        // A key under two of the tags counts once; unknown tags count 0.
        assert_eq!(s.purge_tags(&tags(&["t1", "t1", "nope"]), false).await.unwrap(), 3);
        for key in ["a", "b", "d"] {
            assert!(hit(&s, key, "x").await.is_none(), "{key}");
            assert!(s.record(key).await.unwrap().is_none(), "{key}");
        }
        assert!(hit(&s, "c", "x").await.is_some());
        assert_eq!(hit(&s, "e", "x").await, Some(b("untagged")));
        // The index of t1 is gone, and d left t2's.
        assert!(indexed(&s, "t1").is_empty());
        assert_eq!(indexed(&s, "t2"), vec!["c"]);
        assert!(!lock_tags(&s.tags).tags.contains_key("t1"));
        // As purge_keys: tombstones of the next generation refuse old guards.
        assert_eq!(s.fill_guard("a").await.unwrap().generation, 1);
        assert!(!s.fill("a", "x", fresh_entry("old"), HOUR, inflight, &[]).await.unwrap());
        assert_eq!(s.purge_tags(&tags(&["t1"]), false).await.unwrap(), 0);

        assert_eq!(s.purge_tags(&tags(&["t3"]), false).await.unwrap(), 1);
        assert!(hit(&s, "f", "x").await.is_none() && hit(&s, "f", "y").await.is_none());

        // purge_keys and purge_pattern unindex what they remove.
        assert_eq!(s.purge_keys(&["c".into()], false).await.unwrap(), 1);
        assert!(indexed(&s, "t2").is_empty());
        put_tagged(&s, "g", "x", fresh_entry("g"), HOUR, &["t4"]).await;
        assert_eq!(s.purge_pattern("g", false).await.unwrap(), 1);
        assert!(indexed(&s, "t4").is_empty());
        put_tagged(&s, "h", "x", fresh_entry("h"), HOUR, &["t5"]).await;
        assert_eq!(s.clear(None).await.unwrap(), 2);
        assert!(lock_tags(&s.tags).tags.is_empty());
    }

    #[tokio::test]
    async fn soft_tag_purge_keeps_entries_stale_and_the_index() {
        let s = store();
        put_tagged(&s, "a", "x", fresh_entry("A"), HOUR, &["t"]).await;
        put_tagged(&s, "b", "x", fresh_entry("B"), HOUR, &["t", "u"]).await;
        put_tagged(&s, "c", "x", fresh_entry("C"), HOUR, &["u"]).await;
        let inflight = s.fill_guard("a").await.unwrap();

        assert_eq!(s.purge_tags(&tags(&["t"]), true).await.unwrap(), 2);
        for key in ["a", "b"] {
            let entry = decoded(hit(&s, key, "x").await);
            assert!(!entry.is_fresh(now_ms()), "{key}");
            assert!(entry.within_stale_while_revalidate(now_ms()), "{key}");
            assert_eq!(entry.body, b(&key.to_uppercase()));
        }
        assert!(decoded(hit(&s, "c", "x").await).is_fresh(now_ms()));
        assert_eq!(indexed(&s, "t"), vec!["a", "b"]);
        assert_eq!(indexed(&s, "u"), vec!["b", "c"]);
        // The fill that started before is refused; a refresh stores.
        assert!(!s.fill("a", "x", fresh_entry("old"), HOUR, inflight, &[]).await.unwrap());
        let guard = s.fill_guard("a").await.unwrap();
        assert_eq!(guard.generation, 1);
        assert!(s.fill("a", "x", fresh_entry("new"), HOUR, guard, &[]).await.unwrap());
        assert!(decoded(hit(&s, "a", "x").await).is_fresh(now_ms()));
        // Still indexed: a hard purge of the tag finds them.
        assert_eq!(s.purge_tags(&tags(&["t"]), false).await.unwrap(), 2);
        assert!(hit(&s, "a", "x").await.is_none() && hit(&s, "b", "x").await.is_none());
        assert_eq!(indexed(&s, "u"), vec!["c"]);
    }

    #[tokio::test]
    async fn tag_index_forgets_expired_entries() {
        let s = store();
        let short = Duration::from_millis(200);
        put_tagged(&s, "gone", "x", fresh_entry("g"), short, &["t", "only-short"]).await;
        put_tagged(&s, "stays", "x", fresh_entry("s"), HOUR, &["t"]).await;
        assert_eq!(indexed(&s, "t"), vec!["gone", "stays"]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Any index write drops every expired member, whatever its tag.
        put_tagged(&s, "other", "x", fresh_entry("o"), HOUR, &["u"]).await;
        assert_eq!(indexed(&s, "t"), vec!["stays"]);
        assert!(!lock_tags(&s.tags).tags.contains_key("only-short"));
        // Expired records are not counted by a purge either.
        assert_eq!(s.purge_tags(&tags(&["t", "only-short"]), false).await.unwrap(), 1);

        // A tag nobody writes to again empties too.
        put_tagged(&s, "lone", "x", fresh_entry("l"), short, &["lone"]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.run_pending_tasks();
        assert!(!lock_tags(&s.tags).tags.contains_key("lone"));
        assert_eq!(indexed(&s, "u"), vec!["other"]);
    }

    #[tokio::test]
    async fn evicted_records_leave_the_tag_index() {
        let s = MemoryStore::new(10, 64 * MIB, Duration::from_secs(60), None);
        for i in 0..50 {
            put_tagged(&s, &format!("k{i}"), "x", fresh_entry("v"), HOUR, &["t"]).await;
            s.run_pending_tasks();
        }
        let (live, _) = live_records(&s);
        let members = indexed(&s, "t");
        assert!(
            members.len() as u64 <= live && live <= 10,
            "{} members, {live} live",
            members.len()
        );
        for key in &members {
            assert!(hit(&s, key, "x").await.is_some(), "{key}");
        }
        assert_eq!(s.purge_tags(&tags(&["t"]), false).await.unwrap(), members.len() as u64);
    }

    #[tokio::test]
    async fn soft_purge_makes_entries_stale_and_keeps_bodies() {
        let s = store();
        let marker = Bytes::from_static(b"CV1\naccept-language");
        put_tagged(&s, "k", "scope", marker.clone(), HOUR, &[]).await;
        put_tagged(&s, "k", "variant", fresh_entry("body"), HOUR, &[]).await;
        put(&s, "k", "foreign", "not an entry").await;
        let before = decoded(hit(&s, "k", "variant").await);
        assert!(before.is_fresh(now_ms()));
        let ttl_before = s.record("k").await.unwrap().unwrap().ttl.unwrap();

        assert_eq!(s.purge_keys(&["k".into()], true).await.unwrap(), 1);
        let after = decoded(hit(&s, "k", "variant").await);
        assert!(!after.is_fresh(now_ms()));
        assert_eq!(after.lifetime.ttl, Duration::ZERO);
        assert_eq!(after.body, b("body"));
        assert_eq!(after.stored_at_ms, before.stored_at_ms);
        assert_eq!(after.headers, before.headers);
        assert_eq!(after.status, before.status);
        assert_eq!(
            after.lifetime.stale_while_revalidate,
            before.lifetime.stale_while_revalidate
        );
        // Other fields are left alone, and the record keeps its expiry.
        assert_eq!(hit(&s, "k", "scope").await, Some(marker.clone()));
        assert_eq!(hit(&s, "k", "foreign").await, Some(b("not an entry")));
        let ttl_after = s.record("k").await.unwrap().unwrap().ttl.unwrap();
        assert!(ttl_after <= ttl_before && ttl_after + Duration::from_secs(5) > ttl_before);
        assert_eq!(s.fill_guard("k").await.unwrap().generation, 1);
        // Again: still holds an (already stale) entry; the generation moves.
        assert_eq!(s.purge_keys(&["k".into()], true).await.unwrap(), 1);
        assert_eq!(s.fill_guard("k").await.unwrap().generation, 2);
        assert_eq!(decoded(hit(&s, "k", "variant").await).body, b("body"));

        // No entry: a record of other fields is kept, not counted.
        put(&s, "m", "scope", "CV1\nx").await;
        assert_eq!(s.purge_keys(&["m".into()], true).await.unwrap(), 0);
        assert_eq!(hit(&s, "m", "scope").await, Some(b("CV1\nx")));
        assert_eq!(s.fill_guard("m").await.unwrap().generation, 1);
        // No record: a tombstone, as a hard purge leaves.
        assert_eq!(s.purge_keys(&["absent".into()], true).await.unwrap(), 0);
        assert_eq!(s.fill_guard("absent").await.unwrap().generation, 1);
        assert!(s.record("absent").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn soft_purge_refuses_an_inflight_fill() {
        let s = store();
        put_tagged(&s, "k", "a", fresh_entry("v1"), HOUR, &[]).await;
        // A refresh started (the lookup saw a stale entry), then the purge.
        let inflight = s.fill_guard("k").await.unwrap();
        assert_eq!(s.purge_keys(&["k".into()], true).await.unwrap(), 1);
        assert!(!s.fill("k", "a", fresh_entry("v2"), HOUR, inflight, &[]).await.unwrap());
        let entry = decoded(hit(&s, "k", "a").await);
        assert_eq!(entry.body, b("v1"));
        assert!(!entry.is_fresh(now_ms()));

        // Soft pattern purges bump the epoch and soften what matches.
        put_tagged(&s, "task:1", "a", fresh_entry("t1"), HOUR, &[]).await;
        put_tagged(&s, "user:1", "a", fresh_entry("u1"), HOUR, &[]).await;
        s.purge_keys(&["task:tomb".into()], false).await.unwrap();
        let other = s.fill_guard("user:2").await.unwrap();
        assert_eq!(s.purge_pattern("task:*", true).await.unwrap(), 1);
        assert!(!s.fill("user:2", "a", fresh_entry("x"), HOUR, other, &[]).await.unwrap());
        let task = decoded(hit(&s, "task:1", "a").await);
        assert!(!task.is_fresh(now_ms()) && task.body == b("t1"));
        assert!(decoded(hit(&s, "user:1", "a").await).is_fresh(now_ms()));
        assert_eq!(s.fill_guard("task:1").await.unwrap().generation, 1);
        assert_eq!(s.scan_keys("*", 10).await.unwrap().0, 3);
    }

    #[tokio::test]
    async fn purge_tags_bumps_the_epoch() {
        let s = store();
        // A fill in flight for a key not under the tag yet.
        let inflight = s.fill_guard("new").await.unwrap();
        assert_eq!(s.purge_tags(&tags(&["t"]), false).await.unwrap(), 0);
        assert!(!s
            .fill("new", "a", fresh_entry("stale"), HOUR, inflight, &tags(&["t"]))
            .await
            .unwrap());
        assert!(hit(&s, "new", "a").await.is_none());
        assert!(indexed(&s, "t").is_empty());
        let inflight = s.fill_guard("new").await.unwrap();
        assert_eq!(s.purge_tags(&tags(&["t"]), true).await.unwrap(), 0);
        assert!(!s
            .fill("new", "a", fresh_entry("stale"), HOUR, inflight, &tags(&["t"]))
            .await
            .unwrap());
        let fresh = s.fill_guard("new").await.unwrap();
        assert_eq!(fresh.epoch, 2);
        assert!(s
            .fill("new", "a", fresh_entry("new"), HOUR, fresh, &tags(&["t"]))
            .await
            .unwrap());
        assert_eq!(indexed(&s, "t"), vec!["new"]);
    }

    #[test]
    fn stale_entry_zeroes_only_the_ttl() {
        let entry = fresh_entry("body");
        let stale = stale_entry(&entry);
        assert_eq!(stale.len(), entry.len());
        assert_eq!(&stale[..TTL_OFFSET], &entry[..TTL_OFFSET]);
        assert_eq!(&stale[TTL_OFFSET..TTL_OFFSET + TTL_LEN], &[0; TTL_LEN]);
        assert_eq!(&stale[TTL_OFFSET + TTL_LEN..], &entry[TTL_OFFSET + TTL_LEN..]);
        // Already stale, or too short to have the field: the same bytes.
        assert_eq!(stale_entry(&stale).as_ptr(), stale.as_ptr());
        let short = Bytes::from_static(b"CG\x01");
        assert_eq!(stale_entry(&short), short);
    }

    /// A fill racing a purge of the same key never leaves a fresh entry
    /// behind: it lands before the purge (and is purged, or made stale) or
    /// is refused.
    #[test]
    fn purge_and_fill_race_never_leaves_a_fresh_entry() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let s = Arc::new(store());
        for round in 0..600 {
            let key = format!("k{}", round % 7);
            let (mode, soft) = (round % 3, round % 6 >= 3);
            let guard = rt.block_on(s.fill_guard(&key)).unwrap();
            let barrier = Arc::new(Barrier::new(2));
            let filler = {
                let (s, key, barrier) = (s.clone(), key.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                    barrier.wait();
                    rt.block_on(s.fill(&key, "a", fresh_entry("stale"), HOUR, guard, &tags(&["t"])))
                        .unwrap()
                })
            };
            barrier.wait();
            match mode {
                0 => rt.block_on(s.purge_pattern(&format!("{key}*"), soft)),
                1 => rt.block_on(s.purge_keys(std::slice::from_ref(&key), soft)),
                _ => rt.block_on(s.purge_tags(&tags(&["t"]), soft)),
            }
            .unwrap();
            filler.join().unwrap();
            let left = rt.block_on(hit(&s, &key, "a"));
            if let Some(entry) = left {
                assert!(soft, "round {round}: a hard purge left an entry");
                assert!(!decoded(Some(entry)).is_fresh(now_ms()), "round {round}");
            }
            // Start the next round from a clean key.
            rt.block_on(s.purge_keys(std::slice::from_ref(&key), false)).unwrap();
        }
    }
}
