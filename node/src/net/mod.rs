//! Peer RPC: how nodes ask each other to read, merge and coordinate.
//!
//! Messages ([`message`]) are bincode-encoded and carried by HTTP/2 with prior
//! knowledge over TCP on the `--cluster` port (the same port number gossip uses over
//! UDP). HTTP/2 multiplexes every call to one peer over one connection, so a busy
//! coordinator does not open a socket per request; each call has its own timeout.
//! The node's own replica is never called through here: the coordinator calls it
//! directly.
//!
//! A call is one `POST /rpc`: the body is an [`message::Envelope`] (protocol version,
//! sender id, [`PeerRequest`]), the answer a [`PeerResponse`] with status 200. The
//! [`server`](serve) answers anything it cannot read (wrong version, undecodable, over
//! [`message::MESSAGE_MAX_BYTES`]) with a 400 and a plain-text reason, and counts it;
//! it never trusts a length prefix, since every decode is bounded. The [`PeerClient`]
//! turns every failure (unreachable, timed out, refused, garbage) into
//! [`crate::Error::Peer`]: to the coordinator a peer either answered or did not.
//!
//! Caveats:
//! - No authentication yet: anyone who reaches the cluster port can read and write
//!   through it, and the envelope's `from` is the sender's claim. A shared cluster key
//!   (`--cluster-key-file`, design.md §5) is a later issue; until then the port must be
//!   on a trusted network.
//! - A caller that gives up (its timeout) resets its HTTP/2 stream, and hyper then drops
//!   the handler's future at its next `.await`: a [`PeerHandler`] must leave state
//!   consistent at every await point, or spawn the work that must finish.
//! - Memory is bounded per message, not per node: 1024 connections of 256 streams, each
//!   allowed a full-size message, is more than any machine has. Peers are few, so this
//!   is a limit against accidents, not against a hostile peer.

mod client;
pub mod message;
mod server;

pub use client::PeerClient;
pub use message::{PeerErrorKind, PeerRequest, PeerResponse, WireSupersedes};
pub use server::{PeerHandler, serve};

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use message::MESSAGE_MAX_BYTES;

/// Calls made, labelled by `op` (read, merge, write) and `outcome` (ok, error,
/// timeout). A peer's `PeerResponse::Error` is an `ok` call: the transport worked.
pub const PEER_CALLS: &str = "ringkv_peer_calls_total";
/// Call latency in seconds, labelled by `op`; every call, whatever its outcome.
pub const PEER_CALL_DURATION: &str = "ringkv_peer_call_duration_seconds";
/// Requests the peer server refused unread, labelled by `reason` (version, decode,
/// too_large, body, timeout, route).
pub const PEER_BAD_REQUESTS: &str = "ringkv_peer_bad_requests_total";

/// The one path peers call.
const RPC_PATH: &str = "/rpc";

/// The bincode configuration of every peer message, both ways: bounded, because a
/// length prefix from the network could otherwise claim gigabytes.
const fn wire_config() -> Configuration<LittleEndian, Varint, Limit<MESSAGE_MAX_BYTES>> {
    bincode::config::standard().with_limit::<MESSAGE_MAX_BYTES>()
}

#[cfg(test)]
mod tests;
