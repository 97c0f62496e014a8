//! `cachegate demo`: a sample task API with cachegate in front of it.
//!
//! The sample API mirrors the reference FastAPI task service closely enough
//! to show the cache at work: `GET/PUT/DELETE /api/v1/tasks/{id}`,
//! `POST /api/v1/tasks` and `GET /api/v1/tasks`, JSON bodies, bearer-token
//! auth for two tenants (random tokens made at start) and per-tenant data.
//! [`serve_sample_api`] is public so that tests can run the same API.

use crate::config::{AdminScope, AdminToken, Config, Overrides};
use crate::BoxError;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Options of `cachegate demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The admin token the demo accepts (all scopes); by default a new
    /// random one, printed with a ready-to-paste `cachegate selftest` line.
    #[arg(long, env = "CACHEGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// A seeded task: id, name, status.
type SeedTask = (&'static str, &'static str, &'static str);

/// The tenants of the sample API and the tasks each starts with.
const SEED: &[(&str, &[SeedTask])] = &[
    (
        "acme",
        &[
            ("1", "Write the release notes", "pending"),
            ("2", "Review the caching design", "in_progress"),
            ("3", "Rotate the API keys", "completed"),
        ],
    ),
    (
        "globex",
        &[
            ("101", "Plan the Q3 roadmap", "pending"),
            ("102", "Migrate the billing service", "in_progress"),
        ],
    ),
];

/// The first id a created task gets (seeded ids stay below it).
const FIRST_NEW_ID: u64 = 1000;

/// Largest request body the sample API reads.
const MAX_BODY: usize = 64 * 1024;

/// A tenant of the sample API and its bearer token.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub token: String,
}

/// A running sample task API.
pub struct SampleApi {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The tenants (`acme`, `globex`) with their tokens.
    pub tenants: Vec<Tenant>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SampleApi {
    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bearer token of a tenant.
    pub fn token(&self, tenant: &str) -> Option<&str> {
        self.tenants.iter().find(|t| t.name == tenant).map(|t| t.token.as_str())
    }

    /// Stops accepting, lets in-flight requests finish (up to two seconds).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

#[derive(Debug, Clone)]
struct Task {
    id: String,
    name: String,
    status: String,
    tenant: String,
    version: u64,
}

impl Task {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "tenant": self.tenant,
            "version": self.version,
        })
    }
}

struct State {
    tenants: Vec<Tenant>,
    /// Every task by id; ids are unique across tenants.
    tasks: BTreeMap<String, Task>,
    next_id: u64,
}

impl State {
    fn tenant_of(&self, headers: &http::HeaderMap) -> Option<String> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim().as_bytes();
        self.tenants
            .iter()
            .find(|t| bool::from(t.token.as_bytes().ct_eq(token)))
            .map(|t| t.name.clone())
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the map half-updated in a
    // way that matters for a demo; keep serving.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn random_token(tenant: &str) -> String {
    format!("{tenant}-{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Serves the sample task API on `listener` until [`SampleApi::shutdown`].
pub async fn serve_sample_api(listener: TcpListener) -> SampleApi {
    let tenants: Vec<Tenant> = SEED
        .iter()
        .map(|(name, _)| Tenant {
            name: name.to_string(),
            token: random_token(name),
        })
        .collect();
    let mut tasks = BTreeMap::new();
    for (tenant, seeded) in SEED {
        for (id, name, status) in seeded.iter() {
            tasks.insert(
                id.to_string(),
                Task {
                    id: id.to_string(),
                    name: name.to_string(),
                    status: status.to_string(),
                    tenant: tenant.to_string(),
                    version: 1,
                },
            );
        }
    }
    let state = Arc::new(Mutex::new(State {
        tenants: tenants.clone(),
        tasks,
        next_id: FIRST_NEW_ID,
    }));
    // A listener whose address cannot be read still serves; report 0.0.0.0:0.
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, state, stopped));
    SampleApi {
        addr,
        tenants,
        stop,
        task,
    }
}

async fn accept_loop(listener: TcpListener, state: Shared, mut stopped: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "sample API: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let mut stop_conn = stopped.clone();
        connections.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop_conn.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

type ApiResponse = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: &Value) -> ApiResponse {
    let bytes = Bytes::from(body.to_string());
    let len = bytes.len();
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// FastAPI's error shape: `{"detail": "..."}`.
fn detail(status: StatusCode, message: &str) -> ApiResponse {
    json_response(status, &json!({ "detail": message }))
}

/// A client error found while reading a request, answered with [`detail`].
struct ApiError(StatusCode, String);

impl ApiError {
    fn response(self) -> ApiResponse {
        detail(self.0, &self.1)
    }
}

fn unauthorized() -> ApiResponse {
    let mut resp = detail(StatusCode::UNAUTHORIZED, "Not authenticated");
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn task_not_found() -> ApiResponse {
    detail(StatusCode::NOT_FOUND, "Task not found")
}

fn method_not_allowed(allow: &'static str) -> ApiResponse {
    let mut resp = detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

fn no_content() -> ApiResponse {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

enum Route {
    Collection,
    Item(String),
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/api/v1/tasks")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Route::Collection);
    }
    let id = rest.strip_prefix('/')?;
    (!id.is_empty() && !id.contains('/')).then(|| Route::Item(id.to_string()))
}

/// The value of one query parameter (no percent-decoding: the demo's
/// parameters are plain words).
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn handle(state: &Shared, req: Request<Incoming>) -> ApiResponse {
    let Some(route) = route(req.uri().path()) else {
        return detail(StatusCode::NOT_FOUND, "Not Found");
    };
    let tenant = match lock(state).tenant_of(req.headers()) {
        Some(t) => t,
        None => return unauthorized(),
    };
    let method = req.method().clone();
    match (route, method) {
        (Route::Collection, Method::GET | Method::HEAD) => list(state, &tenant, req.uri().query()),
        (Route::Collection, Method::POST) => match read_json(req).await {
            Ok(body) => create(state, &tenant, &body),
            Err(e) => e.response(),
        },
        (Route::Collection, _) => method_not_allowed("GET, HEAD, POST"),
        (Route::Item(id), Method::GET | Method::HEAD) => match lock(state).tasks.get(&id) {
            Some(task) if task.tenant == tenant => json_response(StatusCode::OK, &task.to_json()),
            _ => task_not_found(),
        },
        (Route::Item(id), Method::PUT) => match read_json(req).await {
            Ok(body) => update(state, &tenant, &id, &body),
            Err(e) => e.response(),
        },
        (Route::Item(id), Method::DELETE) => {
            let mut st = lock(state);
            match st.tasks.get(&id) {
                Some(task) if task.tenant == tenant => {
                    st.tasks.remove(&id);
                    no_content()
                }
                _ => task_not_found(),
            }
        }
        (Route::Item(_), _) => method_not_allowed("GET, HEAD, PUT, DELETE"),
    }
}

fn list(state: &Shared, tenant: &str, query: Option<&str>) -> ApiResponse {
    let status = query_param(query, "status");
    let st = lock(state);
    let mut tasks: Vec<&Task> = st
        .tasks
        .values()
        .filter(|t| t.tenant == tenant && status.map_or(true, |s| t.status == s))
        .collect();
    // Numeric ids in numeric order (creation order).
    tasks.sort_by(|a, b| (a.id.len(), &a.id).cmp(&(b.id.len(), &b.id)));
    json_response(
        StatusCode::OK,
        &Value::Array(tasks.into_iter().map(Task::to_json).collect()),
    )
}

/// Reads a JSON object body; a FastAPI-like 422 otherwise.
async fn read_json(req: Request<Incoming>) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large or incomplete".into(),
            ))
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Request body must be a JSON object".into(),
        )),
    }
}

/// A string field: `Ok(None)` when absent, a 422 when not a non-empty string.
fn string_field(body: &serde_json::Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Field {name:?} must be a non-empty string"),
        )),
    }
}

fn create(state: &Shared, tenant: &str, body: &serde_json::Map<String, Value>) -> ApiResponse {
    let name = match string_field(body, "name") {
        Ok(Some(n)) => n,
        Ok(None) => return detail(StatusCode::UNPROCESSABLE_ENTITY, "Field \"name\" is required"),
        Err(e) => return e.response(),
    };
    let status = match string_field(body, "status") {
        Ok(s) => s.unwrap_or_else(|| "pending".to_string()),
        Err(e) => return e.response(),
    };
    let mut st = lock(state);
    let id = st.next_id.to_string();
    st.next_id += 1;
    let task = Task {
        id: id.clone(),
        name,
        status,
        tenant: tenant.to_string(),
        version: 1,
    };
    let mut resp = json_response(StatusCode::CREATED, &task.to_json());
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/tasks/{id}")) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    st.tasks.insert(id, task);
    resp
}

fn update(state: &Shared, tenant: &str, id: &str, body: &serde_json::Map<String, Value>) -> ApiResponse {
    let (name, status) = match (string_field(body, "name"), string_field(body, "status")) {
        (Ok(n), Ok(s)) => (n, s),
        (Err(e), _) | (_, Err(e)) => return e.response(),
    };
    if name.is_none() && status.is_none() {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, "Give \"name\" and/or \"status\"");
    }
    let mut st = lock(state);
    match st.tasks.get_mut(id) {
        Some(task) if task.tenant == tenant => {
            if let Some(n) = name {
                task.name = n;
            }
            if let Some(s) = status {
                task.status = s;
            }
            task.version += 1;
            json_response(StatusCode::OK, &task.to_json())
        }
        _ => task_not_found(),
    }
}

/// The task API's rules, as the documented `proxy.toml` has them: the demo
/// runs them, and the tests use them as the standard set.
pub const TASK_RULES: &str = r#"
[[rule]]
name = "task"
methods = ["GET", "HEAD"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{task_id}"
ttl = 300
statuses = [200]

[[rule]]
name = "task-list"
path = '^/api/v1/tasks$'
key = "tasks:{query}"
ttl = 60

[[invalidate]]
name = "task-write"
methods = ["PUT", "PATCH", "DELETE"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
keys = ["task:{task_id}"]
patterns = ["tasks:*"]
when = "success"

[[invalidate]]
name = "task-create"
methods = ["POST"]
path = '^/api/v1/tasks$'
patterns = ["tasks:*"]
"#;

/// The proxy config of the demo (its rules are [`TASK_RULES`]), in front
/// of the sample API. `@LISTEN@` and `@BACKEND@` are filled in.
const DEMO_TOML: &str = r#"
edition = "business"

[server]
listen = "@LISTEN@"

[backend]
url = "@BACKEND@"
connect_timeout_ms = 1000
timeout_ms = 10000

[redis]
default_ttl = 300
# The demo may share a Redis with other things: keep its keys apart.
key_prefix = "cachegate-demo:"

"#;

/// The demo's config: only `REDIS_*` variables of the environment count
/// (so `REDIS_URL` switches the store to Redis); everything else is inline.
pub fn demo_config(
    listen: SocketAddr,
    backend: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, BoxError> {
    let text = format!("{DEMO_TOML}\n{TASK_RULES}")
        .replace("@LISTEN@", &listen.to_string())
        .replace("@BACKEND@", backend);
    let redis_only = |name: &str| if name.starts_with("REDIS_") { env(name) } else { None };
    Ok(Config::from_toml(&text, "<demo>", &redis_only, &Overrides::default())?)
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn port_hint(listen: SocketAddr) -> String {
    let other = if listen.port() == 8080 { 8081 } else { 8080 };
    format!("choose another address with `cachegate demo --listen 127.0.0.1:{other}` (or any free PORT)")
}

/// Fails early, with a useful message, when the proxy's address is taken.
fn check_listen(listen: SocketAddr) -> Result<(), BoxError> {
    match std::net::TcpListener::bind(listen) {
        Ok(probe) => {
            drop(probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(format!("{listen} is already in use; {}", port_hint(listen)).into())
        }
        Err(e) => Err(format!("cannot listen on {listen}: {e}; {}", port_hint(listen)).into()),
    }
}

/// Hides the password in a URL printed to the terminal.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// A word for a shell command line: as is when safe, else single-quoted.
fn shell_word(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The `cachegate selftest` line that checks a running demo: reads of the
/// acme tenant's tasks 1-3, purging `task:{id}` before each cold fetch, and
/// a PUT whose new name the next read must show.
pub fn selftest_command(proxy_url: &str, api_token: &str, admin_token: &str) -> String {
    format!(
        "cachegate selftest --url {} --path {} --id 1-3 --token {} --admin-token {} --purge-key {} --write {}",
        shell_word(proxy_url),
        shell_word("/api/v1/tasks/{id}"),
        shell_word(api_token),
        shell_word(admin_token),
        shell_word("task:{id}"),
        shell_word(r#"PUT /api/v1/tasks/{id} {"name":"selftest {nonce}"}"#),
    )
}

/// The banner printed once everything runs.
fn banner(config: &Config, proxy: SocketAddr, api: &SampleApi, admin_token: &str) -> String {
    // A proxy on 0.0.0.0 is reached through loopback.
    let host = match proxy.ip() {
        ip if ip.is_unspecified() => match ip {
            IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, proxy.port())),
            IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, proxy.port())),
        },
        _ => proxy,
    };
    let base = format!("http://{host}/api/v1/tasks");
    let acme = api.token("acme").unwrap_or_default();
    let globex = api.token("globex").unwrap_or_default();
    let store = match &config.redis {
        Some(r) => format!(
            "redis {} db {} (key prefix {:?})",
            redact(&r.url),
            r.db,
            config.cache.key_prefix
        ),
        None => "memory (in-process)".to_string(),
    };
    let auth = |token: &str| format!("-H 'Authorization: Bearer {token}'");
    let mut out = String::new();
    out.push_str("cachegate demo\n");
    out.push_str(&format!(
        "  sample task API  {} (tenants acme: tasks 1, 2, 3; globex: tasks 101, 102)\n",
        api.url()
    ));
    out.push_str(&format!("  cachegate proxy  http://{host} -> {}\n", api.url()));
    out.push_str(&format!("  cache store      {store}\n"));
    out.push_str(&format!("  edition          {}\n", config.edition.as_str()));
    out.push('\n');
    out.push_str("Tokens (new on every start):\n");
    out.push_str(&format!("  acme    {acme}\n"));
    out.push_str(&format!("  globex  {globex}\n"));
    out.push_str(&format!(
        "  admin   {admin_token}   (all scopes; {}/health, /stats, ...)\n",
        config.admin.prefix
    ));
    out.push('\n');
    out.push_str("Try it (paste one line at a time):\n");
    out.push_str("  # 1. first read: X-Cache: MISS (fetched from the API, then stored)\n");
    out.push_str(&format!("  curl -si {} {base}/1\n", auth(acme)));
    out.push_str("  # 2. same read again: X-Cache: HIT (served by cachegate)\n");
    out.push_str(&format!("  curl -si {} {base}/1\n", auth(acme)));
    out.push_str("  # 3. change its name: the write goes through and purges task:1\n");
    out.push_str(&format!(
        "  curl -si -X PUT {} -H 'Content-Type: application/json' -d '{{\"name\":\"Write the release notes (v2)\"}}' {base}/1\n",
        auth(acme)
    ));
    out.push_str("  # 4. read again: the new name, X-Cache: MISS; once more: X-Cache: HIT\n");
    out.push_str(&format!("  curl -si {} {base}/1\n", auth(acme)));
    out.push_str(&format!("  curl -si {} {base}/1\n", auth(acme)));
    out.push_str("  # 5. the other tenant cannot see acme's task: 404\n");
    out.push_str(&format!("  curl -si {} {base}/1\n", auth(globex)));
    out.push('\n');
    out.push_str(
        "Self-test (connectivity, hit/miss latency, invalidation, concurrency; add --html report.html for plots):\n",
    );
    out.push_str(&format!(
        "  {}\n",
        selftest_command(&format!("http://{host}"), acme, admin_token)
    ));
    out.push('\n');
    out.push_str("Press Ctrl-C to stop.\n");
    out
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> Result<(), BoxError> {
    let listen: SocketAddr = args.listen.trim().parse().map_err(|_| {
        format!(
            "--listen: expected an address such as 127.0.0.1:8080, got {:?}",
            args.listen
        )
    })?;
    check_listen(listen)?;

    let api_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| format!("cannot start the sample API on 127.0.0.1: {e}"))?;
    let api = serve_sample_api(api_listener).await;

    let mut config = match demo_config(listen, &api.url(), &process_env) {
        Ok(c) => c,
        Err(e) => {
            api.shutdown().await;
            return Err(e);
        }
    };
    let admin_token = match args.admin_token.filter(|t| !t.trim().is_empty()) {
        Some(t) => t,
        None => crate::admin::new_token().0,
    };
    config.admin.tokens.push(AdminToken {
        name: "demo".to_string(),
        sha256: crate::admin::hash_token(&admin_token),
        scopes: vec![AdminScope::Read, AdminScope::Purge, AdminScope::Inspect],
    });
    let banner_config = config.clone();
    let proxy = match crate::server::start(config).await {
        Ok(p) => p,
        Err(e) => {
            api.shutdown().await;
            return Err(format!("cannot start the proxy: {e}; {}", port_hint(listen)).into());
        }
    };

    println!("{}", banner(&banner_config, proxy.addr, &api, &admin_token));

    let signal = tokio::signal::ctrl_c().await;
    println!("stopping the demo");
    proxy.shutdown(Duration::from_secs(5)).await;
    tracing::debug!("demo: proxy stopped");
    api.shutdown().await;
    tracing::debug!("demo: sample API stopped");
    signal.map_err(|e| format!("cannot wait for Ctrl-C: {e}").into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

    async fn call(
        client: &TestClient,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(url);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = client.request(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, headers, json)
    }

    #[tokio::test]
    async fn sample_api_auth_tenants_and_versions() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = serve_sample_api(listener).await;
        let client: TestClient = Client::builder(TokioExecutor::new()).build_http();
        let base = format!("{}/api/v1/tasks", api.url());
        let acme = api.token("acme").unwrap().to_string();
        let globex = api.token("globex").unwrap().to_string();
        assert_ne!(acme, globex);

        // Auth: none, wrong, wrong scheme.
        let (s, h, j) = call(&client, Method::GET, &format!("{base}/1"), None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
        assert!(j["detail"].is_string());
        let (s, _, _) = call(&client, Method::GET, &format!("{base}/1"), Some("nope"), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _, _) = call(&client, Method::GET, &base, Some(&format!("{acme}x")), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);

        // A tenant's own task, with JSON headers.
        let (s, h, j) = call(&client, Method::GET, &format!("{base}/1"), Some(&acme), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
        let len: usize = h[header::CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
        assert_eq!(len, j.to_string().len());
        assert_eq!(j["id"], "1");
        assert_eq!(j["tenant"], "acme");
        assert_eq!(j["status"], "pending");
        assert_eq!(j["version"], 1);

        // Tenant filtering both ways, and in lists.
        let (s, _, _) = call(&client, Method::GET, &format!("{base}/1"), Some(&globex), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, j) = call(&client, Method::GET, &format!("{base}/101"), Some(&globex), None).await;
        assert_eq!((s, j["tenant"].as_str()), (StatusCode::OK, Some("globex")));
        let (s, _, _) = call(&client, Method::GET, &format!("{base}/101"), Some(&acme), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (_, _, j) = call(&client, Method::GET, &base, Some(&acme), None).await;
        let ids: Vec<&str> = j
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["1", "2", "3"]);
        let (_, _, j) = call(&client, Method::GET, &base, Some(&globex), None).await;
        let ids: Vec<&str> = j
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["101", "102"]);

        // PUT replaces name/status and bumps the version; the other tenant
        // can neither update nor see it.
        let put = json!({"name": "Renamed", "status": "completed"});
        let (s, _, _) = call(
            &client,
            Method::PUT,
            &format!("{base}/1"),
            Some(&globex),
            Some(put.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, j) = call(&client, Method::PUT, &format!("{base}/1"), Some(&acme), Some(put)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            (j["name"].as_str(), j["status"].as_str(), j["version"].as_u64()),
            (Some("Renamed"), Some("completed"), Some(2))
        );
        let (_, _, j) = call(&client, Method::GET, &format!("{base}/1"), Some(&acme), None).await;
        assert_eq!((j["name"].as_str(), j["version"].as_u64()), (Some("Renamed"), Some(2)));
        let (s, _, _) = call(
            &client,
            Method::PUT,
            &format!("{base}/1"),
            Some(&acme),
            Some(json!({"name": 5})),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

        // Create, list filter, delete.
        let (s, h, j) = call(
            &client,
            Method::POST,
            &base,
            Some(&globex),
            Some(json!({"name": "New"})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        let id = j["id"].as_str().unwrap().to_string();
        assert_eq!(h[header::LOCATION].to_str().unwrap(), format!("/api/v1/tasks/{id}"));
        assert_eq!(
            (j["tenant"].as_str(), j["status"].as_str(), j["version"].as_u64()),
            (Some("globex"), Some("pending"), Some(1))
        );
        let (_, _, j) = call(
            &client,
            Method::GET,
            &format!("{base}?status=pending"),
            Some(&globex),
            None,
        )
        .await;
        let ids: Vec<&str> = j
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["101", id.as_str()]);
        let (s, _, _) = call(&client, Method::DELETE, &format!("{base}/{id}"), Some(&acme), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _) = call(&client, Method::DELETE, &format!("{base}/{id}"), Some(&globex), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _, _) = call(&client, Method::GET, &format!("{base}/{id}"), Some(&globex), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        api.shutdown().await;
    }

    #[test]
    fn demo_config_uses_redis_only_when_redis_url_is_set() {
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let memory = demo_config(listen, "http://127.0.0.1:9", &|_| None).unwrap();
        assert!(memory.redis.is_none());
        assert_eq!(memory.server.listen, listen);
        assert_eq!(memory.edition.as_str(), "business");
        let env = |name: &str| match name {
            "REDIS_URL" => Some("redis://127.0.0.1:6379/9".to_string()),
            "CACHEGATE_LISTEN" => Some("0.0.0.0:1".to_string()),
            _ => None,
        };
        let redis = demo_config(listen, "http://127.0.0.1:9", &env).unwrap();
        let r = redis.redis.as_ref().unwrap();
        assert_eq!((r.url.as_str(), r.db), ("redis://127.0.0.1:6379", 9));
        // Only REDIS_* is read from the environment.
        assert_eq!(redis.server.listen, listen);
    }

    #[test]
    fn selftest_command_quotes_what_the_shell_would_split() {
        let line = selftest_command("http://127.0.0.1:8080", "acme-00ff", "tok_en-1");
        assert!(line.starts_with("cachegate selftest --url http://127.0.0.1:8080 --path '/api/v1/tasks/{id}' --id 1-3"));
        assert!(line.contains(" --token acme-00ff --admin-token tok_en-1 --purge-key 'task:{id}' "));
        assert!(line.ends_with(r#" --write 'PUT /api/v1/tasks/{id} {"name":"selftest {nonce}"}'"#));
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn taken_port_is_reported_with_a_hint() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = check_listen(taken.local_addr().unwrap()).unwrap_err().to_string();
        assert!(err.contains("already in use"), "{err}");
        assert!(err.contains("--listen 127.0.0.1:"), "{err}");
    }
}
