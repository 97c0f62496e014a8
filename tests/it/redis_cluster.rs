//! cachegate on a Redis Cluster (3 primaries, 3 replicas, spawned here):
//! the cache-behaviour suite, and a primary killed mid-run under steady
//! requests: every request succeeds (fail open), and caching resumes once
//! a replica is promoted.

use crate::common::topology::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_suite_on_a_cluster() {
    let cluster = RedisCluster::start();
    crate::common::suite::run_all(&format!("url = \"{}\"", cluster.url())).await;
}

/// The `cluster = [...]` form, and entries spread over every primary (an
/// independent client sees them there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_list_form_spreads_records_over_every_primary() {
    let cluster = RedisCluster::start();
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .take(2)
        .map(|n| format!("\"127.0.0.1:{}\"", n.port))
        .collect();
    let e = crate::common::suite::Env::start(&format!("cluster = [{}]", seeds.join(", ")), "list:").await;
    for i in 0..30 {
        let p = format!("/api/v1/tasks/{i}");
        e.client.get(&p).await;
        e.until_hit(&p).await;
    }
    // The in-process tier is off on a cluster (on by default elsewhere):
    // all those hits were answered from Redis, none from the tier.
    let gw = e.proxy.gateway();
    assert!(gw.config().tier.enabled, "[tier] is on by default");
    assert!(!gw.config().tier_in_use(), "but not used on a cluster");
    for i in 0..30 {
        assert_eq!(e.client.get(&format!("/api/v1/tasks/{i}")).await.x_cache(), Some("HIT"));
    }
    let text = gw.metrics().encode();
    assert!(
        text.lines().any(|l| l == "cachegate_tier_hits_total 0"),
        "no tier hit on a cluster: {}",
        text.lines()
            .find(|l| l.starts_with("cachegate_tier_hits_total"))
            .unwrap_or("(missing)")
    );
    // Enterprise edition: its DB 2 is the `db2:` key prefix on a cluster.
    let mut per_primary = Vec::new();
    for port in cluster.primary_ports() {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("list:db2:task:*")
            .query_async(&mut c)
            .await
            .unwrap();
        per_primary.push(keys.len());
    }
    assert_eq!(per_primary.iter().sum::<usize>(), 30, "{per_primary:?}");
    assert!(
        per_primary.iter().all(|n| *n > 0),
        "records on every primary: {per_primary:?}"
    );
    // The editions' DBs become a key prefix on a cluster.
    let c = cachegate::config::Config::from_toml_str(&format!(
        "edition = \"business\"\n[backend]\nurl = \"http://127.0.0.1:1\"\n[redis]\nurl = \"{}\"\n",
        cluster.url()
    ))
    .unwrap();
    assert_eq!(c.cache.key_prefix, "db1:");
    assert_eq!(c.redis.unwrap().db, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_primary_fails_open_and_caching_resumes() {
    let cluster = RedisCluster::start();
    let e = crate::common::suite::Env::start(&format!("url = \"{}\"", cluster.url()), "failover:").await;
    let paths = crate::common::suite::fail_over_under_load(&e, 12, async {
        let victim = cluster.primary_ports()[0];
        cluster.kill(victim);
        cluster.wait_failover(victim).await;
    })
    .await;

    // Caching resumes: every path is a HIT again, after which the backend
    // sees no more requests; the records are in the cluster. (Entries from
    // before the outage are revalidated for a grace after it ends: wait
    // for that to be over, ARCHITECTURE.md "Purges that are never lost".)
    crate::common::eventually(
        "the store is back and the grace is over",
        std::time::Duration::from_secs(30),
        || async { e.proxy.gateway().store().is_up() && !e.proxy.gateway().revalidating_after_outage() },
    )
    .await;
    for p in &paths {
        e.until_hit(p).await;
    }
    let backend_before = e.backend.total();
    for p in &paths {
        assert_eq!(e.client.get(p).await.x_cache(), Some("HIT"));
    }
    assert_eq!(
        e.backend.total(),
        backend_before,
        "hits after the failover never reach the backend"
    );
    let keys = cluster.keys("failover:db2:task:*").await;
    assert_eq!(keys.len(), paths.len(), "{keys:?}");
    let mut conn = cluster.conn().await;
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg("failover:db2:task:f0")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        fields.iter().any(|f| !f.starts_with("__")),
        "an entry field: {fields:?}"
    );
    // New fills store too.
    let fresh = "/api/v1/tasks/after-failover";
    assert_eq!(e.client.get(fresh).await.x_cache(), Some("MISS"));
    e.until_hit(fresh).await;
    assert_eq!(e.backend.count("GET", fresh), 1);
}

