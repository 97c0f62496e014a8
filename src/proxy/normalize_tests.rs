//! Tests of `normalize.rs`: the normal form of paths and queries, and
//! 50,000 generated paths checked against a reference implementation.

use super::*;

fn norm(p: &str) -> Result<String, PathError> {
    normalize_path(p).map(Cow::into_owned)
}

fn assert_borrowed(p: &str) {
    match normalize_path(p) {
        Ok(Cow::Borrowed(out)) => assert_eq!(out, p),
        other => panic!("{p:?} should be returned borrowed, got {other:?}"),
    }
}

fn assert_owned(p: &str, expected: &str) {
    match normalize_path(p) {
        Ok(Cow::Owned(out)) => assert_eq!(out, expected, "input {p:?}"),
        other => panic!("{p:?} should become {expected:?} (owned), got {other:?}"),
    }
}

/// Everything a normal path must satisfy.
fn assert_invariants(out: &str) {
    let b = out.as_bytes();
    assert_eq!(b.first(), Some(&b'/'), "{out:?} must start with '/'");
    assert!(!out.contains("//"), "{out:?} contains '//'");
    for seg in out[1..].split('/') {
        assert!(seg != "." && seg != "..", "{out:?} has a dot segment");
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = &b[i + 1..i + 3];
            assert!(
                hex.iter().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)),
                "{out:?} has a non-uppercase escape"
            );
            let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(!is_unreserved(v), "{out:?} has an escaped unreserved character");
            assert_ne!(v, 0, "{out:?} has %00");
            i += 3;
        } else {
            assert!(b[i] == b'/' || is_pchar(b[i]), "{out:?} has a forbidden byte");
            i += 1;
        }
    }
}

/// Normalising the output again returns it, borrowed.
fn assert_idempotent(input: &str, out: &str) {
    match normalize_path(out) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, out),
        other => panic!("{input:?} -> {out:?} is not a fixed point: {other:?}"),
    }
}

/// An independent reference: escapes normalised, slashes merged, then the
/// RFC 3986 §5.2.4 input/output-buffer algorithm as written in the RFC.
fn reference(p: &str) -> Result<String, PathError> {
    if !p.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Step 2 and 3, byte by byte.
    let b = p.as_bytes();
    let mut s = String::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(PathError::BadEscape);
                }
                let v = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
                if v == 0 {
                    return Err(PathError::EncodedNul);
                }
                if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                    s.push(char::from(v));
                } else {
                    s.push_str(&format!("%{v:02X}"));
                }
                i += 3;
            }
            c if c == b'/' || c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@[]".contains(&c) => {
                s.push(char::from(c));
                i += 1;
            }
            c => return Err(PathError::ForbiddenByte(c)),
        }
    }
    // Merge slashes.
    while s.contains("//") {
        s = s.replace("//", "/");
    }
    // RFC 3986 §5.2.4.
    let mut input = s.as_str();
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/" } else { &input[3..] };
            match output.rfind('/') {
                Some(j) => output.truncate(j),
                None => output.clear(),
            }
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |j| j + start);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    Ok(output)
}

// ---- step 1: absolute paths only ----

#[test]
fn relative_paths_are_refused() {
    for p in ["", "a", "a/b", "*", "%2Fa", ".", "../a", "?x=1", "http://h/a"] {
        assert_eq!(normalize_path(p), Err(PathError::NotAbsolute), "{p:?}");
    }
}

// ---- step 2: percent-escapes ----

#[test]
fn malformed_escapes_are_refused() {
    for p in [
        "/%", "/%2", "/%zz", "/%2g", "/%g2", "/a%", "/a%4", "/%%41", "/%%", "/a/%-1", "/%+1", "/% 1", "/%2F%",
        "/%2F%a", "/a/b%", "/%é",
    ] {
        assert_eq!(normalize_path(p), Err(PathError::BadEscape), "{p:?}");
    }
}

#[test]
fn unreserved_escapes_are_decoded() {
    let cases = [
        ("/%41", "/A"),
        ("/%61", "/a"),
        ("/%5a%7A", "/Zz"),
        ("/%30%39", "/09"),
        ("/%2d", "/-"),
        ("/%2D", "/-"),
        ("/%5f", "/_"),
        ("/%7e", "/~"),
        ("/%7E", "/~"),
        ("/%7euser/x", "/~user/x"),
        ("/a%2eb", "/a.b"),
        ("/task/%31%32%33", "/task/123"),
    ];
    for (p, expected) in cases {
        assert_owned(p, expected);
    }
}

