//! The hint store: hints in [`Cf::Hints`], their counts, and the operations that must
//! not interleave (add/merge, delete-if-unchanged, expiry) under per-key lock stripes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::env::Env;
use crate::error::{Error, Result};
use crate::metrics as names;
use crate::storage::{Backend, Cf, record};
use crate::version::Clock;

/// Lock stripes for per-hint read-modify-write; a power of two.
const LOCK_STRIPES: usize = 1024;
/// Between the owner id and the key in a hint's storage key; node ids never contain it.
const SEPARATOR: u8 = 0x00;
/// The `written_ms` header before the framed clock.
const TIME_BYTES: usize = 8;
/// Records read per scan when opening and per expiry batch.
pub(super) const SCAN_BATCH_KEYS: usize = 1024;

mod expiry;

pub(in crate::handoff) use expiry::Sweep;

/// Bounds of the hint store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintLimits {
    /// A hint whose newest write is older than this is dropped (the owner then catches
    /// up by read repair).
    pub max_age: Duration,
    /// Most bytes (storage keys plus records) of hints kept; an add past it is refused.
    pub max_bytes: u64,
}

/// What the store counts, rebuilt by a scan at open.
#[derive(Debug)]
struct Counters {
    /// Hints per owner; owners with none are absent.
    per_owner: BTreeMap<String, u64>,
    /// Storage keys plus records of every hint.
    bytes: u64,
    /// No hint's `written_ms` is below this (a lower bound, `u64::MAX` when unknown to be
    /// any): lets expiry skip sweeps that could not find anything.
    oldest_written_ms: u64,
}

/// Hints this node keeps for other nodes, in the store's hints column family.
#[derive(Debug)]
pub struct HintStore {
    backend: Arc<dyn Backend>,
    limits: HintLimits,
    counters: Mutex<Counters>,
    stripes: Box<[Mutex<()>]>,
    env: Env,
}

/// What a replay round must show to delete a hint: its storage key and the record as
/// it was read and sent.
#[derive(Debug, Clone)]
pub(super) struct Ticket {
    hint_key: Vec<u8>,
    stored: Vec<u8>,
}

/// A hint read for replay.
#[derive(Debug)]
pub(super) struct ReadHint {
    pub ticket: Ticket,
    pub key: Vec<u8>,
    pub clock: Clock,
}

/// One batch of an owner's hints.
#[derive(Debug)]
pub(super) struct Batch {
    /// The readable hints, in key order.
    pub hints: Vec<ReadHint>,
    /// Corrupt hints found (counted, logged and deleted).
    pub corrupt: u64,
    /// Where the next batch starts, or `None` when this was the last.
    pub next: Option<Vec<u8>>,
}

impl HintStore {
    /// Opens the hints kept in `backend`'s [`Cf::Hints`], counting them per owner and
    /// bytes (a scan at start). Records that cannot be a hint (no owner, too short) are
    /// counted as corrupt and deleted; record crcs are checked later, when a hint is used.
    /// `env` gives the wall clock that dates hints and runs the replay's batches.
    pub fn open(backend: Arc<dyn Backend>, limits: HintLimits, env: Env) -> Result<Self> {
        let mut counters = Counters {
            per_owner: BTreeMap::new(),
            bytes: 0,
            oldest_written_ms: u64::MAX,
        };
        let mut start = Vec::new();
        loop {
            let records = backend.scan_prefix(Cf::Hints, &[], &start, SCAN_BATCH_KEYS)?;
            for (hint_key, stored) in &records {
                match (owner_of(hint_key), written_ms_of(stored)) {
                    (Some(owner), Some(written_ms)) => {
                        *counters.per_owner.entry(owner.to_owned()).or_default() += 1;
                        counters.bytes += size_of(hint_key, stored);
                        counters.oldest_written_ms = counters.oldest_written_ms.min(written_ms);
                    }
                    _ => {
                        ::metrics::counter!(names::HINTS_CORRUPT).increment(1);
                        tracing::error!(
                            hint_key = %String::from_utf8_lossy(hint_key),
                            "deleting a hint record that cannot be read"
                        );
                        backend.delete(Cf::Hints, hint_key, false)?;
                    }
                }
            }
            match records.last() {
                Some((last, _)) if records.len() == SCAN_BATCH_KEYS => start = successor(last),
                _ => break,
            }
        }
        tracing::info!(
            hints = counters.per_owner.values().sum::<u64>(),
            bytes = counters.bytes,
            "opened the hint store"
        );
        publish(&counters);
        Ok(Self {
            backend,
            limits,
            counters: Mutex::new(counters),
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            env,
        })
    }

