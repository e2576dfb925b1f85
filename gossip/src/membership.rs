//! What the rest of ringkv sees: every member ever heard of, by node id.
//!
//! [`Book`] is the bookkeeping behind it, pure and socket-free: the driver
//! feeds it foca's member states and the leave notices, and it answers whether
//! the published [`Membership`] changed.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::identity::NodeIdentity;

/// Members the book remembers. Past it, a down or left member is forgotten to
/// make room; a live newcomer is only refused when all are live.
pub(crate) const MEMBERS_MAX: usize = 4096;

/// A member's state as seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; declared down unless it refutes in time. Still a
    /// member to try, as SWIM treats it.
    Suspect,
    /// Crashed or unreachable: failed its probes and did not refute.
    Down,
    /// Left the cluster on purpose ([`crate::Gossip::leave`]).
    Left,
}

impl MemberState {
    /// `"alive"`, `"suspect"`, `"down"` or `"left"`, as in `GET /cluster`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Down => "down",
            Self::Left => "left",
        }
    }

    /// Alive or suspect: worth sending requests to.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }
}

/// One cluster member, in its latest known identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node's `--id`.
    pub id: String,
    /// Advertised address for UDP gossip and TCP peer RPC.
    pub cluster: SocketAddr,
    /// Advertised `host:port` of the node's HTTP API.
    pub http: String,
    /// Grows at each restart of the node (and when it renews its identity
    /// after being declared down).
    pub generation: u64,
    /// Its state as seen from this node.
    pub state: MemberState,
}

/// A snapshot of the membership, published on [`crate::Gossip::members`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    local_id: String,
    /// Sorted by id; the local node included.
    members: Vec<Member>,
}

impl Membership {
    /// This node. Alive while gossip runs, `Left` after [`crate::Gossip::leave`].
    pub fn local(&self) -> &Member {
        self.get(&self.local_id)
            .expect("the local node is always a member")
    }

    /// Every member ever seen, sorted by id, the local node included.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with this node id.
    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members
            .binary_search_by(|member| member.id.as_str().cmp(id))
            .ok()
            .and_then(|at| self.members.get(at))
    }

    /// Members that are alive or suspect.
    pub fn live(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|member| member.state.is_live())
    }

    /// How many members are in `state`.
    pub fn count(&self, state: MemberState) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }
}

#[derive(Debug, Clone)]
struct Entry {
    identity: NodeIdentity,
    /// foca's view of `identity`.
    swim: foca::State,
    /// Highest generation of this node known to have left on purpose.
    left_generation: Option<u64>,
}

impl Entry {
    fn state(&self) -> MemberState {
        // A leave notice outranks foca: foca cannot tell a leave from a crash,
        // and the notice may arrive while foca still believes it alive.
        if self
            .left_generation
            .is_some_and(|left| left >= self.identity.generation)
        {
            return MemberState::Left;
        }
        match self.swim {
            foca::State::Alive => MemberState::Alive,
            foca::State::Suspect => MemberState::Suspect,
            foca::State::Down => MemberState::Down,
        }
    }
}

/// Membership bookkeeping: one entry per node id holding its newest identity.
#[derive(Debug)]
pub(crate) struct Book {
    local: NodeIdentity,
    local_left: bool,
    entries: BTreeMap<String, Entry>,
}

impl Book {
    pub(crate) fn new(local: NodeIdentity) -> Self {
        Self {
            local,
            local_left: false,
            entries: BTreeMap::new(),
        }
    }

    /// The local node renewed its identity.
    pub(crate) fn set_local(&mut self, identity: NodeIdentity) -> bool {
        let changed = self.local != identity;
        self.local = identity;
        changed
    }

    /// The local node left the cluster.
    pub(crate) fn mark_local_left(&mut self) -> bool {
        !std::mem::replace(&mut self.local_left, true)
    }

