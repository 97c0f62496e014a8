//! Compression negotiated once (`[compression]`, `src/gateway/compression.rs`):
//! one backend request with cachegate's own `Accept-Encoding` fills one
//! entry in one coding; every client gets it as it accepts it (the stored
//! bytes, or decoded on the fly); equivalent and different spellings share
//! one variant; transformed representations carry weak tags; ranges apply
//! only to the representation sent; `no-transform`, small bodies and event
//! streams are left alone; a decompression bomb is never stored.
//! Decoded with real decoders (flate2, brotli, zstd).

use crate::common::*;
use std::io::{Read, Write};

both_stores!(
    one_backend_request_serves_every_accept_encoding,
    identity_answers_are_encoded_before_storing_in_each_coding,
    validators_head_and_ranges_follow_the_representation_sent,
    no_transform_small_bodies_and_event_streams_are_left_alone,
    a_decompression_bomb_is_never_stored_nor_decoded_whole,
);

const RULES: &str = r#"
[compression]
max_decoded_bytes = 1048576

[[rule]]
name = "task"
path = '^/api/v1/tasks/(?P<id>[^/]+)$'
key = "task:{id}"
ttl = 60

[[rule]]
name = "brotli"
path = '^/br/(?P<id>[^/]+)$'
key = "br:{id}"
ttl = 60
compress = "br"

[[rule]]
name = "zstd"
path = '^/zstd/(?P<id>[^/]+)$'
key = "zstd:{id}"
ttl = 60
compress = "zstd"

[[rule]]
name = "plain"
path = '^/plain/(?P<id>[^/]+)$'
key = "plain:{id}"
ttl = 60
compress = "off"

[[rule]]
name = "events"
path = '^/events$'
key = "events"
ttl = 60
"#;

/// A JSON body like the benchmark's task answers, about 4 KiB.
fn json_body() -> Vec<u8> {
    let tasks: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"id":"task-{i}","title":"Write the report {i}","done":{},"tags":["a","b"]}}"#,
                i % 2 == 0
            )
        })
        .collect();
    format!("[{}]", tasks.join(",")).into_bytes()
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body).read_to_end(&mut out).unwrap();
    out
}

fn unbrotli(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(body, 4096).read_to_end(&mut out).unwrap();
    out
}

fn unzstd(body: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(body).unwrap()
}

async fn world(kind: Kind, compression: &str) -> World {
    let rules = RULES.replace("[compression]\n", &format!("[compression]\n{compression}"));
    World::start(kind, &format!("{HEAD}\n{rules}")).await
}

fn vary_has_accept_encoding(r: &Resp) -> bool {
    r.headers
        .get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("accept-encoding"))
}

/// A decoded answer: the original bytes, no coding, chunked (no length), a
/// weak tag, `Vary: Accept-Encoding`.
fn assert_decoded(r: &Resp, original: &[u8], what: &str) {
    assert_eq!(r.status, 200, "{what}");
    assert_eq!(r.header("content-encoding"), None, "{what}");
    assert_eq!(
        r.header("content-length"),
        None,
        "{what}: decoded on the fly is chunked"
    );
    assert!(r.body == original, "{what}: the decoded body is the original");
    assert!(vary_has_accept_encoding(r), "{what}: Vary");
    if let Some(etag) = r.header("etag") {
        assert!(etag.starts_with("W/"), "{what}: a decoded answer's tag is weak: {etag}");
    }
}

