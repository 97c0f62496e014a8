//! Scope purges on Redis (see `scope_index.rs`): the index is a sorted set
//! per credential scope, walked with ZSCAN; each indexed record loses the
//! scope's fields in one script on its own key (one slot on a cluster).

use super::redis::RedisStore;
use super::scope_index::credential_scope;
use super::StoreResult;
use crate::rules::INTERNAL_PREFIX;
use fred::types::scripts::Script;
use fred::types::Value;
use std::sync::OnceLock;

/// Removes the fields of scope ARGV[1] (its own and its `#` variants, and a
/// cluster fill's pending marker for them) from record KEYS[1] and moves
/// its generation; a record left without entries becomes a tombstone
/// (expiring after ARGV[2] ms), as a key purge leaves. Returns 1 when it
/// removed an entry.
const SCOPE_PURGE_LUA: &str = r#"
local function num(v)
  if v and #v <= 15 and string.match(v, '^%d+$') then return tonumber(v) end
  return 0
end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
local scope = ARGV[1]
local function ours(f)
  return f == scope or string.sub(f, 1, #scope + 1) == scope .. '#'
end
local removed, left = 0, 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if ours(f) then
    redis.call('HDEL', KEYS[1], f)
    removed = 1
  elseif string.sub(f, 1, 7) == '__pend:' then
    if ours(string.sub(f, 8)) then redis.call('HDEL', KEYS[1], f) end
  elseif f ~= '__gen' and f ~= '__cg' and f ~= '__inc' then
    left = left + 1
  end
end
local g = num(redis.call('HGET', KEYS[1], '__gen')) + 1
if left == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], '__gen', g)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], '__gen', g)
end
return removed
"#;

fn scope_purge_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::from_lua(SCOPE_PURGE_LUA))
}

impl RedisStore {
    /// The index of a credential scope.
    pub(super) fn scope_index_key(&self, scope: &str) -> String {
        format!("{}{INTERNAL_PREFIX}scope:{scope}", self.prefix)
    }

    /// The index keys a fill of `field` adds its key to: its tags', and its
    /// credential scope's.
    pub(super) fn index_keys(&self, field: &str, tags: &[String]) -> Vec<String> {
        let mut keys: Vec<String> = tags.iter().map(|t| self.tag_key(t)).collect();
        keys.extend(credential_scope(field).map(|s| self.scope_index_key(s)));
        keys
    }

    /// Removes every entry of `scope`; returns how many records held one,
    /// and the keys touched (up to `list`; `None` past that), so that the
    /// in-process tier can drop just those.
    pub async fn purge_scope_listing(&self, scope: &str, list: usize) -> StoreResult<(u64, Option<Vec<String>>)> {
        self.bump_epoch().await?;
        let index = self.scope_index_key(scope);
        let client = self.client()?;
        let tombstone_ttl = self.tombstone_ttl.as_millis() as i64;
        let mut purged = 0u64;
        let mut listed = Some(Vec::new());
        let mut cursor = String::from("0");
        loop {
            let (next, pairs) = self.index_page(client, &index, &cursor).await?;
            let calls = pairs.iter().map(|(member, _)| {
                let args: Vec<Value> = vec![scope.into(), tombstone_ttl.into()];
                self.bounded_by(
                    self.bulk_timeout(),
                    self.run_script(client, scope_purge_script(), vec![self.key(member)], args),
                )
            });
            for result in futures_util::future::join_all(calls).await {
                purged += result? as u64;
            }
            if let Some(keys) = &mut listed {
                if keys.len() + pairs.len() > list {
                    listed = None;
                } else {
                    keys.extend(pairs.iter().map(|(member, _)| member.clone()));
                }
            }
            self.drop_index_members(client, &index, pairs).await?;
            if next == "0" {
                break;
            }
            cursor = next;
        }
        Ok((purged, listed))
    }
}
