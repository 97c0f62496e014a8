//! Turns the raw file into a resolved [`Config`]: defaults, environment
//! overrides, command-line overrides and validation, in that order of
//! precedence (flag > environment > file > built-in default).

use super::error::ConfigError;
use super::file::RawConfig;
use super::settings::{
    AccessLogConfig, BackendConfig, CacheConfig, Config, Consistency, DebugKeyHeader, Edition, MemoryConfig, Origins,
    Overrides, RedisConfig, ServerConfig, StoreKind, TierConfig, DEFAULT_STRIPPED,
};
use crate::rules::{RuleDefaults, RuleError, RuleSet, TtlSource};

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

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
    let listen_origin = origin(listen_src.as_ref(), file, text);
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
        http2: raw.server.http2.unwrap_or(true),
        h2c: raw.server.h2c.unwrap_or(false),
        h2_max_concurrent_streams: raw.server.h2_max_concurrent_streams.unwrap_or(100).max(1),
        tls: match &raw.server.tls {
            None => None,
            Some(t) => Some(server_tls(t, &at)?),
        },
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
    let backend_origin = origin(backend_src.as_ref(), file, text);
    let backend_url = match backend_src {
        None => "http://127.0.0.1:8000"
            .parse::<http::Uri>()
            .map_err(|e| general(e.to_string()))?,
        Some(src) => src.parse(
            parse_backend_url,
            "an http:// or https:// URL such as http://127.0.0.1:8000",
            &at,
            &general,
        )?,
    };
    let backend_tls = super::redis_url::client_tls(
        super::redis_url::TlsFields {
            ca_file: &raw.backend.tls_ca_file,
            cert_file: &raw.backend.tls_cert_file,
            key_file: &raw.backend.tls_key_file,
            insecure_skip_verify: &raw.backend.tls_insecure_skip_verify,
        },
        (backend_url.scheme_str() == Some("https"), "use an https:// backend URL"),
        &at,
    )?;
    let backend = BackendConfig {
        tls: backend_tls,
        http2: raw.backend.http2.unwrap_or(true),
        url: backend_url,
        connect_timeout: Duration::from_millis(raw.backend.connect_timeout_ms.unwrap_or(1000)),
        timeout: Duration::from_millis(raw.backend.timeout_ms.unwrap_or(30_000)),
        pool_idle_per_host: raw.backend.pool_idle_per_host.unwrap_or(256),
        // Below uvicorn's 5 s keep-alive: a connection the backend is closing is
        // not handed to a request (see proxy/keep_alive.rs).
        pool_idle_timeout: Duration::from_millis(raw.backend.pool_idle_timeout_ms.unwrap_or(4_000)),
        forwarded_headers: raw.backend.forwarded_headers.unwrap_or(true),
        preserve_host: raw.backend.preserve_host.unwrap_or(false),
        upgrades: raw.backend.upgrades.unwrap_or(true),
        // nginx's proxy_read_timeout, which bounds its WebSocket tunnels.
        tunnel_idle_timeout: Duration::from_millis(raw.backend.tunnel_idle_timeout_ms.unwrap_or(60_000).max(1)),
    };

    // [redis] and the environment variables of the reference deployment.
    let raw_redis = raw.redis.unwrap_or_default();
    let (redis_url, redis_url_origin) = resolve_redis_url(&raw_redis, env, overrides, (file, text), (&at, &general))?;
    let (default_ttl, default_ttl_source) = match env("CACHE_TTL") {
        Some(v) => {
            let secs = v.parse::<u64>().ok().filter(|t| *t > 0).ok_or_else(|| {
                general(format!(
                    "environment variable CACHE_TTL: expected a positive number of seconds, got {v:?}"
                ))
            })?;
            (secs, TtlSource::Env)
        }
        None => match &raw_redis.default_ttl {
            Some(t) => (positive(t, "default_ttl", &at)?, TtlSource::File),
            None => (300, TtlSource::BuiltIn),
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

    let mut redis_db_origin = String::new();
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
            redis_db_origin = match (env("REDIS_DB"), &raw_redis.db, url_db) {
                (Some(_), _, _) => "environment REDIS_DB".to_string(),
                (None, Some(d), _) => file_origin(file, text, d.span()),
                (None, None, Some(_)) => format!("the Redis URL, {redis_url_origin}"),
                (None, None, None) => format!("edition {}'s default", edition.as_str()),
            };
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
            // The reference sets REDIS_DB for the app too: one inherited from
            // the backend's shell would silently share or split the cache.
            if env("REDIS_DB").is_some() && db != edition.default_db() && !parsed.topology.is_cluster() {
                warnings.push(format!(
                    "REDIS_DB={db} from the environment is not edition {}'s DB {}: entries go to DB {db} (unset REDIS_DB to use the edition's)",
                    edition.as_str(),
                    edition.default_db()
                ));
            }
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
        targeted_cache_control: match &raw.cache.targeted_cache_control {
            None => DEFAULT_TARGETED
                .iter()
                .map(|n| http::HeaderName::from_static(n))
                .collect(),
            Some(_) => super::inputs::header_names(&raw.cache.targeted_cache_control, &at)?,
        },
        forward_targeted_cache_control: raw.cache.forward_targeted_cache_control.unwrap_or(true),
        honour_request_directives: match &raw.cache.request_directives {
            None => true,
            Some(v) if v.get_ref() == "honour" || v.get_ref() == "honor" => true,
            Some(v) if v.get_ref() == "ignore" => false,
            Some(v) => {
                return Err(at(
                    v.span(),
                    format!(
                        "request_directives must be \"honour\" or \"ignore\", got {:?}",
                        v.get_ref()
                    ),
                ))
            }
        },
        debug_key_header: match &raw.cache.debug_key_header {
            None => DebugKeyHeader::Off,
            Some(v) => match v.get_ref().as_str() {
                "off" => DebugKeyHeader::Off,
                "private" => DebugKeyHeader::Private,
                "all" => DebugKeyHeader::All,
                other => {
                    return Err(at(
                        v.span(),
                        format!("debug_key_header must be \"off\", \"private\" or \"all\", got {other:?}"),
                    ))
                }
            },
        },
    };
    let memory = MemoryConfig {
        max_entries: raw.store.memory.max_entries.unwrap_or(100_000),
        max_bytes: raw.store.memory.max_bytes.unwrap_or(256 * 1024 * 1024),
    };

    let admin = super::admin::admin_config(raw.admin, env, &at, &general)?;
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
    let health = super::health::resolve(raw.health, &at)?;
    let compression = super::compression::resolve(raw.compression, &at)?;

    let defaults = RuleDefaults {
        ttl: cache.default_ttl,
        ttl_source: default_ttl_source,
        max_body_bytes: cache.max_body_bytes,
        max_key_bytes: cache.max_key_bytes,
    };
    let rules = RuleSet::compile(&raw.rule, &raw.invalidate, &defaults)
        .map_err(|RuleError { span, message }| at(span, message))?;
    super::inputs::check_dropped_key_headers(&raw.rule, &rules, server.underscores_in_headers, &at)?;

    if admin.tokens.is_empty() {
        warnings.push(format!(
            "no admin tokens ([[admin.tokens]], CACHEGATE_ADMIN_TOKENS or CACHEGATE_ADMIN_TOKENS_FILE): every admin route under {} answers 401; `cachegate token` makes one",
            admin.prefix
        ));
    }
    if rules.cache.is_empty() {
        warnings.push("no [[rule]]: every request passes through uncached".to_string());
    }
    Ok(Config {
        warnings,
        source: file.to_string(),
        origins: Origins {
            listen: listen_origin,
            backend: backend_origin,
            redis_url: redis_url_origin,
            redis_db: redis_db_origin,
        },
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
        health,
        compression,
    })
}

