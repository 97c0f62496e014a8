//! The `proxy.toml` contract: parsing, environment overrides and validation.
//!
//! Parsing keeps source spans so that every error, including semantic ones
//! found after parsing (an unknown capture in a key template, a bad regex),
//! is reported as `file:line:col: message`. The result is a [`Config`] whose
//! values are all resolved; nothing downstream looks at the raw file again.

mod admin;
mod error;
mod file;
mod health;
mod inputs;
pub mod redis_url;
mod resolve;
mod settings;
mod warm;

pub use admin::{hash_token, AdminConfig, AdminScope, AdminToken};
pub use error::ConfigError;
pub use health::{HealthConfig, StoreReadiness};
pub use inputs::{DuplicateInputs, SuspectCredentials, CREDENTIAL_WORDS, DEFAULT_CREDENTIAL_HEADERS};
pub use redis_url::{RedisTls, RedisTopology};
pub use settings::{
    AccessLogConfig, BackendConfig, CacheConfig, Config, Consistency, Edition, MemoryConfig, Overrides, RedisConfig,
    Scope, ServerConfig, StoreKind, TierConfig, TtlMode, When,
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
}
