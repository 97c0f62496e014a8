//! Redis deployments beyond one server, spawned from the `redis-server`
//! binary on free ports in temp dirs (`--save "" --appendonly no`), killed
//! on Drop:
//! - [`RedisCluster`]: 3 primaries with a replica each;
//! - [`RedisSentinel`]: a primary, its replica and one Sentinel (quorum 1,
//!   short down-after / failover timeouts);
//! - [`TlsRedis`]: one server on a TLS port only, with a CA, server and
//!   client certificates generated here (rcgen).

use super::{eventually, free_port, redis_server};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MISSING: &str =
    "redis-server or redis-cli is not installed (not found on PATH); install them with `apt-get install -y redis-server redis-tools`";

/// One spawned process, killed on Drop.
pub struct Proc {
    pub port: u16,
    child: Mutex<Option<Child>>,
}

impl Proc {
    pub fn spawn(port: u16, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    panic!("{MISSING}")
                }
                panic!("cannot run redis-server: {e}")
            });
        Proc {
            port,
            child: Mutex::new(Some(child)),
        }
    }

    /// SIGKILL.
    pub fn kill(&self) {
        let taken = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut c) = taken {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP (`pause`) or SIGCONT (`resume`): connections stay open,
    /// nothing answers meanwhile.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let pid = guard.as_ref().expect("the process runs").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    pub fn alive(&self) -> bool {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p port args...`; stdout, or "" when it fails.
pub fn cli(port: u16, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args);
    stdout_of(cmd)
}

/// A redis-cli run's stdout, or "" when it fails.
fn stdout_of(mut cmd: Command) -> String {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING}"),
        Err(_) => String::new(),
    }
}

fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50)); // the polling interval
    }
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && !taken.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

fn dir_for(root: &Path, port: u16) -> PathBuf {
    let d = root.join(port.to_string());
    std::fs::create_dir_all(&d).expect("node dir");
    d
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

/// 3 primaries, 3 replicas, `cluster-node-timeout 1000`.
pub struct RedisCluster {
    pub nodes: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ports = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_cluster_port(&ports);
            ports.push(port);
            let d = dir_for(dir.path(), port);
            let mut cmd = redis_server(port, &d);
            cmd.args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "1000"])
                .args(["--cluster-require-full-coverage", "no"])
                .args(["--cluster-replica-validity-factor", "0"]);
            nodes.push(Proc::spawn(port, &mut cmd));
        }
        for p in &ports {
            wait_for("cluster node answers PING", Duration::from_secs(10), || {
                cli(*p, &["ping"]).trim() == "PONG"
            });
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_healthy();
        cluster
    }

    /// Every live node says `cluster_state:ok`, sees 3 live primaries, and
    /// every replica is in sync with its primary.
    pub fn wait_healthy(&self) {
        wait_for("the cluster to be ok with 3 primaries", Duration::from_secs(30), || {
            self.live()
                .all(|n| cli(n.port, &["cluster", "info"]).contains("cluster_state:ok"))
                && self.primary_ports().len() == 3
        });
        wait_for("replicas in sync", Duration::from_secs(30), || {
            let primaries = self.primary_ports();
            self.live().filter(|n| !primaries.contains(&n.port)).all(|n| {
                let info = cli(n.port, &["info", "replication"]);
                info.contains("master_link_status:up")
            })
        });
    }

    fn live(&self) -> impl Iterator<Item = &Proc> {
        self.nodes.iter().filter(|n| n.alive())
    }

    /// `redis-cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis-cluster://{}", hosts.join(","))
    }

    /// Ports of the primaries not marked failed, as a live node sees them.
    pub fn primary_ports(&self) -> Vec<u16> {
        for n in self.live() {
            let text = cli(n.port, &["cluster", "nodes"]);
            if text.is_empty() {
                continue;
            }
            let mut out = Vec::new();
            for line in text.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 8 || !f[2].contains("master") || f[2].contains("fail") {
                    continue;
                }
                // A primary with no slots is not serving anything.
                if f.len() < 9 {
                    continue;
                }
                if let Some(port) = f[1].split('@').next().and_then(|a| a.rsplit(':').next()) {
                    if let Ok(p) = port.parse() {
                        out.push(p);
                    }
                }
            }
            out.sort();
            return out;
        }
        Vec::new()
    }

    pub fn kill(&self, port: u16) {
        if let Some(n) = self.nodes.iter().find(|n| n.port == port) {
            n.kill();
        }
    }

    /// An independent client (the `redis` crate's cluster client).
    pub async fn conn(&self) -> redis::cluster_async::ClusterConnection {
        let urls: Vec<String> = self.live().map(|n| format!("redis://127.0.0.1:{}", n.port)).collect();
        redis::cluster::ClusterClient::new(urls)
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("connect to the test cluster")
    }

    /// Keys matching `pattern` on every live primary (KEYS on each).
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut all = Vec::new();
        for port in self.primary_ports() {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(pattern)
                    .query_async(&mut c)
                    .await
                    .unwrap_or_default();
                all.extend(keys);
            }
        }
        all.sort();
        all
    }

    /// Waits until the cluster has 3 primaries again after a kill.
    pub async fn wait_failover(&self, killed: u16) {
        eventually(
            "a replica promoted in place of the killed primary",
            Duration::from_secs(30),
            || async {
                let p = self.primary_ports();
                p.len() == 3 && !p.contains(&killed)
            },
        )
        .await;
        eventually(
            "cluster_state ok after the failover",
            Duration::from_secs(30),
            || async {
                self.live()
                    .all(|n| cli(n.port, &["cluster", "info"]).contains("cluster_state:ok"))
            },
        )
        .await;
    }
}

