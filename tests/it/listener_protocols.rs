//! The listener's protocols with real clients: TLS 1.3 with `h2` chosen by
//! ALPN, HTTP/1.1 over TLS, cleartext HTTP/2 with prior knowledge (h2c)
//! beside HTTP/1.1 on one port; caching and the backend's view the same as
//! over HTTP/1.1; and a rapid-reset flood (CVE-2023-44487) that costs its
//! own connection and leaves other clients served.

use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;

/// A CA and a `localhost` certificate it signed, as PEM files.
pub(crate) struct Certs {
    ca_pem: String,
    pub(crate) cert: std::path::PathBuf,
    pub(crate) key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub(crate) fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "listener test CA");
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let cert = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    Certs {
        ca_pem: ca.pem(),
        cert,
        key: key_file,
        _dir: dir,
    }
}

async fn world(server: &str) -> World {
    World::start(Kind::Memory, &format!("[server]\n{server}\n{}", std_config())).await
}

/// A TLS connection to the proxy offering `alpn`, trusting the test CA.
pub(crate) async fn tls_connect(
    addr: std::net::SocketAddr,
    certs: &Certs,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(certs.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the proxy")
}

/// GETs `path` over HTTP/2 on `io`: status, X-Cache, version.
async fn h2_get<I>(io: I, path: &str) -> (u16, String, http::Version)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let mut out = Vec::new();
    for _ in 0..2 {
        let req = http::Request::get(format!("https://localhost{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.expect("h2 request");
        let cache = resp
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let (status, version) = (resp.status().as_u16(), resp.version());
        resp.into_body().collect().await.unwrap();
        out.push((status, cache, version));
    }
    assert_eq!(out[0].1, "MISS", "{out:?}");
    out.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_13_with_h2_by_alpn_serves_and_caches_as_http_1_1_does() {
    let c = certs();
    let w = world(&format!(
        "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        c.cert.display().to_string(),
        c.key.display().to_string()
    ))
    .await;
    let tls = tls_connect(w.proxy.addr, &c, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let (status, cache, version) = h2_get(tls, "/api/v1/tasks/7").await;
    assert_eq!((status, cache.as_str(), version), (200, "HIT", http::Version::HTTP_2));
    assert_eq!(
        w.backend.count("GET", "/api/v1/tasks/7"),
        1,
        "the hit never reached the backend"
    );
    let seen = w.backend.last_headers("/api/v1/tasks/7").unwrap();
    assert_eq!(seen["x-forwarded-proto"], "https");

    // HTTP/1.1 over TLS: a client that offers only http/1.1.
    let tls = tls_connect(w.proxy.addr, &c, &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/api/v1/tasks/7")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(resp.headers()["x-cache"], "HIT", "one entry whatever the protocol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_and_http_1_1_share_one_port() {
    let w = world("h2c = true\n").await;
    let tcp = tokio::net::TcpStream::connect(w.proxy.addr).await.unwrap();
    let (status, cache, version) = h2_get(tcp, "/api/v1/tasks/8").await;
    assert_eq!((status, cache.as_str(), version), (200, "HIT", http::Version::HTTP_2));
    assert_eq!(w.client.get("/api/v1/tasks/8").await.x_cache(), Some("HIT"));
    assert_eq!(w.backend.count("GET", "/api/v1/tasks/8"), 1);

    // Off by default: the preface is not HTTP/1.1, so it is refused.
    let off = world("").await;
    let tcp = tokio::net::TcpStream::connect(off.proxy.addr).await.unwrap();
    let attempt = tokio::time::timeout(Duration::from_secs(10), async move {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let req = http::Request::get("http://localhost/api/v1/tasks/8")
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.send_request(req).await.map(|_| ())
    })
    .await
    .expect("the attempt ends");
    assert!(attempt.is_err(), "h2c is off by default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_loses_its_connection_and_others_are_served() {
    let w = world("h2c = true\n").await;
    let tcp = tokio::net::TcpStream::connect(w.proxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(conn);
    let mut client = client;
    let mut opened = 0u32;
    // Open and reset at once, as the CVE-2023-44487 pattern does.
    let flood = tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..50_000 {
            let ready = match client.ready().await {
                Ok(ready) => ready,
                Err(_) => return,
            };
            client = ready;
            let req = http::Request::get("http://localhost/api/v1/tasks/9").body(()).unwrap();
            match client.send_request(req, true) {
                Ok((_, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    opened += 1;
                }
                Err(_) => return,
            }
        }
    })
    .await;
    assert!(flood.is_ok(), "the flood neither ended nor was cut off");
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(ended.is_ok(), "the flooding connection is closed by the proxy");
    assert!(opened < 50_000, "the proxy cut the flood short after {opened} streams");
    // Other clients are served meanwhile and after.
    assert_eq!(w.client.get("/api/v1/tasks/9").await.status, 200);
    println!(
        "rapid reset: {opened} streams opened and reset before the proxy closed the connection; backend saw {}",
        w.backend.count("GET", "/api/v1/tasks/9")
    );
    assert!(
        w.backend.count("GET", "/api/v1/tasks/9") < 1_000,
        "reset streams were not all forwarded"
    );
}

#[test]
fn unusable_listener_certificates_are_config_errors_at_their_place() {
    let c = certs();
    let text = format!(
        "[server.tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = {:?}\n",
        c.key.display().to_string()
    );
    let err = cachegate::config::Config::from_toml_str(&text).unwrap_err().to_string();
    assert!(err.starts_with("<inline>:2:13:") && err.contains("cert_file"), "{err}");
    // A certificate where the key should be.
    let text = format!(
        "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        c.cert.display().to_string(),
        c.cert.display().to_string()
    );
    let err = cachegate::config::Config::from_toml_str(&text).unwrap_err().to_string();
    assert!(
        err.starts_with("<inline>:3:12:") && err.contains("private key"),
        "{err}"
    );
}
