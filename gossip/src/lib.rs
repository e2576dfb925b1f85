//! SWIM membership for ringkv: which nodes exist, where to reach them, and
//! whether they are alive, suspect, down or gone for good.
//!
//! [`Gossip::start`] binds a UDP socket on the node's `--cluster` address and
//! spawns one driver task that owns a [`foca`] instance (the SWIM protocol,
//! sans-IO). The task `select!`s over the socket, a single min-heap of foca's
//! timers, a periodic tick and a small command queue; after every call into
//! foca it drains foca's effects: datagrams to send, timers to schedule and
//! notifications. Everything but the IO lives in a socket-free core that the
//! unit tests drive in simulated time. The rest of ringkv reads the result
//! from [`Gossip::members`], a `watch` of [`Membership`] snapshots listing
//! every member ever seen (this node included) with its newest identity and
//! a [`MemberState`].
//!
//! A member's identity is its node id, its advertised cluster and HTTP
//! addresses and a *generation*. The generation is read from a file in the
//! node's data dir, incremented and stored (fsync, temp file then rename)
//! before use, so a node restarted with the same id and data dir announces an
//! identity the cluster has never seen: foca lets the newer generation replace
//! the old one at once instead of refusing it as a member already declared
//! down. foca keys members by cluster address, because a seed is only an
//! address; the membership keys them by node id and always shows the newest
//! generation. foca never re-announces by itself: while a node sees no live
//! member it announces to every seed each `announce_interval`, and while it
//! sees some it still announces to the seeds it does not see live every
//! `reannounce_interval`, so both a lone node and a cluster split in two find
//! their way back.
//!
//! Every datagram travels in an envelope (see `envelope.rs`): a magic byte, a
//! version byte and a crc32 of the rest; the payload is foca's message in
//! bincode 2, decoded with a size limit. With [`GossipConfig::cluster_keys`] the
//! envelope is version 2 instead (`sealed.rs`): the payload encrypted and
//! authenticated with XChaCha20-Poly1305 under the first key, opened with any of
//! them, so a host without a key can neither read nor forge gossip. Anything that
//! fails (garbage, cut packets, another version, another key, packets foca
//! refuses) is dropped and counted in [`Gossip::stats`] (and, before foca, in
//! [`REJECTED_TOTAL`]); it never panics the task.
//!
//! A graceful [`Gossip::leave`] must show as [`MemberState::Left`], not
//! `Down`. foca's `leave_cluster` merely declares the leaving identity down,
//! which is the same update a crash produces once suspicion times out, so it
//! cannot tell the two apart. Before calling it, the leaving node queues a
//! custom foca broadcast `Leave(identity)`: foca piggybacks it on the same
//! packets as that down update, and every receiver passes it on the way foca
//! passes member updates. A member whose newest generation has a leave notice
//! is `Left`, whatever foca says; a later generation of it (a restart) is
//! alive again. A custom broadcast was chosen over a one-off envelope message
//! because foca disseminates it with retries through the whole cluster, where
//! a direct message to each member would be lost with its one datagram.
//!
//! Caveats:
//! - Without cluster keys nothing is authenticated: any host that can send UDP
//!   to the port can claim to be any member, declare one down or announce its
//!   leave. With them, any holder of a key is trusted alike: a key holder can
//!   still claim to be any member. Replayed sealed packets are accepted (SWIM
//!   shrugs off duplicates and old news).
//! - Seeds must be given by their *advertised* cluster address: foca accepts
//!   an announce only when it is addressed to the receiver's own address.
//! - Two running processes with the same id are not detected; the membership
//!   shows whichever generation is newer.
//! - Dropping [`Gossip`] without `leave` is a crash to the others: they see
//!   the node `Down` after the suspicion timeout (about 5 s with the LAN preset).
//! - Detection is probabilistic: under heavy packet loss or CPU starvation a
//!   live member can be declared down; it then renews its generation (and
//!   stores it) and comes back alive within a probe period or two.

mod codec;
mod config;
mod core;
mod driver;
mod envelope;
mod frame;
mod identity;
mod keys;
mod leave;
mod membership;
mod sealed;
mod socket;
mod stats;
mod timers;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::config::{
    GossipConfig, HTTP_MAX_BYTES, ID_MAX_BYTES, PACKET_MAX_BYTES, PACKET_MIN_BYTES, SwimConfig,
};
pub use crate::driver::Gossip;
pub use crate::keys::{ClusterKeys, KEY_BYTES, KEYS_MAX, key_to_hex};
pub use crate::membership::{Member, MemberState, Membership};
pub use crate::socket::DatagramSocket;
pub use crate::stats::{GossipStats, REJECTED_TOTAL, register_metrics};

/// Why gossip could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The [`GossipConfig`] breaks a rule; nothing was started.
    #[error("invalid gossip config: {0}")]
    Config(String),
    /// The UDP socket could not be bound (address in use, not local, ...).
    #[error("cannot bind the gossip socket on {addr}: {source}")]
    Bind {
        /// The address from [`GossipConfig::bind`].
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The generation file could not be read or written.
    #[error("generation file {}: {source}", path.display())]
    GenerationIo {
        /// [`GossipConfig::generation_file`].
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The generation file does not hold a number (or holds `u64::MAX`).
    /// Left for the operator: guessing could reuse an old generation.
    #[error("generation file {} holds {content:?}, not a usable generation", path.display())]
    GenerationCorrupt {
        /// [`GossipConfig::generation_file`].
        path: PathBuf,
        /// The start of what the file holds.
        content: String,
    },
    /// The cluster key file is missing, unreadable or malformed (the message names
    /// the file and line, never a key).
    #[error("cluster key: {0}")]
    ClusterKey(String),
    /// The driver task has stopped (after a leave).
    #[error("the gossip task has stopped")]
    Stopped,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
