//! The Lua scripts of the Redis backend. Each implements one primitive
//! atomically on one key (so, on a cluster, in one slot): a guard read, a
//! guarded write, one record's change (drop, stale, unscope), dropping index
//! members; the cluster's fill steps are in `redis_cluster.rs`, the fill
//! lock's in `redis_lock.rs`. Which records a purge changes, and when the
//! epoch moves, is the protocol's (`protocol.rs`), never a script's.
//! Every script that reads a generation or an epoch starts with `NUM_LUA`.

use fred::types::scripts::Script;

/// Every script, hashed once (run by SHA: the documented ACL has no EVAL).
pub(super) struct Scripts {
    pub fill: Script,
    pub guard: Script,
    pub drop: Script,
    pub stale: Script,
    pub unscope: Script,
    pub untag: Script,
    pub touch: Script,
    pub reserve: Script,
    pub commit: Script,
    pub abort: Script,
    pub tag_add: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        use super::redis_cluster::{ABORT_LUA, COMMIT_LUA, RESERVE_LUA, TAG_ADD_LUA};
        let lua = |parts: &[&str]| Script::from_lua(parts.concat());
        Scripts {
            fill: lua(&[NUM_LUA, REPLACE_FOREIGN_LUA, FILL_LUA]),
            guard: lua(&[NUM_LUA, GUARD_LUA]),
            drop: lua(&[NUM_LUA, PURGE_LUA]),
            stale: lua(&[NUM_LUA, SOFT_PURGE_LUA]),
            unscope: lua(&[NUM_LUA, UNSCOPE_LUA]),
            untag: lua(&[UNTAG_LUA]),
            touch: lua(&[TOUCH_LUA]),
            reserve: lua(&[NUM_LUA, REPLACE_FOREIGN_LUA, RESERVE_LUA]),
            commit: lua(&[NUM_LUA, COMMIT_LUA]),
            abort: lua(&[ABORT_LUA]),
            tag_add: lua(&[TAG_ADD_LUA]),
        }
    }
}

/// How every script reads a generation or an epoch (`num`): 1 to 15 ASCII
/// digits, anything else 0, as `redis::to_u64` does.
const NUM_LUA: &str = r#"
local function num(v)
  if v and #v <= 15 and string.match(v, '^%d+$') then return tonumber(v) end
  return 0
end
"#;

/// A write replaces a foreign value (not a hash) under the record's key.
const REPLACE_FOREIGN_LUA: &str = r#"
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' and t ~= 'none' then redis.call('DEL', KEYS[1]) end
"#;

/// Stores `value` under `field` only if the key's generation and the purge
/// epoch are what the fill's lookup saw. A foreign value under the key
/// (another type) is replaced. Each tag index (KEYS[3..], sorted sets scored
/// by expiry) gets the key; expired members leave it on every add.
/// ARGV: field, value, ttl_ms, generation, epoch, now_ms, logical key,
/// the record's incarnation as the guard saw it (`0`: none). With one, the
/// fill stores only into that incarnation (`__inc`, see `GUARD_LUA`): a
/// purge or an eviction of the record since the guard ended it.
const FILL_LUA: &str = r#"
if ARGV[8] ~= '0' and redis.call('HGET', KEYS[1], '__inc') ~= ARGV[8] then return 0 end
if num(redis.call('HGET', KEYS[1], '__gen')) ~= tonumber(ARGV[4]) then return 0 end
if num(redis.call('GET', KEYS[2])) ~= tonumber(ARGV[5]) then return 0 end
-- A record holding no entry yet (a guard's, a tombstone) takes this
-- entry's lifetime, not the tombstone's.
local first = redis.call('HEXISTS', KEYS[1], '__cg') == 0
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], '__cg', '1')
local pttl = redis.call('PTTL', KEYS[1])
if first or pttl < tonumber(ARGV[3]) then
  pttl = tonumber(ARGV[3])
  redis.call('PEXPIRE', KEYS[1], pttl)
