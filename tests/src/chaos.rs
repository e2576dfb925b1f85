//! The chaos run: a cluster of real nodes, the [`crate::workload`] recording a
//! history, a seeded schedule of process faults injected meanwhile, then the heal,
//! the final reads and the [`crate::checker`].
//!
//! A run goes:
//!
//! 1. [`plan`] turns the seed into a schedule of [`Fault`]s: SIGKILL and a restart
//!    after 1-8 s; SIGSTOP and a SIGCONT after 6-10 s (longer than failure
//!    detection, so the others see the node down and use stand-ins); and, where
//!    [`crate::netfault`] can run, a partition cutting one node (or two, a 2|3
//!    split) off the others for 6-10 s. At most `faulted_max` (2) nodes are faulted
//!    at once and none twice, so with five nodes and `n=3 w=2` a sloppy quorum can
//!    always be found.
//! 2. The workload runs for its duration while the driver injects the schedule,
//!    marking a killed or paused node not live for the workload before faulting it
//!    and live again once it is back (a few requests still stray to faulted nodes).
//!    Partitioned nodes stay live: clients reach both sides, as when servers are
//!    partitioned from each other but not from their clients.
//! 3. Heal: every fault still active is undone; then wait until every node sees every
//!    node alive and no node holds a hint (both bounded; a miss is a note, and the
//!    checker decides).
//! 4. Final state: each key is read at `r=n sloppy=false` (which also read-repairs it),
//!    and every node's `/admin/replicas` view of each key is polled until all views
//!    agree or `converge_within` passes.
//! 5. [`crate::checker::check`] gives the [`Report`].
//!
//! The seed fixes the schedule and each client's choices, not the interleaving: a
//! replay with the same seed injects the same faults at the same offsets into a
//! workload drawing from the same random streams, but answers and timing on a
//! loaded machine differ, and with them the history.
//!
//! The cluster is a [`ChaosTarget`]: [`ChaosCluster`] runs local processes, each
//! bound to its own loopback address (127.0.0.N, leased from
//! [`crate::netfault::NodeIp`]) so that nftables can cut it off; and
//! [`crate::compose::ComposeCluster`] drives the compose cluster's containers
//! with the Docker CLI. The schedule, workload, heal and checks are the same.
//!
//! Caveats: anti-entropy does not exist yet, so keys converge through hinted
//! handoff and the read repair of the final reads. Partitions are off (and said so
//! at the start) where `nft` or CAP_NET_ADMIN is missing, or with
//! `RINGKV_CHAOS_PARTITIONS=0`. The driver injects faults from one task, so a slow
//! restart delays the faults planned after it (the printed times are the real ones).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http::Method;
use ringkv_client::wire::{ClusterBody, ReplicasBody};

use crate::checker::{self, FinalKey, FinalRead, FinalState, ReplicaView, Report};
use crate::harness::{NodeProcess, TestCluster};
use crate::history::{History, Outcome, Recorder, Totals};
use crate::http::{Api, HttpClient, empty, encode_key, wait_members_alive};
use crate::netfault::{self, NetFaults, NodeIp};
use crate::secrets::{self, KeyFile};
use crate::workload::{self, Rng, Targets, WorkloadConfig, key_name};

/// Env var with the seed of a run (decimal); random when unset.
pub const SEED_ENV: &str = "RINGKV_CHAOS_SEED";
/// Env var with the workload's duration in seconds.
pub const DURATION_ENV: &str = "RINGKV_CHAOS_DURATION_S";
/// Env var that turns partitions off when `0` (they are on wherever `nft` and
/// CAP_NET_ADMIN are available).
pub const PARTITIONS_ENV: &str = "RINGKV_CHAOS_PARTITIONS";

/// The seed from [`SEED_ENV`], or a fresh random one.
pub fn seed_from_env() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{SEED_ENV}={text:?} is not a u64: {e}")),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            Rng::new(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
        }
    }
}

/// The duration from [`DURATION_ENV`], or `default`.
pub fn duration_from_env(default: Duration) -> Duration {
    match std::env::var(DURATION_ENV) {
        Ok(text) => Duration::from_secs(
            text.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{DURATION_ENV}={text:?} is not seconds: {e}")),
        ),
        Err(_) => default,
    }
}

