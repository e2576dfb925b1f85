//! The chaos run: a cluster of real nodes, the [`crate::workload`] recording a
//! history, a seeded schedule of process faults and membership changes injected
//! meanwhile, then the heal, the final reads and the [`crate::checker`].
//!
//! A run goes:
//!
//! 1. [`plan`] turns the seed into a schedule of [`Fault`]s: SIGKILL and a restart
//!    after 1-8 s; SIGSTOP and a SIGCONT after 6-10 s (longer than failure
//!    detection, so the others see the node down and use stand-ins); and, where
//!    [`crate::netfault`] can run, a partition cutting one node (or two, a 2|3
//!    split) off the others for 6-10 s. At most `faulted_max` (2) nodes are faulted
//!    at once and none twice, so with five nodes and `n=3 w=2` a sloppy quorum can
//!    always be found. With membership on (the default; `RINGKV_CHAOS_MEMBERSHIP=0`
//!    turns it off) the schedule also has at most one of each membership change: a
//!    spare node (`n6`) with a new data dir *joins*; a node *leaves*
//!    (`POST /admin/leave`: it hands its ranges over and exits by itself); a node is
//!    killed for good and *removed* (`POST /admin/remove/{id}` once gossip sees it
//!    down), counted as faulted from its kill until its removal is accepted. No
//!    leave or remove takes the ring below `n` members.
//! 2. The workload runs for its duration while the driver injects the schedule,
//!    marking a killed or paused node not live for the workload before faulting it
//!    and live again once it is back (a few requests still stray to faulted nodes).
//!    Partitioned nodes stay live: clients reach both sides, as when servers are
//!    partitioned from each other but not from their clients. A spare is live once
//!    it answers; a leaving node stays live until it exits, a removed one is not
//!    live from its kill.
//! 3. Heal: every fault still active is undone and every removal still due made;
//!    then wait (bounded) for every leaving node to exit, for every node still on
//!    the ring to see the others alive, for every one's `/cluster` to show the ring
//!    settled (no change in flight, every remaining node a `member`, every departed
//!    one `removed`) and for no node to hold a hint. A missed bound is a note, and
//!    the checker decides.
//! 4. Final state, through the nodes still on the ring only: each key is read at
//!    `r=n sloppy=false` (which also read-repairs it), and every node's
//!    `/admin/replicas` view of each key is polled until all views agree or
//!    `converge_within` passes. No departed node may be in any key's preference
//!    list.
//! 5. [`crate::checker::check_lost_nodes`] gives the [`Report`], with
//!    [`Rings::Change`] when the ring changed (a write is then acknowledged by the
//!    homes of two rings, and only `w` in each is promised), and the removed nodes
//!    as lost (their copies died with them, so their acknowledgements promise
//!    nothing to a later read).
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
//! [`ChaosConfig::with_steps`] replaces the seeded schedule by membership changes
//! made in a fixed order, each once the ring has settled after the one before (the
//! compose scale test, which scales the StatefulSet's pods out and in).
//!
//! Keys converge through hinted handoff, anti-entropy (at its default interval) and
//! the read repair of the final reads; with `RINGKV_CHAOS_HINTS=0` the nodes run
//! without hints and with anti-entropy every 2 s, so that it is proven without them.
//!
//! Caveats: partitions are off (and said so
//! at the start) where `nft` or CAP_NET_ADMIN is missing, or with
//! `RINGKV_CHAOS_PARTITIONS=0`. The driver injects faults from one task, so a slow
//! restart or removal delays the faults planned after it (the printed times are the
//! real ones); since faults keep their planned order, the bound on faulted nodes
//! holds all the same. A membership change waits for nodes that are down (a join
//! receives its ranges only once every node writes to the new ring), so under
//! faults it may still be in flight when the workload ends; the heal waits for it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use http::Method;
use ringkv_client::wire::{ClusterBody, ReplicasBody, RingChangeBody};

use crate::checker::{self, FinalKey, FinalRead, FinalState, ReplicaView, Report, Rings};
use crate::harness::{NodeOptions, NodeProcess, TestCluster, free_port_on};
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
/// Env var that turns membership changes (join, leave, remove) off when `0`.
pub const MEMBERSHIP_ENV: &str = "RINGKV_CHAOS_MEMBERSHIP";
/// Env var that turns hinted handoff off when `0`; the nodes then run anti-entropy
/// every [`HINTS_OFF_ANTI_ENTROPY`], so that it alone (with read repair) heals them.
/// Process clusters only ([`start_cluster`]): the compose cluster's nodes keep the
/// flags of its compose file.
pub const HINTS_ENV: &str = "RINGKV_CHAOS_HINTS";
/// `--anti-entropy-interval` of the nodes when [`HINTS_ENV`] turns hints off.
pub const HINTS_OFF_ANTI_ENTROPY: &str = "2s";

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

/// Whether `name` is set to a word that turns a feature off.
fn turned_off(name: &str) -> bool {
    matches!(std::env::var(name).as_deref(), Ok("0" | "false" | "off"))
}

/// One fault or membership change; nodes are 0-based indices into the cluster
/// (`n{i+1}`), the spares that may join numbered after the nodes of the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then a restart on the same data dir after `down_for`.
    Kill { node: usize, down_for: Duration },
    /// SIGSTOP, then SIGCONT after `paused_for`.
    Pause { node: usize, paused_for: Duration },
    /// Cut every link between the nodes of `side` and the others for `cut_for`.
    Partition { side: Vec<usize>, cut_for: Duration },
    /// Start spare `node` on a new data dir, joining the running nodes.
    Join { node: usize },
    /// `POST /admin/leave` to `node`: it hands its ranges over and exits by itself.
    Leave { node: usize },
    /// SIGKILL for good, then after `remove_after` (once another node sees it not
    /// alive) `POST /admin/remove/{id}`.
    Remove { node: usize, remove_after: Duration },
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Pause { .. } => "pause",
            Fault::Partition { .. } => "partition",
            Fault::Join { .. } => "join",
            Fault::Leave { .. } => "leave",
            Fault::Remove { .. } => "remove",
        }
    }

    /// Whether it changes the ring rather than faulting a node for a while.
    pub fn is_membership(&self) -> bool {
        matches!(
            self,
            Fault::Join { .. } | Fault::Leave { .. } | Fault::Remove { .. }
        )
    }

    /// The nodes it affects (a partition: the side cut off).
    pub fn nodes(&self) -> Vec<usize> {
        match self {
            Fault::Kill { node, .. }
            | Fault::Pause { node, .. }
            | Fault::Join { node }
            | Fault::Leave { node }
            | Fault::Remove { node, .. } => vec![*node],
            Fault::Partition { side, .. } => side.clone(),
        }
    }

    /// How long it lasts once injected: a remove until its removal; a join and a
    /// leave have no planned end (they end when the node answers, or exits).
    pub fn length(&self) -> Duration {
        match self {
            Fault::Kill { down_for, .. } => *down_for,
            Fault::Pause { paused_for, .. } => *paused_for,
            Fault::Partition { cut_for, .. } => *cut_for,
            Fault::Remove { remove_after, .. } => *remove_after,
            Fault::Join { .. } | Fault::Leave { .. } => Duration::ZERO,
        }
    }
}

impl Fault {
    /// What it does, naming node `i` by `ids[i]` (by `n{i+1}` past its end).
    pub fn describe(&self, ids: &[String]) -> String {
        let nodes = self
            .nodes()
            .iter()
            .map(|&n| ids.get(n).cloned().unwrap_or_else(|| format!("n{}", n + 1)))
            .collect::<Vec<_>>()
            .join(",");
        let secs = self.length().as_secs_f64();
        match self {
            Fault::Join { .. } | Fault::Leave { .. } => format!("{} {nodes}", self.kind()),
            Fault::Remove { .. } => format!("remove {nodes} (SIGKILL, removal after {secs:.1}s)"),
            _ => format!("{} {nodes} for {secs:.1}s", self.kind()),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(&[]))
    }
}

/// A fault and when to inject it, since the workload's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub fault: Fault,
}

