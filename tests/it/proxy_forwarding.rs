//! Forwarding: method, path and query reach the backend unchanged,
//! hop-by-hop headers do not, `X-Forwarded-*` are added, and an unreachable
//! or slow backend gives a JSON 502 / 504.

use crate::common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_path_and_query_reach_the_backend_unchanged() {
    let w = World::std(Kind::Redis).await;

    // Uncovered paths, every method, odd but valid targets.
    let target = "/files/a%20b/c;v=1/%2F?x=1&y=%2F&z&x=2&q=a+b";
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let resp = w.client.method(method, target).await;
        assert_eq!(resp.status, 200, "{method}");
        assert_eq!(
            w.backend.count(method, "/files/a%20b/c;v=1/%2F"),
            1,
            "{method} reached the backend as {method}"
        );
        assert_eq!(
            w.backend.last_uri("/files/a%20b/c;v=1/%2F").as_deref(),
            Some(target),
            "{method}"
        );
    }
    // HEAD through an uncovered path is forwarded as HEAD.
    let head = w.client.method("HEAD", "/files/x").await;
    assert_eq!(head.status, 200);
    assert_eq!(w.backend.count("HEAD", "/files/x"), 1);
    assert_eq!(w.backend.count("GET", "/files/x"), 0);

    // A covered path keeps its query too.
    let list = "/api/v1/tasks?page=2&sort=-id&filter=a%26b";
    let resp = w.client.get(list).await;
    assert_eq!(resp.x_cache(), Some("MISS"));
    assert_eq!(w.backend.last_uri("/api/v1/tasks").as_deref(), Some(list));
    assert_eq!(resp.json()["query"], "page=2&sort=-id&filter=a%26b");

    // A request body reaches the backend whole.
    let put = w
        .client
        .send(
            "PUT",
            "/api/v1/tasks/5?notify=1",
            &[("content-type", "application/json")],
            full("0123456789"),
        )
        .await;
    assert_eq!(put.status, 200);
    assert_eq!(put.json()["received"], 10);
    assert_eq!(
        w.backend.last_uri("/api/v1/tasks/5").as_deref(),
        Some("/api/v1/tasks/5?notify=1")
    );
    assert_eq!(w.backend.count("PUT", "/api/v1/tasks/5"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let w = World::std(Kind::Redis).await;
    let request_headers = [
        ("connection", "keep-alive, X-Hop-Secret"),
        ("x-hop-secret", "must-not-pass"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("upgrade", "h2c"),
        ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
        ("proxy-connection", "keep-alive"),
        ("x-end-to-end", "kept"),
        ("authorization", "Bearer end-to-end"),
    ];
    // Both through a rule and through a plain pass.
    for path in ["/api/v1/tasks/1", "/plain/1"] {
        let resp = w.client.get_h(path, &request_headers).await;
        assert_eq!(resp.status, 200, "{path}");
        let seen = w.backend.last_headers(path).expect("backend saw the request");
        for gone in [
            "connection",
            "x-hop-secret",
            "keep-alive",
            "te",
            "upgrade",
            "proxy-authorization",
            "proxy-connection",
        ] {
            // hyper's client may add its own `connection` header only to
            // close; it never sends ours.
            if gone == "connection" {
                if let Some(v) = seen.get(gone) {
                    assert!(
                        !v.to_str().unwrap().to_ascii_lowercase().contains("x-hop-secret"),
                        "{path}: {v:?}"
                    );
                }
                continue;
            }
            assert!(
                !seen.contains_key(gone),
                "{path}: hop-by-hop {gone} was forwarded: {seen:?}"
            );
        }
        assert_eq!(seen.get("x-end-to-end").unwrap(), "kept", "{path}");
        assert_eq!(seen.get("authorization").unwrap(), "Bearer end-to-end", "{path}");
    }

    // And on the way back: the backend's hop-by-hop headers stay behind.
    let path = "/plain/resp";
    w.backend.on(
        "GET",
        path,
        Reply::new()
            .header("connection", "x-resp-hop")
            .header("x-resp-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-resp-kept", "yes")
            .body("ok"),
    );
    let resp = w.client.get(path).await;
    assert_eq!(resp.text(), "ok");
    assert!(resp.header("x-resp-hop").is_none(), "{:?}", resp.headers);
    assert!(resp.header("keep-alive").is_none(), "{:?}", resp.headers);
    assert!(resp.header("proxy-authenticate").is_none(), "{:?}", resp.headers);
    assert_eq!(resp.header("x-resp-kept"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_headers_are_added_and_a_client_host_replaced() {
    let w = World::std(Kind::Redis).await;
    let host = w.client.host().to_string();
    for path in ["/api/v1/tasks/1", "/plain/xf"] {
        w.client
            .get_h(
                path,
                &[
                    ("x-forwarded-host", "evil.example"),
                    ("x-forwarded-for", "203.0.113.7"),
                    ("x-forwarded-proto", "https"),
                ],
            )
            .await;
        let seen = w.backend.last_headers(path).unwrap();
        assert_eq!(seen.get("x-forwarded-for").unwrap(), "203.0.113.7, 127.0.0.1", "{path}");
        assert_eq!(seen.get("x-forwarded-proto").unwrap(), "http", "{path}");
        assert_eq!(seen.get_all("x-forwarded-host").iter().count(), 1, "{path}");
        assert_eq!(
            seen.get("x-forwarded-host").unwrap(),
            host.as_str(),
            "{path}: client value replaced"
        );
        // The backend is given its own name as Host (the client's is in
        // X-Forwarded-Host), so it builds the same links for every caller.
        let backend_host = w.backend.addr.to_string();
        assert_eq!(seen.get("host").unwrap(), backend_host.as_str(), "{path}");
    }
    // Without client values.
    w.client.get("/plain/xf2").await;
    let seen = w.backend.last_headers("/plain/xf2").unwrap();
    assert_eq!(seen.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(seen.get("x-forwarded-proto").unwrap(), "http");
    assert_eq!(seen.get("x-forwarded-host").unwrap(), host.as_str());
}

/// `forwarded_headers = false`: nothing added, a client's X-Forwarded-Host
/// still dropped (it could steer the backend's links), X-Forwarded-For
/// passed as the client sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_can_be_turned_off() {
    let template = std_config().replace("timeout_ms = 5000\n", "timeout_ms = 5000\nforwarded_headers = false\n");
    assert!(template.contains("forwarded_headers = false"));
    let w = World::start(Kind::Memory, &template).await;
    w.client.get("/plain/off").await;
    let seen = w.backend.last_headers("/plain/off").unwrap();
    for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
        assert!(seen.get(name).is_none(), "{name} added: {seen:?}");
    }
    w.client
        .get_h(
            "/plain/off2",
            &[("x-forwarded-host", "evil.example"), ("x-forwarded-for", "203.0.113.7")],
        )
        .await;
    let seen = w.backend.last_headers("/plain/off2").unwrap();
    assert!(
        seen.get("x-forwarded-host").is_none(),
        "client X-Forwarded-Host reached the backend"
    );
    assert_eq!(seen.get("x-forwarded-for").unwrap(), "203.0.113.7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backend_is_a_json_502() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    // Nothing listens on this port.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let text = render(&std_config(), Kind::Redis, &dead, Some(&redis.url()));
    let proxy = Proxy::start(&text).await;
    let client = Client::new(proxy.addr);
    for (method, path) in [
        ("GET", "/api/v1/tasks/1"),
        ("GET", "/plain"),
        ("HEAD", "/api/v1/tasks/1"),
        ("PUT", "/api/v1/tasks/1"),
    ] {
        let resp = client.method(method, path).await;
        assert_eq!(resp.status, 502, "{method} {path}");
        if method == "HEAD" {
            continue;
        }
        assert_eq!(resp.header("content-type"), Some("application/json"), "{method} {path}");
        let json = resp.json();
        assert_eq!(json["error"], "bad_gateway", "{method} {path}: {json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "{json}");
    }
    // A 502 is never stored.
    assert!(!proxy.stored("task:1", "anon").await);
    assert_eq!(backend.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_slower_than_timeout_is_a_json_504() {
    let template = format!(
        "[backend]\nurl = \"{{backend}}\"\ntimeout_ms = 300\n\n{{store}}\n{}",
        STD_RULES
    );
    let w = World::start(Kind::Redis, &template).await;
    w.backend
        .on("GET", "/api/v1/tasks/slow", Reply::new().delay(Duration::from_secs(3)));
    w.backend
        .on("GET", "/plain/slow", Reply::new().delay(Duration::from_secs(3)));
    for path in ["/api/v1/tasks/slow", "/plain/slow"] {
        let resp = w.client.get(path).await;
        assert_eq!(resp.status, 504, "{path}");
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.json()["error"], "gateway_timeout", "{path}");
        assert_eq!(w.backend.count("GET", path), 1, "{path}: the backend did get it");
    }
    assert!(!w.proxy.stored("task:slow", "anon").await, "a 504 is not stored");
    // The same proxy answers a fast path normally.
    let ok = w.client.get("/api/v1/tasks/fast").await;
    assert_eq!(ok.status, 200);
}

/// A header the key is made of, but which is not forwarded because the
/// client named it in `Connection`, must not key an entry: the backend
/// never saw it, so its answer is not the answer for that key. Otherwise one
/// client poisons a shared entry for everyone sending that header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_header_dropped_as_hop_by_hop_does_not_poison_the_entry() {
    let template = format!(
        "{HEAD}\n{}",
        r#"
[[rule]]
name = "tenant-tasks"
path = '^/api/v1/tenant-tasks/(?P<id>[^/]+)$'
key = "tenant:{header.x-tenant}:{id}"
scope = "public"
"#
    );
    let w = World::start(Kind::Redis, &template).await;
    let path = "/api/v1/tenant-tasks/1";

    let attacker = w
        .client
        .get_h(path, &[("x-tenant", "acme"), ("connection", "x-tenant")])
        .await;
    assert_eq!(attacker.status, 200);
    let seen = w.backend.last_headers(path).unwrap();
    assert!(!seen.contains_key("x-tenant"), "x-tenant was named in Connection");
    assert_eq!(attacker.json()["tenant"], "", "the backend answered without a tenant");

    let victim = w.client.get_h(path, &[("x-tenant", "acme")]).await;
    assert_eq!(victim.status, 200);
    assert_eq!(
        victim.json()["tenant"],
        "acme",
        "acme got an answer made without its tenant header ({}); Redis: {:?}",
        victim.cache_status(),
        w.redis().keys("tenant:*").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_url_path_is_prepended_and_the_rest_kept() {
    let backend = Backend::start().await;
    let redis = RedisServer::start();
    let base = format!("{}/base/", backend.url());
    let proxy = Proxy::start(&render(&std_config(), Kind::Redis, &base, Some(&redis.url()))).await;
    let client = Client::new(proxy.addr);
    let r = client.get("/api/v1/tasks/1?x=%20y").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.x_cache(), Some("MISS"));
    assert_eq!(
        backend.last_uri("/base/api/v1/tasks/1").as_deref(),
        Some("/base/api/v1/tasks/1?x=%20y")
    );
    // Rules match the client's path, not the backend's.
    assert_eq!(client.get("/api/v1/tasks/1?x=%20y").await.x_cache(), Some("HIT"));
    client.method("DELETE", "/other").await;
    assert_eq!(backend.count("DELETE", "/base/other"), 1);
}