/// One fault; nodes are 0-based indices into the cluster (`n{i+1}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then a restart on the same data dir after `down_for`.
    Kill { node: usize, down_for: Duration },
    /// SIGSTOP, then SIGCONT after `paused_for`.
    Pause { node: usize, paused_for: Duration },
    /// Cut every link between the nodes of `side` and the others for `cut_for`.
    Partition { side: Vec<usize>, cut_for: Duration },
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Pause { .. } => "pause",
            Fault::Partition { .. } => "partition",
        }
    }

    /// The nodes it affects (a partition: the side cut off).
    pub fn nodes(&self) -> Vec<usize> {
        match self {
            Fault::Kill { node, .. } | Fault::Pause { node, .. } => vec![*node],
            Fault::Partition { side, .. } => side.clone(),
        }
    }

    /// How long it lasts once injected.
    pub fn length(&self) -> Duration {
        match self {
            Fault::Kill { down_for, .. } => *down_for,
            Fault::Pause { paused_for, .. } => *paused_for,
            Fault::Partition { cut_for, .. } => *cut_for,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |nodes: &[usize]| {
            nodes
                .iter()
                .map(|n| format!("n{}", n + 1))
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "{} {} for {:.1}s",
            self.kind(),
            names(&self.nodes()),
            self.length().as_secs_f64()
        )
    }
}

/// A fault and when to inject it, since the workload's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub fault: Fault,
}

/// The schedule's shape; [`ScheduleConfig::new`] gives the defaults of the brief.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Faults start in `quiet_start .. duration - quiet_end`.
    pub duration: Duration,
    pub quiet_start: Duration,
    pub quiet_end: Duration,
    pub nodes: usize,
    /// Most nodes faulted at once (a 2|3 partition faults two).
    pub faulted_max: usize,
    /// SIGKILL: down for `lo..=hi` ms before the restart.
    pub kill_down_ms: (u64, u64),
    /// SIGSTOP: paused for `lo..=hi` ms.
    pub pause_ms: (u64, u64),
    /// Partition: links cut for `lo..=hi` ms.
    pub partition_ms: (u64, u64),
    /// Between the starts of consecutive faults.
    pub gap_ms: (u64, u64),
    /// A restart's own time, added to a kill when counting overlaps.
    pub restart_slack: Duration,
    /// Whether to plan partitions (needs netfault; see the module docs).
    pub partitions: bool,
}

impl ScheduleConfig {
    pub fn new(duration: Duration, nodes: usize) -> Self {
        Self {
            duration,
            quiet_start: Duration::from_secs(3),
            quiet_end: Duration::from_secs(3),
            nodes,
            faulted_max: 2,
            kill_down_ms: (1000, 8000),
            pause_ms: (6000, 10_000),
            partition_ms: (6000, 10_000),
            gap_ms: (2000, 7000),
            restart_slack: Duration::from_secs(3),
            partitions: false,
        }
    }

    /// Until when `p` keeps its nodes busy.
    fn busy_until(&self, p: &Planned) -> Duration {
        let slack = match p.fault {
            Fault::Kill { .. } => self.restart_slack,
            _ => Duration::ZERO,
        };
        p.at + p.fault.length() + slack
    }
}

/// The fault schedule for `seed`: pure, so a seed always gives the same one.
///
/// Faults start one after another, `gap_ms` apart; a fault starts only if the nodes
/// it hits are not faulted already and at most `faulted_max` nodes are faulted at
/// once (waiting for one to end if need be). A partition cuts one node off, or two
/// (a 2|3 split) when two may be faulted, and never overlaps another partition.
pub fn plan(seed: u64, config: &ScheduleConfig) -> Vec<Planned> {
    assert!(config.nodes > 1 && config.faulted_max > 0);
    let mut rng = Rng::new(seed).fork(0x5EED_FA17);
    let mut out: Vec<Planned> = Vec::new();
    let mut t = config.quiet_start;
    let last_start = config.duration.saturating_sub(config.quiet_end);
    let ms = |(lo, hi): (u64, u64), rng: &mut Rng| Duration::from_millis(rng.between(lo, hi));
    while t < last_start {
        let active: Vec<&Planned> = out.iter().filter(|p| config.busy_until(p) > t).collect();
        let busy: BTreeSet<usize> = active.iter().flat_map(|p| p.fault.nodes()).collect();
        let room = config
            .faulted_max
            .min(config.nodes - 1)
            .saturating_sub(busy.len());
        if room == 0 {
            t = active
                .iter()
                .map(|p| config.busy_until(p))
                .min()
                .unwrap_or(t);
            continue;
        }
        let mut free: Vec<usize> = (0..config.nodes).filter(|n| !busy.contains(n)).collect();
        let node = free.remove(rng.below(free.len() as u64) as usize);
        let partitioned = active
            .iter()
            .any(|p| matches!(p.fault, Fault::Partition { .. }));
        let kinds = if config.partitions && !partitioned {
            3
        } else {
            2
        };
        let fault = match rng.below(kinds) {
            0 => Fault::Kill {
                node,
                down_for: ms(config.kill_down_ms, &mut rng),
            },
            1 => Fault::Pause {
                node,
                paused_for: ms(config.pause_ms, &mut rng),
            },
            _ => {
                let mut side = vec![node];
                if room >= 2 && !free.is_empty() && rng.chance(1.0 / 3.0) {
                    side.push(free[rng.below(free.len() as u64) as usize]);
                    side.sort_unstable();
                }
                Fault::Partition {
                    side,
                    cut_for: ms(config.partition_ms, &mut rng),
                }
            }
        };
        out.push(Planned { at: t, fault });
        t += ms(config.gap_ms, &mut rng);
    }
    out
}

