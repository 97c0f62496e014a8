//! The embedded in-process store: the same data model and guard semantics
//! as the Redis store (see [`super`] and the Lua scripts in `redis.rs`),
//! kept in a bounded [`moka`] cache.
//!
//! - One cache entry per logical key: a record of entry fields (scope →
//!   encoded entry), a generation counter, a "written by cachegate" mark and
//!   an expiry. Records are never changed in place: every change builds a new
//!   record inside moka's per-key `and_compute_with`, so a fill and a purge
//!   of the same key are serialized.
//! - The purge epoch is an atomic counter. Pattern purges and clears bump it
//!   behind a write fence that fills hold (shared) across their check and
//!   store, so once the bump is done every fill that passed the old epoch
//!   has landed in the cache and the following sweep sees it.
//! - The cache is bounded by entries and bytes at once: a record weighs at
//!   least `max_bytes / max_entries`, and the capacity is `max_bytes`. When
//!   moka evicts a record that carries a generation (a tombstone, or a
//!   record refilled after a purge) for size, the epoch is bumped: the key's
//!   generation falls back to 0 and could otherwise meet an old guard again.
//!   moka runs that listener under its key lock, which a later write of the
//!   same key waits for, so no purge can recreate the key before the bump.
//! - Expired records are invisible, whether or not moka has dropped them yet.

use super::glob::glob_match;
use super::{FillGuard, Lookup, Record, Store, StoreInfo, StoreResult};
use crate::rules::INTERNAL_PREFIX;
use async_trait::async_trait;
use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Records visited between two yields to the runtime while sweeping.
const SWEEP_BATCH: usize = 256;
/// Bytes a record costs besides its key, field names and values.
const RECORD_OVERHEAD: u64 = 64;
/// Bytes a field costs besides its name and value.
const FIELD_OVERHEAD: u64 = 16;

/// One logical key.
struct Rec {
    /// Entry fields (scope → encoded entry).
    fields: BTreeMap<String, Bytes>,
    /// The purge generation (`__gen`); 0 when never purged.
    generation: u64,
    /// Written by a fill (`__cg`); a bare tombstone is not.
    marked: bool,
    /// `None`: never expires (only when `now + ttl` overflows).
    expires_at: Option<Instant>,
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

    fn bytes(&self, key: &str) -> u64 {
        let fields: u64 = self
            .fields
            .iter()
            .map(|(f, v)| f.len() as u64 + v.len() as u64 + FIELD_OVERHEAD)
            .sum();
        RECORD_OVERHEAD + key.len() as u64 + fields
    }
}

type Value = Arc<Rec>;

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
    /// bumps by pattern purges and clears take it exclusively.
    fence: RwLock<()>,
    sizing: Sizing,
    tombstone_ttl: Duration,
    secret: Bytes,
    counters: Mutex<BTreeMap<String, i64>>,
    started: Instant,
}

impl MemoryStore {
    /// A store holding at most `max_entries` records and about `max_bytes`
    /// bytes of keys and entries. `secret` keys credential-scope hashes; a
    /// random one is made when none is configured.
    pub fn new(max_entries: u64, max_bytes: u64, tombstone_ttl: Duration, secret: Option<&str>) -> MemoryStore {
        let sizing = Sizing::new(max_entries, max_bytes);
        let epoch = Arc::new(AtomicU64::new(0));
        let listener_epoch = epoch.clone();
        let cache = Cache::builder()
            .max_capacity(sizing.capacity)
            .weigher(move |key: &String, value: &Value| sizing.moka_weight(value.bytes(key)))
            .expire_after(RecordExpiry)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |_key, value: Value, cause| {
                if cause == RemovalCause::Size && value.generation > 0 {
                    listener_epoch.fetch_add(1, Ordering::SeqCst);
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
            sizing,
            tombstone_ttl,
            secret,
            counters: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
        }
    }

    /// Runs moka's pending maintenance now (evictions, expirations), which
    /// otherwise happens in small steps along with later calls.
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Bumps the epoch once every fill that passed the old one has stored.
    fn bump_epoch(&self) {
        let _fence = self.fence.write().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn live(&self, key: &str) -> Option<Value> {
        self.cache.get(key).filter(|r| r.alive(Instant::now()))
    }

    fn fill_now(&self, key: &str, field: &str, value: Bytes, ttl: Duration, guard: FillGuard) -> bool {
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
            let mut fields = current.map(|r| r.fields.clone()).unwrap_or_default();
            fields.insert(field.to_string(), value);
            let record = Rec {
                fields,
                generation,
                marked: true,
                expires_at,
            };
            if self.sizing.weight(record.bytes(key)) > self.sizing.capacity {
                // It could never stay: moka would evict it (and the key's
                // other entries) at once.
                return Op::Nop;
            }
            stored = true;
            Op::Put(Arc::new(record))
        });
        stored
    }

