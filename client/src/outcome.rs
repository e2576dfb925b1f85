//! What a call returns, and how a node's answer becomes it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::error::{CODE_NON_JSON_ERROR, Error, Result};
use crate::wire::{self, ErrorBody, SiblingsBody};

/// The result of a GET on `/kv/{key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetOutcome {
    /// One value (200); `context` lets a later write supersede it.
    Found { value: Bytes, context: String },
    /// Concurrent values (300), in the server's order; a write with `context`
    /// supersedes all of them (resolves the conflict).
    Siblings { values: Vec<Bytes>, context: String },
    /// No live value (404). `context` is set when the key is tombstoned; writing
    /// with it supersedes the delete instead of becoming its sibling.
    NotFound { context: Option<String> },
}

impl GetOutcome {
    /// The context to send with the next write of this key, if any.
    pub fn context(&self) -> Option<&str> {
        match self {
            GetOutcome::Found { context, .. } | GetOutcome::Siblings { context, .. } => {
                Some(context)
            }
            GetOutcome::NotFound { context } => context.as_deref(),
        }
    }
}

/// The result of a successful PUT or DELETE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The context of the written version (`X-Ringkv-Context`), when the node sent one.
    pub context: Option<String>,
    /// Replicas that acknowledged (`X-Ringkv-Acks`).
    pub acks: Vec<String>,
    /// `(intended owner, stand-in)` pairs where a stand-in took the write with a hint
    /// (`X-Ringkv-Hinted`).
    pub hinted: Vec<(String, String)>,
}

/// A node's complete answer to one request.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// Reads a GET on `/kv/{key}`.
    pub fn into_get(self) -> Result<GetOutcome> {
        match self.status {
            StatusCode::OK => Ok(GetOutcome::Found {
                context: required_context(&self.headers)?,
                value: self.body,
            }),
            StatusCode::MULTIPLE_CHOICES => {
                let body: SiblingsBody = decode_json(&self.body)?;
                let values = body
                    .siblings
                    .iter()
                    .map(|s| BASE64.decode(s).map(Bytes::from))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| Error::Decode(format!("sibling is not base64: {e}")))?;
                Ok(GetOutcome::Siblings {
                    values,
                    context: body.context,
                })
            }
            StatusCode::NOT_FOUND => Ok(GetOutcome::NotFound {
                context: optional_header(&self.headers, wire::HEADER_CONTEXT)?.map(str::to_owned),
            }),
            _ => Err(self.unexpected()),
        }
    }

    /// Reads the answer to a PUT or DELETE.
    pub fn into_write(self) -> Result<WriteOutcome> {
        if !self.status.is_success() {
            return Err(self.unexpected());
        }
        parse_write_headers(&self.headers)
    }

    /// Reads a JSON answer with status 200 (`/cluster`, `/health`, …).
    pub fn into_json<T: serde::de::DeserializeOwned>(self) -> Result<T> {
        self.into_json_with(StatusCode::OK)
    }

    /// The JSON body of an answer with status `expected`.
    pub fn into_json_with<T: serde::de::DeserializeOwned>(self, expected: StatusCode) -> Result<T> {
        if self.status != expected {
            return Err(self.unexpected());
        }
        decode_json(&self.body)
    }

    /// The error for a status the call does not expect: an error status is the
    /// server's [`Error::Api`]; anything else is an answer the client cannot read.
    pub fn unexpected(self) -> Error {
        if !(self.status.is_client_error() || self.status.is_server_error()) {
            return Error::Decode(format!("unexpected status {}", self.status));
        }
        let body = serde_json::from_slice::<ErrorBody>(&self.body).unwrap_or_else(|_| {
            // Bound what an unknown body (e.g. a proxy's HTML page) can add to a message.
            const SNIPPET_BYTES_MAX: usize = 200;
            let snippet = &self.body[..self.body.len().min(SNIPPET_BYTES_MAX)];
            ErrorBody::new(
                CODE_NON_JSON_ERROR,
                format!(
                    "HTTP {} with a body that is not a ringkv error: {:?}",
                    self.status,
                    String::from_utf8_lossy(snippet)
                ),
            )
        });
        Error::Api {
            status: self.status.as_u16(),
            body: Box::new(body),
        }
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Decode(format!("bad JSON body: {e}")))
}

fn optional_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::Decode(format!("header {name} is not visible ASCII")))
        })
        .transpose()
}

fn required_context(headers: &HeaderMap) -> Result<String> {
    optional_header(headers, wire::HEADER_CONTEXT)?
        .map(str::to_owned)
        .ok_or_else(|| Error::Decode(format!("answer has no {} header", wire::HEADER_CONTEXT)))
}

/// Reads `X-Ringkv-Context`, `X-Ringkv-Acks` and `X-Ringkv-Hinted` of a write's answer.
pub(crate) fn parse_write_headers(headers: &HeaderMap) -> Result<WriteOutcome> {
    let context = optional_header(headers, wire::HEADER_CONTEXT)?.map(str::to_owned);
    let acks = optional_header(headers, wire::HEADER_ACKS)?
        .map(parse_acks)
        .unwrap_or_default();
    let hinted = optional_header(headers, wire::HEADER_HINTED)?
        .map(parse_hinted)
        .transpose()?
        .unwrap_or_default();
    Ok(WriteOutcome {
        context,
        acks,
        hinted,
    })
}

/// `n1, n2` -> `["n1", "n2"]`; empty items are skipped.
fn parse_acks(value: &str) -> Vec<String> {
    list_items(value).map(str::to_owned).collect()
}

