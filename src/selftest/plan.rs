//! The command line of `cachegate selftest`, checked and turned into a
//! [`Plan`]. Anything wrong here is a usage error (exit status 2).

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use std::path::PathBuf;
use std::time::Duration;

/// Options of `cachegate selftest`.
#[derive(clap::Args, Debug, Clone)]
pub struct SelftestArgs {
    /// The proxy's base URL (plain HTTP), e.g. http://proxy:8080.
    #[arg(long)]
    pub url: String,
    /// The path to read; `{id}` is replaced by each id.
    #[arg(long, default_value = "/api/v1/tasks/{id}")]
    pub path: String,
    /// Values for `{id}`: a list (`1,2,3`), ranges (`1-100`) or both; repeatable.
    #[arg(long = "id", value_delimiter = ',', default_value = "1")]
    pub ids: Vec<String>,
    /// The API's bearer token, sent as `Authorization: Bearer <token>` on reads and the write.
    #[arg(long, env = "CACHEGATE_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// An admin token (scope read; purge too with --purge-key). Without one the store check is skipped.
    #[arg(long, env = "CACHEGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The admin listener's base URL when `[admin] listen` puts it elsewhere (default: --url).
    #[arg(long)]
    pub admin_url: Option<String>,
    /// The admin routes' prefix (`[admin] prefix`).
    #[arg(long, default_value = "/api/v1/cache")]
    pub admin_prefix: String,
    /// Requests per phase: cold and warm fetches, and per worker in the concurrency phase.
    #[arg(long, short = 'n', default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub requests: u32,
    /// Workers in the concurrency phase (`-j`, as make and cargo spell it:
    /// `-c` means `--config` in every command that takes one).
    #[arg(long, short = 'j', default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// The write that must invalidate: `METHOD PATH [BODY]`, e.g.
    /// `PUT /api/v1/tasks/{id} {"name":"selftest {nonce}"}`. `{id}` is the first id,
    /// `{nonce}` a fresh random word that the read after the write must show.
    /// Without it the invalidation check is skipped.
    #[arg(long)]
    pub write: Option<String>,
    /// A key template to delete through the admin API before each cold fetch
    /// (e.g. `task:{id}`; needs the purge scope), so that every cold fetch is a miss.
    /// Without it the cold fetches are the first fetch of each id.
    #[arg(long)]
    pub purge_key: Option<String>,
    /// An extra request header, `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub timeout_ms: u64,
    /// Print the report as JSON on standard output instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report with plots to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Never draw progress bars (they are drawn only when standard error is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// A base URL split into what requests need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// `http://host:port` plus any path prefix, without a trailing slash.
    pub prefix: String,
}

impl Base {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path)
    }
}

/// The configured write of the invalidation check.
#[derive(Debug, Clone)]
pub struct WriteSpec {
    pub method: Method,
    /// Path template (`{id}`, `{nonce}`).
    pub path: String,
    /// Body template (`{id}`, `{nonce}`).
    pub body: Option<String>,
}

impl WriteSpec {
    /// Whether the read after the write can look for the nonce.
    pub fn has_nonce(&self) -> bool {
        self.path.contains("{nonce}") || self.body.as_deref().is_some_and(|b| b.contains("{nonce}"))
    }

    /// The request line as the report shows it.
    pub fn describe(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Everything a run needs, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub base: Base,
    pub admin: Base,
    pub admin_prefix: String,
    pub path: String,
    pub ids: Vec<String>,
    pub token: Option<String>,
    pub admin_token: Option<String>,
    pub requests: u32,
    pub concurrency: u32,
    pub write: Option<WriteSpec>,
    pub purge_key: Option<String>,
    pub headers: HeaderMap,
    pub timeout: Duration,
    pub json: bool,
    pub html: Option<PathBuf>,
    pub progress: bool,
}

impl Plan {
    /// The read path for one id.
    pub fn read_path(&self, id: &str) -> String {
        self.path.replace("{id}", id)
    }
}

/// Most ids a range may name (the list is kept in memory).
const MAX_IDS: u64 = 1_000_000;

/// Checks the options; `Err` is a message for a usage error.
pub fn plan(args: &SelftestArgs, progress_possible: bool) -> Result<Plan, String> {
    let base = parse_base("--url", &args.url)?;
    let admin = match &args.admin_url {
        Some(u) => parse_base("--admin-url", u)?,
        None => base.clone(),
    };
    if !args.path.starts_with('/') {
        return Err(format!("--path must start with '/', got {:?}", args.path));
    }
    check_path_chars("--path", &args.path.replace("{id}", "1"))?;
    let prefix = args.admin_prefix.trim_end_matches('/');
    if !prefix.starts_with('/') {
        return Err(format!(
            "--admin-prefix must be a path such as /api/v1/cache, got {:?}",
            args.admin_prefix
        ));
    }
    let ids = parse_ids(&args.ids)?;
    let write = args.write.as_deref().map(parse_write).transpose()?;
    if args.purge_key.is_some() && args.admin_token.is_none() {
        return Err("--purge-key needs an admin token (--admin-token or CACHEGATE_ADMIN_TOKEN)".into());
    }
    if let Some(k) = &args.purge_key {
        if k.trim().is_empty() {
            return Err("--purge-key must not be empty".into());
        }
    }
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header: expected 'Name: value', got {h:?}"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("--header: {:?} is not a header name", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("--header: the value of {name} is not a valid header value"))?;
        headers.append(name, value);
    }
    for (what, t) in [("--token", &args.token), ("--admin-token", &args.admin_token)] {
        if let Some(t) = t {
            if t.trim().is_empty() || HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                return Err(format!("{what}: not usable in an Authorization header"));
            }
        }
    }
    Ok(Plan {
        base,
        admin,
        admin_prefix: prefix.to_string(),
        path: args.path.clone(),
        ids,
        token: args.token.clone(),
        admin_token: args.admin_token.clone(),
        requests: args.requests,
        concurrency: args.concurrency,
        write,
        purge_key: args.purge_key.clone(),
        headers,
        timeout: Duration::from_millis(args.timeout_ms),
        json: args.json,
        html: args.html.clone(),
        progress: progress_possible && !args.no_progress,
    })
}