/// What happened to one planned fault.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub fault: Fault,
    /// Since the workload's start.
    pub injected_at: Duration,
    pub healed_at: Option<Duration>,
    /// Why injecting or healing failed, if it did.
    pub error: Option<String>,
}

/// Everything a chaos run configures.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub nodes: usize,
    /// `--n --r --w` of every node.
    pub quorum: (usize, usize, usize),
    pub workload: WorkloadConfig,
    pub schedule: ScheduleConfig,
    /// Bound on every node seeing every node alive after the heal.
    pub alive_within: Duration,
    /// Bound on every hint being handed off after the heal.
    pub hints_within: Duration,
    /// Bound on every key's replicas agreeing, from the end of the final reads.
    pub converge_within: Duration,
    /// Attempts at each key's final read ...
    pub final_read_tries: usize,
    /// ... and a bound on all of them, after which each key gets one attempt.
    pub final_reads_within: Duration,
    /// Bind each node on its own loopback address (127.0.0.N), which partitions
    /// need and which keeps a restarted node's ports from being taken meanwhile by
    /// another process's connection from 127.0.0.1.
    pub own_addresses: bool,
    /// Why partitions are off, `None` when `schedule.partitions` is on.
    pub partitions_off: Option<String>,
}

impl ChaosConfig {
    /// Five nodes at `n=3 r=2 w=2`, the workload and schedule defaults, for a
    /// workload of `duration`.
    pub fn new(duration: Duration) -> Self {
        let nodes = 5;
        let partitions_off = match std::env::var(PARTITIONS_ENV).as_deref() {
            Ok("0" | "false" | "off") => Some(format!("{PARTITIONS_ENV} turns them off")),
            _ => netfault::unavailable(),
        };
        let mut schedule = ScheduleConfig::new(duration, nodes);
        schedule.partitions = partitions_off.is_none();
        Self {
            nodes,
            quorum: (3, 2, 2),
            workload: WorkloadConfig {
                duration,
                ..WorkloadConfig::default()
            },
            schedule,
            alive_within: Duration::from_secs(60),
            hints_within: Duration::from_secs(60),
            converge_within: Duration::from_secs(30),
            final_read_tries: 5,
            final_reads_within: Duration::from_secs(60),
            own_addresses: true,
            partitions_off,
        }
    }
}

/// A finished run, for printing and asserting.
#[derive(Debug)]
pub struct ChaosOutcome {
    pub seed: u64,
    pub planned: usize,
    pub faults: Vec<FaultRecord>,
    pub workload: workload::WorkloadStats,
    pub history: History,
    pub final_state: FinalState,
    /// `None` when the run could not be checked (a node did not come back).
    pub report: Option<Report>,
    /// Time from the end of the final reads until every key had converged.
    pub converged_after: Option<Duration>,
    /// Bounds missed on the way (alive, hints), for the reader; the checker judges.
    pub notes: Vec<String>,
}

impl ChaosOutcome {
    /// Faults that could not be injected or healed.
    pub fn fault_errors(&self) -> Vec<String> {
        self.faults
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.fault)))
            .collect()
    }

    /// No violation and every fault injected and healed.
    pub fn is_clean(&self) -> bool {
        self.report.as_ref().is_some_and(Report::is_clean) && self.fault_errors().is_empty()
    }

    /// The history's totals.
    pub fn totals(&self) -> Totals {
        self.history.totals()
    }

    /// Injected faults per kind.
    pub fn faults_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::from([("kill", 0), ("pause", 0), ("partition", 0)]);
        for r in &self.faults {
            *out.entry(r.fault.kind()).or_default() += 1;
        }
        out
    }

    /// Writes the history (JSON lines), the final state and the report under `dir`.
    pub fn save(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        self.history.write_jsonl(&dir.join("history.jsonl"))?;
        std::fs::write(
            dir.join("final.json"),
            serde_json::to_vec_pretty(&self.final_state)?,
        )?;
        std::fs::write(dir.join("report.txt"), self.to_string())?;
        Ok(())
    }
}

