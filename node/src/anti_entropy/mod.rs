//! Anti-entropy: replicas that nobody reads converge, and tombstones are collected.
//!
//! Every replica keeps a hash tree per partition ([`crate::replica::tree`]), updated in
//! the same storage batch as each write. Every `--anti-entropy-interval` this node runs
//! a round: it rebuilds the partitions whose trees are marked dirty (and scrubs a few
//! more, checking every record's crc on the way), then exchanges with each live peer
//! ([`exchange`]) over the partitions both are home replicas of: roots first, then the
//! leaves of the partitions that differ, then the keys of the segments that differ,
//! then the records of those keys, both ways, through the replica's merge. Keys nobody
//! reads converge, and the cost of an exchange grows with the difference, not with the
//! number of keys. Last, it runs tombstone GC ([`gc`]) for the partitions it is first
//! home replica of.
//!
//! Bounds: an exchange repairs at most [`Budget`] keys and bytes; when one stops at its
//! bound (or repaired many keys: other peers may be refilling the same replica), the
//! next round starts after a pause twice as long as the round took (at most a third
//! of the time goes to repair, so foreground requests keep their latency) instead of
//! after a whole interval, so a wiped replica refills at a steady pace. Catch-up
//! rounds skip the scrub and tombstone GC, which can wait for the interval.
//!
//! Caveats: rounds run one peer at a time; an exchange compares one snapshot of each
//! side, so a write in flight can show as a difference and be repaired needlessly
//! (merging is idempotent, so this costs only the transfer).

pub mod exchange;
pub mod gc;
mod serve;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_client::wire::AntiEntropyBody as Status;
use ringkv_ring::{PARTITIONS, Partition};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use exchange::{Budget, Exchanger, Outcome};
pub use serve::{purge, segment_keys, sync, tombstone_check, tree_leaves, tree_roots};

use crate::cluster::Cluster;
use crate::handoff::HintStore;
use crate::metrics;

/// Most partitions whose leaves one call asks for.
pub const LEAVES_PARTITIONS_MAX: usize = 32;
/// Most keys one segment listing answers with.
pub const SEGMENT_KEYS_MAX: usize = 16_384;
/// Most keys pushed or pulled in one call.
pub const SYNC_KEYS_MAX: usize = 256;
/// About the most bytes of records pushed in one call.
pub const SYNC_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Partitions re-checked from a scan each round, besides the dirty ones: a slow scrub
/// that finds corrupt records nobody reads (all 1,024 every 256 rounds).
const SCRUB_PARTITIONS_PER_ROUND: usize = 4;
/// Tombstones one GC pass looks at per partition.
const GC_TOMBSTONES_PER_PARTITION: usize = 256;
/// Keys an exchange must repair for the next round to follow at once, as when it
/// stops at its budget: a replica being refilled by several peers at once.
const CATCH_UP_KEYS_MIN: u64 = SYNC_KEYS_MAX as u64;
/// Shortest pause between rounds while differences remain.
const CATCH_UP_PAUSE_MIN: Duration = Duration::from_millis(10);

/// How anti-entropy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AntiEntropyOptions {
    /// Time between rounds; `None` is `--anti-entropy-interval off`.
    pub interval: Option<Duration>,
    /// What one exchange may repair.
    pub budget: Budget,
    /// Timeout of each call to a peer.
    pub call_timeout: Duration,
    /// Replicas per key (`--n`), to find a partition's home replicas.
    pub n: usize,
}

impl AntiEntropyOptions {
    pub fn new(interval: Option<Duration>, n: usize) -> Self {
        Self {
            interval,
            budget: Budget {
                keys: 8_192,
                bytes: 32 * 1024 * 1024,
            },
            call_timeout: Duration::from_secs(10),
            n,
        }
    }
}

/// Shared between the task and the API.
#[derive(Debug, Default)]
pub struct StatusBoard(Mutex<Status>);

impl StatusBoard {
    pub fn snapshot(&self) -> Status {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Starts the anti-entropy task (or, with no interval, only publishes that it is off).
pub fn spawn(
    exchanger: Exchanger,
    cluster: Arc<Cluster>,
    hints: Arc<HintStore>,
    options: AntiEntropyOptions,
    board: Arc<StatusBoard>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    board.update(|s| s.interval_ms = options.interval.map(|i| i.as_millis() as u64));
    tokio::spawn(async move {
        let Some(interval) = options.interval else {
            return;
        };
        // Nodes start their bounded exchanges at different points of the key space,
        // so that two of them refilling a third repair different partitions first.
        let start = xxhash_rust::xxh3::xxh3_64(cluster.local_id().as_bytes()) as usize % PARTITIONS;
        let mut round = Round {
            exchanger,
            cluster,
            hints,
            options,
            board,
            cursor: start as u16,
            scrub_next: start,
        };
        let mut pause = interval;
        let mut catching_up = false;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                () = tokio::time::sleep(pause) => {}
            }
            if *stop.borrow() {
                return;
            }
            let started = Instant::now();
            let more = round.run(!catching_up).await;
            catching_up = more;
            pause = if more {
                (started.elapsed() * 2).clamp(CATCH_UP_PAUSE_MIN, interval)
            } else {
                interval
            };
        }
    })
}

