//! Turns the raw file into a resolved [`Config`]: defaults, environment
//! overrides, command-line overrides and validation, in that order of
//! precedence (flag > environment > file > built-in default).

use super::error::ConfigError;
use super::file::{RawConfig, RawInvalidate, RawRule, RawTtl};
use crate::rules::{RuleError, RuleSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

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

    fn parse(s: &str) -> Option<Edition> {
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

/// Who may share a cached response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Entries are kept apart per credential (Authorization / Cookie).
    Credential,
    /// One entry serves every caller.
    Public,
}

/// When an invalidation rule purges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Only after a 2xx answer.
    Success,
    /// After any answer, a failed or timed-out backend included (the
    /// default: a write whose outcome is unknown may have committed).
    Always,
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
}

/// Where a rule's freshness comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlMode {
    /// The operator's fixed TTL, whatever the backend says about freshness.
    Fixed(Duration),
    /// The backend's `s-maxage` / `max-age` / `Expires`.
    Origin,
}

/// A `[[rule]]` as written, with the spans rule compilation reports errors at.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub name: String,
    pub methods: Vec<String>,
    pub methods_span: Range<usize>,
    pub path: String,
    pub path_span: Range<usize>,
    pub key: String,
    pub key_span: Range<usize>,
    /// `None`: the `[redis] default_ttl`.
    pub ttl: Option<TtlMode>,
    /// Cap on an origin-given lifetime.
    pub max_ttl: Option<Duration>,
    /// With `ttl = "origin"`: the lifetime when the origin gives none
    /// (otherwise such answers are not stored).
    pub default_ttl: Option<Duration>,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub statuses: Vec<u16>,
    /// Per-status TTLs (negative caching, e.g. 404 for 30 s).
    pub ttl_by_status: Vec<(u16, Duration)>,
    pub scope: Scope,
    pub max_body_bytes: Option<usize>,
    /// Tag templates attached to every entry the rule stores.
    pub tags: Vec<(String, Range<usize>)>,
    /// What a request repeating an input the key reads gets.
    pub duplicate_inputs: super::DuplicateInputs,
}

/// An `[[invalidate]]` rule as written.
#[derive(Debug, Clone)]
pub struct InvalidateConfig {
    pub name: String,
    pub methods: Vec<String>,
    pub methods_span: Range<usize>,
    pub path: String,
    pub path_span: Range<usize>,
    pub keys: Vec<(String, Range<usize>)>,
    pub patterns: Vec<(String, Range<usize>)>,
    pub tags: Vec<(String, Range<usize>)>,
    pub when: When,
    /// Mark entries stale instead of removing them.
    pub soft: bool,
    /// Also purge every entry of the calling credential (a logout).
    pub purge_credential: bool,
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
    pub tokens: Vec<AdminToken>,
}

/// The whole resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// What is valid but probably not meant (no backend, no admin token,
    /// no rule): `check` prints these, `serve` logs them.
    pub warnings: Vec<String>,
    /// Where the config came from (a file name, or `<inline>`).
    pub source: String,
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
}

