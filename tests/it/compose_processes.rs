//! The default compose stack, run outside containers: the processes and
//! environment `docker-compose.yml` describes, read from the file (so any
//! drift there breaks this test), then the `curl` lines of the file's
//! comments, run with the real `curl`, their answers checked against what
//! each line says after `# =>`.
//!
//! Mapping containers to one host: a service name becomes 127.0.0.1, every
//! port a free one, the mounted files their sources in the project, the
//! Docker secret a file with a token made by `cachegate token`. nginx runs
//! `deploy/lb.conf` as the `lb` service (`apt-get install nginx-light`;
//! `.ci/run` installs it). The `cluster` profile is left to `compose.rs`.

use serde_yaml::{Mapping, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const REDIS: &str = "redis-fastapi";
const BACKEND: &str = "backend";
const REPLICAS: [&str; 2] = ["cachegate-1", "cachegate-2"];
const LB: &str = "lb";
/// Where Docker mounts a service's secrets.
const SECRETS_DIR: &str = "/run/secrets/";
const STARTUP: Duration = Duration::from_secs(30);

fn project_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name.trim_start_matches("./"))
}

fn compose() -> Value {
    let text = std::fs::read_to_string(project_file("docker-compose.yml")).expect("read docker-compose.yml");
    let mut v: Value = serde_yaml::from_str(&text).expect("docker-compose.yml is not valid YAML");
    v.apply_merge().expect("docker-compose.yml: bad merge key");
    v
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Mapping {
    compose["services"][name]
        .as_mapping()
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// `${VAR:-default}` as compose interpolates it with VAR unset.
fn interpolate(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').expect("unterminated ${") + i;
        let inner = &rest[i + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, d)| d));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn environment(svc: &Mapping) -> Vec<(String, String)> {
    match svc.get("environment") {
        None => Vec::new(),
        Some(Value::Mapping(m)) => m.iter().map(|(k, v)| (scalar(k), interpolate(&scalar(v)))).collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|i| {
                let s = scalar(i);
                let (k, v) = s.split_once('=').unwrap_or((&s, ""));
                (k.to_string(), interpolate(v))
            })
            .collect(),
        Some(other) => panic!("environment: {other:?}"),
    }
}

fn words(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        other => interpolate(&scalar(other))
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    }
}

/// Published ports as (host ip, host port, container port).
fn published(svc: &Mapping) -> Vec<(Option<String>, u16, u16)> {
    let Some(list) = svc.get("ports") else {
        return Vec::new();
    };
    list.as_sequence()
        .expect("ports must be a list")
        .iter()
        .map(|p| {
            let s = scalar(p);
            let parts: Vec<&str> = s.split('/').next().unwrap_or_default().rsplitn(3, ':').collect();
            let container = parts[0].parse().expect("container port");
            let host = parts
                .get(1)
                .expect("publish a named host port")
                .parse()
                .expect("host port");
            (parts.get(2).map(|ip| ip.to_string()), host, container)
        })
        .collect()
}