#[test]
fn other_escapes_stay_encoded_uppercased() {
    let cases = [
        ("/%2f", "/%2F"),
        ("/%3a", "/%3A"),
        ("/a%2fb", "/a%2Fb"),
        ("/%c3%a9", "/%C3%A9"),
        ("/%C3%a9", "/%C3%A9"),
        ("/%5c", "/%5C"),
        ("/%3f", "/%3F"),
        ("/%23", "/%23"),
        ("/%2b", "/%2B"),
        ("/%ff", "/%FF"),
        ("/%0a%0d", "/%0A%0D"),
        ("/%7f", "/%7F"),
    ];
    for (p, expected) in cases {
        if p == expected {
            assert_borrowed(p);
        } else {
            assert_owned(p, expected);
        }
    }
    for p in [
        "/%2F", "/%3A", "/%25", "/%20", "/%C3%A9", "/a%2Fb", "/%0A", "/%FF", "/%5C",
    ] {
        assert_borrowed(p);
    }
}

#[test]
fn decoding_is_a_single_pass() {
    // %25 is '%', which is not unreserved: it stays, and what follows is literal.
    for p in ["/%252e", "/%252E%252E", "/%2541", "/%252F", "/a/%2525"] {
        assert_borrowed(p);
    }
    assert_owned("/%252e/%2e", "/%252e/");
    assert_owned("/%25%32%65", "/%252e");
}

#[test]
fn encoded_slash_is_not_a_separator() {
    assert_borrowed("/a%2F..%2Fadmin");
    assert_owned("/a%2f..%2fadmin", "/a%2F..%2Fadmin");
    assert_owned("/a%2F%2e%2e%2Fadmin", "/a%2F..%2Fadmin");
    assert_borrowed("/public/..%2Fadmin");
    assert_owned("/public/..%2fadmin", "/public/..%2Fadmin");
    // The segment `%2F` is a segment like any other: `..` drops it.
    assert_owned("/a/%2f/../b", "/a/b");
    assert_owned("/a/%2F/..", "/a/");
}

#[test]
fn mixed_case_hex_gives_one_key() {
    let forms = [
        "/a%2fb%3a",
        "/a%2Fb%3A",
        "/a%2fb%3A",
        "/a%2Fb%3a",
        "/%61%2f%62%3a",
        "//a%2Fb%3a",
    ];
    for p in forms {
        assert_eq!(norm(p).as_deref(), Ok("/a%2Fb%3A"), "{p:?}");
    }
}

// ---- step 3: forbidden bytes ----

#[test]
fn encoded_nul_is_refused() {
    for p in ["/%00", "/a/%00", "/a%00b", "/%00/..", "/ok/%2e%00"] {
        assert_eq!(normalize_path(p), Err(PathError::EncodedNul), "{p:?}");
    }
}

#[test]
fn forbidden_raw_bytes_are_refused() {
    let mut bad: Vec<u8> = (0x00..=0x1F).collect();
    bad.push(0x7F);
    bad.extend_from_slice(b" \"#<>?\\^`{|}");
    for b in bad {
        for p in [
            format!("/{}", char::from(b)),
            format!("/a{}b", char::from(b)),
            format!("/a/b/{}", char::from(b)),
        ] {
            assert_eq!(normalize_path(&p), Err(PathError::ForbiddenByte(b)), "{p:?}");
        }
    }
    // Also when the rest of the path would need rewriting.
    assert_eq!(normalize_path("//a/../\\b"), Err(PathError::ForbiddenByte(b'\\')));
    assert_eq!(normalize_path("/%2e/a b"), Err(PathError::ForbiddenByte(b' ')));
}

#[test]
fn backslash_is_refused_not_a_separator() {
    for p in ["/a\\b", "/a\\..\\b", "/..\\admin", "/\\", "/a/%2e%2e\\"] {
        assert_eq!(normalize_path(p), Err(PathError::ForbiddenByte(b'\\')), "{p:?}");
    }
    // Encoded, it is data: kept as %5C.
    assert_borrowed("/a%5C..%5Cb");
}

#[test]
fn non_ascii_raw_bytes_are_refused() {
    assert_eq!(normalize_path("/é"), Err(PathError::ForbiddenByte(0xC3)));
    assert_eq!(normalize_path("/a/日本"), Err(PathError::ForbiddenByte(0xE6)));
    assert_eq!(normalize_path("/a\u{0}b"), Err(PathError::ForbiddenByte(0)));
}

#[test]
fn every_allowed_raw_byte_is_kept() {
    assert_borrowed("/ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~");
    assert_borrowed("/!$&'()*+,;=:@");
    assert_borrowed("/a:b@c/d;e=f/g,h+i/'j'(k)*l!m$n&o");
    assert_borrowed("/user@example.com/~me/v1.2.3");
    assert_borrowed("/api/v1/tasks/[12]");
}

