//! Peer RPC: how nodes ask each other to read, merge and coordinate.
//!
//! Messages ([`message`]) are bincode-encoded and carried by HTTP/2 with prior
//! knowledge over TCP on the `--cluster` port (the same port number gossip uses over
//! UDP). HTTP/2 multiplexes every call to one peer over one connection, so a busy
//! coordinator does not open a socket per request; each call has its own timeout.
//! The node's own replica is never called through here: the coordinator calls it
//! directly.
//!
//! A message is one `POST /rpc`: the body is an [`message::Envelope`] (protocol
//! version, sender id, a batch of [`PeerRequest`]s), the answer as many
//! [`PeerResponse`]s in the same order, with status 200. Reads, merges and hints to one
//! peer are gathered into batches by a task per peer ([`batch`]): one HTTP/2 call costs
//! far more than the work it carries, and under load many calls wait for the same
//! peer. The [`server`](serve) answers anything it cannot read (wrong version,
//! undecodable, over [`message::MESSAGE_MAX_BYTES`] or [`message::BATCH_CALLS_MAX`])
//! with a 400 and a plain-text reason, and counts it; it never trusts a length prefix,
//! since every decode is bounded. The [`PeerClient`] tells a call that was never sent
//! ([`crate::Error::PeerUnreachable`]: the caller may go to another node) from one
//! whose outcome is unknown ([`crate::Error::Peer`]: timed out, failed mid-way,
//! refused, garbage).
//!
//! With `--cluster-key-file` every connection is authenticated and encrypted by a Noise
//! handshake keyed by the cluster key before HTTP/2 runs on it ([`secure`], [`noise`]);
//! a connection that fails it is closed unread and counted in
//! `ringkv_rejected_total{channel="peer"}`.
//!
//! Caveats:
//! - Without a cluster key nothing is authenticated: anyone who reaches the cluster port
//!   can read and write through it. With one, every key holder is trusted alike: the
//!   envelope's `from` is still the sender's claim, checked by nobody.
//! - A message whose every caller gave up (their timeouts) resets its HTTP/2 stream,
//!   and hyper then drops the handler's futures at their next `.await`: a
//!   [`PeerHandler`] must leave state consistent at every await point, or spawn the
//!   work that must finish.
//! - Memory is bounded per message, not per node: 1024 connections of 256 streams, each
//!   allowed a full-size message, is more than any machine has. Peers are few, so this
//!   is a limit against accidents, not against a hostile peer.

mod batch;
mod client;
mod exchange;
pub mod message;
mod noise;
pub mod secure;
mod server;
mod transport;

pub use client::PeerClient;
pub use message::{PeerErrorKind, PeerRequest, PeerResponse, WireSupersedes};
pub use server::{PeerHandler, serve};
pub use transport::PeerTransport;

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use message::MESSAGE_MAX_BYTES;

/// Calls made, labelled by `op` ([`PeerRequest::OPS`]) and `outcome`
/// ([`PEER_CALL_OUTCOMES`]). A peer's `PeerResponse::Error` is an `ok` call: the
/// transport worked.
pub const PEER_CALLS: &str = "ringkv_peer_calls_total";
/// The `outcome` labels of [`PEER_CALLS`].
pub const PEER_CALL_OUTCOMES: &[&str] = &["ok", "error", "timeout"];
/// Call latency in seconds, labelled by `op`; every call, whatever its outcome.
pub const PEER_CALL_DURATION: &str = "ringkv_peer_call_duration_seconds";
/// Calls per message sent (a histogram): how well [`batch`] gathers calls.
pub const PEER_BATCH_CALLS: &str = "ringkv_peer_batch_calls";
/// Requests the peer server refused unread, labelled by `reason`
/// ([`PEER_BAD_REQUEST_REASONS`]).
pub const PEER_BAD_REQUESTS: &str = "ringkv_peer_bad_requests_total";
/// The `reason` labels of [`PEER_BAD_REQUESTS`].
pub const PEER_BAD_REQUEST_REASONS: &[&str] = &[
    "version",
    "decode",
    "too_large",
    "batch",
    "body",
    "timeout",
    "route",
];

/// The one path peers call.
const RPC_PATH: &str = "/rpc";

/// The bincode configuration of every peer message, both ways (and of the simulator's
/// messages, so it encodes exactly what the wire carries): bounded, because a
/// length prefix from the network could otherwise claim gigabytes.
pub const fn wire_config() -> Configuration<LittleEndian, Varint, Limit<MESSAGE_MAX_BYTES>> {
    bincode::config::standard().with_limit::<MESSAGE_MAX_BYTES>()
}

#[cfg(test)]
mod hostile;
#[cfg(test)]
mod tests;
