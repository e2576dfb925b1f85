//! The local replica: this node's copy of the keys it holds, read and written as
//! [`Clock`]s.
//!
//! Two kinds of write reach a replica: [`Replica::coordinate`], where this node makes
//! the new dot for a client's write (it is the coordinator), and [`Replica::merge`], where
//! another replica's state is folded in (replication, repair, handoff). Both read the
//! stored clock, compute the new one and store it under a per-key lock stripe, so that
//! two writes to one key never interleave their read-modify-write. No lock is held
//! across an `.await`: every method here is synchronous and may block on the disk.
//!
//! Dots must never be reused. A key whose record is corrupt reads as missing, and
//! tombstone GC deletes records whole, so a write to a key with no record here could
//! restart a counter and mint a dot that a replica or a client context already knows
//! with another value. [`actors`] rules that out: such a write takes a fresh actor.
//!
//! Reads go through a bounded [`RecordCache`] of decoded clocks (`--record-cache-mb`);
//! it changes only under the key's lock stripe, so it never holds an older version than
//! the store (see [`cache`]).
//!
//! Every write also updates the key's leaf of the replica's hash [`tree`] and, for a
//! key whose versions are all tombstones, an index of tombstones, in the same storage
//! batch as the record ([`layout`] says where each lives). Anti-entropy reads both
//! through the methods in [`sync`].

mod actors;
pub mod cache;
pub mod layout;
mod sync;
pub mod tree;

use std::borrow::Cow;
use std::sync::{Arc, Mutex, RwLock};

use ringkv_ring::{PARTITIONS, Partition};

use crate::env::Entropy;
use crate::error::{Error, Result};
use crate::metrics;
use crate::storage::{Backend, Batch, Cf, record};
use crate::version::{Actor, Clock, VersionVector, Versioned};
use actors::Actors;

pub use crate::version::SegmentEntry;
pub use cache::{CacheStats, RecordCache};
pub use sync::TreeRebuild;
use tree::{Tree, key_hash};

/// Lock stripes for per-key read-modify-write; a power of two.
const LOCK_STRIPES: usize = 1024;
/// Most keys one storage batch of [`Replica::merge_many`] folds in. A batch holds the
/// lock stripes of all its keys until it is written, and runs on the low-priority
/// background thread, which the foreground can preempt: small batches keep the reads
/// and writes that wait on those stripes (a few percent of keys) waiting briefly.
pub const MERGE_BATCH_KEYS: usize = 32;
/// The storage layout of the data directory ([`layout::LAYOUT_VERSION`]).
const META_LAYOUT: &[u8] = b"layout";
/// Present once the hash trees cover every record (written with the layout of a new
/// store, or after a full rebuild).
const META_TREE: &[u8] = b"tree";

/// A record as read: its clock and the actor kept in it, `None` when missing, `Err(())`
/// when corrupt (already counted).
type Found = std::result::Result<Option<(Clock, Option<u64>)>, ()>;

/// What a key held before a write, as the tree and the tombstone index need it.
enum Prior<'a> {
    Missing,
    Found(&'a Clock),
    /// Unreadable: its hash, still in the tree, is unknown.
    Corrupt,
}

/// This node's replica of its keys.
#[derive(Debug)]
pub struct Replica {
    backend: Arc<dyn Backend>,
    actors: Actors,
    max_siblings: usize,
    stripes: Box<[Mutex<()>]>,
    /// Taken shared by every write, exclusively by a partition's rebuild, so that a
    /// rebuild never misses a write that lands while it scans.
    partition_locks: Box<[RwLock<()>]>,
    tree: Tree,
    cache: RecordCache,
}