impl fmt::Display for ChaosOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "==== chaos seed {} (replay: {SEED_ENV}={} {DURATION_ENV}={})",
            self.seed,
            self.seed,
            self.workload.elapsed.as_secs().max(1)
        )?;
        writeln!(
            f,
            "workload: {} steps in {:.1}s",
            self.workload.steps,
            self.workload.elapsed.as_secs_f64()
        )?;
        let kinds: Vec<String> = self
            .faults_by_kind()
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            f,
            "faults injected: {} of {} planned ({})",
            self.faults.len(),
            self.planned,
            kinds.join(", ")
        )?;
        for r in &self.faults {
            let healed = r
                .healed_at
                .map_or("never".to_owned(), |t| format!("{:.1}s", t.as_secs_f64()));
            let error = r
                .error
                .as_deref()
                .map_or(String::new(), |e| format!(" ERROR {e}"));
            writeln!(
                f,
                "    at {:>6.1}s {} (back at {healed}){error}",
                r.injected_at.as_secs_f64(),
                r.fault
            )?;
        }
        match self.converged_after {
            Some(t) => writeln!(f, "converged {:.1}s after the final reads", t.as_secs_f64())?,
            None => writeln!(f, "did not converge")?,
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        match &self.report {
            Some(report) => write!(f, "{report}"),
            None => writeln!(f, "history: {} (not checked)", self.totals()),
        }
    }
}

/// Starts the run's cluster: nodes `n1..` with `config.quorum`.
pub async fn start_cluster(config: &ChaosConfig) -> anyhow::Result<ChaosCluster> {
    let ips = if config.own_addresses || config.schedule.partitions {
        NodeIp::claim_many(config.nodes).context("leasing node addresses")?
    } else {
        Vec::new()
    };
    let addrs: Vec<Ipv4Addr> = ips.iter().map(NodeIp::ip).collect();
    // Keyed, as production clusters should run: the faults must not break the handshake.
    let keys = KeyFile::new(&[secrets::KEY_A]).context("writing the cluster key")?;
    let cluster = TestCluster::start(config.nodes, config.quorum, |o| {
        let i =
            o.id.strip_prefix('n')
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| i.checked_sub(1));
        let o = o.flag("--cluster-key-file", keys.arg());
        match i.and_then(|i| addrs.get(i)) {
            Some(ip) => o.bind_ip(*ip),
            None => o,
        }
    })
    .await?;
    let net = if config.schedule.partitions {
        Some(NetFaults::new().context("creating the partition firewall table")?)
    } else {
        None
    };
    Ok(ChaosCluster {
        net,
        cluster,
        ips,
        paused: BTreeSet::new(),
        _keys: keys,
    })
}

/// What the chaos run needs from a cluster: its nodes' URLs and a way to inject and
/// undo each kind of fault. [`ChaosCluster`] does it with local processes, signals
/// and nftables; [`crate::compose::ComposeCluster`] with containers and the Docker
/// CLI. Nodes are 0-based indices, in the order of [`Self::nodes`].
// The futures are awaited in the test's own task, never spawned, so they need no
// `Send` bound.
#[allow(async_fn_in_trait)]
pub trait ChaosTarget {
    /// `(id, base URL)` of every node, in node order.
    fn nodes(&self) -> Vec<(String, String)>;
    /// Whether partitions can be injected.
    fn partitions(&self) -> bool;
    /// Whether a partitioned node still answers clients (a cut between servers
    /// only), or is cut off from them too (a container off its network).
    fn partition_keeps_clients(&self) -> bool;
    /// Kills the node without warning (SIGKILL).
    async fn kill(&mut self, node: usize) -> anyhow::Result<()>;
    /// Starts a killed node again on its data and waits until it answers.
    async fn restart(&mut self, node: usize) -> anyhow::Result<()>;
    /// Freezes the node's process.
    async fn pause(&mut self, node: usize) -> anyhow::Result<()>;
    async fn resume(&mut self, node: usize) -> anyhow::Result<()>;
    /// Cuts the nodes of `side` off from the others.
    async fn partition(&mut self, side: &[usize]) -> anyhow::Result<()>;
    /// Undoes [`Self::partition`] of `side` (the schedule never has two at once).
    async fn heal_partition(&mut self, side: &[usize]) -> anyhow::Result<()>;
    /// Ids of the nodes that are not running (after the heal, there should be none).
    async fn stopped(&mut self) -> Vec<String>;
}

/// The run's cluster, the loopback address each node binds, and the firewall table
/// that partitions them.
#[derive(Debug)]
pub struct ChaosCluster {
    /// Declared first so it drops first: deleting the table heals any cut a failed
    /// run left. `None` when partitions are off.
    pub net: Option<NetFaults>,
    pub cluster: TestCluster,
    /// One per node, in node order; empty when the nodes bind 127.0.0.1.
    pub ips: Vec<NodeIp>,
    /// Nodes paused now: a restarted node is not told to join through them.
    paused: BTreeSet<usize>,
    /// The cluster key every node reads, at start and restart.
    _keys: KeyFile,
}

impl ChaosTarget for ChaosCluster {
    fn nodes(&self) -> Vec<(String, String)> {
        self.cluster
            .nodes
            .iter()
            .map(|n| (n.id().to_owned(), n.base_url()))
            .collect()
    }

