//! What `cachegate check` says about the request inputs that reach the
//! backend and how each is kept from changing a shared answer.

use super::error::ConfigError;
use super::Config;
use std::ops::Range;
use toml::Spanned;

/// What a request gets whose query or headers give an input the rule's
/// key reads more than once (`[[rule]] duplicate_inputs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicateInputs {
    /// Forwarded uncached: neither served from nor stored into the cache.
    #[default]
    Bypass,
    /// Only the first occurrence is kept, for the key and the backend alike.
    First,
    /// A JSON 400.
    Reject,
}

impl DuplicateInputs {
    pub fn as_str(self) -> &'static str {
        match self {
            DuplicateInputs::Bypass => "bypass",
            DuplicateInputs::First => "first",
            DuplicateInputs::Reject => "reject",
        }
    }
}

/// `duplicate_inputs = "bypass" | "first" | "reject"`.
pub(super) fn duplicate_inputs(
    raw: &Option<Spanned<String>>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<DuplicateInputs, ConfigError> {
    let Some(v) = raw else {
        return Ok(DuplicateInputs::default());
    };
    match v.get_ref().as_str() {
        "bypass" => Ok(DuplicateInputs::Bypass),
        "first" => Ok(DuplicateInputs::First),
        "reject" => Ok(DuplicateInputs::Reject),
        other => Err(at(
            v.span(),
            format!("unknown duplicate_inputs {other:?}; expected bypass, first or reject"),
        )),
    }
}

impl Config {
    /// One line per input setting, as `cachegate check` prints them.
    pub fn inputs_summary(&self) -> String {
        let mut out = String::new();
        let authority = self.backend.url.authority().map_or("", |a| a.as_str());
        if self.backend.preserve_host {
            out.push_str("backend Host: the client's (preserve_host), part of every key\n");
        } else {
            out.push_str(&format!(
                "backend Host: {authority} (the client's in X-Forwarded-Host: {})\n",
                if self.backend.forwarded_headers { "on" } else { "off" }
            ));
        }
        out.push_str(&format!(
            "request headers with '_' in their name: {}\n",
            if self.server.underscores_in_headers {
                "kept (underscores_in_headers)"
            } else {
                "dropped"
            }
        ));
        out
    }
}
