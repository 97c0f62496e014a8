//! The listeners' certificates on reload, and the admin listener's TLS with
//! client certificates. A reload (in-process, the admin route, a real
//! SIGHUP to the binary) reads the certificate files again, the same paths
//! too: new handshakes present the new certificate while HTTP/1.1
//! keep-alive and HTTP/2 connections opened before keep serving on the
//! same connection. A certificate that does not load refuses the reload
//! and the old one keeps serving. `[admin.tls]` with `client_ca_file`
//! refuses clients without a certificate of that CA; the token is still
//! checked on top; the main listener is unaffected.

use crate::common::admin::{token_toml, ALL, EVERY_SCOPE};
use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use tokio_rustls::rustls;

/// A test CA.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A `localhost` server certificate named `cn`.
    fn server(&self, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        self.sign(params)
    }

    /// A client certificate named `cn`.
    fn client(&self, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A certificate and its key.
#[derive(Clone)]
struct Leaf {
    pem: String,
    der: Vec<u8>,
    key_pem: String,
}

/// Where a listener's certificate and key files are.
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new(dir: &Path, name: &str) -> Files {
        Files {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    /// Writes `leaf` over the files, in place (as certbot renews).
    fn write(&self, leaf: &Leaf) {
        std::fs::write(&self.cert, &leaf.pem).unwrap();
        std::fs::write(&self.key, &leaf.key_pem).unwrap();
    }

    fn toml(&self) -> String {
        format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            self.cert.display().to_string(),
            self.key.display().to_string()
        )
    }
}

/// A client config trusting `cas`, offering `alpn`, with `identity` as its
/// client certificate.
fn client_config(cas: &[&Ca], identity: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.cert.der().clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// The leaf certificate the server presented on `tls`.
fn presented(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().expect("a server certificate")[0].to_vec()
}

/// The leaf certificate a new connection to `addr` is shown.
async fn leaf_of_new_connection(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> Vec<u8> {
    presented(&connect(addr, config).await.expect("TLS handshake"))
}

/// One HTTP/1.1 keep-alive connection over TLS: requests are sent on it
/// only, and `driver` ends when it closes.
struct H1 {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl H1 {
    async fn open(tls: Tls) -> H1 {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        H1 { send, driver }
    }

    async fn call(&mut self, method: &str, path: &str, token: Option<&str>) -> Result<(u16, Bytes), hyper::Error> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        self.send.ready().await?;
        let resp = self.send.send_request(req.body(Empty::new()).unwrap()).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }
}

/// One HTTP/2 connection over TLS.
struct H2 {
    send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl H2 {
    async fn open(tls: Tls) -> H2 {
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        H2 { send, driver }
    }

    async fn get(&mut self, path: &str) -> u16 {
        let req = http::Request::get(format!("https://localhost{path}"))
            .body(Empty::new())
            .unwrap();
        let resp = self
            .send
            .send_request(req)
            .await
            .expect("a request on the open h2 connection");
        let status = resp.status().as_u16();
        resp.into_body().collect().await.unwrap();
        status
    }
}

async fn tls_world(files: &Files) -> World {
    World::start(
        Kind::Memory,
        &format!(
            "[server.tls]\n{}\n{}\n{}",
            files.toml(),
            std_config(),
            token_toml("ops", ALL, EVERY_SCOPE)
        ),
    )
    .await
}

/// A reload with the files rewritten in place: new handshakes get the new
/// certificate (of another CA), the HTTP/1.1 and HTTP/2 connections opened
/// before go on serving on the same connection. A key that does not load
/// or does not match refuses the reload and the new certificate stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_certificate_for_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (first_ca, second_ca) = (Ca::new("first CA"), Ca::new("second CA"));
    let (first, second) = (first_ca.server("first"), second_ca.server("second"));
    let files = Files::new(dir.path(), "listener");
    files.write(&first);
    let w = tls_world(&files).await;
    let h1_config = client_config(&[&first_ca, &second_ca], None, &[b"http/1.1"]);
    let h2_config = client_config(&[&first_ca, &second_ca], None, &[b"h2", b"http/1.1"]);

    let tls = connect(w.proxy.addr, h1_config.clone()).await.unwrap();
    assert_eq!(presented(&tls), first.der);
    let mut h1 = H1::open(tls).await;
    assert_eq!(h1.call("GET", "/api/v1/tasks/1", None).await.unwrap().0, 200);
    let tls = connect(w.proxy.addr, h2_config.clone()).await.unwrap();
    assert_eq!(presented(&tls), first.der);
    let mut h2 = H2::open(tls).await;
    assert_eq!(h2.get("/api/v1/tasks/2").await, 200);

    // Renewed in place: same paths, a new certificate and key.
    files.write(&second);
    let done = w
        .proxy
        .running()
        .live()
        .reload()
        .await
        .expect("the reload goes through");
    assert!(done.restart_required.is_empty(), "{:?}", done.restart_required);
    assert_eq!(
        leaf_of_new_connection(w.proxy.addr, h1_config.clone()).await,
        second.der
    );
    assert_eq!(
        leaf_of_new_connection(w.proxy.addr, h2_config.clone()).await,
        second.der
    );
    // The connections opened before serve on, each the same connection.
    assert_eq!(h1.call("GET", "/api/v1/tasks/3", None).await.unwrap().0, 200);
    assert_eq!(h2.get("/api/v1/tasks/4").await, 200);
    assert!(!h1.driver.is_finished() && !h2.driver.is_finished());

    // A key that is not the certificate's: refused through the admin
    // route (asked on the kept connection), with the key's place.
    let third = first_ca.server("third");
    std::fs::write(&files.cert, &third.pem).unwrap();
    std::fs::write(&files.key, &first.key_pem).unwrap();
    let (status, body) = h1.call("POST", "/api/v1/cache/reload", Some(ALL)).await.unwrap();
    assert_eq!(status, 422, "{body:?}");
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["error"], "invalid_config");
    assert!(
        answer["message"].as_str().unwrap().contains("is not the key of"),
        "{answer}"
    );
    assert_eq!(answer["line"], 3, "the key_file line: {answer}");
    // A key file that is no key at all.
    std::fs::write(&files.cert, &third.pem).unwrap();
    std::fs::write(
        &files.key,
        "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let refused = w.proxy.running().live().reload().await;
    assert!(
        matches!(&refused, Err(cachegate::reload::ReloadError::Invalid(e)) if e.message.contains("key_file")),
        "{refused:?}"
    );
    // The certificate of the last good reload still serves, old and new connections alike.
    assert_eq!(
        leaf_of_new_connection(w.proxy.addr, h1_config.clone()).await,
        second.der
    );
    assert_eq!(h1.call("GET", "/api/v1/tasks/5", None).await.unwrap().0, 200);
    assert_eq!(h2.get("/api/v1/tasks/6").await, 200);
    assert_eq!(
        w.proxy.running().live().generation(),
        2,
        "only the good reload made a generation"
    );
}

/// `[server.tls]` added to a cleartext listener by a reload needs a restart:
/// named in restart_required, and the listener stays cleartext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_tls_on_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path(), "listener");
    files.write(&Ca::new("CA").server("localhost"));
    let backend = Backend::start().await;
    let path = dir.path().join("proxy.toml");
    let plain = format!(
        "[access_log]\nenabled = false\n\n{}",
        render(&std_config(), Kind::Memory, &backend.url(), None)
    );
    std::fs::write(&path, &plain).unwrap();
    let proxy = Proxy::start_file(&path).await;
    std::fs::write(&path, format!("[server.tls]\n{}\n{plain}", files.toml())).unwrap();
    let done = proxy.running().live().reload().await.expect("the reload goes through");
    assert_eq!(done.restart_required, vec!["server.tls"]);
    assert_eq!(
        proxy.client().get("/api/v1/tasks/1").await.status,
        200,
        "still cleartext"
    );
}

/// The admin listener over TLS with client certificates required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_requires_a_client_certificate_of_its_ca_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca, other_ca) = (Ca::new("server CA"), Ca::new("client CA"), Ca::new("other CA"));
    let files = Files::new(dir.path(), "admin");
    files.write(&server_ca.server("admin one"));
    let ca_file = dir.path().join("clients.pem");
    std::fs::write(&ca_file, client_ca.pem()).unwrap();
    let w = World::start(
        Kind::Memory,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[admin.tls]\n{}client_ca_file = {:?}\n\n{}\n{}",
            files.toml(),
            ca_file.display().to_string(),
            std_config(),
            token_toml("ops", ALL, EVERY_SCOPE)
        ),
    )
    .await;
    let admin = w.proxy.admin_addr.expect("an admin listener");
    let good = client_ca.client("ops laptop");
    let stranger = other_ca.client("stranger");

    // Under TLS 1.3 the client's side of the handshake ends before the
    // server has judged its certificate: the refusal shows on the first request.
    async fn attempt(
        addr: std::net::SocketAddr,
        config: Arc<rustls::ClientConfig>,
        token: Option<&str>,
    ) -> Result<u16, String> {
        let tls = connect(addr, config).await.map_err(|e| e.to_string())?;
        let mut h1 = H1::open(tls).await;
        let call = tokio::time::timeout(PATIENCE, h1.call("GET", "/api/v1/cache/basic-stats", token));
        match call.await {
            Ok(Ok((status, _))) => Ok(status),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer".into()),
        }
    }
    let no_cert = attempt(admin, client_config(&[&server_ca], None, &[b"http/1.1"]), Some(ALL)).await;
    assert!(no_cert.is_err(), "a client without a certificate: {no_cert:?}");
    let foreign = attempt(
        admin,
        client_config(&[&server_ca], Some(&stranger), &[b"http/1.1"]),
        Some(ALL),
    )
    .await;
    assert!(foreign.is_err(), "a certificate of another CA: {foreign:?}");
    let trusted = client_config(&[&server_ca], Some(&good), &[b"http/1.1"]);
    assert_eq!(
        attempt(admin, trusted.clone(), None).await,
        Ok(401),
        "the token is still required"
    );
    assert_eq!(attempt(admin, trusted.clone(), Some(ALL)).await, Ok(200));
    // HTTP/2 on the admin listener too.
    let h2_tls = connect(admin, client_config(&[&server_ca], Some(&good), &[b"h2"]))
        .await
        .unwrap();
    assert_eq!(H2::open(h2_tls).await.get("/healthz").await, 200);
    // The main listener: cleartext, no certificate asked, as before.
    assert_eq!(w.client.get("/api/v1/tasks/1").await.status, 200);

    // The admin certificate reloads like the main one, through the route.
    let renewed = server_ca.server("admin two");
    files.write(&renewed);
    let tls = connect(admin, trusted.clone()).await.unwrap();
    let mut kept = H1::open(tls).await;
    let (status, body) = kept.call("POST", "/api/v1/cache/reload", Some(ALL)).await.unwrap();
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(leaf_of_new_connection(admin, trusted.clone()).await, renewed.der);
    assert_eq!(
        kept.call("GET", "/api/v1/cache/basic-stats", Some(ALL))
            .await
            .unwrap()
            .0,
        200
    );

    // A client CA that is PEM but no certificate rustls takes: the reload is
    // refused as a whole, and the admin listener goes on as it was.
    std::fs::write(
        &ca_file,
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (status, body) = kept.call("POST", "/api/v1/cache/reload", Some(ALL)).await.unwrap();
    assert_eq!(status, 422, "{body:?}");
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["error"], "invalid_certificate", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("client_ca_file"),
        "{answer}"
    );
    assert_eq!(attempt(admin, trusted, Some(ALL)).await, Ok(200));
    let foreign = attempt(
        admin,
        client_config(&[&server_ca], Some(&stranger), &[b"http/1.1"]),
        Some(ALL),
    )
    .await;
    assert!(foreign.is_err(), "still refused: {foreign:?}");
}

