//! The curl examples of `docs/admin-api.md`, run as written (with `$TOKEN`
//! and `localhost:8080` pointed at a test instance): every one answers with
//! the status and JSON fields its section documents, and every route the
//! admin API answers has an example.

use crate::common::admin::*;
use crate::common::{Backend, Client, RedisServer};

/// One `curl` command: method, path and query, whether it sends the token,
/// and its `-d` body.
struct Example {
    method: String,
    path: String,
    token: bool,
    body: Option<String>,
}

/// The `curl` commands of a document, each with its `\`-continued lines
/// joined into one.
fn curl_commands(doc: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("curl ") {
            continue;
        }
        let mut command = line.to_string();
        while command.ends_with('\\') {
            command.pop();
            command.push_str(lines.next().unwrap_or("").trim());
        }
        commands.push(command);
    }
    commands
}

fn examples(doc: &str) -> Vec<Example> {
    curl_commands(doc)
        .into_iter()
        .map(|line| {
            let body = line
                .split_once("-d '")
                .and_then(|(_, rest)| rest.split_once('\''))
                .map(|(body, _)| body.to_string());
            let line = line.as_str();
            let line = line.split("    #").next().unwrap_or(line);
            let method = ["DELETE", "POST", "PURGE"]
                .into_iter()
                .find(|m| line.contains(&format!("-X {m}")))
                .unwrap_or("GET");
            let url = line
                .split_whitespace()
                .map(|w| w.trim_matches('\''))
                .find(|w| w.starts_with("http://localhost:8080"))
                .unwrap_or_else(|| panic!("no URL in {line:?}"));
            Example {
                method: method.to_string(),
                path: url.trim_start_matches("http://localhost:8080").to_string(),
                token: line.contains("$TOKEN"),
                body,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_example_works_as_written() {
    let doc = std::fs::read_to_string("docs/admin-api.md").unwrap();
    let examples = examples(&doc);
    assert!(
        examples.len() >= 14,
        "one example per route at least: {}",
        examples.len()
    );

    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let instance = Setup::new("enterprise", &backend.url(), &redis).start().await;
    let client: Client = instance.client();
    // Something to find: task:1 cached.
    client.get("/api/v1/tasks/1").await;

    let documented: std::collections::BTreeSet<(String, String)> = examples
        .iter()
        .map(|ex| (ex.method.clone(), ex.path.split('?').next().unwrap_or("").to_string()))
        .collect();
    for (method, route) in [
        ("GET", "/api/v1/cache/health"),
        ("GET", "/api/v1/cache/basic-stats"),
        ("GET", "/api/v1/cache/stats"),
        ("DELETE", "/api/v1/cache/clear"),
        ("GET", "/api/v1/cache/keys"),
        ("GET", "/api/v1/cache/key/task:1"),
        ("DELETE", "/api/v1/cache/key/task:1"),
        ("POST", "/api/v1/cache/scope/purge"),
        ("POST", "/api/v1/cache/reload"),
        ("PURGE", "/api/v1/tasks/1"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    ] {
        assert!(
            documented.contains(&(method.to_string(), route.to_string())),
            "docs/admin-api.md has no curl example of {method} {route}"
        );
    }
    let clear_params: Vec<&str> = examples
        .iter()
        .filter_map(|ex| ex.path.strip_prefix("/api/v1/cache/clear?"))
        .collect();
    for param in ["pattern=", "tag=", "soft="] {
        assert!(
            clear_params.iter().any(|q| q.contains(param)),
            "no clear example with {param}"
        );
    }

    for ex in &examples {
        // DELETE key/task:1 would remove what later examples read: refill.
        client.get("/api/v1/tasks/1").await;
        let r = match &ex.body {
            None => call(&client, &ex.method, &ex.path, ex.token.then_some(ALL)).await,
            Some(body) => {
                let auth = format!("Bearer {ALL}");
                let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
                client
                    .send(&ex.method, &ex.path, &headers, crate::common::full(body.clone()))
                    .await
            }
        };
        assert!(r.status == 200, "{} {}: {} {}", ex.method, ex.path, r.status, r.text());
        let route = ex.path.split('?').next().unwrap_or(&ex.path);
        if route == "/metrics" {
            assert!(r.text().contains("cachegate_requests_total"), "{}", r.text());
            continue;
        }
        let v = r.json();
        let has = |fields: &[&str]| {
            for f in fields {
                assert!(v.get(f).is_some(), "{} {}: no {f:?} in {v}", ex.method, ex.path);
            }
        };
        match (ex.method.as_str(), route) {
            ("GET", "/api/v1/cache/health") => has(&["status", "store", "edition", "uptime_seconds", "features"]),
            ("GET", "/api/v1/cache/basic-stats") => has(&["hits", "misses", "hit_rate", "entries", "uptime_seconds"]),
            ("GET", "/api/v1/cache/stats") => has(&["status", "server", "memory", "stats"]),
            ("DELETE", "/api/v1/cache/clear") => has(&["status", "pattern", "deleted"]),
            ("GET", "/api/v1/cache/keys") => has(&["pattern", "total_found", "limit", "keys"]),
            ("GET", "/api/v1/cache/key/task:1") => has(&["key", "value", "ttl", "type"]),
            ("DELETE", "/api/v1/cache/key/task:1") => has(&["status", "key", "deleted"]),
            ("GET", "/healthz") | ("GET", "/readyz") => has(&["status"]),
            ("POST", "/api/v1/cache/scope/purge") => has(&["status", "scope", "purged"]),
            ("PURGE", "/api/v1/tasks/1") => {
                has(&["purged", "key", "keys", "entries"]);
                assert_eq!(v["purged"], true, "{v}");
            }
            ("POST", "/api/v1/cache/reload") => has(&["reloaded", "generation", "source", "restart_required"]),
            other => panic!("docs/admin-api.md has an example this test does not know: {other:?}"),
        }
    }
}
