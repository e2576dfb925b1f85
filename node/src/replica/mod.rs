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
//! Dots must never be reused. A key whose record is corrupt reads as missing, so the
//! next write to it would restart this actor's counter for that key and mint a dot
//! that other replicas may already hold with another value. To rule that out, a write
//! over a corrupt record first renews the replica's incarnation (a new actor).
//!
//! Reads go through a bounded [`RecordCache`] of decoded clocks (`--record-cache-mb`);
//! it changes only under the key's lock stripe, so it never holds an older version than
//! the store (see [`cache`]).

pub mod cache;

use std::sync::{Arc, Mutex, RwLock};

use crate::env::Entropy;
use crate::error::{Error, Result};
use crate::metrics;
use crate::storage::{Backend, Cf, record};
use crate::version::{Actor, Clock, VersionVector, Versioned};

pub use cache::{CacheStats, RecordCache};

/// Lock stripes for per-key read-modify-write; a power of two.
const LOCK_STRIPES: usize = 1024;
const META_INCARNATION: &[u8] = b"incarnation";

/// This node's replica of its keys.
#[derive(Debug)]
pub struct Replica {
    backend: Arc<dyn Backend>,
    actor: RwLock<Arc<Actor>>,
    max_siblings: usize,
    stripes: Box<[Mutex<()>]>,
    cache: RecordCache,
    /// Draws new incarnations.
    entropy: Arc<dyn Entropy>,
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
        let incarnation = match backend.get(Cf::Meta, META_INCARNATION)? {
            Some(bytes) => u64::from_le_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Storage("the stored incarnation is not 8 bytes".into()))?,
            ),
            None => new_incarnation(backend.as_ref(), entropy.as_ref())?,
        };
        Ok(Self {
            backend,
            actor: RwLock::new(Arc::new(Actor::new(node_id, incarnation))),
            max_siblings,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            cache: RecordCache::new(cache_bytes),
            entropy,
        })
    }

    /// The actor this replica's dots carry now.
    pub fn actor(&self) -> Arc<Actor> {
        self.actor.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Switches to a fresh incarnation, so no later dot can collide with one minted
    /// before (see the module docs).
    fn renew_incarnation(&self) -> Result<()> {
        let mut actor = self.actor.write().unwrap_or_else(|p| p.into_inner());
        let incarnation = new_incarnation(self.backend.as_ref(), self.entropy.as_ref())?;
        *actor = Arc::new(Actor::new(actor.node.clone(), incarnation));
        tracing::warn!(actor = ?*actor, "renewed the incarnation after finding a corrupt record");
        Ok(())
    }

    /// The key's clock, or `None` when the key is unknown here or its record is corrupt
    /// (counted in `ringkv_storage_corrupt_records_total`).
    pub fn get(&self, key: &[u8]) -> Result<Option<Clock>> {
        if let Some(clock) = self.cache.get(key) {
            return Ok(Some(clock));
        }
        // Fill under the stripe: a write must not slip between the store read and the
        // fill, or the cache would keep the version that write replaced. (A reader that
        // raced this one may have filled it meanwhile; filling again is harmless.)
        let _guard = self.lock(key);
        let current = self.read(key)?;
        if let Ok(Some(clock)) = &current {
            self.cache.fill(key, clock);
        }
        Ok(current.unwrap_or(None))
    }

    /// The current clock, from the cache or the store, without filling the cache (a
    /// write never fills it: keys only written would push out the ones read); `Err(())`
    /// inside when the record is corrupt (already counted). Call under the key's lock
    /// stripe.
    fn read(&self, key: &[u8]) -> Result<Result<Option<Clock>, ()>> {
        match self.cache.peek(key) {
            Some(clock) => Ok(Ok(Some(clock))),
            None => self.read_store(key),
        }
    }

    /// The clock in the store, bypassing the cache.
    fn read_store(&self, key: &[u8]) -> Result<Result<Option<Clock>, ()>> {
        let Some(bytes) = self.backend.get(Cf::Data, key)? else {
            return Ok(Ok(None));
        };
        match record::decode(&bytes) {
            Ok(clock) => Ok(Ok(Some(clock))),
            Err(corrupt) => {
                metrics::corrupt_record();
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
        let current = match self.read(key)? {
            Ok(clock) => clock.unwrap_or_default(),
            Err(()) => {
                // The lost record's dots may live on elsewhere: never mint them again.
                self.renew_incarnation()?;
                Clock::new()
            }
        };
        let updated = current.update(context, value, &self.actor());
        if updated.value_count() > self.max_siblings {
            return Err(Error::TooManySiblings {
                max: self.max_siblings,
            });
        }
        self.store(key, &updated, sync)?;
        Ok(updated)
    }

    /// Folds another replica's clock for `key` into the stored one and returns the
    /// result. Never refuses on sibling count: dropping a version here would lose an
    /// acknowledged write.
    pub fn merge(&self, key: &[u8], incoming: &Clock, sync: bool) -> Result<Clock> {
        let _guard = self.lock(key);
        let current = self.read(key)?.unwrap_or(None);
        let merged = match &current {
            Some(c) => c.sync(incoming),
            None => incoming.clone(),
        };
        if current.as_ref() != Some(&merged) {
            self.store(key, &merged, sync)?;
        }
        Ok(merged)
    }

    /// Writes `clock` as the key's record and refreshes the cache. Call only under the
    /// key's lock stripe.
    fn store(&self, key: &[u8], clock: &Clock, sync: bool) -> Result<()> {
        match self
            .backend
            .put(Cf::Data, key, &record::encode(clock), sync)
        {
            Ok(()) => {
                self.cache.refresh(key, clock);
                Ok(())
            }
            Err(e) => {
                // The write may or may not have reached the store: read it back next time.
                self.cache.forget(key);
                Err(e)
            }
        }
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
        let stripe = (crc32fast::hash(key) as usize) & (LOCK_STRIPES - 1);
        // A poisoned stripe only means another writer panicked; the data is in the store.
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// Draws and stores a new incarnation (fsync'ed: it must outlive any dot made with it).
fn new_incarnation(backend: &dyn Backend, entropy: &dyn Entropy) -> Result<u64> {
    let incarnation = entropy.next_u64();
    backend.put(Cf::Meta, META_INCARNATION, &incarnation.to_le_bytes(), true)?;
    Ok(incarnation)
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
        let mut raw = backend.get(Cf::Data, b"k").unwrap().unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x40;
        backend.put(Cf::Data, b"k", &raw, false).unwrap();
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
        let reopened = Replica::open(backend, "n1", 8, CACHE_BYTES, os()).unwrap();
        assert_eq!(
            reopened.actor(),
            r.actor(),
            "the renewed incarnation is stored"
        );
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
            std::thread::yield_now();
            let got = self.0.get(cf, key);
            std::thread::yield_now();
            got
        }
        fn put(&self, cf: Cf, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
            self.0.put(cf, key, value, sync)
        }
        fn delete(&self, cf: Cf, key: &[u8], sync: bool) -> Result<()> {
            self.0.delete(cf, key, sync)
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
                let stored = record::decode(&backend.get(Cf::Data, key).unwrap().unwrap()).unwrap();
                assert_eq!(&stored, clock);
                assert_eq!(r.get(key).unwrap().as_ref(), Some(clock), "round {round}");
            }
        }
    }
}
