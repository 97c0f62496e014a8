//! Hot reload: the live config generation, and how a new proxy.toml
//! replaces it (SIGHUP, `cachegate reload`, `POST {prefix}/reload`).
//!
//! Each request takes the current [`Gateway`] when it arrives and keeps it
//! to the end, so in-flight requests finish on the config they started
//! with; a new generation shares the store, metrics, fills in flight and
//! pending purges with the old one (`Gateway::reconfigured`). A file that
//! does not load is refused with its file:line:col and the old generation
//! keeps serving.
//!
//! Rules, TTLs, tokens, limits, the backend, the admin prefix and the log
//! level change on reload. What was built at start (the listeners, the
//! store and its connection, the tier, the access log writer, the edition
//! that picks the Redis DB) needs a restart: a reload that changes it keeps
//! the running value and says which settings it kept.
//!
//! The listeners' certificates are the exception among what was built at
//! start: every reload reads the `[server.tls]` and `[admin.tls]` files
//! again (the same paths too: certbot and cert-manager rewrite them in
//! place), and the next handshakes use them (`proxy::listener_tls`);
//! established connections keep going on the session they negotiated, so
//! a reload never drops a connection. A certificate that does not load or
//! whose key is not its own refuses the whole reload, and the running
//! config and certificates stay. Turning TLS on or off on a listener
//! (`[server.tls]` or `[admin.tls]` present or absent) needs a restart.

use crate::config::{Config, ConfigError};
use crate::gateway::Gateway;
use crate::proxy::listener_tls::{self, BuiltTls, ListenersTls};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Loads the config again from where it came from.
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// The live generation and the means to replace it.
pub struct Live {
    current: ArcSwap<Gateway>,
    generation: AtomicU64,
    loader: OnceLock<Loader>,
    /// One reload at a time: two would race to be the last swapped in.
    reloading: tokio::sync::Mutex<()>,
    /// The listeners' certificates, swapped with each generation.
    listeners_tls: ListenersTls,
}

/// What a successful reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    pub generation: u64,
    pub source: String,
    /// Changed settings that need a restart; their running values are kept.
    pub restart_required: Vec<&'static str>,
}

/// Why a reload did not happen.
#[derive(Debug)]
pub enum ReloadError {
    /// The new file does not load (its file:line:col).
    Invalid(ConfigError),
    /// The config did not come from a file (an inline test config).
    NoSource,
    /// A listener's certificate, key or client CA did not load (the
    /// setting, the file and the reason).
    Certificate(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Invalid(e) => write!(f, "{e}"),
            ReloadError::NoSource => f.write_str("the config was not loaded from a file"),
            ReloadError::Certificate(e) => write!(f, "{e}; the running certificates stay"),
        }
    }
}

impl Live {
    /// The first generation, and the listeners' TLS it started with.
    pub fn new(first: Arc<Gateway>, listeners_tls: ListenersTls) -> Arc<Live> {
        Arc::new(Live {
            current: ArcSwap::new(first.clone()),
            generation: AtomicU64::new(1),
            loader: OnceLock::new(),
            reloading: tokio::sync::Mutex::new(()),
            listeners_tls,
        })
    }

    /// The generation a new request starts on.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Where reloads read the config from (set once).
    pub fn set_loader(&self, loader: Loader) {
        let _ = self.loader.set(loader);
    }

    /// Reads the config again and swaps it in.
    pub async fn reload(self: &Arc<Self>) -> Result<Reloaded, ReloadError> {
        let _one = self.reloading.lock().await;
        let this = self.clone();
        let old = self.gateway();
        let running = old.config().clone();
        // The files are read on a blocking thread, not on the runtime.
        let loaded = tokio::task::spawn_blocking(move || {
            let load = this.loader.get().ok_or(ReloadError::NoSource)?;
            let mut config = load().map_err(ReloadError::Invalid)?;
            let restart_required = keep_restart_only(&running, &mut config);
            // Read whether the paths changed or not (renewed in place).
            let tls = listener_tls::build(&config).map_err(ReloadError::Certificate)?;
            Ok((config, restart_required, tls))
        })
        .await
        .unwrap_or(Err(ReloadError::NoSource));
        let outcome = loaded.map(|loaded| self.swap_in(&old, loaded));
        old.metrics().reloaded(outcome.is_ok());
        match &outcome {
            Ok(done) => tracing::info!(
                generation = done.generation,
                source = %done.source,
                restart_required = ?done.restart_required,
                "config reloaded"
            ),
            Err(e) => tracing::error!(error = %e, "config reload refused; the running config stays"),
        }
        outcome
    }