end
local now = tonumber(ARGV[6])
for i = 3, #KEYS do
  redis.call('ZADD', KEYS[i], 'GT', now + pttl, ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('PTTL', KEYS[i]) < pttl then redis.call('PEXPIRE', KEYS[i], pttl) end
end
return 1
"#;

/// A fill's guard, read at once with the record's incarnation: `__inc`, a
/// random token the first guard of an absent record sets (creating the
/// record, expiring after ARGV[2] ms). Purges delete the record (a
/// tombstone has no `__inc`) and so does an eviction, so a fill that checks
/// its guard's incarnation never stores into a record that was purged and
/// evicted meanwhile, where `__gen` would read 0 again. Returns {generation,
/// epoch, incarnation}. KEYS[1] record, KEYS[2] the epoch (absent on a
/// cluster, where it lives in another slot: read apart). A foreign value
/// under the key is not touched (incarnation '0'; the fill replaces it).
const GUARD_LUA: &str = r#"
local epoch = 0
if KEYS[2] then epoch = num(redis.call('GET', KEYS[2])) end
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' and t ~= 'none' then return {0, epoch, '0'} end
local inc = redis.call('HGET', KEYS[1], '__inc')
if not inc then
  inc = ARGV[1]
  redis.call('HSET', KEYS[1], '__inc', inc)
  if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
end
return {num(redis.call('HGET', KEYS[1], '__gen')), epoch, inc}
"#;

/// Marks every entry of a key stale in place (its ttl_ms, at byte offset
/// ARGV[1], becomes 0) and bumps the generation; Vary markers and the
/// record's expiry stay. A key with no record gets a tombstone (expiring
/// after ARGV[2] ms), as a hard purge leaves, so a fill in flight for it
/// cannot store either. Returns 1 when the key held an entry.
const SOFT_PURGE_LUA: &str = r#"
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' then
  if t ~= 'none' then redis.call('DEL', KEYS[1]) end
  redis.call('HSET', KEYS[1], '__gen', 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
local off = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local had = 0
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  if f ~= '__gen' and f ~= '__cg' and string.sub(v, 1, 2) == 'CG' and #v > off + 8 then
    redis.call('HSET', KEYS[1], f, string.sub(v, 1, off) .. string.rep('\0', 8) .. string.sub(v, off + 9))
    had = 1
  end
end
redis.call('HSET', KEYS[1], '__gen', num(redis.call('HGET', KEYS[1], '__gen')) + 1)
return had
"#;

/// Removes every entry of a key and leaves a tombstone with the next
/// generation, so fills that started before this purge will not store.
/// Returns 1 when the key held an entry.
const PURGE_LUA: &str = r#"
local t = redis.call('TYPE', KEYS[1])['ok']
local had = 0
local g = 0
if t == 'hash' then
  g = num(redis.call('HGET', KEYS[1], '__gen'))
  local meta = redis.call('HEXISTS', KEYS[1], '__gen') + redis.call('HEXISTS', KEYS[1], '__cg')
    + redis.call('HEXISTS', KEYS[1], '__inc')
  if redis.call('HLEN', KEYS[1]) > meta then had = 1 end
  redis.call('DEL', KEYS[1])
elseif t ~= 'none' then
  redis.call('DEL', KEYS[1])
  had = 1
end
redis.call('HSET', KEYS[1], '__gen', g + 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return had
"#;

/// A key written and removed at once (the tier's fences, `coherence.rs`).
const TOUCH_LUA: &str = "redis.call('SET', KEYS[1], '1') redis.call('DEL', KEYS[1]) return 1";

/// Removes tag members whose score is still the one read (ARGV: member,
/// score, member, score, ...); a member re-indexed since keeps its place.
const UNTAG_LUA: &str = r#"
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"#;

/// Removes the fields of scope ARGV[1] (its own and its `#` variants, and a
/// cluster fill's pending marker for them) from record KEYS[1] and moves
/// its generation; a record left without entries becomes a tombstone
/// (expiring after ARGV[2] ms), as a key purge leaves. Returns 1 when it
/// removed an entry.
const UNSCOPE_LUA: &str = r#"
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