/// Short-syntax volume mounts as (source, target).
fn mounts(svc: &Mapping) -> Vec<(String, String)> {
    svc.get("volumes")
        .and_then(Value::as_sequence)
        .map(|list| {
            list.iter()
                .map(|v| {
                    let s = scalar(v);
                    let mut parts = s.split(':');
                    (
                        parts.next().unwrap_or_default().to_string(),
                        parts.next().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The JSON-array form of a Dockerfile instruction; the last one counts.
fn dockerfile_exec_form(instruction: &str) -> Vec<String> {
    let text = std::fs::read_to_string(project_file("Dockerfile")).expect("read Dockerfile");
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with(instruction))
        .unwrap_or_else(|| panic!("Dockerfile has no {instruction}"))
        .to_string();
    serde_json::from_str(line[instruction.len()..].trim()).expect("exec form")
}

fn free_port() -> u16 {
    crate::common::free_port()
}

/// The processes started; killed when the test ends, however it ends.
#[derive(Default)]
struct Stack(Vec<(String, Child)>);

impl Stack {
    fn spawn(&mut self, name: &str, cmd: &mut Command) -> &mut Child {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {:?}: {e}", cmd.get_program()));
        self.0.push((name.to_string(), child));
        &mut self.0.last_mut().expect("just pushed").1
    }

    /// Fails naming a service whose process already exited.
    fn assert_running(&mut self) {
        for (name, child) in &mut self.0 {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited early: {status}");
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `check` until it holds, failing after [`STARTUP`].
fn wait_until(what: &str, stack: &mut Stack, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + STARTUP;
    while !check() {
        stack.assert_running();
        assert!(Instant::now() < deadline, "{what}: not ready within {STARTUP:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a healthcheck's `test` (the `CMD` form) with `from` replaced by `to`.
fn healthcheck_passes(svc: &Mapping, from: &str, to: &str) -> bool {
    let test = words(&svc["healthcheck"]["test"]);
    assert_eq!(test.first().map(String::as_str), Some("CMD"), "healthcheck {test:?}");
    let argv: Vec<String> = test[1..].iter().map(|w| w.replace(from, to)).collect();
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut head = [0u8; 12];
    s.write_all(req.as_bytes()).is_ok() && s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

/// `cachegate token`: the token and the line for the secret file.
fn make_admin_token(dir: &Path) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(["token", "--name", "ops"])
        .current_dir(dir)
        .output()
        .expect("run cachegate token");
    assert!(out.status.success(), "cachegate token failed");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("cachegate token prints no token")
        .to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("ops:"))
        .expect("cachegate token prints no name:sha256:scopes line")
        .to_string();
    (token, line)
}

/// One curl line of the compose file's comments and what it must answer.
struct CurlLine {
    command: String,
    status: u16,
    headers: Vec<(String, String)>,
}

/// `#   curl ...   # => 200, X-Cache: HIT` lines of the file's comments.
fn curl_lines(compose_text: &str) -> Vec<CurlLine> {
    compose_text
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .filter_map(|l| l.rsplit_once("# =>"))
        .map(|(command, expect)| {
            let mut parts = expect.split(',').map(str::trim);
            let status = parts.next().and_then(|s| s.parse().ok()).expect("# => STATUS");
            let headers = parts
                .map(|h| {
                    let (n, v) = h.split_once(':').expect("# => header as Name: value");
                    (n.trim().to_ascii_lowercase(), v.trim().to_string())
                })
                .collect();
            CurlLine {
                command: command.trim().to_string(),
                status,
                headers,
            }
        })
        .collect()
}

/// The status and headers of `curl -si` output (the last response head).
fn parse_curl_output(out: &str) -> (u16, HashMap<String, String>) {
    let head = out.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("curl printed no status line: {out:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

#[test]
fn the_default_stack_answers_the_curl_lines_of_its_comments() {
    let compose_text = std::fs::read_to_string(project_file("docker-compose.yml")).expect("read");
    let compose = compose();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stack = Stack::default();
    let cachegate_bin = env!("CARGO_BIN_EXE_cachegate");
    // Only what compose gives a container, plus PATH to find programs.
    let path_var = std::env::var("PATH").unwrap_or_default();
    let base_env = |cmd: &mut Command| {
        cmd.env_clear().env("PATH", &path_var).env("TMPDIR", dir.path());
    };

    // The image every cachegate service runs, built once.
    let cachegate_image = scalar(&service(&compose, REPLICAS[0])["image"]);
    let built: Vec<String> = compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .filter(|(_, s)| s.get("build").is_some())
        .map(|(n, _)| scalar(n))
        .collect();
    assert_eq!(built, [REPLICAS[0]], "exactly one service builds the image");
    assert_eq!(dockerfile_exec_form("ENTRYPOINT"), ["cachegate"]);

    // Redis: the service's command, on a free port, its /data in the temp dir.
    let redis_svc = service(&compose, REDIS);
    let redis_port = free_port();
    let redis_cmd = words(&redis_svc["command"]);
    assert_eq!(redis_cmd[0], "redis-server");
    let redis_data = dir.path().join("redis");
    std::fs::create_dir(&redis_data).expect("mkdir");
    let mut cmd = Command::new(&redis_cmd[0]);
    cmd.args(&redis_cmd[1..])
        .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(&redis_data)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    stack.spawn(REDIS, &mut cmd);
    let (_, _, redis_container_port) = published(redis_svc)[0];

    // The backend: the cachegate image by default, its command and env.
    let backend_svc = service(&compose, BACKEND);
    assert_eq!(
        interpolate(&scalar(&backend_svc["image"])),
        cachegate_image,
        "the backend runs the cachegate image by default"
    );
    assert!(scalar(&backend_svc["image"]).contains("${BACKEND_IMAGE:-"));
    let backend_port = free_port();
    let mut cmd = Command::new(cachegate_bin);
    base_env(&mut cmd);
    cmd.args(words(&backend_svc["command"]));
    for (k, v) in environment(backend_svc) {
        cmd.env(k, v.replace("0.0.0.0:8000", &format!("127.0.0.1:{backend_port}")));
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let child = stack.spawn(BACKEND, &mut cmd);
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let acme_token = loop {
        let line = rx.recv_timeout(STARTUP).expect("the backend printed no token for acme");
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.first() == Some(&"acme") && w.get(1) == Some(&"token") {
            break w[2].to_string();
        }
    };
    wait_until("backend healthcheck", &mut stack, || {
        healthcheck_passes(backend_svc, "127.0.0.1/8000", &format!("127.0.0.1/{backend_port}"))
    });

    // The admin token secret, made as the README says.
    let (admin_token, secret_line) = make_admin_token(dir.path());
    let mut secrets: HashMap<String, PathBuf> = HashMap::new();
    for (name, def) in compose["secrets"].as_mapping().expect("top-level secrets") {
        let source = scalar(&def["file"]);
        let path = dir
            .path()
            .join(Path::new(&source).file_name().expect("secret file name"));
        std::fs::write(&path, format!("{secret_line}\n")).expect("write secret");
        secrets.insert(scalar(name), path);
    }

    // The replicas: each with its environment, hosts mapped to 127.0.0.1.
    let config_path = {
        let cmd = dockerfile_exec_form("CMD");
        let i = cmd.iter().position(|a| a == "--config").expect("CMD --config");
        cmd[i + 1].clone()
    };
    let mut container_ports: HashMap<(&str, u16), u16> = HashMap::new();
    for name in REPLICAS {
        let svc = service(&compose, name);
        assert_eq!(scalar(&svc["image"]), cachegate_image, "{name} runs the one image");
        let (listen_port, admin_port) = (free_port(), free_port());
        container_ports.insert((name, 8080), listen_port);
        container_ports.insert((name, 9091), admin_port);
        let mut cmd = Command::new(cachegate_bin);
        base_env(&mut cmd);
        let (config_source, _) = mounts(svc)
            .into_iter()
            .find(|(_, target)| *target == config_path)
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {config_path}"));
        cmd.arg("--config").arg(project_file(&config_source));
        let service_secrets: Vec<String> = svc
            .get("secrets")
            .and_then(Value::as_sequence)
            .map(|s| s.iter().map(scalar).collect())
            .unwrap_or_default();
        for (k, v) in environment(svc) {
            let mut v = v
                .replace(
                    &format!("{REDIS}:{redis_container_port}"),
                    &format!("127.0.0.1:{redis_port}"),
                )
                .replace(&format!("{BACKEND}:8000"), &format!("127.0.0.1:{backend_port}"))
                .replace("0.0.0.0:8080", &format!("127.0.0.1:{listen_port}"))
                .replace("0.0.0.0:9091", &format!("127.0.0.1:{admin_port}"));
            if let Some(secret) = v.strip_prefix(SECRETS_DIR) {
                assert!(
                    service_secrets.iter().any(|s| s == secret),
                    "{name} is not given the secret {secret}"
                );
                v = secrets[secret].display().to_string();
            }
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        stack.spawn(name, &mut cmd);
    }
    for name in REPLICAS {
        let admin_port = container_ports[&(name, 9091)];
        wait_until(&format!("{name} healthcheck"), &mut stack, || {
            healthcheck_passes(
                service(&compose, name),
                "127.0.0.1/9091",
                &format!("127.0.0.1/{admin_port}"),
            )
        });
    }

    // The lb: nginx with the mounted deploy/lb.conf, upstreams mapped.
    let lb_svc = service(&compose, LB);
    let (lb_conf_source, _) = mounts(lb_svc)
        .into_iter()
        .find(|(_, t)| t.starts_with("/etc/nginx/conf.d/"))
        .expect("lb mounts no nginx config");
    let lb_port = free_port();
    container_ports.insert((LB, 8080), lb_port);
    let mut lb_conf = std::fs::read_to_string(project_file(&lb_conf_source)).expect("read lb conf");
    for name in REPLICAS {
        lb_conf = lb_conf.replace(
            &format!("{name}:8080"),
            &format!("127.0.0.1:{}", container_ports[&(name, 8080)]),
        );
    }
    lb_conf = lb_conf.replace("listen 8080;", &format!("listen 127.0.0.1:{lb_port};"));
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir(&nginx_dir).expect("mkdir");
    std::fs::write(nginx_dir.join("lb.conf"), lb_conf).expect("write");
    let t = nginx_dir.display();
    std::fs::write(
        nginx_dir.join("nginx.conf"),
        format!(
            "daemon off;\npid {t}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n access_log off;\n \
             client_body_temp_path {t}/body;\n proxy_temp_path {t}/proxy;\n fastcgi_temp_path {t}/fastcgi;\n \
             uwsgi_temp_path {t}/uwsgi;\n scgi_temp_path {t}/scgi;\n include {t}/lb.conf;\n}}\n"
        ),
    )
    .expect("write nginx.conf");
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(&nginx_dir)
        .arg("-c")
        .arg(nginx_dir.join("nginx.conf"))
        .args(["-e", "stderr"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if Command::new("nginx").arg("-v").output().is_err() {
        panic!("nginx is not installed: `apt-get install -y nginx-light` (.ci/run does)");
    }
    stack.spawn(LB, &mut cmd);
    wait_until("lb", &mut stack, || http_ok(lb_port, "/lb-healthz"));

    // Host ports as compose publishes them, mapped to the test's.
    let mut host_ports: Vec<(String, String)> = Vec::new();
    for name in [LB].into_iter().chain(REPLICAS) {
        for (ip, host, container) in published(service(&compose, name)) {
            if name != LB {
                assert_eq!(
                    ip.as_deref(),
                    Some("127.0.0.1"),
                    "{name} publishes {host} beyond loopback"
                );
            }
            let port = container_ports
                .get(&(name, container))
                .unwrap_or_else(|| panic!("{name} publishes container port {container}, which nothing listens on"));
            host_ports.push((format!("127.0.0.1:{host}"), format!("127.0.0.1:{port}")));
        }
    }

    let lines = curl_lines(&compose_text);
    assert!(lines.len() >= 6, "too few curl lines with `# =>` in docker-compose.yml");
    assert!(
        lines
            .iter()
            .any(|l| l.command.contains("127.0.0.1:8080/api/v1/cache/") && l.status == 404),
        "no comment line shows the admin API unreachable on the public port"
    );
    for line in &lines {
        let mut command = line.command.clone();
        for (from, to) in &host_ports {
            command = command.replace(&format!("{from}/"), &format!("{to}/"));
        }
        let out = Command::new("bash")
            .args(["-c", &command])
            .env("ACME_TOKEN", &acme_token)
            .env("ADMIN_TOKEN", &admin_token)
            .output()
            .expect("run curl through bash");
        assert!(out.status.success(), "{}: curl failed", line.command);
        let text = String::from_utf8_lossy(&out.stdout);
        let (status, headers) = parse_curl_output(&text);
        assert_eq!(status, line.status, "{}\n{text}", line.command);
        for (name, value) in &line.headers {
            assert_eq!(headers.get(name), Some(value), "{}: {name}\n{text}", line.command);
        }
        stack.assert_running();
    }
}

#[test]
fn curl_lines_are_read_with_their_expectations() {
    let lines = curl_lines(
        "#   curl -si http://127.0.0.1:8080/x   # => 200, X-Cache: HIT\n#   curl http://a/ (no expectation)\ncurl -si x # => 500\n",
    );
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].command, "curl -si http://127.0.0.1:8080/x");
    assert_eq!(lines[0].status, 200);
    assert_eq!(lines[0].headers, [("x-cache".to_string(), "HIT".to_string())]);
    assert_eq!(interpolate("${BACKEND_IMAGE:-cachegate:local}"), "cachegate:local");
}
