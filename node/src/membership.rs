//! The cluster layout: which nodes are on the ring, which changes are under way, and
//! how far each node has got with them. Pure data and its merge; no IO.
//!
//! A layout is a state-based CRDT: every field merges by a rule that is commutative,
//! associative and idempotent, so nodes that exchange layouts in any order, any number
//! of times, agree once they have heard from each other. Each field has one writer:
//!
//! - `nodes`: each node's *intent* (active, leaving, removed) with its addresses, as a
//!   versioned register per node (the higher version wins). A node writes its own entry
//!   (start, `leave`); `remove` writes a dead node's.
//! - `ring`: the *committed* ring (the members reads use) with an epoch, and the ring it
//!   replaced while nodes may still read from it. Any node commits the next ring once
//!   every node of the target reports it has received its ranges; since the rule is
//!   deterministic, two nodes committing at once commit the same ring.
//! - `received`: per node, the fingerprint of the target whose ranges it holds.
//! - `acked`: per node, the highest epoch it has adopted (it reads from that ring).
//! - `writing`: per node, the fingerprint of the target it writes to. A node starts
//!   receiving its ranges of a target only once every node writes to it (Garage's
//!   layout ack): a transfer made while some coordinator still wrote with an older
//!   layout could miss that write, and the target would commit without it.
//!
//! The *target* is the set of active nodes. When it differs from the committed ring a
//! change is in flight: writes go to the home replicas of every live ring (previous,
//! committed, target; W in each) and reads to the committed one, so R + W > N holds
//! whichever ring a reader uses. A previous ring is retired once every node that may
//! still read from it has acknowledged the new epoch.

use std::collections::{BTreeMap, BTreeSet};

use bincode::{Decode, Encode};

/// What a node wants from the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum Intent {
    /// On the ring, or joining it.
    Active,
    /// Handing its ranges over before it leaves (`POST /admin/leave`).
    Leaving,
    /// Taken off the ring for good (`POST /admin/remove/{id}`, or after leaving).
    Removed,
}

/// A member's place on the ring, as `/cluster` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingState {
    /// Active, not yet in the committed ring: receiving its ranges, not read from.
    Joining,
    Member,
    /// In the committed ring, handing its ranges over.
    Leaving,
    /// Off the ring (removed, or left).
    Removed,
}

impl RingState {
    pub fn as_str(self) -> &'static str {
        match self {
            RingState::Joining => "joining",
            RingState::Member => "member",
            RingState::Leaving => "leaving",
            RingState::Removed => "removed",
        }
    }
}

/// One node's entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Encode, Decode)]
pub struct NodeEntry {
    /// Grows with every change of the entry; the higher one wins a merge.
    pub version: u64,
    pub intent: Intent,
    /// Made with the node's data dir: a node that comes back with a new data dir after
    /// it was removed can join again under the same id.
    pub incarnation: u64,
    /// Advertised cluster address (peer RPC and gossip).
    pub cluster: String,
    /// Advertised HTTP address.
    pub http: String,
}

/// The committed ring.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct Committed {
    /// 0 before the first commit.
    pub epoch: u64,
    pub members: BTreeSet<String>,
    /// The ring this one replaced, while some node may still read from it.
    pub previous: Option<BTreeSet<String>>,
}

/// The cluster layout.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct Layout {
    nodes: BTreeMap<String, NodeEntry>,
    ring: Committed,
    /// Per node: (version, fingerprint of the target whose ranges it holds).
    received: BTreeMap<String, (u64, u64)>,
    /// Per node: the highest epoch it has adopted.
    acked: BTreeMap<String, u64>,
    /// Per node: (version, fingerprint of the target it writes to besides the
    /// committed ring). A node receives its ranges only once every node writes to
    /// the target: what arrives earlier could miss a write made with an older layout.
    writing: BTreeMap<String, (u64, u64)>,
}

