//! The resolved configuration: every value the rest of cachegate reads,
//! with defaults, environment and flags already applied (`resolve.rs`
//! makes it from the file).

use super::admin::AdminConfig;
use crate::rules::RuleSet;
pub use crate::rules::{Scope, TtlMode, When};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The product edition; it gates admin features and picks the default Redis DB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Edition {
    Community,
    Business,
    Enterprise,
}

impl Edition {
    pub fn as_str(self) -> &'static str {
        match self {
            Edition::Community => "community",
            Edition::Business => "business",
            Edition::Enterprise => "enterprise",
        }
    }

    /// Each edition keeps its data in its own Redis DB by default, as the
    /// reference deployment does.
    pub fn default_db(self) -> u8 {
        match self {
            Edition::Community => 0,
            Edition::Business => 1,
            Edition::Enterprise => 2,
        }
    }

    pub(super) fn parse(s: &str) -> Option<Edition> {
        match s {
            "community" => Some(Edition::Community),
            "business" => Some(Edition::Business),
            "enterprise" => Some(Edition::Enterprise),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Redis,
    Memory,
}

/// Command-line values that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub backend: Option<String>,
    pub redis_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    /// Request headers dropped on arrival: neither a key nor the backend
    /// sees them (headers that rewrite the URL or the method behind a cache).
    pub strip_request_headers: Vec<http::HeaderName>,
    /// Keep request headers whose names contain `_` (nginx's
    /// `underscores_in_headers`); off, they are dropped on arrival.
    pub underscores_in_headers: bool,
    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish
    /// before the process exits anyway.
    pub shutdown_timeout: Duration,
    /// HTTP/2 from clients: over TLS when ALPN picks `h2` (`http2`), and
    /// in cleartext with prior knowledge (`h2c`).
    pub http2: bool,
    pub h2c: bool,
    pub h2_max_concurrent_streams: u32,
    /// `[server.tls]`: the listener speaks TLS with this certificate.
    pub tls: Option<ServerTls>,
}

/// The listener's certificate chain and key (PEM files).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

/// Headers that make some backends serve another URL or method than the
/// one the cache keyed on: cache poisoning. See SECURITY.md.
pub const DEFAULT_STRIPPED: [&str; 6] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "forwarded",
];

#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// The backend's base URL (scheme, authority and an optional path prefix).
    pub url: http::Uri,
    pub connect_timeout: Duration,
    /// How long the whole response head may take.
    pub timeout: Duration,
    pub pool_idle_per_host: usize,
    pub pool_idle_timeout: Duration,
    /// Whether `X-Forwarded-For` / `-Proto` / `-Host` are added. Off, a
    /// client's `X-Forwarded-Host` is still dropped (it could steer links).
    pub forwarded_headers: bool,
    /// Forward the client's `Host` (and make it part of every entry's
    /// identity) instead of the backend URL's authority.
    pub preserve_host: bool,
    /// Tunnel `Connection: upgrade` requests (WebSocket) to the backend;
    /// off, their upgrade headers are dropped like other hop-by-hop ones.
    pub upgrades: bool,
    /// A tunnel with no byte either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// TLS to an `https://` backend (`None` for `http://`).
    pub tls: Option<super::ClientTls>,
    /// Speak HTTP/2 to an `https://` backend that offers it (ALPN).
    pub http2: bool,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The connection URL without the database part; see `db`. For a
    /// cluster or Sentinel, the URL as given (for display); `topology`
    /// holds what it says.
    pub url: String,
    /// Always 0 on a cluster (see `cache.key_prefix` for the editions).
    pub db: u8,
    pub password: Option<String>,
    pub pool_size: usize,
    /// Single server, cluster or Sentinel.
    pub topology: super::RedisTopology,
    /// ACL user for a cluster or Sentinel URL (a single server's URL
    /// carries its own).
    pub username: Option<String>,
    /// TLS settings when the connection uses TLS.
    pub tls: Option<super::RedisTls>,
    /// AUTH for the sentinels (not the data nodes); none when unset.
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
}

/// `[access_log]`: one line per request.
#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    pub enabled: bool,
    pub json: bool,
    /// A file to append to; `None` is standard output.
    pub path: Option<std::path::PathBuf>,
}

/// The in-process tier in front of Redis.
#[derive(Debug, Clone)]
pub struct TierConfig {
    pub enabled: bool,
    pub max_bytes: u64,
    /// What a read through another instance may see after a write.
    pub consistency: Consistency,
    /// How long one heartbeat round trip lets the tier serve
    /// (`src/store/coherence.rs`).
    pub lease: Duration,
}

