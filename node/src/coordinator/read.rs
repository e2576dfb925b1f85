//! The read path: ask the local replica and as many others as `r` needs, speculate
//! past a slow one, answer with the merge, and leave repair to [`crate::repair`].

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::quorum::{Progress, Tracker};
use super::{Coordinator, ReadOptions, SPECULATIVE_READ_AFTER, log_failed_reply};
use crate::cluster::Peer;
use crate::error::{Error, Result};
use crate::metrics;
use crate::net::{PeerRequest, PeerResponse};
use crate::repair::merge_answers;
use crate::version::Clock;

impl Coordinator {
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
        // Ask only as many replicas as the quorum still needs, the quick ones first
        // (see [`super::latency`]); ask the next one when one fails, or when none has
        // answered within SPECULATIVE_READ_AFTER (a slow or paused replica costs that
        // much, not the whole timeout).
        let needed = options.r.saturating_sub(answers.len());
        let candidates: Vec<&Peer> = live.iter().filter(|p| !p.local).collect();
        let ids: Vec<&str> = candidates.iter().map(|p| p.id.as_str()).collect();
        let plan = self.read_latencies.plan(&ids, needed, Instant::now());
        let remote: Vec<&Peer> = plan.order.iter().map(|i| candidates[*i]).collect();
        let (tx, mut replies) = mpsc::channel(remote.len().max(1));
        let mut asked = 0;
        let ask = |asked: &mut usize, tx: &mpsc::Sender<(String, Result<PeerResponse>)>| {
            if let Some(peer) = remote.get(*asked) {
                self.spawn_read(peer, key, deadline, tx);
                *asked += 1;
            }
        };
        while asked < plan.ask.min(remote.len()) {
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
                    let mut stale = false;
                    for (peer, clock) in &answers {
                        stale |= *clock != merged;
                        if clock.is_none() && merged.is_some() && *peer != self.node_id {
                            self.read_latencies.missing(peer, Instant::now());
                        }
                    }
                    let repair_needed = answers.len() < expected || stale;
                    if repair_needed {
                        self.repair.spawn(key, live, answers, expected, replies);
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

    /// Reads `key` from `peer` in a task of its own, sends `(peer, outcome)` on `tx`
    /// and feeds the call's latency to [`super::latency`].
    fn spawn_read(
        &self,
        peer: &Peer,
        key: &[u8],
        deadline: Instant,
        tx: &mpsc::Sender<(String, Result<PeerResponse>)>,
    ) {
        let (tx, client, addr) = (tx.clone(), self.peers.clone(), peer.cluster);
        let (id, latencies) = (peer.id.clone(), self.read_latencies.clone());
        let request = PeerRequest::Read { key: key.to_vec() };
        let timeout = deadline.saturating_duration_since(Instant::now());
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = client.call(addr, request, timeout).await;
            let ok = matches!(outcome, Ok(PeerResponse::Read(_)));
            latencies.record(&id, started.elapsed(), ok, Instant::now());
            let _ = tx.send((id, outcome)).await;
        });
    }
}
