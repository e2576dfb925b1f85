//! Receiving this node's ranges of the target ring (see [`super`]), and the loop that
//! also runs [`super::cleanup`] after commits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bincode::{Decode, Encode};
use ringkv_ring::Partition;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::cleanup::Cleanup;
use super::{TransferBoard, TransferOptions};
use crate::anti_entropy::{Budget, Exchanger, LEAVES_PARTITIONS_MAX};
use crate::cluster::{Cluster, View};
use crate::error::{Error, Result};
use crate::handoff::HintStore;
use crate::membership::Intent;
use crate::metrics;
use crate::storage::{Backend, Cf};

/// Where the partitions received so far are kept.
const META_RECEIVED: &[u8] = b"transfer-received";
/// What one exchange of a transfer may move before the next one starts.
const BUDGET: Budget = Budget {
    keys: 8_192,
    bytes: 32 * 1024 * 1024,
};

/// The partitions received so far from the homes of one committed ring.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
struct Received {
    /// The epoch of the committed ring whose homes were the sources: a partition
    /// received from another ring's homes counts for nothing.
    epoch: u64,
    /// The fingerprint of the target they were received for: only once every node
    /// wrote to that target, so each arrival holds every write since.
    target: u64,
    partitions: BTreeSet<u16>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn spawn(
    exchanger: Exchanger,
    backend: Arc<dyn Backend>,
    cluster: Arc<Cluster>,
    hints: Arc<HintStore>,
    options: TransferOptions,
    board: Arc<TransferBoard>,
    departed: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let received = load_received(backend.as_ref());
        let mut worker = Receiver {
            cleanup: Cleanup::new(exchanger.clone(), hints, departed),
            exchanger,
            cluster,
            options,
            board,
            received,
            backend,
            next_partition: 0,
        };
        let mut changes = worker.cluster.changes();
        loop {
            let busy = match worker.step().await {
                Ok(busy) => {
                    worker.board.update(|b| b.last_error = None);
                    busy
                }
                Err(e) => {
                    tracing::debug!(error = %e, "membership transfer step failed");
                    worker.board.update(|b| b.last_error = Some(e.to_string()));
                    false
                }
            };
            let pause = if busy {
                Duration::ZERO
            } else {
                worker.options.tick
            };
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                _ = changes.changed(), if !busy => {}
                () = tokio::time::sleep(pause) => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    })
}

struct Receiver {
    exchanger: Exchanger,
    cluster: Arc<Cluster>,
    options: TransferOptions,
    board: Arc<TransferBoard>,
    received: Received,
    backend: Arc<dyn Backend>,
    cleanup: Cleanup,
    /// Where the next chunk starts among the missing partitions, so partitions whose
    /// sources are all down do not hold back the others.
    next_partition: u16,
}

impl Receiver {
    /// One step: receive a chunk of missing partitions, or report that all are in, or
    /// clean up after a commit. True when there is more to do right away.
    async fn step(&mut self) -> Result<bool> {
        let view = self.cluster.view();
        self.publish(&view);
        let busy = self.receive(&view).await?;
        if busy {
            return Ok(true);
        }
        self.cleanup.run(&view, &self.board, self.options.n).await
    }

    /// The partitions this node must receive: home replica of them on the target ring,
    /// not on the committed one.
    fn needed(&self, view: &View) -> BTreeSet<u16> {
        let n = self.options.n;
        Partition::all()
            .filter(|p| {
                view.target_partition_homes(*p, n).iter().any(|h| h.local)
                    && !view.partition_homes(*p, n).iter().any(|h| h.local)
            })
            .map(|p| p.0)
            .collect()
    }

