//! An `https://` backend: a real rustls + hyper server with a test CA,
//! reached with SNI, the CA of `tls_ca_file`, HTTP/2 when it offers `h2`
//! (HTTP/1.1 with `http2 = false`), a client certificate when the backend
//! requires one; a certificate nobody here trusts is a 502, never a
//! connection without checks. Answers are cached as from any backend.

use crate::common::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_rustls::rustls;

/// A CA, a server certificate for `localhost` and a client certificate it
/// signed, and another CA that signed nothing here; as PEM files.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_of = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            (params.self_signed(&key).unwrap(), key)
        };
        let (ca, ca_key) = ca_of("cachegate test CA");
        let (other, _) = ca_of("another CA");
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            (cert, key)
        };
        let (server, server_key) = leaf(vec!["localhost".into()]);
        let (client, client_key) = leaf(vec!["cachegate".into()]);
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            other_ca: write("other.pem", other.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            _dir: dir,
        }
    }
}

/// The HTTPS backend: answers `{"version","sni","client_cert"}` with
/// `max-age=60`, over HTTP/2 when ALPN chose it; counts requests.
struct TlsBackend {
    port: u16,
    requests: Arc<AtomicU64>,
}

impl TlsBackend {
    async fn start(pki: &Pki, require_client_cert: bool) -> TlsBackend {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = vec![CertificateDer::from_pem_file(&pki.server_cert).unwrap()];
        let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_file(&pki.ca).unwrap()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, count) = (acceptor.clone(), count.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let (_, session) = tls.get_ref();
                    let h2 = session.alpn_protocol() == Some(b"h2");
                    let sni = session.server_name().unwrap_or("").to_string();
                    let client_cert = session.peer_certificates().is_some_and(|c| !c.is_empty());
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let body = serde_json::json!({
                            "version": format!("{:?}", req.version()),
                            "sni": sni,
                            "client_cert": client_cert,
                            "path": req.uri().path(),
                        });
                        let resp = hyper::Response::builder()
                            .header("content-type", "application/json")
                            .header("cache-control", "max-age=60")
                            .body(Full::new(Bytes::from(body.to_string())))
                            .unwrap();
                        async move { Ok::<_, std::convert::Infallible>(resp) }
                    });
                    let io = TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    }
                });
            }
        });
        TlsBackend { port, requests }
    }
}

async fn proxy(backend: &TlsBackend, tls: &str) -> Proxy {
    let text = format!(
        "[backend]\nurl = \"https://localhost:{}\"\ntimeout_ms = 5000\n{tls}\n\n[store]\nkind = \"memory\"\n\n{STD_RULES}",
        backend.port
    );
    Proxy::start(&text).await
}

fn toml_path(key: &str, p: &std::path::Path) -> String {
    format!("{key} = {:?}\n", p.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_backend_with_a_custom_ca_is_reached_over_h2_with_sni_and_cached() {
    let pki = Pki::new();
    let backend = TlsBackend::start(&pki, false).await;
    let p = proxy(&backend, &toml_path("tls_ca_file", &pki.ca)).await;
    let c = p.client();
    let first = c.get("/api/v1/tasks/1").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let body = first.json();
    assert_eq!(body["version"], "HTTP/2.0", "ALPN h2 offered and taken: {body}");
    assert_eq!(body["sni"], "localhost", "{body}");
    assert_eq!(body["client_cert"], false);
    assert_eq!(first.x_cache(), Some("MISS"));
    assert_eq!(c.get("/api/v1/tasks/1").await.x_cache(), Some("HIT"));
    assert_eq!(
        backend.requests.load(Ordering::SeqCst),
        1,
        "the hit never reached the backend"
    );

    // http2 = false: HTTP/1.1 over the same TLS.
    let h1 = proxy(
        &backend,
        &format!("{}http2 = false\n", toml_path("tls_ca_file", &pki.ca)),
    )
    .await;
    let body = h1.client().get("/api/v1/tasks/2").await.json();
    assert_eq!(body["version"], "HTTP/1.1", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_502_never_an_unchecked_connection() {
    let pki = Pki::new();
    let backend = TlsBackend::start(&pki, false).await;
    let p = proxy(&backend, &toml_path("tls_ca_file", &pki.other_ca)).await;
    let resp = p.client().get("/api/v1/tasks/1").await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.json()["error"], "bad_gateway");
    assert_eq!(backend.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_requires_a_client_certificate_gets_the_configured_one() {
    let pki = Pki::new();
    let backend = TlsBackend::start(&pki, true).await;
    let without = proxy(&backend, &toml_path("tls_ca_file", &pki.ca)).await;
    let refused = without.client().get("/api/v1/tasks/1").await;
    assert_eq!(refused.status, 502, "{}", refused.text());

    let files = format!(
        "{}{}{}",
        toml_path("tls_ca_file", &pki.ca),
        toml_path("tls_cert_file", &pki.client_cert),
        toml_path("tls_key_file", &pki.client_key)
    );
    let with = proxy(&backend, &files).await;
    let resp = with.client().get("/api/v1/tasks/1").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["client_cert"], true);
}

#[test]
fn tls_settings_on_an_http_backend_are_a_config_error_at_their_place() {
    let text = "[backend]\nurl = \"http://127.0.0.1:8000\"\ntls_ca_file = \"/etc/hostname\"\n";
    let err = cachegate::config::Config::from_toml_str(text).unwrap_err().to_string();
    assert!(err.starts_with("<inline>:3:15:") && err.contains("https://"), "{err}");
    let text = "[backend]\nurl = \"https://127.0.0.1:8443\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n";
    let err = cachegate::config::Config::from_toml_str(text).unwrap_err().to_string();
    assert!(err.starts_with("<inline>:3:15:"), "{err}");
}
