//! One message to a peer and its answers: a batch of calls encoded in an envelope,
//! sent as one HTTP/2 `POST /rpc`, and the failure classified by whether the peer may
//! have acted on it. [`super::batch`] decides what goes in a message;
//! [`super::PeerClient`] times each call.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use ringkv_client::error::error_chain;

use super::message::{Envelope, MESSAGE_MAX_BYTES, PROTOCOL_VERSION, PeerRequest, PeerResponse};
use super::secure::PeerConnector;
use super::{RPC_PATH, wire_config};

/// Longest refusal text read from a peer; a reason is a line, not a body.
const REASON_MAX_BYTES: usize = 1024;

/// Sends messages (batches of calls) to peers: the HTTP/2 client and this node's id.
#[derive(Debug, Clone)]
pub(super) struct Exchange {
    /// This node's id, sent in every envelope.
    local_id: Arc<str>,
    client: Client<PeerConnector, Full<Bytes>>,
}

impl Exchange {
    pub(super) fn new(local_id: Arc<str>, client: Client<PeerConnector, Full<Bytes>>) -> Self {
        Self { local_id, client }
    }

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
        decode_answers(&body).map_err(sent)
    }
}

/// Decodes a peer's answers, which must use every byte of `body`.
pub(super) fn decode_answers(body: &[u8]) -> Result<Vec<PeerResponse>, String> {
    let (answers, used_bytes) =
        bincode::decode_from_slice::<Vec<PeerResponse>, _>(body, wire_config())
            .map_err(|e| format!("undecodable answer: {e}"))?;
    if used_bytes != body.len() {
        return Err(format!(
            "undecodable answer: {} bytes after the message",
            body.len() - used_bytes
        ));
    }
    Ok(answers)
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
