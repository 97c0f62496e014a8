//! Read-your-writes across instances for the in-process tier: leases and
//! fences, both carried by Redis's invalidation pushes so that they are
//! ordered with the invalidations themselves.
//!
//! - **Lease.** Every `L/4` an instance writes `__cg:hb:<id>:<n>` (expiring)
//!   and remembers when it sent heartbeat `n`. When the push of its own
//!   heartbeat `n` arrives on the tracking connection, every invalidation of
//!   a command Redis executed before that heartbeat has been handled, so the
//!   tier may serve until `sent_at(n) + L`. The hit path is one atomic load.
//! - **Registry.** The pushes of other instances' heartbeats say which peers
//!   are alive (seen within `L + margin`).
//! - **Fence.** After a purge, the purging instance writes (and at once
//!   deletes, so no expiry pushes it again) `__cg:fence:<id>:<m>` and waits until either its own push of it arrived
//!   and every live peer acknowledged `m` (each peer acknowledges after
//!   handling the whole push message carrying it, so after the purge's
//!   invalidation), or `L + margin` passed since the purge completed (then
//!   any peer still serving holds a lease from a heartbeat sent after the
//!   purge, so it has handled the purge). ARCHITECTURE.md has the argument.
//!
//! `[tier] consistency = "eventual"` runs none of this.

use super::coherence_metrics::CoherenceMetrics;
use super::redis::RedisBackend;
use crate::config::RedisConfig;
use crate::rules::INTERNAL_PREFIX;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Heartbeat keys live this many leases: the registry an operator can list.
const BEAT_TTL_LEASES: u32 = 10;
/// Send times of recent heartbeats kept, so that a late push of an older
/// heartbeat (one that timed out, then ran) is still understood.
const BEATS_REMEMBERED: usize = 64;

/// The lease arithmetic, in nanoseconds of one monotonic clock. Pure, so
/// that its rules are tested on their own.
#[derive(Debug, Clone, Copy)]
pub struct LeaseMath {
    /// `L`.
    pub lease: u64,
    /// Allowance for clocks of two hosts running at slightly different
    /// rates: `L/10 + 1 ms` covers a 5% difference.
    pub margin: u64,
}

impl LeaseMath {
    pub fn new(lease: Duration) -> LeaseMath {
        let lease = lease.as_nanos() as u64;
        LeaseMath {
            lease,
            margin: lease / 10 + 1_000_000,
        }
    }

    /// The lease that the push of a heartbeat sent at `sent_at` grants.
    pub fn granted_until(&self, sent_at: u64) -> u64 {
        sent_at.saturating_add(self.lease)
    }

    /// Whether the tier may serve at `now` under a lease ending `until`.
    pub fn holds(now: u64, until: u64) -> bool {
        now < until
    }

    /// Whether a peer whose heartbeat push arrived at `seen` may still hold
    /// a lease at `now`, so a fence must wait for it.
    pub fn live(&self, seen: u64, now: u64) -> bool {
        now.saturating_sub(seen) <= self.lease + self.margin
    }

    /// When a fence stops waiting for acknowledgements: every lease granted
    /// by a heartbeat sent before `purged` has run out by then.
    pub fn fence_deadline(&self, purged: u64) -> u64 {
        purged.saturating_add(self.lease + self.margin)
    }

    /// How often heartbeats are sent: four per lease, so one late beat does
    /// not lapse the lease.
    pub fn beat_every(&self) -> Duration {
        Duration::from_nanos((self.lease / 4).max(1_000_000))
    }
}

/// A heartbeat or a fence, as its key reads after `<prefix>__cg:`.
#[derive(Debug, PartialEq, Eq)]
pub enum Signal<'a> {
    Beat { from: &'a str, n: u64 },
    Fence { from: &'a str, m: u64 },
}

impl Signal<'_> {
    /// `hb:<id>:<n>` or `fence:<id>:<m>`; anything else is not a signal.
    pub fn parse(internal: &str) -> Option<Signal<'_>> {
        let (kind, rest) = internal.split_once(':')?;
        let (from, number) = rest.rsplit_once(':')?;
        let number = number.parse().ok()?;
        if from.is_empty() {
            return None;
        }
        match kind {
            "hb" => Some(Signal::Beat { from, n: number }),
            "fence" => Some(Signal::Fence { from, m: number }),
            _ => None,
        }
    }
}

