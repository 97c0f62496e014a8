//! No input that reaches the backend but not the key changes a shared
//! answer. Each case runs against a backend that reads requests the way
//! common frameworks do (`common/framework.rs`), and ends with a normal
//! request getting the normal answer.
//!
//! Also: headers that make a backend serve another URL or method than the
//! one the cache keyed on never reach it (unless the operator keeps them).

use crate::common::framework::Framework;
use crate::common::*;

both_stores!(
    a_client_host_never_reaches_the_backend_by_default,
    a_preserved_host_is_part_of_every_key,
    a_repeated_keyed_query_parameter_is_neither_served_nor_stored,
    a_repeated_keyed_header_is_neither_served_nor_stored,
    a_header_name_with_an_underscore_never_reaches_the_backend,
    cors_answers_never_cross_origins,
    a_get_with_a_body_is_neither_served_nor_stored,
);

const AMBIGUOUS: &str = "cachegate; fwd=bypass; detail=ambiguous-input";

/// Rules keyed on a query parameter, a header and a path capture.
const RULES: &str = r#"
[[rule]]
name = "search"
path = '^/search$'
key = "search:{query.q}"

[[rule]]
name = "page"
path = '^/page$'
key = "page:{header.x-lang}"

[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<id>[^/]+)$'
key = "task:{id}"
"#;

/// The framework-like backend, a store, cachegate in front, a client.
struct Fw {
    backend: Framework,
    _redis: Option<RedisServer>,
    proxy: Proxy,
    client: Client,
}

/// `backend` and `cache` are lines added to those sections; `rest` follows
/// the rules (more sections, or rule settings for the last rule).
async fn fw_world(kind: Kind, backend: &str, cache: &str, rest: &str) -> Fw {
    let fw = Framework::start().await;
    let redis = (kind == Kind::Redis).then(RedisServer::start);
    let template = format!(
        "{}\n[cache]\n{cache}\n{RULES}{rest}",
        HEAD.replace("timeout_ms = 5000\n", &format!("timeout_ms = 5000\n{backend}\n"))
    );
    let text = render(&template, kind, &fw.url(), redis.as_ref().map(|r| r.url()).as_deref());
    let proxy = Proxy::start(&text).await;
    let client = Client::new(proxy.addr);
    Fw {
        backend: fw,
        _redis: redis,
        proxy,
        client,
    }
}

impl Fw {
    /// `http://<the client's own Host><path>`: what a normal request's
    /// links look like when the backend builds them from the client's Host.
    fn client_link(&self, path: &str) -> String {
        format!("http://{}{path}", self.client.host())
    }
}

async fn a_client_host_never_reaches_the_backend_by_default(kind: Kind) {
    let w = fw_world(kind, "", "", "").await;
    let path = "/api/v1/tasks/1";
    let backend_link = format!("{}{path}", w.backend.url());
    let evil = w.client.get_h(path, &[("host", "evil.example")]).await;
    assert_eq!(evil.status, 200);
    assert_eq!(
        evil.json()["self"],
        backend_link.as_str(),
        "the backend got its own name as Host"
    );
    // A Host with userinfo is no host at all: refused, nothing forwarded.
    let at = w.client.get_h(path, &[("host", "good.example@evil.example")]).await;
    assert_eq!(at.status, 400);
    assert_eq!(at.json()["error"], "bad_host");
    assert_eq!(w.backend.count(path), 1);
    // A normal request gets the normal answer.
    let normal = w.client.get(path).await;
    assert_eq!(normal.json()["self"], backend_link.as_str());
    assert!(!normal.text().contains("evil"), "{}", normal.text());
    // Links the backend builds on its own name are relative again.
    let redirect = w.client.get_h("/redirect", &[("host", "evil.example")]).await;
    assert_eq!(redirect.status, 307);
    assert_eq!(redirect.header("location"), Some("/target"));
}

async fn a_preserved_host_is_part_of_every_key(kind: Kind) {
    let w = fw_world(kind, "preserve_host = true", "", "").await;
    let path = "/api/v1/tasks/1";
    let evil = w.client.get_h(path, &[("host", "evil.example")]).await;
    assert_eq!(evil.json()["self"], "http://evil.example/api/v1/tasks/1");
    assert_eq!(evil.x_cache(), Some("MISS"));
    // Another spelling of the same host shares its entry...
    let same = w.client.get_h(path, &[("host", "EVIL.example:80")]).await;
    assert_eq!(same.x_cache(), Some("HIT"));
    assert_eq!(same.json()["serial"], evil.json()["serial"]);
    // ...a Host with userinfo is refused...
    let at = w.client.get_h(path, &[("host", "good.example@evil.example")]).await;
    assert_eq!(at.status, 400);
    // ...and a normal request gets the normal answer, from the backend.
    let normal = w.client.get(path).await;
    assert_eq!(normal.x_cache(), Some("MISS"));
    assert_eq!(normal.json()["self"], w.client_link(path).as_str());
    assert_eq!(w.backend.count(path), 2);
    assert_eq!(w.client.get(path).await.x_cache(), Some("HIT"));
    // Purging the key drops every host's entry at once.
    let store = w.proxy.gateway().store().clone();
    store.purge_keys(&["task:1".to_string()], false).await.expect("purge");
    assert_eq!(w.client.get(path).await.x_cache(), Some("MISS"));
    assert_eq!(
        w.client.get_h(path, &[("host", "evil.example")]).await.x_cache(),
        Some("MISS")
    );
    let redirect = w.client.get_h("/redirect", &[("host", "good.example")]).await;
    assert_eq!(redirect.header("location"), Some("http://good.example/target"));
}