/// `[tier] consistency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Leases and fences: no instance serves, from its tier, an entry from
    /// before a purge whose write was answered.
    ReadYourWrites,
    /// Tier entries are dropped when Redis's invalidation push arrives; a
    /// read through another instance may see the old entry until then.
    Eventual,
}

#[derive(Debug, Clone)]
pub struct MemoryConfig {
    pub max_entries: u64,
    pub max_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub default_ttl: Duration,
    pub key_prefix: String,
    pub max_body_bytes: usize,
    pub max_key_bytes: usize,
    /// Lower-case names of the request headers that identify a caller.
    pub credential_headers: Vec<http::HeaderName>,
    /// What a request gets that carries a header whose name looks like a
    /// credential but is neither listed above nor in `non_credential_headers`.
    pub suspect_credentials: super::SuspectCredentials,
    /// Header names that look like credentials but are not.
    pub non_credential_headers: Vec<http::HeaderName>,
    /// `Origin` is part of the variant in shared scopes (an implicit
    /// `Vary: Origin`), so CORS answers never cross origins.
    pub vary_on_origin: bool,
    pub scope_secret: Option<String>,
    pub store_timeout: Duration,
    /// How long a miss waits for a concurrent fill of the same entry.
    pub coalesce_timeout: Duration,
    /// `credential_max_ttl`: how long a credential-scoped entry may be
    /// served without the backend at most (`None`: no cap).
    pub credential_max_ttl: Option<Duration>,
    /// `purge_journal`: where purges not yet applied are kept across a
    /// crash or restart (`None`: off, or nothing to keep with a memory store).
    pub purge_journal: Option<std::path::PathBuf>,
    /// `targeted_cache_control`: the targeted fields (RFC 9213) this cache
    /// obeys instead of `Cache-Control`, in order of precedence.
    pub targeted_cache_control: Vec<http::HeaderName>,
    /// Whether those fields are passed on to clients (RFC 9213 §2.1: yes).
    pub forward_targeted_cache_control: bool,
    /// Whether the client's `Cache-Control` / `Pragma` are obeyed.
    pub honour_request_directives: bool,
    /// Which answers show the key they were stored under (`X-Cache-Key`).
    pub debug_key_header: DebugKeyHeader,
}

/// `[cache] debug_key_header`: which answers of a rule carry `X-Cache-Key`
/// (the logical key, never the scope field that identifies a caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugKeyHeader {
    /// None (the default).
    Off,
    /// Answers from a credential scope only (one caller's own entries).
    Private,
    /// Every answer, shared scopes (`anon`, `public`) included.
    All,
}

/// Where the values an operator most often wonders about came from
/// ("flag --listen", "environment REDIS_DB", "proxy.toml:12", "default"):
/// the start-up line and `check` print them, so a `REDIS_DB` inherited from
/// the backend's shell does not pick another DB silently.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    pub listen: String,
    pub backend: String,
    pub redis_url: String,
    pub redis_db: String,
}

/// The whole resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// What is valid but probably not meant (no backend, no admin token,
    /// no rule): `check` prints these, `serve` logs them.
    pub warnings: Vec<String>,
    /// Where the config came from (a file name, or `<inline>`).
    pub source: String,
    /// Where the listen address, backend and Redis settings came from.
    pub origins: Origins,
    pub edition: Edition,
    pub server: ServerConfig,
    pub backend: BackendConfig,
    pub store: StoreKind,
    pub redis: Option<RedisConfig>,
    pub memory: MemoryConfig,
    /// Used with the Redis store only.
    pub tier: TierConfig,
    pub access_log: AccessLogConfig,
    /// `[log] level`: the log filter (RUST_LOG syntax) when neither
    /// `--log` nor `RUST_LOG` sets one; applied again on reload.
    pub log_level: Option<String>,
    pub cache: CacheConfig,
    pub admin: AdminConfig,
    pub rules: Arc<RuleSet>,
    /// `[warm]`: cache warming at start, and `cachegate warm`'s defaults.
    pub warm: super::warm::WarmConfig,
    /// `[health]`: what readiness requires, the backend probe.
    pub health: super::health::HealthConfig,
    /// `[compression]`: one stored coding per entry, decoded for clients
    /// that do not accept it.
    pub compression: super::compression::CompressionConfig,
}
