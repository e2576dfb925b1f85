//! After a commit: dropping the partitions this node is no longer a home replica of,
//! and departing once this node is off the ring.
//!
//! A partition is dropped only when no change is in flight (its new home replicas
//! hold it, and no node reads from a ring that had this node as its home) and the
//! layout has stayed so for [`STABLE_BEFORE_DROP`], so a node restarted with an old
//! layout learns the current one before it deletes anything. A write that lands
//! later on a partition already dropped (from a coordinator with an older view) stays
//! as an orphan nobody reads; the next commit's pass drops it.
//!
//! A node that left (or was removed while still running) first hands its hints over
//! (the handoff task sends them to the keys' home replicas, since this node's view
//! has it off the ring), then reports that it departed, at the latest after
//! [`HINTS_HANDOVER_MAX`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ringkv_ring::Partition;
use tokio::sync::watch;
use tokio::time::Instant;

use super::TransferBoard;
use crate::anti_entropy::Exchanger;
use crate::cluster::{Peer, View};
use crate::error::Result;
use crate::handoff::HintStore;
use crate::membership::Intent;
use crate::metrics;
use crate::net::{PeerRequest, PeerResponse};

/// How long the layout must stay settled before partitions are dropped.
pub const STABLE_BEFORE_DROP: Duration = Duration::from_secs(10);
/// How long a departing node waits for its hints to be handed over.
pub const HINTS_HANDOVER_MAX: Duration = Duration::from_secs(60);

pub(super) struct Cleanup {
    exchanger: Exchanger,
    hints: Arc<HintStore>,
    departed: watch::Sender<bool>,
    /// The epoch and since when the layout has been settled, by this node's view.
    settled: Option<(u64, Instant)>,
    /// Partitions of that epoch known not to need dropping.
    checked: BTreeSet<u16>,
    departing_since: Option<Instant>,
}

impl Cleanup {
    pub fn new(exchanger: Exchanger, hints: Arc<HintStore>, departed: watch::Sender<bool>) -> Self {
        Self {
            exchanger,
            hints,
            departed,
            settled: None,
            checked: BTreeSet::new(),
            departing_since: None,
        }
    }

    /// One step; true when there is more to do right away.
    pub async fn run(&mut self, view: &View, board: &TransferBoard, n: usize) -> Result<bool> {
        let layout = view.layout();
        let local = view.local();
        let intent = layout.entry(local).map(|e| e.intent);
        if intent != Some(Intent::Active) && !layout.current().contains(local) {
            self.depart(view).await;
            return Ok(false);
        }
        if layout.in_flight() || !layout.current().contains(local) {
            self.settled = None;
            return Ok(false);
        }
        let epoch = layout.epoch();
        match self.settled {
            Some((e, since)) if e == epoch => {
                if since.elapsed() < STABLE_BEFORE_DROP {
                    return Ok(false);
                }
            }
            _ => {
                self.settled = Some((epoch, Instant::now()));
                self.checked.clear();
                return Ok(false);
            }
        }
        for partition in Partition::all() {
            if self.checked.contains(&partition.0) {
                continue;
            }
            self.checked.insert(partition.0);
            if view.partition_homes(partition, n).iter().any(|h| h.local) {
                continue;
            }
            let replica = self.exchanger.replica.clone();
            let dropped = self
                .exchanger
                .env
                .background(move || {
                    if replica.holds_partition(partition)? {
                        replica.drop_partition(partition)
                    } else {
                        Ok(0)
                    }
                })
                .await?;
            if dropped > 0 {
                tracing::info!(%partition, keys = dropped, epoch, "dropped a partition this node no longer homes");
                metrics::partition_dropped(dropped);
                board.update(|b| {
                    b.partitions_dropped += 1;
                    b.keys_dropped += dropped;
                });
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Off the ring: once the hints are handed over, the old ring is retired and a peer
    /// holds this node's layout (or the wait is over), departs. The old ring retires
    /// only when every node's adoption of the new one is known, this node's included:
    /// leaving sooner could take that adoption away with it, and the old ring would
    /// stay in flight for ever. This node may be the last to see the retirement (its
    /// own adoption completes it), so it hands its layout to a peer first.
    async fn depart(&mut self, view: &View) {
        if *self.departed.borrow() {
            return;
        }
        let since = *self.departing_since.get_or_insert_with(Instant::now);
        let in_flight = view.layout().in_flight();
        let pending: u64 = self.hints.pending().values().sum();
        let ready = pending == 0 && !in_flight && self.handed_layout_over(view).await;
        if ready || since.elapsed() >= HINTS_HANDOVER_MAX {
            if pending > 0 {
                tracing::warn!(pending, "departing with hints not handed over");
            }
            if in_flight {
                tracing::warn!("departing before the old ring was retired");
            }
            tracing::info!("off the ring with everything handed over: departing");
            let _ = self.departed.send(true);
        }
    }

    /// Sends this node's layout to live peers until one takes it; true if one did.
    async fn handed_layout_over(&self, view: &View) -> bool {
        let peers = view
            .members()
            .filter(|m| m.id != view.local())
            .filter_map(|m| view.peer(&m.id))
            .filter(Peer::is_live);
        for peer in peers {
            let request = PeerRequest::Layout(view.layout().as_ref().clone());
            let reply = self
                .exchanger
                .transport
                .call(peer.cluster, request, self.exchanger.call_timeout)
                .await;
            match reply {
                Ok(PeerResponse::Layout(_)) => return true,
                Ok(_) => tracing::debug!(peer = %peer.id, "a peer refused this node's layout"),
                Err(e) => {
                    tracing::debug!(peer = %peer.id, error = %e, "handing the layout over failed")
                }
            }
        }
        false
    }
}
