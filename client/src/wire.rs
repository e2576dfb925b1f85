//! Wire types shared by the server and its clients: header names, JSON bodies and
//! the error body of README.md#http-api.
//!
//! Every type here is plain data with serde derives, so the server, the async client,
//! the CLI and the tests agree on one definition of each shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Request and response header carrying the opaque causal context of a key.
pub const HEADER_CONTEXT: &str = "x-ringkv-context";
/// Response header of every write: the replicas that acknowledged it, comma-separated.
pub const HEADER_ACKS: &str = "x-ringkv-acks";
/// Response header of a write that used stand-ins: `owner->standin`, comma-separated.
pub const HEADER_HINTED: &str = "x-ringkv-hinted";

/// Error codes of the `error` field, one per row of README.md#http-api.
pub mod codes {
    pub const BAD_REQUEST: &str = "bad_request";
    pub const KEY_TOO_LONG: &str = "key_too_long";
    pub const BAD_CONTEXT: &str = "bad_context";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const NOT_FOUND: &str = "not_found";
    pub const TOO_MANY_SIBLINGS: &str = "too_many_siblings";
    pub const VALUE_TOO_LARGE: &str = "value_too_large";
    pub const INSUFFICIENT_REPLICAS: &str = "insufficient_replicas";
    pub const TIMEOUT: &str = "timeout";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const INTERNAL: &str = "internal";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const NODE_ALIVE: &str = "node_alive";
    pub const CONFLICT: &str = "conflict";
}

/// `POST /admin/leave` and `POST /admin/remove/{id}`: the node and its ring state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingChangeBody {
    pub node: String,
    pub ring: String,
}

/// The body of every error response: `{"error":"<code>","message":"…"}` plus the
/// fields that help the caller act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
    /// 503 `insufficient_replicas`: replicas reachable when the request was tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<usize>,
    /// 503/504: replies the request needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<usize>,
    /// 504 `timeout`: replies that arrived in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks: Option<usize>,
    /// 400 `key_too_long` / 413 `value_too_large`: the limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<usize>,
    /// 409 `too_many_siblings`: the sibling limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_siblings: Option<usize>,
}

impl ErrorBody {
    pub fn new(error: &str, message: impl Into<String>) -> Self {
        Self {
            error: error.to_owned(),
            message: message.into(),
            live: None,
            required: None,
            acks: None,
            limit_bytes: None,
            max_siblings: None,
        }
    }
}

/// 300 body of `GET /kv/{key}` when the key holds concurrent values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiblingsBody {
    /// The key, lossily decoded as UTF-8 (the request path has the exact bytes).
    pub key: String,
    pub context: String,
    /// Each sibling's value, base64 (standard alphabet, padded).
    pub siblings: Vec<String>,
}

/// `encoding` of a JSON value that is not UTF-8 and so travels as base64.
pub const ENCODING_BASE64: &str = "base64";

/// The `data` object of the JSON API (`/kv`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JsonData {
    pub key: String,
    /// The single value (PUT bodies and 200 answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The concurrent values (300 answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// `"base64"` when `value`/`values` are base64 because a stored value is not UTF-8;
    /// a PUT body may set it to send bytes that are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// Body of `PUT /kv`: `{"data":{"key":"foo","value":"bar"}}`, with an optional
/// `"context"` (then the write supersedes that context instead of overwriting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonPutRequest {
    pub data: JsonData,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// Answer of `PUT /kv` and `GET /kv?key=…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonKvResponse {
    pub data: JsonData,
    pub context: String,
}

/// `GET /health` and `GET /healthz`: 200 with `status` `ok` while the node serves;
/// with `?ready=true`, 503 with `status` `not_ready` unless `ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthBody {
    pub status: String,
    pub node: String,
    pub members_alive: usize,
    /// Nodes on the committed ring (reads use it).
    #[serde(default)]
    pub ring_members: usize,
    /// True while a membership change is under way.
    #[serde(default)]
    pub change_in_flight: bool,
    /// This node's place on the ring: `joining`, `member`, `leaving` or `removed`
    /// (empty from a node that predates the field).
    #[serde(default)]
    pub ring: String,
    /// True when this node is a `member`: on the committed ring, its ranges received,
    /// so reads use it (what `GET /health?ready=true` answers 200 for).
    #[serde(default)]
    pub ready: bool,
}

/// One member in `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberBody {
    pub id: String,
    pub http: String,
    pub cluster: String,
    /// `alive`, `suspect`, `down` or `left`.
    pub state: String,
    /// `joining`, `member`, `leaving` or `removed`.
    #[serde(default)]
    pub ring: String,
}

/// Hinted-handoff summary in `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HintsBody {
    /// Pending hints per intended owner.
    pub pending: BTreeMap<String, u64>,
}

