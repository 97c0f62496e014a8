//! The `cachegate` command line. Everything it runs lives in the library.

use cachegate::config::{Config, Overrides};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cachegate",
    version,
    about = "A transparent HTTP caching reverse proxy backed by Redis"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter in RUST_LOG syntax (default: $RUST_LOG, else "info").
    #[arg(long, global = true)]
    log: Option<String>,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// The proxy.toml to use.
    #[arg(long, short, default_value = "proxy.toml")]
    config: PathBuf,
    /// Listen address (overrides CACHEGATE_LISTEN and [server] listen).
    #[arg(long)]
    listen: Option<String>,
    /// Backend URL (overrides CACHEGATE_BACKEND and [backend] url).
    #[arg(long)]
    backend: Option<String>,
    /// Redis URL (overrides REDIS_URL and [redis] url).
    #[arg(long)]
    redis_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default when no command is given).
    Serve(ServeArgs),
    /// Validate a config and print the compiled rules; exit 2 on errors.
    Check(ServeArgs),
    /// Validate proxy.toml, then ask the running proxy to reload it (as
    /// SIGHUP does); exit 2 if the file is invalid, 1 if the proxy refuses.
    Reload(ReloadArgs),
    /// Run a sample task API with cachegate in front of it.
    Demo(cachegate::demo::DemoArgs),
    /// Run the sample task API alone (UUID task ids, as the reference's), as
    /// docker-compose.yml's backend; prints each tenant's token.
    DemoBackend(cachegate::demo::DemoBackendArgs),
    /// Fill the cache from a list of paths through the normal fill path;
    /// exit 1 if any path failed, 2 on a usage or config error.
    Warm(cachegate::warm::WarmArgs),
    /// Check a running deployment: connectivity, hit/miss latency, invalidation,
    /// concurrency; exit 1 when a check fails, 2 on usage errors.
    Selftest(cachegate::selftest::SelftestArgs),
    /// Show what one cache key holds in Redis (entries, TTL, headers,
    /// body); exit 1 if nothing, 2 on a usage or config error.
    Inspect(cachegate::admin::inspect::InspectArgs),
    /// Print a new random admin token and the line to paste into proxy.toml.
    #[command(alias = "hash-token")]
    Token {
        /// Hash a token of your own instead of making a new one: read from
        /// standard input (`--hash`, so it stays out of shell history), or
        /// given here (`--hash TOKEN`, discouraged).
        #[arg(long, num_args = 0..=1, default_missing_value = "-", value_name = "TOKEN")]
        hash: Option<String>,
        /// The token's name in proxy.toml.
        #[arg(long, default_value = "ops")]
        name: String,
    },
}

