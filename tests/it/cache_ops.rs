//! Operator tools on the cache: `CACHE_TTL` as the default TTL of rules
//! that set none (and `check` naming each rule's TTL source), `PURGE` of
//! one URL on the main listener, the opt-in `X-Cache-Key` header, and
//! `cachegate inspect`.

use crate::common::*;
use std::process::Command;

/// Runs the binary with `CACHE_TTL` set (or removed, for `None`).
fn cachegate(args: &[&str], cache_ttl: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachegate"));
    cmd.args(args)
        .env("CACHEGATE_ADMIN_TOKEN", "test-token")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST")
        .env_remove("REDIS_PORT")
        .env_remove("REDIS_DB")
        .env_remove("CACHEGATE_LISTEN");
    match cache_ttl {
        Some(v) => cmd.env("CACHE_TTL", v),
        None => cmd.env_remove("CACHE_TTL"),
    };
    let out = cmd.output().expect("run cachegate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `check` line of one rule.
fn rule_line<'a>(stdout: &'a str, name: &str) -> &'a str {
    let start = format!("rule {name:?}:");
    stdout
        .lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("no line for rule {name}: {stdout}"))
}

/// The shipped configs leave the task rule's TTL to `CACHE_TTL`, then
/// `[redis] default_ttl`; `check` says which one each rule uses.
#[test]
fn check_prints_each_rules_ttl_and_its_source() {
    for file in [
        "proxy.toml",
        "config/community.toml",
        "config/business.toml",
        "config/enterprise.toml",
    ] {
        let (code, stdout, stderr) = cachegate(&["check", "--config", file], Some("7"));
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(
            rule_line(&stdout, "task").contains("ttl 7s (CACHE_TTL env)"),
            "{file}: {stdout}"
        );
        assert!(
            rule_line(&stdout, "task-list").contains("ttl 60s (rule)"),
            "{file}: a rule's own ttl wins over CACHE_TTL: {stdout}"
        );
        let (code, stdout, stderr) = cachegate(&["check", "--config", file], None);
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(
            rule_line(&stdout, "task").contains("ttl 300s ([redis] default_ttl)"),
            "{file}: {stdout}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, "[[rule]]\nname = \"r\"\npath = '^/r$'\nkey = \"r\"\n").unwrap();
    let (code, stdout, stderr) = cachegate(&["check", "--config", &bare.display().to_string()], None);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        rule_line(&stdout, "r").contains("ttl 300s (built-in default)"),
        "{stdout}"
    );
}

#[test]
fn a_bad_cache_ttl_is_a_config_error() {
    for bad in ["abc", "0", "-5", "1.5"] {
        let (code, _, stderr) = cachegate(&["check", "--config", "proxy.toml"], Some(bad));
        assert_eq!(code, 2, "CACHE_TTL={bad}: {stderr}");
        assert!(
            stderr.contains("CACHE_TTL") && stderr.contains("positive number of seconds"),
            "CACHE_TTL={bad}: {stderr}"
        );
    }
}

const TTL_RULES: &str = r#"
[[rule]]
name = "defaulted"
path = '^/d/(?P<id>[^/]+)$'
key = "d:{id}"

[[rule]]
name = "own"
path = '^/o/(?P<id>[^/]+)$'
key = "o:{id}"
ttl = 120
"#;

fn cache_ttl_7(name: &str) -> Option<String> {
    match name {
        "CACHE_TTL" => Some("7".to_string()),
        _ => admin::test_env(name),
    }
}

/// What Redis holds: a rule without `ttl` stores for `CACHE_TTL`
/// seconds; one with its own `ttl` ignores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_ttl_is_the_ttl_of_rules_without_one() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let text = render(&format!("{HEAD}\n{TTL_RULES}"), Kind::Redis, &backend.url(), Some(&redis.url()));
    let proxy = Proxy::start_with_env(&text, cache_ttl_7).await;
    let client = proxy.client();
    for path in ["/d/1", "/o/1"] {
        backend.on("GET", path, Reply::new().body("x"));
        assert_eq!(client.get(path).await.x_cache(), Some("MISS"));
        assert_eq!(client.get(path).await.x_cache(), Some("HIT"));
    }
    let defaulted = redis.pttl("d:1").await;
    assert!((1..=7_000).contains(&defaulted), "CACHE_TTL=7: pttl {defaulted}");
    let own = redis.pttl("o:1").await;
    assert!((100_000..=120_000).contains(&own), "ttl = 120 kept: pttl {own}");
}