    /// foca reports `identity` in `state`. A newer generation of a node
    /// replaces the older one at once, whatever the older one's state; news
    /// about an older generation is ignored.
    pub(crate) fn observe(&mut self, identity: &NodeIdentity, state: foca::State) -> bool {
        if identity.id == self.local.id {
            // Our own earlier identities, which foca keeps as down.
            return false;
        }
        match self.entries.get_mut(&identity.id) {
            Some(entry) if identity.generation > entry.identity.generation => {
                entry.identity = identity.clone();
                entry.swim = state;
                true
            }
            Some(entry) if entry.identity == *identity => {
                let before = entry.state();
                entry.swim = state;
                before != entry.state()
            }
            // Older generation, or the same generation with other addresses
            // (two processes under one id and data dir): keep the first seen.
            Some(_) => false,
            None => self.insert(Entry {
                identity: identity.clone(),
                swim: state,
                left_generation: None,
            }),
        }
    }

    /// A leave notice for `identity` arrived.
    pub(crate) fn observe_leave(&mut self, identity: &NodeIdentity) -> bool {
        if identity.id == self.local.id {
            return false;
        }
        match self.entries.get_mut(&identity.id) {
            Some(entry) if identity.generation < entry.identity.generation => false,
            Some(entry) => {
                let before = entry.state();
                if identity.generation > entry.identity.generation {
                    entry.identity = identity.clone();
                    entry.swim = foca::State::Down;
                }
                entry.left_generation = Some(identity.generation);
                before != entry.state()
            }
            None => self.insert(Entry {
                identity: identity.clone(),
                swim: foca::State::Down,
                left_generation: Some(identity.generation),
            }),
        }
    }

    fn insert(&mut self, entry: Entry) -> bool {
        if self.entries.len() >= MEMBERS_MAX {
            let gone = self
                .entries
                .iter()
                .find(|(_, old)| !old.state().is_live())
                .map(|(id, _)| id.clone());
            match gone {
                Some(id) => {
                    self.entries.remove(&id);
                }
                None => {
                    tracing::warn!(node = %entry.identity.id, "membership full; member ignored");
                    return false;
                }
            }
        }
        self.entries.insert(entry.identity.id.clone(), entry);
        true
    }

    pub(crate) fn snapshot(&self) -> Membership {
        let local_state = if self.local_left {
            MemberState::Left
        } else {
            MemberState::Alive
        };
        let mut members: Vec<Member> = self
            .entries
            .values()
            .map(|entry| member(&entry.identity, entry.state()))
            .collect();
        let at = members
            .binary_search_by(|m| m.id.cmp(&self.local.id))
            .unwrap_or_else(|at| at);
        members.insert(at, member(&self.local, local_state));
        Membership {
            local_id: self.local.id.clone(),
            members,
        }
    }
}

fn member(identity: &NodeIdentity, state: MemberState) -> Member {
    Member {
        id: identity.id.clone(),
        cluster: identity.cluster,
        http: identity.http.clone(),
        generation: identity.generation,
        state,
    }
}

#[cfg(test)]
mod tests {
    use foca::State;

    use super::*;

    fn node(id: &str, port: u16, generation: u64) -> NodeIdentity {
        NodeIdentity {
            id: id.into(),
            cluster: ([127, 0, 0, 1], port).into(),
            http: format!("127.0.0.1:{}", port + 1000),
            generation,
        }
    }

    fn state_of(book: &Book, id: &str) -> Option<(MemberState, u64)> {
        book.snapshot()
            .get(id)
            .map(|member| (member.state, member.generation))
    }

    #[test]
    fn local_node_is_always_alive_until_it_leaves() {
        // The snapshot always lists the local node, and foca's news about our
        // own earlier identities never changes it.
        let mut book = Book::new(node("n1", 7001, 5));
        assert!(!book.observe(&node("n1", 7001, 4), State::Down));
        assert_eq!(state_of(&book, "n1"), Some((MemberState::Alive, 5)));
        assert!(book.set_local(node("n1", 7001, 6)));
        assert_eq!(state_of(&book, "n1"), Some((MemberState::Alive, 6)));
        assert!(book.mark_local_left());
        assert!(!book.mark_local_left());
        assert_eq!(state_of(&book, "n1"), Some((MemberState::Left, 6)));
    }