/// The schedule's shape; [`ScheduleConfig::new`] gives the defaults of the brief,
/// with membership changes off ([`Self::with_membership`] turns them on).
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Faults start in `quiet_start .. duration - quiet_end`.
    pub duration: Duration,
    pub quiet_start: Duration,
    pub quiet_end: Duration,
    /// Nodes on the ring at the start; spares that may join come after them.
    pub nodes: usize,
    /// Most nodes faulted at once (a 2|3 partition faults two, a node being
    /// removed one).
    pub faulted_max: usize,
    /// Fewest ring members left unfaulted at any moment: the write quorum, so that a
    /// sloppy quorum can always be found.
    pub live_min: usize,
    /// Fewest ring members a leave or a remove may leave: the replication factor,
    /// so that every key keeps `n` distinct homes.
    pub ring_min: usize,
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
    /// Most spares that join (`nodes`, `nodes + 1`, … in turn), nodes that leave,
    /// and nodes killed for good and removed, in one run.
    pub joins_max: usize,
    pub leaves_max: usize,
    pub removes_max: usize,
    /// Remove: from the SIGKILL to the removal, `lo..=hi` ms (longer than failure
    /// detection, so that the removal is seldom refused as `node_alive`).
    pub remove_after_ms: (u64, u64),
    /// A removal's own time (waiting for gossip, retries), added to a remove when
    /// counting overlaps.
    pub remove_slack: Duration,
}

impl ScheduleConfig {
    pub fn new(duration: Duration, nodes: usize) -> Self {
        Self {
            duration,
            quiet_start: Duration::from_secs(3),
            quiet_end: Duration::from_secs(3),
            nodes,
            faulted_max: 2,
            live_min: 2,
            ring_min: 3,
            kill_down_ms: (1000, 8000),
            pause_ms: (6000, 10_000),
            partition_ms: (6000, 10_000),
            gap_ms: (2000, 7000),
            restart_slack: Duration::from_secs(3),
            partitions: false,
            joins_max: 0,
            leaves_max: 0,
            removes_max: 0,
            remove_after_ms: (5000, 10_000),
            remove_slack: Duration::from_secs(5),
        }
    }

    /// The same with at most `joins` joins, `leaves` leaves and `removes` removes.
    pub fn with_membership(self, joins: usize, leaves: usize, removes: usize) -> Self {
        Self {
            joins_max: joins,
            leaves_max: leaves,
            removes_max: removes,
            ..self
        }
    }

    /// Until when `p` keeps its nodes busy (faulted).
    fn busy_until(&self, p: &Planned) -> Duration {
        let slack = match p.fault {
            Fault::Kill { .. } => self.restart_slack,
            Fault::Remove { .. } => self.remove_slack,
            _ => Duration::ZERO,
        };
        p.at + p.fault.length() + slack
    }

    /// The window faults start in.
    fn last_start(&self) -> Duration {
        self.duration.saturating_sub(self.quiet_end)
    }
}

/// A membership change the schedule wants, before it is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Join,
    Leave,
    Remove,
}

/// The fault schedule for `seed`: pure, so a seed always gives the same one.
///
/// Faults start one after another, `gap_ms` apart; a fault starts only if the nodes
/// it hits are not faulted already, at most `faulted_max` nodes are faulted at once
/// and at least `live_min` ring members are not (waiting for a fault to end if need
/// be). A partition cuts one node off, or two (a 2|3 split) when two may be
/// faulted, and never overlaps another partition.
///
/// Membership changes come from a stream of their own, so that with them off a seed
/// gives the schedule it always gave. Each is wanted at a random time in its own
/// equal share of the window, in a seeded order, and placed then if it fits, else
/// at the first fault start after it where it fits: a leave or a remove hits a node of the start
/// that is not faulted, and only while it leaves at least `ring_min` members; a
/// remove also needs room for one more faulted node. One that never fits is left
/// out. A node that left or was removed is never faulted again, and a spare only
/// once it joined.
pub fn plan(seed: u64, config: &ScheduleConfig) -> Vec<Planned> {
    assert!(config.nodes > config.live_min && config.faulted_max > 0);
    let mut rng = Rng::new(seed).fork(0x5EED_FA17);
    let mut mrng = Rng::new(seed).fork(0x4E4B_C4A9);
    let mut wanted = wanted_steps(&mut mrng, config);
    let dues: Vec<Duration> = wanted.iter().map(|(due, _)| *due).collect();
    let mut woken = 0;
    let mut out: Vec<Planned> = Vec::new();
    // The next ordinary fault's start, and the instant looked at last.
    let mut t = config.quiet_start;
    let mut last = Duration::ZERO;
    let ms = |(lo, hi): (u64, u64), rng: &mut Rng| Duration::from_millis(rng.between(lo, hi));
    loop {
        while dues.get(woken).is_some_and(|due| *due <= last) {
            woken += 1;
        }
        // A wanted change is looked at when it is due, even between two faults.
        let now = dues.get(woken).copied().filter(|due| *due < t).unwrap_or(t);
        if now >= config.last_start() {
            break;
        }
        last = now;
        let moment = Moment::of(config, &out, now);
        if let Some(fault) = place_step(&mut wanted, &moment, now, config, &mut mrng) {
            out.push(Planned { at: now, fault });
            if now == t {
                t += ms(config.gap_ms, &mut mrng);
            }
            continue;
        }
        if now < t {
            continue;
        }
        let room = moment.room(config);
        if room == 0 {
            match moment.next_end {
                Some(end) => t = end,
                None => break,
            }
            continue;
        }
        let fault = ordinary_fault(&moment, room, config, &mut rng);
        out.push(Planned { at: t, fault });
        t += ms(config.gap_ms, &mut rng);
    }
    out
}

/// A kill, pause or partition of free nodes of `moment`, with `room` for more.
fn ordinary_fault(moment: &Moment, room: usize, config: &ScheduleConfig, rng: &mut Rng) -> Fault {
    let ms = |(lo, hi): (u64, u64), rng: &mut Rng| Duration::from_millis(rng.between(lo, hi));
    let mut free = moment.free();
    let node = free.remove(rng.below(free.len() as u64) as usize);
    let kinds = if config.partitions && !moment.partitioned {
        3
    } else {
        2
    };
    match rng.below(kinds) {
        0 => Fault::Kill {
            node,
            down_for: ms(config.kill_down_ms, rng),
        },
        1 => Fault::Pause {
            node,
            paused_for: ms(config.pause_ms, rng),
        },
        _ => {
            let mut side = vec![node];
            if room >= 2 && !free.is_empty() && rng.chance(1.0 / 3.0) {
                side.push(free[rng.below(free.len() as u64) as usize]);
                side.sort_unstable();
            }
            Fault::Partition {
                side,
                cut_for: ms(config.partition_ms, rng),
            }
        }
    }
}

/// The membership changes a run wants, with when: the kinds in a seeded order, the
/// `i`th at a random time in the `i`th equal share of the first three quarters of
/// the window, so they spread over the run, every order shows up over seeds, and a
/// change that must wait for room (a remove) still has time to find it.
fn wanted_steps(rng: &mut Rng, config: &ScheduleConfig) -> Vec<(Duration, Step)> {
    let mut kinds: Vec<Step> = std::iter::repeat_n(Step::Join, config.joins_max)
        .chain(std::iter::repeat_n(Step::Leave, config.leaves_max))
        .chain(std::iter::repeat_n(Step::Remove, config.removes_max))
        .collect();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let window = config.last_start().saturating_sub(config.quiet_start) * 3 / 4;
    let share_ms = (window.as_millis() as u64) / (kinds.len().max(1) as u64);
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            let offset_ms = share_ms * i as u64 + rng.below(share_ms.max(1));
            (config.quiet_start + Duration::from_millis(offset_ms), step)
        })
        .collect()
}

/// Takes the first wanted step due by `t` that fits `moment`, as the fault to start.
fn place_step(
    wanted: &mut Vec<(Duration, Step)>,
    moment: &Moment,
    t: Duration,
    config: &ScheduleConfig,
    rng: &mut Rng,
) -> Option<Fault> {
    for i in 0..wanted.len() {
        let (due, step) = wanted[i];
        if due > t {
            break;
        }
        if let Some(fault) = fit_step(step, moment, config, rng) {
            wanted.remove(i);
            return Some(fault);
        }
    }
    None
}

/// `step` as a fault that fits `moment`, if one does.
fn fit_step(step: Step, m: &Moment, config: &ScheduleConfig, rng: &mut Rng) -> Option<Fault> {
    if step == Step::Join {
        return Some(Fault::Join {
            node: config.nodes + m.joined,
        });
    }
    let shrinks_too_far = m.ring_after <= config.ring_min;
    let fits = match step {
        Step::Leave => m.ring.len().saturating_sub(m.busy.len() + 1) >= config.live_min,
        _ => m.room(config) > 0,
    };
    let candidates: Vec<usize> = m.free().into_iter().filter(|&n| n < config.nodes).collect();
    if shrinks_too_far || !fits || candidates.is_empty() {
        return None;
    }
    let node = candidates[rng.below(candidates.len() as u64) as usize];
    Some(match step {
        Step::Leave => Fault::Leave { node },
        _ => Fault::Remove {
            node,
            remove_after: Duration::from_millis(
                rng.between(config.remove_after_ms.0, config.remove_after_ms.1),
            ),
        },
    })
}