    fn swap_in(
        &self,
        old: &Gateway,
        (config, restart_required, tls): (Config, Vec<&'static str>, BuiltTls),
    ) -> Reloaded {
        crate::logging::apply_config_level(config.log_level.as_deref());
        let source = config.source.clone();
        let next = Arc::new(old.reconfigured(Arc::new(config)));
        self.listeners_tls.swap_in(tls);
        self.current.store(next);
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        Reloaded {
            generation,
            source,
            restart_required,
        }
    }
}

/// Puts the running values of restart-only settings into `new`; the names
/// of those that differed.
fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    // The settings are compared by their Debug form: they are plain data,
    // and it saves a PartialEq on every config type for this one use.
    fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }
    macro_rules! keep {
        ($name:literal, $($field:tt)+) => {
            if !same(&old.$($field)+, &new.$($field)+) {
                new.$($field)+ = old.$($field)+.clone();
                kept.push($name);
            }
        };
    }
    keep!("edition", edition);
    keep!("server.listen", server.listen);
    // hyper's connection settings (its head buffer is sized from the limits).
    keep!("server.header_read_timeout_ms", server.header_read_timeout);
    keep!("server.max_uri_bytes", server.max_uri_bytes);
    keep!("server.max_header_bytes", server.max_header_bytes);
    keep!("server.max_headers", server.max_headers);
    // Whether a listener speaks TLS; its files (paths too) reload.
    macro_rules! keep_presence {
        ($name:literal, $($field:tt)+) => {
            if old.$($field)+.is_some() != new.$($field)+.is_some() {
                new.$($field)+ = old.$($field)+.clone();
                kept.push($name);
            }
        };
    }
    keep_presence!("server.tls", server.tls);
    keep_presence!("admin.tls", admin.tls);
    // The listener's protocols (ALPN is offered from them).
    keep!("server.http2", server.http2);
    keep!("server.h2c", server.h2c);
    keep!("server.h2_max_concurrent_streams", server.h2_max_concurrent_streams);
    keep!("admin.listen", admin.listen);
    keep!("store", store);
    keep!("redis", redis);
    keep!("memory", memory);
    keep!("tier", tier);
    keep!("access_log", access_log);
    keep!("cache.key_prefix", cache.key_prefix);
    keep!("cache.scope_secret", cache.scope_secret);
    keep!("cache.store_timeout_ms", cache.store_timeout);
    // [warm] runs once, at start (crate::warm).
    keep!("warm", warm);
    kept
}

/// Where `cachegate reload` sends its request for `config`: the admin
/// listener if there is one, else the main one; an unspecified address
/// (0.0.0.0, ::) is reached on loopback.
pub fn admin_reload_url(config: &Config) -> String {
    let addr = config.admin.listen.unwrap_or(config.server.listen);
    format!("http://{}{}/reload", reachable(addr), config.admin.prefix)
}

/// Whether the listener serving the reload route speaks TLS (`[admin.tls]`
/// on an admin listener, else `[server.tls]`): `cachegate reload` calls it
/// in plain HTTP, so it then points to SIGHUP.
pub fn reload_route_has_tls(config: &Config) -> bool {
    match config.admin.listen {
        Some(_) => config.admin.tls.is_some(),
        None => config.server.tls.is_some(),
    }
}

