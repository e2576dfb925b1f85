//! One seed, start to end: boot the hosts, let the clients and the fault schedule
//! loose together, heal everything, read every key back, and check the history.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_node::coordinator::Quorum;
use ringkv_tests::checker::{self, FinalKey, FinalRead, FinalState, ReplicaState, ReplicaView};
use ringkv_tests::history::{Answer, History, Outcome};
use tokio::sync::Mutex as AsyncMutex;

use crate::clock;
use crate::faults::{self, Fault, FaultKind};
use crate::host::{self, Host};
use crate::membership;
use crate::net::{Net, NetConfig};
use crate::rng::SimRng;
use crate::trace;
use crate::trace::Trace;
use crate::workload::{self, Directory, Listing, Shared};

/// What a run is made of.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub hosts: usize,
    pub clients: usize,
    pub ops: usize,
    pub faults: usize,
    pub keys: usize,
    /// The planted bug: the disk's fsync lies.
    pub lose_acked_writes: bool,
    /// Keep the trace's events as text.
    pub keep_log: bool,
    /// Membership changes during the run: the last host joins, one host leaves, one
    /// is crashed for good and removed.
    pub membership: bool,
    /// Every host seals its gossip under one cluster key (`ringkv-sim --keyed`).
    pub keyed: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            hosts: 5,
            clients: 8,
            ops: 2000,
            faults: 20,
            keys: 40,
            lose_acked_writes: false,
            keep_log: false,
            membership: false,
            keyed: false,
        }
    }
}

/// How a seed ended.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub seed: u64,
    pub trace_hash: u64,
    pub events: u64,
    /// The first thing that went wrong, if anything did.
    pub violation: Option<String>,
    /// Counts for `--verbose`.
    pub summary: String,
    pub log: Vec<String>,
}

/// Runs `seed` on a fresh single-threaded runtime with paused time.
pub fn run_seed(seed: u64, options: &SimOptions) -> SeedReport {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(simulate(seed, options.clone()))
}

pub(crate) type Hosts = Arc<Vec<AsyncMutex<Host>>>;

