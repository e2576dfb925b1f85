//! Where a key's record lives in the store: `[partition u16 BE][segment u8][key]`.
//!
//! The prefix makes a partition one range scan of [`Cf::Data`](crate::storage::Cf::Data)
//! and a segment of it another, which is what anti-entropy lists and what a transfer
//! of a partition will stream. A segment is the next [`SEGMENT_BITS`] of the key's token
//! after its partition's, so keys spread evenly over the segments of a partition.
//!
//! Data directories written before this layout (format 1: the bare key) are refused at
//! open with a message that says so; see [`super::Replica::open`].

use ringkv_ring::{PARTITION_BITS, Partition, Token};

/// Bits of a token, after the partition's, that name its segment.
pub const SEGMENT_BITS: u32 = 8;
/// Segments per partition: the leaves of a partition's hash tree.
pub const SEGMENTS: usize = 1 << SEGMENT_BITS;
/// Bytes before the key in a stored key.
pub const PREFIX_BYTES: usize = 3;
/// The layout written by this build (kept in the meta column family).
pub const LAYOUT_VERSION: u8 = 2;

/// A key's partition and segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    pub partition: Partition,
    pub segment: u8,
}

impl Place {
    pub fn of(key: &[u8]) -> Self {
        let token = Token::of(key);
        Self {
            partition: Partition::of(token),
            segment: (token.0 >> (64 - PARTITION_BITS - SEGMENT_BITS)) as u8,
        }
    }

    /// The index of this segment among all partitions' segments.
    pub fn index(self) -> usize {
        self.partition.index() * SEGMENTS + self.segment as usize
    }

    /// The prefix of every stored key of this segment (and the segment's tree key).
    pub fn prefix(self) -> [u8; PREFIX_BYTES] {
        let [hi, lo] = self.partition.0.to_be_bytes();
        [hi, lo, self.segment]
    }
}

/// The prefix of every stored key of `partition`.
pub fn partition_prefix(partition: Partition) -> [u8; 2] {
    partition.0.to_be_bytes()
}

/// The stored key of `key`.
pub fn stored_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_BYTES + key.len());
    out.extend_from_slice(&Place::of(key).prefix());
    out.extend_from_slice(key);
    out
}

/// The client's key inside a stored key, if the stored key is well formed (its prefix
/// is the key's own place).
pub fn user_key(stored: &[u8]) -> Option<&[u8]> {
    let key = stored.get(PREFIX_BYTES..)?;
    (stored[..PREFIX_BYTES] == Place::of(key).prefix()).then_some(key)
}

/// The place a tree key names.
pub fn place_of_tree_key(tree_key: &[u8]) -> Option<Place> {
    let [hi, lo, segment]: [u8; PREFIX_BYTES] = tree_key.try_into().ok()?;
    let partition = u16::from_be_bytes([hi, lo]);
    ((partition as usize) < ringkv_ring::PARTITIONS).then_some(Place {
        partition: Partition(partition),
        segment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_round_trip_and_sort_by_place() {
        // A stored key gives back its key, starts with its partition's prefix, and a
        // damaged prefix is not mistaken for another key.
        for i in 0..1000 {
            let key = format!("key-{i}").into_bytes();
            let stored = stored_key(&key);
            assert_eq!(user_key(&stored), Some(&key[..]));
            let place = Place::of(&key);
            assert!(stored.starts_with(&partition_prefix(place.partition)));
            assert_eq!(place_of_tree_key(&place.prefix()), Some(place));
            let mut bad = stored.clone();
            bad[2] ^= 1;
            assert_eq!(user_key(&bad), None);
        }
        assert_eq!(user_key(b"ab"), None);
        assert_eq!(place_of_tree_key(&[0xff, 0xff, 0]), None);
    }
}