async fn a_repeated_keyed_query_parameter_is_neither_served_nor_stored(kind: Kind) {
    let w = fw_world(kind, "", "", "").await;
    // A last-value-wins backend answers for `evil`; the key would say `a`.
    for poison in ["/search?q=a&q=evil", "/search?q=a&%71=evil", "/search?%71=a&x=1&q=evil"] {
        let r = w.client.get(poison).await;
        assert_eq!(r.cache_status(), AMBIGUOUS, "{poison}");
        assert_eq!(r.json()["q"], "evil", "{poison}: the backend's own answer");
    }
    let normal = w.client.get("/search?q=a").await;
    assert_eq!(normal.x_cache(), Some("MISS"), "nothing was stored for q=a");
    assert_eq!(normal.json()["q"], "a");
    let again = w.client.get("/search?q=a").await;
    assert_eq!(again.x_cache(), Some("HIT"));
    assert_eq!(again.json()["q"], "a");
    // Nor is a stored answer served to an ambiguous request.
    let r = w.client.get("/search?q=a&q=evil").await;
    assert_eq!(r.cache_status(), AMBIGUOUS);
    assert_eq!(r.json()["q"], "evil");
    // Other parameters may repeat: the key does not read them.
    assert_eq!(w.client.get("/search?q=a&x=1&x=2").await.x_cache(), Some("HIT"));
    assert_eq!(w.client.get("/search?q=a").await.json()["q"], "a");
    assert_eq!(w.backend.count("/search"), 5);
}

async fn a_repeated_keyed_header_is_neither_served_nor_stored(kind: Kind) {
    let w = fw_world(kind, "", "", "").await;
    let twice = [("x-lang", "en"), ("x-lang", "evil")];
    let r = w.client.get_h("/page", &twice).await;
    assert_eq!(r.cache_status(), AMBIGUOUS);
    assert_eq!(r.json()["lang"], "en,evil", "the backend joined them");
    let normal = w.client.get_h("/page", &[("x-lang", "en")]).await;
    assert_eq!(normal.x_cache(), Some("MISS"));
    assert_eq!(normal.json()["lang"], "en");
    assert_eq!(
        w.client.get_h("/page", &[("x-lang", "en")]).await.x_cache(),
        Some("HIT")
    );
    assert_eq!(w.client.get_h("/page", &twice).await.cache_status(), AMBIGUOUS);
    let again = w.client.get_h("/page", &[("x-lang", "en")]).await;
    assert_eq!(again.x_cache(), Some("HIT"));
    assert_eq!(again.json()["lang"], "en");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_may_keep_the_first_input_or_refuse_repeats() {
    let rest = r#"
[[rule]]
name = "search-first"
path = '^/first$'
key = "first:{query.q}:{header.x-lang}"
duplicate_inputs = "first"

[[rule]]
name = "search-reject"
path = '^/reject$'
key = "reject:{query.q}"
duplicate_inputs = "reject"
"#;
    let w = fw_world(Kind::Memory, "", "", rest).await;
    // "first": the backend reads what the key reads.
    let r = w
        .client
        .get_h("/first?q=a&x=1&q=evil", &[("x-lang", "en"), ("x-lang", "evil")])
        .await;
    assert_eq!(r.x_cache(), Some("MISS"));
    assert_eq!(r.json()["q"], "a");
    assert_eq!(r.json()["lang"], "en");
    let normal = w.client.get_h("/first?q=a&x=1", &[("x-lang", "en")]).await;
    assert_eq!(normal.x_cache(), Some("HIT"));
    assert_eq!(normal.json()["q"], "a");
    // "reject": a JSON 400, nothing forwarded.
    let r = w.client.get("/reject?q=a&q=evil").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "ambiguous_input");
    assert_eq!(w.backend.count("/reject"), 0);
    let normal = w.client.get("/reject?q=a").await;
    assert_eq!(normal.status, 200);
    assert_eq!(normal.json()["q"], "a");
}

