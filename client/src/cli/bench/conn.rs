//! One keep-alive HTTP/1.1 connection per worker.
//!
//! A [`Conn`] is hyper's bare connection API (`client::conn::http1`) over one
//! tokio `TcpStream`: no pool, no per-request lookup, one request in flight. The
//! connection's driver future is polled in the worker's own task, beside the
//! exchange, instead of in a spawned task, so a request costs no cross-task
//! wake-ups. Any failure or timeout drops the connection, and the next request
//! opens a new one to the same node: an HTTP/1.1 connection whose exchange broke
//! off is in an unknown state. The one retry is a request that never left
//! because the node had closed the idle connection (the keep-alive race).
//!
//! A `Conn` knows no protocol: it sends a request and reports the status, the
//! headers and, when asked, whether the body holds a given byte string;
//! `requests` builds the requests and judges the answers.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use ringkv_client::BearerToken;
use ringkv_client::error::error_chain;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// What the bench needs for a secured cluster: the API token and, for `https://`
/// nodes, the TLS setup that trusts their CA.
#[derive(Debug, Clone, Default)]
pub struct Secured {
    pub token: Option<BearerToken>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// One node: its URL as given, the address to connect to and its `Host` header.
#[derive(Debug)]
pub struct Target {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    addr: SocketAddr,
    host: HeaderValue,
    /// `Authorization` of every request, with a token.
    auth: Option<HeaderValue>,
    /// For `https://`: the TLS connector and the name the certificate must carry.
    tls: Option<TlsTarget>,
}

/// How to open TLS to one node.
#[derive(Clone)]
struct TlsTarget {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsTarget({:?})", self.name)
    }
}

impl Target {
    /// The `Host` header of requests to this node.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// The `Authorization` header of requests to this node, if any.
    pub fn auth(&self) -> Option<&HeaderValue> {
        self.auth.as_ref()
    }

    /// A target at `addr` (`127.0.0.1:9`) without resolving anything.
    #[cfg(test)]
    pub fn for_tests(addr: &str) -> Self {
        Self {
            url: format!("http://{addr}"),
            addr: addr.parse().expect("a test address is an IP and a port"),
            host: HeaderValue::from_str(addr).expect("an address is a valid header value"),
            auth: None,
            tls: None,
        }
    }

    /// Parses `http(s)://host:port` (or `host:port`) and resolves the host once.
    pub async fn resolve(url: &str, secured: &Secured) -> anyhow::Result<Self> {
        let (scheme, authority) = parse_node_url(url)?;
        let addr = tokio::net::lookup_host(authority.as_str())
            .await
            .with_context(|| format!("resolving {url}"))?
            .next()
            .with_context(|| format!("{url} resolves to no address"))?;
        let tls = if scheme == Scheme::HTTPS {
            let config = secured.tls.clone().with_context(|| {
                format!("{url}: https:// needs the nodes' CA (--ca-file, RINGKV_CA_FILE)")
            })?;
            let name = ServerName::try_from(authority.host().to_owned())
                .with_context(|| format!("{url}: not a name a certificate can carry"))?;
            Some(TlsTarget {
                connector: TlsConnector::from(config),
                name,
            })
        } else {
            None
        };
        Ok(Self {
            url: format!("{scheme}://{authority}"),
            addr,
            host: HeaderValue::from_str(authority.as_str())
                .context("the host is not a valid header value")?,
            auth: secured.token.as_ref().map(|t| t.header_value().clone()),
            tls,
        })
    }
}

/// The scheme and authority of a node URL: `http://` or `https://`, with a port, no
/// path.
fn parse_node_url(url: &str) -> anyhow::Result<(Scheme, Authority)> {
    let trimmed = url.trim();
    let full = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let uri: Uri = full
        .parse()
        .with_context(|| format!("bad node URL {url:?}"))?;
    let parts = uri.into_parts();
    let scheme = match parts.scheme {
        Some(scheme) if scheme == Scheme::HTTP || scheme == Scheme::HTTPS => scheme,
        _ => bail!("bad node URL {url:?}: only http:// and https:// are supported"),
    };
    let authority = parts
        .authority
        .with_context(|| format!("bad node URL {url:?}: no host"))?;
    if authority.port_u16().is_none() {
        bail!("bad node URL {url:?}: no port");
    }
    if parts
        .path_and_query
        .is_some_and(|pq| !matches!(pq.as_str(), "" | "/"))
    {
        bail!("bad node URL {url:?}: a node URL has no path");
    }
    Ok((scheme, authority))
}

