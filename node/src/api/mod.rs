//! The HTTP API of README.md#http-api on hyper: a hand-written router (keys are raw,
//! percent-encoded bytes, which path-extracting routers would decode lossily), one
//! module per family of endpoints, and one place, [`reply`], that turns errors into
//! statuses and JSON bodies.
//!
//! The API only parses, checks limits and formats; every decision about replicas and
//! versions is the coordinator's. Limits are enforced before work: a body over the
//! limit is refused from its `Content-Length` or cut off while streaming, never
//! buffered whole; slow headers are cut off by hyper's header read timeout.

mod admin;
pub mod auth;
mod dashboard;
mod json;
mod kv;
mod params;
mod reply;
mod server;
pub mod stats;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

pub use server::serve;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::error::Error;
use crate::stats::{OpClass, RequestStats};
use crate::storage::Backend;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct ApiState {
    pub config: Arc<Config>,
    pub coordinator: Arc<Coordinator>,
    pub cluster: Arc<Cluster>,
    pub anti_entropy: Arc<crate::anti_entropy::StatusBoard>,
    pub transfers: Arc<crate::transfer::TransferBoard>,
    pub metrics: PrometheusHandle,
    /// The store, for its own figures (`/metrics`, `/stats`).
    pub backend: Arc<dyn Backend>,
    /// Recent KV requests, for `/stats`.
    pub stats: RequestStats,
    /// When the API started; `/stats` seconds count from here.
    pub started: Instant,
    /// Asks the other members for their `/stats`.
    pub peer_stats: stats::PeerStats,
}

pub(crate) type Body = Full<Bytes>;

/// Answers one request and records it in the metrics.
pub async fn handle(state: Arc<ApiState>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    if let Some(refused) = auth::refusal(state.config.api_tokens.as_deref(), &req) {
        crate::metrics::http_request("other", refused.status(), started.elapsed());
        return refused;
    }
    let (op, result) = route(&state, req).await;
    let class = op_class(op);
    if let (Err(e), Some(class)) = (&result, class)
        && let Some(reason) = quorum_failure_reason(e)
    {
        crate::metrics::quorum_failure(class_name(class), reason);
    }
    let response = result.unwrap_or_else(|e| reply::error(&e));
    let elapsed = started.elapsed();
    crate::metrics::http_request(op, response.status(), elapsed);
    if let Some(class) = class {
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let now_s = started.saturating_duration_since(state.started).as_secs();
        let error = response.status().is_server_error();
        state.stats.record(now_s, class, latency_us, error);
    }
    response
}

/// Whether an `op` label is a client's read or write (the KV calls), which `/stats`
/// counts; the rest (the dashboard's own polling among them) is not.
fn op_class(op: &str) -> Option<OpClass> {
    match op {
        "get" | "json_get" => Some(OpClass::Read),
        "put" | "delete" | "json_put" | "json_delete" => Some(OpClass::Write),
        _ => None,
    }
}

fn class_name(class: OpClass) -> &'static str {
    match class {
        OpClass::Read => "read",
        OpClass::Write => "write",
    }
}

/// The `reason` label of a quorum failure, if `e` is one.
fn quorum_failure_reason(e: &Error) -> Option<&'static str> {
    match e {
        Error::InsufficientReplicas { .. } => Some("insufficient_replicas"),
        Error::Timeout { .. } => Some("timeout"),
        _ => None,
    }
}

type Routed = (&'static str, Result<Response<Body>, Error>);

/// Every `op` label [`route`] gives a request, with the status of its usual answer:
/// `/metrics` lists each pair at zero from the start.
pub const HTTP_OPS: &[(&str, StatusCode)] = &[
    ("get", StatusCode::OK),
    ("put", StatusCode::NO_CONTENT),
    ("delete", StatusCode::NO_CONTENT),
    ("admin_replicas", StatusCode::OK),
    ("json_get", StatusCode::OK),
    ("json_put", StatusCode::OK),
    ("json_delete", StatusCode::NO_CONTENT),
    ("health", StatusCode::OK),
    ("metrics", StatusCode::OK),
    ("cluster", StatusCode::OK),
    ("admin_leave", StatusCode::ACCEPTED),
    ("admin_remove", StatusCode::ACCEPTED),
    ("stats", StatusCode::OK),
    ("ring", StatusCode::OK),
    ("index", StatusCode::OK),
    ("other", StatusCode::NOT_FOUND),
];

async fn route(state: &ApiState, req: Request<Incoming>) -> Routed {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if let Some(raw_key) = path.strip_prefix("/kv/") {
        return match method {
            Method::GET => ("get", kv::get(state, raw_key, req).await),
            Method::PUT => ("put", kv::put(state, raw_key, req).await),
            Method::DELETE => ("delete", kv::delete(state, raw_key, req).await),
            _ => ("other", Ok(reply::method_not_allowed("GET, PUT, DELETE"))),
        };
    }
    if let Some(raw_key) = path.strip_prefix("/admin/replicas/") {
        return match method {
            Method::GET => ("admin_replicas", admin::replicas(state, raw_key).await),
            _ => ("other", Ok(reply::method_not_allowed("GET"))),
        };
    }
    if let Some(id) = path.strip_prefix("/admin/remove/") {
        return match method {
            Method::POST => ("admin_remove", admin::remove(state, id)),
            _ => ("other", Ok(reply::method_not_allowed("POST"))),
        };
    }
    match (path.as_str(), method) {
        ("/admin/leave", Method::POST) => ("admin_leave", admin::leave(state)),
        ("/admin/leave", _) => ("other", Ok(reply::method_not_allowed("POST"))),
        ("/kv", Method::GET) => ("json_get", json::get(state, req).await),
        ("/kv", Method::PUT) => ("json_put", json::put(state, req).await),
        ("/kv", Method::DELETE) => ("json_delete", json::delete(state, req).await),
        ("/kv", _) => ("other", Ok(reply::method_not_allowed("GET, PUT, DELETE"))),
        ("/health" | "/healthz", Method::GET) => {
            ("health", admin::health(state, req.uri().query()))
        }
        ("/metrics", Method::GET) => ("metrics", Ok(admin::metrics(state))),
        ("/cluster", Method::GET) => ("cluster", Ok(admin::cluster(state))),
        ("/stats", Method::GET) => ("stats", stats::stats(state, req).await),
        ("/ring", Method::GET) => ("ring", stats::ring(state, &req)),
        ("/", Method::GET) => ("index", Ok(dashboard::page())),
        ("/health" | "/healthz" | "/metrics" | "/cluster" | "/stats" | "/ring" | "/", _) => {
            ("other", Ok(reply::method_not_allowed("GET")))
        }
        _ => (
            "other",
            Ok(reply::status_error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {path}"),
            )),
        ),
    }
}
