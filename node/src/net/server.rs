//! The peer RPC listener: HTTP/2 with prior knowledge, one route (`POST /rpc`), at most
//! [`CONNECTIONS_MAX`] connections of [`STREAMS_PER_CONNECTION_MAX`] concurrent calls.
//! With a cluster key every connection first passes the handshake of [`super::secure`]
//! (in its own task, so a slow or hostile one never holds up the accept loop).
//! On shutdown it stops accepting, lets in-flight calls finish for up to
//! [`DRAIN_TIMEOUT`], then closes whatever is left and returns.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use ringkv_gossip::ClusterKeys;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::message::{
    BATCH_CALLS_MAX, Envelope, MESSAGE_MAX_BYTES, PROTOCOL_VERSION, PeerRequest, PeerResponse,
};
use super::secure::{PeerIo, secure_accepted};
use super::{PEER_BAD_REQUESTS, RPC_PATH, wire_config};

/// What a node does with its peers' requests (the coordinator and the replica, wired by
/// the node).
///
/// The future is dropped, at its next `.await`, if the caller gives up on the call (its
/// timeout resets the HTTP/2 stream) or the drain timeout runs out: leave state
/// consistent at every await point, or spawn the work that must finish.
pub trait PeerHandler: Send + Sync + 'static {
    /// Answers `request` from the node that says it is `from` (unauthenticated).
    fn handle<'a>(&'a self, from: &'a str, request: PeerRequest) -> BoxFuture<'a, PeerResponse>;
}

/// Connections served at once; peers are few, so more means something is wrong.
const CONNECTIONS_MAX: usize = 1024;
/// Concurrent calls on one connection (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`); a
/// caller over it waits in its own client, not here.
const STREAMS_PER_CONNECTION_MAX: u32 = 256;
/// Headers are a method, a path and a content type: anything large is not a peer.
const HEADER_LIST_MAX_BYTES: u32 = 16 * 1024;
/// A body that trickles in slower than this holds a stream for nothing.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight calls get to finish after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pings on idle connections, so a peer that vanished (no FIN, no RST) is noticed and
/// its connection closed instead of held until TCP gives up.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest plain-text reason in a refusal; a reason quotes the decoder's error.
const REASON_MAX_BYTES: usize = 1024;

/// Serves peer calls on `listener` until `shutdown` turns true (or its sender is
/// dropped), then drains in-flight calls and returns once every connection is closed.
/// With `keys`, only connections that pass the handshake under one of them are served.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn PeerHandler>,
    keys: Option<Arc<ClusterKeys>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        // Without a timer hyper sends no keep-alive pings.
        .timer(TokioTimer::new())
        .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
        .max_header_list_size(HEADER_LIST_MAX_BYTES)
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        // Replication carries whole values: grow the flow-control windows past the 64 KiB
        // default rather than stall a large merge on round trips.
        .adaptive_window(true);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    // Owning the connection tasks lets shutdown close the ones that outlive the drain.
    let mut connections = JoinSet::new();

    loop {
        let permit = tokio::select! {
            biased;
            () = stop_requested(&mut shutdown) => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, remote) = tokio::select! {
            biased;
            () = stop_requested(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Calls are small request/answer pairs: Nagle would only add latency.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %remote, "could not set TCP_NODELAY");
        }
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(answer(handler.as_ref(), req).await) }
        });
        let (watcher, builder, keys) = (graceful.watcher(), builder.clone(), keys.clone());
        // Reap finished connections so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _permit = permit;
            let stream = match secure_accepted(stream, keys.as_deref()).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, %remote, "peer connection refused at the handshake");
                    return;
                }
            };
            let conn = watcher.watch(builder.serve_connection(PeerIo::new(stream), service));
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %remote, "peer connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout = ?DRAIN_TIMEOUT,
            open = connections.len(),
            "peer connections still busy after the drain timeout; closing them"
        );
    }
    connections.shutdown().await;
}

/// Resolves once shutdown is asked for, or nobody is left to ask.
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: nothing will ever run this server again.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Answers one HTTP request: a refusal for anything that is not a readable call.
async fn answer(handler: &dyn PeerHandler, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match call(handler, req).await {
        Ok(response) => response,
        Err(refusal) => {
            metrics::counter!(PEER_BAD_REQUESTS, "reason" => refusal.metric_reason).increment(1);
            tracing::debug!(status = %refusal.status, reason = %refusal.message, "peer request refused");
            refusal.into_response()
        }
    }
}

