//! `/metrics` as an SRE reads it, parsed with `prometheus-parse`: every
//! query of the shipped Grafana dashboard names a metric the scrape has;
//! `cachegate_requests_total{route,status_class}` counts all traffic;
//! `cachegate_build_info`; the standard `process_*` series; and every
//! counter present at 0 from start (so `rate()` alerts see the first error).

use crate::common::*;
use std::collections::BTreeSet;

const DASHBOARD: &str = include_str!("../../deploy/grafana-dashboard.json");

/// Every PromQL text of the dashboard: panel targets' `expr` and the
/// template variables' `query`.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(q)) => out.push(q.clone()),
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The metric names a query reads: identifiers starting `cachegate_` or
/// `process_` (label names and PromQL functions never do).
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let ident = &tail[..end];
        // Inside a quoted label value a name is a value, not a metric.
        let quoted = rest[..at].matches('"').count() % 2 == 1;
        if !quoted && (ident.starts_with("cachegate_") || ident.starts_with("process_")) {
            names.insert(ident.to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// Whether the scrape has `name`: a sample of that name, or, for
/// `_bucket`/`_sum`/`_count`, a histogram it belongs to.
fn scraped(scrape: &Scrape, name: &str) -> bool {
    if !scrape.find(name, &[]).is_empty() {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            scrape
                .find(base, &[])
                .iter()
                .any(|s| matches!(s.value, prometheus_parse::Value::Histogram(_)))
        })
    })
}

