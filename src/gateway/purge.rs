//! Phase 8, purge: forward a write, purge what it invalidates, then answer.
//!
//! Besides the `[[invalidate]]` rules, an unsafe method purges its own
//! target URI under any rule that would cache it when the answer is not an
//! error, or its outcome is unknown (5xx, no answer) and no matching rule
//! says `when = "success"`; and the same-host `Location` /
//! `Content-Location` URIs of a non-error answer (RFC 9111 §4.4). If the
//! client goes away while the backend has the write, what an unknown
//! outcome purges is still purged (`write_guard.rs`). A purge that fails is
//! kept and replayed (`pending_purges.rs`).

use super::generation::Shared;
use super::key::request_view;
use super::pending_purges::{self, Purge};
use super::{trace, write_guard, Gateway};
use crate::config::When;
use crate::proxy::{Body, ClientInfo};
use crate::rules::RequestView;
use http::{header, HeaderValue, Method, Request, Response};
use std::sync::Arc;
use std::time::Instant;

impl Gateway {
    pub(super) async fn invalidate(self: &Arc<Self>, req: Request<Body>, from: ClientInfo) -> Response<Body> {
        // Render before the request (and its headers) goes to the forwarder.
        let due = self.rule_purges(&req);
        let view = request_view(&req);
        let own_keys = self.keys_for_uri(req.uri().path(), req.uri().query(), &view);
        let host = view.host.to_string();
        let headers = req.headers().clone();

        let guard = write_guard::WriteGuard::arm(self, &due, &own_keys);
        let result = self.forward(req, from).await;
        guard.disarm();
        let status = result.as_ref().ok().map(|r| r.status());
        let success = status.is_some_and(|s| s.is_success());
        let non_error = status.is_some_and(|s| s.as_u16() < 400);
        let mut own = Purge::default();
        if non_error || (write_guard::outcome_unknown(&result) && write_guard::purges_on_unknown(&due)) {
            own.keys.extend(own_keys);
        }
        if let (true, Ok(resp)) = (non_error, &result) {
            for name in [header::LOCATION, header::CONTENT_LOCATION] {
                if let Some(uri) = resp.headers().get(name).and_then(|v| same_host_uri(v, &host)) {
                    let view = RequestView {
                        method: &Method::GET,
                        host: &host,
                        path: uri.path(),
                        query: uri.query(),
                        headers: &headers,
                    };
                    own.keys.extend(self.keys_for_uri(uri.path(), uri.query(), &view));
                }
            }
        }
        let due = due.into_iter().filter(|(when, _)| *when == When::Always || success);
        let (hard, soft) = write_guard::combine(own, due.map(|(_, purge)| purge));
        if !hard.is_empty() || !soft.is_empty() {
            // In a task of its own: a client that goes away now must not
            // cancel the purge of a write the backend has taken.
            let gateway = self.clone();
            let settle = tokio::spawn(async move {
                gateway.purge(hard).await;
                gateway.purge(soft).await;
                // Read-your-writes across instances: answer once no tier in
                // the fleet can serve what was purged (a failed purge too:
                // peers' leases must run out before the answer).
                gateway.shared.store.fence().await;
            });
            let _ = settle.await;
        }
        match result {
            Ok(resp) => resp,
            Err(e) => e.to_response(),
        }
    }

    /// What the `[[invalidate]]` rules matching a write purge, rendered
    /// from the request, with each rule's `when`.
    fn rule_purges(&self, req: &Request<Body>) -> Vec<(When, Purge)> {
        let rules = &self.generation.config.rules;
        let view = request_view(req);
        let mut due = Vec::new();
        for m in rules.match_invalidate(req.method(), req.uri().path()) {
            if due.is_empty() {
                trace::note(|t| t.invalidate = rules.invalidate.iter().position(|r| std::ptr::eq(r, m.rule)));
            }
            let render = |t| rules.render_key(t, &view, &m.captures);
            let scopes = m
                .rule
                .purge_credential
                .then(|| self.credential_scope_of(req.headers()))
                .flatten();
            due.push((
                m.rule.when,
                Purge {
                    soft: m.rule.soft,
                    keys: m.rule.keys.iter().filter_map(render).collect(),
                    patterns: m.rule.patterns.iter().filter_map(render).collect(),
                    tags: m.rule.tags.iter().filter_map(render).collect(),
                    scopes: scopes.into_iter().collect(),
                },
            ));
        }
        due
    }