/// What the schedule so far leaves at one instant.
#[derive(Debug)]
struct Moment {
    /// Nodes on the ring and not leaving: the nodes of the start and the spares that
    /// joined, but not those that left or whose removal is done (one whose removal
    /// is still due is here, and busy).
    ring: BTreeSet<usize>,
    /// Nodes faulted now.
    busy: BTreeSet<usize>,
    /// Ring members once every removal still due is done.
    ring_after: usize,
    /// Spares joined so far.
    joined: usize,
    /// Whether a partition is active.
    partitioned: bool,
    /// The earliest end of a fault active now.
    next_end: Option<Duration>,
}

impl Moment {
    /// The state at `t` of the schedule `out`, all of whose faults start by `t`.
    fn of(config: &ScheduleConfig, out: &[Planned], t: Duration) -> Self {
        let mut ring: BTreeSet<usize> = (0..config.nodes).collect();
        let mut m = Moment {
            ring: BTreeSet::new(),
            busy: BTreeSet::new(),
            ring_after: 0,
            joined: 0,
            partitioned: false,
            next_end: None,
        };
        let mut removals_due = 0;
        for p in out {
            let end = config.busy_until(p);
            let active = end > t;
            match p.fault {
                Fault::Join { node } => {
                    ring.insert(node);
                    m.joined += 1;
                }
                Fault::Leave { node } => {
                    ring.remove(&node);
                }
                Fault::Remove { node, .. } if !active => {
                    ring.remove(&node);
                }
                Fault::Remove { .. } => removals_due += 1,
                Fault::Partition { .. } if active => m.partitioned = true,
                _ => {}
            }
            if active {
                m.busy.extend(p.fault.nodes());
                m.next_end = Some(m.next_end.map_or(end, |e| e.min(end)));
            }
        }
        m.ring_after = ring.len() - removals_due;
        m.ring = ring;
        m
    }

    /// How many more nodes may be faulted now.
    fn room(&self, config: &ScheduleConfig) -> usize {
        config
            .faulted_max
            .min(self.ring.len().saturating_sub(config.live_min))
            .saturating_sub(self.busy.len())
    }

    /// Ring members not faulted now, in node order.
    fn free(&self) -> Vec<usize> {
        self.ring.difference(&self.busy).copied().collect()
    }
}

/// What happened to one planned fault or membership change.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub fault: Fault,
    /// Since the workload's start.
    pub injected_at: Duration,
    /// When it was healed, or for a membership change when it was done (a spare
    /// answered, a leaving node exited, a removal was accepted).
    pub healed_at: Option<Duration>,
    /// Why injecting or healing failed, if it did.
    pub error: Option<String>,
}

/// Everything a chaos run configures.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// Nodes on the ring at the start (spares for joins come on top).
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
    /// Why membership changes are off, `None` when the schedule has them.
    pub membership_off: Option<String>,
    /// Nodes run with `--hinted-handoff false` and anti-entropy every
    /// [`HINTS_OFF_ANTI_ENTROPY`] ([`HINTS_ENV`]).
    pub hints_off: bool,
    /// Bound on a leaving node's exit, from its `POST /admin/leave`.
    pub leave_within: Duration,
    /// Bound on a removal: gossip seeing the node down, then the `POST` accepted.
    pub remove_within: Duration,
    /// Bound on the ring settling after the heal (no change in flight anywhere),
    /// and after each of `steps`.
    pub ring_within: Duration,
    /// Membership changes made in order instead of the seeded schedule, a group
    /// at a time (see [`Self::with_steps`]); `None` runs the schedule.
    pub steps: Option<Vec<Vec<Fault>>>,
    /// With `steps`: the load before the first group, between groups, and after
    /// the last.
    pub step_gap: Duration,
}

impl ChaosConfig {
    /// Five nodes at `n=3 r=2 w=2`, the workload and schedule defaults, for a
    /// workload of `duration`; membership changes (one join, one leave, one remove
    /// at most) unless [`MEMBERSHIP_ENV`] turns them off.
    pub fn new(duration: Duration) -> Self {
        let nodes = 5;
        let quorum = (3, 2, 2);
        let partitions_off = if turned_off(PARTITIONS_ENV) {
            Some(format!("{PARTITIONS_ENV} turns them off"))
        } else {
            netfault::unavailable()
        };
        let membership_off =
            turned_off(MEMBERSHIP_ENV).then(|| format!("{MEMBERSHIP_ENV} turns them off"));
        let mut schedule = ScheduleConfig::new(duration, nodes);
        schedule.partitions = partitions_off.is_none();
        (schedule.ring_min, schedule.live_min) = (quorum.0, quorum.2);
        if membership_off.is_none() {
            schedule = schedule.with_membership(1, 1, 1);
        }
        Self {
            nodes,
            quorum,
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
            membership_off,
            hints_off: turned_off(HINTS_ENV),
            leave_within: Duration::from_secs(180),
            remove_within: Duration::from_secs(60),
            ring_within: Duration::from_secs(180),
            steps: None,
            step_gap: Duration::from_secs(10),
        }
    }

    /// The same, making `steps` instead of a seeded schedule: under the workload,
    /// each group's changes begin together (joins, leaves), and the next group
    /// waits until this one's leaving nodes have exited and every ring member's
    /// `/cluster` shows the ring settled, `step_gap` apart. The workload runs until
    /// the last group is done and `step_gap` more, with `bound` as its limit: a
    /// step not done by then is an error.
    pub fn with_steps(mut self, steps: Vec<Vec<Fault>>, bound: Duration) -> Self {
        self.workload.duration = bound;
        self.schedule.duration = bound;
        self.membership_off = None;
        self.steps = Some(steps);
        self
    }

    /// Turns joins off, for a target without spares, saying why.
    pub fn without_joins(&mut self, why: &str) {
        self.schedule.joins_max = 0;
        eprintln!("chaos: joins off: {why}");
    }
}

/// A finished run, for printing and asserting.
#[derive(Debug)]
pub struct ChaosOutcome {
    pub seed: u64,
    /// Node ids, in node order (spares last): how faults name their nodes.
    pub ids: Vec<String>,
    pub planned: usize,
    pub faults: Vec<FaultRecord>,
    pub workload: workload::WorkloadStats,
    pub history: History,
    pub final_state: FinalState,
    /// `None` when the run could not be checked (a node did not come back).
    pub report: Option<Report>,
    /// Time from the end of the final reads until every key had converged.
    pub converged_after: Option<Duration>,
    /// Bounds missed on the way (alive, ring, hints), for the reader; the checker
    /// judges.
    pub notes: Vec<String>,
    /// The nodes on the ring at the end, which the final state was read through.
    pub members: Vec<String>,
    /// The nodes that left or were removed, in the order they went.
    pub departed: Vec<String>,
    /// How the checker counted acknowledgements: [`Rings::Change`] once a
    /// membership change was made.
    pub rings: Rings,
    /// Keys whose preference list still names a departed node at the end.
    pub departed_homes: Vec<String>,
    /// The departed nodes that were killed for good and removed: the copies they
    /// held are gone, so the checker takes their acknowledgements as no promise to
    /// a later read.
    pub lost: Vec<String>,
}

impl ChaosOutcome {
    /// Faults that could not be injected or healed.
    pub fn fault_errors(&self) -> Vec<String> {
        self.faults
            .iter()
            .filter_map(|r| {
                r.error
                    .as_ref()
                    .map(|e| format!("{}: {e}", r.fault.describe(&self.ids)))
            })
            .collect()
    }

