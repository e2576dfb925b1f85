//! The node's view of the cluster: the layout (who is on the ring, and which change is
//! under way), who is live, and where each key's replicas are.
//!
//! Two sources feed it. Gossip (SWIM, `ringkv-gossip`) says who is alive. The cluster
//! layout ([`crate::membership`]) says who holds data: the committed ring, which reads
//! use, and while a change is in flight the target ring (and the ring the last commit
//! replaced), which writes also go to. Every change of either is turned into an
//! immutable [`View`] and swapped in, so request paths read the current view with one
//! atomic load and never wait on a lock. Rings are rebuilt only when the layout
//! changes, not on every liveness change.
//!
//! A node that is merely down keeps its place on the ring (as in Dynamo): only an
//! explicit change (a node joining with a new data dir, `leave`, `remove`) changes the
//! layout. Layouts spread by peer calls ([`crate::transfer::spread`]) and merge as a
//! CRDT; this module owns the one copy of this node's layout, keeps it in the store's
//! meta column family (fsync'ed), and after every change adopts, commits and retires
//! rings by the layout's rules.
//!
//! A restarted node starts with the layout it had, its peers shown `suspect` (worth
//! trying) until gossip confirms them. A node with a new data dir and seeds never
//! commits a ring before it has merged a layout from a peer: alone, it would commit a
//! ring of itself.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bincode::{Decode, Encode};
use ringkv_gossip::{Gossip, Member, MemberState, Membership};
use ringkv_ring::{NodeId, Partition, Ring, Token};

use crate::error::{Error, Result};
use crate::membership::{Intent, Layout, NodeEntry, RingState};
use crate::storage::{Backend, Cf};
use crate::writes_in_flight::{WriteGuard, WritesInFlight};

/// Where the layout is kept.
const META_LAYOUT: &[u8] = b"cluster-layout";
/// Where data dirs from before layouts kept their member list (read once, to migrate).
const META_MEMBERS: &[u8] = b"members";
/// Most bytes a stored or received layout may take (bounds its decode).
pub const LAYOUT_MAX_BYTES: usize = 1024 * 1024;

/// A member as data dirs from before layouts remembered it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
struct KnownMember {
    id: String,
    cluster: String,
    http: String,
}

/// One replica of a key as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub cluster: SocketAddr,
    pub state: MemberState,
    pub local: bool,
}

impl Peer {
    pub fn is_live(&self) -> bool {
        self.local || self.state.is_live()
    }
}

/// The rings of one layout.
#[derive(Debug)]
pub struct Rings {
    /// The committed ring: reads use it.
    current: Ring,
    /// The target, while it differs from the committed ring.
    target: Option<Ring>,
    /// The ring the last commit replaced, while some node may still read from it.
    previous: Option<Ring>,
    /// The fingerprint of the target (the committed ring's when none is in flight).
    target_fingerprint: u64,
}

impl Rings {
    pub fn of(layout: &Layout, vnodes: usize) -> Self {
        let ring =
            |ids: &BTreeSet<String>| Ring::new(vnodes, ids.iter().map(|id| NodeId(id.clone())));
        let target = layout.target();
        Self {
            current: ring(layout.current()),
            target: (&target != layout.current()).then(|| ring(&target)),
            previous: layout.previous().map(ring),
            target_fingerprint: crate::membership::fingerprint(&target),
        }
    }

    /// The rings writes go to: committed first, then target, then previous.
    fn writes(&self) -> impl Iterator<Item = &Ring> {
        std::iter::once(&self.current)
            .chain(self.target.as_ref())
            .chain(self.previous.as_ref())
    }
}

/// Where a write goes: the home replicas of every live ring, and the stand-ins.
#[derive(Debug, Clone)]
pub struct WritePlan {
    /// Per live ring (committed first), its home replicas of the key.
    pub rings: Vec<Vec<Peer>>,
    /// Every node of `rings` once, in order of first appearance.
    pub homes: Vec<Peer>,
    /// The nodes past the committed ring's home replicas that are in no ring's home
    /// list, in the order a sloppy quorum tries them.
    pub standins: Vec<Peer>,
}

