//! The cross-instance fill lock on Redis, and how an orphaned lock is told
//! apart from a live one without looking at a clock.
//!
//! A lock is `SET {prefix}__cg:lock:<field>:<key> <token> NX PX ttl`. Its
//! token is `<instance>.<random>`, and each instance keeps the set of the
//! tokens of its fills still running. A lock can be left behind by nobody:
//! a `SET` our side gave up on (a stall, `CLIENT PAUSE`) that Redis ran
//! later, an unlock that timed out, a request dropped mid-fill. When the
//! holder's token names this instance and is not one of its running fills,
//! the lock is an orphan by identity: a miss takes it over at once (a
//! compare-and-set) instead of waiting for it to expire. That decision
//! reads no clock, so it holds on a machine of any speed. Locks of other
//! instances are released by their owners (a given-up `SET` is followed by
//! a compare-and-delete, retried until the lock would have expired) or by
//! their expiry; the lock only saves backend requests, correctness never
//! rests on it (the fill guard does that).

use super::redis::RedisBackend;
use super::StoreResult;
use crate::store::StoreError;
use fred::prelude::*;
use fred::types::scripts::Script;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Takes the lock, or names its holder. KEYS[1] lock; ARGV[1] token,
/// ARGV[2] PX. Returns "" when taken, else the holder's token.
const LOCK_LUA: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return '' end
return redis.call('GET', KEYS[1]) or ''
"#;

/// Hands an orphaned lock to a new token, only if the orphan still holds
/// it. KEYS[1] lock; ARGV[1] orphan, ARGV[2] new token, ARGV[3] PX.
const TAKE_OVER_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"#;

/// Deletes a lock only if the token still owns it, then announces it.
/// KEYS[1] lock, ARGV[1] token, ARGV[2] channel, ARGV[3] message.
pub(super) const UNLOCK_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"#;

/// This instance's fill locks: its identity in tokens, and the tokens of
/// the fills it is running.
pub(super) struct FillLocks {
    instance: String,
    running: Mutex<HashSet<String>>,
    lock_script: Script,
    take_over_script: Script,
    pub(super) unlock_script: Script,
}

impl FillLocks {
    pub(super) fn new() -> FillLocks {
        FillLocks {
            instance: hex::encode(rand::random::<[u8; 6]>()),
            running: Mutex::default(),
            lock_script: Script::from_lua(LOCK_LUA),
            take_over_script: Script::from_lua(TAKE_OVER_LUA),
            unlock_script: Script::from_lua(UNLOCK_LUA),
        }
    }