async fn one_backend_request_serves_every_accept_encoding(kind: Kind) {
    let w = world(kind, "").await;
    let path = "/api/v1/tasks/1";
    let original = json_body();
    let encoded = gzip(&original);
    w.backend.on(
        "GET",
        path,
        Reply::new()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("vary", "Accept-Encoding")
            .header("etag", "\"v1\"")
            .body(encoded.clone()),
    );
    let spellings: [&[(&str, &str)]; 6] = [
        &[("accept-encoding", "gzip, br")],
        &[("accept-encoding", "br;q=1, gzip")],
        &[],
        &[("accept-encoding", "identity")],
        &[("accept-encoding", "gzip;q=0, br")],
        &[("accept-encoding", "*")],
    ];
    for (i, headers) in spellings.iter().enumerate() {
        let r = w.client.get_h(path, headers).await;
        assert_eq!(r.status, 200);
        let accepts_gzip = matches!(i, 0 | 1 | 5);
        if accepts_gzip {
            assert_eq!(r.header("content-encoding"), Some("gzip"), "{headers:?}");
            assert!(r.body == encoded, "{headers:?}: the stored bytes as they are");
            assert_eq!(r.header("content-length"), Some(encoded.len().to_string().as_str()));
            assert_eq!(
                r.header("etag"),
                Some("\"v1\""),
                "the backend's own coding keeps its tag"
            );
            assert!(vary_has_accept_encoding(&r));
            assert_eq!(gunzip(&r.body), original);
        } else {
            assert_decoded(&r, &original, &format!("{headers:?}"));
        }
        if i > 0 {
            assert_eq!(r.x_cache(), Some("HIT"), "{headers:?}");
        }
    }
    assert_eq!(w.backend.count("GET", path), 1, "one fill served every spelling");
    let asked = w.backend.last_headers(path).unwrap();
    assert_eq!(
        asked["accept-encoding"], "gzip, br, zstd",
        "cachegate's own Accept-Encoding"
    );
    if kind == Kind::Redis {
        assert_eq!(
            w.redis().entry_fields("task:1").await,
            vec!["anon".to_string()],
            "exactly one stored variant, no Accept-Encoding split"
        );
    }
    // Another Vary header still splits.
    let path = "/api/v1/tasks/2";
    w.backend.on(
        "GET",
        path,
        Reply::new()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("vary", "Accept-Encoding, Accept-Language")
            .body(encoded.clone()),
    );
    for lang in ["en", "de", "en"] {
        w.client
            .get_h(path, &[("accept-language", lang), ("accept-encoding", "gzip")])
            .await;
        w.client.get_h(path, &[("accept-language", lang)]).await;
    }
    assert_eq!(
        w.backend.count("GET", path),
        2,
        "one fill per language, none per coding"
    );
    if kind == Kind::Redis {
        assert_eq!(
            w.redis().entry_fields("task:2").await.len(),
            3,
            "a marker and two variants"
        );
    }
}