/// One node's rounds.
struct Round {
    exchanger: Exchanger,
    cluster: Arc<Cluster>,
    hints: Arc<HintStore>,
    options: AntiEntropyOptions,
    board: Arc<StatusBoard>,
    /// Where the next bounded exchange starts in the key space.
    cursor: u16,
    scrub_next: usize,
}

impl Round {
    /// Runs one round (scrubbing and collecting tombstones only on the rounds the
    /// interval starts, `full`, not on the catch-up rounds between); true when another
    /// should follow at once (see the module's bounds).
    async fn run(&mut self, full: bool) -> bool {
        self.rebuild(full).await;
        let view = self.cluster.view();
        let n = self.options.n;
        // The partitions this node is a home replica of, with their other homes.
        let mut shared: BTreeMap<String, Vec<Partition>> = BTreeMap::new();
        let mut primary = Vec::new();
        for partition in Partition::all() {
            let homes = view.partition_homes(partition, n);
            if !homes.iter().any(|h| h.local) {
                continue;
            }
            if homes.first().is_some_and(|h| h.local) {
                primary.push(partition);
            }
            for home in homes.iter().filter(|h| !h.local) {
                shared.entry(home.id.clone()).or_default().push(partition);
            }
        }
        let mut more = false;
        let cursor = Partition(self.cursor);
        for (id, partitions) in shared {
            let Some(peer) = view.peer(&id).filter(|p| p.is_live()) else {
                continue;
            };
            let result = self
                .exchanger
                .run(&peer, &partitions, cursor, self.options.budget)
                .await;
            metrics::ae_exchange(result.is_ok());
            let now_ms = self.exchanger.env.now_ms();
            match &result {
                Ok(o) => {
                    // Also when the budget was not spent but much was repaired: other
                    // peers may be repairing the rest meanwhile, and the next round
                    // finds out soon. (A few keys are writes in flight.)
                    more |= o.more || o.keys_sent + o.keys_received >= CATCH_UP_KEYS_MIN;
                    metrics::ae_repaired(o.segments_differing, o.keys_sent, o.keys_received);
                    if o.keys_sent + o.keys_received > 0 {
                        tracing::debug!(peer = %id, ?o, "anti-entropy repaired keys");
                    }
                }
                Err(e) => tracing::debug!(peer = %id, error = %e, "anti-entropy exchange failed"),
            }
            self.board.update(|s| {
                let p = s.peers.entry(id.clone()).or_default();
                p.last_exchange_ms = now_ms;
                match &result {
                    Ok(o) => {
                        p.last_result = "ok".into();
                        p.partitions_differing = o.partitions_differing;
                        p.segments_differing = o.segments_differing;
                        p.keys_sent += o.keys_sent;
                        p.keys_received += o.keys_received;
                        s.keys_repaired += o.keys_sent + o.keys_received;
                    }
                    Err(e) => p.last_result = format!("failed: {e}"),
                }
            });
        }
        self.cursor = ((self.cursor as usize + LEAVES_PARTITIONS_MAX) % PARTITIONS) as u16;
        if full {
            self.collect_tombstones(&primary).await;
        }
        self.board.update(|s| s.rounds += 1);
        more
    }

    /// Rebuilds the dirty partitions and, with `scrub`, a few more.
    async fn rebuild(&mut self, scrub: bool) {
        let replica = self.exchanger.replica.clone();
        let mut partitions = replica.dirty_partitions();
        for _ in 0..if scrub { SCRUB_PARTITIONS_PER_ROUND } else { 0 } {
            partitions.push(Partition(self.scrub_next as u16));
            self.scrub_next = (self.scrub_next + 1) % PARTITIONS;
        }
        let rebuilt = partitions.len() as u64;
        let result = self
            .exchanger
            .env
            .background(move || {
                for partition in partitions {
                    let r = replica.rebuild_partition(partition)?;
                    if r.leaves_fixed > 0 {
                        tracing::warn!(%partition, leaves = r.leaves_fixed, "a tree rebuild fixed leaves");
                    }
                }
                Ok(replica.dirty_partitions().len() as u64)
            })
            .await;
        match result {
            Ok(dirty) => self.board.update(|s| {
                s.tree_rebuilds += rebuilt;
                s.dirty_partitions = dirty;
            }),
            Err(e) => tracing::warn!(error = %e, "rebuilding anti-entropy trees failed"),
        }
    }

    async fn collect_tombstones(&mut self, primary: &[Partition]) {
        // Most partitions hold no tombstone: one look at all of them, not a call each.
        let replica = self.exchanger.replica.clone();
        let partitions = primary.to_vec();
        let primary = match self
            .exchanger
            .env
            .background(move || replica.partitions_with_tombstones(&partitions))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "tombstone GC could not list partitions");
                return;
            }
        };
        let mut purged = 0;
        for partition in &primary {
            match gc::collect(
                &self.exchanger,
                &self.cluster,
                &self.hints,
                self.options.n,
                *partition,
                GC_TOMBSTONES_PER_PARTITION,
            )
            .await
            {
                Ok(o) => purged += o.purged,
                Err(e) => {
                    tracing::debug!(%partition, error = %e, "tombstone GC stopped");
                    break;
                }
            }
        }
        self.board.update(|s| s.tombstones_purged += purged);
    }
}