/// Some traffic of every route: a miss and a hit through a rule, a pass,
/// a write, an admin route.
async fn drive(w: &World) {
    w.client.get("/api/v1/tasks/1").await;
    w.client.until_hit("/api/v1/tasks/1", &[]).await;
    w.client.get("/plain/a").await;
    w.client.put("/api/v1/tasks/1").await;
    w.client.get("/healthz").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_a_scraped_metric() {
    let w = World::std(Kind::Redis).await;
    drive(&w).await;
    let scrape = w.client.scrape().await;

    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut all = Vec::new();
    queries(&dashboard, &mut all);
    assert!(all.len() >= 10, "the dashboard has its queries: {all:?}");
    let used: BTreeSet<String> = all.iter().flat_map(|q| metric_names(q)).collect();
    for needed in [
        "cachegate_requests_total",
        "cachegate_backend_duration_seconds_bucket",
        "cachegate_tier_hits_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(used.contains(needed), "the dashboard does not show {needed}: {used:?}");
    }
    let missing: Vec<&String> = used.iter().filter(|name| !scraped(&scrape, name)).collect();
    assert!(
        missing.is_empty(),
        "dashboard queries name metrics /metrics does not have: {missing:?}\n{}",
        scrape.text
    );
}

#[test]
fn query_names_are_found_and_label_values_are_not() {
    let names =
        metric_names(r#"sum(rate(cachegate_requests_total{route="rule",x="cachegate_nope"}[5m])) / process_max_fds"#);
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["cachegate_requests_total", "process_max_fds"]
    );
}

/// `cachegate_requests_total` for a route and status class, summed.
fn routed(s: &Scrape, route: &str, class: &str) -> f64 {
    s.sum("cachegate_requests_total", &[("route", route), ("status_class", class)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_total_counts_rule_pass_and_admin_traffic_by_status_class() {
    let w = World::std(Kind::Redis).await;
    w.backend
        .on("GET", "/plain/missing", Reply::new().status(404).body("no"));
    let before = w.client.scrape().await;

    let miss = w.client.get("/api/v1/tasks/2").await;
    assert_eq!(miss.status, 200);
    w.client.get("/plain/a").await; // pass, 2xx
    w.client.get("/plain/missing").await; // pass, 4xx
    w.client.put("/api/v1/tasks/2").await; // a write: pass, 2xx
    let long = format!("/plain/x?q={}", "a".repeat(9000));
    assert_eq!(w.client.get(&long).await.status, 414); // refused at admission: pass, 4xx
    w.client.get("/healthz").await; // admin, 2xx
    let no_token = w.client.method("POST", "/api/v1/cache/clear").await; // admin, 4xx
    assert!(no_token.status.is_client_error(), "{}", no_token.status);

    let after = w.client.scrape().await;
    let moved = |route, class| routed(&after, route, class) - routed(&before, route, class);
    assert_eq!(moved("rule", "2xx"), 1.0, "{}", after.text);
    assert_eq!(
        after.sum(
            "cachegate_requests_total",
            &[("rule", "task"), ("cache_status", "miss"), ("status_class", "2xx")]
        ) - before.sum(
            "cachegate_requests_total",
            &[("rule", "task"), ("cache_status", "miss"), ("status_class", "2xx")]
        ),
        1.0
    );
    assert_eq!(moved("pass", "2xx"), 2.0, "{}", after.text);
    assert_eq!(moved("pass", "4xx"), 2.0, "{}", after.text);
    // The first scrape is counted once it was answered, and /healthz.
    assert_eq!(moved("admin", "2xx"), 2.0, "{}", after.text);
    assert_eq!(moved("admin", "4xx"), 1.0, "{}", after.text);
    for class in ["1xx", "3xx", "5xx"] {
        for route in ["rule", "pass", "admin"] {
            assert_eq!(moved(route, class), 0.0, "{route} {class}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_info_and_process_metrics_are_exposed() {
    let w = World::std(Kind::Memory).await;
    let s = w.client.scrape().await;

    let info = s.find("cachegate_build_info", &[("version", env!("CARGO_PKG_VERSION"))]);
    assert_eq!(info.len(), 1, "{}", s.text);
    assert_eq!(s.scalar("cachegate_build_info", &[]), 1.0);
    let commit = info[0].labels.get("commit").expect("a commit label");
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
    // Built from a git checkout: a commit of this repository (not
    // necessarily HEAD: a commit made after the build moves HEAD).
    let in_git = std::process::Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .is_ok_and(|o| o.status.success());
    if in_git {
        let known = std::process::Command::new("git")
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(known, "{commit} is not a commit of this checkout");
    }

    let rss = s.scalar("process_resident_memory_bytes", &[]);
    assert!(rss > 1_000_000.0, "{rss}");
    assert!(s.scalar("process_virtual_memory_bytes", &[]) >= rss);
    let (open, max) = (s.scalar("process_open_fds", &[]), s.scalar("process_max_fds", &[]));
    assert!(open >= 3.0 && open <= max, "{open} of {max}");
    assert!(s.scalar("process_cpu_seconds_total", &[]) >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = s.scalar("process_start_time_seconds", &[]);
    assert!(started <= now + 1.0 && started > now - 86_400.0, "{started} vs {now}");
}

/// The counter families of a scrape, from its `# TYPE name counter` lines.
fn counter_families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_is_present_at_zero_from_start() {
    let w = World::std(Kind::Redis).await;
    let s = w.client.scrape().await;
    let families = counter_families(&s.text);
    assert!(families.len() >= 10, "{families:?}");
    for family in &families {
        let total = format!("{family}_total");
        assert!(
            !s.find(&total, &[]).is_empty(),
            "{total} has no series before its first event:\n{}",
            s.text
        );
    }
    for (name, labels) in [
        ("cachegate_purges_total", vec![("kind", "key")]),
        ("cachegate_purges_total", vec![("kind", "tag")]),
        ("cachegate_config_reloads_total", vec![("result", "error")]),
        ("cachegate_warm_paths_total", vec![("result", "failed")]),
        ("cachegate_compression_bytes_total", vec![("stage", "identity")]),
        ("cachegate_compression_bytes_total", vec![("stage", "encoded")]),
        (
            "cachegate_requests_total",
            vec![("route", "pass"), ("status_class", "5xx")],
        ),
        (
            "cachegate_requests_total",
            vec![("rule", "task"), ("cache_status", "bypass"), ("status_class", "5xx")],
        ),
    ] {
        assert_eq!(s.get(name, &labels), Some(0.0), "{name}{labels:?}:\n{}", s.text);
    }
}
