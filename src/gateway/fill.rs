//! Phase 7, fill: forward a miss (conditionally, when a stale entry has
//! validators), decide whether the answer may be stored, store it under the
//! guard read at lookup, and answer. A body of unknown length streams to the
//! client and is stored only if it ends complete and within the limit.

use super::answer::{answer, answer_fetched, miss};
use super::coalesce::{Filled, Leader};
use super::compression::{self, StoredForm};
use super::key::{field_of_variant, CacheKey};
use super::lookup::{store_detail, Found};
use super::revalidate::add_validators;
use super::{credential_end, freshness, storable, vary, Cacheable, Gateway, Outcome};
use crate::config::{CompressionConfig, Scope, TtlMode};
use crate::proxy::{self, Body, ForwardError};
use crate::rules::CacheRule;
use crate::store::entry::{now_ms, Entry, Lifetime};
use crate::store::{EntryFill, FillGuard, Store, StoreResult};
use bytes::Bytes;
use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;

/// How long a stale entry with a validator is kept for revalidation.
const KEEP_FOR_REVALIDATION: Duration = Duration::from_secs(60);

/// A miss once its request went to the backend: what storing the answer
/// needs.
pub(super) struct Fetched<'g, 'l> {
    pub(super) rule: &'g CacheRule,
    pub(super) key: CacheKey,
    pub(super) guard: FillGuard,
    /// The client's request headers (its validators are answered here).
    pub(super) client: HeaderMap,
    pub(super) is_head: bool,
    /// Shares a stored entry with the requests waiting on this fill.
    pub(super) leader: Option<Leader<'l>>,
    /// The stale entry the lookup found: refreshed by a 304, or served
    /// instead of a failed answer within its stale-if-error window.
    pub(super) stale: Option<Entry>,
}

impl Gateway {
    /// Forwards a miss, stores what may be stored, answers. A `stale` entry
    /// (in `found`) is validated with the backend, or served instead of a
    /// backend failure within its stale-if-error window.
    pub(super) async fn fill(
        &self,
        request: Cacheable<'_>,
        found: Found,
        leader: Option<Leader<'_>>,
    ) -> (Response<Body>, Outcome) {
        let Cacheable {
            mut req,
            from,
            rule,
            key,
        } = request;
        let stale = found.entry;
        let is_head = req.method() == Method::HEAD;
        // The client's own validators are answered here, against what is
        // stored; the backend gets ours (or none) so its answer can fill.
        let client = req.headers().clone();
        req.headers_mut().remove(header::IF_NONE_MATCH);
        req.headers_mut().remove(header::IF_MODIFIED_SINCE);
        if is_head {
            // Fetch the GET answer so it can fill the entry HEAD shares.
            *req.method_mut() = Method::GET;
        }
        let compression = &self.generation.config.compression;
        if compression.enabled {
            // One Accept-Encoding for every client, so one fill serves them
            // all; each gets the stored coding or it decoded (`answer`).
            req.headers_mut()
                .insert(header::ACCEPT_ENCODING, compression.backend_accept.clone());
        }
        let validating = stale
            .as_ref()
            .is_some_and(|e| add_validators(req.headers_mut(), &e.headers));
        let asked_at = std::time::SystemTime::now();
        let result = self.forward(req, from).await;

        let failed = match &result {
            Err(_) => true,
            Ok(resp) => resp.status().is_server_error(),
        };
        if failed && stale.as_ref().is_some_and(|e| e.within_stale_if_error(now_ms())) {
            if let Some(entry) = stale {
                let resp = answer(&client, entry, now_ms(), is_head, &self.generation.config.compression);
                return (
                    resp,
                    Outcome::Stale {
                        detail: "backend-error",
                    },
                );
            }
        }
        let mut resp = match result {
            Ok(r) => r,
            // A stale entry that must not be used unvalidated: the cache
            // could not validate it, so it answers 504 (RFC 9111 §5.2.2.2).
            Err(ForwardError::Unreachable(_) | ForwardError::NotSent(_))
                if stale.as_ref().is_some_and(|e| e.lifetime.must_revalidate) =>
            {
                return (ForwardError::Timeout.to_response(), miss(false, Some("backend")));
            }
            Err(e) => return (e.to_response(), miss(false, Some("backend"))),
        };
        if rule.ttl == TtlMode::Origin {
            freshness::correct_age(resp.headers_mut(), asked_at, std::time::SystemTime::now());
        }
        let validated = validating && resp.status() == StatusCode::NOT_MODIFIED;
        let fetched = Fetched {
            rule,
            key,
            guard: found.guard,
            client,
            is_head,
            leader,
            stale,
        };
        if validated {
            self.refresh_validated(resp, fetched).await
        } else {
            self.store_fetched(resp, fetched).await
        }
    }

