//! Consistency of the deployment files: `docker-compose.yml`, `Dockerfile`,
//! `proxy.toml` and the load balancer configs under `deploy/` must agree on
//! ports, service names and paths. These tests read the real files, so
//! editing one of them without the others fails here.
//!
//! The default stack: the reference Redis, the backend, two cachegate
//! replicas sharing that Redis and an nginx `lb` in front of both. The
//! `cluster` profile: a six-node Redis Cluster, its one-shot init, two more
//! replicas on it and their own `lb-cluster`.

use cachegate::config::{Config, Overrides, RedisTopology, StoreKind};
use serde_yaml::{Mapping, Value};
use std::collections::HashMap;
use std::path::PathBuf;

const REDIS: &str = "redis-fastapi";
const BACKEND: &str = "backend";
/// The replicas of the default stack, sharing the one Redis.
const REPLICAS: [&str; 2] = ["cachegate-1", "cachegate-2"];
const LB: &str = "lb";
const LB_CONF: &str = "deploy/lb.conf";

const CLUSTER: &str = "cluster";
const CLUSTER_NODES: [&str; 6] = [
    "redis-node-1",
    "redis-node-2",
    "redis-node-3",
    "redis-node-4",
    "redis-node-5",
    "redis-node-6",
];
const CLUSTER_INIT: &str = "redis-cluster-init";
const CLUSTER_REPLICAS: [&str; 2] = ["cachegate-cluster-1", "cachegate-cluster-2"];
const CLUSTER_LB: &str = "lb-cluster";
const CLUSTER_LB_CONF: &str = "deploy/lb-cluster.conf";

/// Every cachegate service, in both stacks.
fn all_replicas() -> impl Iterator<Item = &'static str> {
    REPLICAS.into_iter().chain(CLUSTER_REPLICAS)
}

