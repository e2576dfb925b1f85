//! Prometheus metrics: one process-wide recorder, rendered by `GET /metrics`, and the
//! names of every series the node exports, so that dashboards and tests have one list.
//!
//! Every metric is described (HELP text) and registered at zero when the recorder is
//! installed, with each label set that is known in advance (the HTTP and peer ops,
//! peer call outcomes, refusal reasons), so that a scrape before the first request
//! already lists every series: an alert on `ringkv_hints_pending > 0` or on a rate
//! needs the series to exist. README.md#metrics lists them; a process test checks
//! that list against a fresh node's `/metrics` and runs `promtool check metrics` on it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, labelled by `op` and `status`.
pub const HTTP_REQUESTS: &str = "ringkv_http_requests_total";
/// Request latency in seconds, labelled by `op`.
pub const HTTP_DURATION: &str = "ringkv_http_request_duration_seconds";
/// Stored records that failed their crc or did not decode (treated as missing).
pub const CORRUPT_RECORDS: &str = "ringkv_storage_corrupt_records_total";
/// Gossip datagrams and peer connections dropped before any protocol saw them (their
/// envelope, or the cluster key), labelled by `channel` ([`REJECTED_CHANNELS`]).
pub const REJECTED: &str = ringkv_gossip::REJECTED_TOTAL;
/// The `channel` labels of [`REJECTED`].
pub const REJECTED_CHANNELS: &[&str] = &["gossip", "peer"];

/// Latency buckets, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS_S: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Calls per peer message: 1 to the protocol's limit of 256.
const BATCH_CALLS_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns the handle that renders it;
/// every series is then described and at zero (`http_ops`: each HTTP `op` label with
/// the status its success answers). Call it before anything records, since values
/// recorded without a recorder are lost. Histograms are drained by [`upkeep`]; call
/// it on an interval.
pub fn install(http_ops: &[(&'static str, http::StatusCode)]) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_S)
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full(crate::net::PEER_BATCH_CALLS.into()),
                    BATCH_CALLS_BUCKETS,
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                describe();
                register_at_zero(http_ops);
                ringkv_gossip::register_metrics();
            }
            handle
        })
        .clone()
}

