//! Redis glob matching (`*`, `?`, `[a-z]`, `[^a]`, `\` escapes), byte for
//! byte as Redis's `stringmatchlen` does it, so the memory store purges
//! exactly what `SCAN MATCH` would.
//!
//! This is a port of `stringmatchlen_impl` from Redis 7's `util.c` (case
//! sensitive), quirks included:
//!
//! - runs of `*` collapse; a pattern ending in `*` matches any rest;
//! - `*` never matches when the string is empty at the start: the empty
//!   string matches only the empty pattern (Redis's main loop is never
//!   entered, so `"*"` does not match `""`);
//! - `\x` matches `x` literally, in and out of brackets; a trailing `\`
//!   matches a backslash;
//! - `[^...]` negates; `[a-z]` is a range of bytes compared as C's signed
//!   `char` (so `[a-\xff]` holds the bytes `\xff` to `a`), with reversed
//!   ends swapped;
//! - an unterminated bracket (`[abc`) is a class holding the rest of the
//!   pattern, so `[` alone matches nothing and `[^` matches any one byte;
//! - after a `*` found no match for the rest of the pattern anywhere in the
//!   rest of the string, every outer `*` gives up too (Redis's
//!   `skipLongerMatches`), which keeps `a*a*a*…b` polynomial; and `*`s nest
//!   at most 1000 deep (deeper, the branch does not match), as Redis guards
//!   against abusive patterns.
//!
//! C reads one byte past the pattern's end (its NUL terminator); here a read
//! past the end yields 0, which keeps those comparisons identical.

/// How deep `*`s may nest before a branch is taken as not matching (Redis's
/// "protection against abusive patterns").
const MAX_NESTING: u32 = 1000;

/// Whether `string` matches the Redis glob `pattern`.
pub fn glob_match(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer_matches = false;
    let input = Input { pat: pattern, string };
    match_impl(&input, 0, 0, &mut skip_longer_matches, 0)
}

/// The pattern and the string being matched against it.
struct Input<'a> {
    pat: &'a [u8],
    string: &'a [u8],
}

/// The pattern byte at `i`, or 0 (C's NUL terminator) past the end.
#[inline]
fn at(pattern: &[u8], i: usize) -> u8 {
    pattern.get(i).copied().unwrap_or(0)
}