    /// Replaces a key by a tombstone of the next generation; returns whether
    /// it held entries.
    fn purge_now(&self, key: &str) -> bool {
        let mut had = false;
        self.cache.entry_by_ref(key).and_compute_with(|current| {
            let now = Instant::now();
            let current = current.map(|e| e.into_value()).filter(|r| r.alive(now));
            had = current.as_ref().is_some_and(|r| r.has_entries());
            let generation = current.map_or(0, |r| r.generation).wrapping_add(1);
            Op::Put(Arc::new(Rec {
                fields: BTreeMap::new(),
                generation,
                marked: false,
                expires_at: now.checked_add(self.tombstone_ttl),
            }))
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
                    removed = true;
                    Op::Remove
                } else {
                    Op::Nop
                }
            }
        });
        removed
    }

    /// Removes every key (internal ones left out) matching `pattern` (all
    /// when `None`) for which `pred` holds; returns how many.
    async fn sweep(&self, pattern: Option<&str>, pred: fn(&Rec) -> bool) -> u64 {
        let mut removed = 0;
        for (i, (key, _)) in self.cache.iter().enumerate() {
            if i % SWEEP_BATCH == SWEEP_BATCH - 1 {
                tokio::task::yield_now().await;
            }
            if !selects(pattern, &key) {
                continue;
            }
            if self.remove_if(&key, pred) {
                removed += 1;
            }
        }
        removed
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
            guard: FillGuard { generation, epoch },
        })
    }

    async fn fill_guard(&self, key: &str) -> StoreResult<FillGuard> {
        let epoch = self.epoch();
        let generation = self.live(key).map_or(0, |r| r.generation);
        Ok(FillGuard { generation, epoch })
    }

    async fn fill(&self, key: &str, field: &str, value: Bytes, ttl: Duration, guard: FillGuard) -> StoreResult<bool> {
        Ok(self.fill_now(key, field, value, ttl, guard))
    }

    async fn purge_keys(&self, keys: &[String]) -> StoreResult<u64> {
        Ok(keys.iter().filter(|k| self.purge_now(k)).count() as u64)
    }

    async fn purge_pattern(&self, pattern: &str) -> StoreResult<u64> {
        // Bump the epoch first: a fill that looked up before this point will
        // not store, even for a key this sweep never sees. As Redis's UNLINK
        // count, every live key removed counts, tombstones included.
        self.bump_epoch();
        Ok(self.sweep(Some(pattern), |_| true).await)
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
        Ok(self.sweep(pattern, Rec::is_cached).await)
    }

    async fn add_counters(&self, deltas: &[(String, i64)]) -> StoreResult<()> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, delta) in deltas {
            let counter = counters.entry(name.clone()).or_insert(0);
            *counter = counter.saturating_add(*delta);
        }
        Ok(())
    }

    async fn counters(&self) -> StoreResult<Vec<(String, i64)>> {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(counters.iter().map(|(k, v)| (k.clone(), *v)).collect())
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
    use super::*;
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
            s.fill(key, field, b(value), HOUR, guard).await.unwrap(),
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
                epoch: 0
            }
        );
        assert!(s.fill("task:1", "scope-a", b("A"), HOUR, miss.guard).await.unwrap());
        assert_eq!(hit(&s, "task:1", "scope-a").await, Some(b("A")));
        // Another scope of the same key misses, with the key's guard.
        let other = s.lookup("task:1", "scope-b").await.unwrap();
        assert!(other.entry.is_none());
        assert!(s.fill("task:1", "scope-b", b("B"), HOUR, other.guard).await.unwrap());
        assert_eq!(hit(&s, "task:1", "scope-a").await, Some(b("A")));
        assert_eq!(hit(&s, "task:1", "scope-b").await, Some(b("B")));
        // Replacing a field works with a fresh guard.
        let guard = s.fill_guard("task:1").await.unwrap();
        assert!(s.fill("task:1", "scope-a", b("A2"), HOUR, guard).await.unwrap());
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
            s.purge_keys(&["task:1".into(), "task:2".into(), "task:1".into()])
                .await
                .unwrap(),
            1
        );
        assert!(hit(&s, "task:1", "a").await.is_none());
        assert!(!s.fill("task:1", "b", b("stale"), HOUR, stale).await.unwrap());
        assert!(!s.fill("task:2", "a", b("stale"), HOUR, stale_absent).await.unwrap());
        assert!(hit(&s, "task:1", "b").await.is_none());
        assert!(hit(&s, "task:2", "a").await.is_none());
        // The tombstones carry the next generation (twice for task:1).
        let fresh = s.lookup("task:1", "b").await.unwrap().guard;
        assert_eq!(fresh.generation, 2);
        assert_eq!(s.fill_guard("task:2").await.unwrap().generation, 1);
        assert!(s.fill("task:1", "b", b("new"), HOUR, fresh).await.unwrap());
        assert_eq!(hit(&s, "task:1", "b").await, Some(b("new")));
        // The refilled record keeps its generation; purging again bumps it.
        assert_eq!(s.fill_guard("task:1").await.unwrap().generation, 2);
        assert_eq!(s.purge_keys(&["task:1".into()]).await.unwrap(), 1);
        assert_eq!(s.fill_guard("task:1").await.unwrap().generation, 3);
    }

    #[tokio::test]
    async fn guard_refuses_fill_after_purge_pattern() {
        let s = store();
        put(&s, "task:1", "a", "x").await;
        put(&s, "task:2", "a", "x").await;
        put(&s, "user:1", "a", "x").await;
        s.purge_keys(&["task:3".into()]).await.unwrap();
        let inflight_task = s.lookup("task:9", "a").await.unwrap().guard;
        let inflight_user = s.lookup("user:9", "a").await.unwrap().guard;
        // Removes both entries and the task:3 tombstone.
        assert_eq!(s.purge_pattern("task:*").await.unwrap(), 3);
        assert!(hit(&s, "task:1", "a").await.is_none());
        assert_eq!(hit(&s, "user:1", "a").await, Some(b("x")));
        // The epoch moved: no fill that looked up before stores, whatever key.
        assert!(!s.fill("task:9", "a", b("stale"), HOUR, inflight_task).await.unwrap());
        assert!(!s.fill("user:9", "a", b("stale"), HOUR, inflight_user).await.unwrap());
        let fresh = s.lookup("task:9", "a").await.unwrap().guard;
        assert_eq!(
            fresh,
            FillGuard {
                generation: 0,
                epoch: 1
            }
        );
        assert!(s.fill("task:9", "a", b("new"), HOUR, fresh).await.unwrap());
        assert_eq!(s.purge_pattern("nothing*").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn tombstone_expires() {
        let s = MemoryStore::new(100, MIB, Duration::from_millis(400), None);
        s.purge_keys(&["k".into()]).await.unwrap();
        assert_eq!(s.fill_guard("k").await.unwrap().generation, 1);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(s.fill_guard("k").await.unwrap().generation, 0);
        assert!(s.fill("k", "a", b("v"), HOUR, FillGuard::default()).await.unwrap());
    }

    #[tokio::test]
    async fn entries_expire() {
        let s = store();
        let guard = s.fill_guard("k").await.unwrap();
        assert!(s
            .fill("k", "a", b("v"), Duration::from_millis(400), guard)
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
        assert_eq!(s.purge_keys(&["k".into()]).await.unwrap(), 0);
        assert_eq!(s.info().await.unwrap().total_keys, 0);
    }

    #[tokio::test]
    async fn fill_extends_ttl_never_shortens() {
        let s = store();
        let guard = s.fill_guard("k").await.unwrap();
        assert!(s.fill("k", "a", b("v"), Duration::from_secs(100), guard).await.unwrap());
        assert!(s.fill("k", "b", b("v"), Duration::from_secs(1), guard).await.unwrap());
        let ttl = s.record("k").await.unwrap().unwrap().ttl.unwrap();
        assert!(ttl > Duration::from_secs(90), "{ttl:?}");
        assert!(s
            .fill("k", "c", b("v"), Duration::from_secs(1000), guard)
            .await
            .unwrap());
        let ttl = s.record("k").await.unwrap().unwrap().ttl.unwrap();
        assert!(ttl > Duration::from_secs(990), "{ttl:?}");
        // A fill on a tombstone outlives the tombstone.
        s.purge_keys(&["t".into()]).await.unwrap();
        let guard = s.fill_guard("t").await.unwrap();
        assert!(s.fill("t", "a", b("v"), HOUR, guard).await.unwrap());
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
        assert!(!s.fill("big", "b", huge, HOUR, guard).await.unwrap());
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
        s.purge_keys(&["victim".into()]).await.unwrap();
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
        s.purge_keys(&["victim".into()]).await.unwrap();
        assert_eq!(s.fill_guard("victim").await.unwrap().generation, 1);
        assert_ne!(s.epoch(), stale.epoch);
        assert!(!s.fill("victim", "a", b("stale"), HOUR, stale).await.unwrap());
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
        s.purge_keys(&["task:99".into()]).await.unwrap();

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
        assert!(!s.fill("task:50", "a", b("stale"), HOUR, inflight).await.unwrap());
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
        assert_eq!(s.purge_pattern("*").await.unwrap(), 0);
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
    async fn counters_add_up() {
        let s = store();
        assert!(s.counters().await.unwrap().is_empty());
        s.add_counters(&[("hits".into(), 2), ("misses".into(), 1)])
            .await
            .unwrap();
        s.add_counters(&[("hits".into(), 3), ("errors".into(), -1)])
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
        s.purge_keys(&["b".into()]).await.unwrap();
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

    /// A fill racing a purge of the same key never leaves an entry behind:
    /// it lands before the purge (and is purged) or is refused.
    #[test]
    fn purge_and_fill_race_never_leaves_a_stale_entry() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let s = Arc::new(store());
        for round in 0..300 {
            let key = format!("k{}", round % 7);
            let by_pattern = round % 2 == 0;
            let guard = rt.block_on(s.fill_guard(&key)).unwrap();
            let barrier = Arc::new(Barrier::new(2));
            let filler = {
                let (s, key, barrier) = (s.clone(), key.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                    barrier.wait();
                    rt.block_on(s.fill(&key, "a", Bytes::from_static(b"stale"), HOUR, guard))
                        .unwrap()
                })
            };
            barrier.wait();
            if by_pattern {
                rt.block_on(s.purge_pattern(&format!("{key}*"))).unwrap();
            } else {
                rt.block_on(s.purge_keys(std::slice::from_ref(&key))).unwrap();
            }
            filler.join().unwrap();
            assert!(rt.block_on(hit(&s, &key, "a")).is_none(), "round {round}");
        }
    }
}