    /// The clock and storage executor this store was opened with.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The bounds this store keeps.
    pub fn limits(&self) -> HintLimits {
        self.limits
    }

    /// Keeps `clock` for `owner`'s replica of `key`, merged ([`Clock::sync`]) with any
    /// hint already kept for (owner, key); with `sync` it is on disk before this
    /// returns. Fails with [`Error::HintsFull`] (nothing stored) when it would pass
    /// `max_bytes`, and with [`Error::BadRequest`] when `owner` cannot be a node id.
    /// Blocks on the disk.
    pub fn add(&self, owner: &str, key: &[u8], clock: &Clock, sync: bool) -> Result<()> {
        self.add_at(owner, key, clock, sync, self.env.now_ms())
    }

    /// [`Self::add`] at the wall-clock time `now_ms`.
    pub(super) fn add_at(
        &self,
        owner: &str,
        key: &[u8],
        clock: &Clock,
        sync: bool,
        now_ms: u64,
    ) -> Result<()> {
        let hint_key = hint_key(owner, key)?;
        let _guard = self.lock(&hint_key);
        let old = self.backend.get(Cf::Hints, &hint_key)?;
        let (merged, written_ms) = match old.as_deref().map(parse) {
            None if clock.is_empty() => return Ok(()),
            None => (clock.clone(), now_ms),
            Some(Ok((old_ms, stored))) => {
                let merged = stored.sync(clock);
                if merged == stored {
                    // Nothing new: leave the record, and its time, as they are.
                    return Ok(());
                }
                (merged, now_ms.max(old_ms))
            }
            Some(Err(corrupt)) => {
                // The damaged clock cannot be handed off; the new one replaces it.
                ::metrics::counter!(names::HINTS_CORRUPT).increment(1);
                tracing::error!(%owner, key = %String::from_utf8_lossy(key), %corrupt, "replacing a corrupt hint");
                (clock.clone(), now_ms)
            }
        };
        let value = encode(written_ms, &merged);
        let old_bytes = old.as_ref().map_or(0, |o| size_of(&hint_key, o));
        let new_bytes = size_of(&hint_key, &value);
        {
            let mut counters = self.counters();
            let after = counters.bytes.saturating_sub(old_bytes) + new_bytes;
            if new_bytes > old_bytes && after > self.limits.max_bytes {
                ::metrics::counter!(names::HINTS_REFUSED).increment(1);
                return Err(Error::HintsFull {
                    max_bytes: self.limits.max_bytes,
                });
            }
            // Counted before the write so that concurrent adds cannot both pass the bound.
            counters.bytes = after;
            if old.is_none() {
                *counters.per_owner.entry(owner.to_owned()).or_default() += 1;
            }
            counters.oldest_written_ms = counters.oldest_written_ms.min(written_ms);
        }
        if let Err(e) = self.backend.put(Cf::Hints, &hint_key, &value, sync) {
            let mut counters = self.counters();
            counters.bytes = counters.bytes.saturating_sub(new_bytes) + old_bytes;
            if old.is_none() {
                decrement(&mut counters.per_owner, owner);
            }
            return Err(e);
        }
        ::metrics::counter!(names::HINTS_STORED).increment(1);
        publish(&self.counters());
        Ok(())
    }