async fn simulate(seed: u64, options: SimOptions) -> SeedReport {
    clock::start();
    let trace = Trace::new(options.keep_log);
    let mut rng = SimRng::derive(seed, "run");
    let net_config = NetConfig {
        latency_us: (100, rng.range(300, 3_000)),
        spike_chance: 0.01,
        spike_ms: (20, 200),
        udp_loss: rng.range(0, 6) as f64 / 100.0,
        udp_dup: rng.range(0, 3) as f64 / 100.0,
    };
    trace!(trace, "seed {seed} {net_config:?}");
    let net = Net::new(seed, net_config, trace.clone());
    let dir = tempfile::tempdir().expect("a temp dir for generation files");
    let quorum = Quorum { n: 3, r: 2, w: 2 };
    let first = crate::host::address(0);
    let hosts: Hosts = Arc::new(
        (0..options.hosts)
            .map(|i| {
                let seeds = if i == 0 { Vec::new() } else { vec![first] };
                let mut host = Host::new(
                    i,
                    seed,
                    dir.path(),
                    seeds,
                    quorum,
                    options.lose_acked_writes,
                );
                if options.keyed {
                    host.cluster_keys = Some(crate::host::sim_cluster_keys(seed));
                }
                net.add_host(&host.id, host.addr);
                AsyncMutex::new(host)
            })
            .collect(),
    );
    let directory: Directory = Arc::new(Mutex::new(
        (0..options.hosts)
            .map(|i| Listing {
                addr: crate::host::address(i),
                running: None,
                listed: false,
            })
            .collect(),
    ));
    let fail = |what: String| {
        let (trace_hash, events) = trace.digest();
        SeedReport {
            seed,
            trace_hash,
            events,
            violation: Some(what),
            summary: String::new(),
            log: trace.take_log(),
        }
    };
    let changes = options
        .membership
        .then(|| membership::Changes::draw(seed, options.hosts));
    let spare = changes.as_ref().map(|c| c.joiner);
    for i in (0..options.hosts).filter(|i| Some(*i) != spare) {
        if let Err(e) = boot(&hosts, &directory, &net, i).await {
            return fail(format!("host n{} did not start: {e:#}", i + 1));
        }
    }
    if let Err(e) = wait_formed(&hosts, Duration::from_secs(30)).await {
        return fail(format!("the cluster did not form: {e}"));
    }
    trace!(trace, "cluster formed");

    // Clients, faults and membership changes together; the faults span the time the
    // clients need.
    let span = Duration::from_millis(options.faults as u64 * 4_500);
    let think_ms = span.as_millis() as u64 * options.clients as u64 / options.ops.max(1) as u64;
    let exclude: Vec<usize> = changes.iter().flat_map(|c| c.hosts()).collect();
    let plan = faults::plan(seed, options.faults, options.hosts, &exclude, span);
    let shared = Arc::new(Shared {
        directory: directory.clone(),
        net: net.clone(),
        trace: trace.clone(),
        ops: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(0),
        budget: AtomicUsize::new(options.ops),
        keys: options.keys,
        n: quorum.n,
        think_ms,
    });
    let clients: Vec<_> = (0..options.clients)
        .map(|c| tokio::spawn(workload::client(shared.clone(), c, seed)))
        .collect();
    let fault_tasks: Vec<_> = plan
        .iter()
        .cloned()
        .map(|fault| {
            let (hosts, directory, net, trace) =
                (hosts.clone(), directory.clone(), net.clone(), trace.clone());
            tokio::spawn(async move { inject(fault, hosts, directory, net, trace).await })
        })
        .collect();
    let membership_task = changes.clone().map(|c| {
        let (hosts, directory, net, trace) =
            (hosts.clone(), directory.clone(), net.clone(), trace.clone());
        tokio::spawn(async move { c.run(span, hosts, directory, net, trace).await })
    });
    for task in fault_tasks {
        if let Ok(Err(e)) | Err(e) = task.await.map_err(anyhow::Error::from) {
            return fail(format!("a fault could not be injected or healed: {e:#}"));
        }
    }
    if let Some(task) = membership_task
        && let Ok(Err(e)) | Err(e) = task.await.map_err(anyhow::Error::from)
    {
        return fail(format!("a membership change did not complete: {e:#}"));
    }
    for task in clients {
        let _ = task.await;
    }
    trace!(trace, "workload done");

    // Heal: every link back, every host up, membership whole, hints delivered.
    net.heal_all();
    for i in 0..options.hosts {
        let host = hosts[i].lock().await;
        let down = !host.is_up() && !host.gone;
        drop(host);
        if down && let Err(e) = boot(&hosts, &directory, &net, i).await {
            return fail(format!("host n{} did not restart: {e:#}", i + 1));
        }
    }
    if let Err(e) = wait_formed(&hosts, Duration::from_secs(60)).await {
        return fail(format!("membership did not heal: {e}"));
    }
    if let Err(e) = wait_hints_drained(&hosts, Duration::from_secs(60)).await {
        return fail(format!("hints were not handed off: {e}"));
    }
    trace!(trace, "healed");

    // No reads from here until the checker's: anti-entropy alone must make every
    // key's replicas agree, then collect the tombstones they agree on.
    let keys: Vec<String> = {
        let ops = shared.ops.lock().unwrap_or_else(|p| p.into_inner());
        let keys: std::collections::BTreeSet<String> = ops.iter().map(|o| o.key.clone()).collect();
        keys.into_iter().collect()
    };
    let rounds = AE_ROUNDS_TO_CONVERGE * host::AE_INTERVAL;
    if let Err(e) = wait_converged(&hosts, &keys, quorum.n, rounds).await {
        return fail(format!("anti-entropy did not make the replicas agree: {e}"));
    }
    trace!(trace, "converged");
    if let Err(e) = wait_tombstones_collected(&hosts, &keys, rounds).await {
        return fail(format!("tombstones were not collected: {e}"));
    }
    trace!(trace, "tombstones collected");
    let (mut repaired, mut purged) = (0, 0);
    for h in hosts.iter() {
        if let Some(ae) = h.lock().await.anti_entropy() {
            repaired += ae.keys_repaired;
            purged += ae.tombstones_purged;
        }
    }

    let history = History::new(std::mem::take(
        &mut *shared.ops.lock().unwrap_or_else(|p| p.into_inner()),
    ));
    let final_state = final_state(&hosts, &history, quorum.n).await;
    let rings = if changes.is_some() {
        checker::Rings::Change
    } else {
        checker::Rings::Fixed
    };
    let lost: BTreeSet<String> = changes
        .iter()
        .map(|c| format!("n{}", c.removed + 1))
        .collect();
    let report = checker::check_lost_nodes(&history, &final_state, quorum.n, rings, &lost);
    let (sent, dropped, calls) = net.counts();
    let totals = history.totals();
    let summary = format!(
        "{totals}; faults {}; peer calls {calls}; datagrams {sent} ({dropped} dropped); \
         anti-entropy repaired {repaired} keys, purged {purged} tombstones (since the last boots); \
         sim time {:.1}s",
        plan.len(),
        clock::sim_ms() as f64 / 1000.0
    );
    let violation = report
        .properties()
        .iter()
        .find(|(_, v)| !v.is_empty())
        .map(|(name, v)| format!("{name}: {} (first: {})", v.len(), v[0]));
    let (trace_hash, events) = trace.digest();
    let violation = violation.or_else(|| {
        (totals.acked < options.ops / 10)
            .then(|| format!("too little was acknowledged to prove anything: {totals}"))
    });
    SeedReport {
        seed,
        trace_hash,
        events,
        violation,
        summary,
        log: trace.take_log(),
    }
}