fn project_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn read(name: &str) -> String {
    let path = project_file(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The compose file with its `<<` merge keys applied, as compose reads it.
fn compose() -> Value {
    let mut v: Value = serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is not valid YAML");
    v.apply_merge().expect("docker-compose.yml: bad merge key");
    v
}

/// proxy.toml loaded with a service's compose environment, its Docker
/// secret (`/run/secrets/NAME`) replaced by a file holding a valid token line.
fn load_with_env(service: &str, env: &HashMap<String, String>) -> Config {
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    let line = format!("ops:{}:read\n", "ab".repeat(32));
    std::fs::write(secret.path(), line).expect("write secret");
    let lookup = |name: &str| {
        env.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| match v.strip_prefix("/run/secrets/") {
                Some(_) => secret.path().display().to_string(),
                None => v.clone(),
            })
    };
    Config::from_toml(&read("proxy.toml"), "proxy.toml", &lookup, &Overrides::default())
        .unwrap_or_else(|e| panic!("{service}: proxy.toml with the compose environment: {e}"))
}

fn proxy_toml() -> Config {
    Config::from_toml_str(&read("proxy.toml")).unwrap_or_else(|e| panic!("proxy.toml does not load: {e}"))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Mapping {
    compose["services"][name]
        .as_mapping()
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// A service's environment, in either of compose's forms (list of `K=V`
/// or a mapping).
fn environment(svc: &Mapping) -> HashMap<String, String> {
    match svc.get("environment") {
        None => HashMap::new(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                let s = str_of(item);
                let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| (str_of(k), if v.is_null() { String::new() } else { str_of(v) }))
            .collect(),
        Some(other) => panic!("environment must be a list or a mapping, got {other:?}"),
    }
}

/// Published ports as (host port, container port), short or long syntax.
fn ports(svc: &Mapping) -> Vec<(Option<u16>, u16)> {
    let Some(list) = svc.get("ports") else {
        return Vec::new();
    };
    list.as_sequence()
        .expect("ports must be a list")
        .iter()
        .map(|p| match p {
            Value::Mapping(m) => {
                let target = str_of(&m[&Value::from("target")]).parse().expect("ports target");
                let published = m.get("published").map(|v| str_of(v).parse().expect("ports published"));
                (published, target)
            }
            other => {
                let s = str_of(other);
                let s = s.split('/').next().unwrap_or_default(); // "8080:8080/tcp"
                let parts: Vec<&str> = s.rsplitn(3, ':').collect(); // [container, host, ip]
                let container = parts[0].parse().unwrap_or_else(|_| panic!("bad port {s:?}"));
                let host = parts
                    .get(1)
                    .map(|h| h.parse().unwrap_or_else(|_| panic!("bad port {s:?}")));
                (host, container)
            }
        })
        .collect()
}

/// Ports a service offers inside the network: `expose` and the container
/// side of `ports`.
fn container_ports(svc: &Mapping) -> Vec<u16> {
    let mut out: Vec<u16> = ports(svc).into_iter().map(|(_, c)| c).collect();
    if let Some(expose) = svc.get("expose") {
        for e in expose.as_sequence().expect("expose must be a list") {
            let s = str_of(e);
            out.push(
                s.split('/')
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .unwrap_or_else(|_| panic!("bad expose {s:?}")),
            );
        }
    }
    out
}

/// Volume mounts as (source, target, read-only), short or long syntax.
fn volumes(svc: &Mapping) -> Vec<(String, String, bool)> {
    let Some(list) = svc.get("volumes") else {
        return Vec::new();
    };
    list.as_sequence()
        .expect("volumes must be a list")
        .iter()
        .map(|v| match v {
            Value::Mapping(m) => (
                str_of(&m[&Value::from("source")]),
                str_of(&m[&Value::from("target")]),
                m.get("read_only").and_then(Value::as_bool).unwrap_or(false),
            ),
            other => {
                let s = str_of(other);
                let parts: Vec<&str> = s.split(':').collect();
                assert!(parts.len() >= 2, "volume {s:?} has no target");
                let ro = parts.get(2).is_some_and(|opts| opts.split(',').any(|o| o == "ro"));
                (parts[0].to_string(), parts[1].to_string(), ro)
            }
        })
        .collect()
}

/// `scheme://host:port/...` split into (scheme, host, port).
fn url_parts(url: &str) -> (String, String, Option<u16>) {
    let (scheme, rest) = url.split_once("://").unwrap_or_else(|| panic!("{url:?} is not a URL"));
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((host, port)) => (
            scheme.to_string(),
            host.to_string(),
            Some(port.parse().unwrap_or_else(|_| panic!("bad port in {url:?}"))),
        ),
        None => (scheme.to_string(), authority.to_string(), None),
    }
}

/// The JSON-array form of a Dockerfile instruction (`CMD ["a", "b"]`); the
/// last one counts, as in Docker.
fn dockerfile_exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .map(str::trim)
        .rev()
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(instruction))
        })
        .unwrap_or_else(|| panic!("Dockerfile has no {instruction}"));
    let args = line[instruction.len()..].trim();
    serde_json::from_str(args).unwrap_or_else(|e| panic!("Dockerfile {instruction} is not in JSON form ({e}): {line}"))
}

#[test]
fn the_services_exist() {
    let compose = compose();
    let services = compose["services"]
        .as_mapping()
        .expect("docker-compose.yml has no services");
    let mut expected = vec![REDIS, BACKEND, LB, CLUSTER_INIT, CLUSTER_LB];
    expected.extend(REPLICAS);
    expected.extend(CLUSTER_NODES);
    expected.extend(CLUSTER_REPLICAS);
    for name in expected {
        assert!(services.contains_key(name), "service {name:?} missing");
    }
    assert!(
        !services.contains_key("cachegate"),
        "the single cachegate service became cachegate-1 and cachegate-2"
    );
    assert!(
        compose["volumes"]
            .as_mapping()
            .is_some_and(|v| v.contains_key("redis_data")),
        "the named volume redis_data is not declared"
    );
}

#[test]
fn redis_is_the_reference_service() {
    let compose = compose();
    let redis = service(&compose, REDIS);
    let image = redis.get("image").map(str_of).unwrap_or_default();
    assert!(image.starts_with("redis:7-alpine@sha256:"), "{image}");
    let command = match redis.get("command").expect("redis has no command") {
        Value::Sequence(items) => items.iter().map(str_of).collect::<Vec<_>>().join(" "),
        other => str_of(other),
    };
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"redis-server"), "{command}");
    let i = words
        .iter()
        .position(|w| *w == "--appendonly")
        .expect("no --appendonly");
    assert_eq!(words.get(i + 1), Some(&"yes"), "{command}");
    assert_eq!(ports(redis), vec![(Some(6380), 6379)]);
    // Published on loopback only: Redis holds the scope secret.
    assert_eq!(str_of(&redis["ports"][0]), "127.0.0.1:6380:6379");
    assert!(
        volumes(redis)
            .iter()
            .any(|(src, dst, _)| src == "redis_data" && dst == "/data"),
        "redis_data is not mounted at /data"
    );

    let hc = redis
        .get("healthcheck")
        .and_then(Value::as_mapping)
        .expect("redis has no healthcheck");
    assert_eq!(healthcheck_test(redis), ["CMD", "redis-cli", "ping"]);
    assert_eq!(str_of(&hc["interval"]), "10s");
    assert_eq!(str_of(&hc["timeout"]), "5s");
    assert_eq!(str_of(&hc["retries"]), "5");
    assert!(
        profiles(redis).is_empty(),
        "the reference Redis is in the default stack"
    );
}

