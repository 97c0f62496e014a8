//! Implicit variants: request inputs that reach the backend, that no rule
//! names, and that cachegate still makes part of an entry's identity.
//!
//! - With `[backend] preserve_host`, the client's `Host` (normalised:
//!   lower-case, default port dropped) for every entry: the backend sees
//!   it, so it must not be able to change what another host is served.
//!
//! Such inputs select a field of their own inside the key's record
//! (`<scope>#i<hash>`), not another logical key: purging the key (a write,
//! the admin API, a pattern or a tag) still removes every variant at once.
//! A `Vary` marker and its variants then live under that field as they do
//! under a plain scope. `i` is not a hex digit, so such a field never
//! equals a `Vary` variant's (`<scope>#<hex>`).

use crate::config::Config;
use http::{header, HeaderMap};
use sha2::{Digest, Sha256};

/// The field a request's entry lives in: `scope` itself when no implicit
/// input applies (no hashing, no allocation), else `scope#i<hash>`.
pub fn field(scope: String, request: &HeaderMap, config: &Config) -> String {
    if !config.backend.preserve_host {
        return scope;
    }
    let mut hash = Sha256::new();
    hash.update(b"host\0");
    if let Some(host) = request.get(header::HOST) {
        hash.update(crate::proxy::host::normalized(host.as_bytes()));
    }
    hash.update(b"\n");
    format!("{scope}#i{}", hex::encode(&hash.finalize()[..12]))
}
