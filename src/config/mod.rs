//! The `proxy.toml` contract: parsing, environment overrides and validation.
//!
//! Parsing keeps source spans so that every error, including semantic ones
//! found after parsing (an unknown capture in a key template, a bad regex),
//! is reported as `file:line:col: message`. The result is a [`Config`] whose
//! values are all resolved; nothing downstream looks at the raw file again.

mod admin;
mod compression;
mod error;
mod file;
mod health;
mod inputs;
pub mod pem;
pub mod redis_url;
mod resolve;
mod settings;
mod warm;

pub use admin::{hash_token, AdminConfig, AdminScope, AdminTls, AdminToken, ClientAuth};
pub use compression::CompressionConfig;
pub use error::ConfigError;
pub use health::{HealthConfig, StoreReadiness};
pub use inputs::{DuplicateInputs, SuspectCredentials, CREDENTIAL_WORDS, DEFAULT_CREDENTIAL_HEADERS};
pub use redis_url::{ClientTls, RedisTls, RedisTopology};
pub use settings::{
    AccessLogConfig, BackendConfig, CacheConfig, Config, Consistency, DebugKeyHeader, Edition, MemoryConfig, Origins,
    Overrides, RedisConfig, Scope, ServerConfig, ServerTls, StoreKind, TierConfig, TtlMode, When,
};
pub use warm::{check_path, parse_path_list, WarmConfig, MAX_CONCURRENCY as MAX_WARM_CONCURRENCY};

use std::path::Path;

impl Config {
    /// Reads, parses and validates a config file, applying the process
    /// environment and the given command-line overrides.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(&name, e))?;
        Self::from_toml(&text, &name, &resolve::process_env(), overrides)
    }

    /// Parses config text as if it came from a file called `name`; `env`
    /// stands for the process environment (tests pass their own).
    pub fn from_toml(
        text: &str,
        name: &str,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let raw: file::RawConfig = toml::from_str(text).map_err(|e| ConfigError::from_toml(name, text, &e))?;
        resolve::resolve(raw, name, text, env, overrides)
    }

    /// Whether the in-process tier runs: asked for, on the Redis store, and
    /// not on a cluster (its coherence rests on one CLIENT TRACKING BCAST
    /// connection seeing every write; on a cluster each primary pushes only
    /// its own slots' keys and a failover silently moves them).
    pub fn tier_in_use(&self) -> bool {
        self.tier.enabled
            && self.store == StoreKind::Redis
            && self.redis.as_ref().is_some_and(|r| !r.topology.is_cluster())
    }

    /// Config text parsed with no environment and no overrides: for tests
    /// and the demo.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::from_toml(text, "<inline>", &|_| None, &Overrides::default())
    }

    /// The one line that says what this instance talks to and why: the
    /// effective listen address, backend and store (Redis URL with its
    /// password masked, and DB), each with where it came from.
    pub fn effective_summary(&self) -> String {
        let o = &self.origins;
        let store = match &self.redis {
            Some(r) => format!(
                "redis {} ({}) db {} ({})",
                redact_url(&r.url),
                o.redis_url,
                r.db,
                o.redis_db
            ),
            None => "memory (no Redis configured)".to_string(),
        };
        format!(
            "listen {} ({}); backend {} ({}); store {store}",
            self.server.listen, o.listen, self.backend.url, o.backend
        )
    }
}

/// A URL with its password (everything between `://` and the last `@`)
/// replaced by `***`, for anything printed or logged.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
