//! PEM files named by settings (`[server.tls]`, `[admin.tls]`, the backend's
//! and Redis's TLS files): read here alone, so that `check`, start-up,
//! reload and the TLS configs built from them agree on what a readable
//! file is, and name the setting and the file the same way when it is not.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// Every certificate of a PEM file (a chain, or the CAs to trust): at
/// least one, or an error naming `setting` and the file.
pub fn certificates(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{setting} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{setting} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// The private key of a PEM file, or an error naming `setting` and the file.
pub fn private_key(path: &Path, setting: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{setting} {}: {e}", path.display()))
}
