//! The admin route handlers. Each returns JSON in the reference shape.

use crate::config::Edition;
use crate::config::StoreReadiness;
use crate::gateway::{BackendState, Gateway};
use crate::metrics::{HitMiss, Metrics};
use crate::proxy::{self, Body};
use crate::rules::{query_param, INTERNAL_PREFIX};
use crate::store::entry::{now_ms, Entry};
use crate::store::health::{StoreHealth, StoreState};
use crate::store::StoreError;
use base64::Engine;
use http::{Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{json, Map, Value};

/// Longest pattern accepted (a longer one is 400).
const MAX_PATTERN_BYTES: usize = 1024;
/// Longest key accepted in `/key/{key}`.
const MAX_KEY_BYTES: usize = 1024;
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 10_000;

fn store_failed(e: StoreError) -> Response<Body> {
    proxy::json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        &format!("the cache store did not answer: {e}"),
    )
}

/// 429 while another keyspace walk runs in this instance.
fn busy() -> Response<Body> {
    let mut resp = proxy::json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "busy",
        "another keyspace scan (keys, or clear by pattern) is running; retry later",
    );
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    resp
}

fn bad_param(param: &str, message: &str) -> Response<Body> {
    proxy::json(
        StatusCode::BAD_REQUEST,
        &json!({"error": "invalid_parameter", "parameter": param, "message": message}),
    )
}

fn features(edition: Edition) -> Value {
    json!({
        "health": true,
        "basic_stats": true,
        "stats": edition >= Edition::Business,
        "clear": edition >= Edition::Business,
        "delete_key": edition >= Edition::Business,
        "keys": edition >= Edition::Enterprise,
        "key": edition >= Edition::Enterprise,
    })
}

/// The store's state for `health` and `/readyz`:
/// `{"kind", "state", "detail"}` (detail `null` when ok).
fn store_state(gw: &Gateway, store: &StoreHealth) -> Value {
    json!({
        "kind": gw.store().kind(),
        "state": store.state.as_str(),
        "detail": (store.state != StoreState::Ok).then_some(store.detail.as_str()),
    })
}

/// The backend probe's verdict: `{"state": "up"|"down", "detail"}`.
fn backend_state(backend: &BackendState) -> Value {
    json!({
        "state": if backend.up { "up" } else { "down" },
        "detail": backend.detail,
    })
}

/// `/readyz`: 503 while a start-up warm run readiness waits for goes on,
/// while the store is unusable in a way `[health] ready_requires_store`
/// counts (by default a misconfiguration: credentials, database, TLS, host
/// name), and, with `ready_requires_backend`, while the backend is down.
/// The body names the store's and the backend's state either way.
pub fn readyz(gw: &Gateway) -> Response<Body> {
    let metrics = gw.metrics();
    if metrics.warming() {
        return proxy::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "warming", "pending": metrics.warm_pending()}),
        );
    }
    let settings = &gw.config().health;
    let store = gw.store().health();
    let backend = gw.backend_state();
    let mut reasons = Vec::new();
    let store_counts = match settings.ready_requires_store {
        StoreReadiness::Config => store.is_misconfiguration(),
        StoreReadiness::Up => store.state != StoreState::Ok,
        StoreReadiness::Never => false,
    };
    if store_counts {
        reasons.push(format!("store {}: {}", store.state.as_str(), store.detail));
    }
    if settings.ready_requires_backend && !backend.up {
        reasons.push(format!("backend down: {}", backend.detail));
    }
    let (status, word) = if reasons.is_empty() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    let mut body = json!({
        "status": word,
        "store": store_state(gw, &store),
        "backend": backend_state(&backend),
    });
    if !reasons.is_empty() {
        body["reasons"] = json!(reasons);
    }
    proxy::json(status, &body)
}

