//! End-to-end tests of peer RPC: a real [`serve`] on 127.0.0.1, called by a
//! [`PeerClient`] or by a bare HTTP/2 client that sends what a peer never would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::message::{Envelope, PROTOCOL_VERSION};
use super::{
    PeerClient, PeerErrorKind, PeerHandler, PeerRequest, PeerResponse, WireSupersedes, serve,
    wire_config,
};
use ringkv_gossip::ClusterKeys;

use crate::Error;
use crate::version::{Actor, Clock, VersionVector, Versioned};

/// A call's timeout when the test does not care about it: long enough for a loaded
/// machine, short enough that a hang fails the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A handler that answers from the request alone (after `delay` when the key starts
/// with "slow"), and records what it received and how many calls it ran at once.
#[derive(Debug, Default)]
struct Fake {
    delay: Duration,
    received: Mutex<Vec<(String, PeerRequest)>>,
    started: Notify,
    in_flight: AtomicUsize,
    in_flight_max: AtomicUsize,
}

impl Fake {
    fn slow(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            ..Self::default()
        })
    }
}

impl PeerHandler for Fake {
    fn handle<'a>(&'a self, from: &'a str, request: PeerRequest) -> BoxFuture<'a, PeerResponse> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.in_flight_max.fetch_max(now, Ordering::SeqCst);
            self.started.notify_one();
            self.received
                .lock()
                .unwrap()
                .push((from.to_owned(), request.clone()));
            if key_of(&request).starts_with(b"slow") {
                tokio::time::sleep(self.delay).await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            answer_for(from, request)
        })
    }
}

/// The fake's answer: derived from the request, so a round trip checks both directions.
fn answer_for(from: &str, request: PeerRequest) -> PeerResponse {
    match request {
        PeerRequest::Read { key } => PeerResponse::Read(Some(clock_of(key))),
        PeerRequest::Merge { .. } => PeerResponse::Merged,
        PeerRequest::Hint { .. } => PeerResponse::Hinted,
        PeerRequest::Write {
            key, value: None, ..
        } => PeerResponse::Error {
            kind: PeerErrorKind::TooManySiblings { max: 64 },
            message: String::from_utf8_lossy(&key).into_owned(),
        },
        PeerRequest::Write {
            key,
            value: Some(value),
            ..
        } => PeerResponse::Written {
            clock: clock_of(value),
            acks: vec![from.to_owned()],
            hinted: vec![(String::from_utf8_lossy(&key).into_owned(), "c".into())],
        },
        PeerRequest::TreeRoots { partitions } => {
            PeerResponse::TreeRoots(partitions.iter().map(|p| Some(u64::from(*p))).collect())
        }
        other => PeerResponse::Error {
            kind: PeerErrorKind::BadRequest,
            message: other.op_name().into(),
        },
    }
}

fn key_of(request: &PeerRequest) -> &[u8] {
    match request {
        PeerRequest::Read { key }
        | PeerRequest::Merge { key, .. }
        | PeerRequest::Hint { key, .. }
        | PeerRequest::Write { key, .. } => key,
        _ => b"",
    }
}

fn clock_of(data: Vec<u8>) -> Clock {
    Clock::new().update(
        &VersionVector::empty(),
        Versioned::value(1_700_000_000_000, data),
        &Actor::new("b", 7),
    )
}

fn read(key: &str) -> PeerRequest {
    PeerRequest::Read {
        key: key.as_bytes().to_vec(),
    }
}

/// A server on a free port; dropping it asks the server to stop.
struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

async fn start(handler: Arc<Fake>) -> Running {
    start_keyed(handler, &[]).await
}

/// Cluster keys `[k; 32]` for each `k` (the first sends); none: `None`.
fn cluster_keys(seeds: &[u8]) -> Option<Arc<ClusterKeys>> {
    (!seeds.is_empty())
        .then(|| Arc::new(ClusterKeys::new(seeds.iter().map(|k| [*k; 32]).collect()).unwrap()))
}

/// A server holding the cluster keys `keys` (none: plain).
async fn start_keyed(handler: Arc<Fake>, keys: &[u8]) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(serve(listener, handler, cluster_keys(keys), stopped));
    Running { addr, stop, task }
}

fn keyed_client(keys: &[u8]) -> PeerClient {
    PeerClient::with_options("node-a".into(), None, cluster_keys(keys))
}

/// A port nobody listens on: bound, then released.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A TCP relay to `target` that counts the connections it accepts.
async fn counting_relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut outbound = TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, accepted)
}