    #[test]
    fn states_follow_foca_and_changes_are_reported_once() {
        // Alive, suspect and down come from foca; repeating a state is no change.
        let mut book = Book::new(node("n1", 7001, 1));
        let n2 = node("n2", 7002, 1);
        assert!(book.observe(&n2, State::Alive));
        assert!(!book.observe(&n2, State::Alive));
        assert!(book.observe(&n2, State::Suspect));
        assert_eq!(state_of(&book, "n2"), Some((MemberState::Suspect, 1)));
        assert!(book.observe(&n2, State::Down));
        assert_eq!(state_of(&book, "n2"), Some((MemberState::Down, 1)));
    }

    #[test]
    fn newer_generation_replaces_older_whatever_the_order() {
        // A restarted node is alive at once, even at another address, and late
        // news about its old self is ignored.
        let mut book = Book::new(node("n1", 7001, 1));
        book.observe(&node("n2", 7002, 1), State::Alive);
        assert!(book.observe(&node("n2", 7012, 2), State::Alive));
        assert!(!book.observe(&node("n2", 7002, 1), State::Down));
        let n2 = book.snapshot().get("n2").cloned().unwrap();
        assert_eq!(
            (n2.state, n2.generation, n2.cluster.port()),
            (MemberState::Alive, 2, 7012)
        );
    }

    #[test]
    fn leave_then_down_and_down_then_leave_are_both_left() {
        // The notice and foca's down update may arrive in either order.
        let mut book = Book::new(node("n1", 7001, 1));
        let n2 = node("n2", 7002, 3);
        let n3 = node("n3", 7003, 3);
        book.observe(&n2, State::Alive);
        book.observe(&n3, State::Alive);

        assert!(book.observe_leave(&n2));
        assert_eq!(state_of(&book, "n2"), Some((MemberState::Left, 3)));
        assert!(!book.observe(&n2, State::Down), "left stays left");
        assert_eq!(state_of(&book, "n2"), Some((MemberState::Left, 3)));

        assert!(book.observe(&n3, State::Down));
        assert_eq!(state_of(&book, "n3"), Some((MemberState::Down, 3)));
        assert!(book.observe_leave(&n3));
        assert!(!book.observe_leave(&n3));
        assert_eq!(state_of(&book, "n3"), Some((MemberState::Left, 3)));
    }

    #[test]
    fn left_member_restarting_is_alive_again() {
        // A leave covers only its generation: the next start is alive.
        let mut book = Book::new(node("n1", 7001, 1));
        book.observe_leave(&node("n2", 7002, 3));
        assert_eq!(state_of(&book, "n2"), Some((MemberState::Left, 3)));
        assert!(book.observe(&node("n2", 7002, 4), State::Alive));
        assert_eq!(state_of(&book, "n2"), Some((MemberState::Alive, 4)));
        assert!(!book.observe_leave(&node("n2", 7002, 3)), "stale notice");
        assert_eq!(state_of(&book, "n2"), Some((MemberState::Alive, 4)));
    }

    #[test]
    fn snapshot_is_sorted_and_searchable() {
        // `get` relies on the members being sorted by id.
        let mut book = Book::new(node("n5", 7005, 1));
        for (id, port) in [("n9", 7009), ("n1", 7001), ("n7", 7007)] {
            book.observe(&node(id, port, 1), State::Alive);
        }
        let snapshot = book.snapshot();
        let ids: Vec<&str> = snapshot.members().iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["n1", "n5", "n7", "n9"]);
        assert_eq!(snapshot.local().id, "n5");
        assert_eq!(snapshot.get("n7").map(|m| m.generation), Some(1));
        assert!(snapshot.get("n6").is_none());
        assert_eq!(snapshot.count(MemberState::Alive), 4);
    }

    #[test]
    fn full_book_forgets_down_members_first() {
        // The bound holds; a dead member makes room for a live one.
        let mut book = Book::new(node("local", 1, 1));
        for i in 0..MEMBERS_MAX {
            let port = u16::try_from(i + 2).unwrap();
            let state = if i == 7 { State::Down } else { State::Alive };
            assert!(book.observe(&node(&format!("m{i}"), port, 1), state));
        }
        assert!(book.observe(&node("new", 60000, 1), State::Alive));
        assert_eq!(book.entries.len(), MEMBERS_MAX);
        assert!(book.snapshot().get("m7").is_none());
        assert!(!book.observe(&node("newer", 60001, 1), State::Alive));
    }
}
