//! The storage primitives a cache backend implements: read a field or a
//! record, read a fill's guard, write under a guard, change records (the
//! per-record half of every purge), move the purge epoch, walk the keyspace
//! and the tag and scope indexes, and keep counters. The cache protocol on
//! top of them (which purge moves what, in which order, what is counted)
//! is written once, in `protocol.rs`; a backend never decides it.
//!
//! Ten methods are required. The rest have default bodies that describe a
//! backend no other instance shares (the memory store): always up, no
//! shards, no fleet to lock against or to tell of pending purges, and the
//! server figures of this process.

use super::{FillGuard, Record, StoreInfo, StoreResult};
use bytes::Bytes;
use std::future::Future;
use std::time::{Duration, Instant};

/// An index a fill adds its key to and a purge walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index<'a> {
    /// A tag of the entry (a rule's or the backend's `Cache-Tag`).
    Tag(&'a str),
    /// The credential scope the entry's field belongs to (`scope_index.rs`).
    Scope(&'a str),
}

/// A write of one field, allowed only while `guard` still holds.
pub struct Fill<'a> {
    pub key: &'a str,
    pub field: &'a str,
    pub value: Bytes,
    /// The record lives at least this long, and so do its index entries.
    pub ttl: Duration,
    pub guard: FillGuard,
    /// The indexes that get the key, for as long as the record lives.
    pub indexes: Vec<Index<'a>>,
}

/// What [`Backend::change`] does to each record. Every change but
/// `Unlink` moves the record's generation, atomically with the change, so
/// no fill whose guard was read before stores after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// Removes every entry, leaving a tombstone of the next generation.
    /// Counts records that held an entry.
    Drop,
    /// Marks every entry stale in place (its TTL becomes 0); a key without
    /// a record gets a tombstone. Counts records that held an entry.
    Stale,
    /// Removes one credential scope's fields and their variants; a record
    /// left without entries becomes a tombstone. Counts records that held
    /// one of them.
    Unscope(&'a str),
    /// Deletes the key outright (a pattern purge or a clear, after the
    /// epoch moved). Counts keys removed.
    Unlink,
}

/// Which keys a keyspace walk returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Every key matching (records, tombstones, foreign values).
    Any,
    /// Only records cachegate wrote that hold entries.
    Records,
}

/// One page of a walk, and where the next one starts (`None`: done).
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

/// A key as an index holds it. `version` is what the backend needs to drop
/// exactly this member later and not one a fill wrote since.
#[derive(Debug, Clone)]
pub struct Member {
    pub key: String,
    pub version: String,
    /// Whether the record it names may still exist (not expired).
    pub live: bool,
}

