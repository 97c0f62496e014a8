//! The access log: one line per request with the rule, key, cache status
//! and backend figures, as text or JSON; never a credential.

use crate::common::*;

fn config_with_log(format: &str, path: &std::path::Path) -> String {
    format!(
        "{}\n[access_log]\nenabled = true\nformat = \"{format}\"\npath = \"{}\"\n",
        std_config(),
        path.display()
    )
}

async fn lines(path: &std::path::Path, at_least: usize) -> Vec<String> {
    eventually("the access log lines are written", PATIENCE, || async {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count()) >= at_least
    })
    .await;
    std::fs::read_to_string(path)
        .expect("read the log")
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_describe_each_request_and_never_a_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("access.log");
    let w = World::start(Kind::Redis, &config_with_log("json", &path)).await;
    let secret = [("authorization", "Bearer s3cret-token"), ("cookie", "sid=c00kie-value")];
    w.client.get_h("/api/v1/tasks/1?api_key=q5ecret", &secret).await; // miss
    w.client.get_h("/api/v1/tasks/1", &secret).await; // hit
    w.client.get("/plain/x").await; // pass-through
    w.client.put("/api/v1/tasks/1").await; // a write: its [[invalidate]] rule

    let got = lines(&path, 4).await;
    let text = got.join("\n");
    for needle in ["s3cret-token", "c00kie-value", "q5ecret", "Bearer"] {
        assert!(!text.contains(needle), "{needle} in the access log:\n{text}");
    }
    let v: Vec<serde_json::Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let (miss, hit, pass, write) = (&v[0], &v[1], &v[2], &v[3]);
    assert_eq!(miss["method"], "GET");
    assert_eq!(miss["path"], "/api/v1/tasks/1", "no query string");
    assert_eq!(miss["status"], 200);
    assert_eq!(miss["rule"], "task");
    assert_eq!(miss["key"], "task:1");
    assert_eq!(miss["cache"], "MISS");
    assert_eq!(miss["backend_status"], 200);
    assert!(miss["backend_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert!(miss["bytes"].as_u64().is_some_and(|b| b > 0));
    assert_eq!(miss["client"], "127.0.0.1");

    assert_eq!(hit["cache"], "HIT");
    assert_eq!(hit["key"], "task:1");
    assert!(hit["backend_status"].is_null() && hit["backend_ms"].is_null(), "{hit}");

    assert_eq!(pass["path"], "/plain/x");
    assert!(
        pass["rule"].is_null() && pass["key"].is_null() && pass["cache"].is_null(),
        "{pass}"
    );
    assert_eq!(pass["backend_status"], 200);

    assert_eq!(write["method"], "PUT");
    assert_eq!(
        write["rule"], "task-write",
        "a write names the invalidate rule it matched"
    );
    assert!(write["cache"].is_null(), "{write}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_name_their_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("access.log");
    let w = World::start(Kind::Memory, &config_with_log("text", &path)).await;
    w.client.get("/api/v1/tasks/7").await;
    w.client.get("/api/v1/tasks/7").await;
    let got = lines(&path, 2).await;
    assert!(
        got[0].contains(" GET \"/api/v1/tasks/7\" 200 rule=task key=\"task:7\" cache=MISS backend=200 "),
        "{}",
        got[0]
    );
    assert!(
        got[1].contains(" rule=task key=\"task:7\" cache=HIT backend=- backend_ms=- "),
        "{}",
        got[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("access.log");
    let text = config_with_log("text", &path).replace("enabled = true\nformat", "enabled = false\nformat");
    let w = World::start(Kind::Memory, &text).await;
    w.client.get("/api/v1/tasks/7").await;
    // A log that is on opens (creates) its file at start, before the first
    // request: no file after a start and a request means no log, with no
    // wait for a writer that may not exist.
    assert!(!path.exists(), "an access log was written while off");
}
