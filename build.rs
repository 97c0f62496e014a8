//! Build script: the commit `cachegate_build_info{commit}` reports, from
//! `git rev-parse --short HEAD` when the sources are a git checkout, else
//! the `CACHEGATE_COMMIT` environment variable (the Docker build arg), else
//! "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CACHEGATE_COMMIT");
    // Rebuilt when HEAD moves (a commit, a checkout); a worktree's `.git` is
    // a file, so ask git where its HEAD and refs live.
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let commit = git(&["rev-parse", "--short", "HEAD"])
        .or_else(|| std::env::var("CACHEGATE_COMMIT").ok().filter(|c| !c.trim().is_empty()))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CACHEGATE_COMMIT={}", commit.trim());
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}
