//! The backend probe (`[health]`): every `probe_interval_ms`, a TCP connect
//! to the backend's address, or a `GET probe_path` through the backend
//! client (up on 2xx/3xx), each bounded by `probe_timeout_ms`. As with
//! nginx's `fails`/`passes` and Envoy's thresholds, `probe_fall` failures
//! in a row mark the backend down and `probe_rise` successes mark it up
//! again. The state drives `cachegate_backend_up`, the admin `health`
//! route's `backend` and, with `ready_requires_backend`, `/readyz`. It
//! never changes how requests are forwarded.

use super::Gateway;
use crate::config::HealthConfig;
use crate::proxy::ClientInfo;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The backend's state as the probe last decided it.
pub struct BackendHealth {
    up: AtomicBool,
    /// Whether a probe ever ran (none configured: the backend counts as up).
    probed: AtomicBool,
    fails: AtomicU32,
    passes: AtomicU32,
    /// The last probe's outcome, in words.
    detail: Mutex<String>,
}

impl Default for BackendHealth {
    fn default() -> Self {
        BackendHealth {
            up: AtomicBool::new(true),
            probed: AtomicBool::new(false),
            fails: AtomicU32::new(0),
            passes: AtomicU32::new(0),
            detail: Mutex::new("not probed yet".to_string()),
        }
    }
}

/// What `health` and `/readyz` show of the backend.
#[derive(Debug, Clone)]
pub struct BackendState {
    pub up: bool,
    pub detail: String,
}

impl BackendHealth {
    pub fn state(&self) -> BackendState {
        let detail = self.detail.lock().unwrap_or_else(|p| p.into_inner()).clone();
        BackendState {
            up: self.up.load(Ordering::Acquire),
            detail,
        }
    }

    /// The probe was turned off (by a reload): the backend counts as up.
    fn forget(&self) {
        if self.probed.swap(false, Ordering::AcqRel) {
            self.up.store(true, Ordering::Release);
            self.fails.store(0, Ordering::Relaxed);
            self.passes.store(0, Ordering::Relaxed);
            *self.detail.lock().unwrap_or_else(|p| p.into_inner()) = "no probe configured".to_string();
        }
    }

    /// Counts one probe's outcome; returns the new state when it flipped.
    fn record(&self, ok: bool, detail: String, health: &HealthConfig) -> Option<bool> {
        *self.detail.lock().unwrap_or_else(|p| p.into_inner()) = detail;
        self.probed.store(true, Ordering::Release);
        let (mine, other, needed) = if ok {
            (&self.passes, &self.fails, health.probe_rise)
        } else {
            (&self.fails, &self.passes, health.probe_fall)
        };
        other.store(0, Ordering::Relaxed);
        let run = mine.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if run >= needed && self.up.swap(ok, Ordering::AcqRel) != ok {
            return Some(ok);
        }
        None
    }
}

impl Gateway {
    /// The backend's state as the probe sees it.
    pub fn backend_state(&self) -> BackendState {
        self.shared.backend_health.state()
    }

    /// Probes the backend once with this generation's settings, and
    /// records the outcome.
    pub async fn probe_backend(&self) {
        let health = &self.config().health;
        let outcome = tokio::time::timeout(health.probe_timeout, self.probe_once(health)).await;
        let (ok, detail) = match outcome {
            Ok(result) => result,
            Err(_) => (
                false,
                format!("no answer within {} ms", health.probe_timeout.as_millis()),
            ),
        };
        let flipped = self.shared.backend_health.record(ok, detail.clone(), health);
        self.metrics()
            .set_backend_up(self.shared.backend_health.up.load(Ordering::Acquire));
        match flipped {
            Some(true) => {
                tracing::info!(target: "cachegate::backend", "the backend answers the probe again ({detail})")
            }
            Some(false) => tracing::warn!(target: "cachegate::backend", "the backend is down: {detail}"),
            None => {}
        }
    }

    async fn probe_once(&self, health: &HealthConfig) -> (bool, String) {
        let url = &self.config().backend.url;
        let Some(path) = &health.probe_path else {
            let host = url.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
            let port = url.port_u16().unwrap_or(80);
            return match tokio::net::TcpStream::connect((host, port)).await {
                Ok(_) => (true, format!("TCP connect to {host}:{port} succeeded")),
                Err(e) => (false, format!("TCP connect to {host}:{port} failed: {e}")),
            };
        };
        let req = match http::Request::get(path.as_str()).body(crate::proxy::empty()) {
            Ok(r) => r,
            Err(e) => return (false, format!("GET {path}: {e}")),
        };
        let from = ClientInfo {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
        };
        match self.generation.forwarder.forward(req, from).await {
            Ok(resp) if resp.status().is_success() || resp.status().is_redirection() => {
                (true, format!("GET {path} answered {}", resp.status().as_u16()))
            }
            Ok(resp) => (false, format!("GET {path} answered {}", resp.status().as_u16())),
            Err(e) => (false, format!("GET {path} failed: {}", forward_error(&e))),
        }
    }
}

fn forward_error(e: &crate::proxy::ForwardError) -> String {
    match e {
        crate::proxy::ForwardError::Unreachable(why) | crate::proxy::ForwardError::NotSent(why) => why.clone(),
        crate::proxy::ForwardError::Timeout => "no response head within the backend timeout".to_string(),
    }
}

/// Probes the backend of whatever generation `current` returns, every
/// `probe_interval_ms` of that generation, until `current` returns `None`
/// (the server is gone).
pub fn spawn_backend_probe(current: impl Fn() -> Option<Arc<Gateway>> + Send + 'static) {
    tokio::spawn(async move {
        loop {
            let Some(gateway) = current() else { return };
            let every = match gateway.config().health.probe_interval {
                Some(every) => {
                    gateway.probe_backend().await;
                    every
                }
                // Off: look again later, a reload may turn it on.
                None => {
                    gateway.shared.backend_health.forget();
                    gateway.metrics().set_backend_up(true);
                    Duration::from_secs(1)
                }
            };
            drop(gateway);
            tokio::time::sleep(every).await;
        }
    });
}
