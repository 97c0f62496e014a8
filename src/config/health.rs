//! `[health]`: what `/readyz` requires, and the backend probe behind
//! `cachegate_backend_up` and the admin `health` route's `backend`.
//!
//! ```toml
//! [health]
//! ready_requires_backend = false   # /readyz 503 while the probe finds the backend down
//! ready_requires_store = "config"  # "config": 503 while Redis refuses our credentials,
//!                                  # database, TLS or host name; "up": 503 while Redis is
//!                                  # unusable for any reason; "never"
//! probe_interval_ms = 5000         # 0: no probe (the backend counts as up)
//! probe_timeout_ms = 1000
//! probe_path = "/health"           # GET, up on 2xx/3xx; unset: a TCP connect
//! probe_fall = 2                   # failed probes in a row that mark it down
//! probe_rise = 1                   # good probes in a row that mark it up again
//! ```

use super::error::ConfigError;
use serde::Deserialize;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

/// `[health]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub ready_requires_backend: Option<bool>,
    pub ready_requires_store: Option<Spanned<String>>,
    pub probe_interval_ms: Option<Spanned<i64>>,
    pub probe_timeout_ms: Option<Spanned<i64>>,
    pub probe_path: Option<Spanned<String>>,
    pub probe_fall: Option<Spanned<i64>>,
    pub probe_rise: Option<Spanned<i64>>,
}

/// When a store problem makes `/readyz` answer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReadiness {
    /// Only for causes that do not heal by waiting (credentials, database,
    /// TLS, host name): a bad rollout stays out of rotation, while a Redis
    /// outage shared by every replica does not take them all out (they
    /// still serve, uncached).
    Config,
    /// Whenever the store is unusable.
    Up,
    /// Never.
    Never,
}

/// `[health]`, resolved.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub ready_requires_backend: bool,
    pub ready_requires_store: StoreReadiness,
    /// `None`: no probe.
    pub probe_interval: Option<Duration>,
    pub probe_timeout: Duration,
    /// GET this path (with its query) on the backend; `None`: TCP connect.
    pub probe_path: Option<String>,
    pub probe_fall: u32,
    pub probe_rise: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            ready_requires_backend: false,
            ready_requires_store: StoreReadiness::Config,
            probe_interval: Some(Duration::from_secs(5)),
            probe_timeout: Duration::from_secs(1),
            probe_path: None,
            probe_fall: 2,
            probe_rise: 1,
        }
    }
}

pub(super) fn resolve(
    raw: RawHealth,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<HealthConfig, ConfigError> {
    let mut health = HealthConfig {
        ready_requires_backend: raw.ready_requires_backend.unwrap_or(false),
        ..HealthConfig::default()
    };
    if let Some(v) = &raw.ready_requires_store {
        health.ready_requires_store = match v.get_ref().as_str() {
            "config" => StoreReadiness::Config,
            "up" => StoreReadiness::Up,
            "never" => StoreReadiness::Never,
            other => {
                return Err(at(
                    v.span(),
                    format!("[health] ready_requires_store: expected \"config\", \"up\" or \"never\", got {other:?}"),
                ))
            }
        };
    }
    let in_range = |v: &Spanned<i64>, name: &str, min: i64, max: i64| {
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(at(
                v.span(),
                format!("[health] {name}: expected {min} to {max}, got {n}"),
            ))
        }
    };
    if let Some(v) = &raw.probe_interval_ms {
        let ms = in_range(v, "probe_interval_ms", 0, 3_600_000)?;
        health.probe_interval = (ms > 0).then(|| Duration::from_millis(ms as u64));
    }
    if let Some(v) = &raw.probe_timeout_ms {
        health.probe_timeout = Duration::from_millis(in_range(v, "probe_timeout_ms", 1, 60_000)? as u64);
    }
    if let Some(v) = &raw.probe_fall {
        health.probe_fall = in_range(v, "probe_fall", 1, 100)? as u32;
    }
    if let Some(v) = &raw.probe_rise {
        health.probe_rise = in_range(v, "probe_rise", 1, 100)? as u32;
    }
    if let Some(p) = &raw.probe_path {
        super::warm::check_path(p.get_ref()).map_err(|e| at(p.span(), format!("[health] probe_path: {e}")))?;
        health.probe_path = Some(p.get_ref().clone());
    }
    Ok(health)
}
