//! Unit tests of the memory store (the protocol on the memory backend):
//! fills and guards, expiry, bounds, listings, counters and figures.

use super::super::backend::{proc_kb, read_proc};
use super::*;
use crate::store::{EntryFill, FillGuard, Store};

pub(super) const MIB: u64 = 1 << 20;

pub(super) fn store() -> MemoryStore {
    MemoryStore::new(10_000, 64 * MIB, Duration::from_secs(60), Some("s3cret"))
}

pub(super) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub(super) const HOUR: Duration = Duration::from_secs(3600);

pub(super) async fn put(s: &MemoryStore, key: &str, field: &str, value: &str) {
    let guard = s.fill_guard(key).await.unwrap();
    assert!(
        s.fill(EntryFill::new(key, field, b(value), HOUR, guard)).await.unwrap(),
        "fill {key}/{field}"
    );
}

pub(super) async fn hit(s: &MemoryStore, key: &str, field: &str) -> Option<Bytes> {
    s.lookup(key, field).await.unwrap().entry
}

#[tokio::test]
async fn hit_after_fill() {
    let s = store();
    let miss = s.lookup("task:1", "scope-a").await.unwrap();
    assert!(miss.entry.is_none());
    assert_eq!(
        miss.guard,
        FillGuard {
            generation: 0,
            epoch: 0,
            reservation: 0,
        }
    );
    assert!(s
        .fill(EntryFill::new("task:1", "scope-a", b("A"), HOUR, miss.guard))
        .await
        .unwrap());
    assert_eq!(hit(&s, "task:1", "scope-a").await, Some(b("A")));
    // Another scope of the same key misses, with the key's guard.
    let other = s.lookup("task:1", "scope-b").await.unwrap();
    assert!(other.entry.is_none());
    assert!(s
        .fill(EntryFill::new("task:1", "scope-b", b("B"), HOUR, other.guard))
        .await
        .unwrap());
    assert_eq!(hit(&s, "task:1", "scope-a").await, Some(b("A")));
    assert_eq!(hit(&s, "task:1", "scope-b").await, Some(b("B")));
    // Replacing a field works with a fresh guard.
    let guard = s.fill_guard("task:1").await.unwrap();
    assert!(s
        .fill(EntryFill::new("task:1", "scope-a", b("A2"), HOUR, guard))
        .await
        .unwrap());
    assert_eq!(hit(&s, "task:1", "scope-a").await, Some(b("A2")));
    assert_eq!(s.kind(), "memory");
    assert!(s.is_up());
}

#[tokio::test]
async fn guard_refuses_fill_after_purge_keys() {
    let s = store();
    put(&s, "task:1", "a", "old").await;
    let stale = s.lookup("task:1", "b").await.unwrap().guard;
    let stale_absent = s.lookup("task:2", "a").await.unwrap().guard;
    assert_eq!(
        s.purge_keys(&["task:1".into(), "task:2".into(), "task:1".into()], false)
            .await
            .unwrap(),
        1
    );
    assert!(hit(&s, "task:1", "a").await.is_none());
    assert!(!s
        .fill(EntryFill::new("task:1", "b", b("stale"), HOUR, stale))
        .await
        .unwrap());
    assert!(!s
        .fill(EntryFill::new("task:2", "a", b("stale"), HOUR, stale_absent))
        .await
        .unwrap());
    assert!(hit(&s, "task:1", "b").await.is_none());
    assert!(hit(&s, "task:2", "a").await.is_none());
    // The tombstones carry the next generation (twice for task:1).
    let fresh = s.lookup("task:1", "b").await.unwrap().guard;
    assert_eq!(fresh.generation, 2);
    assert_eq!(s.fill_guard("task:2").await.unwrap().generation, 1);
    assert!(s
        .fill(EntryFill::new("task:1", "b", b("new"), HOUR, fresh))
        .await
        .unwrap());
    assert_eq!(hit(&s, "task:1", "b").await, Some(b("new")));
    // The refilled record keeps its generation; purging again bumps it.
    assert_eq!(s.fill_guard("task:1").await.unwrap().generation, 2);
    assert_eq!(s.purge_keys(&["task:1".into()], false).await.unwrap(), 1);
    assert_eq!(s.fill_guard("task:1").await.unwrap().generation, 3);
}