    /// No violation, every fault injected and healed, every membership change done,
    /// and no departed node left in a preference list.
    pub fn is_clean(&self) -> bool {
        self.report.as_ref().is_some_and(Report::is_clean)
            && self.fault_errors().is_empty()
            && self.departed_homes.is_empty()
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

/// `ids` joined with commas, or `none`.
fn none_or_list(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.join(",")
    }
}

/// Examples of departed homes shown in the report.
const DEPARTED_HOMES_SHOWN: usize = 5;

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
            let end = if r.fault.is_membership() {
                "done"
            } else {
                "back"
            };
            let healed = r
                .healed_at
                .map_or("never".to_owned(), |t| format!("{:.1}s", t.as_secs_f64()));
            let error = r
                .error
                .as_deref()
                .map_or(String::new(), |e| format!(" ERROR {e}"));
            writeln!(
                f,
                "    at {:>6.1}s {} ({end} at {healed}){error}",
                r.injected_at.as_secs_f64(),
                r.fault.describe(&self.ids)
            )?;
        }
        writeln!(
            f,
            "ring at the end: {}; departed: {} (removed, their copies lost: {}); checked \
             with {:?}",
            self.members.join(","),
            none_or_list(&self.departed),
            none_or_list(&self.lost),
            self.rings
        )?;
        if !self.departed_homes.is_empty() {
            writeln!(
                f,
                "departed nodes still home replicas of {} keys:",
                self.departed_homes.len()
            )?;
            for home in self.departed_homes.iter().take(DEPARTED_HOMES_SHOWN) {
                writeln!(f, "    {home}")?;
            }
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

/// Starts the run's cluster: nodes `n1..` with `config.quorum`, and the spares that
/// may join (`schedule.joins_max` of them) ready to start on addresses and ports of
/// their own, so the workload can list them from the start.
pub async fn start_cluster(config: &ChaosConfig) -> anyhow::Result<ChaosCluster> {
    let spares = config.schedule.joins_max;
    let ips = if config.own_addresses || config.schedule.partitions {
        NodeIp::claim_many(config.nodes + spares).context("leasing node addresses")?
    } else {
        Vec::new()
    };
    let addrs: Vec<Ipv4Addr> = ips.iter().map(NodeIp::ip).collect();
    // Keyed, as production clusters should run: the faults must not break the handshake.
    let keys = KeyFile::new(&[secrets::KEY_A]).context("writing the cluster key")?;
    if config.hints_off {
        eprintln!(
            "chaos: hinted handoff off ({HINTS_ENV}=0), anti-entropy every {HINTS_OFF_ANTI_ENTROPY}"
        );
    }
    let keyed = |o: NodeOptions, i: usize| {
        let mut o = o.flag("--cluster-key-file", keys.arg());
        if config.hints_off {
            o = o
                .flag("--hinted-handoff", "false")
                .flag("--anti-entropy-interval", HINTS_OFF_ANTI_ENTROPY);
        }
        match addrs.get(i) {
            Some(ip) => o.bind_ip(*ip),
            None => o,
        }
    };
    let cluster = TestCluster::start(config.nodes, config.quorum, |o| {
        let i =
            o.id.strip_prefix('n')
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| i.checked_sub(1))
                .unwrap_or(usize::MAX);
        keyed(o, i)
    })
    .await?;
    let (n, r, w) = config.quorum;
    let mut spare_nodes = Vec::with_capacity(spares);
    for i in config.nodes..config.nodes + spares {
        let opts = keyed(NodeOptions::new(format!("n{}", i + 1)).quorum(n, r, w), i);
        let ip = opts.bind_ip;
        let opts = opts.ports(free_port_on(ip, false)?, free_port_on(ip, true)?);
        spare_nodes.push(Spare {
            opts,
            process: None,
        });
    }
    let net = if config.schedule.partitions {
        Some(NetFaults::new().context("creating the partition firewall table")?)
    } else {
        None
    };
    Ok(ChaosCluster {
        net,
        cluster,
        spares: spare_nodes,
        ips,
        paused: BTreeSet::new(),
        departed: BTreeSet::new(),
        _keys: keys,
    })
}

/// What the chaos run needs from a cluster: its nodes' URLs and a way to inject and
/// undo each kind of fault and membership change. [`ChaosCluster`] does it with
/// local processes, signals and nftables; [`crate::compose::ComposeCluster`] with
/// containers and the Docker CLI. Nodes are 0-based indices, in the order of
/// [`Self::nodes`]. The membership calls themselves (`/admin/leave`,
/// `/admin/remove`) go through the nodes' HTTP API, the same for both.
// The futures are awaited in the test's own task, never spawned, so they need no
// `Send` bound.
#[allow(async_fn_in_trait)]
pub trait ChaosTarget {
    /// `(id, base URL)` of every node, in node order: the nodes of the start, then
    /// the spares that may join (not running until then).
    fn nodes(&self) -> Vec<(String, String)>;
    /// How many of [`Self::nodes`] are spares, at the end of the list.
    fn spares(&self) -> usize;
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
    /// Starts spare `node` on a new data dir, joining the running nodes, and waits
    /// until it answers.
    async fn join(&mut self, node: usize) -> anyhow::Result<()>;
    /// Whether the node has exited by itself (as a leaving node does): `Ok(false)`
    /// while it runs, `Err` if it exited with a failure.
    async fn exited(&mut self, node: usize) -> anyhow::Result<bool>;
    /// Forgets a node that left or was removed: [`Self::stopped`] no longer lists it.
    fn depart(&mut self, node: usize);
    /// Ids of the nodes started and not departed that are not running (after the
    /// heal, there should be none).
    async fn stopped(&mut self) -> Vec<String>;
}

/// A node that may join: its options (fixed ports, so its URL is known before it
/// starts) and, once started, its process.
#[derive(Debug)]
struct Spare {
    opts: NodeOptions,
    process: Option<NodeProcess>,
}

/// The run's cluster, the loopback address each node binds, and the firewall table
/// that partitions them.
#[derive(Debug)]
pub struct ChaosCluster {
    /// Declared first so it drops first: deleting the table heals any cut a failed
    /// run left. `None` when partitions are off.
    pub net: Option<NetFaults>,
    pub cluster: TestCluster,
    /// The nodes that may join, after those of `cluster` in node order.
    spares: Vec<Spare>,
    /// One per node, spares included, in node order; empty when the nodes bind
    /// 127.0.0.1.
    pub ips: Vec<NodeIp>,
    /// Nodes paused now: a restarted node is not told to join through them.
    paused: BTreeSet<usize>,
    /// Nodes that left or were removed.
    departed: BTreeSet<usize>,
    /// The cluster key every node reads, at start and restart.
    _keys: KeyFile,
}

impl ChaosCluster {
    /// The process of `node`, if it was started.
    fn process(&mut self, node: usize) -> Option<&mut NodeProcess> {
        let started = self.cluster.nodes.len();
        if node < started {
            self.cluster.nodes.get_mut(node)
        } else {
            self.spares.get_mut(node - started)?.process.as_mut()
        }
    }

    fn process_or_err(&mut self, node: usize) -> anyhow::Result<&mut NodeProcess> {
        self.process(node)
            .with_context(|| format!("node n{} was never started", node + 1))
    }

    /// The cluster addresses of the nodes running, not paused and not departed,
    /// but `node`: the seeds a starting node joins through.
    fn seeds_for(&mut self, node: usize) -> Vec<SocketAddr> {
        let total = self.cluster.nodes.len() + self.spares.len();
        let mut seeds = Vec::new();
        for i in (0..total).filter(|&i| i != node) {
            if self.paused.contains(&i) || self.departed.contains(&i) {
                continue;
            }
            if let Some(n) = self.process(i)
                && n.is_running()
            {
                seeds.push(n.cluster_addr());
            }
        }
        seeds
    }
}

impl ChaosTarget for ChaosCluster {
    fn nodes(&self) -> Vec<(String, String)> {
        let started = self
            .cluster
            .nodes
            .iter()
            .map(|n| (n.id().to_owned(), n.base_url()));
        let spares = self.spares.iter().map(|s| {
            let (http, _) = s.opts.ports.unwrap_or_default();
            (
                s.opts.id.clone(),
                format!("http://{}:{http}", s.opts.bind_ip),
            )
        });
        started.chain(spares).collect()
    }

    fn spares(&self) -> usize {
        self.spares.len()
    }

    fn partitions(&self) -> bool {
        self.net.is_some()
    }

    fn partition_keeps_clients(&self) -> bool {
        true
    }

    async fn kill(&mut self, node: usize) -> anyhow::Result<()> {
        self.process_or_err(node)?.kill9().map(|_| ())
    }

