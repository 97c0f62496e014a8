//! Admin API helpers: the tokens the tests configure (and the environment
//! that holds the `token_env` one), an instance's config with them,
//! authenticated requests, and `/metrics` fetched with a token.

#![allow(dead_code)]

use super::{Client, Proxy, RedisServer, Resp, Scrape, STD_RULES};

pub const EDITIONS: [&str; 3] = ["community", "business", "enterprise"];

/// Bearer tokens the tests configure. `READ` and `PURGE` and `ALL` are given
/// by `sha256`, `INSPECT` by `token_env` (read from the env closure).
pub const READ: &str = "read-token-0123456789abcdef0123456789abcdef";
pub const PURGE: &str = "purge-token-0123456789abcdef0123456789abcdef";
pub const INSPECT: &str = "inspect-token-0123456789abcdef0123456789abcdef";
pub const ALL: &str = "all-token-0123456789abcdef0123456789abcdef";
pub const INSPECT_ENV: &str = "CACHEGATE_TEST_INSPECT_TOKEN";
/// Configured through a variable the env closure does not know: disabled.
pub const UNSET_ENV: &str = "CACHEGATE_TEST_UNSET_TOKEN";

/// One `[[admin.tokens]]` entry: `token` (given by its `sha256`) with `scopes`.
pub fn token_toml(name: &str, token: &str, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[admin.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{}]\n\n",
        hex::encode(cachegate::admin::hash_token(token)),
        scopes.join(", ")
    )
}

/// Every scope, for [`token_toml`].
pub const EVERY_SCOPE: &[&str] = &["read", "purge", "inspect"];

/// `[[admin.tokens]]` for the four tokens (plus one whose variable is unset).
pub fn tokens_toml() -> String {
    let mut out = String::new();
    out += &token_toml("reader", READ, &["read"]);
    out += &token_toml("purger", PURGE, &["purge"]);
    out += &token_toml("root", ALL, EVERY_SCOPE);
    out +=
        &format!("[[admin.tokens]]\nname = \"inspector\"\ntoken_env = \"{INSPECT_ENV}\"\nscopes = [\"inspect\"]\n\n");
    out += &format!("[[admin.tokens]]\nname = \"ghost\"\ntoken_env = \"{UNSET_ENV}\"\nscopes = [\"read\", \"purge\", \"inspect\"]\n\n");
    out
}

/// The environment the tests hand to `Config::from_toml`: only the inspect
/// token's variable is set (nothing leaks in from the process environment).
pub fn test_env(name: &str) -> Option<String> {
    match name {
        INSPECT_ENV => Some(INSPECT.to_string()),
        _ => None,
    }
}

/// How to build one instance's config.
#[derive(Clone)]
pub struct Setup {
    pub edition: &'static str,
    pub backend: String,
    pub redis: String,
    /// `[redis] db`; `None` leaves the edition's default DB.
    pub db: Option<u8>,
    pub key_prefix: String,
    /// `[store] timeout_ms`; `None` keeps the built-in default.
    pub store_timeout_ms: Option<u64>,
    /// Extra lines for `[admin]` (e.g. `listen = ...`).
    pub admin_extra: String,
}

impl Setup {
    pub fn new(edition: &'static str, backend: &str, redis: &RedisServer) -> Setup {
        Setup {
            edition,
            backend: backend.to_string(),
            redis: redis.url(),
            db: Some(0),
            key_prefix: String::new(),
            store_timeout_ms: Some(1000),
            admin_extra: String::new(),
        }
    }

    /// Starts cachegate with this config.
    pub async fn start(&self) -> Proxy {
        Proxy::start(&self.toml()).await
    }

    pub fn toml(&self) -> String {
        let mut t = format!("edition = \"{}\"\n\n", self.edition);
        t += &format!("[backend]\nurl = \"{}\"\ntimeout_ms = 5000\n\n", self.backend);
        t += "[store]\nkind = \"redis\"\n";
        if let Some(ms) = self.store_timeout_ms {
            t += &format!("timeout_ms = {ms}\n");
        }
        t += &format!("\n[redis]\nurl = \"{}\"\n", self.redis);
        if let Some(db) = self.db {
            t += &format!("db = {db}\n");
        }
        if !self.key_prefix.is_empty() {
            t += &format!("key_prefix = \"{}\"\n", self.key_prefix);
        }
        t += &format!("\n[admin]\n{}\n\n", self.admin_extra);
        t += &tokens_toml();
        t += STD_RULES;
        t
    }
}

/// An admin request with an optional bearer token.
pub async fn call(client: &Client, method: &str, path: &str, token: Option<&str>) -> Resp {
    let auth;
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(t) = token {
        auth = format!("Bearer {t}");
        headers.push(("authorization", &auth));
    }
    client.send(method, path, &headers, super::empty()).await
}

/// `GET` with the all-scopes token, expecting 200; the JSON body.
pub async fn get_ok(client: &Client, path: &str) -> serde_json::Value {
    let r = call(client, "GET", path, Some(ALL)).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

/// `DELETE` with the all-scopes token, expecting 200; the JSON body.
pub async fn delete_ok(client: &Client, path: &str) -> serde_json::Value {
    let r = call(client, "DELETE", path, Some(ALL)).await;
    assert_eq!(r.status, 200, "DELETE {path}: {}", r.text());
    r.json()
}

/// Fetches and parses `/metrics` (with the all-scopes token, harmless when
/// none is needed).
pub async fn scrape(client: &Client) -> Scrape {
    let r = call(client, "GET", "/metrics", Some(ALL)).await;
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    Scrape::parse(&r.text())
}