    fn new_token(&self) -> String {
        let token = format!("{}.{}", self.instance, hex::encode(rand::random::<[u8; 12]>()));
        self.running().insert(token.clone());
        token
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The fill behind `token` is over (done, failed, or given up on).
    pub(super) fn finished(&self, token: &str) {
        self.running().remove(token);
    }

    /// Whether `holder` is a lock of this instance that no fill of it runs.
    fn is_orphan(&self, holder: &str) -> bool {
        holder
            .strip_prefix(self.instance.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
            && !self.running().contains(holder)
    }
}

impl RedisBackend {
    /// See the module doc. `Some(token)` when this caller holds the lock.
    pub(super) async fn take_fill_lock(&self, key: &str, field: &str, ttl: Duration) -> StoreResult<Option<String>> {
        let lock = self.lock_key(key, field);
        let on = self.on(&lock)?;
        let client = on.clone();
        let locks = &self.locks;
        let token = locks.new_token();
        let px = ttl.as_millis().max(1) as i64;
        // The script runs in a task of its own: when our wait for it times
        // out, Redis may still run it later (a stall, CLIENT PAUSE); the task
        // then deletes the lock if it took it.
        let mut attempt = tokio::spawn({
            let (client, script, lock, token) =
                (client.clone(), locks.lock_script.clone(), lock.clone(), token.clone());
            async move {
                let args: Vec<Value> = vec![token.into(), px.into()];
                run_script_str(&client, &script, vec![lock], args).await
            }
        });
        let joined = async {
            match (&mut attempt).await {
                Ok(result) => result,
                Err(e) => Err(Error::new(ErrorKind::Unknown, e.to_string())),
            }
        };
        let holder = match self.bounded_on(&on, joined).await {
            Ok(holder) => holder,
            Err(e) => {
                locks.finished(&token);
                if matches!(e, StoreError::Timeout) {
                    let given_up = GivenUp {
                        client,
                        lock,
                        token,
                        ttl,
                    };
                    self.release_when_done(attempt, given_up);
                }
                return Err(e);
            }
        };
        if holder.is_empty() {
            return Ok(Some(token));
        }
        if locks.is_orphan(&holder) {
            let args: Vec<Value> = vec![holder.as_str().into(), token.as_str().into(), px.into()];
            let taken = self
                .bounded(self.run_script(&client, &locks.take_over_script, vec![lock.clone()], args))
                .await;
            if let Ok(1) = taken {
                tracing::debug!(target: "cachegate::store", %lock, "took over a fill lock no fill of this instance holds");
                return Ok(Some(token));
            }
        }
        locks.finished(&token);
        Ok(None)
    }

    /// A lock attempt given up on may still take the lock later: once it
    /// has run, delete the lock if it holds our token (compare-and-delete),
    /// retrying while the lock could still be alive.
    fn release_when_done(&self, attempt: tokio::task::JoinHandle<Result<String, Error>>, given_up: GivenUp) {
        let GivenUp {
            client,
            lock,
            token,
            ttl,
        } = given_up;
        let (script, channel) = (self.locks.unlock_script.clone(), self.channel.clone());
        tokio::spawn(async move {
            let _ = attempt.await;
            let until = Instant::now() + ttl;
            let mut pause = Duration::from_millis(20);
            loop {
                let args: Vec<Value> = vec![token.as_str().into(), channel.as_str().into(), lock.as_str().into()];
                let released = tokio::time::timeout(
                    Duration::from_secs(2),
                    script.evalsha_with_reload::<i64, _, _>(&client, vec![lock.clone()], args),
                )
                .await;
                if matches!(released, Ok(Ok(_))) || Instant::now() >= until {
                    tracing::debug!(target: "cachegate::store", %lock, ?released, "released a fill lock taken after its caller gave up");
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        });
    }

    pub(super) async fn release_fill_lock(&self, key: &str, field: &str, token: &str) -> StoreResult<()> {
        // First, before any await: the fill is over, so a lock still
        // holding this token is an orphan from now on.
        self.locks.finished(token);
        let lock = self.lock_key(key, field);
        let client = self.on(&lock)?;
        let args: Vec<Value> = vec![token.into(), self.channel.as_str().into(), lock.as_str().into()];
        self.bounded_on(
            &client,
            self.run_script(&client, &self.locks.unlock_script, vec![lock.clone()], args),
        )
        .await
        .map(|_| ())
    }

    /// Whether a fill holds the lock: an orphan of this instance does not
    /// count (the caller then fills itself, taking the lock over).
    pub(super) async fn fill_lock_held(&self, key: &str, field: &str) -> StoreResult<bool> {
        let lock = self.lock_key(key, field);
        let client = self.on(&lock)?;
        let holder: Option<String> = self.bounded_on(&client, client.get(&lock)).await?;
        Ok(holder.is_some_and(|h| !self.locks.is_orphan(&h)))
    }
}

/// A lock attempt our side stopped waiting for.
struct GivenUp {
    client: Client,
    lock: String,
    token: String,
    ttl: Duration,
}

/// A script that answers a string, loaded on demand.
async fn run_script_str(
    client: &Client,
    script: &Script,
    keys: Vec<String>,
    args: Vec<Value>,
) -> Result<String, Error> {
    script.evalsha_with_reload::<String, _, _>(client, keys, args).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orphan_is_a_token_of_this_instance_that_no_fill_runs() {
        let locks = FillLocks::new();
        let live = locks.new_token();
        assert!(!locks.is_orphan(&live), "a running fill's lock is not an orphan");
        locks.finished(&live);
        assert!(locks.is_orphan(&live), "a finished fill's lock left in Redis is");
        let other = FillLocks::new();
        let theirs = other.new_token();
        other.finished(&theirs);
        assert!(!locks.is_orphan(&theirs), "another instance's lock is never taken over");
        assert!(!locks.is_orphan(&locks.instance), "a bare instance id is no token");
        assert!(!locks.is_orphan(&format!("{}x.1", locks.instance)));
    }
}
