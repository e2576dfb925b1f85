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
//! replicas as `r` still needs, in preference-list order; when one fails, or none
//! answers within 25 ms, it asks the next (a speculative read, as Cassandra's
//! speculative retry). Asking all N would cost a peer call per extra replica on every
//! read, the main cost of a read on a small cluster (docs/benchmarks.md).
//!
//! Read repair: once a read has its `r` replies, a background task waits briefly for
//! the other replicas it asked and sends the merged version to every one that answered
//! stale or missing. It never delays the reply, and at most a bounded number run at
//! once.
//!
//! Caveats: reads count home replicas only (a stand-in holds hints, not a replica).
//! Read repair only reaches the replicas a read asked: a replica a read at `r < n`
//! skipped is repaired by reads that ask it (`r = n`, or a speculative read), by
//! hinted handoff, or by anti-entropy (not built yet).

mod peer;
pub mod quorum;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::cluster::{Cluster, Peer};
use crate::error::{Error, Result};
use crate::handoff::HintStore;
use crate::metrics;
use crate::net::{PeerClient, PeerRequest, PeerResponse, WireSupersedes};
use crate::replica::Replica;
use crate::version::{Clock, VersionVector, Versioned};
use quorum::{Progress, Tracker};

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
    peers: Arc<PeerClient>,
    hints: Arc<HintStore>,
    hinted_handoff: bool,
    /// Bounds the read repairs running at once; a read whose repair finds no permit
    /// skips it (counted) rather than queueing work behind foreground requests.
    repair_permits: Arc<Semaphore>,
}

/// How long the admin view waits for each replica.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Most read repairs in flight at once.
const REPAIRS_IN_FLIGHT_MAX: usize = 256;
/// Longest a read repair waits for the replicas that had not answered the read.
const REPAIR_WAIT: Duration = Duration::from_secs(2);
/// A read asks one more replica when none of those asked answered within this: well
/// above a healthy replica's reply (well under a millisecond on a LAN), well below a
/// request's timeout.
const SPECULATIVE_READ_AFTER: Duration = Duration::from_millis(25);

/// Where a write's copy went.
#[derive(Debug, Clone)]
enum Target {
    /// A home replica, by id.
    Home(String),
    /// A stand-in keeping a hint for a home replica.
    Standin { owner: String, standin: String },
}

impl Coordinator {
    pub fn new(
        replica: Arc<Replica>,
        quorum: Quorum,
        cluster: Arc<Cluster>,
        peers: Arc<PeerClient>,
        hints: Arc<HintStore>,
        hinted_handoff: bool,
    ) -> Self {
        Self {
            node_id: cluster.local_id().to_owned(),
            replica,
            quorum,
            cluster,
            peers,
            hints,
            hinted_handoff,
            repair_permits: Arc::new(Semaphore::new(REPAIRS_IN_FLIGHT_MAX)),
        }
    }