// ---- step 4: slashes and dot segments ----

#[test]
fn slashes_are_merged() {
    let cases = [
        ("//", "/"),
        ("///", "/"),
        ("//a", "/a"),
        ("/a//b", "/a/b"),
        ("/a///b", "/a/b"),
        ("/a//", "/a/"),
        ("//a//b//", "/a/b/"),
        ("/a/%2F//b", "/a/%2F/b"),
    ];
    for (p, expected) in cases {
        assert_owned(p, expected);
    }
}

#[test]
fn dot_segments_are_removed() {
    let cases = [
        ("/.", "/"),
        ("/..", "/"),
        ("/./", "/"),
        ("/../", "/"),
        ("/../a", "/a"),
        ("/../../a/b", "/a/b"),
        ("/a/.", "/a/"),
        ("/a/..", "/"),
        ("/a/b/.", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/a/b/../", "/a/"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/a/b/c/./../../g", "/a/g"),
        ("/mid/content=5/../6", "/mid/6"),
        ("/a/b/../../..", "/"),
        ("/a/b/../../../c", "/c"),
        ("/a/..//b", "/b"),
        ("/a//..", "/"),
        ("/a/.//./b", "/a/b"),
        ("/a/%2e", "/a/"),
        ("/a/%2E%2e", "/"),
        ("/a/%2e%2E/b", "/b"),
        ("/a/.%2e/b", "/b"),
        ("/a/%2e./b", "/b"),
        ("/a/%2E/b", "/a/b"),
        ("/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"),
        ("/public/%2e%2e/admin", "/admin"),
        ("/public//..//admin", "/admin"),
    ];
    for (p, expected) in cases {
        assert_owned(p, expected);
    }
}

#[test]
fn dot_like_segments_are_ordinary() {
    for p in [
        "/...", "/.a", "/a.", "/..a", "/a..", "/.../b", "/a/.../", "/..%2F", "/.%2F", "/.~", "/.;", "/..;/a",
    ] {
        assert_borrowed(p);
    }
    assert_owned("/%2e%2e%2e", "/...");
    assert_owned("/%2ea", "/.a");
}

#[test]
fn trailing_slash_is_kept() {
    assert_borrowed("/a/b/");
    assert_borrowed("/a/");
    assert_borrowed("/");
    assert_owned("/a/b//", "/a/b/");
    assert_owned("/a/./b/", "/a/b/");
    assert_eq!(norm("/a/b").as_deref(), Ok("/a/b"));
}

#[test]
fn equivalent_spellings_give_one_path() {
    let forms = [
        "/api/tasks/1",
        "//api/tasks/1",
        "/api//tasks/1",
        "/api/./tasks/1",
        "/api/x/../tasks/1",
        "/api/%74asks/1",
        "/%61%70%69/tasks/%31",
        "/api/%2e/tasks/1",
        "/api/x/%2E%2e/tasks/1",
        "/../api/tasks/1",
        "/api/tasks/./1",
    ];
    for p in forms {
        assert_eq!(norm(p).as_deref(), Ok("/api/tasks/1"), "{p:?}");
    }
}

// ---- step 5: borrowed when already normal ----

#[test]
fn normal_paths_are_borrowed() {
    for p in [
        "/",
        "/a",
        "/a/b",
        "/a/b/",
        "/api/v1/tasks/123",
        "/a%2Fb",
        "/%C3%A9t%C3%A9",
        "/a%20b",
        "/%25",
        "/search;q=1",
        "/a-b_c.d~e",
    ] {
        assert_borrowed(p);
    }
}

#[test]
fn changed_paths_are_owned() {
    for p in ["//", "/a/.", "/a/..", "/%41", "/%2f", "/a//b", "/./a", "/%7e"] {
        assert!(matches!(normalize_path(p), Ok(Cow::Owned(_))), "{p:?}");
    }
}

// ---- path and query ----

#[test]
fn query_is_kept_byte_for_byte() {
    let cases = [
        ("/a//b?x=//%2e&y=%2f", "/a/b?x=//%2e&y=%2f"),
        ("/a/..?q", "/?q"),
        ("/%2e%2e/b?%41=%2E%2E/..", "/b?%41=%2E%2E/.."),
        ("/a/./?", "/a/?"),
        ("/%7e?a?b", "/~?a?b"),
    ];
    for (pq, expected) in cases {
        match normalize_path_and_query(pq) {
            Ok(Cow::Owned(out)) => assert_eq!(out, expected, "{pq:?}"),
            other => panic!("{pq:?} should become {expected:?}, got {other:?}"),
        }
    }
    // The query is not the path's business: not validated, not decoded.
    for pq in ["/a?b//c", "/a?", "/?x=%zz", "/a?x=<>\\ ", "/a?/../b", "/a%2F?%2f", "/"] {
        match normalize_path_and_query(pq) {
            Ok(Cow::Borrowed(out)) => assert_eq!(out, pq),
            other => panic!("{pq:?} should be borrowed, got {other:?}"),
        }
    }
}

