//! Storage: raw key-value column families under every replica, and the checked record
//! format of a key's versions.
//!
//! [`Backend`] is the narrow interface the rest of the node sees: point reads, atomic
//! write [`Batch`]es per [`Cf`] (puts, deletes and the XOR of a 64-bit value, which keeps
//! anti-entropy's hash trees current in the same batch as the record they summarise), a
//! prefix scan, and a flush. [`RocksBackend`] is the production engine
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

pub use memory::{MemoryBackend, Records, apply_op, scan_records};
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
    /// Anti-entropy's hash trees: one 64-bit XOR per segment of each partition, changed
    /// only by [`Op::Xor`] (and replaced by a rebuild).
    Tree,
    /// An index of the keys whose record holds only tombstones, for tombstone GC.
    Tombstones,
}

impl Cf {
    pub const ALL: [Cf; 5] = [Cf::Data, Cf::Hints, Cf::Meta, Cf::Tree, Cf::Tombstones];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Data => "data",
            Cf::Hints => "hints",
            Cf::Meta => "meta",
            Cf::Tree => "tree",
            Cf::Tombstones => "tombstones",
        }
    }
}

/// One change of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
    /// The stored value, read as a little-endian u64 (0 when missing), XORed with
    /// `delta`: commutative, so concurrent batches need no read-modify-write.
    Xor {
        cf: Cf,
        key: Vec<u8>,
        delta: u64,
    },
}

/// Changes applied all together or not at all, even across a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put {
            cf,
            key: key.into(),
            value: value.into(),
        });
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete {
            cf,
            key: key.into(),
        });
    }

    pub fn xor(&mut self, cf: Cf, key: impl Into<Vec<u8>>, delta: u64) {
        if delta != 0 {
            self.ops.push(Op::Xor {
                cf,
                key: key.into(),
                delta,
            });
        }
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The value an [`Op::Xor`] leaves: `existing` (8 bytes little-endian, or missing)
/// XOR `delta`. A stored value of another length counts as 0: it can only be damage,
/// and the next rebuild replaces it.
pub fn xor_value(existing: Option<&[u8]>, delta: u64) -> [u8; 8] {
    (read_u64(existing) ^ delta).to_le_bytes()
}

/// A stored XOR value as a number (0 when missing or damaged).
pub fn read_u64(stored: Option<&[u8]>) -> u64 {
    stored
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// What [`Backend::scan_prefixes`] calls per record: (prefix index, key, value); false
/// stops the scan.
pub type PrefixVisitor<'a> = &'a mut dyn FnMut(usize, &[u8], &[u8]) -> bool;

/// Records [`Backend::scan_prefixes`] reads per [`Backend::scan_prefix`] call where a
/// backend has nothing better.
const SCAN_PREFIXES_BATCH: usize = 1024;

/// A raw ordered key-value store with column families.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Applies `batch` atomically; with `sync` it is on disk (fsync) before this
    /// returns, without it it is in the write-ahead log (survives a process crash).
    fn write(&self, batch: Batch, sync: bool) -> Result<()>;
    /// Writes one record (see [`Backend::write`]).
    fn put(&self, cf: Cf, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(cf, key, value);
        self.write(batch, sync)
    }
    fn delete(&self, cf: Cf, key: &[u8], sync: bool) -> Result<()> {
        let mut batch = Batch::new();
        batch.delete(cf, key);
        self.write(batch, sync)
    }
    /// Up to `limit` records whose key starts with `prefix`, from `start` (inclusive)
    /// on, in key order.
    fn scan_prefix(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Calls `visit(i, key, value)` for every record whose key starts with
    /// `prefixes[i]`, prefix after prefix and in key order within each, until `visit`
    /// returns false. Prefixes in ascending order, none a prefix of another, are read
    /// in one pass (what anti-entropy lists: many small segments of a partition).
    fn scan_prefixes(&self, cf: Cf, prefixes: &[&[u8]], visit: PrefixVisitor<'_>) -> Result<()> {
        for (i, prefix) in prefixes.iter().enumerate() {
            let mut start = prefix.to_vec();
            loop {
                let records = self.scan_prefix(cf, prefix, &start, SCAN_PREFIXES_BATCH)?;
                for (key, value) in &records {
                    if !visit(i, key, value) {
                        return Ok(());
                    }
                }
                match records.last() {
                    Some((last, _)) if records.len() == SCAN_PREFIXES_BATCH => {
                        start = last.clone();
                        start.push(0);
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }
    /// Makes everything written so far durable (memtables and WAL to disk).
    fn flush(&self) -> Result<()>;
    /// Makes everything written so far survive a power cut, at the cost of one fsync of
    /// the write-ahead log (cheaper than [`Backend::flush`]).
    fn sync_wal(&self) -> Result<()> {
        self.flush()
    }
    /// The engine's own figures per column family, for metrics and the dashboard;
    /// empty where the engine keeps none (the in-memory store). Cheap: no IO.
    fn properties(&self) -> Vec<(Cf, CfProperties)> {
        Vec::new()
    }
}

/// What the engine reports of one column family (RocksDB's properties).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CfProperties {
    /// Bytes of the live SST files.
    pub sst_bytes: u64,
    /// Bytes in memtables: active, immutable and pinned.
    pub memtable_bytes: u64,
    /// Bytes compaction estimates it still has to rewrite.
    pub pending_compaction_bytes: u64,
    /// The engine's estimate of the keys held.
    pub estimated_keys: u64,
}