    /// Runs a write's purges; whatever fails (the store down or stalled, or
    /// on a cluster one primary) is kept, journalled, announced to the other
    /// instances, and replayed as soon as that part of the store answers.
    pub(super) async fn purge(&self, purge: Purge) {
        if purge.is_empty() {
            return;
        }
        let Shared {
            store,
            metrics,
            pending,
            ..
        } = &*self.shared;
        match pending_purges::apply(store.as_ref(), metrics, purge.clone(), pending_purges::Log::Warn).await {
            None => pending.went_through(&purge),
            Some(failed) => {
                pending.keep(failed, metrics).await;
                // Where the store still takes the announcement (a cluster
                // with one primary down), the other instances read it within
                // a tick: wait that long before the write is answered, so
                // none of them serves what it covers after the answer.
                if pending.announce(store.as_ref(), metrics.instance()).await {
                    tokio::time::sleep(pending_purges::PEERS_READ_WITHIN).await;
                }
            }
        }
    }

    /// Whether this instance is revalidating the entries stored before a
    /// store outage ended (for 1.5 s after it, or while a peer repairs).
    pub fn revalidating_after_outage(&self) -> bool {
        self.shared.pending.is_revalidating()
    }

    /// Applies what is pending before a graceful exit, until `deadline`;
    /// whether nothing is left (what is left stays in the journal).
    pub async fn flush_pending_purges(&self, deadline: Instant) -> bool {
        let Shared {
            store,
            metrics,
            pending,
            ..
        } = &*self.shared;
        pending.flush(store.as_ref(), metrics, deadline).await
    }
}

/// What purging one URL (`PURGE /path?query`) did.
#[derive(Debug)]
pub enum UrlPurge {
    /// No rule caches a GET or HEAD of the URL: there is nothing to purge.
    NoRule,
    /// The keys a GET or HEAD of the URL uses were purged (every scope,
    /// every variant, every instance's tier); `entries`: how many held any.
    Purged { keys: Vec<String>, entries: u64 },
    /// The store did not answer: the purge is kept, journalled and replayed
    /// (`pending_purges.rs`), and until then the URL is neither served from
    /// the cache nor filled.
    Queued { keys: Vec<String>, error: String },
}

impl Gateway {
    /// Purges the entries a GET (or HEAD) of this request's URL would use,
    /// under the key the rules render from this request (its `Host`,
    /// query and headers, as a GET's would be), whatever scope or variant
    /// they are in. The request is never forwarded.
    pub async fn purge_url(&self, req: &Request<Body>) -> UrlPurge {
        let view = request_view(req);
        let keys = self.keys_for_uri(req.uri().path(), req.uri().query(), &view);
        let Some(first) = keys.first() else {
            return UrlPurge::NoRule;
        };
        trace::note(|t| t.key = Some(first.clone()));
        let store = &self.shared.store;
        let purged = store.purge_keys(&keys, false).await;
        match purged {
            Ok(entries) => {
                self.shared.metrics.purged("url", entries);
                // Kept among the recent purges as a write's purge is, so an
                // outage repair that replays them covers this one too.
                self.shared.pending.went_through(&Purge {
                    keys: keys.clone(),
                    ..Purge::default()
                });
                // No instance's tier may serve them after the answer.
                store.fence().await;
                UrlPurge::Purged { keys, entries }
            }
            Err(e) => {
                let error = e.to_string();
                self.purge(Purge {
                    keys: keys.clone(),
                    ..Purge::default()
                })
                .await;
                store.fence().await;
                UrlPurge::Queued { keys, error }
            }
        }
    }
}

/// The path and query of a `Location`-like header when it points at the
/// same host (relative, or absolute with the request's host); never another.
fn same_host_uri(value: &HeaderValue, host: &str) -> Option<http::Uri> {
    let uri: http::Uri = value.to_str().ok()?.parse().ok()?;
    match uri.authority() {
        None if uri.path().starts_with('/') => Some(uri),
        Some(a) if a.as_str().eq_ignore_ascii_case(host) => {
            let pq = uri.path_and_query()?.as_str().parse().ok()?;
            Some(pq)
        }
        _ => None,
    }
}
