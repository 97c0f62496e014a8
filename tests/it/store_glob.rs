//! `glob_match` and the memory store's pattern calls against a real Redis:
//! for every pattern, the keys `SCAN MATCH` returns must be exactly the ones
//! `glob_match` selects.
//!
//! Each test starts its own `redis-server` (the harness's [`RedisServer`]).

use crate::common::RedisServer;
use bytes::Bytes;
use cachegate::store::glob::glob_match;
use cachegate::store::memory::MemoryStore;
use cachegate::store::{EntryFill, FillGuard, Store};
use std::collections::BTreeSet;
use std::time::Duration;

/// A few hundred keys full of glob metacharacters, spaces, empty and
/// non-UTF-8 bytes.
fn keys() -> BTreeSet<Vec<u8>> {
    let alphabet: [&[u8]; 16] = [
        b"a",
        b"b",
        b"z",
        b"A",
        b"0",
        b"*",
        b"?",
        b"[",
        b"]",
        b"\\",
        b"-",
        b"^",
        b" ",
        b"\xc3\xa9",
        b"_",
        b":",
    ];
    let mut keys = BTreeSet::new();
    for x in alphabet {
        keys.insert(x.to_vec());
        for y in alphabet {
            keys.insert([x, y].concat());
        }
    }
    let extra: [&[u8]; 32] = [
        b"",
        b"task:1",
        b"task:12",
        b"task:123",
        b"task:1:x",
        b"task:a",
        b"task:",
        b"user:1",
        b"user:a b",
        b"a*b",
        b"a?b",
        b"a\\b",
        b"[x]",
        b"[]",
        b"x-y",
        b"^x",
        b"  ",
        b"\xff",
        b"\x80",
        b"\x00",
        b"a\x00b",
        b"\xc3\xa9t\xc3\xa9",
        "日本語".as_bytes(),
        "tâche:1".as_bytes(),
        b"aaaaaaaaaaaaaaaaaaab",
        b"aaaaaaaaaaaaaaaaaaaa",
        b"a b c",
        b"ends\\",
        b"\\starts",
        b"---",
        b"***",
        b"[[[",
    ];
    keys.extend(extra.iter().map(|k| k.to_vec()));
    keys.insert(b"a".repeat(1100));
    keys.insert(b"ab".repeat(60));
    keys
}

/// About eighty patterns covering every construct and quirk.
fn patterns() -> Vec<Vec<u8>> {
    let fixed: &[&[u8]] = &[
        b"",
        b"*",
        b"**",
        b"?",
        b"??",
        b"???",
        b"a*",
        b"*a",
        b"*a*",
        b"a*b",
        b"a**b",
        b"*:*",
        b"task:*",
        b"task:?",
        b"task:??*",
        b"task:1*",
        b"task:[0-9][0-9]*",
        b"*1",
        b"[ab]",
        b"[ab]*",
        b"[a-z]",
        b"[a-z]?",
        b"[z-a]",
        b"[0-9]*",
        b"[A-Za-z]",
        b"[^a]",
        b"[^a-z]",
        b"[^ab]?",
        b"?[^a]",
        b"[]",
        b"[]]",
        b"[]a]",
        b"[^]",
        b"[^]]",
        b"[a-]",
        b"[-a]",
        b"[*]",
        b"[?]",
        b"[a-",
        b"[",
        b"[^",
        b"[a",
        b"[ab",
        b"*[",
        b"a[",
        b"[\\]]",
        b"[\\-]",
        b"[\\\\]",
        b"[\\^]",
        b"[a\\-z]",
        b"[\\",
        b"[a\\",
        b"\\*",
        b"\\?",
        b"\\[",
        b"\\]",
        b"\\\\",
        b"\\a",
        b"a\\",
        b"\\",
        b"*\\",
        b"\\**",
        b"*\\?*",
        b"\\-",
        b"^*",
        b"-*",
        b" *",
        b"* *",
        b"*[[]*",
        b"*[]]*",
        b"*-*",
        b"*^*",
        b"user:a b",
        b"\xc3\xa9*",
        b"?\xc3\xa9",
        b"*\xa9",
        b"[\xc3]*",
        b"[a-\xc3]*",
        b"[\x80-\xff]*",
        b"[\x01-\xff]",
        b"[^\x00-\x7f]*",
        b"*\xff*",
        b"a\x00*",
        b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
        b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*c",
    ];
    let mut patterns: Vec<Vec<u8>> = fixed.iter().map(|p| p.to_vec()).collect();
    // Redis's nesting guard: 1000 nested stars are fine, 1001 never match.
    patterns.push(b"*a".repeat(1000));
    patterns.push(b"*a".repeat(1001));
    patterns
}

fn write_keys(con: &mut redis::Connection, keys: &BTreeSet<Vec<u8>>) {
    let _: () = redis::cmd("FLUSHDB").query(con).expect("FLUSHDB");
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("SET").arg(key.as_slice()).arg("1").ignore();
    }
    let _: () = pipe.query(con).expect("SET keys");
    let size: usize = redis::cmd("DBSIZE").query(con).expect("DBSIZE");
    assert_eq!(size, keys.len());
}