/// `stringmatchlen_impl` with the C pointers as indexes: `p` into `pat`
/// (the C `patternLen` is `pat.len() - p`) and `s` into `string`.
fn match_impl(input: &Input<'_>, mut p: usize, mut s: usize, skip_longer_matches: &mut bool, nesting: u32) -> bool {
    let (pat, string) = (input.pat, input.string);
    if nesting > MAX_NESTING {
        return false;
    }
    let end = pat.len();
    while p < end && s < string.len() {
        let c = string[s];
        match pat[p] {
            b'*' => {
                while p < end && at(pat, p + 1) == b'*' {
                    p += 1;
                }
                if end - p == 1 {
                    return true;
                }
                while s < string.len() {
                    if match_impl(input, p + 1, s, skip_longer_matches, nesting + 1) {
                        return true;
                    }
                    if *skip_longer_matches {
                        return false;
                    }
                    s += 1;
                }
                // The rest of the pattern matches nowhere in the rest of
                // the string: a longer match for an earlier `*` cannot help.
                *skip_longer_matches = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let negate = at(pat, p) == b'^';
                if negate {
                    p += 1;
                }
                let mut matched = false;
                loop {
                    let left = end - p;
                    if at(pat, p) == b'\\' && left >= 2 {
                        p += 1;
                        if pat[p] == c {
                            matched = true;
                        }
                    } else if at(pat, p) == b']' {
                        break;
                    } else if left == 0 {
                        // Unterminated: step back so the shared `p += 1`
                        // below lands exactly on the end.
                        p -= 1;
                        break;
                    } else if left >= 3 && pat[p + 1] == b'-' {
                        // C compares (signed) chars.
                        let mut start = pat[p] as i8;
                        let mut stop = pat[p + 2] as i8;
                        if start > stop {
                            std::mem::swap(&mut start, &mut stop);
                        }
                        p += 2;
                        let c = c as i8;
                        if c >= start && c <= stop {
                            matched = true;
                        }
                    } else if pat[p] == c {
                        matched = true;
                    }
                    p += 1;
                }
                if negate {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s += 1;
            }
            b'\\' => {
                if end - p >= 2 {
                    p += 1;
                }
                if pat[p] != c {
                    return false;
                }
                s += 1;
            }
            literal => {
                if literal != c {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while at(pat, p) == b'*' {
                p += 1;
            }
            break;
        }
    }
    p == end && s == string.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;
    use std::time::{Duration, Instant};

    fn m(p: &str, s: &str) -> bool {
        glob_match(p.as_bytes(), s.as_bytes())
    }

    #[test]
    fn literals() {
        assert!(m("abc", "abc"));
        assert!(!m("abc", "abd"));
        assert!(!m("abc", "ab"));
        assert!(!m("ab", "abc"));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(!m("a", ""));
    }

    #[test]
    fn star() {
        assert!(m("*", "anything"));
        assert!(m("a*", "a"));
        assert!(m("a*", "abc"));
        assert!(m("*c", "abc"));
        assert!(m("a*c", "ac"));
        assert!(m("a*c", "abbbc"));
        assert!(!m("a*c", "abbb"));
        assert!(m("a*b*c", "aXbYc"));
        assert!(!m("a*b*c", "aXcYb"));
        assert!(m("task:*:x", "task:1:2:x"));
        // Consecutive stars collapse.
        assert!(m("a***c", "abc"));
        assert!(m("***", "abc"));
        assert!(m("a**", "a"));
        // Redis quirk: the empty string matches only the empty pattern.
        assert!(!m("*", ""));
        assert!(!m("**", ""));
    }

    #[test]
    fn question_mark() {
        assert!(m("?", "a"));
        assert!(!m("?", ""));
        assert!(!m("?", "ab"));
        assert!(m("a?c", "abc"));
        assert!(m("??", "é")); // two UTF-8 bytes
        assert!(m("a?*", "ab"));
        assert!(!m("a?*", "a"));
    }

    #[test]
    fn brackets_and_ranges() {
        assert!(m("[abc]", "b"));
        assert!(!m("[abc]", "d"));
        assert!(m("h[ae]llo", "hello"));
        assert!(m("[a-c]x", "bx"));
        assert!(!m("[a-c]x", "dx"));
        assert!(m("[0-9][0-9]", "42"));
        // Reversed ranges are swapped.
        assert!(m("[z-a]", "m"));
        assert!(m("[c-a]", "a"));
        // `-` first is literal.
        assert!(m("[-a]", "-"));
        assert!(m("[-a]", "a"));
        // Redis quirk: in `[a-]` the `]` is the end of a range (`]` to `a`
        // once swapped) and the bracket is left unterminated.
        assert!(m("[a-]", "_"));
        assert!(m("[a-]", "]"));
        assert!(!m("[a-]", "-"));
        assert!(!m("[a-]", "b"));
        // Several ranges and literals.
        assert!(m("[a-cx-z_]", "y"));
        assert!(m("[a-cx-z_]", "_"));
        assert!(!m("[a-cx-z_]", "m"));
        // `]` first closes an empty class, which matches nothing.
        assert!(!m("[]", "]"));
        assert!(!m("[]a]", "a"));
        // Ranges compare signed chars, as C does: bytes >= 0x80 sort below 0.
        assert!(glob_match(b"[\x01-\xff]", b"\xff"));
        assert!(!glob_match(b"[\x01-\xff]", b"a"));
        assert!(glob_match(b"[a-\xc3]", b"\xc3"));
        assert!(glob_match(b"[a-\xc3]", b"0"));
        assert!(!glob_match(b"[a-\xc3]", b"b"));
        assert!(!glob_match(b"[a-\xc3]", b"\x80"));
    }

    #[test]
    fn negation() {
        assert!(m("[^a]", "b"));
        assert!(!m("[^a]", "a"));
        assert!(m("[^a-c]", "d"));
        assert!(!m("[^a-c]", "b"));
        assert!(!m("[^abc]x", "ax"));
        assert!(m("[^abc]x", "zx"));
        // `^` not first is literal.
        assert!(m("[a^]", "^"));
        // `[^]` is an empty class negated: any one byte.
        assert!(m("[^]", "q"));
        assert!(!m("[^]", "qq"));
    }

    #[test]
    fn escapes() {
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "a"));
        assert!(m("a\\?b", "a?b"));
        assert!(!m("a\\?b", "axb"));
        assert!(m("\\[x\\]", "[x]"));
        assert!(m("\\\\", "\\"));
        assert!(m("\\a", "a"));
        // Inside brackets.
        assert!(m("[\\]]", "]"));
        assert!(m("[\\-]", "-"));
        assert!(m("[a\\-z]", "-"));
        assert!(!m("[a\\-z]", "m"));
        assert!(m("[\\^a]", "^"));
        assert!(m("[\\\\]", "\\"));
        // A trailing backslash is a literal backslash.
        assert!(m("a\\", "a\\"));
        assert!(!m("a\\", "a"));
        assert!(m("\\", "\\"));
        assert!(m("*\\", "xyz\\"));
    }

    #[test]
    fn unterminated_brackets() {
        // The class holds the rest of the pattern.
        assert!(!m("[", "["));
        assert!(!m("[", "a"));
        assert!(m("[a", "a"));
        assert!(m("[ab", "b"));
        assert!(!m("[ab", "ab"));
        assert!(m("x[ab", "xa"));
        assert!(m("[a-", "-"));
        assert!(m("[a-c", "b"));
        // `[^` negates the empty rest: any one byte.
        assert!(m("[^", "z"));
        assert!(!m("[^", "zz"));
        assert!(m("[^a", "b"));
        assert!(!m("[^a", "a"));
        // An escaped `]` does not close it; a trailing `\` is literal.
        assert!(m("[\\]", "]"));
        assert!(m("[\\", "\\"));
        assert!(m("[a\\", "\\"));
        // Nothing after the class.
        assert!(!m("[a", "ab"));
    }

    #[test]
    fn binary_bytes() {
        assert!(glob_match(b"a\x00*", b"a\x00bc"));
        assert!(!glob_match(b"a\x00", b"a"));
        assert!(glob_match(b"\xff?", b"\xff\x00"));
        assert!(glob_match("t*é".as_bytes(), "tâché".as_bytes()));
    }

    #[test]
    fn no_exponential_blowup() {
        let start = Instant::now();
        let pattern = format!("{}b", "a*".repeat(40));
        let string = "a".repeat(200);
        assert!(!glob_match(pattern.as_bytes(), string.as_bytes()));
        let pattern = "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        assert!(!glob_match(pattern.as_bytes(), "a".repeat(5000).as_bytes()));
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
        // It still finds real matches.
        assert!(glob_match(
            pattern.as_bytes(),
            format!("{}b", "a".repeat(100)).as_bytes()
        ));
    }

    #[test]
    fn nesting_guard() {
        // 1000 nested stars are fine, more never match.
        let string = "a".repeat(1100);
        let ok = "*a".repeat(1000);
        assert!(glob_match(ok.as_bytes(), string.as_bytes()));
        let too_deep = "*a".repeat(1001);
        assert!(!glob_match(too_deep.as_bytes(), string.as_bytes()));
        // Huge patterns neither overflow the stack nor take long.
        let huge = "*?".repeat(100_000);
        assert!(!glob_match(huge.as_bytes(), "x".repeat(10_000).as_bytes()));
    }

    #[test]
    fn never_panics_on_junk() {
        // A cheap deterministic fuzz: every short pattern over a nasty
        // alphabet against a few strings.
        let alphabet: &[u8] = b"*?[]^-\\a\x00\xff";
        let strings: [&[u8]; 6] = [b"", b"a", b"]", b"\\", b"a-]", b"\xff\x00*"];
        let mut pattern = Vec::new();
        for len in 0..=5u32 {
            let count = (alphabet.len() as u32).pow(len);
            for mut n in 0..count {
                pattern.clear();
                for _ in 0..len {
                    pattern.push(alphabet[(n % alphabet.len() as u32) as usize]);
                    n /= alphabet.len() as u32;
                }
                for s in strings {
                    let _ = glob_match(&pattern, s);
                }
            }
        }
    }
}
