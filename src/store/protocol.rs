//! The cache protocol, written once on top of any [`Backend`]: lookups and
//! their fill guards, guarded fills with their indexes, key, pattern, tag
//! and scope purges (hard or soft), clear, key listings and counter sums.
//! [`Protocol`] is the [`Store`] the gateway holds, whatever the backend.
//!
//! The order of every purge is here and nowhere else: a purge that cannot
//! name every key it covers before it starts (pattern, tag, scope, clear)
//! moves the epoch first, so no fill whose guard was read before it stores,
//! even one about to add its key to the walked index; then it changes each
//! record it finds, which moves that record's generation atomically with
//! the change. A key purge moves each key's generation as it purges it.
//!
//! With Redis, the in-process tier (`tiered.rs`) sits on the primitives it
//! changes: a read may be answered from it, and every write and change of a
//! key drops the key from it.

use super::backend::{Backend, Change, Fill, Index, Keys, Member, Page};
use super::entry::Entry;
use super::scope_index::credential_scope;
use super::tiered::Tier;
use super::{EntryFill, FillGuard, Lookup, Record, Store, StoreInfo, StoreResult};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// A [`Store`] made of a backend's primitives (and, on Redis, a tier).
pub struct Protocol<B: Backend> {
    backend: Arc<B>,
    tier: Option<Tier>,
    /// The configured scope secret, or for a backend nobody else shares a
    /// random one; `None`: the backend's shared one.
    secret: Option<Bytes>,
}

impl<B: Backend> Protocol<B> {
    /// The protocol over `backend`; `configured_secret` keys credential
    /// scopes when set.
    pub fn over(backend: Arc<B>, configured_secret: Option<&str>) -> Protocol<B> {
        super::backend::process_started();
        let secret = match configured_secret {
            Some(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
            None if !B::SHARED => Some(Bytes::from(hex::encode(rand::random::<[u8; 32]>()))),
            None => None,
        };
        Protocol {
            backend,
            tier: None,
            secret,
        }
    }

    /// The same store with the in-process tier in front of its reads.
    pub fn with_tier(mut self, tier: Tier) -> Protocol<B> {
        self.tier = Some(tier);
        self
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Applies a change, dropping the keys from the tier before (so this
    /// instance stops serving them now) and after (a read racing the change
    /// cannot leave the old record there).
    async fn change(&self, keys: &[String], change: Change<'_>) -> StoreResult<u64> {
        self.drop_from_tier(keys);
        let changed = self.backend.change(keys, change).await;
        self.drop_from_tier(keys);
        changed
    }

    fn drop_from_tier(&self, keys: &[String]) {
        if let Some(tier) = &self.tier {
            keys.iter().for_each(|k| tier.drop_key(k));
        }
    }

    /// After a tag or scope purge: the keys it purged were dropped from the
    /// tier one by one, unless there were too many, or it failed partway.
    fn after_index_purge(&self, purged: &StoreResult<u64>, keys: usize) {
        if purged.is_err() || keys > TIER_DROP_LIST {
            self.drop_tier();
        }
    }

    fn drop_tier(&self) {
        if let Some(tier) = &self.tier {
            tier.drop_all();
        }
    }

    /// Walks the keys matching `pattern` page by page, applying `change` to
    /// each page; returns the sum of the counts. The caller empties the
    /// tier afterwards (dropping each key of a large walk costs more).
    async fn walk_keys(&self, pattern: &str, keys: Keys, change: Change<'_>) -> StoreResult<u64> {
        let mut changed = 0;
        let mut cursor = B::Cursor::default();
        loop {
            let page = self.backend.scan(pattern, keys, cursor).await?;
            if !page.items.is_empty() {
                changed += self.backend.change(&page.items, change).await?;
            }
            match page.next {
                Some(next) => cursor = next,
                None => return Ok(changed),
            }
        }
    }

    /// Walks an index page by page: applies the walk's change to the
    /// members due and not changed yet (`done`), drops them from the tier,
    /// then, when asked, drops the members read from the index (after the
    /// change: a purge that fails leaves them findable).
    async fn walk_index(&self, walk: IndexWalk<'_>, done: &mut HashSet<String>) -> StoreResult<u64> {
        let mut changed = 0;
        let mut cursor = B::Cursor::default();
        loop {
            let Page { items, next } = self.backend.index_page(walk.index, cursor).await?;
            let due: Vec<String> = items
                .iter()
                .filter(|m| (m.live || !walk.live_only) && done.insert(m.key.clone()))
                .map(|m: &Member| m.key.clone())
                .collect();
            if !due.is_empty() {
                changed += self.backend.change(&due, walk.change).await?;
                // Past TIER_DROP_LIST keys the caller empties the tier.
                if done.len() <= TIER_DROP_LIST {
                    self.drop_from_tier(&due);
                }
            }
            if walk.unindex && !items.is_empty() {
                self.backend.unindex(walk.index, items).await?;
            }
            match next {
                Some(next) => cursor = next,
                None => return Ok(changed),
            }
        }
    }
}

/// An index purge drops the keys it purged from the tier one by one, up to
/// this many; past it, or when it fails, the whole tier.
const TIER_DROP_LIST: usize = 10_000;

/// What a purge does with an index it walks.
struct IndexWalk<'a> {
    index: Index<'a>,
    change: Change<'a>,
    /// Only members whose record may still exist (tags); a scope purge
    /// visits every member (an expired one costs a no-op).
    live_only: bool,
    /// Drop the members read once their records changed.
    unindex: bool,
}

fn purge_change(soft: bool) -> Change<'static> {
    if soft {
        Change::Stale
    } else {
        Change::Drop
    }
}

#[async_trait]
impl<B: Backend> Store for Protocol<B> {
    fn kind(&self) -> &'static str {
        B::KIND
    }

