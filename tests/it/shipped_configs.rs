//! The shipped configs (proxy.toml and config/<edition>.toml) fit the
//! reference backend (AICtrlNet's task service): loaded through the real
//! loader, task ids must be UUIDs (so `/api/v1/tasks/mcp`, another route,
//! is not cached as a task), the list answers with and without the
//! trailing slash under one key and stores only 200s (never the 307
//! between the two), writes purge whatever the outcome, and a logout
//! purges the caller's credential.

use cachegate::config::{Config, Overrides, When};
use cachegate::rules::RequestView;
use http::{HeaderMap, Method};
use std::path::PathBuf;

const TASK: &str = "/api/v1/tasks/3f2a9c1e-8b4d-4e6f-9a0b-1c2d3e4f5a6b";

fn shipped() -> Vec<(String, Config)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec!["proxy.toml".to_string()];
    for edition in ["community", "business", "enterprise"] {
        files.push(format!("config/{edition}.toml"));
    }
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(root.join(&file)).unwrap();
            let config = Config::from_toml(&text, &file, &|_| None, &Overrides::default())
                .unwrap_or_else(|e| panic!("{file} does not load: {e}"));
            (file, config)
        })
        .collect()
}

/// The rule caching `GET path`, and the key it renders.
fn cached(config: &Config, path: &str) -> Option<(String, String)> {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let m = config.rules.match_cache(&Method::GET, path)?;
    let headers = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        host: "api.example",
        path,
        query,
        headers: &headers,
    };
    let key = config.rules.render_key(&m.rule.key, &view, &m.captures)?;
    Some((m.rule.name.clone(), key))
}

#[test]
fn every_shipped_config_fits_the_reference_backend() {
    for (file, config) in shipped() {
        // A UUID task is cached, under its id; uppercase hex too.
        let id = TASK.rsplit('/').next().unwrap();
        assert_eq!(
            cached(&config, TASK),
            Some(("task".into(), format!("task:{id}"))),
            "{file}"
        );
        // FastAPI reads a UUID in any case: every spelling shares the
        // lower-case key, and a write through any spelling purges it.
        let upper = TASK.to_uppercase().replace("/API/V1/TASKS", "/api/v1/tasks");
        assert_eq!(
            cached(&config, &upper),
            Some(("task".into(), format!("task:{id}"))),
            "{file}: {upper}"
        );
        let headers = HeaderMap::new();
        let view = RequestView {
            method: &Method::PUT,
            host: "api.example",
            path: &upper,
            query: None,
            headers: &headers,
        };
        let purged: Vec<String> = config
            .rules
            .match_invalidate(&Method::PUT, &upper)
            .flat_map(|m| {
                let keys: Vec<_> = m
                    .rule
                    .keys
                    .iter()
                    .filter_map(|t| t.render(&view, &m.captures))
                    .collect();
                keys
            })
            .collect();
        assert!(
            purged.contains(&format!("task:{id}")),
            "{file}: PUT {upper} purges {purged:?}"
        );
        // Other routes under /api/v1/tasks/ are not tasks.
        for other in [
            "/api/v1/tasks/mcp",
            "/api/v1/tasks/1",
            "/api/v1/tasks/stats/summary",
            "/api/v1/tasks/mcp/",
        ] {
            assert_eq!(
                cached(&config, other),
                None,
                "{file}: {other} must not be cached as a task"
            );
        }
        // The list, with and without the trailing slash: one rule, one key.
        let slash = cached(&config, "/api/v1/tasks/?page=2");
        let bare = cached(&config, "/api/v1/tasks?page=2");
        assert_eq!(slash.as_ref().map(|(r, _)| r.as_str()), Some("task-list"), "{file}");
        assert_eq!(slash, bare, "{file}: /api/v1/tasks/ and /api/v1/tasks share the entry");
        // Only a 200 of the list is stored: not the 307 between the two forms.
        let list = config.rules.match_cache(&Method::GET, "/api/v1/tasks/").unwrap().rule;
        assert!(list.ttl_for(200).is_some(), "{file}");
        for status in [301, 307, 308, 404] {
            assert!(
                list.ttl_for(status).is_none(),
                "{file}: a {status} of the list is not stored"
            );
        }
        // Writes to a task purge it and the lists, whatever the outcome.
        for method in [Method::PUT, Method::PATCH, Method::DELETE] {
            let rules: Vec<_> = config.rules.match_invalidate(&method, TASK).collect();
            assert!(!rules.is_empty(), "{file}: {method} {TASK}");
            assert!(rules.iter().all(|m| m.rule.when == When::Always), "{file}: {method}");
        }
        for path in ["/api/v1/tasks/", "/api/v1/tasks"] {
            let creates: Vec<_> = config.rules.match_invalidate(&Method::POST, path).collect();
            assert!(
                creates
                    .iter()
                    .any(|m| !m.rule.patterns.is_empty() && m.rule.when == When::Always),
                "{file}: POST {path} purges the lists"
            );
        }
        // A logout purges the caller's credential.
        let logout: Vec<_> = config
            .rules
            .match_invalidate(&Method::POST, "/api/v1/auth/logout")
            .collect();
        assert!(
            logout
                .iter()
                .any(|m| m.rule.purge_credential && m.rule.when == When::Always),
            "{file}: POST /api/v1/auth/logout purges the credential"
        );
    }
}
