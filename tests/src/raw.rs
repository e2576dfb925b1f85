//! Hand-written HTTP/1.1 over a plain TCP stream, for requests a polite client
//! would not send the same way: bodies over a size limit (with or without a
//! `Content-Length`) that the server should refuse before reading them.
//!
//! The request is written from one task while another reads the answer, so an
//! early `413` is read even when the server stops reading and resets the
//! connection. Every request carries `Connection: close`; the answer is what
//! arrived before the server closed.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::Response;

/// How a raw request sends its body.
#[derive(Debug, Clone)]
pub enum RawBody {
    /// No body and no length header.
    Empty,
    /// One body with a `Content-Length`.
    Sized(Bytes),
    /// `Transfer-Encoding: chunked`, one chunk per element, no `Content-Length`.
    Chunked(Vec<Bytes>),
}

/// Bound on one raw exchange.
const RAW_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one request to `addr` and reads the answer until the server closes.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: RawBody,
) -> anyhow::Result<Response> {
    let mut head =
        format!("{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let mut payload: Vec<Bytes> = Vec::new();
    match body {
        RawBody::Empty => {}
        RawBody::Sized(b) => {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
            payload.push(b);
        }
        RawBody::Chunked(chunks) => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            for c in chunks.into_iter().filter(|c| !c.is_empty()) {
                payload.push(Bytes::from(format!("{:x}\r\n", c.len())));
                payload.push(c);
                payload.push(Bytes::from_static(b"\r\n"));
            }
            payload.push(Bytes::from_static(b"0\r\n\r\n"));
        }
    }
    head.push_str("\r\n");

    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let (mut rd, mut wr) = stream.into_split();
        let writer = tokio::spawn(async move {
            // The server may answer and close before reading everything: a failed
            // write is expected then, and the answer tells what happened.
            if wr.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for part in payload {
                if wr.write_all(&part).await.is_err() {
                    return;
                }
            }
            let _ = wr.flush().await;
        });
        let mut received = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let read_error = loop {
            match rd.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) => break Some(e),
            }
        };
        writer.abort();
        match parse_response(&received) {
            Ok(resp) => Ok(resp),
            Err(e) => match read_error {
                Some(io) => Err(e.context(format!("reading the answer failed: {io}"))),
                None => Err(e),
            },
        }
    };
    match tokio::time::timeout(RAW_TIMEOUT, exchange).await {
        Ok(r) => r.with_context(|| format!("raw {method} {path_and_query} to {addr}")),
        Err(_) => {
            bail!("raw {method} {path_and_query} to {addr}: no answer within {RAW_TIMEOUT:?}")
        }
    }
}

/// Parses a complete HTTP/1.1 answer; fails if it is cut short.
fn parse_response(bytes: &[u8]) -> anyhow::Result<Response> {
    let Some(head_end) = find(bytes, b"\r\n\r\n") else {
        bail!(
            "answer ends before its headers do ({} bytes: {:?})",
            bytes.len(),
            String::from_utf8_lossy(bytes)
        );
    };
    let head = std::str::from_utf8(&bytes[..head_end]).context("answer head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("bad header line {line:?}"))?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes())?,
            HeaderValue::from_str(value.trim())?,
        );
    }
    let rest = &bytes[head_end + 4..];
    let is_chunked = headers
        .get("transfer-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if is_chunked {
        decode_chunked(rest)?
    } else if let Some(len) = headers.get("content-length") {
        let len: usize = len.to_str()?.trim().parse()?;
        if rest.len() < len {
            bail!("answer body cut short: {} of {len} bytes", rest.len());
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body: Bytes::from(body),
    })
}

fn decode_chunked(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").context("chunked answer cut short")?;
        let size_text = std::str::from_utf8(&rest[..line_end])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            bail!("chunked answer cut short");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sized_and_chunked_answers() {
        let sized = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 2\r\nx-a: b\r\n\r\n{}";
        let r = parse_response(sized).unwrap();
        assert_eq!(r.status, 413);
        assert_eq!(&r.body[..], b"{}");
        assert_eq!(r.header("x-a").as_deref(), Some("b"));

        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(chunked).unwrap();
        assert_eq!(&r.body[..], b"abcde");
    }

    #[test]
    fn refuses_a_cut_answer() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