    fn is_up(&self) -> bool {
        self.backend.is_up()
    }

    fn shards(&self) -> Vec<(String, bool)> {
        self.backend.shards()
    }

    fn outages(&self) -> u64 {
        self.backend.outages()
    }

    fn health(&self) -> super::health::StoreHealth {
        self.backend.health()
    }

    fn error_counts(&self) -> [u64; super::health::ERROR_KINDS.len()] {
        self.backend.error_counts()
    }

    fn scope_secret(&self) -> Option<Bytes> {
        self.secret.clone().or_else(|| self.backend.shared_secret())
    }

    fn peek(&self, key: &str, field: &str) -> Option<Arc<Entry>> {
        self.tier.as_ref()?.peek(key, field)
    }

    async fn fence(&self) {
        if let Some(tier) = &self.tier {
            tier.fence().await;
        }
    }

    async fn lookup(&self, key: &str, field: &str) -> StoreResult<Lookup> {
        let read = self.backend.read(key, field);
        let entry = match &self.tier {
            Some(tier) => tier.read_through(key, field, read).await?,
            None => read.await?,
        };
        if entry.is_some() {
            return Ok(Lookup {
                entry,
                guard: FillGuard::default(),
            });
        }
        Ok(Lookup {
            entry: None,
            guard: self.backend.guard(key).await?,
        })
    }

    async fn fill_guard(&self, key: &str) -> StoreResult<FillGuard> {
        self.backend.guard(key).await
    }

    async fn fill(&self, entry: EntryFill<'_>) -> StoreResult<bool> {
        let EntryFill {
            key,
            field,
            value,
            ttl,
            guard,
            tags,
        } = entry;
        // A credential scope's entries are indexed like a tag's.
        let mut indexes: Vec<Index<'_>> = tags.iter().map(|t| Index::Tag(t)).collect();
        indexes.extend(credential_scope(field).map(Index::Scope));
        let fill = Fill {
            key,
            field,
            value,
            ttl,
            guard,
            indexes,
        };
        let stored = self.backend.write(fill).await;
        if let Some(tier) = &self.tier {
            tier.drop_key(key);
        }
        stored
    }

    async fn purge_keys(&self, keys: &[String], soft: bool) -> StoreResult<u64> {
        self.change(keys, purge_change(soft)).await
    }

    async fn purge_pattern(&self, pattern: &str, soft: bool) -> StoreResult<u64> {
        // The epoch first: a fill that looked up before this point does not
        // store, even for a key this walk never sees.
        let purged = async {
            self.backend.bump_epoch().await?;
            let change = if soft { Change::Stale } else { Change::Unlink };
            self.walk_keys(pattern, Keys::Any, change).await
        }
        .await;
        self.drop_tier();
        purged
    }

