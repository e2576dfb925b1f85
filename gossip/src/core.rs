//! The sans-IO heart of the driver: foca plus our bookkeeping, fed packets,
//! timers and ticks, answering with effects. No sockets and no clocks (the
//! caller passes `now`), so tests run the production logic in memory.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foca::{AccumulatingRuntime, Foca, Incarnation, OwnedNotification, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::codec::BincodeCodec;
use crate::config::GossipConfig;
use crate::envelope::{self, Framing};
use crate::identity::NodeIdentity;
use crate::leave::{self, LeaveHandler, LeaveInbox, Notice};
use crate::membership::{Book, Membership};
use crate::stats::Stats;

type Swim = Foca<NodeIdentity, BincodeCodec, SmallRng, LeaveHandler>;

/// A suspicion lasts at most this many suspicion timeouts on any node (see
/// [`Core::expire_suspicions`]); the originator's own timer fires after one.
const SUSPICION_GRACE_FACTOR: u32 = 3;

/// What the caller must do after a call into [`Core`].
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Datagrams (envelopes included) to send.
    pub(crate) packets: Vec<(SocketAddr, Vec<u8>)>,
    /// foca timers to hand back after the given delay.
    pub(crate) timers: Vec<(Duration, Timer<NodeIdentity>)>,
    /// A changed membership to publish.
    pub(crate) membership: Option<Arc<Membership>>,
    /// A renewed generation to store in the generation file.
    pub(crate) generation_to_persist: Option<u64>,
}

/// foca and everything around it that is not IO.
pub(crate) struct Core {
    foca: Swim,
    runtime: AccumulatingRuntime<NodeIdentity>,
    leaves: LeaveInbox,
    book: Book,
    stats: Arc<Stats>,
    seeds: Vec<SocketAddr>,
    /// Plain or sealed under the cluster key.
    framing: Framing,
    max_packet_bytes: usize,
    max_transmissions: usize,
    announce_interval: Duration,
    reannounce_interval: Duration,
    last_seed_announce: Option<Instant>,
    /// Since when each suspected member (at its incarnation) has been suspect here.
    suspected_since: Vec<(NodeIdentity, Incarnation, Instant)>,
    /// How long a suspicion may last here before this node declares the member down.
    suspicion_max: Duration,
    /// The book changed outside foca (leave, rejoin): publish on next drain.
    dirty: bool,
    left: bool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("identity", self.foca.identity())
            .field("members", &self.foca.num_members())
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// `config` must be validated; `local` is the identity to start with.
    pub(crate) fn new(
        local: NodeIdentity,
        config: &GossipConfig,
        rng_seed: u64,
        stats: Arc<Stats>,
    ) -> Self {
        let leaves = LeaveInbox::default();
        let mut seeds: Vec<SocketAddr> = config
            .seeds
            .iter()
            .copied()
            .filter(|seed| *seed != local.cluster)
            .collect();
        seeds.sort_unstable();
        seeds.dedup();
        let framing = Framing::new(config.cluster_keys.clone());
        let foca = Foca::with_custom_broadcast(
            local.clone(),
            config
                .swim
                .to_foca(config.max_packet_bytes, framing.overhead_bytes()),
            SmallRng::seed_from_u64(rng_seed),
            BincodeCodec::default(),
            LeaveHandler::new(leaves.clone()),
        );
        Self {
            foca,
            runtime: AccumulatingRuntime::new(),
            leaves,
            book: Book::new(local),
            stats,
            seeds,
            framing,
            max_packet_bytes: config.max_packet_bytes,
            max_transmissions: usize::from(config.swim.max_transmissions),
            announce_interval: config.announce_interval,
            reannounce_interval: config.reannounce_interval,
            last_seed_announce: None,
            suspected_since: Vec::new(),
            suspicion_max: config.swim.suspect_to_down_after * SUSPICION_GRACE_FACTOR,
            dirty: false,
            left: false,
        }
    }

    pub(crate) fn membership(&self) -> Arc<Membership> {
        Arc::new(self.book.snapshot())
    }

