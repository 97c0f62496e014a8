//! Unit tests of the memory store's purges: tags and their index, soft
//! purges, the epoch, and a fill racing a purge.

use super::super::entry::{now_ms, Entry, Lifetime};
use super::tests::{b, hit, live_records, put, store, HOUR, MIB};
use super::*;
use crate::store::{EntryFill, Store};
use http::{HeaderMap, HeaderValue, StatusCode};
use std::collections::HashMap;
use std::sync::Barrier;

fn fresh_entry(body: &str) -> Bytes {
    let lifetime = Lifetime {
        ttl: HOUR,
        stale_while_revalidate: Duration::from_secs(60),
        stale_if_error: Duration::from_secs(600),
        must_revalidate: false,
    };
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    Entry::encode(StatusCode::OK, &headers, body.as_bytes(), now_ms(), &lifetime)
}

fn tags(names: &[&str]) -> Vec<String> {
    names.iter().map(|t| t.to_string()).collect()
}

/// Fills `field` of `key` under a fresh guard, tagged `with`.
async fn put_tagged(s: &MemoryStore, (key, field): (&str, &str), value: Bytes, ttl: Duration, with: &[&str]) {
    let guard = s.fill_guard(key).await.unwrap();
    assert!(
        s.fill(EntryFill::new(key, field, value, ttl, guard).tagged(&tags(with)))
            .await
            .unwrap(),
        "fill {key}/{field}"
    );
}

/// The keys `tag` indexes, sorted; checks the index's invariant too.
fn indexed(s: &MemoryStore, tag: &str) -> Vec<String> {
    let index = lock_tags(&s.backend().tags);
    let members: usize = index.tags.values().map(HashMap::len).sum();
    assert_eq!(index.by_expiry.len(), members, "by_expiry and members disagree");
    for (t, tag, key) in &index.by_expiry {
        assert_eq!(index.tags[tag][key].expires_at, Some(*t));
    }
    let mut keys: Vec<String> = index.members(tag).map(|(k, _)| k.clone()).collect();
    keys.sort();
    keys
}

fn decoded(value: Option<Bytes>) -> Entry {
    Entry::decode(&value.expect("an entry")).expect("a valid entry")
}

#[tokio::test]
async fn tags_index_keys_and_hard_purge_removes_them() {
    let s = store();
    for key in ["a", "b"] {
        put_tagged(&s, (key, "x"), fresh_entry(key), HOUR, &["t1"]).await;
    }
    put_tagged(&s, ("c", "x"), fresh_entry("c"), HOUR, &["t2"]).await;
    put_tagged(&s, ("d", "x"), fresh_entry("d"), HOUR, &["t1", "t2"]).await;
    put(&s, "e", "x", "untagged").await;
    // A later fill without tags keeps the key under its earlier ones.
    put_tagged(&s, ("f", "x"), fresh_entry("f"), HOUR, &["t3"]).await;
    put(&s, "f", "y", "second").await;
    assert_eq!(indexed(&s, "t1"), vec!["a", "b", "d"]);
    assert_eq!(indexed(&s, "t2"), vec!["c", "d"]);
    assert_eq!(indexed(&s, "t3"), vec!["f"]);

    let inflight = s.fill_guard("a").await.unwrap();
    // A key under two of the tags counts once; unknown tags count 0.
    assert_eq!(s.purge_tags(&tags(&["t1", "t1", "nope"]), false).await.unwrap(), 3);
    for key in ["a", "b", "d"] {
        assert!(hit(&s, key, "x").await.is_none(), "{key}");
        assert!(s.record(key).await.unwrap().is_none(), "{key}");
    }
    assert!(hit(&s, "c", "x").await.is_some());
    assert_eq!(hit(&s, "e", "x").await, Some(b("untagged")));
    // The index of t1 is gone, and d left t2's.
    assert!(indexed(&s, "t1").is_empty());
    assert_eq!(indexed(&s, "t2"), vec!["c"]);
    assert!(!lock_tags(&s.backend().tags).tags.contains_key("t1"));
    // As purge_keys: tombstones of the next generation refuse old guards.
    assert_eq!(s.fill_guard("a").await.unwrap().generation, 1);
    assert!(!s
        .fill(EntryFill::new("a", "x", fresh_entry("old"), HOUR, inflight))
        .await
        .unwrap());
    assert_eq!(s.purge_tags(&tags(&["t1"]), false).await.unwrap(), 0);

    assert_eq!(s.purge_tags(&tags(&["t3"]), false).await.unwrap(), 1);
    assert!(hit(&s, "f", "x").await.is_none() && hit(&s, "f", "y").await.is_none());

    // purge_keys and purge_pattern unindex what they remove.
    assert_eq!(s.purge_keys(&["c".into()], false).await.unwrap(), 1);
    assert!(indexed(&s, "t2").is_empty());
    put_tagged(&s, ("g", "x"), fresh_entry("g"), HOUR, &["t4"]).await;
    assert_eq!(s.purge_pattern("g", false).await.unwrap(), 1);
    assert!(indexed(&s, "t4").is_empty());
    put_tagged(&s, ("h", "x"), fresh_entry("h"), HOUR, &["t5"]).await;
    assert_eq!(s.clear(None).await.unwrap(), 2);
    assert!(lock_tags(&s.backend().tags).tags.is_empty());
}

