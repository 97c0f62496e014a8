//! What `cachegate check` says about the request inputs that reach the
//! backend and how each is kept from changing a shared answer.

use super::error::ConfigError;
use super::Config;
pub use crate::rules::DuplicateInputs;
use crate::rules::RawRule;
use crate::rules::RuleSet;
use std::ops::Range;
use toml::Spanned;

/// The request headers that identify a caller by default: the standard
/// ones and the API-key spellings common APIs and gateways use (AICtrlNet
/// and AWS API Gateway `X-API-Key`, Azure `api-key` and
/// `Ocp-Apim-Subscription-Key`, OpenStack `X-Auth-Token`, JWT apps'
/// `X-Access-Token`, AWS STS `X-Amz-Security-Token`, Google
/// `X-Goog-Api-Key`, GitLab `Private-Token`, Vault `X-Vault-Token`).
/// Others that look like one are caught by [`SuspectCredentials`]. CSRF
/// tokens are not listed: browsers send them on writes but not on reads,
/// so a logout carrying one would hash to another scope than the reads it
/// must purge (as suspects they still keep a request out of shared scopes).
pub const DEFAULT_CREDENTIAL_HEADERS: [&str; 12] = [
    "authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
    "x-amz-security-token",
    "x-goog-api-key",
    "ocp-apim-subscription-key",
    "private-token",
    "x-vault-token",
    "x-session-token",
];

/// Parts of a header name that make it look like a credential.
pub const CREDENTIAL_WORDS: [&str; 5] = ["auth", "token", "key", "session", "secret"];

/// What a request gets that carries a header looking like a credential
/// (a name containing one of [`CREDENTIAL_WORDS`]) that is neither a
/// listed credential header nor a listed non-credential
/// (`[cache] suspect_credential_headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SuspectCredentials {
    /// Not served from, nor stored into, a shared scope (anon, public):
    /// forwarded uncached.
    #[default]
    Bypass,
    /// Treated as a credential: part of the scope's hash.
    Scope,
    /// Not a credential (the behaviour before the check existed).
    Ignore,
}

impl SuspectCredentials {
    pub fn as_str(self) -> &'static str {
        match self {
            SuspectCredentials::Bypass => "bypass",
            SuspectCredentials::Scope => "scope",
            SuspectCredentials::Ignore => "ignore",
        }
    }
}

/// `suspect_credential_headers = "bypass" | "scope" | "ignore"`.
pub(super) fn suspect_credentials(
    raw: &Option<Spanned<String>>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<SuspectCredentials, ConfigError> {
    let Some(v) = raw else {
        return Ok(SuspectCredentials::default());
    };
    match v.get_ref().as_str() {
        "bypass" => Ok(SuspectCredentials::Bypass),
        "scope" => Ok(SuspectCredentials::Scope),
        "ignore" => Ok(SuspectCredentials::Ignore),
        other => Err(at(
            v.span(),
            format!("unknown suspect_credential_headers {other:?}; expected bypass, scope or ignore"),
        )),
    }
}

/// A list of header names, lower-cased; an error at the list otherwise.
pub(super) fn header_names(
    raw: &Option<Spanned<Vec<String>>>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<Vec<http::HeaderName>, ConfigError> {
    let Some(list) = raw else {
        return Ok(Vec::new());
    };
    list.get_ref()
        .iter()
        .map(|name| {
            http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| at(list.span(), format!("{name:?} is not a header name")))
        })
        .collect()
}

/// A key or tag that reads a header with `_` in its name while such headers
/// are dropped on arrival would never see it: an error at the rule's key.
pub(super) fn check_dropped_key_headers(
    raw: &[RawRule],
    rules: &RuleSet,
    underscores_in_headers: bool,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if underscores_in_headers {
        return Ok(());
    }
    for (config, rule) in raw.iter().zip(&rules.cache) {
        if let Some(name) = rule.inputs.headers.iter().find(|h| h.as_str().contains('_')) {
            return Err(at(
                config.key.span(),
                format!(
                    "rule {:?} reads the header {name:?}, but headers with '_' in their name are dropped on arrival; \
                     name it with '-', or set [server] underscores_in_headers = true",
                    config.name.get_ref()
                ),
            ));
        }
    }
    Ok(())
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
        let names = |list: &[http::HeaderName]| {
            let names: Vec<&str> = list.iter().map(|n| n.as_str()).collect();
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        let cache = &self.cache;
        out.push_str(&format!("credential headers: {}\n", names(&cache.credential_headers)));
        out.push_str(&format!(
            "other headers named like a credential (containing {}): {}{}; not credentials: {}\n",
            CREDENTIAL_WORDS.join(", "),
            cache.suspect_credentials.as_str(),
            match cache.suspect_credentials {
                SuspectCredentials::Bypass => " (never cached in a shared scope)",
                SuspectCredentials::Scope => " (hashed into the scope as credentials)",
                SuspectCredentials::Ignore => " (not credentials)",
            },
            names(&cache.non_credential_headers)
        ));
        out.push_str(&format!(
            "Origin: {}\n",
            if cache.vary_on_origin {
                "part of the variant in shared scopes (vary_on_origin)"
            } else {
                "not keyed (vary_on_origin = false)"
            }
        ));
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
