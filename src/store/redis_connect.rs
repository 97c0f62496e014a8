//! The fred client configuration for a [`RedisConfig`]: a single server,
//! a Redis Cluster or a Sentinel-managed primary, with TLS when asked.
//! fred handles the topology itself: cluster slot maps, MOVED/ASK
//! redirections, reconnecting to the primary Sentinel names after a
//! failover.

use crate::config::{RedisConfig, RedisTls, RedisTopology};
use fred::prelude::*;
use fred::types::config::{ServerConfig, TlsConfig, TlsConnector, TlsHostMapping};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// The fred `Config` for `cfg` (database, credentials, TLS included).
pub fn fred_config(cfg: &RedisConfig) -> Result<Config, crate::BoxError> {
    let mut config = match &cfg.topology {
        RedisTopology::Single => {
            let mut c = Config::from_url(&cfg.url)?;
            c.database = Some(cfg.db);
            c
        }
        RedisTopology::Cluster { nodes } => Config {
            server: ServerConfig::Clustered {
                hosts: nodes.iter().map(|(h, p)| Server::new(h.as_str(), *p)).collect(),
                policy: Default::default(),
            },
            username: cfg.username.clone(),
            // A cluster has DB 0 only (SELECT is refused).
            database: None,
            ..Config::default()
        },
        RedisTopology::Sentinel { nodes, service } => Config {
            server: ServerConfig::Sentinel {
                hosts: nodes.iter().map(|(h, p)| Server::new(h.as_str(), *p)).collect(),
                service_name: service.clone(),
                username: cfg.sentinel_username.clone(),
                password: cfg.sentinel_password.clone(),
            },
            username: cfg.username.clone(),
            database: Some(cfg.db),
            ..Config::default()
        },
    };
    if let Some(p) = &cfg.password {
        config.password = Some(p.clone());
    }
    config.tls = match &cfg.tls {
        Some(tls) => Some(tls_config(tls)?),
        None => None,
    };
    // Run the reconnect policy for the first connection too: start-up
    // must not fail because Redis is down.
    config.fail_fast = false;
    Ok(config)
}

/// A rustls client config from the `[redis] tls_*` options.
fn tls_config(tls: &RedisTls) -> Result<TlsConfig, crate::BoxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = if tls.insecure_skip_verify {
        tracing::warn!(target: "cachegate::store", "[redis] tls_insecure_skip_verify is on: the Redis server's certificate is not checked (for tests only)");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca_file {
            Some(path) => {
                for cert in
                    CertificateDer::pem_file_iter(path).map_err(|e| format!("tls_ca_file {}: {e}", path.display()))?
                {
                    let cert = cert.map_err(|e| format!("tls_ca_file {}: {e}", path.display()))?;
                    roots.add(cert)?;
                }
                if roots.is_empty() {
                    return Err(format!("tls_ca_file {}: no certificate in it", path.display()).into());
                }
            }
            None => {
                let native = rustls_native_roots();
                roots.add_parsable_certificates(native);
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("tls_cert_file {}: {e}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls_cert_file {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls_key_file {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConfig {
        connector: TlsConnector::from(config),
        hostnames: TlsHostMapping::None,
    })
}

/// The system's CA certificates (as fred's default TLS uses them).
fn rustls_native_roots() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    found.certs
}

/// Accepts any server certificate (`tls_insecure_skip_verify`), still
/// checking the handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A fred builder for `config` with cachegate's connection settings: a
/// 1 s connect timeout, 2 s for fred's own commands, `attempts` tries per
/// command, and reconnection with backoff from 50 ms to 1 s, forever.
pub(super) fn builder(config: Config, attempts: u32) -> Builder {
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = std::time::Duration::from_secs(1);
            c.internal_command_timeout = std::time::Duration::from_secs(2);
            c.max_command_attempts = attempts;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 1000, 2));
    builder
}