/// Sends one request with a bare HTTP/2 client: the status and the body as text.
async fn raw_call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Vec<u8>,
    content_length: Option<u64>,
) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(bytes) = content_length {
        request = request.header(http::header::CONTENT_LENGTH, bytes);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&text).into_owned())
}

fn peer_reason(result: crate::Result<PeerResponse>) -> String {
    match result {
        Err(Error::Peer { reason, .. }) => reason,
        other => panic!("expected Error::Peer, got {other:?}"),
    }
}

#[tokio::test]
async fn every_request_kind_round_trips() {
    // Each request kind reaches the handler intact with the caller's id, and each answer
    // kind (including a peer's error) comes back intact.
    let fake = Fake::slow(Duration::ZERO);
    let server = start(fake.clone()).await;
    let client = PeerClient::new("node-a".into());
    let requests = vec![
        read("k1"),
        PeerRequest::Merge {
            key: b"k2".to_vec(),
            clock: clock_of(b"v2".to_vec()),
            sync: true,
        },
        PeerRequest::Write {
            key: b"k3".to_vec(),
            value: Some(b"v3".to_vec()),
            supersedes: WireSupersedes::Context(clock_of(b"old".to_vec()).context()),
            w: 2,
            r: 2,
            timeout_ms: 500,
            sync: false,
            sloppy: true,
        },
        PeerRequest::Write {
            key: b"k4".to_vec(),
            value: None,
            supersedes: WireSupersedes::CurrentVersions,
            w: 1,
            r: 1,
            timeout_ms: 100,
            sync: true,
            sloppy: false,
        },
    ];
    for request in &requests {
        let answer = client
            .call(server.addr, request.clone(), CALL_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(answer, answer_for("node-a", request.clone()));
    }
    let received = fake.received.lock().unwrap().clone();
    let expected: Vec<_> = requests
        .into_iter()
        .map(|r| ("node-a".to_owned(), r))
        .collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn concurrent_calls_share_one_connection() {
    // 64 calls started at once to one peer overlap on a single TCP connection.
    let fake = Fake::slow(Duration::from_millis(100));
    let server = start(fake.clone()).await;
    let (relay, accepted) = counting_relay(server.addr).await;
    let client = PeerClient::new("node-a".into());
    let calls = (0..64).map(|i| client.call(relay, read(&format!("slow{i}")), CALL_TIMEOUT));
    for (i, answer) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            answer.unwrap(),
            answer_for("node-a", read(&format!("slow{i}")))
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection for all calls"
    );
    // Multiplexed, not merely reused one after another.
    assert!(fake.in_flight_max.load(Ordering::SeqCst) > 1);
    drop(server);
}

#[tokio::test]
async fn a_slow_peer_times_out() {
    // A handler slower than the call's timeout gives Error::Peer saying so, about when
    // the timeout runs out rather than when the handler would have answered, and the
    // next call on the same connection is answered.
    let server = start(Fake::slow(Duration::from_secs(30))).await;
    let client = PeerClient::new("node-a".into());
    let started = Instant::now();
    let result = client
        .call(server.addr, read("slow"), Duration::from_millis(200))
        .await;
    let reason = peer_reason(result);
    assert!(reason.contains("timed out after 200 ms"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let answer = client
        .call(server.addr, read("k"), CALL_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer, answer_for("node-a", read("k")));
}

#[tokio::test]
async fn a_closed_port_fails_fast() {
    // Calling a port nobody listens on gives Error::PeerUnreachable (the call was never
    // sent, so the caller may ask another node) without waiting for the call's timeout.
    let addr = closed_port().await;
    let client = PeerClient::new("node-a".into());
    let started = Instant::now();
    let result = client.call(addr, read("k"), Duration::from_secs(30)).await;
    assert!(
        matches!(result, Err(Error::PeerUnreachable { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_peer_that_is_not_http2_is_an_error() {
    // Something other than a ringkv node on the port gives an error at once, not a hang.
    // Which error depends on timing, and both are right: if the junk ends the HTTP/2
    // handshake before the request is written, it was never sent (PeerUnreachable);
    // if the request went out first, its outcome is unknown (Peer).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let client = PeerClient::new("node-a".into());
    let started = Instant::now();
    let result = client.call(addr, read("k"), Duration::from_secs(30)).await;
    let reason = match result {
        Err(Error::Peer { reason, .. } | Error::PeerUnreachable { reason, .. }) => reason,
        other => panic!("expected a peer error, got {other:?}"),
    };
    assert!(!reason.contains("timed out"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(10), "{reason}");
}

#[tokio::test]
async fn garbage_is_refused_and_the_server_carries_on() {
    // Undecodable bodies, wrong routes and oversized declarations get 4xx with a reason,
    // and the server still answers the next good call.
    let fake = Fake::slow(Duration::ZERO);
    let server = start(fake.clone()).await;

    let (status, reason) = raw_call(
        server.addr,
        Method::POST,
        "/rpc",
        // This version (one varint byte), then garbage.
        [&[PROTOCOL_VERSION as u8, 0xff, 0xfe][..], b" not bincode"].concat(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reason.contains("undecodable"), "{reason}");

    let (status, _) = raw_call(server.addr, Method::POST, "/rpc", Vec::new(), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, reason) = raw_call(
        server.addr,
        Method::POST,
        "/rpc",
        b"x".to_vec(),
        Some(super::message::MESSAGE_MAX_BYTES as u64 + 1),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reason.contains("over the limit"), "{reason}");

    let (status, _) = raw_call(server.addr, Method::POST, "/other", Vec::new(), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = raw_call(server.addr, Method::GET, "/rpc", Vec::new(), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    assert!(
        fake.received.lock().unwrap().is_empty(),
        "no garbage reached the handler"
    );
    let client = PeerClient::new("node-a".into());
    let answer = client
        .call(server.addr, read("k"), CALL_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer, answer_for("node-a", read("k")));
}

#[tokio::test]
async fn another_protocol_version_is_refused() {
    // A well-formed envelope of another protocol version gets a 400 naming the version,
    // and never reaches the handler.
    let fake = Fake::slow(Duration::ZERO);
    let server = start(fake.clone()).await;
    let envelope = Envelope {
        version: PROTOCOL_VERSION + 1,
        from: "node-z".to_owned(),
        body: vec![read("k")],
    };
    let body = bincode::encode_to_vec(&envelope, wire_config()).unwrap();
    let (status, reason) = raw_call(server.addr, Method::POST, "/rpc", body, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reason.contains("protocol version"), "{reason}");
    assert!(fake.received.lock().unwrap().is_empty());
}

/// An HTTP/2 server that answers every request with `status` and `body`.
async fn fixed_answer_peer(status: StatusCode, body: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(move |_| async move {
                let mut response = http::Response::new(Full::new(Bytes::from_static(body)));
                *response.status_mut() = status;
                Ok::<_, std::convert::Infallible>(response)
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn a_refusal_or_a_garbled_answer_is_a_peer_error() {
    // A peer's non-200 answer becomes Error::Peer quoting status and reason, and a 200
    // whose body does not decode becomes Error::Peer saying so.
    let client = PeerClient::new("node-a".into());
    let refusing = fixed_answer_peer(StatusCode::BAD_REQUEST, b"protocol version 9").await;
    let reason = peer_reason(client.call(refusing, read("k"), CALL_TIMEOUT).await);
    assert!(
        reason.contains("400") && reason.contains("protocol version 9"),
        "{reason}"
    );

    let garbling = fixed_answer_peer(StatusCode::OK, b"\xff\xff\xff").await;
    let reason = peer_reason(client.call(garbling, read("k"), CALL_TIMEOUT).await);
    assert!(reason.contains("undecodable answer"), "{reason}");

    // A well-formed answer with no answer in it (an empty list) for one call.
    let short = fixed_answer_peer(StatusCode::OK, b"\x00").await;
    let reason = peer_reason(client.call(short, read("k"), CALL_TIMEOUT).await);
    assert!(reason.contains("0 answers to 1 calls"), "{reason}");
}

#[tokio::test]
async fn concurrent_calls_each_get_their_own_answer() {
    // Hundreds of calls at once to one peer (batched, some slow) each get the answer
    // to their own request, whatever batch they travelled in.
    let fake = Fake::slow(Duration::from_millis(20));
    let server = start(fake.clone()).await;
    let client = PeerClient::new("node-a".into());
    let calls = (0..300).map(|i| {
        let client = client.clone();
        let addr = server.addr;
        let request = match i % 3 {
            0 => read(&format!("slow-{i}")),
            1 => read(&format!("k-{i}")),
            _ => PeerRequest::Hint {
                owner: format!("owner-{i}"),
                key: format!("h-{i}").into_bytes(),
                clock: clock_of(vec![i as u8]),
                sync: false,
            },
        };
        async move {
            let answer = client.call(addr, request.clone(), CALL_TIMEOUT).await;
            (request, answer)
        }
    });
    for (request, answer) in futures::future::join_all(calls).await {
        assert_eq!(answer.unwrap(), answer_for("node-a", request));
    }
    assert_eq!(fake.received.lock().unwrap().len(), 300);
}

#[tokio::test]
async fn a_call_whose_caller_gave_up_before_it_left_is_never_sent() {
    // With every message slot to the peer taken by slow calls, a new call waits for
    // its batch; if its caller times out meanwhile, the call is dropped, not sent
    // later, and the calls after it go through.
    let fake = Fake::slow(Duration::from_millis(1500));
    let server = start(fake.clone()).await;
    let client = PeerClient::new("node-a".into());
    let mut slow = Vec::new();
    for i in 0..super::batch::BATCHES_IN_FLIGHT_MAX {
        let (client, addr) = (client.clone(), server.addr);
        let started = fake.started.notified();
        slow.push(tokio::spawn(async move {
            client
                .call(addr, read(&format!("slow-{i}")), CALL_TIMEOUT)
                .await
        }));
        started.await;
    }
    let result = client
        .call(server.addr, read("gave-up"), Duration::from_millis(100))
        .await;
    assert!(peer_reason(result).contains("timed out"));
    for call in slow {
        call.await.unwrap().unwrap();
    }
    let answer = client.call(server.addr, read("after"), CALL_TIMEOUT).await;
    assert_eq!(answer.unwrap(), answer_for("node-a", read("after")));
    let received = fake.received.lock().unwrap();
    assert!(
        received.iter().all(|(_, r)| key_of(r) != b"gave-up"),
        "{received:?}"
    );
    assert_eq!(received.len(), super::batch::BATCHES_IN_FLIGHT_MAX + 1);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_call_finish() {
    // Stopping the server while a call is in flight lets that call answer, then the
    // server returns and takes no new calls.
    let fake = Fake::slow(Duration::from_millis(500));
    let server = start(fake.clone()).await;
    let client = PeerClient::new("node-a".into());
    let in_flight = tokio::spawn({
        let client = client.clone();
        let addr = server.addr;
        async move { client.call(addr, read("slow"), CALL_TIMEOUT).await }
    });
    fake.started.notified().await;
    server.stop.send(true).unwrap();

    let answer = in_flight.await.unwrap().unwrap();
    assert_eq!(answer, answer_for("node-a", read("slow")));
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("the server returns once drained")
        .unwrap();
    let result = client.call(server.addr, read("k"), CALL_TIMEOUT).await;
    assert!(
        matches!(result, Err(Error::PeerUnreachable { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn keyed_peers_talk_and_strangers_are_unreachable() {
    // A client holding the server's key (on any line) gets answers; a client with
    // another key, or none, never reaches the handler: its call is "never sent".
    let fake = Fake::slow(Duration::ZERO);
    let server = start_keyed(fake.clone(), &[1, 2]).await;
    for keys in [&[1][..], &[2], &[2, 1], &[1, 3]] {
        let answer = keyed_client(keys)
            .call(server.addr, read("k"), CALL_TIMEOUT)
            .await;
        assert!(
            matches!(answer, Ok(PeerResponse::Read(Some(_)))),
            "{keys:?}: {answer:?}"
        );
    }
    for keys in [&[3][..], &[]] {
        let answer = keyed_client(keys)
            .call(server.addr, read("k"), CALL_TIMEOUT)
            .await;
        assert!(
            matches!(
                answer,
                Err(Error::PeerUnreachable { .. }) | Err(Error::Peer { .. })
            ),
            "{keys:?}: {answer:?}"
        );
    }
    assert_eq!(
        fake.received.lock().unwrap().len(),
        4,
        "only keyed calls arrived"
    );
    // A keyed client cannot talk to a plain server either.
    let plain = start(fake.clone()).await;
    let answer = keyed_client(&[1])
        .call(plain.addr, read("k"), CALL_TIMEOUT)
        .await;
    assert!(
        matches!(answer, Err(Error::PeerUnreachable { .. })),
        "{answer:?}"
    );
    assert_eq!(fake.received.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn hostile_connections_never_stall_a_keyed_server() {
    // Garbage, a plain HTTP/2 preface, a half handshake and a silent connection are all
    // refused or left to time out in their own tasks, while a keyed client is served.
    let fake = Fake::slow(Duration::ZERO);
    let server = start_keyed(fake.clone(), &[1]).await;
    let mut hostile = Vec::new();
    for bytes in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        &[0xff; 64],
        &[0, 48, 1, 2, 3],
        &[],
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        hostile.push(stream);
    }
    let answer = keyed_client(&[1])
        .call(server.addr, read("k"), CALL_TIMEOUT)
        .await;
    assert!(
        matches!(answer, Ok(PeerResponse::Read(Some(_)))),
        "{answer:?}"
    );
    // The refused ones are closed by the server: a read sees the end, not a hang.
    for mut stream in hostile.drain(..2) {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(
            CALL_TIMEOUT,
            tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
        )
        .await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }
}
