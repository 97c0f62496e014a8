//! `[admin]`: the admin API's prefix, its own listener, and its tokens
//! (only their SHA-256 is kept; a token is checked in constant time by
//! `crate::admin`).

use super::error::ConfigError;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::ops::Range;

/// The SHA-256 an admin token is known by.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminScope {
    /// health, basic-stats, stats, metrics.
    Read,
    /// clear, delete a key.
    Purge,
    /// keys, key.
    Inspect,
}

impl AdminScope {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminScope::Read => "read",
            AdminScope::Purge => "purge",
            AdminScope::Inspect => "inspect",
        }
    }
}

/// An admin token: only the SHA-256 of the secret is kept.
#[derive(Debug, Clone)]
pub struct AdminToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<AdminScope>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Admin routes live under this path (default `/api/v1/cache`).
    pub prefix: String,
    /// A separate listener for admin routes, `/metrics` and health; when
    /// set, the main listener forwards those paths to the backend.
    pub listen: Option<SocketAddr>,
    pub metrics_require_token: bool,
    /// The method that purges one URL on the main listener (`PURGE` by
    /// default); `None`: disabled, the method is forwarded like any other.
    pub purge_method: Option<http::Method>,
    pub tokens: Vec<AdminToken>,
}

/// Methods the proxy forwards as they are; none of them may purge.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

pub(super) fn admin_config(
    raw: super::file::RawAdmin,
    env: &dyn Fn(&str) -> Option<String>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<AdminConfig, ConfigError> {
    let prefix = match &raw.prefix {
        None => "/api/v1/cache".to_string(),
        Some(p) => {
            let v = p.get_ref().trim_end_matches('/');
            if !v.starts_with('/') || v.len() < 2 || v.contains(['?', '#', ' ']) {
                return Err(at(
                    p.span(),
                    format!(
                        "admin prefix must be a path such as /api/v1/cache, got {:?}",
                        p.get_ref()
                    ),
                ));
            }
            v.to_string()
        }
    };
    let listen = match &raw.listen {
        None => None,
        Some(l) => Some(l.get_ref().parse::<SocketAddr>().map_err(|_| {
            at(
                l.span(),
                format!(
                    "expected a socket address such as 127.0.0.1:9091, got {:?}",
                    l.get_ref()
                ),
            )
        })?),
    };
    let mut tokens = Vec::new();
    for t in raw.tokens {
        let mut scopes = Vec::new();
        for s in t.scopes.get_ref() {
            scopes.push(match s.as_str() {
                "read" => AdminScope::Read,
                "purge" => AdminScope::Purge,
                "inspect" => AdminScope::Inspect,
                other => {
                    return Err(at(
                        t.scopes.span(),
                        format!("unknown admin scope {other:?}; expected read, purge or inspect"),
                    ))
                }
            });
        }
        let sha256 = match (&t.sha256, &t.token_env) {
            (Some(h), None) => {
                let bytes = hex::decode(h.get_ref().trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| at(h.span(), "sha256 must be 64 hex digits (see `cachegate token`)".into()))?;
                bytes
            }
            (None, Some(var)) => match env(var.get_ref()) {
                Some(token) => hash_token(&token),
                None => {
                    // Fail closed: the token simply does not exist.
                    tracing::warn!(token = %t.name.get_ref(), var = %var.get_ref(), "admin token_env is not set; that token is disabled");
                    continue;
                }
            },
            _ => {
                return Err(at(
                    t.name.span(),
                    "an admin token needs exactly one of sha256 or token_env".into(),
                ))
            }
        };
        tokens.push(AdminToken {
            name: t.name.into_inner(),
            sha256,
            scopes,
        });
    }
    let purge_method = match &raw.purge_method {
        None => http::Method::from_bytes(b"PURGE").ok(),
        Some(m) if m.get_ref().is_empty() => None,
        Some(m) => match http::Method::from_bytes(m.get_ref().as_bytes()) {
            // A method the proxy must forward (GET, POST, ...) cannot be it.
            Ok(method) if !STANDARD_METHODS.contains(&method.as_str()) => Some(method),
            _ => {
                return Err(at(
                    m.span(),
                    format!(
                        "purge_method must be a method name of its own such as \"PURGE\" (not a standard one), or \"\" to disable, got {:?}",
                        m.get_ref()
                    ),
                ))
            }
        },
    };
    Ok(AdminConfig {
        prefix,
        listen,
        metrics_require_token: raw.metrics_require_token.unwrap_or(false),
        purge_method,
        tokens,
    })
}
