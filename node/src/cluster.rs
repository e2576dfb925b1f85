//! The node's view of the cluster: who the members are, which are live, and where each
//! key's replicas are.
//!
//! Gossip (SWIM, `ringkv-gossip`) publishes membership; a task here turns every change
//! into an immutable [`View`] (members plus the ring built from them) and swaps it in,
//! so request paths read the current view with one atomic load and never wait on a lock.
//!
//! The ring holds every member gossip has seen, whatever its state: a node that is
//! down, or that stopped gracefully (`left`, e.g. during a rolling restart), keeps its
//! place, so placement does not churn with transient failures (as in Dynamo). Only
//! liveness decides whom requests go to. Caveat: there is no way yet to remove a node
//! for good (decommission); that needs an explicit admin operation.
//!
//! The members are also kept in the store's meta column family, as Riak keeps its ring
//! on disk: a restarted node starts with the ring it had, its peers shown `suspect`
//! (worth trying) until gossip confirms them. Without it, a node would serve its first
//! requests with a ring of itself alone, placing keys on the wrong replicas.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bincode::{Decode, Encode};
use ringkv_gossip::{Gossip, Member, MemberState, Membership};
use ringkv_ring::{NodeId, Partition, Ring, Token};

use crate::error::{Error, Result};
use crate::storage::{Backend, Cf};

const META_MEMBERS: &[u8] = b"members";
/// Most members the stored ring may list (bounds the decode of the meta record).
const KNOWN_MEMBERS_MAX_BYTES: usize = 1024 * 1024;

/// A member as remembered across restarts.
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

/// An immutable snapshot of membership and placement.
#[derive(Debug)]
pub struct View {
    local: String,
    members: BTreeMap<String, Member>,
    ring: Ring,
}

impl View {
    /// The view of `members` (the local node among them) with `vnodes` per member.
    pub fn new(local: &str, vnodes: usize, members: impl IntoIterator<Item = Member>) -> Self {
        let members: BTreeMap<String, Member> =
            members.into_iter().map(|m| (m.id.clone(), m)).collect();
        let ring = Ring::new(vnodes, members.keys().map(|id| NodeId(id.clone())));
        Self {
            local: local.to_owned(),
            members,
            ring,
        }
    }

    /// Every member, in id order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Members gossip reports alive (this node included).
    pub fn members_alive(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.id == self.local || m.state == MemberState::Alive)
            .count()
    }

    /// The key's home replicas: the first `n` members of its ring order.
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<Peer> {
        self.ring
            .preference_list(Token::of(key), n)
            .into_iter()
            .filter_map(|id| self.peer(&id.0))
            .collect()
    }

    /// Every member in the key's ring order: the first N are its home replicas, the
    /// rest the stand-ins a sloppy quorum tries, in that order.
    pub fn candidates(&self, key: &[u8]) -> Vec<Peer> {
        self.ring
            .candidates(Token::of(key))
            .into_iter()
            .filter_map(|id| self.peer(&id.0))
            .collect()
    }

    /// The home replicas of every key in `partition`.
    pub fn partition_homes(&self, partition: Partition, n: usize) -> Vec<Peer> {
        self.ring
            .partition_preference_list(partition, n)
            .into_iter()
            .filter_map(|id| self.peer(&id.0))
            .collect()
    }

    /// True when every member of the ring is alive, as gossip says.
    pub fn all_alive(&self) -> bool {
        self.members_alive() == self.members.len()
    }

    /// The ids on the ring, in order.
    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// The id of this node.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The member `id` as a peer, if it is on the ring.
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

/// Membership and placement, kept current from gossip.
#[derive(Debug)]
pub struct Cluster {
    local: String,
    view: Arc<ArcSwap<View>>,
    changes: tokio::sync::watch::Receiver<u64>,
    gossip: Gossip,
    follower: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// The cluster addresses of the peers remembered from the last run (not `local`):
    /// a restarted node announces to them as well as to its seeds, since a restarted
    /// seed has no `--join` and would otherwise wait for the others to find it.
    pub fn remembered_peers(store: &dyn Backend, local: &str) -> Vec<SocketAddr> {
        load_known(store)
            .iter()
            .filter(|k| k.id != local)
            .filter_map(|k| k.cluster.parse().ok())
            .collect()
    }