    async fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        let seeds = self.seeds_for(node);
        let n = self.process_or_err(node)?;
        n.set_join(seeds);
        restart(n).await
    }

    async fn pause(&mut self, node: usize) -> anyhow::Result<()> {
        self.paused.insert(node);
        self.process_or_err(node)?.pause()
    }

    async fn resume(&mut self, node: usize) -> anyhow::Result<()> {
        self.paused.remove(&node);
        self.process_or_err(node)?.resume()
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

    async fn join(&mut self, node: usize) -> anyhow::Result<()> {
        let seeds = self.seeds_for(node);
        let started = self.cluster.nodes.len();
        let spare = node
            .checked_sub(started)
            .and_then(|i| self.spares.get_mut(i))
            .with_context(|| format!("n{} is not a spare", node + 1))?;
        ensure!(spare.process.is_none(), "{} joined already", spare.opts.id);
        let opts = spare.opts.clone().join(seeds);
        spare.process = Some(NodeProcess::start(opts).await?);
        Ok(())
    }

    async fn exited(&mut self, node: usize) -> anyhow::Result<bool> {
        match self.process_or_err(node)?.try_exit()? {
            None => Ok(false),
            Some(status) if status.success() => Ok(true),
            Some(status) => bail!("exited with {status}"),
        }
    }

    fn depart(&mut self, node: usize) {
        self.departed.insert(node);
    }

    async fn stopped(&mut self) -> Vec<String> {
        let total = self.cluster.nodes.len() + self.spares.len();
        let mut out = Vec::new();
        for i in 0..total {
            if self.departed.contains(&i) {
                continue;
            }
            if let Some(node) = self.process(i)
                && !node.is_running()
            {
                out.push(node.id().to_owned());
            }
        }
        out
    }
}

/// Runs the workload and the schedule of `seed` on `cluster`, heals, reads the final
/// state and checks it. Progress goes to stderr as it happens.
pub async fn run<C: ChaosTarget>(cluster: &mut C, config: &ChaosConfig, seed: u64) -> ChaosOutcome {
    let mut schedule = config.schedule.clone();
    schedule.joins_max = schedule.joins_max.min(cluster.spares());
    let planned = match &config.steps {
        Some(_) => Vec::new(),
        None => plan(seed, &schedule),
    };
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
        _ if config.steps.is_some() => {}
        None => eprintln!("chaos: partitions on"),
        Some(why) => eprintln!("chaos: partitions off: {why}"),
    }
    match &config.membership_off {
        None if config.steps.is_some() => {}
        None => eprintln!(
            "chaos: membership changes on: at most {} join, {} leave, {} remove",
            schedule.joins_max, schedule.leaves_max, schedule.removes_max
        ),
        Some(why) => eprintln!("chaos: membership changes off: {why}"),
    }
    let nodes = cluster.nodes();
    let ids: Vec<String> = nodes.iter().map(|(id, _)| id.clone()).collect();
    for p in &planned {
        eprintln!(
            "    at {:>6.1}s {}",
            p.at.as_secs_f64(),
            p.fault.describe(&ids)
        );
    }

    let originals = nodes.len() - cluster.spares();
    let targets = Arc::new(Targets::new(&nodes, config.workload.request_timeout()));
    for (id, _) in &nodes[originals..] {
        targets.set_live(id, false);
    }
    let recorder = Arc::new(Recorder::new());
    let done = AtomicBool::new(false);
    let mut driver = Driver::new(&nodes, originals, config, recorder.clone(), targets.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workload_config = config.workload.clone();
    workload_config.stop = Some(stop.clone());
    let workload = async {
        let stats = workload::run(&workload_config, targets.clone(), recorder.clone(), seed).await;
        done.store(true, Ordering::SeqCst);
        stats
    };
    let driving = async {
        match &config.steps {
            None => driver.drive(cluster, &planned, &done).await,
            Some(steps) => {
                for (i, group) in steps.iter().enumerate() {
                    let what: Vec<String> = group.iter().map(|f| f.describe(&ids)).collect();
                    eprintln!("    step {}: {}", i + 1, what.join(", "));
                }
                driver.drive_steps(cluster, steps, config, &done).await;
                stop.store(true, Ordering::SeqCst);
            }
        }
    };
    let (stats, ()) = tokio::join!(workload, driving);
    eprintln!(
        "chaos: workload done after {:.1}s, {} operations; healing",
        stats.elapsed.as_secs_f64(),
        recorder.len()
    );
    driver.heal_all(cluster).await;
    driver.finish_leaves(cluster).await;
    let history = recorder.take_history();
    let mut outcome = ChaosOutcome {
        seed,
        ids,
        planned: match &config.steps {
            Some(steps) => steps.iter().map(Vec::len).sum(),
            None => planned.len(),
        },
        faults: Vec::new(),
        workload: stats,
        history,
        final_state: FinalState::default(),
        report: None,
        converged_after: None,
        notes: Vec::new(),
        members: driver
            .members()
            .iter()
            .map(|&i| nodes[i].0.clone())
            .collect(),
        departed: driver.departed_ids(),
        rings: driver.rings(),
        departed_homes: Vec::new(),
        lost: driver.lost().iter().map(|&i| nodes[i].0.clone()).collect(),
    };
    let down = cluster.stopped().await;
    if down.is_empty() {
        settle_and_check(&driver.member_apis(), &mut outcome, config).await;
    } else {
        outcome.notes.push(format!(
            "not checked: {} could not be brought back, so there is no final state",
            down.join(",")
        ));
    }
    outcome.faults = driver.records;
    outcome
}

/// After the heal: waits for the ring members in `apis` to settle, reads the final
/// state through them and checks it into `outcome`.
async fn settle_and_check(
    apis: &[(String, Api)],
    outcome: &mut ChaosOutcome,
    config: &ChaosConfig,
) {
    if let Err(e) = wait_members_alive(apis, apis.len(), config.alive_within).await {
        outcome.notes.push(format!("after the heal: {e}"));
    }
    if outcome.rings == Rings::Change {
        let departed: BTreeSet<String> = outcome.departed.iter().cloned().collect();
        if let Err(e) = wait_ring_settled(apis, &departed, config.ring_within).await {
            outcome.notes.push(e);
        }
    }
    if let Err(e) = wait_hints_drained(apis, config.hints_within).await {
        outcome.notes.push(e);
    }
    let mut final_state = final_reads(apis, config).await;
    outcome.converged_after = wait_converged(apis, &mut final_state, config).await;
    outcome.departed_homes = departed_homes(&final_state, &outcome.departed);
    let checking = Instant::now();
    let lost: BTreeSet<String> = outcome.lost.iter().cloned().collect();
    let report = checker::check_lost_nodes(
        &outcome.history,
        &final_state,
        config.quorum.0,
        outcome.rings,
        &lost,
    );
    eprintln!(
        "chaos: checked {} operations in {:.1}s",
        outcome.history.ops.len(),
        checking.elapsed().as_secs_f64()
    );
    outcome.final_state = final_state;
    outcome.report = Some(report);
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
            "chaos seed {seed}: {} violations, fault errors {:?}, {} keys with departed homes; \
             {saved}\n{outcome}",
            outcome
                .report
                .as_ref()
                .map_or("unchecked".to_owned(), |r| r.violations().to_string()),
            outcome.fault_errors(),
            outcome.departed_homes.len()
        );
    }
    let missed = checker::missed_mutations(&outcome.history, &outcome.final_state, config.quorum.0);
    assert!(
        missed.is_empty(),
        "seed {seed}: the checker let planted violations through on this run: {missed:?}"
    );
}

/// How often the driver asks whether a leaving node has exited.
const LEAVE_POLL: Duration = Duration::from_secs(1);

/// Injects and heals faults, carries membership changes out, and tells the
/// workload which nodes to avoid.
struct Driver {
    /// One per injected fault, in injection order.
    records: Vec<FaultRecord>,
    recorder: Arc<Recorder>,
    targets: Arc<Targets>,
    /// Node ids, in node order.
    ids: Vec<String>,
    /// Each node's HTTP API, for `/cluster` and the membership calls.
    apis: Vec<Api>,
    /// Nodes on the ring at the start (`0..originals`); the rest are spares.
    originals: usize,
    /// Spares that joined.
    joined: BTreeSet<usize>,
    /// Nodes that left (and exited) or were removed, in the order they went.
    departed: Vec<usize>,
    /// Records of leaves whose node has not exited yet.
    leaving: Vec<usize>,
    /// When leaving nodes were last asked about.
    leaves_polled: Option<Instant>,
    leave_within: Duration,
    remove_within: Duration,
}

