//! Purges that must not be lost: a write's purge that failed (the store down,
//! stalled, or a shard failing over) is kept here, written to a local journal
//! (fsynced), and replayed by a background task the moment the store answers
//! again, whether or not a request comes. Purges made shortly before an
//! outage are replayed too: a failover to a replica, or a restart from an
//! older snapshot, can lose a purge the store had acknowledged.
//!
//! While an instance repairs (replays) after an outage it says so in the
//! store (`Store::mark_repairing`); while any instance does, and for a short
//! grace after this instance sees the store come back, entries stored before
//! the outage ended are revalidated rather than served
//! ([`PendingPurges::must_revalidate`]). So no instance serves an entry a
//! write replaced just because the instance that took the write has not
//! replayed its purge yet, and reads never go backwards. ARCHITECTURE.md
//! states the guarantee and its cost.

use crate::metrics::Metrics;
use crate::store::entry::now_ms;
use crate::store::{Store, StoreResult};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the repair task looks at the store while nothing is pending.
const TICK: Duration = Duration::from_millis(100);
/// Purges acknowledged this long before an outage are replayed after it: a
/// replica promoted by a failover, or a Redis restarted from its AOF, may
/// not have them (replication and `appendfsync everysec` lag by about 1 s).
const RECENT: Duration = Duration::from_secs(3);
/// At most this many recent purges are kept for that replay.
const RECENT_MAX: usize = 4096;
/// After this instance sees the store come back, entries stored before then
/// are revalidated for this long even if no peer has said it is repairing
/// yet: a peer's replay task notices the store within a tick or two.
const GRACE: Duration = Duration::from_millis(1500);
/// Other instances read a new announcement within this (two ticks of
/// their repair task, which polls the marks every tick).
pub(super) const PEERS_READ_WITHIN: Duration = Duration::from_millis(2 * TICK.as_millis() as u64 + 50);
/// A repairing mark lives this long unless renewed, so a crashed instance's
/// mark does not keep the fleet revalidating.
const MARK_LIFE: Duration = Duration::from_secs(5);

/// What one write purges.
#[derive(Default, Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct Purge {
    #[serde(default)]
    pub soft: bool,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Credential scopes whose every entry goes (always hard).
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl Purge {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.patterns.is_empty() && self.tags.is_empty() && self.scopes.is_empty()
    }

    fn absorb(&mut self, other: Purge) {
        self.keys.extend(other.keys);
        self.patterns.extend(other.patterns);
        self.tags.extend(other.tags);
        self.scopes.extend(other.scopes);
    }

    /// Keys, patterns, tags and scopes named.
    fn len(&self) -> usize {
        self.keys.len() + self.patterns.len() + self.tags.len() + self.scopes.len()
    }

    fn dedup(&mut self) {
        for list in [&mut self.keys, &mut self.patterns, &mut self.tags, &mut self.scopes] {
            list.sort();
            list.dedup();
        }
    }
}

/// The journal file's content.
#[derive(Serialize, Deserialize, Default)]
struct Journal {
    purges: Vec<Purge>,
}

/// Failed purges, recent purges, and the repair state, shared by every
/// config generation of one process.
pub(super) struct PendingPurges {
    /// At most one hard and one soft purge: a long outage with many writes
    /// must not leave a long list to replay one by one.
    queue: tokio::sync::Mutex<Vec<Purge>>,
    has_pending: AtomicBool,
    journal: Option<PathBuf>,
    /// Purges that went through lately, with when (ms), for the replay after
    /// an outage.
    recent: Mutex<VecDeque<(u64, Purge)>>,
    /// Recent purges set aside when an outage began, queued when it ends.
    aside: Mutex<Vec<Purge>>,
    /// Entries stored before this (ms) are revalidated while `until_ms` has
    /// not passed; 0 when no repair is under way.
    revalidate_before_ms: AtomicU64,
    until_ms: AtomicU64,
    /// What reads must not take from the store: this instance's pending
    /// purges and those other instances' repairing marks announce. Read on
    /// every lookup (`covers`), so behind a flag that is false nearly always.
    covering: std::sync::RwLock<Vec<Purge>>,
    any_covering: AtomicBool,
    /// How many of `covering`'s first purges are this instance's.
    own_len: std::sync::atomic::AtomicUsize,
    /// The store's outage count last seen (`Store::outages`).
    seen_outages: AtomicU64,
    /// Wakes the repair task early (a purge just failed).
    wake: tokio::sync::Notify,
}

