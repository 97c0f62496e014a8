//! The life of a request, as named phases over one per-request value
//! ([`Cacheable`], once a rule covers the request), each phase in its own
//! file:
//!
//! 1. **admit** (`admit.rs`): limits, one normal form of the path, hop-by-hop
//!    headers dropped; a bad request gets a 4xx with a JSON body.
//! 2. **route** (`route.rs`): a write goes to **purge**, a `[[rule]]` match
//!    on to **key**, anything else straight to **forward**.
//! 3. **key** (`key.rs`): the logical key, the credential scope's field and
//!    the tags; an unusable key bypasses the cache.
//! 4. **lookup** (`lookup.rs`): the in-process tier, else one store read; a
//!    fresh entry is **answer**ed without contacting the backend.
//! 5. **coalesce** (`coalesce.rs`): one fill per entry in this instance, and
//!    the cross-instance fill lock.
//! 6. **forward** (`forward.rs`): the backend gets the request (HEAD as GET,
//!    so the answer can fill the GET entry).
//! 7. **fill** (`fill.rs`, `revalidate.rs`): a storable answer is stored
//!    under the guard read at lookup; a 304 refreshes a stale entry.
//! 8. **purge** (`purge.rs`): after the backend answered a write, what it
//!    invalidates is purged before the client gets the answer.
//! 9. **answer** (`answer.rs`): the response, with `Age`, `Cache-Status`
//!    and `X-Cache`; 304 to a satisfied conditional request.
//!
//! An upgrade request (WebSocket) skips phases 2 to 9: **tunnel**
//! (`tunnel.rs`) forwards it and, on `101`, joins the two connections.
//!
//! A store failure anywhere is "no cache" for this request (fail open). The
//! gateway knows nothing of the admin API: the server routes those paths
//! before they get here (`crate::server`).

mod admit;
mod answer;
mod backend_probe;
mod coalesce;
mod compression;
mod credential_end;
mod fill;
mod forward;
mod freshness;
mod generation;
mod http_date;
mod implicit;
mod inputs;
mod key;
mod lookup;
mod pending_purges;
mod purge;
mod range;
mod revalidate;
mod route;
mod scope;
mod storable;
mod suspect_credentials;
mod targeted;
mod trace;
mod tunnel;
mod vary;
mod write_guard;

pub use crate::outcome::Outcome;
pub use backend_probe::{spawn_backend_probe, BackendState};
pub use generation::Gateway;
pub use purge::UrlPurge;
pub use scope::{scope_field, scope_field_keyed, ScopeKey, ANONYMOUS, PUBLIC};

use crate::proxy::{Body, ClientInfo};
use crate::rules::CacheRule;
use answer::answer;
use coalesce::Role;
use http::{Method, Request, Response};
use key::CacheKey;
use std::sync::Arc;

/// A request a rule covers, as phases 4 to 9 see it.
pub(crate) struct Cacheable<'g> {
    req: Request<Body>,
    from: ClientInfo,
    rule: &'g CacheRule,
    key: CacheKey,
}

impl Gateway {
    /// A request's whole life (phases 1 to 9), and its access log line.
    pub async fn handle(self: &Arc<Self>, req: Request<Body>, from: ClientInfo) -> Response<Body> {
        self.logged(req, from, |mut req, id| async move {
            match self.admit(&mut req) {
                Some(rejected) => self.answered_unruled(rejected),
                None => {
                    id.forward_on(req.headers_mut());
                    self.serve(req, from).await
                }
            }
        })
        .await
    }

    /// Phases 2 to 9 for an admitted request. Every path but a hit runs
    /// boxed: an async fn's future is as large as its largest path, and
    /// hyper moves the request's future (a memcpy of all of it) per request;
    /// boxed, a hit's future stays small.
    pub async fn serve(self: &Arc<Self>, mut req: Request<Body>, from: ClientInfo) -> Response<Body> {
        if req.extensions().get::<crate::proxy::upgrade::Requested>().is_some() {
            return self.answered_unruled(Box::pin(self.tunnel(req, from)).await);
        }
        match self.route(&mut req) {
            route::Route::Write => self.answered_unruled(Box::pin(self.invalidate(req, from)).await),
            route::Route::Pass => self.answered_unruled(Box::pin(self.pass(req, from)).await),
            route::Route::Reply(resp) => self.answered_unruled(resp),
            route::Route::Cached(rule, Err(detail)) => Box::pin(self.uncached(req, from, rule, detail)).await,
            route::Route::Cached(rule, Ok(key)) => self.cached(Cacheable { req, from, rule, key }).await,
        }
    }

    /// Counts an answer to a request no `[[rule]]` covers (a write, no
    /// match, refused at admission) as `route="pass"`; those a rule covers
    /// are counted with their rule (`counted`).
    pub fn answered_unruled(&self, resp: Response<Body>) -> Response<Body> {
        let status = resp.status().as_u16();
        self.shared.metrics.answered(crate::metrics::Route::pass, status);
        resp
    }