fn parse_base(flag: &str, raw: &str) -> Result<Base, String> {
    let raw = raw.trim();
    let uri: Uri = raw
        .parse()
        .map_err(|_| format!("{flag}: {raw:?} is not a URL such as http://127.0.0.1:8080"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{flag}: https is not supported; point it at cachegate's plain-HTTP listener"
            ))
        }
        _ => return Err(format!("{flag}: {raw:?} is not a URL such as http://127.0.0.1:8080")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{flag}: {raw:?} has no host"));
    };
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(format!("{flag}: {raw:?} needs a host (and no user info)"));
    }
    if uri.query().is_some() {
        return Err(format!("{flag}: {raw:?} must not have a query"));
    }
    let path = uri.path().trim_end_matches('/');
    Ok(Base {
        prefix: format!("http://{authority}{path}"),
    })
}

fn check_path_chars(flag: &str, path: &str) -> Result<(), String> {
    path.parse::<Uri>()
        .map(|_| ())
        .map_err(|_| format!("{flag}: {path:?} is not a valid request path"))
}

/// `1,2,3`, `1-100`, `a,b`: ranges of numbers and literal values.
pub fn parse_ids(raw: &[String]) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for item in raw.iter().map(|s| s.trim()) {
        if item.is_empty() {
            return Err("--id: an empty value".into());
        }
        let range = item
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
        match range {
            Some((a, b)) => {
                if a > b {
                    return Err(format!("--id: the range {item} runs backwards"));
                }
                if b - a >= MAX_IDS || ids.len() as u64 + (b - a) >= MAX_IDS {
                    return Err(format!("--id: at most {MAX_IDS} ids"));
                }
                ids.extend((a..=b).map(|n| n.to_string()));
            }
            None => {
                if item.contains(['/', '?', '#', ' ']) {
                    return Err(format!("--id: {item:?} cannot be put in a path"));
                }
                ids.push(item.to_string());
            }
        }
    }
    if ids.is_empty() {
        return Err("--id: give at least one id".into());
    }
    Ok(ids)
}

/// `METHOD PATH [BODY]`.
pub fn parse_write(raw: &str) -> Result<WriteSpec, String> {
    let raw = raw.trim();
    let (method, rest) = raw
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("--write: expected 'METHOD PATH [BODY]', got {raw:?}"))?;
    let rest = rest.trim_start();
    let (path, body) = match rest.split_once(char::is_whitespace) {
        Some((p, b)) => (p, Some(b.trim().to_string()).filter(|b| !b.is_empty())),
        None => (rest, None),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("--write: {method:?} is not an HTTP method such as PUT"));
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| format!("--write: bad method {method:?}"))?;
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE) {
        return Err(format!(
            "--write: {method} does not write; use PUT, PATCH, POST or DELETE"
        ));
    }
    if !path.starts_with('/') {
        return Err(format!("--write: the path must start with '/', got {path:?}"));
    }
    check_path_chars("--write", &path.replace("{id}", "1").replace("{nonce}", "n"))?;
    Ok(WriteSpec {
        method,
        path: path.to_string(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_ranges_and_literals() {
        let ids = parse_ids(&["1-3".into(), "7".into(), "abc".into()]).unwrap();
        assert_eq!(ids, ["1", "2", "3", "7", "abc"]);
        assert!(parse_ids(&["3-1".into()]).is_err());
        assert!(parse_ids(&["a/b".into()]).is_err());
        assert!(parse_ids(&["0-2000000".into()]).is_err());
    }

    #[test]
    fn base_urls() {
        assert_eq!(parse_base("--url", "http://h:8080/").unwrap().prefix, "http://h:8080");
        assert_eq!(parse_base("--url", "http://h/x/").unwrap().prefix, "http://h/x");
        for bad in [
            "h:8080",
            "ftp://h",
            "https://h",
            "http://",
            "not a url",
            "http://h/?q=1",
        ] {
            assert!(parse_base("--url", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes() {
        let w = parse_write(r#"PUT /api/v1/tasks/{id} {"name":"x {nonce}"}"#).unwrap();
        assert_eq!(w.method, Method::PUT);
        assert_eq!(w.path, "/api/v1/tasks/{id}");
        assert_eq!(w.body.as_deref(), Some(r#"{"name":"x {nonce}"}"#));
        assert!(w.has_nonce());
        let d = parse_write("DELETE /api/v1/tasks/9").unwrap();
        assert!(d.body.is_none() && !d.has_nonce());
        for bad in ["PUT", "put /x", "GET /x", "PUT x", "/x PUT"] {
            assert!(parse_write(bad).is_err(), "{bad}");
        }
    }
}