/// Registers every series at zero. Counters and gauges are incremented by zero, so a
/// value recorded before (none should be) is kept.
fn register_at_zero(http_ops: &[(&'static str, http::StatusCode)]) {
    use crate::net::{
        PEER_BAD_REQUEST_REASONS, PEER_BAD_REQUESTS, PEER_BATCH_CALLS, PEER_CALL_DURATION,
        PEER_CALL_OUTCOMES, PEER_CALLS, PeerRequest,
    };
    for &(op, status) in http_ops {
        let status = status.as_str().to_owned();
        metrics::counter!(HTTP_REQUESTS, "op" => op, "status" => status).increment(0);
        let _ = metrics::histogram!(HTTP_DURATION, "op" => op);
    }
    for &op in PeerRequest::OPS {
        for &outcome in PEER_CALL_OUTCOMES {
            metrics::counter!(PEER_CALLS, "op" => op, "outcome" => outcome).increment(0);
        }
        let _ = metrics::histogram!(PEER_CALL_DURATION, "op" => op);
    }
    for &reason in PEER_BAD_REQUEST_REASONS {
        metrics::counter!(PEER_BAD_REQUESTS, "reason" => reason).increment(0);
    }
    let _ = metrics::histogram!(PEER_BATCH_CALLS);
    for channel in REJECTED_CHANNELS {
        metrics::counter!(REJECTED, "channel" => *channel).increment(0);
    }
    for name in [
        CORRUPT_RECORDS,
        SPECULATIVE_READS,
        READ_REPAIRS,
        READ_REPAIRS_SKIPPED,
        RECORD_CACHE_HITS,
        RECORD_CACHE_MISSES,
        HINTS_STORED,
        HINTS_DELIVERED,
        HINTS_EXPIRED,
        HINTS_REFUSED,
        HINTS_CORRUPT,
        AE_SEGMENTS_DIFFERING,
        TOMBSTONES_PURGED,
        TREE_REBUILDS,
        TREE_LEAVES_FIXED,
    ] {
        metrics::counter!(name).increment(0);
    }
    for name in [
        HINTS_PENDING,
        HINTS_BYTES,
        RECORD_CACHE_ENTRIES,
        RECORD_CACHE_BYTES,
    ] {
        metrics::gauge!(name).increment(0.0);
    }
    for result in ["ok", "failed"] {
        metrics::counter!(AE_EXCHANGES, "result" => result).increment(0);
    }
    for direction in ["sent", "received"] {
        metrics::counter!(AE_KEYS_REPAIRED, "direction" => direction).increment(0);
    }
    let _ = metrics::histogram!(TREE_REBUILD_DURATION);
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
    metrics::describe_histogram!(
        crate::net::PEER_BATCH_CALLS,
        "Calls per message sent to a peer (reads, merges and hints are batched)."
    );
    metrics::describe_gauge!(HINTS_PENDING, "Hints kept for other nodes.");
    metrics::describe_counter!(
        SPECULATIVE_READS,
        "Reads that asked one more replica because none answered within 25 ms."
    );
    metrics::describe_gauge!(
        HINTS_BYTES,
        metrics::Unit::Bytes,
        "Bytes of hints kept for other nodes."
    );
    metrics::describe_counter!(HINTS_STORED, "Writes stored or merged as hints.");
    metrics::describe_counter!(RECORD_CACHE_HITS, "Reads the record cache answered.");
    metrics::describe_counter!(
        RECORD_CACHE_MISSES,
        "Reads the record cache could not answer."
    );
    metrics::describe_gauge!(RECORD_CACHE_ENTRIES, "Records in the record cache.");
    metrics::describe_gauge!(
        RECORD_CACHE_BYTES,
        "Bytes the record cache counts against --record-cache-mb."
    );
    metrics::describe_counter!(
        HINTS_DELIVERED,
        "Hints acknowledged by their owner and deleted."
    );
    metrics::describe_counter!(HINTS_EXPIRED, "Hints dropped for age.");
    metrics::describe_counter!(
        HINTS_REFUSED,
        "Hints refused because the hint store was full."
    );
    metrics::describe_counter!(
        HINTS_CORRUPT,
        "Hint records that failed their check and were deleted."
    );
    metrics::describe_counter!(
        READ_REPAIRS,
        "Read repairs sent to stale or missing replicas."
    );
    metrics::describe_counter!(
        READ_REPAIRS_SKIPPED,
        "Read repairs skipped because too many were already running."
    );
    metrics::describe_counter!(
        crate::net::PEER_CALLS,
        "Calls to peers, by operation and outcome (ok, error, timeout)."
    );
    metrics::describe_histogram!(
        crate::net::PEER_CALL_DURATION,
        metrics::Unit::Seconds,
        "Peer call latency, by operation, whatever the outcome."
    );
    metrics::describe_counter!(
        crate::net::PEER_BAD_REQUESTS,
        "Peer requests refused unread, by reason."
    );
    metrics::describe_counter!(
        REJECTED,
        "Gossip datagrams and peer connections dropped before any protocol saw them (bad envelope or cluster key), by channel."
    );
    describe_anti_entropy();
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

/// Reads the record cache answered.
pub const RECORD_CACHE_HITS: &str = "ringkv_record_cache_hits_total";
/// Reads the record cache could not answer (the store was read).
pub const RECORD_CACHE_MISSES: &str = "ringkv_record_cache_misses_total";
/// Records in the cache (gauge).
pub const RECORD_CACHE_ENTRIES: &str = "ringkv_record_cache_entries";
/// Bytes the cache counts against `--record-cache-mb` (gauge).
pub const RECORD_CACHE_BYTES: &str = "ringkv_record_cache_bytes";

/// Publishes the record cache's counters (read from the cache when metrics are scraped).
/// (Plain numbers, so that metrics, which the replica uses, does not import it back.)
pub fn record_cache(hits: u64, misses: u64, entries: u64, bytes: u64) {
    metrics::counter!(RECORD_CACHE_HITS).absolute(hits);
    metrics::counter!(RECORD_CACHE_MISSES).absolute(misses);
    metrics::gauge!(RECORD_CACHE_ENTRIES).set(entries as f64);
    metrics::gauge!(RECORD_CACHE_BYTES).set(bytes as f64);
}

/// Read repairs sent to a stale or missing replica.
pub const READ_REPAIRS: &str = "ringkv_read_repairs_total";
/// Reads whose repair was skipped because too many repairs were already running.
pub const READ_REPAIRS_SKIPPED: &str = "ringkv_read_repairs_skipped_total";

/// Counts one repair sent.
pub fn read_repair() {
    metrics::counter!(READ_REPAIRS).increment(1);
}

/// Counts a repair skipped for lack of capacity.
pub fn read_repair_skipped() {
    metrics::counter!(READ_REPAIRS_SKIPPED).increment(1);
}

/// Reads that asked one more replica because none answered in time.
pub const SPECULATIVE_READS: &str = "ringkv_speculative_reads_total";

/// Counts one extra replica asked by a slow read.
pub fn speculative_read() {
    metrics::counter!(SPECULATIVE_READS).increment(1);
}

/// Hints kept for other nodes (gauge, all owners).
pub const HINTS_PENDING: &str = "ringkv_hints_pending";
/// Bytes of hints kept, storage keys plus records (gauge).
pub const HINTS_BYTES: &str = "ringkv_hints_bytes";
/// Writes stored as hints, or merged into one.
pub const HINTS_STORED: &str = "ringkv_hints_stored_total";
/// Hints the owner acknowledged and that were deleted.
pub const HINTS_DELIVERED: &str = "ringkv_hints_delivered_total";
/// Hints dropped for being older than `--hint-max-age-s`.
pub const HINTS_EXPIRED: &str = "ringkv_hints_expired_total";
/// Hints refused because the store held `--hint-max-bytes`.
pub const HINTS_REFUSED: &str = "ringkv_hints_refused_total";
/// Hint records that failed their check (cannot be handed off) and were deleted.
pub const HINTS_CORRUPT: &str = "ringkv_hints_corrupt_total";

/// Anti-entropy exchanges this node started, by `result` (`ok`, `failed`).
pub const AE_EXCHANGES: &str = "ringkv_anti_entropy_exchanges_total";
/// Tree segments found to differ from a peer's.
pub const AE_SEGMENTS_DIFFERING: &str = "ringkv_anti_entropy_segments_differing_total";
/// Keys repaired by anti-entropy, by `direction`: `sent` (pushed to a peer that lacked
/// this node's version) or `received` (a peer's version merged here).
pub const AE_KEYS_REPAIRED: &str = "ringkv_anti_entropy_keys_repaired_total";
/// Tombstones purged from this replica by tombstone GC.
pub const TOMBSTONES_PURGED: &str = "ringkv_tombstones_purged_total";
/// Partitions whose tree was rebuilt from a scan.
pub const TREE_REBUILDS: &str = "ringkv_anti_entropy_tree_rebuilds_total";
/// Time one partition's rebuild took, in seconds.
pub const TREE_REBUILD_DURATION: &str = "ringkv_anti_entropy_tree_rebuild_duration_seconds";
/// Tree leaves a rebuild found wrong (a corrupt record, a failed write).
pub const TREE_LEAVES_FIXED: &str = "ringkv_anti_entropy_tree_leaves_fixed_total";

fn describe_anti_entropy() {
    metrics::describe_counter!(
        AE_EXCHANGES,
        "Anti-entropy exchanges started here, by result."
    );
    metrics::describe_counter!(
        AE_SEGMENTS_DIFFERING,
        "Hash-tree segments found to differ from a peer's."
    );
    metrics::describe_counter!(
        AE_KEYS_REPAIRED,
        "Keys repaired by anti-entropy, by direction (sent, received)."
    );
    metrics::describe_counter!(TOMBSTONES_PURGED, "Tombstones purged by tombstone GC.");
    metrics::describe_counter!(TREE_REBUILDS, "Partitions whose hash tree was rebuilt.");
    metrics::describe_histogram!(
        TREE_REBUILD_DURATION,
        metrics::Unit::Seconds,
        "Time to rebuild one partition's hash tree from a scan."
    );
    metrics::describe_counter!(TREE_LEAVES_FIXED, "Hash-tree leaves a rebuild found wrong.");
}

/// Counts one exchange.
pub fn ae_exchange(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    metrics::counter!(AE_EXCHANGES, "result" => result).increment(1);
}

/// Counts differing segments and the keys repaired in each direction.
pub fn ae_repaired(segments: u64, sent: u64, received: u64) {
    metrics::counter!(AE_SEGMENTS_DIFFERING).increment(segments);
    metrics::counter!(AE_KEYS_REPAIRED, "direction" => "sent").increment(sent);
    metrics::counter!(AE_KEYS_REPAIRED, "direction" => "received").increment(received);
}

/// Counts tombstones purged here.
pub fn tombstones_purged(count: u64) {
    metrics::counter!(TOMBSTONES_PURGED).increment(count);
}

/// Counts one partition's rebuild.
pub fn tree_rebuilt(elapsed: Duration, leaves_fixed: u64) {
    metrics::counter!(TREE_REBUILDS).increment(1);
    metrics::histogram!(TREE_REBUILD_DURATION).record(elapsed.as_secs_f64());
    metrics::counter!(TREE_LEAVES_FIXED).increment(leaves_fixed);
}