async fn identity_answers_are_encoded_before_storing_in_each_coding(kind: Kind) {
    let w = world(kind, "encode = \"gzip\"\n").await;
    let original = json_body();
    type Decode = fn(&[u8]) -> Vec<u8>;
    let cases: [(&str, &str, &str, Decode); 3] = [
        ("/api/v1/tasks/7", "task:7", "gzip", gunzip),
        ("/br/7", "br:7", "br", unbrotli),
        ("/zstd/7", "zstd:7", "zstd", unzstd),
    ];
    for (path, key, coding, decode) in cases {
        w.backend.on(
            "GET",
            path,
            Reply::new()
                .header("content-type", "application/json; charset=utf-8")
                .header("etag", "\"t7\"")
                .body(original.clone()),
        );
        // The first client takes no coding at all: it is still stored
        // encoded, and gets the identity bytes cachegate had in hand (not
        // decoded again: so with their length), with the encoded entry's
        // weak tag and Vary.
        let first = w.client.get(path).await;
        assert_eq!(first.status, 200, "{path}");
        assert_eq!(first.header("content-encoding"), None, "{path}");
        assert!(first.body == original, "{path}: the identity body");
        let len = original.len().to_string();
        assert_eq!(
            first.header("content-length"),
            Some(len.as_str()),
            "{path}: not decoded again"
        );
        assert_eq!(first.header("etag"), Some("W/\"t7\""), "{path}");
        assert!(vary_has_accept_encoding(&first), "{path}");
        assert_eq!(first.cache_status(), "cachegate; fwd=miss; stored", "{path}");
        let enc = w.client.get_h(path, &[("accept-encoding", coding)]).await;
        assert_eq!(enc.x_cache(), Some("HIT"), "{path}");
        assert_eq!(enc.header("content-encoding"), Some(coding), "{path}");
        assert_eq!(enc.header("etag"), Some("W/\"t7\""), "{path}: transformed, so weak");
        assert!(vary_has_accept_encoding(&enc), "{path}");
        assert!(enc.body.len() < original.len() / 3, "{path}: {} bytes", enc.body.len());
        assert_eq!(enc.header("content-length"), Some(enc.body.len().to_string().as_str()));
        assert_eq!(decode(&enc.body), original, "{path}");
        let plain = w.client.get_h(path, &[("accept-encoding", "identity")]).await;
        assert_decoded(&plain, &original, path);
        assert_eq!(w.backend.count("GET", path), 1, "{path}");
        if kind == Kind::Redis {
            let stored = w.redis().hgetall(key).await;
            let entry = &stored["anon"];
            assert!(
                entry.len() < original.len() / 2,
                "{key}: stored {} bytes for {} of JSON",
                entry.len(),
                original.len()
            );
        }
    }
    // `compress = "off"` keeps the rule's answers as they came.
    w.backend.on(
        "GET",
        "/plain/1",
        Reply::new()
            .header("content-type", "application/json")
            .body(original.clone()),
    );
    w.client.get("/plain/1").await;
    let r = w.client.get_h("/plain/1", &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.x_cache(), Some("HIT"));
    assert_eq!(r.header("content-encoding"), None);
    assert!(r.body == original);
    let scrape = w.client.scrape().await;
    let stored_in = scrape.scalar("cachegate_compression_bytes_total", &[("stage", "identity")]);
    let stored_out = scrape.scalar("cachegate_compression_bytes_total", &[("stage", "encoded")]);
    assert_eq!(stored_in, 3.0 * original.len() as f64);
    assert!(
        stored_out > 0.0 && stored_out < stored_in / 3.0,
        "{stored_out} of {stored_in}"
    );
}

async fn validators_head_and_ranges_follow_the_representation_sent(kind: Kind) {
    let w = world(kind, "").await;
    let path = "/api/v1/tasks/3";
    let original = json_body();
    let encoded = gzip(&original);
    w.backend.on(
        "GET",
        path,
        Reply::new()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("etag", "\"r3\"")
            .body(encoded.clone()),
    );
    w.client.get_h(path, &[("accept-encoding", "gzip")]).await;
    // If-None-Match, weak comparison: each form's tag (and the other's)
    // gives a 304, whose tag is the form's own.
    for (tag, ae) in [
        ("\"r3\"", "gzip"),
        ("W/\"r3\"", "gzip"),
        ("W/\"r3\"", ""),
        ("\"r3\"", ""),
    ] {
        let mut headers = vec![("if-none-match", tag)];
        if !ae.is_empty() {
            headers.push(("accept-encoding", ae));
        }
        let r = w.client.get_h(path, &headers).await;
        assert_eq!(r.status, 304, "{tag} with {ae:?}");
        let expect = if ae.is_empty() { "W/\"r3\"" } else { "\"r3\"" };
        assert_eq!(r.header("etag"), Some(expect), "{tag} with {ae:?}");
    }
    let r = w.client.get_h(path, &[("if-none-match", "\"other\"")]).await;
    assert_decoded(&r, &original, "a tag that does not match");
    // HEAD: each form's head, no body.
    let head = w.client.head_h(path, &[("accept-encoding", "gzip")]).await;
    assert_eq!(head.header("content-encoding"), Some("gzip"));
    assert_eq!(head.header("content-length"), Some(encoded.len().to_string().as_str()));
    assert!(head.body.is_empty());
    let head = w.client.head(path).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), None);
    assert_eq!(
        head.header("content-length"),
        None,
        "the decoded length is not known ahead"
    );
    assert!(head.body.is_empty());
    // Range: on the stored form, a range of its (encoded) bytes, labelled
    // as such; on the decoded form, ignored: the whole decoded body.
    let r = w
        .client
        .get_h(path, &[("accept-encoding", "gzip"), ("range", "bytes=0-9")])
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(r.body == encoded[..10]);
    let r = w.client.get_h(path, &[("range", "bytes=0-9")]).await;
    assert_decoded(&r, &original, "a range on the decoded form");
    assert_eq!(w.backend.count("GET", path), 1);
}

