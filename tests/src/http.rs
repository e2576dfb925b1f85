//! A small HTTP client for tests: exact status codes, headers and body bytes.
//!
//! It sits on hyper-util's pooled legacy client and never interprets an answer (no
//! redirects on 300, no error mapping), so tests see what the server sent. [`Api`]
//! adds the calls of README.md#http-api for one node; [`crate::raw`] covers what a
//! well-behaved client cannot send (chunked bodies over a limit, early answers).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use ringkv_client::wire::{self, ErrorBody};
use serde::de::DeserializeOwned;

/// Bytes that stay literal in a key's path segment: RFC 3986 unreserved characters.
const KEY_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes raw key bytes for `/kv/{key}` or a query value: every byte
/// outside `A-Z a-z 0-9 - . _ ~` becomes `%XX`.
pub fn encode_key(key: &[u8]) -> String {
    percent_encoding::percent_encode(key, KEY_ENCODE_SET).to_string()
}

/// Default bound on one request, connect to last body byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A request body: the whole of it, or chunks sent without a `Content-Length`.
pub type ReqBody = BoxBody<Bytes, Infallible>;

/// A body with an exact length (hyper sends `Content-Length`).
pub fn full(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into()).boxed()
}

/// An empty body.
pub fn empty() -> ReqBody {
    full(Bytes::new())
}

/// A body of unknown length: hyper sends it with `Transfer-Encoding: chunked`.
pub fn chunked(chunks: impl IntoIterator<Item = Bytes>) -> ReqBody {
    ChunkedBody {
        chunks: chunks.into_iter().collect(),
    }
    .boxed()
}

/// Yields its chunks one frame each and reports no size hint, so hyper cannot
/// compute a `Content-Length`.
#[derive(Debug)]
struct ChunkedBody {
    chunks: VecDeque<Bytes>,
}

impl Body for ChunkedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

/// One answer, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// `X-Ringkv-Context`.
    pub fn context(&self) -> Option<String> {
        self.header(wire::HEADER_CONTEXT)
    }

    /// `X-Ringkv-Acks`.
    pub fn acks(&self) -> Option<String> {
        self.header(wire::HEADER_ACKS)
    }

    /// `X-Ringkv-Hinted`.
    pub fn hinted(&self) -> Option<String> {
        self.header(wire::HEADER_HINTED)
    }

    /// `X-Ringkv-Context`, which must be present and non-empty.
    #[track_caller]
    pub fn expect_context(&self) -> String {
        match self.context() {
            Some(c) if !c.is_empty() => c,
            _ => panic!(
                "answer {} has no {} header: {self}",
                self.status,
                wire::HEADER_CONTEXT
            ),
        }
    }

    /// The body as (lossy) text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Panics with the whole answer unless the status is `status`.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status, answer: {self}");
        self
    }

    /// The body parsed as JSON into `T`; panics with the body on failure.
    #[track_caller]
    pub fn json<T: DeserializeOwned>(&self) -> T {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!(
                "answer body is not the JSON {} ({e}): {self}",
                std::any::type_name::<T>()
            ),
        }
    }

    /// Asserts a 300 answer of `GET /kv/{key}` (`{"key","context","siblings"}`) and
    /// returns its body with the siblings decoded from base64 and sorted.
    #[track_caller]
    pub fn assert_siblings(&self) -> (wire::SiblingsBody, Vec<Vec<u8>>) {
        self.assert_status(300);
        let body: wire::SiblingsBody = self.json();
        assert!(
            !body.context.is_empty(),
            "300 answer with an empty context: {self}"
        );
        let mut values: Vec<Vec<u8>> = body.siblings.iter().map(|s| unb64(s)).collect();
        values.sort();
        (body, values)
    }

    /// Asserts an error answer as README.md#http-api describes it: the status, a JSON
    /// body with `error` = `code` and a non-empty `message`. Returns the body as
    /// JSON so callers can check the extra fields.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> serde_json::Value {
        let body = self.assert_error_status(status);
        assert_eq!(body["error"], code, "wrong error code, answer: {self}");
        body
    }

    /// Like [`Self::assert_error`] for answers whose code README.md#http-api leaves open:
    /// checks the status and that the body is a well-formed error.
    #[track_caller]
    pub fn assert_error_status(&self, status: u16) -> serde_json::Value {
        self.assert_status(status);
        let body: serde_json::Value = self.json();
        let parsed: ErrorBody = self.json();
        assert!(
            !parsed.error.is_empty(),
            "error answer has an empty `error`: {self}"
        );
        assert!(
            !parsed.message.is_empty(),
            "error answer has an empty `message`: {self}"
        );
        body
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        for (name, value) in &self.headers {
            write!(
                f,
                "\n  {name}: {}",
                String::from_utf8_lossy(value.as_bytes())
            )?;
        }
        const SHOWN_BYTES_MAX: usize = 2000;
        let text = self.text();
        if text.len() > SHOWN_BYTES_MAX {
            let mut cut = SHOWN_BYTES_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            write!(f, "\n\n{}… ({} bytes)", &text[..cut], self.body.len())
        } else {
            write!(f, "\n\n{text}")
        }
    }
}