impl WritePlan {
    pub fn includes_local(&self) -> bool {
        self.homes.iter().any(|p| p.local)
    }
}

/// An immutable snapshot of membership and placement.
#[derive(Debug)]
pub struct View {
    local: String,
    /// Every node known: the layout's, and any gossip reports that has no entry yet.
    members: BTreeMap<String, Member>,
    layout: Arc<Layout>,
    rings: Arc<Rings>,
}

impl View {
    /// The view of a layout whose committed ring is every one of `members` (the local
    /// node among them), with `vnodes` per member: for tests and tools.
    pub fn new(local: &str, vnodes: usize, members: impl IntoIterator<Item = Member>) -> Self {
        let members: Vec<Member> = members.into_iter().collect();
        let layout = Arc::new(Layout::committed(members.iter().map(|m| {
            (
                m.id.clone(),
                NodeEntry {
                    version: 1,
                    intent: Intent::Active,
                    incarnation: 0,
                    cluster: m.cluster.to_string(),
                    http: m.http.clone(),
                },
            )
        })));
        let rings = Arc::new(Rings::of(&layout, vnodes));
        Self::assemble(local, layout, rings, members)
    }

    /// The view of `layout` (with its `rings`) and gossip's `members`.
    fn assemble(
        local: &str,
        layout: Arc<Layout>,
        rings: Arc<Rings>,
        gossip: impl IntoIterator<Item = Member>,
    ) -> Self {
        let mut members: BTreeMap<String, Member> =
            gossip.into_iter().map(|m| (m.id.clone(), m)).collect();
        for (id, entry) in layout.nodes() {
            if members.contains_key(id) {
                continue;
            }
            let Ok(cluster) = entry.cluster.parse() else {
                continue;
            };
            // Remembered, not yet confirmed by gossip: worth trying, unless it is gone.
            let state = match entry.intent {
                Intent::Active | Intent::Leaving => MemberState::Suspect,
                Intent::Removed => MemberState::Left,
            };
            members.insert(
                id.clone(),
                Member {
                    id: id.clone(),
                    cluster,
                    http: entry.http.clone(),
                    generation: 0,
                    state,
                },
            );
        }
        Self {
            local: local.to_owned(),
            members,
            layout,
            rings,
        }
    }

    /// Every node known, in id order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// The fingerprint of the target ring this view writes to.
    pub fn target_fingerprint(&self) -> u64 {
        self.rings.target_fingerprint
    }

    /// The node's place on the ring.
    pub fn ring_state(&self, id: &str) -> RingState {
        self.layout.ring_state(id)
    }

