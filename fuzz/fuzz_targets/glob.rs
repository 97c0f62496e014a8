//! `store::glob::glob_match` (the port of Redis's `stringmatchlen`) against
//! an independent reference written here, plus `rules::glob_escape`.
//!
//! Input: two bytes (little-endian u16) giving the pattern length (modulo
//! what is left), the pattern, then the string; any bytes, NULs included.
//!
//! The reference does not follow the port's (Redis's) control flow. It
//! first splits the pattern into tokens exactly as Redis reads it — `*`
//! runs, `?`, `\x` escapes (a trailing `\` is a literal backslash), and
//! `[...]` classes with `^` negation, `\` escapes, ranges compared as C's
//! signed `char` with reversed ends swapped, `[a-]` taking `]` as a range
//! end, and an unterminated class holding the rest of the pattern — and then
//! matches the tokens with a plain dynamic programme (`*` = any run of
//! bytes, every other token = exactly one byte). Redis's one semantic quirk
//! on top: an empty string matches only the empty pattern. Redis's
//! `skipLongerMatches` shortcut is not modelled (it must not change any
//! answer, which is one of the things checked); its nesting guard does
//! change answers past 1000 nested `*`s, so patterns with more than 1000
//! `*` runs are only run, not compared.

#![no_main]

use cachegate::rules::glob_escape;
use cachegate::store::glob::glob_match;
use libfuzzer_sys::fuzz_target;

/// One pattern token, as Redis reads the pattern.
#[derive(Debug)]
enum Tok {
    /// A run of `*`.
    Star,
    /// `?`.
    Any,
    /// A literal byte (plain or `\`-escaped).
    Byte(u8),
    /// `[...]`.
    Class {
        negate: bool,
        bytes: Vec<u8>,
        /// Inclusive, as signed chars, already ordered.
        ranges: Vec<(i8, i8)>,
    },
}

impl Tok {
    fn matches_byte(&self, c: u8) -> bool {
        match self {
            Tok::Star => unreachable!("a star is not a one-byte token"),
            Tok::Any => true,
            Tok::Byte(b) => *b == c,
            Tok::Class { negate, bytes, ranges } => {
                let c_signed = c as i8;
                let hit = bytes.contains(&c) || ranges.iter().any(|&(lo, hi)| lo <= c_signed && c_signed <= hi);
                hit != *negate
            }
        }
    }
}

fn tokenize(p: &[u8]) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' => {
                while i < p.len() && p[i] == b'*' {
                    i += 1;
                }
                toks.push(Tok::Star);
            }
            b'?' => {
                toks.push(Tok::Any);
                i += 1;
            }
            b'\\' if i + 1 < p.len() => {
                toks.push(Tok::Byte(p[i + 1]));
                i += 2;
            }
            b'[' => {
                i += 1;
                let negate = p.get(i) == Some(&b'^');
                if negate {
                    i += 1;
                }
                let mut bytes = Vec::new();
                let mut ranges = Vec::new();
                // Ends at `]` or, unterminated, at the end of the pattern.
                while i < p.len() {
                    let left = p.len() - i;
                    if p[i] == b'\\' && left >= 2 {
                        bytes.push(p[i + 1]);
                        i += 2;
                    } else if p[i] == b']' {
                        i += 1;
                        break;
                    } else if left >= 3 && p[i + 1] == b'-' {
                        let (a, b) = (p[i] as i8, p[i + 2] as i8);
                        ranges.push((a.min(b), a.max(b)));
                        i += 3;
                    } else {
                        bytes.push(p[i]);
                        i += 1;
                    }
                }
                toks.push(Tok::Class { negate, bytes, ranges });
            }
            // A plain byte, or a trailing backslash (a literal backslash).
            b => {
                toks.push(Tok::Byte(b));
                i += 1;
            }
        }
    }
    toks
}

/// Whether the tokens match all of `s`: `*` any run of bytes (empty
/// included), every other token exactly one byte.
fn tokens_match(toks: &[Tok], s: &[u8]) -> bool {
    let n = s.len();
    // next[j]: the tokens after the current one match s[j..].
    let mut next = vec![false; n + 1];
    next[n] = true;
    for tok in toks.iter().rev() {
        let mut cur = vec![false; n + 1];
        for j in (0..=n).rev() {
            cur[j] = match tok {
                Tok::Star => next[j] || (j < n && cur[j + 1]),
                _ => j < n && tok.matches_byte(s[j]) && next[j + 1],
            };
        }
        next = cur;
    }
    next[0]
}

/// Redis's answer, or `None` when the nesting guard may decide it.
fn reference(pattern: &[u8], s: &[u8]) -> Option<bool> {
    let toks = tokenize(pattern);
    if toks.iter().filter(|t| matches!(t, Tok::Star)).count() > 1000 {
        return None;
    }
    if s.is_empty() {
        return Some(pattern.is_empty());
    }
    Some(tokens_match(&toks, s))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let rest = &data[2..];
    let split = usize::from(u16::from_le_bytes([data[0], data[1]])) % (rest.len() + 1);
    let (pattern, string) = rest.split_at(split);

    let got = glob_match(pattern, string);
    if let Some(expected) = reference(pattern, string) {
        assert_eq!(
            got,
            expected,
            "glob_match({:?}, {:?})",
            String::from_utf8_lossy(pattern),
            String::from_utf8_lossy(string)
        );
    }

    // An escaped value matches itself and nothing else.
    if let Ok(value) = std::str::from_utf8(string) {
        let escaped = glob_escape(value);
        assert!(
            glob_match(escaped.as_bytes(), value.as_bytes()),
            "{escaped:?} vs {value:?}"
        );
        let other_is_value = pattern == value.as_bytes();
        assert_eq!(
            glob_match(escaped.as_bytes(), pattern),
            other_is_value,
            "escaped {value:?} = {escaped:?} vs {:?}",
            String::from_utf8_lossy(pattern)
        );
    }
});