    fn partitions(&self) -> bool {
        self.net.is_some()
    }

    fn partition_keeps_clients(&self) -> bool {
        true
    }

    async fn kill(&mut self, node: usize) -> anyhow::Result<()> {
        self.cluster.nodes[node].kill9().map(|_| ())
    }

    async fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        let mut seeds: Vec<SocketAddr> = Vec::new();
        for (i, n) in self.cluster.nodes.iter_mut().enumerate() {
            if i != node && !self.paused.contains(&i) && n.is_running() {
                seeds.push(n.cluster_addr());
            }
        }
        let n: &mut NodeProcess = &mut self.cluster.nodes[node];
        n.set_join(seeds);
        restart(n).await
    }

    async fn pause(&mut self, node: usize) -> anyhow::Result<()> {
        self.paused.insert(node);
        self.cluster.nodes[node].pause()
    }

    async fn resume(&mut self, node: usize) -> anyhow::Result<()> {
        self.paused.remove(&node);
        self.cluster.nodes[node].resume()
    }

    async fn partition(&mut self, side: &[usize]) -> anyhow::Result<()> {
        let net = self
            .net
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("partitions are off"))?;
        anyhow::ensure!(
            self.ips.len() > side.iter().copied().max().unwrap_or(0),
            "the nodes have no addresses of their own"
        );
        let mut cut = Vec::new();
        let mut rest = Vec::new();
        for (i, ip) in self.ips.iter().enumerate() {
            if side.contains(&i) {
                cut.push(ip.ip());
            } else {
                rest.push(ip.ip());
            }
        }
        net.split(&cut, &rest)
    }

    async fn heal_partition(&mut self, _side: &[usize]) -> anyhow::Result<()> {
        match &self.net {
            Some(net) => net.heal(),
            None => Err(anyhow::anyhow!("partitions are off")),
        }
    }

    async fn stopped(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for node in &mut self.cluster.nodes {
            if !node.is_running() {
                out.push(node.id().to_owned());
            }
        }
        out
    }
}

/// Runs the workload and the schedule of `seed` on `cluster`, heals, reads the final
/// state and checks it. Progress goes to stderr as it happens.
pub async fn run<C: ChaosTarget>(cluster: &mut C, config: &ChaosConfig, seed: u64) -> ChaosOutcome {
    let planned = plan(seed, &config.schedule);
    eprintln!(
        "chaos: seed {seed}; {} nodes n={} r={} w={}; {} clients over {} keys for {:?}; {} faults \
         planned:",
        config.nodes,
        config.quorum.0,
        config.quorum.1,
        config.quorum.2,
        config.workload.clients,
        config.workload.keys,
        config.workload.duration,
        planned.len()
    );
    match &config.partitions_off {
        None => eprintln!("chaos: partitions on"),
        Some(why) => eprintln!("chaos: partitions off: {why}"),
    }
    for p in &planned {
        eprintln!("    at {:>6.1}s {}", p.at.as_secs_f64(), p.fault);
    }

    let nodes = cluster.nodes();
    let targets = Arc::new(Targets::new(&nodes, config.workload.request_timeout()));
    let recorder = Arc::new(Recorder::new());
    let done = AtomicBool::new(false);
    let mut driver = Driver {
        records: Vec::new(),
        recorder: recorder.clone(),
        targets: targets.clone(),
        ids: nodes.iter().map(|(id, _)| id.clone()).collect(),
    };
    let workload = async {
        let stats = workload::run(&config.workload, targets.clone(), recorder.clone(), seed).await;
        done.store(true, Ordering::SeqCst);
        stats
    };
    let (stats, ()) = tokio::join!(workload, driver.drive(cluster, &planned, &done));
    eprintln!(
        "chaos: workload done after {:.1}s, {} operations; healing",
        stats.elapsed.as_secs_f64(),
        recorder.len()
    );
    driver.heal_all(cluster).await;
    let history = recorder.take_history();
    let mut notes = Vec::new();
    let down = cluster.stopped().await;
    if !down.is_empty() {
        notes.push(format!(
            "not checked: {} could not be brought back, so there is no final state",
            down.join(",")
        ));
        return ChaosOutcome {
            seed,
            planned: planned.len(),
            faults: driver.records,
            workload: stats,
            history,
            final_state: FinalState::default(),
            report: None,
            converged_after: None,
            notes,
        };
    }
    let http = HttpClient::with_timeout(Duration::from_secs(10));
    let apis: Vec<(String, Api)> = nodes
        .iter()
        .map(|(id, base)| (id.clone(), Api::new(base.clone(), http.clone())))
        .collect();
    if let Err(e) = wait_members_alive(&apis, config.nodes, config.alive_within).await {
        notes.push(format!("after the heal: {e}"));
    }
    if let Err(e) = wait_hints_drained(&apis, config.hints_within).await {
        notes.push(e);
    }
    let mut final_state = final_reads(&apis, config).await;
    let converged_after = wait_converged(&apis, &mut final_state, config).await;
    let checking = Instant::now();
    let report = checker::check(&history, &final_state, config.quorum.0);
    eprintln!(
        "chaos: checked {} operations in {:.1}s",
        history.ops.len(),
        checking.elapsed().as_secs_f64()
    );
    ChaosOutcome {
        seed,
        planned: planned.len(),
        faults: driver.records,
        workload: stats,
        history,
        final_state,
        report: Some(report),
        converged_after,
        notes,
    }
}

