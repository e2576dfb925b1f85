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

use std::sync::{Arc, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::metrics;
use crate::storage::{Backend, Cf, record};
use crate::version::{Actor, Clock, VersionVector, Versioned};

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
}

impl Replica {
    /// Opens the replica of node `node_id`, creating its incarnation when the store is
    /// new: the incarnation keeps dots unique if the node ever restarts with its data lost.
    pub fn open(backend: Arc<dyn Backend>, node_id: &str, max_siblings: usize) -> Result<Self> {
        let incarnation = match backend.get(Cf::Meta, META_INCARNATION)? {
            Some(bytes) => u64::from_le_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Storage("the stored incarnation is not 8 bytes".into()))?,
            ),
            None => new_incarnation(backend.as_ref())?,
        };
        Ok(Self {
            backend,
            actor: RwLock::new(Arc::new(Actor::new(node_id, incarnation))),
            max_siblings,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
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
        let incarnation = new_incarnation(self.backend.as_ref())?;
        *actor = Arc::new(Actor::new(actor.node.clone(), incarnation));
        tracing::warn!(actor = ?*actor, "renewed the incarnation after finding a corrupt record");
        Ok(())
    }

    /// The key's clock, or `None` when the key is unknown here or its record is corrupt
    /// (counted in `ringkv_storage_corrupt_records_total`).
    pub fn get(&self, key: &[u8]) -> Result<Option<Clock>> {
        Ok(self.read(key)?.unwrap_or(None))
    }

    /// The stored clock; `Err(())` inside when the record is corrupt (already counted).
    fn read(&self, key: &[u8]) -> Result<Result<Option<Clock>, ()>> {
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
        self.backend
            .put(Cf::Data, key, &record::encode(&updated), sync)?;
        Ok(updated)
    }

    /// Folds another replica's clock for `key` into the stored one and returns the
    /// result. Never refuses on sibling count: dropping a version here would lose an
    /// acknowledged write.
    pub fn merge(&self, key: &[u8], incoming: &Clock, sync: bool) -> Result<Clock> {
        let _guard = self.lock(key);
        let current = self.get(key)?;
        let merged = match &current {
            Some(c) => c.sync(incoming),
            None => incoming.clone(),
        };
        if current.as_ref() != Some(&merged) {
            self.backend
                .put(Cf::Data, key, &record::encode(&merged), sync)?;
        }
        Ok(merged)
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
fn new_incarnation(backend: &dyn Backend) -> Result<u64> {
    let incarnation = rand::random::<u64>();
    backend.put(Cf::Meta, META_INCARNATION, &incarnation.to_le_bytes(), true)?;
    Ok(incarnation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryBackend;

    fn replica(max_siblings: usize) -> Replica {
        Replica::open(Arc::new(MemoryBackend::new()), "n1", max_siblings).unwrap()
    }

    #[test]
    fn incarnation_is_kept_across_reopen() {
        // Reopening the same store keeps the actor, so counters continue rather than restart.
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let a = Replica::open(backend.clone(), "n1", 8).unwrap().actor();
        let b = Replica::open(backend, "n1", 8).unwrap().actor();
        assert_eq!(a, b);
        let fresh = Replica::open(Arc::new(MemoryBackend::new()), "n1", 8).unwrap();
        assert_ne!(fresh.actor(), a, "a new data dir gets a new incarnation");
    }

    #[test]
    fn sibling_limit_refuses_without_storing() {
        // The write that would exceed --max-siblings is refused and the stored state is unchanged.
        let r = replica(2);
        let empty = VersionVector::empty();
        r.coordinate(b"k", &empty, Versioned::value(1, b"a".to_vec()), false)
            .unwrap();
        let two = r
            .coordinate(b"k", &empty, Versioned::value(2, b"b".to_vec()), false)
            .unwrap();
        let err = r
            .coordinate(b"k", &empty, Versioned::value(3, b"c".to_vec()), false)
            .unwrap_err();
        assert!(matches!(err, Error::TooManySiblings { max: 2 }));
        assert_eq!(r.get(b"k").unwrap().unwrap(), two);
        let resolved = r
            .coordinate(
                b"k",
                &two.context(),
                Versioned::value(4, b"d".to_vec()),
                false,
            )
            .unwrap();
        assert_eq!(resolved.live_values(), vec![&b"d"[..]]);
    }

    #[test]
    fn corrupt_record_reads_as_missing_and_later_dots_stay_unique() {
        // A record with a flipped byte reads as missing, and the next write's dot cannot
        // collide with the lost one (which other replicas may hold with another value).
        let backend = Arc::new(MemoryBackend::new());
        let r = Replica::open(backend.clone(), "n1", 8).unwrap();
        let before = r
            .coordinate(
                b"k",
                &VersionVector::empty(),
                Versioned::value(1, b"v".to_vec()),
                false,
            )
            .unwrap();
        let mut raw = backend.get(Cf::Data, b"k").unwrap().unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x40;
        backend.put(Cf::Data, b"k", &raw, false).unwrap();
        assert_eq!(r.get(b"k").unwrap(), None);
        let after = r
            .coordinate(
                b"k",
                &VersionVector::empty(),
                Versioned::value(2, b"w".to_vec()),
                false,
            )
            .unwrap();
        // Merged as another replica would: both writes survive as siblings.
        let merged = before.sync(&after);
        assert_eq!(
            merged.live_values().len(),
            2,
            "the rewrite reused the lost write's dot"
        );
        let reopened = Replica::open(backend, "n1", 8).unwrap();
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
            .coordinate(
                b"k",
                &VersionVector::empty(),
                Versioned::value(1, b"v".to_vec()),
                false,
            )
            .unwrap();
        assert_eq!(r.merge(b"k", &c, false).unwrap(), c);
        assert_eq!(r.merge(b"k", &Clock::new(), false).unwrap(), c);
    }
}