    /// A datagram arrived from `from`.
    pub(crate) fn handle_packet(&mut self, packet: &[u8], from: SocketAddr, out: &mut Output) {
        self.stats.packets_received(1);
        self.stats.bytes_received(packet.len() as u64);
        if self.left {
            return;
        }
        let opened = if packet.len() > self.max_packet_bytes {
            Err(envelope::Reject::TooLong)
        } else {
            self.framing.unwrap(packet)
        };
        match opened {
            Err(reason) => {
                if reason.is_key() {
                    self.stats.packets_rejected_key(1);
                } else {
                    self.stats.packets_rejected_envelope(1);
                }
                crate::stats::count_rejected();
                tracing::debug!(%from, %reason, "gossip packet dropped");
            }
            Ok(payload) => {
                if let Err(err) = self.foca.handle_data(&payload, &mut self.runtime) {
                    self.stats.packets_rejected_protocol(1);
                    tracing::debug!(%from, %err, "gossip packet refused by foca");
                }
            }
        }
        // Even a refused packet may have had effects (foca reports a bad
        // custom broadcast only after handling the message around it).
        self.drain(out);
    }

    /// A timer foca scheduled is due.
    pub(crate) fn handle_timer(&mut self, timer: Timer<NodeIdentity>, out: &mut Output) {
        if self.left {
            return;
        }
        if let Err(err) = self.foca.handle_timer(timer, &mut self.runtime) {
            self.stats.protocol_errors(1);
            tracing::warn!(%err, "foca timer failed");
        }
        self.drain(out);
    }