async fn call(
    handler: &dyn PeerHandler,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Refusal> {
    if req.uri().path() != RPC_PATH {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "route",
            format!("no such path; peers POST {RPC_PATH}"),
        ));
    }
    if req.method() != Method::POST {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "route",
            format!("peers POST {RPC_PATH}"),
        ));
    }
    let body = read_body(req.into_body()).await?;
    let envelope = decode_request(&body)?;
    // Free the request's bytes before the handler runs: they can be large.
    drop(body);
    let from = envelope.from;
    // The calls of a batch run concurrently, in this task, and are answered together.
    let responses = futures::future::join_all(
        envelope
            .body
            .into_iter()
            .map(|request| handler.handle(&from, request)),
    )
    .await;
    let encoded = match bincode::encode_to_vec(&responses, wire_config()) {
        Ok(encoded) => encoded,
        // Only a hand-written Encode could fail; none of the messages has one.
        Err(e) => {
            tracing::error!(error = %e, "peer response could not be encoded");
            return Ok(text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the answer could not be encoded: {e}"),
            ));
        }
    };
    if encoded.len() > MESSAGE_MAX_BYTES {
        // The caller would refuse it anyway; say why here, where it can be fixed.
        tracing::error!(
            bytes = encoded.len(),
            "peer response over the message limit"
        );
        return Ok(text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the answer is {} bytes, over the limit of {MESSAGE_MAX_BYTES}",
                encoded.len()
            ),
        ));
    }
    let mut response = Response::new(Full::new(Bytes::from(encoded)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// Reads a request body whole, refusing it as soon as it is known to be over the limit.
async fn read_body(body: Incoming) -> Result<Bytes, Refusal> {
    let declared_bytes = body.size_hint().lower();
    if declared_bytes > MESSAGE_MAX_BYTES as u64 {
        return Err(Refusal::too_large(declared_bytes));
    }
    let limited = Limited::new(body, MESSAGE_MAX_BYTES);
    match tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Refusal::too_large(MESSAGE_MAX_BYTES as u64 + 1))
        }
        Ok(Err(e)) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "body",
            format!("the body could not be read: {e}"),
        )),
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Decodes a call, version first: a peer of another version may have changed
/// everything after it, and deserves to be told the version rather than "undecodable".
pub(super) fn decode_request(bytes: &[u8]) -> Result<Envelope<Vec<PeerRequest>>, Refusal> {
    let undecodable = |e: bincode::error::DecodeError| match e {
        // A length prefix that claims more than a message may hold.
        bincode::error::DecodeError::LimitExceeded => Refusal::new(
            StatusCode::BAD_REQUEST,
            "too_large",
            format!(
                "a length in the request claims more than the limit of {MESSAGE_MAX_BYTES} bytes"
            ),
        ),
        e => Refusal::new(
            StatusCode::BAD_REQUEST,
            "decode",
            format!("undecodable request: {e}"),
        ),
    };
    let (version, _) =
        bincode::decode_from_slice::<u16, _>(bytes, wire_config()).map_err(undecodable)?;
    if version != PROTOCOL_VERSION {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "version",
            format!("protocol version {version}; this node speaks {PROTOCOL_VERSION}"),
        ));
    }
    let (envelope, used_bytes) =
        bincode::decode_from_slice::<Envelope<Vec<PeerRequest>>, _>(bytes, wire_config())
            .map_err(undecodable)?;
    if used_bytes != bytes.len() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "decode",
            format!(
                "undecodable request: {} bytes after the message",
                bytes.len() - used_bytes
            ),
        ));
    }
    let calls = envelope.body.len();
    if !(1..=BATCH_CALLS_MAX).contains(&calls) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "batch",
            format!("a message of {calls} calls; a message holds 1 to {BATCH_CALLS_MAX}"),
        ));
    }
    Ok(envelope)
}