/// One operation of the failover history.
struct Op {
    start: std::time::Instant,
    end: std::time::Instant,
    write: bool,
    /// The resource read or written (a task id, or [`LISTS`] for the list
    /// pages, which share one version).
    group: usize,
    /// The entry read (index into the paths), for the per-primary figures.
    entry: usize,
    version: u64,
    hit: bool,
    cache: String,
    failed: Option<String>,
}

const IDS: usize = 24;
const PAGES: usize = 6;
/// The group of the list pages.
const LISTS: usize = IDS;

/// Rules with per-task tags and tag purges, and list pages purged by
/// pattern: the variant with tags and patterns in flight. No tag is shared
/// by every entry (ARCHITECTURE.md: what a dead primary holding one costs).
const TAGGED_RULES: &str = r#"
[[rule]]
name = "task"
methods = ["GET", "HEAD"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"
ttl = 300
tags = ["task:{task_id}"]

[[rule]]
name = "task-list"
path = '^/api/v1/tasks$'
key = "tasks:{query}"
ttl = 300

[[invalidate]]
name = "task-write"
methods = ["PUT"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
tags = ["task:{task_id}"]

[[invalidate]]
name = "task-create"
methods = ["POST"]
path = '^/api/v1/tasks$'
patterns = ["tasks:*"]
"#;

/// Issue 15's failover under load: two instances in front of a versioned
/// backend, 4 clients (10 % writes) on entries spread over the 3 primaries,
/// one primary killed with SIGKILL. Checked over the whole history: no
/// client error; no read returns a version older than a write that
/// completed before the read started (no lost purge, no read going
/// backwards); and entries on the healthy primaries keep hitting (within
/// 10 % of before). `tagged`: writes purge by tag (PUT) and by pattern
/// (POST to the list) instead of by key.
async fn failover_history(tagged: bool) {
    use crate::common::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let cluster = RedisCluster::start();
    let section = format!("url = \"{}\"", cluster.url());
    let backend = Backend::start().await;
    let rules = if tagged { TAGGED_RULES } else { crate::common::STD_RULES };
    let text = format!(
        "edition = \"enterprise\"\n[backend]\nurl = \"{}\"\ntimeout_ms = 5000\n\n[store]\nkind = \"redis\"\ntimeout_ms = 100\n\n[redis]\n{section}\nkey_prefix = \"fo:\"\n\n{}{rules}",
        backend.url(),
        crate::common::admin::token_toml("all", crate::common::suite::TOKEN, &["read"]),
    );
    let proxies = [Proxy::start(&text).await, Proxy::start(&text).await];
    let clients: Arc<Vec<Client>> = Arc::new(proxies.iter().map(|p| Client::new(p.addr)).collect());
    // Entries: the tasks, then (tagged) the list pages.
    let entries = if tagged { IDS + PAGES } else { IDS };
    let path = |entry: usize| {
        if entry < IDS {
            format!("/api/v1/tasks/fo{entry}")
        } else {
            format!("/api/v1/tasks?page={}", entry - IDS)
        }
    };
    let redis_key = |entry: usize| {
        if entry < IDS {
            format!("fo:db2:task:fo{entry}")
        } else {
            format!("fo:db2:tasks:page={}", entry - IDS)
        }
    };
    for entry in 0..entries {
        for c in clients.iter() {
            eventually("cached before the kill", PATIENCE, || async {
                c.get(&path(entry)).await.x_cache() == Some("HIT")
            })
            .await;
        }
    }
    // Which primary holds which entry.
    let victim = cluster.primary_ports()[0];
    let on_victim: Vec<bool> = {
        let c = redis::Client::open(format!("redis://127.0.0.1:{victim}")).unwrap();
        let mut c = c.get_multiplexed_async_connection().await.unwrap();
        let held: Vec<String> = redis::cmd("KEYS").arg("fo:db2:*").query_async(&mut c).await.unwrap();
        (0..entries).map(|e| held.contains(&redis_key(e))).collect()
    };
    let victims = on_victim.iter().filter(|v| **v).count();
    assert!(victims > 0 && victims < entries, "entries on the victim: {victims}");

    let history: Arc<Mutex<Vec<Op>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (history, stop, clients) = (history.clone(), stop.clone(), clients.clone());
            tokio::spawn(async move {
                let mut rng = w as u64 * 7919 + 17;
                let mut next = move |n: u64| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng % n
                };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let entry = next(entries as u64) as usize;
                    let group = entry.min(LISTS);
                    let client = &clients[next(2) as usize];
                    let write = next(10) == 0;
                    let (method, target) = match (write, entry < IDS) {
                        (false, _) => ("GET", path(entry)),
                        (true, true) => ("PUT", path(entry)),
                        (true, false) => ("POST", "/api/v1/tasks".to_string()),
                    };
                    let start = Instant::now();
                    let result = client.try_send(method, &target, Vec::new(), empty()).await;
                    let end = Instant::now();
                    let mut op = Op {
                        start,
                        end,
                        write,
                        group,
                        entry,
                        version: 0,
                        hit: false,
                        cache: String::new(),
                        failed: None,
                    };
                    match result {
                        Ok(r) if r.status == 200 => {
                            op.version = r.version();
                            op.hit = r.x_cache() == Some("HIT");
                            op.cache = r.x_cache().unwrap_or("-").to_string();
                        }
                        Ok(r) => op.failed = Some(format!("{method} {target}: {}", r.status)),
                        Err(e) => op.failed = Some(format!("{method} {target}: {e}")),
                    }
                    history.lock().unwrap().push(op);
                    tokio::time::sleep(Duration::from_millis(4)).await; // the load's pace
                }
            })
        })
        .collect();
    let ops = || history.lock().unwrap().len();
    eventually("ops before the kill", Duration::from_secs(30), || async {
        ops() >= 600
    })
    .await;
    let killed_at = Instant::now();
    cluster.kill(victim);
    // Health per primary: the victim down, the others up, in /metrics and
    // in admin health.
    let victim_name = format!("127.0.0.1:{victim}");
    eventually("the dead primary is reported down, alone", PATIENCE, || async {
        let states = proxies[0].gateway().store().shards();
        states.len() == 3 && states.iter().all(|(name, up)| *up == (*name != victim_name))
    })
    .await;
    let metrics = proxies[0].gateway().metrics().clone();
    metrics.set_store_health(proxies[0].gateway().store().as_ref());
    let text = metrics.encode();
    assert!(
        text.contains(&format!("cachegate_store_shard_up{{shard=\"{victim_name}\"}} 0")),
        "{text}"
    );
    assert_eq!(text.matches("cachegate_store_shard_up{").count(), 3);
    let health = clients[0]
        .send(
            "GET",
            "/api/v1/cache/health",
            &[("authorization", &format!("Bearer {}", crate::common::suite::TOKEN))],
            empty(),
        )
        .await
        .json();
    let down: Vec<&serde_json::Value> = health["shards"]
        .as_array()
        .expect("health lists the primaries")
        .iter()
        .filter(|s| s["up"] == false)
        .collect();
    assert_eq!(down.len(), 1, "{health}");
    assert_eq!(down[0]["shard"], victim_name.as_str());
    cluster.wait_failover(victim).await;
    let failed_over_at = Instant::now();
    let after = ops() + 600;
    eventually("ops after the failover", Duration::from_secs(60), || async {
        ops() >= after
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let history = std::mem::take(&mut *history.lock().unwrap());

    let failures: Vec<&String> = history.iter().filter_map(|o| o.failed.as_ref()).collect();
    // Reads never older than a write that completed before they started.
    let mut backwards = Vec::new();
    for read in history.iter().filter(|o| !o.write && o.failed.is_none()) {
        let floor = history
            .iter()
            .filter(|w| w.write && w.failed.is_none() && w.group == read.group && w.end < read.start)
            .map(|w| w.version)
            .max()
            .unwrap_or(1);
        if read.version < floor {
            backwards.push(format!(
                "{} read v{} ({}) at {:?} after the kill, v{floor} written before",
                path(read.entry),
                read.version,
                read.cache,
                read.start.saturating_duration_since(killed_at)
            ));
        }
    }
    let healthy_rate = |from: Instant, to: Instant| {
        let reads: Vec<&Op> = history
            .iter()
            .filter(|o| !o.write && o.failed.is_none() && !on_victim[o.entry] && o.start >= from && o.end <= to)
            .collect();
        let hits = reads.iter().filter(|o| o.hit).count();
        (hits as f64 / reads.len().max(1) as f64, reads.len())
    };
    let first = history.first().map(|o| o.start).unwrap();
    let (before, n_before) = healthy_rate(first, killed_at);
    let (during, n_during) = healthy_rate(killed_at, failed_over_at);
    let writes = history.iter().filter(|o| o.write).count();
    let hits = history.iter().filter(|o| o.hit).count();
    let mut outage_answers = std::collections::BTreeMap::new();
    for o in history
        .iter()
        .filter(|o| !o.write && !on_victim[o.entry] && o.start >= killed_at && o.end <= failed_over_at)
    {
        *outage_answers.entry(o.cache.clone()).or_insert(0) += 1;
    }
    let slowest = history.iter().map(|o| o.end - o.start).max().unwrap_or_default();
    println!(
        "tagged {tagged}: ops {}, writes {writes}, hits {hits}, failures {}, backwards {}, slowest {slowest:?}; \
         healthy-entry hit rate before {:.1}% ({n_before} reads), kill to failover {:.1}% ({n_during} reads, {:?}, {outage_answers:?})",
        history.len(),
        failures.len(),
        backwards.len(),
        before * 100.0,
        during * 100.0,
        failed_over_at - killed_at
    );
    assert!(failures.is_empty(), "client errors: {failures:?}");
    assert!(
        backwards.is_empty(),
        "reads older than a completed write: {backwards:#?}"
    );
    assert!(n_during > 0, "reads of healthy entries happened during the outage");
    if tagged {
        // Tag and pattern purges need the epoch's primary (and a pattern
        // purge every primary, a tag purge its index's): while one of them
        // is down, what a failed one covers goes uncached on every primary
        // until it is replayed (ARCHITECTURE.md). Correctness is asserted
        // above; the hit rate is reported, not held to the 10 % bound.
        return;
    }
    assert!(
        during >= before - 0.10,
        "healthy primaries' entries hit {:.1}% during the outage against {:.1}% before",
        during * 100.0,
        before * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_primary_loses_no_purge_and_the_other_primaries_keep_hitting() {
    failover_history(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_primary_with_tag_and_pattern_purges_in_flight_loses_none() {
    failover_history(true).await;
}

/// On a cluster too, a fill in flight whose key is purged and whose
/// tombstone the primary then evicts (`allkeys-lru` under memory pressure)
/// does not store: the reservation made at the lookup went with the record
/// (step 1 of the fill checks it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_evicted_under_allkeys_lru_never_lets_an_older_fill_store() {
    use crate::common::topology::cli;
    use crate::common::*;
    use std::sync::Arc;
    use std::time::Duration;
    let cluster = RedisCluster::start();
    let backend = Backend::start().await;
    let rules = r#"
[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"
ttl = 300

[[invalidate]]
name = "task-write"
methods = ["PUT"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{task_id}"]
"#;
    let text = format!(
        "[backend]\nurl = \"{}\"\ntimeout_ms = 5000\n\n[store]\nkind = \"redis\"\ntimeout_ms = 2000\n\n[redis]\nurl = \"{}\"\n\n{rules}",
        backend.url(),
        cluster.url()
    );
    let proxy = Proxy::start(&text).await;
    let client = Arc::new(Client::new(proxy.addr));
    let path = "/api/v1/tasks/evicted";
    backend.on("GET", path, Reply::new().delay(Duration::from_millis(1500)));
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.get(path).await })
    };
    eventually("the slow fill reached the backend", PATIENCE, || async {
        backend.count("GET", path) == 1
    })
    .await;
    backend.reset(path);
    assert_eq!(client.put(path).await.status, 200);
    // The community edition on a cluster: no key prefix.
    let key = "task:evicted";
    let owner = cluster
        .primary_ports()
        .into_iter()
        .find(|p| cli(*p, &["EXISTS", key]).trim() == "1")
        .expect("a primary holds the tombstone");
    let used: u64 = cli(owner, &["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    cli(owner, &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    cli(
        owner,
        &["CONFIG", "SET", "maxmemory", &(used + 4 * 1024 * 1024).to_string()],
    );
    let filler = "x".repeat(64 * 1024);
    let mut written = 0;
    // Keys in the tombstone's slot (a hash tag), so this primary takes them.
    while cli(owner, &["EXISTS", key]).trim() == "1" {
        assert!(written < 2000, "the primary never evicted the tombstone");
        let junk = format!("{{{key}}}junk:{written}");
        cli(owner, &["SET", &junk, &filler]);
        cli(owner, &["GET", &junk]);
        written += 1;
    }
    println!("tombstone evicted after {written} junk keys");
    cli(owner, &["CONFIG", "SET", "maxmemory", "0"]);
    let first = slow.await.unwrap();
    assert_eq!(first.version(), 1, "the slow answer was made before the write");
    let fields = cli(owner, &["HKEYS", key]);
    assert!(
        !fields.lines().any(|f| !f.is_empty() && !f.starts_with("__")),
        "the fill from before the purge stored: {fields:?}"
    );
    let next = client.get(path).await;
    assert_eq!(next.version(), 2);
    assert_eq!(next.x_cache(), Some("MISS"));
}

/// A primary that stops answering (SIGSTOP) rather than dying: after three
/// timeouts it counts as stalled on its own, its keys bypass at once (no
/// request waits the store timeout any more), and the other primaries'
/// keys keep hitting. The store timeout is 2 s here so that "at once" is
/// far from it on a loaded machine (the bound is the behaviour); the
/// cluster's node timeout is raised so that no failover comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_primary_is_bypassed_at_once_and_alone() {
    use crate::common::*;
    use std::time::{Duration, Instant};
    let cluster = RedisCluster::start();
    let backend = Backend::start().await;
    let text = format!(
        "[backend]\nurl = \"{}\"\ntimeout_ms = 5000\n\n[store]\nkind = \"redis\"\ntimeout_ms = 2000\n\n[redis]\nurl = \"{}\"\n\n{}",
        backend.url(),
        cluster.url(),
        crate::common::STD_RULES
    );
    let proxy = Proxy::start(&text).await;
    let client = Client::new(proxy.addr);
    let path = |i: usize| format!("/api/v1/tasks/st{i}");
    for i in 0..12 {
        eventually("cached", PATIENCE, || async {
            client.get(&path(i)).await.x_cache() == Some("HIT")
        })
        .await;
    }
    let victim = cluster.primary_ports()[0];
    let held = crate::common::topology::cli(victim, &["KEYS", "task:st*"]);
    let on_victim: Vec<bool> = (0..12)
        .map(|i| held.lines().any(|k| k == format!("task:st{i}")))
        .collect();
    assert!(on_victim.iter().any(|v| *v) && !on_victim.iter().all(|v| *v), "{held}");
    let victim_name = format!("127.0.0.1:{victim}");
    // No failover during the stall: this is about the stall alone.
    for n in &cluster.nodes {
        crate::common::topology::cli(n.port, &["CONFIG", "SET", "cluster-node-timeout", "60000"]);
    }
    let node = cluster.nodes.iter().find(|n| n.port == victim).unwrap();
    node.pause();
    let paused = Instant::now();
    // Requests for the victim's keys trip the rule (each waits at most the
    // timeout); the repair task's probe of its mark there counts too.
    let first_victim = on_victim.iter().position(|v| *v).unwrap();
    while proxy
        .gateway()
        .store()
        .shards()
        .iter()
        .any(|(n, up)| *n == victim_name && *up)
    {
        assert!(paused.elapsed() < PATIENCE, "the stalled primary is never marked down");
        assert_eq!(client.get(&path(first_victim)).await.status, 200, "fail open");
    }
    let detected = paused.elapsed();
    let mut slowest = Duration::ZERO;
    for (i, on) in on_victim.iter().enumerate() {
        let started = Instant::now();
        let r = client.get(&path(i)).await;
        let took = started.elapsed();
        assert_eq!(r.status, 200);
        if *on {
            slowest = slowest.max(took);
            assert_eq!(r.x_cache(), Some("BYPASS"), "{}", path(i));
        } else {
            assert_eq!(r.x_cache(), Some("HIT"), "{} is on a healthy primary", path(i));
        }
    }
    println!("stall detected after {detected:?}; the stalled primary's keys then took at most {slowest:?}");
    // The bound is the behaviour: well under the 2 s store timeout (half of
    // it, far above a loaded machine's noise).
    assert!(
        slowest < Duration::from_millis(1000),
        "a request waited on the stalled primary: {slowest:?}"
    );
    node.resume();
    cluster.wait_healthy();
}
