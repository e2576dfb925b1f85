//! Placement of keys on nodes: a consistent-hash ring with virtual nodes.
//!
//! A key's bytes hash to a stable 64-bit [`Token`] (xxh3: the same on every platform and
//! release, which matters because every node must agree on placement). The token's top
//! [`PARTITION_BITS`] bits name its [`Partition`], one of [`PARTITIONS`] fixed slices of
//! the key space; the partition goes to a `consistent_hash_ring` ring holding `vnodes`
//! virtual nodes per member. The ring's replica order for the partition,
//! [`Ring::candidates`], lists every member once: the first N are the home replicas of
//! every key in the partition (its preference list), the rest, in order, are the
//! stand-ins a sloppy quorum uses when a home replica is down.
//!
//! Placing partitions rather than single keys is what makes the other mechanisms
//! cheap: all keys of a partition share their replicas, so anti-entropy compares one
//! hash tree per partition with exactly the nodes that hold the same keys, and a
//! membership change moves whole partitions, each one range scan of the store (as in
//! Riak, Cassandra's vnodes and Garage).
//!
//! The ring holds members that have joined and not left; a node that is merely down
//! stays on it (a transient failure is not a membership change, as in Dynamo).
//!
//! Caveats: `consistent_hash_ring` finds replicas after the first by re-hashing the
//! token, not by walking the ring clockwise, so "the ring range a node owns" is only
//! meaningful for the first replica; that is one more reason to place fixed partitions. Building a ring costs O(members × vnodes): build a new one on a
//! membership change and swap it in, never mutate a shared one.

use std::collections::BTreeSet;
use std::fmt;

use consistent_hash_ring::RingBuilder;

/// A node's id, as given by `--id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(s.to_owned())
    }
}

/// A key's position: a stable 64-bit hash of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub u64);

impl Token {
    /// The token of `key`.
    pub fn of(key: &[u8]) -> Self {
        Token(xxhash_rust::xxh3::xxh3_64(key))
    }
}

/// Bits of a token that name its partition.
pub const PARTITION_BITS: u32 = 10;
/// Fixed slices of the key space: a key's replicas are its partition's.
pub const PARTITIONS: usize = 1 << PARTITION_BITS;

/// A slice of the key space: the keys whose tokens share their top [`PARTITION_BITS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition(pub u16);

impl Partition {
    /// The partition of `token`.
    pub fn of(token: Token) -> Self {
        Partition((token.0 >> (64 - PARTITION_BITS)) as u16)
    }

    /// Every partition, in order.
    pub fn all() -> impl Iterator<Item = Partition> {
        (0..PARTITIONS as u16).map(Partition)
    }

    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Where the partition sits on the ring: a stable hash of its number. (The ring
    /// hashes this again with FNV, which spreads small consecutive integers badly.)
    fn ring_key(self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.0.to_le_bytes())
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// An immutable ring of members.
pub struct Ring {
    vnodes: usize,
    members: BTreeSet<NodeId>,
    inner: consistent_hash_ring::Ring<NodeId>,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("vnodes", &self.vnodes)
            .field("members", &self.members)
            .finish()
    }
}

impl Ring {
    /// A ring of `members` with `vnodes` virtual nodes each.
    pub fn new(vnodes: usize, members: impl IntoIterator<Item = NodeId>) -> Self {
        assert!(vnodes > 0, "a ring needs at least one vnode per member");
        // Built in the order given: placement must not depend on it (tested below).
        let given: Vec<NodeId> = members.into_iter().collect();
        let inner = RingBuilder::default()
            .vnodes(vnodes)
            .nodes_iter(given.iter().cloned())
            .build();
        Self {
            vnodes,
            members: given.into_iter().collect(),
            inner,
        }
    }

    pub fn vnodes(&self) -> usize {
        self.vnodes
    }

    /// The members, in id order.
    pub fn members(&self) -> impl Iterator<Item = &NodeId> {
        self.members.iter()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, node: &NodeId) -> bool {
        self.members.contains(node)
    }

    /// Every member once, in the replica order of the token's partition: home replicas
    /// first, then the stand-ins in the order a sloppy quorum tries them.
    pub fn candidates(&self, token: Token) -> Vec<NodeId> {
        self.partition_candidates(Partition::of(token))
    }

    /// The key's `n` home replicas (fewer when the ring has fewer members).
    pub fn preference_list(&self, token: Token, n: usize) -> Vec<NodeId> {
        self.partition_preference_list(Partition::of(token), n)
    }

    /// Every member once, in the partition's replica order.
    pub fn partition_candidates(&self, partition: Partition) -> Vec<NodeId> {
        self.inner.replicas(partition.ring_key()).cloned().collect()
    }

    /// The `n` home replicas of every key in `partition`.
    pub fn partition_preference_list(&self, partition: Partition, n: usize) -> Vec<NodeId> {
        self.inner
            .replicas(partition.ring_key())
            .take(n)
            .cloned()
            .collect()
    }

    /// What changed from `self` to `next`.
    pub fn diff(&self, next: &Ring) -> RingDiff {
        RingDiff {
            added: next.members.difference(&self.members).cloned().collect(),
            removed: self.members.difference(&next.members).cloned().collect(),
        }
    }
}

/// Members added and removed between two rings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RingDiff {
    pub added: Vec<NodeId>,
    pub removed: Vec<NodeId>,
}

