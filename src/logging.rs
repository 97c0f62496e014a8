//! Process logging: tracing to stderr as text or JSON, with a filter that
//! `[log] level` sets and a config reload changes. `--log` and `RUST_LOG`
//! win over the config file, at start and on reload alike.

use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The filter's handle, unless the command line or RUST_LOG fixed it.
static CONFIG_FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the process's subscriber. `cli_filter` is `--log`.
pub fn init(json: bool, cli_filter: Option<&str>) {
    let fixed = cli_filter
        .map(EnvFilter::new)
        // An empty RUST_LOG counts as unset, as most tools treat it.
        .or_else(|| match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v).ok(),
            _ => None,
        });
    let from_config = fixed.is_none();
    let (filter, handle) = reload::Layer::new(fixed.unwrap_or_else(|| EnvFilter::new("info")));
    let registry = tracing_subscriber::registry().with(filter);
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour_wanted(std::io::IsTerminal::is_terminal(&std::io::stderr())));
    let installed = if json {
        registry.with(format.json()).try_init()
    } else {
        registry.with(format).try_init()
    };
    if installed.is_ok() && from_config {
        let _ = CONFIG_FILTER.set(handle);
    }
}

/// Colour codes only for a person at a terminal: never into a file, a
/// pipe, journald or `docker logs`, and never when `NO_COLOR` is set to
/// anything non-empty (no-color.org).
fn colour_wanted(stderr_is_terminal: bool) -> bool {
    stderr_is_terminal && !matches!(std::env::var_os("NO_COLOR"), Some(v) if !v.is_empty())
}

/// Applies `[log] level` (`None`: the default, `info`), unless `--log` or
/// `RUST_LOG` chose the filter. The level was validated with the config.
pub fn apply_config_level(level: Option<&str>) {
    let Some(handle) = CONFIG_FILTER.get() else {
        return;
    };
    let filter = EnvFilter::try_new(level.unwrap_or("info")).unwrap_or_else(|_| EnvFilter::new("info"));
    if let Err(e) = handle.reload(filter) {
        tracing::warn!(error = %e, "cannot change the log level");
    }
}
