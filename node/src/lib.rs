//! ringkv-node: a Dynamo-style, leaderless, replicated key-value store.
//!
//! A request enters through [`api`] (HTTP), which parses and checks it and hands it to
//! the [`coordinator`]. The coordinator decides which replicas hold the key, makes the
//! write's new version on a [`replica`] (dotted version vectors, [`version`]) and waits
//! for the quorum. Each replica keeps its keys in [`storage`] (RocksDB, every record
//! with a crc32). [`node`] wires these together and owns start-up and shutdown;
//! [`config`] is the command line.
//!
//! The dependency graph runs one way: api -> coordinator -> replica -> storage, with
//! version as pure logic under all of them. Storage knows nothing of the network; the
//! coordinator never imports the API.
//!
//! [`services`] assembles the protocol half (replica, hints, membership view,
//! coordinator, handoff) from parts the caller picks, so the binary and the simulator
//! run the same code; [`env`] holds the seams for time, randomness and blocking calls
//! (docs/architecture.md#seams-and-the-deterministic-simulator).

pub mod anti_entropy;
pub mod api;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod dev;
pub mod discovery;
pub mod env;
pub mod error;
pub mod handoff;
pub mod logging;
pub mod membership;
pub mod metrics;
pub mod net;
pub mod node;
pub mod repair;
pub mod replica;
pub mod services;
pub mod stats;
pub mod storage;
pub mod transfer;
pub mod version;
pub mod writes_in_flight;

pub use error::{Error, Result};
