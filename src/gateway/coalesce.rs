//! Request coalescing within one instance: concurrent misses for the same
//! key and scope make one backend request; the others wait (bounded) for
//! its answer and are served from it. If the answer turns out not to be
//! storable, or the wait times out, a waiter forwards on its own. Across
//! instances, the first miss takes the store's fill lock; a miss elsewhere
//! waits for that fill (phase 5).

use super::answer::answer;
use super::key::field_for;
use super::lookup::Found;
use super::{Cacheable, Gateway, Outcome};
use crate::proxy::Body;
use crate::store::entry::{now_ms, Entry};
use crate::store::Store;
use http::{Method, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The cross-instance fill lock this instance holds while it fills. It is
/// released when dropped: when the fill is done, and also when the request
/// is dropped mid-fill (its client went away), so no later miss waits for a
/// lock that nobody will release.
pub struct HeldFillLock {
    pub store: Arc<dyn Store>,
    pub key: String,
    pub field: String,
    /// Empty when the store shares no lock (memory): nothing to release.
    pub token: String,
}

impl Drop for HeldFillLock {
    fn drop(&mut self) {
        if self.token.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, key, field, token) = (
            self.store.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.field),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            let _ = store.unlock(&key, &field, &token).await;
        });
    }
}

/// A stored entry shared with followers, and the store field it went to
/// (a follower whose request selects another `Vary` variant must not use it).
pub struct Filled {
    pub entry: Entry,
    pub field: String,
}

/// What a fill ended with: the stored entry, or nothing to share.
#[derive(Clone)]
enum State {
    Pending,
    Done(Option<Arc<Filled>>),
}

/// The fills in flight, by key and scope field.
#[derive(Default)]
pub struct Inflight {
    fills: Mutex<HashMap<String, watch::Receiver<State>>>,
}

/// The first miss for a key: it fetches, and tells the others on finish
/// (or, if dropped unfinished, that there is nothing to share).
pub struct Leader<'a> {
    inflight: &'a Inflight,
    id: String,
    tx: watch::Sender<State>,
}

impl Leader<'_> {
    /// Removes this leader's entry from the map, and never another's: once
    /// closed, a later miss for the same entry may have become leader.
    fn leave(&self) {
        let mut fills = match self.inflight.fills.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        if fills
            .get(&self.id)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            fills.remove(&self.id);
        }
    }
}

/// A later miss: it waits for the leader.
pub struct Follower {
    rx: watch::Receiver<State>,
}

pub enum Role<'a> {
    Leader(Leader<'a>),
    Follower(Follower),
}

impl Inflight {
    pub fn join(&self, key: &str, field: &str) -> Role<'_> {
        let id = format!("{key}\0{field}");
        let mut fills = match self.fills.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(rx) = fills.get(&id) {
            return Role::Follower(Follower { rx: rx.clone() });
        }
        let (tx, rx) = watch::channel(State::Pending);
        fills.insert(id.clone(), rx);
        Role::Leader(Leader { inflight: self, id, tx })
    }
}

impl Leader<'_> {
    /// Takes no more followers. Called before the fill is stored: a request
    /// that starts after a write's purge then never waits for a body that
    /// the purge did not cover (it looks up and fetches itself).
    pub fn close(&self) {
        self.leave();
    }

    /// Shares the fill's result with every follower (`None`: nothing to
    /// share; they forward on their own).
    pub fn finish(self, entry: Option<Arc<Filled>>) {
        self.close();
        let _ = self.tx.send(State::Done(entry));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if matches!(*self.tx.borrow(), State::Pending) {
            self.leave();
            let _ = self.tx.send(State::Done(None));
        }
    }
}

impl Follower {
    /// The leader's entry, or `None` (nothing shareable, or `timeout`).
    pub async fn wait(mut self, timeout: Duration) -> Option<Arc<Filled>> {
        let done = tokio::time::timeout(timeout, self.rx.wait_for(|s| matches!(s, State::Done(_)))).await;
        match done {
            Ok(Ok(state)) => match &*state {
                State::Done(entry) => entry.clone(),
                State::Pending => None,
            },
            _ => None,
        }
    }
}

/// How long a miss waiting on another instance's fill waits for the
/// pub/sub notice before it looks at the store anyway (the fallback for a
/// lost notice or a crashed lock owner).
const LOCK_POLL: Duration = Duration::from_millis(200);

impl Gateway {
    /// The first miss in this instance: take the cross-instance fill lock
    /// and fill; or, if another instance holds it, wait (bounded) for its
    /// fill and serve that. Local followers get whatever this gets.
    pub(super) async fn lead(
        &self,
        request: Cacheable<'_>,
        found: Found,
        leader: Leader<'_>,
    ) -> (Response<Body>, Outcome) {
        let cache = &self.generation.config.cache;
        let store = &self.shared.store;
        let key = &request.key.key;
        let lock_ttl = cache.coalesce_timeout.min(self.generation.config.backend.timeout);
        let token = match self.timed("lock", store.try_lock(key, &found.field, lock_ttl)).await {
            Ok(Some(token)) => token,
            Ok(None) => return self.wait_for_other_instance(request, found, leader).await,
            // Fail open: without the lock, fill as if alone.
            Err(_) => return self.fill(request, found, Some(leader)).await,
        };
        let _held = HeldFillLock {
            store: store.clone(),
            key: key.clone(),
            field: found.field.clone(),
            token,
        };
        self.fill(request, found, Some(leader)).await
    }

