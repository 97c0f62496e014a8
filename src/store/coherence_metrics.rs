//! The in-process tier's lease and fence figures (`coherence.rs`), made
//! here so the store needs nothing from `crate::metrics`, which registers
//! them for `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The in-process tier's lease and fence figures (`src/store/coherence.rs`),
/// handed to the store when it is built. Clones share the series.
#[derive(Clone)]
pub struct CoherenceMetrics {
    /// Fences a purge waited on.
    pub fence_waits: Counter,
    /// How long each fence held the purge's answer.
    pub fence_wait_seconds: Histogram,
    /// Live peers that acknowledged a fence in time.
    pub peers_acked: Counter,
    /// Live peers that did not: the fence waited the lease out for them.
    pub peers_timed_out: Counter,
    /// Leases that lapsed while the tracking connection was up (Redis
    /// stalled, heartbeats late): the tier stopped serving until renewed.
    pub leases_lost: Counter,
}

impl Default for CoherenceMetrics {
    fn default() -> CoherenceMetrics {
        CoherenceMetrics::new()
    }
}

impl CoherenceMetrics {
    pub fn new() -> CoherenceMetrics {
        CoherenceMetrics {
            fence_waits: Counter::default(),
            fence_wait_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 14)),
            peers_acked: Counter::default(),
            peers_timed_out: Counter::default(),
            leases_lost: Counter::default(),
        }
    }

    /// Adds the series to the registry behind `/metrics`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "fence_waits",
            "Purges that waited for the fleet's tiers to pass them",
            self.fence_waits.clone(),
        );
        registry.register(
            "fence_wait_seconds",
            "Time a purge's answer waited for its fence",
            self.fence_wait_seconds.clone(),
        );
        registry.register(
            "fence_peers_acked",
            "Peers that acknowledged a fence",
            self.peers_acked.clone(),
        );
        registry.register(
            "fence_peers_timed_out",
            "Live peers that did not acknowledge a fence within the lease",
            self.peers_timed_out.clone(),
        );
        registry.register(
            "tier_leases_lost",
            "Tier leases that lapsed while the tracking connection was up",
            self.leases_lost.clone(),
        );
    }
}