    /// Periodic call: announces to the seeds when it is time.
    ///
    /// foca never re-announces by itself, so a node alone (just started, or
    /// cut off until every peer went down) announces to every seed each
    /// `announce_interval`. A connected node still announces to the seeds it
    /// does not see live every `reannounce_interval`, which merges a cluster
    /// that a partition split into two live halves.
    pub(crate) fn tick(&mut self, now: Instant, out: &mut Output) {
        if self.left {
            return;
        }
        self.expire_suspicions(now, out);
        if self.seeds.is_empty() {
            return;
        }
        let alone = self.foca.num_members() == 0;
        let interval = if alone {
            self.announce_interval
        } else {
            self.reannounce_interval
        };
        if self
            .last_seed_announce
            .is_some_and(|last| now.saturating_duration_since(last) < interval)
        {
            return;
        }
        self.last_seed_announce = Some(now);
        let live: HashSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().cluster).collect();
        for seed in &self.seeds {
            if live.contains(seed) {
                continue;
            }
            self.stats.seed_announces(1);
            if let Err(err) = self
                .foca
                .announce(NodeIdentity::seed(*seed), &mut self.runtime)
            {
                self.stats.protocol_errors(1);
                tracing::warn!(%seed, %err, "announce failed");
            }
        }
        self.drain(out);
    }

    /// Declares down every member that has been suspect here for longer than
    /// [`SUSPICION_GRACE_FACTOR`] suspicion timeouts.
    ///
    /// foca runs the suspect-to-down timer only on the node whose probe failed;
    /// a node that learned the suspicion from gossip just keeps it until the
    /// suspect refutes it. If the originator crashes before its timer fires and
    /// the suspect never hears of the suspicion (the update was lost, or sent
    /// its last time to others), the member stays suspect on every other node
    /// for ever, while it answers every probe: the simulator found this
    /// (`ringkv-sim --seed 4` fails without this sweep). As memberlist does, every holder of a suspicion
    /// gives it a deadline: past it the member is declared down, foca tells it
    /// so when it next speaks, and it rejoins under a new generation.
    fn expire_suspicions(&mut self, now: Instant, out: &mut Output) {
        let suspects: Vec<(NodeIdentity, Incarnation)> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .map(|m| (m.id().clone(), m.incarnation()))
            .collect();
        // A few dozen members at most: a list is enough.
        self.suspected_since
            .retain(|(id, inc, _)| suspects.iter().any(|(i, n)| i == id && n == inc));
        for (id, inc) in &suspects {
            if !self
                .suspected_since
                .iter()
                .any(|(i, n, _)| i == id && n == inc)
            {
                self.suspected_since.push((id.clone(), *inc, now));
            }
        }
        let max = self.suspicion_max;
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.suspected_since)
            .into_iter()
            .partition(|(_, _, since)| now.saturating_duration_since(*since) >= max);
        self.suspected_since = kept;
        if expired.is_empty() {
            return;
        }
        for (id, incarnation, _) in &expired {
            tracing::info!(member = %id.id, generation = id.generation, incarnation, "suspect for too long; declaring it down");
        }
        let downs = expired
            .into_iter()
            .map(|(id, incarnation, _)| foca::Member::new(id, incarnation, foca::State::Down));
        if let Err(err) = self.foca.apply_many(downs, true, &mut self.runtime) {
            self.stats.protocol_errors(1);
            tracing::warn!(%err, "declaring a long suspect down failed");
        }
        self.drain(out);
    }

    /// Leaves the cluster: a leave notice plus foca's own `Down` about us,
    /// pushed out until foca has sent each update `max_transmissions` times.
    /// After this the core ignores every input.
    pub(crate) fn leave(&mut self, out: &mut Output) {
        if self.left {
            return;
        }
        let notice = Notice::Leave(self.foca.identity().clone());
        // Added before leave_cluster so its packets carry the notice too.
        match notice.encode() {
            Ok(bytes) => {
                if let Err(err) = self.foca.add_broadcast(&bytes) {
                    self.stats.protocol_errors(1);
                    tracing::warn!(%err, "leave notice not queued");
                }
            }
            Err(err) => tracing::warn!(%err, "leave notice not encoded"),
        }
        if let Err(err) = self.foca.leave_cluster(&mut self.runtime) {
            self.stats.protocol_errors(1);
            tracing::warn!(%err, "leave_cluster failed");
        }
        // leave_cluster tells num_indirect_probes members; keep gossiping
        // (to random live members each round) until the backlog is spent.
        for _ in 0..self.max_transmissions {
            if self.foca.updates_backlog() == 0 && self.foca.custom_broadcast_backlog() == 0 {
                break;
            }
            if let Err(err) = self.foca.gossip(&mut self.runtime) {
                self.stats.protocol_errors(1);
                tracing::warn!(%err, "gossip after leave failed");
                break;
            }
        }
        self.left = true;
        self.dirty |= self.book.mark_local_left();
        self.drain(out);
    }

    /// Moves foca's effects into `out` and syncs the book with foca.
    fn drain(&mut self, out: &mut Output) {
        while let Some((to, payload)) = self.runtime.to_send() {
            let mut packet = Vec::new();
            self.framing.wrap(&payload, &mut packet);
            out.packets.push((to.cluster, packet));
        }
        while let Some(timer) = self.runtime.to_schedule() {
            out.timers.push(timer);
        }
        while let Some(notification) = self.runtime.to_notify() {
            self.notified(notification, out);
        }
        // foca only notifies on active-set changes; suspicion shows up only in
        // the member states, so read them all (a few dozen members at most).
        for member in self.foca.iter_membership_state() {
            self.dirty |= self.book.observe(member.id(), member.state());
        }
        for identity in leave::drain(&self.leaves) {
            self.dirty |= self.book.observe_leave(&identity);
        }
        if std::mem::take(&mut self.dirty) {
            out.membership = Some(self.membership());
        }
    }

    fn notified(&mut self, notification: OwnedNotification<NodeIdentity>, out: &mut Output) {
        match notification {
            OwnedNotification::Rejoin(identity) => {
                tracing::info!(
                    generation = identity.generation,
                    "declared down; rejoined with a new generation"
                );
                out.generation_to_persist = Some(identity.generation);
                self.dirty |= self.book.set_local(identity);
            }
            OwnedNotification::Defunct => {
                if !self.left {
                    tracing::error!("declared down and unable to renew the identity");
                }
            }
            OwnedNotification::Idle => {
                tracing::info!("no live members; announcing to seeds");
                self.last_seed_announce = None;
            }
            OwnedNotification::Active => tracing::info!("joined the cluster"),
            other => tracing::debug!(notification = ?other, "membership event"),
        }
    }

    #[cfg(test)]
    pub(crate) fn cluster_addr(&self) -> SocketAddr {
        self.foca.identity().cluster
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::config::SwimConfig;
    use crate::membership::MemberState;
    use crate::timers::TimerHeap;

    fn config(id: &str, port: u16, seeds: &[u16]) -> GossipConfig {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut config = GossipConfig::new(
            id,
            addr(port),
            format!("127.0.0.1:{}", port + 1000),
            "unused",
        );
        config.seeds = seeds.iter().map(|port| addr(*port)).collect();
        config.swim = SwimConfig::fast();
        config.announce_interval = Duration::from_millis(200);
        config
    }

    fn core(id: &str, port: u16, seeds: &[u16], generation: u64) -> Core {
        keyed_core(id, port, seeds, generation, &[])
    }

    /// A core holding cluster keys `[k; 32]` for each `k` in `keys` (the first sends);
    /// none: plain.
    fn keyed_core(id: &str, port: u16, seeds: &[u16], generation: u64, keys: &[u8]) -> Core {
        let mut config = config(id, port, seeds);
        if !keys.is_empty() {
            let keys = keys.iter().map(|k| [*k; 32]).collect();
            config.cluster_keys = Some(Arc::new(crate::keys::ClusterKeys::new(keys).unwrap()));
        }
        let local = NodeIdentity {
            id: id.into(),
            cluster: config.bind,
            http: config.advertise_http.clone(),
            generation,
        };
        Core::new(local, &config, u64::from(port), Arc::default())
    }

    /// Cores wired together in memory with simulated time: packets are
    /// delivered at once (unless a node is cut off), timers when the clock
    /// reaches them.
    struct Sim {
        start: Instant,
        now: Instant,
        nodes: HashMap<SocketAddr, (Core, TimerHeap<Instant>, Arc<Membership>)>,
        in_flight: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
        cut: HashSet<SocketAddr>,
        persisted: HashMap<SocketAddr, u64>,
        /// Packets handed to each receiver, by (from, to).
        delivered: HashMap<(SocketAddr, SocketAddr), u64>,
    }

    impl Sim {
        fn new() -> Self {
            let start = Instant::now();
            Self {
                start,
                now: start,
                nodes: HashMap::new(),
                in_flight: Vec::new(),
                cut: HashSet::new(),
                persisted: HashMap::new(),
                delivered: HashMap::new(),
            }
        }

        fn add(&mut self, core: Core) {
            let membership = core.membership();
            self.nodes
                .insert(core.cluster_addr(), (core, TimerHeap::new(), membership));
        }

        fn apply(&mut self, from: SocketAddr, out: Output) {
            let (_, timers, membership) = self.nodes.get_mut(&from).unwrap();
            for (after, timer) in out.timers {
                assert!(timers.push(self.now + after, timer));
            }
            if let Some(new) = out.membership {
                *membership = new;
            }
            if let Some(generation) = out.generation_to_persist {
                self.persisted.insert(from, generation);
            }
            for (to, packet) in out.packets {
                self.in_flight.push((from, to, packet));
            }
        }

        /// Runs for `duration` of simulated time in 10 ms steps.
        fn run(&mut self, duration: Duration) {
            let end = self.now + duration;
            while self.now < end {
                self.now += Duration::from_millis(10);
                let addrs: Vec<SocketAddr> = self.nodes.keys().copied().collect();
                for addr in addrs {
                    let mut out = Output::default();
                    let (core, timers, _) = self.nodes.get_mut(&addr).unwrap();
                    core.tick(self.now, &mut out);
                    while let Some(timer) = timers.pop_due(self.now) {
                        core.handle_timer(timer, &mut out);
                    }
                    self.apply(addr, out);
                }
                for round in 0.. {
                    assert!(round < 100, "packets bounce forever");
                    if self.in_flight.is_empty() {
                        break;
                    }
                    for (from, to, packet) in std::mem::take(&mut self.in_flight) {
                        if self.cut.contains(&from) || self.cut.contains(&to) {
                            continue;
                        }
                        let Some((core, _, _)) = self.nodes.get_mut(&to) else {
                            continue; // crashed or never existed: lost
                        };
                        let mut out = Output::default();
                        core.handle_packet(&packet, from, &mut out);
                        *self.delivered.entry((from, to)).or_default() += 1;
                        self.apply(to, out);
                    }
                }
            }
        }

        fn state(&self, observer: u16, id: &str) -> Option<MemberState> {
            self.member(observer, id).map(|member| member.state)
        }

        fn member(&self, observer: u16, id: &str) -> Option<crate::Member> {
            let (_, _, membership) = &self.nodes[&local(observer)];
            membership.get(id).cloned()
        }

        fn elapsed(&self) -> Duration {
            self.now - self.start
        }
    }

    #[test]
    fn a_suspicion_its_subject_never_hears_of_ends_in_down_then_a_rejoin() {
        // A stale suspicion of n2 held by n1 alone (its originator gone, n2 never
        // told) must not last for ever: n1 declares n2 down, n2 rejoins, and n1
        // sees it alive again. Without the deadline n2 stays suspect on n1.
        let mut sim = Sim::new();
        sim.add(core("n1", 7001, &[], 1));
        sim.add(core("n2", 7002, &[7001], 1));
        sim.add(core("n3", 7003, &[7001], 1));
        sim.run(Duration::from_secs(2));
        assert_eq!(sim.state(7001, "n2"), Some(MemberState::Alive));
        let (core, _, _) = sim.nodes.get_mut(&local(7001)).unwrap();
        let n2 = core
            .foca
            .iter_membership_state()
            .find(|m| m.id().id == "n2")
            .map(|m| (m.id().clone(), m.incarnation()))
            .unwrap();
        let stale = foca::Member::new(n2.0, n2.1, foca::State::Suspect);
        core.foca
            .apply_many(std::iter::once(stale), false, &mut core.runtime)
            .unwrap();
        let mut out = Output::default();
        core.drain(&mut out);
        sim.apply(local(7001), out);
        assert_eq!(sim.state(7001, "n2"), Some(MemberState::Suspect));
        let timeout = SwimConfig::fast().suspect_to_down_after;
        sim.run(timeout * (SUSPICION_GRACE_FACTOR + 3));
        assert_eq!(sim.state(7001, "n2"), Some(MemberState::Alive));
        assert!(
            sim.member(7001, "n2").unwrap().generation > 1,
            "n2 rejoined"
        );
    }

    #[test]
    fn simulated_cluster_joins_leaves_and_tells_left_from_down() {
        // Without sockets: three cores join through one seed, a graceful leave
        // shows as Left and a crash as Down on the others, and the leaver
        // restarting with a newer generation is Alive again.
        let mut sim = Sim::new();
        sim.add(core("n1", 7001, &[], 1));
        sim.add(core("n2", 7002, &[7001], 1));
        sim.add(core("n3", 7003, &[7001], 1));
        sim.run(Duration::from_secs(2));
        for observer in [7001, 7002, 7003] {
            for id in ["n1", "n2", "n3"] {
                assert_eq!(
                    sim.state(observer, id),
                    Some(MemberState::Alive),
                    "{id} on {observer}"
                );
            }
        }

        let mut out = Output::default();
        let n2 = local(7002);
        sim.nodes.get_mut(&n2).unwrap().0.leave(&mut out);
        sim.apply(n2, out);
        sim.run(Duration::from_millis(100));
        assert_eq!(sim.state(7002, "n2"), Some(MemberState::Left));
        assert_eq!(sim.state(7001, "n2"), Some(MemberState::Left));
        assert_eq!(sim.state(7003, "n2"), Some(MemberState::Left));
        sim.nodes.remove(&n2);

        sim.nodes.remove(&local(7003));
        sim.run(Duration::from_secs(4));
        assert_eq!(sim.state(7001, "n3"), Some(MemberState::Down));
        assert_eq!(
            sim.state(7001, "n2"),
            Some(MemberState::Left),
            "left stays left"
        );

        sim.add(core("n2", 7002, &[7001], 2));
        sim.run(Duration::from_secs(1));
        assert_eq!(sim.state(7001, "n2"), Some(MemberState::Alive));
        assert!(sim.elapsed() < Duration::from_secs(8));
    }

    #[test]
    fn announces_to_seeds_until_someone_answers() {
        // A lone node keeps announcing to its seed every announce_interval, and
        // stops (but for the slow re-announce) once it has a live member.
        let mut alone = core("n2", 7002, &[7001, 7002], 1);
        let start = Instant::now();
        let mut sent = 0;
        for step in 0..10u32 {
            let mut out = Output::default();
            alone.tick(start + Duration::from_millis(100) * step, &mut out);
            assert!(
                out.packets.iter().all(|(to, _)| to.port() == 7001),
                "never to itself"
            );
            sent += out.packets.len();
        }
        assert_eq!(sent, 5, "every 200 ms over 1 s");

        let mut sim = Sim::new();
        sim.add(core("n2", 7002, &[7001], 1));
        sim.run(Duration::from_secs(1));
        let announced_alone = sim
            .nodes
            .values()
            .next()
            .unwrap()
            .0
            .stats
            .snapshot()
            .seed_announces;
        assert!(announced_alone >= 4, "{announced_alone}");
        sim.add(core("n1", 7001, &[], 1));
        sim.run(Duration::from_secs(3));
        assert_eq!(sim.state(7002, "n1"), Some(MemberState::Alive));
        let n2 = &sim.nodes[&local(7002)].0;
        let announced = n2.stats.snapshot().seed_announces;
        assert!(
            announced <= announced_alone + 6,
            "kept announcing: {announced}"
        );
    }

    fn local(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn node_cut_off_then_healed_renews_its_generation_and_is_alive_again() {
        // A node the others declared down during a partition learns it on
        // heal, renews its identity, asks for the new generation to be stored
        // and is alive again; meanwhile it showed as Down, not Left.
        let mut sim = Sim::new();
        sim.add(core("n1", 7001, &[], 1));
        sim.add(core("n2", 7002, &[7001], 1));
        sim.add(core("n3", 7003, &[7001], 1));
        sim.run(Duration::from_secs(2));
        assert_eq!(sim.state(7001, "n3"), Some(MemberState::Alive));

        sim.cut.insert(local(7003));
        sim.run(Duration::from_secs(4));
        assert_eq!(sim.state(7001, "n3"), Some(MemberState::Down));
        assert_eq!(sim.state(7002, "n3"), Some(MemberState::Down));
        assert_eq!(sim.state(7003, "n1"), Some(MemberState::Down));

        sim.cut.clear();
        sim.run(Duration::from_secs(3));
        assert_eq!(sim.persisted.get(&local(7003)), Some(&2));
        for observer in [7001, 7002, 7003] {
            let n3 = sim.member(observer, "n3").unwrap();
            assert_eq!(
                (n3.state, n3.generation),
                (MemberState::Alive, 2),
                "on {observer}"
            );
            assert_eq!(sim.state(observer, "n1"), Some(MemberState::Alive));
        }
    }

    #[test]
    fn a_node_with_another_key_never_joins_and_all_its_packets_are_rejected() {
        // n1 and n2 share key 1; n3 holds key 2 and seeds on n1. n3 never shows up
        // on n1 or n2, n1 never on n3, and every packet n3 sent n1 was rejected for
        // the key (none reached foca).
        let mut sim = Sim::new();
        sim.add(keyed_core("n1", 7001, &[], 1, &[1]));
        sim.add(keyed_core("n2", 7002, &[7001], 1, &[1]));
        sim.add(keyed_core("n3", 7003, &[7001], 1, &[2]));
        sim.run(Duration::from_secs(3));
        assert_eq!(sim.state(7001, "n2"), Some(MemberState::Alive));
        assert_eq!(sim.state(7002, "n1"), Some(MemberState::Alive));
        assert_eq!(sim.state(7001, "n3"), None);
        assert_eq!(sim.state(7002, "n3"), None);
        assert_eq!(sim.state(7003, "n1"), None);
        let from_stranger = sim.delivered[&(local(7003), local(7001))];
        assert!(from_stranger >= 5, "n3 kept announcing: {from_stranger}");
        let n1 = sim.nodes[&local(7001)].0.stats.snapshot();
        assert_eq!(n1.packets_rejected_key, from_stranger);
        assert_eq!(
            n1.packets_rejected_envelope + n1.packets_rejected_protocol,
            0
        );
    }

    #[test]
    fn a_plain_node_and_a_keyed_one_never_join() {
        // Without the key a node is a stranger too, both ways.
        let mut sim = Sim::new();
        sim.add(keyed_core("n1", 7001, &[], 1, &[1]));
        sim.add(core("n2", 7002, &[7001], 1));
        sim.run(Duration::from_secs(2));
        assert_eq!(sim.state(7001, "n2"), None);
        assert_eq!(sim.state(7002, "n1"), None);
        let n1 = sim.nodes[&local(7001)].0.stats.snapshot();
        assert_eq!(
            n1.packets_rejected_key,
            sim.delivered[&(local(7002), local(7001))]
        );
    }

    #[test]
    fn every_step_of_a_rotation_keeps_the_cluster_whole() {
        // Rotating from key 1 to key 2 one node at a time passes through mixes of
        // [1] and [1,2] (the new key added second), then [1,2] and [2,1] (moved
        // first), then [2,1] and [2] (the old removed): in every mix all three
        // nodes see each other alive.
        let phases: [[&[u8]; 3]; 3] = [
            [&[1], &[1, 2], &[1]],
            [&[2, 1], &[1, 2], &[2, 1]],
            [&[2], &[2, 1], &[2]],
        ];
        for keys in phases {
            let mut sim = Sim::new();
            sim.add(keyed_core("n1", 7001, &[], 1, keys[0]));
            sim.add(keyed_core("n2", 7002, &[7001], 1, keys[1]));
            sim.add(keyed_core("n3", 7003, &[7001], 1, keys[2]));
            sim.run(Duration::from_secs(3));
            for observer in [7001, 7002, 7003] {
                for id in ["n1", "n2", "n3"] {
                    assert_eq!(
                        sim.state(observer, id),
                        Some(MemberState::Alive),
                        "{id} on {observer} with keys {keys:?}"
                    );
                }
            }
            for (node, _, _) in sim.nodes.values() {
                assert_eq!(node.stats.snapshot().packets_rejected_key, 0, "{keys:?}");
            }
        }
    }

    fn sealed(payload: &[u8]) -> Vec<u8> {
        let mut packet = Vec::new();
        envelope::seal(payload, &mut packet);
        packet
    }

    proptest! {
        #[test]
        fn garbage_packets_never_panic_and_are_counted(
            raw in proptest::collection::vec(any::<u8>(), 0..1600),
            payload in proptest::collection::vec(any::<u8>(), 0..1400),
            flips in proptest::collection::vec((any::<usize>(), 1..=255u8), 1..8),
        ) {
            // Raw garbage, well-framed garbage and corrupted real foca packets
            // are all dropped and counted; the core keeps working.
            let mut node = core("n1", 7001, &[], 1);
            let from = SocketAddr::from(([127, 0, 0, 1], 9999));
            let mut out = Output::default();
            node.handle_packet(&raw, from, &mut out);
            node.handle_packet(&sealed(&payload), from, &mut out);

            // A real announce from another node, its payload corrupted.
            let mut joiner = core("n2", 7002, &[7001], 1);
            let mut announce = Output::default();
            joiner.tick(Instant::now(), &mut announce);
            let (_, packet) = announce.packets.pop().unwrap();
            let mut foca_payload = envelope::open(&packet).unwrap().to_vec();
            for (at, flip) in &flips {
                let len = foca_payload.len();
                foca_payload[at % len] ^= flip;
            }
            node.handle_packet(&sealed(&foca_payload), from, &mut out);

            let stats = node.stats.snapshot();
            prop_assert_eq!(stats.packets_received, 3);
            prop_assert!(stats.packets_rejected_envelope + stats.packets_rejected_protocol >= 1);

            // Still answers a genuine announce with a feed.
            let mut reply = Output::default();
            node.handle_packet(&packet, from, &mut reply);
            prop_assert_eq!(reply.packets.len(), 1);
        }
    }
}
