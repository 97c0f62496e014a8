//! cachegate on Redis over TLS (`rediss://`), with a CA, server and client
//! certificates generated here: the cache-behaviour suite with the CA file;
//! a server certificate the configured CA did not sign is refused (the
//! proxy fails open, caching nothing); `tls_insecure_skip_verify` (tests
//! only) accepts it; a server requiring client certificates accepts ours.

use crate::common::topology::TlsRedis;
use crate::common::*;

fn section(t: &TlsRedis, extra: &str) -> String {
    format!("url = \"{}\"\ndb = 0\n{extra}", t.url())
}

fn ca(path: &std::path::Path) -> String {
    format!("tls_ca_file = \"{}\"", path.display())
}

fn client_cert(t: &TlsRedis) -> String {
    format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        t.client_cert.display(),
        t.client_key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_suite_over_tls() {
    let t = TlsRedis::start(false);
    crate::common::suite::run_all(&section(&t, &ca(&t.ca_file))).await;
    // An independent client sees what the suite stored.
    assert!(t.cli(&["keys", "hit:*"]).contains("hit:task:1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_is_refused_and_requests_still_succeed() {
    let t = TlsRedis::start(false);
    let backend = Backend::start().await;
    let text = crate::common::suite::config(&backend, &section(&t, &ca(&t.other_ca_file)), "bad:");
    let proxy = Proxy::start(&text).await;
    assert!(
        !proxy.gateway().store().is_up(),
        "a server the CA did not sign is not trusted"
    );
    let client = Client::new(proxy.addr);
    for _ in 0..3 {
        let r = client.get("/api/v1/tasks/1").await;
        assert_eq!(r.status, 200, "fail open");
        assert_ne!(r.x_cache(), Some("HIT"));
    }
    assert_eq!(backend.count("GET", "/api/v1/tasks/1"), 3, "nothing was cached");
    assert_eq!(t.cli(&["dbsize"]).trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_verify_accepts_any_certificate() {
    let t = TlsRedis::start(false);
    let e = crate::common::suite::Env::start(
        &section(
            &t,
            &format!("{}\ntls_insecure_skip_verify = true", ca(&t.other_ca_file)),
        ),
        "skip:",
    )
    .await;
    e.client.get("/api/v1/tasks/1").await;
    e.until_hit("/api/v1/tasks/1").await;
    assert_eq!(e.backend.count("GET", "/api/v1/tasks/1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_when_the_server_requires_them() {
    let t = TlsRedis::start(true);
    // Without a client certificate the server refuses the handshake.
    let backend = Backend::start().await;
    let proxy = Proxy::start(&crate::common::suite::config(
        &backend,
        &section(&t, &ca(&t.ca_file)),
        "nocert:",
    ))
    .await;
    assert!(!proxy.gateway().store().is_up(), "no client certificate, no connection");
    assert_eq!(Client::new(proxy.addr).get("/api/v1/tasks/1").await.status, 200);
    drop(proxy);

    let e = crate::common::suite::Env::start(
        &section(&t, &format!("{}\n{}", ca(&t.ca_file), client_cert(&t))),
        "cert:",
    )
    .await;
    e.client.get("/api/v1/tasks/1").await;
    e.until_hit("/api/v1/tasks/1").await;
    eventually("the record in redis", PATIENCE, || async {
        t.cli(&["exists", "cert:task:1"]).trim() == "1"
    })
    .await;
}
