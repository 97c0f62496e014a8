//! The listeners' TLS (`[server.tls]`, `[admin.tls]`): each listener's
//! rustls server config behind an `ArcSwap`, so that a reload reads the
//! certificate, key and client CA files again and the next handshakes use
//! them, while established connections keep the session they negotiated
//! (a reload never drops a connection). Building is separate from swapping
//! in: a reload builds every listener's config first and swaps only when
//! all of them loaded, so a bad file leaves the running certificates.

use crate::config::{pem, ClientAuth, Config, ServerTls};
use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;

/// One listener's TLS: the config new handshakes use.
pub struct ListenerTls {
    current: ArcSwap<rustls::ServerConfig>,
}

impl ListenerTls {
    /// The acceptor for one connection, on the config current now. (An
    /// `Arc` clone: the handshake keeps the config it started with.)
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}

/// Both listeners' TLS, as the running instance serves it; `None` where a
/// listener is cleartext (whether it is stays as it started: restart-only).
#[derive(Default)]
pub struct ListenersTls {
    pub main: Option<Arc<ListenerTls>>,
    pub admin: Option<Arc<ListenerTls>>,
}

/// Server configs built from a config's files, not yet serving.
pub struct BuiltTls {
    main: Option<rustls::ServerConfig>,
    admin: Option<rustls::ServerConfig>,
}

impl ListenersTls {
    /// Serving `built` from now on (at start).
    pub fn serving(built: BuiltTls) -> ListenersTls {
        let serve = |config: rustls::ServerConfig| {
            Arc::new(ListenerTls {
                current: ArcSwap::from_pointee(config),
            })
        };
        ListenersTls {
            main: built.main.map(serve),
            admin: built.admin.map(serve),
        }
    }

    /// Swaps `built` in for the next handshakes (on reload). A listener
    /// that started cleartext stays so; the reload keeps `[server.tls]` /
    /// `[admin.tls]` present or absent as they were, so the shapes match.
    pub fn swap_in(&self, built: BuiltTls) {
        for (serving, new) in [(&self.main, built.main), (&self.admin, built.admin)] {
            if let (Some(serving), Some(new)) = (serving, new) {
                serving.current.store(Arc::new(new));
            }
        }
    }
}

/// Reads the listeners' certificate, key and client CA files that `config`
/// names and builds their server configs; an error names the setting, the
/// file and the reason. Reads files: call it off the runtime.
pub fn build(config: &Config) -> Result<BuiltTls, String> {
    let http2 = config.server.http2;
    let main = match &config.server.tls {
        Some(tls) => Some(server_config(tls, None, http2).map_err(|e| format!("[server.tls] {e}"))?),
        None => None,
    };
    let admin = match &config.admin.tls {
        Some(tls) => {
            let clients = match (&tls.client_ca_file, tls.client_auth) {
                (Some(ca), ClientAuth::Required | ClientAuth::Optional) => Some((ca.as_path(), tls.client_auth)),
                _ => None,
            };
            Some(server_config(&tls.certificate, clients, http2).map_err(|e| format!("[admin.tls] {e}"))?)
        }
        None => None,
    };
    Ok(BuiltTls { main, admin })
}

/// A listener's rustls config: TLS 1.2 and 1.3, the certificate chain and
/// key from their PEM files, client certificates checked against a CA
/// when asked, ALPN `h2` (when `http2`) and `http/1.1`.
fn server_config(
    tls: &ServerTls,
    clients: Option<(&std::path::Path, ClientAuth)>,
    http2: bool,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = pem::certificates(&tls.cert_file, "cert_file")?;
    let key = pem::private_key(&tls.key_file, "key_file")?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some((ca_file, auth)) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in pem::certificates(ca_file, "client_ca_file")? {
                roots
                    .add(ca)
                    .map_err(|e| format!("client_ca_file {}: {e}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required | ClientAuth::Off => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("client_ca_file {}: {e}", ca_file.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "key_file {} does not go with cert_file {}: {e}",
            tls.key_file.display(),
            tls.cert_file.display()
        )
    })?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}