impl Driver {
    fn new(
        nodes: &[(String, String)],
        originals: usize,
        config: &ChaosConfig,
        recorder: Arc<Recorder>,
        targets: Arc<Targets>,
    ) -> Self {
        let http = HttpClient::with_timeout(Duration::from_secs(10));
        Self {
            records: Vec::new(),
            recorder,
            targets,
            ids: nodes.iter().map(|(id, _)| id.clone()).collect(),
            apis: nodes
                .iter()
                .map(|(_, base)| Api::new(base.clone(), http.clone()))
                .collect(),
            originals,
            joined: BTreeSet::new(),
            departed: Vec::new(),
            leaving: Vec::new(),
            leaves_polled: None,
            leave_within: config.leave_within,
            remove_within: config.remove_within,
        }
    }

    /// The nodes on the ring now: those of the start and the spares that joined,
    /// but not those that left or were removed.
    fn members(&self) -> Vec<usize> {
        let all: BTreeSet<usize> = (0..self.originals)
            .chain(self.joined.iter().copied())
            .collect();
        all.into_iter()
            .filter(|n| !self.departed.contains(n))
            .collect()
    }

    /// The ring members' ids and APIs, for asking them about the ring.
    fn member_apis(&self) -> Vec<(String, Api)> {
        self.members()
            .into_iter()
            .map(|i| (self.ids[i].clone(), self.apis[i].clone()))
            .collect()
    }

    /// The ids of the nodes that left or were removed, in the order they went.
    fn departed_ids(&self) -> Vec<String> {
        self.departed.iter().map(|&i| self.ids[i].clone()).collect()
    }

    /// The nodes whose removal was accepted (killed for good, their data gone).
    fn lost(&self) -> Vec<usize> {
        self.departed
            .iter()
            .copied()
            .filter(|&n| {
                self.records
                    .iter()
                    .any(|r| matches!(r.fault, Fault::Remove { node, .. } if node == n))
            })
            .collect()
    }

    /// How the checker must count: the ring changed once any membership change was
    /// tried (a failed one may have changed it too).
    fn rings(&self) -> Rings {
        if self.records.iter().any(|r| r.fault.is_membership()) {
            Rings::Change
        } else {
            Rings::Fixed
        }
    }

