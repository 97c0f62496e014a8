//! The `[[rule]]` and `[[invalidate]]` tables as proxy.toml spells them
//! (serde shapes, with the spans an error points at), and the settings they
//! choose between. [`super::RuleSet::compile`] turns them into the compiled
//! rules; there is no shape in between.

use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Spanned<String>,
    pub methods: Option<Spanned<Vec<String>>>,
    pub path: Spanned<String>,
    pub key: Spanned<String>,
    pub ttl: Option<Spanned<RawTtl>>,
    pub max_ttl: Option<Spanned<i64>>,
    pub default_ttl: Option<Spanned<i64>>,
    pub stale_while_revalidate: Option<Spanned<i64>>,
    pub stale_if_error: Option<Spanned<i64>>,
    pub statuses: Option<Spanned<Vec<u16>>>,
    /// `heuristic = "10%"`: heuristic freshness (RFC 9111 §4.2.2), off
    /// when not set.
    pub heuristic: Option<Spanned<String>>,
    pub heuristic_max_ttl: Option<Spanned<i64>>,
    pub scope: Option<Spanned<String>>,
    pub max_body_bytes: Option<usize>,
    pub ttl_by_status: Option<Spanned<std::collections::BTreeMap<String, i64>>>,
    #[serde(default)]
    pub tags: Vec<Spanned<String>>,
    pub duplicate_inputs: Option<Spanned<String>>,
    /// `compress = "off" | "gzip" | "br" | "zstd"`: what an identity answer
    /// of this rule is encoded to before it is stored, over `[compression]
    /// encode`.
    pub compress: Option<Spanned<String>>,
}

/// `ttl = 300` or `ttl = "origin"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTtl {
    Seconds(i64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInvalidate {
    pub name: Spanned<String>,
    pub methods: Option<Spanned<Vec<String>>>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub keys: Vec<Spanned<String>>,
    #[serde(default)]
    pub patterns: Vec<Spanned<String>>,
    #[serde(default)]
    pub tags: Vec<Spanned<String>>,
    pub when: Option<Spanned<String>>,
    pub soft: Option<bool>,
    pub purge_credential: Option<bool>,
}

/// What the rules take from the rest of the config: the defaults a rule may
/// leave out, and the key length limit.
#[derive(Debug, Clone)]
pub struct RuleDefaults {
    /// `[redis] default_ttl`: a rule's TTL when it names none.
    pub ttl: Duration,
    /// Where `ttl` came from, for `cachegate check`.
    pub ttl_source: TtlSource,
    pub max_body_bytes: usize,
    pub max_key_bytes: usize,
}

/// Where a rule's fixed TTL came from: its own `ttl`, else the default
/// (`CACHE_TTL`, else `[redis] default_ttl`, else 300 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlSource {
    Rule,
    Env,
    File,
    BuiltIn,
}

impl TtlSource {
    /// As `cachegate check` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            TtlSource::Rule => "rule",
            TtlSource::Env => "CACHE_TTL env",
            TtlSource::File => "[redis] default_ttl",
            TtlSource::BuiltIn => "built-in default",
        }
    }
}

/// Who may share a cached response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Entries are kept apart per credential (Authorization / Cookie).
    Credential,
    /// One entry serves every caller.
    Public,
}

/// When an invalidation rule purges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Only after a 2xx answer.
    Success,
    /// After any answer, a failed or timed-out backend included (the
    /// default: a write whose outcome is unknown may have committed).
    Always,
}

/// Where a rule's freshness comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlMode {
    /// The operator's fixed TTL, whatever the backend says about freshness.
    Fixed(Duration),
    /// The backend's `s-maxage` / `max-age` / `Expires`.
    Origin,
}

/// What a request gets whose query or headers give an input the rule's
/// key reads more than once (`[[rule]] duplicate_inputs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicateInputs {
    /// Forwarded uncached: neither served from nor stored into the cache.
    #[default]
    Bypass,
    /// Only the first occurrence is kept, for the key and the backend alike.
    First,
    /// A JSON 400.
    Reject,
}

impl DuplicateInputs {
    pub fn as_str(self) -> &'static str {
        match self {
            DuplicateInputs::Bypass => "bypass",
            DuplicateInputs::First => "first",
            DuplicateInputs::Reject => "reject",
        }
    }
}

/// A content coding cachegate can decode, and encode an identity answer to
/// before storing it (`[compression]`, a rule's `compress`). Here, below
/// the config, because rules and `[compression]` both name one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCoding {
    Gzip,
    Br,
    Zstd,
}

impl ContentCoding {
    /// Every coding, in the order cachegate offers them to the backend.
    pub const ALL: [ContentCoding; 3] = [ContentCoding::Gzip, ContentCoding::Br, ContentCoding::Zstd];

    /// The token as `Content-Encoding` and proxy.toml spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentCoding::Gzip => "gzip",
            ContentCoding::Br => "br",
            ContentCoding::Zstd => "zstd",
        }
    }

    /// The coding proxy.toml names exactly (`"gzip"`, `"br"`, `"zstd"`).
    pub fn named(name: &str) -> Option<ContentCoding> {
        ContentCoding::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The coding a `Content-Encoding` or `Accept-Encoding` token names
    /// (case-insensitive; `x-gzip` is gzip, RFC 9110 §8.4.1.3).
    pub fn parse(token: &[u8]) -> Option<ContentCoding> {
        if token.eq_ignore_ascii_case(b"gzip") || token.eq_ignore_ascii_case(b"x-gzip") {
            Some(ContentCoding::Gzip)
        } else if token.eq_ignore_ascii_case(b"br") {
            Some(ContentCoding::Br)
        } else if token.eq_ignore_ascii_case(b"zstd") {
            Some(ContentCoding::Zstd)
        } else {
            None
        }
    }

    /// The compression levels the coding's library takes.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            ContentCoding::Gzip => 1..=9,
            ContentCoding::Br => 0..=11,
            ContentCoding::Zstd => 1..=19,
        }
    }

    /// The level used when none is configured: the libraries' usual
    /// balance of ratio and speed (nginx's gzip and brotli modules use 6,
    /// zstd's command line 3).
    pub fn default_level(self) -> u32 {
        match self {
            ContentCoding::Gzip => 6,
            ContentCoding::Br => 6,
            ContentCoding::Zstd => 3,
        }
    }
}

/// A rule's `compress`: follow `[compression] encode`, never encode, or
/// encode to one coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleCompress {
    #[default]
    Inherit,
    Off,
    Encode(ContentCoding),
}