/// A service's `depends_on` as (service, condition); the list form has no
/// condition.
fn depends_on(svc: &Mapping) -> Vec<(String, Option<String>)> {
    match svc.get("depends_on") {
        None => Vec::new(),
        Some(Value::Sequence(items)) => items.iter().map(|i| (str_of(i), None)).collect(),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| (str_of(k), v.get("condition").map(str_of)))
            .collect(),
        Some(other) => panic!("depends_on must be a list or a mapping, got {other:?}"),
    }
}

fn condition(svc: &Mapping, on: &str) -> Option<String> {
    depends_on(svc)
        .into_iter()
        .find(|(name, _)| name == on)
        .and_then(|(_, c)| c)
}

fn profiles(svc: &Mapping) -> Vec<String> {
    svc.get("profiles")
        .map(|p| {
            p.as_sequence()
                .expect("profiles must be a list")
                .iter()
                .map(str_of)
                .collect()
        })
        .unwrap_or_default()
}

/// A healthcheck's `test`, as a list (the string form is `CMD-SHELL`).
fn healthcheck_test(svc: &Mapping) -> Vec<String> {
    let hc = svc
        .get("healthcheck")
        .and_then(Value::as_mapping)
        .expect("no healthcheck");
    match &hc["test"] {
        Value::Sequence(items) => items.iter().map(str_of).collect(),
        other => vec!["CMD-SHELL".to_string(), str_of(other)],
    }
}

fn command_words(svc: &Mapping) -> Vec<String> {
    match svc.get("command").expect("no command") {
        Value::Sequence(items) => items.iter().map(str_of).collect::<Vec<_>>().join(" "),
        other => str_of(other),
    }
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

#[test]
fn every_replica_waits_for_a_healthy_redis() {
    let compose = compose();
    for name in REPLICAS {
        let cg = service(&compose, name);
        assert_eq!(
            condition(cg, REDIS).as_deref(),
            Some("service_healthy"),
            "{name} must wait for redis to be healthy"
        );
        assert!(
            depends_on(cg).iter().any(|(d, _)| d == BACKEND),
            "{name} must depend on the backend"
        );
    }
    for name in CLUSTER_REPLICAS {
        let cg = service(&compose, name);
        assert_eq!(
            condition(cg, CLUSTER_INIT).as_deref(),
            Some("service_completed_successfully"),
            "{name} must wait until the cluster is formed"
        );
        assert!(
            depends_on(cg).iter().any(|(d, _)| d == BACKEND),
            "{name} must depend on the backend"
        );
        assert!(
            depends_on(cg).iter().all(|(d, _)| d != REDIS),
            "{name} runs on the cluster, not the single Redis"
        );
    }
}

#[test]
fn the_lb_publishes_the_port_proxy_toml_listens_on() {
    let compose = compose();
    let listen_port = proxy_toml().server.listen.port();
    let lb = service(&compose, LB);
    let published = ports(lb);
    assert_eq!(
        published,
        vec![(Some(listen_port), lb_listen_port(&read(LB_CONF)))],
        "the lb publishes {published:?}; the documented port is {listen_port}"
    );
    for name in all_replicas() {
        let cg = service(&compose, name);
        // Only the load balancers publish the proxy port; a replica may
        // publish its admin port on the host's loopback only.
        let admin_port = environment(cg)
            .get("CACHEGATE_ADMIN_LISTEN")
            .map(|a| a.parse::<std::net::SocketAddr>().expect("admin listen").port());
        for (_, container) in ports(cg) {
            assert_eq!(Some(container), admin_port, "{name} publishes {container}");
        }
        for raw in cg.get("ports").and_then(Value::as_sequence).into_iter().flatten() {
            assert!(
                str_of(raw).starts_with("127.0.0.1:"),
                "{name} publishes {raw:?} beyond loopback"
            );
        }
        assert!(
            container_ports(cg).contains(&listen_port),
            "{name} must expose {listen_port}"
        );
        // The environment overrides [server] listen; it must agree, and
        // listen on every interface of the container.
        let env = environment(cg);
        let listen = env
            .get("CACHEGATE_LISTEN")
            .unwrap_or_else(|| panic!("{name}: CACHEGATE_LISTEN is not set"));
        let addr: std::net::SocketAddr = listen.parse().expect("CACHEGATE_LISTEN is not an address");
        assert!(
            addr.ip().is_unspecified(),
            "{name}: CACHEGATE_LISTEN {listen} is not reachable from outside the container"
        );
        assert_eq!(addr.port(), listen_port, "{name}");
    }
    // And the image exposes it.
    let dockerfile = read("Dockerfile");
    let exposed: Vec<String> = dockerfile
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|p| {
            p.split_whitespace()
                .map(|s| s.split('/').next().unwrap_or_default().to_string())
        })
        .collect();
    assert!(
        exposed.contains(&listen_port.to_string()),
        "Dockerfile EXPOSE {exposed:?}"
    );
}