    pub fn quorum(&self) -> Quorum {
        self.quorum
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Members currently alive, this node included.
    /// The local replica's record cache counters.
    pub fn record_cache_stats(&self) -> crate::replica::CacheStats {
        self.replica.cache_stats()
    }

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

    /// Reads `key` at quorum `r`: the merged clock of the replies, `None` if no replica
    /// that answered knows the key. Replicas found stale are repaired in the background.
    pub async fn get(&self, key: &[u8], options: &ReadOptions) -> Result<Option<Clock>> {
        let deadline = Instant::now() + options.timeout;
        let live: Vec<Peer> = self
            .cluster
            .view()
            .preference_list(key, self.quorum.n)
            .into_iter()
            .filter(Peer::is_live)
            .collect();
        if options.r > live.len() {
            return Err(Error::InsufficientReplicas {
                live: live.len(),
                required: options.r,
            });
        }
        let mut tracker = Tracker::new(options.r, live.len());
        let mut answers: Vec<(String, Option<Clock>)> = Vec::with_capacity(live.len());
        if live.iter().any(|p| p.local) {
            match self.replica.get(key) {
                Ok(clock) => {
                    answers.push((self.node_id.clone(), clock));
                    tracker.ok();
                }
                Err(e) => {
                    tracing::error!(error = %e, "local read failed");
                    tracker.fail();
                }
            }
        }
        if tracker.progress() == Progress::Done {
            return Ok(merge_answers(&answers));
        }
        // Ask only as many replicas as the quorum still needs, in preference-list
        // order; ask the next one when one fails, or when none has answered within
        // SPECULATIVE_READ_AFTER (a slow or paused replica costs that much, not the
        // whole timeout).
        let remote: Vec<&Peer> = live.iter().filter(|p| !p.local).collect();
        let (tx, mut replies) = mpsc::channel(remote.len().max(1));
        let mut asked = 0;
        let ask = |asked: &mut usize, tx: &mpsc::Sender<(String, Result<PeerResponse>)>| {
            if let Some(peer) = remote.get(*asked) {
                let request = PeerRequest::Read { key: key.to_vec() };
                self.spawn_call(peer, request, deadline, peer.id.clone(), tx);
                *asked += 1;
            }
        };
        let needed = options.r.saturating_sub(answers.len());
        while asked < needed.min(remote.len()) {
            ask(&mut asked, &tx);
        }
        let mut speculate_at = Instant::now() + SPECULATIVE_READ_AFTER;
        loop {
            match tracker.progress() {
                Progress::Done => {
                    let merged = merge_answers(&answers);
                    // Replicas asked and not failed; the unasked are not waited for.
                    let expected = tracker.reachable() - (remote.len() - asked);
                    drop(tx);
                    // The usual case: every replica asked has answered, all alike.
                    let repair_needed = answers.len() < expected
                        || answers.iter().any(|(_, clock)| *clock != merged);
                    if repair_needed {
                        self.spawn_read_repair(key, live, answers, expected, replies);
                    }
                    return Ok(merged);
                }
                Progress::Failed => {
                    return Err(tracker.insufficient());
                }
                Progress::Waiting => {}
            }
            let wait_until = if asked < remote.len() {
                speculate_at.min(deadline)
            } else {
                deadline
            };
            match tokio::time::timeout_at(wait_until, replies.recv()).await {
                Ok(Some((peer, Ok(PeerResponse::Read(clock))))) => {
                    answers.push((peer, clock));
                    tracker.ok();
                }
                Ok(Some((peer, outcome))) => {
                    log_failed_reply(&peer, "read", outcome);
                    tracker.fail();
                    ask(&mut asked, &tx);
                }
                Ok(None) => {
                    return Err(tracker.insufficient());
                }
                Err(_) if Instant::now() < deadline => {
                    metrics::speculative_read();
                    ask(&mut asked, &tx);
                    speculate_at = Instant::now() + SPECULATIVE_READ_AFTER;
                }
                Err(_) => {
                    return Err(tracker.timed_out());
                }
            }
        }
    }

    /// After a read answered: waits (briefly) for the replicas that had not replied,
    /// then sends the merged version to every replica that answered stale or missing.
    fn spawn_read_repair(
        &self,
        key: &[u8],
        live: Vec<Peer>,
        mut answers: Vec<(String, Option<Clock>)>,
        expected: usize,
        mut replies: mpsc::Receiver<(String, Result<PeerResponse>)>,
    ) {
        let Ok(permit) = self.repair_permits.clone().try_acquire_owned() else {
            metrics::read_repair_skipped();
            return;
        };
        let (key, replica, peers, local) = (
            key.to_vec(),
            self.replica.clone(),
            self.peers.clone(),
            self.node_id.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let until = Instant::now() + REPAIR_WAIT;
            let mut failed = 0;
            while answers.len() + failed < expected {
                match tokio::time::timeout_at(until, replies.recv()).await {
                    Ok(Some((peer, Ok(PeerResponse::Read(clock))))) => answers.push((peer, clock)),
                    Ok(Some(_)) => failed += 1,
                    Ok(None) | Err(_) => break,
                }
            }
            let Some(merged) = merge_answers(&answers) else {
                return;
            };
            for (id, clock) in answers {
                if clock.as_ref() == Some(&merged) {
                    continue;
                }
                metrics::read_repair();
                if id == local {
                    if let Err(e) = replica.merge(&key, &merged, false) {
                        tracing::warn!(error = %e, "local read repair failed");
                    }
                } else if let Some(peer) = live.iter().find(|p| p.id == id) {
                    let request = PeerRequest::Merge {
                        key: key.clone(),
                        clock: merged.clone(),
                        sync: false,
                    };
                    if let Err(e) = peers.call(peer.cluster, request, REPAIR_WAIT).await {
                        tracing::debug!(peer = %id, error = %e, "read repair did not reach the replica");
                    }
                }
            }
        });
    }

