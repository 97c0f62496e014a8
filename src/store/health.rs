//! Why the store is not usable, by cause: a failed connection attempt or a
//! refused call is classified (wrong credentials, a database the server
//! does not have, TLS, nothing listening, a host name that does not
//! resolve, no answer in time), counted by kind, logged once when the cause
//! appears or changes and then at most every [`LOG_EVERY`], and shown by
//! `/readyz` and the admin `health` route (`"store": {"state", "detail"}`).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The same cause is logged again at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// The store's state as `/readyz` and `health` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    Ok,
    /// Redis refused the credentials (`WRONGPASS`, `NOAUTH`).
    AuthFailed,
    /// The configured database index is beyond the server's `databases`.
    DbOutOfRange,
    /// The TLS handshake failed (certificate not trusted, TLS/plain mismatch).
    TlsError,
    /// Nothing accepts connections at the address (wrong port, Redis down).
    ConnectionRefused,
    /// The host name does not resolve.
    DnsFailed,
    /// Redis did not answer in time (connect, or a call).
    Timeout,
    /// Down for another or an unknown reason.
    Unreachable,
}

/// Every state but `Ok`: the kinds of `cachegate_store_errors_total`, with
/// `error` (a call Redis refused for another reason, e.g. OOM) last.
pub const ERROR_KINDS: [&str; 8] = [
    "auth_failed",
    "db_out_of_range",
    "tls_error",
    "connection_refused",
    "dns_failed",
    "timeout",
    "unreachable",
    "error",
];

/// Index of `error` in [`ERROR_KINDS`].
const OTHER_ERROR: usize = 7;

impl StoreState {
    const ALL: [StoreState; 8] = [
        StoreState::Ok,
        StoreState::AuthFailed,
        StoreState::DbOutOfRange,
        StoreState::TlsError,
        StoreState::ConnectionRefused,
        StoreState::DnsFailed,
        StoreState::Timeout,
        StoreState::Unreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreState::Ok => "ok",
            StoreState::AuthFailed => "auth_failed",
            StoreState::DbOutOfRange => "db_out_of_range",
            StoreState::TlsError => "tls_error",
            StoreState::ConnectionRefused => "connection_refused",
            StoreState::DnsFailed => "dns_failed",
            StoreState::Timeout => "timeout",
            StoreState::Unreachable => "unreachable",
        }
    }

    /// What an operator should look at, for the log.
    fn advice(self) -> &'static str {
        match self {
            StoreState::Ok => "redis is reachable again; caching resumes",
            StoreState::AuthFailed => {
                "redis refused the credentials: check REDIS_PASSWORD, [redis] password or the user and password in the URL"
            }
            StoreState::DbOutOfRange => {
                "redis has no such database: REDIS_DB / [redis] db is beyond the server's `databases` setting"
            }
            StoreState::TlsError => {
                "the TLS handshake with redis failed: check rediss:// against the server's TLS port, tls_ca_file and the client certificate"
            }
            StoreState::ConnectionRefused => {
                "nothing accepts connections at the redis address: redis is not running or the host/port (REDIS_PORT, REDIS_URL) is wrong"
            }
            StoreState::DnsFailed => "the redis host name does not resolve: check REDIS_HOST / REDIS_URL",
            StoreState::Timeout => "redis did not answer in time",
            StoreState::Unreachable => "redis is unreachable",
        }
    }

    fn index(self) -> u8 {
        StoreState::ALL.iter().position(|s| *s == self).unwrap_or(0) as u8
    }

    fn from_index(i: u8) -> StoreState {
        StoreState::ALL
            .get(i as usize)
            .copied()
            .unwrap_or(StoreState::Unreachable)
    }

    /// The cause an error message names (fred's and Redis's wording, and
    /// the OS's for sockets and name lookups).
    pub fn classify(message: &str) -> StoreState {
        let m = message.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
        if has(&[
            "wrongpass",
            "noauth",
            "invalid password",
            "invalid username-password",
            "auth",
        ]) {
            StoreState::AuthFailed
        } else if has(&["db index is out of range", "invalid db index"]) {
            StoreState::DbOutOfRange
        } else if has(&[
            "tls",
            "certificate",
            "handshake",
            "invalidcontenttype",
            "corrupt message",
        ]) {
            StoreState::TlsError
        } else if has(&["connection refused", "os error 111"]) {
            StoreState::ConnectionRefused
        } else if has(&[
            "failed to lookup address",
            "name or service not known",
            "no such host",
            "name resolution",
            "nodename nor servname",
            "no address",
            "dns",
        ]) {
            StoreState::DnsFailed
        } else if has(&["timed out", "timeout"]) {
            StoreState::Timeout
        } else {
            StoreState::Unreachable
        }
    }
}