#[test]
fn published_host_ports_do_not_clash() {
    // With `--profile cluster` the default services run too: every host
    // port must be unique across both stacks.
    let compose = compose();
    let mut seen: HashMap<u16, String> = HashMap::new();
    for (name, svc) in compose["services"].as_mapping().expect("services") {
        let name = str_of(name);
        let svc = svc.as_mapping().expect("service");
        for (host, _) in ports(svc) {
            let host = host.unwrap_or_else(|| panic!("{name} publishes a random host port; name one"));
            if let Some(other) = seen.insert(host, name.clone()) {
                panic!("host port {host} is published by both {other} and {name}");
            }
        }
    }
    assert!(seen.contains_key(&8080), "nothing publishes 8080: {seen:?}");
    let cluster_lb = ports(service(&compose, CLUSTER_LB));
    assert_eq!(cluster_lb.len(), 1, "{CLUSTER_LB} publishes {cluster_lb:?}");
    assert_eq!(cluster_lb[0].1, lb_listen_port(&read(CLUSTER_LB_CONF)));
}

#[test]
fn redis_url_points_at_the_redis_service() {
    let compose = compose();
    for name in REPLICAS {
        let env = environment(service(&compose, name));
        let url = env
            .get("REDIS_URL")
            .unwrap_or_else(|| panic!("{name}: REDIS_URL is not set"));
        let (scheme, host, port) = url_parts(url);
        assert_eq!(scheme, "redis", "{name}");
        assert_eq!(host, REDIS, "{name}: REDIS_URL must name the redis service");
        // The port the redis container listens on (the container side of its
        // published port), not the host's 6380.
        let redis_ports = container_ports(service(&compose, REDIS));
        assert_eq!(port.unwrap_or(6379), 6379, "{name}");
        assert!(redis_ports.contains(&6379), "redis container ports {redis_ports:?}");
    }
}

