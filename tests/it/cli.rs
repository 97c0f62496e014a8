//! The command line as an operator runs it: `cachegate check` on the shipped
//! configs and on broken ones, and `cachegate token`.

use std::process::Command;

fn cachegate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(args)
        // The shipped edition examples read their admin token from here.
        .env("CACHEGATE_ADMIN_TOKEN", "test-token")
        .env_remove("REDIS_URL")
        .env_remove("CACHEGATE_LISTEN")
        .output()
        .expect("run cachegate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_every_shipped_config() {
    let mut files = vec!["proxy.toml".to_string()];
    for entry in std::fs::read_dir("config").unwrap() {
        files.push(entry.unwrap().path().display().to_string());
    }
    assert!(files.len() >= 4, "proxy.toml and one config per edition: {files:?}");
    for file in files {
        let (code, stdout, stderr) = cachegate(&["check", "--config", &file]);
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(stdout.contains(&format!("{file}: ok")), "{file}: {stdout}");
        assert!(
            stdout.contains("rule \"task\""),
            "{file} prints its compiled rules: {stdout}"
        );
    }
}

#[test]
fn check_reports_file_line_col_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // A syntax error.
        ("syntax.toml", "[server]\nlisten = \n", ":2:10:"),
        // A template naming a capture the regex lacks (line 5, column 7).
        (
            "capture.toml",
            "[[rule]]\nname = \"t\"\npath = '^/t/(?P<id>[^/]+)$'\n\nkey = \"t:{task_id}\"\n",
            ":5:7:",
        ),
        // An unknown key.
        ("unknown.toml", "[server]\nlisen = \"x\"\n", ":2:1:"),
        // A value of the wrong kind.
        ("edition.toml", "edition = \"gold\"\n", ":1:11:"),
        // [tier]: a lease of 0 would never serve; a consistency not known.
        ("lease.toml", "[tier]\nlease_ms = 0\n", ":2:12:"),
        ("consistency.toml", "[tier]\nconsistency = \"strong\"\n", ":2:15:"),
    ];
    for (name, text, position) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let file = path.display().to_string();
        let (code, _, stderr) = cachegate(&["check", "--config", &file]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains(&format!("{file}{position}")), "{name}: {stderr}");
    }
    let (code, _, stderr) = cachegate(&["check", "--config", "/nonexistent/proxy.toml"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/proxy.toml"), "{stderr}");
}

#[test]
fn token_prints_a_token_and_its_hash_line() {
    let (code, stdout, _) = cachegate(&["token"]);
    assert_eq!(code, 0);
    let token = stdout.lines().find_map(|l| l.strip_prefix("token: ")).unwrap();
    let hash_line = stdout.lines().find(|l| l.starts_with("sha256 = ")).unwrap();
    let expected = hex_sha256(token);
    assert_eq!(hash_line, format!("sha256 = \"{expected}\""));
    // And the line for CACHEGATE_ADMIN_TOKENS / a secret file.
    assert!(
        stdout
            .lines()
            .any(|l| l == format!("ops:{expected}:read+purge+inspect")),
        "{stdout}"
    );
    // The printed lines parse as the admin config they are meant for.
    let snippet: String = stdout
        .lines()
        .skip_while(|l| !l.starts_with("[[admin.tokens]]"))
        .collect::<Vec<_>>()
        .join("\n");
    let config = cachegate::config::Config::from_toml_str(&snippet).unwrap();
    assert_eq!(config.admin.tokens.len(), 1);
}

fn hex_sha256(token: &str) -> String {
    cachegate::admin::hash_token(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs cachegate with `input` on standard input.
fn cachegate_with_stdin(args: &[&str], input: &str) -> (i32, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cachegate");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `token --hash` reads the token from standard input, so it never lands
/// in shell history, and never echoes it; an empty input is a usage error.
#[test]
fn token_hash_reads_the_token_from_stdin_and_does_not_echo_it() {
    let (code, stdout, stderr) = cachegate_with_stdin(&["token", "--hash"], "s3cret-from-stdin\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("sha256 = \"{}\"", hex_sha256("s3cret-from-stdin"))),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret-from-stdin"), "the token is echoed: {stdout}");

    let (code, _, stderr) = cachegate_with_stdin(&["token", "--hash"], "\n");
    assert_eq!(code, 2, "an empty token is a usage error: {stderr}");
    assert!(stderr.contains("standard input"), "{stderr}");
}

/// Valid but probably not meant: `check` says so on stderr and still
/// exits 0; the shipped proxy.toml (a backend, no token: it documents
/// how to add one) warns about the tokens only.
#[test]
fn check_warns_about_a_missing_backend_admin_tokens_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let (code, _, stderr) = cachegate(&["check", "--config", &empty.display().to_string()]);
    assert_eq!(code, 0, "{stderr}");
    for expected in ["no backend URL", "no admin tokens", "no [[rule]]"] {
        assert!(stderr.contains(expected), "missing warning {expected:?}: {stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(["check", "--config", "proxy.toml"])
        .env_remove("CACHEGATE_ADMIN_TOKEN")
        .env_remove("CACHEGATE_BACKEND")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no admin tokens"), "{stderr}");
    assert!(!stderr.contains("no backend URL"), "{stderr}");
    assert!(!stderr.contains("no [[rule]]"), "{stderr}");
}

/// `-c` is `--config` wherever it exists; selftest's workers are `-j`.
#[test]
fn short_c_means_config_in_every_command() {
    for command in ["check", "warm"] {
        let (code, _, stderr) = cachegate(&[command, "-c", "/nonexistent/cachegate.toml"]);
        assert_eq!(code, 2, "{command} -c names a config file: {stderr}");
        assert!(stderr.contains("/nonexistent/cachegate.toml"), "{command}: {stderr}");
    }
    let (_, stdout, _) = cachegate(&["selftest", "--help"]);
    assert!(stdout.contains("-j, --concurrency"), "{stdout}");
    assert!(!stdout.contains("-c, --concurrency"), "{stdout}");
}

/// The process log has no colour codes when standard error is not a
/// terminal (a file, a pipe, journald, `docker logs`).
#[test]
fn logs_carry_no_colour_codes_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    // Serving fails at once, after logging its warnings: 192.0.2.1
    // (TEST-NET-1) is no address of this machine, so the bind fails.
    std::fs::write(&empty, "[server]\nlisten = \"192.0.2.1:8080\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(["--config", &empty.display().to_string()])
        .env_remove("REDIS_URL")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARN"), "the warnings were logged: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes in a piped log: {stderr:?}");
}

/// `reload --url` takes a base URL as users give one, and appends the
/// route; a full route is used as it is.
#[test]
fn reload_url_takes_a_base_url() {
    use cachegate::reload::reload_url_from;
    let prefix = "/api/v1/cache";
    assert_eq!(
        reload_url_from("http://127.0.0.1:8080", prefix),
        "http://127.0.0.1:8080/api/v1/cache/reload"
    );
    assert_eq!(
        reload_url_from("http://127.0.0.1:8080/", prefix),
        "http://127.0.0.1:8080/api/v1/cache/reload"
    );
    assert_eq!(
        reload_url_from("http://h:9091/api/v1/cache", prefix),
        "http://h:9091/api/v1/cache/reload"
    );
    assert_eq!(
        reload_url_from("http://h:9091/api/v1/cache/reload", prefix),
        "http://h:9091/api/v1/cache/reload"
    );
}

#[test]
fn check_prints_the_credential_headers_and_how_inputs_are_handled() {
    let mut files = vec!["proxy.toml".to_string()];
    for entry in std::fs::read_dir("config").unwrap() {
        files.push(entry.unwrap().path().display().to_string());
    }
    for file in files {
        let (code, stdout, stderr) = cachegate(&["check", "--config", &file]);
        assert_eq!(code, 0, "{file}: {stderr}");
        for line in [
            "credential headers: authorization, cookie, x-api-key, api-key, x-auth-token, x-access-token",
            "other headers named like a credential (containing auth, token, key, session, secret): bypass",
            "backend Host: 127.0.0.1:8000 (the client's in X-Forwarded-Host",
            "request headers with '_' in their name: dropped",
            "Origin: part of the variant in shared scopes",
        ] {
            assert!(stdout.contains(line), "{file}: no {line:?} in\n{stdout}");
        }
    }
}

#[test]
fn check_reports_bad_input_settings_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let rule = "[[rule]]\nname = \"t\"\npath = '^/t$'\n";
    let cases = [
        (
            "duplicates.toml",
            format!("{rule}key = \"t:{{query.q}}\"\nduplicate_inputs = \"last\"\n"),
            ":5:20:",
        ),
        (
            "suspect.toml",
            "[cache]\nsuspect_credential_headers = \"maybe\"\n".to_string(),
            ":2:30:",
        ),
        (
            "names.toml",
            "[cache]\nnon_credential_headers = [\"a b\"]\n".to_string(),
            ":2:26:",
        ),
        // A key reading a header that is dropped on arrival.
        (
            "underscore.toml",
            format!("{rule}key = \"t:{{header.x_lang}}\"\n"),
            ":4:7:",
        ),
    ];
    for (name, text, position) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let file = path.display().to_string();
        let (code, _, stderr) = cachegate(&["check", "--config", &file]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains(&format!("{file}{position}")), "{name}: {stderr}");
    }
    // With underscore headers kept, that key is fine.
    let path = dir.path().join("kept.toml");
    std::fs::write(
        &path,
        format!("[server]\nunderscores_in_headers = true\n\n{rule}key = \"t:{{header.x_lang}}\"\n"),
    )
    .unwrap();
    let (code, _, stderr) = cachegate(&["check", "--config", &path.display().to_string()]);
    assert_eq!(code, 0, "{stderr}");
}

/// `check` and the start-up line say which listen address, backend, Redis
/// URL and DB are in effect and where each came from, so settings inherited
/// from a shared shell (the backend's `REDIS_DB`) are never silent; the
/// Redis password is never printed.
#[test]
fn check_and_start_up_name_each_setting_and_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "edition = \"enterprise\"\n[server]\nlisten = \"127.0.0.1:9999\"\n[backend]\nurl = \"http://127.0.0.1:8000\"\n",
    )
    .unwrap();
    let name = file.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(["check", "--config", &name, "--backend", "http://127.0.0.1:8111"])
        .env_remove("CACHEGATE_LISTEN")
        .env_remove("CACHEGATE_BACKEND")
        .env_remove("REDIS_URL")
        .env("REDIS_HOST", "10.0.0.9")
        .env("REDIS_PORT", "6390")
        .env("REDIS_PASSWORD", "hunter2")
        .env("REDIS_DB", "5")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for expected in [
        format!("listen 127.0.0.1:9999 ({name}:3)"),
        "backend http://127.0.0.1:8111/ (flag --backend)".to_string(),
        "redis://10.0.0.9:6390 (environment REDIS_HOST/REDIS_PORT) db 5 (environment REDIS_DB)".to_string(),
    ] {
        assert!(stdout.contains(&expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("hunter2"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: REDIS_DB=5 from the environment is not edition enterprise's DB 2"),
        "{stderr}"
    );

    // Without REDIS_DB: the edition's DB, and the URL's password masked.
    let out = Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(["check", "--config", &name])
        .env_remove("REDIS_HOST")
        .env_remove("REDIS_DB")
        .env("REDIS_URL", "redis://:hunter2@10.0.0.9:6390")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("redis://***@10.0.0.9:6390 (environment REDIS_URL) db 2 (edition enterprise's default)"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");

    // The running proxy's start-up line says the same.
    let port = crate::common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(["--config", &name, "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST")
        .env_remove("CACHEGATE_BACKEND")
        .env("RUST_LOG", "info")
        .args(["--redis-url", "redis://127.0.0.1:1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let line = std::io::BufRead::lines(stderr)
        .map_while(Result::ok)
        .find(|l| l.contains("cachegate listening"));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a start-up line");
    for expected in [
        format!("listen 127.0.0.1:{port} (flag --listen)"),
        format!("backend http://127.0.0.1:8000/ ({name}:5)"),
        "redis redis://127.0.0.1:1 (flag --redis-url) db 2 (edition enterprise's default)".to_string(),
    ] {
        assert!(line.contains(&expected), "missing {expected:?} in: {line}");
    }
}

/// A bad `CACHEGATE_ADMIN_TOKENS` stops `check` (and start-up) with exit 2,
/// naming the variable but never echoing its value.
#[test]
fn bad_admin_tokens_in_the_environment_exit_2_without_echoing_them() {
    let out = Command::new(env!("CARGO_BIN_EXE_cachegate"))
        .args(["check", "--config", "proxy.toml"])
        .env("CACHEGATE_ADMIN_TOKENS", "ops:my-raw-secret-token:read")
        .env_remove("CACHEGATE_ADMIN_TOKENS_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CACHEGATE_ADMIN_TOKENS"), "{stderr}");
    assert!(!stderr.contains("my-raw-secret-token"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("my-raw-secret-token"));
}