async fn no_transform_small_bodies_and_event_streams_are_left_alone(kind: Kind) {
    let w = world(kind, "encode = \"gzip\"\n").await;
    let original = json_body();
    w.backend.on(
        "GET",
        "/api/v1/tasks/nt",
        Reply::new()
            .header("content-type", "application/json")
            .header("cache-control", "no-transform")
            .header("etag", "\"nt\"")
            .body(original.clone()),
    );
    w.backend.on(
        "GET",
        "/api/v1/tasks/small",
        Reply::new()
            .header("content-type", "application/json")
            .body("{\"id\":1}"),
    );
    w.backend.on(
        "GET",
        "/api/v1/tasks/png",
        Reply::new().header("content-type", "image/png").body(original.clone()),
    );
    for (path, body) in [
        ("/api/v1/tasks/nt", &original[..]),
        ("/api/v1/tasks/small", b"{\"id\":1}"),
        ("/api/v1/tasks/png", &original[..]),
    ] {
        w.client.get(path).await;
        let r = w.client.get_h(path, &[("accept-encoding", "gzip")]).await;
        assert_eq!(r.x_cache(), Some("HIT"), "{path}");
        assert_eq!(r.header("content-encoding"), None, "{path}");
        assert!(r.body == body, "{path}");
        assert_eq!(r.header("content-length"), Some(body.len().to_string().as_str()));
        if path.ends_with("nt") {
            assert_eq!(r.header("etag"), Some("\"nt\""), "untouched, so still strong");
        }
    }
    // An event stream passes through as it comes, never stored nor encoded.
    w.backend.on(
        "GET",
        "/events",
        Reply::new()
            .header("content-type", "text/event-stream")
            .chunked(["data: one\n\n", "data: two\n\n"]),
    );
    for _ in 0..2 {
        let r = w.client.get_h("/events", &[("accept-encoding", "gzip")]).await;
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.text(), "data: one\n\ndata: two\n\n");
    }
    assert_eq!(w.backend.count("GET", "/events"), 2);
}