/// What a request got back, as far as the bench cares.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// The response headers (their values share hyper's read buffer: copy one
    /// to keep it).
    pub headers: HeaderMap,
    /// Whether the body contains the byte string the sender asked about.
    pub body_has: bool,
}

/// Why a request got no answer. Every variant drops the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be opened (the worker backs off before retrying).
    Connect(String),
    /// The connection failed while sending or reading.
    Transport(String),
    /// No whole answer within the client timeout.
    Timeout,
}

/// The request body type: a whole body in memory (empty for GET).
pub type Body = Full<Bytes>;

type Driver = Pin<Box<Connection<TokioIo<BenchIo>, Body>>>;

/// A bench connection: bare TCP or TLS over it.
#[derive(Debug)]
enum BenchIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for BenchIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BenchIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BenchIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BenchIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BenchIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BenchIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BenchIo::Plain(s) => Pin::new(s).poll_flush(cx),
            BenchIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BenchIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BenchIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An open connection: the request handle and the future that moves its bytes
/// (`None` once it ended, which drops it).
type Live = (SendRequest<Body>, Option<Driver>);

/// A worker's connection to its node; see the module docs.
#[derive(Debug)]
pub struct Conn {
    target_addr: SocketAddr,
    tls: Option<TlsTarget>,
    /// The client-side limit on connecting, or on one request's whole exchange.
    timeout: Duration,
    live: Option<Live>,
}

/// How one attempt at an exchange failed.
enum Attempt {
    /// The request never left: the connection had closed (a node ends idle
    /// keep-alive connections). Safe to send again on a new connection.
    Unsent(Box<Request<Body>>, Failure),
    /// The request may have reached the node.
    Failed(Failure),
}

impl Conn {
    /// A connection to `target` (opened by [`Conn::connect`] or the first send).
    pub fn new(target: &Target, timeout: Duration) -> Self {
        Self {
            target_addr: target.addr,
            tls: target.tls.clone(),
            timeout,
            live: None,
        }
    }

    /// The client-side timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Opens the connection now, so that setup fails early on an unreachable node.
    pub async fn connect(&mut self) -> Result<(), Failure> {
        if self.live.is_none() {
            let live =
                tokio::time::timeout(self.timeout, open(self.target_addr, self.tls.as_ref()))
                    .await
                    .unwrap_or(Err(Failure::Connect(format!(
                        "no connection within {:?}",
                        self.timeout
                    ))))?;
            self.live = Some(live);
        }
        Ok(())
    }

    /// Sends `request` and reads its whole answer, connecting first if needed;
    /// with `find`, the body is gathered and searched for that byte string. A request that a
    /// reused connection closed under before it went out is sent once more on a
    /// new connection, within the same timeout.
    pub async fn send(
        &mut self,
        request: Request<Body>,
        find: Option<&'static [u8]>,
    ) -> Result<Answer, Failure> {
        let timeout = self.timeout;
        let attempts = async {
            let reused = self.live.is_some();
            match self.exchange(request, find).await {
                Err(Attempt::Unsent(request, _)) if reused => self
                    .exchange(*request, find)
                    .await
                    .map_err(Attempt::into_failure),
                other => other.map_err(Attempt::into_failure),
            }
        };
        let result = tokio::time::timeout(timeout, attempts)
            .await
            .unwrap_or(Err(Failure::Timeout));
        if result.is_err() {
            self.live = None;
        }
        result
    }

    /// One attempt on the current connection (opened first if there is none).
    /// The connection is dropped if it ended or the attempt failed.
    async fn exchange(
        &mut self,
        request: Request<Body>,
        find: Option<&'static [u8]>,
    ) -> Result<Answer, Attempt> {
        if self.live.is_none() {
            self.live = Some(
                open(self.target_addr, self.tls.as_ref())
                    .await
                    .map_err(Attempt::Failed)?,
            );
        }
        let (result, ended) = {
            let (sender, driver) = self.live.as_mut().expect("opened above");
            let exchange = async {
                if let Err(e) = sender.ready().await {
                    return Err(Attempt::Unsent(Box::new(request), transport(e)));
                }
                let response = match sender.try_send_request(request).await {
                    Ok(response) => response,
                    Err(mut e) => {
                        let failure = Failure::Transport(error_chain(e.error()));
                        return Err(match e.take_message() {
                            Some(request) => Attempt::Unsent(Box::new(request), failure),
                            None => Attempt::Failed(failure),
                        });
                    }
                };
                let (parts, mut body) = response.into_parts();
                let failed = |e| Attempt::Failed(transport(e));
                let mut body_has = false;
                if let Some(needle) = find {
                    let bytes = body.collect().await.map_err(failed)?.to_bytes();
                    body_has = bytes.windows(needle.len()).any(|w| w == needle);
                } else {
                    // Drain without gathering: the bytes are not needed.
                    while let Some(frame) = body.frame().await {
                        frame.map_err(failed)?;
                    }
                }
                Ok(Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body_has,
                })
            };
            tokio::pin!(exchange);
            let result = loop {
                tokio::select! {
                    biased;
                    result = &mut exchange => break result,
                    // The driver moves the bytes and ends with the connection. Dropping
                    // it then hands back a request still queued (as unsent) and ends
                    // the answer's body, so the exchange finishes either way: with
                    // the whole answer if it had arrived, or with an error.
                    _ = drive(driver) => *driver = None,
                }
            };
            (result, driver.is_none())
        };
        if ended || result.is_err() {
            self.live = None;
        }
        result
    }
}