pub fn process_env() -> impl Fn(&str) -> Option<String> {
    |name| std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub(super) fn resolve(
    raw: RawConfig,
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let at = |span: Range<usize>, msg: String| ConfigError::at(file, text, span, msg);
    let general = |msg: String| ConfigError::general(file, msg);

    let edition = match &raw.edition {
        None => Edition::Community,
        Some(e) => Edition::parse(e.get_ref()).ok_or_else(|| {
            at(
                e.span(),
                format!(
                    "unknown edition {:?}; expected community, business or enterprise",
                    e.get_ref()
                ),
            )
        })?,
    };

    // [server]
    let listen_src = pick(
        overrides.listen.clone(),
        "--listen",
        env("CACHEGATE_LISTEN"),
        "CACHEGATE_LISTEN",
        raw.server.listen.as_ref(),
    );
    let listen = match listen_src {
        None => SocketAddr::from(([0, 0, 0, 0], 8080)),
        Some(src) => src.parse(
            |s| s.parse::<SocketAddr>().ok(),
            "a socket address such as 0.0.0.0:8080",
            &at,
            &general,
        )?,
    };
    let mut strip_request_headers = Vec::new();
    let names = raw
        .server
        .strip_request_headers
        .unwrap_or_else(|| DEFAULT_STRIPPED.iter().map(|s| s.to_string()).collect());
    for name in names {
        strip_request_headers.push(
            http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| general(format!("[server] strip_request_headers: {name:?} is not a header name")))?,
        );
    }
    let server = ServerConfig {
        listen,
        strip_request_headers,
        underscores_in_headers: raw.server.underscores_in_headers.unwrap_or(false),
        max_uri_bytes: raw.server.max_uri_bytes.unwrap_or(8 * 1024),
        max_header_bytes: raw.server.max_header_bytes.unwrap_or(32 * 1024),
        max_headers: raw.server.max_headers.unwrap_or(100),
        header_read_timeout: Duration::from_millis(raw.server.header_read_timeout_ms.unwrap_or(10_000)),
        shutdown_timeout: Duration::from_millis(raw.server.shutdown_timeout_ms.unwrap_or(30_000)),
    };

    // [backend]
    let backend_src = pick(
        overrides.backend.clone(),
        "--backend",
        env("CACHEGATE_BACKEND"),
        "CACHEGATE_BACKEND",
        raw.backend.url.as_ref(),
    );
    let mut warnings = Vec::new();
    if backend_src.is_none() {
        warnings.push(
            "no backend URL ([backend] url, CACHEGATE_BACKEND or --backend): forwarding to the default http://127.0.0.1:8000"
                .to_string(),
        );
    }
    let backend_url = match backend_src {
        None => "http://127.0.0.1:8000"
            .parse::<http::Uri>()
            .map_err(|e| general(e.to_string()))?,
        Some(src) => src.parse(
            parse_backend_url,
            "an http:// URL such as http://127.0.0.1:8000",
            &at,
            &general,
        )?,
    };
    let backend = BackendConfig {
        url: backend_url,
        connect_timeout: Duration::from_millis(raw.backend.connect_timeout_ms.unwrap_or(1000)),
        timeout: Duration::from_millis(raw.backend.timeout_ms.unwrap_or(30_000)),
        pool_idle_per_host: raw.backend.pool_idle_per_host.unwrap_or(256),
        // Below uvicorn's 5 s keep-alive: a connection the backend is closing is
        // not handed to a request (see proxy/keep_alive.rs).
        pool_idle_timeout: Duration::from_millis(raw.backend.pool_idle_timeout_ms.unwrap_or(4_000)),
        forwarded_headers: raw.backend.forwarded_headers.unwrap_or(true),
        preserve_host: raw.backend.preserve_host.unwrap_or(false),
    };

    // [redis] and the environment variables of the reference deployment.
    let raw_redis = raw.redis.unwrap_or_default();
    let redis_url = resolve_redis_url(&raw_redis, env, overrides, &at, &general)?;
    let default_ttl = match env("CACHE_TTL") {
        Some(v) => v.parse::<u64>().ok().filter(|t| *t > 0).ok_or_else(|| {
            general(format!(
                "environment variable CACHE_TTL: expected a positive number of seconds, got {v:?}"
            ))
        })?,
        None => match &raw_redis.default_ttl {
            Some(t) => positive(t, "default_ttl", &at)?,
            None => 300,
        },
    };

    let store = match &raw.store.kind {
        Some(k) => match k.get_ref().as_str() {
            "redis" => StoreKind::Redis,
            "memory" => StoreKind::Memory,
            other => {
                return Err(at(
                    k.span(),
                    format!("unknown store kind {other:?}; expected redis or memory"),
                ))
            }
        },
        // Redis when one is configured anywhere, else the embedded store.
        None if redis_url.is_some() => StoreKind::Redis,
        None => StoreKind::Memory,
    };

    let redis = match store {
        StoreKind::Memory => None,
        StoreKind::Redis => {
            let parsed = match redis_url {
                Some(u) => u,
                None => super::redis_url::parse_redis_url("redis://127.0.0.1:6379")
                    .ok_or_else(|| general("the default Redis URL does not parse".into()))?,
            };
            let tls = super::redis_url::resolve_tls(&raw_redis, parsed.tls, &at)?;
            let sentinel = matches!(parsed.topology, super::RedisTopology::Sentinel { .. });
            for s in [&raw_redis.sentinel_username, &raw_redis.sentinel_password]
                .into_iter()
                .flatten()
            {
                if !sentinel {
                    return Err(at(
                        s.span(),
                        "sentinel_username / sentinel_password need a redis-sentinel:// URL".into(),
                    ));
                }
            }
            let url_db = parsed.db;
            let db = match env("REDIS_DB") {
                Some(v) => Some(v.parse::<u8>().map_err(|_| {
                    general(format!(
                        "environment variable REDIS_DB: expected a database number 0-255, got {v:?}"
                    ))
                })?),
                None => match &raw_redis.db {
                    Some(d) => Some(
                        u8::try_from(*d.get_ref())
                            .map_err(|_| at(d.span(), "db must be a database number 0-255".into()))?,
                    ),
                    None => url_db,
                },
            };
            let db = db.unwrap_or(edition.default_db());
            let cluster = parsed.topology.is_cluster();
            Some(RedisConfig {
                url: parsed.url,
                // A cluster has DB 0 only; `db` (given or the edition's)
                // becomes a key prefix below instead.
                db: if cluster { 0 } else { db },
                password: env("REDIS_PASSWORD").or(if parsed.topology == super::RedisTopology::Single {
                    None
                } else {
                    parsed.password
                }),
                pool_size: raw_redis.pool_size.unwrap_or(4).max(1),
                topology: parsed.topology,
                username: parsed.username,
                tls,
                sentinel_username: raw_redis.sentinel_username.as_ref().map(|s| s.get_ref().clone()),
                sentinel_password: raw_redis.sentinel_password.as_ref().map(|s| s.get_ref().clone()),
            })
            .map(|r| (r, cluster.then_some(db)))
        }
    };

    let (redis, cluster_db) = match redis {
        Some((r, db)) => (Some(r), db),
        None => (None, None),
    };
    let mut key_prefix = raw_redis.key_prefix.map(|p| p.into_inner()).unwrap_or_default();
    // On a cluster the editions cannot use DBs of their own: a DB other
    // than 0 (configured, or the edition's default) becomes `db<N>:` at
    // the end of the key prefix, so editions sharing a cluster stay apart.
    if let Some(db) = cluster_db.filter(|db| *db != 0) {
        key_prefix.push_str(&format!("db{db}:"));
    }
    let mut credential_headers = Vec::new();
    for name in raw
        .cache
        .credential_headers
        .unwrap_or_else(|| super::inputs::DEFAULT_CREDENTIAL_HEADERS.map(String::from).to_vec())
    {
        let h = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| general(format!("[cache] credential_headers: {name:?} is not a header name")))?;
        credential_headers.push(h);
    }
    let purge_journal = purge_journal(raw.cache.purge_journal.as_ref(), redis.as_ref(), &key_prefix, listen);
    let cache = CacheConfig {
        default_ttl: Duration::from_secs(default_ttl),
        key_prefix,
        max_body_bytes: raw.cache.max_body_bytes.unwrap_or(1024 * 1024),
        max_key_bytes: raw.cache.max_key_bytes.unwrap_or(1024),
        credential_headers,
        suspect_credentials: super::inputs::suspect_credentials(&raw.cache.suspect_credential_headers, &at)?,
        non_credential_headers: super::inputs::header_names(&raw.cache.non_credential_headers, &at)?,
        vary_on_origin: raw.cache.vary_on_origin.unwrap_or(true),
        scope_secret: env("CACHEGATE_SCOPE_SECRET").or(raw.cache.scope_secret),
        store_timeout: Duration::from_millis(raw.store.timeout_ms.unwrap_or(100)),
        coalesce_timeout: Duration::from_millis(raw.cache.coalesce_timeout_ms.unwrap_or(5000)),
        credential_max_ttl: raw.cache.credential_max_ttl.map(Duration::from_secs),
        purge_journal,
    };
    let memory = MemoryConfig {
        max_entries: raw.store.memory.max_entries.unwrap_or(100_000),
        max_bytes: raw.store.memory.max_bytes.unwrap_or(256 * 1024 * 1024),
    };

    let admin = admin_config(raw.admin, env, &at)?;
    let tier = TierConfig {
        enabled: raw.tier.enabled.unwrap_or(true),
        max_bytes: raw.tier.max_bytes.unwrap_or(64 * 1024 * 1024),
        consistency: match &raw.tier.consistency {
            None => Consistency::ReadYourWrites,
            Some(c) => match c.get_ref().as_str() {
                "read-your-writes" => Consistency::ReadYourWrites,
                "eventual" => Consistency::Eventual,
                other => {
                    return Err(at(
                        c.span(),
                        format!("[tier] consistency must be \"read-your-writes\" or \"eventual\", got {other:?}"),
                    ))
                }
            },
        },
        lease: match &raw.tier.lease_ms {
            None => Duration::from_millis(100),
            Some(l) if *l.get_ref() == 0 || *l.get_ref() > 60_000 => {
                return Err(at(
                    l.span(),
                    format!("[tier] lease_ms must be 1 to 60000, got {}", l.get_ref()),
                ))
            }
            Some(l) => Duration::from_millis(*l.get_ref()),
        },
    };
    let access_log = AccessLogConfig {
        enabled: raw.access_log.enabled.unwrap_or(true),
        json: match &raw.access_log.format {
            None => false,
            Some(f) => match f.get_ref().as_str() {
                "text" => false,
                "json" => true,
                other => {
                    return Err(at(
                        f.span(),
                        format!("access_log format must be \"text\" or \"json\", got {other:?}"),
                    ))
                }
            },
        },
        path: raw
            .access_log
            .path
            .filter(|p| p != "-" && !p.is_empty())
            .map(std::path::PathBuf::from),
    };
    let log_level = match raw.log.level {
        None => None,
        Some(level) => match tracing_subscriber::EnvFilter::try_new(level.get_ref()) {
            Ok(_) => Some(level.get_ref().clone()),
            Err(e) => {
                return Err(at(
                    level.span(),
                    format!("invalid log level {:?}: {e}", level.get_ref()),
                ))
            }
        },
    };

    let warm = super::warm::resolve(raw.warm, file, env, &at)?;

    let mut rules = Vec::new();
    for r in raw.rule {
        rules.push(rule_config(r, &at)?);
    }
    let mut invalidations = Vec::new();
    for i in raw.invalidate {
        invalidations.push(invalidate_config(i, &at)?);
    }
    let compiled =
        RuleSet::compile(&rules, &invalidations, &cache).map_err(|RuleError { span, message }| at(span, message))?;
    super::inputs::check_dropped_key_headers(&rules, &compiled, server.underscores_in_headers, &at)?;
    let rules = compiled;

    if admin.tokens.is_empty() {
        warnings.push(format!(
            "no admin tokens ([[admin.tokens]]): every admin route under {} answers 401; `cachegate token` makes one",
            admin.prefix
        ));
    }
    if rules.cache.is_empty() {
        warnings.push("no [[rule]]: every request passes through uncached".to_string());
    }
    Ok(Config {
        warnings,
        source: file.to_string(),
        edition,
        server,
        backend,
        store,
        redis,
        memory,
        tier,
        access_log,
        log_level,
        cache,
        admin,
        rules: Arc::new(rules),
        warm,
    })
}

