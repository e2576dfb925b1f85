//! One simulated host: the real node's protocol half ([`Services`]) on a simulated
//! disk, socket and transport, booted, crashed and rebooted by the run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ringkv_client::wire::AntiEntropyBody;
use ringkv_gossip::{ClusterKeys, Gossip, GossipConfig, SwimConfig};
use ringkv_node::anti_entropy::AntiEntropyOptions;
use ringkv_node::cluster::Cluster;
use ringkv_node::coordinator::{Coordinator, Quorum};
use ringkv_node::env::{Env, SeededEntropy, StorageCalls};
use ringkv_node::handoff::{HandoffOptions, HintLimits};
use ringkv_node::services::{Parts, Services};

use crate::clock::HostClock;
use crate::disk::Disk;
use crate::net::{Net, SimSocket, SimTransport};
use crate::rng::SimRng;

/// The simulated epoch: wall clocks start here (2026-01-01).
const EPOCH_MS: u64 = 1_767_225_600_000;

/// A host of the run.
#[derive(Debug)]
pub struct Host {
    pub index: usize,
    pub id: String,
    pub addr: SocketAddr,
    pub disk: Disk,
    generation_file: PathBuf,
    seeds: Vec<SocketAddr>,
    skew_ms: i64,
    seed: u64,
    quorum: Quorum,
    pub boot: u64,
    /// Off the ring for good (left, or removed): never booted again.
    pub gone: bool,
    services: Option<Services>,
    /// The cluster key its gossip is sealed under; `None`: in the clear.
    pub cluster_keys: Option<Arc<ClusterKeys>>,
}

/// The run's cluster key, derived from the seed (a simulation needs no secret).
pub fn sim_cluster_keys(seed: u64) -> Arc<ClusterKeys> {
    let mut rng = SimRng::derive(seed, "cluster key");
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    Arc::new(ClusterKeys::new(vec![key]).expect("one key"))
}

impl Host {
    pub fn new(
        index: usize,
        seed: u64,
        dir: &std::path::Path,
        seeds: Vec<SocketAddr>,
        quorum: Quorum,
        lying_fsync: bool,
    ) -> Self {
        let mut rng = SimRng::derive(seed, &format!("host{index}"));
        Self {
            index,
            id: format!("n{}", index + 1),
            addr: address(index),
            disk: Disk::new(lying_fsync),
            generation_file: dir.join(format!("n{}-generation", index + 1)),
            seeds,
            skew_ms: rng.range(0, 1001) as i64 - 500,
            seed: rng.next_u64(),
            quorum,
            boot: 0,
            gone: false,
            services: None,
            cluster_keys: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.services.is_some()
    }

    pub fn coordinator(&self) -> Option<Arc<Coordinator>> {
        self.services.as_ref().map(|s| s.coordinator.clone())
    }

    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.services.as_ref().map(|s| s.cluster.clone())
    }

    /// Turns true once the running process has left the ring and handed everything over.
    pub fn departed(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.services.as_ref().map(|s| s.transfers.departed.clone())
    }

    /// Anti-entropy's counters of the running process.
    pub fn anti_entropy(&self) -> Option<AntiEntropyBody> {
        self.services.as_ref().map(|s| s.anti_entropy.snapshot())
    }

    /// Boots the host: a fresh process on the disk as the last crash left it.
    pub async fn start(&mut self, net: &Net) -> anyhow::Result<()> {
        let (boot, inbox) = net.boot(self.addr);
        self.boot = boot;
        let backend = Arc::new(self.disk.boot(boot));
        let mut seeds = self.seeds.clone();
        for peer in Cluster::remembered_peers(backend.as_ref(), &self.id) {
            if !seeds.contains(&peer) {
                seeds.push(peer);
            }
        }
        let mut config = GossipConfig::new(
            self.id.clone(),
            self.addr,
            format!("{}:8001", self.addr.ip()),
            self.generation_file.clone(),
        );
        config.seeds = seeds;
        config.swim = SwimConfig::lan(8);
        config.rng_seed = Some(self.seed ^ boot.wrapping_mul(0x9E37_79B9));
        config.cluster_keys = self.cluster_keys.clone();
        let socket = SimSocket::new(net.clone(), self.addr, boot, inbox);
        let gossip = Gossip::start_on(config, socket, self.addr)?;
        let env = Env {
            clock: Arc::new(HostClock {
                base_ms: EPOCH_MS,
                skew_ms: self.skew_ms,
            }),
            entropy: Arc::new(SeededEntropy::new(self.seed.rotate_left(17) ^ boot)),
            storage_calls: StorageCalls::Inline,
            background: None,
        };
        let transport = Arc::new(SimTransport {
            net: net.clone(),
            addr: self.addr,
            boot,
            id: self.id.clone(),
        });
        let services = Services::start(Parts {
            id: self.id.clone(),
            quorum: self.quorum,
            vnodes: 64,
            max_siblings: 64,
            record_cache_bytes: 1 << 20,
            hinted_handoff: true,
            hint_limits: HintLimits {
                max_age: Duration::from_secs(3 * 3600),
                max_bytes: 256 << 20,
            },
            handoff: HandoffOptions::default(),
            anti_entropy: AntiEntropyOptions::new(Some(AE_INTERVAL), self.quorum.n),
            transfer_rate_bytes_per_s: None,
            seeded: !self.seeds.is_empty(),
            backend,
            gossip,
            transport,
            env,
        })
        .await?;
        net.serve(self.addr, boot, services.coordinator.clone());
        self.services = Some(services);
        Ok(())
    }

    /// A power cut: the process is gone at once, and so is every unsynced write.
    pub fn crash(&mut self, net: &Net) {
        net.crash(self.addr);
        self.disk.crash();
        if let Some(services) = self.services.take() {
            services.halt();
        }
    }
}

/// Anti-entropy rounds on every host, all through the run (faults included).
pub const AE_INTERVAL: Duration = Duration::from_secs(2);

/// Host `index`'s cluster address.
pub fn address(index: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, index as u8 + 1], 7001))
}
