//! Storage: raw key-value column families under every replica, and the checked record
//! format of a key's versions.
//!
//! [`Backend`] is the narrow interface the rest of the node sees: point reads and writes
//! per [`Cf`], a prefix scan, and a flush. [`RocksBackend`] is the production engine
//! (RocksDB with its WAL always on); [`MemoryBackend`] serves unit tests and simulations.
//! Storage knows nothing of the network or of quorums.
//!
//! Every record is written through [`record`], which frames the encoded clock with a
//! crc32: a record that fails its check is reported, counted and treated as missing, so
//! that replication can bring the key back instead of serving damaged bytes.
//!
//! Caveat: calls block the calling thread (RocksDB has no async API); callers keep
//! long ones, such as fsync'ed writes, off the async executor.

mod memory;
pub mod record;
mod rocks;

pub use memory::{MemoryBackend, Records, scan_records};
pub use rocks::{RocksBackend, RocksOptions};

use crate::error::Result;

/// The column families every store has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Each key's versions (a framed [`crate::version::Clock`]).
    Data,
    /// Writes held for a replica that was down (hinted handoff).
    Hints,
    /// The node's own small facts: its incarnation, ring state.
    Meta,
}

impl Cf {
    pub const ALL: [Cf; 3] = [Cf::Data, Cf::Hints, Cf::Meta];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Data => "data",
            Cf::Hints => "hints",
            Cf::Meta => "meta",
        }
    }
}

/// A raw ordered key-value store with column families.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Writes one record; with `sync` it is on disk (fsync) before this returns,
    /// without it it is in the write-ahead log (survives a process crash).
    fn put(&self, cf: Cf, key: &[u8], value: &[u8], sync: bool) -> Result<()>;
    fn delete(&self, cf: Cf, key: &[u8], sync: bool) -> Result<()>;
    /// Up to `limit` records whose key starts with `prefix`, from `start` (inclusive)
    /// on, in key order.
    fn scan_prefix(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Makes everything written so far durable (memtables and WAL to disk).
    fn flush(&self) -> Result<()>;
}
