//! `cachegate demo`: a sample task API with cachegate in front of it.
//!
//! The sample API mirrors the reference FastAPI task service closely enough
//! to show the cache at work: `GET/PUT/DELETE /api/v1/tasks/{id}`,
//! `POST /api/v1/tasks` and `GET /api/v1/tasks`, JSON bodies, bearer-token
//! auth for two tenants (random tokens made at start) and per-tenant data.
//! The API itself is `sample_api.rs`; `cachegate demo-backend` runs it alone
//! (`backend.rs`).

pub mod backend;
mod sample_api;

pub use backend::DemoBackendArgs;
pub use sample_api::{seeded_ids, serve_sample_api, serve_sample_api_with, SampleApi, TaskIds, Tenant};

use crate::config::{AdminScope, AdminToken, Config, Overrides};
use crate::BoxError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpListener;

/// Options of `cachegate demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The admin token the demo accepts (all scopes); by default a new
    /// random one, printed with a ready-to-paste `cachegate selftest` line.
    #[arg(long, env = "CACHEGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// The task API's rules, as the documented `proxy.toml` has them: the demo
/// runs them, and the tests use them as the standard set.
pub const TASK_RULES: &str = r#"
[[rule]]
name = "task"
methods = ["GET", "HEAD"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"
ttl = 300
statuses = [200]

[[rule]]
name = "task-list"
path = '^/api/v1/tasks$'
key = "tasks:{query}"
ttl = 60

[[invalidate]]
name = "task-write"
methods = ["PUT", "PATCH", "DELETE"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{task_id}"]
patterns = ["tasks:*"]
when = "success"

[[invalidate]]
name = "task-create"
methods = ["POST"]
path = '^/api/v1/tasks$'
patterns = ["tasks:*"]
"#;

/// The proxy config of the demo (its rules are [`TASK_RULES`]), in front
/// of the sample API. `@LISTEN@` and `@BACKEND@` are filled in.
const DEMO_TOML: &str = r#"
edition = "business"

[server]
listen = "@LISTEN@"

[backend]
url = "@BACKEND@"
connect_timeout_ms = 1000
timeout_ms = 10000

[redis]
default_ttl = 300
# The demo may share a Redis with other things: keep its keys apart.
key_prefix = "cachegate-demo:"

"#;

/// The demo's config: only `REDIS_*` variables of the environment count
/// (so `REDIS_URL` switches the store to Redis); everything else is inline.
pub fn demo_config(
    listen: SocketAddr,
    backend: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, BoxError> {
    let text = format!("{DEMO_TOML}\n{TASK_RULES}")
        .replace("@LISTEN@", &listen.to_string())
        .replace("@BACKEND@", backend);
    let redis_only = |name: &str| if name.starts_with("REDIS_") { env(name) } else { None };
    Ok(Config::from_toml(&text, "<demo>", &redis_only, &Overrides::default())?)
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn port_hint(listen: SocketAddr) -> String {
    let other = if listen.port() == 8080 { 8081 } else { 8080 };
    format!("choose another address with `cachegate demo --listen 127.0.0.1:{other}` (or any free PORT)")
}

/// Fails early, with a useful message, when the proxy's address is taken.
fn check_listen(listen: SocketAddr) -> Result<(), BoxError> {
    match std::net::TcpListener::bind(listen) {
        Ok(probe) => {
            drop(probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(format!("{listen} is already in use; {}", port_hint(listen)).into())
        }
        Err(e) => Err(format!("cannot listen on {listen}: {e}; {}", port_hint(listen)).into()),
    }
}

/// A word for a shell command line: as is when safe, else single-quoted.
fn shell_word(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The `cachegate selftest` line that checks a running demo: reads of the
/// acme tenant's tasks 1-3, purging `task:{id}` before each cold fetch, and
/// a PUT whose new name the next read must show. `program` is the binary
/// to run: the demo's own path, so the line works when `cachegate` is not
/// on `PATH` (a fresh `cargo build`).
pub fn selftest_command(program: &str, proxy_url: &str, api_token: &str, admin_token: &str) -> String {
    format!(
        "{} selftest --url {} --path {} --id 1-3 --token {} --admin-token {} --purge-key {} --write {}",
        shell_word(program),
        shell_word(proxy_url),
        shell_word("/api/v1/tasks/{id}"),
        shell_word(api_token),
        shell_word(admin_token),
        shell_word("task:{id}"),
        shell_word(r#"PUT /api/v1/tasks/{id} {"name":"selftest {nonce}"}"#),
    )
}

/// The path of the running binary, for lines meant to be pasted; plain
/// `cachegate` when the OS does not say.
fn running_program() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "cachegate".to_string())
}

/// The banner printed once everything runs.
fn banner(config: &Config, proxy: SocketAddr, api: &SampleApi, admin_token: &str) -> String {
    // A proxy on 0.0.0.0 is reached through loopback.
    let host = match proxy.ip() {
        ip if ip.is_unspecified() => match ip {
            IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, proxy.port())),
            IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, proxy.port())),
        },
        _ => proxy,
    };
    let base = format!("http://{host}/api/v1/tasks");
    let acme = api.token("acme").unwrap_or_default();
    let globex = api.token("globex").unwrap_or_default();
    let store = match &config.redis {
        Some(r) => format!(
            "redis {} db {} (key prefix {:?})",
            crate::config::redact_url(&r.url),
            r.db,
            config.cache.key_prefix
        ),
        None => "memory (in-process)".to_string(),
    };
    let auth = |token: &str| format!("-H 'Authorization: Bearer {token}'");
    let mut out = String::new();
    out.push_str("cachegate demo\n");
    out.push_str(&format!(
        "  sample task API  {} (tenants acme: tasks 1, 2, 3; globex: tasks 101, 102)\n",
        api.url()
    ));
    out.push_str(&format!("  cachegate proxy  http://{host} -> {}\n", api.url()));
    out.push_str(&format!("  cache store      {store}\n"));
    out.push_str(&format!("  edition          {}\n", config.edition.as_str()));
    out.push('\n');
    out.push_str("Tokens (new on every start):\n");
    out.push_str(&format!("  acme    {acme}\n"));
    out.push_str(&format!("  globex  {globex}\n"));
    out.push_str(&format!(
        "  admin   {admin_token}   (all scopes; {}/health, /stats, ...)\n",
        config.admin.prefix
    ));
    out.push('\n');
    out.push_str("Try it (paste one line at a time):\n");
    out.push_str("  # 1. first read: X-Cache: MISS (fetched from the API, then stored)\n");
    out.push_str(&format!("  curl -si {} {base}/1\n", auth(acme)));
    out.push_str("  # 2. same read again: X-Cache: HIT (served by cachegate)\n");
    out.push_str(&format!("  curl -si {} {base}/1\n", auth(acme)));
    out.push_str("  # 3. change its name: the write goes through and purges task:1\n");
    out.push_str(&format!(
        "  curl -si -X PUT {} -H 'Content-Type: application/json' -d '{{\"name\":\"Write the release notes (v2)\"}}' {base}/1\n",
        auth(acme)
    ));
    out.push_str("  # 4. read again: the new name, X-Cache: MISS; once more: X-Cache: HIT\n");
    out.push_str(&format!("  curl -si {} {base}/1\n", auth(acme)));
    out.push_str(&format!("  curl -si {} {base}/1\n", auth(acme)));
    out.push_str("  # 5. the other tenant cannot see acme's task: 404\n");
    out.push_str(&format!("  curl -si {} {base}/1\n", auth(globex)));
    out.push('\n');
    out.push_str(
        "Self-test (connectivity, hit/miss latency, invalidation, concurrency; add --html report.html for plots):\n",
    );
    out.push_str(&format!(
        "  {}\n",
        selftest_command(&running_program(), &format!("http://{host}"), acme, admin_token)
    ));
    out.push('\n');
    out.push_str("Press Ctrl-C to stop.\n");
    out
}

/// Runs the demo until Ctrl-C.
// Boxed here so that the lib compiles this future's code; polled only from
// the binary, it would otherwise be compiled again there (38 s of a release build).
pub fn run(args: DemoArgs) -> crate::BoxFuture<'static, Result<(), BoxError>> {
    Box::pin(run_demo(args))
}