    /// Nodes gossip reports alive (this node included), removed ones aside.
    pub fn members_alive(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.id == self.local || m.state == MemberState::Alive)
            .filter(|m| {
                self.layout.entry(&m.id).is_none()
                    || self.layout.ring_state(&m.id) != RingState::Removed
            })
            .count()
    }

    fn peers_of(&self, ids: Vec<NodeId>) -> Vec<Peer> {
        ids.into_iter().filter_map(|id| self.peer(&id.0)).collect()
    }

    /// The key's home replicas on the committed ring: the first `n` of its ring order.
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<Peer> {
        self.peers_of(self.rings.current.preference_list(Token::of(key), n))
    }

    /// Every member of the committed ring in the key's ring order: the first N are its
    /// home replicas, the rest the stand-ins a sloppy quorum tries, in that order.
    pub fn candidates(&self, key: &[u8]) -> Vec<Peer> {
        self.peers_of(self.rings.current.candidates(Token::of(key)))
    }

    /// Where a write of `key` goes.
    pub fn write_plan(&self, key: &[u8], n: usize) -> WritePlan {
        let token = Token::of(key);
        let mut rings: Vec<Vec<Peer>> = Vec::with_capacity(1);
        // No committed ring yet (a new node that has not heard the cluster's layout):
        // no ring to write to, whatever the target, which may be this node alone.
        let committed = !self.layout.current().is_empty();
        for ring in self.rings.writes().filter(|_| committed) {
            let homes = self.peers_of(ring.preference_list(token, n));
            if !homes.is_empty() && !rings.contains(&homes) {
                rings.push(homes);
            }
        }
        let mut homes: Vec<Peer> = Vec::new();
        for peer in rings.iter().flatten() {
            if homes.iter().all(|h| h.id != peer.id) {
                homes.push(peer.clone());
            }
        }
        let standins = self
            .candidates(key)
            .into_iter()
            .filter(|p| homes.iter().all(|h| h.id != p.id))
            .collect();
        WritePlan {
            rings,
            homes,
            standins,
        }
    }

    /// The home replicas of every key in `partition`, on the committed ring.
    pub fn partition_homes(&self, partition: Partition, n: usize) -> Vec<Peer> {
        self.peers_of(self.rings.current.partition_preference_list(partition, n))
    }

    /// The home replicas of `partition` on the target ring (the committed one when no
    /// change is in flight).
    pub fn target_partition_homes(&self, partition: Partition, n: usize) -> Vec<Peer> {
        let ring = self.rings.target.as_ref().unwrap_or(&self.rings.current);
        self.peers_of(ring.partition_preference_list(partition, n))
    }

    /// True when a node's home lists differ between rings: a change is in flight.
    pub fn in_flight(&self) -> bool {
        self.layout.in_flight()
    }

    /// True when every node of the layout that is not off the ring (removed, or left)
    /// is alive, as gossip says.
    pub fn all_alive(&self) -> bool {
        self.member_ids().iter().all(|id| {
            self.peer(id)
                .is_some_and(|p| p.local || p.state == MemberState::Alive)
        })
    }

    /// The ids of every node of the layout that is not off the ring (removed, or
    /// left), in order.
    pub fn member_ids(&self) -> Vec<String> {
        self.layout
            .nodes()
            .keys()
            .filter(|id| self.layout.ring_state(id) != RingState::Removed)
            .cloned()
            .collect()
    }

    /// The id of this node.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The node `id` as a peer, if it is known.
    pub fn peer(&self, id: &str) -> Option<Peer> {
        self.members.get(id).map(|m| Peer {
            id: m.id.clone(),
            cluster: m.cluster,
            state: if m.id == self.local {
                MemberState::Alive
            } else {
                m.state
            },
            local: m.id == self.local,
        })
    }
}

/// This node in the layout.
#[derive(Debug, Clone)]
pub struct LocalNode {
    pub id: String,
    /// Made with the data dir (the replica's actor incarnation).
    pub incarnation: u64,
    pub cluster: String,
    pub http: String,
    /// True when the node was started with seeds (`--join`).
    pub seeded: bool,
}

#[derive(Debug)]
struct Shared {
    local: LocalNode,
    vnodes: usize,
    store: Arc<dyn Backend>,
    view: ArcSwap<View>,
    state: Mutex<LayoutState>,
    membership: tokio::sync::watch::Receiver<Arc<Membership>>,
    changed: Subscribers,
    writes: Arc<WritesInFlight>,
}

/// Who hears of view changes: one watch channel per subscriber, told in the order they
/// subscribed. One channel shared by several receivers would wake them in an order
/// tokio draws at random (a watch spreads its waiters over several queues), and the
/// simulator could not replay a seed.
#[derive(Debug, Default)]
struct Subscribers {
    /// The view's change count and a sender per subscriber, oldest first.
    inner: Mutex<(u64, Vec<tokio::sync::watch::Sender<u64>>)>,
}

