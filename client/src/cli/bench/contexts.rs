//! The freshest causal context the run holds for each loaded key, shared by all
//! workers, so that an update supersedes what the run last saw of its key.
//!
//! README.md#benchmark asks that an update carry the context of the client's last read
//! of that key, as a Dynamo client does, so that a steady update load does not
//! pile up siblings. "The client" is the whole run, not one connection: with 64
//! workers choosing keys at random, a table per worker would hold the key of a
//! given update about 1 time in 64, and nearly every update would be a blind
//! write, which makes a sibling, until hot keys hit `--max-siblings` and answer
//! 409. So there is one table, and it also keeps the context a PUT answers with
//! (the version the write produced), which is at least as fresh as the read
//! before it. An update of a key the run holds no context for (its first one
//! after `--no-load`, or after an eviction) asks the node to supersede whatever
//! it stores (`overwrite=true`, which costs the coordinator a read first) rather
//! than write blind: a blind write would add a sibling to every key a
//! `--no-load` run touches.
//!
//! Siblings still appear where updates of one key race: each supersedes what
//! the run knew when it was sent, not the others in flight. Under heavy
//! contention (a single hot key, many workers) that is about as many siblings
//! as concurrent updates of the key, and more than the node's `--max-siblings`
//! of them answer 409.
//!
//! The table is direct-mapped, one slot per key index modulo its size, each with
//! its own mutex (held for a clone, never across an `.await`). Up to
//! [`SLOTS_MAX`] keys every key has its own slot; past that, keys sharing a slot
//! evict each other. Contexts are
//! copied out of the response headers: hyper's parsed header values share its
//! read buffer, and keeping them would pin a buffer per entry.

use std::sync::Mutex;

use http::HeaderValue;

/// Most slots the table allocates: 2^20 slots of about 56 bytes (plus each
/// context's own bytes).
pub const SLOTS_MAX: u64 = 1 << 20;

/// Contexts by loaded-key index; see the module docs.
#[derive(Debug)]
pub struct ContextTable {
    /// `(key index, context)`, at `index % slots.len()`.
    slots: Vec<Mutex<Option<(u64, HeaderValue)>>>,
}

impl ContextTable {
    /// A table for `keys` loaded keys (at least one slot, at most [`SLOTS_MAX`]).
    pub fn new(keys: u64) -> Self {
        Self::with_slots_max(keys, SLOTS_MAX)
    }

    /// A table for `keys` loaded keys with at most `slots_max` slots.
    fn with_slots_max(keys: u64, slots_max: u64) -> Self {
        let slots = keys.clamp(1, slots_max) as usize;
        Self {
            slots: (0..slots).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn slot(&self, key: u64) -> &Mutex<Option<(u64, HeaderValue)>> {
        // The modulo is below `slots.len()`, a usize.
        &self.slots[(key % self.slots.len() as u64) as usize]
    }

    /// The context last stored for `key`, if its slot still holds it.
    pub fn get(&self, key: u64) -> Option<HeaderValue> {
        let slot = self.slot(key).lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some((k, context)) if *k == key => Some(context.clone()),
            _ => None,
        }
    }

    /// Stores a copy of `context` as the freshest one for `key`.
    pub fn put(&self, key: u64, context: &HeaderValue) {
        // Copy before locking: the allocation need not hold the slot.
        let Ok(owned) = HeaderValue::from_bytes(context.as_bytes()) else {
            return;
        };
        *self.slot(key).lock().unwrap_or_else(|e| e.into_inner()) = Some((key, owned));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_context_of_a_key_wins() {
        // Proves get returns the last put for the key and nothing for unseen keys.
        let table = ContextTable::new(100);
        assert_eq!(table.get(5), None);
        table.put(5, &HeaderValue::from_static("c1"));
        table.put(5, &HeaderValue::from_static("c2"));
        table.put(6, &HeaderValue::from_static("other"));
        assert_eq!(table.get(5).unwrap(), "c2");
        assert_eq!(table.get(6).unwrap(), "other");
    }

    #[test]
    fn keys_sharing_a_slot_never_see_each_others_context() {
        // Proves a slot collision evicts instead of handing one key another key's
        // context (which would make an update supersede the wrong versions).
        let table = ContextTable::with_slots_max(100, 8);
        table.put(3, &HeaderValue::from_static("three"));
        assert_eq!(table.get(3 + 8), None);
        table.put(3 + 8, &HeaderValue::from_static("far"));
        assert_eq!(table.get(3), None);
        assert_eq!(table.get(3 + 8).unwrap(), "far");
    }
}
