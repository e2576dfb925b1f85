//! What anti-entropy asks of a replica: tree roots and leaves, the keys of a segment
//! with their hashes, records to push, tombstones to collect, a conditional purge, and
//! the rebuild of a partition's leaves from a scan.

use std::time::{Duration, Instant};

use ringkv_ring::Partition;

use super::Replica;
use super::layout::{self, Place, SEGMENTS};
use super::tree::key_hash;
use crate::error::Result;
use crate::metrics;
use crate::storage::{Batch, Cf, read_u64, record};
use crate::version::{Clock, SegmentEntry};

/// Records read per scan call.
const SCAN_BATCH_KEYS: usize = 1024;

/// Keys with their clocks, in key order.
pub type KeyClocks = Vec<(Vec<u8>, Clock)>;

/// What a rebuild found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeRebuild {
    pub keys: u64,
    /// Leaves whose stored value was wrong.
    pub leaves_fixed: u64,
    pub elapsed: Duration,
}

impl Replica {
    /// The partition's root, or `None` while its leaves wait for a rebuild.
    pub fn tree_root(&self, partition: Partition) -> Option<u64> {
        (!self.tree.is_dirty(partition)).then(|| self.tree.root(partition))
    }

    /// The partition's leaves, or `None` while they wait for a rebuild.
    pub fn tree_leaves(&self, partition: Partition) -> Option<Vec<u64>> {
        (!self.tree.is_dirty(partition)).then(|| self.tree.leaves(partition))
    }

    /// Partitions whose leaves wait for a rebuild.
    pub fn dirty_partitions(&self) -> Vec<Partition> {
        self.tree.dirty()
    }

    /// The keys stored in `segment` of `partition` with their hashes, in key order.
    /// Corrupt records are left out (counted; they read as missing), so a peer that
    /// holds the key sends it back, and the merge over the corrupt record marks the
    /// partition for a rebuild. (Marking it here would keep it dirty, and out of every
    /// exchange, for as long as the record stays corrupt.)
    pub fn segment_entries(&self, place: Place) -> Result<Vec<SegmentEntry>> {
        Ok(self
            .segment_records(place)?
            .into_iter()
            .map(|(key, clock)| SegmentEntry {
                hash: key_hash(&key, &clock),
                key,
            })
            .collect())
    }

    /// The keys stored in `segment` of `partition` with their clocks, in key order,
    /// corrupt records left out as in [`Replica::segment_entries`].
    pub fn segment_records(&self, place: Place) -> Result<Vec<(Vec<u8>, Clock)>> {
        Ok(self.segments_records(&[place], usize::MAX)?.1)
    }

    /// The records of `places`, segment after segment, as many whole segments as fit
    /// in `max_keys` records (always at least one with records): how many of `places`
    /// were listed,
    /// and their keys with their clocks (corrupt records left out as in
    /// [`Replica::segment_entries`]). An exchange lists its own side with this and
    /// pushes the clocks it read, instead of reading every differing key a second
    /// time; places in ascending order are read in one pass.
    pub fn segments_records(
        &self,
        places: &[Place],
        max_keys: usize,
    ) -> Result<(usize, KeyClocks)> {
        let prefixes: Vec<[u8; layout::PREFIX_BYTES]> = places.iter().map(|p| p.prefix()).collect();
        let prefixes: Vec<&[u8]> = prefixes.iter().map(|p| &p[..]).collect();
        let mut listed = places.len();
        let (mut out, mut current) = (Vec::new(), Vec::new());
        let mut segment = 0;
        // A segment joins `out` once it is known whole: when a record of a later one
        // shows up, or the scan ends.
        let fits = |out: &mut Vec<_>, current: &mut Vec<_>| {
            let fits = out.is_empty() || out.len() + current.len() <= max_keys;
            if fits {
                out.append(current);
            }
            fits
        };
        let mut stopped = false;
        self.backend
            .scan_prefixes(Cf::Data, &prefixes, &mut |i, stored_key, bytes| {
                if i != segment {
                    if !fits(&mut out, &mut current) {
                        (listed, stopped) = (segment, true);
                        return false;
                    }
                    segment = i;
                }
                let Some(key) = layout::user_key(stored_key) else {
                    return true;
                };
                match record::decode(bytes) {
                    Ok(clock) => current.push((key.to_vec(), clock)),
                    Err(_) => metrics::corrupt_record(),
                }
                true
            })?;
        if !stopped && !fits(&mut out, &mut current) {
            listed = segment;
        }
        Ok((listed, out))
    }

