//! The bare hyper reference server: the HTTP ceiling for `ringkv bench`.
//!
//! It speaks just enough of the KV API for the bench's workloads, with no store
//! behind it: `GET /kv/{anything}` answers 200 with a fixed value, `PUT
//! /kv/{anything}` reads and discards the body and answers 204, anything else
//! answers 404 (or 405 for another method on `/kv/`). Its connections are set up
//! as `ringkv-node`'s HTTP API sets up its own (hyper-util's auto builder,
//! keep-alive, `TCP_NODELAY`, a header-read timeout), so
//! `ringkv bench --nodes <this server>` measures what HTTP alone costs on the
//! machine, with the same client, and a node's figure can be read against it.
//!
//! It lives in the library so that the `bare_hyper` example and the bench's own
//! tests serve the same code. It is for measurements on a trusted machine: it
//! has no connection limit and no shutdown.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Time a client has to send a request's headers, as `ringkv-node`'s default.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the reference API on `listener`, answering reads with `value_bytes`
/// bytes, until the task is dropped. Accept errors (out of file descriptors)
/// pause it briefly instead of ending it.
pub async fn serve(listener: TcpListener, value_bytes: usize) {
    let value = Bytes::from(vec![b'x'; value_bytes]);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let value = value.clone();
        let service = service_fn(move |request| {
            let value = value.clone();
            async move { Ok::<_, Infallible>(answer(request, value).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            // A client that goes away mid-request is no concern of a reference server.
            let _ = connection.await;
        });
    }
}

/// The answer to one request; see the module docs.
async fn answer(request: Request<Incoming>, value: Bytes) -> Response<Full<Bytes>> {
    let status = if !request.uri().path().starts_with("/kv/") {
        StatusCode::NOT_FOUND
    } else if request.method() == Method::GET {
        return Response::new(Full::new(value));
    } else if request.method() == Method::PUT {
        let mut body = request.into_body();
        // Read the whole body as a real server must, keeping none of it.
        let mut status = StatusCode::NO_CONTENT;
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                status = StatusCode::BAD_REQUEST;
                break;
            }
        }
        status
    } else {
        StatusCode::METHOD_NOT_ALLOWED
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
