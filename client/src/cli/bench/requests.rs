//! The requests each protocol sends, and what counts as a good answer.
//!
//! [`Requests`] builds every request from parts made once: the escaped path
//! prefix, the query strings, the `Host` header and the values, so an operation
//! allocates only its path or JSON body and the request itself. A ringkv write's
//! value is the next window of `value_bytes` in a shared pool of random bytes (a
//! [`Bytes`] slice: a reference count, no copy), so writes differ from one
//! another as real ones do: ringkv keeps equal concurrent values as one, and
//! with a single constant value two racing updates would never show as
//! siblings. etcd, which has no siblings, gets the first window, base64-encoded
//! once.
//!
//! Protocols:
//! - `ringkv`: `GET /kv/{key}?r=R` and `PUT /kv/{key}?w=W` with the value as the
//!   body and, on updates, `X-Ringkv-Context`. Load-phase writes, and updates
//!   of a key with no known context, add `overwrite=true` instead (see
//!   `contexts`), so a reload or a `--no-load` run supersedes what an earlier run
//!   left instead of adding siblings.
//! - `etcd`: etcd v3's JSON gateway, `POST {api}/kv/range` with
//!   `{"key":"<base64>"}` and `POST {api}/kv/put` with
//!   `{"key":"<base64>","value":"<base64>"}`; `{api}` is `/v3` on etcd 3.4 and
//!   later, `/v3beta` on 3.3 and `/v3alpha` on 3.2, found by
//!   [`detect_etcd_api`]. A range that finds nothing answers 200 without `"kvs"`.

use std::time::Duration;

use anyhow::bail;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use ringkv_client::{encode_key, wire};

use super::conn::{Answer, Body, Conn, Target};
use super::keys::{KeyId, KeySpace};
use super::workload::Op;

/// `X-Ringkv-Context`, made once (a `static`: it holds `Bytes`).
static CONTEXT: HeaderName = HeaderName::from_static(wire::HEADER_CONTEXT);

/// The wire protocol a run speaks: the `--protocol` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// ringkv's HTTP API (README.md#http-api).
    Ringkv,
    /// etcd v3's JSON gateway, for a side-by-side comparison.
    Etcd,
}

impl Protocol {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Ringkv => "ringkv",
            Protocol::Etcd => "etcd",
        }
    }
}

/// Which write a request is.
#[derive(Debug, Clone)]
pub enum Write {
    /// A load-phase write (ringkv: `overwrite=true`).
    Load,
    /// An update, with the freshest context the run holds for the key (ringkv:
    /// `overwrite=true` when there is none).
    Update(Option<HeaderValue>),
    /// An insert of a new key.
    Insert,
}

/// Builds a worker's requests; see the module docs.
#[derive(Debug, Clone)]
pub struct Requests {
    protocol: Protocol,
    keys: KeySpace,
    host: HeaderValue,
    /// `Authorization`, for a cluster with API tokens.
    auth: Option<HeaderValue>,
    /// ringkv: the value pool; write i sends `value_bytes` from window i.
    values: Bytes,
    /// Bytes per value.
    value_bytes: usize,
    /// Windows in the pool (offsets a value can start at).
    value_windows: usize,
    /// The window of the next write.
    next_window: usize,
    /// ringkv: `/kv/` and the escaped key prefix.
    path_prefix: String,
    /// ringkv: `?r=R` or empty.
    read_query: String,
    /// ringkv: `?w=W` or empty.
    write_query: String,
    /// ringkv: `?overwrite=true` and `&w=W`.
    overwrite_query: String,
    /// etcd: `{api}/kv/range` and `{api}/kv/put`.
    range_uri: Uri,
    put_uri: Uri,
    /// etcd: the value in base64.
    value_b64: String,
    /// etcd: a reused buffer for the raw key before it is base64-encoded.
    scratch: String,
}

