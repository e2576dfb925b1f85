//! Process-level tests for ringkv: a harness that runs real `ringkv-node` binaries
//! and talks to them over HTTP, as the outside world does.
//!
//! - [`harness`]: [`NodeProcess`] (one node: free ports, temp data dir, readiness by
//!   `GET /health`, SIGKILL/SIGTERM/SIGSTOP, restart on the same dir, kill on drop,
//!   dir and log kept when a test fails) and [`TestCluster`] (nodes `n1..nK` joined).
//! - [`http`]: a pooled hyper client returning exact status, headers and bytes, and
//!   [`Api`], the calls of README.md#http-api for one node.
//! - [`raw`]: hand-written HTTP/1.1 for bodies a server must refuse early.
//! - [`promtool`]: `promtool check metrics`, where promtool is installed.
//! - [`browser`]: a headless chromium over WebDriver, for the dashboard's test.
//! - [`secrets`]: cluster key and token files for keyed nodes, and the test TLS files.
//! - [`readme`]: the README's tour steps and metrics list, read from README.md, for
//!   the tests that hold the README to its word.
//! - [`history`], [`workload`], [`checker`], [`chaos`]: the chaos suite, a recorded
//!   history of concurrent clients under process faults, checked for the properties
//!   of docs/reliability.md#the-properties; [`compose`] runs the same suite against
//!   the compose cluster's containers.
//!
//! The binary comes from `$RINGKV_NODE_BIN` or sits next to the test executable's
//! `deps/` directory: run `cargo build --release -p ringkv-node` before
//! `cargo test --release -p ringkv-tests`. This crate deliberately does not depend
//! on ringkv-node, so tests see only the public interface.
//!
//! Every test owns its nodes, ports and directories, so tests run in parallel.

pub mod browser;
pub mod chaos;
pub mod checker;
pub mod compose;
pub mod harness;
pub mod history;
pub mod http;
pub mod netfault;
pub mod promtool;
pub mod raw;
pub mod readme;
pub mod secrets;
pub mod workload;

pub use harness::{ExitOutput, NodeOptions, NodeProcess, TestCluster, cli_binary, node_binary};
pub use http::{Api, HttpClient, Response, b64, encode_key, sorted, unb64};