impl Subscribers {
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (tx, rx) = tokio::sync::watch::channel(inner.0);
        inner.1.push(tx);
        rx
    }

    fn tick(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0 += 1;
        let count = inner.0;
        // A subscriber that dropped its receiver is forgotten.
        inner.1.retain(|tx| tx.send(count).is_ok());
    }
}

#[derive(Debug)]
struct LayoutState {
    layout: Arc<Layout>,
    rings: Arc<Rings>,
    /// False while a new node with seeds has not merged a peer's layout yet.
    may_commit: bool,
}

impl Shared {
    /// Publishes a new view from the layout and gossip's latest word.
    fn publish(&self) {
        let (layout, rings) = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            (state.layout.clone(), state.rings.clone())
        };
        let gossip = self.membership.borrow().members().to_vec();
        self.view.store(Arc::new(View::assemble(
            &self.local.id,
            layout,
            rings,
            gossip,
        )));
        self.changed.tick();
    }

    /// Applies `change` to the layout, then adopts, commits and retires what the rules
    /// allow; stores and publishes the result if anything changed.
    fn update(
        &self,
        merged_remote: bool,
        change: impl FnOnce(&mut Layout, &LocalNode) -> bool,
    ) -> Result<bool> {
        let changed = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.may_commit |= merged_remote;
            let mut next = (*state.layout).clone();
            let mut changed = change(&mut next, &self.local);
            changed |= settle(&mut next, &self.local, state.may_commit);
            if changed {
                store_layout(self.store.as_ref(), &next)?;
                let rings_change = next.current() != state.layout.current()
                    || next.previous() != state.layout.previous()
                    || next.target() != state.layout.target();
                if rings_change {
                    state.rings = Arc::new(Rings::of(&next, self.vnodes));
                }
                state.layout = Arc::new(next);
            }
            changed
        };
        if changed {
            self.publish();
        }
        Ok(changed)
    }
}

/// What every node does after a layout change: keep its own entry current, commit the
/// target when every node of it holds its ranges, adopt the committed ring, and retire
/// the previous ring when nobody may read from it any more.
fn settle(layout: &mut Layout, local: &LocalNode, may_commit: bool) -> bool {
    let mut changed = false;
    let intent = match layout.entry(&local.id) {
        None => Some(Intent::Active),
        // Removed or left in an earlier life; a new data dir joins again.
        Some(e)
            if e.incarnation != local.incarnation
                && layout.ring_state(&local.id) == RingState::Removed =>
        {
            Some(Intent::Active)
        }
        // Addresses may change across restarts (containers); the intent stays.
        Some(e) if e.intent != Intent::Removed => Some(e.intent),
        Some(_) => None,
    };
    if let Some(intent) = intent {
        changed |= layout.set_entry(
            &local.id,
            intent,
            local.incarnation,
            &local.cluster,
            &local.http,
        );
    }
    if layout.current().is_empty() {
        // Nothing was ever committed, so there is no data to receive: a new cluster
        // forms its first ring as soon as its nodes have heard of each other.
        let target = layout.target();
        if target.contains(&local.id) {
            changed |= layout.set_received(&local.id, crate::membership::fingerprint(&target));
        }
    }
    if may_commit {
        changed |= layout.try_commit();
    }
    changed |= layout.ack(&local.id);
    changed |= layout.try_retire();
    changed
}

/// Membership and placement, kept current from gossip and layout exchanges.
#[derive(Debug)]
pub struct Cluster {
    shared: Arc<Shared>,
    gossip: Gossip,
    follower: tokio::task::JoinHandle<()>,
    /// Reports in the layout which target this node writes to ([`report_writing`]).
    writer: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// The cluster addresses of the nodes remembered from the last run (not `local`):
    /// a restarted node announces to them as well as to its seeds, since a restarted
    /// seed has no `--join` and would otherwise wait for the others to find it.
    pub fn remembered_peers(store: &dyn Backend, local: &str) -> Vec<SocketAddr> {
        load_layout(store)
            .nodes()
            .iter()
            .filter(|(id, e)| id.as_str() != local && e.intent != Intent::Removed)
            .filter_map(|(_, e)| e.cluster.parse().ok())
            .collect()
    }

