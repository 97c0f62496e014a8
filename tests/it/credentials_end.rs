//! Credentials that end: a logout purges every entry of the caller's
//! credential (and nobody else's), the admin API purges one credential's
//! entries given the credential itself, and `credential_max_ttl` caps how
//! long a credential-scoped entry is served.

use crate::common::*;
use std::time::Duration;

both_stores!(
    after_a_logout_the_revoked_token_gets_the_backends_401,
    the_admin_api_purges_one_credentials_entries,
    credential_max_ttl_caps_credential_scoped_entries_only,
);

const TOKEN: &str = "credentials-end-admin-token-0123456789abcdef";

fn config(extra_cache: &str) -> String {
    format!(
        r#"edition = "business"

{HEAD}
[cache]
{extra_cache}

[admin]

{}
[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<task_id>[^/]+)$'
key = "task:{{task_id}}"
ttl = 300

[[invalidate]]
name = "logout"
methods = ["POST"]
path = '^/api/v1/auth/logout$'
purge_credential = true
"#,
        crate::common::admin::token_toml("ops", TOKEN, &["read", "purge"])
    )
}

const ALICE: (&str, &str) = ("authorization", "Bearer alice");
const BOB: (&str, &str) = ("authorization", "Bearer bob");

/// GET twice (HIT), `POST /auth/logout`, GET again: the backend is asked
/// and its 401 reaches the client. Another caller's entries, and the
/// anonymous ones, stay.
async fn after_a_logout_the_revoked_token_gets_the_backends_401(kind: Kind) {
    let w = World::start(kind, &config("")).await;
    let tasks = ["/api/v1/tasks/1", "/api/v1/tasks/2"];
    for path in tasks {
        for who in [&[ALICE][..], &[BOB], &[]] {
            assert_eq!(
                w.client.get_h(path, who).await.x_cache(),
                Some("MISS"),
                "{path} {who:?}"
            );
            assert_eq!(w.client.get_h(path, who).await.x_cache(), Some("HIT"), "{path} {who:?}");
        }
    }
    let logout = w.client.send("POST", "/api/v1/auth/logout", &[ALICE], full("")).await;
    assert_eq!(logout.status, 200);
    // The backend no longer accepts the token (nor any, to show who is asked).
    for path in tasks {
        w.backend
            .on("GET", path, Reply::new().status(401).body(r#"{"detail":"revoked"}"#));
    }
    for path in tasks {
        let after = w.client.get_h(path, &[ALICE]).await;
        assert_eq!(
            after.status, 401,
            "{path}: the revoked token is not served from the cache"
        );
        assert_eq!(w.backend.count("GET", path), 4, "{path}: the backend was asked");
        for who in [&[BOB][..], &[]] {
            let other = w.client.get_h(path, who).await;
            assert_eq!(
                (other.status.as_u16(), other.x_cache()),
                (200, Some("HIT")),
                "{path} {who:?}: another caller's entry stays"
            );
        }
    }
    // A later normal login and read: stored and served again.
    for path in tasks {
        w.backend.reset(path);
        assert_eq!(w.client.get_h(path, &[ALICE]).await.x_cache(), Some("MISS"));
        assert_eq!(w.client.get_h(path, &[ALICE]).await.x_cache(), Some("HIT"));
    }
    // A logout without credentials purges nothing.
    w.client.send("POST", "/api/v1/auth/logout", &[], full("")).await;
    assert_eq!(w.client.get_h(tasks[0], &[]).await.x_cache(), Some("HIT"));
    assert_eq!(w.client.get_h(tasks[0], &[ALICE]).await.x_cache(), Some("HIT"));
}

async fn the_admin_api_purges_one_credentials_entries(kind: Kind) {
    let w = World::start(kind, &config("")).await;
    let path = "/api/v1/tasks/1";
    for who in [&[ALICE][..], &[BOB]] {
        w.client.get_h(path, who).await;
        assert_eq!(w.client.get_h(path, who).await.x_cache(), Some("HIT"));
    }
    let auth = format!("Bearer {TOKEN}");
    let body = r#"{"headers": {"Authorization": "Bearer alice"}}"#;
    let r = w
        .client
        .send(
            "POST",
            "/api/v1/cache/scope/purge",
            &[("authorization", &auth)],
            full(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["purged"], 1);
    assert!(
        !r.text().contains("alice"),
        "the credential is never echoed: {}",
        r.text()
    );
    assert_eq!(r.json()["scope"], w.proxy.scope_of(&[ALICE]));
    assert_eq!(w.client.get_h(path, &[ALICE]).await.x_cache(), Some("MISS"));
    assert_eq!(w.client.get_h(path, &[BOB]).await.x_cache(), Some("HIT"));
    assert_eq!(w.client.get_h(path, &[ALICE]).await.x_cache(), Some("HIT"));
    // No credential header in the body: 400, nothing purged.
    let r = w
        .client
        .send(
            "POST",
            "/api/v1/cache/scope/purge",
            &[("authorization", &auth)],
            full(r#"{"headers": {"X-Other": "1"}}"#),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = w
        .client
        .send(
            "POST",
            "/api/v1/cache/scope/purge",
            &[("authorization", &auth)],
            full("nope"),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Without a token: 401.
    let r = w
        .client
        .send("POST", "/api/v1/cache/scope/purge", &[], full(body))
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(w.client.get_h(path, &[ALICE]).await.x_cache(), Some("HIT"));
}

async fn credential_max_ttl_caps_credential_scoped_entries_only(kind: Kind) {
    let w = World::start(kind, &config("credential_max_ttl = 30")).await;
    let path = "/api/v1/tasks/1";
    w.client.get_h(path, &[ALICE]).await;
    let hit = w.client.get_h(path, &[ALICE]).await;
    assert_eq!(hit.x_cache(), Some("HIT"));
    let left = |r: &Resp| -> u64 {
        let status = r.cache_status();
        let ttl = status
            .split("ttl=")
            .nth(1)
            .unwrap_or_else(|| panic!("no ttl: {status}"));
        ttl.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(left(&hit) <= 30, "capped at 30 s: {}", hit.cache_status());
    let store = w.proxy.gateway().store().clone();
    let record = store.record("task:1").await.unwrap().unwrap();
    assert!(record.ttl.unwrap() <= Duration::from_secs(30), "{:?}", record.ttl);
    // The anonymous entry keeps the rule's 300 s.
    w.client.get(path).await;
    let anon = w.client.get(path).await;
    assert_eq!(anon.x_cache(), Some("HIT"));
    assert!(left(&anon) > 30, "{}", anon.cache_status());
}
