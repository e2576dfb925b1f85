//! The async [`Client`]: one pooled HTTP client over a list of nodes, with failover.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::{Error, Result, error_chain};
use crate::outcome::{Answer, GetOutcome, WriteOutcome};
use crate::request::{ReadOptions, WriteOptions, encode_key, kv_path};
use crate::security::{BearerToken, tls_client_config};
use crate::wire::{self, ClusterBody, HealthBody, ReplicasBody, RingChangeBody};

/// How a [`Client`] talks to nodes. [`ClientConfig::default`] suits a LAN cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Client-side limit on one attempt at one node (connect, send, read the whole
    /// answer); when it passes, the client moves on to the next node.
    pub request_timeout_ms: u64,
    /// Limit on opening a TCP connection, shorter than `request_timeout_ms` so that
    /// a node that drops SYNs costs little before the client moves on.
    pub connect_timeout_ms: u64,
    /// For this long after a transport failure a node is tried last, so a dead node
    /// does not cost every request a failed attempt.
    pub node_backoff_ms: u64,
    /// Idle pooled connections are closed after this long: keep it below the
    /// server's own cutoff (a node closes a connection idle for its
    /// `--header-timeout-ms`, 10 s by default), or a request may be sent on a
    /// connection just as the server closes it and fail with the outcome unknown.
    pub pool_idle_timeout_ms: u64,
    /// Idle connections kept per node; above the workload's concurrency, or
    /// connections churn.
    pub pool_max_idle_per_node: usize,
    /// Largest answer body read; bigger answers are a [`Error::Decode`]. The default
    /// fits 64 siblings of 1 MiB in base64.
    pub response_bytes_max: usize,
    /// Speak HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1; the nodes must
    /// accept it.
    pub http2_prior_knowledge: bool,
    /// Sent as `Authorization: Bearer …` with every request (nodes with
    /// `--api-token-file` refuse requests without it).
    pub token: Option<BearerToken>,
    /// PEM file of the CA that signed the nodes' certificates; needed for `https://`
    /// node URLs (only it is trusted).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 10_000,
            connect_timeout_ms: 2_000,
            node_backoff_ms: 1_000,
            pool_idle_timeout_ms: 5_000,
            pool_max_idle_per_node: 512,
            response_bytes_max: 128 << 20,
            http2_prior_knowledge: false,
            token: None,
            ca_file: None,
        }
    }
}

/// An async client of a ringkv cluster. Cheap to clone: clones share one connection
/// pool and one rotation over the nodes.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    nodes: Vec<Node>,
    http: HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    config: ClientConfig,
    /// Start index of the next request; rotating it spreads coordinators over nodes.
    next_node: AtomicUsize,
    /// Origin of the `backoff_until_ms` clocks.
    epoch: Instant,
}

/// A node's base URL, parsed once.
#[derive(Debug)]
struct Node {
    /// `http://host:port`, for messages.
    url: String,
    scheme: Scheme,
    authority: Authority,
    /// Milliseconds since `Inner::epoch` until which this node is tried last.
    backoff_until_ms: AtomicU64,
}

/// One request, ready to be sent to any node.
struct Call {
    method: Method,
    path: PathAndQuery,
    context: Option<HeaderValue>,
    body: Bytes,
}

/// Why one attempt at one node produced no answer.
enum Failure {
    Transport(String),
    TimedOut,
    /// The node answered, but with more than `response_bytes_max`: not the node's
    /// fault, so no failover.
    TooLarge,
}

impl Client {
    /// A client of the nodes at `nodes` (`http://127.0.0.1:8001`, or `127.0.0.1:8001`)
    /// with the default [`ClientConfig`].
    pub fn new<I, S>(nodes: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::with_config(nodes, ClientConfig::default())
    }

    /// A client of the nodes at `nodes` with `config`.
    pub fn with_config<I, S>(nodes: I, config: ClientConfig) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes = nodes
            .into_iter()
            .map(|url| parse_node_url(url.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        if nodes.is_empty() {
            return Err(Error::BadUrl("no node URLs given".to_owned()));
        }

        let mut connector = HttpConnector::new();
        // Requests are small and latency-bound: never let Nagle hold them back.
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        // The TLS layer below takes https:// URIs; http:// ones pass through it bare.
        connector.enforce_http(false);
        let https = nodes.iter().any(|node| node.scheme == Scheme::HTTPS);
        let tls = match (&config.ca_file, https) {
            // hyper-rustls sets the ALPN protocols itself.
            (Some(ca_file), _) => tls_client_config(ca_file, &[])?,
            (None, true) => {
                return Err(Error::BadUrl(
                    "https:// node URLs need the CA file that signed the nodes' certificates (--ca-file, RINGKV_CA_FILE)".to_owned(),
                ));
            }
            // No https:// node: a TLS setup that trusts nothing is never used.
            (None, false) => Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Config(format!("TLS: {e}")))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            ),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(Arc::unwrap_or_clone(tls))
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(connector);
        let http = HttpClient::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            // The idle timeout only runs with a pool timer.
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
            .pool_max_idle_per_host(config.pool_max_idle_per_node)
            .http2_only(config.http2_prior_knowledge)
            .build(connector);

        Ok(Self {
            inner: Arc::new(Inner {
                nodes,
                http,
                config,
                next_node: AtomicUsize::new(0),
                epoch: Instant::now(),
            }),
        })
    }