impl Attempt {
    fn into_failure(self) -> Failure {
        match self {
            Attempt::Unsent(_, failure) | Attempt::Failed(failure) => failure,
        }
    }
}

/// Polls the connection's driver, or waits forever once it has ended.
async fn drive(driver: &mut Option<Driver>) -> hyper::Result<()> {
    match driver {
        Some(driver) => driver.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Opens a TCP connection to `addr`, TLS over it for `https://`, and does the HTTP/1.1
/// handshake.
async fn open(addr: SocketAddr, tls: Option<&TlsTarget>) -> Result<Live, Failure> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::Connect(format!("connecting to {addr}: {e}")))?;
    // Small latency-bound requests: never let Nagle hold one back.
    stream
        .set_nodelay(true)
        .map_err(|e| Failure::Connect(e.to_string()))?;
    let io = match tls {
        None => BenchIo::Plain(stream),
        Some(tls) => BenchIo::Tls(Box::new(
            tls.connector
                .connect(tls.name.clone(), stream)
                .await
                .map_err(|e| Failure::Connect(format!("TLS with {addr}: {e}")))?,
        )),
    };
    let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Connect(error_chain(&e)))?;
    Ok((sender, Some(Box::pin(driver))))
}

fn transport(e: impl std::error::Error + 'static) -> Failure {
    Failure::Transport(error_chain(&e))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use http::header::HOST;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    fn get(target: &Target) -> Request<Body> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = Uri::from_static("/kv/k");
        request.headers_mut().insert(HOST, target.host().clone());
        request
    }

    #[test]
    fn node_urls_need_http_a_host_and_a_port() {
        // Proves the accepted URL forms and the refusals.
        assert_eq!(
            parse_node_url("http://127.0.0.1:8001/").unwrap().1,
            "127.0.0.1:8001"
        );
        assert_eq!(
            parse_node_url("localhost:9000").unwrap().1,
            "localhost:9000"
        );
        assert_eq!(parse_node_url("https://n1:8001").unwrap().0, Scheme::HTTPS);
        assert!(parse_node_url("ftp://127.0.0.1:8001").is_err());
        assert!(parse_node_url("http://127.0.0.1").is_err());
        assert!(parse_node_url("http://127.0.0.1:8001/kv").is_err());
    }

    #[tokio::test]
    async fn a_request_on_a_connection_the_node_closed_while_idle_is_resent() {
        // Proves the keep-alive race is no error: when the node closed the idle
        // connection, the unsent request goes out again on a new connection.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    // One GET, one answer with keep-alive implied, then a silent close.
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.ends_with(b"\r\n\r\n") {
                        let n = stream.read(&mut buf).await.unwrap();
                        assert!(n > 0, "the client closed first");
                        request.extend_from_slice(&buf[..n]);
                    }
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx")
                        .await
                        .unwrap();
                    // Close after the client has finished its exchange, so that it
                    // finds out only when it sends the next request.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                });
            }
        });
        let target = Target::resolve(&format!("http://{addr}"), &Secured::default())
            .await
            .unwrap();
        let mut conn = Conn::new(&target, Duration::from_secs(5));
        for _ in 0..3 {
            let answer = conn.send(get(&target), None).await.unwrap();
            assert_eq!(answer.status, StatusCode::OK);
            // Let the node's close arrive before the next request.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(accepted.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure() {
        // Proves connecting to a closed port fails fast as Connect (which makes the
        // worker back off), not as a timeout.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let target = Target::resolve(&format!("http://{addr}"), &Secured::default())
            .await
            .unwrap();
        let mut conn = Conn::new(&target, Duration::from_secs(5));
        let failure = conn.send(get(&target), None).await.unwrap_err();
        assert!(matches!(failure, Failure::Connect(_)), "{failure:?}");
    }
}
