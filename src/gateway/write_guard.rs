//! A write's purges whatever its outcome.
//!
//! A write whose answer is a 5xx, or that got no answer after it was sent
//! (a timeout, a reset), may have committed: the
//! `when = "always"` rules (the default) purge then too, and so does the
//! write's own URI unless a matching rule says `when = "success"`. And when
//! the client goes
//! away while the backend has the write, hyper drops the request's future
//! before it purges; the [`WriteGuard`] armed around the forward runs those
//! same purges in a task of its own instead, so a committed write never
//! leaves its old entry cached.

use super::pending_purges::Purge;
use super::Gateway;
use crate::config::When;
use crate::proxy::{Body, ForwardError};
use http::Response;
use std::sync::Arc;

/// Runs the purges of an unknown outcome if dropped while armed.
pub(super) struct WriteGuard {
    armed: Option<(Arc<Gateway>, Purge, Purge)>,
}

impl WriteGuard {
    /// Armed with what an unknown outcome purges: the write's own keys and
    /// the `always` rules' purges.
    pub(super) fn arm(gateway: &Arc<Gateway>, due: &[(When, Purge)], own_keys: &[String]) -> WriteGuard {
        let own = Purge {
            keys: if purges_on_unknown(due) {
                own_keys.to_vec()
            } else {
                Vec::new()
            },
            ..Purge::default()
        };
        let always = due
            .iter()
            .filter(|(when, _)| *when == When::Always)
            .map(|(_, purge)| purge.clone());
        let (hard, soft) = combine(own, always);
        WriteGuard {
            armed: Some((gateway.clone(), hard, soft)),
        }
    }

    /// The forward finished: the caller purges by the outcome itself.
    pub(super) fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let Some((gateway, hard, soft)) = self.armed.take() else {
            return;
        };
        // Only reached when the request's future is dropped mid-forward
        // (the client went away); a runtime is running it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            tracing::debug!("client went away during a write; purging as for an unknown outcome");
            runtime.spawn(async move {
                gateway.purge(hard).await;
                gateway.purge(soft).await;
            });
        }
    }
}

/// Whether a write's outcome is unknown: it may have committed although
/// the answer does not say so (a 5xx, or no answer after it was sent). A
/// backend that could not be connected to never got it.
pub(super) fn outcome_unknown(result: &Result<Response<Body>, ForwardError>) -> bool {
    match result {
        Ok(resp) => resp.status().is_server_error(),
        Err(ForwardError::NotSent(_)) => false,
        Err(ForwardError::Unreachable(_) | ForwardError::Timeout) => true,
    }
}

/// Whether an unknown outcome purges the write's own URI: unless a rule
/// matching the write says `when = "success"` (the operator's choice to
/// purge only on a 2xx).
pub(super) fn purges_on_unknown(due: &[(When, Purge)]) -> bool {
    due.iter().all(|(when, _)| *when == When::Always)
}

/// One hard and at most one soft purge out of `own` (hard) and `rules`: a
/// write's own URI and a rule naming the same key cost one store call, not
/// two. A key purged both ways is purged hard.
pub(super) fn combine(own: Purge, rules: impl Iterator<Item = Purge>) -> (Purge, Purge) {
    let mut hard = own;
    let mut soft = Purge {
        soft: true,
        ..Purge::default()
    };
    for purge in rules {
        let into = if purge.soft { &mut soft } else { &mut hard };
        into.keys.extend(purge.keys);
        into.patterns.extend(purge.patterns);
        into.tags.extend(purge.tags);
        hard.scopes.extend(purge.scopes);
    }
    soft.keys.retain(|k| !hard.keys.contains(k));
    (hard, soft)
}
