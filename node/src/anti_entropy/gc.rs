//! Tombstone GC, with no clock: a tombstone is purged only when every home replica of
//! its key holds exactly it, no node keeps a hint for the key, and the ring is stable.
//!
//! The first home replica of a partition runs it for the partition, so one node
//! decides per key. Phase one asks every other ring member about a batch of the
//! partition's tombstones (home replicas: "is this your record's state?"; everyone
//! else: "do you hold nothing else for it?", since a former home may keep an older
//! value until its cleanup; everyone: "do you keep a hint for it?"); a key is purged
//! only if every answer is yes, and only
//! when every member is alive, no membership change is in flight, and the layout is
//! the same before and after.
//! Phase two asks the other home replicas to purge each such key if its record still
//! hashes the same (a write that landed meanwhile keeps it), then purges here.
//!
//! Why nothing deleted comes back: the only copies of the superseded values were on
//! the home replicas (which all hold the tombstone instead, fsync'ed before they say
//! so, so that a power cut cannot take it back) or in hints (there are none). A replica that misses phase two keeps the tombstone, and anti-entropy
//! copies it back to the others, which purge it again later: tombstones can return,
//! values cannot. Caveat: a message older than the whole check (a replication or read
//! repair of a value from before the delete, delayed in the network past phase one)
//! could still land after the purge; peer calls time out long before an exchange
//! interval passes.

use std::sync::Arc;

use ringkv_ring::Partition;

use super::exchange::Exchanger;
use crate::cluster::{Cluster, View};
use crate::error::{Error, Result};
use crate::handoff::HintStore;
use crate::metrics;
use crate::net::{PeerRequest, PeerResponse};
use crate::replica::SegmentEntry;

/// What one GC pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcOutcome {
    pub checked: u64,
    pub purged: u64,
}

/// Runs GC for `partition` (this node its first home replica) over up to `limit`
/// tombstones.
pub async fn collect(
    exchanger: &Exchanger,
    cluster: &Cluster,
    hints: &Arc<HintStore>,
    n: usize,
    partition: Partition,
    limit: usize,
) -> Result<GcOutcome> {
    let view = cluster.view();
    if !stable(&view) {
        return Ok(GcOutcome::default());
    }
    let tombstones = {
        let replica = exchanger.replica.clone();
        exchanger
            .env
            .background(move || replica.tombstones(partition, None, limit))
            .await?
    };
    if tombstones.is_empty() {
        return Ok(GcOutcome::default());
    }
    let homes = view.partition_homes(partition, n);
    if homes.first().is_none_or(|h| !h.local) {
        return Ok(GcOutcome::default());
    }
    let mut agreed = vec![true; tombstones.len()];
    {
        let (hints, keys, replica) = (hints.clone(), tombstones.clone(), exchanger.replica.clone());
        let held = exchanger
            .env
            .background(move || {
                // This replica's tombstones, too, must outlive a power cut.
                replica.sync_wal()?;
                keys.iter()
                    .map(|e| hints.holds_key(&e.key))
                    .collect::<Result<Vec<bool>>>()
            })
            .await?;
        for (ok, held) in agreed.iter_mut().zip(held) {
            *ok &= !held;
        }
    }
    for id in view.member_ids() {
        if id == view.local() {
            continue;
        }
        let Some(peer) = view.peer(&id) else {
            return Ok(GcOutcome::default());
        };
        let home = homes.iter().any(|h| h.id == id);
        let answer = exchanger
            .transport
            .call(
                peer.cluster,
                PeerRequest::TombstoneCheck {
                    keys: tombstones.clone(),
                    home,
                },
                exchanger.call_timeout,
            )
            .await?;
        let PeerResponse::TombstoneChecked(answers) = answer else {
            return Err(Error::Peer {
                peer: id,
                reason: "did not answer a tombstone check".into(),
            });
        };
        if answers.len() != agreed.len() {
            return Err(Error::Peer {
                peer: id,
                reason: "answered a tombstone check for other keys".into(),
            });
        }
        for (ok, yes) in agreed.iter_mut().zip(answers) {
            *ok &= yes;
        }
    }
    // Anything that changed while we asked (a member went down or joined) voids the round.
    let after = cluster.view();
    if !stable(&after)
        || after.member_ids() != view.member_ids()
        || after.layout().epoch() != view.layout().epoch()
    {
        return Ok(GcOutcome::default());
    }
    let purge: Vec<SegmentEntry> = tombstones
        .into_iter()
        .zip(agreed)
        .filter_map(|(e, ok)| ok.then_some(e))
        .collect();
    let mut outcome = GcOutcome {
        checked: purge.len() as u64,
        purged: 0,
    };
    if purge.is_empty() {
        return Ok(outcome);
    }
    for home in homes.iter().filter(|h| !h.local) {
        let answer = exchanger
            .transport
            .call(
                home.cluster,
                PeerRequest::Purge {
                    keys: purge.clone(),
                },
                exchanger.call_timeout,
            )
            .await;
        if let Err(e) = answer {
            // The keys it kept come back here by anti-entropy; GC tries them again.
            tracing::debug!(peer = %home.id, error = %e, "a purge did not complete");
        }
    }
    let replica = exchanger.replica.clone();
    outcome.purged = exchanger
        .env
        .background(move || {
            let mut purged = 0;
            for e in &purge {
                if replica.purge_tombstone(&e.key, e.hash, false)? {
                    purged += 1;
                }
            }
            Ok(purged)
        })
        .await?;
    metrics::tombstones_purged(outcome.purged);
    Ok(outcome)
}

/// Every member alive (a down one could hold an old version or a hint) and no
/// membership change in flight (a partition's data may be on its way to new homes, or
/// on a previous ring's replicas).
fn stable(view: &View) -> bool {
    view.all_alive() && !view.in_flight()
}
