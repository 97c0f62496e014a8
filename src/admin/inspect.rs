//! `cachegate inspect KEY`: what one logical key holds in Redis, read with
//! the config's Redis settings, as `redis-cli GET task:…` showed it in the
//! reference deployment: each entry's scope field, status, freshness, TTL,
//! headers and body (text, or base64 when binary; cut at `--max-body`
//! bytes and flagged), and the `Vary` markers. Read-only: nothing is
//! created (not even the scope secret). Exit 0 when found, 1 when the key
//! holds nothing or Redis does not answer, 2 on a usage or config error.

use crate::config::{Config, Overrides, StoreKind};
use crate::store::entry::{now_ms, Entry};
use crate::store::protocol::Protocol;
use crate::store::redis::{RedisBackend, RedisSettings};
use crate::store::{Record, Store};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The logical key, as a rule renders it (e.g. task:123), without
    /// `[redis] key_prefix`.
    pub key: String,
    /// The proxy.toml whose Redis settings to use.
    #[arg(long, short, default_value = "proxy.toml")]
    pub config: PathBuf,
    /// Redis URL (overrides REDIS_URL and [redis] url).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Body bytes shown per entry; a longer body is cut and flagged.
    #[arg(long, default_value_t = 2048)]
    pub max_body: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Boxed, so the binary polls one future compiled in the library.
pub fn run(args: InspectArgs) -> crate::BoxFuture<'static, ExitCode> {
    Box::pin(inspect(args))
}

async fn inspect(args: InspectArgs) -> ExitCode {
    let overrides = Overrides {
        redis_url: args.redis_url.clone(),
        ..Overrides::default()
    };
    let config = match Config::load(&args.config, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.key.is_empty() || args.key.starts_with(crate::rules::INTERNAL_PREFIX) {
        eprintln!("cachegate inspect: give a cache key such as task:123 (cachegate's own __cg: keys are not entries)");
        return ExitCode::from(2);
    }
    let store = match open(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cachegate inspect: {e}");
            return ExitCode::from(2);
        }
    };
    let record = match store.record(&args.key).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            eprintln!("cachegate inspect: no cached entry under {:?}", args.key);
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("cachegate inspect: Redis did not answer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shown = describe(&args.key, &record, args.max_body);
    let out = if args.json {
        format!("{shown:#}\n")
    } else {
        as_text(&shown)
    };
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    ExitCode::SUCCESS
}

/// The config's Redis store, read-only; the memory store lives inside the
/// running proxy, which answers `GET {prefix}/key/{key}` instead.
async fn open(config: &Config) -> Result<Protocol<RedisBackend>, String> {
    let (StoreKind::Redis, Some(redis)) = (&config.store, &config.redis) else {
        return Err(format!(
            "this config uses the in-process memory store; ask the running proxy: GET {}/key/<key> (inspect scope)",
            config.admin.prefix
        ));
    };
    let settings = RedisSettings {
        prefix: &config.cache.key_prefix,
        timeout: Duration::from_secs(5),
        tombstone_ttl: Duration::from_secs(60),
        connect_wait: Duration::from_secs(5),
        share_secret: false,
    };
    let backend = RedisBackend::connect(redis, settings)
        .await
        .map_err(|e| format!("cannot use Redis: {e}"))?;
    Ok(Protocol::over(backend, config.cache.scope_secret.as_deref()))
}

/// The record as JSON: one object per entry field, and the fields that
/// hold `Vary` markers (they point to the variants, stored beside them).
pub fn describe(key: &str, record: &Record, max_body: usize) -> Value {
    let now = now_ms();
    let mut entries = Vec::new();
    let mut markers = Vec::new();
    for (field, raw) in &record.fields {
        let Some(entry) = Entry::decode(raw) else {
            markers.push(json!(field));
            continue;
        };
        let mut headers = Map::new();
        for (name, v) in &entry.headers {
            headers.insert(name.as_str().to_string(), json!(String::from_utf8_lossy(v.as_bytes())));
        }
        let cut = entry.body.len() > max_body;
        let (body, encoding) = body_text(&entry.body[..entry.body.len().min(max_body)]);
        entries.push(json!({
            "field": field,
            "status": entry.status.as_u16(),
            "fresh": entry.is_fresh(now),
            "ttl": entry.ttl_left_secs(now),
            "age": entry.age_secs(now),
            "stored_at": entry.stored_at_ms / 1000,
            "headers": headers,
            "body": body,
            "body_encoding": encoding,
            "body_bytes": entry.body.len(),
            "truncated": cut,
        }));
    }
    json!({
        "key": key,
        "record_ttl": record.ttl.map(|t| t.as_secs()),
        "entries": entries,
        "vary_markers": markers,
    })
}

/// A body as text when it is UTF-8 (a cut may end inside a character: the
/// partial one is dropped), else base64.
fn body_text(body: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(body) {
        Ok(s) => (s.to_string(), "utf-8"),
        Err(e) if e.error_len().is_none() => (String::from_utf8_lossy(&body[..e.valid_up_to()]).into_owned(), "utf-8"),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), "base64"),
    }
}

fn as_text(shown: &Value) -> String {
    let mut out = format!("key {}\n", shown["key"].as_str().unwrap_or(""));
    match shown["record_ttl"].as_u64() {
        Some(t) => out += &format!("record ttl {t} s\n"),
        None => out += "record ttl none\n",
    }
    for m in shown["vary_markers"].as_array().into_iter().flatten() {
        out += &format!("vary marker in field {}\n", m.as_str().unwrap_or(""));
    }
    for e in shown["entries"].as_array().into_iter().flatten() {
        out += &format!(
            "\nentry {}: status {}, {}, ttl {} s, age {} s, stored at {}, {} body bytes\n",
            e["field"].as_str().unwrap_or(""),
            e["status"],
            if e["fresh"] == true { "fresh" } else { "stale" },
            e["ttl"],
            e["age"],
            e["stored_at"],
            e["body_bytes"],
        );
        for (name, v) in e["headers"].as_object().into_iter().flatten() {
            out += &format!("  {name}: {}\n", v.as_str().unwrap_or(""));
        }
        out += &format!(
            "  body ({}{}):\n{}\n",
            e["body_encoding"].as_str().unwrap_or(""),
            if e["truncated"] == true { ", truncated" } else { "" },
            e["body"].as_str().unwrap_or("")
        );
    }
    out
}
