//! `cachegate warm`: fill the cache from a list of paths, once, with a
//! progress bar on a terminal and a summary at the end.
//!
//! The gateway is built in-process from the config (the same store, rules
//! and backend the proxy uses), so what it stores is what a client's
//! request would have stored. Exit status: 0 when no path failed, 1 when
//! any did, 2 for a usage or config error.

use super::{Options, Summary, Verdict};
use crate::config::{parse_path_list, Config, Overrides, MAX_WARM_CONCURRENCY};
use crate::gateway::Gateway;
use http::{HeaderName, HeaderValue};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long `cachegate warm` waits for the store to answer.
const STORE_WAIT: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug, Clone)]
pub struct WarmArgs {
    /// The proxy.toml whose rules, store and backend to use.
    #[arg(long, short, default_value = "proxy.toml")]
    pub config: PathBuf,
    /// A file of paths, one per line (`#` comments); `-` reads standard
    /// input. Default: the config's [warm] paths.
    #[arg(long, value_name = "FILE")]
    pub paths: Option<String>,
    /// Requests in flight at once (default: [warm] concurrency, else 4).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// At most this many requests per second (default: [warm] rate, else no limit).
    #[arg(long)]
    pub rate: Option<f64>,
    /// A header sent with every request, `Name: value` (repeatable); it
    /// replaces a [warm] header of the same name.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Backend URL (overrides CACHEGATE_BACKEND and [backend] url).
    #[arg(long)]
    pub backend: Option<String>,
    /// Redis URL (overrides REDIS_URL and [redis] url).
    #[arg(long)]
    pub redis_url: Option<String>,
}

/// Runs `cachegate warm`.
// Boxed here so that the lib compiles this future's code; polled only from
// the binary, it would otherwise be compiled again there (38 s of a release build).
pub fn run(args: WarmArgs) -> crate::BoxFuture<'static, ExitCode> {
    Box::pin(run_warm(args))
}

async fn run_warm(args: WarmArgs) -> ExitCode {
    let (config, paths, options) = match prepare(&args).await {
        Ok(p) => p,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let gateway = match Gateway::new(Arc::new(config)).await {
        Ok(g) => Arc::new(g),
        Err(e) => {
            eprintln!("cachegate warm: {e}");
            return ExitCode::from(2);
        }
    };
    // A store that does not come up fails every path (without a request).
    if !super::wait_for_store(&gateway, STORE_WAIT).await {
        tracing::warn!("the store is not reachable");
    }
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(paths.len() as u64);
        if let Ok(style) = ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} ({eta} left) {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut counts = [0usize; 3];
    let shared = gateway.clone();
    let summary = super::run(
        move || shared.clone(),
        paths,
        &options,
        |report| {
            counts[report.result as usize] += 1;
            bar.inc(1);
            bar.set_message(format!(
                "stored {} skipped {} failed {}",
                counts[0], counts[1], counts[2]
            ));
        },
    )
    .await;
    bar.finish_and_clear();
    // The gateway finishes some work in background tasks: it releases the
    // fleet-wide fill lock of each fetched path, and stores a body of
    // unknown length once read. Each is one store call bounded by the store
    // timeout: give them that before the process exits, or a lock left
    // behind would hold clients of that entry until it expires.
    let streamed = summary
        .paths
        .iter()
        .any(|p| p.reason.as_deref() == Some(super::STREAMED));
    if gateway.store().kind() == "redis" || streamed {
        tokio::time::sleep(gateway.config().cache.store_timeout * 2).await;
    }
    let out = if args.json {
        serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n"
    } else {
        text_summary(&summary)
    };
    // A closed pipe is not worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    if summary.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The config, the paths and the options, or the message of a usage or
/// config error.
async fn prepare(args: &WarmArgs) -> Result<(Config, Vec<String>, Options), String> {
    let overrides = Overrides {
        listen: None,
        backend: args.backend.clone(),
        redis_url: args.redis_url.clone(),
    };
    let mut config = Config::load(&args.config, &overrides).map_err(|e| e.to_string())?;
    let paths = match args.paths.as_deref() {
        None if config.warm.paths.is_empty() => {
            return Err(
                "cachegate warm: no paths: give --paths FILE (- for standard input), or [warm] paths in the config"
                    .into(),
            )
        }
        None => config.warm.paths.clone(),
        Some(source) => {
            let (name, text) = if source == "-" {
                let text = tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin()))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cachegate warm: cannot read standard input: {e}"))?;
                ("<stdin>".to_string(), text)
            } else {
                let text = std::fs::read_to_string(source).map_err(|e| format!("cachegate warm: {source}: {e}"))?;
                (source.to_string(), text)
            };
            parse_path_list(&text).map_err(|(line, e)| format!("{name}:{line}: {e}"))?
        }
    };
    let mut options = Options::from_config(&config.warm);
    if let Some(n) = args.concurrency {
        if !(1..=MAX_WARM_CONCURRENCY).contains(&n) {
            return Err(format!(
                "cachegate warm: --concurrency must be 1 to {MAX_WARM_CONCURRENCY}"
            ));
        }
        options.concurrency = n;
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err("cachegate warm: --rate must be a positive number of requests per second".into());
        }
        options.rate = Some(rate);
    }
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("cachegate warm: --header {h:?}: expected \"Name: value\""))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("cachegate warm: --header: {:?} is not a header name", name.trim()))?;
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("cachegate warm: --header: the value of {name} is not a header value"))?;
        value.set_sensitive(true);
        options.headers.retain(|(n, _)| *n != name);
        options.headers.push((name, value));
    }
    // A secret the config takes from the environment must be there, unless
    // --header gives that header.
    if let Some((_, unset)) = config
        .warm
        .unset_env
        .iter()
        .find(|(name, _)| !options.headers.iter().any(|(n, _)| n == name))
    {
        return Err(unset.to_string());
    }
    // Access log lines on standard output would run into the summary.
    if config.access_log.path.is_none() {
        config.access_log.enabled = false;
    }
    // Only warnings unless the config, --log or RUST_LOG say otherwise: the
    // summary is the output.
    crate::logging::apply_config_level(Some(config.log_level.as_deref().unwrap_or("warn")));
    Ok((config, paths, options))
}

fn text_summary(s: &Summary) -> String {
    let mut out = format!(
        "warmed {} paths in {:.1} s: {} stored, {} skipped, {} failed\n",
        s.total,
        s.elapsed_ms as f64 / 1000.0,
        s.stored,
        s.skipped,
        s.failed
    );
    if !s.skipped_reasons.is_empty() {
        out.push_str("skipped:\n");
        for (reason, n) in &s.skipped_reasons {
            out.push_str(&format!("  {n:>6}  {reason}\n"));
        }
    }
    if s.failed > 0 {
        out.push_str("failed:\n");
        for (reason, n) in &s.failed_reasons {
            out.push_str(&format!("  {n:>6}  {reason}\n"));
            for p in s
                .paths
                .iter()
                .filter(|p| p.result == Verdict::Failed && p.reason.as_deref() == Some(reason))
            {
                out.push_str(&format!("          {}\n", p.path));
            }
        }
    }
    out
}