/// The API token every [`HttpClient`] sends when this variable is set
/// (`compose/cluster chaos` sets it for the compose cluster, whose nodes need one).
pub const TOKEN_ENV: &str = "RINGKV_TEST_TOKEN";

/// A pooled HTTP/1 client; clones share the pool.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, ReqBody>,
    timeout: Duration,
    /// `Authorization` of every request, from [`TOKEN_ENV`] or [`HttpClient::with_token`].
    auth: Option<HeaderValue>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client whose requests time out after [`REQUEST_TIMEOUT`].
    ///
    /// Connection tasks run on the Tokio runtime of the first request, so make one
    /// client per test (runtime), not one per process.
    pub fn new() -> Self {
        Self::with_timeout(REQUEST_TIMEOUT)
    }

    /// A client whose requests time out after `timeout`.
    pub fn with_timeout(timeout: Duration) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            // Below the nodes' idle cutoff (`--header-timeout-ms`, 10 s), so that a
            // request is never sent on a connection the node is closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .build_http();
        let auth = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {}", t.trim())).ok());
        Self {
            client,
            timeout,
            auth,
        }
    }

    /// The same client sending `Authorization: Bearer <token>` with every request
    /// (for nodes started with `--api-token-file`).
    pub fn with_token(mut self, token: &str) -> Self {
        self.auth = Some(
            HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is a header value"),
        );
        self
    }

    /// Sends one request and reads the whole answer. `url` is absolute
    /// (`http://127.0.0.1:8001/kv/a`); `headers` are added as given.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> anyhow::Result<Response> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(url)
            .body(body)
            .with_context(|| format!("building {method} {url}"))?;
        let own_auth = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        if let Some(auth) = self.auth.as_ref().filter(|_| !own_auth) {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, auth.clone());
        }
        for (name, value) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        let call = async {
            let resp = self.client.request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok(Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(anyhow!("{method} {url}: {e:#}")),
            Err(_) => bail!("{method} {url}: no answer within {:?}", self.timeout),
        }
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> anyhow::Result<Response> {
        self.request(Method::GET, url, &[], empty()).await
    }
}

/// The HTTP API of one node (README.md#http-api), on a base URL such as
/// `http://127.0.0.1:8001`. Cheap to clone; clones share the connection pool.
///
/// The calls are test helpers: they return whatever the node answered, and panic
/// (naming the request) when there is no answer at all, so a failing test unwinds
/// through its [`crate::NodeProcess`] and keeps its data dir and log. The `try_`
/// calls return the transport error instead, for tests that expect one.
///
/// Every `query` argument is a raw query string without the `?` (`"w=1&sync=true"`),
/// or `""` for none.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: HttpClient,
}

impl Api {
    pub fn new(base: impl Into<String>, http: HttpClient) -> Self {
        Self {
            base: base.into(),
            http,
        }
    }

    /// `http://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// `base` + `path_and_query` (which starts with `/`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    /// Any request to this node; `Err` if no answer arrived.
    pub async fn try_request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> anyhow::Result<Response> {
        self.http
            .request(method, &self.url(path_and_query), headers, body)
            .await
    }