/// A stable fingerprint of a set of node ids (the same on every node and release).
pub fn fingerprint(ids: &BTreeSet<String>) -> u64 {
    let mut bytes = Vec::new();
    for id in ids {
        bytes.extend_from_slice(&(id.len() as u32).to_le_bytes());
        bytes.extend_from_slice(id.as_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// Most nodes a layout may list (a received one with more is refused).
pub const NODES_MAX: usize = 4096;
/// Longest node id accepted in a layout.
pub const ID_MAX_BYTES: usize = 255;

impl Layout {
    /// Checks a layout received from a peer: bounded, ids and addresses well formed.
    pub fn check(&self) -> Result<(), String> {
        if self.nodes.len() > NODES_MAX {
            return Err(format!("a layout lists at most {NODES_MAX} nodes"));
        }
        let ids = self
            .nodes
            .keys()
            .chain(&self.ring.members)
            .chain(self.ring.previous.iter().flatten())
            .chain(self.received.keys())
            .chain(self.acked.keys())
            .chain(self.writing.keys());
        for id in ids {
            if id.is_empty() || id.len() > ID_MAX_BYTES {
                return Err(format!("node ids are 1 to {ID_MAX_BYTES} bytes"));
            }
        }
        for (id, entry) in &self.nodes {
            if entry.cluster.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "node {id}: cluster address {:?} is not ip:port",
                    entry.cluster
                ));
            }
        }
        if self.ring.members.len() > NODES_MAX
            || self.received.len() > NODES_MAX
            || self.acked.len() > NODES_MAX
            || self.writing.len() > NODES_MAX
        {
            return Err(format!("a layout lists at most {NODES_MAX} nodes"));
        }
        Ok(())
    }

    /// A layout whose committed ring is `members` (epoch 1), as a data dir from before
    /// layouts had it: every member it knew held data.
    pub fn committed(members: impl IntoIterator<Item = (String, NodeEntry)>) -> Self {
        let nodes: BTreeMap<String, NodeEntry> = members.into_iter().collect();
        let ids: BTreeSet<String> = nodes.keys().cloned().collect();
        let mut layout = Self {
            nodes,
            ..Self::default()
        };
        if !ids.is_empty() {
            layout.ring = Committed {
                epoch: 1,
                members: ids,
                previous: None,
            };
        }
        layout
    }

    pub fn nodes(&self) -> &BTreeMap<String, NodeEntry> {
        &self.nodes
    }

    pub fn entry(&self, id: &str) -> Option<&NodeEntry> {
        self.nodes.get(id)
    }

    pub fn ring(&self) -> &Committed {
        &self.ring
    }

    pub fn epoch(&self) -> u64 {
        self.ring.epoch
    }

    /// The members reads use.
    pub fn current(&self) -> &BTreeSet<String> {
        &self.ring.members
    }

    /// The ring the committed one replaced, while it is still written to.
    pub fn previous(&self) -> Option<&BTreeSet<String>> {
        self.ring.previous.as_ref()
    }

    /// The members the ring is heading for: every active node.
    pub fn target(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter(|(_, e)| e.intent == Intent::Active)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// True while a change is in flight: the target is not yet committed, or a
    /// previous ring is still written to.
    pub fn in_flight(&self) -> bool {
        self.ring.previous.is_some() || self.target() != self.ring.members
    }

    /// The node's place on the ring.
    pub fn ring_state(&self, id: &str) -> RingState {
        let in_ring = self.ring.members.contains(id);
        match self.nodes.get(id).map(|e| e.intent) {
            Some(Intent::Active) if in_ring => RingState::Member,
            Some(Intent::Active) => RingState::Joining,
            Some(Intent::Leaving) if in_ring => RingState::Leaving,
            Some(Intent::Leaving) | Some(Intent::Removed) => RingState::Removed,
            // A member with no entry (cannot happen after a merge): what the ring says.
            None if in_ring => RingState::Member,
            None => RingState::Removed,
        }
    }

    /// The fingerprint of the target whose ranges `id` reports holding.
    pub fn received(&self, id: &str) -> Option<u64> {
        self.received.get(id).map(|(_, fp)| *fp)
    }

    /// The fingerprint of the target `id` reports writing to.
    pub fn writing(&self, id: &str) -> Option<u64> {
        self.writing.get(id).map(|(_, fp)| *fp)
    }

    pub fn acked(&self, id: &str) -> u64 {
        self.acked.get(id).copied().unwrap_or(0)
    }

    /// Sets `id`'s entry to `intent` at the given addresses; true if anything changed.
    pub fn set_entry(
        &mut self,
        id: &str,
        intent: Intent,
        incarnation: u64,
        cluster: &str,
        http: &str,
    ) -> bool {
        let next = match self.nodes.get(id) {
            Some(e)
                if e.intent == intent
                    && e.incarnation == incarnation
                    && e.cluster == cluster
                    && e.http == http =>
            {
                return false;
            }
            Some(e) => e.version + 1,
            None => 1,
        };
        self.nodes.insert(
            id.to_owned(),
            NodeEntry {
                version: next,
                intent,
                incarnation,
                cluster: cluster.to_owned(),
                http: http.to_owned(),
            },
        );
        true
    }

    /// Changes the intent of an existing entry; true if it changed.
    pub fn set_intent(&mut self, id: &str, intent: Intent) -> bool {
        let Some(e) = self.nodes.get(id).cloned() else {
            return false;
        };
        self.set_entry(id, intent, e.incarnation, &e.cluster, &e.http)
    }

    /// Records that `id` holds the ranges of the target with fingerprint `fp`.
    pub fn set_received(&mut self, id: &str, fp: u64) -> bool {
        set_register(&mut self.received, id, fp)
    }

    /// Records that `id` writes to the target with fingerprint `fp`.
    pub fn set_writing(&mut self, id: &str, fp: u64) -> bool {
        set_register(&mut self.writing, id, fp)
    }

    /// True when every node still on its way to or on the ring (not removed, not left)
    /// writes to the target with fingerprint `fp`, so no write from now on can miss the
    /// target's homes.
    pub fn all_writing(&self, fp: u64) -> bool {
        self.nodes
            .keys()
            .filter(|id| self.ring_state(id) != RingState::Removed)
            .all(|id| self.writing.get(id).is_some_and(|(_, f)| *f == fp))
    }

    /// Records that `id` has adopted the committed ring of this layout.
    pub fn ack(&mut self, id: &str) -> bool {
        let epoch = self.ring.epoch;
        if self.acked(id) >= epoch {
            return false;
        }
        self.acked.insert(id.to_owned(), epoch);
        true
    }

    /// Commits the target when every node of it holds its ranges; true if it did.
    pub fn try_commit(&mut self) -> bool {
        let target = self.target();
        if target.is_empty() || target == self.ring.members {
            return false;
        }
        let fp = fingerprint(&target);
        if !target.iter().all(|id| self.received(id) == Some(fp)) {
            return false;
        }
        let replaced = std::mem::take(&mut self.ring.members);
        self.ring = Committed {
            epoch: self.ring.epoch + 1,
            members: target,
            previous: Some(replaced).filter(|r| !r.is_empty()),
        };
        true
    }

    /// Retires the previous ring once no node may read from it any more: every node of
    /// the previous and the committed ring that is not removed has adopted this epoch.
    /// True if it did.
    pub fn try_retire(&mut self) -> bool {
        let Some(previous) = &self.ring.previous else {
            return false;
        };
        let epoch = self.ring.epoch;
        let all_acked = previous
            .iter()
            .chain(&self.ring.members)
            .filter(|id| {
                self.nodes
                    .get(*id)
                    .is_none_or(|e| e.intent != Intent::Removed)
            })
            .all(|id| self.acked(id) >= epoch);
        if all_acked {
            self.ring.previous = None;
        }
        all_acked
    }

    /// Merges `other` into this layout; true if this one changed.
    pub fn merge(&mut self, other: &Layout) -> bool {
        let before = self.clone();
        for (id, theirs) in &other.nodes {
            match self.nodes.get(id) {
                Some(ours) if ours >= theirs => {}
                _ => {
                    self.nodes.insert(id.clone(), theirs.clone());
                }
            }
        }
        self.ring = merge_committed(&self.ring, &other.ring);
        merge_registers(&mut self.received, &other.received);
        merge_registers(&mut self.writing, &other.writing);
        for (id, theirs) in &other.acked {
            let ours = self.acked.entry(id.clone()).or_default();
            *ours = (*ours).max(*theirs);
        }
        *self != before
    }
}

/// The layout as stored before `writing` existed.
#[derive(Decode)]
struct LayoutV1 {
    nodes: BTreeMap<String, NodeEntry>,
    ring: Committed,
    received: BTreeMap<String, (u64, u64)>,
    acked: BTreeMap<String, u64>,
}

impl Layout {
    /// Decodes a stored layout, of this release or of the one before `writing` (each
    /// node then reports its own again at its next update).
    pub fn decode_stored<C: bincode::config::Config>(
        bytes: &[u8],
        config: C,
    ) -> Result<Self, bincode::error::DecodeError> {
        match bincode::decode_from_slice::<Layout, _>(bytes, config) {
            Ok((layout, read)) if read == bytes.len() => Ok(layout),
            _ => {
                let (v1, _) = bincode::decode_from_slice::<LayoutV1, _>(bytes, config)?;
                Ok(Layout {
                    nodes: v1.nodes,
                    ring: v1.ring,
                    received: v1.received,
                    acked: v1.acked,
                    writing: BTreeMap::new(),
                })
            }
        }
    }
}

/// Sets `id`'s versioned register to `fp` (a new version if it changes); true if it did.
fn set_register(registers: &mut BTreeMap<String, (u64, u64)>, id: &str, fp: u64) -> bool {
    match registers.get(id) {
        Some((_, old)) if *old == fp => false,
        old => {
            let version = old.map_or(1, |(v, _)| v + 1);
            registers.insert(id.to_owned(), (version, fp));
            true
        }
    }
}

/// Keeps the later version of each register (each node sets only its own).
fn merge_registers(ours: &mut BTreeMap<String, (u64, u64)>, theirs: &BTreeMap<String, (u64, u64)>) {
    for (id, t) in theirs {
        match ours.get(id) {
            Some(o) if o >= t => {}
            _ => {
                ours.insert(id.clone(), *t);
            }
        }
    }
}

/// The later of two committed rings. At the same epoch (two parts of a cluster
/// committed different rings, or a node with a new data dir committed a ring of itself
/// before it heard from the others), the larger ring, then the larger fingerprint, so
/// that every node picks the same and a lone newcomer never wins over the cluster.
/// The same ring merges its previous ring away once either side has retired it.
fn merge_committed(a: &Committed, b: &Committed) -> Committed {
    use std::cmp::Ordering;
    let rank = |c: &Committed| (c.epoch, c.members.len(), fingerprint(&c.members));
    if a.epoch == b.epoch && a.members == b.members {
        return Committed {
            epoch: a.epoch,
            members: a.members.clone(),
            previous: match (&a.previous, &b.previous) {
                (Some(x), Some(y)) => Some(x.max(y).clone()),
                _ => None,
            },
        };
    }
    match rank(a).cmp(&rank(b)) {
        Ordering::Less => b.clone(),
        _ => a.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn active(layout: &mut Layout, id: &str) {
        layout.set_entry(id, Intent::Active, 1, &format!("{id}:7000"), "h");
    }

    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Reports every target node as holding its ranges, then commits.
    fn receive_all_and_commit(layout: &mut Layout) -> bool {
        let target = layout.target();
        let fp = fingerprint(&target);
        for id in &target {
            layout.set_received(id, fp);
        }
        layout.try_commit()
    }

    #[test]
    fn a_join_commits_only_when_every_target_node_holds_its_ranges() {
        // The target is committed after, not before, its last node reports its ranges.
        let mut layout = Layout::default();
        for id in ["n1", "n2", "n3"] {
            active(&mut layout, id);
        }
        assert!(receive_all_and_commit(&mut layout));
        assert_eq!(layout.current(), &ids(&["n1", "n2", "n3"]));
        assert_eq!(layout.previous(), None, "nothing before the first ring");
        active(&mut layout, "n4");
        assert_eq!(layout.ring_state("n4"), RingState::Joining);
        assert!(layout.in_flight());
        let fp = fingerprint(&layout.target());
        for id in ["n1", "n2", "n3"] {
            layout.set_received(id, fp);
        }
        assert!(!layout.try_commit(), "n4 has not received its ranges");
        layout.set_received("n4", fp);
        assert!(layout.try_commit());
        assert_eq!(layout.epoch(), 2);
        assert_eq!(layout.ring_state("n4"), RingState::Member);
        assert_eq!(layout.previous(), Some(&ids(&["n1", "n2", "n3"])));
    }

    #[test]
    fn the_previous_ring_retires_when_every_node_but_removed_ones_acknowledged() {
        // A node that may still read from the old ring keeps it written to.
        let mut layout = Layout::default();
        for id in ["n1", "n2", "n3"] {
            active(&mut layout, id);
        }
        receive_all_and_commit(&mut layout);
        layout.set_intent("n3", Intent::Removed);
        assert!(receive_all_and_commit(&mut layout));
        assert_eq!(layout.current(), &ids(&["n1", "n2"]));
        assert!(!layout.try_retire());
        layout.ack("n1");
        assert!(!layout.try_retire(), "n2 has not acknowledged");
        layout.ack("n2");
        assert!(layout.try_retire(), "n3 is removed: no ack needed");
        assert!(!layout.in_flight());
    }

    #[test]
    fn leaving_and_removed_nodes_show_their_ring_state() {
        // A leaving node stays on the committed ring until the ring without it commits.
        let mut layout = Layout::default();
        for id in ["n1", "n2", "n3", "n4"] {
            active(&mut layout, id);
        }
        receive_all_and_commit(&mut layout);
        layout.set_intent("n4", Intent::Leaving);
        assert_eq!(layout.ring_state("n4"), RingState::Leaving);
        assert!(!layout.target().contains("n4"));
        receive_all_and_commit(&mut layout);
        assert_eq!(layout.ring_state("n4"), RingState::Removed);
        assert_eq!(layout.ring_state("n9"), RingState::Removed);
    }

    #[test]
    fn a_report_for_an_older_target_does_not_commit_a_newer_one() {
        // n5 joined after n4 reported: n4 must receive the new target's ranges too.
        let mut layout = Layout::default();
        for id in ["n1", "n2", "n3"] {
            active(&mut layout, id);
        }
        receive_all_and_commit(&mut layout);
        active(&mut layout, "n4");
        let old = fingerprint(&layout.target());
        active(&mut layout, "n5");
        let new = fingerprint(&layout.target());
        for id in ["n1", "n2", "n3", "n5"] {
            layout.set_received(id, new);
        }
        layout.set_received("n4", old);
        assert!(!layout.try_commit());
        layout.set_received("n4", new);
        assert!(layout.try_commit());
    }

    #[test]
    fn transfers_wait_until_every_node_on_its_way_writes_to_the_target() {
        // One node still writing with the older target holds the transfer back; a
        // removed node and one that left do not, and the register merges by version.
        let mut layout = Layout::default();
        for id in ["n1", "n2", "n3", "n4", "n5"] {
            active(&mut layout, id);
        }
        receive_all_and_commit(&mut layout);
        let old = fingerprint(&layout.target());
        for id in ["n1", "n2", "n3", "n4", "n5"] {
            layout.set_writing(id, old);
        }
        layout.set_intent("n4", Intent::Leaving);
        receive_all_and_commit(&mut layout);
        assert_eq!(layout.ring_state("n4"), RingState::Removed, "n4 has left");
        layout.set_intent("n5", Intent::Removed);
        active(&mut layout, "n6");
        let fp = fingerprint(&layout.target());
        for id in ["n1", "n2", "n6"] {
            layout.set_writing(id, fp);
        }
        assert!(!layout.all_writing(fp), "n3 still writes without n6");
        let mut theirs = layout.clone();
        theirs.set_writing("n3", fp);
        layout.merge(&theirs);
        assert!(layout.all_writing(fp));
        let mut stale = layout.clone();
        stale.writing.insert("n3".into(), (1, old));
        layout.merge(&stale);
        assert!(
            layout.all_writing(fp),
            "an older version never wins a merge"
        );
    }

    #[test]
    fn a_layout_stored_before_writing_existed_still_loads() {
        // The fields of the release before, in order; `writing` starts empty.
        #[derive(Encode)]
        struct V1<'a> {
            nodes: &'a BTreeMap<String, NodeEntry>,
            ring: &'a Committed,
            received: &'a BTreeMap<String, (u64, u64)>,
            acked: &'a BTreeMap<String, u64>,
        }
        let mut layout = Layout::default();
        for id in ["n1", "n2"] {
            active(&mut layout, id);
        }
        receive_all_and_commit(&mut layout);
        layout.ack("n1");
        layout.set_writing("n1", fingerprint(&layout.target()));
        let config = bincode::config::standard();
        let old = bincode::encode_to_vec(
            V1 {
                nodes: &layout.nodes,
                ring: &layout.ring,
                received: &layout.received,
                acked: &layout.acked,
            },
            config,
        )
        .unwrap();
        let mut expected = layout.clone();
        expected.writing.clear();
        assert_eq!(Layout::decode_stored(&old, config).unwrap(), expected);
        let new = bincode::encode_to_vec(&layout, config).unwrap();
        assert_eq!(Layout::decode_stored(&new, config).unwrap(), layout);
    }

    #[test]
    fn a_target_is_written_by_all_only_when_every_node_says_so() {
        // Removed nodes do not count; a node writing to an older target holds it back.
        let mut layout = Layout::default();
        for id in ["n1", "n2", "n3"] {
            active(&mut layout, id);
        }
        let old = fingerprint(&layout.target());
        active(&mut layout, "n4");
        let new = fingerprint(&layout.target());
        for id in ["n1", "n2", "n4"] {
            layout.set_writing(id, new);
        }
        layout.set_writing("n3", old);
        assert!(
            !layout.all_writing(new),
            "n3 still writes with the old target"
        );
        layout.set_writing("n3", new);
        assert!(layout.all_writing(new));
        layout.set_intent("n2", Intent::Removed);
        layout.set_writing("n2", old);
        assert!(
            !layout.all_writing(fingerprint(&layout.target())),
            "the new target is not written yet"
        );
        let target = fingerprint(&layout.target());
        for id in ["n1", "n3", "n4"] {
            layout.set_writing(id, target);
        }
        assert!(layout.all_writing(target), "removed n2 does not count");
    }

    /// A layout built from a random script of operations by nodes n0..n5.
    fn arb_layout() -> impl Strategy<Value = Layout> {
        proptest::collection::vec((0u8..6, 0u8..6), 0..24).prop_map(|ops| {
            let mut layout = Layout::default();
            for (node, op) in ops {
                let id = format!("n{node}");
                match op {
                    0 => {
                        layout.set_entry(&id, Intent::Active, 1, "c", "h");
                    }
                    1 => {
                        layout.set_intent(&id, Intent::Leaving);
                    }
                    2 => {
                        layout.set_intent(&id, Intent::Removed);
                    }
                    3 => {
                        let fp = fingerprint(&layout.target());
                        layout.set_writing(&id, fp);
                        layout.set_received(&id, fp);
                        layout.try_commit();
                    }
                    4 => {
                        layout.ack(&id);
                        layout.try_retire();
                    }
                    _ => {
                        receive_all_and_commit(&mut layout);
                    }
                }
            }
            layout
        })
    }

    fn merged(a: &Layout, b: &Layout) -> Layout {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    #[test]
    fn a_lone_newcomer_s_ring_loses_to_the_cluster_s_at_the_same_epoch() {
        // A wiped node that committed a ring of itself adopts the cluster's on merge.
        let mut cluster = Layout::default();
        for id in ["n1", "n2", "n3"] {
            active(&mut cluster, id);
        }
        receive_all_and_commit(&mut cluster);
        let mut lone = Layout::default();
        active(&mut lone, "n1");
        receive_all_and_commit(&mut lone);
        assert_eq!(lone.epoch(), cluster.epoch());
        assert_eq!(merged(&lone, &cluster).current(), cluster.current());
        assert_eq!(merged(&cluster, &lone).current(), cluster.current());
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            a in arb_layout(), b in arb_layout(), c in arb_layout()
        ) {
            // Nodes agree whatever order and however often they exchange layouts.
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            prop_assert_eq!(merged(&a, &a), a.clone());
        }

        #[test]
        fn a_layout_survives_encoding(a in arb_layout()) {
            // What is stored and sent is what is decoded.
            let bytes = bincode::encode_to_vec(&a, bincode::config::standard()).unwrap();
            let (back, _): (Layout, _) =
                bincode::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
            prop_assert_eq!(back, a);
        }
    }
}