impl Replica {
    /// Opens the replica of node `node_id`, creating its incarnation when the store is
    /// new: the incarnation keeps dots unique if the node ever restarts with its data lost.
    /// Reads are cached in up to `cache_bytes` of memory (0: no cache).
    pub fn open(
        backend: Arc<dyn Backend>,
        node_id: &str,
        max_siblings: usize,
        cache_bytes: u64,
        entropy: Arc<dyn Entropy>,
    ) -> Result<Self> {
        let fresh = check_layout(backend.as_ref())?;
        let actors = Actors::open(backend.clone(), node_id, entropy)?;
        let replica = Self {
            backend,
            actors,
            max_siblings,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            partition_locks: (0..PARTITIONS).map(|_| RwLock::new(())).collect(),
            tree: Tree::new(),
            cache: RecordCache::new(cache_bytes),
        };
        if fresh {
            replica.backend.put(Cf::Meta, META_TREE, &[1], true)?;
        } else if replica.backend.get(Cf::Meta, META_TREE)?.is_none() {
            // Trees that were never completed: build them all now, before serving.
            let started = std::time::Instant::now();
            for partition in Partition::all() {
                replica.rebuild_partition(partition)?;
            }
            replica.backend.put(Cf::Meta, META_TREE, &[1], true)?;
            tracing::info!(elapsed = ?started.elapsed(), "built the anti-entropy trees from a scan");
        } else {
            replica.load_tree()?;
        }
        Ok(replica)
    }

    /// The actor naming this data directory (its incarnation at epoch 0), for logs.
    pub fn actor(&self) -> Actor {
        self.actors.describe()
    }

    /// The key's clock, or `None` when the key is unknown here or its record is corrupt
    /// (counted in `ringkv_storage_corrupt_records_total`).
    pub fn get(&self, key: &[u8]) -> Result<Option<Clock>> {
        if let Some(clock) = self.cache.get(key) {
            return Ok(Some(clock));
        }
        // Fill under the stripe: a write must not slip between the store read and the
        // fill, or the cache would keep the version that write replaced. (A reader that
        // raced this one may have filled it meanwhile; filling again is harmless.) While
        // a writer holds the stripe, read without it and leave the cache alone: the
        // read sees the record before or after that write, and does not wait for a
        // batch on the low-priority background thread, which may be preempted.
        let guard = match self.stripes[stripe_of(key)].try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        let current = self.read_record(key)?;
        if let (Some(_), Ok(Some((clock, actor)))) = (&guard, &current) {
            self.cache.fill(key, clock, *actor);
        }
        Ok(current.unwrap_or(None).map(|(clock, _)| clock))
    }

    /// The current clock, from the cache or the store, without filling the cache (a
    /// write never fills it: keys only written would push out the ones read); `Err(())`
    /// inside when the record is corrupt (already counted). Call under the key's lock
    /// stripe.
    fn read(&self, key: &[u8]) -> Result<Result<Option<Clock>, ()>> {
        Ok(self
            .read_record(key)?
            .map(|found| found.map(|(clock, _)| clock)))
    }

    /// [`Replica::read`], with the actor kept in the record (see [`actors`]).
    fn read_record(&self, key: &[u8]) -> Result<Found> {
        match self.cache.peek(key) {
            Some(cached) => Ok(Ok(Some(cached))),
            None => self.read_store(key),
        }
    }

    /// The record in the store, bypassing the cache.
    fn read_store(&self, key: &[u8]) -> Result<Found> {
        let Some(bytes) = self.backend.get(Cf::Data, &layout::stored_key(key))? else {
            return Ok(Ok(None));
        };
        match record::decode_record(&bytes) {
            Ok(found) => Ok(Ok(Some(found))),
            Err(corrupt) => {
                metrics::corrupt_record();
                // Its stale hash is still in the tree: rebuild it, so that anti-entropy
                // sees the key as missing here and brings it back.
                self.tree.mark_dirty(layout::Place::of(key).partition);
                tracing::error!(key = %String::from_utf8_lossy(key), %corrupt, "treating a corrupt record as missing");
                Ok(Err(()))
            }
        }
    }

    /// The coordinator's write: `value` supersedes what `context` saw and becomes a new
    /// dot of this replica's actor. Refused with [`Error::TooManySiblings`] (nothing
    /// stored) when the key would keep more than `max_siblings` versions.
    pub fn coordinate(
        &self,
        key: &[u8],
        context: &VersionVector,
        value: Versioned,
        sync: bool,
    ) -> Result<Clock> {
        let _guard = self.lock(key);
        let record = self.read_record(key)?;
        // The actor kept in the record, or (no record here, a corrupt one, or one that
        // came by replication) a fresh one: see [`actors`].
        let kept = kept_in(&record).and_then(|incarnation| self.actors.kept(incarnation));
        let stored = record.map(|found| found.map(|(clock, _)| clock));
        let current = stored.as_ref().ok().and_then(Option::as_ref);
        let actor = match kept {
            Some(actor) => actor,
            None => self.actors.fresh()?,
        };
        let updated = match current {
            Some(current) => current.update(context, value, &actor),
            None => Clock::new().update(context, value, &actor),
        };
        if updated.value_count() > self.max_siblings {
            return Err(Error::TooManySiblings {
                max: self.max_siblings,
            });
        }
        self.store(key, prior(&stored), &updated, Some(actor.incarnation), sync)?;
        Ok(updated)
    }

