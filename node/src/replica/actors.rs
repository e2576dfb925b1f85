//! Which actor the dots of this replica's writes carry: per-key epochs (as Riak 2's
//! per-key-epoch vclocks).
//!
//! A dot `(actor, n)` must never name two different writes of a key. Tombstone GC
//! deletes a key's whole record, history included, and a corrupt record reads as
//! missing; after either, a replica cannot know which counters it used for the key
//! before, and a client may still hold a context from the key's earlier life (whose
//! entries even come back into the key's clock when that client writes). So the
//! actor of a replica's writes to a key is chosen when the replica creates its record
//! of the key, or first writes a record it got by replication: a fresh
//! `(node, incarnation)` never used before by this data directory, kept in the
//! record's frame (local, never replicated; deleted with the record).
//! While the record lives, every dot of that actor is in it, so counters continue
//! safely; a key's clock gains one entry per writer, not per write.
//!
//! An incarnation's top 32 bits are drawn at random when the directory is new (so a
//! node whose data is lost and restarts under the same id never repeats one), the low
//! 32 bits count epochs, reserved on disk in blocks (fsync'ed) before they are used, so
//! a crash skips the rest of a block instead of handing an epoch out twice.

use std::sync::{Arc, Mutex};

use crate::env::Entropy;
use crate::error::{Error, Result};
use crate::storage::{Backend, Cf};
use crate::version::Actor;

const META_INCARNATION: &[u8] = b"incarnation";
const META_EPOCHS: &[u8] = b"epochs";
/// Epochs reserved per fsync.
const EPOCH_BLOCK: u32 = 4096;

#[derive(Debug)]
struct State {
    /// The top 32 bits of every incarnation this directory's actors carry.
    base: u32,
    next: u32,
    /// Epochs below this are reserved on disk.
    reserved: u32,
}

/// Hands out this replica's actors.
#[derive(Debug)]
pub struct Actors {
    node: String,
    backend: Arc<dyn Backend>,
    entropy: Arc<dyn Entropy>,
    state: Mutex<State>,
}

impl Actors {
    /// Reads (or, in a new store, creates) the incarnation; epochs continue after the
    /// last block reserved.
    pub fn open(backend: Arc<dyn Backend>, node: &str, entropy: Arc<dyn Entropy>) -> Result<Self> {
        let base = match backend.get(Cf::Meta, META_INCARNATION)? {
            Some(bytes) => {
                let incarnation =
                    u64::from_le_bytes(bytes.as_slice().try_into().map_err(|_| {
                        Error::Storage("the stored incarnation is not 8 bytes".into())
                    })?);
                (incarnation >> 32) as u32
            }
            None => new_base(backend.as_ref(), entropy.as_ref(), None)?,
        };
        let reserved = match backend.get(Cf::Meta, META_EPOCHS)? {
            Some(bytes) => u32::from_le_bytes(bytes.as_slice().try_into().map_err(|_| {
                Error::Storage("the stored epoch reservation is not 4 bytes".into())
            })?),
            None => 0,
        };
        let actors = Self {
            node: node.to_owned(),
            backend,
            entropy,
            state: Mutex::new(State {
                base,
                next: reserved,
                reserved,
            }),
        };
        Ok(actors)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_ours(&self, state: &State, actor: &Actor) -> bool {
        actor.node == self.node && (actor.incarnation >> 32) as u32 == state.base
    }

    /// The actor kept for a key, if `incarnation` (read from its record) is one of this
    /// directory's.
    pub fn kept(&self, incarnation: u64) -> Option<Actor> {
        let actor = Actor::new(self.node.clone(), incarnation);
        self.is_ours(&self.lock(), &actor).then_some(actor)
    }

    /// An actor never handed out before.
    pub fn fresh(&self) -> Result<Actor> {
        let mut state = self.lock();
        if state.next == state.reserved {
            match state.reserved.checked_add(EPOCH_BLOCK) {
                Some(reserved) => {
                    self.backend
                        .put(Cf::Meta, META_EPOCHS, &reserved.to_le_bytes(), true)?;
                    state.reserved = reserved;
                }
                None => {
                    // 2^32 epochs used: a new incarnation starts epochs again.
                    state.base = new_base(
                        self.backend.as_ref(),
                        self.entropy.as_ref(),
                        Some(state.base),
                    )?;
                    self.backend
                        .put(Cf::Meta, META_EPOCHS, &EPOCH_BLOCK.to_le_bytes(), true)?;
                    state.next = 0;
                    state.reserved = EPOCH_BLOCK;
                }
            }
        }
        let epoch = state.next;
        state.next += 1;
        Ok(Actor::new(
            self.node.clone(),
            (u64::from(state.base) << 32) | u64::from(epoch),
        ))
    }

    /// The incarnation's actor at epoch 0, naming this data directory in logs.
    pub fn describe(&self) -> Actor {
        Actor::new(self.node.clone(), u64::from(self.lock().base) << 32)
    }
}

/// Draws and stores a new incarnation base, other than `old` (fsync'ed: it must
/// outlive any dot made with it).
fn new_base(backend: &dyn Backend, entropy: &dyn Entropy, old: Option<u32>) -> Result<u32> {
    loop {
        let incarnation = entropy.next_u64();
        let base = (incarnation >> 32) as u32;
        // Base 0 with epoch 0 would be incarnation 0, which a record frame reads as
        // "no actor kept".
        if Some(base) == old || base == 0 {
            continue;
        }
        backend.put(Cf::Meta, META_INCARNATION, &incarnation.to_le_bytes(), true)?;
        backend.put(Cf::Meta, META_EPOCHS, &0u32.to_le_bytes(), true)?;
        return Ok(base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryBackend;

    fn os() -> Arc<dyn Entropy> {
        Arc::new(crate::env::OsEntropy)
    }

    #[test]
    fn fresh_actors_never_repeat_across_reopens() {
        // Every fresh actor is new, also after the store is reopened (as after a crash)
        // in the middle of a block.
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let actors = Actors::open(backend.clone(), "n1", os()).unwrap();
            for _ in 0..(EPOCH_BLOCK + 10) {
                let actor = actors.fresh().unwrap();
                assert!(seen.insert(actor.clone()), "{actor:?} was handed out twice");
            }
        }
    }

    #[test]
    fn only_this_directorys_incarnations_are_kept() {
        // An incarnation of this directory is accepted back; one of another directory
        // (same node id, other random base) is not.
        let actors = Actors::open(Arc::new(MemoryBackend::new()), "n1", os()).unwrap();
        let ours = actors.fresh().unwrap();
        assert_eq!(actors.kept(ours.incarnation), Some(ours.clone()));
        let other = Actors::open(Arc::new(MemoryBackend::new()), "n1", os()).unwrap();
        assert_eq!(other.kept(ours.incarnation), None);
    }
}