/// `n3->n4,n5->n1` -> `[("n3","n4"), ("n5","n1")]`.
fn parse_hinted(value: &str) -> Result<Vec<(String, String)>> {
    list_items(value)
        .map(|item| {
            item.split_once("->")
                .map(|(owner, standin)| (owner.trim().to_owned(), standin.trim().to_owned()))
                .filter(|(owner, standin)| !owner.is_empty() && !standin.is_empty())
                .ok_or_else(|| {
                    Error::Decode(format!(
                        "{} item {item:?} is not owner->standin",
                        wire::HEADER_HINTED
                    ))
                })
        })
        .collect()
}

fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    fn answer(status: u16, headers: HeaderMap, body: &'static [u8]) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn write_headers_parse_context_acks_and_hinted() {
        // Proves a write's three headers become the context, ack list and hint pairs.
        let h = headers(&[
            ("x-ringkv-context", "ctx123"),
            ("x-ringkv-acks", "n1, n2,n4"),
            ("x-ringkv-hinted", "n3->n4, n5 -> n1"),
        ]);
        let out = parse_write_headers(&h).unwrap();
        assert_eq!(out.context.as_deref(), Some("ctx123"));
        assert_eq!(out.acks, ["n1", "n2", "n4"]);
        assert_eq!(
            out.hinted,
            [
                ("n3".to_owned(), "n4".to_owned()),
                ("n5".to_owned(), "n1".to_owned())
            ]
        );
    }

    #[test]
    fn missing_or_empty_write_headers_give_empty_lists() {
        // Proves absent headers and empty values are no acks and no hints, not errors.
        let out = parse_write_headers(&HeaderMap::new()).unwrap();
        assert_eq!(out, WriteOutcome::default());
        let out = parse_write_headers(&headers(&[("x-ringkv-acks", "")])).unwrap();
        assert!(out.acks.is_empty());
    }

    #[test]
    fn malformed_hinted_items_are_decode_errors() {
        // Proves a hint without `->` or with an empty side is reported, not dropped.
        for bad in ["n3", "n3->", "->n4", "n1->n2,n3"] {
            let h = HeaderMap::from_iter([(
                http::HeaderName::from_static("x-ringkv-hinted"),
                HeaderValue::from_str(bad).unwrap(),
            )]);
            assert!(
                matches!(parse_write_headers(&h), Err(Error::Decode(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn get_answers_map_to_outcomes() {
        // Proves 200, 300 (base64 siblings) and 404 (with and without context) decode as documented.
        let found = answer(200, headers(&[("x-ringkv-context", "c1")]), b"\x00v\xff");
        assert_eq!(
            found.into_get().unwrap(),
            GetOutcome::Found {
                value: Bytes::from_static(b"\x00v\xff"),
                context: "c1".to_owned()
            }
        );

        let siblings = answer(
            300,
            HeaderMap::new(),
            br#"{"key":"k","context":"c2","siblings":["YmFy","/w=="]}"#,
        );
        assert_eq!(
            siblings.into_get().unwrap(),
            GetOutcome::Siblings {
                values: vec![Bytes::from_static(b"bar"), Bytes::from_static(b"\xff")],
                context: "c2".to_owned()
            }
        );

        let tombstone = answer(404, headers(&[("x-ringkv-context", "c3")]), b"");
        assert_eq!(tombstone.into_get().unwrap().context(), Some("c3"));
        let missing = answer(
            404,
            HeaderMap::new(),
            br#"{"error":"not_found","message":"x"}"#,
        );
        assert_eq!(
            missing.into_get().unwrap(),
            GetOutcome::NotFound { context: None }
        );
    }

    #[test]
    fn found_without_context_or_bad_siblings_is_a_decode_error() {
        // Proves broken success answers are reported as Decode, never as a value.
        let no_ctx = answer(200, HeaderMap::new(), b"v");
        assert!(matches!(no_ctx.into_get(), Err(Error::Decode(_))));
        let bad_b64 = answer(
            300,
            HeaderMap::new(),
            br#"{"key":"k","context":"c","siblings":["***"]}"#,
        );
        assert!(matches!(bad_b64.into_get(), Err(Error::Decode(_))));
    }

    #[test]
    fn error_answers_keep_the_json_body_or_get_a_synthetic_one() {
        // Proves JSON error bodies are kept whole and non-JSON ones still yield a clear Api error.
        let json = answer(
            503,
            HeaderMap::new(),
            br#"{"error":"insufficient_replicas","message":"1 of 2","live":1,"required":2}"#,
        );
        match json.into_write() {
            Err(Error::Api { status, body }) => {
                assert_eq!(status, 503);
                assert_eq!(body.error, "insufficient_replicas");
                assert_eq!((body.live, body.required), (Some(1), Some(2)));
            }
            other => panic!("expected Api, got {other:?}"),
        }

        let html = answer(502, HeaderMap::new(), b"<html>bad gateway</html>");
        match html.into_json::<wire::ClusterBody>() {
            Err(Error::Api { status, body }) => {
                assert_eq!(status, 502);
                assert_eq!(body.error, CODE_NON_JSON_ERROR);
                assert!(body.message.contains("bad gateway"), "{}", body.message);
            }
            other => panic!("expected Api, got {other:?}"),
        }

        let redirect = answer(302, HeaderMap::new(), b"");
        assert!(matches!(redirect.into_write(), Err(Error::Decode(_))));
    }
}
