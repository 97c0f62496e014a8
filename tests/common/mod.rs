//! The test harness as the test binaries outside `tests/it` see it
//! (`store_contract.rs`, `streaming.rs`): everything in [`harness.rs`](harness.rs).
//!
//! Those binaries use a part of the harness. `tests/it/main.rs` mounts
//! `harness.rs` directly, without the allowance below, so code no test uses
//! is caught there.

#![allow(dead_code)]

#[path = "harness.rs"]
mod harness;

pub use harness::*;
