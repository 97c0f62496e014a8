//! Phase 2, route: a write goes to the purge phase; a request a `[[rule]]`
//! covers gets its key (phase 3) and goes on to lookup; anything else is
//! passed through. Inputs the key would read ambiguously (a parameter or
//! header given twice) are bypassed, rejected or cut to their first value,
//! as the rule says.

use super::key::CacheKey;
use super::{inputs, Gateway};
use crate::config::DuplicateInputs;
use crate::proxy::Body;
use crate::rules::CacheRule;
use http::{Method, Request, Response};

/// Where a request goes after admission.
pub(super) enum Route<'g> {
    /// An unsafe method, or one an `[[invalidate]]` rule matches.
    Write,
    /// A `[[rule]]` covers it: its key, or why it has none.
    Cached(&'g CacheRule, Result<CacheKey, &'static str>),
    /// No rule covers it.
    Pass,
    /// Answered here (a rule rejects ambiguous inputs).
    Reply(Response<Body>),
}

impl Gateway {
    pub(super) fn route(&self, req: &mut Request<Body>) -> Route<'_> {
        let rules = &self.generation.config.rules;
        let underscores = self.generation.config.server.underscores_in_headers;
        let path = req.uri().path();
        if is_unsafe(req.method()) || rules.match_invalidate(req.method(), path).next().is_some() {
            return Route::Write;
        }
        let Some(m) = rules.match_cache(req.method(), path) else {
            return Route::Pass;
        };
        let rule = m.rule;
        if inputs::has_body(req) {
            return Route::Cached(rule, Err(inputs::REQUEST_BODY));
        }
        if inputs::is_ambiguous(req, rule, underscores) {
            match rule.duplicate_inputs {
                DuplicateInputs::Bypass => return Route::Cached(rule, Err(inputs::AMBIGUOUS)),
                DuplicateInputs::Reject => return Route::Reply(inputs::rejection(rule)),
                DuplicateInputs::First => {
                    drop(m);
                    inputs::keep_first(req, rule, underscores);
                    let Some(m) = rules.match_cache(req.method(), req.uri().path()) else {
                        return Route::Pass;
                    };
                    return Route::Cached(m.rule, self.cache_key(req, m.rule, &m.captures));
                }
            }
        }
        Route::Cached(rule, self.cache_key(req, rule, &m.captures))
    }
}

/// Methods that may change the resource (RFC 9110 §9.2.1).
fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}