/// [`run`], then the verdict: panics, with the seed, the report and the saved
/// history, on any violation or fault that could not be injected or healed, or if
/// the workload did too little to prove anything; and checks that the same history
/// with one planted violation of each kind would have failed (so a clean verdict is
/// not vacuous). Panicking while the caller still holds `cluster` keeps every
/// node's directory and log.
pub async fn run_and_check<C: ChaosTarget>(cluster: &mut C, config: &ChaosConfig, seed: u64) {
    let outcome = run(cluster, config, seed).await;
    eprintln!("{outcome}");
    let t = outcome.totals();
    assert!(
        t.acked > 0 && t.puts > 0 && t.deletes > 0,
        "seed {seed}: the workload did too little to prove anything: {t}"
    );
    if !outcome.is_clean() {
        let dir = artifacts_dir(seed);
        let saved = match outcome.save(&dir) {
            Ok(()) => format!("history, final state and report saved in {}", dir.display()),
            Err(e) => format!("saving the history in {} failed: {e:#}", dir.display()),
        };
        panic!(
            "chaos seed {seed}: {} violations, fault errors {:?}; {saved}\n{outcome}",
            outcome
                .report
                .as_ref()
                .map_or("unchecked".to_owned(), |r| r.violations().to_string()),
            outcome.fault_errors()
        );
    }
    let missed = checker::missed_mutations(&outcome.history, &outcome.final_state, config.quorum.0);
    assert!(
        missed.is_empty(),
        "seed {seed}: the checker let planted violations through on this run: {missed:?}"
    );
}

/// Injects and heals faults, and tells the workload which nodes to avoid.
struct Driver {
    /// One per injected fault, in injection order.
    records: Vec<FaultRecord>,
    recorder: Arc<Recorder>,
    targets: Arc<Targets>,
    /// Node ids, in node order.
    ids: Vec<String>,
}

impl Driver {
    /// Follows `planned` until it ends or `done` is set; faults still active then are
    /// left for [`Self::heal_all`].
    async fn drive<C: ChaosTarget>(
        &mut self,
        cluster: &mut C,
        planned: &[Planned],
        done: &AtomicBool,
    ) {
        // (when, heal before inject at the same instant, plan index, inject?)
        let mut events: Vec<(Duration, u8, usize, bool)> = Vec::new();
        for (i, p) in planned.iter().enumerate() {
            events.push((p.at, 1, i, true));
            events.push((p.at + p.fault.length(), 0, i, false));
        }
        events.sort();
        // Plan index -> index in `records`.
        let mut injected: BTreeMap<usize, usize> = BTreeMap::new();
        const TICK: Duration = Duration::from_millis(100);
        for (at, _, i, inject) in events {
            loop {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let now = self.recorder.elapsed();
                if now >= at {
                    break;
                }
                tokio::time::sleep((at - now).min(TICK)).await;
            }
            if inject {
                let record = self.inject(cluster, &planned[i].fault).await;
                injected.insert(i, self.records.len());
                self.records.push(record);
            } else if let Some(&r) = injected.get(&i) {
                self.heal(cluster, r).await;
            }
        }
    }

    /// The nodes a fault takes away from the workload's clients.
    fn unreachable<C: ChaosTarget>(cluster: &C, fault: &Fault) -> Vec<usize> {
        match fault {
            Fault::Partition { .. } if cluster.partition_keeps_clients() => Vec::new(),
            other => other.nodes(),
        }
    }

    async fn inject<C: ChaosTarget>(&mut self, cluster: &mut C, fault: &Fault) -> FaultRecord {
        let injected_at = self.recorder.elapsed();
        eprintln!("chaos: {:>6.1}s inject {fault}", injected_at.as_secs_f64());
        for node in Self::unreachable(cluster, fault) {
            self.targets.set_live(&self.ids[node], false);
        }
        let result = match fault {
            Fault::Kill { node, .. } => cluster.kill(*node).await,
            Fault::Pause { node, .. } => cluster.pause(*node).await,
            Fault::Partition { side, .. } => cluster.partition(side).await,
        };
        let error = result.err().map(|e| format!("inject: {e:#}"));
        FaultRecord {
            fault: fault.clone(),
            injected_at,
            // A fault that could not be injected has nothing to heal.
            healed_at: error.as_ref().map(|_| injected_at),
            error,
        }
    }

