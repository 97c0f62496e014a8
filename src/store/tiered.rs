//! The in-process tier: a bounded in-memory copy of recently read records
//! in front of the Redis backend, kept coherent across every instance by
//! Redis client-side caching. The protocol (`protocol.rs`) passes through
//! it the primitives it changes: reads (answered from the tier, or put in
//! it), and every write and change of a key (which drop the key).
//!
//! A dedicated RESP3 connection runs `CLIENT TRACKING ON BCAST` (on the key
//! prefix), so Redis pushes the name of every key any client writes; the
//! tier drops that key. The tier serves only while that connection is up:
//! when it drops, invalidations may have been lost, so the tier is emptied
//! and stays unused until tracking is re-established.
//!
//! A read that misses the tier and finds the record in Redis may put it in
//! the tier only if no invalidation of that key arrived meanwhile (a per-key
//! sequence check), so a purge racing the read cannot leave an old copy.
//! Every write this instance makes (fill, purge) also drops its own copy at
//! once, so it reads its own writes without waiting for the push. Other
//! instances' writes reach it a little later; with read-your-writes (the
//! default) the tier serves only under a lease and every purge is fenced
//! (`coherence.rs`), so no instance serves the old entry once a write was
//! answered.

use super::coherence::{Coherence, Signals};
use super::coherence_metrics::CoherenceMetrics;
use super::entry::Entry;
use super::redis::RedisBackend;
use super::StoreResult;
use crate::config::{Consistency, RedisConfig, TierConfig};
use crate::rules::INTERNAL_PREFIX;
use bytes::Bytes;
use fred::interfaces::TrackingInterface;
use fred::prelude::*;
use fred::types::client::Invalidation;
use fred::types::RespVersion;
use moka::sync::Cache;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One field's record as the tier holds it: the stored bytes, and the
/// entry decoded once when it entered the tier (`None` for a `Vary` marker
/// or anything else that is not an entry).
#[derive(Clone)]
struct Held {
    raw: Bytes,
    entry: Option<Arc<Entry>>,
}

impl Held {
    /// Bytes this field holds: its record, plus the decoded entry's header
    /// map (whose names and values share the record's bytes) and the
    /// bookkeeping around both, so the tier's bound is its real size.
    fn weight(&self) -> usize {
        const OVERHEAD: usize = 160;
        const PER_HEADER: usize = 48;
        self.raw.len() + OVERHEAD + self.entry.as_ref().map_or(0, |e| PER_HEADER * e.headers.len())
    }
}

/// The fields of one logical key held in the tier.
type Fields = Arc<HashMap<String, Held>>;

/// How long a record may sit in the tier without being read again; the
/// caller still checks each entry's own freshness on every hit.
const TIER_IDLE: Duration = Duration::from_secs(300);

pub struct Tier {
    inner: Arc<RedisBackend>,
    tier: Cache<String, Fields>,
    /// Whether tracking is established, so the tier may serve.
    tracking: Arc<AtomicBool>,
    /// Bumped on every invalidation and every tier clear; a read's insert
    /// goes ahead only if it did not move (see the module doc).
    seq: Arc<AtomicU64>,
    /// The last `seq` at which each recently invalidated key was dropped.
    dropped: Cache<String, u64>,
    /// The `seq` of the last time everything was dropped (a clear, a lost
    /// tracking connection, or `dropped` forgetting a key for room).
    cleared_at: Arc<AtomicU64>,
    /// Leases and fences (`consistency = "read-your-writes"`); `None` for
    /// `"eventual"`.
    coherence: Option<Arc<Coherence>>,
    _tracker: Client,
}

/// What the tracking connection's pushes act on.
#[derive(Clone)]
struct Invalidator {
    tier: Cache<String, Fields>,
    seq: Arc<AtomicU64>,
    dropped: Cache<String, u64>,
    cleared_at: Arc<AtomicU64>,
    prefix: String,
    /// `<prefix>__cg:`: cachegate's own keys, never in the tier.
    internal: String,
    coherence: Option<Arc<Coherence>>,
}