#[tokio::test]
async fn guard_refuses_fill_after_purge_pattern() {
    let s = store();
    put(&s, "task:1", "a", "x").await;
    put(&s, "task:2", "a", "x").await;
    put(&s, "user:1", "a", "x").await;
    s.purge_keys(&["task:3".into()], false).await.unwrap();
    let inflight_task = s.lookup("task:9", "a").await.unwrap().guard;
    let inflight_user = s.lookup("user:9", "a").await.unwrap().guard;
    // Removes both entries and the task:3 tombstone.
    assert_eq!(s.purge_pattern("task:*", false).await.unwrap(), 3);
    assert!(hit(&s, "task:1", "a").await.is_none());
    assert_eq!(hit(&s, "user:1", "a").await, Some(b("x")));
    // The epoch moved: no fill that looked up before stores, whatever key.
    assert!(!s
        .fill(EntryFill::new("task:9", "a", b("stale"), HOUR, inflight_task))
        .await
        .unwrap());
    assert!(!s
        .fill(EntryFill::new("user:9", "a", b("stale"), HOUR, inflight_user))
        .await
        .unwrap());
    let fresh = s.lookup("task:9", "a").await.unwrap().guard;
    assert_eq!(
        fresh,
        FillGuard {
            generation: 0,
            epoch: 1,
            reservation: 0,
        }
    );
    assert!(s
        .fill(EntryFill::new("task:9", "a", b("new"), HOUR, fresh))
        .await
        .unwrap());
    assert_eq!(s.purge_pattern("nothing*", false).await.unwrap(), 0);
}

#[tokio::test]
async fn tombstone_expires() {
    let s = MemoryStore::new(100, MIB, Duration::from_millis(400), None);
    s.purge_keys(&["k".into()], false).await.unwrap();
    assert_eq!(s.fill_guard("k").await.unwrap().generation, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.fill_guard("k").await.unwrap().generation, 0);
    assert!(s
        .fill(EntryFill::new("k", "a", b("v"), HOUR, FillGuard::default()))
        .await
        .unwrap());
}