    fn publish(&self, view: &View) {
        let layout = view.layout();
        let target = layout.target();
        let fp = view.target_fingerprint();
        let ready = target
            .iter()
            .filter(|id| layout.received(id) == Some(fp))
            .count();
        self.board.update(|b| {
            b.epoch = layout.epoch();
            b.in_flight = layout.in_flight();
            b.nodes_ready = if layout.in_flight() {
                ready
            } else {
                target.len()
            };
            b.nodes_total = target.len();
            if !target.contains(view.local()) {
                b.partitions_to_receive = 0;
                b.partitions_received = 0;
            }
            let pending =
                b.partitions_to_receive - b.partitions_received.min(b.partitions_to_receive);
            metrics::layout(layout.epoch(), layout.in_flight(), pending);
        });
    }

    /// Receives one chunk of the missing partitions; true when more remain.
    async fn receive(&mut self, view: &View) -> Result<bool> {
        let layout = view.layout().clone();
        let local = self.cluster.local_id().to_owned();
        let target = layout.target();
        if !target.contains(&local) || !layout.in_flight() {
            self.board.update(|b| {
                b.partitions_to_receive = 0;
                b.partitions_received = 0;
            });
            return Ok(false);
        }
        if layout.current().is_empty() {
            // Nothing committed yet, so nothing to receive from anyone (a new cluster
            // forms its first ring at once; a new node waits for the cluster's layout).
            return Ok(false);
        }
        let fp = view.target_fingerprint();
        if !layout.all_writing(fp) {
            // Some node may still write without the target's homes: wait for it.
            return Ok(false);
        }
        let needed = self.needed(view);
        let before = self.received.clone();
        if (self.received.epoch, self.received.target) != (layout.epoch(), fp) {
            self.received = Received {
                epoch: layout.epoch(),
                target: fp,
                partitions: BTreeSet::new(),
            };
        }
        self.received.partitions.retain(|p| needed.contains(p));
        if self.received != before {
            store_received(self.backend.as_ref(), &self.received)?;
        }
        let missing: Vec<Partition> = needed
            .iter()
            .filter(|p| !self.received.partitions.contains(p))
            .map(|p| Partition(*p))
            .collect();
        self.board.update(|b| {
            b.partitions_to_receive = needed.len() as u64;
            b.partitions_received = (needed.len() - missing.len()) as u64;
        });
        if missing.is_empty() {
            if layout.received(&local) != Some(fp) {
                // Stored first: the report must never claim ranges a crash could lose.
                let replica = self.exchanger.replica.clone();
                self.exchanger
                    .env
                    .blocking(move || replica.sync_wal())
                    .await?;
                self.cluster
                    .change_layout(|l, me| l.set_received(&me.id, fp))?;
                tracing::info!(
                    epoch = layout.epoch(),
                    partitions = needed.len(),
                    "holding every range of the target ring"
                );
            }
            return Ok(false);
        }
        let chunk = next_chunk(&missing, self.next_partition, LEAVES_PARTITIONS_MAX);
        self.next_partition = chunk.last().map_or(0, |p| p.0.wrapping_add(1));
        let done = self.receive_chunk(view, &chunk).await?;
        self.received.partitions.extend(done.iter().map(|p| p.0));
        store_received(self.backend.as_ref(), &self.received)?;
        // Busy only on progress: with every source of a chunk down, wait for the next
        // tick or change instead of spinning (and, in the simulator, stopping time).
        Ok(!done.is_empty())
    }

