//! The `Cache-Status` (RFC 9211) and `X-Cache` headers a rule's responses carry.

use http::{HeaderMap, HeaderName, HeaderValue};

// Constants, so the names are not parsed again on every response.
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What happened to a request that went through a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache; `ttl` seconds of freshness left.
    Hit { ttl: u64 },
    /// Served from another request's concurrent fill (coalesced).
    Collapsed { ttl: u64 },
    /// Looked up, not found, forwarded; `stored` says whether it was kept,
    /// `detail` why not. `requested`: a fresh entry was found but the
    /// request's own directives (`no-cache`, `max-age=0`, `Pragma:
    /// no-cache`) refused it (RFC 9211 `fwd=request`).
    Miss {
        stored: bool,
        detail: Option<&'static str>,
        requested: bool,
    },
    /// A stale entry was served: while it is refreshed in the background
    /// (`revalidating`) or because the backend failed (`backend-error`).
    Stale { detail: &'static str },
    /// An entry was validated with the backend (304) and served: a stale
    /// one, or (`requested`) a fresh one the request's directives refused.
    Revalidated { stored: bool, requested: bool },
    /// Not looked up (store down, key unusable); forwarded uncached.
    Bypass { detail: &'static str },
}

impl Outcome {
    pub fn x_cache(&self) -> &'static str {
        match self {
            Outcome::Hit { .. } | Outcome::Collapsed { .. } => "HIT",
            Outcome::Miss { .. } => "MISS",
            Outcome::Stale { .. } => "STALE",
            Outcome::Revalidated { .. } => "REVALIDATED",
            Outcome::Bypass { .. } => "BYPASS",
        }
    }

    /// The `Cache-Status` value. A hit, the common case, is written
    /// without the formatting machinery.
    pub fn cache_status(&self) -> Vec<u8> {
        use std::io::Write;
        let mut v = Vec::with_capacity(48);
        let _ = match self {
            Outcome::Hit { ttl } => {
                v.extend_from_slice(b"cachegate; hit; ttl=");
                v.extend_from_slice(itoa::Buffer::new().format(*ttl).as_bytes());
                Ok(())
            }
            Outcome::Collapsed { ttl } => write!(v, "cachegate; hit; ttl={ttl}; detail=collapsed"),
            Outcome::Miss {
                stored,
                detail,
                requested,
            } => {
                v.extend_from_slice(if *requested {
                    b"cachegate; fwd=request"
                } else {
                    b"cachegate; fwd=miss"
                });
                match (stored, detail) {
                    (true, _) => write!(v, "; stored"),
                    (false, Some(d)) => write!(v, "; detail={d}"),
                    (false, None) => Ok(()),
                }
            }
            Outcome::Stale { detail } => write!(v, "cachegate; hit; fwd=stale; detail={detail}"),
            Outcome::Revalidated { stored, requested } => {
                let fwd = if *requested { "request" } else { "stale" };
                let stored = if *stored { "; stored" } else { "" };
                write!(v, "cachegate; fwd={fwd}; fwd-status=304{stored}")
            }
            Outcome::Bypass { detail } => write!(v, "cachegate; fwd=bypass; detail={detail}"),
        };
        v
    }

    /// The same outcome, marked as forwarded because the request's own
    /// directives refused the fresh entry that was found.
    pub fn requested(self) -> Outcome {
        match self {
            Outcome::Miss { stored, detail, .. } => Outcome::Miss {
                stored,
                detail,
                requested: true,
            },
            Outcome::Revalidated { stored, .. } => Outcome::Revalidated {
                stored,
                requested: true,
            },
            other => other,
        }
    }

    /// Sets both headers, replacing any the backend sent.
    pub fn apply(&self, headers: &mut HeaderMap) {
        // The buffer becomes the value's: no second copy.
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(self.cache_status())) {
            headers.insert(CACHE_STATUS, v);
        }
        headers.insert(X_CACHE, HeaderValue::from_static(self.x_cache()));
    }
}