#[tokio::test]
async fn entries_expire() {
    let s = store();
    let guard = s.fill_guard("k").await.unwrap();
    assert!(s
        .fill(EntryFill::new("k", "a", b("v"), Duration::from_millis(400), guard))
        .await
        .unwrap());
    assert!(hit(&s, "k", "a").await.is_some());
    let ttl = s.record("k").await.unwrap().unwrap().ttl.unwrap();
    assert!(ttl <= Duration::from_millis(400) && ttl > Duration::ZERO, "{ttl:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(hit(&s, "k", "a").await.is_none());
    assert!(s.record("k").await.unwrap().is_none());
    assert_eq!(s.scan_keys("*", 10).await.unwrap(), (0, vec![]));
    assert_eq!(s.clear(None).await.unwrap(), 0);
    assert_eq!(s.purge_keys(&["k".into()], false).await.unwrap(), 0);
    assert_eq!(s.info().await.unwrap().total_keys, 0);
}

#[tokio::test]
async fn fill_extends_ttl_never_shortens() {
    let s = store();
    let guard = s.fill_guard("k").await.unwrap();
    assert!(s
        .fill(EntryFill::new("k", "a", b("v"), Duration::from_secs(100), guard))
        .await
        .unwrap());
    assert!(s
        .fill(EntryFill::new("k", "b", b("v"), Duration::from_secs(1), guard))
        .await
        .unwrap());
    let ttl = s.record("k").await.unwrap().unwrap().ttl.unwrap();
    assert!(ttl > Duration::from_secs(90), "{ttl:?}");
    assert!(s
        .fill(EntryFill::new("k", "c", b("v"), Duration::from_secs(1000), guard))
        .await
        .unwrap());
    let ttl = s.record("k").await.unwrap().unwrap().ttl.unwrap();
    assert!(ttl > Duration::from_secs(990), "{ttl:?}");
    // A fill on a tombstone outlives the tombstone.
    s.purge_keys(&["t".into()], false).await.unwrap();
    let guard = s.fill_guard("t").await.unwrap();
    assert!(s.fill(EntryFill::new("t", "a", b("v"), HOUR, guard)).await.unwrap());
    assert!(s.record("t").await.unwrap().unwrap().ttl.unwrap() > Duration::from_secs(3000));
}

pub(super) fn live_records(s: &MemoryStore) -> (u64, u64) {
    s.run_pending_tasks();
    let now = Instant::now();
    s.backend()
        .cache
        .iter()
        .filter(|(_, r)| r.alive(now))
        .fold((0, 0), |(n, bytes), (k, r)| (n + 1, bytes + r.bytes(&k)))
}

#[tokio::test]
async fn bounded_by_entries() {
    let s = MemoryStore::new(100, 64 * MIB, Duration::from_secs(60), None);
    for i in 0..1000 {
        put(&s, &format!("k{i}"), "a", "v").await;
    }
    let (n, _) = live_records(&s);
    assert!((50..=100).contains(&n), "{n} records");
    // The latest fill is there (LRU).
    assert!(hit(&s, "k999", "a").await.is_some());
}

#[tokio::test]
async fn bounded_by_bytes() {
    let s = MemoryStore::new(1_000_000, 100_000, Duration::from_secs(60), None);
    let body = "x".repeat(1000);
    for i in 0..1000 {
        put(&s, &format!("k{i}"), "a", &body).await;
    }
    let (n, bytes) = live_records(&s);
    assert!(bytes <= 100_000 && n >= 50, "{n} records, {bytes} bytes");
    // A record that could never fit is refused, and leaves the key alone.
    put(&s, "big", "a", "small").await;
    let guard = s.fill_guard("big").await.unwrap();
    let huge = Bytes::from(vec![0u8; 200_000]);
    assert!(!s.fill(EntryFill::new("big", "b", huge, HOUR, guard)).await.unwrap());
    assert_eq!(hit(&s, "big", "a").await, Some(b("small")));
}

#[test]
fn sizing_bounds_both() {
    let s = Sizing::new(300, 1000);
    assert_eq!((s.unit, s.capacity, s.floor), (1, 1000, 4));
    assert!(s.capacity / s.floor <= 300);
    assert_eq!(s.weight(1), 4);
    assert_eq!(s.weight(50), 50);
    let s = Sizing::new(0, 0);
    assert_eq!(s.capacity, 0);
    let s = Sizing::new(1, 100 * u64::from(u32::MAX));
    assert!(s.capacity <= u64::from(u32::MAX));
    assert_eq!(s.floor, s.capacity);
    assert_eq!(s.moka_weight(u64::MAX), u32::MAX);
}

#[tokio::test]
async fn evicting_a_generation_bumps_the_epoch() {
    let s = MemoryStore::new(10, 64 * MIB, Duration::from_secs(60), None);
    s.purge_keys(&["victim".into()], false).await.unwrap();
    let stale = s.fill_guard("victim").await.unwrap();
    assert_eq!(stale.generation, 1);
    s.run_pending_tasks();
    for i in 0..50 {
        put(&s, &format!("k{i}"), "a", "v").await;
        s.run_pending_tasks();
    }
    // The tombstone is gone and a new purge recreates generation 1, but
    // the epoch moved, so the stale fill still cannot store.
    assert_eq!(s.fill_guard("victim").await.unwrap().generation, 0);
    s.purge_keys(&["victim".into()], false).await.unwrap();
    assert_eq!(s.fill_guard("victim").await.unwrap().generation, 1);
    assert_ne!(s.backend().epoch(), stale.epoch);
    assert!(!s
        .fill(EntryFill::new("victim", "a", b("stale"), HOUR, stale))
        .await
        .unwrap());
}

#[tokio::test]
async fn evicting_plain_records_keeps_the_epoch() {
    let s = MemoryStore::new(10, 64 * MIB, Duration::from_secs(60), None);
    for i in 0..50 {
        put(&s, &format!("k{i}"), "a", "v").await;
        s.run_pending_tasks();
    }
    assert_eq!(s.backend().epoch(), 0);
}

#[tokio::test]
async fn scan_record_and_clear() {
    let s = store();
    for i in 0..20 {
        put(&s, &format!("task:{i:02}"), "scope-a", "A").await;
    }
    put(&s, "task:05", "scope-b", "B").await;
    put(&s, "user:1", "scope-a", "U").await;
    // Tombstones are not listed.
    s.purge_keys(&["task:99".into()], false).await.unwrap();

    let (n, keys) = s.scan_keys("task:*", 3).await.unwrap();
    assert_eq!(n, 20);
    assert_eq!(keys, vec!["task:00", "task:01", "task:02"]);
    let (n, keys) = s.scan_keys("task:1[5-9]", 100).await.unwrap();
    assert_eq!((n, keys.len()), (5, 5));
    assert_eq!(keys[0], "task:15");
    assert_eq!(s.scan_keys("*", 0).await.unwrap(), (21, vec![]));

    let record = s.record("task:05").await.unwrap().unwrap();
    assert_eq!(
        record.fields,
        vec![("scope-a".to_string(), b("A")), ("scope-b".to_string(), b("B"))]
    );
    let ttl = record.ttl.unwrap();
    assert!(ttl > Duration::from_secs(3500) && ttl <= HOUR, "{ttl:?}");
    assert!(s.record("task:99").await.unwrap().is_none());
    assert!(s.record("nope").await.unwrap().is_none());

    let inflight = s.fill_guard("task:50").await.unwrap();
    assert_eq!(s.clear(Some("task:1*")).await.unwrap(), 10);
    assert_eq!(s.scan_keys("task:1*", 100).await.unwrap(), (0, vec![]));
    assert_eq!(s.scan_keys("*", 0).await.unwrap().0, 11);
    assert!(!s
        .fill(EntryFill::new("task:50", "a", b("stale"), HOUR, inflight))
        .await
        .unwrap());
    // The tombstone stays.
    assert_eq!(s.fill_guard("task:99").await.unwrap().generation, 1);

    assert_eq!(s.info().await.unwrap().total_keys, 11);
    assert_eq!(s.clear(None).await.unwrap(), 11);
    assert_eq!(s.scan_keys("*", 100).await.unwrap(), (0, vec![]));
    assert_eq!(s.info().await.unwrap().total_keys, 0);
    assert_eq!(s.fill_guard("task:99").await.unwrap().generation, 1);
}

#[tokio::test]
async fn internal_keys_are_left_out_of_patterns() {
    let s = store();
    let internal = format!("{INTERNAL_PREFIX}x");
    put(&s, &internal, "a", "v").await;
    assert_eq!(s.scan_keys("*", 10).await.unwrap().0, 0);
    assert_eq!(s.purge_pattern("*", false).await.unwrap(), 0);
    assert_eq!(s.clear(None).await.unwrap(), 0);
    assert!(hit(&s, &internal, "a").await.is_some());
}

#[test]
fn selects_mirrors_a_prefixed_redis_scan() {
    assert!(selects("*", ""));
    assert!(selects("*", ""));
    assert!(selects("**", ""));
    assert!(selects("", ""));
    assert!(!selects("?", ""));
    assert!(!selects("*a", ""));
    assert!(selects("a*", "a"));
    assert!(!selects("", "a"));
    assert!(!selects("*", "__cg:epoch"));
}

#[tokio::test]
async fn counters_sum_instances_and_republishing_is_idempotent() {
    let s = store();
    assert!(s.counters().await.unwrap().is_empty());
    s.publish_counters("a", &[("hits".into(), 2), ("misses".into(), 1)])
        .await
        .unwrap();
    // The same totals again (a retry) change nothing.
    s.publish_counters("a", &[("hits".into(), 2), ("misses".into(), 1)])
        .await
        .unwrap();
    s.publish_counters("b", &[("hits".into(), 3), ("errors".into(), -1)])
        .await
        .unwrap();
    assert_eq!(
        s.counters().await.unwrap(),
        vec![
            ("errors".to_string(), -1),
            ("hits".to_string(), 5),
            ("misses".to_string(), 1)
        ]
    );
}

#[tokio::test]
async fn secret_and_info() {
    assert_eq!(store().scope_secret(), Some(b("s3cret")));
    let random = MemoryStore::new(10, MIB, Duration::from_secs(1), None);
    let secret = random.scope_secret().unwrap();
    assert_eq!(secret.len(), 64);
    assert!(secret.iter().all(u8::is_ascii_hexdigit));
    assert_eq!(random.scope_secret(), Some(secret.clone()));
    assert_ne!(
        MemoryStore::new(10, MIB, Duration::from_secs(1), None).scope_secret(),
        Some(secret)
    );

    let s = store();
    put(&s, "a", "x", "1").await;
    s.purge_keys(&["b".into()], false).await.unwrap();
    let info = s.info().await.unwrap();
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.connected_clients, 0);
    assert_eq!(info.total_keys, 1);
    assert!(info.used_memory > 0);
    assert!(info.peak_memory >= info.used_memory / 2);
    assert!(info.total_system_memory > info.used_memory);
}

#[test]
fn proc_parsing_is_lenient() {
    assert_eq!(
        proc_kb("VmPeak:\t 10 kB\nVmHWM:\t  2048 kB\n", "VmHWM"),
        Some(2048 * 1024)
    );
    assert_eq!(proc_kb("VmHWMx: 1 kB", "VmHWM"), None);
    assert_eq!(proc_kb("VmHWM: junk", "VmHWM"), None);
    assert_eq!(proc_kb("", "MemTotal"), None);
    assert!(read_proc("/proc/nonexistent/file").is_none());
}
