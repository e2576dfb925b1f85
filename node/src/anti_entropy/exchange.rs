//! One exchange with one peer, started by this node: roots of the partitions both
//! hold, then the leaves of the partitions whose roots differ, then the keys of the
//! segments whose leaves differ, then the records of the keys that differ, pushed
//! and pulled in one call, all within a [`Budget`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ringkv_ring::Partition;

use super::{LEAVES_PARTITIONS_MAX, SYNC_BYTES_MAX, SYNC_KEYS_MAX};
use crate::cluster::Peer;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::net::{PeerRequest, PeerResponse, PeerTransport};
use crate::replica::layout::Place;
use crate::replica::tree::{differing_segments, key_hash};
use crate::replica::{Replica, SegmentEntry};
use crate::version::Clock;

/// What one exchange may repair before it stops (the rest waits for the next one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub keys: usize,
    pub bytes: usize,
}

/// What an exchange found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub partitions_compared: u64,
    pub partitions_differing: u64,
    pub segments_differing: u64,
    /// Keys whose version this node pushed to the peer.
    pub keys_sent: u64,
    /// Keys whose version the peer sent back and this node merged.
    pub keys_received: u64,
    /// The budget ran out before every difference was repaired.
    pub more: bool,
    /// Partitions not compared: one side was rebuilding its tree.
    pub partitions_unknown: u64,
    /// Bytes of records moved, both ways.
    pub bytes: u64,
}

/// The keys to push (this node's version differs or the peer lacks the key) and to
/// pull (the peer's version differs or this node lacks the key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyDiff {
    pub push: Vec<Vec<u8>>,
    pub pull: Vec<Vec<u8>>,
}

/// Compares two listings of the same segments.
pub fn diff_entries(ours: &[SegmentEntry], theirs: &[SegmentEntry]) -> KeyDiff {
    diff_hashes(ours.iter().map(|e| (&e.key[..], e.hash)).collect(), theirs)
}

/// [`diff_entries`] with this node's side already as key -> hash.
fn diff_hashes(ours_map: BTreeMap<&[u8], u64>, theirs: &[SegmentEntry]) -> KeyDiff {
    let theirs: BTreeMap<&[u8], u64> = theirs.iter().map(|e| (&e.key[..], e.hash)).collect();
    let mut diff = KeyDiff::default();
    for (key, hash) in &ours_map {
        match theirs.get(key) {
            Some(h) if h == hash => {}
            Some(_) => {
                diff.push.push(key.to_vec());
                diff.pull.push(key.to_vec());
            }
            None => diff.push.push(key.to_vec()),
        }
    }
    for key in theirs.keys() {
        if !ours_map.contains_key(key) {
            diff.pull.push(key.to_vec());
        }
    }
    diff
}

/// This node's clocks of the keys one listing found, by key.
type Listed = BTreeMap<Vec<u8>, Clock>;

/// What an exchange runs with.
#[derive(Debug, Clone)]
pub struct Exchanger {
    pub replica: Arc<Replica>,
    pub transport: Arc<dyn PeerTransport>,
    pub env: Env,
    pub call_timeout: Duration,
}

impl Exchanger {
    async fn call(&self, peer: &Peer, request: PeerRequest) -> Result<PeerResponse> {
        match self
            .transport
            .call(peer.cluster, request, self.call_timeout)
            .await?
        {
            PeerResponse::Error { message, .. } => Err(Error::Peer {
                peer: peer.id.clone(),
                reason: message,
            }),
            other => Ok(other),
        }
    }

    fn unexpected(peer: &Peer, what: &str) -> Error {
        Error::Peer {
            peer: peer.id.clone(),
            reason: format!("answered a {what} call with something else"),
        }
    }

