//! Phase 7 for a stale entry: validation with the backend. A 304 to our
//! conditional request refreshes the stored entry's headers and lifetime
//! (RFC 9111 §4.3.4); within stale-while-revalidate, one background request
//! refreshes the entry while the stale one is served (RFC 5861).

use super::answer::{answer, miss};
use super::coalesce::Role;
use super::fill::Fetched;
use super::{Cacheable, Gateway, Outcome};
use crate::proxy::{self, Body};
use crate::store::entry::{now_ms, Entry};
use http::{header, Method, Request, Response};
use http_body_util::BodyExt;
use std::sync::Arc;

impl Gateway {
    /// A 304 to our conditional request: the stored body is still good;
    /// its headers are updated from the 304 (RFC 9111 §3.2, §4.3.4) and it
    /// is stored again with the lifetime they now give.
    pub(super) async fn refresh_validated(
        &self,
        not_modified: Response<Body>,
        mut fetched: Fetched<'_, '_>,
    ) -> (Response<Body>, Outcome) {
        let Some(stale) = fetched.stale.take() else {
            // Only a conditional request made for a stale entry gets here.
            return (not_modified, miss(false, Some("backend")));
        };
        let mut headers = stale.headers;
        let was_weak = super::compression::has_weak_etag(&headers);
        update_headers(&mut headers, not_modified.headers());
        // A transformed entry's tag stays weak when the backend names its own.
        super::compression::keep_weak_etag(was_weak, &mut headers);
        let entry = Entry {
            status: stale.status,
            stored_at_ms: now_ms(),
            lifetime: stale.lifetime,
            headers,
            body: stale.body,
        };
        let (client, is_head) = (fetched.client.clone(), fetched.is_head);
        if not_modified.headers().contains_key(header::SET_COOKIE) {
            // This client's cookie: answered, never stored for others.
            let mut resp = answer(&client, entry, now_ms(), is_head, &self.generation.config.compression);
            for cookie in not_modified.headers().get_all(header::SET_COOKIE) {
                resp.headers_mut().append(header::SET_COOKIE, cookie.clone());
            }
            return (resp, miss(false, Some("set-cookie")));
        }
        // The merged answer must pass what a fetched 200 must pass.
        let entry = match self.storable_lifetime(entry.status, &entry.headers, &fetched) {
            Ok(lifetime) => Entry { lifetime, ..entry },
            // No longer storable (e.g. now no-store): answer, keep nothing.
            Err(reason) => {
                return (
                    answer(&client, entry, now_ms(), is_head, &self.generation.config.compression),
                    miss(false, Some(reason)),
                )
            }
        };
        let outcome = match self.store_entry(&entry, fetched).await {
            Outcome::Miss { stored, requested, .. } => Outcome::Revalidated { stored, requested },
            other => other,
        };
        (
            answer(&client, entry, now_ms(), is_head, &self.generation.config.compression),
            outcome,
        )
    }

    /// Within stale-while-revalidate: one background request (coalesced with
    /// any fill already in flight) refreshes the entry in `field`.
    pub(super) fn refresh_in_background(self: &Arc<Self>, request: &Cacheable<'_>, field: &str) {
        let mut refresh = Request::new(proxy::empty());
        *refresh.method_mut() = Method::GET;
        *refresh.uri_mut() = request.req.uri().clone();
        *refresh.headers_mut() = request.req.headers().clone();
        for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::CONTENT_LENGTH] {
            refresh.headers_mut().remove(name);
        }
        let gateway = self.clone();
        let (rule_index, from) = (request.rule.index, request.from);
        let (key, field) = (request.key.clone(), field.to_string());
        tokio::spawn(async move {
            let Some(rule) = gateway.generation.config.rules.cache.get(rule_index) else {
                return;
            };
            // The same coalescing slot a miss for this variant would take.
            let Role::Leader(leader) = gateway.shared.inflight.join(&key.key, &field) else {
                return; // someone is already fetching it
            };
            // Re-read: the entry may have been refreshed or purged meanwhile.
            let Ok(found) = gateway.read(&key, refresh.headers()).await else {
                return;
            };
            if found.entry.as_ref().is_some_and(|e| e.is_fresh(now_ms())) {
                return;
            }
            let request = Cacheable {
                req: refresh,
                from,
                rule,
                key,
            };
            let (resp, _) = gateway.fill(request, found, Some(leader)).await;
            // Drain the body: a streamed fill stores only once it is read.
            let _ = resp.into_body().collect().await;
        });
    }
}

/// Fields a 304 never changes in the stored response (RFC 9111 §3.2): its
/// framing and the encoding its stored body depends on; the cookie is one
/// client's (answered to it, never stored); `Cache-Status` and `X-Cache`
/// are set per answer.
const NOT_UPDATED: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "content-encoding",
    "content-range",
    "set-cookie",
    "cache-status",
    "x-cache",
];

/// Replaces each field the newer response carries (all its lines, not
/// only the last) in the stored headers, but those in [`NOT_UPDATED`].
pub(super) fn update_headers(stored: &mut http::HeaderMap, newer: &http::HeaderMap) {
    for name in newer.keys() {
        if NOT_UPDATED.contains(&name.as_str()) {
            continue;
        }
        stored.remove(name);
        for value in newer.get_all(name) {
            stored.append(name.clone(), value.clone());
        }
    }
}

/// Puts our validators for a stale entry on a request to the backend;
/// returns whether there were any.
pub(super) fn add_validators(request: &mut http::HeaderMap, stored: &http::HeaderMap) -> bool {
    let mut added = false;
    if let Some(etag) = stored.get(header::ETAG) {
        request.insert(header::IF_NONE_MATCH, etag.clone());
        added = true;
    }
    if let Some(lm) = stored.get(header::LAST_MODIFIED) {
        request.insert(header::IF_MODIFIED_SINCE, lm.clone());
        added = true;
    }
    added
}
