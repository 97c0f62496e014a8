//! `[warm]`: the paths fetched through the cache at start (and the defaults
//! of `cachegate warm`), how fast, with which headers, and whether
//! readiness waits for them.
//!
//! ```toml
//! [warm]
//! paths = ["/api/v1/tasks/1", "/api/v1/tasks/2"]
//! paths_file = "warm-paths.txt"       # one path per line, # comments
//! concurrency = 4                     # requests in flight at once
//! rate = 50                           # at most this many requests per second
//! headers = { "X-Tenant" = "acme" }
//! headers_env = { Authorization = "WARM_AUTHORIZATION" }  # value from the environment
//! ready_waits = true                  # /readyz answers 503 until warming is done
//! ```

use super::error::ConfigError;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// Requests in flight at once when nothing says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// The most requests in flight a warm run may ask for.
pub const MAX_CONCURRENCY: usize = 1024;

/// `[warm]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWarm {
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    pub paths_file: Option<Spanned<String>>,
    pub concurrency: Option<Spanned<i64>>,
    pub rate: Option<Spanned<f64>>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    pub headers_env: Option<Spanned<BTreeMap<String, String>>>,
    pub ready_waits: Option<bool>,
}

/// `[warm]`, resolved: the paths are read and checked, header values taken
/// from the environment where `headers_env` says so.
#[derive(Debug, Clone)]
pub struct WarmConfig {
    /// Paths with their query, in order (`paths`, then `paths_file`'s).
    pub paths: Vec<String>,
    pub concurrency: usize,
    /// Requests started per second, at most; `None`: no limit.
    pub rate: Option<f64>,
    /// Sent with every warm request (values marked sensitive: a `Debug`
    /// print of the config does not show them).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `/readyz` answers 503 "warming" until the start-up run is done.
    pub ready_waits: bool,
    /// `headers_env` entries whose variable is not set, with the error to
    /// show (at the table's file:line:col). The server then skips warming
    /// (a warning, like an admin `token_env` that is not set: the file is
    /// fine, the environment lacks a secret); `cachegate warm` refuses to
    /// run unless `--header` gives that header.
    pub unset_env: Vec<(HeaderName, ConfigError)>,
}

impl Default for WarmConfig {
    fn default() -> Self {
        WarmConfig {
            paths: Vec::new(),
            concurrency: DEFAULT_CONCURRENCY,
            rate: None,
            headers: Vec::new(),
            ready_waits: false,
            unset_env: Vec::new(),
        }
    }
}

/// Why a path cannot be warmed, if it cannot: it must be a request target
/// in origin form (`/path?query`).
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not a path (it must start with /)"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{path:?} contains a space or a control character"));
    }
    path.parse::<http::uri::PathAndQuery>()
        .map(|_| ())
        .map_err(|_| format!("{path:?} is not a valid request path"))
}

/// A list of paths, one per line: blank lines and `#` comments are skipped
/// (a `#` also ends a line: a fragment is never sent). An error names the
/// 1-based line.
pub fn parse_path_list(text: &str) -> Result<Vec<String>, (usize, String)> {
    let mut paths = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        check_path(line).map_err(|e| (i + 1, e))?;
        paths.push(line.to_string());
    }
    Ok(paths)
}

pub(super) fn resolve(
    raw: RawWarm,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<WarmConfig, ConfigError> {
    let mut warm = WarmConfig::default();
    for p in &raw.paths {
        check_path(p.get_ref()).map_err(|e| at(p.span(), format!("[warm] paths: {e}")))?;
        warm.paths.push(p.get_ref().clone());
    }
    if let Some(f) = &raw.paths_file {
        // Relative to the config file, as an operator reads it.
        let path = Path::new(f.get_ref());
        let path = match Path::new(file).parent() {
            Some(dir) if path.is_relative() && file != "<inline>" => dir.join(path),
            _ => path.to_path_buf(),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            at(
                f.span(),
                format!("[warm] paths_file: cannot read {}: {e}", path.display()),
            )
        })?;
        let listed = parse_path_list(&text)
            .map_err(|(line, e)| at(f.span(), format!("[warm] paths_file: {}:{line}: {e}", path.display())))?;
        warm.paths.extend(listed);
    }
    if let Some(c) = &raw.concurrency {
        warm.concurrency = usize::try_from(*c.get_ref())
            .ok()
            .filter(|n| (1..=MAX_CONCURRENCY).contains(n))
            .ok_or_else(|| at(c.span(), format!("[warm] concurrency must be 1 to {MAX_CONCURRENCY}")))?;
    }
    if let Some(r) = &raw.rate {
        let rate = *r.get_ref();
        if !(rate.is_finite() && rate > 0.0) {
            return Err(at(
                r.span(),
                "[warm] rate must be a positive number of requests per second".into(),
            ));
        }
        warm.rate = Some(rate);
    }
    if let Some(h) = &raw.headers {
        for (name, value) in h.get_ref() {
            warm.headers.push(header(name, value, || at(h.span(), String::new()))?);
        }
    }
    if let Some(h) = &raw.headers_env {
        for (name, var) in h.get_ref() {
            let Some(value) = env(var) else {
                let (name, _) = header(name, "", || at(h.span(), String::new()))?;
                let unset = at(
                    h.span(),
                    format!("[warm] headers_env: {name}: the environment variable {var} is not set"),
                );
                warm.unset_env.push((name, unset));
                continue;
            };
            warm.headers.push(header(name, &value, || at(h.span(), String::new()))?);
        }
    }
    let mut names: Vec<&str> = warm.headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        let span = raw.headers_env.as_ref().map(|h| h.span()).unwrap_or_default();
        return Err(at(
            span,
            format!("[warm] the header {} is given in both headers and headers_env", w[0]),
        ));
    }
    warm.ready_waits = raw.ready_waits.unwrap_or(false);
    Ok(warm)
}

/// A header for warm requests; the value is marked sensitive. `place`
/// makes an error at the table's span (its message is filled in here).
fn header(name: &str, value: &str, place: impl Fn() -> ConfigError) -> Result<(HeaderName, HeaderValue), ConfigError> {
    let error = |message: String| ConfigError { message, ..place() };
    let name =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| error(format!("[warm] {name:?} is not a header name")))?;
    let mut value =
        HeaderValue::from_str(value).map_err(|_| error(format!("[warm] the value of {name} is not a header value")))?;
    value.set_sensitive(true);
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lists_skip_comments_and_blank_lines() {
        let text = "# warm these\n/a\n\n  /b?x=1   # the second\n#/c\n";
        assert_eq!(parse_path_list(text).unwrap(), ["/a", "/b?x=1"]);
        assert_eq!(parse_path_list("/a\nb\n").unwrap_err().0, 2);
        assert!(check_path("/a b").is_err());
        assert!(check_path("http://x/a").is_err());
    }
}