#[derive(clap::Args)]
struct ReloadArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// The running proxy: a base URL (`http://host:8080`; the admin prefix
    /// and `/reload` are appended) or the full reload route. Default: the
    /// address the instance serving this config noted at start, else the
    /// admin listener, else the main listener, from the config.
    #[arg(long)]
    url: Option<String>,
    /// An admin token with the purge scope.
    #[arg(long, env = "CACHEGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cachegate::logging::init(matches!(cli.log_format, LogFormat::Json), cli.log.as_deref());
    let runtime = match runtime_for_this_machine().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cachegate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        None => runtime.block_on(serve(cli.serve)),
        Some(Command::Serve(args)) => runtime.block_on(serve(args)),
        Some(Command::Check(args)) => check(args),
        Some(Command::Reload(args)) => runtime.block_on(reload(args)),
        Some(Command::Token { hash, name }) => {
            let (token, sha) = match hash.as_deref() {
                Some("-") => match read_token_from_stdin() {
                    Ok(t) => {
                        let sha = hex::encode(cachegate::admin::hash_token(&t));
                        (t, sha)
                    }
                    Err(e) => {
                        eprintln!("cachegate token: {e}");
                        return ExitCode::from(2);
                    }
                },
                Some(t) => {
                    eprintln!("cachegate token: a token given as an argument is kept in shell history; `cachegate token --hash` reads it from standard input");
                    (t.to_string(), hex::encode(cachegate::admin::hash_token(t)))
                }
                None => cachegate::admin::new_token(),
            };
            if hash.is_none() {
                println!("token: {token}");
            }
            println!("# for CACHEGATE_ADMIN_TOKENS or a CACHEGATE_ADMIN_TOKENS_FILE secret (one per line):");
            println!("{name}:{sha}:read+purge+inspect");
            println!("# paste into proxy.toml (the token itself is not stored there):");
            println!("[[admin.tokens]]");
            println!("name = {name:?}");
            println!("sha256 = \"{sha}\"");
            println!("scopes = [\"read\", \"purge\", \"inspect\"]");
            ExitCode::SUCCESS
        }
        Some(Command::Inspect(args)) => runtime.block_on(cachegate::admin::inspect::run(args)),
        Some(Command::Warm(args)) => runtime.block_on(cachegate::warm::cli::run(args)),
        Some(Command::Selftest(args)) => ExitCode::from(runtime.block_on(cachegate::selftest::run(args))),
        Some(Command::DemoBackend(args)) => runtime.block_on(async {
            match cachegate::demo::backend::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cachegate demo-backend: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
        Some(Command::Demo(args)) => runtime.block_on(async {
            match cachegate::demo::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cachegate demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

/// The token to hash: the first line of standard input, without its line
/// end; an empty one is a usage error.
fn read_token_from_stdin() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the token from standard input: {e}"))?;
    let token = line.trim_end_matches(['\r', '\n']).to_string();
    if token.trim().is_empty() {
        return Err("no token on standard input (pipe it in: `printf %s \"$TOKEN\" | cachegate token --hash`)".into());
    }
    Ok(token)
}

/// A runtime sized to the cores this process may use (its CPU affinity,
/// as `taskset` or a container's cpuset sets it): with one, a
/// current-thread runtime, which skips the work-stealing machinery and runs
/// woken tasks in order, so fred's writer sends many queued Redis commands
/// in one write; with more, a worker per core.
///
/// `CACHEGATE_RUNTIME=multi` (or `current`) overrides the choice, for
/// comparing the two.
fn runtime_for_this_machine() -> tokio::runtime::Builder {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let current = match std::env::var("CACHEGATE_RUNTIME").as_deref() {
        Ok("multi") => false,
        Ok("current") => true,
        _ => cores == 1,
    };
    if current {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(cores);
        builder
    }
}

fn overrides(args: &ServeArgs) -> Overrides {
    Overrides {
        listen: args.listen.clone(),
        backend: args.backend.clone(),
        redis_url: args.redis_url.clone(),
    }
}

fn load(args: &ServeArgs) -> Result<Config, ExitCode> {
    Config::load(&args.config, &overrides(args)).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn check(args: ServeArgs) -> ExitCode {
    match load(&args) {
        Err(code) => code,
        Ok(config) => {
            // What start-up builds from the Redis settings, built here too,
            // so check refuses what start-up would.
            if let Some(Err(e)) = config.redis.as_ref().map(cachegate::store::redis_connect::fred_config) {
                eprintln!("{}: the Redis settings are not usable: {e}", config.source);
                return ExitCode::from(2);
            }
            let o = &config.origins;
            let mut out = format!(
                "{}: ok\nedition {}; listen {} ({}); backend {} ({})\n",
                config.source,
                config.edition.as_str(),
                config.server.listen,
                o.listen,
                config.backend.url,
                o.backend
            );
            out.push_str(&match &config.redis {
                Some(r) => format!(
                    "store redis ({}) {} ({}) db {} ({}); key prefix {:?}; in-process tier {}\n",
                    r.topology.name(),
                    cachegate::config::redact_url(&r.url),
                    o.redis_url,
                    r.db,
                    o.redis_db,
                    config.cache.key_prefix,
                    match (config.tier_in_use(), config.tier.consistency) {
                        (false, _) => "off".to_string(),
                        (true, cachegate::config::Consistency::Eventual) => "on (eventual)".to_string(),
                        (true, cachegate::config::Consistency::ReadYourWrites) =>
                            format!("on (read-your-writes, lease {} ms)", config.tier.lease.as_millis()),
                    }
                ),
                None => format!(
                    "store memory ({} entries, {} bytes)\n",
                    config.memory.max_entries, config.memory.max_bytes
                ),
            });
            out.push_str(&config.inputs_summary());
            out.push_str(&config.rules.to_string());
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
            ExitCode::SUCCESS
        }
    }
}

/// Checks the file here first, so a typo is reported with its place
/// before the running proxy is asked to read it.
async fn reload(args: ReloadArgs) -> ExitCode {
    let config = match load(&args.serve) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A --listen given here wins; else the address the instance running
    // this config noted at start; else the config's own.
    let url = match (&args.url, &args.serve.listen) {
        (Some(given), _) => cachegate::reload::reload_url_from(given, &config.admin.prefix),
        (None, Some(_)) => cachegate::reload::admin_reload_url(&config),
        (None, None) => cachegate::reload::noted_instance(&args.serve.config)
            .unwrap_or_else(|| cachegate::reload::admin_reload_url(&config)),
    };
    match cachegate::reload::request_reload(&url, args.admin_token.as_deref()).await {
        Ok((status, body)) if status.is_success() => {
            println!("{}", body.trim_end());
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("cachegate reload: {url} answered {status}: {}", body.trim_end());
            ExitCode::from(if status == 422 { 2 } else { 1 })
        }
        Err(e) if cachegate::reload::reload_route_has_tls(&config) => {
            eprintln!(
                "cachegate reload: {url}: {e} (the listener serving the reload route speaks TLS, \
                 which cachegate reload does not: send the instance SIGHUP instead)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cachegate reload: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match load(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    cachegate::logging::apply_config_level(config.log_level.as_deref());
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let mut running = match cachegate::server::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cachegate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let prefix = running.gateway().config().admin.prefix.clone();
    cachegate::reload::note_instance(&args.config, running.admin_addr.unwrap_or(running.addr), &prefix);
    let (path, overrides) = (args.config.clone(), overrides(&args));
    running
        .live()
        .set_loader(Box::new(move || Config::load(&path, &overrides)));
    let live = running.live().clone();
    tokio::select! {
        _ = shutdown_signal() => {}
        // SIGHUP reloads proxy.toml; this future never finishes.
        _ = reload_on_hangup(live) => {}
        // The server stopped on its own (the listener failed).
        _ = running.stopped() => return ExitCode::FAILURE,
    }
    let grace = running.gateway().config().server.shutdown_timeout;
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: finishing in-flight requests"
    );
    if !running.shutdown(grace).await {
        tracing::warn!(
            "in-flight requests or pending purges still unfinished after shutdown_timeout_ms; exiting anyway"
        );
    }
    cachegate::reload::forget_instance(&args.config);
    ExitCode::SUCCESS
}

/// Reloads the config on every SIGHUP (errors are logged by the reload).
async fn reload_on_hangup(live: std::sync::Arc<cachegate::reload::Live>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            while hup.recv().await.is_some() {
                let _ = live.reload().await;
            }
        }
    }
    std::future::pending::<()>().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
