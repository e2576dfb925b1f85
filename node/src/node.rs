//! A running node: wires storage, replica, coordinator and the HTTP API, and owns the
//! order of start and shutdown.
//!
//! Start: open the store (creating its incarnation); bind the peer RPC listener and
//! join gossip, so other nodes can reach this one's replica; then bind the HTTP
//! listener, so that a node never answers clients before its data is there.
//!
//! Shutdown: stop accepting client requests and let in-flight ones finish (up to the
//! drain timeout); leave gossip, so the others stop sending here at once instead of
//! waiting for failure detection; stop the peer listener (its in-flight merges
//! finish); then flush RocksDB's memtables and WAL so the next start replays nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::anti_entropy::AntiEntropyOptions;
use crate::api::{self, ApiState};
use crate::config::Config;
use crate::discovery;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::handoff::{HandoffOptions, HintLimits};
use crate::metrics;
use crate::net::{self, PeerClient};
use crate::services::{Parts, Services};
use crate::storage::{Backend, RocksBackend, RocksOptions};

/// How often histogram samples are folded into buckets.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A started node; [`Node::shutdown`] stops it in order.
#[derive(Debug)]
pub struct Node {
    http_addr: SocketAddr,
    services: Services,
    stop_http: watch::Sender<bool>,
    http_server: JoinHandle<()>,
    stop_peer: watch::Sender<bool>,
    peer_server: JoinHandle<()>,
    upkeep: JoinHandle<()>,
    member_changes: JoinHandle<()>,
}

impl Node {
    /// Opens the node's store and starts serving.
    pub async fn start(config: Config) -> Result<Self> {
        let config = Arc::new(config);
        // First, so that what the store and the hint store count while opening is kept.
        let handle = metrics::install(api::HTTP_OPS);
        let env = Env::production();
        let rocks = RocksOptions {
            block_cache_bytes: config.block_cache_bytes,
        };
        let dir = config.data_dir.join("db");
        let backend = env
            .blocking(move || RocksBackend::open(&dir, &rocks))
            .await?;
        let backend: Arc<dyn Backend> = Arc::new(backend);
        if config.cluster_keys.is_none() {
            tracing::warn!(
                "no --cluster-key-file: gossip and peer RPC travel in the clear, and anyone \
                 who can reach the cluster port can join, read and write every key"
            );
        }

        let peer_listener = TcpListener::bind(config.cluster).await.map_err(|e| {
            Error::Config(format!("--cluster {}: cannot listen: {e}", config.cluster))
        })?;
        let gossip = discovery::start_gossip(&config, backend.as_ref()).await?;
        // Peer connections leave from the cluster address when it is a specific one.
        let local_ip = Some(config.cluster.ip()).filter(|ip| !ip.is_unspecified());
        let transport = Arc::new(PeerClient::with_options(
            config.id.clone(),
            local_ip,
            config.cluster_keys.clone(),
        ));
        let services = Services::start(Parts {
            id: config.id.clone(),
            quorum: config.quorum,
            vnodes: config.vnodes,
            max_siblings: config.max_siblings,
            record_cache_bytes: config.record_cache_bytes,
            hinted_handoff: config.hinted_handoff,
            hint_limits: HintLimits {
                max_age: config.hint_max_age,
                max_bytes: config.hint_max_bytes,
            },
            handoff: HandoffOptions::default(),
            anti_entropy: AntiEntropyOptions::new(config.anti_entropy_interval, config.quorum.n),
            transfer_rate_bytes_per_s: config.transfer_rate_bytes_per_s,
            seeded: !config.join.is_empty(),
            backend: backend.clone(),
            gossip,
            transport,
            env,
        })
        .await?;
        let coordinator = services.coordinator.clone();
        tracing::info!(node = %config.id, actor = ?services.replica.actor(), data_dir = %config.data_dir.display(), "store open");
        let (stop_peer, peer_stopped) = watch::channel(false);
        let peer_server = tokio::spawn(net::serve(
            peer_listener,
            coordinator.clone(),
            config.cluster_keys.clone(),
            peer_stopped,
        ));
        tracing::info!(node = %config.id, cluster = %config.cluster, seeds = ?config.join, "peer RPC and gossip up");

        let upkeep_handle = handle.clone();
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                metrics::upkeep(&upkeep_handle);
            }
        });

        let listener = TcpListener::bind(config.http)
            .await
            .map_err(|e| Error::Config(format!("--http {}: cannot listen: {e}", config.http)))?;
        let http_addr = listener.local_addr()?;
        let state = Arc::new(ApiState {
            config: config.clone(),
            coordinator,
            cluster: services.cluster.clone(),
            anti_entropy: services.anti_entropy.clone(),
            transfers: services.transfers.board.clone(),
            metrics: handle,
            backend,
            stats: Default::default(),
            started: std::time::Instant::now(),
            peer_stats: Default::default(),
        });
        let member_changes = tokio::spawn(metrics::count_member_changes(services.cluster.clone()));
        let (stop_http, http_stopped) = watch::channel(false);
        let http_server = tokio::spawn(api::serve(listener, state, http_stopped));
        tracing::info!(node = %config.id, http = %http_addr, "serving HTTP");
        Ok(Self {
            http_addr,
            services,
            stop_http,
            http_server,
            stop_peer,
            peer_server,
            upkeep,
            member_changes,
        })
    }

    /// Turns true once this node has left the ring (`POST /admin/leave`) and handed
    /// everything over: time to shut down.
    pub fn departed(&self) -> watch::Receiver<bool> {
        self.services.transfers.departed.clone()
    }

    /// The address the HTTP API listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops accepting, drains in-flight requests, leaves gossip, flushes the store.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop_http.send(true);
        if let Err(e) = self.http_server.await {
            tracing::error!(error = %e, "the HTTP server task failed");
        }
        self.services.stop_tasks().await;
        self.services.cluster.leave().await;
        let _ = self.stop_peer.send(true);
        if let Err(e) = self.peer_server.await {
            tracing::error!(error = %e, "the peer server task failed");
        }
        self.upkeep.abort();
        self.member_changes.abort();
        let replica = self.services.replica.clone();
        tokio::task::spawn_blocking(move || replica.flush())
            .await
            .map_err(|e| Error::Storage(format!("flushing the store: {e}")))??;
        tracing::info!("store flushed; node stopped");
        Ok(())
    }
}