impl PendingPurges {
    /// Loads what an earlier run left in `journal` (it is replayed once the
    /// store answers, before anything else).
    pub fn open(journal: Option<PathBuf>) -> PendingPurges {
        let left = journal.as_deref().map(read_journal).unwrap_or_default();
        if !left.is_empty() {
            tracing::warn!(
                purges = left.len(),
                journal = %journal.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                "purges an earlier run could not apply are replayed now"
            );
        }
        PendingPurges {
            any_covering: AtomicBool::new(!left.is_empty()),
            own_len: std::sync::atomic::AtomicUsize::new(left.len()),
            covering: std::sync::RwLock::new(left.clone()),
            has_pending: AtomicBool::new(!left.is_empty()),
            queue: tokio::sync::Mutex::new(left),
            journal,
            recent: Mutex::default(),
            aside: Mutex::default(),
            revalidate_before_ms: AtomicU64::new(0),
            until_ms: AtomicU64::new(0),
            seen_outages: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Whether entries stored before an outage are being revalidated now.
    pub fn is_revalidating(&self) -> bool {
        self.revalidate_before_ms.load(SeqCst) != 0 && now_ms() < self.until_ms.load(SeqCst)
    }

    pub fn has_pending(&self) -> bool {
        self.has_pending.load(SeqCst)
    }

    /// Whether an entry stored at `stored_at_ms` must be revalidated rather
    /// than served: a repair after an outage is under way somewhere. Two
    /// atomic loads; no I/O.
    pub fn must_revalidate(&self, stored_at_ms: u64) -> bool {
        let before = self.revalidate_before_ms.load(SeqCst);
        before != 0 && stored_at_ms < before && now_ms() < self.until_ms.load(SeqCst)
    }

    /// Whether a pending purge (this instance's, or one another instance
    /// announced) covers `key`, its `tags` or the scope of `field`: such an
    /// entry is neither served nor filled until the purge is applied.
    pub fn covers(&self, key: &str, tags: &[String], field: &str) -> bool {
        if !self.any_covering.load(SeqCst) {
            return false;
        }
        let covering = self.covering.read().unwrap_or_else(|p| p.into_inner());
        let scope = crate::store::scope_index::credential_scope(field);
        covering.iter().any(|p| {
            p.keys.iter().any(|k| k == key)
                || p.patterns
                    .iter()
                    .any(|pat| crate::rules::glob::glob_match(pat.as_bytes(), key.as_bytes()))
                || p.tags.iter().any(|t| tags.contains(t))
                || scope.is_some_and(|s| p.scopes.iter().any(|x| x == s))
        })
    }

    /// Sets what `covers` checks: this instance's queue and the peers'
    /// announced purges.
    fn set_covering(&self, own: &[Purge], peers: Option<Vec<Purge>>) {
        let mut covering = self.covering.write().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Purge> = own.to_vec();
        match peers {
            Some(peers) => all.extend(peers),
            // Keep the peers' part as last read.
            None => all.extend(covering.iter().skip(self.own_len.load(SeqCst)).cloned()),
        }
        self.own_len.store(own.len(), SeqCst);
        self.any_covering.store(!all.is_empty(), SeqCst);
        *covering = all;
    }

    /// Notes the store's outage count (`Store::outages`): when it moved, an
    /// outage just ended, and entries stored before now are revalidated for
    /// a grace period. Called on every read before an entry is used, so the
    /// first read after an outage already sees it. One atomic load.
    pub fn note_outages(&self, outages: u64) {
        if self.seen_outages.load(SeqCst) != outages && self.seen_outages.swap(outages, SeqCst) != outages {
            self.begin_revalidating(now_ms() + GRACE.as_millis() as u64);
        }
    }

    /// Notes a purge that went through, for the replay after an outage.
    pub fn went_through(&self, purge: &Purge) {
        let now = now_ms();
        let Ok(mut recent) = self.recent.lock() else { return };
        while recent
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) > RECENT.as_millis() as u64)
            || recent.len() >= RECENT_MAX
        {
            recent.pop_front();
        }
        recent.push_back((now, purge.clone()));
    }