    /// Another instance fills the entry: serve its fill once stored, or
    /// fill here if its lock goes away with nothing stored, or the wait
    /// runs out.
    async fn wait_for_other_instance(
        &self,
        request: Cacheable<'_>,
        mut found: Found,
        leader: Leader<'_>,
    ) -> (Response<Body>, Outcome) {
        let store = &self.shared.store;
        let deadline = Instant::now() + self.generation.config.cache.coalesce_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            store
                .wait_unlocked(&request.key.key, &found.field, left.min(LOCK_POLL))
                .await;
            // Take no more followers before the read whose result is
            // shared: one arriving after a write must not get an entry read
            // before that write's purge (see `Leader::close`).
            leader.close();
            let Ok(now) = self.read(&request.key, request.req.headers()).await else {
                break;
            };
            found = now;
            if let Some(entry) = found.entry.take_if(|e| e.is_fresh(now_ms())) {
                let now = now_ms();
                let ttl = entry.ttl_left_secs(now);
                leader.finish(Some(Arc::new(Filled {
                    entry: entry.clone(),
                    field: found.field,
                })));
                let is_head = request.req.method() == Method::HEAD;
                return (
                    answer(
                        request.req.headers(),
                        entry,
                        now,
                        is_head,
                        &self.generation.config.compression,
                    ),
                    Outcome::Collapsed { ttl },
                );
            }
            // The lock is gone and left nothing: fetch ourselves.
            if !store.is_locked(&request.key.key, &found.field).await.unwrap_or(false) {
                break;
            }
        }
        self.fill(request, found, Some(leader)).await
    }

    /// A later miss in this instance: the leader's answer, if it is the
    /// variant this request selects; `None` sends it to fill on its own.
    pub(super) async fn follow(
        &self,
        request: &Cacheable<'_>,
        follower: Follower,
    ) -> Option<(Response<Body>, Outcome)> {
        let filled = follower.wait(self.generation.config.cache.coalesce_timeout).await?;
        let headers = request.req.headers();
        let negotiated = self.generation.config.compression.enabled;
        if filled.field != field_for(&request.key.field, &filled.entry.headers, headers, negotiated) {
            return None;
        }
        let now = now_ms();
        let ttl = filled.entry.ttl_left_secs(now);
        let is_head = request.req.method() == Method::HEAD;
        Some((
            answer(
                headers,
                filled.entry.clone(),
                now,
                is_head,
                &self.generation.config.compression,
            ),
            Outcome::Collapsed { ttl },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};

    fn entry() -> Arc<Filled> {
        Arc::new(Filled {
            entry: Entry {
                status: StatusCode::OK,
                stored_at_ms: 0,
                lifetime: crate::store::entry::Lifetime::fixed(Duration::from_secs(1)),
                headers: HeaderMap::new(),
                body: bytes::Bytes::from_static(b"x"),
            },
            field: "f".into(),
        })
    }

    #[tokio::test]
    async fn followers_get_the_leaders_entry() {
        let inflight = Inflight::default();
        let Role::Leader(leader) = inflight.join("k", "f") else {
            panic!("first is leader")
        };
        let Role::Follower(f1) = inflight.join("k", "f") else {
            panic!("second follows")
        };
        assert!(matches!(inflight.join("k", "other"), Role::Leader(_)));
        let waiter = tokio::spawn(f1.wait(Duration::from_secs(5)));
        leader.finish(Some(entry()));
        assert_eq!(&waiter.await.unwrap().unwrap().entry.body[..], b"x");
        assert!(
            matches!(inflight.join("k", "f"), Role::Leader(_)),
            "finished fills leave the map"
        );
    }

    #[tokio::test]
    async fn a_closed_leader_never_removes_its_successor() {
        let inflight = Inflight::default();
        let Role::Leader(first) = inflight.join("k", "f") else {
            panic!()
        };
        first.close();
        let Role::Leader(second) = inflight.join("k", "f") else {
            panic!("closed: a new leader")
        };
        first.close();
        drop(first);
        assert!(
            matches!(inflight.join("k", "f"), Role::Follower(_)),
            "the second leader is still there"
        );
        drop(second);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_followers_and_timeouts_bound_the_wait() {
        let inflight = Inflight::default();
        let leader = inflight.join("k", "f");
        let Role::Follower(f) = inflight.join("k", "f") else {
            panic!()
        };
        drop(leader);
        assert!(f.wait(Duration::from_secs(5)).await.is_none());
        let _leader = inflight.join("k2", "f");
        let Role::Follower(f) = inflight.join("k2", "f") else {
            panic!()
        };
        assert!(f.wait(Duration::from_millis(20)).await.is_none());
    }
}
