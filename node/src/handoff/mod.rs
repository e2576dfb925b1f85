//! Hinted handoff: writes kept by a stand-in for a home replica that was down, and
//! handed back to it when it returns (docs/architecture.md#sloppy-quorum-and-hinted-handoff).
//!
//! A *hint* is one key's [`Clock`](crate::version::Clock) held on behalf of its
//! *owner*, a home replica of the key that was down (per gossip) or did not answer when
//! the coordinator replicated a write. The stand-in that took the write keeps it in its
//! own column family ([`Cf::Hints`](crate::storage::Cf::Hints)), never in its replica,
//! so reads never see it and the stand-in never serves it as its own.
//!
//! The life of a hint:
//! 1. *Stored.* [`HintStore::add`] keeps the clock under `owner 0x00 key`. A second
//!    write for the same owner and key is merged into the first
//!    ([`Clock::sync`](crate::version::Clock::sync)), so a
//!    hot key costs one hint, not one per write, and concurrent values both survive.
//!    The record is `[written_ms u64 LE][record::encode(clock)]`, the clock crc-framed
//!    like every replica record.
//! 2. *Replayed.* One task ([`spawn_replay`]) runs a round whenever gossip changes the
//!    membership view and on a timer. For each owner with hints that gossip reports
//!    live, it reads a batch of that owner's hints and sends each as a
//!    `PeerRequest::Merge` with a bounded number of calls in flight; owners take turns
//!    batch by batch, so one long backlog does not hold up the others. Merges are
//!    idempotent, so a hint sent twice (a lost answer, a restart) does no harm.
//! 3. *Deleted* only after the owner answered `Merged`, and only if the stored record is
//!    still byte-for-byte what was sent: a write merged into the hint meanwhile keeps it
//!    for the next round. The compare and the delete happen under the same per-key lock
//!    stripe as [`HintStore::add`], so the two never interleave.
//!
//! Bounds:
//! - *Bytes*: the store keeps at most [`HintLimits::max_bytes`] (keys plus records). An
//!   add that would pass it stores nothing and fails with
//!   [`Error::HintsFull`](crate::Error::HintsFull): the coordinator then tries the next
//!   stand-in, and the write still needs its quorum elsewhere.
//! - *Age*: a hint whose last write is older than [`HintLimits::max_age`] is dropped
//!   (counted as expired); the owner then catches up through read repair and, later,
//!   anti-entropy. `written_ms` is the time of the newest write that changed the hint,
//!   not of the first: expiring by the first would drop a write made seconds ago only
//!   because an older write to the same key came before it. A merge that changes
//!   nothing does not refresh the time. Expiry sweeps run on the replay task's timer,
//!   at most every `max(interval, max_age / 64)` and only when the oldest hint may have
//!   expired, so a hint lives at most about `max_age * 65 / 64`.
//! - *Work*: replay reads `batch_keys` hints at a time, keeps `concurrency` calls in
//!   flight and pauses between batches, so handing off a backlog never starves
//!   foreground requests of the disk or the network.
//!
//! Every hint is in RocksDB, so hints survive restarts; [`HintStore::open`] rebuilds the
//! per-owner counts and the byte total with one scan.
//!
//! Caveats:
//! - `written_ms` lies outside the record's crc (the layout keeps the clock's frame
//!   whole). A damaged time can only make a hint expire early (the owner then relies on
//!   read repair) or late; a time further in the future than `max_age` is treated as
//!   expired, so no hint outlives its bound for ever.
//! - A hint whose clock fails its crc cannot be handed off: it is counted
//!   (`ringkv_hints_corrupt_total`), logged and deleted when replay or an add finds it.
//!   `open` checks only the frame of each record (owner separator, length), not its crc,
//!   to keep start-up to one cheap scan.
//! - Hints whose owner left the ring, or name this node itself, are never replayed;
//!   expiry removes them.
//! - Liveness is gossip's word: a round for an owner that is not really back ends at its
//!   first failed call and is retried on the next tick.
//! - The expiry bound on sweeps relies on the wall clock; if it steps back, sweeps come
//!   later than they should (never earlier).

mod replay;
mod store;

pub use replay::{HandoffOptions, spawn_replay};
pub use store::{HintLimits, HintStore};