    /// Pending hints per owner (for `GET /cluster`'s `hints.pending`).
    pub fn pending(&self) -> BTreeMap<String, u64> {
        self.counters().per_owner.clone()
    }

    /// True when a hint for `key` is kept here, for any owner (tombstone GC waits until
    /// none is). Blocks on the disk.
    pub fn holds_key(&self, key: &[u8]) -> Result<bool> {
        for (owner, count) in self.pending() {
            if count > 0
                && self
                    .backend
                    .get(Cf::Hints, &hint_key(&owner, key)?)?
                    .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Bytes of hints kept (storage keys plus records).
    pub fn bytes(&self) -> u64 {
        self.counters().bytes
    }

    /// Up to `limit` of `owner`'s hints from `start` (the owner's first when `None`).
    /// Corrupt hints met on the way are counted, logged and deleted. Blocks on the disk.
    pub(super) fn read_batch(
        &self,
        owner: &str,
        start: Option<&[u8]>,
        limit: usize,
    ) -> Result<Batch> {
        let prefix = hint_key(owner, &[])?;
        let limit = limit.max(1);
        let records =
            self.backend
                .scan_prefix(Cf::Hints, &prefix, start.unwrap_or(&prefix), limit)?;
        let next = match records.last() {
            Some((last, _)) if records.len() == limit => Some(successor(last)),
            _ => None,
        };
        let mut batch = Batch {
            hints: Vec::with_capacity(records.len()),
            corrupt: 0,
            next,
        };
        for (hint_key, stored) in records {
            match parse(&stored) {
                Ok((_, clock)) => batch.hints.push(ReadHint {
                    key: hint_key[prefix.len()..].to_vec(),
                    ticket: Ticket { hint_key, stored },
                    clock,
                }),
                Err(corrupt) => {
                    self.drop_corrupt(Ticket { hint_key, stored }, corrupt)?;
                    batch.corrupt += 1;
                }
            }
        }
        Ok(batch)
    }

    /// Deletes the hint if its record is still the one in `ticket`; `false` (and the hint
    /// kept) when a write changed it since. Blocks on the disk.
    pub(super) fn delete_if_unchanged(&self, ticket: &Ticket) -> Result<bool> {
        let _guard = self.lock(&ticket.hint_key);
        match self.backend.get(Cf::Hints, &ticket.hint_key)? {
            Some(stored) if stored == ticket.stored => {}
            _ => return Ok(false),
        }
        self.backend.delete(Cf::Hints, &ticket.hint_key, false)?;
        let mut counters = self.counters();
        counters.bytes = counters
            .bytes
            .saturating_sub(size_of(&ticket.hint_key, &ticket.stored));
        if let Some(owner) = owner_of(&ticket.hint_key) {
            decrement(&mut counters.per_owner, owner);
        }
        publish(&counters);
        Ok(true)
    }

    /// Counts, logs and deletes a hint that cannot be handed off.
    fn drop_corrupt(&self, ticket: Ticket, corrupt: record::Corrupt) -> Result<()> {
        ::metrics::counter!(names::HINTS_CORRUPT).increment(1);
        tracing::error!(
            hint_key = %String::from_utf8_lossy(&ticket.hint_key),
            %corrupt,
            "deleting a corrupt hint; it cannot be handed off"
        );
        self.delete_if_unchanged(&ticket)?;
        Ok(())
    }

    fn max_age_ms(&self) -> u64 {
        u64::try_from(self.limits.max_age.as_millis()).unwrap_or(u64::MAX)
    }

    fn counters(&self) -> MutexGuard<'_, Counters> {
        // A poisoned lock only means a panic elsewhere; the counts are still whole
        // (every update is a few plain assignments).
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self, hint_key: &[u8]) -> MutexGuard<'_, ()> {
        let stripe = (crc32fast::hash(hint_key) as usize) & (LOCK_STRIPES - 1);
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The hint kept for (owner, key): its `written_ms` and clock.
    #[cfg(test)]
    pub(super) fn get(&self, owner: &str, key: &[u8]) -> Option<(u64, Clock)> {
        let stored = self
            .backend
            .get(Cf::Hints, &hint_key(owner, key).unwrap())
            .unwrap()?;
        Some(parse(&stored).unwrap())
    }
}

/// The storage key of `owner`'s hint for `key`.
pub(super) fn hint_key(owner: &str, key: &[u8]) -> Result<Vec<u8>> {
    if owner.is_empty() || owner.as_bytes().contains(&SEPARATOR) {
        return Err(Error::BadRequest(format!(
            "{owner:?} cannot own a hint: node ids are non-empty and have no NUL byte"
        )));
    }
    let mut out = Vec::with_capacity(owner.len() + 1 + key.len());
    out.extend_from_slice(owner.as_bytes());
    out.push(SEPARATOR);
    out.extend_from_slice(key);
    Ok(out)
}

/// The owner named by a hint's storage key.
fn owner_of(hint_key: &[u8]) -> Option<&str> {
    let end = hint_key.iter().position(|b| *b == SEPARATOR)?;
    std::str::from_utf8(&hint_key[..end])
        .ok()
        .filter(|o| !o.is_empty())
}

/// The `written_ms` header of a record, if it has one and room for a clock after it.
fn written_ms_of(stored: &[u8]) -> Option<u64> {
    let header: [u8; TIME_BYTES] = stored.get(..TIME_BYTES)?.try_into().ok()?;
    (stored.len() > TIME_BYTES).then(|| u64::from_le_bytes(header))
}

fn encode(written_ms: u64, clock: &Clock) -> Vec<u8> {
    let framed = record::encode(clock, None);
    let mut out = Vec::with_capacity(TIME_BYTES + framed.len());
    out.extend_from_slice(&written_ms.to_le_bytes());
    out.extend_from_slice(&framed);
    out
}

fn parse(stored: &[u8]) -> Result<(u64, Clock), record::Corrupt> {
    let written_ms = written_ms_of(stored).ok_or(record::Corrupt("truncated time"))?;
    Ok((written_ms, record::decode(&stored[TIME_BYTES..])?))
}

/// What a hint counts against `max_bytes`.
fn size_of(hint_key: &[u8], stored: &[u8]) -> u64 {
    (hint_key.len() + stored.len()) as u64
}

/// The smallest key after `key`: where a scan that has seen `key` goes on.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

fn decrement(per_owner: &mut BTreeMap<String, u64>, owner: &str) {
    if let Some(n) = per_owner.get_mut(owner) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_owner.remove(owner);
        }
    }
}

