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
//! Current stage: one node serves the full interface; membership, placement on the
//! ring and replication across nodes come next (see the issues).

pub mod api;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod dev;
pub mod error;
pub mod handoff;
pub mod metrics;
pub mod net;
pub mod node;
pub mod replica;
pub mod storage;
pub mod version;

pub use error::{Error, Result};
