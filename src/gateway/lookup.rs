//! Phase 4, lookup: the entry for a key and field. The in-process tier
//! first (no store call, no decoding), else the store; a `Vary` marker
//! leads to the variant the request selects. Anything but a fresh entry
//! comes back with the guard a fill must present.

use super::key::CacheKey;
use super::{vary, Gateway};
use crate::store::entry::{now_ms, Entry};
use crate::store::{FillGuard, StoreError, StoreResult};
use std::time::{Duration, Instant};

/// What the lookup found.
pub(super) struct Found {
    /// The decoded entry, fresh or not.
    pub(super) entry: Option<Entry>,
    /// The field the entry lives in (the scope's, or a `Vary` variant's).
    pub(super) field: String,
    pub(super) guard: FillGuard,
    /// Whether `guard` was read: not for a fresh entry, which needs none
    /// unless the request's directives refuse it.
    pub(super) guarded: bool,
}

impl Gateway {
    /// The scope's field, and the `Vary` variant it points to if it holds a
    /// marker.
    pub(super) async fn read(&self, key: &CacheKey, request: &http::HeaderMap) -> StoreResult<Found> {
        self.unsettled(key)?;
        let store = &self.shared.store;
        // The in-process tier's decoded entry: no store call, no decoding.
        if let Some(entry) = store.peek(&key.key, &key.field) {
            let pending = &self.shared.pending;
            pending.note_outages(store.outages());
            if entry.is_fresh(now_ms()) && !pending.must_revalidate(entry.stored_at_ms) {
                self.shared.metrics.tier_hit();
                return Ok(Found {
                    entry: Some(Entry::clone(&entry)),
                    field: key.field.clone(),
                    guard: FillGuard::default(),
                    guarded: false,
                });
            }
        }
        let lookup = self.timed("lookup", store.lookup(&key.key, &key.field)).await?;
        // On a miss too: the revalidation window after an outage starts at
        // the first read after it, before any fill that read leads to can
        // store (the repair task's tick may come later, and would then
        // make that fill revalidate once for nothing).
        self.shared.pending.note_outages(store.outages());
        let Some(raw) = lookup.entry else {
            return Ok(Found {
                entry: None,
                field: key.field.clone(),
                guard: lookup.guard,
                guarded: true,
            });
        };
        let (entry, field) = match vary::parse_marker(&raw) {
            None => (Entry::decode(&raw), key.field.clone()),
            Some(names) => {
                let field = vary::variant_field(&key.field, &names, request);
                let variant = self.timed("lookup", store.lookup(&key.key, &field)).await?;
                (variant.entry.as_ref().and_then(Entry::decode), field)
            }
        };
        let entry = entry.map(|e| self.unless_repairing(e));
        if entry.as_ref().is_some_and(|e| e.is_fresh(now_ms())) {
            return Ok(Found {
                entry,
                field,
                guard: FillGuard::default(),
                guarded: false,
            });
        }
        // The record exists but gives no fresh entry: a fill will follow and
        // needs the guard covering the record as it is now.
        let guard = self.timed("fill_guard", store.fill_guard(&key.key)).await?;
        Ok(Found {
            entry,
            field,
            guard,
            guarded: true,
        })
    }

    /// Reads the guard a fill must present, for a fresh entry the request
    /// would not take as it is.
    pub(super) async fn guard_for(&self, key: &CacheKey, found: &mut Found) -> StoreResult<()> {
        found.guard = self.timed("fill_guard", self.shared.store.fill_guard(&key.key)).await?;
        found.guarded = true;
        Ok(())
    }

    /// An entry as it may be used now: while an outage repair is under way
    /// somewhere (`pending_purges.rs`), one stored before it is stale, so it
    /// is revalidated, not served (a purge of it may not be applied yet).
    fn unless_repairing(&self, mut entry: Entry) -> Entry {
        if self.shared.pending.must_revalidate(entry.stored_at_ms) {
            entry.lifetime.ttl = Duration::ZERO;
            entry.lifetime.stale_while_revalidate = Duration::ZERO;
            // Not even a client's max-stale may take it unvalidated.
            entry.lifetime.must_revalidate = true;
        }
        entry
    }

    /// Whether a purge not yet applied (this instance's or a peer's) covers
    /// the entry: then it is neither served nor filled (`Unavailable`:
    /// answered uncached) until the purge goes through.
    fn unsettled(&self, key: &CacheKey) -> StoreResult<()> {
        if self.shared.pending.covers(&key.key, &key.tags, &key.field) {
            Err(StoreError::Unavailable)
        } else {
            Ok(())
        }
    }

    /// Runs a store call, recording its latency and any error.
    pub(super) async fn timed<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let started = Instant::now();
        let result = call.await;
        self.shared.metrics.store_call(op, started.elapsed(), &result);
        result
    }
}

/// The `Cache-Status` detail of a store failure.
pub(super) fn store_detail(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unavailable => "store-unavailable",
        StoreError::Timeout => "store-timeout",
        StoreError::Backend(_) => "store-error",
    }
}