    /// Keeps a purge that failed, journals it, and wakes the repair task.
    pub async fn keep(&self, failed: Purge, metrics: &Metrics) {
        let mut queue = self.queue.lock().await;
        merge(&mut queue, failed);
        metrics.set_purges_pending(queue.iter().map(Purge::len).sum());
        self.has_pending.store(true, SeqCst);
        self.set_covering(&queue, None);
        self.write_journal(&queue).await;
        drop(queue);
        self.wake.notify_one();
    }

    /// Sets the recent purges aside: an outage began, and the store that
    /// comes back (a promoted replica, a restart from disk) may have lost
    /// them. They are queued when it ends (`requeue_lost`), not now: the
    /// parts of the store still up keep them, and serve meanwhile.
    fn set_recent_aside(&self) {
        let Ok(mut recent) = self.recent.lock() else { return };
        let Ok(mut aside) = self.aside.lock() else { return };
        aside.extend(recent.drain(..).map(|(_, p)| p));
    }

    /// Queues what `set_recent_aside` kept, for replay: the outage ended.
    async fn requeue_lost(&self, metrics: &Metrics) {
        let recent: Vec<Purge> = match self.aside.lock() {
            Ok(mut r) => r.drain(..).collect(),
            Err(_) => return,
        };
        if recent.is_empty() {
            return;
        }
        let mut queue = self.queue.lock().await;
        for purge in recent {
            merge(&mut queue, purge);
        }
        metrics.set_purges_pending(queue.iter().map(Purge::len).sum());
        self.has_pending.store(true, SeqCst);
        self.set_covering(&queue, None);
        self.write_journal(&queue).await;
    }

    /// Tells the other instances what this one could not purge yet (they
    /// neither serve nor fill what it covers); whether the store took it.
    pub async fn announce(&self, store: &dyn Store, instance: &str) -> bool {
        let mark = Mark {
            until: now_ms() + MARK_LIFE.as_millis() as u64,
            purges: self.queue.lock().await.clone(),
        };
        if mark.purges.is_empty() {
            return false;
        }
        let Ok(text) = serde_json::to_string(&mark) else {
            return false;
        };
        store.mark_repairing(instance, Some(&text)).await.is_ok()
    }

    /// Replays what is pending; whether nothing is left. Concurrent callers
    /// do not queue: one replays, the others are told "not settled".
    pub async fn replay(&self, store: &dyn Store, metrics: &Metrics) -> bool {
        if !self.has_pending() {
            return true;
        }
        let Ok(mut queue) = self.queue.try_lock() else {
            return false;
        };
        let before: usize = queue.iter().map(Purge::len).sum();
        let mut still = Vec::new();
        for purge in std::mem::take(&mut *queue) {
            match apply(store, metrics, purge.clone(), Log::Quiet).await {
                Some(failed) => still.push(failed),
                None => self.went_through(&purge),
            }
        }
        let settled = still.is_empty();
        let replayed = before.saturating_sub(still.iter().map(Purge::len).sum());
        metrics.purges_replayed(replayed);
        metrics.set_purges_pending(still.iter().map(Purge::len).sum());
        *queue = still;
        if replayed > 0 {
            self.write_journal(&queue).await;
        }
        self.set_covering(&queue, None);
        self.has_pending.store(!settled, SeqCst);
        if settled {
            tracing::info!("purges that failed while the store was unreachable went through");
        }
        settled
    }

