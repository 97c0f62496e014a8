//! Per-shard routing on a Redis Cluster, so one dead or failing-over
//! primary leaves the others serving.
//!
//! fred's cluster client reconnects as a whole: while one primary is
//! unreachable its router retries the whole cluster, and every command
//! waits, whatever its slot. So the request path's single-key commands go
//! instead to a client of their own per primary, chosen by the key's hash
//! slot in the slot map the cluster client keeps (followed every
//! [`REFRESH`]). Each primary's health is its own: connected, and not
//! stalled (3 timeouts in a row, as for a single Redis, cleared by a PING
//! that answers). Keyspace walks and admin figures stay on the cluster
//! client.

use super::redis::RedisBackend;
use super::{StoreError, StoreResult};
use fred::prelude::*;
use fred::types::cluster::ClusterRouting;
use fred::types::config::{Config, ServerConfig};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often the slot map is followed and stalled primaries are probed.
const REFRESH: Duration = Duration::from_millis(200);
/// Consecutive timeouts after which a primary counts as stalled.
const STALL_AFTER: u64 = 3;

/// One primary's client and health.
pub(super) struct Shard {
    pub name: String,
    pub client: Client,
    timeouts: AtomicU64,
    /// Last health reported, for logging flips once each.
    up: AtomicBool,
    /// Whether this client has connected once. Until then its primary's
    /// commands go through the cluster client, as before the map was known.
    ready: AtomicBool,
}

impl Shard {
    pub fn is_up(&self) -> bool {
        self.client.is_connected() && self.timeouts.load(Ordering::Relaxed) < STALL_AFTER
    }

    fn is_ready(&self) -> bool {
        if self.ready.load(Ordering::Relaxed) {
            return true;
        }
        let connected = self.client.is_connected();
        if connected {
            self.ready.store(true, Ordering::Relaxed);
        }
        connected
    }

    fn note_health(&self) {
        let now = self.is_up();
        if self.up.swap(now, Ordering::Relaxed) != now {
            if now {
                tracing::info!(target: "cachegate::store", shard = %self.name, "cluster primary is reachable again; its keys are cached again");
            } else {
                tracing::warn!(target: "cachegate::store", shard = %self.name, "cluster primary is unreachable; its keys go uncached, the others' are unaffected");
            }
        }
    }
}

/// The slot map and a client per primary.
#[derive(Default)]
struct Routes {
    slots: Option<ClusterRouting>,
    shards: HashMap<fred::types::config::Server, Arc<Shard>>,
}

pub(super) struct Shards {
    /// The cluster's config, with the server swapped for each primary's.
    base: Config,
    routes: RwLock<Routes>,
}

/// The client a command goes to: the cluster client (a single Redis, or a
/// cluster whose slot map is not known yet), or one primary's.
pub(super) enum On<'a> {
    Pool(&'a Client),
    Shard(Arc<Shard>),
}

impl std::ops::Deref for On<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        match self {
            On::Pool(c) => c,
            On::Shard(s) => &s.client,
        }
    }
}

impl Shards {
    pub fn new(base: Config) -> Shards {
        Shards {
            base,
            routes: RwLock::default(),
        }
    }

    /// The primary serving `redis_key`: `Ok(None)` when the slot map is not
    /// known yet; `Unavailable` when that primary is down or stalled.
    fn route(&self, redis_key: &str) -> StoreResult<Option<Arc<Shard>>> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let Some(slots) = &routes.slots else { return Ok(None) };
        let slot = ClusterRouting::hash_key(redis_key.as_bytes());
        let shard = slots
            .get_server(slot)
            .and_then(|server| routes.shards.get(server))
            .ok_or(StoreError::Unavailable)?;
        if !shard.is_ready() {
            return Ok(None);
        }
        if shard.is_up() {
            Ok(Some(shard.clone()))
        } else {
            Err(StoreError::Unavailable)
        }
    }

    /// The slot ranges of each primary in the slot map.
    pub fn slot_ranges(&self) -> Vec<Vec<(u16, u16)>> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let Some(slots) = &routes.slots else { return Vec::new() };
        slots
            .unique_primary_nodes()
            .iter()
            .map(|primary| {
                slots
                    .slots()
                    .iter()
                    .filter(|r| r.primary == *primary)
                    .map(|r| (r.start, r.end))
                    .collect()
            })
            .collect()
    }

    /// Each primary's name and health.
    pub fn states(&self) -> Vec<(String, bool)> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        // A client still making its first connection is not a primary
        // down: its commands go through the cluster client meanwhile.
        let mut states: Vec<(String, bool)> = routes
            .shards
            .values()
            .map(|s| (s.name.clone(), !s.is_ready() || s.is_up()))
            .collect();
        states.sort();
        states
    }

    /// Follows the cluster client's slot map: new primaries get a client,
    /// primaries no longer serving slots lose theirs.
    fn follow(&self, state: ClusterRouting) {
        let same = {
            let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
            routes.slots.as_ref().is_some_and(|old| same_map(old, &state))
        };
        if same {
            return;
        }
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let primaries = state.unique_primary_nodes();
        routes.shards.retain(|server, shard| {
            let keep = primaries.contains(server);
            if !keep {
                let client = shard.client.clone();
                tokio::spawn(async move {
                    let _ = client.quit().await;
                });
            }
            keep
        });
        for server in primaries {
            if routes.shards.contains_key(&server) {
                continue;
            }
            match self.connect(&server) {
                Ok(shard) => {
                    routes.shards.insert(server, Arc::new(shard));
                }
                Err(e) => {
                    tracing::warn!(target: "cachegate::store", shard = %server, error = %e, "cannot make a client for a cluster primary")
                }
            }
        }
        tracing::debug!(target: "cachegate::store", primaries = routes.shards.len(), "following the cluster's slot map");
        routes.slots = Some(state);
    }

    fn connect(&self, server: &fred::types::config::Server) -> Result<Shard, Error> {
        let mut config = self.base.clone();
        config.server = ServerConfig::Centralized { server: server.clone() };
        // One attempt: a failing primary's command fails fast here.
        let client = super::redis_connect::builder(config, 1).build()?;
        client.connect();
        Ok(Shard {
            name: format!("{}:{}", server.host, server.port),
            client,
            timeouts: AtomicU64::new(0),
            up: AtomicBool::new(true),
            ready: AtomicBool::new(false),
        })
    }

    fn all(&self) -> Vec<Arc<Shard>> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        routes.shards.values().cloned().collect()
    }
}