fn admin_config(
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
                Some(token) => crate::admin::hash_token(&token),
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
    Ok(AdminConfig {
        prefix,
        listen,
        metrics_require_token: raw.metrics_require_token.unwrap_or(false),
        tokens,
    })
}

/// A value with where it came from, for error messages.
enum Source<'a> {
    Flag(String, &'static str),
    Env(String, &'static str),
    File(&'a Spanned<String>),
}

impl Source<'_> {
    fn parse<T>(
        &self,
        f: impl Fn(&str) -> Option<T>,
        expected: &str,
        at: &dyn Fn(Range<usize>, String) -> ConfigError,
        general: &dyn Fn(String) -> ConfigError,
    ) -> Result<T, ConfigError> {
        match self {
            Source::Flag(v, name) => f(v).ok_or_else(|| general(format!("{name}: expected {expected}, got {v:?}"))),
            Source::Env(v, name) => {
                f(v).ok_or_else(|| general(format!("environment variable {name}: expected {expected}, got {v:?}")))
            }
            Source::File(s) => {
                f(s.get_ref()).ok_or_else(|| at(s.span(), format!("expected {expected}, got {:?}", s.get_ref())))
            }
        }
    }
}

fn pick<'a>(
    flag: Option<String>,
    flag_name: &'static str,
    env: Option<String>,
    env_name: &'static str,
    file: Option<&'a Spanned<String>>,
) -> Option<Source<'a>> {
    flag.map(|v| Source::Flag(v, flag_name))
        .or_else(|| env.map(|v| Source::Env(v, env_name)))
        .or_else(|| file.map(Source::File))
}

