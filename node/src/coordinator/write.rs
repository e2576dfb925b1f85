//! The write path: coordinate a write on a home replica (make the dot, store it,
//! replicate it to the other home replicas, or to stand-ins with hints for those that
//! are down or fail) and wait for `w` acknowledgements; a node outside the key's
//! preference list forwards it ([`super::forward`]).

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::quorum::{Progress, RingsTracker};
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
        let plan = self.cluster.view().write_plan(key, self.quorum.n);
        if plan.includes_local() {
            self.write_here(key, value, supersedes, options, deadline)
                .await
        } else {
            self.forward_write(key, value, supersedes, options, &plan.homes, deadline)
                .await
        }
    }

    /// Coordinates a write on this node: makes the dot, stores it, sends it to the
    /// other home replicas and waits for `w` acknowledgements (this one included) in
    /// every live ring (one, unless a layout change is in flight).
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
        let view = self.cluster.view();
        // Held until the quorum is in: this node claims a newer target only after.
        let _in_flight = self.cluster.begin_write(&view);
        let plan = view.write_plan(key, self.quorum.n);
        if plan.rings.is_empty() {
            return Err(Error::InsufficientReplicas {
                live: 0,
                required: options.w,
            });
        }
        let others: Vec<&Peer> = plan.homes.iter().filter(|p| !p.local).collect();
        let sloppy = options.sloppy && self.hinted_handoff;
        let mut standins: VecDeque<&Peer> = if sloppy {
            plan.standins
                .iter()
                .filter(|p| p.is_live() && !p.local)
                .collect()
        } else {
            VecDeque::new()
        };
        // Down home replicas get the first stand-ins, in the plan's order; a ring counts
        // its live home replicas and its down ones that got a stand-in.
        let mut first_standin: Vec<(&Peer, Option<&Peer>)> = Vec::with_capacity(others.len());
        for peer in &others {
            let standin = if peer.is_live() {
                None
            } else {
                standins.pop_front()
            };
            first_standin.push((peer, standin));
        }
        let covered = |id: &str| {
            id == self.node_id
                || first_standin
                    .iter()
                    .any(|(p, s)| p.id == id && (p.is_live() || s.is_some()))
        };
        let mut rings = Vec::with_capacity(plan.rings.len());
        for homes in &plan.rings {
            let ids: Vec<String> = homes.iter().map(|p| p.id.clone()).collect();
            let asked = ids.iter().filter(|id| covered(id)).count();
            if options.w > asked {
                return Err(Error::InsufficientReplicas {
                    live: asked,
                    required: options.w,
                });
            }
            rings.push((ids, asked));
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

        let mut tracker = RingsTracker::new(options.w, rings);
        let mut acks = vec![self.node_id.clone()];
        let mut hinted = Vec::new();
        tracker.ok(&self.node_id);
        let (tx, mut replies) = mpsc::channel(plan.homes.len() + plan.standins.len() + 1);
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
        for (peer, standin) in first_standin {
            if peer.is_live() {
                self.spawn_call(peer, merge(), deadline, Target::Home(peer.id.clone()), &tx);
            } else if let Some(standin) = standin {
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
                    tracker.ok(&id);
                    acks.push(id);
                }
                (Target::Standin { owner, standin }, Ok(PeerResponse::Hinted)) => {
                    tracker.ok(&owner);
                    acks.push(standin.clone());
                    hinted.push((owner, standin));
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
                            tracker.fail(&owner);
                        }
                    }
                }
            }
        }
    }
}