    /// Exchanges `chunk` with the partitions' current home replicas; returns the
    /// partitions now received.
    async fn receive_chunk(&mut self, view: &View, chunk: &[Partition]) -> Result<Vec<Partition>> {
        let n = self.options.n;
        let layout = view.layout();
        let mut by_source: BTreeMap<String, Vec<Partition>> = BTreeMap::new();
        let mut required: BTreeMap<Partition, usize> = BTreeMap::new();
        for partition in chunk {
            let sources: Vec<_> = view
                .partition_homes(*partition, n)
                .into_iter()
                .filter(|h| !h.local)
                .filter(|h| {
                    layout
                        .entry(&h.id)
                        .is_none_or(|e| e.intent != Intent::Removed)
                })
                .collect();
            // Every home not removed, not N - W + 1 of them: a write acknowledged at
            // w=1 may be on one home only, and the new ring's reads must find it.
            required.insert(*partition, sources.len());
            for source in sources.iter().filter(|s| s.is_live()) {
                by_source
                    .entry(source.id.clone())
                    .or_default()
                    .push(*partition);
            }
        }
        let mut exchanged: BTreeMap<Partition, usize> = BTreeMap::new();
        let mut failed: BTreeSet<Partition> = BTreeSet::new();
        for (source, partitions) in by_source {
            let Some(peer) = view.peer(&source) else {
                continue;
            };
            match self.exchange_all(&peer, &partitions).await {
                Ok(()) => {
                    for p in &partitions {
                        *exchanged.entry(*p).or_default() += 1;
                    }
                }
                Err(e) => {
                    tracing::debug!(source = %source, error = %e, "a transfer exchange failed");
                    self.board
                        .update(|b| b.last_error = Some(format!("{source}: {e}")));
                    failed.extend(partitions);
                }
            }
        }
        Ok(chunk
            .iter()
            .filter(|p| !failed.contains(p))
            .filter(|p| exchanged.get(p).copied().unwrap_or(0) >= required[p])
            .copied()
            .collect())
    }

    /// Exchanges `partitions` with `peer` until nothing differs, throttled.
    async fn exchange_all(
        &self,
        peer: &crate::cluster::Peer,
        partitions: &[Partition],
    ) -> Result<()> {
        loop {
            let outcome = self
                .exchanger
                .run(peer, partitions, partitions[0], BUDGET)
                .await?;
            metrics::transfer_received(outcome.keys_received, outcome.bytes);
            self.board.update(|b| {
                b.keys_received += outcome.keys_received;
                b.bytes_received += outcome.bytes;
            });
            if let Some(rate) = self.options.rate_bytes_per_s.filter(|r| *r > 0) {
                let pause = Duration::from_secs_f64(outcome.bytes as f64 / rate as f64);
                tokio::time::sleep(pause).await;
            }
            if outcome.partitions_unknown > 0 {
                return Err(Error::Peer {
                    peer: peer.id.clone(),
                    reason: format!(
                        "{} partitions are being rebuilt",
                        outcome.partitions_unknown
                    ),
                });
            }
            if !outcome.more {
                return Ok(());
            }
        }
    }
}

fn load_received(store: &dyn Backend) -> Received {
    let config = bincode::config::standard().with_limit::<{ 64 * 1024 }>();
    match store.get(Cf::Meta, META_RECEIVED) {
        Ok(Some(bytes)) => bincode::decode_from_slice(&bytes, config)
            .map(|(r, _)| r)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring an unreadable transfer progress record");
                Received::default()
            }),
        _ => Received::default(),
    }
}

fn store_received(store: &dyn Backend, received: &Received) -> Result<()> {
    let bytes = bincode::encode_to_vec(received, bincode::config::standard())
        .map_err(|e| Error::Storage(format!("encoding transfer progress: {e}")))?;
    store.put(Cf::Meta, META_RECEIVED, &bytes, false)
}

/// At most `max` of the `missing` partitions (in order), from the first at or after
/// `from`, wrapping around.
fn next_chunk(missing: &[Partition], from: u16, max: usize) -> Vec<Partition> {
    let start = missing.partition_point(|p| p.0 < from);
    missing[start..]
        .iter()
        .chain(&missing[..start])
        .take(max)
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_go_round_the_missing_partitions() {
        // Every missing partition gets its turn, whichever the last chunk ended at.
        let missing: Vec<Partition> = [3, 5, 8, 13].into_iter().map(Partition).collect();
        let ids = |c: Vec<Partition>| c.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(ids(next_chunk(&missing, 0, 2)), [3, 5]);
        assert_eq!(ids(next_chunk(&missing, 6, 2)), [8, 13]);
        assert_eq!(ids(next_chunk(&missing, 14, 3)), [3, 5, 8]);
        assert_eq!(ids(next_chunk(&missing, 9, 3)), [13, 3, 5]);
        assert!(next_chunk(&[], 9, 3).is_empty());
    }
}