/// Storage primitives. Keys are logical keys; a backend adds its prefix.
/// Internal keys (`__cg:`) never appear in a walk.
pub trait Backend: Send + Sync + 'static {
    /// `redis` or `memory`.
    const KIND: &'static str;
    /// Whether other instances may share this backend (then the protocol
    /// keeps no process-local secret, and locks and marks mean something).
    const SHARED: bool;
    /// Where a walk continues; `Default` is the start.
    type Cursor: Default + Send + Sync;

    /// One field of a record (a miss when absent or not a record).
    fn read(&self, key: &str, field: &str) -> impl Future<Output = StoreResult<Option<Bytes>>> + Send;

    /// Every entry field of a record cachegate wrote, with its time to live.
    fn record(&self, key: &str) -> impl Future<Output = StoreResult<Option<Record>>> + Send;

    /// What a fill of `key` must present: the generation, the epoch (read
    /// before the generation, or atomically with it), and where the backend
    /// has one, the record's incarnation.
    fn guard(&self, key: &str) -> impl Future<Output = StoreResult<FillGuard>> + Send;

    /// Stores the field and indexes the key, only if the guard still holds
    /// (generation, epoch, incarnation); atomically as to every purge.
    fn write(&self, fill: Fill<'_>) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Applies `change` to each key (see [`Change`]); returns the count.
    fn change(&self, keys: &[String], change: Change<'_>) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Moves the purge epoch, after every write that passed the old one
    /// has landed (so a walk that follows sees it).
    fn bump_epoch(&self) -> impl Future<Output = StoreResult<()>> + Send;

    /// One page of the keys matching a Redis glob `pattern`.
    fn scan(
        &self,
        pattern: &str,
        keys: Keys,
        cursor: Self::Cursor,
    ) -> impl Future<Output = StoreResult<Page<String, Self::Cursor>>> + Send;

    /// One page of an index's members.
    fn index_page(
        &self,
        index: Index<'_>,
        cursor: Self::Cursor,
    ) -> impl Future<Output = StoreResult<Page<Member, Self::Cursor>>> + Send;

    /// Sets one instance's running totals (totals, so a retry is harmless).
    fn publish_counters(
        &self,
        instance: &str,
        totals: &[(String, i64)],
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Every instance's running totals.
    fn counter_totals(&self) -> impl Future<Output = StoreResult<Vec<Vec<(String, i64)>>>> + Send;

    /// Drops members a purge read from an index, unless a fill indexed the
    /// key again since. By default members leave with their records.
    fn unindex(&self, _index: Index<'_>, _members: Vec<Member>) -> impl Future<Output = StoreResult<()>> + Send {
        async { Ok(()) }
    }

    /// Server and memory figures; by default this process's, with the
    /// records counted by a walk.
    fn info(&self) -> impl Future<Output = StoreResult<StoreInfo>> + Send {
        async {
            let mut total_keys = 0u64;
            let mut cursor = Self::Cursor::default();
            loop {
                let page = self.scan("*", Keys::Records, cursor).await?;
                total_keys += page.items.len() as u64;
                match page.next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            Ok(process_info(total_keys))
        }
    }

    /// A scope secret every instance on this backend shares, once known.
    fn shared_secret(&self) -> Option<Bytes> {
        None
    }

    /// Whether the backend is reachable right now (no I/O).
    fn is_up(&self) -> bool {
        true
    }

    /// How many times the backend came back after being unreachable.
    fn outages(&self) -> u64 {
        0
    }

    /// Why the backend is unusable, if it is (no I/O).
    fn health(&self) -> super::health::StoreHealth {
        super::health::StoreHealth::ok()
    }

    /// Errors counted so far, by kind ([`super::health::ERROR_KINDS`]).
    fn error_counts(&self) -> [u64; super::health::ERROR_KINDS.len()] {
        [0; super::health::ERROR_KINDS.len()]
    }

    /// On a Redis Cluster, each primary and whether it is reachable.
    fn shards(&self) -> Vec<(String, bool)> {
        Vec::new()
    }

    /// Announces or withdraws this instance's pending purges (see
    /// [`super::Store::mark_repairing`]); nobody to tell by default.
    fn mark_repairing(&self, _instance: &str, _mark: Option<&str>) -> impl Future<Output = StoreResult<()>> + Send {
        async { Ok(()) }
    }

    /// Every instance's mark.
    fn repairing(&self) -> impl Future<Output = StoreResult<Vec<(String, String)>>> + Send {
        async { Ok(Vec::new()) }
    }

    /// The fleet's fill lock for one entry; granted with an empty token by
    /// default (no other instance to lock against).
    fn try_lock(
        &self,
        _key: &str,
        _field: &str,
        _ttl: Duration,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send {
        async { Ok(Some(String::new())) }
    }

    /// Releases a lock `token` still owns, and tells the waiters.
    fn unlock(&self, _key: &str, _field: &str, _token: &str) -> impl Future<Output = StoreResult<()>> + Send {
        async { Ok(()) }
    }

    /// Whether another fill holds the lock.
    fn is_locked(&self, _key: &str, _field: &str) -> impl Future<Output = StoreResult<bool>> + Send {
        async { Ok(false) }
    }

    /// Waits up to `timeout` for a notice that the lock was released.
    fn wait_unlocked(&self, _key: &str, _field: &str, timeout: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(timeout)
    }
}

/// When the first store of this process was made: its uptime.
pub(super) fn process_started() -> Instant {
    static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// The server figures of this process (a backend living in it).
fn process_info(total_keys: u64) -> StoreInfo {
    let started = process_started();
    let status = read_proc("/proc/self/status").unwrap_or_default();
    let meminfo = read_proc("/proc/meminfo").unwrap_or_default();
    StoreInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: started.elapsed().as_secs(),
        connected_clients: 0,
        used_memory: resident_bytes(),
        peak_memory: proc_kb(&status, "VmHWM").unwrap_or(0),
        total_system_memory: proc_kb(&meminfo, "MemTotal").unwrap_or(0),
        total_keys,
        internal_keys: 0,
        db_keys: total_keys,
    }
}

/// Reads a `/proc` file, `None` when it cannot.
pub(super) fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The value of a `Name:   123 kB` line, in bytes.
pub(super) fn proc_kb(text: &str, name: &str) -> Option<u64> {
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