#[test]
fn the_replicas_share_one_redis_and_one_config() {
    let compose = compose();
    for group in [REPLICAS, CLUSTER_REPLICAS] {
        let envs: Vec<_> = group.iter().map(|n| environment(service(&compose, n))).collect();
        for key in [
            "REDIS_URL",
            "REDIS_DB",
            "REDIS_PASSWORD",
            "CACHEGATE_BACKEND",
            "CACHEGATE_LISTEN",
        ] {
            assert_eq!(
                envs[0].get(key),
                envs[1].get(key),
                "{} and {} disagree on {key}",
                group[0],
                group[1]
            );
        }
        // Nothing else in the environment may tell them apart either (a
        // key prefix, an edition, a scope secret of their own).
        assert_eq!(envs[0], envs[1], "{group:?} run with different environments");
        let mounts: Vec<_> = group.iter().map(|n| volumes(service(&compose, n))).collect();
        assert_eq!(mounts[0], mounts[1], "{group:?} mount different files");
        let images: Vec<_> = group
            .iter()
            .map(|n| service(&compose, n).get("image").map(str_of))
            .collect();
        assert!(images[0].is_some(), "{} names no image", group[0]);
        assert_eq!(images[0], images[1], "{group:?} run different images");
    }
    // What the default replicas run with: one Redis, one DB, one key prefix.
    let configs: Vec<Config> = REPLICAS
        .iter()
        .map(|name| {
            let env = environment(service(&compose, name));
            load_with_env(name, &env)
        })
        .collect();
    // The image is built once: one service builds it, every cachegate and
    // the default backend run it by name.
    let services = compose["services"].as_mapping().expect("services");
    let builders: Vec<String> = services
        .iter()
        .filter(|(_, svc)| svc.get("build").is_some())
        .map(|(n, _)| str_of(n))
        .collect();
    assert_eq!(
        builders,
        [REPLICAS[0]],
        "exactly one service builds the cachegate image"
    );
    let image = service(&compose, REPLICAS[0]).get("image").map(str_of).expect("image");
    for name in all_replicas() {
        assert_eq!(
            service(&compose, name).get("image").map(str_of).as_ref(),
            Some(&image),
            "{name}"
        );
    }
    let backend_image = service(&compose, BACKEND).get("image").map(str_of).unwrap_or_default();
    assert_eq!(
        backend_image,
        format!("${{BACKEND_IMAGE:-{image}}}"),
        "the backend runs the cachegate image unless BACKEND_IMAGE is set"
    );
    let store = |c: &Config| {
        let r = c.redis.as_ref().expect("no redis config");
        (r.url.clone(), r.db, c.cache.key_prefix.clone())
    };
    assert_eq!(store(&configs[0]), store(&configs[1]));
}

#[test]
fn backend_url_points_at_the_backend_service() {
    let compose = compose();
    for name in all_replicas() {
        let env = environment(service(&compose, name));
        let url = env
            .get("CACHEGATE_BACKEND")
            .unwrap_or_else(|| panic!("{name}: CACHEGATE_BACKEND is not set"));
        let (scheme, host, port) = url_parts(url);
        assert_eq!(scheme, "http");
        assert_eq!(host, BACKEND, "{name}: CACHEGATE_BACKEND must name the backend service");
        let backend_ports = container_ports(service(&compose, BACKEND));
        let port = port.unwrap_or(80);
        assert!(
            backend_ports.contains(&port),
            "{name}: CACHEGATE_BACKEND uses port {port}, the backend exposes {backend_ports:?}"
        );
    }
}

#[test]
fn proxy_toml_is_mounted_where_the_image_reads_it() {
    let dockerfile = read("Dockerfile");
    assert_eq!(dockerfile_exec_form(&dockerfile, "ENTRYPOINT"), ["cachegate"]);
    let cmd = dockerfile_exec_form(&dockerfile, "CMD");
    let i = cmd.iter().position(|a| a == "--config").expect("CMD has no --config");
    let config_path = cmd.get(i + 1).expect("--config without a path");

    let compose = compose();
    for name in all_replicas() {
        let mounts = volumes(service(&compose, name));
        let mount = mounts
            .iter()
            .find(|(_, target, _)| target == config_path)
            .unwrap_or_else(|| panic!("{name}: nothing is mounted at {config_path}; mounts: {mounts:?}"));
        let source = mount.0.trim_start_matches("./");
        assert_eq!(source, "proxy.toml", "the project's proxy.toml must be the one mounted");
        assert!(project_file(source).is_file());
        assert!(mount.2, "{name}: the config should be mounted read-only");
    }
}

#[test]
fn proxy_toml_with_the_compose_environment_targets_the_services() {
    // What cachegate actually runs with inside the container: proxy.toml
    // plus the compose environment.
    let compose = compose();
    for name in REPLICAS {
        let env = environment(service(&compose, name));
        let config = load_with_env(name, &env);
        assert_eq!(config.store, StoreKind::Redis);
        let redis = config.redis.as_ref().expect("no redis config");
        let (_, host, port) = url_parts(&redis.url);
        assert_eq!((host.as_str(), port.unwrap_or(6379)), (REDIS, 6379));
        assert_eq!(config.backend.url.host(), Some(BACKEND));
        assert!(container_ports(service(&compose, name)).contains(&config.server.listen.port()));
    }
}

// ---------------------------------------------------------------------------
// The load balancers (nginx configs under deploy/)
// ---------------------------------------------------------------------------

