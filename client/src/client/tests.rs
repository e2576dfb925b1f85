//! The client against in-process hyper servers on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use http::{HeaderMap, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::*;

/// A request as a test server received it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    /// Path and query, exactly as sent.
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

type Handler = Arc<dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync>;

/// An HTTP/1.1 server answering every request with `handler`; stops on drop.
struct TestServer {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start(
        handler: impl Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Self {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log);
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let handler = Arc::clone(&handler);
                    let log = Arc::clone(&log);
                    async move {
                        let (parts, body) = req.into_parts();
                        let seen = Seen {
                            method: parts.method,
                            target: parts.uri.path_and_query().unwrap().to_string(),
                            headers: parts.headers,
                            body: body.collect().await.unwrap().to_bytes(),
                        };
                        let response = handler(&seen);
                        log.lock().unwrap().push(seen);
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A listener that accepts connections and never answers; counts connections.
struct SilentServer {
    url: String,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SilentServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Self {
            url,
            accepted,
            task,
        }
    }
}

/// The URL of a 127.0.0.1 port with nothing listening (bound, then released).
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn respond(status: u16, headers: &[(&str, &str)], body: &'static [u8]) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(StatusCode::from_u16(status).unwrap());
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(Full::new(Bytes::from_static(body))).unwrap()
}

fn config(request_timeout_ms: u64) -> ClientConfig {
    ClientConfig {
        request_timeout_ms,
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn get_fails_over_from_a_closed_port_to_a_live_node() {
    // Proves a refused connection moves the request to the next node, which answers, with the key escaped in the path.
    let live =
        TestServer::start(|_| respond(200, &[("x-ringkv-context", "ctx-1")], b"hello")).await;
    let client = Client::new([closed_port_url(), live.url.clone()]).unwrap();
    let opts = ReadOptions {
        r: Some(2),
        ..ReadOptions::default()
    };

    let outcome = client.get(b"a/b c\xff", &opts).await.unwrap();

    assert_eq!(
        outcome,
        GetOutcome::Found {
            value: Bytes::from_static(b"hello"),
            context: "ctx-1".to_owned()
        }
    );
    let seen = live.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].target, "/kv/a%2Fb%20c%FF?r=2");
}

#[tokio::test]
async fn a_silent_node_times_out_then_is_tried_last_during_backoff() {
    // Proves a per-attempt timeout fails over, and the timed-out node is skipped first while in backoff.
    let silent = SilentServer::start().await;
    let live = TestServer::start(|_| respond(200, &[("x-ringkv-context", "c")], b"v")).await;
    let client = Client::with_config(
        [silent.url.clone(), live.url.clone()],
        ClientConfig {
            request_timeout_ms: 500,
            node_backoff_ms: 60_000,
            ..ClientConfig::default()
        },
    )
    .unwrap();

    // Rotation starts at node 0 (silent), then node 1, then node 0 again.
    for _ in 0..3 {
        let outcome = client.get(b"k", &ReadOptions::default()).await.unwrap();
        assert_eq!(outcome.context(), Some("c"));
    }

    assert_eq!(live.seen().len(), 3);
    assert_eq!(silent.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn every_node_silent_is_a_timeout() {
    // Proves a client-side timeout on every node is Error::Timeout naming the nodes, not a hang.
    let silent = SilentServer::start().await;
    let client = Client::with_config([silent.url.clone()], config(200)).unwrap();

    let err = client.cluster().await.unwrap_err();

    match err {
        Error::Timeout { tried, timeout_ms } => {
            assert_eq!(tried, vec![silent.url.clone()]);
            assert_eq!(timeout_ms, 200);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn every_node_refusing_is_unreachable() {
    // Proves that when no node accepts a connection every node is tried once and named.
    let (a, b) = (closed_port_url(), closed_port_url());
    let client = Client::new([a.clone(), b.clone()]).unwrap();

    let err = client
        .put(
            b"k",
            Bytes::from_static(b"v"),
            None,
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();

    match err {
        Error::Unreachable { tried, last } => {
            assert_eq!(tried, [a, b]);
            assert!(!last.is_empty());
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn an_error_answer_is_returned_without_failover() {
    // Proves a 409 JSON error surfaces as Error::Api and the next node is never asked.
    let refusing = TestServer::start(|_| {
        respond(
            409,
            &[("content-type", "application/json")],
            br#"{"error":"too_many_siblings","message":"64 siblings","max_siblings":64}"#,
        )
    })
    .await;
    let other = TestServer::start(|_| respond(204, &[], b"")).await;
    let client = Client::new([refusing.url.clone(), other.url.clone()]).unwrap();

    let err = client
        .put(
            b"k",
            Bytes::from_static(b"v"),
            None,
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();

    assert_eq!(err.status(), Some(409));
    assert_eq!(err.code(), Some("too_many_siblings"));
    match err {
        Error::Api { body, .. } => assert_eq!(body.max_siblings, Some(64)),
        other => panic!("expected Api, got {other:?}"),
    }
    assert_eq!(refusing.seen().len(), 1);
    assert!(other.seen().is_empty());
}

#[tokio::test]
async fn put_sends_value_context_and_options_and_reads_write_headers() {
    // Proves a PUT carries body, context header and query, and its answer's headers become the WriteOutcome.
    let server = TestServer::start(|_| {
        respond(
            204,
            &[
                ("x-ringkv-context", "ctx-2"),
                ("x-ringkv-acks", "n1,n4"),
                ("x-ringkv-hinted", "n2->n4"),
            ],
            b"",
        )
    })
    .await;
    let client = Client::new([server.url.clone()]).unwrap();
    let opts = WriteOptions {
        w: Some(2),
        sync: true,
        ..WriteOptions::default()
    };

    let outcome = client
        .put(
            b"user:1",
            Bytes::from_static(b"\x00\x01"),
            Some("ctx-1"),
            &opts,
        )
        .await
        .unwrap();

    assert_eq!(outcome.context.as_deref(), Some("ctx-2"));
    assert_eq!(outcome.acks, ["n1", "n4"]);
    assert_eq!(outcome.hinted, [("n2".to_owned(), "n4".to_owned())]);
    let seen = server.seen();
    assert_eq!(seen[0].method, Method::PUT);
    assert_eq!(seen[0].target, "/kv/user%3A1?w=2&sync=true");
    assert_eq!(seen[0].headers[wire::HEADER_CONTEXT], "ctx-1");
    assert_eq!(seen[0].body, Bytes::from_static(b"\x00\x01"));
}

#[tokio::test]
async fn delete_and_missing_get_use_their_statuses() {
    // Proves DELETE answers 204 as a WriteOutcome and a 404 GET is NotFound with the tombstone's context.
    let server = TestServer::start(|seen| match seen.method {
        Method::DELETE => respond(204, &[("x-ringkv-acks", "n1,n2")], b""),
        _ => respond(
            404,
            &[("x-ringkv-context", "tomb")],
            br#"{"error":"not_found","message":"no such key"}"#,
        ),
    })
    .await;
    let client = Client::new([server.url.clone()]).unwrap();

    let deleted = client
        .delete(b"k", None, &WriteOptions::default())
        .await
        .unwrap();
    let read = client.get(b"k", &ReadOptions::default()).await.unwrap();

    assert_eq!(deleted.acks, ["n1", "n2"]);
    assert_eq!(
        read,
        GetOutcome::NotFound {
            context: Some("tomb".to_owned())
        }
    );
    let seen = server.seen();
    assert_eq!(seen[0].method, Method::DELETE);
    assert!(!seen[0].headers.contains_key(wire::HEADER_CONTEXT));
}

#[tokio::test]
async fn json_endpoints_decode_their_bodies() {
    // Proves /health, /cluster and /admin/replicas answers decode into the wire types.
    let server = TestServer::start(|seen| match seen.target.as_str() {
        "/health" => respond(200, &[], br#"{"status":"ok","node":"n1","members_alive":3}"#),
        "/cluster" => respond(
            200,
            &[],
            br#"{"node":"n1","n":3,"r":2,"w":2,
                "members":[{"id":"n1","http":"127.0.0.1:8001","cluster":"127.0.0.1:7001","state":"alive"}],
                "hints":{"pending":{"n3":12}}}"#,
        ),
        "/admin/replicas/a%2Fb" => respond(
            200,
            &[],
            br#"{"key":"a/b","preference_list":["n1"],"replicas":[{"node":"n1","state":"down","error":"unreachable"}]}"#,
        ),
        _ => respond(404, &[], b"no route"),
    })
    .await;
    let client = Client::new([closed_port_url()]).unwrap();

    let health = client.health(&server.url).await.unwrap();
    let client = Client::new([server.url.clone()]).unwrap();
    let cluster = client.cluster().await.unwrap();
    let replicas = client.replicas(b"a/b").await.unwrap();

    assert_eq!(health.members_alive, 3);
    assert_eq!(cluster.members[0].cluster, "127.0.0.1:7001");
    assert_eq!(cluster.hints.pending["n3"], 12);
    assert_eq!(replicas.replicas[0].error.as_deref(), Some("unreachable"));
}

#[tokio::test]
async fn an_oversized_answer_is_a_decode_error_without_failover() {
    // Proves response_bytes_max bounds what the client reads, and hitting it does not retry elsewhere.
    let big = TestServer::start(|_| respond(200, &[("x-ringkv-context", "c")], &[b'x'; 100])).await;
    let other = TestServer::start(|_| respond(200, &[("x-ringkv-context", "c")], b"v")).await;
    let client = Client::with_config(
        [big.url.clone(), other.url.clone()],
        ClientConfig {
            response_bytes_max: 10,
            ..ClientConfig::default()
        },
    )
    .unwrap();

    let err = client.get(b"k", &ReadOptions::default()).await.unwrap_err();

    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    assert!(other.seen().is_empty());
}

#[tokio::test]
async fn a_context_that_is_not_a_header_value_is_refused_before_sending() {
    // Proves an invalid context is InvalidInput and never reaches a node.
    let server = TestServer::start(|_| respond(204, &[], b"")).await;
    let client = Client::new([server.url.clone()]).unwrap();

    let err = client
        .put(
            b"k",
            Bytes::new(),
            Some("bad\nctx"),
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();

    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(server.seen().is_empty());
}

#[test]
fn node_urls_are_checked() {
    // Proves only http(s)://host:port (optionally without scheme or with a trailing
    // slash) is accepted, and that https:// needs a CA file.
    let ok = parse_node_url("http://127.0.0.1:8001/").unwrap();
    assert_eq!(ok.url, "http://127.0.0.1:8001");
    assert_eq!(
        parse_node_url("127.0.0.1:8002").unwrap().url,
        "http://127.0.0.1:8002"
    );
    assert_eq!(
        parse_node_url("https://127.0.0.1:8003").unwrap().url,
        "https://127.0.0.1:8003"
    );
    let err = Client::new(["https://127.0.0.1:8003"]).unwrap_err();
    assert!(
        matches!(&err, Error::BadUrl(why) if why.contains("--ca-file")),
        "{err:?}"
    );
    for bad in [
        "ftp://127.0.0.1:8001",
        "http://127.0.0.1",
        "http://127.0.0.1:8001/kv",
        "http://127.0.0.1:8001?x=1",
        "",
    ] {
        assert!(
            matches!(parse_node_url(bad), Err(Error::BadUrl(_))),
            "{bad:?} was accepted"
        );
    }
    let none: [&str; 0] = [];
    assert!(matches!(Client::new(none), Err(Error::BadUrl(_))));
}