pub(crate) async fn boot(
    hosts: &Hosts,
    directory: &Directory,
    net: &Net,
    i: usize,
) -> anyhow::Result<()> {
    let mut host = hosts[i].lock().await;
    host.start(net).await?;
    let running = host.coordinator().map(|c| (c, host.boot));
    let listing = &mut directory.lock().unwrap_or_else(|p| p.into_inner())[i];
    listing.running = running;
    listing.listed = true;
    Ok(())
}

/// Crashes `host` for good: clients stop sending it requests.
pub(crate) fn lose(host: &mut Host, directory: &Directory, net: &Net) {
    crash(host, directory, net);
    directory.lock().unwrap_or_else(|p| p.into_inner())[host.index].listed = false;
    host.gone = true;
}

pub(crate) fn crash(host: &mut Host, directory: &Directory, net: &Net) {
    directory.lock().unwrap_or_else(|p| p.into_inner())[host.index].running = None;
    host.crash(net);
}

async fn inject(
    fault: Fault,
    hosts: Hosts,
    directory: Directory,
    net: Net,
    trace: Trace,
) -> anyhow::Result<()> {
    tokio::time::sleep(fault.at).await;
    trace!(trace, "fault {fault}");
    let addrs: Vec<SocketAddr> = fault
        .hosts
        .iter()
        .map(|&h| crate::host::address(h))
        .collect();
    let others: Vec<SocketAddr> = (0..hosts.len())
        .filter(|h| !fault.hosts.contains(h))
        .map(crate::host::address)
        .collect();
    let cut = |on: bool, both: bool| {
        for a in &addrs {
            for o in &others {
                net.set_cut(*a, *o, on);
                if both {
                    net.set_cut(*o, *a, on);
                }
            }
        }
    };
    match fault.kind {
        FaultKind::Crash => {
            for &h in &fault.hosts {
                crash(&mut *hosts[h].lock().await, &directory, &net);
            }
        }
        FaultKind::Pause => addrs.iter().for_each(|a| net.set_paused(*a, true)),
        FaultKind::Partition => cut(true, true),
        FaultKind::OneWayPartition => cut(true, false),
        FaultKind::Slow(ms) => addrs.iter().for_each(|a| net.set_slow(*a, ms)),
    }
    tokio::time::sleep(fault.length).await;
    trace!(trace, "heal {fault}");
    match fault.kind {
        FaultKind::Crash => {
            for &h in &fault.hosts {
                boot(&hosts, &directory, &net, h).await?;
            }
        }
        FaultKind::Pause => addrs.iter().for_each(|a| net.set_paused(*a, false)),
        FaultKind::Partition => cut(false, true),
        FaultKind::OneWayPartition => cut(false, false),
        FaultKind::Slow(_) => addrs.iter().for_each(|a| net.set_slow(*a, 0)),
    }
    Ok(())
}