    /// Replays what is pending until it settles or `deadline` passes (a
    /// graceful shutdown); whether it settled. What is left stays in the
    /// journal for the next start.
    pub async fn flush(&self, store: &dyn Store, metrics: &Metrics, deadline: Instant) -> bool {
        loop {
            if self.replay(store, metrics).await {
                return true;
            }
            if Instant::now() + TICK > deadline {
                tracing::warn!(
                    journal = %self.journal.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "off".into()),
                    "exiting with purges not applied; the journal replays them at the next start"
                );
                return false;
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// Writes the queue to the journal (or removes it when empty), fsynced,
    /// off the runtime's threads.
    async fn write_journal(&self, queue: &[Purge]) {
        let Some(path) = self.journal.clone() else { return };
        let journal = Journal { purges: queue.to_vec() };
        let written = tokio::task::spawn_blocking(move || save_journal(&path, &journal)).await;
        if let Ok(Err(e)) = written {
            tracing::error!(error = %e, "cannot write the purge journal; a crash now would lose pending purges");
        }
    }
}

/// Adds `purge` to the queue's entry of the same kind.
fn merge(queue: &mut Vec<Purge>, purge: Purge) {
    match queue.iter_mut().find(|p| p.soft == purge.soft) {
        Some(p) => {
            p.absorb(purge);
            p.dedup();
        }
        None => queue.push(purge),
    }
}

fn read_journal(path: &std::path::Path) -> Vec<Purge> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Journal>(&bytes) {
            Ok(j) => j.purges.into_iter().filter(|p| !p.is_empty()).collect(),
            Err(e) => {
                tracing::error!(journal = %path.display(), error = %e, "the purge journal is unreadable; ignoring it");
                Vec::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::error!(journal = %path.display(), error = %e, "cannot read the purge journal");
            Vec::new()
        }
    }
}

/// Write to a temporary file, fsync, rename over the journal, fsync the
/// directory: a crash leaves the old journal or the new one, never half.
fn save_journal(path: &std::path::Path, journal: &Journal) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if journal.purges.is_empty() {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    } else {
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(journal).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
    }
    if let Some(dir) = dir {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// How loudly `apply` reports a failure: a write's own purge warns; the
/// replays that follow, tick after tick, would repeat it.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Log {
    Warn,
    Quiet,
}

/// Runs one purge against the store; the parts that failed, if any.
pub(super) async fn apply(store: &dyn Store, metrics: &Metrics, mut purge: Purge, log: Log) -> Option<Purge> {
    purge.dedup();
    let soft = purge.soft;
    let mut failed = Purge {
        soft,
        ..Purge::default()
    };
    if !purge.keys.is_empty() {
        match timed(metrics, "purge_keys", store.purge_keys(&purge.keys, soft)).await {
            Ok(n) => metrics.purged("key", n),
            // Key by key, so that only the keys of the part of the store
            // that failed (one cluster primary) stay pending.
            Err(_) if purge.keys.len() > 1 => {
                for key in purge.keys {
                    let one = std::slice::from_ref(&key);
                    match timed(metrics, "purge_keys", store.purge_keys(one, soft)).await {
                        Ok(n) => metrics.purged("key", n),
                        Err(_) => failed.keys.push(key),
                    }
                }
                if log == Log::Warn && !failed.keys.is_empty() {
                    tracing::warn!(keys = ?failed.keys, "purging keys failed; replayed when the store answers");
                }
            }
            Err(e) => {
                if log == Log::Warn {
                    tracing::warn!(keys = ?purge.keys, error = %e, "purging keys failed; replayed when the store answers");
                }
                failed.keys = purge.keys;
            }
        }
    }
    for pattern in purge.patterns {
        match timed(metrics, "purge_pattern", store.purge_pattern(&pattern, soft)).await {
            Ok(n) => metrics.purged("pattern", n),
            Err(e) => {
                if log == Log::Warn {
                    tracing::warn!(pattern, error = %e, "purging pattern failed; replayed when the store answers");
                }
                failed.patterns.push(pattern);
            }
        }
    }
    if !purge.tags.is_empty() {
        match timed(metrics, "purge_tags", store.purge_tags(&purge.tags, soft)).await {
            Ok(n) => metrics.purged("tag", n),
            Err(e) => {
                if log == Log::Warn {
                    tracing::warn!(tags = ?purge.tags, error = %e, "purging tags failed; replayed when the store answers");
                }
                failed.tags = purge.tags;
            }
        }
    }
    for scope in purge.scopes {
        match timed(metrics, "purge_scope", store.purge_scope(&scope)).await {
            Ok(n) => metrics.purged("scope", n),
            Err(e) => {
                // The scope is an HMAC, never the credential itself.
                if log == Log::Warn {
                    tracing::warn!(scope, error = %e, "purging a credential's entries failed; replayed when the store answers");
                }
                failed.scopes.push(scope);
            }
        }
    }
    (!failed.is_empty()).then_some(failed)
}

async fn timed<T>(
    metrics: &Metrics,
    op: &'static str,
    call: impl std::future::Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    let started = Instant::now();
    let result = call.await;
    metrics.store_call(op, started.elapsed(), &result);
    result
}

/// A repairing mark as stored (`Store::mark_repairing`).
#[derive(Serialize, Deserialize)]
struct Mark {
    /// When the mark lapses unless renewed (ms).
    until: u64,
    purges: Vec<Purge>,
}

/// The repair task: replays what is pending every tick (each part goes
/// through as soon as its part of the store answers), announces it to the
/// other instances meanwhile, and reads their announcements into what
/// `covers` checks. Its poll of the marks doubles as a health probe: an
/// instance with no traffic still notices an outage, keeps the purges made
/// just before it, and revalidates old entries for a grace period after it.
/// Ends when the process drops `pending`.
pub(super) fn spawn_repair(pending: &Arc<PendingPurges>, store: Arc<dyn Store>, metrics: Arc<Metrics>) {
    let weak = Arc::downgrade(pending);
    tokio::spawn(async move {
        let instance = metrics.instance().to_string();
        if let Some(pending) = weak.upgrade() {
            metrics.set_purges_pending(pending.queue.lock().await.iter().map(Purge::len).sum());
        }
        let mut was_up = true;
        let mut marked = false;
        loop {
            let Some(pending) = weak.upgrade() else {
                if marked {
                    let _ = store.mark_repairing(&instance, None).await;
                }
                return;
            };
            if pending.has_pending() {
                marked |= pending.announce(store.as_ref(), &instance).await;
                if pending.replay(store.as_ref(), &metrics).await && marked {
                    marked = store.mark_repairing(&instance, None).await.is_err();
                }
            }
            let marks = store.repairing().await;
            // An outage of any part of the store (on a cluster, the cluster
            // client is down while one primary is) keeps the recent purges;
            // its end starts a grace in which old entries are revalidated
            // until peers have had time to announce what they could not purge.
            let up = marks.is_ok() && store.is_up();
            if !up && was_up {
                was_up = false;
                pending.set_recent_aside();
            } else if up && !was_up {
                was_up = true;
                pending.begin_revalidating(now_ms() + GRACE.as_millis() as u64);
                pending.requeue_lost(&metrics).await;
            }
            if let Ok(marks) = marks {
                let now = now_ms();
                let peers = marks
                    .iter()
                    .filter(|(id, _)| *id != instance)
                    .filter_map(|(_, mark)| serde_json::from_str::<Mark>(mark).ok())
                    .filter(|m| m.until > now)
                    .flat_map(|m| m.purges)
                    .collect();
                let own = pending.queue.lock().await.clone();
                pending.set_covering(&own, Some(peers));
            }
            // Holding `pending` for one tick at most delays the end by that.
            let _ = tokio::time::timeout(TICK, pending.wake.notified()).await;
        }
    });
}

impl PendingPurges {
    /// Starts (or extends to `until_ms`) a period in which entries stored
    /// before its start are revalidated.
    fn begin_revalidating(&self, until_ms: u64) {
        let now = now_ms();
        if self.until_ms.load(SeqCst) <= now {
            // Entries carry the filling instance's wall-clock time: clocks
            // out of step by more than the outage's length weaken this
            // (ARCHITECTURE.md); a margin would make this instance's own
            // fills after the outage revalidate too.
            self.revalidate_before_ms.store(now, SeqCst);
            tracing::info!("revalidating entries stored before the store's outage ended while purges are replayed");
        }
        self.until_ms.fetch_max(until_ms, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_and_disappears_when_empty() {
        let dir = std::env::temp_dir().join(format!("cg-journal-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("purges.json");
        let purge = Purge {
            keys: vec!["task:1".into()],
            patterns: vec!["task:*".into()],
            ..Purge::default()
        };
        save_journal(
            &path,
            &Journal {
                purges: vec![purge.clone()],
            },
        )
        .unwrap();
        assert_eq!(read_journal(&path), vec![purge]);
        save_journal(&path, &Journal::default()).unwrap();
        assert!(!path.exists());
        assert!(read_journal(&path).is_empty());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(
            read_journal(&path).is_empty(),
            "a torn journal is reported and ignored, not a crash"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn merging_keeps_one_purge_per_kind() {
        let mut q = Vec::new();
        merge(
            &mut q,
            Purge {
                keys: vec!["b".into(), "a".into()],
                ..Purge::default()
            },
        );
        merge(
            &mut q,
            Purge {
                keys: vec!["a".into()],
                ..Purge::default()
            },
        );
        merge(
            &mut q,
            Purge {
                soft: true,
                tags: vec!["t".into()],
                ..Purge::default()
            },
        );
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].keys, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn revalidation_covers_entries_stored_before_the_repair_only() {
        let p = PendingPurges::open(None);
        assert!(!p.must_revalidate(0));
        p.begin_revalidating(now_ms() + 60_000);
        assert!(p.must_revalidate(now_ms() - 10_000));
        assert!(!p.must_revalidate(now_ms() + 10_000));
    }
}
