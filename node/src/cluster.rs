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
use std::time::Duration;

use arc_swap::ArcSwap;
use bincode::{Decode, Encode};
use ringkv_gossip::{Gossip, GossipConfig, Member, MemberState, Membership, SwimConfig};
use ringkv_ring::{NodeId, Ring, Token};

use crate::config::Config;
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
    /// Starts gossip on the `--cluster` port and follows its membership; `store` keeps
    /// the members across restarts.
    pub async fn start(config: &Config, store: Arc<dyn Backend>) -> Result<Self> {
        let advertise_cluster = resolve(&config.advertise_cluster).await.ok_or_else(|| {
            Error::Config(format!(
                "--advertise-cluster {}: cannot resolve",
                config.advertise_cluster
            ))
        })?;
        let mut known = load_known(store.as_ref());
        // Announce to the peers remembered from the last run too: a restarted seed has
        // no --join, and would otherwise wait for the others to find it.
        let patience = if known.iter().any(|k| k.id != config.id) {
            SEED_RESOLVE_PATIENCE_RESTART
        } else {
            SEED_RESOLVE_PATIENCE
        };
        let mut seeds = resolve_seeds(&config.join, patience).await;
        for k in known.iter().filter(|k| k.id != config.id) {
            if let Ok(addr) = k.cluster.parse::<SocketAddr>()
                && !seeds.contains(&addr)
            {
                seeds.push(addr);
            }
        }
        let mut gossip_config = GossipConfig::new(
            config.id.clone(),
            config.cluster,
            config.advertise_http.clone(),
            config.data_dir.join("gossip-generation"),
        );
        gossip_config.advertise_cluster = advertise_cluster;
        gossip_config.seeds = seeds;
        gossip_config.swim = SwimConfig::lan(8);
        let gossip =
            Gossip::start(gossip_config).map_err(|e| Error::Config(format!("gossip: {e}")))?;
        let mut members = gossip.members();
        let vnodes = config.vnodes;
        let local = config.id.clone();
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
        Ok(Self {
            local,
            view,
            changes,
            gossip,
            follower,
        })
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
    store.put(Cf::Meta, META_MEMBERS, &bytes, false)
}

/// Resolves `host:port` (a name, or an address) to its first socket address.
async fn resolve(host_port: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(host_port).await.ok()?.next()
}

/// How long a first start waits for seed names to resolve (containers may come up
/// before their DNS names do) ...
const SEED_RESOLVE_PATIENCE: Duration = Duration::from_secs(30);
/// ... and how long a restart waits, which knows its peers' addresses from the last
/// run already: a seed that is down (a killed container has no DNS name) must not
/// hold the restart up.
const SEED_RESOLVE_PATIENCE_RESTART: Duration = Duration::from_secs(2);

/// Resolves every seed at once, each retried every second until `patience` passes
/// (at least one attempt each, bounded by `patience` too);
/// a seed that does not resolve by then is left out (and logged).
async fn resolve_seeds(join: &[String], patience: Duration) -> Vec<SocketAddr> {
    let deadline = tokio::time::Instant::now() + patience;
    let attempts = join.iter().map(|seed| async move {
        loop {
            // A name the resolver cannot answer may hang for its own timeout (a
            // container's DNS forwards unknown names upstream): bound each attempt.
            if let Ok(Some(addr)) = tokio::time::timeout_at(deadline, resolve(seed)).await {
                return Some(addr);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(%seed, "cannot resolve the seed; starting without it");
                return None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    futures::future::join_all(attempts)
        .await
        .into_iter()
        .flatten()
        .collect()
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