/// Whether two slot maps send every slot to the same primary.
fn same_map(a: &ClusterRouting, b: &ClusterRouting) -> bool {
    a.slots().len() == b.slots().len()
        && a.slots()
            .iter()
            .zip(b.slots())
            .all(|(x, y)| x.start == y.start && x.end == y.end && x.primary == y.primary)
}

impl RedisBackend {
    /// The client for a command on `redis_key`: on a cluster, the primary
    /// serving its slot if that primary is up (else `Unavailable`, whatever
    /// the others' state); otherwise the connected pool client.
    pub(super) fn on(&self, redis_key: &str) -> StoreResult<On<'_>> {
        if let Some(shards) = &self.shards {
            if let Some(shard) = shards.route(redis_key)? {
                return Ok(On::Shard(shard));
            }
        }
        self.client().map(On::Pool)
    }

    /// [`RedisBackend::bounded`] for a command sent through `on`: a timeout
    /// counts against that primary only.
    pub(super) async fn bounded_on<T>(
        &self,
        on: &On<'_>,
        fut: impl Future<Output = Result<T, Error>>,
    ) -> StoreResult<T> {
        let On::Shard(shard) = on else {
            return self.bounded(fut).await;
        };
        match tokio::time::timeout(self.timeout(), fut).await {
            Ok(result) => {
                shard.timeouts.store(0, Ordering::Relaxed);
                shard.note_health();
                result.map_err(|e| StoreError::Backend(e.to_string()))
            }
            Err(_) => {
                shard.timeouts.fetch_add(1, Ordering::Relaxed);
                shard.note_health();
                Err(StoreError::Timeout)
            }
        }
    }

    /// Each cluster primary's slot ranges (empty off a cluster, or before
    /// the slot map is known).
    pub(super) fn shard_slot_ranges(&self) -> Vec<Vec<(u16, u16)>> {
        self.shards.as_ref().map(|s| s.slot_ranges()).unwrap_or_default()
    }

    /// Whether some cluster primary is up (the store is partly reachable).
    pub(super) fn is_up_elsewhere(&self) -> bool {
        self.shards
            .as_ref()
            .is_some_and(|s| s.states().iter().any(|(_, up)| *up))
    }

    /// Each cluster primary's address and health (empty off a cluster).
    pub fn shard_states(&self) -> Vec<(String, bool)> {
        self.shards.as_ref().map(|s| s.states()).unwrap_or_default()
    }
}

/// Follows the slot map and probes stalled or unreachable primaries, until
/// the store is dropped.
pub(super) async fn follow_cluster(store: std::sync::Weak<RedisBackend>) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let Some(store) = store.upgrade() else { return };
        let Some(shards) = &store.shards else { return };
        if let Some(state) = store.pool_client().cached_cluster_state() {
            shards.follow(state);
        }
        for shard in shards.all() {
            if shard.timeouts.load(Ordering::Relaxed) >= STALL_AFTER && shard.client.is_connected() {
                let ping = tokio::time::timeout(store.timeout(), shard.client.ping::<String>(None)).await;
                if matches!(ping, Ok(Ok(_))) {
                    shard.timeouts.store(0, Ordering::Relaxed);
                }
            }
            if shard.is_ready() {
                shard.note_health();
            }
        }
    }
}
