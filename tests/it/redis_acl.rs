//! The Redis ACL that SECURITY.md documents is enough: the cache-behaviour
//! suite runs as a Redis user allowed exactly the commands SECURITY.md lists
//! (read from the file, so the docs and this test cannot drift), on a single
//! Redis (with the in-process tier, so tracking and fences run too) and on
//! a cluster; and Redis's `ACL LOG` records no denied command afterwards.

use crate::common::topology::{cli, RedisCluster};
use crate::common::*;

const USER: &str = "cachegate";
const PASSWORD: &str = "acl-test-password";

/// The command list in SECURITY.md's Redis section.
fn documented_commands() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/SECURITY.md")).expect("SECURITY.md");
    let start = text
        .find("user needs (scripts included): `")
        .expect("SECURITY.md lists the commands the ACL user needs");
    let list = &text[start..];
    let list = &list[list.find('`').unwrap() + 1..];
    let list = &list[..list.find('`').expect("the list ends with a backtick")];
    let commands: Vec<String> = list.split_whitespace().map(str::to_ascii_lowercase).collect();
    assert!(commands.len() > 10, "parsed {commands:?}");
    commands
}

/// `ACL SETUSER` arguments: the documented commands and nothing else; every
/// key (each suite case has a prefix of its own); the documented channels
/// under any prefix.
fn setuser_args() -> Vec<String> {
    let mut args: Vec<String> = ["ACL", "SETUSER", USER, "reset", "on", &format!(">{PASSWORD}"), "~*"]
        .map(String::from)
        .to_vec();
    args.extend(["&*__cg:unlocked", "&*__cg:ack:*"].map(String::from));
    args.extend(documented_commands().into_iter().map(|c| format!("+{c}")));
    args
}

/// Entries of `ACL LOG` on the server at `port` (denied commands, keys,
/// channels), as text.
fn acl_log(port: u16) -> String {
    cli(port, &["ACL", "LOG"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_runs_as_the_documented_acl_user_on_a_single_redis() {
    let redis = RedisServer::start();
    let args = setuser_args();
    let out = cli(redis.port(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.trim(), "OK", "ACL SETUSER: {out}");
    let url = format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}", redis.port());
    crate::common::suite::run_all(&format!("url = \"{url}\"")).await;
    let log = acl_log(redis.port());
    assert!(log.trim().is_empty(), "commands the documented ACL denied:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_runs_as_the_documented_acl_user_on_a_cluster() {
    let cluster = RedisCluster::start();
    let args = setuser_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for node in &cluster.nodes {
        let out = cli(node.port, &args);
        assert_eq!(out.trim(), "OK", "ACL SETUSER on {}: {out}", node.port);
    }
    let url = cluster.url().replacen("://", &format!("://{USER}:{PASSWORD}@"), 1);
    crate::common::suite::run_all(&format!("url = \"{url}\"")).await;
    for node in &cluster.nodes {
        let log = acl_log(node.port);
        assert!(
            log.trim().is_empty(),
            "commands the documented ACL denied on {}:\n{log}",
            node.port
        );
    }
}