fn parse_backend_url(s: &str) -> Option<http::Uri> {
    let uri: http::Uri = s.parse().ok()?;
    (uri.scheme_str() == Some("http") && uri.authority().is_some() && uri.query().is_none()).then_some(uri)
}

/// The Redis URL from flag, `REDIS_URL`, `REDIS_HOST`/`REDIS_PORT` or the
/// file, split into the URL without its database path and that database.
/// `[cache] purge_journal`: the path given (`""` turns the journal off), or,
/// with Redis, a file in the temporary directory named after what this
/// instance is (its address, its Redis and key prefix), so a restart finds
/// the journal of the run before it.
fn purge_journal(
    given: Option<&toml::Spanned<String>>,
    redis: Option<&RedisConfig>,
    key_prefix: &str,
    listen: SocketAddr,
) -> Option<std::path::PathBuf> {
    let redis = redis?;
    match given.map(|g| g.get_ref().as_str()) {
        Some("") => None,
        Some(path) => Some(std::path::PathBuf::from(path)),
        None => {
            let identity = format!("{listen}|{}|{}|{key_prefix}", redis.url, redis.db);
            let hash = identity.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            Some(std::env::temp_dir().join(format!("cachegate-purges-{hash:016x}.json")))
        }
    }
}

fn resolve_redis_url(
    raw: &super::file::RawRedis,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &Overrides,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
    general: &dyn Fn(String) -> ConfigError,
) -> Result<Option<super::redis_url::RedisUrl>, ConfigError> {
    let host_port = match (env("REDIS_HOST"), env("REDIS_PORT")) {
        (None, None) => None,
        (host, port) => Some(format!(
            "redis://{}:{}",
            host.unwrap_or_else(|| "127.0.0.1".into()),
            port.unwrap_or_else(|| "6379".into())
        )),
    };
    let src = pick(
        overrides.redis_url.clone(),
        "--redis-url",
        env("REDIS_URL").or(host_port),
        "REDIS_URL (or REDIS_HOST/REDIS_PORT)",
        raw.url.as_ref(),
    );
    if let (Some(_), Some(url)) = (&raw.cluster, &raw.url) {
        return Err(at(
            url.span(),
            "[redis] has both url and cluster: give one of them".into(),
        ));
    }
    match src {
        // The file's `cluster = [...]` list, when nothing names a URL.
        None => match &raw.cluster {
            None => Ok(None),
            Some(list) => {
                let nodes =
                    super::redis_url::parse_nodes(list.get_ref().iter().map(String::as_str)).ok_or_else(|| {
                        at(
                            list.span(),
                            format!(
                                "cluster must list host:port seed nodes such as [\"10.0.0.1:7000\"], got {:?}",
                                list.get_ref()
                            ),
                        )
                    })?;
                Ok(Some(super::redis_url::RedisUrl {
                    url: format!("redis-cluster://{}", list.get_ref().join(",")),
                    db: None,
                    topology: super::RedisTopology::Cluster { nodes },
                    tls: false,
                    username: None,
                    password: None,
                }))
            }
        },
        Some(src) => src
            .parse(
                super::redis_url::parse_redis_url,
                "a redis://, rediss://, redis[s]-cluster://h1:p1,h2:p2 or redis[s]-sentinel://h1:p1,h2:p2/service URL",
                at,
                general,
            )
            .map(Some),
    }
}