pub async fn health(gw: &Gateway) -> Response<Body> {
    let config = gw.config();
    let store = gw.store().health();
    let backend = gw.backend_state();
    let up = store.state == StoreState::Ok;
    let shards: Vec<Value> = gw
        .store()
        .shards()
        .into_iter()
        .map(|(shard, up)| json!({"shard": shard, "up": up}))
        .collect();
    let mut body = json!({
            "status": if up && backend.up { "healthy" } else { "degraded" },
            "store": store_state(gw, &store),
            "store_up": up,
            "backend": backend_state(&backend),
            "edition": config.edition.as_str(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": gw.metrics().started.elapsed().as_secs(),
            "features": features(config.edition),
    });
    // On a cluster, each primary's state: one down leaves the others' keys
    // cached.
    if !shards.is_empty() {
        body["shards"] = Value::Array(shards);
    }
    proxy::json(StatusCode::OK, &body)
}

/// Fleet-wide figures when the store answers, else this instance's.
async fn figures(gw: &Gateway) -> (HitMiss, Vec<(String, HitMiss)>, bool) {
    gw.metrics().flush(gw.store().as_ref()).await;
    match gw.store().counters().await {
        Ok(c) => {
            let (all, rules) = Metrics::fleet(&c);
            (all, rules, true)
        }
        Err(_) => {
            let (all, rules) = gw.metrics().local();
            (all, rules, false)
        }
    }
}

pub async fn basic_stats(gw: &Gateway) -> Response<Body> {
    let (all, _, fleet) = figures(gw).await;
    let entries = gw.store().info().await.map(|i| i.total_keys).ok();
    proxy::json(
        StatusCode::OK,
        &json!({
            "hits": all.hits,
            "misses": all.misses,
            "hit_rate": all.hit_rate,
            "entries": entries,
            "uptime_seconds": gw.metrics().started.elapsed().as_secs(),
            "scope": if fleet { "fleet" } else { "instance" },
        }),
    )
}

/// `stats` in the reference's shape. When the store does not answer it is
/// still 200: `"status": "disabled"` when the cause is a misconfiguration
/// (nothing is cached until it is fixed), else `"degraded"` (down for now),
/// with this instance's own figures and `null` for what only the store
/// knows.
pub async fn stats(gw: &Gateway) -> Response<Body> {
    let info = gw.store().info().await;
    let (all, rules, fleet) = figures(gw).await;
    let (local, local_rules) = gw.metrics().local();
    let mut per_rule = Map::new();
    for (name, hm) in rules {
        per_rule.insert(name, json!(hm));
    }
    let mut local_per_rule = Map::new();
    for (name, hm) in local_rules {
        local_per_rule.insert(name, json!(hm));
    }
    // This instance's own figures, whether the store answers or not.
    let instance = json!({
        "hits": local.hits,
        "misses": local.misses,
        "hit_rate": local.hit_rate,
        "uptime_seconds": gw.metrics().started.elapsed().as_secs(),
        "rules": local_per_rule,
    });
    let info = match info {
        Ok(info) => info,
        Err(e) => {
            // Up a moment ago but this call failed (a timeout on a large
            // keyspace): the call's own error says why.
            let store = match gw.store().health() {
                h if h.state == StoreState::Ok => StoreHealth {
                    state: StoreState::classify(&e.to_string()),
                    detail: e.to_string(),
                    was_up: true,
                },
                h => h,
            };
            let status = if store.is_misconfiguration() {
                "disabled"
            } else {
                "degraded"
            };
            return proxy::json(
                StatusCode::OK,
                &json!({
                    "status": status,
                    "store": gw.store().kind(),
                    "store_state": store_state(gw, &store),
                    "server": null,
                    "memory": null,
                    "stats": {
                        "total_keys": null,
                        "internal_keys": null,
                        "hits": all.hits,
                        "misses": all.misses,
                        "hit_rate": all.hit_rate,
                        "rules": per_rule,
                        "scope": if fleet { "fleet" } else { "instance" },
                        "instance": instance,
                    },
                }),
            );
        }
    };
    proxy::json(
        StatusCode::OK,
        &json!({
            "status": "enabled",
            "store": gw.store().kind(),
            "store_state": store_state(gw, &StoreHealth::ok()),
            "server": {
                "version": info.version,
                "uptime_seconds": info.uptime_seconds,
                "connected_clients": info.connected_clients,
            },
            "memory": {
                "used_memory": human_bytes(info.used_memory),
                "peak_memory": human_bytes(info.peak_memory),
                "total_system_memory": human_bytes(info.total_system_memory),
                "used_memory_bytes": info.used_memory,
                "peak_memory_bytes": info.peak_memory,
                "total_system_memory_bytes": info.total_system_memory,
            },
            "stats": {
                "total_keys": info.total_keys,
                "internal_keys": info.internal_keys,
                "db_keys": info.db_keys,
                "hits": all.hits,
                "misses": all.misses,
                "hit_rate": all.hit_rate,
                "rules": per_rule,
                "instance": instance,
            },
        }),
    )
}

/// A bad parameter: its name and what is wrong; answered with 400.
type BadParam = (&'static str, &'static str);

/// A pattern query parameter: absent, or at most 1 KiB.
fn pattern_param(query: Option<&str>) -> Result<Option<String>, BadParam> {
    match query_param(query, "pattern") {
        None => Ok(None),
        Some(p) if p.is_empty() => Err(("pattern", "pattern must not be empty")),
        Some(p) if p.len() > MAX_PATTERN_BYTES => Err(("pattern", "pattern is longer than 1024 bytes")),
        Some(p) => Ok(Some(p)),
    }
}

/// `DELETE clear`: everything cachegate wrote, or `pattern=`, or `tag=`;
/// with `soft=true` entries are marked stale instead of removed.
pub async fn clear(gw: &Gateway, query: Option<&str>) -> Response<Body> {
    let pattern = match pattern_param(query) {
        Ok(p) => p,
        Err((param, msg)) => return bad_param(param, msg),
    };
    let tag = query_param(query, "tag");
    if tag
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.len() > MAX_PATTERN_BYTES)
    {
        return bad_param("tag", "tag must be 1 to 1024 bytes");
    }
    let soft = match query_param(query, "soft").as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return bad_param("soft", "soft must be true or false"),
    };
    // Everything but a tag purge walks the keyspace.
    let _walk = match tag {
        Some(_) => None,
        None => match gw.keyspace_walk() {
            Some(permit) => Some(permit),
            None => return busy(),
        },
    };
    let store = gw.store();
    let (result, kind) = match (&pattern, &tag) {
        (Some(_), Some(_)) => return bad_param("tag", "give pattern or tag, not both"),
        (None, Some(t)) => (store.purge_tags(std::slice::from_ref(t), soft).await, "tag"),
        (Some(p), None) if soft => (store.purge_pattern(p, true).await, "pattern"),
        (None, None) if soft => (store.purge_pattern("*", true).await, "pattern"),
        (p, None) => (store.clear(p.as_deref()).await, "clear"),
    };
    store.fence().await;
    match result {
        Ok(deleted) => {
            gw.metrics().purged(kind, deleted);
            let mut out = json!({"status": "cleared", "pattern": pattern, "deleted": deleted});
            if let Some(obj) = out.as_object_mut() {
                if let Some(t) = tag {
                    obj.insert("tag".into(), json!(t));
                }
                if soft {
                    obj.insert("soft".into(), json!(true));
                }
            }
            proxy::json(StatusCode::OK, &out)
        }
        Err(e) => store_failed(e),
    }
}

