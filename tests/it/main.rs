//! The integration tests, one binary: a module per area, all sharing the
//! harness in `tests/common/harness.rs` (compiled once, here). Run one area
//! with `cargo test --test it AREA::`, e.g. `cargo test --test it faults::`.
//!
//! Two test binaries live outside this one: `tests/store_contract.rs` and
//! `tests/streaming.rs` (which measures this process's memory, so it runs
//! alone).

#[macro_use]
#[path = "../common/harness.rs"]
mod common;
#[path = "../history/mod.rs"]
mod history;

mod access_log;
mod admin_api;
mod admin_docs;
mod cache_ops;
mod cli;
mod compose;
mod compose_processes;
mod compression;
mod credentials_end;
mod event_streams;
mod faults;
mod fleet_history;
mod hostile_input;
mod hostile_input_h2;
mod http_conformance;
mod http_exchange;
mod http_semantics;
mod http_stale;
mod https_backend;
mod listener_protocols;
mod metrics_scrape;
mod path_normalisation;
mod poisoning;
mod process_log;
mod proxy_credentials;
mod proxy_fail_open;
mod proxy_forwarding;
mod proxy_hits;
mod proxy_invalidation;
mod proxy_limits;
mod proxy_pool;
mod proxy_rules;
mod proxy_storing;
mod purge_durability;
mod redis_acl;
mod redis_cluster;
mod redis_sentinel;
mod redis_tls;
mod reload;
mod request_id;
mod selftest;
mod shipped_configs;
mod shutdown;
mod stampede;
mod store_errors;
mod store_glob;
mod tags;
mod tier;
mod tls_reload;
mod upgrades;
mod warm;
mod write_history;