    async fn heal<C: ChaosTarget>(&mut self, cluster: &mut C, r: usize) {
        if self.records[r].healed_at.is_some() {
            return;
        }
        let fault = self.records[r].fault.clone();
        let result = match &fault {
            Fault::Kill { node, .. } => cluster.restart(*node).await,
            Fault::Pause { node, .. } => cluster.resume(*node).await,
            Fault::Partition { side, .. } => cluster.heal_partition(side).await,
        };
        let at = self.recorder.elapsed();
        let record = &mut self.records[r];
        record.healed_at = Some(at);
        match result {
            Ok(()) => {
                for node in Self::unreachable(cluster, &fault) {
                    self.targets.set_live(&self.ids[node], true);
                }
                eprintln!("chaos: {:>6.1}s healed {fault}", at.as_secs_f64());
            }
            Err(e) => {
                let e = first_line(&format!("{e:#}"));
                eprintln!(
                    "chaos: {:>6.1}s healing {fault} FAILED: {e}",
                    at.as_secs_f64()
                );
                record.error = Some(format!("heal: {e}"));
            }
        }
    }

    /// Heals every fault still active, in injection order.
    async fn heal_all<C: ChaosTarget>(&mut self, cluster: &mut C) {
        for r in 0..self.records.len() {
            self.heal(cluster, r).await;
        }
    }
}

