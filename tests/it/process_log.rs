//! The process log of the real binary: colour codes only for a person at a
//! terminal, never into a pipe (files, journald, `docker logs`), and never
//! with `NO_COLOR` set. The terminal case runs under `script(1)`, which
//! gives the binary a pseudo-terminal.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

const ESC: u8 = 0x1b;

/// A config the binary serves without any outside service.
fn config_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        "[backend]\nurl = \"http://127.0.0.1:9\"\n\n[store]\nkind = \"memory\"\n",
    )
    .expect("write config");
    path.display().to_string()
}

/// Reads `from` until a line contains `until` (or the output ends), then
/// kills `child`; everything read.
fn read_until(child: &mut std::process::Child, from: impl Read, until: &str) -> Vec<u8> {
    let mut reader = BufReader::new(from);
    let mut all = Vec::new();
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                all.extend_from_slice(&line);
                if String::from_utf8_lossy(&line).contains(until) {
                    break;
                }
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    all
}

/// Starts `cachegate serve` with stderr to a pipe; its log up to the
/// listening line.
fn serve_piped(no_color: Option<&str>) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cachegate"));
    cmd.args(["serve", "--config", &config_file(&dir), "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let mut child = cmd.spawn().expect("run cachegate");
    let stderr = child.stderr.take().expect("stderr");
    read_until(&mut child, stderr, "cachegate listening")
}

/// The same under a pseudo-terminal (`script -qec CMD /dev/null`): stderr
/// is a terminal; what the terminal showed.
fn serve_on_a_terminal(no_color: Option<&str>) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    // The shell prints its pid, then becomes cachegate: the pid to stop
    // (killing script(1) alone would leave cachegate running, and a
    // hangup only reloads it).
    let command = format!(
        "echo pid=$$; exec {} serve --config {} --listen 127.0.0.1:0",
        env!("CARGO_BIN_EXE_cachegate"),
        config_file(&dir)
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &command, "/dev/null"])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let mut child = cmd.spawn().expect("run script(1) (util-linux)");
    let stdout = child.stdout.take().expect("stdout");
    let seen = read_until(&mut child, stdout, "listening");
    let text = String::from_utf8_lossy(&seen);
    if let Some(pid) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("pid="))
        .and_then(|p| p.trim().parse::<u32>().ok())
    {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    seen
}

#[test]
fn no_colour_codes_when_stderr_is_a_pipe_with_or_without_no_color() {
    for no_color in [None, Some("1")] {
        let log = serve_piped(no_color);
        let text = String::from_utf8_lossy(&log);
        assert!(text.contains("cachegate listening"), "NO_COLOR={no_color:?}: {text}");
        assert!(
            !log.contains(&ESC),
            "NO_COLOR={no_color:?}: colour codes in a pipe: {text:?}"
        );
    }
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    let coloured = serve_on_a_terminal(None);
    let text = String::from_utf8_lossy(&coloured);
    assert!(text.contains("listening"), "{text:?}");
    assert!(coloured.contains(&ESC), "a terminal gets colour: {text:?}");
    for no_color in ["1", "true"] {
        let plain = serve_on_a_terminal(Some(no_color));
        let text = String::from_utf8_lossy(&plain);
        assert!(text.contains("listening"), "{text:?}");
        assert!(!plain.contains(&ESC), "NO_COLOR={no_color}: {text:?}");
    }
    // An empty NO_COLOR is unset (no-color.org).
    assert!(serve_on_a_terminal(Some("")).contains(&ESC));
}
