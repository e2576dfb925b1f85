//! The calling side of peer RPC: one HTTP/2 client for the whole node, which keeps one
//! multiplexed connection per peer and reconnects when it breaks, and one batcher per
//! peer that gathers concurrent calls into one message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ringkv_gossip::ClusterKeys;
use tokio::time::Instant;

use super::batch::Batcher;
use super::exchange::{Exchange, Failure};
use super::message::{PeerRequest, PeerResponse};
use super::secure::PeerConnector;
use super::{PEER_CALL_DURATION, PEER_CALLS};
use crate::{Error, Result};

/// A peer that does not accept a TCP connection within this is unreachable; peers are
/// on a LAN, where a connect takes well under a millisecond.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection with no calls for this long is closed; the next call reconnects.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pings on connections with calls in flight: a peer that vanished without a FIN (a
/// partition, a frozen process) leaves a connection that would take every later call
/// down with it until TCP gives up. An unanswered ping closes it, and the next call
/// reconnects.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Calls other nodes. Built once per node and cloned freely (clones share the
/// connections and the batchers): every call to one peer goes over one HTTP/2
/// connection, and reads, merges and hints to one peer travel in batches (see
/// [`super::batch`]).
#[derive(Debug, Clone)]
pub struct PeerClient {
    transport: Exchange,
    /// One batcher per peer, started on the first call to it.
    batchers: Arc<Mutex<HashMap<SocketAddr, Batcher>>>,
}

impl PeerClient {
    /// A client that introduces itself to peers as `local_id`. Opens no connection yet.
    pub fn new(local_id: String) -> Self {
        Self::with_options(local_id, None, None)
    }

    /// Like [`PeerClient::new`], with connections made from `local_ip` (the address
    /// the node's cluster port is bound to), so that peers, firewalls and fault
    /// injection see each node's traffic come from its own address, and with `keys`
    /// (`--cluster-key-file`) every connection handshaken under the first of them.
    pub fn with_options(
        local_id: String,
        local_ip: Option<std::net::IpAddr>,
        keys: Option<Arc<ClusterKeys>>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_local_address(local_ip);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            // Prior knowledge: one connection per peer, every call a stream on it.
            .http2_only(true)
            // Without a timer hyper sends no pings; without a pool timer idle
            // connections never expire.
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            // Merges carry whole values: grow the windows past the 64 KiB default.
            .http2_adaptive_window(true)
            .build(PeerConnector::new(connector, keys));
        Self {
            transport: Exchange::new(local_id.into(), client),
            batchers: Arc::default(),
        }
    }

    /// Sends `request` to the node at `peer` and waits at most `timeout` for its answer.
    ///
    /// A call that could not be sent (no connection) is an [`Error::PeerUnreachable`]:
    /// the peer did not act on it. Every other failure is an [`Error::Peer`] whose
    /// reason says what went wrong: timed out, failed mid-way, refused with an HTTP
    /// status, or an undecodable answer; whether the peer acted on the request is then
    /// unknown. A [`PeerResponse::Error`] is a
    /// successful call: the peer answered.
    pub async fn call(
        &self,
        peer: SocketAddr,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse> {
        let op = request.op_name();
        let started = Instant::now();
        let deadline = started + timeout;
        let (outcome, result) =
            match tokio::time::timeout(timeout, self.send(peer, request, deadline)).await {
                Ok(Ok(response)) => ("ok", Ok(response)),
                Ok(Err(failure)) => ("error", Err(failure)),
                Err(_) => (
                    "timeout",
                    Err(Failure::Unknown(format!(
                        "timed out after {} ms",
                        timeout.as_millis()
                    ))),
                ),
            };
        metrics::counter!(PEER_CALLS, "op" => op, "outcome" => outcome).increment(1);
        metrics::histogram!(PEER_CALL_DURATION, "op" => op).record(started.elapsed().as_secs_f64());
        result.map_err(|failure| {
            tracing::debug!(%peer, op, ?failure, "peer call failed");
            let peer = peer.to_string();
            match failure {
                Failure::NotSent(reason) => Error::PeerUnreachable { peer, reason },
                Failure::Unknown(reason) => Error::Peer { peer, reason },
            }
        })
    }

    /// One call without its timeout: in a batch, or alone for a forwarded write.
    async fn send(
        &self,
        peer: SocketAddr,
        request: PeerRequest,
        deadline: Instant,
    ) -> Result<PeerResponse, Failure> {
        if matches!(request, PeerRequest::Write { .. }) {
            // A forwarded write waits for a quorum of its own: in a batch it would
            // hold up every call that shares it.
            let mut answers = self.transport.exchange(peer, vec![request]).await?;
            return Ok(answers.pop().expect("exchange checks the answer count"));
        }
        let batcher = {
            let mut batchers = self.batchers.lock().expect("no panic holds this lock");
            batchers
                .entry(peer)
                .or_insert_with(|| Batcher::start(self.transport.clone(), peer))
                .clone()
        };
        batcher.call(request, deadline).await
    }
}
