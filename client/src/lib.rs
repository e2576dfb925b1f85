//! The ringkv client: the wire types shared with the server, and an async Rust
//! client of a cluster (the `ringkv` CLI is built on it), plus [`reference`], the
//! bare hyper server that gives `ringkv bench` its HTTP ceiling.
//!
//! A [`Client`] is built once from the base URLs of some nodes
//! (`http://127.0.0.1:8001`) and holds one pooled keep-alive HTTP client, so calls
//! reuse connections. It speaks the HTTP API of README.md#http-api: `get`,
//! `put` and `delete` on `/kv/{key}` with per-request quorum options
//! ([`ReadOptions`], [`WriteOptions`]), plus `cluster`, `replicas` and `health`.
//! Keys are arbitrary bytes: every byte outside RFC 3986's unreserved set is
//! percent-escaped in the path, so `/`, spaces and non-UTF-8 bytes round-trip.
//!
//! Any node coordinates any request, so the client needs no placement logic.
//! Each call starts at the next node in a rotation (spreading coordinator load) and
//! fails over to the following node when one cannot be reached: refused or reset
//! connections and the client-side per-attempt timeout
//! ([`ClientConfig::request_timeout_ms`]). A node that failed is tried last for
//! [`ClientConfig::node_backoff_ms`]. An HTTP error *answer* (400, 409, 503, 504, …)
//! is returned as [`Error::Api`] without failover: it is the cluster's verdict, and
//! another coordinator would consult the same replicas.
//!
//! Contexts are opaque tokens. A read returns one; passing it to the next write of
//! the key makes that write supersede exactly what the read saw. A write without a
//! context is concurrent with what is stored and may become a sibling; a read of a
//! key with concurrent values returns [`GetOutcome::Siblings`], and a write with
//! their context resolves them.
//!
//! Caveats: failover retries writes too. A write that reached a node which then
//! failed to answer (a timeout, a reset) may be applied twice, which with the same
//! context yields two sibling copies of the same value; after [`Error::Unreachable`]
//! or [`Error::Timeout`] a write's fate is unknown. A call may take up to the node
//! count times `request_timeout_ms`.
//!
//! Secured clusters: [`ClientConfig::token`] sends an API bearer token with every
//! request, and [`ClientConfig::ca_file`] lets the client speak `https://` to nodes
//! whose certificates that CA signed ([`security`]).

pub mod client;
pub mod error;
pub mod outcome;
pub mod reference;
pub mod request;
pub mod security;
pub mod wire;

pub use bytes::Bytes;
pub use client::{Client, ClientConfig};
pub use error::{Error, Result};
pub use outcome::{GetOutcome, WriteOutcome};
pub use request::{ReadOptions, WriteOptions, encode_key};
pub use security::BearerToken;
