//! The protocol half of a node: replica, hints, membership view, coordinator and the
//! background tasks (hinted handoff, anti-entropy), assembled from parts that the
//! caller chooses.
//!
//! [`crate::node::Node`] builds the parts for production (RocksDB, gossip over UDP,
//! [`crate::net::PeerClient`], [`Env::production`]) and adds the listeners; the
//! simulator builds them from its in-memory disk, simulated sockets, simulated
//! transport and a seeded [`Env`], and delivers peer calls to
//! [`Services::coordinator`] itself. Either way the same code runs from here down.

use std::sync::Arc;

use ringkv_gossip::Gossip;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::anti_entropy::{self, AntiEntropyOptions, Exchanger, StatusBoard};
use crate::cluster::{Cluster, LocalNode};
use crate::coordinator::{Coordinator, Quorum};
use crate::env::Env;
use crate::error::Result;
use crate::handoff::{self, HandoffOptions, HintLimits, HintStore};
use crate::net::PeerTransport;
use crate::replica::Replica;
use crate::storage::Backend;
use crate::transfer::{TransferOptions, Transfers};

/// Everything [`Services::start`] needs.
#[derive(Debug)]
pub struct Parts {
    /// The node's `--id`.
    pub id: String,
    /// `--n`, `--r`, `--w`.
    pub quorum: Quorum,
    /// Virtual nodes per member on the ring.
    pub vnodes: usize,
    /// Most concurrent values per key.
    pub max_siblings: usize,
    /// Memory for the replica's record cache (0: none).
    pub record_cache_bytes: u64,
    /// Whether this node takes writes for down replicas (and stand-ins are used).
    pub hinted_handoff: bool,
    /// Age and byte bounds of the hints kept here.
    pub hint_limits: HintLimits,
    /// Pace of the handoff task.
    pub handoff: HandoffOptions,
    /// Interval and bounds of anti-entropy.
    pub anti_entropy: AntiEntropyOptions,
    /// Most bytes per second a membership transfer receives (`--transfer-rate`).
    pub transfer_rate_bytes_per_s: Option<u64>,
    /// True when the node was started with seeds (`--join`).
    pub seeded: bool,
    /// The store (every column family).
    pub backend: Arc<dyn Backend>,
    /// Gossip, started on the node's cluster address.
    pub gossip: Gossip,
    /// How this node calls the others.
    pub transport: Arc<dyn PeerTransport>,
    /// Time, randomness and the storage executor.
    pub env: Env,
}

/// The running protocol half of a node.
#[derive(Debug)]
pub struct Services {
    pub replica: Arc<Replica>,
    pub cluster: Arc<Cluster>,
    pub coordinator: Arc<Coordinator>,
    /// Anti-entropy's progress, for `GET /cluster`.
    pub anti_entropy: Arc<StatusBoard>,
    /// Membership changes: their progress, and whether this node has departed.
    pub transfers: Transfers,
    stop_tasks: watch::Sender<bool>,
    handoff: Option<JoinHandle<()>>,
    exchanges: Option<JoinHandle<()>>,
}

impl Services {
    /// Opens the replica and the hints and starts following membership and handing
    /// off hints. Must run inside a tokio runtime.
    pub async fn start(parts: Parts) -> Result<Self> {
        let Parts {
            id,
            quorum,
            vnodes,
            max_siblings,
            record_cache_bytes,
            hinted_handoff,
            hint_limits,
            handoff,
            anti_entropy: ae_options,
            transfer_rate_bytes_per_s,
            seeded,
            backend,
            gossip,
            transport,
            env,
        } = parts;
        let replica = Arc::new(Replica::open(
            backend.clone(),
            &id,
            max_siblings,
            record_cache_bytes,
            env.entropy.clone(),
        )?);
        let hints = {
            let (backend, env2) = (backend.clone(), env.clone());
            Arc::new(
                env.blocking(move || HintStore::open(backend, hint_limits, env2))
                    .await?,
            )
        };
        let local = {
            let membership = gossip.members();
            let me = membership.borrow();
            LocalNode {
                id: id.clone(),
                incarnation: replica.actor().incarnation,
                cluster: me.local().cluster.to_string(),
                http: me.local().http.clone(),
                seeded,
            }
        };
        let cluster = Arc::new(Cluster::follow(local, vnodes, gossip, backend.clone())?);
        let coordinator = Arc::new(Coordinator::new(
            replica.clone(),
            quorum,
            cluster.clone(),
            transport.clone(),
            hints.clone(),
            hinted_handoff,
            env.clone(),
        ));
        let (stop_tasks, tasks_stopped) = watch::channel(false);
        let board = Arc::new(StatusBoard::default());
        let exchanger = Exchanger {
            replica: replica.clone(),
            transport: transport.clone(),
            env,
            call_timeout: ae_options.call_timeout,
        };
        let transfers = Transfers::spawn(
            exchanger.clone(),
            backend,
            cluster.clone(),
            hints.clone(),
            TransferOptions::new(quorum.n, transfer_rate_bytes_per_s),
            tasks_stopped.clone(),
        );
        let exchanges = anti_entropy::spawn(
            exchanger,
            cluster.clone(),
            hints.clone(),
            ae_options,
            board.clone(),
            tasks_stopped.clone(),
        );
        // Hints already kept are handed off even if this node no longer takes new ones.
        let handoff = handoff::spawn_replay(
            hints,
            cluster.clone(),
            transport,
            handoff,
            quorum.n,
            tasks_stopped,
        );
        Ok(Self {
            replica,
            cluster,
            coordinator,
            anti_entropy: board,
            transfers,
            stop_tasks,
            handoff: Some(handoff),
            exchanges: Some(exchanges),
        })
    }

    /// Stops the background tasks: handoff (hints not yet delivered stay stored) and
    /// anti-entropy.
    pub async fn stop_tasks(&mut self) {
        let _ = self.stop_tasks.send(true);
        for (name, task) in [
            ("handoff", self.handoff.take()),
            ("anti-entropy", self.exchanges.take()),
        ] {
            if let Some(task) = task
                && let Err(e) = task.await
            {
                tracing::error!(error = %e, task = name, "a background task failed");
            }
        }
        self.transfers.join().await;
    }
}

impl Services {
    /// Stops every background task at once, as a crash would: gossip, the view's
    /// updates and the handoff task. Calls already in flight finish or time out on
    /// their own; the simulator fences them off at its disk and network.
    pub fn halt(&self) {
        self.cluster.halt();
        self.abort_tasks();
    }

    fn abort_tasks(&self) {
        for task in [&self.handoff, &self.exchanges].into_iter().flatten() {
            task.abort();
        }
        self.transfers.abort();
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.abort_tasks();
    }
}