pub async fn keys(gw: &Gateway, query: Option<&str>) -> Response<Body> {
    let pattern = match pattern_param(query) {
        Ok(p) => p.unwrap_or_else(|| "*".to_string()),
        Err((param, msg)) => return bad_param(param, msg),
    };
    let limit = match query_param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.trim().parse::<u64>() {
            Ok(n) if n > 0 => n.min(MAX_LIMIT),
            _ => return bad_param("limit", "limit must be a positive integer"),
        },
    };
    let Some(_walk) = gw.keyspace_walk() else {
        return busy();
    };
    match gw.store().scan_keys(&pattern, limit as usize).await {
        Ok((total, keys)) => proxy::json(
            StatusCode::OK,
            &json!({"pattern": pattern, "total_found": total, "limit": limit, "keys": keys}),
        ),
        Err(e) => store_failed(e),
    }
}

/// The logical key from the encoded path segment; `Err` is a 400.
fn decode_key(raw: &str) -> Result<String, BadParam> {
    let key = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ("key", "the key is not valid percent-encoded UTF-8"))?
        .into_owned();
    if key.is_empty() {
        return Err(("key", "the key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(("key", "the key is longer than 1024 bytes"));
    }
    // cachegate's own keys (scope secret, epoch, tag indexes, stats) are not
    // cache entries: neither shown nor deleted here.
    if key.starts_with(INTERNAL_PREFIX) {
        return Err(("key", "internal keys are not addressable"));
    }
    Ok(key)
}

pub async fn delete_key(gw: &Gateway, raw: &str) -> Response<Body> {
    let key = match decode_key(raw) {
        Ok(k) => k,
        Err((param, msg)) => return bad_param(param, msg),
    };
    let purged = gw.store().purge_keys(std::slice::from_ref(&key), false).await;
    gw.store().fence().await;
    match purged {
        Ok(n) => {
            gw.metrics().purged("key", n);
            proxy::json(StatusCode::OK, &json!({"status": "deleted", "key": key, "deleted": n}))
        }
        Err(e) => store_failed(e),
    }
}

pub async fn get_key(gw: &Gateway, raw: &str) -> Response<Body> {
    let key = match decode_key(raw) {
        Ok(k) => k,
        Err((param, msg)) => return bad_param(param, msg),
    };
    let record = match gw.store().record(&key).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return proxy::json(
                StatusCode::NOT_FOUND,
                &json!({"error": "not_found", "message": "no cached entry under this key", "key": key}),
            )
        }
        Err(e) => return store_failed(e),
    };
    let scopes = record.fields.len();
    let newest = record
        .fields
        .iter()
        .filter_map(|(_, raw)| Entry::decode(raw))
        .max_by_key(|e| e.stored_at_ms);
    let Some(entry) = newest else {
        return proxy::json(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "message": "the key holds no readable entry", "key": key}),
        );
    };
    let now = now_ms();
    let (value, encoding) = body_value(&entry.body);
    let mut headers = Map::new();
    for (name, v) in &entry.headers {
        headers.insert(name.as_str().to_string(), json!(String::from_utf8_lossy(v.as_bytes())));
    }
    let mut out = json!({
        "key": key,
        "value": value,
        "ttl": entry.ttl_left_secs(now),
        "type": type_name(&value, encoding.is_some()),
        "status": entry.status.as_u16(),
        "headers": headers,
        "stored_at": entry.stored_at_ms / 1000,
        "age": entry.age_secs(now),
        "fresh": entry.is_fresh(now),
        "record_ttl": record.ttl.map(|t| t.as_secs()),
        "scopes": scopes,
        "size": entry.body.len(),
    });
    if let (Some(enc), Some(obj)) = (encoding, out.as_object_mut()) {
        obj.insert("encoding".into(), json!(enc));
    }
    proxy::json(StatusCode::OK, &out)
}