    /// Follows `planned` until it ends or `done` is set, then follows the leaves
    /// still under way until `done`; faults still active then are left for
    /// [`Self::heal_all`].
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
        for (at, _, i, inject) in events {
            if !self.wait_until(cluster, at, done).await {
                return;
            }
            if inject {
                injected.insert(i, self.inject(cluster, &planned[i].fault).await);
            } else if let Some(&r) = injected.get(&i) {
                self.heal(cluster, r).await;
            }
        }
        self.wait_until(cluster, Duration::MAX, done).await;
    }

    /// Makes `steps` as [`ChaosConfig::with_steps`] says, under the workload, until
    /// they are done or `done` (the workload's bound) is set; a step that could not
    /// be made, or after which the ring did not settle in time, is an error in its
    /// record, and ends the steps.
    async fn drive_steps<C: ChaosTarget>(
        &mut self,
        cluster: &mut C,
        steps: &[Vec<Fault>],
        config: &ChaosConfig,
        done: &AtomicBool,
    ) {
        for group in steps {
            let at = self.recorder.elapsed() + config.step_gap;
            if !self.wait_until(cluster, at, done).await {
                break;
            }
            let first = self.records.len();
            let began = self.recorder.elapsed();
            for fault in group {
                self.inject(cluster, fault).await;
            }
            self.finish_leaves(cluster).await;
            let apis = self.member_apis();
            let settled = if self.records[first..].iter().any(|r| r.error.is_some()) {
                Err("the step failed".to_owned())
            } else {
                let departed: BTreeSet<String> = self.departed_ids().into_iter().collect();
                wait_ring_settled(&apis, &departed, config.ring_within).await
            };
            let at = self.recorder.elapsed();
            match settled {
                Ok(()) => eprintln!(
                    "chaos: {:>6.1}s ring settled, {:.1}s after the step began: {} members ({})",
                    at.as_secs_f64(),
                    (at - began).as_secs_f64(),
                    apis.len(),
                    apis.iter()
                        .map(|(id, _)| id.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Err(e) => {
                    eprintln!("chaos: {:>6.1}s steps end here: {e}", at.as_secs_f64());
                    for r in &mut self.records[first..] {
                        r.error.get_or_insert_with(|| format!("after it: {e}"));
                    }
                    return;
                }
            }
        }
        let at = self.recorder.elapsed() + config.step_gap;
        self.wait_until(cluster, at, done).await;
        let undone = steps.iter().map(Vec::len).sum::<usize>() - self.records.len();
        if undone > 0 {
            eprintln!(
                "chaos: {undone} steps not begun within the workload's bound {:?}",
                config.workload.duration
            );
            for fault in steps.iter().flatten().skip(self.records.len()) {
                let at = self.recorder.elapsed();
                self.records.push(FaultRecord {
                    fault: fault.clone(),
                    injected_at: at,
                    healed_at: Some(at),
                    error: Some("not begun within the workload's bound".to_owned()),
                });
            }
        }
    }

    /// Sleeps until `at` on the workload's clock, following leaves meanwhile; false
    /// once `done` is set.
    async fn wait_until<C: ChaosTarget>(
        &mut self,
        cluster: &mut C,
        at: Duration,
        done: &AtomicBool,
    ) -> bool {
        const TICK: Duration = Duration::from_millis(100);
        loop {
            if done.load(Ordering::SeqCst) {
                return false;
            }
            if self.leaves_polled.is_none_or(|t| t.elapsed() >= LEAVE_POLL) {
                self.follow_leaves(cluster).await;
                self.leaves_polled = Some(Instant::now());
            }
            let now = self.recorder.elapsed();
            if now >= at {
                return true;
            }
            tokio::time::sleep((at - now).min(TICK)).await;
        }
    }

    /// The nodes a fault takes away from the workload's clients.
    fn unreachable<C: ChaosTarget>(cluster: &C, fault: &Fault) -> Vec<usize> {
        match fault {
            Fault::Partition { .. } if cluster.partition_keeps_clients() => Vec::new(),
            Fault::Join { .. } | Fault::Leave { .. } => Vec::new(),
            other => other.nodes(),
        }
    }

    /// Injects `fault` and records it; returns the record's index.
    async fn inject<C: ChaosTarget>(&mut self, cluster: &mut C, fault: &Fault) -> usize {
        let injected_at = self.recorder.elapsed();
        let verb = if fault.is_membership() {
            "begin"
        } else {
            "inject"
        };
        eprintln!(
            "chaos: {:>6.1}s {verb} {}",
            injected_at.as_secs_f64(),
            fault.describe(&self.ids)
        );
        for node in Self::unreachable(cluster, fault) {
            self.targets.set_live(&self.ids[node], false);
        }
        let result = match fault {
            Fault::Kill { node, .. } | Fault::Remove { node, .. } => cluster.kill(*node).await,
            Fault::Pause { node, .. } => cluster.pause(*node).await,
            Fault::Partition { side, .. } => cluster.partition(side).await,
            Fault::Join { node } => cluster.join(*node).await,
            Fault::Leave { node } => self.leave(*node).await,
        };
        let error = result
            .err()
            .map(|e| format!("inject: {}", first_line(&format!("{e:#}"))));
        let r = self.records.len();
        self.records.push(FaultRecord {
            fault: fault.clone(),
            injected_at,
            // A fault that could not be injected has nothing to heal.
            healed_at: error.as_ref().map(|_| injected_at),
            error,
        });
        if self.records[r].error.is_none() {
            match *fault {
                Fault::Join { node } => self.joined_now(r, node),
                Fault::Leave { .. } => self.leaving.push(r),
                _ => {}
            }
        }
        r
    }

    /// Spare `node` answers: the workload may use it. A node that departed earlier
    /// and joins again on a new data dir (a StatefulSet scaled back out) is a member
    /// again.
    fn joined_now(&mut self, r: usize, node: usize) {
        let at = self.recorder.elapsed();
        self.records[r].healed_at = Some(at);
        self.departed.retain(|&n| n != node);
        self.joined.insert(node);
        self.targets.set_live(&self.ids[node], true);
        eprintln!(
            "chaos: {:>6.1}s {} answers: on the ring, joining",
            at.as_secs_f64(),
            self.ids[node]
        );
    }

    /// `POST /admin/leave` to `node`: 202 `{"node":…,"ring":"leaving"}`.
    async fn leave(&self, node: usize) -> anyhow::Result<()> {
        let resp = self.apis[node]
            .try_request(Method::POST, "/admin/leave", &[], empty())
            .await?;
        ensure!(resp.status == 202, "POST /admin/leave answered {resp}");
        let body: RingChangeBody = serde_json::from_slice(&resp.body)
            .with_context(|| format!("POST /admin/leave answered {resp}"))?;
        ensure!(
            body.node == self.ids[node] && body.ring == "leaving",
            "POST /admin/leave answered {resp}"
        );
        Ok(())
    }

    async fn heal<C: ChaosTarget>(&mut self, cluster: &mut C, r: usize) {
        if self.records[r].healed_at.is_some() {
            return;
        }
        let fault = self.records[r].fault.clone();
        let what = fault.describe(&self.ids);
        let result = match &fault {
            Fault::Kill { node, .. } => cluster.restart(*node).await,
            Fault::Pause { node, .. } => cluster.resume(*node).await,
            Fault::Partition { side, .. } => cluster.heal_partition(side).await,
            Fault::Remove { node, .. } => self.remove(*node).await,
            // Done when the spare answers, or the leaving node exits.
            Fault::Join { .. } | Fault::Leave { .. } => return,
        };
        let at = self.recorder.elapsed();
        self.records[r].healed_at = Some(at);
        match (result, &fault) {
            (Ok(()), Fault::Remove { node, .. }) => {
                self.depart(cluster, *node);
                eprintln!("chaos: {:>6.1}s done {what}", at.as_secs_f64());
            }
            (Ok(()), _) => {
                for node in Self::unreachable(cluster, &fault) {
                    self.targets.set_live(&self.ids[node], true);
                }
                eprintln!("chaos: {:>6.1}s healed {what}", at.as_secs_f64());
            }
            (Err(e), _) => {
                let e = first_line(&format!("{e:#}"));
                eprintln!(
                    "chaos: {:>6.1}s healing {what} FAILED: {e}",
                    at.as_secs_f64()
                );
                self.records[r].error = Some(format!("heal: {e}"));
                if let Fault::Remove { node, .. } = fault {
                    self.restore(cluster, node).await;
                }
            }
        }
    }

    /// Restarts a node whose removal failed, so the run can still be checked: it
    /// is still on the ring.
    async fn restore<C: ChaosTarget>(&mut self, cluster: &mut C, node: usize) {
        match cluster.restart(node).await {
            Ok(()) => self.targets.set_live(&self.ids[node], true),
            Err(e) => eprintln!(
                "chaos: restarting {} after its failed removal: {}",
                self.ids[node],
                first_line(&format!("{e:#}"))
            ),
        }
    }

    /// Takes `node` off the ring for the workload and the target.
    fn depart<C: ChaosTarget>(&mut self, cluster: &mut C, node: usize) {
        self.departed.push(node);
        self.targets.set_live(&self.ids[node], false);
        cluster.depart(node);
    }

    /// Heals every fault still active and makes every removal still due, in
    /// injection order.
    async fn heal_all<C: ChaosTarget>(&mut self, cluster: &mut C) {
        for r in 0..self.records.len() {
            self.heal(cluster, r).await;
        }
    }

    /// Checks each leaving node once: one that exited has departed; one that exited
    /// with a failure, or still runs `leave_within` after its leave, is an error.
    async fn follow_leaves<C: ChaosTarget>(&mut self, cluster: &mut C) {
        for r in std::mem::take(&mut self.leaving) {
            let node = self.records[r].fault.nodes()[0];
            let exited = cluster.exited(node).await;
            let at = self.recorder.elapsed();
            let late = at >= self.records[r].injected_at + self.leave_within;
            let running = matches!(exited, Ok(false));
            let error = match exited {
                Ok(false) if !late => {
                    self.leaving.push(r);
                    continue;
                }
                Ok(false) => Some(format!("still running {:?} after it", self.leave_within)),
                Ok(true) => None,
                Err(e) => Some(first_line(&format!("{e:#}"))),
            };
            if !running {
                self.depart(cluster, node);
            }
            let what = self.records[r].fault.describe(&self.ids);
            let record = &mut self.records[r];
            record.healed_at = Some(at);
            match error {
                None => eprintln!("chaos: {:>6.1}s done {what}: it exited", at.as_secs_f64()),
                Some(e) => {
                    eprintln!("chaos: {:>6.1}s {what} FAILED: {e}", at.as_secs_f64());
                    record.error = Some(format!("leave: {e}"));
                }
            }
        }
    }

    /// Waits for every leave still under way to end, each within its bound.
    async fn finish_leaves<C: ChaosTarget>(&mut self, cluster: &mut C) {
        while !self.leaving.is_empty() {
            self.follow_leaves(cluster).await;
            if !self.leaving.is_empty() {
                tokio::time::sleep(LEAVE_POLL).await;
            }
        }
    }

    /// Ring members that can answer for the cluster now: not faulted, not leaving,
    /// not `but`.
    fn askers(&self, but: usize) -> Vec<usize> {
        let faulted: BTreeSet<usize> = self
            .records
            .iter()
            .filter(|r| r.healed_at.is_none())
            .flat_map(|r| r.fault.nodes())
            .collect();
        self.members()
            .into_iter()
            .filter(|n| *n != but && !faulted.contains(n))
            .collect()
    }

    /// Takes killed `node` off the ring: asks the other members in turn until one
    /// sees it not alive and accepts `POST /admin/remove/{id}` (202
    /// `{"ring":"removed"}`; 409 `node_alive` means gossip has not seen it down yet),
    /// within `remove_within`.
    async fn remove(&self, node: usize) -> anyhow::Result<()> {
        let id = &self.ids[node];
        let askers = self.askers(node);
        ensure!(!askers.is_empty(), "no ring member to ask");
        let deadline = Instant::now() + self.remove_within;
        let mut turn = 0;
        loop {
            let asker = askers[turn % askers.len()];
            turn += 1;
            let last = match self.try_remove(&self.apis[asker], id).await {
                Ok(true) => return Ok(()),
                Ok(false) => format!("{} still sees it alive", self.ids[asker]),
                Err(e) => format!("{}: {e:#}", self.ids[asker]),
            };
            if Instant::now() >= deadline {
                bail!("{id} not removed within {:?}: {last}", self.remove_within);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One removal attempt through `api`: `Ok(false)` while it sees `id` alive.
    async fn try_remove(&self, api: &Api, id: &str) -> anyhow::Result<bool> {
        let resp = api
            .try_request(Method::GET, "/cluster", &[], empty())
            .await?;
        ensure!(resp.status == 200, "GET /cluster answered {}", resp.status);
        let view: ClusterBody = serde_json::from_slice(&resp.body)?;
        if view
            .members
            .iter()
            .any(|m| m.id == id && m.state == "alive")
        {
            return Ok(false);
        }
        let path = format!("/admin/remove/{}", encode_key(id.as_bytes()));
        let resp = api.try_request(Method::POST, &path, &[], empty()).await?;
        if resp.status == 409 && resp.text().contains("node_alive") {
            return Ok(false);
        }
        ensure!(resp.status == 202, "POST {path} answered {resp}");
        let body: RingChangeBody = serde_json::from_slice(&resp.body)?;
        ensure!(
            body.node == id && body.ring == "removed",
            "POST {path} answered {resp}"
        );
        Ok(true)
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

/// Polls every node's `/cluster` until each shows the ring settled: no transfer in
/// flight, every node of `apis` a `member`, every node of `departed` `removed` (or
/// forgotten); `Err` with what each laggard shows at `within`.
async fn wait_ring_settled(
    apis: &[(String, Api)],
    departed: &BTreeSet<String>,
    within: Duration,
) -> Result<(), String> {
    let members: BTreeSet<&str> = apis.iter().map(|(id, _)| id.as_str()).collect();
    let deadline = Instant::now() + within;
    loop {
        let mut laggards = Vec::new();
        for (id, api) in apis {
            let why = match api.try_request(Method::GET, "/cluster", &[], empty()).await {
                Ok(resp) if resp.status == 200 => match serde_json::from_slice(&resp.body) {
                    Ok(view) => unsettled(&view, &members, departed),
                    Err(e) => Some(format!("bad /cluster body: {e}")),
                },
                Ok(resp) => Some(format!("/cluster answered {}", resp.status)),
                Err(e) => Some(format!("{e:#}")),
            };
            laggards.extend(why.map(|why| format!("{id}: {why}")));
        }
        if laggards.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the ring did not settle within {within:?}: {}",
                laggards.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Why one node's `/cluster` does not show the ring settled, if it does not.
fn unsettled(
    view: &ClusterBody,
    members: &BTreeSet<&str>,
    departed: &BTreeSet<String>,
) -> Option<String> {
    let mut wrong: Vec<String> = Vec::new();
    if view.transfers.in_flight {
        wrong.push(format!(
            "a change in flight ({} of {} nodes ready)",
            view.transfers.nodes_ready, view.transfers.nodes_total
        ));
    }
    for id in members {
        let ring = view
            .members
            .iter()
            .find(|m| m.id == *id)
            .map(|m| m.ring.as_str());
        if ring != Some("member") {
            wrong.push(format!("{id} is {}", ring.unwrap_or("unknown")));
        }
    }
    for m in &view.members {
        if departed.contains(&m.id) && m.ring != "removed" {
            wrong.push(format!("{} is {}", m.id, m.ring));
        }
    }
    (!wrong.is_empty()).then(|| wrong.join(", "))
}

/// Keys whose preference list, in any node's final `/admin/replicas` view, names a
/// node of `departed`: what a settled ring must never show.
fn departed_homes(state: &FinalState, departed: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (key, fk) in &state.keys {
        for view in &fk.views {
            if let Some(gone) = view.preference_list.iter().find(|id| departed.contains(id)) {
                out.push(format!(
                    "{key}: {} lists {:?} with {gone}",
                    view.observer, view.preference_list
                ));
                break;
            }
        }
    }
    out
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

    /// The short process run's schedule, membership on.
    fn with_membership(duration_s: u64) -> ScheduleConfig {
        ScheduleConfig {
            partitions: true,
            ..ScheduleConfig::new(Duration::from_secs(duration_s), 5)
        }
        .with_membership(1, 1, 1)
    }

    #[test]
    fn a_plan_is_fixed_by_its_seed() {
        // The same seed gives the same schedule, membership changes included;
        // another seed another one.
        for config in [
            ScheduleConfig::new(Duration::from_secs(120), 5),
            with_membership(120),
        ] {
            assert_eq!(plan(42, &config), plan(42, &config));
            assert_ne!(plan(42, &config), plan(43, &config));
        }
    }

    #[test]
    fn a_plan_respects_its_bounds() {
        // Faults start inside the window and last as configured; at no start are more
        // than `faulted_max` nodes faulted (a node being removed counted), any node
        // twice, or two partitions active; every kind shows up, partitions only when
        // asked for, 2|3 splits included, membership changes only when asked for.
        for (partitions, membership) in [(false, false), (true, false), (true, true)] {
            let mut config = ScheduleConfig {
                partitions,
                ..ScheduleConfig::new(Duration::from_secs(600), 5)
            };
            if membership {
                config = config.with_membership(1, 1, 1);
            }
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
                        Fault::Remove { .. } => config.remove_after_ms,
                        Fault::Join { .. } | Fault::Leave { .. } => (0, 0),
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
            let mut expected = BTreeSet::from(["kill", "pause"]);
            if partitions {
                expected.insert("partition");
                assert_eq!(widest_side, 2);
            }
            if membership {
                expected.extend(["join", "leave", "remove"]);
            }
            assert_eq!(kinds, expected);
        }
    }

    #[test]
    fn membership_off_leaves_the_schedule_of_a_seed_as_it_was() {
        // Membership changes draw from their own stream: with none asked for, the
        // plan has none, and turning them on keeps the faults before the first
        // change as they were.
        let off = ScheduleConfig::new(Duration::from_secs(600), 5);
        let on = off.clone().with_membership(1, 1, 1);
        for seed in 0..50 {
            let plain = plan(seed, &off);
            assert!(plain.iter().all(|p| !p.fault.is_membership()));
            let changed = plan(seed, &on);
            let first = changed
                .iter()
                .position(|p| p.fault.is_membership())
                .expect("a change in 600 s");
            assert_eq!(plain[..first], changed[..first], "seed {seed}");
        }
    }

    /// Walks `faults` in order, checking at every start what [`plan`] promises about
    /// nodes, and returns the ring once every removal is done: spares join in turn and are faulted
    /// only once they joined; a node that left or was removed is never faulted
    /// again; leaves and removes hit nodes of the start that are not faulted; at
    /// least `live_min` ring members are never faulted; and no leave or remove takes
    /// the ring below `ring_min`.
    fn check_nodes(config: &ScheduleConfig, faults: &[Planned], seed: u64) -> BTreeSet<usize> {
        let mut ring: BTreeSet<usize> = (0..config.nodes).collect();
        let mut gone: BTreeSet<usize> = BTreeSet::new();
        let mut joins = 0;
        for p in faults {
            let t = p.at;
            let before: Vec<Planned> = faults.iter().filter(|q| q.at < t).cloned().collect();
            for q in &before {
                if let Fault::Remove { node, .. } = q.fault
                    && config.busy_until(q) <= t
                {
                    ring.remove(&node);
                    gone.insert(node);
                }
            }
            let busy_before: BTreeSet<usize> = overlapping(config, &before, t)
                .iter()
                .flat_map(|q| q.fault.nodes())
                .collect();
            let what = format!("seed {seed}: {} at {:?}", p.fault, p.at);
            match p.fault {
                Fault::Join { node } => {
                    assert_eq!(node, config.nodes + joins, "{what}");
                    joins += 1;
                    ring.insert(node);
                }
                Fault::Leave { node } | Fault::Remove { node, .. } => {
                    assert!(node < config.nodes, "{what}");
                    assert!(
                        ring.contains(&node) && !busy_before.contains(&node),
                        "{what}"
                    );
                    if matches!(p.fault, Fault::Leave { .. }) {
                        ring.remove(&node);
                        gone.insert(node);
                    }
                }
                _ => {}
            }
            for node in p.fault.nodes() {
                assert!(!gone.contains(&node) || p.fault.kind() == "leave", "{what}");
                assert!(ring.contains(&node) || p.fault.kind() == "leave", "{what}");
            }
            let busy: BTreeSet<usize> = overlapping(config, faults, t)
                .iter()
                .flat_map(|q| q.fault.nodes())
                .collect();
            assert!(
                ring.len() - busy.len() >= config.live_min,
                "{what}: ring {ring:?}, faulted {busy:?}"
            );
            let removals_due = overlapping(config, faults, t)
                .iter()
                .filter(|q| q.fault.kind() == "remove")
                .count();
            assert!(
                ring.len() - removals_due >= config.ring_min,
                "{what}: {ring:?}"
            );
        }
        for p in faults {
            if let Fault::Remove { node, .. } = p.fault {
                ring.remove(&node);
            }
        }
        ring
    }

    #[test]
    fn membership_changes_keep_the_ring_whole() {
        // Over many seeds and both a short and a long run: at most the configured
        // number of each change, and the node rules of `check_nodes`; even when
        // asked for more leaves and removes than the ring can give, it keeps
        // `ring_min` members.
        for (duration_s, joins, leaves, removes) in [(75, 1, 1, 1), (600, 1, 1, 1), (600, 2, 4, 4)]
        {
            let config = with_membership(duration_s).with_membership(joins, leaves, removes);
            for seed in 0..200 {
                let faults = plan(seed, &config);
                let count = |kind: &str| faults.iter().filter(|p| p.fault.kind() == kind).count();
                assert!(count("join") <= joins, "seed {seed}: {faults:?}");
                assert!(count("leave") <= leaves, "seed {seed}: {faults:?}");
                assert!(count("remove") <= removes, "seed {seed}: {faults:?}");
                let ring = check_nodes(&config, &faults, seed);
                assert!(ring.len() >= config.ring_min, "seed {seed}: {ring:?}");
                assert_eq!(
                    ring.len(),
                    config.nodes + count("join") - count("leave") - count("remove"),
                    "seed {seed}: {faults:?}"
                );
            }
        }
    }

    #[test]
    fn a_short_run_gets_every_membership_change() {
        // In the 75 s window of the short run, one join, one leave and one remove
        // all find a place, in every order over the seeds.
        let config = with_membership(75);
        let mut orders = BTreeSet::new();
        for seed in 0..200 {
            let faults = plan(seed, &config);
            let order: Vec<&str> = faults
                .iter()
                .filter(|p| p.fault.is_membership())
                .map(|p| p.fault.kind())
                .collect();
            assert_eq!(order.len(), 3, "seed {seed}: {faults:?}");
            orders.insert(order);
        }
        assert_eq!(orders.len(), 6, "{orders:?}");
    }
}