/// The store's state with what the last error said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    pub state: StoreState,
    /// What to check, then the last error's own words (and the server's
    /// address); empty when ok.
    pub detail: String,
    /// A connection to the store succeeded since start.
    pub was_up: bool,
}

impl StoreHealth {
    /// Whether the cause is this deployment's configuration, which does
    /// not heal by waiting: Redis refused the credentials or the database;
    /// or a TLS or name-lookup failure before any connection ever worked.
    /// After one did, those are an outage: a Redis container that restarts
    /// stops resolving by its service name for a while, and readiness must
    /// not take every replica out of rotation for it.
    pub fn is_misconfiguration(&self) -> bool {
        match self.state {
            StoreState::AuthFailed | StoreState::DbOutOfRange => true,
            StoreState::TlsError | StoreState::DnsFailed => !self.was_up,
            _ => false,
        }
    }

    pub fn ok() -> StoreHealth {
        StoreHealth {
            state: StoreState::Ok,
            detail: String::new(),
            was_up: true,
        }
    }

    /// Down, no cause known.
    pub fn unreachable() -> StoreHealth {
        StoreHealth {
            state: StoreState::Unreachable,
            detail: format!("{} (no connection to the store)", StoreState::Unreachable.advice()),
            was_up: false,
        }
    }
}

/// Causes as they are seen: the last connection failure, a call refused
/// for a cause that leaves the connection up (`NOAUTH`), counts by kind,
/// and when each was last logged.
pub struct HealthTracker {
    /// The last connection attempt's failure; `Ok` once one succeeded.
    connect: Mutex<StoreHealth>,
    /// A connection succeeded since start.
    was_up: std::sync::atomic::AtomicBool,
    /// A call failure that leaves the connection up but the store unusable
    /// (index of a [`StoreState`]); cleared by the next good call.
    call: AtomicU8,
    call_detail: Mutex<String>,
    counts: [AtomicU64; ERROR_KINDS.len()],
    logged: Mutex<Option<(StoreState, Instant)>>,
}

impl Default for HealthTracker {
    fn default() -> Self {
        HealthTracker::new()
    }
}

impl HealthTracker {
    pub fn new() -> HealthTracker {
        HealthTracker {
            connect: Mutex::new(StoreHealth::ok()),
            was_up: std::sync::atomic::AtomicBool::new(false),
            call: AtomicU8::new(0),
            call_detail: Mutex::new(String::new()),
            counts: Default::default(),
            logged: Mutex::new(None),
        }
    }

    /// A connection attempt failed with `message` (at `server`, if known).
    pub fn connect_failed(&self, message: &str, server: Option<&str>) {
        let state = StoreState::classify(message);
        let detail = match server {
            Some(s) => format!("{} ({s}: {message})", state.advice()),
            None => format!("{} ({message})", state.advice()),
        };
        self.count(state);
        self.log(state, &detail);
        *lock(&self.connect) = StoreHealth {
            state,
            detail,
            was_up: false,
        };
    }

    /// A connection came up: connection failures are history.
    pub fn connected(&self) {
        self.was_up.store(true, Ordering::Relaxed);
        let mut connect = lock(&self.connect);
        if connect.state != StoreState::Ok {
            *connect = StoreHealth::ok();
        }
    }

    /// A call timed out.
    pub fn call_timed_out(&self) {
        self.count(StoreState::Timeout);
    }

