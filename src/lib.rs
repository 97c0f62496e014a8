//! cachegate: a transparent HTTP caching reverse proxy backed by Redis.
//!
//! The binary (`src/main.rs`) is only a command line; everything it runs lives
//! here so that integration tests can start the same server in-process.
//! `ARCHITECTURE.md` describes how the modules fit together.

pub mod access_log;
pub mod admin;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod logging;
pub mod metrics;
pub mod outcome;
pub mod proxy;
pub mod reload;
pub mod rules;
pub mod selftest;
pub mod server;
pub mod store;
pub mod warm;

/// The error type for start-up paths (never used on the request path).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed future, for the entry points the binary polls (see `server::start`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
