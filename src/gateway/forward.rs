//! Phase 6, forward: the backend gets the request. Also the requests the
//! cache stays out of (no rule, an unusable key, the store down), and the
//! outcome headers and counters of a request a rule covers.

use super::{trace, Cacheable, Gateway, Outcome};
use crate::proxy::{Body, ClientInfo, ForwardError};
use crate::rules::CacheRule;
use http::{Request, Response};
use std::time::Instant;

impl Gateway {
    /// Forwards to the backend, recording the time to the response head.
    pub(super) async fn forward(&self, req: Request<Body>, from: ClientInfo) -> Result<Response<Body>, ForwardError> {
        let started = Instant::now();
        let result = self.generation.forwarder.forward(req, from).await;
        let took = started.elapsed();
        self.shared.metrics.backend_latency(took);
        trace::note(|t| {
            t.backend_status = result.as_ref().ok().map(|r| r.status().as_u16());
            t.backend_time = Some(took);
        });
        result
    }

    /// Requests no rule covers go straight through.
    pub(super) async fn pass(&self, req: Request<Body>, from: ClientInfo) -> Response<Body> {
        match self.forward(req, from).await {
            Ok(resp) => resp,
            Err(e) => e.to_response(),
        }
    }

    /// A request a rule covers, forwarded uncached because the store could
    /// not be read.
    pub(super) async fn bypass(&self, request: Cacheable<'_>, detail: &'static str) -> (Response<Body>, Outcome) {
        (self.pass(request.req, request.from).await, Outcome::Bypass { detail })
    }

    /// A request a rule covers but that has no usable key (or inputs the
    /// key cannot read unambiguously): forwarded uncached, and counted.
    pub(super) async fn uncached(
        &self,
        req: Request<Body>,
        from: ClientInfo,
        rule: &CacheRule,
        detail: &'static str,
    ) -> Response<Body> {
        trace::note(|t| t.rule = Some(rule.index));
        let resp = self.pass(req, from).await;
        self.counted(rule, resp, Outcome::Bypass { detail })
    }

    /// Sets the outcome's headers on the response and counts it for the rule.
    pub(super) fn counted(&self, rule: &CacheRule, mut resp: Response<Body>, outcome: Outcome) -> Response<Body> {
        outcome.apply(resp.headers_mut());
        let cache = &self.generation.config.cache;
        if !cache.forward_targeted_cache_control {
            // The operator keeps the fields aimed at this cache to itself.
            for name in &cache.targeted_cache_control {
                resp.headers_mut().remove(name);
            }
        }
        if let Some(counters) = self.generation.rule_counters.get(rule.index) {
            self.shared.metrics.record(counters, &outcome, resp.status().as_u16());
        }
        resp
    }
}