    /// Exchanges `partitions` (all held by both nodes) with `peer`, starting with the
    /// first differing partition at or after `cursor` so that bounded exchanges take
    /// turns over the key space.
    pub async fn run(
        &self,
        peer: &Peer,
        partitions: &[Partition],
        cursor: Partition,
        budget: Budget,
    ) -> Result<Outcome> {
        let mut outcome = Outcome {
            partitions_compared: partitions.len() as u64,
            ..Outcome::default()
        };
        let wire: Vec<u16> = partitions.iter().map(|p| p.0).collect();
        let PeerResponse::TreeRoots(theirs) = self
            .call(peer, PeerRequest::TreeRoots { partitions: wire })
            .await?
        else {
            return Err(Self::unexpected(peer, "tree_roots"));
        };
        if theirs.len() != partitions.len() {
            return Err(Self::unexpected(peer, "tree_roots"));
        }
        let mut differing: Vec<Partition> = Vec::new();
        for (p, theirs) in partitions.iter().zip(&theirs) {
            match (self.replica.tree_root(*p), theirs) {
                (Some(ours), Some(theirs)) if ours != *theirs => differing.push(*p),
                (Some(_), Some(_)) => {}
                _ => outcome.partitions_unknown += 1,
            }
        }
        outcome.partitions_differing = differing.len() as u64;
        let split = differing.partition_point(|p| *p < cursor);
        differing.rotate_left(split);

        let mut keys_left = budget.keys;
        let mut bytes_left = budget.bytes;
        for chunk in differing.chunks(LEAVES_PARTITIONS_MAX) {
            if keys_left == 0 || bytes_left == 0 {
                outcome.more = true;
                break;
            }
            let segments = self.differing_segments(peer, chunk).await?;
            outcome.segments_differing += segments.len() as u64;
            let mut rest = &segments[..];
            while !rest.is_empty() {
                if keys_left == 0 || bytes_left == 0 {
                    outcome.more = true;
                    break;
                }
                let (listed, diff, ours) = self.diff_segments(peer, rest, keys_left).await?;
                rest = &rest[listed..];
                let changed = diff.push.len().max(diff.pull.len());
                keys_left = keys_left.saturating_sub(changed.max(1));
                let (sent, received, bytes) = self.repair(peer, diff, ours).await?;
                bytes_left = bytes_left.saturating_sub(bytes);
                outcome.bytes += bytes as u64;
                outcome.keys_sent += sent;
                outcome.keys_received += received;
            }
        }
        Ok(outcome)
    }

    /// The segments of `partitions` whose leaves differ from the peer's.
    async fn differing_segments(
        &self,
        peer: &Peer,
        partitions: &[Partition],
    ) -> Result<Vec<Place>> {
        let wire: Vec<u16> = partitions.iter().map(|p| p.0).collect();
        let PeerResponse::TreeLeaves(theirs) = self
            .call(peer, PeerRequest::TreeLeaves { partitions: wire })
            .await?
        else {
            return Err(Self::unexpected(peer, "tree_leaves"));
        };
        let mut out = Vec::new();
        for (partition, theirs) in partitions.iter().zip(theirs) {
            let (Some(ours), Some(theirs)) = (self.replica.tree_leaves(*partition), theirs) else {
                continue;
            };
            if theirs.len() != ours.len() {
                return Err(Self::unexpected(peer, "tree_leaves"));
            }
            out.extend(
                differing_segments(&ours, &theirs)
                    .into_iter()
                    .map(|segment| Place {
                        partition: *partition,
                        segment,
                    }),
            );
        }
        Ok(out)
    }

