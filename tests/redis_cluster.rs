//! cachegate on a Redis Cluster (3 primaries, 3 replicas, spawned here):
//! the cache-behaviour suite, and a primary killed mid-run under steady
//! requests: every request succeeds (fail open), and caching resumes once
//! a replica is promoted.

mod common;

use common::topology::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_suite_on_a_cluster() {
    let cluster = RedisCluster::start();
    common::suite::run_all(&format!("url = \"{}\"", cluster.url())).await;
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
    let e = common::suite::Env::start(&format!("cluster = [{}]", seeds.join(", ")), "list:").await;
    for i in 0..30 {
        let p = format!("/api/v1/tasks/{i}");
        e.client.get(&p).await;
        e.until_hit(&p).await;
    }
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
    let e = common::suite::Env::start(&format!("url = \"{}\"", cluster.url()), "failover:").await;
    let paths = common::suite::fail_over_under_load(&e, 12, async {
        let victim = cluster.primary_ports()[0];
        cluster.kill(victim);
        cluster.wait_failover(victim).await;
    })
    .await;

    // Caching resumes: every path is a HIT again, after which the backend
    // sees no more requests; the records are in the cluster.
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