#[test]
fn path_and_query_errors_come_from_the_path() {
    assert_eq!(normalize_path_and_query("?x"), Err(PathError::NotAbsolute));
    assert_eq!(normalize_path_and_query(""), Err(PathError::NotAbsolute));
    assert_eq!(normalize_path_and_query("/%zz?x"), Err(PathError::BadEscape));
    assert_eq!(normalize_path_and_query("/%00?x"), Err(PathError::EncodedNul));
    assert_eq!(normalize_path_and_query("/a b?x"), Err(PathError::ForbiddenByte(b' ')));
    assert_eq!(normalize_path_and_query("/a#f?x"), Err(PathError::ForbiddenByte(b'#')));
}

// ---- errors ----

#[test]
fn errors_have_short_messages() {
    assert_eq!(
        PathError::NotAbsolute.to_string(),
        "the request path must start with '/'"
    );
    assert!(PathError::BadEscape.to_string().contains("percent-escape"));
    assert!(PathError::EncodedNul.to_string().contains("%00"));
    assert_eq!(
        PathError::ForbiddenByte(b'\\').to_string(),
        "character '\\' is not allowed in the request path"
    );
    assert_eq!(
        PathError::ForbiddenByte(b' ').to_string(),
        "byte 0x20 is not allowed in the request path"
    );
    assert_eq!(
        PathError::ForbiddenByte(0xC3).to_string(),
        "byte 0xC3 is not allowed in the request path"
    );
}

// ---- fixed point and invariants ----

const TRICKY: &[&str] = &[
    "/",
    "//",
    "/.",
    "/..",
    "/%2e",
    "/%2e%2e",
    "/%2E%2e/",
    "/a/b/c/./../../g",
    "/a//b///c////",
    "/a/%2f/%2F/..",
    "/a%2f%2e%2e%2fb",
    "/%252e%252e/",
    "/%25%32%65%25%32%65",
    "/%7e%41%2d%5f",
    "/%c3%a9/%C3%a9/..",
    "/a/.../..../.",
    "/./././",
    "/../../../",
    "/a/b/../../../../c/./d/",
    "/;/..;/a",
    "/%3b/%2e%2e%3b",
    "/%2e%2e%2f%2e%2e%2fetc",
    "/x/.%2E/.%2e/%2E./y",
];

#[test]
fn tricky_inputs_reach_a_fixed_point() {
    for &p in TRICKY {
        let out = norm(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert_invariants(&out);
        assert_idempotent(p, &out);
        assert_eq!(
            reference(p).as_deref(),
            Ok(out.as_str()),
            "reference disagrees on {p:?}"
        );
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "/", "//", ".", "..", "%2e", "%2E", "%2f", "%2F", "%41", "a", "b", "~", "%7e", "%25", "%", "[", "]",
];

#[test]
fn random_paths_reach_a_fixed_point() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut borrowed, mut bad_escape, mut relative) = (0, 0, 0, 0);
    for n in 0..50_000 {
        let mut p = String::new();
        // Half the paths are forced absolute; the rest start with whatever piece comes.
        if n % 2 == 0 {
            p.push('/');
        }
        for _ in 0..=rng.below(12) {
            p.push_str(PIECES[rng.below(PIECES.len())]);
        }
        let got = normalize_path(&p);
        assert_eq!(
            got.as_ref().map(|c| c.as_ref()),
            reference(&p).as_deref(),
            "reference disagrees on {p:?}"
        );
        match got {
            Ok(out) => {
                ok += 1;
                if matches!(out, Cow::Borrowed(_)) {
                    borrowed += 1;
                }
                assert_invariants(&out);
                assert_idempotent(&p, &out);
            }
            Err(PathError::BadEscape) => bad_escape += 1,
            Err(PathError::NotAbsolute) => {
                assert!(!p.starts_with('/'));
                relative += 1;
            }
            Err(e) => panic!("{p:?}: unexpected {e:?}"),
        }
    }
    // The generator must exercise every outcome.
    assert!(ok > 10_000 && borrowed > 100 && bad_escape > 1_000 && relative > 1_000);
}
