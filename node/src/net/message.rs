//! The peer protocol's messages: what one node asks of another, and the answers.
//!
//! Encoded with bincode 2 (native `Encode`/`Decode`) and always decoded with a size
//! limit, since a peer's bytes are untrusted input. A new field or variant means a new
//! [`PROTOCOL_VERSION`].

use bincode::{Decode, Encode};

use crate::membership::Layout;
use crate::version::{Clock, SegmentEntry, VersionVector};

/// Version of the peer protocol; a peer speaking another one is refused. Version 2
/// carries a batch of calls in each message; version 3 adds anti-entropy and tombstone
/// GC; version 4 the cluster layout; version 5 the layout's `writing` register.
pub const PROTOCOL_VERSION: u16 = 5;

/// Most calls in one message: a message with more (or none) is refused whole.
pub const BATCH_CALLS_MAX: usize = 256;

/// Largest encoded message accepted: 64 siblings of the largest value plus room.
pub const MESSAGE_MAX_BYTES: usize = 96 * 1024 * 1024;

/// What a write supersedes, on the wire (see [`crate::coordinator::Supersedes`]).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum WireSupersedes {
    Context(VersionVector),
    Nothing,
    CurrentVersions,
}

/// A request from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum PeerRequest {
    /// The receiver's own replica of `key` (no quorum).
    Read { key: Vec<u8> },
    /// Fold `clock` into the receiver's replica of `key` (replication by a coordinator).
    Merge {
        key: Vec<u8>,
        clock: Clock,
        sync: bool,
    },
    /// Keep `clock` for `owner`, a home replica of `key` that is down or did not
    /// answer: the receiver is a stand-in and stores it as a hint, never as its own
    /// replica, until it can hand it to `owner`.
    Hint {
        owner: String,
        key: Vec<u8>,
        clock: Clock,
        sync: bool,
    },
    /// Coordinate a client's write on the receiver, a home replica of `key` (sent by a
    /// node outside the key's preference list).
    Write {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        supersedes: WireSupersedes,
        w: u32,
        r: u32,
        timeout_ms: u64,
        sync: bool,
        sloppy: bool,
    },
    /// Anti-entropy: the receiver's tree roots of `partitions`.
    TreeRoots { partitions: Vec<u16> },
    /// Anti-entropy: the receiver's tree leaves (one per segment) of `partitions`.
    TreeLeaves { partitions: Vec<u16> },
    /// Anti-entropy: the keys of whole `segments` (partition, segment) with their
    /// hashes, as many segments as fit in `max_keys` (at least one).
    SegmentKeys {
        segments: Vec<(u16, u8)>,
        max_keys: u32,
    },
    /// Anti-entropy's repair: merge `push` into the receiver's replica and answer with
    /// its records of `pull`.
    Sync {
        push: Vec<(Vec<u8>, Clock)>,
        pull: Vec<Vec<u8>>,
    },
    /// Tombstone GC, first phase: for each key, whether the receiver agrees to purge
    /// it: it keeps no hint for the key and, when `home` (it is a home replica), its
    /// record hashes to the given value.
    TombstoneCheck { keys: Vec<SegmentEntry>, home: bool },
    /// Tombstone GC, second phase: purge each key whose record still hashes to the
    /// given value and holds only tombstones.
    Purge { keys: Vec<SegmentEntry> },
    /// Membership: merge the sender's cluster layout and answer with the receiver's
    /// (merged) one, so one call brings both sides up to date.
    Layout(Layout),
}

impl PeerRequest {
    /// Every [`PeerRequest::op_name`], for metrics that list each op from the start.
    pub const OPS: &[&str] = &[
        "read",
        "merge",
        "hint",
        "write",
        "tree_roots",
        "tree_leaves",
        "segment_keys",
        "sync",
        "tombstone_check",
        "purge",
        "layout",
    ];

    /// The request's kind, as metrics and traces label it.
    pub fn op_name(&self) -> &'static str {
        match self {
            PeerRequest::Read { .. } => "read",
            PeerRequest::Merge { .. } => "merge",
            PeerRequest::Hint { .. } => "hint",
            PeerRequest::Write { .. } => "write",
            PeerRequest::TreeRoots { .. } => "tree_roots",
            PeerRequest::TreeLeaves { .. } => "tree_leaves",
            PeerRequest::SegmentKeys { .. } => "segment_keys",
            PeerRequest::Sync { .. } => "sync",
            PeerRequest::TombstoneCheck { .. } => "tombstone_check",
            PeerRequest::Purge { .. } => "purge",
            PeerRequest::Layout(_) => "layout",
        }
    }

    /// Roughly how many bytes the request carries (key and values), to bound what one
    /// batch holds without encoding it twice.
    pub fn payload_bytes(&self) -> usize {
        let clock_bytes = |clock: &Clock| {
            clock
                .values()
                .map(|v| v.data.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
        };
        match self {
            PeerRequest::Read { key } => key.len(),
            PeerRequest::Merge { key, clock, .. } | PeerRequest::Hint { key, clock, .. } => {
                key.len() + clock_bytes(clock)
            }
            PeerRequest::Write { key, value, .. } => key.len() + value.as_ref().map_or(0, Vec::len),
            PeerRequest::TreeRoots { partitions } | PeerRequest::TreeLeaves { partitions } => {
                partitions.len() * 2
            }
            PeerRequest::SegmentKeys { segments, .. } => segments.len() * 3,
            PeerRequest::Sync { push, pull } => {
                push.iter()
                    .map(|(k, c)| k.len() + clock_bytes(c))
                    .sum::<usize>()
                    + pull.iter().map(Vec::len).sum::<usize>()
            }
            PeerRequest::TombstoneCheck { keys, .. } | PeerRequest::Purge { keys } => {
                keys.iter().map(|e| e.key.len() + 8).sum()
            }
            PeerRequest::Layout(layout) => layout.nodes().len() * 128,
        }
    }
}

/// Why a peer could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum PeerErrorKind {
    TooManySiblings { max: u32 },
    InsufficientReplicas { live: u32, required: u32 },
    Timeout { acks: u32, required: u32 },
    BadRequest,
    ShuttingDown,
    Internal,
}

/// A request's answer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum PeerResponse {
    Read(Option<Clock>),
    Merged,
    Hinted,
    Written {
        clock: Clock,
        acks: Vec<String>,
        hinted: Vec<(String, String)>,
    },
    /// One per partition asked, `None` while the receiver rebuilds that tree.
    TreeRoots(Vec<Option<u64>>),
    TreeLeaves(Vec<Option<Vec<u64>>>),
    /// The segments listed (a prefix of those asked) and their keys.
    SegmentKeys {
        segments: Vec<(u16, u8)>,
        entries: Vec<SegmentEntry>,
    },
    /// The receiver's records of the keys pulled (missing ones left out).
    Synced(Vec<(Vec<u8>, Clock)>),
    /// One answer per key asked.
    TombstoneChecked(Vec<bool>),
    Purged(u32),
    Layout(Layout),
    Error {
        kind: PeerErrorKind,
        message: String,
    },
}

/// The envelope of every message: the protocol version and the sender's node id. A
/// message carries a batch of calls (`Envelope<Vec<PeerRequest>>`) and is answered by
/// as many answers in the same order (`Vec<PeerResponse>`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Envelope<T> {
    pub version: u16,
    pub from: String,
    pub body: T,
}
