//! `[admin]`: the admin API's prefix, its own listener, and its tokens
//! (only their SHA-256 is kept; a token is checked in constant time by
//! `crate::admin`). Tokens come from the file and from the environment
//! (`CACHEGATE_ADMIN_TOKENS`, or a file such as a Docker secret named by
//! `CACHEGATE_ADMIN_TOKENS_FILE`), merged; the listener from
//! `CACHEGATE_ADMIN_LISTEN` or the file, with its TLS and client
//! certificates (`[admin.tls]`).

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
    /// `[admin.tls]`: the admin listener speaks TLS (needs `listen`).
    pub tls: Option<AdminTls>,
}

/// The admin listener's certificate, and which client certificates it asks for.
#[derive(Debug, Clone)]
pub struct AdminTls {
    pub certificate: super::ServerTls,
    /// The CA(s) a client certificate must be signed by (PEM).
    pub client_ca_file: Option<std::path::PathBuf>,
    pub client_auth: ClientAuth,
}

/// Whether the admin listener asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate asked for.
    Off,
    /// A certificate, when sent, must be signed by `client_ca_file`.
    Optional,
    /// No handshake without a certificate signed by `client_ca_file`.
    Required,
}

/// The environment variable holding admin tokens as hashes.
pub const TOKENS_ENV: &str = "CACHEGATE_ADMIN_TOKENS";
/// The environment variable naming a file (a Docker secret) in the same syntax.
pub const TOKENS_FILE_ENV: &str = "CACHEGATE_ADMIN_TOKENS_FILE";
/// The environment variable for `[admin] listen`.
pub const LISTEN_ENV: &str = "CACHEGATE_ADMIN_LISTEN";

/// Methods the proxy forwards as they are; none of them may purge.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

