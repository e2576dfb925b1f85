//! The IO shell around [`Core`]: one task that owns the UDP socket, the timer
//! heap and foca, and the [`Gossip`] handle that talks to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{self, Instant, MissedTickBehavior};
use tracing::Instrument;

use crate::config::GossipConfig;
use crate::core::{Core, Output};
use crate::identity::{self, NodeIdentity};
use crate::membership::Membership;
use crate::socket::DatagramSocket;
use crate::stats::{GossipStats, Stats};
use crate::timers::TimerHeap;
use crate::{Error, Result};

/// Commands queued for the driver; only `leave` for now, so a short queue.
const COMMAND_QUEUE_DEPTH: usize = 4;

enum Command {
    Leave(oneshot::Sender<()>),
}

/// A running gossip member: a handle to the driver task.
///
/// Dropping it stops the task at once *without* leaving, as a crash would:
/// the others declare this node down after the suspicion timeout. Call
/// [`Gossip::leave`] first on a clean shutdown.
#[derive(Debug)]
pub struct Gossip {
    commands: mpsc::Sender<Command>,
    members: watch::Receiver<Arc<Membership>>,
    stats: Arc<Stats>,
    local_addr: SocketAddr,
    cluster_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Gossip {
    /// Binds the UDP socket, bumps the generation file and spawns the driver
    /// task, which starts announcing to the seeds at once.
    ///
    /// Must be called inside a Tokio runtime. Blocks briefly on the
    /// generation file's fsync.
    pub fn start(config: GossipConfig) -> Result<Self> {
        config.validate()?;
        let bind_error = |source| Error::Bind {
            addr: config.bind,
            source,
        };
        let std_socket = std::net::UdpSocket::bind(config.bind).map_err(bind_error)?;
        std_socket.set_nonblocking(true).map_err(bind_error)?;
        let local_addr = std_socket.local_addr().map_err(bind_error)?;
        let socket = UdpSocket::from_std(std_socket).map_err(bind_error)?;
        Self::start_on(config, socket, local_addr)
    }

    /// [`Gossip::start`] on a socket the caller bound (at `local_addr`): a
    /// simulator's, or one set up specially. Bumps the generation file and
    /// spawns the driver task.
    pub fn start_on<S: DatagramSocket>(
        config: GossipConfig,
        socket: S,
        local_addr: SocketAddr,
    ) -> Result<Self> {
        config.validate()?;
        let mut cluster_addr = config.advertise_cluster;
        if cluster_addr.port() == 0 {
            cluster_addr.set_port(local_addr.port());
        }
        let generation = identity::next_generation(&config.generation_file)?;
        let local = NodeIdentity {
            id: config.id.clone(),
            cluster: cluster_addr,
            http: config.advertise_http.clone(),
            generation,
        };
        tracing::info!(node = %config.id, %local_addr, %cluster_addr, generation, "gossip starting");

        let stats = Arc::new(Stats::default());
        let seed = config.rng_seed.unwrap_or_else(random_seed);
        let core = Core::new(local, &config, seed, stats.clone());
        let (members_tx, members) = watch::channel(core.membership());
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE_DEPTH);
        let driver = Driver {
            core,
            socket,
            commands: commands_rx,
            members: members_tx,
            stats: stats.clone(),
            generation_file: config.generation_file.clone(),
            timers: TimerHeap::new(),
            out: Output::default(),
            // One byte more than allowed, to tell an oversized datagram (which
            // the kernel truncates to the buffer) from one exactly at the limit.
            recv_buf: vec![0; config.max_packet_bytes + 1],
            tick_period: config.announce_interval.min(config.reannounce_interval),
        };
        let span = tracing::info_span!("gossip", node = %config.id);
        let task = tokio::spawn(driver.run().instrument(span));
        Ok(Self {
            commands,
            members,
            stats,
            local_addr,
            cluster_addr,
            task,
        })
    }

