//! The coordinator: turns a client's read or write into replica operations and
//! decides when enough of them answered.
//!
//! A write creates its dot on a replica of the key (the coordinating replica), which
//! stores it and hands the resulting clock to the other replicas; the client is
//! answered once `w` replicas acknowledged. A read asks the replicas and answers once
//! `r` replied, with the merge of their clocks. Fewer reachable replicas than required
//! fails fast with [`Error::InsufficientReplicas`]; replies that do not arrive in time
//! fail with [`Error::Timeout`].
//!
//! Caveat (single-node stage): the preference list is this node alone, so `n` larger
//! than 1 answers every request with `insufficient_replicas` unless `r`/`w` are 1.
//! Placement over the ring, peer RPC and quorums across nodes come with the cluster.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::replica::Replica;
use crate::version::{Clock, VersionVector, Versioned};

/// Replication defaults of the node (`--n`, `--r`, `--w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub n: usize,
    pub r: usize,
    pub w: usize,
}

/// Per-request read settings.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub r: usize,
    pub timeout: Duration,
    /// Stand-ins may answer for down home replicas.
    pub sloppy: bool,
}

/// Per-request write settings.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub w: usize,
    /// Quorum of the read a write does first when it must learn the current context.
    pub r: usize,
    pub timeout: Duration,
    /// Replicas fsync before acknowledging.
    pub sync: bool,
    pub sloppy: bool,
}

/// What a write supersedes.
#[derive(Debug, Clone)]
pub enum Supersedes {
    /// Exactly what this context (from an earlier read) saw.
    Context(VersionVector),
    /// Nothing: the write is concurrent with every stored version.
    Nothing,
    /// Whatever a read at `r` finds now (overwrite, and delete without a context).
    CurrentVersions,
}

/// A write's result.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// The key's clock on the coordinating replica after the write.
    pub clock: Clock,
    /// Replicas that acknowledged, coordinating replica first.
    pub acks: Vec<String>,
    /// `(intended owner, stand-in)` pairs where stand-ins took the write.
    pub hinted: Vec<(String, String)>,
}

/// One replica's answer for the admin view of a key.
#[derive(Debug, Clone)]
pub struct ReplicaReport {
    pub node: String,
    pub state: &'static str,
    pub result: Result<Option<Clock>, String>,
}

/// Coordinates client requests over the key's replicas.
#[derive(Debug)]
pub struct Coordinator {
    node_id: String,
    replica: Arc<Replica>,
    quorum: Quorum,
}

impl Coordinator {
    pub fn new(node_id: String, replica: Arc<Replica>, quorum: Quorum) -> Self {
        Self {
            node_id,
            replica,
            quorum,
        }
    }

    pub fn quorum(&self) -> Quorum {
        self.quorum
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Members currently alive, this node included.
    pub fn members_alive(&self) -> usize {
        1
    }

    /// The key's home replicas, in preference order.
    pub fn preference_list(&self, _key: &[u8]) -> Vec<String> {
        vec![self.node_id.clone()]
    }

    /// Reads `key` at quorum `r`: the merged clock of the replies, `None` if no replica
    /// knows the key.
    pub async fn get(&self, key: &[u8], options: &ReadOptions) -> Result<Option<Clock>> {
        let live = self.preference_list(key).len();
        if options.r > live {
            return Err(Error::InsufficientReplicas {
                live,
                required: options.r,
            });
        }
        let replica = self.replica.clone();
        let key = key.to_vec();
        run_local(false, options.timeout, options.r, move || replica.get(&key)).await
    }

    /// Writes `value` (a tombstone for a delete) at quorum `w`.
    pub async fn write(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        supersedes: Supersedes,
        options: &WriteOptions,
    ) -> Result<WriteOutcome> {
        let live = self.preference_list(key).len();
        if options.w > live {
            return Err(Error::InsufficientReplicas {
                live,
                required: options.w,
            });
        }
        let context = match supersedes {
            Supersedes::Context(vv) => vv,
            Supersedes::Nothing => VersionVector::empty(),
            Supersedes::CurrentVersions => {
                let read = ReadOptions {
                    r: options.r,
                    timeout: options.timeout,
                    sloppy: options.sloppy,
                };
                self.get(key, &read)
                    .await?
                    .map(|c| c.context())
                    .unwrap_or_default()
            }
        };
        let versioned = Versioned {
            ts_ms: now_ms(),
            data: value,
        };
        let replica = self.replica.clone();
        let key = key.to_vec();
        let sync = options.sync;
        let clock = run_local(sync, options.timeout, options.w, move || {
            replica.coordinate(&key, &context, versioned, sync)
        })
        .await?;
        Ok(WriteOutcome {
            clock,
            acks: vec![self.node_id.clone()],
            hinted: Vec::new(),
        })
    }

    /// Each home replica's own view of `key`, without a quorum (the admin endpoint).
    pub async fn replica_reports(&self, key: &[u8]) -> Vec<ReplicaReport> {
        let replica = self.replica.clone();
        let k = key.to_vec();
        let result = run_local(false, Duration::from_secs(5), 1, move || replica.get(&k))
            .await
            .map_err(|e| e.to_string());
        vec![ReplicaReport {
            node: self.node_id.clone(),
            state: "alive",
            result,
        }]
    }
}

/// Runs a call on the local replica within `timeout`. Calls that may wait on the disk
/// (`blocking`: fsync'ed writes) run on the blocking pool; the rest are short RocksDB
/// point operations and run inline.
async fn run_local<T: Send + 'static>(
    blocking: bool,
    timeout: Duration,
    required: usize,
    call: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    if !blocking {
        return call();
    }
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(call)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(Error::Storage(format!("replica task failed: {join}"))),
        Err(_) => Err(Error::Timeout { acks: 0, required }),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