pub(super) fn admin_config(
    raw: super::file::RawAdmin,
    env: &dyn Fn(&str) -> Option<String>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
    general: &dyn Fn(String) -> ConfigError,
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
    let listen = match (env(LISTEN_ENV), &raw.listen) {
        (Some(v), _) => Some(v.trim().parse::<SocketAddr>().map_err(|_| {
            general(format!(
                "environment variable {LISTEN_ENV}: expected a socket address such as 127.0.0.1:9091, got {v:?}"
            ))
        })?),
        (None, None) => None,
        (None, Some(l)) => Some(l.get_ref().parse::<SocketAddr>().map_err(|_| {
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
    for token in tokens_from_env(env).map_err(general)? {
        if tokens.iter().any(|t: &AdminToken| t.name == token.name) {
            return Err(general(format!(
                "admin token {:?} is defined both in the file and in the environment; give each token one name",
                token.name
            )));
        }
        tokens.push(token);
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
    let tls = match &raw.tls {
        None => None,
        Some(t) if listen.is_none() => {
            return Err(at(
                t.cert_file.span(),
                format!(
                    "[admin.tls] needs an admin listener of its own ([admin] listen or {LISTEN_ENV}); \
                     without one the admin routes are on the main listener, whose TLS is [server.tls]"
                ),
            ))
        }
        Some(t) => Some(admin_tls(t, at)?),
    };
    Ok(AdminConfig {
        prefix,
        listen,
        metrics_require_token: raw.metrics_require_token.unwrap_or(false),
        purge_method,
        tokens,
        tls,
    })
}

/// `[admin.tls]`: the certificate as `[server.tls]` checks it; a client CA
/// file holding PEM certificates; `client_auth` (default `required` with a
/// client CA, else `off`) that asks for a CA only with one.
fn admin_tls(
    raw: &super::file::RawAdminTls,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<AdminTls, ConfigError> {
    let certificate = super::resolve::certificate_pair(&raw.cert_file, &raw.key_file, at)?;
    let client_ca_file = match &raw.client_ca_file {
        None => None,
        Some(ca) => {
            let path = std::path::PathBuf::from(ca.get_ref());
            if super::pem::certificates(&path, "client_ca_file").is_err() {
                return Err(at(
                    ca.span(),
                    format!("client_ca_file {:?} holds no readable PEM certificate", ca.get_ref()),
                ));
            }
            Some(path)
        }
    };
    let client_auth = match &raw.client_auth {
        None if client_ca_file.is_some() => ClientAuth::Required,
        None => ClientAuth::Off,
        Some(v) => {
            let mode = match v.get_ref().as_str() {
                "required" => ClientAuth::Required,
                "optional" => ClientAuth::Optional,
                "off" => ClientAuth::Off,
                other => {
                    return Err(at(
                        v.span(),
                        format!("client_auth must be \"required\", \"optional\" or \"off\", got {other:?}"),
                    ))
                }
            };
            if mode != ClientAuth::Off && client_ca_file.is_none() {
                return Err(at(
                    v.span(),
                    format!(
                        "client_auth = {:?} needs client_ca_file (the CA client certificates are checked against)",
                        v.get_ref()
                    ),
                ));
            }
            mode
        }
    };
    Ok(AdminTls {
        certificate,
        client_ca_file,
        client_auth,
    })
}

/// The tokens of `CACHEGATE_ADMIN_TOKENS` or of the file
/// `CACHEGATE_ADMIN_TOKENS_FILE` names (one of them; both is an error).
/// An error names the variable and the entry's position, never its text.
fn tokens_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<AdminToken>, String> {
    let (text, origin) = match (env(TOKENS_ENV), env(TOKENS_FILE_ENV)) {
        (None, None) => return Ok(Vec::new()),
        (Some(_), Some(_)) => return Err(format!("set {TOKENS_ENV} or {TOKENS_FILE_ENV}, not both")),
        (Some(text), None) => (text, format!("environment variable {TOKENS_ENV}")),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path.trim())
                .map_err(|e| format!("{TOKENS_FILE_ENV}: cannot read {:?}: {e}", path.trim()))?;
            (text, format!("{TOKENS_FILE_ENV} file {:?}", path.trim()))
        }
    };
    parse_token_list(&text).map_err(|e| format!("{origin}: {e}"))
}

/// `name:sha256hex:scope+scope` entries separated by commas or line ends;
/// blank lines and lines starting with `#` are skipped.
pub fn parse_token_list(text: &str) -> Result<Vec<AdminToken>, String> {
    let entries = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty());
    let mut tokens: Vec<AdminToken> = Vec::new();
    for (i, entry) in entries.enumerate() {
        let n = i + 1;
        let syntax = "expected name:sha256:scopes, e.g. ops:<64 hex digits from `cachegate token`>:read+purge+inspect";
        let mut parts = entry.split(':');
        let (Some(name), Some(hash), Some(scope_list), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("entry {n}: {syntax}"));
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(format!(
                "entry {n}: the name must be letters, digits, '-', '_' or '.'; {syntax}"
            ));
        }
        let sha256 = hex::decode(hash.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                format!("entry {n} ({name}): the hash must be 64 hex digits (the sha256 `cachegate token` prints), not the token itself")
            })?;
        let mut scopes = Vec::new();
        for s in scope_list.split('+').map(str::trim) {
            scopes.push(match s {
                "read" => AdminScope::Read,
                "purge" => AdminScope::Purge,
                "inspect" => AdminScope::Inspect,
                other => {
                    return Err(format!(
                    "entry {n} ({name}): unknown admin scope {other:?}; expected read, purge or inspect joined by '+'"
                ))
                }
            });
        }
        if tokens.iter().any(|t| t.name == name) {
            return Err(format!("entry {n}: the name {name:?} is used twice"));
        }
        tokens.push(AdminToken {
            name: name.to_string(),
            sha256,
            scopes,
        });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    #[test]
    fn token_list_reads_names_hashes_and_scopes() {
        let text = format!("# ops and ci\nops:{HASH}:read+purge+inspect\n\nci:{HASH}:read, other:{HASH}:purge\n");
        let tokens = parse_token_list(&text).unwrap();
        let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["ops", "ci", "other"]);
        assert_eq!(tokens[0].sha256, hash_token("password"));
        assert_eq!(
            tokens[0].scopes,
            [AdminScope::Read, AdminScope::Purge, AdminScope::Inspect]
        );
        assert_eq!(tokens[2].scopes, [AdminScope::Purge]);
    }

    #[test]
    fn token_list_errors_never_show_the_value() {
        for (text, says) in [
            ("ops:s3cret-token:read".to_string(), "64 hex digits"),
            (format!("ops:{HASH}:write"), "unknown admin scope"),
            (format!("ops:{HASH}"), "expected name:sha256:scopes"),
            (format!("ops:{HASH}:read,ops:{HASH}:read"), "used twice"),
            (format!("o p:{HASH}:read"), "the name must be"),
        ] {
            let err = parse_token_list(&text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
            assert!(!err.contains("s3cret") && !err.contains(HASH), "{err}");
        }
    }

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<crate::config::Config, String> {
        let env = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        crate::config::Config::from_toml(text, "proxy.toml", &env, &crate::config::Overrides::default())
            .map_err(|e| e.to_string())
    }

    const FILE_TOKEN: &str = "[[admin.tokens]]\nname = \"ops\"\nsha256 = \"5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\"\nscopes = [\"read\"]\n";

    #[test]
    fn env_tokens_are_merged_with_the_file_and_the_listener_comes_from_the_env() {
        let ci = format!("ci:{}:read+purge", hex::encode(hash_token("ci-secret")));
        let config = load(FILE_TOKEN, &[(TOKENS_ENV, ci.as_str()), (LISTEN_ENV, "127.0.0.1:9191")]).unwrap();
        let names: Vec<&str> = config.admin.tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["ops", "ci"]);
        assert_eq!(config.admin.tokens[1].sha256, hash_token("ci-secret"));
        assert_eq!(config.admin.listen, Some("127.0.0.1:9191".parse().unwrap()));

        // The same from a secret file.
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("admin_tokens");
        std::fs::write(&secret, format!("# made by cachegate token\n{ci}\n")).unwrap();
        let path = secret.display().to_string();
        let config = load("", &[(TOKENS_FILE_ENV, path.as_str())]).unwrap();
        assert_eq!(config.admin.tokens.len(), 1);
        assert_eq!(config.admin.tokens[0].scopes, [AdminScope::Read, AdminScope::Purge]);
    }

    #[test]
    fn bad_env_tokens_are_config_errors_that_hide_the_value() {
        let ops = format!("ops:{HASH}:read");
        let err = load(FILE_TOKEN, &[(TOKENS_ENV, ops.as_str())]).unwrap_err();
        assert!(err.contains("both in the file and in the environment"), "{err}");
        let err = load("", &[(TOKENS_ENV, ops.as_str()), (TOKENS_FILE_ENV, "/x")]).unwrap_err();
        assert!(err.contains("not both"), "{err}");
        let err = load("", &[(TOKENS_ENV, "ops:hunter2:read")]).unwrap_err();
        assert!(err.contains(TOKENS_ENV) && !err.contains("hunter2"), "{err}");
        let err = load("", &[(TOKENS_FILE_ENV, "/nonexistent/admin_tokens")]).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        let err = load("", &[(LISTEN_ENV, "nowhere")]).unwrap_err();
        assert!(err.contains(LISTEN_ENV), "{err}");
    }
}