    /// The membership, updated on every change. Lists every member ever seen,
    /// this node included.
    pub fn members(&self) -> watch::Receiver<Arc<Membership>> {
        self.members.clone()
    }

    /// The UDP address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The cluster address advertised to peers (with the bound port when the
    /// config said port 0).
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster_addr
    }

    /// The counters so far.
    pub fn stats(&self) -> GossipStats {
        self.stats.snapshot()
    }

    /// Leaves the cluster gracefully and stops the driver: the others see
    /// this node as `Left` instead of `Down`. Returns once the leave packets
    /// are handed to the socket. [`Error::Stopped`] if already stopped.
    pub async fn leave(&self) -> Result<()> {
        let (done, finished) = oneshot::channel();
        self.commands
            .send(Command::Leave(done))
            .await
            .map_err(|_| Error::Stopped)?;
        finished.await.map_err(|_| Error::Stopped)
    }
}

impl Gossip {
    /// Stops the driver at once without leaving, as a crash would (what dropping
    /// the handle does, for a handle that is shared).
    pub fn halt(&self) {
        self.task.abort();
    }
}

impl Drop for Gossip {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Driver<S> {
    core: Core,
    socket: S,
    commands: mpsc::Receiver<Command>,
    members: watch::Sender<Arc<Membership>>,
    stats: Arc<Stats>,
    generation_file: PathBuf,
    timers: TimerHeap<Instant>,
    out: Output,
    recv_buf: Vec<u8>,
    tick_period: Duration,
}

impl<S: DatagramSocket> Driver<S> {
    async fn run(mut self) {
        let mut ticker = time::interval(self.tick_period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let sleep = time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            // One sleep for the whole heap, re-armed when its head changes.
            let next = self.timers.next_deadline();
            if next != armed {
                if let Some(deadline) = next {
                    sleep.as_mut().reset(deadline);
                }
                armed = next;
            }
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Leave(done)) => {
                        self.core.leave(&mut self.out);
                        self.flush().await;
                        tracing::info!("left the cluster");
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    let now = Instant::now();
                    while let Some(timer) = self.timers.pop_due(now) {
                        self.core.handle_timer(timer, &mut self.out);
                    }
                }
                // Before recv, so a flood of datagrams cannot starve announces.
                _ = ticker.tick() => self.core.tick(Instant::now().into_std(), &mut self.out),
                received = self.socket.recv_from(&mut self.recv_buf) => match received {
                    Ok((len, from)) => {
                        let packet = self.recv_buf.get(..len).unwrap_or_default();
                        self.core.handle_packet(packet, from, &mut self.out);
                    }
                    Err(err) => {
                        self.stats.receive_errors(1);
                        tracing::debug!(%err, "gossip recv failed");
                    }
                },
            }
            self.flush().await;
        }
    }

    /// Carries out what the core asked for.
    async fn flush(&mut self) {
        for (to, packet) in self.out.packets.drain(..) {
            match self.socket.send_to(&packet, to).await {
                Ok(len) => {
                    self.stats.packets_sent(1);
                    self.stats.bytes_sent(len as u64);
                }
                Err(err) => {
                    self.stats.send_errors(1);
                    tracing::debug!(%to, %err, "gossip send failed");
                }
            }
        }
        let now = Instant::now();
        for (after, timer) in self.out.timers.drain(..) {
            if !self.timers.push(now + after, timer) {
                self.stats.timers_dropped(1);
                tracing::error!("timer heap full; foca timer dropped");
            }
        }
        if let Some(membership) = self.out.membership.take() {
            self.members.send_replace(membership);
        }
        if let Some(generation) = self.out.generation_to_persist.take() {
            // Rare (only after being declared down), and tiny: done inline so
            // two renewals can never be stored out of order.
            if let Err(err) = identity::write_generation(&self.generation_file, generation) {
                tracing::error!(%err, "renewed generation not stored");
            }
        }
    }
}

/// Seed for foca's RNG (member picks): std's per-process random hasher keys
/// mixed with the clock; not cryptographic, and it needs not be.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}