    /// The response directives this cache obeys: a targeted field's
    /// (RFC 9213) when one is present and valid, else `Cache-Control`'s.
    pub(super) fn directives(&self, headers: &HeaderMap) -> freshness::Directives {
        freshness::Directives::of_response(headers, &self.generation.config.cache.targeted_cache_control)
    }

    /// A full answer from the backend: stored if it may be, and answered.
    async fn store_fetched(&self, resp: Response<Body>, fetched: Fetched<'_, '_>) -> (Response<Body>, Outcome) {
        let is_head = fetched.is_head;
        let compression = &self.generation.config.compression;
        // What is not stored is passed on, decoded if the client does not
        // accept the coding the backend chose for cachegate's Accept-Encoding.
        let passed = |resp: Response<Body>| {
            compression::for_client(&fetched.client, resp, is_head, compression.max_decoded_bytes)
        };
        let verdict = self.storable_lifetime(resp.status(), resp.headers(), &fetched);
        // A 204 has no content, and no Content-Length to say so (RFC 9110 §15.3.5).
        let declared = match resp.status() {
            StatusCode::NO_CONTENT => Some(0),
            _ => storable::content_length(resp.headers()),
        };
        // A declared body within the rule's limit is read whole before the
        // head is sent, stored or not: one that breaks off is then never
        // passed on as if complete (`broken_answer`).
        let (len, verdict) = match (declared, verdict) {
            (Some(len), verdict) if len as usize <= fetched.rule.max_body_bytes => (len as usize, verdict),
            (Some(_), Ok(_)) => return (passed(resp), miss(false, Some("too-large"))),
            // Refused before streaming as `stored_form` refuses a whole one.
            (None, Ok(_)) if compression::undecodable(resp.headers()) => {
                return (passed(resp), miss(false, Some("content-encoding")));
            }
            (None, Ok(lifetime)) => return self.fill_streamed(resp, lifetime, fetched),
            (_, Err(reason)) => return (passed(resp), miss(false, Some(reason))),
        };
        let (parts, body) = resp.into_parts();
        let timeout = self.generation.config.backend.timeout;
        let chunks = match tokio::time::timeout(timeout, storable::collect(body, len)).await {
            Ok(Ok(chunks)) => chunks,
            Ok(Err((_, err))) => {
                tracing::debug!(key = %fetched.key.key, error = %err, "backend body failed; nothing stored");
                return broken_answer(
                    fetched,
                    ForwardError::Unreachable(format!("the answer broke off: {err}")),
                    compression,
                );
            }
            Err(_) => return broken_answer(fetched, ForwardError::Timeout, compression),
        };
        let body = storable::concat(&chunks);
        let lifetime = match verdict {
            Ok(lifetime) => lifetime,
            Err(reason) => {
                let resp = Response::from_parts(parts, proxy::full(body));
                return (passed(resp), miss(false, Some(reason)));
            }
        };
        let (status, mut headers) = (parts.status, parts.headers);
        let (body, identity, refused) =
            match compression::stored_form(compression, fetched.rule, status, &mut headers, &body).await {
                StoredForm::AsIs => (body, None, None),
                StoredForm::Encoded(encoded) => {
                    self.shared.metrics.compressed(body.len(), encoded.len());
                    (encoded, Some(body), None)
                }
                StoredForm::Refused(reason) => (body, None, Some(reason)),
            };
        let entry = Entry {
            status,
            stored_at_ms: now_ms(),
            lifetime,
            headers,
            body,
        };
        let client = fetched.client.clone();
        if let Some(reason) = refused {
            return (
                answer_fetched(&client, entry, identity, is_head, compression),
                miss(false, Some(reason)),
            );
        }
        let stored = self.store_entry(&entry, fetched).await;
        (answer_fetched(&client, entry, identity, is_head, compression), stored)
    }