#[tokio::test]
async fn soft_tag_purge_keeps_entries_stale_and_the_index() {
    let s = store();
    put_tagged(&s, ("a", "x"), fresh_entry("A"), HOUR, &["t"]).await;
    put_tagged(&s, ("b", "x"), fresh_entry("B"), HOUR, &["t", "u"]).await;
    put_tagged(&s, ("c", "x"), fresh_entry("C"), HOUR, &["u"]).await;
    let inflight = s.fill_guard("a").await.unwrap();

    assert_eq!(s.purge_tags(&tags(&["t"]), true).await.unwrap(), 2);
    for key in ["a", "b"] {
        let entry = decoded(hit(&s, key, "x").await);
        assert!(!entry.is_fresh(now_ms()), "{key}");
        assert!(entry.within_stale_while_revalidate(now_ms()), "{key}");
        assert_eq!(entry.body, b(&key.to_uppercase()));
    }
    assert!(decoded(hit(&s, "c", "x").await).is_fresh(now_ms()));
    assert_eq!(indexed(&s, "t"), vec!["a", "b"]);
    assert_eq!(indexed(&s, "u"), vec!["b", "c"]);
    // The fill that started before is refused; a refresh stores.
    assert!(!s
        .fill(EntryFill::new("a", "x", fresh_entry("old"), HOUR, inflight))
        .await
        .unwrap());
    let guard = s.fill_guard("a").await.unwrap();
    assert_eq!(guard.generation, 1);
    assert!(s
        .fill(EntryFill::new("a", "x", fresh_entry("new"), HOUR, guard))
        .await
        .unwrap());
    assert!(decoded(hit(&s, "a", "x").await).is_fresh(now_ms()));
    // Still indexed: a hard purge of the tag finds them.
    assert_eq!(s.purge_tags(&tags(&["t"]), false).await.unwrap(), 2);
    assert!(hit(&s, "a", "x").await.is_none() && hit(&s, "b", "x").await.is_none());
    assert_eq!(indexed(&s, "u"), vec!["c"]);
}