    /// Lists a prefix of `segments` on both sides; returns how many were listed, how
    /// their keys differ, and this node's clocks of the listed keys.
    async fn diff_segments(
        &self,
        peer: &Peer,
        segments: &[Place],
        max_keys: usize,
    ) -> Result<(usize, KeyDiff, Listed)> {
        let wire: Vec<(u16, u8)> = segments
            .iter()
            .map(|s| (s.partition.0, s.segment))
            .collect();
        let PeerResponse::SegmentKeys {
            segments: listed,
            entries: theirs,
        } = self
            .call(
                peer,
                PeerRequest::SegmentKeys {
                    segments: wire.clone(),
                    max_keys: max_keys.min(u32::MAX as usize) as u32,
                },
            )
            .await?
        else {
            return Err(Self::unexpected(peer, "segment_keys"));
        };
        if listed.is_empty() || !wire.starts_with(&listed) {
            return Err(Self::unexpected(peer, "segment_keys"));
        }
        let count = listed.len();
        // Listing this side and comparing run on the background thread: for a wiped
        // peer that is thousands of keys, which would hold up a foreground worker.
        let (replica, places) = (self.replica.clone(), segments[..count].to_vec());
        let (diff, ours) = self
            .env
            .background(move || {
                let ours: Listed = replica
                    .segments_records(&places, usize::MAX)?
                    .1
                    .into_iter()
                    .collect();
                let hashes = ours
                    .iter()
                    .map(|(key, clock)| (&key[..], key_hash(key, clock)))
                    .collect();
                let diff = diff_hashes(hashes, &theirs);
                Ok((diff, ours))
            })
            .await?;
        Ok((count, diff, ours))
    }

    /// Pushes this node's records of `diff.push` (as `ours` listed them: a write since
    /// then reaches the peer by replication or the next exchange) and merges the peer's
    /// of `diff.pull`, in calls of at most [`SYNC_KEYS_MAX`] keys and about
    /// [`SYNC_BYTES_MAX`] bytes. Returns (keys sent, keys received, bytes moved).
    async fn repair(
        &self,
        peer: &Peer,
        diff: KeyDiff,
        mut ours: Listed,
    ) -> Result<(u64, u64, usize)> {
        let (mut sent, mut received, mut bytes) = (0u64, 0u64, 0usize);
        let mut push = diff.push.into_iter().peekable();
        let mut pull = diff.pull.into_iter().peekable();
        while push.peek().is_some() || pull.peek().is_some() {
            let mut records = Vec::new();
            let mut size = 0;
            while records.len() < SYNC_KEYS_MAX && size < SYNC_BYTES_MAX {
                let Some(key) = push.next() else { break };
                if let Some(clock) = ours.remove(&key) {
                    size += key.len() + clock.heap_bytes();
                    records.push((key, clock));
                }
            }
            let wanted: Vec<Vec<u8>> = pull.by_ref().take(SYNC_KEYS_MAX).collect();
            sent += records.len() as u64;
            bytes += records
                .iter()
                .map(|(k, c)| k.len() + c.heap_bytes())
                .sum::<usize>();
            let PeerResponse::Synced(theirs) = self
                .call(
                    peer,
                    PeerRequest::Sync {
                        push: records,
                        pull: wanted.clone(),
                    },
                )
                .await?
            else {
                return Err(Self::unexpected(peer, "sync"));
            };
            let wanted: std::collections::BTreeSet<Vec<u8>> = wanted.into_iter().collect();
            if theirs.iter().any(|(k, _)| !wanted.contains(k)) {
                return Err(Self::unexpected(peer, "sync"));
            }
            received += theirs.len() as u64;
            bytes += theirs
                .iter()
                .map(|(k, c)| k.len() + c.heap_bytes())
                .sum::<usize>();
            let replica = self.replica.clone();
            self.env
                .background(move || replica.merge_many(&theirs, false).map(|_| ()))
                .await?;
        }
        Ok((sent, received, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, hash: u64) -> SegmentEntry {
        SegmentEntry {
            key: key.as_bytes().to_vec(),
            hash,
        }
    }

    #[test]
    fn diff_pushes_what_the_peer_lacks_and_pulls_what_this_node_lacks() {
        // Keys only here are pushed, keys only there pulled, keys in both with other
        // hashes go both ways, and equal keys are left alone.
        let ours = [entry("a", 1), entry("b", 2), entry("c", 3)];
        let theirs = [entry("b", 2), entry("c", 4), entry("d", 5)];
        let diff = diff_entries(&ours, &theirs);
        let keys = |v: &[Vec<u8>]| {
            v.iter()
                .map(|k| String::from_utf8(k.clone()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&diff.push), vec!["a", "c"]);
        assert_eq!(keys(&diff.pull), vec!["c", "d"]);
        assert_eq!(diff_entries(&ours, &ours), KeyDiff::default());
    }
}