/// Waits until every running host sees every running host alive, on a committed ring
/// of all of them with no membership change in flight (hosts not started yet, and
/// hosts gone for good, aside).
async fn wait_formed(hosts: &Hosts, within: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut short = Vec::new();
        let mut expected = 0;
        for h in hosts.iter() {
            let h = h.lock().await;
            if h.is_up() || (h.boot > 0 && !h.gone) {
                expected += 1;
            }
        }
        for h in hosts.iter() {
            let h = h.lock().await;
            if h.gone || h.boot == 0 {
                continue;
            }
            let Some(cluster) = h.cluster() else {
                short.push(format!("{} is down", h.id));
                continue;
            };
            let view = cluster.view();
            let ring = view.layout().current().len();
            if ring != expected || view.in_flight() {
                let layout = view.layout();
                let unacked: Vec<&String> = layout
                    .previous()
                    .into_iter()
                    .flatten()
                    .chain(layout.current())
                    .filter(|id| layout.acked(id) < layout.epoch())
                    .collect();
                short.push(format!(
                    "{} has a ring of {ring} at epoch {} (target of {}, previous ring {}, \
                     not acked by {unacked:?}), change in flight: {}",
                    h.id,
                    layout.epoch(),
                    layout.target().len(),
                    layout
                        .previous()
                        .map_or("retired".to_owned(), |p| p.len().to_string()),
                    view.in_flight()
                ));
            }
            if view.members_alive() < expected {
                let others: Vec<String> = view
                    .members()
                    .filter(|m| m.id != h.id && m.state != ringkv_gossip::MemberState::Alive)
                    .map(|m| format!("{} {} (gen {})", m.id, m.state.as_str(), m.generation))
                    .collect();
                short.push(format!(
                    "{} sees {} alive, {}",
                    h.id,
                    view.members_alive(),
                    others.join(" ")
                ));
            }
        }
        if short.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(short.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rounds of anti-entropy that healing may take, each phase.
const AE_ROUNDS_TO_CONVERGE: u32 = 10;

/// Every host's views of `key`'s replicas, read directly (no quorum, no repair).
async fn views_of(hosts: &Hosts, key: &str) -> Vec<ReplicaView> {
    let mut views = Vec::new();
    for h in hosts.iter() {
        let (id, c) = {
            let h = h.lock().await;
            (h.id.clone(), h.coordinator())
        };
        if let Some(c) = c {
            views.push(view(&id, &c, key).await);
        }
    }
    views
}

/// Waits until every key's replicas hold the same versions, as every host sees them.
async fn wait_converged(
    hosts: &Hosts,
    keys: &[String],
    n: usize,
    within: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut first_divergence = None;
        for key in keys {
            let final_key = FinalKey {
                views: views_of(hosts, key).await,
                ..FinalKey::default()
            };
            if let Some(d) = checker::divergence(&final_key, n) {
                first_divergence = Some(format!("{key}: {d}"));
                break;
            }
        }
        let Some(divergence) = first_divergence else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(divergence);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until no replica holds a key whose every version is a tombstone.
async fn wait_tombstones_collected(
    hosts: &Hosts,
    keys: &[String],
    within: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut left = Vec::new();
        for key in keys {
            for view in views_of(hosts, key).await.into_iter().take(1) {
                for r in &view.replicas {
                    if r.error.is_none() && r.context.is_some() && r.siblings.is_empty() {
                        left.push(format!("{key}@{}", r.node));
                    }
                }
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{} tombstones left: {}",
                left.len(),
                left.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_hints_drained(hosts: &Hosts, within: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut pending = Vec::new();
        for h in hosts.iter() {
            let h = h.lock().await;
            if let Some(c) = h.coordinator() {
                let hints = c.hints_pending();
                if !hints.is_empty() {
                    pending.push(format!("{} holds {hints:?}", h.id));
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(pending.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads every key of the history at `r = n` (which repairs the replicas it asks),
/// then each host's view of each key's replicas, until they agree or time runs out.
async fn final_state(hosts: &Hosts, history: &History, n: usize) -> FinalState {
    let keys: std::collections::BTreeSet<String> =
        history.ops.iter().map(|o| o.key.clone()).collect();
    let coordinators: Vec<_> = {
        let mut all = Vec::new();
        for h in hosts.iter() {
            let h = h.lock().await;
            if let Some(c) = h.coordinator() {
                all.push((h.id.clone(), c));
            }
        }
        all
    };
    let mut state = FinalState::default();
    for (i, key) in keys.iter().enumerate() {
        let mut final_key = FinalKey::default();
        for attempt in 0..10 {
            let (_, c) = &coordinators[(i + attempt) % coordinators.len()];
            let read =
                workload::read_outcome(c.get(key.as_bytes(), &workload::read_options(n)).await);
            final_key.read = match read {
                Outcome::Ok(
                    answer @ (Answer::Found { .. }
                    | Answer::Siblings { .. }
                    | Answer::NotFound { .. }),
                ) => {
                    let mut values = answer.values().to_vec();
                    values.sort();
                    FinalRead::Values(values)
                }
                other => FinalRead::Failed(format!("{other:?}")),
            };
            // Read repair runs after the answer: let it land, then look.
            tokio::time::sleep(Duration::from_millis(200)).await;
            final_key.views = Vec::new();
            for (id, c) in &coordinators {
                final_key.views.push(view(id, c, key).await);
            }
            if matches!(final_key.read, FinalRead::Values(_))
                && checker::divergence(&final_key, n).is_none()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        state.keys.insert(key.clone(), final_key);
    }
    state
}

async fn view(observer: &str, c: &ringkv_node::coordinator::Coordinator, key: &str) -> ReplicaView {
    let replicas = c
        .replica_reports(key.as_bytes())
        .await
        .into_iter()
        .map(|report| match report.result {
            Ok(clock) => {
                let clock = clock.unwrap_or_default();
                ReplicaState {
                    node: report.node,
                    context: (!clock.is_empty()).then(|| clock.context().to_token()),
                    siblings: clock
                        .live_values()
                        .iter()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect(),
                    error: None,
                }
            }
            Err(error) => ReplicaState {
                node: report.node,
                context: None,
                siblings: Vec::new(),
                error: Some(error),
            },
        })
        .collect();
    ReplicaView {
        observer: observer.to_owned(),
        preference_list: c.preference_list(key.as_bytes()),
        replicas,
    }
}
