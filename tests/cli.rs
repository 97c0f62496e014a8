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