    /// Follows the membership of a started `gossip` as `local`, placing keys on rings
    /// of `vnodes` per member; `store` keeps the layout across restarts.
    pub fn follow(
        local: LocalNode,
        vnodes: usize,
        gossip: Gossip,
        store: Arc<dyn Backend>,
    ) -> Result<Self> {
        let layout = load_layout(store.as_ref());
        let may_commit = layout.epoch() > 0 || !local.seeded;
        let rings = Arc::new(Rings::of(&layout, vnodes));
        let layout = Arc::new(layout);
        let mut membership = gossip.members();
        let first = View::assemble(
            &local.id,
            layout.clone(),
            rings.clone(),
            membership.borrow_and_update().members().to_vec(),
        );
        let shared = Arc::new(Shared {
            local,
            vnodes,
            store,
            view: ArcSwap::from_pointee(first),
            state: Mutex::new(LayoutState {
                layout,
                rings,
                may_commit,
            }),
            membership: membership.clone(),
            changed: Subscribers::default(),
            writes: Arc::default(),
        });
        // The node's own entry, and whatever the rules allow with it.
        shared.update(false, |_, _| false)?;
        let follower = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while membership.changed().await.is_ok() {
                    membership.borrow_and_update();
                    shared.publish();
                }
            })
        };
        let writer = tokio::spawn(report_writing(shared.clone()));
        Ok(Self {
            shared,
            gossip,
            follower,
            writer,
        })
    }

    /// Counts a write coordinated with `view` until the guard drops.
    pub fn begin_write(&self, view: &View) -> WriteGuard {
        self.shared.writes.begin(view.target_fingerprint())
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.shared.view.load_full()
    }

    /// This node's layout.
    pub fn layout(&self) -> Arc<Layout> {
        self.view().layout().clone()
    }

    /// Merges a peer's layout into this node's; true if this node's changed.
    pub fn merge_layout(&self, theirs: &Layout) -> Result<bool> {
        self.shared.update(true, |ours, _| ours.merge(theirs))
    }

    /// Applies a change of this node's own making to the layout (leave, remove, a
    /// report of ranges received); true if it changed anything.
    pub fn change_layout(
        &self,
        change: impl FnOnce(&mut Layout, &LocalNode) -> bool,
    ) -> Result<bool> {
        self.shared.update(false, change)
    }

    /// Ticks whenever the view changes (a member joined, changed state, or the layout
    /// changed). Each call is a new subscription: call it once per task, and do not
    /// clone the receiver (see [`Subscribers`]).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    pub fn local_id(&self) -> &str {
        &self.shared.local.id
    }

    pub fn vnodes(&self) -> usize {
        self.shared.vnodes
    }

    /// Stops gossip and the view's updates at once, as a crash would.
    pub fn halt(&self) {
        self.gossip.halt();
        self.follower.abort();
        self.writer.abort();
    }

    /// Leaves gossip so the others learn at once that this node is going.
    pub async fn leave(&self) {
        if let Err(e) = self.gossip.leave().await {
            tracing::warn!(error = %e, "leaving gossip failed");
        }
        self.follower.abort();
        self.writer.abort();
    }
}

