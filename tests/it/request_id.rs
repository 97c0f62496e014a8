//! `X-Request-Id`: the client's id (when well-formed) or a new one goes to
//! the backend and comes back on every answer: misses, hits (never a stored
//! id), writes, refusals, admin and health routes.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_and_the_client_see_the_same_id() {
    let w = World::std(Kind::Redis).await;
    let path = "/api/v1/tasks/4";
    let r = w.client.get_h(path, &[("x-request-id", "abc-123")]).await;
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let seen = w.backend.last_headers(path).expect("the backend was asked");
    assert_eq!(seen.get_all("x-request-id").iter().collect::<Vec<_>>(), ["abc-123"]);

    // None given: one is made, the same for the backend and the client.
    let pass = "/plain/rid";
    let r = w.client.get(pass).await;
    let made = r.header("x-request-id").expect("a made id").to_string();
    assert!(
        !made.is_empty() && made.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{made}"
    );
    let seen = w.backend.last_headers(pass).expect("the backend was asked");
    assert_eq!(seen.get("x-request-id").unwrap(), made.as_str());
    let again = w.client.get(pass).await;
    assert_ne!(again.header("x-request-id"), Some(made.as_str()), "ids are not reused");

    // A malformed one (too long, a space, two of them) is replaced, for both.
    for bad in [
        vec!["x".repeat(129)],
        vec!["has space".to_string()],
        vec!["a".into(), "b".into()],
    ] {
        let headers: Vec<(&str, &str)> = bad.iter().map(|v| ("x-request-id", v.as_str())).collect();
        let r = w.client.get_h(pass, &headers).await;
        let id = r.header("x-request-id").expect("an id").to_string();
        assert!(!bad.contains(&id), "{bad:?} kept");
        let seen = w.backend.last_headers(pass).unwrap();
        assert_eq!(seen.get_all("x-request-id").iter().collect::<Vec<_>>(), [id.as_str()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_carries_its_own_id_never_a_stored_one() {
    let w = World::std(Kind::Redis).await;
    let path = "/api/v1/tasks/9";
    // A backend that echoes (or sets) an id of its own on the stored answer.
    w.backend.on(
        "GET",
        path,
        Reply::new().header("x-request-id", "backend-echo").body(r#"{"id":9}"#),
    );
    let miss = w.client.get_h(path, &[("x-request-id", "first")]).await;
    assert_eq!(miss.header("x-request-id"), Some("first"));
    w.client.until_hit(path, &[]).await;
    let hit = w.client.get_h(path, &[("x-request-id", "second")]).await;
    assert_eq!(hit.x_cache(), Some("HIT"));
    assert_eq!(hit.header("x-request-id"), Some("second"));
    assert_eq!(hit.headers.get_all("x-request-id").iter().count(), 1);
    let anonymous = w.client.get(path).await;
    assert_eq!(anonymous.x_cache(), Some("HIT"));
    let id = anonymous.header("x-request-id").expect("a made id");
    assert!(!["first", "second", "backend-echo"].contains(&id), "{id}");
    // The id does not vary the entry: one backend call for all of these.
    assert_eq!(w.backend.count("GET", path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_health_writes_and_refusals_carry_an_id() {
    let w = World::std(Kind::Memory).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = w.client.get_h(path, &[("x-request-id", "ops-1")]).await;
        assert_eq!(r.header("x-request-id"), Some("ops-1"), "{path}");
        let r = w.client.get(path).await;
        assert!(r.header("x-request-id").is_some(), "{path}");
    }
    let write = w.client.put("/api/v1/tasks/1").await;
    assert!(write.header("x-request-id").is_some());
    // Refused at admission: a URI over `max_uri_bytes` (8 KiB).
    let long = format!("/plain/x?q={}", "a".repeat(9000));
    let refused = w.client.get_h(&long, &[("x-request-id", "r-9")]).await;
    assert_eq!(refused.status, 414);
    assert_eq!(refused.header("x-request-id"), Some("r-9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_with_an_id_too() {
    let template = format!("{}\n[admin]\nlisten = \"127.0.0.1:0\"\n", std_config());
    let w = World::start(Kind::Memory, &template).await;
    let admin = Client::new(w.proxy.admin_addr.expect("an admin listener"));
    let r = admin.get_h("/healthz", &[("x-request-id", "adm-7")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("adm-7"));
    assert!(admin.get("/nope").await.header("x-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_do_not_depend_on_the_access_log() {
    let template = format!("{}\n[access_log]\nenabled = false\n", std_config());
    let w = World::start(Kind::Memory, &template).await;
    let path = "/api/v1/tasks/5";
    let miss = w.client.get_h(path, &[("x-request-id", "no-log-1")]).await;
    assert_eq!(miss.header("x-request-id"), Some("no-log-1"));
    let seen = w.backend.last_headers(path).expect("the backend was asked");
    assert_eq!(seen.get("x-request-id").unwrap(), "no-log-1");
    w.client.until_hit(path, &[]).await;
    let hit = w.client.get(path).await;
    assert_eq!(hit.x_cache(), Some("HIT"));
    let id = hit.header("x-request-id").expect("an id on a hit");
    assert_ne!(id, "no-log-1");
}