    /// How long a backend answer (or a stored one a 304 refreshed) may be
    /// stored, or why it may not be (as
    /// `Cache-Status` `detail=` names it): its directives and status
    /// (`freshness::lifetime`), what it carries (`storable.rs`), the
    /// request's `no-store`, an `Authorization` it may not be shared with.
    pub(super) fn storable_lifetime(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        fetched: &Fetched<'_, '_>,
    ) -> Result<Lifetime, &'static str> {
        let rule = fetched.rule;
        let directives = self.directives(headers);
        let lifetime = freshness::lifetime(rule, status.as_u16(), headers, &directives)?;
        if let Some(reason) = storable::unstorable_reason(headers) {
            return Err(reason);
        }
        if self.request_directives(&fetched.client).no_store {
            return Err("request-no-store");
        }
        if !shareable_with_authorization(rule, &fetched.client, &directives) {
            return Err("authorization");
        }
        let cap = self.generation.config.cache.credential_max_ttl;
        Ok(credential_end::capped(lifetime, &fetched.key.field, cap))
    }

    /// Stores a complete entry under the guard; a leader shares it with its
    /// followers only if it was stored (one the guard refused may predate a
    /// write that a waiting request must see).
    pub(super) async fn store_entry(&self, entry: &Entry, fetched: Fetched<'_, '_>) -> Outcome {
        let encoded = Entry::encode(
            entry.status,
            &entry.headers,
            &entry.body,
            entry.stored_at_ms,
            &entry.lifetime,
        );
        let size = encoded.len();
        if let Some(leader) = &fetched.leader {
            // Take no more followers before storing (see `Leader::close`).
            leader.close();
        }
        let negotiated = self.generation.config.compression.enabled;
        let write = EntryWrite::new(
            &fetched.key,
            &entry.headers,
            &fetched.client,
            &entry.lifetime,
            negotiated,
        );
        let store = &self.shared.store;
        let mut stored = self
            .timed("fill", write.entry(store.as_ref(), encoded, fetched.guard))
            .await;
        if write.has_marker() && matches!(stored, Ok(true)) {
            stored = self.timed("fill", write.marker(store.as_ref(), fetched.guard)).await;
        }
        match stored {
            Ok(true) => {
                self.shared.metrics.stored(size);
                if let Some(leader) = fetched.leader {
                    leader.finish(Some(Arc::new(Filled {
                        entry: entry.clone(),
                        field: write.field,
                    })));
                }
                miss(true, None)
            }
            Ok(false) => miss(false, Some("superseded")),
            Err(e) => miss(false, Some(store_detail(&e))),
        }
    }

    /// A body of unknown length streams to the client; a copy is stored in
    /// the background if it ends complete and within the rule's limit.
    fn fill_streamed(
        &self,
        resp: Response<Body>,
        lifetime: Lifetime,
        fetched: Fetched<'_, '_>,
    ) -> (Response<Body>, Outcome) {
        let (mut parts, body) = resp.into_parts();
        let compression = &self.generation.config.compression;
        let negotiated = compression.enabled;
        let decode = compression::must_decode(&fetched.client, &parts.headers);
        if compression::coding_of(&parts.headers).is_some() {
            // Stored in the backend's coding; decoded for those who need it.
            compression::vary_on_accept_encoding(&mut parts.headers);
        }
        let write = EntryWrite::new(&fetched.key, &parts.headers, &fetched.client, &lifetime, negotiated);
        let store = self.shared.store.clone();
        let metrics = self.shared.metrics.clone();
        let (status, headers, guard) = (parts.status, parts.headers.clone(), fetched.guard);
        let (coding, max_decoded) = (compression::coding_of(&parts.headers), compression.max_decoded_bytes);
        let tee = storable::TeeBody::new(body, fetched.rule.max_body_bytes, move |chunks| {
            let body = storable::concat(&chunks);
            tokio::spawn(async move {
                // As `stored_form`: an encoded body that does not decode
                // within the cap (a decompression bomb) is never stored.
                if let Some(coding) = coding {
                    if !compression::decodes_within_cap(coding, body.clone(), max_decoded).await {
                        tracing::debug!(key = %write.key, "streamed body does not decode within the cap; not stored");
                        return;
                    }
                }
                let encoded = Entry::encode(status, &headers, &body, now_ms(), &lifetime);
                let size = encoded.len();
                match write.store(store.as_ref(), encoded, guard).await {
                    Ok(true) => metrics.stored(size),
                    Ok(false) => {}
                    Err(e) => tracing::debug!(key = %write.key, error = %e, "background fill failed"),
                }
            });
        });
        // HEAD was fetched as GET: the body must still be read to the end
        // to be stored, so drain it in the background.
        let body = if fetched.is_head {
            tokio::spawn(async move {
                let _ = tee.collect().await;
            });
            proxy::empty()
        } else if let Some(coding) = decode {
            compression::Decoding::new(tee.boxed(), coding, compression.max_decoded_bytes).boxed()
        } else {
            tee.boxed()
        };
        if decode.is_some() {
            compression::decoded_head(&mut parts.headers);
        }
        (Response::from_parts(parts, body), miss(false, Some("streamed")))
    }
}

