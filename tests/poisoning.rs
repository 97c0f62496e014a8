//! Headers that make a backend serve another URL or method than the one the
//! cache keyed on never reach it (unless the operator keeps them).

mod common;

use common::*;

const PATH: &str = "/api/v1/tasks/1";
const POISON: [(&str, &str); 6] = [
    ("x-original-url", "/admin"),
    ("x-rewrite-url", "/admin"),
    ("x-http-method-override", "DELETE"),
    ("x-http-method", "DELETE"),
    ("x-method-override", "DELETE"),
    ("forwarded", "for=1.2.3.4;host=evil.example"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_and_method_overrides_are_dropped_by_default() {
    let w = World::std(Kind::Memory).await;
    let r = w.client.get_h(PATH, &POISON).await;
    assert_eq!(r.status, 200);
    let seen = w.backend.last_headers(PATH).unwrap();
    for (name, _) in POISON {
        assert!(!seen.contains_key(name), "{name} reached the backend");
    }
    // The entry it filled is the plain GET's: a clean request hits it.
    assert_eq!(w.client.get(PATH).await.x_cache(), Some("HIT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_can_keep_them() {
    let template = format!("[server]\nstrip_request_headers = []\n\n{}", std_config());
    let w = World::start(Kind::Memory, &template).await;
    w.client.get_h(PATH, &POISON).await;
    let seen = w.backend.last_headers(PATH).unwrap();
    for (name, value) in POISON {
        assert_eq!(seen.get(name).and_then(|v| v.to_str().ok()), Some(value), "{name}");
    }
}
