//! Building responses: the one mapping from [`Error`] to status and JSON body, the
//! headers every write carries, and reading request bodies within their limit.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use ringkv_client::wire::{self, ErrorBody, codes};
use serde::Serialize;

use super::Body;
use crate::coordinator::WriteOutcome;
use crate::error::{Error, Result};
use crate::version::VersionVector;

/// The status and JSON body of an error; the only place errors become HTTP.
pub fn error(e: &Error) -> Response<Body> {
    let message = e.to_string();
    let (status, mut body) = match e {
        Error::BadRequest(_) => (
            StatusCode::BAD_REQUEST,
            ErrorBody::new(codes::BAD_REQUEST, message),
        ),
        Error::KeyTooLong { max_bytes, .. } => {
            let mut b = ErrorBody::new(codes::KEY_TOO_LONG, message);
            b.limit_bytes = Some(*max_bytes);
            (StatusCode::BAD_REQUEST, b)
        }
        Error::BadContext(_) => (
            StatusCode::BAD_REQUEST,
            ErrorBody::new(codes::BAD_CONTEXT, message),
        ),
        Error::ValueTooLarge { max_bytes } => {
            let mut b = ErrorBody::new(codes::VALUE_TOO_LARGE, message);
            b.limit_bytes = Some(*max_bytes);
            (StatusCode::PAYLOAD_TOO_LARGE, b)
        }
        Error::TooManySiblings { max } => {
            let mut b = ErrorBody::new(codes::TOO_MANY_SIBLINGS, message);
            b.max_siblings = Some(*max);
            (StatusCode::CONFLICT, b)
        }
        Error::InsufficientReplicas { live, required } => {
            let mut b = ErrorBody::new(codes::INSUFFICIENT_REPLICAS, message);
            (b.live, b.required) = (Some(*live), Some(*required));
            (StatusCode::SERVICE_UNAVAILABLE, b)
        }
        Error::Timeout { acks, required } => {
            let mut b = ErrorBody::new(codes::TIMEOUT, message);
            (b.acks, b.required) = (Some(*acks), Some(*required));
            (StatusCode::GATEWAY_TIMEOUT, b)
        }
        Error::NotFound(_) => (
            StatusCode::NOT_FOUND,
            ErrorBody::new(codes::NOT_FOUND, message),
        ),
        Error::Conflict { code, .. } => (StatusCode::CONFLICT, ErrorBody::new(code, message)),
        Error::ShuttingDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorBody::new(codes::UNAVAILABLE, message),
        ),
        Error::Peer { .. } | Error::PeerUnreachable { .. } | Error::HintsFull { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorBody::new(codes::UNAVAILABLE, message),
        ),
        Error::Storage(_) | Error::Config(_) | Error::Io(_) => {
            tracing::error!(error = %e, "request failed inside the node");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorBody::new(codes::INTERNAL, message),
            )
        }
    };
    if body.message.is_empty() {
        body.message = status.canonical_reason().unwrap_or("error").to_owned();
    }
    json(status, &body)
}

/// An error response for cases that are not [`Error`]s (routing, not found).
pub fn status_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    json(status, &ErrorBody::new(code, message))
}

pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = status_error(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        format!("method not allowed; allowed: {allow}"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// 404 `not_found`, with the context when the key is tombstoned (so a client can
/// write over the tombstone causally).
pub fn not_found(context: Option<&VersionVector>) -> Response<Body> {
    let mut r = status_error(StatusCode::NOT_FOUND, codes::NOT_FOUND, "key not found");
    if let Some(vv) = context {
        set_context(&mut r, vv);
    }
    r
}

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("wire types always serialize");
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn bytes(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

pub fn set_context(r: &mut Response<Body>, vv: &VersionVector) {
    let value = HeaderValue::from_str(&vv.to_token()).expect("base64url is a valid header value");
    r.headers_mut().insert(wire::HEADER_CONTEXT, value);
}

/// `X-Ringkv-Acks` and, where stand-ins took the write, `X-Ringkv-Hinted`.
pub fn set_write_headers(r: &mut Response<Body>, outcome: &WriteOutcome) {
    // Node ids are restricted to a header-safe alphabet at start-up.
    let acks = outcome.acks.join(",");
    r.headers_mut().insert(
        wire::HEADER_ACKS,
        HeaderValue::from_str(&acks).expect("node ids are header-safe"),
    );
    if !outcome.hinted.is_empty() {
        let hinted = outcome
            .hinted
            .iter()
            .map(|(owner, standin)| format!("{owner}->{standin}"))
            .collect::<Vec<_>>();
        let value = HeaderValue::from_str(&hinted.join(",")).expect("node ids are header-safe");
        r.headers_mut().insert(wire::HEADER_HINTED, value);
    }
}

/// The request's context header, if any; malformed is [`Error::BadContext`].
pub fn context_header(headers: &HeaderMap) -> Result<Option<VersionVector>> {
    match headers.get(wire::HEADER_CONTEXT) {
        None => Ok(None),
        Some(v) => {
            let token = v
                .to_str()
                .map_err(|_| Error::BadRequest("X-Ringkv-Context is not ASCII".into()))?;
            Ok(Some(VersionVector::from_token(token.trim())?))
        }
    }
}

/// Reads a body of at most `limit_bytes`: refused from its `Content-Length` before
/// reading, or as soon as the stream passes the limit.
pub async fn read_body(headers: &HeaderMap, body: Incoming, limit_bytes: usize) -> Result<Bytes> {
    if let Some(len) = headers.get(CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::BadRequest("Content-Length is not a number".into()))?;
        if len > limit_bytes as u64 {
            return Err(Error::ValueTooLarge {
                max_bytes: limit_bytes,
            });
        }
    }
    match Limited::new(body, limit_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Error::ValueTooLarge {
            max_bytes: limit_bytes,
        }),
        Err(e) => Err(Error::BadRequest(format!("reading the request body: {e}"))),
    }
}