async fn a_decompression_bomb_is_never_stored_nor_decoded_whole(kind: Kind) {
    // 32 MiB of zeros gzip to ~32 KiB; the cap is 1 MiB decoded.
    let w = world(kind, "").await;
    let path = "/api/v1/tasks/bomb";
    let bomb = gzip(&vec![0u8; 32 << 20]);
    assert!(bomb.len() < 64 * 1024);
    w.backend.on(
        "GET",
        path,
        Reply::new()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(bomb.clone()),
    );
    let r = w.client.get_h(path, &[("accept-encoding", "gzip")]).await;
    assert!(r.body == bomb, "a client that takes gzip gets the bytes as they came");
    assert_eq!(r.cache_status(), "cachegate; fwd=miss; detail=decoded-too-large");
    let again = w.client.get_h(path, &[("accept-encoding", "gzip")]).await;
    assert_eq!(again.x_cache(), Some("MISS"), "never stored");
    // One that does not: the decoding stops at the cap, and the answer
    // breaks off rather than pass for complete.
    let decoded = w.client.try_send("GET", path, vec![], empty()).await;
    assert!(decoded.is_err(), "a bomb decoded past the cap must break off");
    assert_eq!(w.backend.count("GET", path), 3);

    // Streamed (chunked, no length: the copy is stored in the background
    // once complete) the same checks hold. A sound gzip body is stored...
    let sound = gzip(&json_body());
    let (half, rest) = sound.split_at(sound.len() / 2);
    let streamed = |body: Vec<Vec<u8>>, coding: &str| {
        Reply::new()
            .header("content-type", "application/json")
            .header("content-encoding", coding)
            .chunked(body)
    };
    w.backend.on(
        "GET",
        "/api/v1/tasks/sound",
        streamed(vec![half.to_vec(), rest.to_vec()], "gzip"),
    );
    w.backend
        .on("GET", "/api/v1/tasks/bomb2", streamed(vec![bomb.clone()], "gzip"));
    // deflate is a coding cachegate does not decode: passed, never stored.
    w.backend.on(
        "GET",
        "/api/v1/tasks/deflate",
        streamed(vec![b"x\x9c\x03\x00".to_vec()], "deflate"),
    );
    for p in ["/api/v1/tasks/sound", "/api/v1/tasks/bomb2", "/api/v1/tasks/deflate"] {
        let r = w.client.get_h(p, &[("accept-encoding", "gzip, deflate")]).await;
        assert_eq!(r.status, 200, "{p}");
        assert_eq!(r.x_cache(), Some("MISS"), "{p}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for (p, expected, what) in [
        ("/api/v1/tasks/sound", "HIT", "a sound streamed body is stored"),
        ("/api/v1/tasks/bomb2", "MISS", "a streamed bomb is never stored"),
        ("/api/v1/tasks/deflate", "MISS", "an undecodable coding is never stored"),
    ] {
        let r = w.client.get_h(p, &[("accept-encoding", "gzip, deflate")]).await;
        assert_eq!(r.x_cache(), Some(expected), "{what}");
    }
    assert_eq!(w.backend.count("GET", "/api/v1/tasks/sound"), 1);
    assert_eq!(w.backend.count("GET", "/api/v1/tasks/bomb2"), 2);
    assert_eq!(w.backend.count("GET", "/api/v1/tasks/deflate"), 2);
    // The proxy still answers.
    assert_eq!(w.client.get("/metrics").await.status, 200);
}

/// A bad `[compression]` value or rule `compress` stops `cachegate check`
/// with exit 2 and its place in the file.
#[test]
fn bad_compression_settings_exit_2_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[compression]\nencode = \"lzma\"\n", "proxy.toml:2:10", "encode"),
        (
            "[compression]\nencode = \"gzip\"\nlevel = 12\n",
            "proxy.toml:3:9",
            "level",
        ),
        ("[compression]\nmin_bytes = -1\n", "proxy.toml:2:13", "min_bytes"),
        ("[compression]\ntypes = [\"json\"]\n", "proxy.toml:2:9", "types"),
        (
            "[compression]\nbackend_encodings = [\"deflate\"]\n",
            "proxy.toml:2:21",
            "deflate",
        ),
        (
            "[[rule]]\nname = \"t\"\npath = '^/t$'\nkey = \"t\"\ncompress = \"gz\"\n",
            "proxy.toml:5:12",
            "compress",
        ),
    ];
    for (text, place, word) in cases {
        let file = dir.path().join("proxy.toml");
        std::fs::write(&file, format!("[backend]\nurl = \"http://127.0.0.1:1\"\n{text}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cachegate"))
            .args(["check", "--config", file.to_str().unwrap()])
            .env_remove("REDIS_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        // Two lines of [backend] come first.
        let (file_part, line_col) = place.split_once(':').unwrap();
        let (line, col) = line_col.split_once(':').unwrap();
        let shifted = format!("{file_part}:{}:{col}", line.parse::<u32>().unwrap() + 2);
        assert!(stderr.contains(&shifted), "{text}: expected {shifted} in {stderr}");
        assert!(stderr.contains(word), "{text}: {stderr}");
    }
}