    /// Writes `value` (a tombstone for a delete) at quorum `w`.
    pub async fn write(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        supersedes: Supersedes,
        options: &WriteOptions,
    ) -> Result<WriteOutcome> {
        let deadline = Instant::now() + options.timeout;
        let home = self.cluster.view().preference_list(key, self.quorum.n);
        if home.iter().any(|p| p.local) {
            self.write_here(key, value, supersedes, options, deadline)
                .await
        } else {
            self.forward_write(key, value, supersedes, options, &home, deadline)
                .await
        }
    }

    /// Coordinates a write on this node: makes the dot, stores it, sends it to the
    /// other home replicas and waits for `w` acknowledgements (this one included).
    /// With a sloppy quorum, a home replica that is down or fails is replaced by the
    /// next live stand-in past the home replicas, which keeps the write as a hint.
    async fn write_here(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        supersedes: Supersedes,
        options: &WriteOptions,
        deadline: Instant,
    ) -> Result<WriteOutcome> {
        let candidates = self.cluster.view().candidates(key);
        let home_count = self.quorum.n.min(candidates.len());
        let (home, rest) = candidates.split_at(home_count);
        let others: Vec<&Peer> = home.iter().filter(|p| !p.local).collect();
        let sloppy = options.sloppy && self.hinted_handoff;
        let mut standins: VecDeque<&Peer> = if sloppy {
            rest.iter().filter(|p| p.is_live() && !p.local).collect()
        } else {
            VecDeque::new()
        };
        let live_home = 1 + others.iter().filter(|p| p.is_live()).count();
        let down_home = others.len() + 1 - live_home;
        let reachable = live_home + down_home.min(standins.len());
        if options.w > reachable {
            return Err(Error::InsufficientReplicas {
                live: reachable,
                required: options.w,
            });
        }
        let context = match supersedes {
            Supersedes::Context(vv) => vv,
            Supersedes::Nothing => VersionVector::empty(),
            Supersedes::CurrentVersions => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                let read = ReadOptions {
                    r: options.r,
                    timeout,
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
        let owned_key = key.to_vec();
        let sync = options.sync;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let clock = run_local(sync, timeout, options.w, move || {
            replica.coordinate(&owned_key, &context, versioned, sync)
        })
        .await?;

        let mut tracker = Tracker::new(options.w, reachable);
        let mut acks = vec![self.node_id.clone()];
        let mut hinted = Vec::new();
        tracker.ok();
        let (tx, mut replies) = mpsc::channel(candidates.len().max(1));
        let merge = || PeerRequest::Merge {
            key: key.to_vec(),
            clock: clock.clone(),
            sync,
        };
        let hint = |owner: &str| PeerRequest::Hint {
            owner: owner.to_owned(),
            key: key.to_vec(),
            clock: clock.clone(),
            sync,
        };
        for peer in &others {
            if peer.is_live() {
                self.spawn_call(peer, merge(), deadline, Target::Home(peer.id.clone()), &tx);
            } else if let Some(standin) = standins.pop_front() {
                let target = Target::Standin {
                    owner: peer.id.clone(),
                    standin: standin.id.clone(),
                };
                self.spawn_call(standin, hint(&peer.id), deadline, target, &tx);
            }
        }
        loop {
            match tracker.progress() {
                Progress::Done => {
                    return Ok(WriteOutcome {
                        clock,
                        acks,
                        hinted,
                    });
                }
                Progress::Failed => {
                    return Err(tracker.insufficient());
                }
                Progress::Waiting => {}
            }
            let (target, outcome) = match tokio::time::timeout_at(deadline, replies.recv()).await {
                Ok(Some(reply)) => reply,
                Ok(None) => {
                    return Err(tracker.insufficient());
                }
                Err(_) => {
                    return Err(tracker.timed_out());
                }
            };
            match (target, outcome) {
                (Target::Home(id), Ok(PeerResponse::Merged)) => {
                    acks.push(id);
                    tracker.ok();
                }
                (Target::Standin { owner, standin }, Ok(PeerResponse::Hinted)) => {
                    acks.push(standin.clone());
                    hinted.push((owner, standin));
                    tracker.ok();
                }
                (target, outcome) => {
                    let owner = match target {
                        Target::Home(id) => {
                            log_failed_reply(&id, "merge", outcome);
                            id
                        }
                        Target::Standin { owner, standin } => {
                            log_failed_reply(&standin, "hint", outcome);
                            owner
                        }
                    };
                    // The replica that failed is replaced by the next stand-in, if any.
                    match standins.pop_front() {
                        Some(standin) => {
                            let next = Target::Standin {
                                owner: owner.clone(),
                                standin: standin.id.clone(),
                            };
                            self.spawn_call(standin, hint(&owner), deadline, next, &tx);
                        }
                        None => {
                            tracker.fail();
                        }
                    }
                }
            }
        }
    }

    /// Hands the write to the first live home replica that answers.
    async fn forward_write(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        supersedes: Supersedes,
        options: &WriteOptions,
        home: &[Peer],
        deadline: Instant,
    ) -> Result<WriteOutcome> {
        let live: Vec<&Peer> = home.iter().filter(|p| p.is_live()).collect();
        // With a sloppy quorum the coordinating home replica may make up W with
        // stand-ins, so one live home replica is enough to try; without it, W of them.
        let sloppy = options.sloppy && self.hinted_handoff;
        let needed = if sloppy { 1 } else { options.w };
        if live.len() < needed {
            return Err(Error::InsufficientReplicas {
                live: live.len(),
                required: options.w,
            });
        }
        let supersedes = match supersedes {
            Supersedes::Context(vv) => WireSupersedes::Context(vv),
            Supersedes::Nothing => WireSupersedes::Nothing,
            Supersedes::CurrentVersions => WireSupersedes::CurrentVersions,
        };
        for peer in live {
            let timeout = deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                break;
            }
            let request = PeerRequest::Write {
                key: key.to_vec(),
                value: value.clone(),
                supersedes: supersedes.clone(),
                w: options.w as u32,
                r: options.r as u32,
                timeout_ms: timeout.as_millis() as u64,
                sync: options.sync,
                sloppy: options.sloppy,
            };
            match self.peers.call(peer.cluster, request, timeout).await {
                Ok(PeerResponse::Written {
                    clock,
                    acks,
                    hinted,
                }) => {
                    return Ok(WriteOutcome {
                        clock,
                        acks,
                        hinted,
                    });
                }
                Ok(PeerResponse::Error { kind, message }) => {
                    return Err(peer::from_wire(kind, message, &peer.id));
                }
                // Never sent: the next home replica may take it.
                Err(e @ Error::PeerUnreachable { .. }) => {
                    tracing::warn!(peer = %peer.id, error = %e, "forwarding a write failed")
                }
                // The peer may have applied it (a reset or timeout after sending): sending
                // it to another replica could apply it twice, a second dot that shows as a
                // false sibling. Say the outcome is unknown instead (504), as a quorum
                // timeout does.
                Err(e) => {
                    tracing::warn!(peer = %peer.id, error = %e, "forwarded write's outcome unknown");
                    return Err(Error::Timeout {
                        acks: 0,
                        required: options.w,
                    });
                }
                Ok(other) => {
                    tracing::warn!(peer = %peer.id, ?other, "unexpected answer to a forwarded write");
                    return Err(Error::Timeout {
                        acks: 0,
                        required: options.w,
                    });
                }
            }
        }
        if Instant::now() >= deadline {
            Err(Error::Timeout {
                acks: 0,
                required: options.w,
            })
        } else {
            Err(Error::InsufficientReplicas {
                live: 0,
                required: options.w,
            })
        }
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

/// The merge of every clock the replicas answered, `None` if none knew the key.
fn merge_answers(answers: &[(String, Option<Clock>)]) -> Option<Clock> {
    answers
        .iter()
        .filter_map(|(_, c)| c.as_ref())
        .fold(None, |merged, c| {
            Some(match merged {
                Some(m) => c.sync(&m),
                None => c.clone(),
            })
        })
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
