//! HTTP-dates and delta-seconds as a recipient reads them (RFC 9110
//! §5.6.7, RFC 9111 §1.2.2): the three date formats (IMF-fixdate, RFC 850,
//! asctime) with their names in any case, and seconds that overflow read
//! as 2^31.
//!
//! Nothing looser: RFC 9111 §5.3 has a cache take an `Expires` it cannot
//! read as already expired, so a date with `UTC` for `GMT`, a missing
//! comma, extra spaces or a one-digit hour is not a date here (as the
//! cache-tests suite's `expires-parse` tests expect). A weekday that does
//! not match the date is ignored, as is its case (`httpdate` refuses both,
//! hence a parser of our own).

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
/// names in any case, and a weekday that does not match the date ignored
/// (it carries nothing the rest does not say).
pub fn parse(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if !s.is_ascii() {
        return None;
    }
    let civil = imf_fixdate(s).or_else(|| rfc850(s)).or_else(|| asctime(s))?;
    civil.to_system_time()
}

/// A date and time of day, as written.
struct Civil {
    year: u32,
    month: u32,
    day: u32,
    clock: (u32, u32, u32),
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const LONG_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(s: &str) -> Option<Civil> {
    let (weekday, rest) = s.split_once(", ")?;
    let [day, month, year, clock, gmt] = fields(rest)?;
    (is_one_of(weekday, &DAYS) && gmt.eq_ignore_ascii_case("gmt") && day.len() == 2 && year.len() == 4).then_some(())?;
    Civil::new(digits(year)?, month, digits(day)?, clock)
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`; a two-digit year below 70 is 20xx.
fn rfc850(s: &str) -> Option<Civil> {
    let (weekday, rest) = s.split_once(", ")?;
    let [date, clock, gmt] = fields(rest)?;
    let [day, month, year] = split3(date, '-')?;
    (is_one_of(weekday, &LONG_DAYS) && gmt.eq_ignore_ascii_case("gmt") && day.len() == 2 && year.len() == 2)
        .then_some(())?;
    let yy = digits(year)?;
    Civil::new(if yy < 70 { 2000 + yy } else { 1900 + yy }, month, digits(day)?, clock)
}

/// `Sun Nov  6 08:49:37 1994` (a one-digit day is padded with a space).
fn asctime(s: &str) -> Option<Civil> {
    if s.len() != 24 || s.as_bytes()[10] != b' ' || s.as_bytes()[3] != b' ' || s.as_bytes()[7] != b' ' {
        return None;
    }
    let (weekday, month, day, rest) = (&s[..3], &s[4..7], s[8..10].trim_start(), &s[11..]);
    let (clock, year) = rest.split_once(' ')?;
    (is_one_of(weekday, &DAYS) && year.len() == 4 && !day.is_empty()).then_some(())?;
    Civil::new(digits(year)?, month, digits(day)?, clock)
}

/// Exactly `N` fields separated by single spaces.
fn fields<const N: usize>(s: &str) -> Option<[&str; N]> {
    let parts: Vec<&str> = s.split(' ').collect();
    parts.try_into().ok()
}

fn split3(s: &str, sep: char) -> Option<[&str; 3]> {
    let parts: Vec<&str> = s.split(sep).collect();
    parts.try_into().ok()
}

fn is_one_of(name: &str, names: &[&str]) -> bool {
    names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

fn digits(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

impl Civil {
    fn new(year: u32, month: &str, day: u32, clock: &str) -> Option<Civil> {
        let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u32 + 1;
        let [h, m, sec] = split3(clock, ':')?;
        if [h, m, sec].iter().any(|p| p.len() != 2) {
            return None;
        }
        Some(Civil {
            year,
            month,
            day,
            clock: (digits(h)?, digits(m)?, digits(sec)?),
        })
    }

    fn to_system_time(&self) -> Option<SystemTime> {
        let leap = self.year % 4 == 0 && (self.year % 100 != 0 || self.year % 400 == 0);
        let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let (h, m, s) = self.clock;
        let valid = (1970..=9999).contains(&self.year)
            && self.day >= 1
            && self.day <= month_days[(self.month - 1) as usize]
            && h < 24
            && m < 60
            && s < 61;
        if !valid {
            return None;
        }
        // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (i64::from(self.month) + 9) % 12;
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1;
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
        let secs = days * 86_400 + i64::from(h * 3600 + m * 60 + s.min(59));
        u64::try_from(secs)
            .ok()
            .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }
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
            // The weekday is not checked against the date.
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Thu Nov  6 08:49:37 1994",
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
        assert_eq!(year("Wednesday, 06-Nov-70 08:49:37 GMT"), 1970);
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