    /// Any request to this node; panics if no answer arrived.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> Response {
        match self
            .try_request(method, path_and_query, headers, body)
            .await
        {
            Ok(resp) => resp,
            Err(e) => panic!("no answer from {}: {e:#}", self.base),
        }
    }

    /// `GET path_and_query`.
    pub async fn get_path(&self, path_and_query: &str) -> Response {
        self.request(Method::GET, path_and_query, &[], empty())
            .await
    }

    /// `GET /metrics`, summed for `name` over all its labels (0 if absent); panics
    /// unless it answers 200.
    pub async fn metric(&self, name: &str) -> f64 {
        let resp = self.get_path("/metrics").await;
        resp.assert_status(200);
        metric_sum(&resp.text(), name)
    }

    /// `/kv/{key}` with `query` appended when non-empty.
    pub fn kv_path(key: &[u8], query: &str) -> String {
        with_query(format!("/kv/{}", encode_key(key)), query)
    }

    /// Blind `PUT /kv/{key}` (no context): the value becomes a sibling of what is stored.
    pub async fn put(&self, key: &[u8], value: impl Into<Bytes>) -> Response {
        self.put_with(key, value, None, "").await
    }

    /// `PUT /kv/{key}?query` with an optional `X-Ringkv-Context`.
    pub async fn put_with(
        &self,
        key: &[u8],
        value: impl Into<Bytes>,
        context: Option<&str>,
        query: &str,
    ) -> Response {
        let headers = context_header(context);
        self.request(
            Method::PUT,
            &Self::kv_path(key, query),
            &headers,
            full(value),
        )
        .await
    }

    /// `GET /kv/{key}`.
    pub async fn get(&self, key: &[u8]) -> Response {
        self.get_with(key, "").await
    }

    /// `GET /kv/{key}?query`.
    pub async fn get_with(&self, key: &[u8], query: &str) -> Response {
        self.get_path(&Self::kv_path(key, query)).await
    }

    /// `DELETE /kv/{key}` without a context.
    pub async fn delete(&self, key: &[u8]) -> Response {
        self.delete_with(key, None, "").await
    }

    /// `DELETE /kv/{key}?query` with an optional `X-Ringkv-Context`.
    pub async fn delete_with(&self, key: &[u8], context: Option<&str>, query: &str) -> Response {
        let headers = context_header(context);
        self.request(
            Method::DELETE,
            &Self::kv_path(key, query),
            &headers,
            empty(),
        )
        .await
    }

    /// `PUT /kv?query` with a JSON body, sent as given (so tests can send bad JSON).
    pub async fn json_put_raw(&self, body: impl Into<Bytes>, query: &str) -> Response {
        self.request(
            Method::PUT,
            &with_query("/kv".to_owned(), query),
            &[("content-type", "application/json")],
            full(body),
        )
        .await
    }

    /// `PUT /kv` with `{"data":{"key":key,"value":value}}` and, if given, `"context"`.
    pub async fn json_put(&self, key: &str, value: &str, context: Option<&str>) -> Response {
        let mut body = serde_json::json!({"data": {"key": key, "value": value}});
        if let Some(ctx) = context {
            body["context"] = serde_json::Value::from(ctx);
        }
        self.json_put_raw(body.to_string(), "").await
    }

    /// `GET /kv?key=…` (+ `&query`).
    pub async fn json_get(&self, key: &[u8], query: &str) -> Response {
        self.get_path(&json_path(key, query)).await
    }

    /// `DELETE /kv?key=…` (+ `&query`).
    pub async fn json_delete(&self, key: &[u8], query: &str) -> Response {
        self.request(Method::DELETE, &json_path(key, query), &[], empty())
            .await
    }

    /// `GET /health`, parsed; `Err` unless the answer is a 200 with a health body.
    pub async fn try_health(&self) -> anyhow::Result<wire::HealthBody> {
        let resp = self
            .try_request(Method::GET, "/health", &[], empty())
            .await?;
        if resp.status != 200 {
            bail!("GET /health answered {resp}");
        }
        serde_json::from_slice(&resp.body).with_context(|| format!("{resp}"))
    }

    /// `GET /health`, parsed; panics unless it answers 200.
    pub async fn health(&self) -> wire::HealthBody {
        self.get_path("/health").await.assert_status(200).json()
    }

    /// `GET /admin/replicas/{key}`, parsed; panics unless it answers 200.
    pub async fn replicas(&self, key: &[u8]) -> wire::ReplicasBody {
        let path = format!("/admin/replicas/{}", encode_key(key));
        self.get_path(&path).await.assert_status(200).json()
    }

    /// `GET /cluster`, parsed; panics unless it answers 200.
    pub async fn cluster(&self) -> wire::ClusterBody {
        self.get_path("/cluster").await.assert_status(200).json()
    }
}

fn context_header(context: Option<&str>) -> Vec<(&'static str, &str)> {
    context
        .map(|c| vec![(wire::HEADER_CONTEXT, c)])
        .unwrap_or_default()
}

fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else if path.contains('?') {
        format!("{path}&{query}")
    } else {
        format!("{path}?{query}")
    }
}

