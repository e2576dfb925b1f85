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
//! A write that reaches a node outside the key's preference list is forwarded to the
//! first live home replica, which coordinates it; the forwarded write is always
//! coordinated where it lands, so two nodes with momentarily different views cannot
//! bounce it between them. Replicas that answer after the quorum finish in the
//! background (their tasks own what they need), so a slow replica never delays the
//! client and still gets the write.
//!
//! Sloppy quorum: a home replica that gossip reports down, or that fails to answer, is
//! replaced by the next live node past the home replicas in the key's ring order; that
//! stand-in keeps the write as a hint for the owner (see [`crate::handoff`]) and its
//! acknowledgement counts toward `w` unless the request says `sloppy=false` or the node
//! runs with `--hinted-handoff false`.
//!
//! A read asks the local replica (when it is one) and only as many other live home
//! replicas as `r` still needs, in preference-list order unless one has been clearly
//! slower than another lately ([`latency`], as Cassandra's dynamic snitch); when one
//! fails, or none answers within 25 ms, it asks the next (a speculative read, as
//! Cassandra's speculative retry). Asking all N would cost a peer call per extra
//! replica on every read, the main cost of a read on a small cluster
//! (docs/benchmarks.md).
//!
//! Read repair: once a read has its `r` replies, a background task waits briefly for
//! the other replicas it asked and sends the merged version to every one that answered
//! stale or missing ([`crate::repair`]). It never delays the reply, and at most a
//! bounded number run at once.
//!
//! While a membership change is in flight ([`crate::membership`]), a write goes to the
//! home replicas of every live ring and waits for `w` acknowledgements in each; reads
//! use the committed ring only. With no change in flight there is one ring, and this
//! is the plain quorum above.
//!
//! Caveats: reads count home replicas only (a stand-in holds hints, not a replica).
//! Read repair only reaches the replicas a read asked: a replica a read at `r < n`
//! skipped is repaired by reads that ask it (`r = n`, or a speculative read), by
//! hinted handoff, or by anti-entropy.
//!
//! Layout: [`read`] (the read path), [`latency`] (which replicas it asks first),
//! [`write`] (coordinating a write), [`forward`]
//! (to a home replica), [`peer`] (what other nodes' calls do here), [`quorum`] (the
//! pure tracker); read repair is [`crate::repair`].

mod forward;
mod latency;
mod peer;
pub mod quorum;
mod read;
mod write;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cluster::{Cluster, Peer};
use crate::env::Env;
use crate::error::{Error, Result};
use crate::handoff::HintStore;
use crate::net::{PeerRequest, PeerResponse, PeerTransport};
use crate::repair::ReadRepair;
use crate::replica::Replica;
use crate::version::{Clock, VersionVector};

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
    cluster: Arc<Cluster>,
    peers: Arc<dyn PeerTransport>,
    hints: Arc<HintStore>,
    hinted_handoff: bool,
    env: Env,
    /// Repairs the replicas a read found stale, in the background.
    repair: ReadRepair,
    /// Which replicas reads ask first.
    read_latencies: Arc<latency::ReadLatencies>,
}

/// How long the admin view waits for each replica.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// A read asks one more replica when none of those asked answered within this: well
/// above a healthy replica's reply (well under a millisecond on a LAN), well below a
/// request's timeout.
const SPECULATIVE_READ_AFTER: Duration = Duration::from_millis(25);

impl Coordinator {
    pub fn new(
        replica: Arc<Replica>,
        quorum: Quorum,
        cluster: Arc<Cluster>,
        peers: Arc<dyn PeerTransport>,
        hints: Arc<HintStore>,
        hinted_handoff: bool,
        env: Env,
    ) -> Self {
        let repair = ReadRepair::new(replica.clone(), peers.clone(), cluster.local_id());
        Self {
            repair,
            node_id: cluster.local_id().to_owned(),
            replica,
            quorum,
            cluster,
            peers,
            hints,
            hinted_handoff,
            env,
            read_latencies: Arc::default(),
        }
    }

    pub fn quorum(&self) -> Quorum {
        self.quorum
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The local replica's record cache counters.
    pub fn record_cache_stats(&self) -> crate::replica::CacheStats {
        self.replica.cache_stats()
    }

    /// Members currently alive, this node included.
    pub fn members_alive(&self) -> usize {
        self.cluster.view().members_alive()
    }

    /// Hints this node keeps for others, per intended owner.
    pub fn hints_pending(&self) -> std::collections::BTreeMap<String, u64> {
        self.hints.pending()
    }

    /// The key's home replicas, in preference order.
    pub fn preference_list(&self, key: &[u8]) -> Vec<String> {
        self.cluster
            .view()
            .preference_list(key, self.quorum.n)
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    /// Calls `peer` in a task of its own and sends `(tag, outcome)` on `tx`.
    fn spawn_call<T: Send + 'static>(
        &self,
        peer: &Peer,
        request: PeerRequest,
        deadline: Instant,
        tag: T,
        tx: &mpsc::Sender<(T, Result<PeerResponse>)>,
    ) {
        let (tx, client, addr) = (tx.clone(), self.peers.clone(), peer.cluster);
        let timeout = deadline.saturating_duration_since(Instant::now());
        tokio::spawn(async move {
            let outcome = client.call(addr, request, timeout).await;
            let _ = tx.send((tag, outcome)).await;
        });
    }

    /// Each home replica's own view of `key`, without a quorum (the admin endpoint).
    pub async fn replica_reports(&self, key: &[u8]) -> Vec<ReplicaReport> {
        let home = self.cluster.view().preference_list(key, self.quorum.n);
        let reports = home.into_iter().map(|peer| async move {
            let result = if peer.local {
                self.replica.get(key).map_err(|e| e.to_string())
            } else {
                match self
                    .peers
                    .call(
                        peer.cluster,
                        PeerRequest::Read { key: key.to_vec() },
                        REPORT_TIMEOUT,
                    )
                    .await
                {
                    Ok(PeerResponse::Read(clock)) => Ok(clock),
                    Ok(PeerResponse::Error { message, .. }) => Err(message),
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(_) if !peer.is_live() => Err("unreachable".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            };
            ReplicaReport {
                node: peer.id,
                state: peer.state.as_str(),
                result,
            }
        });
        futures::future::join_all(reports).await
    }
}

fn log_failed_reply(peer: &str, op: &str, outcome: Result<PeerResponse>) {
    match outcome {
        Ok(PeerResponse::Error { kind, message }) => {
            tracing::warn!(%peer, op, ?kind, %message, "replica refused");
        }
        Ok(other) => tracing::warn!(%peer, op, ?other, "unexpected answer from a replica"),
        Err(e) => tracing::debug!(%peer, op, error = %e, "replica did not answer"),
    }
}

/// Runs a call on the local replica within `timeout`. Calls that may wait on the disk
/// (`blocking`: fsync'ed writes) run where the [`Env`] puts storage calls (the blocking
/// pool in production); the rest are short RocksDB point operations and run inline.
async fn run_local<T: Send + 'static>(
    env: &Env,
    blocking: bool,
    timeout: Duration,
    required: usize,
    call: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    if !blocking {
        return call();
    }
    match tokio::time::timeout(timeout, env.blocking(call)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout { acks: 0, required }),
    }
}