/// A listening address as a client on this host reaches it (`0.0.0.0` and
/// `::` are not addresses to connect to).
fn reachable(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// The reload route from what `cachegate reload --url` was given: a base
/// URL (`http://host:8080`, or with the admin prefix) gets the route
/// appended; a URL that already ends in `/reload` is used as it is.
pub fn reload_url_from(given: &str, prefix: &str) -> String {
    let given = given.trim_end_matches('/');
    if given.ends_with("/reload") {
        return given.to_string();
    }
    let path_start = given.find("://").map_or(0, |s| s + 3);
    let has_path = given[path_start..].contains('/');
    if has_path {
        format!("{given}/reload")
    } else {
        format!("{given}{prefix}/reload")
    }
}

/// Where a serving instance notes the address its reload route answers on,
/// so that `cachegate reload` with the same config finds it even when the
/// instance was started with `--listen` or `CACHEGATE_LISTEN`: a file in
/// `$XDG_RUNTIME_DIR` (else the temporary directory) named after the
/// config file's canonical path.
pub fn instance_note_path(config_file: &std::path::Path) -> std::path::PathBuf {
    use sha2::Digest;
    let canonical = std::fs::canonicalize(config_file).unwrap_or_else(|_| config_file.to_path_buf());
    let digest = sha2::Sha256::digest(canonical.to_string_lossy().as_bytes());
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!("cachegate-{}.url", hex::encode(&digest[..8])))
}

/// Notes the running instance's reload route (see [`instance_note_path`]):
/// its process id and the URL, one per line. The file is made anew, only
/// by us, readable by us only (a link or a file someone else left there is
/// removed, never followed).
pub fn note_instance(config_file: &std::path::Path, reload_addr: std::net::SocketAddr, prefix: &str) {
    use std::io::Write;
    let path = instance_note_path(config_file);
    let _ = std::fs::remove_file(&path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    if let Ok(mut file) = options.open(&path) {
        let note = format!(
            "{}\nhttp://{}{prefix}/reload\n",
            std::process::id(),
            reachable(reload_addr)
        );
        let _ = file.write_all(note.as_bytes());
    }
}

/// The reload route a running instance noted for this config file, if the
/// note is a plain file of this user's that only this user may write, the
/// process that wrote it still runs, and the route is on this host's
/// loopback (the admin token is sent there, so nothing else is trusted).
pub fn noted_instance(config_file: &std::path::Path) -> Option<String> {
    let path = instance_note_path(config_file);
    if !note_is_ours(&path) {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim();
    let url = lines.next()?.trim();
    let alive = pid.parse::<u32>().is_ok() && std::path::Path::new("/proc").join(pid).exists();
    let authority = url.strip_prefix("http://")?.split('/').next()?;
    let loopback = authority
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|addr| addr.ip().is_loopback());
    (alive && loopback).then(|| url.to_string())
}

#[cfg(unix)]
fn note_is_ours(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(note), Ok(me)) = (std::fs::symlink_metadata(path), std::fs::metadata("/proc/self")) else {
        return false;
    };
    note.file_type().is_file() && note.uid() == me.uid() && note.mode() & 0o022 == 0
}

#[cfg(not(unix))]
fn note_is_ours(_path: &std::path::Path) -> bool {
    false
}

/// Removes the note at a clean exit.
pub fn forget_instance(config_file: &std::path::Path) {
    let _ = std::fs::remove_file(instance_note_path(config_file));
}

/// `POST`s to a running proxy's reload route; its status and body.
// Boxed here so that the lib compiles this future's code; polled only from
// the binary, it would otherwise be compiled again there (38 s of a release build).
pub fn request_reload<'a>(
    url: &'a str,
    token: Option<&'a str>,
) -> crate::BoxFuture<'a, Result<(http::StatusCode, String), crate::BoxError>> {
    Box::pin(send_reload(url, token))
}

async fn send_reload(url: &str, token: Option<&str>) -> Result<(http::StatusCode, String), crate::BoxError> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut req = http::Request::post(url);
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(http_body_util::Empty::new())?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "no answer within 30 s")??;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