/// `client_auth = "optional"`: no certificate is let through to the token
/// check; a certificate of another CA is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_client_certificate_must_still_be_of_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca, other_ca) = (Ca::new("server CA"), Ca::new("client CA"), Ca::new("other CA"));
    let files = Files::new(dir.path(), "admin");
    files.write(&server_ca.server("admin"));
    let ca_file = dir.path().join("clients.pem");
    std::fs::write(&ca_file, client_ca.pem()).unwrap();
    let w = World::start(
        Kind::Memory,
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[admin.tls]\n{}client_ca_file = {:?}\nclient_auth = \"optional\"\n\n{}\n{}",
            files.toml(),
            ca_file.display().to_string(),
            std_config(),
            token_toml("ops", ALL, EVERY_SCOPE)
        ),
    )
    .await;
    let admin = w.proxy.admin_addr.unwrap();
    let tls = connect(admin, client_config(&[&server_ca], None, &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(
        H1::open(tls)
            .await
            .call("GET", "/api/v1/cache/basic-stats", Some(ALL))
            .await
            .unwrap()
            .0,
        200
    );
    let stranger = other_ca.client("stranger");
    let tls = connect(admin, client_config(&[&server_ca], Some(&stranger), &[b"http/1.1"])).await;
    let refused = match tls {
        Err(_) => true,
        Ok(tls) => H1::open(tls)
            .await
            .call("GET", "/api/v1/cache/basic-stats", Some(ALL))
            .await
            .is_err(),
    };
    assert!(refused, "a certificate of another CA is refused");
}

/// `[admin.tls]` mistakes are config errors at their place.
#[test]
fn admin_tls_mistakes_are_reported_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(dir.path(), "admin");
    let ca = Ca::new("CA");
    files.write(&ca.server("admin"));
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let error = |text: &str| {
        cachegate::config::Config::from_toml(text, "proxy.toml", &|_| None, &Default::default())
            .err()
            .unwrap_or_else(|| panic!("accepted: {text}"))
            .to_string()
    };
    let without_listener = format!("[admin]\nprefix = \"/api/v1/cache\"\n\n[admin.tls]\n{}", files.toml());
    let e = error(&without_listener);
    assert!(e.starts_with("proxy.toml:5:") && e.contains("[admin] listen"), "{e}");
    let bad_mode = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[admin.tls]\n{}client_ca_file = {:?}\nclient_auth = \"sometimes\"\n",
        files.toml(),
        ca_file.display().to_string()
    );
    let e = error(&bad_mode);
    assert!(e.starts_with("proxy.toml:8:") && e.contains("client_auth"), "{e}");
    let no_ca = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[admin.tls]\n{}client_auth = \"required\"\n",
        files.toml()
    );
    let e = error(&no_ca);
    assert!(
        e.starts_with("proxy.toml:7:") && e.contains("needs client_ca_file"),
        "{e}"
    );
    let missing_ca = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[admin.tls]\n{}client_ca_file = \"/nonexistent/ca.pem\"\n",
        files.toml()
    );
    let e = error(&missing_ca);
    assert!(e.starts_with("proxy.toml:7:") && e.contains("client_ca_file"), "{e}");
}