impl Invalidator {
    fn clear(&self) {
        self.cleared_at
            .store(self.seq.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        self.tier.invalidate_all();
    }

    /// One push message: every key is dropped (or noted, for heartbeats and
    /// fences) before any lease, fence or acknowledgement is acted on, since
    /// Redis puts the keys of one event-loop pass in one message.
    fn push(&self, keys: Vec<fred::types::Key>) {
        if keys.is_empty() {
            // FLUSHDB / FLUSHALL: everything goes.
            self.clear();
            return;
        }
        let mut signals = Signals::default();
        for key in keys {
            let Some(name) = key.as_str() else { continue };
            if let Some(internal) = name.strip_prefix(self.internal.as_str()) {
                if let Some(c) = &self.coherence {
                    c.note(internal, &mut signals);
                }
                continue;
            }
            let logical = name.strip_prefix(self.prefix.as_str()).unwrap_or(name).to_string();
            let now = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
            // Noted before the drop: a read inserting between the two then
            // sees the note in its re-check (see `lookup`).
            self.dropped.insert(logical.clone(), now);
            self.tier.invalidate(&logical);
        }
        if let Some(c) = &self.coherence {
            c.apply(signals);
        }
    }
}

/// How a tier is set up.
pub struct TierSettings<'a> {
    /// The Redis the tier tracks (its own RESP3 connection).
    pub redis: &'a RedisConfig,
    /// The key prefix tracked.
    pub prefix: &'a str,
    pub tier: &'a TierConfig,
    pub metrics: CoherenceMetrics,
}

impl Tier {
    /// A tier in front of a connected Redis backend; starts the tracking
    /// connection (and, for read-your-writes, heartbeats and fence
    /// acknowledgements).
    pub fn start(inner: Arc<RedisBackend>, settings: TierSettings<'_>) -> Result<Tier, crate::BoxError> {
        let TierSettings {
            redis: cfg,
            prefix,
            tier: settings,
            metrics,
        } = settings;
        let tier: Cache<String, Fields> = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|k: &String, v: &Fields| {
                let size = k.len() + v.iter().map(|(f, h)| f.len() + h.weight()).sum::<usize>();
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .time_to_idle(TIER_IDLE)
            .build();
        let tracking = Arc::new(AtomicBool::new(false));
        let seq = Arc::new(AtomicU64::new(0));
        let cleared_at = Arc::new(AtomicU64::new(0));
        // Keys are remembered long past any read's duration; one forgotten
        // early for room counts as a clear, so no racing insert slips by.
        let dropped = {
            let (seq, cleared_at) = (seq.clone(), cleared_at.clone());
            Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(10))
                .eviction_listener(move |_k, _v, cause| {
                    if cause == moka::notification::RemovalCause::Size {
                        cleared_at.store(seq.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    }
                })
                .build()
        };

        let mut config = super::redis_connect::fred_config(cfg)?;
        config.version = RespVersion::RESP3;
        let tracker = Builder::from_config(config)
            .with_connection_config(|c| c.connection_timeout = Duration::from_secs(1))
            // A burst of pushes larger than this, unread, is a clear.
            .with_performance_config(|p| p.broadcast_channel_capacity = 4096)
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 1000, 2))
            .build()?;
        let coherence = match settings.consistency {
            Consistency::ReadYourWrites => Some(Coherence::start(
                &inner,
                cfg,
                settings.lease,
                tracking.clone(),
                metrics,
            )?),
            Consistency::Eventual => None,
        };
        let invalidator = Invalidator {
            tier: tier.clone(),
            seq: seq.clone(),
            dropped: dropped.clone(),
            cleared_at: cleared_at.clone(),
            prefix: prefix.to_string(),
            internal: format!("{prefix}{INTERNAL_PREFIX}"),
            coherence: coherence.clone(),
        };
        // Subscribed before the connection exists, so no push is missed.
        tokio::spawn(receive_pushes(tracker.invalidation_rx(), invalidator.clone()));
        {
            // fred does not re-enable tracking on a new connection: a
            // reconnect is a lost tracking connection, even one too quick
            // for `keep_tracking` to see.
            let (tracking, invalidator) = (tracking.clone(), invalidator.clone());
            tracker.on_reconnect(move |_| {
                if tracking.swap(false, Ordering::SeqCst) {
                    lose_tracking(&invalidator);
                }
                async { Ok(()) }
            });
        }
        tracker.connect();

        let store = Tier {
            inner,
            tier,
            tracking: tracking.clone(),
            seq,
            dropped,
            cleared_at,
            coherence,
            _tracker: tracker.clone(),
        };
        tokio::spawn(keep_tracking(tracker, prefix.to_string(), tracking, invalidator));
        Ok(store)
    }

    /// Whether a tier hit may be served: tracking is up and, for
    /// read-your-writes, the lease holds.
    fn serving(&self) -> bool {
        self.tracking.load(Ordering::SeqCst)
            && match &self.coherence {
                Some(c) => c.serving(),
                None => true,
            }
    }

    /// Whether a record read from Redis may enter the tier: tracking is up,
    /// so any later write to it will drop it (a lapsed lease does not stop
    /// invalidations, it only delays them).
    fn filling(&self) -> bool {
        self.tracking.load(Ordering::SeqCst)
    }

    /// Drops a key from the tier, as an invalidation would.
    pub fn drop_key(&self, key: &str) {
        let now = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        // Noted before the drop, as for a push (see `lookup`).
        self.dropped.insert(key.to_string(), now);
        self.tier.invalidate(key);
    }

    /// Drops everything (a pattern purge, a clear).
    pub fn drop_all(&self) {
        self.cleared_at
            .store(self.seq.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        self.tier.invalidate_all();
    }

    /// Whether an invalidation of `key` (or a clear) happened after `since`.
    fn moved_since(&self, key: &str, since: u64) -> bool {
        self.cleared_at.load(Ordering::SeqCst) > since || self.dropped.get(key).is_some_and(|at| at > since)
    }
}