fn publish(counters: &Counters) {
    let pending: u64 = counters.per_owner.values().sum();
    ::metrics::gauge!(names::HINTS_PENDING).set(pending as f64);
    ::metrics::gauge!(names::HINTS_BYTES).set(counters.bytes as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryBackend, RocksBackend, RocksOptions};
    use crate::version::{Actor, VersionVector, Versioned};

    const HOUR: Duration = Duration::from_secs(3600);
    const T0_MS: u64 = 1_700_000_000_000;

    fn limits(max_bytes: u64) -> HintLimits {
        HintLimits {
            max_age: HOUR,
            max_bytes,
        }
    }

    fn memory_store(max_bytes: u64) -> (Arc<dyn Backend>, HintStore) {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let store = HintStore::open(backend.clone(), limits(max_bytes), Env::production()).unwrap();
        (backend, store)
    }

    /// A write of `value` by coordinator `node`, concurrent with every other such write.
    fn write(node: &str, value: &str) -> Clock {
        Clock::new().update(
            &VersionVector::empty(),
            Versioned::value(1, value.as_bytes().to_vec()),
            &Actor::new(node, 1),
        )
    }

    fn live_values(clock: &Clock) -> Vec<String> {
        let mut v: Vec<String> = clock
            .live_values()
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn adds_for_one_owner_and_key_merge_into_one_hint() {
        // Two concurrent writes for one (owner, key) become one hint holding both values,
        // and a clock the hint already covers changes neither its bytes nor its time.
        let (_, store) = memory_store(u64::MAX);
        store
            .add_at("n2", b"k", &write("n1", "a"), false, T0_MS)
            .unwrap();
        store
            .add_at("n2", b"k", &write("n3", "b"), false, T0_MS + 5)
            .unwrap();
        assert_eq!(store.pending(), BTreeMap::from([("n2".to_owned(), 1)]));
        let (written_ms, clock) = store.get("n2", b"k").unwrap();
        assert_eq!(live_values(&clock), ["a", "b"]);
        assert_eq!(
            written_ms,
            T0_MS + 5,
            "a merge that changes the hint refreshes its time"
        );
        let bytes = store.bytes();
        store
            .add_at("n2", b"k", &write("n1", "a"), false, T0_MS + 9)
            .unwrap();
        assert_eq!(store.bytes(), bytes);
        assert_eq!(store.get("n2", b"k").unwrap(), (T0_MS + 5, clock));
        let newer = write("n1", "a").update(
            &write("n1", "a").context(),
            Versioned::value(2, b"c".to_vec()),
            &Actor::new("n1", 1),
        );
        store.add_at("n2", b"k", &newer, false, T0_MS + 9).unwrap();
        assert_eq!(live_values(&store.get("n2", b"k").unwrap().1), ["b", "c"]);
        assert_eq!(store.pending(), BTreeMap::from([("n2".to_owned(), 1)]));
    }

    #[test]
    fn pending_and_bytes_count_per_owner() {
        // Counts follow adds per owner, and bytes are exactly the stored keys plus records.
        let (backend, store) = memory_store(u64::MAX);
        for key in ["k1", "k2", "k3"] {
            store
                .add("n2", key.as_bytes(), &write("n1", key), false)
                .unwrap();
        }
        store.add("n3", b"k1", &write("n1", "x"), false).unwrap();
        assert_eq!(
            store.pending(),
            BTreeMap::from([("n2".to_owned(), 3), ("n3".to_owned(), 1)])
        );
        let stored: u64 = backend
            .scan_prefix(Cf::Hints, &[], &[], 100)
            .unwrap()
            .iter()
            .map(|(k, v)| size_of(k, v))
            .sum();
        assert_eq!(store.bytes(), stored);
        assert!(store.add("n\0", b"k", &write("n1", "x"), false).is_err());
        assert!(store.add("", b"k", &write("n1", "x"), false).is_err());
    }

    #[test]
    fn a_full_store_refuses_without_storing() {
        // Past max_bytes an add fails with HintsFull and leaves the store as it was, for a
        // new key and for a merge that would grow a kept hint.
        let (_, probe) = memory_store(u64::MAX);
        probe.add("n2", b"k1", &write("n1", "a"), false).unwrap();
        let one_hint = probe.bytes();
        let max_bytes = one_hint + 2;
        let (backend, store) = memory_store(max_bytes);
        store.add("n2", b"k1", &write("n1", "a"), false).unwrap();
        let before = backend.scan_prefix(Cf::Hints, &[], &[], 100).unwrap();
        let err = store
            .add("n2", b"k2", &write("n1", "b"), false)
            .unwrap_err();
        assert!(matches!(err, Error::HintsFull { max_bytes: m } if m == max_bytes));
        let err = store
            .add("n2", b"k1", &write("n3", "c"), false)
            .unwrap_err();
        assert!(matches!(err, Error::HintsFull { .. }));
        assert_eq!(
            backend.scan_prefix(Cf::Hints, &[], &[], 100).unwrap(),
            before
        );
        assert_eq!(store.bytes(), one_hint);
        assert_eq!(store.pending(), BTreeMap::from([("n2".to_owned(), 1)]));
    }

    #[test]
    fn reopening_keeps_hints_and_counts() {
        // Hints are in RocksDB: a reopened store has the same hints, counts and bytes.
        let dir = tempfile::tempdir().unwrap();
        let (pending, bytes, clock) = {
            let backend: Arc<dyn Backend> =
                Arc::new(RocksBackend::open(dir.path(), &RocksOptions::default()).unwrap());
            let store = HintStore::open(backend, limits(u64::MAX), Env::production()).unwrap();
            store.add("n2", b"k1", &write("n1", "a"), true).unwrap();
            store.add("n2", b"k1", &write("n3", "b"), true).unwrap();
            store.add("n3", b"k2", &write("n1", "c"), true).unwrap();
            (
                store.pending(),
                store.bytes(),
                store.get("n2", b"k1").unwrap(),
            )
        };
        let backend: Arc<dyn Backend> =
            Arc::new(RocksBackend::open(dir.path(), &RocksOptions::default()).unwrap());
        let store = HintStore::open(backend, limits(u64::MAX), Env::production()).unwrap();
        assert_eq!(
            store.pending(),
            BTreeMap::from([("n2".to_owned(), 1), ("n3".to_owned(), 1)])
        );
        assert_eq!(store.pending(), pending);
        assert_eq!(store.bytes(), bytes);
        assert_eq!(store.get("n2", b"k1").unwrap(), clock);
    }

    #[test]
    fn expiry_drops_hints_older_than_max_age() {
        // A hint whose last write is max_age old is dropped and counted; a younger one, or
        // one a recent write refreshed, stays; and sweeps are skipped while none can expire.
        let (_, store) = memory_store(u64::MAX);
        let max_age_ms = HOUR.as_millis() as u64;
        store
            .add_at("n2", b"old", &write("n1", "a"), false, T0_MS)
            .unwrap();
        store
            .add_at("n2", b"young", &write("n1", "b"), false, T0_MS + 10)
            .unwrap();
        store
            .add_at("n3", b"refreshed", &write("n1", "c"), false, T0_MS)
            .unwrap();
        store
            .add_at("n3", b"refreshed", &write("n4", "d"), false, T0_MS + 10)
            .unwrap();
        assert!(!store.expiry_due(T0_MS + max_age_ms - 1));
        assert_eq!(store.expire(T0_MS + max_age_ms - 1).unwrap(), 0);
        assert!(store.expiry_due(T0_MS + max_age_ms));
        assert_eq!(store.expire(T0_MS + max_age_ms).unwrap(), 1);
        assert!(store.get("n2", b"old").is_none());
        assert!(store.get("n2", b"young").is_some());
        assert!(store.get("n3", b"refreshed").is_some());
        assert_eq!(
            store.pending(),
            BTreeMap::from([("n2".to_owned(), 1), ("n3".to_owned(), 1)])
        );
        assert!(
            !store.expiry_due(T0_MS + max_age_ms + 5),
            "the sweep raised the bound"
        );
        assert_eq!(store.expire(T0_MS + max_age_ms + 10).unwrap(), 2);
        assert_eq!((store.pending().len(), store.bytes()), (0, 0));
        // A time from far in the future (damaged, or a clock that jumped) cannot keep a
        // hint for ever.
        store
            .add_at(
                "n2",
                b"future",
                &write("n1", "e"),
                false,
                T0_MS + 2 * max_age_ms,
            )
            .unwrap();
        assert_eq!(store.expire(T0_MS).unwrap(), 1);
    }

    #[test]
    fn delete_if_unchanged_keeps_a_hint_that_changed_after_it_was_read() {
        // A hint merged with a newer write after it was read survives the delete of the
        // version read; an unchanged one is deleted.
        let (_, store) = memory_store(u64::MAX);
        store.add("n2", b"k1", &write("n1", "a"), false).unwrap();
        store.add("n2", b"k2", &write("n1", "b"), false).unwrap();
        let batch = store.read_batch("n2", None, 10).unwrap();
        assert_eq!(batch.hints.len(), 2);
        assert!(batch.next.is_none());
        store.add("n2", b"k1", &write("n3", "c"), false).unwrap();
        assert!(!store.delete_if_unchanged(&batch.hints[0].ticket).unwrap());
        assert!(store.delete_if_unchanged(&batch.hints[1].ticket).unwrap());
        assert_eq!(live_values(&store.get("n2", b"k1").unwrap().1), ["a", "c"]);
        assert!(store.get("n2", b"k2").is_none());
        assert_eq!(store.pending(), BTreeMap::from([("n2".to_owned(), 1)]));
        let left = store.read_batch("n2", None, 10).unwrap();
        assert!(store.delete_if_unchanged(&left.hints[0].ticket).unwrap());
        assert!(
            !store.delete_if_unchanged(&left.hints[0].ticket).unwrap(),
            "already gone"
        );
        assert_eq!((store.pending().len(), store.bytes()), (0, 0));
    }

    #[test]
    fn batches_page_through_one_owner_only() {
        // Batches of an owner's hints resume where the last ended and never reach another
        // owner's hints, even one whose id extends this owner's.
        let (_, store) = memory_store(u64::MAX);
        for i in 0..5 {
            store
                .add("n2", format!("k{i}").as_bytes(), &write("n1", "v"), false)
                .unwrap();
        }
        store.add("n20", b"k0", &write("n1", "v"), false).unwrap();
        store.add("n1", b"k9", &write("n1", "v"), false).unwrap();
        let mut keys = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        let mut batches = 0;
        loop {
            let batch = store.read_batch("n2", cursor.as_deref(), 2).unwrap();
            batches += 1;
            keys.extend(
                batch
                    .hints
                    .iter()
                    .map(|h| String::from_utf8(h.key.clone()).unwrap()),
            );
            match batch.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
        assert_eq!(batches, 3);
    }

    #[test]
    fn a_corrupt_hint_is_counted_and_removed() {
        // A hint whose clock fails its crc is reported as corrupt, deleted and uncounted,
        // and a record that cannot be a hint at all is removed when the store opens.
        let (backend, store) = memory_store(u64::MAX);
        store.add("n2", b"bad", &write("n1", "a"), false).unwrap();
        store.add("n2", b"good", &write("n1", "b"), false).unwrap();
        let hint_key = hint_key("n2", b"bad").unwrap();
        let mut raw = backend.get(Cf::Hints, &hint_key).unwrap().unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x40;
        backend.put(Cf::Hints, &hint_key, &raw, false).unwrap();
        let batch = store.read_batch("n2", None, 10).unwrap();
        assert_eq!(batch.corrupt, 1);
        assert_eq!(batch.hints.len(), 1);
        assert_eq!(batch.hints[0].key, b"good");
        assert!(backend.get(Cf::Hints, &hint_key).unwrap().is_none());
        assert_eq!(store.pending(), BTreeMap::from([("n2".to_owned(), 1)]));
        let good_bytes = store.bytes();
        let good = &batch.hints[0].ticket;
        assert_eq!(good_bytes, size_of(&good.hint_key, &good.stored));

        backend
            .put(Cf::Hints, b"no-separator", &raw, false)
            .unwrap();
        backend
            .put(Cf::Hints, &hint_key, &[1, 2, 3], false)
            .unwrap();
        let reopened =
            HintStore::open(backend.clone(), limits(u64::MAX), Env::production()).unwrap();
        assert!(backend.get(Cf::Hints, b"no-separator").unwrap().is_none());
        assert!(backend.get(Cf::Hints, &hint_key).unwrap().is_none());
        assert_eq!(reopened.pending(), BTreeMap::from([("n2".to_owned(), 1)]));
        assert_eq!(reopened.bytes(), good_bytes);
    }
}