    /// Redis answered a call with an error: counted by cause; a cause that
    /// makes every call fail (credentials, database) is remembered until a
    /// call succeeds.
    pub fn call_failed(&self, message: &str) {
        let state = StoreState::classify(message);
        if matches!(state, StoreState::AuthFailed | StoreState::DbOutOfRange) {
            let detail = format!("{} ({message})", state.advice());
            self.count(state);
            self.log(state, &detail);
            *lock(&self.call_detail) = detail;
            self.call.store(state.index(), Ordering::Relaxed);
        } else {
            self.counts[OTHER_ERROR].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A call succeeded (one relaxed load on the request path).
    pub fn call_ok(&self) {
        if self.call.load(Ordering::Relaxed) != 0 {
            self.call.store(0, Ordering::Relaxed);
        }
    }

    /// The state, given whether a connection is up and answering.
    pub fn health(&self, up: bool) -> StoreHealth {
        let call = StoreState::from_index(self.call.load(Ordering::Relaxed));
        if call != StoreState::Ok {
            return StoreHealth {
                state: call,
                detail: lock(&self.call_detail).clone(),
                was_up: self.was_up.load(Ordering::Relaxed),
            };
        }
        if up {
            return StoreHealth::ok();
        }
        let mut health = lock(&self.connect).clone();
        if health.state == StoreState::Ok {
            health = StoreHealth::unreachable();
        }
        health.was_up = self.was_up.load(Ordering::Relaxed);
        health
    }

    /// Errors counted so far, in the order of [`ERROR_KINDS`].
    pub fn counts(&self) -> [u64; ERROR_KINDS.len()] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }

    fn count(&self, state: StoreState) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == state.as_str()) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Logs the cause when it is new (or changed), else at most every
    /// [`LOG_EVERY`].
    fn log(&self, state: StoreState, detail: &str) {
        let now = Instant::now();
        {
            let mut logged = lock(&self.logged);
            match *logged {
                Some((last, at)) if last == state && now.duration_since(at) < LOG_EVERY => return,
                _ => *logged = Some((state, now)),
            }
        }
        tracing::warn!(
            target: "cachegate::store",
            state = state.as_str(),
            "{detail}; forwarding uncached until it is fixed"
        );
    }

    /// Forgets what was logged, so the next failure is logged at once
    /// (after a recovery).
    pub fn recovered(&self) {
        *lock(&self.logged) = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_classified_by_cause() {
        let cases = [
            (
                "WRONGPASS invalid username-password pair or user is disabled.",
                StoreState::AuthFailed,
            ),
            ("NOAUTH Authentication required.", StoreState::AuthFailed),
            ("ERR DB index is out of range", StoreState::DbOutOfRange),
            ("invalid peer certificate: UnknownIssuer", StoreState::TlsError),
            ("Connection refused (os error 111)", StoreState::ConnectionRefused),
            (
                "failed to lookup address information: Name or service not known",
                StoreState::DnsFailed,
            ),
            ("Connection timed out.", StoreState::Timeout),
            ("Connection reset by peer", StoreState::Unreachable),
        ];
        for (message, state) in cases {
            assert_eq!(StoreState::classify(message), state, "{message}");
        }
    }

    #[test]
    fn dns_and_tls_failures_are_misconfiguration_only_before_any_connection() {
        let fresh = HealthTracker::new();
        fresh.connect_failed("failed to lookup address information: Name or service not known", None);
        let before = fresh.health(false);
        assert_eq!(before.state, StoreState::DnsFailed);
        assert!(before.is_misconfiguration(), "a name that never resolved");

        let restarted = HealthTracker::new();
        restarted.connected();
        restarted.connect_failed("failed to lookup address information: Name or service not known", None);
        let after = restarted.health(false);
        assert_eq!(after.state, StoreState::DnsFailed, "still named honestly");
        assert!(
            !after.is_misconfiguration(),
            "a Redis that worked and went away is an outage"
        );

        restarted.call_failed("WRONGPASS invalid username-password pair");
        assert!(
            restarted.health(true).is_misconfiguration(),
            "refused credentials always are"
        );
    }

    #[test]
    fn a_call_failure_wins_until_a_call_succeeds() {
        let t = HealthTracker::new();
        assert_eq!(t.health(true).state, StoreState::Ok);
        assert_eq!(t.health(false).state, StoreState::Unreachable);
        t.connect_failed("Connection refused (os error 111)", Some("127.0.0.1:1"));
        assert_eq!(t.health(false).state, StoreState::ConnectionRefused);
        assert!(t.health(false).detail.contains("127.0.0.1:1"));
        t.call_failed("NOAUTH Authentication required.");
        assert_eq!(t.health(true).state, StoreState::AuthFailed);
        t.call_ok();
        assert_eq!(t.health(true).state, StoreState::Ok);
        let counts = t.counts();
        assert_eq!(counts[0], 1, "auth_failed");
        assert_eq!(counts[3], 1, "connection_refused");
    }
}
