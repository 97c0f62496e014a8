//! `[compression]`: compression negotiated once. An entry is stored in one
//! encoding (the backend's, or one cachegate encodes an identity answer to);
//! clients that do not accept it get it decoded on the fly.
//!
//! ```toml
//! [compression]
//! enabled = true               # ask the backend with one Accept-Encoding,
//!                              # decode for clients that do not accept the
//!                              # stored coding; Accept-Encoding no longer
//!                              # splits the variant key
//! encode = "off"               # "off" | "gzip" | "br" | "zstd": identity
//!                              # answers encoded before they are stored
//! level = 6                    # of `encode` (gzip 1-9, br 0-11, zstd 1-19);
//!                              # unset: gzip 6, br 6, zstd 3
//! min_bytes = 1024             # smaller bodies are stored as they came
//! types = ["application/json", "application/*+json", "text/*", ...]
//! backend_encodings = ["gzip", "br", "zstd"]   # the Accept-Encoding sent
//! max_decoded_bytes = 67108864 # an encoded answer larger than this once
//!                              # decoded is not stored (decompression bombs)
//! ```

use super::error::ConfigError;
use crate::rules::ContentCoding;
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;

/// `[compression]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    pub enabled: Option<bool>,
    pub encode: Option<Spanned<String>>,
    pub level: Option<Spanned<i64>>,
    pub min_bytes: Option<Spanned<i64>>,
    pub types: Option<Spanned<Vec<String>>>,
    pub backend_encodings: Option<Spanned<Vec<String>>>,
    pub max_decoded_bytes: Option<Spanned<i64>>,
}

/// The media types encoded by default: text formats that compress well.
/// Images, video and archives are already compressed.
pub const DEFAULT_TYPES: [&str; 9] = [
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "text/*",
    "image/svg+xml",
    "application/wasm",
    "application/x-ndjson",
];

/// `[compression]`, resolved.
#[derive(Debug, Clone)]
pub struct CompressionConfig {
    pub enabled: bool,
    /// What identity answers are encoded to before storing; `None`: kept.
    pub encode: Option<ContentCoding>,
    /// The level of `encode`, when set.
    pub level: Option<u32>,
    pub min_bytes: usize,
    /// Media types (lower case; one `*` matches any run of characters).
    pub types: Vec<String>,
    /// The `Accept-Encoding` sent to the backend for a cached route.
    pub backend_accept: http::HeaderValue,
    pub max_decoded_bytes: u64,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: true,
            encode: None,
            level: None,
            min_bytes: 1024,
            types: DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
            backend_accept: http::HeaderValue::from_static("gzip, br, zstd"),
            max_decoded_bytes: 64 * 1024 * 1024,
        }
    }
}

impl CompressionConfig {
    /// The level to encode `coding` at: the configured one, brought into
    /// the coding's range (a rule may pick another coding than `encode`),
    /// else the coding's default.
    pub fn level_for(&self, coding: ContentCoding) -> u32 {
        let range = coding.levels();
        self.level
            .map_or(coding.default_level(), |l| l.clamp(*range.start(), *range.end()))
    }

    /// Whether a media type (a `Content-Type` value, parameters and all)
    /// is one of `types`.
    pub fn compressible(&self, content_type: &[u8]) -> bool {
        let essence = content_type
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        self.types.iter().any(|t| media_matches(t.as_bytes(), essence))
    }
}

/// Whether `essence` (any case) matches the lower-case `pattern`, whose one
/// `*` (if any) stands for any run of characters.
fn media_matches(pattern: &[u8], essence: &[u8]) -> bool {
    let lower_eq = |p: &[u8], e: &[u8]| p.eq_ignore_ascii_case(e);
    match pattern.iter().position(|b| *b == b'*') {
        None => lower_eq(pattern, essence),
        Some(star) => {
            let (prefix, suffix) = (&pattern[..star], &pattern[star + 1..]);
            essence.len() >= prefix.len() + suffix.len()
                && lower_eq(prefix, &essence[..prefix.len()])
                && lower_eq(suffix, &essence[essence.len() - suffix.len()..])
        }
    }
}