#[tokio::test]
async fn tag_index_forgets_expired_entries() {
    let s = store();
    let short = Duration::from_millis(200);
    put_tagged(&s, ("gone", "x"), fresh_entry("g"), short, &["t", "only-short"]).await;
    put_tagged(&s, ("stays", "x"), fresh_entry("s"), HOUR, &["t"]).await;
    assert_eq!(indexed(&s, "t"), vec!["gone", "stays"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Any index write drops every expired member, whatever its tag.
    put_tagged(&s, ("other", "x"), fresh_entry("o"), HOUR, &["u"]).await;
    assert_eq!(indexed(&s, "t"), vec!["stays"]);
    assert!(!lock_tags(&s.backend().tags).tags.contains_key("only-short"));
    // Expired records are not counted by a purge either.
    assert_eq!(s.purge_tags(&tags(&["t", "only-short"]), false).await.unwrap(), 1);

    // A tag nobody writes to again empties too.
    put_tagged(&s, ("lone", "x"), fresh_entry("l"), short, &["lone"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.run_pending_tasks();
    assert!(!lock_tags(&s.backend().tags).tags.contains_key("lone"));
    assert_eq!(indexed(&s, "u"), vec!["other"]);
}

#[tokio::test]
async fn evicted_records_leave_the_tag_index() {
    let s = MemoryStore::new(10, 64 * MIB, Duration::from_secs(60), None);
    for i in 0..50 {
        put_tagged(&s, (&format!("k{i}"), "x"), fresh_entry("v"), HOUR, &["t"]).await;
        s.run_pending_tasks();
    }
    let (live, _) = live_records(&s);
    let members = indexed(&s, "t");
    assert!(
        members.len() as u64 <= live && live <= 10,
        "{} members, {live} live",
        members.len()
    );
    for key in &members {
        assert!(hit(&s, key, "x").await.is_some(), "{key}");
    }
    assert_eq!(s.purge_tags(&tags(&["t"]), false).await.unwrap(), members.len() as u64);
}

#[tokio::test]
async fn soft_purge_makes_entries_stale_and_keeps_bodies() {
    let s = store();
    let marker = Bytes::from_static(b"CV1\naccept-language");
    put_tagged(&s, ("k", "scope"), marker.clone(), HOUR, &[]).await;
    put_tagged(&s, ("k", "variant"), fresh_entry("body"), HOUR, &[]).await;
    put(&s, "k", "foreign", "not an entry").await;
    let before = decoded(hit(&s, "k", "variant").await);
    assert!(before.is_fresh(now_ms()));
    let ttl_before = s.record("k").await.unwrap().unwrap().ttl.unwrap();

    assert_eq!(s.purge_keys(&["k".into()], true).await.unwrap(), 1);
    let after = decoded(hit(&s, "k", "variant").await);
    assert!(!after.is_fresh(now_ms()));
    assert_eq!(after.lifetime.ttl, Duration::ZERO);
    assert_eq!(after.body, b("body"));
    assert_eq!(after.stored_at_ms, before.stored_at_ms);
    assert_eq!(after.headers, before.headers);
    assert_eq!(after.status, before.status);
    assert_eq!(
        after.lifetime.stale_while_revalidate,
        before.lifetime.stale_while_revalidate
    );
    // Other fields are left alone, and the record keeps its expiry.
    assert_eq!(hit(&s, "k", "scope").await, Some(marker.clone()));
    assert_eq!(hit(&s, "k", "foreign").await, Some(b("not an entry")));
    let ttl_after = s.record("k").await.unwrap().unwrap().ttl.unwrap();
    assert!(ttl_after <= ttl_before && ttl_after + Duration::from_secs(5) > ttl_before);
    assert_eq!(s.fill_guard("k").await.unwrap().generation, 1);
    // Again: still holds an (already stale) entry; the generation moves.
    assert_eq!(s.purge_keys(&["k".into()], true).await.unwrap(), 1);
    assert_eq!(s.fill_guard("k").await.unwrap().generation, 2);
    assert_eq!(decoded(hit(&s, "k", "variant").await).body, b("body"));

    // No entry: a record of other fields is kept, not counted.
    put(&s, "m", "scope", "CV1\nx").await;
    assert_eq!(s.purge_keys(&["m".into()], true).await.unwrap(), 0);
    assert_eq!(hit(&s, "m", "scope").await, Some(b("CV1\nx")));
    assert_eq!(s.fill_guard("m").await.unwrap().generation, 1);
    // No record: a tombstone, as a hard purge leaves.
    assert_eq!(s.purge_keys(&["absent".into()], true).await.unwrap(), 0);
    assert_eq!(s.fill_guard("absent").await.unwrap().generation, 1);
    assert!(s.record("absent").await.unwrap().is_none());
}

#[tokio::test]
async fn soft_purge_refuses_an_inflight_fill() {
    let s = store();
    put_tagged(&s, ("k", "a"), fresh_entry("v1"), HOUR, &[]).await;
    // A refresh started (the lookup saw a stale entry), then the purge.
    let inflight = s.fill_guard("k").await.unwrap();
    assert_eq!(s.purge_keys(&["k".into()], true).await.unwrap(), 1);
    assert!(!s
        .fill(EntryFill::new("k", "a", fresh_entry("v2"), HOUR, inflight))
        .await
        .unwrap());
    let entry = decoded(hit(&s, "k", "a").await);
    assert_eq!(entry.body, b("v1"));
    assert!(!entry.is_fresh(now_ms()));

    // Soft pattern purges bump the epoch and soften what matches.
    put_tagged(&s, ("task:1", "a"), fresh_entry("t1"), HOUR, &[]).await;
    put_tagged(&s, ("user:1", "a"), fresh_entry("u1"), HOUR, &[]).await;
    s.purge_keys(&["task:tomb".into()], false).await.unwrap();
    let other = s.fill_guard("user:2").await.unwrap();
    assert_eq!(s.purge_pattern("task:*", true).await.unwrap(), 1);
    assert!(!s
        .fill(EntryFill::new("user:2", "a", fresh_entry("x"), HOUR, other))
        .await
        .unwrap());
    let task = decoded(hit(&s, "task:1", "a").await);
    assert!(!task.is_fresh(now_ms()) && task.body == b("t1"));
    assert!(decoded(hit(&s, "user:1", "a").await).is_fresh(now_ms()));
    assert_eq!(s.fill_guard("task:1").await.unwrap().generation, 1);
    assert_eq!(s.scan_keys("*", 10).await.unwrap().0, 3);
}

#[tokio::test]
async fn purge_tags_bumps_the_epoch() {
    let s = store();
    // A fill in flight for a key not under the tag yet.
    let inflight = s.fill_guard("new").await.unwrap();
    assert_eq!(s.purge_tags(&tags(&["t"]), false).await.unwrap(), 0);
    assert!(!s
        .fill(EntryFill::new("new", "a", fresh_entry("stale"), HOUR, inflight).tagged(&tags(&["t"])))
        .await
        .unwrap());
    assert!(hit(&s, "new", "a").await.is_none());
    assert!(indexed(&s, "t").is_empty());
    let inflight = s.fill_guard("new").await.unwrap();
    assert_eq!(s.purge_tags(&tags(&["t"]), true).await.unwrap(), 0);
    assert!(!s
        .fill(EntryFill::new("new", "a", fresh_entry("stale"), HOUR, inflight).tagged(&tags(&["t"])))
        .await
        .unwrap());
    let fresh = s.fill_guard("new").await.unwrap();
    assert_eq!(fresh.epoch, 2);
    assert!(s
        .fill(EntryFill::new("new", "a", fresh_entry("new"), HOUR, fresh).tagged(&tags(&["t"])))
        .await
        .unwrap());
    assert_eq!(indexed(&s, "t"), vec!["new"]);
}

#[test]
fn stale_entry_zeroes_only_the_ttl() {
    let entry = fresh_entry("body");
    let stale = stale_entry(&entry);
    assert_eq!(stale.len(), entry.len());
    assert_eq!(&stale[..TTL_OFFSET], &entry[..TTL_OFFSET]);
    assert_eq!(&stale[TTL_OFFSET..TTL_OFFSET + TTL_LEN], &[0; TTL_LEN]);
    assert_eq!(&stale[TTL_OFFSET + TTL_LEN..], &entry[TTL_OFFSET + TTL_LEN..]);
    // Already stale, or too short to have the field: the same bytes.
    assert_eq!(stale_entry(&stale).as_ptr(), stale.as_ptr());
    let short = Bytes::from_static(b"CG\x01");
    assert_eq!(stale_entry(&short), short);
}

/// A fill racing a purge of the same key never leaves a fresh entry
/// behind: it lands before the purge (and is purged, or made stale) or
/// is refused.
#[test]
fn purge_and_fill_race_never_leaves_a_fresh_entry() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let s = Arc::new(store());
    for round in 0..600 {
        let key = format!("k{}", round % 7);
        let (mode, soft) = (round % 3, round % 6 >= 3);
        let guard = rt.block_on(s.fill_guard(&key)).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let filler = {
            let (s, key, barrier) = (s.clone(), key.clone(), barrier.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                barrier.wait();
                rt.block_on(s.fill(EntryFill::new(&key, "a", fresh_entry("stale"), HOUR, guard).tagged(&tags(&["t"]))))
                    .unwrap()
            })
        };
        barrier.wait();
        match mode {
            0 => rt.block_on(s.purge_pattern(&format!("{key}*"), soft)),
            1 => rt.block_on(s.purge_keys(std::slice::from_ref(&key), soft)),
            _ => rt.block_on(s.purge_tags(&tags(&["t"]), soft)),
        }
        .unwrap();
        filler.join().unwrap();
        let left = rt.block_on(hit(&s, &key, "a"));
        if let Some(entry) = left {
            assert!(soft, "round {round}: a hard purge left an entry");
            assert!(!decoded(Some(entry)).is_fresh(now_ms()), "round {round}");
        }
        // Start the next round from a clean key.
        rt.block_on(s.purge_keys(std::slice::from_ref(&key), false)).unwrap();
    }
}
