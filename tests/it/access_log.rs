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
    assert!(miss["backend_us"].is_u64(), "integer microseconds: {miss}");
    assert!(miss["us"].is_u64(), "integer microseconds: {miss}");
    assert!(miss["bytes_out"].as_u64().is_some_and(|b| b > 0));
    assert_eq!(miss["bytes_in"], 0);
    assert_eq!(miss["client"], "127.0.0.1");

    assert_eq!(hit["cache"], "HIT");
    assert_eq!(hit["key"], "task:1");
    assert!(hit["backend_status"].is_null() && hit["backend_us"].is_null(), "{hit}");

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
    assert_eq!(
        write["bytes_in"],
        r#"{"title":"new"}"#.len(),
        "the request body's bytes: {write}"
    );
}

/// `YYYY-MM-DDThh:mm:ss.mmmZ`: RFC 3339, UTC, milliseconds.
fn is_rfc3339_ms(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Every line: an RFC 3339 timestamp with milliseconds, integer
/// microseconds, the request id (the client's when well-formed, the one
/// made and returned otherwise), the user agent, bytes in and out, the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_time_request_id_agent_and_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("access.log");
    let w = World::start(Kind::Redis, &config_with_log("json", &path)).await;
    let given = w
        .client
        .get_h(
            "/api/v1/tasks/3",
            &[("x-request-id", "client-id.1:a_b-c"), ("user-agent", "probe/1.0 (x)")],
        )
        .await;
    let made = w.client.get_h("/api/v1/tasks/3", &[("x-request-id", "bad id!")]).await;
    let got = lines(&path, 2).await;
    let v: Vec<serde_json::Value> = got.iter().map(|l| serde_json::from_str(l).expect("JSON")).collect();

    let ts = v[0]["ts"].as_str().expect("ts is a string");
    assert!(is_rfc3339_ms(ts), "{ts}");
    let year: i32 = ts[..4].parse().unwrap();
    assert!(year >= 2024, "a calendar date, not epoch seconds: {ts}");
    assert_eq!(v[0]["request_id"], "client-id.1:a_b-c");
    assert_eq!(given.header("x-request-id"), Some("client-id.1:a_b-c"));
    assert_eq!(v[0]["user_agent"], "probe/1.0 (x)");
    assert_eq!(v[0]["key"], "task:3");
    assert!(v[0]["us"].is_u64() && v[0]["backend_us"].is_u64(), "{}", v[0]);
    assert_eq!(v[0]["bytes_in"], 0);
    assert_eq!(v[0]["bytes_out"].as_u64(), Some(given.body.len() as u64));

    // A malformed id is replaced; the line and the answer carry the new one.
    let replaced = made.header("x-request-id").expect("an id on the answer");
    assert_ne!(replaced, "bad id!");
    assert_eq!(v[1]["request_id"], replaced);
    assert_eq!(v[1]["cache"], "HIT");
    assert!(v[1]["user_agent"].is_null(), "{}", v[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_name_their_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("access.log");
    let w = World::start(Kind::Memory, &config_with_log("text", &path)).await;
    w.client.get("/api/v1/tasks/7").await;
    w.client
        .get_h("/api/v1/tasks/7", &[("x-request-id", "t-1"), ("user-agent", "curl/8")])
        .await;
    let got = lines(&path, 2).await;
    let (ts, _) = got[0].split_once(' ').unwrap();
    assert!(is_rfc3339_ms(ts), "{}", got[0]);
    assert!(
        got[1].contains(" 200 id=t-1 rule=task ") && got[1].ends_with(" ua=\"curl/8\""),
        "{}",
        got[1]
    );
    let us = got[1].split(" us=").nth(1).and_then(|r| r.split(' ').next()).unwrap();
    assert!(us.parse::<u64>().is_ok(), "integer microseconds: {}", got[1]);
    assert!(
        got[0].contains(" GET \"/api/v1/tasks/7\" 200 id=")
            && got[0].contains(" rule=task key=\"task:7\" cache=MISS backend=200 backend_us="),
        "{}",
        got[0]
    );
    assert!(
        got[1].contains(" rule=task key=\"task:7\" cache=HIT backend=- backend_us=- bytes_in=0 bytes_out="),
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