    /// Phases 4 to 9; the outcome is set on the response's headers and
    /// counted here, once.
    async fn cached(self: &Arc<Self>, request: Cacheable<'_>) -> Response<Body> {
        let rule = request.rule;
        trace::note(|t| {
            t.rule = Some(rule.index);
            t.key = Some(request.key.key.clone());
        });
        let shown_key = self.shown_key(&request.key);
        let (resp, outcome) = self.lookup_or_fill(request).await;
        let mut resp = self.counted(rule, resp, outcome);
        if let Some(key) = shown_key {
            resp.headers_mut().insert(key::X_CACHE_KEY, key);
        }
        resp
    }

    async fn lookup_or_fill(self: &Arc<Self>, request: Cacheable<'_>) -> (Response<Body>, Outcome) {
        let mut found = match self.read(&request.key, request.req.headers()).await {
            Ok(found) => found,
            Err(e) => return Box::pin(self.bypass(request, lookup::store_detail(&e))).await,
        };
        let asks = self.request_directives(request.req.headers());
        if let Some(answered) = self.serve_fresh(&request, &mut found, &asks) {
            return answered;
        }
        if asks.only_if_cached {
            // RFC 9111 §5.2.1.7: nothing usable is stored; the backend is not asked.
            let resp = crate::proxy::json_error(
                http::StatusCode::GATEWAY_TIMEOUT,
                "only_if_cached",
                "no stored response satisfies this only-if-cached request",
            );
            return (resp, answer::miss(false, Some("only-if-cached")));
        }
        // A fresh entry the request's directives refused (RFC 9211
        // `fwd=request`): a fill follows, and needs the guard covering the
        // record as it is now.
        let refused_fresh = !found.guarded;
        if refused_fresh {
            match Box::pin(self.guard_for(&request.key, &mut found)).await {
                Ok(()) => {}
                Err(e) => return Box::pin(self.bypass(request, lookup::store_detail(&e))).await,
            }
        }
        let (resp, outcome) = match self.shared.inflight.join(&request.key.key, &found.field) {
            Role::Leader(leader) => Box::pin(self.lead(request, found, leader)).await,
            Role::Follower(follower) => match Box::pin(self.follow(&request, follower)).await {
                Some(answered) => answered,
                None => Box::pin(self.fill(request, found, None)).await,
            },
        };
        (resp, if refused_fresh { outcome.requested() } else { outcome })
    }

    /// What the client's own cache directives ask, unless the operator
    /// chose to ignore them (`[cache] request_directives = "ignore"`).
    fn request_directives(&self, headers: &http::HeaderMap) -> freshness::RequestDirectives {
        if self.generation.config.cache.honour_request_directives {
            freshness::RequestDirectives::parse(headers)
        } else {
            freshness::RequestDirectives::default()
        }
    }

    /// Phase 9 for what the lookup found usable: fresh as the request's
    /// directives accept it (or stale within its `max-stale`), or within
    /// stale-while-revalidate (then one refresh starts in the background);
    /// anything else is left in `found` to be filled.
    fn serve_fresh(
        self: &Arc<Self>,
        request: &Cacheable<'_>,
        found: &mut lookup::Found,
        asks: &freshness::RequestDirectives,
    ) -> Option<(Response<Body>, Outcome)> {
        let now = crate::store::entry::now_ms();
        let is_head = request.req.method() == Method::HEAD;
        let entry = found.entry.as_ref()?;
        let fresh = entry.is_fresh(now);
        // The common case costs no age arithmetic: a fresh entry, a request
        // asking nothing of its age.
        let accepted = (fresh && asks.takes_any_fresh())
            || asks.accepts(
                &freshness::EntryAge {
                    fresh,
                    fresh_left: entry.ttl_left_secs(now),
                    stale_for: entry.stale_for_ms(now) / 1000,
                    current_age: freshness::age(&entry.headers) + entry.age_secs(now),
                },
                !entry.lifetime.must_revalidate,
            );
        let outcome = if accepted {
            if fresh {
                Outcome::Hit {
                    ttl: entry.ttl_left_secs(now),
                }
            } else {
                Outcome::Stale { detail: "max-stale" }
            }
        } else if asks.takes_any_fresh() && entry.within_stale_while_revalidate(now) {
            self.refresh_in_background(request, &found.field);
            Outcome::Stale { detail: "revalidating" }
        } else {
            // Stale, or refused by the request: left for validation or
            // stale-if-error.
            return None;
        };
        let entry = found.entry.take()?;
        let compression = &self.generation.config.compression;
        Some((answer(request.req.headers(), entry, now, is_head, compression), outcome))
    }
}

/// A header map from name/value pairs (repeated names append), for the
/// phases' unit tests.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut m = http::HeaderMap::new();
    for (k, v) in pairs {
        m.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    m
}
