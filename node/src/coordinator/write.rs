//! The write path: coordinate a write on a home replica (make the dot, store it,
//! replicate it to the other home replicas, or to stand-ins with hints for those that
//! are down or fail) and wait for `w` acknowledgements; a node outside the key's
//! preference list forwards it ([`super::forward`]).

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::quorum::{Progress, Tracker};
use super::{
    Coordinator, ReadOptions, Supersedes, WriteOptions, WriteOutcome, log_failed_reply, run_local,
};
use crate::cluster::Peer;
use crate::error::{Error, Result};
use crate::net::{PeerRequest, PeerResponse};
use crate::version::{VersionVector, Versioned};

/// Where a write's copy went.
#[derive(Debug, Clone)]
enum Target {
    /// A home replica, by id.
    Home(String),
    /// A stand-in keeping a hint for a home replica.
    Standin { owner: String, standin: String },
}

impl Coordinator {
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
    pub(super) async fn write_here(
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
            ts_ms: self.env.now_ms(),
            data: value,
        };
        let replica = self.replica.clone();
        let owned_key = key.to_vec();
        let sync = options.sync;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let clock = run_local(&self.env, sync, timeout, options.w, move || {
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
}