fn positive(
    v: &Spanned<i64>,
    what: &str,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<u64, ConfigError> {
    u64::try_from(*v.get_ref())
        .ok()
        .filter(|t| *t > 0)
        .ok_or_else(|| at(v.span(), format!("{what} must be a positive number of seconds")))
}

fn methods(
    m: Option<Spanned<Vec<String>>>,
    default: &[&str],
    fallback_span: Range<usize>,
) -> (Vec<String>, Range<usize>) {
    match m {
        Some(m) => {
            let span = m.span();
            (
                m.into_inner().into_iter().map(|s| s.to_ascii_uppercase()).collect(),
                span,
            )
        }
        None => (default.iter().map(|s| s.to_string()).collect(), fallback_span),
    }
}

fn rule_config(r: RawRule, at: &dyn Fn(Range<usize>, String) -> ConfigError) -> Result<RuleConfig, ConfigError> {
    let (methods, methods_span) = methods(r.methods, &["GET", "HEAD"], r.name.span());
    let ttl = match &r.ttl {
        None => None,
        Some(t) => Some(match t.get_ref() {
            RawTtl::Word(w) if w == "origin" => TtlMode::Origin,
            RawTtl::Word(w) => {
                return Err(at(t.span(), format!("ttl must be seconds or \"origin\", got {w:?}")));
            }
            RawTtl::Seconds(n) => TtlMode::Fixed(Duration::from_secs(
                u64::try_from(*n).ok().filter(|n| *n > 0).ok_or_else(|| {
                    at(
                        t.span(),
                        "ttl must be a positive number of seconds or \"origin\"".into(),
                    )
                })?,
            )),
        }),
    };
    let secs = |v: &Option<Spanned<i64>>, what: &str| -> Result<Option<Duration>, ConfigError> {
        match v {
            None => Ok(None),
            Some(v) => Ok(Some(Duration::from_secs(positive(v, what, at)?))),
        }
    };
    let window = |v: &Option<Spanned<i64>>, what: &str| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(Duration::ZERO),
            Some(v) => u64::try_from(*v.get_ref())
                .map(Duration::from_secs)
                .map_err(|_| at(v.span(), format!("{what} must be zero or a positive number of seconds"))),
        }
    };
    let max_ttl = secs(&r.max_ttl, "max_ttl")?;
    let default_ttl = secs(&r.default_ttl, "default_ttl")?;
    let stale_while_revalidate = window(&r.stale_while_revalidate, "stale_while_revalidate")?;
    let stale_if_error = window(&r.stale_if_error, "stale_if_error")?;
    let statuses = match r.statuses {
        Some(s) => {
            let span = s.span();
            let v = s.into_inner();
            if v.is_empty() || v.iter().any(|c| !(100..=599).contains(c)) {
                return Err(at(span, "statuses must list HTTP status codes (100-599)".into()));
            }
            if v.iter().any(|c| *c >= 500) {
                return Err(at(
                    span,
                    "5xx answers are never cached; remove them from statuses".into(),
                ));
            }
            v
        }
        None => vec![200],
    };
    let mut ttl_by_status = Vec::new();
    if let Some(map) = &r.ttl_by_status {
        for (status, ttl) in map.get_ref() {
            let code = status
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| {
                    at(
                        map.span(),
                        format!("ttl_by_status: {status:?} is not an HTTP status code"),
                    )
                })?;
            if code >= 500 {
                return Err(at(
                    map.span(),
                    format!("ttl_by_status: {code}: 5xx answers are never cached"),
                ));
            }
            let secs = u64::try_from(*ttl).ok().filter(|t| *t > 0).ok_or_else(|| {
                at(
                    map.span(),
                    format!("ttl_by_status: {status:?} needs a positive number of seconds"),
                )
            })?;
            ttl_by_status.push((code, Duration::from_secs(secs)));
        }
    }
    let scope = match &r.scope {
        None => Scope::Credential,
        Some(s) => match s.get_ref().as_str() {
            "credential" => Scope::Credential,
            "public" => Scope::Public,
            other => {
                return Err(at(
                    s.span(),
                    format!("unknown scope {other:?}; expected credential or public"),
                ))
            }
        },
    };
    Ok(RuleConfig {
        name: r.name.into_inner(),
        methods,
        methods_span,
        path: r.path.get_ref().clone(),
        path_span: r.path.span(),
        key: r.key.get_ref().clone(),
        key_span: r.key.span(),
        ttl,
        max_ttl,
        default_ttl,
        stale_while_revalidate,
        stale_if_error,
        statuses,
        ttl_by_status,
        scope,
        max_body_bytes: r.max_body_bytes,
        tags: r.tags.iter().map(|t| (t.get_ref().clone(), t.span())).collect(),
        duplicate_inputs: super::inputs::duplicate_inputs(&r.duplicate_inputs, at)?,
    })
}

fn invalidate_config(
    i: RawInvalidate,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<InvalidateConfig, ConfigError> {
    let (methods, methods_span) = methods(i.methods, &["POST", "PUT", "PATCH", "DELETE"], i.name.span());
    // Default: any outcome. A write that answered 5xx, timed out or was
    // cut off may have committed (see README, "Invalidation").
    let when = match &i.when {
        None => When::Always,
        Some(w) => match w.get_ref().as_str() {
            "success" => When::Success,
            "always" => When::Always,
            other => {
                return Err(at(
                    w.span(),
                    format!("unknown when {other:?}; expected success or always"),
                ))
            }
        },
    };
    let spanned = |v: Vec<Spanned<String>>| v.into_iter().map(|s| (s.get_ref().clone(), s.span())).collect();
    Ok(InvalidateConfig {
        name: i.name.into_inner(),
        methods,
        methods_span,
        path: i.path.get_ref().clone(),
        path_span: i.path.span(),
        keys: spanned(i.keys),
        patterns: spanned(i.patterns),
        tags: spanned(i.tags),
        when,
        soft: i.soft.unwrap_or(false),
        purge_credential: i.purge_credential.unwrap_or(false),
    })
}