async fn run_demo(args: DemoArgs) -> Result<(), BoxError> {
    let listen: SocketAddr = args.listen.trim().parse().map_err(|_| {
        format!(
            "--listen: expected an address such as 127.0.0.1:8080, got {:?}",
            args.listen
        )
    })?;
    check_listen(listen)?;

    let api_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| format!("cannot start the sample API on 127.0.0.1: {e}"))?;
    let api = serve_sample_api(api_listener).await;

    let mut config = match demo_config(listen, &api.url(), &process_env) {
        Ok(c) => c,
        Err(e) => {
            api.shutdown().await;
            return Err(e);
        }
    };
    let admin_token = match args.admin_token.filter(|t| !t.trim().is_empty()) {
        Some(t) => t,
        None => crate::admin::new_token().0,
    };
    config.admin.tokens.push(AdminToken {
        name: "demo".to_string(),
        sha256: crate::admin::hash_token(&admin_token),
        scopes: vec![AdminScope::Read, AdminScope::Purge, AdminScope::Inspect],
    });
    let banner_config = config.clone();
    let proxy = match crate::server::start(config).await {
        Ok(p) => p,
        Err(e) => {
            api.shutdown().await;
            return Err(format!("cannot start the proxy: {e}; {}", port_hint(listen)).into());
        }
    };

    println!("{}", banner(&banner_config, proxy.addr, &api, &admin_token));

    let signal = tokio::signal::ctrl_c().await;
    println!("stopping the demo");
    proxy.shutdown(Duration::from_secs(5)).await;
    tracing::debug!("demo: proxy stopped");
    api.shutdown().await;
    tracing::debug!("demo: sample API stopped");
    signal.map_err(|e| format!("cannot wait for Ctrl-C: {e}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_uses_redis_only_when_redis_url_is_set() {
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let memory = demo_config(listen, "http://127.0.0.1:9", &|_| None).unwrap();
        assert!(memory.redis.is_none());
        assert_eq!(memory.server.listen, listen);
        assert_eq!(memory.edition.as_str(), "business");
        let env = |name: &str| match name {
            "REDIS_URL" => Some("redis://127.0.0.1:6379/9".to_string()),
            "CACHEGATE_LISTEN" => Some("0.0.0.0:1".to_string()),
            _ => None,
        };
        let redis = demo_config(listen, "http://127.0.0.1:9", &env).unwrap();
        let r = redis.redis.as_ref().unwrap();
        assert_eq!((r.url.as_str(), r.db), ("redis://127.0.0.1:6379", 9));
        // Only REDIS_* is read from the environment.
        assert_eq!(redis.server.listen, listen);
    }

    #[test]
    fn selftest_command_quotes_what_the_shell_would_split() {
        let line = selftest_command(
            "/opt/my builds/cachegate",
            "http://127.0.0.1:8080",
            "acme-00ff",
            "tok_en-1",
        );
        assert!(line.starts_with(
            "'/opt/my builds/cachegate' selftest --url http://127.0.0.1:8080 --path '/api/v1/tasks/{id}' --id 1-3"
        ));
        assert!(line.contains(" --token acme-00ff --admin-token tok_en-1 --purge-key 'task:{id}' "));
        assert!(line.ends_with(r#" --write 'PUT /api/v1/tasks/{id} {"name":"selftest {nonce}"}'"#));
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn taken_port_is_reported_with_a_hint() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = check_listen(taken.local_addr().unwrap()).unwrap_err().to_string();
        assert!(err.contains("already in use"), "{err}");
        assert!(err.contains("--listen 127.0.0.1:"), "{err}");
    }
}