/// `[server.tls]`: both files readable and holding PEM (a certificate, a
/// private key), reported at their place.
fn server_tls(
    raw: &super::file::RawServerTls,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<super::settings::ServerTls, ConfigError> {
    certificate_pair(&raw.cert_file, &raw.key_file, at)
}

/// A listener's certificate chain and key (`[server.tls]`, `[admin.tls]`):
/// both files readable PEM, and the key the certificate's, reported at the
/// key's place when it is not (a reload then keeps the running certificate).
pub(super) fn certificate_pair(
    cert: &Spanned<String>,
    key: &Spanned<String>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<super::settings::ServerTls, ConfigError> {
    let cert_file = std::path::PathBuf::from(cert.get_ref());
    let key_file = std::path::PathBuf::from(key.get_ref());
    let chain = super::pem::certificates(&cert_file, "cert_file").map_err(|_| {
        at(
            cert.span(),
            format!("cert_file {:?} is not a readable PEM certificate", cert.get_ref()),
        )
    })?;
    let private_key = super::pem::private_key(&key_file, "key_file").map_err(|_| {
        at(
            key.span(),
            format!("key_file {:?} is not a readable PEM private key", key.get_ref()),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    if let Err(e) = rustls::sign::CertifiedKey::from_der(chain, private_key, &provider) {
        return Err(at(
            key.span(),
            format!(
                "key_file {:?} is not the key of cert_file {:?}'s certificate: {e}",
                key.get_ref(),
                cert.get_ref()
            ),
        ));
    }
    Ok(super::settings::ServerTls { cert_file, key_file })
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

/// The targeted fields obeyed when `targeted_cache_control` is not set:
/// cachegate's own, then the CDN one (RFC 9213 §3).
const DEFAULT_TARGETED: [&str; 2] = ["cachegate-cache-control", "cdn-cache-control"];

/// Where a picked value came from, in words; `None` is the built-in default.
fn origin(src: Option<&Source>, file: &str, text: &str) -> String {
    match src {
        None => "default".to_string(),
        Some(Source::Flag(_, name)) => format!("flag {name}"),
        Some(Source::Env(_, name)) => format!("environment {name}"),
        Some(Source::File(s)) => file_origin(file, text, s.span()),
    }
}

/// `proxy.toml:12`: the file and line a value was read from.
fn file_origin(file: &str, text: &str, span: Range<usize>) -> String {
    format!("{file}:{}", super::error::line_col(text, span.start).0)
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
    let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
    (scheme_ok && uri.authority().is_some() && uri.query().is_none()).then_some(uri)
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

/// How errors are made: at a place in the file, or about the whole of it.
type ErrorAt<'a> = &'a dyn Fn(Range<usize>, String) -> ConfigError;
type ErrorGeneral<'a> = &'a dyn Fn(String) -> ConfigError;

/// Also says where the URL came from (see [`origin`]).
fn resolve_redis_url(
    raw: &super::file::RawRedis,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &Overrides,
    (file, text): (&str, &str),
    (at, general): (ErrorAt<'_>, ErrorGeneral<'_>),
) -> Result<(Option<super::redis_url::RedisUrl>, String), ConfigError> {
    let host_port = match (env("REDIS_HOST"), env("REDIS_PORT")) {
        (None, None) => None,
        (host, port) => {
            // Checked here, naming the variable, so `check` refuses what
            // start-up would (exit 2), instead of start-up failing later.
            let port = match port {
                None => 6379,
                Some(p) => match p.trim().parse::<u16>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(general(format!(
                            "environment variable REDIS_PORT: expected a port number 1-65535, got {p:?}"
                        )))
                    }
                },
            };
            let host = host.unwrap_or_else(|| "127.0.0.1".into());
            if host.parse::<http::uri::Authority>().is_err() || host.contains(['/', '@', ':']) && !host.starts_with('[')
            {
                return Err(general(format!(
                    "environment variable REDIS_HOST: expected a host name or IP address, got {host:?}"
                )));
            }
            Some(format!("redis://{host}:{port}"))
        }
    };
    let env_name = if env("REDIS_URL").is_some() {
        "REDIS_URL"
    } else {
        "REDIS_HOST/REDIS_PORT"
    };
    let src = pick(
        overrides.redis_url.clone(),
        "--redis-url",
        env("REDIS_URL").or(host_port),
        env_name,
        raw.url.as_ref(),
    );
    let url_origin = match (&src, &raw.cluster) {
        (None, Some(list)) => file_origin(file, text, list.span()),
        (None, None) => "default".to_string(),
        (Some(_), _) => origin(src.as_ref(), file, text),
    };
    if let (Some(_), Some(url)) = (&raw.cluster, &raw.url) {
        return Err(at(
            url.span(),
            "[redis] has both url and cluster: give one of them".into(),
        ));
    }
    let url = match src {
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
    };
    url.map(|u| (u, url_origin))
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