/// The nginx config's statements, comments dropped, as word lists; `{` and
/// `}` are statements of their own.
fn nginx_statements(conf: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for line in conf.lines() {
        let line = line.split('#').next().unwrap_or_default();
        for word in line
            .replace('{', " { ")
            .replace('}', " } ")
            .replace(';', " ; ")
            .split_whitespace()
        {
            match word {
                ";" => out.push(std::mem::take(&mut current)),
                "{" | "}" => {
                    current.push(word.to_string());
                    out.push(std::mem::take(&mut current));
                }
                w => current.push(w.to_string()),
            }
        }
    }
    assert!(current.is_empty(), "unterminated statement {current:?}");
    out
}

/// `upstream NAME { server host:port ...; }` blocks: name -> [(host, port)].
fn nginx_upstreams(conf: &str) -> HashMap<String, Vec<(String, u16)>> {
    let mut out: HashMap<String, Vec<(String, u16)>> = HashMap::new();
    let mut inside: Option<String> = None;
    let mut depth = 0;
    for st in nginx_statements(conf) {
        match st.last().map(String::as_str) {
            Some("{") => {
                depth += 1;
                if st.first().map(String::as_str) == Some("upstream") {
                    inside = Some(st[1].clone());
                }
            }
            Some("}") => {
                depth -= 1;
                if depth == 0 {
                    inside = None;
                }
            }
            _ => {
                if let (Some(name), Some("server")) = (&inside, st.first().map(String::as_str)) {
                    let (host, port) = st[1].rsplit_once(':').expect("upstream server needs host:port");
                    out.entry(name.clone())
                        .or_default()
                        .push((host.to_string(), port.parse().expect("upstream port")));
                }
            }
        }
    }
    assert_eq!(depth, 0, "unbalanced braces");
    out
}

/// The port of the `listen` directive of the config's one server block.
fn lb_listen_port(conf: &str) -> u16 {
    let listens: Vec<u16> = nginx_statements(conf)
        .into_iter()
        .filter(|st| st.first().map(String::as_str) == Some("listen"))
        .map(|st| {
            let addr = &st[1];
            addr.rsplit(':').next().unwrap_or(addr).parse().expect("listen port")
        })
        .collect();
    assert_eq!(listens.len(), 1, "expected one listen directive, got {listens:?}");
    listens[0]
}

fn proxy_pass_targets(conf: &str) -> Vec<String> {
    nginx_statements(conf)
        .into_iter()
        .filter(|st| st.first().map(String::as_str) == Some("proxy_pass"))
        .map(|st| st[1].trim_start_matches("http://").to_string())
        .collect()
}

#[test]
fn each_lb_balances_over_both_of_its_replicas() {
    let compose = compose();
    let listen_port = proxy_toml().server.listen.port();
    for (lb, conf_path, replicas) in [(LB, LB_CONF, REPLICAS), (CLUSTER_LB, CLUSTER_LB_CONF, CLUSTER_REPLICAS)] {
        let svc = service(&compose, lb);
        assert!(
            svc.get("image").map(str_of).is_some_and(|i| i.starts_with("nginx:")),
            "{lb} should run nginx"
        );
        // The config file is the one mounted where nginx reads it.
        let mounts = volumes(svc);
        let mount = mounts
            .iter()
            .find(|(src, _, _)| src.trim_start_matches("./") == conf_path)
            .unwrap_or_else(|| panic!("{lb} does not mount {conf_path}: {mounts:?}"));
        assert!(
            mount.1.starts_with("/etc/nginx/conf.d/") && mount.1.ends_with(".conf"),
            "{lb} mounts {conf_path} at {}, which nginx does not read",
            mount.1
        );
        assert!(mount.2, "{lb}: mount {conf_path} read-only");

        let conf = read(conf_path);
        let upstreams = nginx_upstreams(&conf);
        let targets = proxy_pass_targets(&conf);
        assert_eq!(
            targets.len(),
            1,
            "{conf_path}: one proxy_pass expected, got {targets:?}"
        );
        let servers = upstreams
            .get(&targets[0])
            .unwrap_or_else(|| panic!("{conf_path}: proxy_pass names no upstream block ({upstreams:?})"));
        let mut hosts: Vec<&str> = servers.iter().map(|(h, _)| h.as_str()).collect();
        hosts.sort();
        assert_eq!(hosts, replicas, "{conf_path} must balance over exactly {replicas:?}");
        for (host, port) in servers {
            assert_eq!(*port, listen_port, "{conf_path}: {host} listens on {listen_port}");
            assert!(container_ports(service(&compose, host)).contains(port));
        }
        // The lb starts once both replicas are ready.
        for r in replicas {
            assert_eq!(
                condition(svc, r).as_deref(),
                Some("service_healthy"),
                "{lb} must wait for {r} to be healthy"
            );
        }
        // It publishes the port it listens on.
        assert!(ports(svc).iter().any(|(_, c)| *c == lb_listen_port(&conf)));
    }
}

