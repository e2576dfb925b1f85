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
/// Request latency in seconds, labelled by `op` and `status`.
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
        metrics::counter!(HTTP_REQUESTS, "op" => op, "status" => status.clone()).increment(0);
        let _ = metrics::histogram!(HTTP_DURATION, "op" => op, "status" => status);
    }
    register_observability_at_zero();
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
        TRANSFER_KEYS_RECEIVED,
        TRANSFER_BYTES_RECEIVED,
        PARTITIONS_DROPPED,
        KEYS_DROPPED,
    ] {
        metrics::counter!(name).increment(0);
    }
    for name in [LAYOUT_EPOCH, LAYOUT_IN_FLIGHT, TRANSFER_PARTITIONS_PENDING] {
        metrics::gauge!(name).set(0.0);
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
        "HTTP request latency, by operation and status."
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
    describe_transfers();
    describe_observability();
}

/// Folds recorded histogram samples into their buckets; keeps memory flat.
pub fn upkeep(handle: &PrometheusHandle) {
    handle.run_upkeep();
}

/// Counts one answered HTTP request.
pub fn http_request(op: &'static str, status: http::StatusCode, elapsed: Duration) {
    let status = status.as_str().to_owned();
    metrics::counter!(HTTP_REQUESTS, "op" => op, "status" => status.clone()).increment(1);
    metrics::histogram!(HTTP_DURATION, "op" => op, "status" => status)
        .record(elapsed.as_secs_f64());
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

/// Keys this node received while a membership change moved ranges to it.
pub const TRANSFER_KEYS_RECEIVED: &str = "ringkv_transfer_keys_received_total";
/// Bytes of records moved by those transfers, both ways.
pub const TRANSFER_BYTES_RECEIVED: &str = "ringkv_transfer_bytes_total";
/// Partitions this node must still receive for the target ring.
pub const TRANSFER_PARTITIONS_PENDING: &str = "ringkv_transfer_partitions_pending";
/// Partitions dropped here after a commit made this node no longer their home.
pub const PARTITIONS_DROPPED: &str = "ringkv_transfer_partitions_dropped_total";
/// Keys those drops deleted.
pub const KEYS_DROPPED: &str = "ringkv_transfer_keys_dropped_total";
/// The committed ring's epoch in this node's layout.
pub const LAYOUT_EPOCH: &str = "ringkv_layout_epoch";
/// 1 while a membership change is in flight, by this node's layout.
pub const LAYOUT_IN_FLIGHT: &str = "ringkv_layout_change_in_flight";

fn describe_transfers() {
    metrics::describe_counter!(
        TRANSFER_KEYS_RECEIVED,
        "Keys received by membership transfers."
    );
    metrics::describe_counter!(
        TRANSFER_BYTES_RECEIVED,
        metrics::Unit::Bytes,
        "Bytes of records moved by membership transfers, both ways."
    );
    metrics::describe_gauge!(
        TRANSFER_PARTITIONS_PENDING,
        "Partitions this node must still receive for the target ring."
    );
    metrics::describe_counter!(
        PARTITIONS_DROPPED,
        "Partitions dropped after a commit made this node no longer their home."
    );
    metrics::describe_counter!(KEYS_DROPPED, "Keys deleted by those drops.");
    metrics::describe_gauge!(LAYOUT_EPOCH, "The committed ring's epoch.");
    metrics::describe_gauge!(
        LAYOUT_IN_FLIGHT,
        "1 while a membership change is in flight."
    );
}

/// Counts what one transfer exchange received.
pub fn transfer_received(keys: u64, bytes: u64) {
    metrics::counter!(TRANSFER_KEYS_RECEIVED).increment(keys);
    metrics::counter!(TRANSFER_BYTES_RECEIVED).increment(bytes);
}

/// Counts one dropped partition and its keys.
pub fn partition_dropped(keys: u64) {
    metrics::counter!(PARTITIONS_DROPPED).increment(1);
    metrics::counter!(KEYS_DROPPED).increment(keys);
}

/// The layout's state and the partitions still to receive.
pub fn layout(epoch: u64, in_flight: bool, pending: u64) {
    metrics::gauge!(LAYOUT_EPOCH).set(epoch as f64);
    metrics::gauge!(LAYOUT_IN_FLIGHT).set(if in_flight { 1.0 } else { 0.0 });
    metrics::gauge!(TRANSFER_PARTITIONS_PENDING).set(pending as f64);
}

/// Client requests that failed for want of a quorum, by `op` (`read`, `write`) and
/// `reason` (`insufficient_replicas`: too few replicas live to try; `timeout`: tried,
/// too few answered in time), counted where the answer leaves the node.
pub const QUORUM_FAILURES: &str = "ringkv_quorum_failures_total";
/// Members by gossip `state` (`alive`, `suspect`, `down`, `left`), this node included.
pub const MEMBERS: &str = "ringkv_members";
/// Changes of a member's gossip state seen here, by the state it changed to.
pub const MEMBER_CHANGES: &str = "ringkv_member_state_changes_total";
/// RocksDB's live SST bytes, by column family `cf`.
pub const ROCKSDB_SST_BYTES: &str = "ringkv_rocksdb_sst_bytes";
/// RocksDB's memtable bytes, by `cf`.
pub const ROCKSDB_MEMTABLE_BYTES: &str = "ringkv_rocksdb_memtable_bytes";
/// Bytes RocksDB estimates compaction still has to rewrite, by `cf`.
pub const ROCKSDB_PENDING_COMPACTION_BYTES: &str = "ringkv_rocksdb_pending_compaction_bytes";
/// RocksDB's estimate of the keys held, by `cf`.
pub const ROCKSDB_ESTIMATED_KEYS: &str = "ringkv_rocksdb_estimated_keys";

/// Gossip states, in the order of `GET /cluster`.
pub const MEMBER_STATES: &[&str] = &["alive", "suspect", "down", "left"];
/// `op` of [`QUORUM_FAILURES`].
pub const QUORUM_OPS: &[&str] = &["read", "write"];
/// `reason` of [`QUORUM_FAILURES`].
pub const QUORUM_FAILURE_REASONS: &[&str] = &["insufficient_replicas", "timeout"];

const ROCKSDB_GAUGES: &[&str] = &[
    ROCKSDB_SST_BYTES,
    ROCKSDB_MEMTABLE_BYTES,
    ROCKSDB_PENDING_COMPACTION_BYTES,
    ROCKSDB_ESTIMATED_KEYS,
];

fn register_observability_at_zero() {
    for &op in QUORUM_OPS {
        for &reason in QUORUM_FAILURE_REASONS {
            metrics::counter!(QUORUM_FAILURES, "op" => op, "reason" => reason).increment(0);
        }
    }
    for &state in MEMBER_STATES {
        metrics::gauge!(MEMBERS, "state" => state).increment(0.0);
        metrics::counter!(MEMBER_CHANGES, "state" => state).increment(0);
    }
    for cf in crate::storage::Cf::ALL {
        for &name in ROCKSDB_GAUGES {
            metrics::gauge!(name, "cf" => cf.name()).increment(0.0);
        }
    }
}

fn describe_observability() {
    metrics::describe_counter!(
        QUORUM_FAILURES,
        "Client requests that failed for want of a quorum, by op (read, write) and reason."
    );
    metrics::describe_gauge!(MEMBERS, "Members by gossip state, this node included.");
    metrics::describe_counter!(
        MEMBER_CHANGES,
        "Changes of a member's gossip state seen by this node, by new state."
    );
    metrics::describe_gauge!(
        ROCKSDB_SST_BYTES,
        metrics::Unit::Bytes,
        "Bytes of RocksDB's live SST files, by column family."
    );
    metrics::describe_gauge!(
        ROCKSDB_MEMTABLE_BYTES,
        metrics::Unit::Bytes,
        "Bytes in RocksDB's memtables, by column family."
    );
    metrics::describe_gauge!(
        ROCKSDB_PENDING_COMPACTION_BYTES,
        metrics::Unit::Bytes,
        "Bytes RocksDB estimates compaction still has to rewrite, by column family."
    );
    metrics::describe_gauge!(
        ROCKSDB_ESTIMATED_KEYS,
        "RocksDB's estimate of the keys held, by column family."
    );
}

/// Counts a client request that failed for want of a quorum.
pub fn quorum_failure(op: &'static str, reason: &'static str) {
    metrics::counter!(QUORUM_FAILURES, "op" => op, "reason" => reason).increment(1);
}

/// Publishes how many members are in each gossip state (set when metrics are scraped).
pub fn members(counts: &[(&'static str, usize)]) {
    for &(state, count) in counts {
        metrics::gauge!(MEMBERS, "state" => state).set(count as f64);
    }
}

/// Counts `changes` members that moved to `state`.
pub fn member_changes(state: &'static str, changes: u64) {
    metrics::counter!(MEMBER_CHANGES, "state" => state).increment(changes);
}

/// Publishes the store's own figures (read from the engine when metrics are scraped).
pub fn rocksdb(properties: &[(crate::storage::Cf, crate::storage::CfProperties)]) {
    for (cf, p) in properties {
        let cf = cf.name();
        metrics::gauge!(ROCKSDB_SST_BYTES, "cf" => cf).set(p.sst_bytes as f64);
        metrics::gauge!(ROCKSDB_MEMTABLE_BYTES, "cf" => cf).set(p.memtable_bytes as f64);
        metrics::gauge!(ROCKSDB_PENDING_COMPACTION_BYTES, "cf" => cf)
            .set(p.pending_compaction_bytes as f64);
        metrics::gauge!(ROCKSDB_ESTIMATED_KEYS, "cf" => cf).set(p.estimated_keys as f64);
    }
}

/// Counts every change of a member's gossip state (a member first seen counts as a
/// change to its state) as the cluster's view changes, until the view stops changing
/// for good. Changes gossip makes between two looks at the view are seen as one.
pub async fn count_member_changes(cluster: std::sync::Arc<crate::cluster::Cluster>) {
    let mut changes = cluster.changes();
    let mut seen = member_states(&cluster.view());
    while changes.changed().await.is_ok() {
        let now = member_states(&cluster.view());
        for state in state_changes(&seen, &now) {
            member_changes(state, 1);
        }
        seen = now;
    }
}

fn member_states(view: &crate::cluster::View) -> std::collections::BTreeMap<String, &'static str> {
    view.members()
        .map(|m| (m.id.clone(), m.state.as_str()))
        .collect()
}

/// The new state of each member whose state differs from `before` (or that is new).
fn state_changes(
    before: &std::collections::BTreeMap<String, &'static str>,
    after: &std::collections::BTreeMap<String, &'static str>,
) -> Vec<&'static str> {
    after
        .iter()
        .filter(|(id, state)| before.get(*id) != Some(*state))
        .map(|(_, state)| *state)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_changes_count_new_states_and_new_members() {
        // Proves a member that changed state counts once under its new state, a new
        // member counts under its state, and unchanged members do not count.
        let map = |pairs: &[(&str, &'static str)]| {
            pairs
                .iter()
                .map(|(id, s)| (id.to_string(), *s))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let before = map(&[("n1", "alive"), ("n2", "alive"), ("n3", "suspect")]);
        let after = map(&[
            ("n1", "alive"),
            ("n2", "down"),
            ("n3", "alive"),
            ("n4", "alive"),
        ]);
        assert_eq!(state_changes(&before, &after), ["down", "alive", "alive"]);
        assert!(state_changes(&after, &after).is_empty());
    }
}