impl RingDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(k: usize) -> Vec<NodeId> {
        (1..=k).map(|i| NodeId(format!("n{i}"))).collect()
    }

    #[test]
    fn token_is_stable_across_builds() {
        // Placement must never change between releases: pin the hash of a known key.
        assert_eq!(Token::of(b"hello"), Token(0x9555e8555c62dcfd));
        assert_ne!(Token::of(b"a"), Token::of(b"b"));
    }

    #[test]
    fn partitions_cover_the_token_space_in_order() {
        // The lowest and highest tokens fall in the first and last partitions, and a key
        // placed by token gets its partition's replicas.
        assert_eq!(Partition::of(Token(0)), Partition(0));
        assert_eq!(
            Partition::of(Token(u64::MAX)),
            Partition(PARTITIONS as u16 - 1)
        );
        assert_eq!(Partition::all().count(), PARTITIONS);
        let ring = Ring::new(16, nodes(5));
        let t = Token::of(b"some key");
        assert_eq!(
            ring.preference_list(t, 3),
            ring.partition_preference_list(Partition::of(t), 3)
        );
    }

    #[test]
    fn empty_ring_places_nothing() {
        // With no members there are no replicas and no stand-ins.
        let ring = Ring::new(64, Vec::new());
        assert!(ring.preference_list(Token::of(b"k"), 3).is_empty());
        assert!(ring.candidates(Token::of(b"k")).is_empty());
    }

    #[test]
    fn diff_names_added_and_removed_members() {
        // A ring diff lists exactly the joins and the leaves.
        let a = Ring::new(8, nodes(3));
        let b = Ring::new(
            8,
            vec![NodeId::from("n2"), NodeId::from("n3"), NodeId::from("n4")],
        );
        assert_eq!(
            a.diff(&b),
            RingDiff {
                added: vec!["n4".into()],
                removed: vec!["n1".into()]
            }
        );
        assert!(a.diff(&a).is_empty());
    }

    #[test]
    fn sixty_four_vnodes_balance_primaries() {
        // With 64 vnodes each of 5 members owns between half and 1.5 times its fair share.
        let ring = Ring::new(64, nodes(5));
        let keys = 50_000;
        let mut counts = std::collections::HashMap::new();
        for i in 0..keys {
            *counts
                .entry(ring.preference_list(Token::of(format!("key-{i}").as_bytes()), 1)[0].clone())
                .or_insert(0) += 1;
        }
        let fair = keys as f64 / 5.0;
        for (node, count) in counts {
            let share = count as f64 / fair;
            assert!(
                (0.5..=1.5).contains(&share),
                "{node} owns {share:.2} of its fair share"
            );
        }
    }

    #[test]
    fn adding_a_node_moves_about_one_in_n_plus_one_keys() {
        // Going from 4 to 5 members moves about 1/5 of the primaries, and only to the new member.
        let before = Ring::new(64, nodes(4));
        let after = Ring::new(64, nodes(5));
        let keys = 20_000;
        let mut moved = 0;
        for i in 0..keys {
            let t = Token::of(format!("key-{i}").as_bytes());
            let (a, b) = (before.preference_list(t, 1), after.preference_list(t, 1));
            if a != b {
                moved += 1;
                assert_eq!(b[0], NodeId::from("n5"), "a key moved between old members");
            }
        }
        let fraction = moved as f64 / keys as f64;
        assert!(
            (0.1..=0.3).contains(&fraction),
            "moved {fraction:.3}, expected about 0.2"
        );
    }

    proptest! {
        #[test]
        fn preference_lists_have_n_distinct_members(k in 1usize..9, n in 1usize..6, key in any::<Vec<u8>>()) {
            // The preference list has min(n, members) distinct members of the ring.
            let ring = Ring::new(16, nodes(k));
            let list = ring.preference_list(Token::of(&key), n);
            prop_assert_eq!(list.len(), n.min(k));
            let distinct: BTreeSet<_> = list.iter().collect();
            prop_assert_eq!(distinct.len(), list.len());
            prop_assert!(list.iter().all(|m| ring.contains(m)));
        }

        #[test]
        fn candidates_extend_the_preference_list(k in 1usize..9, n in 1usize..6, key in any::<Vec<u8>>()) {
            // Stand-ins follow the home replicas and together list every member once.
            let ring = Ring::new(16, nodes(k));
            let t = Token::of(&key);
            let all = ring.candidates(t);
            prop_assert_eq!(all.len(), k);
            prop_assert_eq!(&all[..n.min(k)], &ring.preference_list(t, n)[..]);
        }

        #[test]
        fn placement_ignores_insertion_order(seed in any::<u64>(), key in any::<Vec<u8>>()) {
            // Every node computes the same placement whatever order it learned the members in.
            let mut shuffled = nodes(7);
            let len = shuffled.len();
            for i in 0..len {
                let j = (seed.rotate_left(i as u32) as usize) % len;
                shuffled.swap(i, j);
            }
            let a = Ring::new(32, nodes(7));
            let b = Ring::new(32, shuffled);
            prop_assert_eq!(a.candidates(Token::of(&key)), b.candidates(Token::of(&key)));
        }
    }
}
