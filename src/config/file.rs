//! The raw shape of `proxy.toml`, as serde reads it, with spans kept for the
//! values that are validated after parsing. Unknown keys are errors so that
//! a typo never silently falls back to a default.

use crate::rules::{RawInvalidate, RawRule};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub edition: Option<Spanned<String>>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub backend: RawBackend,
    #[serde(default)]
    pub store: RawStore,
    pub redis: Option<RawRedis>,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub tier: RawTier,
    #[serde(default)]
    pub access_log: RawAccessLog,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub warm: super::warm::RawWarm,
    #[serde(default)]
    pub health: super::health::RawHealth,
    #[serde(default)]
    pub compression: super::compression::RawCompression,
    #[serde(default)]
    pub rule: Vec<RawRule>,
    #[serde(default)]
    pub invalidate: Vec<RawInvalidate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Spanned<String>>,
    pub max_uri_bytes: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub header_read_timeout_ms: Option<u64>,
    pub strip_request_headers: Option<Vec<String>>,
    pub underscores_in_headers: Option<bool>,
    pub shutdown_timeout_ms: Option<u64>,
    pub http2: Option<bool>,
    pub h2c: Option<bool>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub tls: Option<RawServerTls>,
}

/// `[server.tls]`: the listener's certificate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub cert_file: Spanned<String>,
    pub key_file: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub url: Option<Spanned<String>>,
    pub connect_timeout_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub pool_idle_per_host: Option<usize>,
    pub pool_idle_timeout_ms: Option<u64>,
    pub forwarded_headers: Option<bool>,
    pub preserve_host: Option<bool>,
    pub upgrades: Option<bool>,
    pub tunnel_idle_timeout_ms: Option<u64>,
    pub tls_ca_file: Option<Spanned<String>>,
    pub tls_cert_file: Option<Spanned<String>>,
    pub tls_key_file: Option<Spanned<String>>,
    pub tls_insecure_skip_verify: Option<Spanned<bool>>,
    pub http2: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: Option<Spanned<String>>,
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub memory: RawMemory,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemory {
    pub max_entries: Option<u64>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Option<Spanned<String>>,
    pub db: Option<Spanned<i64>>,
    pub default_ttl: Option<Spanned<i64>>,
    pub key_prefix: Option<Spanned<String>>,
    pub pool_size: Option<usize>,
    /// Redis Cluster seed nodes (`host:port`), instead of a URL.
    pub cluster: Option<Spanned<Vec<String>>>,
    pub tls: Option<Spanned<bool>>,
    pub tls_ca_file: Option<Spanned<String>>,
    pub tls_cert_file: Option<Spanned<String>>,
    pub tls_key_file: Option<Spanned<String>>,
    pub tls_insecure_skip_verify: Option<Spanned<bool>>,
    /// Credentials for the sentinels themselves (none by default).
    pub sentinel_username: Option<Spanned<String>>,
    pub sentinel_password: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub max_body_bytes: Option<usize>,
    pub credential_headers: Option<Vec<String>>,
    pub suspect_credential_headers: Option<Spanned<String>>,
    pub non_credential_headers: Option<Spanned<Vec<String>>>,
    pub vary_on_origin: Option<bool>,
    pub scope_secret: Option<String>,
    pub max_key_bytes: Option<usize>,
    pub coalesce_timeout_ms: Option<u64>,
    pub credential_max_ttl: Option<u64>,
    pub purge_journal: Option<Spanned<String>>,
    /// Targeted cache-control fields (RFC 9213), first present and valid wins.
    pub targeted_cache_control: Option<Spanned<Vec<String>>>,
    pub forward_targeted_cache_control: Option<bool>,
    /// `"honour"` (default) or `"ignore"` the client's cache directives.
    pub request_directives: Option<Spanned<String>>,
    /// `"off"` (default), `"private"` or `"all"`: answers carry `X-Cache-Key`.
    pub debug_key_header: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub prefix: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
    pub metrics_require_token: Option<bool>,
    /// The method that purges one URL on the main listener; "" disables.
    pub purge_method: Option<Spanned<String>>,
    #[serde(default)]
    pub tokens: Vec<RawToken>,
    pub tls: Option<RawAdminTls>,
}

/// `[admin.tls]`: the admin listener's certificate, and the CA its
/// clients' certificates must be signed by.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminTls {
    pub cert_file: Spanned<String>,
    pub key_file: Spanned<String>,
    pub client_ca_file: Option<Spanned<String>>,
    /// "required", "optional" or "off".
    pub client_auth: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub name: Spanned<String>,
    pub sha256: Option<Spanned<String>>,
    pub token_env: Option<Spanned<String>>,
    pub scopes: Spanned<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub enabled: Option<bool>,
    pub format: Option<Spanned<String>>,
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub enabled: Option<bool>,
    pub max_bytes: Option<u64>,
    pub consistency: Option<Spanned<String>>,
    pub lease_ms: Option<Spanned<u64>>,
}