/// The signals of one push message, applied once every key in it (the
/// invalidations among them) has been handled.
#[derive(Default)]
pub struct Signals {
    own_beats: Vec<u64>,
    peer_beats: Vec<(String, u64)>,
    own_fences: Vec<u64>,
    peer_fences: Vec<(String, u64)>,
}

/// One fence in progress.
#[derive(Default)]
struct FenceWait {
    /// The live peers when this instance's own push of the fence arrived:
    /// those it waits for. `None` until then.
    peers: Option<Vec<String>>,
    acked: HashSet<String>,
}

impl FenceWait {
    fn done(&self) -> bool {
        self.peers
            .as_ref()
            .is_some_and(|peers| peers.iter().all(|p| self.acked.contains(p)))
    }
}

/// What this instance knows of a peer's heartbeats.
#[derive(Default, Debug)]
struct Peer {
    /// The highest heartbeat number seen.
    n: u64,
    /// When its push arrived.
    seen: u64,
}

impl Peer {
    /// Notes the push of heartbeat `n`. A number not above the highest seen
    /// is not a sign of life: Redis also pushes a key when it *expires*, so
    /// a peer that died keeps "beating" for the keys' lifetime. Ignoring an
    /// old number is safe: it was sent before the one already seen.
    fn saw(&mut self, n: u64, now: u64) {
        if n > self.n {
            self.n = n;
            self.seen = now;
        }
    }
}

#[derive(Default)]
struct State {
    next_beat: u64,
    /// `(n, sent_at)` of recent heartbeats.
    beats: VecDeque<(u64, u64)>,
    /// Peer id → when the push of its latest heartbeat arrived.
    peers: HashMap<String, Peer>,
    next_fence: u64,
    fences: HashMap<u64, FenceWait>,
    /// A lease was granted and has not lapsed or been revoked since (for
    /// `cachegate_tier_leases_lost_total`).
    lease_held: bool,
    /// Since when this instance's tracking connection has been receiving
    /// pushes without a break (`None` while it is down). Until it has for
    /// `L + margin`, the peer list may miss a peer whose heartbeat ran
    /// before it came up, so a fence may not trust it: it waits out the
    /// lease instead.
    watching_since: Option<u64>,
}

/// Removes a fence's wait entry however the fence ends.
struct FenceSlot<'a> {
    coherence: &'a Coherence,
    m: u64,
}

impl Drop for FenceSlot<'_> {
    fn drop(&mut self) {
        self.coherence.state().fences.remove(&self.m);
    }
}

pub struct Coherence {
    id: String,
    math: LeaseMath,
    origin: Instant,
    /// Nanoseconds since `origin` until which the tier may serve.
    lease_until: AtomicU64,
    state: Mutex<State>,
    /// Bumped whenever a fence may have completed.
    changed: watch::Sender<u64>,
    /// Fences of other instances to acknowledge: `(writer, m)`.
    acks: mpsc::UnboundedSender<(String, u64)>,
    metrics: CoherenceMetrics,
}