/// Keeps this node's `writing` register on the target of its view, once the writes it
/// coordinated with older views have ended ([`crate::writes_in_flight`]): from then on
/// every write it makes reaches the target's homes, and transfers to them may start.
async fn report_writing(shared: Arc<Shared>) {
    let mut changes = shared.changed.subscribe();
    loop {
        let view = shared.view.load_full();
        let target = view.target_fingerprint();
        let on_ring = view
            .layout()
            .entry(&shared.local.id)
            .is_some_and(|e| e.intent != Intent::Removed);
        if on_ring && view.layout().writing(&shared.local.id) != Some(target) {
            tokio::select! {
                biased;
                changed = changes.changed() => if changed.is_err() { return },
                () = shared.writes.drained_except(target) => {
                    if let Err(e) = shared.update(false, |l, me| l.set_writing(&me.id, target)) {
                        tracing::error!(error = %e, "could not store the layout");
                        // Tried again at the next change, not in a loop.
                        if changes.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        } else if changes.changed().await.is_err() {
            return;
        }
    }
}

/// The stored layout; from a data dir of before layouts, its remembered members as the
/// committed ring (each held data); none: an empty layout.
fn load_layout(store: &dyn Backend) -> Layout {
    let config = bincode::config::standard().with_limit::<LAYOUT_MAX_BYTES>();
    match store.get(Cf::Meta, META_LAYOUT) {
        Ok(Some(bytes)) => match Layout::decode_stored(&bytes, config) {
            Ok(layout) => return layout,
            Err(e) => tracing::error!(error = %e, "ignoring an unreadable stored layout"),
        },
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "could not read the stored layout"),
    }
    let known = match store.get(Cf::Meta, META_MEMBERS) {
        Ok(Some(bytes)) => bincode::decode_from_slice::<Vec<KnownMember>, _>(&bytes, config)
            .map(|(k, _)| k)
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Layout::committed(known.into_iter().map(|k| {
        (
            k.id,
            NodeEntry {
                version: 1,
                intent: Intent::Active,
                incarnation: 0,
                cluster: k.cluster,
                http: k.http,
            },
        )
    }))
}

fn store_layout(store: &dyn Backend, layout: &Layout) -> Result<()> {
    let bytes = bincode::encode_to_vec(layout, bincode::config::standard())
        .map_err(|e| Error::Storage(format!("encoding the layout: {e}")))?;
    // fsync'ed: a node that lost its layout (a power cut after an unsynced write)
    // restarts with a ring of itself alone, takes writes for keys it is no home
    // replica of, and acknowledges them where no read will look (ringkv-sim seed 67).
    // Layout changes are rare, so the fsync costs nothing.
    store.put(Cf::Meta, META_LAYOUT, &bytes, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, port: u16, state: MemberState) -> Member {
        Member {
            id: id.into(),
            cluster: SocketAddr::from(([127, 0, 0, 1], port)),
            http: format!("127.0.0.1:{}", port + 1000),
            generation: 1,
            state,
        }
    }

    #[test]
    fn down_and_left_members_keep_their_place_on_the_ring() {
        // Placement is the same whether a member is alive, down or left: only liveness changes.
        let states = [MemberState::Alive, MemberState::Down, MemberState::Left];
        let lists: Vec<Vec<String>> = states
            .iter()
            .map(|s| {
                let view = View::new(
                    "n1",
                    64,
                    vec![
                        member("n1", 7001, MemberState::Alive),
                        member("n2", 7002, *s),
                        member("n3", 7003, MemberState::Alive),
                        member("n4", 7004, MemberState::Alive),
                    ],
                );
                (0..200)
                    .flat_map(|i| view.preference_list(format!("k{i}").as_bytes(), 3))
                    .map(|p| p.id)
                    .collect()
            })
            .collect();
        assert_eq!(lists[0], lists[1]);
        assert_eq!(lists[0], lists[2]);
    }

    #[test]
    fn a_data_dir_from_before_layouts_keeps_its_members_as_the_ring() {
        // Its remembered members become the committed ring, so placement is unchanged.
        let store = crate::storage::MemoryBackend::new();
        let known = vec![
            KnownMember {
                id: "n1".into(),
                cluster: "127.0.0.1:7001".into(),
                http: "h1".into(),
            },
            KnownMember {
                id: "n2".into(),
                cluster: "127.0.0.1:7002".into(),
                http: "h2".into(),
            },
        ];
        let bytes = bincode::encode_to_vec(&known, bincode::config::standard()).unwrap();
        store.put(Cf::Meta, META_MEMBERS, &bytes, true).unwrap();
        let layout = load_layout(&store);
        assert_eq!(layout.epoch(), 1);
        assert_eq!(layout.ring_state("n2"), RingState::Member);
        assert_eq!(
            Cluster::remembered_peers(&store, "n1"),
            vec!["127.0.0.1:7002".parse().unwrap()]
        );
        store_layout(&store, &layout).unwrap();
        assert_eq!(load_layout(&store), layout);
    }

    #[test]
    fn remembered_members_are_worth_trying_until_gossip_reports_them() {
        // A restarted node places keys on its stored ring at once, its peers suspect.
        let full = View::new(
            "n1",
            8,
            vec![
                member("n1", 7001, MemberState::Alive),
                member("n2", 7002, MemberState::Suspect),
            ],
        );
        let remembered = View::assemble(
            "n1",
            full.layout.clone(),
            full.rings.clone(),
            vec![member("n1", 7001, MemberState::Alive)],
        );
        for i in 0..50 {
            let key = format!("k{i}");
            let ids = |v: &View| {
                v.preference_list(key.as_bytes(), 2)
                    .into_iter()
                    .map(|p| p.id)
                    .collect::<Vec<_>>()
            };
            assert_eq!(ids(&remembered), ids(&full));
        }
        assert!(
            remembered
                .preference_list(b"k", 2)
                .iter()
                .all(Peer::is_live)
        );
    }

    #[test]
    fn the_local_node_is_always_live_and_marked_local() {
        // Whatever gossip last said of it, the node itself is a live replica.
        let view = View::new(
            "n1",
            8,
            vec![
                member("n1", 7001, MemberState::Suspect),
                member("n2", 7002, MemberState::Down),
            ],
        );
        let list = view.preference_list(b"key", 2);
        assert_eq!(list.len(), 2);
        let me = list.iter().find(|p| p.id == "n1").unwrap();
        assert!(me.local && me.is_live());
        let other = list.iter().find(|p| p.id == "n2").unwrap();
        assert!(!other.local && !other.is_live());
        assert_eq!(view.members_alive(), 1);
    }

    #[test]
    fn during_a_join_writes_go_to_both_rings_and_reads_to_the_committed_one() {
        // The joining node is a write home where the target places it, never a read home.
        let members: Vec<Member> = (1..=4)
            .map(|i| member(&format!("n{i}"), 7000 + i, MemberState::Alive))
            .collect();
        let view = View::new("n1", 16, members[..3].to_vec());
        let mut layout = (**view.layout()).clone();
        layout.set_entry("n4", Intent::Active, 1, "127.0.0.1:7004", "h4");
        let rings = Arc::new(Rings::of(&layout, 16));
        let joining = View::assemble("n1", Arc::new(layout), rings, members);
        let mut moved = 0;
        for i in 0..300 {
            let key = format!("k{i}");
            let reads: Vec<String> = joining
                .preference_list(key.as_bytes(), 3)
                .into_iter()
                .map(|p| p.id)
                .collect();
            assert!(!reads.contains(&"n4".to_string()));
            let plan = joining.write_plan(key.as_bytes(), 3);
            assert_eq!(
                plan.rings[0]
                    .iter()
                    .map(|p| p.id.clone())
                    .collect::<Vec<_>>(),
                reads
            );
            if plan.homes.iter().any(|p| p.id == "n4") {
                moved += 1;
                assert_eq!(plan.rings.len(), 2);
                assert_eq!(plan.homes.len(), 4);
            }
            assert!(
                plan.standins
                    .iter()
                    .all(|s| plan.homes.iter().all(|h| h.id != s.id))
            );
        }
        assert!(moved > 0, "some keys move to n4");
    }
}