    /// Follows the membership of a started `gossip` as node `local`, placing keys on a
    /// ring of `vnodes` per member; `store` keeps the members across restarts.
    pub fn follow(local: &str, vnodes: usize, gossip: Gossip, store: Arc<dyn Backend>) -> Self {
        let mut known = load_known(store.as_ref());
        let mut members = gossip.members();
        let local = local.to_owned();
        let first = view_of(&local, vnodes, &members.borrow_and_update(), &known);
        let view = Arc::new(ArcSwap::from_pointee(first));
        let (changed, changes) = tokio::sync::watch::channel(0u64);
        let follower = {
            let (view, local) = (view.clone(), local.clone());
            tokio::spawn(async move {
                while members.changed().await.is_ok() {
                    let next = view_of(&local, vnodes, &members.borrow_and_update(), &known);
                    let now_known = known_of(&next);
                    if now_known != known {
                        if let Err(e) = store_known(store.as_ref(), &now_known) {
                            tracing::warn!(error = %e, "could not store the member list");
                        }
                        known = now_known;
                    }
                    view.store(Arc::new(next));
                    changed.send_modify(|n| *n += 1);
                }
            })
        };
        Self {
            local,
            view,
            changes,
            gossip,
            follower,
        }
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Ticks whenever the view changes (a member joined, or changed state).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.clone()
    }

    pub fn local_id(&self) -> &str {
        &self.local
    }

    /// Stops gossip and the view's updates at once, as a crash would.
    pub fn halt(&self) {
        self.gossip.halt();
        self.follower.abort();
    }

    /// Leaves gossip so the others learn at once that this node is going.
    pub async fn leave(&self) {
        if let Err(e) = self.gossip.leave().await {
            tracing::warn!(error = %e, "leaving gossip failed");
        }
        self.follower.abort();
    }
}

/// The view of gossip's members plus the remembered ones gossip has not reported yet.
fn view_of(local: &str, vnodes: usize, membership: &Membership, known: &[KnownMember]) -> View {
    let mut members: Vec<Member> = membership.members().to_vec();
    for k in known {
        if members.iter().all(|m| m.id != k.id)
            && let Ok(cluster) = k.cluster.parse()
        {
            members.push(Member {
                id: k.id.clone(),
                cluster,
                http: k.http.clone(),
                generation: 0,
                state: MemberState::Suspect,
            });
        }
    }
    View::new(local, vnodes, members)
}

fn known_of(view: &View) -> Vec<KnownMember> {
    view.members()
        .map(|m| KnownMember {
            id: m.id.clone(),
            cluster: m.cluster.to_string(),
            http: m.http.clone(),
        })
        .collect()
}

fn load_known(store: &dyn Backend) -> Vec<KnownMember> {
    let config = bincode::config::standard().with_limit::<KNOWN_MEMBERS_MAX_BYTES>();
    match store.get(Cf::Meta, META_MEMBERS) {
        Ok(Some(bytes)) => {
            match bincode::decode_from_slice::<Vec<KnownMember>, _>(&bytes, config) {
                Ok((known, _)) => known,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring an unreadable stored member list");
                    Vec::new()
                }
            }
        }
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the stored member list");
            Vec::new()
        }
    }
}

fn store_known(store: &dyn Backend, known: &[KnownMember]) -> Result<()> {
    let bytes = bincode::encode_to_vec(known, bincode::config::standard())
        .map_err(|e| Error::Storage(format!("encoding the member list: {e}")))?;
    // fsync'ed: a node that lost its member list (a power cut after an unsynced
    // write) restarts with a ring of itself alone, takes writes for keys it is no
    // home replica of, and acknowledges them where no read will look (ringkv-sim
    // seed 67). Membership changes are rare, so the fsync costs nothing.
    store.put(Cf::Meta, META_MEMBERS, &bytes, true)
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
    fn remembered_members_fill_the_ring_until_gossip_reports_them() {
        // A restarted node places keys on the full ring at once; gossip's word wins when it comes.
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
        store_known(&store, &known).unwrap();
        assert_eq!(load_known(&store), known);
        let full = View::new(
            "n1",
            8,
            vec![
                member("n1", 7001, MemberState::Alive),
                member("n2", 7002, MemberState::Suspect),
            ],
        );
        let gossip_n1_only = View::new("n1", 8, vec![member("n1", 7001, MemberState::Alive)]);
        let filled = {
            let mut members: Vec<Member> = gossip_n1_only.members().cloned().collect();
            for k in &known {
                if members.iter().all(|m| m.id != k.id) {
                    members.push(Member {
                        id: k.id.clone(),
                        cluster: k.cluster.parse().unwrap(),
                        http: k.http.clone(),
                        generation: 0,
                        state: MemberState::Suspect,
                    });
                }
            }
            View::new("n1", 8, members)
        };
        for i in 0..50 {
            let key = format!("k{i}");
            let ids = |v: &View| {
                v.preference_list(key.as_bytes(), 2)
                    .into_iter()
                    .map(|p| p.id)
                    .collect::<Vec<_>>()
            };
            assert_eq!(ids(&filled), ids(&full));
        }
        assert!(
            filled.preference_list(b"k", 2).iter().all(Peer::is_live),
            "remembered peers are worth trying"
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
}