/// `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterBody {
    pub node: String,
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub members: Vec<MemberBody>,
    pub hints: HintsBody,
    #[serde(default)]
    pub anti_entropy: AntiEntropyBody,
    #[serde(default)]
    pub transfers: TransfersBody,
}

/// Membership changes in `GET /cluster`: the layout this node has, and the ranges it
/// is receiving or dropping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TransfersBody {
    /// The committed ring's epoch (grows at every membership change).
    pub epoch: u64,
    /// True while a change is under way (some node still receiving, or a previous
    /// ring still written to).
    pub in_flight: bool,
    /// Nodes of the target ring that hold all their ranges, and all of them.
    pub nodes_ready: usize,
    pub nodes_total: usize,
    /// Partitions this node must receive for the target ring, and those received.
    pub partitions_to_receive: u64,
    pub partitions_received: u64,
    /// Since start: what this node received and dropped.
    pub keys_received: u64,
    pub bytes_received: u64,
    pub partitions_dropped: u64,
    pub keys_dropped: u64,
    /// The last failure, if the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Anti-entropy in `GET /cluster`: the asked node's rounds and its last exchange with
/// each peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AntiEntropyBody {
    /// Time between rounds; `null` when anti-entropy is off.
    pub interval_ms: Option<u64>,
    pub rounds: u64,
    pub peers: BTreeMap<String, AntiEntropyPeerBody>,
    /// Keys this node's exchanges pushed or pulled, since start.
    pub keys_repaired: u64,
    /// Tombstones purged by the GC rounds this node ran, since start.
    pub tombstones_purged: u64,
    /// Partition trees rebuilt (dirty ones and the scrub), since start.
    pub tree_rebuilds: u64,
    /// Partitions whose trees wait for a rebuild.
    pub dirty_partitions: u64,
}

/// This node's last exchange with one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AntiEntropyPeerBody {
    /// When it ended, in ms since the Unix epoch.
    pub last_exchange_ms: u64,
    /// `ok`, or `failed: <reason>`.
    pub last_result: String,
    pub partitions_differing: u64,
    pub segments_differing: u64,
    /// Totals since start.
    pub keys_sent: u64,
    pub keys_received: u64,
}

/// One replica's answer in `GET /admin/replicas/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaBody {
    pub node: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    /// Live values, base64; tombstones are never listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siblings: Option<Vec<String>>,
    /// True when the replica holds only tombstones for the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<bool>,
    /// The replica's version vector as a context token (equal tokens: same versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /admin/replicas/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicasBody {
    pub key: String,
    pub preference_list: Vec<String>,
    pub replicas: Vec<ReplicaBody>,
}

/// `GET /stats`: one node's recent requests (the last few complete seconds), the
/// hints it keeps and its store, for the dashboard's live view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsBody {
    pub node: String,
    pub uptime_ms: u64,
    /// Seconds the rates and quantiles are over.
    pub window_s: u64,
    /// KV requests (raw and JSON) only: the dashboard's own polling is not counted.
    pub reads_per_s: f64,
    pub writes_per_s: f64,
    /// KV answers with a 5xx status, per second.
    pub errors_per_s: f64,
    /// Latency of the KV requests in the window; `null` when there were none.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Since start.
    pub reads_total: u64,
    pub writes_total: u64,
    pub errors_total: u64,
    /// Hints this node keeps, per intended owner.
    pub hints_pending: BTreeMap<String, u64>,
    /// The store; `null` where the engine reports nothing (in-memory stores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageBody>,
}

/// RocksDB's own figures, summed over its column families.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StorageBody {
    /// Bytes of the live SST files.
    pub sst_bytes: u64,
    /// Bytes in memtables (active, immutable and pinned).
    pub memtable_bytes: u64,
    /// Bytes compaction estimates it still has to rewrite.
    pub pending_compaction_bytes: u64,
    /// RocksDB's estimate of the keys stored (all column families).
    pub estimated_keys: u64,
}

/// `GET /stats?cluster=true`: every member's `/stats`, fetched by the asked node, so
/// that a page served by one node needs no request to any other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatsBody {
    /// The node that answered.
    pub node: String,
    pub nodes: Vec<MemberStatsBody>,
}

/// One member in [`ClusterStatsBody`]: its stats, or why there are none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatsBody {
    pub id: String,
    /// Liveness as the asked node's gossip sees it.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsBody>,
    /// `down (gossip)`, `unreachable: …`, `timeout`, `HTTP 401`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /ring`: how the ring's partitions fall on the members, from the asked node's
/// view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingBody {
    pub node: String,
    pub n: usize,
    /// Partitions of the key space (fixed).
    pub partitions: usize,
    pub owners: Vec<RingOwnerBody>,
}

/// One member's share of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingOwnerBody {
    pub id: String,
    /// Partitions whose preference list starts with this member.
    pub primary_partitions: usize,
    /// Partitions of which it is one of the N home replicas.
    pub home_partitions: usize,
}
