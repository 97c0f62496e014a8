//! HTTP-dates and delta-seconds as a recipient reads them (RFC 9110
//! §5.6.7, RFC 9111 §1.2.2): the three date formats, with the leniency the
//! RFC asks of recipients, and seconds that overflow read as 2^31.
//!
//! `httpdate` parses the three formats exactly; senders that are not quite
//! right (a missing weekday, `UTC` for `GMT`, one-digit days, odd case or
//! spacing, a numeric zone) are read by a token-based fallback, so a
//! slightly malformed `Expires` is not taken for "already expired".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Parses an HTTP-date in any of its three formats, leniently.
pub fn parse(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    httpdate::parse_http_date(s).ok().or_else(|| lenient(s))
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Reads day, month, year, time and zone from tokens in any order the three
/// formats (and the Internet Message Format) use.
fn lenient(s: &str) -> Option<SystemTime> {
    let (mut day, mut month, mut year, mut time, mut offset) = (None, None, None, None, 0i64);
    for token in s.split([' ', ',', '-', '\t']).filter(|t| !t.is_empty()) {
        let lower = token.to_ascii_lowercase();
        if token.contains(':') {
            time = Some(clock(token)?);
        } else if let Some(m) = MONTHS.iter().position(|m| lower.starts_with(m)) {
            month = Some(m as u32 + 1);
        } else if WEEKDAYS.iter().any(|d| lower.starts_with(d)) || matches!(lower.as_str(), "gmt" | "utc" | "ut" | "z")
        {
            continue;
        } else if let Some(zone) = token.strip_prefix('+') {
            offset = -zone_seconds(zone)?;
        } else if token.bytes().all(|b| b.is_ascii_digit()) {
            let n: u32 = token.parse().ok()?;
            if day.is_none() && token.len() <= 2 && year.is_none() {
                day = Some(n);
            } else {
                year = Some(full_year(n, token.len())?);
            }
        } else {
            return None;
        }
    }
    // A "-hhmm" zone is split at its '-' above and refused: rare enough.
    let (day, month, year, (h, m, sec)) = (day?, month?, year?, time?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year as i64, month, day)?;
    let secs = days * 86_400 + (h * 3600 + m * 60 + sec.min(59)) as i64 + offset;
    u64::try_from(secs).ok().map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

fn clock(token: &str) -> Option<(u32, u32, u32)> {
    let mut parts = token.split(':').map(|p| p.parse::<u32>().ok());
    let (h, m) = (parts.next()??, parts.next()??);
    let s = parts.next().unwrap_or(Some(0))?;
    parts.next().is_none().then_some((h, m, s))
}

fn zone_seconds(zone: &str) -> Option<i64> {
    if zone.len() != 4 || !zone.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i64, i64) = (zone[..2].parse().ok()?, zone[2..].parse().ok()?);
    Some(h * 3600 + m * 60)
}

/// A two-digit year more than 50 years in the future is the most recent
/// past year with those digits (RFC 9110 §5.6.7).
fn full_year(n: u32, digits: usize) -> Option<u32> {
    match digits {
        4 if n >= 1970 => Some(n),
        2 => {
            let now = 1970 + (SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() / 31_556_952) as u32;
            let century = now / 100 * 100;
            let year = century + n;
            Some(if year > now + 50 { year - 100 } else { year })
        }
        _ => None,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    let month_days = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if day > month_days[(month - 1) as usize] {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> u64 {
        parse(s)
            .unwrap_or_else(|| panic!("{s:?} does not parse"))
            .duration_since(UNIX_EPOCH)
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
    fn lenient_forms() {
        let t = 784_111_777;
        for s in [
            "  Sun, 06 Nov 1994 08:49:37 GMT  ",
            "06 Nov 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "sun, 06 nov 1994 08:49:37 gmt",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, 06 Nov 1994 09:49:37 +0100",
            "Sun,06 Nov 1994 08:49:37 GMT",
            "Sun, 06-Nov-1994 08:49:37 GMT",
        ] {
            assert_eq!(at(s), t, "{s:?}");
        }
    }

    #[test]
    fn not_dates() {
        for s in [
            "0",
            "-1",
            "",
            "soon",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:00:00 GMT",
            "Sun, 31 Feb 1994 08:49:37 GMT 1",
        ] {
            assert!(parse(s).is_none(), "{s:?}");
        }
    }

    #[test]
    fn two_digit_years_more_than_50_years_ahead_are_in_the_past() {
        let year = |s: &str| 1970 + at(s) / 31_556_952;
        assert_eq!(year("Sunday, 06-Nov-94 08:49:37 GMT"), 1994);
        assert_eq!(year("Monday, 06-Nov-30 08:49:37 GMT"), 2030);
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