/// The body as JSON when it is JSON, else a string, else base64.
fn body_value(body: &[u8]) -> (Value, Option<&'static str>) {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return (v, None);
    }
    match std::str::from_utf8(body) {
        Ok(s) => (Value::String(s.to_string()), None),
        Err(_) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
            Some("base64"),
        ),
    }
}

/// The reference's Python-style type name of a value.
fn type_name(v: &Value, binary: bool) -> &'static str {
    match v {
        _ if binary => "bytes",
        Value::Object(_) => "dict",
        Value::Array(_) => "list",
        Value::String(_) => "str",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        Value::Number(_) => "float",
        Value::Bool(_) => "bool",
        Value::Null => "NoneType",
    }
}

pub fn metrics(gw: &Gateway) -> Response<Body> {
    gw.metrics().set_store_health(gw.store().as_ref());
    let mut resp = Response::new(proxy::full(gw.metrics().encode()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// `2.5MB`, `5MB`, `16GB`: the reference's human-readable sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let mut rounded = (value * 10.0).round() / 10.0;
    if rounded >= 1024.0 && unit < UNITS.len() - 1 {
        rounded = ((rounded / 1024.0) * 10.0).round() / 10.0;
        unit += 1;
    }
    if rounded.fract() == 0.0 {
        format!("{}{}", rounded as u64, UNITS[unit])
    } else {
        format!("{rounded:.1}{}", UNITS[unit])
    }
}

/// `POST {prefix}/reload`: reads proxy.toml again and swaps it in, as
/// SIGHUP does. A file that does not load is a 422 with its place, and the
/// running config stays.
pub async fn reload(live: &std::sync::Arc<crate::reload::Live>) -> Response<Body> {
    use crate::reload::ReloadError;
    match live.reload().await {
        Ok(done) => proxy::json(
            StatusCode::OK,
            &serde_json::json!({
                "reloaded": true,
                "generation": done.generation,
                "source": done.source,
                "restart_required": done.restart_required,
            }),
        ),
        Err(ReloadError::Invalid(e)) => proxy::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({
                "error": "invalid_config",
                "message": e.to_string(),
                "file": e.file,
                "line": e.position.map(|p| p.0),
                "column": e.position.map(|p| p.1),
            }),
        ),
        Err(e @ ReloadError::NoSource) => proxy::json_error(StatusCode::CONFLICT, "not_reloadable", &e.to_string()),
        Err(e @ ReloadError::Certificate(_)) => {
            proxy::json_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_certificate", &e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_match_the_reference() {
        assert_eq!(human_bytes(2_621_440), "2.5MB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5MB");
        assert_eq!(human_bytes(16 * 1024 * 1024 * 1024), "16GB");
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1_048_575), "1MB");
    }

    #[test]
    fn python_type_names() {
        assert_eq!(type_name(&json!({"a": 1}), false), "dict");
        assert_eq!(type_name(&json!([1]), false), "list");
        assert_eq!(type_name(&json!("s"), false), "str");
        assert_eq!(type_name(&json!(1), false), "int");
        assert_eq!(type_name(&json!(1.5), false), "float");
        assert_eq!(type_name(&json!(true), false), "bool");
        assert_eq!(type_name(&Value::Null, false), "NoneType");
        assert_eq!(body_value(&[0xff, 0x00]).1, Some("base64"));
    }
}
