//! The replica's hash trees, one per partition (Riak's Tictac AAE, simplified to two
//! levels): a partition's [`SEGMENTS`] leaves each hold the XOR of
//! [`key_hash`]`(key, clock)` over the segment's keys, and its root is the XOR of its
//! leaves (so it too is updated in O(1) per write).
//!
//! XOR makes a write's update a constant: `h(key, old) ^ h(key, new)`, applied to the
//! leaf in the same storage batch as the record (so a crash can never leave tree and
//! data apart), and to this in-memory copy after it. A leaf is one atomic word, so
//! concurrent writes to a segment need no lock. Partitions are rebuilt from a scan only
//! when [`Tree::mark_dirty`] says their leaves cannot be trusted: a write failed midway
//! or a record turned out corrupt (its old hash is unknown).
//!
//! Caveat: an XOR leaf can hide two differences that cancel out; the per-key hash is
//! 64 bits, so that takes about 2^32 differing keys in one segment.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ringkv_ring::{PARTITIONS, Partition};
use xxhash_rust::xxh3::Xxh3;

use super::layout::{Place, SEGMENTS};
use crate::version::Clock;

/// The hash of one key's state: equal on two replicas exactly when they hold the same
/// versions of the key (the clock's dots identify its values). 0 is reserved for "no
/// record".
pub fn key_hash(key: &[u8], clock: &Clock) -> u64 {
    if clock.is_empty() {
        return 0;
    }
    let mut h = Xxh3::new();
    h.update(&(key.len() as u32).to_le_bytes());
    h.update(key);
    for (actor, counter, kept) in clock.dots() {
        h.update(&(actor.node.len() as u32).to_le_bytes());
        h.update(actor.node.as_bytes());
        h.update(&actor.incarnation.to_le_bytes());
        h.update(&counter.to_le_bytes());
        h.update(&(kept as u64).to_le_bytes());
    }
    h.digest().max(1)
}

/// Every partition's leaves, in memory.
#[derive(Debug)]
pub struct Tree {
    leaves: Box<[AtomicU64]>,
    roots: Box<[AtomicU64]>,
    dirty: Mutex<BTreeSet<Partition>>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    /// A tree of empty partitions.
    pub fn new() -> Self {
        Self {
            leaves: (0..PARTITIONS * SEGMENTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            roots: (0..PARTITIONS).map(|_| AtomicU64::new(0)).collect(),
            dirty: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn xor(&self, place: Place, delta: u64) {
        self.leaves[place.index()].fetch_xor(delta, Ordering::Relaxed);
        self.roots[place.partition.index()].fetch_xor(delta, Ordering::Relaxed);
    }

    /// Replaces a leaf (a rebuild or the load at open), keeping the root in step.
    pub fn set(&self, place: Place, value: u64) {
        let old = self.leaves[place.index()].swap(value, Ordering::Relaxed);
        self.roots[place.partition.index()].fetch_xor(old ^ value, Ordering::Relaxed);
    }

    /// The partition's leaves, segment by segment.
    pub fn leaves(&self, partition: Partition) -> Vec<u64> {
        let start = partition.index() * SEGMENTS;
        self.leaves[start..start + SEGMENTS]
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect()
    }

    /// The partition's root: the XOR of its leaves (0 for a partition with no keys).
    pub fn root(&self, partition: Partition) -> u64 {
        self.roots[partition.index()].load(Ordering::Relaxed)
    }

    /// Notes that the partition's leaves may be wrong until it is rebuilt.
    pub fn mark_dirty(&self, partition: Partition) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition);
    }

    pub fn is_dirty(&self, partition: Partition) -> bool {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&partition)
    }

    /// The partitions waiting for a rebuild, in order.
    pub fn dirty(&self) -> Vec<Partition> {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    pub fn clear_dirty(&self, partition: Partition) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
    }
}

/// The segments whose leaves differ between two copies of a partition's leaves.
pub fn differing_segments(ours: &[u64], theirs: &[u64]) -> Vec<u8> {
    ours.iter()
        .zip(theirs)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Actor, VersionVector, Versioned};

    fn write(clock: &Clock, actor: &str, value: &[u8]) -> Clock {
        clock.update(
            &clock.context(),
            Versioned::value(1, value.to_vec()),
            &Actor::new(actor, 1),
        )
    }

    #[test]
    fn key_hash_tells_versions_apart_and_ignores_merge_order() {
        // Two replicas that merged the same writes in any order hash a key alike; any
        // other state of the key hashes differently, and no record hashes to 0.
        let a = write(&Clock::new(), "n1", b"x");
        let b = Clock::new().update(
            &VersionVector::empty(),
            Versioned::value(2, b"y".to_vec()),
            &Actor::new("n2", 1),
        );
        assert_eq!(key_hash(b"k", &a.sync(&b)), key_hash(b"k", &b.sync(&a)));
        assert_ne!(key_hash(b"k", &a), key_hash(b"k", &a.sync(&b)));
        assert_ne!(key_hash(b"k", &a), key_hash(b"other", &a));
        assert_ne!(key_hash(b"k", &a), key_hash(b"k", &write(&a, "n1", b"x")));
        assert_eq!(key_hash(b"k", &Clock::new()), 0);
    }

    #[test]
    fn xor_updates_equal_a_tree_built_from_scratch() {
        // A tree updated write by write with h(old)^h(new) ends where a tree built from
        // the final states does, whatever the order of the writes to different keys.
        let incremental = Tree::new();
        let mut states = std::collections::BTreeMap::new();
        for i in 0..500u32 {
            let key = format!("k{}", i % 97).into_bytes();
            let old: Clock = states.get(&key).cloned().unwrap_or_default();
            let new = write(&old, if i % 2 == 0 { "n1" } else { "n2" }, &i.to_le_bytes());
            incremental.xor(Place::of(&key), key_hash(&key, &old) ^ key_hash(&key, &new));
            states.insert(key, new);
        }
        let scratch = Tree::new();
        for (key, clock) in &states {
            scratch.xor(Place::of(key), key_hash(key, clock));
        }
        for p in Partition::all() {
            assert_eq!(incremental.leaves(p), scratch.leaves(p));
            assert_eq!(incremental.root(p), scratch.root(p));
            let xor = scratch.leaves(p).iter().fold(0, |a, l| a ^ l);
            assert_eq!(scratch.root(p), xor);
        }
        assert!(Partition::all().any(|p| scratch.root(p) != 0));
    }

    #[test]
    fn differing_segments_lists_exactly_the_changed_leaves() {
        // Only the leaves that differ are named.
        let a = vec![0u64, 1, 2, 3];
        let b = vec![0u64, 9, 2, 4];
        assert_eq!(differing_segments(&a, &b), vec![1, 3]);
        assert!(differing_segments(&a, &a).is_empty());
    }
}