/// The keys `SCAN 0 MATCH pattern COUNT 10000` returns, cursor looped.
fn scan(con: &mut redis::Connection, pattern: &[u8]) -> BTreeSet<Vec<u8>> {
    let mut found = BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query(con)
            .expect("SCAN");
        found.extend(keys);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

fn show(keys: &BTreeSet<Vec<u8>>) -> Vec<String> {
    keys.iter()
        .map(|k| {
            let text = String::from_utf8_lossy(k);
            let text: String = text.chars().take(40).collect();
            format!("{text:?}")
        })
        .collect()
}

#[test]
fn glob_match_selects_what_redis_scan_returns() {
    let server = RedisServer::start();
    let mut con = server.sync_conn();
    let keys = keys();
    assert!(keys.len() >= 300, "{} keys", keys.len());
    write_keys(&mut con, &keys);

    let mut selective = 0;
    for pattern in patterns() {
        let redis = scan(&mut con, &pattern);
        let ours: BTreeSet<Vec<u8>> = if pattern == b"*" {
            // SCAN (like KEYS) skips matching for a lone `*` and returns
            // every key, the empty one included, which `stringmatchlen`
            // itself (and so `glob_match`) does not match.
            assert!(!glob_match(b"*", b""));
            keys.clone()
        } else {
            keys.iter().filter(|k| glob_match(&pattern, k)).cloned().collect()
        };
        let shown = String::from_utf8_lossy(&pattern);
        let shown: String = shown.chars().take(60).collect();
        assert!(
            redis == ours,
            "pattern {shown:?}: only Redis matches {:?}; only glob_match matches {:?}",
            show(&redis.difference(&ours).cloned().collect()),
            show(&ours.difference(&redis).cloned().collect()),
        );
        if !redis.is_empty() && redis.len() < keys.len() {
            selective += 1;
        }
    }
    // The comparison is not vacuous: most patterns select some keys only.
    assert!(selective >= 50, "only {selective} patterns selected a proper subset");
}

/// The key prefix of the Redis side of the memory store comparison (no glob
/// metacharacters, so it needs no escaping).
const PREFIX: &str = "cg:";

/// Patterns for the memory store (its keys and patterns are `str`).
const STORE_PATTERNS: &[&str] = &[
    "*", "task:*", "task:?", "[a-z]*", "[^a]?", "*\\**", "\\[*", "[\\]]*", "*[", "[a-", "é*", "* *", "?", "", "**",
    "*a",
];

#[tokio::test]
async fn memory_store_patterns_agree_with_redis_scan() {
    let server = RedisServer::start();
    let mut con = server.sync_conn();
    let texts: Vec<String> = keys().into_iter().filter_map(|k| String::from_utf8(k).ok()).collect();
    // As the Redis store lays them out: behind a key prefix, matched with
    // `<escaped prefix><pattern>`.
    let prefixed: BTreeSet<Vec<u8>> = texts.iter().map(|k| format!("{PREFIX}{k}").into_bytes()).collect();
    write_keys(&mut con, &prefixed);

    let mut selective = 0;
    for pattern in STORE_PATTERNS {
        let expected: Vec<String> = scan(&mut con, format!("{PREFIX}{pattern}").as_bytes())
            .into_iter()
            .map(|k| String::from_utf8(k).expect("utf-8 key"))
            .map(|k| k.strip_prefix(PREFIX).expect("prefixed key").to_string())
            .collect();
        if !expected.is_empty() && expected.len() < texts.len() {
            selective += 1;
        }

        let store = filled(&texts).await;
        let (count, listed) = store.scan_keys(pattern, usize::MAX).await.expect("scan_keys");
        assert_eq!(count, expected.len() as u64, "scan_keys count for {pattern:?}");
        assert_eq!(listed, expected, "scan_keys keys for {pattern:?}");
        let (count, first) = store.scan_keys(pattern, 5).await.expect("scan_keys");
        assert_eq!(count, expected.len() as u64);
        assert_eq!(first, expected.iter().take(5).cloned().collect::<Vec<_>>());

        assert_eq!(
            store.purge_pattern(pattern, false).await.expect("purge_pattern"),
            expected.len() as u64,
            "purge_pattern count for {pattern:?}"
        );
        assert_removed(&store, &texts, &expected, "purge_pattern", pattern).await;

        let store = filled(&texts).await;
        assert_eq!(
            store.clear(Some(pattern)).await.expect("clear"),
            expected.len() as u64,
            "clear count for {pattern:?}"
        );
        assert_eq!(store.scan_keys(pattern, 0).await.expect("scan_keys").0, 0);
        assert_removed(&store, &texts, &expected, "clear", pattern).await;
    }
    assert!(selective >= 10, "only {selective} patterns selected a proper subset");
}

async fn filled(keys: &[String]) -> MemoryStore {
    let store = MemoryStore::new(1_000_000, 1 << 30, Duration::from_secs(60), None);
    for key in keys {
        let stored = store
            .fill(EntryFill::new(
                key,
                "scope",
                Bytes::from(key.clone()),
                Duration::from_secs(3600),
                FillGuard::default(),
            ))
            .await
            .expect("fill");
        assert!(stored, "fill {key:?}");
    }
    store
}

/// Exactly the `removed` keys are gone; the others still hold their entry.
async fn assert_removed(store: &MemoryStore, keys: &[String], removed: &[String], call: &str, pattern: &str) {
    for key in keys {
        let record = store.record(key).await.expect("record");
        let gone = record.is_none();
        assert_eq!(gone, removed.contains(key), "{key:?} after {call}({pattern:?})");
        if let Some(record) = record {
            assert_eq!(record.fields, vec![("scope".to_string(), Bytes::from(key.clone()))]);
        }
    }
}