impl Coherence {
    /// Starts heartbeats, acknowledgements and the subscription to this
    /// instance's acknowledgement channel. `tracking` says whether the
    /// tier's tracking connection is up: no heartbeat while it is not (a
    /// peer would wait for acknowledgements that cannot come).
    pub fn start(
        store: &Arc<RedisBackend>,
        cfg: &RedisConfig,
        lease: Duration,
        tracking: Arc<AtomicBool>,
        metrics: CoherenceMetrics,
    ) -> Result<Arc<Coherence>, crate::BoxError> {
        let (acks, to_ack) = mpsc::unbounded_channel();
        let coherence = Arc::new(Coherence {
            id: hex::encode(rand::random::<[u8; 8]>()),
            math: LeaseMath::new(lease),
            origin: Instant::now(),
            lease_until: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
            acks,
            metrics,
        });
        let subscriber = Builder::from_config(super::redis_connect::fred_config(cfg)?)
            .with_connection_config(|c| c.connection_timeout = Duration::from_secs(1))
            .with_performance_config(|p| p.broadcast_channel_capacity = 4096)
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 1000, 2))
            .build_subscriber_client()?;
        subscriber.connect();
        subscriber.manage_subscriptions();
        let channel = store.key(&coherence.ack_channel(&coherence.id));
        tokio::spawn(receive_acks(Arc::downgrade(&coherence), subscriber, channel));
        tokio::spawn(send_acks(Arc::downgrade(store), coherence.id.clone(), to_ack));
        tokio::spawn(beat(Arc::downgrade(&coherence), Arc::downgrade(store), tracking));
        Ok(coherence)
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ack_channel(&self, writer: &str) -> String {
        format!("{INTERNAL_PREFIX}ack:{writer}")
    }

    /// Whether the tier holds a lease now (the hit path's one check).
    pub fn serving(&self) -> bool {
        LeaseMath::holds(self.now(), self.lease_until.load(Ordering::SeqCst))
    }

    /// Notes a key of a push message (the part after `<prefix>__cg:`);
    /// acted on in [`Coherence::apply`].
    pub fn note(&self, internal: &str, signals: &mut Signals) {
        match Signal::parse(internal) {
            Some(Signal::Beat { from, n }) if from == self.id => signals.own_beats.push(n),
            Some(Signal::Beat { from, n }) => signals.peer_beats.push((from.to_string(), n)),
            Some(Signal::Fence { from, m }) if from == self.id => signals.own_fences.push(m),
            Some(Signal::Fence { from, m }) => signals.peer_fences.push((from.to_string(), m)),
            None => {}
        }
    }

    /// Acts on a push message's signals, after its invalidations were
    /// applied to the tier: renews the lease, records peers, completes this
    /// instance's fences' wait sets, acknowledges the others' fences.
    pub fn apply(&self, signals: Signals) {
        if signals.own_beats.is_empty()
            && signals.peer_beats.is_empty()
            && signals.own_fences.is_empty()
            && signals.peer_fences.is_empty()
        {
            return;
        }
        let now = self.now();
        let mut fence_moved = false;
        {
            let mut st = self.state();
            for n in signals.own_beats {
                if let Some(&(_, sent_at)) = st.beats.iter().find(|(beat, _)| *beat == n) {
                    let until = self.math.granted_until(sent_at);
                    self.lease_until.fetch_max(until, Ordering::SeqCst);
                    if LeaseMath::holds(now, until) {
                        st.lease_held = true;
                    }
                }
            }
            for (peer, n) in signals.peer_beats {
                st.peers.entry(peer).or_default().saw(n, now);
            }
            // The peer list covers the last `L + margin` only if pushes
            // came in without a break for that long (see `watching_since`).
            let peers_known = st
                .watching_since
                .is_some_and(|since| now.saturating_sub(since) >= self.math.lease + self.math.margin);
            for m in signals.own_fences.into_iter().filter(|_| peers_known) {
                let live: Vec<String> = st
                    .peers
                    .iter()
                    .filter(|(_, peer)| self.math.live(peer.seen, now))
                    .map(|(peer, _)| peer.clone())
                    .collect();
                if let Some(wait) = st.fences.get_mut(&m) {
                    wait.peers = Some(live);
                    fence_moved = true;
                }
            }
        }
        for fence in signals.peer_fences {
            let _ = self.acks.send(fence);
        }
        if fence_moved {
            self.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// The tracking connection is gone: pushes may be lost, so no lease
    /// until a heartbeat's push arrives on the next one.
    pub fn revoke(&self) {
        self.lease_until.store(0, Ordering::SeqCst);
        let mut st = self.state();
        st.lease_held = false;
        st.watching_since = None;
    }

    /// Tracking is (re-)established: pushes flow from now on.
    pub fn watching(&self) {
        let now = self.now();
        self.state().watching_since = Some(now);
    }

    /// A peer acknowledged fence `m`.
    fn acked(&self, m: u64, peer: &str) {
        let moved = match self.state().fences.get_mut(&m) {
            Some(wait) => wait.acked.insert(peer.to_string()),
            None => false,
        };
        if moved {
            self.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Waits until no instance can serve, from its tier, an entry that a
    /// purge completed just before this call removed (see the module doc).
    /// `tracking_up`: whether this instance's own tracking connection is
    /// up; without it only the lease's length can be waited out.
    pub async fn fence(&self, store: &RedisBackend, tracking_up: bool) {
        let started = Instant::now();
        let deadline_nanos = self.math.fence_deadline(self.now());
        let deadline = tokio::time::Instant::from_std(self.origin + Duration::from_nanos(deadline_nanos));
        self.metrics.fence_waits.inc();
        let mut changed = self.changed.subscribe();
        let m = {
            let mut st = self.state();
            st.next_fence += 1;
            let m = st.next_fence;
            st.fences.insert(m, FenceWait::default());
            m
        };
        // A fence dropped half-way (its request cancelled) leaves no entry.
        let _slot = FenceSlot { coherence: self, m };
        if tracking_up {
            let key = format!("{INTERNAL_PREFIX}fence:{}:{m}", self.id);
            let _ = tokio::time::timeout_at(deadline, store.touch(&key)).await;
        }
        loop {
            if self.state().fences.get(&m).is_some_and(FenceWait::done) {
                break;
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let (acked, timed_out) = {
            let mut st = self.state();
            let wait = st.fences.remove(&m).unwrap_or_default();
            match &wait.peers {
                Some(peers) => {
                    let acked = peers.iter().filter(|p| wait.acked.contains(*p)).count();
                    (acked, peers.len() - acked)
                }
                // Our own push never came: every peer that looked alive
                // counts as waited out.
                None => {
                    let now = self.now();
                    (
                        0,
                        st.peers.values().filter(|peer| self.math.live(peer.seen, now)).count(),
                    )
                }
            }
        };
        self.metrics.peers_acked.inc_by(acked as u64);
        self.metrics.peers_timed_out.inc_by(timed_out as u64);
        self.metrics.fence_wait_seconds.observe(started.elapsed().as_secs_f64());
    }

    /// The next heartbeat's key, its send time remembered as now.
    fn next_beat(&self) -> String {
        let now = self.now();
        let mut st = self.state();
        st.next_beat += 1;
        let n = st.next_beat;
        st.beats.push_back((n, now));
        if st.beats.len() > BEATS_REMEMBERED {
            st.beats.pop_front();
        }
        // Peers silent for long are forgotten (they are not live anyway).
        let forget_after = 100 * self.math.lease;
        st.peers.retain(|_, peer| now.saturating_sub(peer.seen) <= forget_after);
        format!("{INTERNAL_PREFIX}hb:{}:{n}", self.id)
    }

    /// Counts a lease that lapsed while tracking was up.
    fn check_lapse(&self) {
        let lapsed = !self.serving();
        let mut st = self.state();
        if st.lease_held && lapsed {
            st.lease_held = false;
            self.metrics.leases_lost.inc();
            tracing::debug!(target: "cachegate::store", "tier lease lapsed; reads go to Redis until a heartbeat renews it");
        }
    }
}

/// Sends a heartbeat every `L/4` while tracking is up, one at a time.
async fn beat(coherence: Weak<Coherence>, store: Weak<RedisBackend>, tracking: Arc<AtomicBool>) {
    let Some(every) = coherence.upgrade().map(|c| c.math.beat_every()) else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(coherence), Some(store)) = (coherence.upgrade(), store.upgrade()) else {
            return;
        };
        if !tracking.load(Ordering::SeqCst) {
            continue;
        }
        coherence.check_lapse();
        let key = coherence.next_beat();
        let ttl = coherence.math.beat_every() * 4 * BEAT_TTL_LEASES;
        let _ = store.mark(&key, ttl).await;
    }
}

/// Publishes acknowledgements of other instances' fences.
async fn send_acks(store: Weak<RedisBackend>, id: String, mut to_ack: mpsc::UnboundedReceiver<(String, u64)>) {
    let mut batch = Vec::new();
    while to_ack.recv_many(&mut batch, 256).await > 0 {
        let Some(store) = store.upgrade() else { return };
        let sends = batch.drain(..).map(|(writer, m)| {
            let channel = format!("{INTERNAL_PREFIX}ack:{writer}");
            let store = &store;
            let message = format!("{m} {id}");
            async move { store.publish(&channel, message).await }
        });
        futures_util::future::join_all(sends).await;
    }
}

/// Feeds acknowledgements of this instance's fences to its waiters.
async fn receive_acks(coherence: Weak<Coherence>, subscriber: SubscriberClient, channel: String) {
    let mut messages = subscriber.message_rx();
    {
        let (subscriber, channel) = (subscriber.clone(), channel.clone());
        tokio::spawn(async move {
            loop {
                if subscriber.wait_for_connect().await.is_ok() && subscriber.subscribe(channel.as_str()).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    loop {
        match messages.recv().await {
            Ok(message) => {
                let Some(coherence) = coherence.upgrade() else { return };
                let text = message.value.as_str();
                if let Some((m, peer)) = text.as_deref().and_then(|t| t.split_once(' ')) {
                    if let Ok(m) = m.parse() {
                        coherence.acked(m, peer);
                    }
                }
            }
            // Lost acknowledgements only make fences wait out the lease.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_lease_runs_from_the_heartbeat_s_send_time() {
        let math = LeaseMath::new(Duration::from_millis(100));
        // Sent at 1000 ms, push handled at 1030 ms: serves until 1100 ms.
        let until = math.granted_until(1000 * MS);
        assert_eq!(until, 1100 * MS);
        assert!(LeaseMath::holds(1030 * MS, until));
        assert!(LeaseMath::holds(1100 * MS - 1, until));
        assert!(!LeaseMath::holds(1100 * MS, until));
        // No lease at all (0): never serves.
        assert!(!LeaseMath::holds(0, 0));
        assert!(!LeaseMath::holds(5, 0));
    }

    #[test]
    fn the_margin_covers_rate_drift_and_grows_with_the_lease() {
        assert_eq!(LeaseMath::new(Duration::from_millis(100)).margin, 11 * MS);
        assert_eq!(LeaseMath::new(Duration::from_millis(1)).margin, MS + MS / 10);
        assert_eq!(LeaseMath::new(Duration::from_millis(1000)).margin, 101 * MS);
    }

    #[test]
    fn a_fence_s_deadline_outlasts_every_lease_from_before_the_purge() {
        let math = LeaseMath::new(Duration::from_millis(100));
        let purged = 5000 * MS;
        let deadline = math.fence_deadline(purged);
        assert_eq!(deadline, 5111 * MS);
        // The latest lease a heartbeat sent before the purge can grant,
        // even read on a clock running 5% slow, has ended by the deadline.
        let latest = math.granted_until(purged - 1);
        assert!(!LeaseMath::holds(deadline, latest));
        assert!(purged + math.lease * 105 / 100 < deadline);
        // A heartbeat sent after the purge may serve past it, which is
        // fine: its push comes after the purge's invalidation.
        assert!(LeaseMath::holds(deadline, math.granted_until(purged + 20 * MS)));
    }

    #[test]
    fn a_peer_is_live_while_its_last_heartbeat_could_still_lease() {
        let math = LeaseMath::new(Duration::from_millis(100));
        let seen = 2000 * MS;
        assert!(math.live(seen, seen));
        assert!(math.live(seen, seen + 111 * MS));
        assert!(!math.live(seen, seen + 111 * MS + 1));
        // A push handled "before" it was seen (clock read order) is live.
        assert!(math.live(seen + MS, seen));
    }

    #[test]
    fn four_heartbeats_per_lease_and_never_a_busy_loop() {
        assert_eq!(
            LeaseMath::new(Duration::from_millis(100)).beat_every(),
            Duration::from_millis(25)
        );
        assert_eq!(
            LeaseMath::new(Duration::from_millis(1)).beat_every(),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn an_expiring_old_heartbeat_is_no_sign_of_life() {
        let mut peer = Peer::default();
        peer.saw(5, 100);
        assert_eq!((peer.n, peer.seen), (5, 100));
        // The push of key hb:<peer>:3 expiring, later: ignored.
        peer.saw(3, 900);
        peer.saw(5, 950);
        assert_eq!((peer.n, peer.seen), (5, 100));
        peer.saw(6, 1000);
        assert_eq!((peer.n, peer.seen), (6, 1000));
    }

    #[test]
    fn signals_parse_from_internal_key_names() {
        assert_eq!(
            Signal::parse("hb:abc123:7"),
            Some(Signal::Beat { from: "abc123", n: 7 })
        );
        assert_eq!(
            Signal::parse("fence:abc123:42"),
            Some(Signal::Fence { from: "abc123", m: 42 })
        );
        for other in [
            "epoch",
            "secret",
            "lock:anon:task:1",
            "hb::7",
            "hb:abc:x",
            "stats:abc",
            "fence:abc",
        ] {
            assert_eq!(Signal::parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_fence_is_done_once_every_peer_live_at_its_push_acknowledged() {
        let mut wait = FenceWait::default();
        assert!(!wait.done(), "own push not seen yet");
        wait.acked.insert("b".into());
        assert!(!wait.done(), "an early ack alone is not enough");
        wait.peers = Some(vec!["b".into(), "c".into()]);
        assert!(!wait.done());
        wait.acked.insert("c".into());
        assert!(wait.done());
        let alone = FenceWait {
            peers: Some(Vec::new()),
            acked: HashSet::new(),
        };
        assert!(alone.done(), "no live peer: the own push is enough");
    }
}