#[test]
fn long_running_services_have_healthchecks() {
    let compose = compose();
    let listen_port = proxy_toml().server.listen.port();
    for name in all_replicas() {
        // The image has no curl; the check asks /readyz on the admin
        // listener (health lives there when it has its own), so a replica
        // still warming its cache is not sent traffic.
        let env = environment(service(&compose, name));
        let listen_port = env.get("CACHEGATE_ADMIN_LISTEN").map_or(listen_port, |a| {
            a.parse::<std::net::SocketAddr>().expect("admin listen").port()
        });
        let test = healthcheck_test(service(&compose, name)).join(" ");
        assert!(
            test.contains("/readyz"),
            "{name}: healthcheck {test:?} should ask /readyz"
        );
        assert!(
            test.contains(&format!("127.0.0.1/{listen_port}")) || test.contains(&format!(":{listen_port}/")),
            "{name}: healthcheck {test:?} should ask port {listen_port}"
        );
    }
    for name in [LB, CLUSTER_LB, BACKEND, REDIS] {
        let test = healthcheck_test(service(&compose, name));
        assert!(!test.is_empty(), "{name} has an empty healthcheck");
    }
    for (i, name) in CLUSTER_NODES.iter().enumerate() {
        let test = healthcheck_test(service(&compose, name));
        let port = (7000 + i).to_string();
        assert!(
            test.iter().any(|w| w == "redis-cli") && test.contains(&port),
            "{name}: healthcheck {test:?} should ping port {port}"
        );
    }
}

// ---------------------------------------------------------------------------
// The cluster profile
// ---------------------------------------------------------------------------

#[test]
fn the_cluster_services_are_only_in_the_cluster_profile() {
    let compose = compose();
    let mut in_profile = vec![CLUSTER_INIT, CLUSTER_LB];
    in_profile.extend(CLUSTER_NODES);
    in_profile.extend(CLUSTER_REPLICAS);
    let services = compose["services"].as_mapping().expect("services");
    for (name, svc) in services {
        let name = str_of(name);
        let svc = svc.as_mapping().expect("service");
        let profiles = profiles(svc);
        if in_profile.contains(&name.as_str()) {
            assert_eq!(profiles, [CLUSTER], "{name} belongs to the cluster profile only");
        } else {
            assert!(profiles.is_empty(), "{name} is in the default stack, not {profiles:?}");
            // A plain `docker compose up` must not need a profile's service.
            for (dep, _) in depends_on(svc) {
                assert!(
                    !in_profile.contains(&dep.as_str()),
                    "{name} (default stack) depends on {dep} (cluster profile)"
                );
            }
        }
    }
}

/// `host:port` of each cluster node, from its service's command.
fn cluster_node_addrs(compose: &Value) -> Vec<String> {
    CLUSTER_NODES
        .iter()
        .map(|name| {
            let svc = service(compose, name);
            assert!(
                svc.get("image").map(str_of).is_some_and(|i| i.starts_with("redis:7")),
                "{name} should run redis:7"
            );
            let words = command_words(svc);
            assert_eq!(words.first().map(String::as_str), Some("redis-server"), "{name}");
            let arg = |flag: &str| {
                let i = words
                    .iter()
                    .position(|w| w == flag)
                    .unwrap_or_else(|| panic!("{name}: no {flag}"));
                words.get(i + 1).cloned().unwrap_or_default()
            };
            assert_eq!(arg("--cluster-enabled"), "yes", "{name}");
            let port: u16 = arg("--port").parse().expect("--port");
            assert!(container_ports(svc).contains(&port), "{name} must expose {port}");
            assert!(ports(svc).is_empty(), "{name}: cluster nodes stay inside the network");
            format!("{name}:{port}")
        })
        .collect()
}