/// The binary: a real SIGHUP after the files were renewed in place; the
/// keep-alive connection opened before goes on, new ones see the new
/// certificate. `cachegate reload` cannot reach a TLS listener and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_to_the_binary_reloads_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (first, second) = (ca.server("first"), ca.server("second"));
    let files = Files::new(dir.path(), "listener");
    files.write(&first);
    let backend = Backend::start().await;
    let port = free_port();
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[server.tls]\n{}\n[access_log]\nenabled = false\n\n{}",
            files.toml(),
            render(&std_config(), Kind::Memory, &backend.url(), None)
        ),
    )
    .unwrap();
    let child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_cachegate"))
            .args(["--config", path.to_str().unwrap()])
            .env_remove("CACHEGATE_LISTEN")
            .env_remove("CACHEGATE_BACKEND")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cachegate"),
    );
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let config = client_config(&[&ca], None, &[b"http/1.1"]);
    let tls = eventually_some("the binary serves TLS", PATIENCE, || {
        let config = config.clone();
        async move { connect(addr, config).await.ok() }
    })
    .await;
    assert_eq!(presented(&tls), first.der);
    let mut kept = H1::open(tls).await;
    assert_eq!(kept.call("GET", "/api/v1/tasks/1", None).await.unwrap().0, 200);

    files.write(&second);
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    eventually("new connections see the new certificate", PATIENCE, || {
        let config = config.clone();
        let want = second.der.clone();
        async move { connect(addr, config).await.is_ok_and(|tls| presented(&tls) == want) }
    })
    .await;
    assert_eq!(kept.call("GET", "/api/v1/tasks/2", None).await.unwrap().0, 200);
    assert!(!kept.driver.is_finished(), "the same connection");

    // `cachegate reload` speaks plain HTTP: against a TLS listener it fails
    // and points to SIGHUP.
    let out = Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(["reload", "--config", path.to_str().unwrap()])
        .env_remove("CACHEGATE_LISTEN")
        .env_remove("CACHEGATE_BACKEND")
        .env_remove("REDIS_URL")
        .output()
        .expect("cachegate reload");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIGHUP"), "{out:?}");
}
