//! HTTP-dates and delta-seconds as a recipient reads them (RFC 9110
//! §5.6.7, RFC 9111 §1.2.2): the three date formats (IMF-fixdate, RFC 850,
//! asctime) with their names in any case, and seconds that overflow read
//! as 2^31.
//!
//! Nothing looser: RFC 9111 §5.3 has a cache take an `Expires` it cannot
//! read as already expired, so a date with `UTC` for `GMT`, a missing
//! comma, extra spaces or a one-digit hour is not a date here (as the
//! cache-tests suite's `expires-parse` tests expect).

use std::time::SystemTime;

/// The value delta-seconds take when they do not fit (RFC 9111 §1.2.2).
pub const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// Parses delta-seconds: digits only; a value too large reads as 2^31.
pub fn delta_seconds(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().map_or(DELTA_SECONDS_MAX, |v| v.min(DELTA_SECONDS_MAX)))
}

/// Parses an HTTP-date in any of its three formats; day, month and zone
/// names in any case.
pub fn parse(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    httpdate::parse_http_date(s)
        .ok()
        .or_else(|| httpdate::parse_http_date(&canonical_case(s)).ok())
}

/// `sun, 06 NOV 1994 08:49:37 gmt` as `Sun, 06 Nov 1994 08:49:37 GMT`.
fn canonical_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    for c in s.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphabetic() {
            word.push(c);
            continue;
        }
        if word.eq_ignore_ascii_case("gmt") {
            out.push_str("GMT");
        } else {
            for (i, w) in word.chars().enumerate() {
                out.push(if i == 0 {
                    w.to_ascii_uppercase()
                } else {
                    w.to_ascii_lowercase()
                });
            }
        }
        word.clear();
        out.push(c);
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> u64 {
        parse(s)
            .unwrap_or_else(|| panic!("{s:?} does not parse"))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn the_three_formats() {
        let t = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 GMT"), t);
        assert_eq!(at("Sunday, 06-Nov-94 08:49:37 GMT"), t);
        assert_eq!(at("Sun Nov  6 08:49:37 1994"), t);
    }

    #[test]
    fn names_in_any_case() {
        let t = 784_111_777;
        for s in [
            "  Sun, 06 Nov 1994 08:49:37 GMT  ",
            "sun, 06 nov 1994 08:49:37 gmt",
            "SUN, 06 NOV 1994 08:49:37 GMT",
            "sunday, 06-nov-94 08:49:37 GMT",
            "SUN NOV  6 08:49:37 1994",
        ] {
            assert_eq!(at(s), t, "{s:?}");
        }
    }

    /// RFC 9111 §5.3: what is not one of the three formats is no date (an
    /// `Expires` like these is already expired).
    #[test]
    fn near_misses_are_not_dates() {
        for s in [
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sun, 06  Nov  1994 08:49:37 GMT",
            "Sun, 06-Nov-1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "06 Nov 1994 08:49:37 GMT",
        ] {
            assert!(parse(s).is_none(), "{s:?}");
        }
    }

    #[test]
    fn rfc_850_two_digit_years() {
        let year = |s: &str| 1970 + at(s) / 31_556_952;
        assert_eq!(year("Sunday, 06-Nov-94 08:49:37 GMT"), 1994);
        assert_eq!(year("Wednesday, 06-Nov-30 08:49:37 GMT"), 2030);
    }

    #[test]
    fn delta_seconds_overflow_to_2_31() {
        assert_eq!(delta_seconds("60"), Some(60));
        assert_eq!(delta_seconds(" 60 "), Some(60));
        assert_eq!(delta_seconds("99999999999999999999999"), Some(DELTA_SECONDS_MAX));
        assert_eq!(delta_seconds("4294967296"), Some(DELTA_SECONDS_MAX));
        assert_eq!(delta_seconds("-1"), None);
        assert_eq!(delta_seconds("1.5"), None);
        assert_eq!(delta_seconds(""), None);
    }
}