pub(super) fn resolve(
    raw: RawCompression,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<CompressionConfig, ConfigError> {
    let mut c = CompressionConfig {
        enabled: raw.enabled.unwrap_or(true),
        ..CompressionConfig::default()
    };
    if let Some(v) = &raw.encode {
        c.encode = match v.get_ref().as_str() {
            "off" => None,
            name => Some(ContentCoding::named(name).ok_or_else(|| {
                at(
                    v.span(),
                    format!("[compression] encode: expected \"off\", \"gzip\", \"br\" or \"zstd\", got {name:?}"),
                )
            })?),
        };
    }
    if let Some(v) = &raw.level {
        let n = *v.get_ref();
        let range = c.encode.map_or(0..=19, |coding| coding.levels());
        let named = c.encode.map_or("any coding", |coding| coding.as_str());
        if n < 0 || !range.contains(&(n as u32)) {
            return Err(at(
                v.span(),
                format!(
                    "[compression] level: expected {} to {} for {named}, got {n}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        c.level = Some(n as u32);
    }
    if let Some(v) = &raw.min_bytes {
        let n = *v.get_ref();
        if !(0..=1 << 30).contains(&n) {
            return Err(at(
                v.span(),
                format!("[compression] min_bytes: expected 0 to 1073741824, got {n}"),
            ));
        }
        c.min_bytes = n as usize;
    }
    if let Some(v) = &raw.max_decoded_bytes {
        let n = *v.get_ref();
        if n < 1024 {
            return Err(at(
                v.span(),
                format!("[compression] max_decoded_bytes: expected at least 1024, got {n}"),
            ));
        }
        c.max_decoded_bytes = n as u64;
    }
    if let Some(v) = &raw.types {
        let mut types = Vec::new();
        for t in v.get_ref() {
            let t = t.trim().to_ascii_lowercase();
            let well_formed = t.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
                && t.matches('*').count() <= 1
                && t.bytes().all(|b| b.is_ascii_graphic());
            if !well_formed {
                return Err(at(
                    v.span(),
                    format!(
                        "[compression] types: {t:?} is not a media type such as \"application/json\" or \"text/*\""
                    ),
                ));
            }
            types.push(t);
        }
        c.types = types;
    }
    if let Some(v) = &raw.backend_encodings {
        let mut names: Vec<&str> = Vec::new();
        for name in v.get_ref() {
            let Some(known) = ContentCoding::named(name) else {
                return Err(at(
                    v.span(),
                    format!("[compression] backend_encodings: expected \"gzip\", \"br\" or \"zstd\", got {name:?}"),
                ));
            };
            if !names.contains(&known.as_str()) {
                names.push(known.as_str());
            }
        }
        // Empty: the backend is asked for identity only.
        let value = if names.is_empty() {
            "identity".to_string()
        } else {
            names.join(", ")
        };
        c.backend_accept = http::HeaderValue::from_str(&value).map_err(|e| at(v.span(), e.to_string()))?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_match_with_one_star() {
        let c = CompressionConfig::default();
        assert!(c.compressible(b"application/json"));
        assert!(c.compressible(b"Application/JSON; charset=utf-8"));
        assert!(c.compressible(b"application/problem+json"));
        assert!(c.compressible(b"text/html"));
        assert!(c.compressible(b"image/svg+xml"));
        assert!(!c.compressible(b"image/png"));
        assert!(!c.compressible(b"application/octet-stream"));
        assert!(!c.compressible(b""));
        assert!(!media_matches(b"application/*+json", b"application/+jso"));
    }

    #[test]
    fn levels_are_brought_into_the_codings_range() {
        let c = CompressionConfig {
            level: Some(11),
            ..CompressionConfig::default()
        };
        assert_eq!(c.level_for(ContentCoding::Br), 11);
        assert_eq!(c.level_for(ContentCoding::Gzip), 9);
        assert_eq!(CompressionConfig::default().level_for(ContentCoding::Zstd), 3);
    }
}
