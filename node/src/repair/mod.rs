//! Read repair: once a read has answered, replicas that answered stale or missing get
//! the merged version, in the background.
//!
//! A repair task waits (at most [`REPAIR_WAIT`]) for the replicas the read asked and
//! had not heard from, merges every answer, and sends the merge to each replica whose
//! answer differed: the local replica directly, the others as a peer `Merge`. At most
//! [`REPAIRS_IN_FLIGHT_MAX`] run at once; a read that finds no room skips its repair
//! (counted) rather than queueing work behind foreground requests. It never delays
//! the read's answer.
//!
//! Caveat: only replicas the read asked are repaired; hinted handoff and (later)
//! anti-entropy reach the others.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::Result;
use crate::cluster::Peer;
use crate::metrics;
use crate::net::{PeerRequest, PeerResponse, PeerTransport};
use crate::replica::Replica;
use crate::version::Clock;

/// Most read repairs in flight at once.
const REPAIRS_IN_FLIGHT_MAX: usize = 256;
/// Longest a read repair waits for the replicas that had not answered the read.
const REPAIR_WAIT: Duration = Duration::from_secs(2);

/// One node's read repairs.
#[derive(Debug)]
pub struct ReadRepair {
    permits: Arc<Semaphore>,
    replica: Arc<Replica>,
    peers: Arc<dyn PeerTransport>,
    local: String,
}

impl ReadRepair {
    pub fn new(replica: Arc<Replica>, peers: Arc<dyn PeerTransport>, local: &str) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(REPAIRS_IN_FLIGHT_MAX)),
            replica,
            peers,
            local: local.to_owned(),
        }
    }

    /// After a read answered: waits (briefly) for the replicas that had not replied,
    /// then sends the merged version to every replica that answered stale or missing.
    pub fn spawn(
        &self,
        key: &[u8],
        live: Vec<Peer>,
        mut answers: Vec<(String, Option<Clock>)>,
        expected: usize,
        mut replies: mpsc::Receiver<(String, Result<PeerResponse>)>,
    ) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics::read_repair_skipped();
            return;
        };
        let (key, replica, peers, local) = (
            key.to_vec(),
            self.replica.clone(),
            self.peers.clone(),
            self.local.clone(),
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
}

/// The merge of every clock the replicas answered, `None` if none knew the key.
pub fn merge_answers(answers: &[(String, Option<Clock>)]) -> Option<Clock> {
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
