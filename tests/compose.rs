//! Consistency of the deployment files: `docker-compose.yml`, `Dockerfile`
//! and `proxy.toml` must agree on ports, service names and paths. These
//! tests read the real files, so editing one of them without the others
//! fails here.

use cachegate::config::{Config, Overrides, StoreKind};
use serde_yaml::{Mapping, Value};
use std::collections::HashMap;
use std::path::PathBuf;

const REDIS: &str = "redis-fastapi";
const BACKEND: &str = "backend";
const CACHEGATE: &str = "cachegate";

fn project_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn read(name: &str) -> String {
    let path = project_file(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn compose() -> Value {
    serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is not valid YAML")
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
fn the_three_services_exist() {
    let compose = compose();
    let services = compose["services"]
        .as_mapping()
        .expect("docker-compose.yml has no services");
    for name in [REDIS, BACKEND, CACHEGATE] {
        assert!(services.contains_key(name), "service {name:?} missing");
    }
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
    assert_eq!(redis.get("image").map(str_of).as_deref(), Some("redis:7-alpine"));
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
    let test: Vec<String> = hc["test"]
        .as_sequence()
        .expect("healthcheck test")
        .iter()
        .map(str_of)
        .collect();
    assert_eq!(test, ["CMD", "redis-cli", "ping"]);
    assert_eq!(str_of(&hc["interval"]), "10s");
    assert_eq!(str_of(&hc["timeout"]), "5s");
    assert_eq!(str_of(&hc["retries"]), "5");
}

#[test]
fn cachegate_waits_for_a_healthy_redis() {
    let compose = compose();
    let cg = service(&compose, CACHEGATE);
    let depends = cg
        .get("depends_on")
        .and_then(Value::as_mapping)
        .expect("cachegate depends_on must be a mapping with conditions");
    assert_eq!(
        depends
            .get(REDIS)
            .and_then(|d| d.get("condition"))
            .map(str_of)
            .as_deref(),
        Some("service_healthy"),
        "cachegate must wait for redis to be healthy"
    );
    assert!(depends.contains_key(BACKEND), "cachegate must depend on the backend");
}

#[test]
fn published_port_is_the_one_proxy_toml_listens_on() {
    let compose = compose();
    let cg = service(&compose, CACHEGATE);
    let listen_port = proxy_toml().server.listen.port();
    let published = ports(cg);
    assert!(
        published.contains(&(Some(listen_port), listen_port)),
        "cachegate publishes {published:?}, proxy.toml listens on port {listen_port}"
    );
    // The environment overrides [server] listen; it must agree, and listen
    // on every interface of the container.
    let env = environment(cg);
    let listen = env.get("CACHEGATE_LISTEN").expect("CACHEGATE_LISTEN is not set");
    let addr: std::net::SocketAddr = listen.parse().expect("CACHEGATE_LISTEN is not an address");
    assert!(
        addr.ip().is_unspecified(),
        "CACHEGATE_LISTEN {listen} is not reachable from outside the container"
    );
    assert_eq!(addr.port(), listen_port);
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
fn redis_url_points_at_the_redis_service() {
    let compose = compose();
    let env = environment(service(&compose, CACHEGATE));
    let url = env.get("REDIS_URL").expect("REDIS_URL is not set");
    let (scheme, host, port) = url_parts(url);
    assert_eq!(scheme, "redis");
    assert_eq!(host, REDIS, "REDIS_URL must name the redis service");
    // The port the redis container listens on (the container side of its
    // published port), not the host's 6380.
    let redis_ports = container_ports(service(&compose, REDIS));
    assert_eq!(port.unwrap_or(6379), 6379);
    assert!(redis_ports.contains(&6379), "redis container ports {redis_ports:?}");
}

#[test]
fn backend_url_points_at_the_backend_service() {
    let compose = compose();
    let env = environment(service(&compose, CACHEGATE));
    let url = env.get("CACHEGATE_BACKEND").expect("CACHEGATE_BACKEND is not set");
    let (scheme, host, port) = url_parts(url);
    assert_eq!(scheme, "http");
    assert_eq!(host, BACKEND, "CACHEGATE_BACKEND must name the backend service");
    let backend_ports = container_ports(service(&compose, BACKEND));
    let port = port.unwrap_or(80);
    assert!(
        backend_ports.contains(&port),
        "CACHEGATE_BACKEND uses port {port}, the backend exposes {backend_ports:?}"
    );
}

#[test]
fn proxy_toml_is_mounted_where_the_image_reads_it() {
    let dockerfile = read("Dockerfile");
    assert_eq!(dockerfile_exec_form(&dockerfile, "ENTRYPOINT"), ["cachegate"]);
    let cmd = dockerfile_exec_form(&dockerfile, "CMD");
    let i = cmd.iter().position(|a| a == "--config").expect("CMD has no --config");
    let config_path = cmd.get(i + 1).expect("--config without a path");

    let compose = compose();
    let mounts = volumes(service(&compose, CACHEGATE));
    let mount = mounts
        .iter()
        .find(|(_, target, _)| target == config_path)
        .unwrap_or_else(|| panic!("nothing is mounted at {config_path}; mounts: {mounts:?}"));
    let source = mount.0.trim_start_matches("./");
    assert_eq!(source, "proxy.toml", "the project's proxy.toml must be the one mounted");
    assert!(project_file(source).is_file());
    assert!(mount.2, "the config should be mounted read-only");
}

#[test]
fn proxy_toml_with_the_compose_environment_targets_the_services() {
    // What cachegate actually runs with inside the container: proxy.toml
    // plus the compose environment.
    let compose = compose();
    let env = environment(service(&compose, CACHEGATE));
    let lookup = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
    let config = Config::from_toml(&read("proxy.toml"), "proxy.toml", &lookup, &Overrides::default())
        .unwrap_or_else(|e| panic!("proxy.toml with the compose environment: {e}"));
    assert_eq!(config.store, StoreKind::Redis);
    let redis = config.redis.as_ref().expect("no redis config");
    let (_, host, port) = url_parts(&redis.url);
    assert_eq!((host.as_str(), port.unwrap_or(6379)), (REDIS, 6379));
    assert_eq!(config.backend.url.host(), Some(BACKEND));
    let cg_ports = ports(service(&compose, CACHEGATE));
    assert!(cg_ports.iter().any(|(_, c)| *c == config.server.listen.port()));
}
