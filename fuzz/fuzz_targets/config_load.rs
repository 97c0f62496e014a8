//! The `proxy.toml` loader: `config::Config::from_toml` (TOML parsing,
//! environment and flag precedence, validation, rule compilation) must
//! never panic, whatever the text, environment and flags.
//!
//! Input: UTF-8 text. Everything before the first NUL byte is the file (TOML
//! forbids raw NULs, so nothing is lost); after it come NUL-separated
//! `NAME=value` items: environment variables, except `--listen`,
//! `--backend` and `--redis-url`, which are command-line overrides.
//!
//! Checked: an error names the file and, when it has a place, a line and
//! column inside the text (1-based; the column counted in characters); a
//! loaded config prints its rules (as `cachegate check` does) and loads the
//! same again.

#![no_main]

use cachegate::config::{Config, Overrides};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, extra) = input.split_once('\0').unwrap_or((input, ""));
    let mut env: Vec<(&str, &str)> = Vec::new();
    let mut overrides = Overrides::default();
    for item in extra.split('\0').filter(|s| !s.is_empty()) {
        let (name, value) = item.split_once('=').unwrap_or((item, ""));
        match name {
            "--listen" => overrides.listen = Some(value.to_string()),
            "--backend" => overrides.backend = Some(value.to_string()),
            "--redis-url" => overrides.redis_url = Some(value.to_string()),
            _ => env.push((name, value)),
        }
    }
    // As `process_env` does: unset and empty are the same.
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.is_empty())
    };

    match Config::from_toml(text, FILE, &lookup, &overrides) {
        Err(e) => {
            assert_eq!(e.file, FILE);
            let shown = e.to_string();
            assert!(shown.starts_with(&format!("{FILE}:")), "{shown}");
            if let Some((line, col)) = e.position {
                let lines = text.matches('\n').count() + 1;
                assert!(line >= 1 && line <= lines, "line {line} of {lines}: {shown}");
                let line_text = text.split('\n').nth(line - 1).unwrap_or("");
                let width = line_text.chars().count() + 1;
                assert!(col >= 1 && col <= width, "col {col} of {width}: {shown}");
                assert!(shown.starts_with(&format!("{FILE}:{line}:{col}: ")), "{shown}");
            }
        }
        Ok(config) => {
            assert_eq!(config.source, FILE);
            let rules = config.rules.to_string();
            let again = Config::from_toml(text, FILE, &lookup, &overrides).expect("a config loads the same twice");
            assert_eq!(again.rules.to_string(), rules);
        }
    }
});