    async fn purge_tags(&self, tags: &[String], soft: bool) -> StoreResult<u64> {
        // The epoch first: a fill in flight may be about to add its key to
        // one of the tags. A key under several of them is purged once.
        self.backend.bump_epoch().await?;
        let mut done = HashSet::new();
        let purged = async {
            let mut purged = 0;
            for tag in tags {
                let walk = IndexWalk {
                    index: Index::Tag(tag),
                    change: purge_change(soft),
                    live_only: true,
                    // A soft purge keeps the keys findable by the next one.
                    unindex: !soft,
                };
                purged += self.walk_index(walk, &mut done).await?;
            }
            Ok(purged)
        }
        .await;
        self.after_index_purge(&purged, done.len());
        purged
    }

    async fn purge_scope(&self, scope: &str) -> StoreResult<u64> {
        // As a tag purge: a fill in flight for the scope must not store.
        self.backend.bump_epoch().await?;
        let walk = IndexWalk {
            index: Index::Scope(scope),
            change: Change::Unscope(scope),
            live_only: false,
            unindex: true,
        };
        let mut done = HashSet::new();
        let purged = self.walk_index(walk, &mut done).await;
        self.after_index_purge(&purged, done.len());
        purged
    }

    async fn scan_keys(&self, pattern: &str, limit: usize) -> StoreResult<(u64, Vec<String>)> {
        let mut matched = 0u64;
        // The `limit` smallest keys so far (a max-heap).
        let mut smallest: BinaryHeap<String> = BinaryHeap::new();
        let mut cursor = B::Cursor::default();
        loop {
            let page = self.backend.scan(pattern, Keys::Records, cursor).await?;
            matched += page.items.len() as u64;
            for key in page.items {
                if smallest.len() < limit {
                    smallest.push(key);
                } else if smallest.peek().is_some_and(|largest| key < *largest) {
                    smallest.pop();
                    smallest.push(key);
                }
            }
            match page.next {
                Some(next) => cursor = next,
                None => return Ok((matched, smallest.into_sorted_vec())),
            }
        }
    }

    async fn record(&self, key: &str) -> StoreResult<Option<Record>> {
        self.backend.record(key).await
    }

    async fn clear(&self, pattern: Option<&str>) -> StoreResult<u64> {
        let cleared = async {
            self.backend.bump_epoch().await?;
            self.walk_keys(pattern.unwrap_or("*"), Keys::Records, Change::Unlink)
                .await
        }
        .await;
        self.drop_tier();
        cleared
    }

    async fn publish_counters(&self, instance: &str, totals: &[(String, i64)]) -> StoreResult<()> {
        if totals.is_empty() {
            return Ok(());
        }
        self.backend.publish_counters(instance, totals).await
    }

    async fn counters(&self) -> StoreResult<Vec<(String, i64)>> {
        let mut sums: BTreeMap<String, i64> = BTreeMap::new();
        for totals in self.backend.counter_totals().await? {
            for (name, v) in totals {
                let sum = sums.entry(name).or_insert(0);
                *sum = sum.saturating_add(v);
            }
        }
        Ok(sums.into_iter().collect())
    }

    async fn info(&self) -> StoreResult<StoreInfo> {
        self.backend.info().await
    }

    async fn mark_repairing(&self, instance: &str, mark: Option<&str>) -> StoreResult<()> {
        self.backend.mark_repairing(instance, mark).await
    }

    async fn repairing(&self) -> StoreResult<Vec<(String, String)>> {
        self.backend.repairing().await
    }

    async fn try_lock(&self, key: &str, field: &str, ttl: Duration) -> StoreResult<Option<String>> {
        self.backend.try_lock(key, field, ttl).await
    }

    async fn unlock(&self, key: &str, field: &str, token: &str) -> StoreResult<()> {
        self.backend.unlock(key, field, token).await
    }

    async fn is_locked(&self, key: &str, field: &str) -> StoreResult<bool> {
        self.backend.is_locked(key, field).await
    }

    async fn wait_unlocked(&self, key: &str, field: &str, timeout: Duration) {
        self.backend.wait_unlocked(key, field, timeout).await
    }
}
