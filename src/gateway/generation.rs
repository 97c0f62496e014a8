//! What a request runs on: one [`Generation`] of the config (rules, TTLs,
//! backend client, rule counters), replaced whole by a reload, and the
//! [`Shared`] state every generation of a running instance uses (store,
//! metrics, fills in flight, pending purges, access log).

use super::coalesce::Inflight;
use super::pending_purges::{self, PendingPurges};
use super::scope::ScopeKey;
use crate::access_log::AccessLog;
use crate::config::{Config, StoreKind};
use crate::metrics::{Metrics, RuleCounters};
use crate::proxy::Forwarder;
use crate::store::memory::MemoryStore;
use crate::store::protocol::Protocol;
use crate::store::redis::{RedisBackend, RedisSettings};
use crate::store::tiered::{Tier, TierSettings};
use crate::store::Store;
use crate::BoxError;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// One generation of the config; a reload makes a new one, and in-flight
/// requests finish on the generation they started on.
pub(super) struct Generation {
    pub(super) config: Arc<Config>,
    pub(super) forwarder: Forwarder,
    /// This generation's rules' counters, by rule index.
    pub(super) rule_counters: Vec<Arc<RuleCounters>>,
}

impl Generation {
    fn new(config: Arc<Config>, metrics: &Metrics) -> Generation {
        // Made before the generation serves, so every rule shows in
        // `/metrics` from the start.
        let names: Vec<String> = config.rules.cache.iter().map(|r| r.name.clone()).collect();
        Generation {
            forwarder: Forwarder::new(&config.backend),
            rule_counters: metrics.rule_counters(&names),
            config,
        }
    }
}

/// The state every generation of a running instance shares.
pub(super) struct Shared {
    pub(super) store: Arc<dyn Store>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) inflight: Inflight,
    pub(super) scope_key: OnceLock<ScopeKey>,
    /// One keyspace walk (admin `keys`, pattern `clear`) at a time.
    pub(super) keyspace_walks: tokio::sync::Semaphore,
    /// Purges that failed (or may have been lost), replayed as soon as the
    /// store answers; and whether an outage repair is under way.
    pub(super) pending: Arc<PendingPurges>,
    pub(super) access_log: Option<AccessLog>,
    /// The backend probe's verdict (`backend_probe.rs`).
    pub(super) backend_health: super::backend_probe::BackendHealth,
}

/// Everything a request needs: this generation and the shared state.
pub struct Gateway {
    pub(super) generation: Generation,
    pub(super) shared: Arc<Shared>,
}

impl Gateway {
    /// Builds the store and the backend client. Never fails because Redis
    /// is down (fail open); fails only on a store URL fred cannot use.
    pub async fn new(config: Arc<Config>) -> Result<Gateway, BoxError> {
        let metrics = Arc::new(Metrics::new());
        let store = open_store(&config, &metrics).await?;
        crate::metrics::spawn_flusher(metrics.clone(), store.clone(), Duration::from_millis(500));
        let access_log = AccessLog::start(&config.access_log, metrics.clone())
            .map_err(|e| format!("cannot open the access log: {e}"))?;
        let pending = Arc::new(PendingPurges::open(config.cache.purge_journal.clone()));
        pending_purges::spawn_repair(&pending, store.clone(), metrics.clone());
        Ok(Gateway {
            generation: Generation::new(config, &metrics),
            shared: Arc::new(Shared {
                store,
                metrics,
                inflight: Inflight::default(),
                scope_key: OnceLock::new(),
                keyspace_walks: tokio::sync::Semaphore::new(1),
                pending,
                access_log,
                backend_health: Default::default(),
            }),
        })
    }

    /// The next generation: `config`'s rules, TTLs, tokens, limits and
    /// backend, with this one's shared state. The caller keeps restart-only
    /// settings as they are (`crate::reload`).
    pub fn reconfigured(&self, config: Arc<Config>) -> Gateway {
        Gateway {
            generation: Generation::new(config, &self.shared.metrics),
            shared: self.shared.clone(),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.generation.config
    }

    /// Leave to walk the whole keyspace (SCAN), if no other walk runs in
    /// this instance: an admin loop of pattern requests must not keep Redis
    /// scanning end to end.
    pub fn keyspace_walk(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.shared.keyspace_walks.try_acquire().ok()
    }

    /// The scope HMAC, keyed once the store knows its secret (it never
    /// changes after that).
    pub(super) fn scope_key(&self) -> Option<&ScopeKey> {
        if let Some(key) = self.shared.scope_key.get() {
            return Some(key);
        }
        let key = ScopeKey::new(&self.shared.store.scope_secret()?)?;
        Some(self.shared.scope_key.get_or_init(|| key))
    }
}

/// The store `config` names: Redis (with the in-process tier in front when
/// it is in use) or the embedded memory store.
async fn open_store(config: &Config, metrics: &Metrics) -> Result<Arc<dyn Store>, BoxError> {
    let tombstone_ttl = Duration::from_secs(60).max(config.backend.timeout * 2);
    let (StoreKind::Redis, Some(redis)) = (&config.store, &config.redis) else {
        return Ok(Arc::new(MemoryStore::new(
            config.memory.max_entries,
            config.memory.max_bytes,
            tombstone_ttl,
            config.cache.scope_secret.as_deref(),
        )));
    };
    let settings = RedisSettings {
        prefix: &config.cache.key_prefix,
        timeout: config.cache.store_timeout,
        tombstone_ttl,
        connect_wait: Duration::from_secs(2),
        share_secret: config.cache.scope_secret.is_none(),
    };
    let backend = RedisBackend::connect(redis, settings).await?;
    let store = Protocol::over(backend.clone(), config.cache.scope_secret.as_deref());
    if config.tier.enabled && !config.tier_in_use() {
        tracing::info!(target: "cachegate::store", "in-process tier is off on a Redis Cluster (client tracking cannot follow every primary)");
    }
    if !config.tier_in_use() {
        return Ok(Arc::new(store));
    }
    let settings = TierSettings {
        redis,
        prefix: &config.cache.key_prefix,
        tier: &config.tier,
        metrics: metrics.coherence(),
    };
    Ok(Arc::new(store.with_tier(Tier::start(backend, settings)?)))
}