/// Restarts a killed node. A restart keeps the node's ports, and while it was down
/// another process may have bound one of them (ports come from below the ephemeral
/// range, so no outgoing connection can take them, but another test may): "in use"
/// is retried.
async fn restart(node: &mut NodeProcess) -> anyhow::Result<()> {
    const ATTEMPTS_MAX: usize = 10;
    const PAUSE: Duration = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match node.restart().await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < ATTEMPTS_MAX && format!("{e:#}").contains("in use") => {
                eprintln!(
                    "chaos: restarting {}: a port is in use (attempt {attempt} of \
                     {ATTEMPTS_MAX}); retrying in {PAUSE:?}",
                    node.id()
                );
                attempt += 1;
                tokio::time::sleep(PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The first line of a message, at most 300 characters: a failed start's error
/// carries the whole log tail, which the node's kept directory has anyway.
fn first_line(text: &str) -> String {
    const CHARS_MAX: usize = 300;
    let line = text.lines().next().unwrap_or_default();
    let mut out: String = line.chars().take(CHARS_MAX).collect();
    if out.len() < text.len() {
        out.push_str(" …");
    }
    out
}

/// Polls every node's `/cluster` until none holds a hint; `Err` with the last counts
/// at `within`.
async fn wait_hints_drained(apis: &[(String, Api)], within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let mut pending = Vec::new();
        for (id, api) in apis {
            match api.try_request(Method::GET, "/cluster", &[], empty()).await {
                Ok(resp) if resp.status == 200 => {
                    match serde_json::from_slice::<ClusterBody>(&resp.body) {
                        Ok(view) => {
                            let total: u64 = view.hints.pending.values().sum();
                            if total > 0 {
                                pending
                                    .push(format!("{} holds {:?}", view.node, view.hints.pending));
                            }
                        }
                        Err(e) => pending.push(format!("{id}: bad /cluster body: {e}")),
                    }
                }
                Ok(resp) => pending.push(format!("{id}: /cluster answered {}", resp.status)),
                Err(e) => pending.push(format!("{id}: {e:#}")),
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "hints not handed off within {within:?}: {}",
                pending.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Reads every key at `r=n sloppy=false`, rotating over the nodes, with retries.
async fn final_reads(apis: &[(String, Api)], config: &ChaosConfig) -> FinalState {
    let n = config.quorum.0;
    let query = format!("r={n}&sloppy=false&timeout_ms=5000");
    let mut state = FinalState::default();
    let deadline = Instant::now() + config.final_reads_within;
    for k in 0..config.workload.keys {
        let key = key_name(k);
        let path = Api::kv_path(key.as_bytes(), &query);
        let mut read = FinalRead::Failed("never tried".to_owned());
        for attempt in 0..config.final_read_tries.max(1) {
            let (_, api) = &apis[(k + attempt) % apis.len()];
            let result = api.try_request(Method::GET, &path, &[], empty()).await;
            match Outcome::of_read(&result) {
                Outcome::Ok(answer) => {
                    read = FinalRead::Values(answer.values().to_vec());
                    break;
                }
                other => {
                    read = FinalRead::Failed(format!("{} answered {other:?}", api.base()));
                    if Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        state.keys.insert(
            key,
            FinalKey {
                read,
                views: Vec::new(),
            },
        );
    }
    state
}

/// Polls `/admin/replicas` of every key on every node until each key's views agree
/// (see [`checker::divergence`]) or `converge_within` passes; leaves the last views in
/// `state`. Returns how long convergence took, `None` if it did not happen.
async fn wait_converged(
    apis: &[(String, Api)],
    state: &mut FinalState,
    config: &ChaosConfig,
) -> Option<Duration> {
    let started = Instant::now();
    let n = config.quorum.0;
    let mut pending: Vec<String> = state.keys.keys().cloned().collect();
    loop {
        let mut still = Vec::new();
        for key in pending {
            let path = format!("/admin/replicas/{}", encode_key(key.as_bytes()));
            let mut views = Vec::with_capacity(apis.len());
            for (id, api) in apis {
                let view = match api.try_request(Method::GET, &path, &[], empty()).await {
                    Ok(resp) if resp.status == 200 => {
                        match serde_json::from_slice::<ReplicasBody>(&resp.body) {
                            Ok(body) => ReplicaView::from_body(id, &body),
                            Err(e) => ReplicaView::failed(id, format!("bad body: {e}")),
                        }
                    }
                    Ok(resp) => ReplicaView::failed(id, format!("answered {}", resp.status)),
                    Err(e) => ReplicaView::failed(id, format!("{e:#}")),
                };
                views.push(view);
            }
            let fk = state.keys.entry(key.clone()).or_default();
            fk.views = views;
            if checker::divergence(fk, n).is_some() {
                still.push(key);
            }
        }
        if still.is_empty() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= config.converge_within {
            eprintln!(
                "chaos: {} keys not converged after {:?}",
                still.len(),
                config.converge_within
            );
            return None;
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Where a failed run's history, final state and report go: a directory that is not
/// removed, named after the seed.
pub fn artifacts_dir(seed: u64) -> PathBuf {
    std::env::temp_dir().join(format!("ringkv-chaos-{seed}-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlapping(config: &ScheduleConfig, faults: &[Planned], t: Duration) -> Vec<Planned> {
        faults
            .iter()
            .filter(|p| p.at <= t && config.busy_until(p) > t)
            .cloned()
            .collect()
    }

    #[test]
    fn a_plan_is_fixed_by_its_seed() {
        // The same seed gives the same schedule; another seed another one.
        let config = ScheduleConfig::new(Duration::from_secs(120), 5);
        assert_eq!(plan(42, &config), plan(42, &config));
        assert_ne!(plan(42, &config), plan(43, &config));
    }

    #[test]
    fn a_plan_respects_its_bounds() {
        // Faults start inside the window and last as configured; at no start are more
        // than `faulted_max` nodes faulted, any node twice, or two partitions active;
        // every kind shows up, partitions only when asked for, 2|3 splits included.
        for partitions in [false, true] {
            let config = ScheduleConfig {
                partitions,
                ..ScheduleConfig::new(Duration::from_secs(600), 5)
            };
            let mut kinds = BTreeSet::new();
            let mut widest_side = 0;
            for seed in 0..50 {
                let faults = plan(seed, &config);
                assert!(
                    faults.len() > 20,
                    "seed {seed}: only {} faults",
                    faults.len()
                );
                for p in &faults {
                    kinds.insert(p.fault.kind());
                    assert!(p.at >= config.quiet_start);
                    assert!(p.at < config.duration - config.quiet_end);
                    let ms = p.fault.length().as_millis() as u64;
                    let (lo, hi) = match &p.fault {
                        Fault::Kill { .. } => config.kill_down_ms,
                        Fault::Pause { .. } => config.pause_ms,
                        Fault::Partition { side, .. } => {
                            widest_side = widest_side.max(side.len());
                            config.partition_ms
                        }
                    };
                    assert!((lo..=hi).contains(&ms), "seed {seed}: {}", p.fault);
                    let active = overlapping(&config, &faults, p.at);
                    let nodes: Vec<usize> = active.iter().flat_map(|a| a.fault.nodes()).collect();
                    let distinct: BTreeSet<usize> = nodes.iter().copied().collect();
                    assert!(nodes.len() <= config.faulted_max, "seed {seed}: {active:?}");
                    assert_eq!(nodes.len(), distinct.len(), "seed {seed}: {active:?}");
                    let cuts = active.iter().filter(|a| a.fault.kind() == "partition");
                    assert!(cuts.count() <= 1, "seed {seed}: {active:?}");
                }
            }
            if partitions {
                assert_eq!(kinds, BTreeSet::from(["kill", "partition", "pause"]));
                assert_eq!(widest_side, 2);
            } else {
                assert_eq!(kinds, BTreeSet::from(["kill", "pause"]));
            }
        }
    }
}
