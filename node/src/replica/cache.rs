//! A bounded cache of decoded records in front of the store, so that a read of a key
//! read recently costs a hash lookup instead of a RocksDB point read and a decode.
//!
//! Why: profiles of three nodes on one machine put RocksDB's memtable search at 13% of
//! all cycles under a read load, nearly all of it cache-miss stalls (docs/benchmarks.md).
//! The cache holds what a read found and what later writes made of it; it never holds
//! a key only written (inserts would evict what readers need) and never a corrupt or
//! missing record.
//!
//! The cache is correct only if it never holds a version older than the store's. The
//! [`Replica`](super::Replica) keeps that by changing it only under the key's lock
//! stripe: a read that missed fills it under the stripe, and a write refreshes it under
//! the stripe after the store took the write. Reads that hit take no stripe.
//!
//! Memory is bounded by `--record-cache-mb`: each entry weighs its key, its clock's heap
//! bytes and a fixed overhead for the cache's own slot. Eviction is quick_cache's
//! S3-FIFO, which keeps keys read once from pushing out keys read often.

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::version::Clock;

/// Bytes counted per entry beyond its key's and clock's heap bytes: the cache's slot
/// and table, and the allocator's rounding of the entry's five or more allocations.
/// Calibrated with `.ci/bench rss` (one node, 1,000,000 keys of 100 B, 30 s of reads):
/// the node's RSS grew by 61 MiB while the cache counted 63 MiB; with 96 here it grew
/// by 98 MiB for the same count.
const ENTRY_OVERHEAD_BYTES: u64 = 256;

/// A guess of an average entry's weight, to size the cache's table up front (too
/// small a guess preallocates slots that are never used: 256 here cost ~20 MiB).
const TYPICAL_ENTRY_BYTES: u64 = 512;

/// The cache of decoded records; a no-op when built with a capacity of 0.
#[derive(Debug)]
pub struct RecordCache {
    cache: Option<Cache<Vec<u8>, Cached, ClockWeighter>>,
}

/// Counters and size of the cache, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// A cached record: the clock and the actor kept with it (see `replica::actors`).
pub type Cached = (Clock, Option<u64>);

#[derive(Debug, Clone, Copy)]
struct ClockWeighter;

impl Weighter<Vec<u8>, Cached> for ClockWeighter {
    fn weight(&self, key: &Vec<u8>, (clock, _): &Cached) -> u64 {
        (key.capacity() + clock.heap_bytes()) as u64 + ENTRY_OVERHEAD_BYTES
    }
}

impl RecordCache {
    /// A cache of at most `capacity_bytes`; 0 turns it off.
    pub fn new(capacity_bytes: u64) -> Self {
        let cache = (capacity_bytes > 0).then(|| {
            let items = (capacity_bytes / TYPICAL_ENTRY_BYTES).max(1) as usize;
            Cache::with_weighter(items, capacity_bytes, ClockWeighter)
        });
        Self { cache }
    }

    /// The cached clock of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Clock> {
        self.cache.as_ref()?.get(key).map(|(clock, _)| clock)
    }

    /// The cached clock of `key`, if any, without counting a hit or a miss or marking
    /// the entry as used.
    pub fn peek(&self, key: &[u8]) -> Option<Cached> {
        self.cache.as_ref()?.peek(key)
    }

    /// Keeps the record a read found. Call only under the key's lock stripe.
    pub fn fill(&self, key: &[u8], clock: &Clock, actor: Option<u64>) {
        if let Some(cache) = &self.cache {
            cache.insert(key.to_vec(), (clock.clone(), actor));
        }
    }

    /// Replaces the cached clock of `key` with the one just stored, if the key is
    /// cached; a key only written stays out. Call only under the key's lock stripe.
    pub fn refresh(&self, key: &[u8], clock: &Clock, actor: Option<u64>) {
        // Looked up first so that a write to an uncached key (most inserts) copies
        // neither its key nor its clock.
        if let Some(cache) = &self.cache
            && cache.contains_key(key)
        {
            // Err means the key was evicted meanwhile, or the clock outgrew the cache
            // (the old entry is then removed): either way nothing stale stays.
            let _ = cache.replace(key.to_vec(), (clock.clone(), actor), false);
        }
    }

    /// Drops `key`, for when the store's state is in doubt (a failed write).
    pub fn forget(&self, key: &[u8]) {
        if let Some(cache) = &self.cache {
            cache.remove(key);
        }
    }

    pub fn stats(&self) -> CacheStats {
        match &self.cache {
            None => CacheStats::default(),
            Some(c) => CacheStats {
                hits: c.hits(),
                misses: c.misses(),
                entries: c.len() as u64,
                bytes: c.weight(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Actor, VersionVector, Versioned};

    fn clock(value: &[u8]) -> Clock {
        Clock::new().update(
            &VersionVector::empty(),
            Versioned::value(1, value.to_vec()),
            &Actor::new("n1", 7),
        )
    }

    #[test]
    fn refresh_only_touches_cached_keys() {
        // A write to a key nobody read leaves the cache as it was; a cached key is replaced.
        let cache = RecordCache::new(1 << 20);
        cache.refresh(b"written", &clock(b"a"), None);
        assert_eq!(cache.get(b"written"), None);
        cache.fill(b"read", &clock(b"a"), None);
        cache.refresh(b"read", &clock(b"b"), None);
        assert_eq!(cache.get(b"read"), Some(clock(b"b")));
        cache.forget(b"read");
        assert_eq!(cache.get(b"read"), None);
    }

    #[test]
    fn memory_stays_within_capacity() {
        // Filling far past the capacity evicts: the weight never passes the bound.
        let capacity = 64 * 1024;
        let cache = RecordCache::new(capacity);
        for i in 0..10_000u32 {
            cache.fill(&i.to_be_bytes(), &clock(&[0u8; 100]), None);
            assert!(cache.stats().bytes <= capacity);
        }
        let stats = cache.stats();
        assert!(stats.entries > 0 && stats.entries < 10_000, "{stats:?}");
        assert!(stats.bytes > capacity / 2, "{stats:?}");
    }

    #[test]
    fn weight_counts_the_value() {
        // An entry weighs at least its value's bytes, so the bound is in bytes.
        let small = ClockWeighter.weight(&b"k".to_vec(), &(clock(b"v"), None));
        let large = ClockWeighter.weight(&b"k".to_vec(), &(clock(&[0u8; 1024]), None));
        assert!(large >= small + 1023, "{small} {large}");
    }

    #[test]
    fn zero_capacity_is_off() {
        // --record-cache-mb 0 keeps nothing and reports nothing.
        let cache = RecordCache::new(0);
        cache.fill(b"k", &clock(b"v"), None);
        assert_eq!(cache.get(b"k"), None);
        assert_eq!(cache.stats(), CacheStats::default());
    }
}