    /// The node base URLs, in the order given.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.inner.nodes.iter().map(|n| n.url.as_str())
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Reads `key`: one value, siblings, or not found.
    pub async fn get(&self, key: &[u8], opts: &ReadOptions) -> Result<GetOutcome> {
        let call = Call::new(
            Method::GET,
            kv_path(key, &opts.query())?,
            None,
            Bytes::new(),
        )?;
        self.send(&call).await?.into_get()
    }

    /// Writes `value` under `key`. With `context` (from an earlier read) the write
    /// supersedes what that read saw; without it, it is concurrent with what is
    /// stored and may become a sibling.
    pub async fn put(
        &self,
        key: &[u8],
        value: Bytes,
        context: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome> {
        let call = Call::new(Method::PUT, kv_path(key, &opts.query())?, context, value)?;
        self.send(&call).await?.into_write()
    }

    /// Deletes `key` by writing a tombstone that supersedes `context`, or without
    /// one, whatever the coordinator's read sees.
    pub async fn delete(
        &self,
        key: &[u8],
        context: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome> {
        let call = Call::new(
            Method::DELETE,
            kv_path(key, &opts.query())?,
            context,
            Bytes::new(),
        )?;
        self.send(&call).await?.into_write()
    }

    /// Asks the node at `node_url` (any node, not only the client's) for its
    /// health; no failover, since the question is about that node.
    pub async fn health(&self, node_url: &str) -> Result<HealthBody> {
        let node = parse_node_url(node_url)?;
        let call = Call::new(Method::GET, "/health".to_owned(), None, Bytes::new())?;
        match self.attempt(&node, &call).await {
            Ok(answer) => answer.into_json(),
            Err(failure) => Err(self.no_answer(vec![node.url], failure, true)),
        }
    }

    /// The cluster's membership, quorum defaults and pending hints, as the first
    /// node to answer sees them.
    pub async fn cluster(&self) -> Result<ClusterBody> {
        let call = Call::new(Method::GET, "/cluster".to_owned(), None, Bytes::new())?;
        self.send(&call).await?.into_json()
    }

    /// `GET /cluster` of the node at `node_url` only (no failover): how that node sees
    /// the cluster, and the hints it holds.
    pub async fn cluster_at(&self, node_url: &str) -> Result<ClusterBody> {
        let node = parse_node_url(node_url)?;
        let call = Call::new(Method::GET, "/cluster".to_owned(), None, Bytes::new())?;
        match self.attempt(&node, &call).await {
            Ok(answer) => answer.into_json(),
            Err(failure) => {
                let timed_out = matches!(failure, Failure::TimedOut);
                Err(self.no_answer(vec![node.url], failure, timed_out))
            }
        }
    }

    /// `POST /admin/leave` to the node at `node_url` only (no failover: the call says
    /// which node leaves).
    pub async fn leave_at(&self, node_url: &str) -> Result<RingChangeBody> {
        let node = parse_node_url(node_url)?;
        let call = Call::new(Method::POST, "/admin/leave".to_owned(), None, Bytes::new())?;
        match self.attempt(&node, &call).await {
            Ok(answer) => answer.into_json_with(StatusCode::ACCEPTED),
            Err(failure) => {
                let timed_out = matches!(failure, Failure::TimedOut);
                Err(self.no_answer(vec![node.url], failure, timed_out))
            }
        }
    }

    /// `POST /admin/remove/{id}`: takes a node that is down for good off the ring.
    pub async fn remove(&self, id: &str) -> Result<RingChangeBody> {
        let path = format!("/admin/remove/{}", encode_key(id.as_bytes())?);
        let call = Call::new(Method::POST, path, None, Bytes::new())?;
        self.send(&call).await?.into_json_with(StatusCode::ACCEPTED)
    }

    /// What each replica in `key`'s preference list holds, read directly, without
    /// a quorum.
    pub async fn replicas(&self, key: &[u8]) -> Result<ReplicasBody> {
        let path = format!("/admin/replicas/{}", encode_key(key)?);
        let call = Call::new(Method::GET, path, None, Bytes::new())?;
        self.send(&call).await?.into_json()
    }

    /// Sends `call` to one node after another, starting at the rotation's next
    /// node and trying nodes in backoff last, until one answers.
    async fn send(&self, call: &Call) -> Result<Answer> {
        let inner = &*self.inner;
        let count = inner.nodes.len();
        let start = inner.next_node.fetch_add(1, Ordering::Relaxed) % count;
        let now_ms = inner.now_ms();
        let mut order: Vec<usize> = (0..count).map(|i| (start + i) % count).collect();
        // Stable, so healthy nodes keep their rotation order ahead of backed-off ones.
        order.sort_by_key(|&i| inner.nodes[i].backoff_until_ms.load(Ordering::Relaxed) > now_ms);

        let mut tried = Vec::with_capacity(count);
        let mut all_timed_out = true;
        let mut last = Failure::TimedOut;
        for i in order {
            let node = &inner.nodes[i];
            match self.attempt(node, call).await {
                Ok(answer) => {
                    if node.backoff_until_ms.load(Ordering::Relaxed) != 0 {
                        node.backoff_until_ms.store(0, Ordering::Relaxed);
                    }
                    return Ok(answer);
                }
                Err(Failure::TooLarge) => {
                    return Err(self.no_answer(tried, Failure::TooLarge, false));
                }
                Err(failure) => {
                    let until_ms = inner.now_ms() + inner.config.node_backoff_ms;
                    node.backoff_until_ms.store(until_ms, Ordering::Relaxed);
                    all_timed_out &= matches!(failure, Failure::TimedOut);
                    tried.push(node.url.clone());
                    last = failure;
                }
            }
        }
        Err(self.no_answer(tried, last, all_timed_out))
    }

    /// One attempt at one node, bounded by the client-side timeout.
    async fn attempt(&self, node: &Node, call: &Call) -> std::result::Result<Answer, Failure> {
        let inner = &*self.inner;
        let uri = Uri::builder()
            .scheme(node.scheme.clone())
            .authority(node.authority.clone())
            .path_and_query(call.path.clone())
            .build()
            .map_err(|e| Failure::Transport(format!("cannot build the URI: {e}")))?;
        let mut request = Request::builder().method(call.method.clone()).uri(uri);
        if let Some(token) = &inner.config.token {
            request = request.header(AUTHORIZATION, token.header_value().clone());
        }
        if let Some(context) = &call.context {
            request = request.header(wire::HEADER_CONTEXT, context.clone());
        }
        let request = request
            .body(Full::new(call.body.clone()))
            .map_err(|e| Failure::Transport(format!("cannot build the request: {e}")))?;

        let exchange = async {
            let response = inner
                .http
                .request(request)
                .await
                .map_err(|e| Failure::Transport(error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, inner.config.response_bytes_max)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        Failure::TooLarge
                    } else {
                        Failure::Transport(format!("reading the body: {}", error_chain(&*e)))
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let timeout = Duration::from_millis(inner.config.request_timeout_ms);
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(Failure::TimedOut))
    }

    fn no_answer(&self, tried: Vec<String>, last: Failure, all_timed_out: bool) -> Error {
        let timeout_ms = self.inner.config.request_timeout_ms;
        match last {
            Failure::TooLarge => Error::Decode(format!(
                "answer larger than {} bytes",
                self.inner.config.response_bytes_max
            )),
            _ if all_timed_out => Error::Timeout { tried, timeout_ms },
            Failure::TimedOut => Error::Unreachable {
                tried,
                last: format!("no answer within {timeout_ms} ms"),
            },
            Failure::Transport(last) => Error::Unreachable { tried, last },
        }
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        // Saturates after 584 million years.
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Call {
    fn new(method: Method, path: String, context: Option<&str>, body: Bytes) -> Result<Self> {
        let path = PathAndQuery::try_from(path)
            .map_err(|e| Error::InvalidInput(format!("bad request path: {e}")))?;
        let context = context
            .map(|c| {
                HeaderValue::from_str(c).map_err(|_| {
                    Error::InvalidInput("the context is not a valid header value".to_owned())
                })
            })
            .transpose()?;
        Ok(Self {
            method,
            path,
            context,
            body,
        })
    }
}

/// Parses `http://host:port` or `https://host:port` (a trailing `/` allowed; no scheme
/// means `http`).
fn parse_node_url(url: &str) -> Result<Node> {
    let bad = |why: &str| Error::BadUrl(format!("{url:?}: {why}"));
    let trimmed = url.trim();
    let full = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let uri: Uri = full.parse().map_err(|e| bad(&format!("{e}")))?;
    let parts = uri.into_parts();
    let scheme = parts.scheme.ok_or_else(|| bad("no scheme"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(bad("only http:// and https:// are supported"));
    }
    let authority = parts.authority.ok_or_else(|| bad("no host"))?;
    if authority.port_u16().is_none() {
        return Err(bad("no port"));
    }
    if parts
        .path_and_query
        .is_some_and(|pq| !matches!(pq.as_str(), "" | "/"))
    {
        return Err(bad("a node URL has no path or query"));
    }
    Ok(Node {
        url: format!("{scheme}://{authority}"),
        scheme,
        authority,
        backoff_until_ms: AtomicU64::new(0),
    })
}

#[cfg(test)]
mod tests;
