//! The fred client configuration for a [`RedisConfig`]: a single server,
//! a Redis Cluster or a Sentinel-managed primary, with TLS when asked.
//! fred handles the topology itself: cluster slot maps, MOVED/ASK
//! redirections, reconnecting to the primary Sentinel names after a
//! failover.

use crate::config::{RedisConfig, RedisTls, RedisTopology};
use fred::prelude::*;
use fred::types::config::{ServerConfig, TlsConfig, TlsConnector, TlsHostMapping};

/// The fred `Config` for `cfg` (database, credentials, TLS included).
pub fn fred_config(cfg: &RedisConfig) -> Result<Config, crate::BoxError> {
    let mut config = match &cfg.topology {
        RedisTopology::Single => {
            let mut c = Config::from_url(&cfg.url)?;
            c.database = Some(cfg.db);
            c
        }
        RedisTopology::Cluster { nodes } => Config {
            server: ServerConfig::Clustered {
                hosts: nodes.iter().map(|(h, p)| Server::new(h.as_str(), *p)).collect(),
                policy: Default::default(),
            },
            username: cfg.username.clone(),
            // A cluster has DB 0 only (SELECT is refused).
            database: None,
            ..Config::default()
        },
        RedisTopology::Sentinel { nodes, service } => Config {
            server: ServerConfig::Sentinel {
                hosts: nodes.iter().map(|(h, p)| Server::new(h.as_str(), *p)).collect(),
                service_name: service.clone(),
                username: cfg.sentinel_username.clone(),
                password: cfg.sentinel_password.clone(),
            },
            username: cfg.username.clone(),
            database: Some(cfg.db),
            ..Config::default()
        },
    };
    if let Some(p) = &cfg.password {
        config.password = Some(p.clone());
    }
    config.tls = match &cfg.tls {
        Some(tls) => Some(tls_config(tls)?),
        None => None,
    };
    // Run the reconnect policy for the first connection too: start-up
    // must not fail because Redis is down.
    config.fail_fast = false;
    Ok(config)
}

/// A rustls client config from the `[redis] tls_*` options.
fn tls_config(tls: &RedisTls) -> Result<TlsConfig, crate::BoxError> {
    if tls.insecure_skip_verify {
        tracing::warn!(target: "cachegate::store", "[redis] tls_insecure_skip_verify is on: the Redis server's certificate is not checked (for tests only)");
    }
    Ok(TlsConfig {
        connector: TlsConnector::from(crate::proxy::tls::client_config(tls)?),
        hostnames: TlsHostMapping::None,
    })
}

/// A fred builder for `config` with cachegate's connection settings: a
/// 1 s connect timeout, 2 s for fred's own commands, `attempts` tries per
/// command, and reconnection with backoff from 50 ms to 1 s, forever.
pub(super) fn builder(config: Config, attempts: u32) -> Builder {
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = std::time::Duration::from_secs(1);
            c.internal_command_timeout = std::time::Duration::from_secs(2);
            c.max_command_attempts = attempts;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 1000, 2));
    builder
}