    /// Folds another replica's clock for `key` into the stored one and returns the
    /// result. Never refuses on sibling count: dropping a version here would lose an
    /// acknowledged write.
    pub fn merge(&self, key: &[u8], incoming: &Clock, sync: bool) -> Result<Clock> {
        let _guard = self.lock(key);
        let mut batch = Batch::new();
        let (merged, change) = self.fold_in(key, Cow::Borrowed(incoming), &mut batch)?;
        if let Some(staged) = change {
            self.commit(batch, [(key, &merged, &staged)], sync)?;
        }
        Ok(merged)
    }

    /// Reads the key's record and folds `incoming` into it; when that changes the
    /// record, stages the write in `batch` (keeping the record's actor) and returns
    /// what [`Replica::commit`] needs. Call under the key's lock stripe.
    fn fold_in(
        &self,
        key: &[u8],
        incoming: Cow<'_, Clock>,
        batch: &mut Batch,
    ) -> Result<(Clock, Option<Staged>)> {
        let record = self.read_record(key)?;
        let actor = kept_in(&record);
        let stored = record.map(|found| found.map(|(clock, _)| clock));
        let merged = match &stored {
            Ok(Some(c)) => c.sync(&incoming),
            _ => incoming.into_owned(),
        };
        if stored.as_ref().ok().and_then(Option::as_ref) == Some(&merged) {
            return Ok((merged, None));
        }
        let staged = stage(batch, key, prior(&stored), &merged, actor);
        Ok((merged, Some(staged)))
    }

    /// Writes `clock` as the key's record, with `actor` kept in it, its tree leaf and
    /// its tombstone index entry, all in one batch, and refreshes the cache. Call only
    /// under the key's lock stripe.
    fn store(
        &self,
        key: &[u8],
        prior: Prior<'_>,
        clock: &Clock,
        actor: Option<u64>,
        sync: bool,
    ) -> Result<()> {
        let mut batch = Batch::new();
        let staged = stage(&mut batch, key, prior, clock, actor);
        self.commit(batch, [(key, clock, &staged)], sync)
    }

    /// Writes `batch`, holding the partitions its `changes` touch (in ascending
    /// order), then brings the tree and the cache in step with each change: on
    /// success they follow it; on failure (the write may or may not have reached the
    /// store) the key is read back next time, and the partition's leaves are not
    /// trusted until a rebuild.
    fn commit<'a>(
        &self,
        batch: Batch,
        changes: impl IntoIterator<Item = (&'a [u8], &'a Clock, &'a Staged)>,
        sync: bool,
    ) -> Result<()> {
        let changes: Vec<_> = changes.into_iter().collect();
        let mut partitions: Vec<Partition> =
            changes.iter().map(|(_, _, s)| s.place.partition).collect();
        partitions.sort_unstable();
        partitions.dedup();
        let _held: Vec<_> = partitions.iter().map(|p| self.read_partition(*p)).collect();
        let written = self.backend.write(batch, sync);
        for (key, clock, staged) in changes {
            if written.is_ok() {
                self.tree.xor(staged.place, staged.delta);
                if staged.was_corrupt {
                    self.tree.mark_dirty(staged.place.partition);
                }
                self.cache.refresh(key, clock, staged.actor);
            } else {
                self.cache.forget(key);
                self.tree.mark_dirty(staged.place.partition);
            }
        }
        written
    }