    /// Calls `f` with every record whose stored key starts with `prefix`, in key
    /// order, decoded (corrupt ones counted, and given as `Err`).
    fn scan_records(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], Result<Clock, record::Corrupt>),
    ) -> Result<()> {
        let mut start = prefix.to_vec();
        loop {
            let records = self
                .backend
                .scan_prefix(Cf::Data, prefix, &start, SCAN_BATCH_KEYS)?;
            let done = records.len() < SCAN_BATCH_KEYS;
            for (stored_key, bytes) in &records {
                let Some(key) = layout::user_key(stored_key) else {
                    continue;
                };
                let decoded = record::decode(bytes);
                if decoded.is_err() {
                    metrics::corrupt_record();
                }
                f(key, decoded);
            }
            match records.last() {
                Some((last, _)) if !done => start = next_key(last),
                _ => return Ok(()),
            }
        }
    }

    /// The key's clock as stored, without touching the read cache (an exchange reads
    /// many keys once); `None` when missing or corrupt.
    pub fn peek(&self, key: &[u8]) -> Result<Option<Clock>> {
        let _guard = self.lock(key);
        Ok(self.read(key)?.unwrap_or(None))
    }

    /// The keys of `partition` whose versions are all tombstones, with their hashes, up
    /// to `limit`, from `after` on (exclusive). Index entries that no longer match a
    /// tombstoned record are dropped on the way.
    pub fn tombstones(
        &self,
        partition: Partition,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<SegmentEntry>> {
        let prefix = layout::partition_prefix(partition);
        let start = match after {
            Some(key) => next_key(&layout::stored_key(key)),
            None => prefix.to_vec(),
        };
        let index = self
            .backend
            .scan_prefix(Cf::Tombstones, &prefix, &start, limit)?;
        let mut out = Vec::with_capacity(index.len());
        for (stored_key, _) in index {
            let Some(key) = layout::user_key(&stored_key) else {
                self.backend.delete(Cf::Tombstones, &stored_key, false)?;
                continue;
            };
            let _guard = self.lock(key);
            match self.read(key)? {
                Ok(Some(clock)) if clock.is_tombstoned() => out.push(SegmentEntry {
                    key: key.to_vec(),
                    hash: key_hash(key, &clock),
                }),
                Err(()) => {}
                Ok(_) => self.backend.delete(Cf::Tombstones, &stored_key, false)?,
            }
        }
        Ok(out)
    }

    /// Those of `partitions` that hold any tombstone, for tombstone GC to skip the rest
    /// in one call instead of one per partition.
    pub fn partitions_with_tombstones(&self, partitions: &[Partition]) -> Result<Vec<Partition>> {
        let mut out = Vec::new();
        for partition in partitions {
            let prefix = layout::partition_prefix(*partition);
            if !self
                .backend
                .scan_prefix(Cf::Tombstones, &prefix, &prefix, 1)?
                .is_empty()
            {
                out.push(*partition);
            }
        }
        Ok(out)
    }

    /// Makes every write so far survive a power cut: tombstone GC relies on the
    /// tombstones a replica vouched for still being there after a crash.
    pub fn sync_wal(&self) -> Result<()> {
        self.backend.sync_wal()
    }

    /// Deletes the key's record if it still holds only tombstones and hashes to `hash`
    /// (nothing was written since the caller checked); true when purged.
    pub fn purge_tombstone(&self, key: &[u8], hash: u64, sync: bool) -> Result<bool> {
        let _guard = self.lock(key);
        let clock = match self.read(key)? {
            Ok(Some(clock)) if clock.is_tombstoned() && key_hash(key, &clock) == hash => clock,
            _ => return Ok(false),
        };
        let place = Place::of(key);
        let stored_key = layout::stored_key(key);
        let delta = key_hash(key, &clock);
        let mut batch = Batch::new();
        batch.delete(Cf::Data, stored_key.clone());
        batch.delete(Cf::Tombstones, stored_key);
        batch.xor(Cf::Tree, place.prefix(), delta);
        let _partition = self.read_partition(place.partition);
        let written = self.backend.write(batch, sync);
        self.cache.forget(key);
        match written {
            Ok(()) => {
                self.tree.xor(place, delta);
                Ok(true)
            }
            Err(e) => {
                self.tree.mark_dirty(place.partition);
                Err(e)
            }
        }
    }

    /// Recomputes the partition's leaves from its records, stores them and clears its
    /// dirty mark. Writes to the partition wait meanwhile (it is one range scan: about
    /// 1/1024 of the store).
    /// True when this replica holds any record of `partition`.
    pub fn holds_partition(&self, partition: Partition) -> Result<bool> {
        let prefix = layout::partition_prefix(partition);
        Ok(!self
            .backend
            .scan_prefix(Cf::Data, &prefix, &prefix, 1)?
            .is_empty())
    }

    /// Deletes every record of `partition`, for a node that is no longer one of its
    /// home replicas once its new home replicas hold it; returns the keys dropped.
    /// Holds the partition's write lock, so no write of it lands halfway.
    pub fn drop_partition(&self, partition: Partition) -> Result<u64> {
        let _exclusive = self.write_partition(partition);
        let prefix = layout::partition_prefix(partition);
        let mut dropped = 0;
        loop {
            let records = self
                .backend
                .scan_prefix(Cf::Data, &prefix, &prefix, SCAN_BATCH_KEYS)?;
            if records.is_empty() {
                break;
            }
            let mut batch = Batch::new();
            for (stored_key, _) in &records {
                batch.delete(Cf::Data, stored_key.clone());
                batch.delete(Cf::Tombstones, stored_key.clone());
                if let Some(key) = layout::user_key(stored_key) {
                    self.cache.forget(key);
                }
            }
            dropped += records.len() as u64;
            self.backend.write(batch, false)?;
        }
        let mut batch = Batch::new();
        for segment in 0..SEGMENTS {
            let place = Place {
                partition,
                segment: segment as u8,
            };
            batch.put(Cf::Tree, place.prefix(), 0u64.to_le_bytes());
            self.tree.set(place, 0);
        }
        self.backend.write(batch, false)?;
        Ok(dropped)
    }

    pub fn rebuild_partition(&self, partition: Partition) -> Result<TreeRebuild> {
        let started = Instant::now();
        let _exclusive = self.write_partition(partition);
        // Cleared first: a corruption found during the scan marks it again.
        self.tree.clear_dirty(partition);
        let mut leaves = vec![0u64; SEGMENTS];
        let mut keys = 0;
        self.scan_records(&layout::partition_prefix(partition), |key, record| {
            if let Ok(clock) = record {
                leaves[Place::of(key).segment as usize] ^= key_hash(key, &clock);
                keys += 1;
            }
        })?;
        let mut batch = Batch::new();
        let mut leaves_fixed = 0;
        for (segment, value) in leaves.iter().enumerate() {
            let place = Place {
                partition,
                segment: segment as u8,
            };
            let stored = read_u64(self.backend.get(Cf::Tree, &place.prefix())?.as_deref());
            if stored != *value {
                leaves_fixed += 1;
                // A put replaces whatever the XOR operands added up to.
                batch.put(Cf::Tree, place.prefix(), value.to_le_bytes());
            }
            self.tree.set(place, *value);
        }
        if !batch.is_empty() {
            self.backend.write(batch, false)?;
        }
        let rebuild = TreeRebuild {
            keys,
            leaves_fixed,
            elapsed: started.elapsed(),
        };
        metrics::tree_rebuilt(rebuild.elapsed, leaves_fixed);
        Ok(rebuild)
    }

    /// Loads every stored leaf into memory (at open).
    pub(super) fn load_tree(&self) -> Result<()> {
        let mut start = Vec::new();
        loop {
            let leaves = self
                .backend
                .scan_prefix(Cf::Tree, &[], &start, SCAN_BATCH_KEYS)?;
            let done = leaves.len() < SCAN_BATCH_KEYS;
            for (tree_key, value) in &leaves {
                match layout::place_of_tree_key(tree_key) {
                    Some(place) => self.tree.set(place, read_u64(Some(value))),
                    None => tracing::warn!(?tree_key, "ignoring a malformed tree key"),
                }
            }
            match leaves.last() {
                Some((last, _)) if !done => start = next_key(last),
                _ => return Ok(()),
            }
        }
    }
}

/// The smallest key after `key`.
fn next_key(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}