/// Applies the tracking connection's pushes in order. Pushes that were
/// lost because this task fell behind empty the tier.
async fn receive_pushes(mut pushes: tokio::sync::broadcast::Receiver<Invalidation>, invalidator: Invalidator) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match pushes.recv().await {
            Ok(push) => invalidator.push(push.keys),
            Err(RecvError::Lagged(lost)) => {
                tracing::warn!(target: "cachegate::store", lost, "invalidations were lost (the tier fell behind); the tier is emptied");
                invalidator.clear();
                // Peers' heartbeats may be among the lost: the peer list
                // is complete again only after a full window of pushes.
                if let Some(c) = &invalidator.coherence {
                    c.watching();
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// The tracking connection is gone: the tier is emptied and, for
/// read-your-writes, loses its lease.
fn lose_tracking(invalidator: &Invalidator) {
    if let Some(c) = &invalidator.coherence {
        c.revoke();
    }
    invalidator.clear();
}

/// Watches the tracking connection: while it is down the tier is empty and
/// unused; after every (re)connect tracking is enabled again, then the tier
/// (emptied once more, since pushes may have been missed) serves again.
async fn keep_tracking(tracker: Client, prefix: String, tracking: Arc<AtomicBool>, invalidator: Invalidator) {
    let prefixes: Vec<String> = if prefix.is_empty() { Vec::new() } else { vec![prefix] };
    loop {
        let up = tracker.is_connected();
        if !up {
            if tracking.swap(false, Ordering::SeqCst) {
                tracing::warn!(target: "cachegate::store", "tracking connection lost; the in-process tier is off until it is back");
                lose_tracking(&invalidator);
            }
        } else if !tracking.load(Ordering::SeqCst) {
            let started = tokio::time::timeout(
                Duration::from_secs(1),
                tracker.start_tracking(prefixes.clone(), true, false, false, false),
            )
            .await;
            if matches!(started, Ok(Ok(()))) {
                invalidator.clear();
                if let Some(c) = &invalidator.coherence {
                    c.watching();
                }
                tracking.store(true, Ordering::SeqCst);
                tracing::info!(target: "cachegate::store", "tracking established; the in-process tier serves");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Tier {
    /// An entry held in the tier, already decoded (no I/O).
    pub fn peek(&self, key: &str, field: &str) -> Option<Arc<Entry>> {
        if !self.serving() {
            return None;
        }
        self.tier.get(key)?.get(field)?.entry.clone()
    }

    /// A field from the tier; else `read` (the backend's), put in the tier
    /// unless an invalidation of the key arrived since the read began.
    pub async fn read_through(
        &self,
        key: &str,
        field: &str,
        read: impl std::future::Future<Output = StoreResult<Option<Bytes>>>,
    ) -> StoreResult<Option<Bytes>> {
        if self.serving() {
            if let Some(held) = self.tier.get(key).and_then(|fields| fields.get(field).cloned()) {
                return Ok(Some(held.raw));
            }
        }
        let since = self.seq.load(Ordering::SeqCst);
        let value = read.await?;
        if let Some(value) = &value {
            if self.filling() && !self.moved_since(key, since) {
                let mut fields: HashMap<String, Held> = self.tier.get(key).map(|f| (*f).clone()).unwrap_or_default();
                // A copy of its own: the value fred read is a slice of the
                // connection's read buffer, which it would keep alive (the
                // tier grew to 1.7x its bound that way in bench/bench.sh).
                let raw = Bytes::copy_from_slice(value);
                let held = Held {
                    entry: Entry::decode(&raw).map(Arc::new),
                    raw,
                };
                fields.insert(field.to_string(), held);
                self.tier.insert(key.to_string(), Arc::new(fields));
                // An invalidation that raced this insert wins.
                if self.moved_since(key, since) {
                    self.tier.invalidate(key);
                }
            }
        }
        Ok(value)
    }

    /// Returns once no other instance can serve, from its tier, an entry a
    /// purge just removed (`coherence.rs`).
    pub async fn fence(&self) {
        if let Some(c) = &self.coherence {
            c.fence(&self.inner, self.tracking.load(Ordering::SeqCst)).await;
        }
    }
}