fn json_path(key: &[u8], query: &str) -> String {
    with_query(format!("/kv?key={}", encode_key(key)), query)
}

/// The given values as owned byte strings, sorted: compare with sibling sets.
pub fn sorted(values: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = values.iter().map(|v| v.to_vec()).collect();
    out.sort();
    out
}

/// Standard base64 (padded), the encoding of values in JSON bodies.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard base64; panics with the input on failure.
#[track_caller]
pub fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(v) => v,
        Err(e) => panic!("not standard base64 ({e}): {text:?}"),
    }
}

/// Polls every node's `/health` until each sees `expected` members alive; `Err` with
/// the laggards at `within`.
pub async fn wait_members_alive(
    apis: &[(String, Api)],
    expected: usize,
    within: Duration,
) -> Result<(), String> {
    let lagging = |h: &wire::HealthBody| {
        (h.members_alive != expected).then(|| format!("{} alive", h.members_alive))
    };
    wait_health(apis, within, Duration::from_millis(250), lagging)
        .await
        .map_err(|laggards| {
            format!("members_alive did not reach {expected} within {within:?}: {laggards}")
        })
}

/// Polls every node's `/health` until each has a committed ring of `members` nodes and
/// no membership change in flight (a new cluster forms its ring in a few layout
/// exchanges after gossip connects); `Err` with the laggards at `within`.
pub async fn wait_ring(
    apis: &[(String, Api)],
    members: usize,
    within: Duration,
) -> Result<(), String> {
    let lagging = |h: &wire::HealthBody| {
        (h.ring_members != members || h.change_in_flight).then(|| {
            format!(
                "ring of {}, change in flight: {}",
                h.ring_members, h.change_in_flight
            )
        })
    };
    wait_health(apis, within, Duration::from_millis(100), lagging)
        .await
        .map_err(|laggards| {
            format!("the ring did not settle at {members} members within {within:?}: {laggards}")
        })
}

/// Polls every node's `/health` every `poll` until `lagging` finds nothing to say of
/// any of them; `Err` with each laggard's word (or its error) at `within`.
async fn wait_health(
    apis: &[(String, Api)],
    within: Duration,
    poll: Duration,
    lagging: impl Fn(&wire::HealthBody) -> Option<String>,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let mut laggards = Vec::new();
        for (id, api) in apis {
            match api.try_health().await {
                Ok(h) => laggards.extend(lagging(&h).map(|why| format!("{id}: {why}"))),
                Err(e) => laggards.push(format!("{id}: {e:#}")),
            }
        }
        if laggards.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(laggards.join("; "));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Waits for reader tasks that each return their request latencies; the p99 of them
/// all in milliseconds, and how many there were.
pub async fn readers_p99_ms(readers: Vec<tokio::task::JoinHandle<Vec<Duration>>>) -> (f64, usize) {
    let mut all = Vec::new();
    for r in readers {
        all.extend(r.await.expect("a reader task panicked"));
    }
    all.sort();
    let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or_default();
    (p99.as_secs_f64() * 1000.0, all.len())
}

/// Sums every sample of `name` (any labels) in a Prometheus text answer; 0 if absent.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.split_once('}')?.1
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None;
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .fold(0.0, |sum, v| sum + v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_every_label_set_of_exactly_that_name() {
        // Samples with and without labels add up; comments, longer names sharing the
        // prefix and absent names do not count.
        let text = "# TYPE x counter\nx{op=\"a\"} 2\nx{op=\"b\"} 3.5\nx_total 100\nx 1\n";
        assert_eq!(metric_sum(text, "x"), 6.5);
        assert_eq!(metric_sum(text, "x_total"), 100.0);
        assert_eq!(metric_sum(text, "y"), 0.0);
    }

    #[test]
    fn encode_key_keeps_only_unreserved_bytes() {
        assert_eq!(encode_key(b"aZ09-._~"), "aZ09-._~");
        assert_eq!(encode_key(b"a/b c%"), "a%2Fb%20c%25");
        assert_eq!(encode_key(&[0xff, 0x00]), "%FF%00");
        assert_eq!(encode_key("é".as_bytes()), "%C3%A9");
    }

    #[test]
    fn query_joins_with_the_right_separator() {
        assert_eq!(Api::kv_path(b"k", ""), "/kv/k");
        assert_eq!(Api::kv_path(b"k", "w=1"), "/kv/k?w=1");
        assert_eq!(json_path(b"a b", "r=1"), "/kv?key=a%20b&r=1");
    }
}
