//! Implicit variants: request inputs that reach the backend, that no rule
//! names, and that cachegate still makes part of an entry's identity.
//!
//! - With `[backend] preserve_host`, the client's `Host` (normalised:
//!   lower-case, default port dropped) for every entry: the backend sees
//!   it, so it must not be able to change what another host is served.
//!
//! - In a shared scope (`anon`, `public`), `Origin` (unless `[cache]
//!   vary_on_origin = false`): an implicit `Vary: Origin`, so an answer
//!   with (or without) `Access-Control-Allow-Origin` for one origin is
//!   never served to another, nor to a request without `Origin`. Backends'
//!   CORS middleware often adds no `Vary: Origin` of its own. A credential
//!   scope is one caller's: not split by origin.
//!
//! Such inputs select a field of their own inside the key's record
//! (`<scope>#i<hash>`), not another logical key: purging the key (a write,
//! the admin API, a pattern or a tag) still removes every variant at once.
//! A `Vary` marker and its variants then live under that field as they do
//! under a plain scope. `i` is not a hex digit, so such a field never
//! equals a `Vary` variant's (`<scope>#<hex>`).

use super::scope::{ANONYMOUS, PUBLIC};
use crate::config::Config;
use http::{header, HeaderMap};
use sha2::{Digest, Sha256};

/// The field a request's entry lives in: `scope` itself when no implicit
/// input applies (no hashing, no allocation: the usual request without
/// `Origin`), else `scope#i<hash>`.
pub fn field(scope: String, request: &HeaderMap, config: &Config) -> String {
    let host = config.backend.preserve_host;
    let origin =
        config.cache.vary_on_origin && request.contains_key(header::ORIGIN) && (scope == ANONYMOUS || scope == PUBLIC);
    if !host && !origin {
        return scope;
    }
    let mut hash = Sha256::new();
    if host {
        hash.update(b"host\0");
        if let Some(host) = request.get(header::HOST) {
            hash.update(crate::proxy::host::normalized(host.as_bytes()));
        }
        hash.update(b"\n");
    }
    if origin {
        for value in request.get_all(header::ORIGIN) {
            hash.update(b"origin\0");
            hash.update(value.as_bytes());
            hash.update(b"\n");
        }
    }
    format!("{scope}#i{}", hex::encode(&hash.finalize()[..12]))
}