async fn a_header_name_with_an_underscore_never_reaches_the_backend(kind: Kind) {
    let w = fw_world(kind, "", "", "").await;
    // A WSGI-style backend reads X_Lang as X-Lang; the key reads no X-Lang.
    let r = w.client.get_h("/page", &[("x_lang", "evil")]).await;
    assert_eq!(r.json()["lang"], serde_json::Value::Null, "X_Lang reached the backend");
    let normal = w.client.get("/page").await;
    assert_eq!(normal.json()["lang"], serde_json::Value::Null);
    assert!(!normal.text().contains("evil"));
    // Nor does it reach a pass-through request.
    let r = w.client.get_h("/elsewhere", &[("x_lang", "evil")]).await;
    assert_eq!(r.json()["lang"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_underscore_headers_count_as_another_spelling_of_a_keyed_one() {
    let fw = Framework::start().await;
    let template = format!("[server]\nunderscores_in_headers = true\n\n{HEAD}\n{RULES}");
    let proxy = Proxy::start(&render(&template, Kind::Memory, &fw.url(), None)).await;
    let client = Client::new(proxy.addr);
    let r = client.get_h("/page", &[("x_lang", "evil")]).await;
    assert_eq!(r.json()["lang"], "evil", "kept, as configured");
    assert_eq!(r.cache_status(), AMBIGUOUS);
    let r = client.get_h("/page", &[("x-lang", "en"), ("x_lang", "evil")]).await;
    assert_eq!(r.cache_status(), AMBIGUOUS);
    let normal = client.get("/page").await;
    assert_eq!(normal.x_cache(), Some("MISS"));
    assert_eq!(normal.json()["lang"], serde_json::Value::Null);
    let en = client.get_h("/page", &[("x-lang", "en")]).await;
    assert_eq!(en.x_cache(), Some("MISS"));
    assert_eq!(en.json()["lang"], "en");
}

async fn cors_answers_never_cross_origins(kind: Kind) {
    let w = fw_world(kind, "", "", "").await;
    let path = "/api/v1/tasks/2";
    let acao = "access-control-allow-origin";
    // Filled without Origin: no Access-Control-Allow-Origin, no Vary.
    let plain = w.client.get(path).await;
    assert_eq!(plain.x_cache(), Some("MISS"));
    assert_eq!(plain.header(acao), None);
    // A browser's GET with Origin is not given that entry.
    let app = [("origin", "https://app.example")];
    let cors = w.client.get_h(path, &app).await;
    assert_eq!(cors.x_cache(), Some("MISS"), "the backend must be asked");
    assert_eq!(cors.header(acao), Some("https://app.example"));
    assert_eq!(
        w.client.get_h(path, &app).await.header(acao),
        Some("https://app.example")
    );
    // Another origin gets its own answer, not app.example's.
    let evil = w.client.get_h(path, &[("origin", "https://evil.example")]).await;
    assert_eq!(evil.x_cache(), Some("MISS"));
    assert_eq!(evil.header(acao), Some("https://evil.example"));
    assert_eq!(w.backend.count(path), 3);
    // And a normal request gets the normal answer.
    let again = w.client.get(path).await;
    assert_eq!(again.x_cache(), Some("HIT"));
    assert_eq!(again.header(acao), None);
    let cors = w.client.get_h(path, &app).await;
    assert_eq!(cors.x_cache(), Some("HIT"));
    assert_eq!(cors.header(acao), Some("https://app.example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_can_be_left_out_of_the_variant() {
    let w = fw_world(Kind::Memory, "", "vary_on_origin = false", "").await;
    let path = "/api/v1/tasks/3";
    assert_eq!(w.client.get(path).await.x_cache(), Some("MISS"));
    let cors = w.client.get_h(path, &[("origin", "https://app.example")]).await;
    assert_eq!(cors.x_cache(), Some("HIT"), "as configured: one entry for every origin");
}

async fn a_get_with_a_body_is_neither_served_nor_stored(kind: Kind) {
    let w = fw_world(kind, "", "", "").await;
    let r = w.client.send("GET", "/search?q=a", &[], full("evil")).await;
    assert_eq!(r.cache_status(), "cachegate; fwd=bypass; detail=request-body");
    assert_eq!(r.json()["body"], "evil", "the backend read the body");
    let normal = w.client.get("/search?q=a").await;
    assert_eq!(normal.x_cache(), Some("MISS"));
    assert!(!normal.text().contains("evil"), "{}", normal.text());
    // Nor is the stored entry served to a GET with a body.
    let r = w.client.send("GET", "/search?q=a", &[], full("evil")).await;
    assert_eq!(r.x_cache(), Some("BYPASS"));
    assert_eq!(w.client.get("/search?q=a").await.x_cache(), Some("HIT"));
}

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
