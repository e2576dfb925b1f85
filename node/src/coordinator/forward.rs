//! Forwarding: a write that reaches a node outside the key's preference list goes to
//! the first live home replica, which coordinates it. It is retried on the next one
//! only when it was never sent, so it can never be applied twice.

use tokio::time::Instant;

use super::{Coordinator, Supersedes, WriteOptions, WriteOutcome, peer};
use crate::cluster::Peer;
use crate::error::{Error, Result};
use crate::net::{PeerRequest, PeerResponse, WireSupersedes};

impl Coordinator {
    /// Hands the write to the first live home replica that answers.
    pub(super) async fn forward_write(
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
}