/// A request refused before it reached the handler.
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    /// The `reason` label of [`PEER_BAD_REQUESTS`].
    pub(super) metric_reason: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, metric_reason: &'static str, message: String) -> Self {
        assert!(
            super::PEER_BAD_REQUEST_REASONS.contains(&metric_reason),
            "refusal reason {metric_reason:?} is missing from PEER_BAD_REQUEST_REASONS, \
             so /metrics would not list it from the start"
        );
        Self {
            status,
            metric_reason,
            message,
        }
    }

    fn too_large(bytes: u64) -> Self {
        // 400 rather than 413: to the caller every refusal is the same failed call.
        Self::new(
            StatusCode::BAD_REQUEST,
            "too_large",
            format!("the request is {bytes} bytes or more, over the limit of {MESSAGE_MAX_BYTES}"),
        )
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        text_response(self.status, self.message)
    }
}

fn text_response(status: StatusCode, mut message: String) -> Response<Full<Bytes>> {
    if message.len() > REASON_MAX_BYTES {
        let mut end = REASON_MAX_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(envelope: &Envelope<Vec<PeerRequest>>) -> Vec<u8> {
        bincode::encode_to_vec(envelope, wire_config()).unwrap()
    }

    fn read(key: &[u8]) -> Envelope<Vec<PeerRequest>> {
        Envelope {
            version: PROTOCOL_VERSION,
            from: "a".into(),
            body: vec![PeerRequest::Read { key: key.to_vec() }],
        }
    }

    #[test]
    fn decodes_what_the_client_encodes() {
        // A well-formed call decodes to exactly what was sent.
        let sent = read(b"k");
        assert_eq!(decode_request(&encode(&sent)).unwrap(), sent);
    }

    #[test]
    fn refuses_an_empty_or_oversized_batch() {
        // A message must carry 1 to BATCH_CALLS_MAX calls; any other count is refused
        // whole, by name, and a full batch is accepted.
        let mut sent = read(b"k");
        sent.body.clear();
        let refusal = decode_request(&encode(&sent)).unwrap_err();
        assert_eq!(refusal.metric_reason, "batch");
        sent.body = vec![PeerRequest::Read { key: b"k".to_vec() }; BATCH_CALLS_MAX];
        assert_eq!(decode_request(&encode(&sent)).unwrap(), sent);
        sent.body.push(PeerRequest::Read { key: b"k".to_vec() });
        let refusal = decode_request(&encode(&sent)).unwrap_err();
        assert_eq!(refusal.metric_reason, "batch");
        assert!(refusal.message.contains("calls"), "{}", refusal.message);
    }

    #[test]
    fn refuses_another_version_by_name() {
        // A call of another protocol version is refused as such, not as garbage.
        let mut sent = read(b"k");
        sent.version = PROTOCOL_VERSION + 1;
        let refusal = decode_request(&encode(&sent)).unwrap_err();
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
        assert_eq!(refusal.metric_reason, "version");
        assert!(
            refusal.message.contains("protocol version"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn refuses_a_length_prefix_over_the_limit_without_allocating_it() {
        // A key whose length prefix claims 2^40 bytes is refused by the limit, not
        // attempted (which would abort the process on allocation).
        let mut bytes = encode(&read(b""));
        // The encoding ends with the key's length (varint 0); claim 2^40 bytes instead:
        // 0xfd introduces a u64 in bincode's varint.
        bytes.pop();
        bytes.push(0xfd);
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let refusal = decode_request(&bytes).unwrap_err();
        assert_eq!(refusal.metric_reason, "too_large");
        assert!(refusal.message.contains("limit"), "{}", refusal.message);
    }

    #[test]
    fn refuses_trailing_bytes_and_truncation() {
        // A message with bytes after it, or cut short, is undecodable, never half-read.
        let mut long = encode(&read(b"key"));
        long.push(0);
        assert_eq!(decode_request(&long).unwrap_err().metric_reason, "decode");
        let short = encode(&read(b"key"));
        assert_eq!(
            decode_request(&short[..short.len() - 1])
                .unwrap_err()
                .metric_reason,
            "decode"
        );
        assert_eq!(decode_request(&[]).unwrap_err().metric_reason, "decode");
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        // A refusal's text never exceeds its limit, even mid-way through a multibyte char.
        let response = text_response(StatusCode::BAD_REQUEST, "é".repeat(REASON_MAX_BYTES));
        let size = response.body().size_hint().exact().unwrap();
        assert!(size <= REASON_MAX_BYTES as u64 && size >= REASON_MAX_BYTES as u64 - 1);
    }
}
