//! The calling side of peer RPC: one HTTP/2 client for the whole node, which keeps one
//! multiplexed connection per peer and reconnects when it breaks, and one batcher per
//! peer that gathers concurrent calls into one message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ringkv_client::error::error_chain;
use tokio::time::Instant;

use super::batch::Batcher;
use super::message::{Envelope, MESSAGE_MAX_BYTES, PROTOCOL_VERSION, PeerRequest, PeerResponse};
use super::{PEER_CALL_DURATION, PEER_CALLS, RPC_PATH, wire_config};
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
/// Longest refusal text read from a peer; a reason is a line, not a body.
const REASON_MAX_BYTES: usize = 1024;

/// Calls other nodes. Built once per node and cloned freely (clones share the
/// connections and the batchers): every call to one peer goes over one HTTP/2
/// connection, and reads, merges and hints to one peer travel in batches (see
/// [`super::batch`]).
#[derive(Debug, Clone)]
pub struct PeerClient {
    transport: Transport,
    /// One batcher per peer, started on the first call to it.
    batchers: Arc<Mutex<HashMap<SocketAddr, Batcher>>>,
}

impl PeerClient {
    /// A client that introduces itself to peers as `local_id`. Opens no connection yet.
    pub fn new(local_id: String) -> Self {
        Self::with_local_ip(local_id, None)
    }

    /// Like [`PeerClient::new`], with connections made from `local_ip` (the address
    /// the node's cluster port is bound to), so that peers, firewalls and fault
    /// injection see each node's traffic come from its own address.
    pub fn with_local_ip(local_id: String, local_ip: Option<std::net::IpAddr>) -> Self {
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
            .build(connector);
        Self {
            transport: Transport {
                local_id: local_id.into(),
                client,
            },
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
        let op = op_name(&request);
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

/// Sends messages (batches of calls) to peers: the HTTP/2 client and this node's id.
#[derive(Debug, Clone)]
pub(super) struct Transport {
    /// This node's id, sent in every envelope.
    local_id: Arc<str>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Transport {
    /// Sends `requests` to `peer` in one message and returns their answers, in order.
    /// The error says whether the peer may have acted on them.
    pub(super) async fn exchange(
        &self,
        peer: SocketAddr,
        requests: Vec<PeerRequest>,
    ) -> Result<Vec<PeerResponse>, Failure> {
        let count = requests.len();
        self.try_exchange(peer, requests)
            .await
            .and_then(|answers| {
                if answers.len() == count {
                    Ok(answers)
                } else {
                    Err((true, format!("{} answers to {count} calls", answers.len())))
                }
            })
            .map_err(|(sent, reason)| {
                if sent {
                    Failure::Unknown(reason)
                } else {
                    Failure::NotSent(reason)
                }
            })
    }

    /// [`Self::exchange`]; the error says whether the request may have been sent.
    async fn try_exchange(
        &self,
        peer: SocketAddr,
        requests: Vec<PeerRequest>,
    ) -> Result<Vec<PeerResponse>, (bool, String)> {
        let unsent = |reason: String| (false, reason);
        let sent = |reason: String| (true, reason);
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            from: self.local_id.to_string(),
            body: requests,
        };
        let encoded = bincode::encode_to_vec(&envelope, wire_config())
            .map_err(|e| unsent(format!("the request could not be encoded: {e}")))?;
        // Refused here rather than sent and refused: the peer would read it all first.
        if encoded.len() > MESSAGE_MAX_BYTES {
            return Err(unsent(format!(
                "the request is {} bytes, over the limit of {MESSAGE_MAX_BYTES}",
                encoded.len()
            )));
        }
        let http_request = Request::post(format!("http://{peer}{RPC_PATH}"))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(encoded)))
            .map_err(|e| unsent(format!("the request could not be built: {e}")))?;
        let response = self.client.request(http_request).await.map_err(|e| {
            // A failed connect sent nothing, nor did a request canceled before its
            // connection took it; any other failure may have come after the peer read
            // the request.
            if e.is_connect() || never_started(&e) {
                unsent(error_chain(&e))
            } else {
                sent(format!("the call failed: {}", error_chain(&e)))
            }
        })?;
        let status = response.status();
        if status != StatusCode::OK {
            // The peer's reason, if it sent one that is short and readable.
            let reason = match Limited::new(response.into_body(), REASON_MAX_BYTES)
                .collect()
                .await
            {
                Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                Err(_) => String::from("(no readable reason)"),
            };
            return Err(sent(format!("answered HTTP {status}: {reason}")));
        }
        let body = Limited::new(response.into_body(), MESSAGE_MAX_BYTES)
            .collect()
            .await
            .map_err(|e| sent(format!("the answer could not be read: {e}")))?
            .to_bytes();
        let (answers, used_bytes) =
            bincode::decode_from_slice::<Vec<PeerResponse>, _>(&body, wire_config())
                .map_err(|e| sent(format!("undecodable answer: {e}")))?;
        if used_bytes != body.len() {
            return Err(sent(format!(
                "undecodable answer: {} bytes after the message",
                body.len() - used_bytes
            )));
        }
        Ok(answers)
    }
}

/// Whether hyper gave the request back unstarted: every `Canceled` error hyper makes
/// (the connection closed or was not ready while the request waited in its queue)
/// comes before any byte of the request was written, which is why hyper-util retries
/// such requests on another connection. A call to a peer whose connection had just
/// broken fails this way, and must count as never sent, not as an unknown outcome.
fn never_started(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Why a call failed, as far as whether the peer may have acted on it.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    /// Nothing reached the peer (no connection, or refused before sending).
    NotSent(String),
    /// The request may have reached the peer and been acted on.
    Unknown(String),
}

/// The `op` label of a request.
fn op_name(request: &PeerRequest) -> &'static str {
    match request {
        PeerRequest::Read { .. } => "read",
        PeerRequest::Merge { .. } => "merge",
        PeerRequest::Hint { .. } => "hint",
        PeerRequest::Write { .. } => "write",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that wraps `cause`, as hyper-util's client error wraps hyper's.
    #[derive(Debug)]
    struct Wrapper(hyper::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// A hyper error from a request that never left: its connection is gone.
    async fn canceled_error() -> hyper::Error {
        let (io, _peer) = tokio::io::duplex(1024);
        let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
            hyper_util::rt::TokioIo::new(io),
        )
        .await
        .unwrap();
        drop(connection);
        let request = Request::get("/").body(Full::new(Bytes::new())).unwrap();
        sender.send_request(request).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_request_hyper_gave_back_unstarted_counts_as_never_sent() {
        // A canceled hyper error is recognised directly and behind a wrapper; any other
        // error (here an I/O error, which may come after the request was written) is not.
        let canceled = canceled_error().await;
        assert!(canceled.is_canceled(), "{canceled:?}");
        assert!(never_started(&Wrapper(canceled)));
        assert!(never_started(&canceled_error().await));
        let other = std::io::Error::other("connection reset");
        assert!(!never_started(&other));
    }
}
