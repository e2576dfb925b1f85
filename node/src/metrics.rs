//! Prometheus metrics: one process-wide recorder, rendered by `GET /metrics`, and the
//! names of every series the node exports, so that dashboards and tests have one list.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, labelled by `op` and `status`.
pub const HTTP_REQUESTS: &str = "ringkv_http_requests_total";
/// Request latency in seconds, labelled by `op`.
pub const HTTP_DURATION: &str = "ringkv_http_request_duration_seconds";
/// Stored records that failed their crc or did not decode (treated as missing).
pub const CORRUPT_RECORDS: &str = "ringkv_storage_corrupt_records_total";

/// Latency buckets, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS_S: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns the handle that renders it.
/// Histograms are drained by [`upkeep`]; call it on an interval.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_S)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                describe();
            }
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by operation and status."
    );
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency, by operation."
    );
    metrics::describe_counter!(
        CORRUPT_RECORDS,
        "Stored records that failed their integrity check."
    );
}

/// Folds recorded histogram samples into their buckets; keeps memory flat.
pub fn upkeep(handle: &PrometheusHandle) {
    handle.run_upkeep();
}

/// Counts one answered HTTP request.
pub fn http_request(op: &'static str, status: http::StatusCode, elapsed: Duration) {
    let status = status.as_str().to_owned();
    metrics::counter!(HTTP_REQUESTS, "op" => op, "status" => status).increment(1);
    metrics::histogram!(HTTP_DURATION, "op" => op).record(elapsed.as_secs_f64());
}

/// Counts a record that failed its check.
pub fn corrupt_record() {
    metrics::counter!(CORRUPT_RECORDS).increment(1);
}