#[test]
fn the_cluster_is_formed_from_all_six_nodes() {
    let compose = compose();
    let nodes = cluster_node_addrs(&compose);
    let init = service(&compose, CLUSTER_INIT);
    let words = command_words(init);
    let create = words
        .iter()
        .position(|w| w == "--cluster")
        .filter(|i| words.get(i + 1).map(String::as_str) == Some("create"))
        .expect("the init container runs no redis-cli --cluster create");
    assert_eq!(words[..create].last().map(String::as_str), Some("redis-cli"));
    let named: Vec<&String> = words[create + 2..]
        .iter()
        .take_while(|w| !w.starts_with("--"))
        .collect();
    assert_eq!(
        named,
        nodes.iter().collect::<Vec<_>>(),
        "cluster create must list every node"
    );
    let i = words
        .iter()
        .position(|w| w == "--cluster-replicas")
        .expect("no --cluster-replicas");
    assert_eq!(words[i + 1], "1", "three primaries with a replica each");
    assert!(
        words.iter().any(|w| w == "--cluster-yes"),
        "create must not wait for a prompt"
    );
    // One-shot: it must not be restarted once it has done its job.
    assert_eq!(init.get("restart").map(str_of).as_deref(), Some("no"));
    for node in CLUSTER_NODES {
        assert_eq!(
            condition(init, node).as_deref(),
            Some("service_healthy"),
            "{CLUSTER_INIT} must wait for {node}"
        );
    }
}

#[test]
fn cluster_replicas_use_the_cluster_url() {
    let compose = compose();
    let nodes = cluster_node_addrs(&compose);
    for name in CLUSTER_REPLICAS {
        let env = environment(service(&compose, name));
        let url = env
            .get("REDIS_URL")
            .unwrap_or_else(|| panic!("{name}: REDIS_URL is not set"));
        let hosts = url
            .strip_prefix("redis-cluster://")
            .unwrap_or_else(|| panic!("{name}: REDIS_URL {url:?} is not a redis-cluster:// URL"));
        let listed: Vec<&str> = hosts.split(',').collect();
        assert_eq!(listed, nodes, "{name}: REDIS_URL must list every cluster node");
        assert!(!url.contains(REDIS), "{name} must not use the single Redis");

        // What the replica runs with: proxy.toml plus its environment,
        // through the real loader, gives a cluster of the six nodes on DB 0.
        let config = load_with_env(name, &env);
        let redis = config.redis.as_ref().expect("no redis config");
        let RedisTopology::Cluster { nodes: seeds } = &redis.topology else {
            panic!("{name}: loads as {:?}, not a cluster", redis.topology);
        };
        let seeds: Vec<String> = seeds.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        assert_eq!(seeds, nodes, "{name}: the loaded cluster seeds");
        assert_eq!(redis.db, 0, "{name}: a cluster has DB 0 only");
    }
}

#[test]
fn every_base_image_is_pinned_by_digest() {
    let pinned = |image: &str| {
        image.split_once("@sha256:").is_some_and(|(tag, digest)| {
            tag.contains(':') && digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())
        })
    };
    let compose = compose();
    let local = service(&compose, REPLICAS[0]).get("image").map(str_of).expect("image");
    for (name, svc) in compose["services"].as_mapping().expect("services") {
        let image = svc.get("image").map(str_of).unwrap_or_default();
        if image == local || image.starts_with("${BACKEND_IMAGE:-") {
            continue; // built here
        }
        assert!(
            pinned(&image),
            "{}: image {image:?} is not pinned by digest",
            str_of(name)
        );
    }
    for line in read("Dockerfile").lines().filter(|l| l.starts_with("FROM ")) {
        let image = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(pinned(image), "Dockerfile: {line:?} is not pinned by digest");
    }
}

#[test]
fn the_lbs_do_not_forward_admin_paths() {
    let prefix = proxy_toml().admin.prefix;
    for conf_path in [LB_CONF, CLUSTER_LB_CONF] {
        let statements = nginx_statements(&read(conf_path));
        for path in [prefix.as_str(), "/metrics"] {
            let at = statements
                .iter()
                .position(|st| st.first().map(String::as_str) == Some("location") && st.contains(&path.to_string()))
                .unwrap_or_else(|| panic!("{conf_path}: no location for {path}"));
            assert!(
                statements[at + 1..]
                    .iter()
                    .take_while(|st| st.first().map(String::as_str) != Some("}"))
                    .any(|st| st.first().map(String::as_str) == Some("return")
                        && st.get(1).map(String::as_str) == Some("404")),
                "{conf_path}: {path} must answer 404, not be proxied"
            );
        }
    }
}