    /// Folds many replicas' clocks in (anti-entropy's repair): the same as
    /// [`Replica::merge`] on each, written in storage batches of at most
    /// [`MERGE_BATCH_KEYS`] keys. Returns how many keys changed here.
    pub fn merge_many(&self, incoming: &[(Vec<u8>, Clock)], sync: bool) -> Result<usize> {
        let mut changed = 0;
        for chunk in incoming.chunks(MERGE_BATCH_KEYS) {
            changed += self.merge_batch(chunk, sync)?;
        }
        Ok(changed)
    }

    /// [`Replica::merge_many`] in one storage batch, under the lock stripes of all the
    /// keys at once.
    fn merge_batch(&self, incoming: &[(Vec<u8>, Clock)], sync: bool) -> Result<usize> {
        // Stripes, then partitions, in ascending order: no other path holds two.
        let mut stripes: Vec<usize> = incoming.iter().map(|(k, _)| stripe_of(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _stripes: Vec<_> = stripes
            .iter()
            .map(|s| self.stripes[*s].lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let mut merged: std::collections::BTreeMap<&[u8], Clock> = Default::default();
        for (key, clock) in incoming {
            let entry = merged.entry(key.as_slice()).or_default();
            *entry = entry.sync(clock);
        }
        let mut batch = Batch::new();
        let mut changes = Vec::new();
        for (key, clock) in merged {
            if let (next, Some(staged)) = self.fold_in(key, Cow::Owned(clock), &mut batch)? {
                changes.push((key, next, staged));
            }
        }
        if changes.is_empty() {
            return Ok(0);
        }
        let written = changes
            .iter()
            .map(|(key, clock, staged)| (*key, clock, staged));
        self.commit(batch, written, sync)?;
        Ok(changes.len())
    }

    /// Shared hold on a partition: every write takes it (see `partition_locks`).
    fn read_partition(&self, partition: Partition) -> std::sync::RwLockReadGuard<'_, ()> {
        self.partition_locks[partition.index()]
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn write_partition(&self, partition: Partition) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.partition_locks[partition.index()]
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The record cache's counters, for metrics.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.backend.flush()
    }

    fn lock(&self, key: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned stripe only means another writer panicked; the data is in the store.
        self.stripes[stripe_of(key)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// The actor kept in a record that was read (a corrupt or missing one keeps none).
fn kept_in(record: &Found) -> Option<u64> {
    match record {
        Ok(Some((_, actor))) => *actor,
        _ => None,
    }
}

fn stripe_of(key: &[u8]) -> usize {
    (crc32fast::hash(key) as usize) & (LOCK_STRIPES - 1)
}

/// What a staged write changes besides its batch: the tree leaf's delta, and the
/// actor kept in the record (for the cache).
struct Staged {
    place: layout::Place,
    delta: u64,
    was_corrupt: bool,
    actor: Option<u64>,
}

/// Adds to `batch` the writes of `clock` as the key's record (with `actor` kept in
/// it), its tree leaf and its tombstone index entry.
fn stage(
    batch: &mut Batch,
    key: &[u8],
    prior: Prior<'_>,
    clock: &Clock,
    actor: Option<u64>,
) -> Staged {
    let place = layout::Place::of(key);
    let stored_key = layout::stored_key(key);
    let old_hash = match prior {
        Prior::Found(old) => key_hash(key, old),
        Prior::Missing | Prior::Corrupt => 0,
    };
    let delta = old_hash ^ key_hash(key, clock);
    batch.put(Cf::Data, stored_key.clone(), record::encode(clock, actor));
    batch.xor(Cf::Tree, place.prefix(), delta);
    let was_tombstoned = match prior {
        Prior::Found(old) => old.is_tombstoned(),
        Prior::Corrupt => true,
        Prior::Missing => false,
    };
    if clock.is_tombstoned() {
        batch.put(Cf::Tombstones, stored_key, Vec::new());
    } else if was_tombstoned {
        batch.delete(Cf::Tombstones, stored_key);
    }
    Staged {
        place,
        delta,
        was_corrupt: matches!(prior, Prior::Corrupt),
        actor,
    }
}

fn prior(stored: &Result<Option<Clock>, ()>) -> Prior<'_> {
    match stored {
        Ok(Some(clock)) => Prior::Found(clock),
        Ok(None) => Prior::Missing,
        Err(()) => Prior::Corrupt,
    }
}

/// Checks that the store is in this build's layout, stamping a new store with it;
/// true for a store that was new. A store of an older layout is refused, not changed.
fn check_layout(backend: &dyn Backend) -> Result<bool> {
    match backend.get(Cf::Meta, META_LAYOUT)? {
        Some(v) if v == [layout::LAYOUT_VERSION] => Ok(false),
        Some(v) => Err(Error::Storage(format!(
            "the data dir is in storage layout {v:?}, which this build ({}) does not know; \
             run the ringkv that wrote it",
            layout::LAYOUT_VERSION
        ))),
        None => {
            let has_data = !backend.scan_prefix(Cf::Data, &[], &[], 1)?.is_empty();
            if has_data {
                return Err(Error::Storage(
                    "the data dir holds keys in storage layout 1 (ringkv before keys were \
                     placed by partition): this build places keys differently and does not \
                     rewrite a data dir in place. Nothing was changed. Keep the dir for the \
                     older build, or start this node with a new --data-dir: anti-entropy \
                     fills it from the other replicas once they run this build"
                        .into(),
                ));
            }
            backend.put(Cf::Meta, META_LAYOUT, &[layout::LAYOUT_VERSION], true)?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryBackend;

    fn os() -> Arc<dyn Entropy> {
        Arc::new(crate::env::OsEntropy)
    }

    /// Tests run with the record cache on, so that they check the cached paths too.
    const CACHE_BYTES: u64 = 1 << 20;

    impl Replica {
        /// A client's write of `value` at `ts_ms`, superseding what `context` saw.
        fn client_write(
            &self,
            key: &[u8],
            context: &VersionVector,
            ts_ms: u64,
            value: &[u8],
        ) -> Result<Clock> {
            self.coordinate(key, context, Versioned::value(ts_ms, value.to_vec()), false)
        }
    }

    fn replica(max_siblings: usize) -> Replica {
        Replica::open(
            Arc::new(MemoryBackend::new()),
            "n1",
            max_siblings,
            CACHE_BYTES,
            os(),
        )
        .unwrap()
    }

    #[test]
    fn incarnation_is_kept_across_reopen() {
        // Reopening the same store keeps the actor, so counters continue rather than restart.
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let a = Replica::open(backend.clone(), "n1", 8, CACHE_BYTES, os())
            .unwrap()
            .actor();
        let b = Replica::open(backend, "n1", 8, CACHE_BYTES, os())
            .unwrap()
            .actor();
        assert_eq!(a, b);
        let fresh =
            Replica::open(Arc::new(MemoryBackend::new()), "n1", 8, CACHE_BYTES, os()).unwrap();
        assert_ne!(fresh.actor(), a, "a new data dir gets a new incarnation");
    }

    #[test]
    fn sibling_limit_refuses_without_storing() {
        // The write that would exceed --max-siblings is refused and the stored state is unchanged.
        let r = replica(2);
        let empty = VersionVector::empty();
        r.client_write(b"k", &empty, 1, b"a").unwrap();
        let two = r.client_write(b"k", &empty, 2, b"b").unwrap();
        let err = r.client_write(b"k", &empty, 3, b"c").unwrap_err();
        assert!(matches!(err, Error::TooManySiblings { max: 2 }));
        assert_eq!(r.get(b"k").unwrap().unwrap(), two);
        let resolved = r.client_write(b"k", &two.context(), 4, b"d").unwrap();
        assert_eq!(resolved.live_values(), vec![&b"d"[..]]);
    }

    #[test]
    fn corrupt_record_reads_as_missing_and_later_dots_stay_unique() {
        // A record with a flipped byte reads as missing, and the next write's dot cannot
        // collide with the lost one (which other replicas may hold with another value).
        let backend = Arc::new(MemoryBackend::new());
        let r = Replica::open(backend.clone(), "n1", 8, CACHE_BYTES, os()).unwrap();
        let before = r
            .client_write(b"k", &VersionVector::empty(), 1, b"v")
            .unwrap();
        let stored_key = layout::stored_key(b"k");
        let mut raw = backend.get(Cf::Data, &stored_key).unwrap().unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x40;
        backend.put(Cf::Data, &stored_key, &raw, false).unwrap();
        assert_eq!(r.get(b"k").unwrap(), None);
        let after = r
            .client_write(b"k", &VersionVector::empty(), 2, b"w")
            .unwrap();
        // Merged as another replica would: both writes survive as siblings.
        let merged = before.sync(&after);
        assert_eq!(
            merged.live_values().len(),
            2,
            "the rewrite reused the lost write's dot"
        );
        let dots = |c: &Clock| c.dots().map(|(a, _, _)| a.clone()).collect::<Vec<_>>();
        assert_ne!(
            dots(&before),
            dots(&after),
            "the rewrite took a fresh actor"
        );
    }

    #[test]
    fn a_writer_keeps_one_actor_per_key_until_the_record_is_purged() {
        // Writes through one replica add one entry to the key's clock, not one per
        // write; after the record is purged, the next write takes a fresh actor.
        let r = replica(8);
        let mut clock = Clock::new();
        for i in 0..10 {
            clock = r.client_write(b"k", &clock.context(), i, b"v").unwrap();
        }
        assert_eq!(clock.dots().count(), 1, "{clock:?}");
        let first = clock.dots().next().unwrap().0.clone();
        let deleted = r
            .coordinate(b"k", &clock.context(), Versioned::tombstone(11), false)
            .unwrap();
        let hash = tree::key_hash(b"k", &deleted);
        assert!(r.purge_tombstone(b"k", hash, false).unwrap());
        assert_eq!(r.get(b"k").unwrap(), None);
        let again = r
            .client_write(b"k", &VersionVector::empty(), 12, b"w")
            .unwrap();
        let actors: Vec<_> = again.dots().map(|(a, _, _)| a.clone()).collect();
        assert_eq!(actors.len(), 1);
        assert_ne!(
            actors[0], first,
            "a purged key's next write reused its actor"
        );
    }

    #[test]
    fn merge_many_equals_merging_one_by_one() {
        // Folding a batch in (with a key twice and a key already known) leaves the
        // same records, tree and tombstone index as merging each clock alone.
        let source = replica(8);
        let mut incoming = Vec::new();
        for i in 0..50u64 {
            let key = format!("k{}", i % 20).into_bytes();
            let c = source
                .client_write(&key, &VersionVector::empty(), i, &i.to_le_bytes())
                .unwrap();
            incoming.push((key, c));
        }
        let tomb = source
            .coordinate(
                b"k3",
                &source.get(b"k3").unwrap().unwrap().context(),
                Versioned::tombstone(99),
                false,
            )
            .unwrap();
        incoming.push((b"k3".to_vec(), tomb));
        let (one, many) = (replica(8), replica(8));
        for (k, c) in &incoming {
            one.merge(k, c, false).unwrap();
        }
        assert_eq!(many.merge_many(&incoming[..10], false).unwrap(), 10);
        many.merge_many(&incoming, false).unwrap();
        assert_eq!(many.merge_many(&incoming, false).unwrap(), 0, "all known");
        for i in 0..20 {
            let key = format!("k{i}").into_bytes();
            assert_eq!(one.get(&key).unwrap(), many.get(&key).unwrap());
        }
        for p in ringkv_ring::Partition::all() {
            assert_eq!(one.tree_leaves(p), many.tree_leaves(p));
        }
        let tombstones = |r: &Replica| {
            ringkv_ring::Partition::all()
                .flat_map(|p| r.tombstones(p, None, 100).unwrap())
                .collect::<Vec<_>>()
        };
        assert!(one.get(b"k3").unwrap().unwrap().is_tombstoned());
        assert_eq!(tombstones(&one), tombstones(&many));
        assert_eq!(tombstones(&many).len(), 1);
        let all: Vec<_> = ringkv_ring::Partition::all().collect();
        assert_eq!(
            many.partitions_with_tombstones(&all).unwrap(),
            vec![layout::Place::of(b"k3").partition],
            "only the partition of the deleted key holds a tombstone"
        );
    }

    #[test]
    fn a_rebuild_fixes_wrong_leaves_and_drops_corrupt_records_from_the_tree() {
        // Rebuilding a consistent partition changes nothing; a leaf damaged on disk and
        // in memory is put right; a corrupt record's hash leaves the tree, so the key
        // shows as missing to anti-entropy.
        let backend = Arc::new(MemoryBackend::new());
        let r = Replica::open(backend.clone(), "n1", 8, CACHE_BYTES, os()).unwrap();
        let keys: Vec<Vec<u8>> = (0..300).map(|i| format!("key{i}").into_bytes()).collect();
        for (i, k) in keys.iter().enumerate() {
            r.client_write(k, &VersionVector::empty(), i as u64, b"v")
                .unwrap();
        }
        let place = layout::Place::of(&keys[0]);
        let before = r.tree_leaves(place.partition).unwrap();
        assert_eq!(
            r.rebuild_partition(place.partition).unwrap().leaves_fixed,
            0
        );
        assert_eq!(r.tree_leaves(place.partition).unwrap(), before);

        r.tree.xor(place, 0xdead);
        backend
            .put(Cf::Tree, &place.prefix(), &7u64.to_le_bytes(), false)
            .unwrap();
        assert_eq!(
            r.rebuild_partition(place.partition).unwrap().leaves_fixed,
            1
        );
        assert_eq!(r.tree_leaves(place.partition).unwrap(), before);

        let stored_key = layout::stored_key(&keys[0]);
        let mut raw = backend.get(Cf::Data, &stored_key).unwrap().unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x40;
        backend.put(Cf::Data, &stored_key, &raw, false).unwrap();
        r.rebuild_partition(place.partition).unwrap();
        let entries = r.segment_entries(place).unwrap();
        assert!(
            entries.iter().all(|e| e.key != keys[0]),
            "the corrupt key is listed"
        );
        let expected = entries.iter().fold(0, |acc, e| acc ^ e.hash);
        assert_eq!(
            r.tree_leaves(place.partition).unwrap()[place.segment as usize],
            expected
        );
    }

    #[test]
    fn a_listing_of_many_segments_stops_between_whole_segments() {
        // Listing several segments at once gives what listing each alone gives, in the
        // same order, and a bound on records cuts it after the last whole segment that
        // fits, never inside one and never before the first.
        let r = replica(8);
        for i in 0..30_000u64 {
            let key = format!("key{i}").into_bytes();
            r.client_write(&key, &VersionVector::empty(), i, b"v")
                .unwrap();
        }
        let partition = ringkv_ring::Partition(7);
        let places: Vec<layout::Place> = (0..layout::SEGMENTS)
            .map(|segment| layout::Place {
                partition,
                segment: segment as u8,
            })
            .collect();
        let alone: Vec<Vec<(Vec<u8>, Clock)>> = places
            .iter()
            .map(|p| r.segment_records(*p).unwrap())
            .collect();
        let all: Vec<_> = alone.iter().flatten().cloned().collect();
        assert!(
            all.len() > 2,
            "the partition holds keys in several segments"
        );
        assert_eq!(
            r.segments_records(&places, usize::MAX).unwrap(),
            (places.len(), all.clone())
        );
        let first = alone.iter().position(|s| !s.is_empty()).unwrap();
        for max_keys in [0, 1, all.len() / 2, all.len() - 1] {
            let (listed, records) = r.segments_records(&places, max_keys).unwrap();
            let whole: usize = alone[..listed].iter().map(Vec::len).sum();
            assert_eq!(records, all[..whole], "max {max_keys}");
            assert!(
                listed > first,
                "the first segment with keys is always listed"
            );
            assert!(
                whole <= max_keys || alone[first + 1..listed].iter().all(Vec::is_empty),
                "only the first segment with keys may pass the bound (max {max_keys})"
            );
            assert!(
                whole + alone[listed].len() > max_keys,
                "the next segment would not fit (max {max_keys})"
            );
        }
    }

    #[test]
    fn merge_is_a_no_op_for_known_state() {
        // Merging a clock the replica already covers leaves it as it is.
        let r = replica(8);
        let c = r
            .client_write(b"k", &VersionVector::empty(), 1, b"v")
            .unwrap();
        assert_eq!(r.merge(b"k", &c, false).unwrap(), c);
        assert_eq!(r.merge(b"k", &Clock::new(), false).unwrap(), c);
    }

    /// A store whose reads yield the thread first, to widen the window between a read
    /// that missed the cache and its fill, where a concurrent write must not slip in.
    #[derive(Debug, Default)]
    struct YieldingBackend(MemoryBackend);

    impl Backend for YieldingBackend {
        fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
            if cf != Cf::Data {
                return self.0.get(cf, key);
            }
            std::thread::yield_now();
            let got = self.0.get(cf, key);
            std::thread::yield_now();
            got
        }
        fn write(&self, batch: Batch, sync: bool) -> Result<()> {
            self.0.write(batch, sync)
        }
        fn scan_prefix(
            &self,
            cf: Cf,
            prefix: &[u8],
            start: &[u8],
            limit: usize,
        ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
            self.0.scan_prefix(cf, prefix, start, limit)
        }
        fn flush(&self) -> Result<()> {
            self.0.flush()
        }
    }

    fn number(clock: &Clock) -> u64 {
        let values = clock.live_values();
        assert_eq!(values.len(), 1, "one writer never makes siblings");
        std::str::from_utf8(values[0]).unwrap().parse().unwrap()
    }

    #[test]
    fn writes_and_merges_refresh_cached_reads() {
        // A key read (so cached) and then written or merged reads back the new version.
        let r = replica(8);
        let empty = VersionVector::empty();
        let first = r.client_write(b"k", &empty, 1, b"1").unwrap();
        assert_eq!(r.get(b"k").unwrap(), Some(first.clone()));
        let hits = r.cache_stats().hits;
        assert_eq!(r.get(b"k").unwrap(), Some(first.clone()));
        assert_eq!(r.cache_stats().hits, hits + 1, "the second read is a hit");

        let second = r.client_write(b"k", &first.context(), 2, b"2").unwrap();
        assert_eq!(r.get(b"k").unwrap(), Some(second.clone()));

        let elsewhere = Replica::open(Arc::new(MemoryBackend::new()), "n2", 8, 0, os())
            .unwrap()
            .client_write(b"k", &empty, 3, b"3")
            .unwrap();
        let merged = r.merge(b"k", &elsewhere, false).unwrap();
        assert_eq!(merged.live_values().len(), 2);
        assert_eq!(r.get(b"k").unwrap(), Some(merged));
    }

    #[test]
    fn concurrent_reads_never_go_back_and_end_on_the_last_write() {
        // One writer counts up while readers that miss and fill the cache race it: no
        // reader ever sees the count go down, and once the writer stops every read (the
        // cache's answer) is the store's last version.
        const WRITES: u64 = 2_000;
        for round in 0..20 {
            let backend = Arc::new(YieldingBackend::default());
            // A cache that holds a handful of keys, so entries are evicted and refilled.
            let r = Arc::new(Replica::open(backend.clone(), "n1", 8, 2048, os()).unwrap());
            let keys: Vec<Vec<u8>> = (0..4).map(|k| format!("key{k}").into_bytes()).collect();
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    let (r, keys, done) = (r.clone(), keys.clone(), done.clone());
                    std::thread::spawn(move || {
                        let mut seen = vec![0u64; keys.len()];
                        while !done.load(std::sync::atomic::Ordering::Relaxed) {
                            for (i, key) in keys.iter().enumerate() {
                                let now = r.get(key).unwrap().map_or(0, |c| number(&c));
                                assert!(
                                    now >= seen[i],
                                    "round {round}: a read went back from {} to {now}",
                                    seen[i]
                                );
                                seen[i] = now;
                            }
                        }
                    })
                })
                .collect();
            let mut clocks = vec![Clock::new(); keys.len()];
            for n in 1..=WRITES {
                let i = (n as usize) % keys.len();
                clocks[i] = r
                    .coordinate(
                        &keys[i],
                        &clocks[i].context(),
                        Versioned::value(n, n.to_string().into_bytes()),
                        false,
                    )
                    .unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            for reader in readers {
                reader.join().expect("a reader saw a read go back");
            }
            for (key, clock) in keys.iter().zip(&clocks) {
                let raw = backend.get(Cf::Data, &layout::stored_key(key)).unwrap();
                let stored = record::decode(&raw.unwrap()).unwrap();
                assert_eq!(&stored, clock);
                assert_eq!(r.get(key).unwrap().as_ref(), Some(clock), "round {round}");
            }
        }
    }
}