/// An answer whose body broke off before it was complete (the backend
/// closed or reset the connection, or stalled): nothing of it is stored or
/// sent. The stale entry is served where its stale-if-error window allows
/// (RFC 9111 §4.2.4, RFC 5861 §4), else 502 (504 for a stall), never the
/// truncated body as if it were whole.
fn broken_answer(
    fetched: Fetched<'_, '_>,
    error: ForwardError,
    compression: &CompressionConfig,
) -> (Response<Body>, Outcome) {
    let now = now_ms();
    match fetched.stale {
        Some(entry) if entry.within_stale_if_error(now) => (
            answer(&fetched.client, entry, now, fetched.is_head, compression),
            Outcome::Stale {
                detail: "backend-error",
            },
        ),
        _ => (error.to_response(), miss(false, Some("backend"))),
    }
}

/// Where and how long one entry is stored: its key, field and tags, the
/// `Vary` names whose marker points the scope's field at the variants, and
/// how long the record is kept.
struct EntryWrite {
    key: String,
    scope_field: String,
    field: String,
    tags: Vec<String>,
    vary: Vec<http::HeaderName>,
    retain: Duration,
}

impl EntryWrite {
    /// For a response (`headers`) to a request (`client`): the field is
    /// the variant the request selects when the response varies.
    fn new(
        key: &CacheKey,
        headers: &HeaderMap,
        client: &HeaderMap,
        lifetime: &Lifetime,
        negotiated: bool,
    ) -> EntryWrite {
        let vary = vary::keyed_names(headers, negotiated);
        EntryWrite {
            key: key.key.clone(),
            scope_field: key.field.clone(),
            field: field_of_variant(&key.field, &vary, client),
            tags: entry_tags(&key.tags, headers),
            vary,
            retain: retain_for(lifetime, headers),
        }
    }

    /// Stores the entry under the guard, then (for a `Vary` response) the
    /// marker in the scope's field; whether both stored.
    async fn store(&self, store: &dyn Store, encoded: Bytes, guard: FillGuard) -> StoreResult<bool> {
        let stored = self.entry(store, encoded, guard).await?;
        if !stored || !self.has_marker() {
            return Ok(stored);
        }
        self.marker(store, guard).await
    }

    async fn entry(&self, store: &dyn Store, encoded: Bytes, guard: FillGuard) -> StoreResult<bool> {
        let entry = EntryFill::new(&self.key, &self.field, encoded, self.retain, guard);
        store.fill(entry.tagged(&self.tags)).await
    }

    /// Whether the response varies, so the scope's field must point at the
    /// variants.
    fn has_marker(&self) -> bool {
        !self.vary.is_empty()
    }

    async fn marker(&self, store: &dyn Store, guard: FillGuard) -> StoreResult<bool> {
        let marker = vary::marker(&self.vary);
        store
            .fill(EntryFill::new(&self.key, &self.scope_field, marker, self.retain, guard))
            .await
    }
}

/// How long the store keeps an entry: fresh plus its stale windows, and,
/// when it has a validator, long enough after that to be revalidated with
/// a conditional request rather than fetched again.
fn retain_for(lifetime: &Lifetime, headers: &HeaderMap) -> Duration {
    let retain = lifetime.retain();
    if freshness::has_validator(headers) {
        retain.max(lifetime.ttl + KEEP_FOR_REVALIDATION)
    } else {
        retain
    }
}

/// RFC 9111 §3.5: an answer to a request with `Authorization` is shared
/// only if the origin allows it (`public`, `s-maxage`, `must-revalidate`).
/// Credential-scoped rules never share it anyway; fixed-TTL public rules
/// are the operator's explicit decision.
fn shareable_with_authorization(rule: &CacheRule, request: &HeaderMap, d: &freshness::Directives) -> bool {
    if rule.scope != Scope::Public || rule.ttl != TtlMode::Origin || !request.contains_key(header::AUTHORIZATION) {
        return true;
    }
    d.public || d.s_maxage.is_some() || d.must_revalidate
}

/// An entry's tags: the rule's, and those the backend names in
/// `Surrogate-Key` (space-separated) and `Cache-Tag` (comma-separated).
fn entry_tags(rule_tags: &[String], response: &HeaderMap) -> Vec<String> {
    let mut tags = rule_tags.to_vec();
    let listed = |name: &str, sep: char| {
        response
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(move |v| v.split(sep))
            .map(str::trim)
            // `__cg:` names cachegate's own indexes (store/scope_index.rs).
            .filter(|t| !t.is_empty() && t.len() <= 1024 && !t.starts_with(crate::rules::INTERNAL_PREFIX))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    tags.extend(listed("surrogate-key", ' '));
    tags.extend(listed("cache-tag", ','));
    tags.sort();
    tags.dedup();
    tags
}