// ---------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------

pub const SERVICE: &str = "cgprimary";

/// A primary, a replica of it, and one Sentinel monitoring them.
pub struct RedisSentinel {
    pub servers: Vec<Proc>,
    pub sentinel: Proc,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let dir = tempfile::tempdir().expect("temp dir");
        let primary_port = free_port();
        let mut replica_port = free_port();
        while replica_port == primary_port {
            replica_port = free_port();
        }
        let primary = Proc::spawn(
            primary_port,
            &mut redis_server(primary_port, &dir_for(dir.path(), primary_port)),
        );
        let mut cmd = redis_server(replica_port, &dir_for(dir.path(), replica_port));
        cmd.args(["--replicaof", "127.0.0.1", &primary_port.to_string()]);
        let replica = Proc::spawn(replica_port, &mut cmd);
        wait_for("the replica in sync", Duration::from_secs(20), || {
            cli(replica_port, &["info", "replication"]).contains("master_link_status:up")
        });

        let mut sentinel_port = free_port();
        while sentinel_port == primary_port || sentinel_port == replica_port {
            sentinel_port = free_port();
        }
        let sdir = dir_for(dir.path(), sentinel_port);
        let conf = sdir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {SERVICE} 1000\n\
                 sentinel failover-timeout {SERVICE} 3000\n\
                 sentinel parallel-syncs {SERVICE} 1\n",
                sdir.display()
            ),
        )
        .expect("write sentinel.conf");
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel");
        let sentinel = Proc::spawn(sentinel_port, &mut cmd);
        let s = RedisSentinel {
            servers: vec![primary, replica],
            sentinel,
            _dir: dir,
        };
        wait_for("the sentinel to know the replica", Duration::from_secs(30), || {
            let text = cli(sentinel_port, &["sentinel", "replicas", SERVICE]);
            text.contains(&replica_port.to_string()) && !text.contains("disconnected") && !text.contains("s_down")
        });
        s
    }

    pub fn url(&self) -> String {
        format!("redis-sentinel://127.0.0.1:{}/{SERVICE}", self.sentinel.port)
    }

    /// The primary's port as the Sentinel names it.
    pub fn primary_port(&self) -> Option<u16> {
        let text = cli(self.sentinel.port, &["sentinel", "get-master-addr-by-name", SERVICE]);
        text.lines().nth(1).and_then(|p| p.trim().parse().ok())
    }

    /// Kills the current primary; returns its port.
    pub fn kill_primary(&self) -> u16 {
        let port = self.primary_port().expect("sentinel names a primary");
        self.servers
            .iter()
            .find(|s| s.port == port)
            .expect("the primary is one of ours")
            .kill();
        port
    }

    /// Waits until the Sentinel names another primary, and it answers as one.
    pub async fn wait_failover(&self, killed: u16) {
        eventually(
            "the sentinel to promote the replica",
            Duration::from_secs(40),
            || async {
                match self.primary_port() {
                    Some(p) if p != killed => cli(p, &["role"]).starts_with("master"),
                    _ => false,
                }
            },
        )
        .await;
    }

    /// An independent client on the current primary.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let port = self.primary_port().expect("a primary");
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the sentinel's primary")
    }
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// One server on a TLS port only (`--port 0`).
pub struct TlsRedis {
    pub server: Proc,
    pub ca_file: PathBuf,
    /// A CA that signed nothing here: verification with it must fail.
    pub other_ca_file: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    /// `require_client_cert`: `--tls-auth-clients yes`.
    pub fn start(require_client_cert: bool) -> TlsRedis {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_of = |name: &str| {
            let key = KeyPair::generate().expect("ca key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).expect("self-signed CA");
            (cert, key)
        };
        let (ca, ca_key) = ca_of("cachegate test CA");
        let (other_ca, _) = ca_of("some other CA");
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().expect("leaf key");
            let cert = CertificateParams::new(names)
                .expect("leaf params")
                .signed_by(&key, &ca, &ca_key)
                .expect("sign leaf");
            (cert, key)
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let (client_cert, client_key) = leaf(vec!["cachegate-client".into()]);
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write pem");
            p
        };
        let ca_file = write("ca.pem", ca.pem());
        let other_ca_file = write("other-ca.pem", other_ca.pem());
        let server_cert_file = write("server.pem", server_cert.pem());
        let server_key_file = write("server.key", server_key.serialize_pem());
        let client_cert_file = write("client.pem", client_cert.pem());
        let client_key_file = write("client.key", client_key.serialize_pem());

        let port = free_port();
        let mut cmd = redis_server(0, dir.path());
        cmd.args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&server_cert_file)
            .arg("--tls-key-file")
            .arg(&server_key_file)
            .arg("--tls-ca-cert-file")
            .arg(&ca_file)
            .args(["--tls-auth-clients", if require_client_cert { "yes" } else { "no" }]);
        let server = Proc::spawn(port, &mut cmd);
        let t = TlsRedis {
            server,
            ca_file,
            other_ca_file,
            client_cert: client_cert_file,
            client_key: client_key_file,
            _dir: dir,
        };
        wait_for("the TLS redis to answer PING", Duration::from_secs(10), || {
            t.cli(&["ping"]).trim() == "PONG"
        });
        t
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.server.port)
    }

    /// `redis-cli --tls` with the CA and the client certificate.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.server.port.to_string(),
            "--tls",
            "--cacert",
        ])
        .arg(&self.ca_file)
        .arg("--cert")
        .arg(&self.client_cert)
        .arg("--key")
        .arg(&self.client_key)
        .args(args);
        stdout_of(cmd)
    }
}
