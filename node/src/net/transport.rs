//! The seam between the node's protocol logic and the network: one trait for every
//! peer call, so the coordinator, read repair and hinted handoff run unchanged over
//! [`PeerClient`](super::PeerClient) (HTTP/2 over TCP, batched) in production and over
//! the simulated network of `ringkv-sim`.

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;

use super::message::{PeerRequest, PeerResponse};
use crate::Result;

/// Sends one request to the node at `peer` (its advertised cluster address) and waits
/// at most `timeout` for its answer.
///
/// The error tells the caller what it may do next: [`crate::Error::PeerUnreachable`]
/// means the peer did not act on the request (it was never sent), so another node may
/// take it; [`crate::Error::Peer`] means the outcome is unknown (timed out, failed
/// mid-way, refused, garbage). A [`PeerResponse::Error`] is a successful call.
pub trait PeerTransport: Send + Sync + std::fmt::Debug + 'static {
    fn call<'a>(
        &'a self,
        peer: SocketAddr,
        request: PeerRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<PeerResponse>>;
}

impl PeerTransport for super::PeerClient {
    fn call<'a>(
        &'a self,
        peer: SocketAddr,
        request: PeerRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<PeerResponse>> {
        Box::pin(super::PeerClient::call(self, peer, request, timeout))
    }
}
