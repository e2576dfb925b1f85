//! Membership changes: spreading the cluster layout, and moving data when it changes.
//!
//! The layout ([`crate::membership`]) says which ring reads use and which ring the
//! cluster is heading for. Three tasks act on it:
//!
//! - [`spread`] exchanges layouts with peers (one random live peer per interval, every
//!   peer right after a local change), so a change reaches every node in a few rounds.
//! - [`receive`] makes this node hold its ranges of the target ring: for every
//!   partition it is a home replica of in the target but not in the committed ring, it
//!   runs anti-entropy exchanges ([`crate::anti_entropy::Exchanger`]) with the
//!   partition's current home replicas until nothing differs, throttled to
//!   `--transfer-mb-per-s`. It starts only once every node writes to the target (the
//!   layout's `writing` register), and a partition counts as received once every
//!   current home replica not removed has been exchanged with (a write acknowledged at
//!   w=1 may be on one of them only); writes meanwhile reach this node as a target
//!   home replica.
//!   When all are in, it reports so in the layout, and the ring is committed once every
//!   node of the target has.
//! - after a commit, [`cleanup`] drops the partitions this node is no longer a home
//!   replica of (only once no ring is in flight, so their new homes hold them), and a
//!   node that left hands its hints over and departs.
//!
//! Resuming after a crash costs little: a transfer is an anti-entropy exchange, so what
//! already arrived compares equal and is not sent again, and the partitions already
//! received are kept in the store. Every record carries its crc32, checked when it is
//! read to be sent and when it is merged.

pub mod cleanup;
pub mod receive;
pub mod spread;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_client::wire::TransfersBody;
use ringkv_gossip::MemberState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::anti_entropy::Exchanger;
use crate::cluster::Cluster;
use crate::handoff::HintStore;
use crate::membership::{Intent, RingState};

/// How membership changes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferOptions {
    /// Replicas per key (`--n`).
    pub n: usize,
    /// Most bytes per second received (`--transfer-mb-per-s`); `None`: no limit.
    pub rate_bytes_per_s: Option<u64>,
    /// Time between layout exchanges with a random peer.
    pub spread_interval: Duration,
    /// Time between checks for work when nothing happens.
    pub tick: Duration,
}

impl TransferOptions {
    pub fn new(n: usize, rate_bytes_per_s: Option<u64>) -> Self {
        Self {
            n,
            rate_bytes_per_s,
            spread_interval: Duration::from_secs(1),
            tick: Duration::from_millis(500),
        }
    }
}

/// Shared between the tasks and the API.
#[derive(Debug, Default)]
pub struct TransferBoard(Mutex<TransfersBody>);

impl TransferBoard {
    pub fn snapshot(&self) -> TransfersBody {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut TransfersBody)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The running tasks of membership changes.
#[derive(Debug)]
pub struct Transfers {
    pub board: Arc<TransferBoard>,
    /// Turns true when this node has left the ring and handed everything over: the
    /// node then leaves gossip and exits.
    pub departed: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Transfers {
    /// Starts spreading the layout and acting on it.
    pub fn spawn(
        exchanger: Exchanger,
        backend: Arc<dyn crate::storage::Backend>,
        cluster: Arc<Cluster>,
        hints: Arc<HintStore>,
        options: TransferOptions,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let board = Arc::new(TransferBoard::default());
        let (departed_tx, departed) = watch::channel(false);
        let spread = spread::spawn(
            cluster.clone(),
            exchanger.transport.clone(),
            exchanger.env.clone(),
            options.spread_interval,
            stop.clone(),
        );
        let worker = receive::spawn(
            exchanger,
            backend,
            cluster,
            hints,
            options,
            board.clone(),
            departed_tx,
            stop,
        );
        Self {
            board,
            departed,
            tasks: vec![spread, worker],
        }
    }

    /// Waits for the tasks to stop (after the stop signal).
    pub async fn join(&mut self) {
        for task in self.tasks.drain(..) {
            if let Err(e) = task.await
                && !e.is_cancelled()
            {
                tracing::error!(error = %e, "a membership task failed");
            }
        }
    }

    pub fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `POST /admin/leave`: this node hands its ranges over and leaves the ring. Returns
/// its ring state (`leaving`, or `removed` once it is off the ring).
pub fn leave(cluster: &Cluster) -> crate::Result<RingState> {
    let view = cluster.view();
    let local = cluster.local_id().to_owned();
    let layout = view.layout();
    match layout.ring_state(&local) {
        RingState::Leaving | RingState::Removed => return Ok(layout.ring_state(&local)),
        RingState::Joining => {
            return Err(crate::Error::Conflict {
                code: ringkv_client::wire::codes::CONFLICT,
                message: format!("{local} is still joining; leave once it is a member"),
            });
        }
        RingState::Member => {}
    }
    let others = layout
        .target()
        .into_iter()
        .filter(|id| *id != local)
        .count();
    if others == 0 {
        return Err(crate::Error::Conflict {
            code: ringkv_client::wire::codes::CONFLICT,
            message: format!("{local} is the last node of the ring: nowhere to hand its data"),
        });
    }
    cluster.change_layout(|l, me| l.set_intent(&me.id, Intent::Leaving))?;
    tracing::info!("leaving the ring: handing every range over");
    Ok(cluster.view().ring_state(&local))
}

/// `POST /admin/remove/{id}`: takes a node that is down for good off the ring; its
/// keys are copied to their new homes from the surviving replicas.
pub fn remove(cluster: &Cluster, id: &str) -> crate::Result<RingState> {
    let view = cluster.view();
    let layout = view.layout();
    let Some(entry) = layout.entry(id) else {
        return Err(crate::Error::NotFound(format!(
            "no node {id:?} in the cluster layout"
        )));
    };
    if entry.intent == Intent::Removed {
        return Ok(RingState::Removed);
    }
    if id == cluster.local_id() || view.peer(id).is_some_and(|p| p.state == MemberState::Alive) {
        return Err(crate::Error::Conflict {
            code: ringkv_client::wire::codes::NODE_ALIVE,
            message: format!("{id} is alive: take it out with POST /admin/leave on it"),
        });
    }
    cluster.change_layout(|l, _| l.set_intent(id, Intent::Removed))?;
    tracing::info!(
        node = id,
        "removed from the ring: its ranges move to their new homes"
    );
    Ok(RingState::Removed)
}
