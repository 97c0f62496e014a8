//! The demo's sample task API: it mirrors the reference FastAPI task
//! service closely enough to show the cache at work: `GET/PUT/DELETE
//! /api/v1/tasks/{id}`, `POST /api/v1/tasks` and `GET /api/v1/tasks`, JSON
//! bodies, bearer-token auth for two tenants (random tokens made at start)
//! and per-tenant data, and an unauthenticated `GET /health`. Task ids are
//! numbers (`cachegate demo`) or UUIDs, as the reference's are
//! (`cachegate demo-backend`, [`TaskIds`]). [`serve_sample_api`] is public
//! so that tests can run the same API.

use crate::server::accept;
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
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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

/// How the sample API names its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskIds {
    /// `1`, `2`, ... (the demo's short ids).
    Numeric,
    /// UUIDs, as the reference task service gives: seeded tasks get fixed
    /// ones (`00000000-0000-4000-8000-000000000001` for task 1), created
    /// tasks random version-4 ones.
    Uuid,
}

impl TaskIds {
    /// The id of a seeded task, from its short id.
    pub fn seeded(self, short: &str) -> String {
        match self {
            TaskIds::Numeric => short.to_string(),
            TaskIds::Uuid => format!("00000000-0000-4000-8000-{short:0>12}"),
        }
    }

    fn created(self, next: u64) -> String {
        match self {
            TaskIds::Numeric => next.to_string(),
            TaskIds::Uuid => {
                let mut b: [u8; 16] = rand::random();
                b[6] = (b[6] & 0x0f) | 0x40; // version 4
                b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
                let h = hex::encode(b);
                format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
            }
        }
    }
}

/// The seeded tasks' ids of each tenant, in order.
pub fn seeded_ids(ids: TaskIds) -> Vec<(&'static str, Vec<String>)> {
    SEED.iter()
        .map(|(tenant, tasks)| (*tenant, tasks.iter().map(|(id, _, _)| ids.seeded(id)).collect()))
        .collect()
}

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
    ids: TaskIds,
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

/// Serves the sample task API, numeric ids, on `listener` until
/// [`SampleApi::shutdown`].
pub async fn serve_sample_api(listener: TcpListener) -> SampleApi {
    serve_sample_api_with(listener, TaskIds::Numeric).await
}

/// Serves the sample task API with the given kind of task ids.
pub async fn serve_sample_api_with(listener: TcpListener, ids: TaskIds) -> SampleApi {
    let tenants: Vec<Tenant> = SEED
        .iter()
        .map(|(name, _)| Tenant {
            name: name.to_string(),
            token: random_token(name),
        })
        .collect();
    let mut tasks = BTreeMap::new();
    for (tenant, seeded) in SEED {
        for (short, name, status) in seeded.iter() {
            let id = ids.seeded(short);
            tasks.insert(
                id.clone(),
                Task {
                    id,
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
        ids,
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

async fn accept_loop(listener: TcpListener, state: Shared, stopped: watch::Receiver<bool>) {
    let builder = Arc::new(http1::Builder::new());
    accept::accept_loop(listener, stopped, move |stream, _peer, stop| {
        let state = state.clone();
        let builder = builder.clone();
        async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let _ = accept::serve_http1(&builder, TokioIo::new(stream), service, stop).await;
        }
    })
    .await
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
    // For healthchecks (compose's, a load balancer's): no token needed.
    if req.uri().path() == "/health" {
        return json_response(StatusCode::OK, &json!({ "status": "healthy" }));
    }
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
    let id = st.ids.created(st.next_id);
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
}
