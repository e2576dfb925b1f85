//! Answering a peer's anti-entropy and tombstone-GC calls. Every call is bounded by
//! what it may read and send, and partition numbers from the wire are checked.

use ringkv_ring::{PARTITIONS, Partition};

use super::{SEGMENT_KEYS_MAX, SYNC_KEYS_MAX};
use crate::error::{Error, Result};
use crate::handoff::HintStore;
use crate::metrics;
use crate::net::PeerResponse;
use crate::replica::layout::Place;
use crate::replica::tree::key_hash;
use crate::replica::{Replica, SegmentEntry};
use crate::version::Clock;

fn partition(p: u16) -> Result<Partition> {
    if (p as usize) < PARTITIONS {
        Ok(Partition(p))
    } else {
        Err(Error::BadRequest(format!(
            "partition {p} outside 0..{PARTITIONS}"
        )))
    }
}

fn bounded<T>(items: &[T], max: usize, what: &str) -> Result<()> {
    if items.len() > max {
        return Err(Error::BadRequest(format!(
            "{} {what} in one call; at most {max}",
            items.len()
        )));
    }
    Ok(())
}

pub fn tree_roots(replica: &Replica, partitions: &[u16]) -> Result<PeerResponse> {
    bounded(partitions, PARTITIONS, "partitions")?;
    let roots = partitions
        .iter()
        .map(|p| Ok(replica.tree_root(partition(*p)?)))
        .collect::<Result<_>>()?;
    Ok(PeerResponse::TreeRoots(roots))
}

pub fn tree_leaves(replica: &Replica, partitions: &[u16]) -> Result<PeerResponse> {
    bounded(partitions, super::LEAVES_PARTITIONS_MAX, "partitions")?;
    let leaves = partitions
        .iter()
        .map(|p| Ok(replica.tree_leaves(partition(*p)?)))
        .collect::<Result<_>>()?;
    Ok(PeerResponse::TreeLeaves(leaves))
}

/// Lists whole segments until `max_keys` would be passed (always at least one).
pub fn segment_keys(
    replica: &Replica,
    segments: &[(u16, u8)],
    max_keys: u32,
) -> Result<PeerResponse> {
    bounded(segments, PARTITIONS * 256, "segments")?;
    let max_keys = (max_keys as usize).min(SEGMENT_KEYS_MAX);
    let places = segments
        .iter()
        .map(|(p, segment)| {
            Ok(Place {
                partition: partition(*p)?,
                segment: *segment,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (listed, records) = replica.segments_records(&places, max_keys)?;
    let entries = records
        .into_iter()
        .map(|(key, clock)| SegmentEntry {
            hash: key_hash(&key, &clock),
            key,
        })
        .collect();
    Ok(PeerResponse::SegmentKeys {
        segments: segments[..listed].to_vec(),
        entries,
    })
}

/// Merges what the peer pushed, then reads what it pulls.
pub fn sync(
    replica: &Replica,
    push: Vec<(Vec<u8>, Clock)>,
    pull: &[Vec<u8>],
) -> Result<PeerResponse> {
    bounded(&push, SYNC_KEYS_MAX, "pushed keys")?;
    bounded(pull, SYNC_KEYS_MAX, "pulled keys")?;
    let received = push.len() as u64;
    replica.merge_many(&push, false)?;
    let mut out = Vec::with_capacity(pull.len());
    for key in pull {
        if let Some(clock) = replica.peek(key)? {
            out.push((key.clone(), clock));
        }
    }
    metrics::ae_repaired(0, out.len() as u64, received);
    Ok(PeerResponse::Synced(out))
}

/// Per key: no hint kept here, and (for a home replica) the same record state.
pub fn tombstone_check(
    replica: &Replica,
    hints: &HintStore,
    keys: &[SegmentEntry],
    home: bool,
) -> Result<PeerResponse> {
    bounded(keys, SYNC_KEYS_MAX, "keys")?;
    let mut out = Vec::with_capacity(keys.len());
    for entry in keys {
        // A home must hold exactly the tombstone; any other node nothing else for the
        // key: one that is no longer a home may keep an older value until its cleanup,
        // and would bring it back if it became a home again.
        let same = match replica.peek(&entry.key)? {
            Some(c) => c.is_tombstoned() && key_hash(&entry.key, &c) == entry.hash,
            None => !home,
        };
        out.push(same && !hints.holds_key(&entry.key)?);
    }
    if home && out.contains(&true) {
        // A tombstone vouched for must outlive a power cut here: if it were lost, an
        // older value under it could come back after the others purge it.
        replica.sync_wal()?;
    }
    Ok(PeerResponse::TombstoneChecked(out))
}

pub fn purge(replica: &Replica, keys: &[SegmentEntry]) -> Result<PeerResponse> {
    bounded(keys, SYNC_KEYS_MAX, "keys")?;
    let mut purged = 0;
    for entry in keys {
        if replica.purge_tombstone(&entry.key, entry.hash, false)? {
            purged += 1;
        }
    }
    metrics::tombstones_purged(purged as u64);
    Ok(PeerResponse::Purged(purged))
}
