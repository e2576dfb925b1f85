//! The coordinator as seen from other nodes: serving their reads, merges and
//! forwarded writes, and the mapping of errors to and from the wire.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::{Coordinator, Supersedes, WriteOptions, run_local};
use crate::anti_entropy;
use crate::error::Error;
use crate::net::{PeerErrorKind, PeerHandler, PeerRequest, PeerResponse, WireSupersedes};

/// Time a peer's merge or read may take here before it is abandoned.
const LOCAL_CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl PeerHandler for Coordinator {
    fn handle<'a>(&'a self, from: &'a str, request: PeerRequest) -> BoxFuture<'a, PeerResponse> {
        Box::pin(async move {
            let result = match request {
                PeerRequest::Read { key } => self.replica.get(&key).map(PeerResponse::Read),
                PeerRequest::Merge { key, clock, sync } => {
                    let replica = self.replica.clone();
                    run_local(&self.env, sync, LOCAL_CALL_TIMEOUT, 1, move || {
                        replica.merge(&key, &clock, sync)
                    })
                    .await
                    .map(|_| PeerResponse::Merged)
                }
                PeerRequest::Hint {
                    owner,
                    key,
                    clock,
                    sync,
                } => {
                    if !self.hinted_handoff {
                        Err(Error::BadRequest(
                            "this node runs with --hinted-handoff false".into(),
                        ))
                    } else {
                        let hints = self.hints.clone();
                        run_local(&self.env, sync, LOCAL_CALL_TIMEOUT, 1, move || {
                            hints.add(&owner, &key, &clock, sync)
                        })
                        .await
                        .map(|_| PeerResponse::Hinted)
                    }
                }
                PeerRequest::Write {
                    key,
                    value,
                    supersedes,
                    w,
                    r,
                    timeout_ms,
                    sync,
                    sloppy,
                } => {
                    let n = self.quorum.n;
                    if !(1..=n).contains(&(w as usize)) || !(1..=n).contains(&(r as usize)) {
                        Err(Error::BadRequest(format!("w={w} r={r} outside 1..={n}")))
                    } else {
                        let timeout = Duration::from_millis(timeout_ms);
                        let options = WriteOptions {
                            w: w as usize,
                            r: r as usize,
                            timeout,
                            sync,
                            sloppy,
                        };
                        let supersedes = match supersedes {
                            WireSupersedes::Context(vv) => Supersedes::Context(vv),
                            WireSupersedes::Nothing => Supersedes::Nothing,
                            WireSupersedes::CurrentVersions => Supersedes::CurrentVersions,
                        };
                        tracing::debug!(%from, "coordinating a forwarded write");
                        self.write_here(&key, value, supersedes, &options, Instant::now() + timeout)
                            .await
                            .map(|o| PeerResponse::Written {
                                clock: o.clock,
                                acks: o.acks,
                                hinted: o.hinted,
                            })
                    }
                }
                PeerRequest::Layout(theirs) => self.layout_call(theirs).await,
                other => self.anti_entropy_call(other).await,
            };
            result.unwrap_or_else(|e| {
                let (kind, message) = to_wire(&e);
                PeerResponse::Error { kind, message }
            })
        })
    }
}

impl Coordinator {
    /// Merges a peer's cluster layout into this node's and answers with the result.
    /// The merge stores the layout (fsync'ed) when it changed, so it runs where
    /// blocking storage calls run.
    async fn layout_call(&self, theirs: crate::membership::Layout) -> crate::Result<PeerResponse> {
        theirs.check().map_err(Error::BadRequest)?;
        let cluster = self.cluster.clone();
        self.env
            .blocking(move || {
                cluster.merge_layout(&theirs)?;
                Ok(PeerResponse::Layout((*cluster.layout()).clone()))
            })
            .await
    }

    /// Serves a peer's anti-entropy or tombstone-GC call on the background thread (each
    /// reads or writes up to a few thousand records; foreground requests go first).
    async fn anti_entropy_call(&self, request: PeerRequest) -> crate::Result<PeerResponse> {
        let (replica, hints) = (self.replica.clone(), self.hints.clone());
        self.env
            .background(move || match request {
                PeerRequest::TreeRoots { partitions } => {
                    anti_entropy::tree_roots(&replica, &partitions)
                }
                PeerRequest::TreeLeaves { partitions } => {
                    anti_entropy::tree_leaves(&replica, &partitions)
                }
                PeerRequest::SegmentKeys { segments, max_keys } => {
                    anti_entropy::segment_keys(&replica, &segments, max_keys)
                }
                PeerRequest::Sync { push, pull } => anti_entropy::sync(&replica, push, &pull),
                PeerRequest::TombstoneCheck { keys, home } => {
                    anti_entropy::tombstone_check(&replica, &hints, &keys, home)
                }
                PeerRequest::Purge { keys } => anti_entropy::purge(&replica, &keys),
                other => Err(Error::BadRequest(format!(
                    "{} is not an anti-entropy call",
                    other.op_name()
                ))),
            })
            .await
    }
}

/// An error as a peer reports it.
pub(super) fn to_wire(e: &Error) -> (PeerErrorKind, String) {
    let kind = match e {
        Error::TooManySiblings { max } => PeerErrorKind::TooManySiblings { max: *max as u32 },
        Error::InsufficientReplicas { live, required } => PeerErrorKind::InsufficientReplicas {
            live: *live as u32,
            required: *required as u32,
        },
        Error::Timeout { acks, required } => PeerErrorKind::Timeout {
            acks: *acks as u32,
            required: *required as u32,
        },
        Error::BadRequest(_)
        | Error::KeyTooLong { .. }
        | Error::ValueTooLarge { .. }
        | Error::BadContext(_)
        | Error::NotFound(_)
        | Error::Conflict { .. } => PeerErrorKind::BadRequest,
        Error::ShuttingDown => PeerErrorKind::ShuttingDown,
        Error::Peer { .. }
        | Error::PeerUnreachable { .. }
        | Error::HintsFull { .. }
        | Error::Storage(_)
        | Error::Config(_)
        | Error::Io(_) => PeerErrorKind::Internal,
    };
    (kind, e.to_string())
}

/// The error a peer reported, as this node's own.
pub(super) fn from_wire(kind: PeerErrorKind, message: String, peer: &str) -> Error {
    match kind {
        PeerErrorKind::TooManySiblings { max } => Error::TooManySiblings { max: max as usize },
        PeerErrorKind::InsufficientReplicas { live, required } => Error::InsufficientReplicas {
            live: live as usize,
            required: required as usize,
        },
        PeerErrorKind::Timeout { acks, required } => Error::Timeout {
            acks: acks as usize,
            required: required as usize,
        },
        PeerErrorKind::BadRequest => Error::BadRequest(message),
        PeerErrorKind::ShuttingDown => Error::ShuttingDown,
        PeerErrorKind::Internal => Error::Peer {
            peer: peer.to_owned(),
            reason: message,
        },
    }
}