/// How a request builder is set up.
#[derive(Debug, Clone)]
pub struct RequestsConfig {
    /// The protocol.
    pub protocol: Protocol,
    /// Key naming.
    pub keys: KeySpace,
    /// Random bytes that values are windows of: `value_bytes` plus the number
    /// of distinct values wanted.
    pub values: Bytes,
    /// Bytes per value (at most `values.len()`).
    pub value_bytes: usize,
    /// ringkv's per-request read quorum.
    pub r: Option<usize>,
    /// ringkv's per-request write quorum.
    pub w: Option<usize>,
    /// etcd's gateway prefix (`/v3`); unused for ringkv.
    pub etcd_api: &'static str,
}

impl Requests {
    /// A builder for requests to `target`; `worker` staggers where in the value
    /// pool this builder starts, so that workers do not write in step.
    pub fn new(config: &RequestsConfig, target: &Target, worker: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.value_bytes <= config.values.len(),
            "the value pool is smaller than one value"
        );
        let value_windows = config.values.len() - config.value_bytes + 1;
        let path_prefix = if config.keys.prefix().is_empty() {
            "/kv/".to_owned()
        } else {
            format!("/kv/{}", encode_key(config.keys.prefix().as_bytes())?)
        };
        let query = |pairs: &[(&str, Option<String>)]| {
            let set: Vec<String> = pairs
                .iter()
                .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
                .collect();
            if set.is_empty() {
                String::new()
            } else {
                format!("?{}", set.join("&"))
            }
        };
        let w = config.w.map(|w| w.to_string());
        let api = config.etcd_api;
        Ok(Self {
            protocol: config.protocol,
            keys: config.keys.clone(),
            host: target.host().clone(),
            auth: target.auth().cloned(),
            values: config.values.clone(),
            value_bytes: config.value_bytes,
            value_windows,
            // A large prime stride spreads the workers' starting windows.
            next_window: worker.wrapping_mul(7_919) % value_windows,
            path_prefix,
            read_query: query(&[("r", config.r.map(|r| r.to_string()))]),
            write_query: query(&[("w", w.clone())]),
            overwrite_query: query(&[("overwrite", Some("true".to_owned())), ("w", w)]),
            range_uri: format!("{api}/kv/range").parse()?,
            put_uri: format!("{api}/kv/put").parse()?,
            value_b64: BASE64.encode(&config.values[..config.value_bytes]),
            scratch: String::new(),
        })
    }

    /// What to look for in the body of an answer to `op`: `"kvs"` for etcd
    /// reads, which answer 200 whether or not they found the key.
    pub fn body_needle(&self, op: Op) -> Option<&'static [u8]> {
        (self.protocol == Protocol::Etcd && op == Op::Read).then_some(br#""kvs""#)
    }

    /// A read of `key`.
    pub fn read(&mut self, key: KeyId) -> Request<Body> {
        match self.protocol {
            Protocol::Ringkv => {
                let uri = self.kv_uri(key, ReadOrWrite::Read);
                self.request(Method::GET, uri, Bytes::new())
            }
            Protocol::Etcd => {
                let body = self.etcd_body(key, false);
                let uri = self.range_uri.clone();
                self.request(Method::POST, uri, body)
            }
        }
    }

    /// A write of `key`.
    pub fn write(&mut self, key: KeyId, write: Write) -> Request<Body> {
        match self.protocol {
            Protocol::Ringkv => {
                let (which, context) = match write {
                    Write::Load | Write::Update(None) => (ReadOrWrite::Overwrite, None),
                    Write::Update(Some(context)) => (ReadOrWrite::Write, Some(context)),
                    Write::Insert => (ReadOrWrite::Write, None),
                };
                let uri = self.kv_uri(key, which);
                let value = self.next_value();
                let mut request = self.request(Method::PUT, uri, value);
                if let Some(context) = context {
                    request.headers_mut().insert(CONTEXT.clone(), context);
                }
                request
            }
            Protocol::Etcd => {
                let body = self.etcd_body(key, true);
                let uri = self.put_uri.clone();
                self.request(Method::POST, uri, body)
            }
        }
    }

    /// The next ringkv value: a slice of the pool, no copy.
    fn next_value(&mut self) -> Bytes {
        let start = self.next_window;
        self.next_window = (start + 1) % self.value_windows;
        self.values.slice(start..start + self.value_bytes)
    }

    fn request(&self, method: Method, uri: Uri, body: Bytes) -> Request<Body> {
        let json = self.protocol == Protocol::Etcd;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        // hyper's bare connection API sends no Host of its own; HTTP/1.1 needs one.
        headers.insert(HOST, self.host.clone());
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        if json {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        request
    }

    /// `/kv/{prefix}{suffix}{query}`: the one allocation of a ringkv request path.
    fn kv_uri(&self, key: KeyId, which: ReadOrWrite) -> Uri {
        let query = match which {
            ReadOrWrite::Read => &self.read_query,
            ReadOrWrite::Write => &self.write_query,
            ReadOrWrite::Overwrite => &self.overwrite_query,
        };
        let mut path = String::with_capacity(self.path_prefix.len() + 32 + query.len());
        path.push_str(&self.path_prefix);
        self.keys.push_suffix(key, &mut path);
        path.push_str(query);
        Uri::try_from(path)
            .expect("an escaped prefix, a plain suffix and a query form a valid path")
    }

    /// `{"key":"<base64>"}`, with `,"value":"<base64>"` for a put.
    fn etcd_body(&mut self, key: KeyId, with_value: bool) -> Bytes {
        self.scratch.clear();
        self.scratch.push_str(self.keys.prefix());
        self.keys.push_suffix(key, &mut self.scratch);
        let mut body =
            String::with_capacity(self.scratch.len() * 4 / 3 + self.value_b64.len() + 32);
        body.push_str(r#"{"key":""#);
        BASE64.encode_string(self.scratch.as_bytes(), &mut body);
        if with_value {
            body.push_str(r#"","value":""#);
            body.push_str(&self.value_b64);
        }
        body.push_str(r#""}"#);
        Bytes::from(body)
    }
}

#[derive(Debug, Clone, Copy)]
enum ReadOrWrite {
    Read,
    Write,
    Overwrite,
}

/// What an answer means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The expected answer.
    Ok,
    /// A read found concurrent values (ringkv 300): ok, counted apart.
    Siblings,
    /// A read found no value.
    NotFound,
    /// Any other status: an error.
    Unexpected,
}

/// The `X-Ringkv-Context` of a ringkv answer (still sharing hyper's buffer).
pub fn context_of(answer: &Answer) -> Option<&HeaderValue> {
    answer.headers.get(&CONTEXT)
}

/// Judges `answer` to `op` (a load write judges as an update).
pub fn classify(protocol: Protocol, op: Op, answer: &Answer) -> Verdict {
    let status = answer.status;
    match (protocol, op) {
        (Protocol::Ringkv, Op::Read) => match status {
            StatusCode::OK => Verdict::Ok,
            StatusCode::MULTIPLE_CHOICES => Verdict::Siblings,
            StatusCode::NOT_FOUND => Verdict::NotFound,
            _ => Verdict::Unexpected,
        },
        (Protocol::Ringkv, Op::Update | Op::Insert) => {
            if status == StatusCode::NO_CONTENT {
                Verdict::Ok
            } else {
                Verdict::Unexpected
            }
        }
        (Protocol::Etcd, Op::Read) => match status {
            StatusCode::OK if answer.body_has => Verdict::Ok,
            StatusCode::OK => Verdict::NotFound,
            _ => Verdict::Unexpected,
        },
        (Protocol::Etcd, Op::Update | Op::Insert) => {
            if status == StatusCode::OK {
                Verdict::Ok
            } else {
                Verdict::Unexpected
            }
        }
    }
}

/// Finds etcd's JSON gateway prefix on `target`: the first of `/v3`, `/v3beta`,
/// `/v3alpha` whose `kv/range` answers 200.
pub async fn detect_etcd_api(target: &Target, timeout: Duration) -> anyhow::Result<&'static str> {
    let mut conn = Conn::new(target, timeout);
    let mut tried = Vec::new();
    for api in ["/v3", "/v3beta", "/v3alpha"] {
        let mut request = Request::new(Full::new(Bytes::from_static(br#"{"key":"cHJvYmU="}"#)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = format!("{api}/kv/range").parse()?;
        request.headers_mut().insert(HOST, target.host().clone());
        if let Some(auth) = target.auth() {
            request.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match conn.send(request, None).await {
            Ok(answer) if answer.status == StatusCode::OK => return Ok(api),
            Ok(answer) => tried.push(format!("{api}: {}", answer.status)),
            Err(failure) => tried.push(format!("{api}: {failure:?}")),
        }
    }
    bail!(
        "{} has no etcd v3 JSON gateway ({})",
        target.url,
        tried.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use http_body_util::BodyExt as _;

    use super::*;

    fn target() -> Target {
        Target::for_tests("127.0.0.1:9")
    }

    fn builder(protocol: Protocol, r: Option<usize>, w: Option<usize>) -> Requests {
        let config = RequestsConfig {
            protocol,
            keys: KeySpace::new("b/x-", 0xfeed),
            values: Bytes::from_static(b"vvvvwxyz"),
            value_bytes: 4,
            r,
            w,
            etcd_api: "/v3",
        };
        Requests::new(&config, &target(), 0).unwrap()
    }

    async fn body_of(request: Request<Body>) -> Bytes {
        request.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn ringkv_requests_carry_key_quorum_host_value_and_context() {
        // Proves the ringkv path escapes the prefix, adds the query of each kind,
        // sends Host, puts the context on an update that has one, and makes an
        // update without one an overwrite rather than a blind write.
        let mut requests = builder(Protocol::Ringkv, Some(2), Some(3));
        let read = requests.read(KeyId::Loaded(17));
        assert_eq!(read.method(), Method::GET);
        assert_eq!(read.uri(), "/kv/b%2Fx-17?r=2");
        assert_eq!(read.headers()[HOST], "127.0.0.1:9");
        assert!(read.headers().get(wire::HEADER_CONTEXT).is_none());

        let context = HeaderValue::from_static("ctx1");
        let update = requests.write(KeyId::Loaded(17), Write::Update(Some(context)));
        assert_eq!(update.method(), Method::PUT);
        assert_eq!(update.uri(), "/kv/b%2Fx-17?w=3");
        assert_eq!(update.headers()[wire::HEADER_CONTEXT], "ctx1");
        assert_eq!(body_of(update).await, "vvvv");

        let unknown = requests.write(KeyId::Loaded(17), Write::Update(None));
        assert!(unknown.headers().get(wire::HEADER_CONTEXT).is_none());
        assert_eq!(unknown.uri(), "/kv/b%2Fx-17?overwrite=true&w=3");
        let insert = requests.write(KeyId::Inserted(4), Write::Insert);
        assert_eq!(insert.uri(), "/kv/b%2Fx-w0000feed-4?w=3");
        let load = requests.write(KeyId::Loaded(0), Write::Load);
        assert_eq!(load.uri(), "/kv/b%2Fx-0?overwrite=true&w=3");

        let mut plain = builder(Protocol::Ringkv, None, None);
        assert_eq!(plain.read(KeyId::Loaded(1)).uri(), "/kv/b%2Fx-1");
        assert_eq!(
            plain.write(KeyId::Loaded(1), Write::Insert).uri(),
            "/kv/b%2Fx-1"
        );
    }

    #[tokio::test]
    async fn ringkv_writes_cycle_through_distinct_windows_of_the_pool() {
        // Proves consecutive writes send different values (so racing updates can
        // show as siblings), all of value_bytes, wrapping around the pool, and that
        // workers start at different windows.
        let mut requests = builder(Protocol::Ringkv, None, None);
        let mut bodies = Vec::new();
        for _ in 0..6 {
            bodies.push(body_of(requests.write(KeyId::Loaded(1), Write::Insert)).await);
        }
        assert_eq!(bodies, ["vvvv", "vvvw", "vvwx", "vwxy", "wxyz", "vvvv"]);

        let config = RequestsConfig {
            protocol: Protocol::Ringkv,
            keys: KeySpace::new("k", 0),
            values: Bytes::from_static(b"vvvvwxyz"),
            value_bytes: 4,
            r: None,
            w: None,
            etcd_api: "",
        };
        let mut second_worker = Requests::new(&config, &target(), 1).unwrap();
        let first = body_of(second_worker.write(KeyId::Loaded(1), Write::Insert)).await;
        assert_ne!(first, bodies[0]);
        let too_small = RequestsConfig {
            value_bytes: 9,
            ..config
        };
        assert!(Requests::new(&too_small, &target(), 0).is_err());
    }

    #[tokio::test]
    async fn etcd_requests_are_gateway_json_with_base64_key_and_value() {
        // Proves etcd mode posts the documented JSON to range and put, base64 of the
        // raw (unescaped) key and of the value, and never sends a ringkv context.
        let mut requests = builder(Protocol::Etcd, None, None);
        let read = requests.read(KeyId::Loaded(17));
        assert_eq!(
            (read.method(), read.uri().path()),
            (&Method::POST, "/v3/kv/range")
        );
        assert_eq!(read.headers()[CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_slice(&body_of(read).await).unwrap();
        assert_eq!(body, serde_json::json!({"key": BASE64.encode("b/x-17")}));

        let context = HeaderValue::from_static("ctx1");
        let put = requests.write(KeyId::Loaded(17), Write::Update(Some(context)));
        assert_eq!(put.uri().path(), "/v3/kv/put");
        assert!(put.headers().get(wire::HEADER_CONTEXT).is_none());
        let body: serde_json::Value = serde_json::from_slice(&body_of(put).await).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"key": BASE64.encode("b/x-17"), "value": BASE64.encode("vvvv")})
        );
        assert_eq!(requests.body_needle(Op::Read), Some(&b"\"kvs\""[..]));
        assert_eq!(requests.body_needle(Op::Update), None);
    }

    #[test]
    fn answers_are_judged_by_the_status_each_operation_expects() {
        // Proves GET 200/300/404 and PUT 204 for ringkv, and 200 with or without
        // kvs for etcd, map to their verdicts; anything else is an error.
        let answer = |status: u16, body_has| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body_has,
        };
        let ringkv = Protocol::Ringkv;
        assert_eq!(classify(ringkv, Op::Read, &answer(200, false)), Verdict::Ok);
        assert_eq!(
            classify(ringkv, Op::Read, &answer(300, false)),
            Verdict::Siblings
        );
        assert_eq!(
            classify(ringkv, Op::Read, &answer(404, false)),
            Verdict::NotFound
        );
        assert_eq!(
            classify(ringkv, Op::Read, &answer(503, false)),
            Verdict::Unexpected
        );
        assert_eq!(
            classify(ringkv, Op::Update, &answer(204, false)),
            Verdict::Ok
        );
        assert_eq!(
            classify(ringkv, Op::Insert, &answer(200, false)),
            Verdict::Unexpected
        );
        assert_eq!(
            classify(ringkv, Op::Update, &answer(409, false)),
            Verdict::Unexpected
        );
        let etcd = Protocol::Etcd;
        assert_eq!(classify(etcd, Op::Read, &answer(200, true)), Verdict::Ok);
        assert_eq!(
            classify(etcd, Op::Read, &answer(200, false)),
            Verdict::NotFound
        );
        assert_eq!(classify(etcd, Op::Update, &answer(200, false)), Verdict::Ok);
        assert_eq!(
            classify(etcd, Op::Insert, &answer(204, false)),
            Verdict::Unexpected
        );
    }
}
