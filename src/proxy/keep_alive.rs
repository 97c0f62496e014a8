//! Keep-alive as the backend says it.
//!
//! A backend closes an idle connection after its own keep-alive timeout
//! (uvicorn: 5 s); a pooled connection kept longer than that is handed to a
//! request just as the backend closes it. hyper honours `Connection:
//! close`; this honours `Keep-Alive: timeout=N`: once a backend announces
//! it, the pool's idle timeout becomes N less a margin (if that is lower
//! than the configured one), by swapping in a client built with it. Idle
//! connections of the old client go with it; requests in flight finish.

use std::time::Duration;

/// How long before the backend's announced timeout an idle connection is
/// dropped: the announcement is rounded to seconds and the close may race
/// a request on the wire.
pub const MARGIN: Duration = Duration::from_millis(1000);

/// The `timeout=N` of a `Keep-Alive` response header, if any.
pub fn announced_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("keep-alive")?.to_str().ok()?;
    value.split(',').find_map(|param| {
        let (name, n) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        n.trim().trim_matches('"').parse::<u64>().ok().map(Duration::from_secs)
    })
}

/// The idle timeout for a backend that announced `announced`: the margin
/// less, never above `current`. `None` when `current` already fits.
pub fn idle_timeout_for(announced: Duration, current: Duration) -> Option<Duration> {
    let wanted = announced.saturating_sub(MARGIN);
    (wanted < current).then_some(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> http::HeaderMap {
        let mut m = http::HeaderMap::new();
        m.insert("keep-alive", v.parse().unwrap());
        m
    }

    #[test]
    fn reads_the_announced_timeout() {
        assert_eq!(announced_timeout(&h("timeout=5")), Some(Duration::from_secs(5)));
        assert_eq!(
            announced_timeout(&h("max=100, Timeout = 3")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(announced_timeout(&h("max=100")), None);
        assert_eq!(announced_timeout(&h("timeout=soon")), None);
        assert_eq!(announced_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn lowers_the_idle_timeout_only_below_the_current_one() {
        let four = Duration::from_secs(4);
        assert_eq!(idle_timeout_for(Duration::from_secs(5), four), None);
        assert_eq!(
            idle_timeout_for(Duration::from_secs(3), four),
            Some(Duration::from_secs(2))
        );
        assert_eq!(idle_timeout_for(Duration::from_secs(1), four), Some(Duration::ZERO));
    }
}
