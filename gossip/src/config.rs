//! Gossip configuration and its checks.

use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use crate::keys::ClusterKeys;
use crate::{Error, Result};

/// Longest node id accepted, in bytes: identities ride in every packet.
pub const ID_MAX_BYTES: usize = 128;
/// Longest advertised HTTP address accepted, in bytes.
pub const HTTP_MAX_BYTES: usize = 256;
/// Smallest `max_packet_bytes`: room for a header and a few members.
pub const PACKET_MIN_BYTES: usize = 512;
/// Largest `max_packet_bytes`: the largest UDP payload over IPv4.
pub const PACKET_MAX_BYTES: usize = 65_507;

/// Everything [`crate::Gossip::start`] needs.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// The node's `--id`; unique in the cluster, at most [`ID_MAX_BYTES`].
    pub id: String,
    /// UDP address to bind (the node's `--cluster`). Port 0 picks a free port.
    pub bind: SocketAddr,
    /// Address peers use for UDP gossip and TCP peer RPC (`--advertise-cluster`).
    /// Must not be unspecified (0.0.0.0); port 0 means the port actually bound.
    pub advertise_cluster: SocketAddr,
    /// `host:port` of the node's HTTP API as peers should reach it.
    pub advertise_http: String,
    /// Cluster addresses to announce to (`--join`); our own address is skipped.
    /// They must be the seeds' *advertised* cluster addresses: foca accepts an
    /// announce only when addressed to the receiver's own address.
    pub seeds: Vec<SocketAddr>,
    /// Where the generation counter lives, inside the node's data dir.
    pub generation_file: PathBuf,
    /// SWIM timings.
    pub swim: SwimConfig,
    /// How often to announce to every seed while no other member is live.
    pub announce_interval: Duration,
    /// How often to announce to the seeds not known live while some members
    /// are: heals a partition that split the cluster into two live halves.
    pub reannounce_interval: Duration,
    /// Largest datagram sent or accepted, envelope included. Stay under the
    /// path MTU (1400 fits Ethernet with room for IP and UDP headers).
    pub max_packet_bytes: usize,
    /// Seed of foca's RNG (which member to probe, whom to gossip to). `None`
    /// draws one at start; a simulator fixes it so a run replays exactly.
    pub rng_seed: Option<u64>,
    /// The cluster keys (`--cluster-key-file`): with them every datagram is sealed
    /// under the first and must open under one of them; `None` talks in the clear.
    pub cluster_keys: Option<Arc<ClusterKeys>>,
}

impl GossipConfig {
    /// A config with LAN defaults: `advertise_cluster` = `bind`, no seeds
    /// (a cluster of one until others join it), announce every second.
    pub fn new(
        id: impl Into<String>,
        bind: SocketAddr,
        advertise_http: impl Into<String>,
        generation_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            id: id.into(),
            bind,
            advertise_cluster: bind,
            advertise_http: advertise_http.into(),
            seeds: Vec::new(),
            generation_file: generation_file.into(),
            swim: SwimConfig::default(),
            announce_interval: Duration::from_secs(1),
            reannounce_interval: Duration::from_secs(10),
            max_packet_bytes: 1400,
            rng_seed: None,
            cluster_keys: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let fail = |why: String| Err(Error::Config(why));
        if self.id.is_empty() || self.id.len() > ID_MAX_BYTES {
            return fail(format!("id must be 1..={ID_MAX_BYTES} bytes"));
        }
        if self.advertise_http.len() > HTTP_MAX_BYTES {
            return fail(format!(
                "advertise_http must be at most {HTTP_MAX_BYTES} bytes"
            ));
        }
        if self.advertise_cluster.ip().is_unspecified() {
            return fail(format!(
                "advertise_cluster {} is unspecified; peers need a routable address",
                self.advertise_cluster
            ));
        }
        if !(PACKET_MIN_BYTES..=PACKET_MAX_BYTES).contains(&self.max_packet_bytes) {
            return fail(format!(
                "max_packet_bytes must be in {PACKET_MIN_BYTES}..={PACKET_MAX_BYTES}"
            ));
        }
        if self.announce_interval.is_zero() || self.reannounce_interval.is_zero() {
            return fail("announce intervals must be above zero".into());
        }
        self.swim.validate()
    }
}

/// SWIM timings, handed to foca. [`SwimConfig::lan`] is the production
/// preset; tests shrink the durations ([`SwimConfig::fast`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwimConfig {
    /// How often a random member is probed.
    pub probe_period: Duration,
    /// How long a direct probe may take before others are asked to probe
    /// indirectly. Below `probe_period`, ideally under half of it.
    pub probe_rtt: Duration,
    /// How many members are asked for indirect probes.
    pub num_indirect_probes: usize,
    /// How long a suspect has to refute before it is declared down.
    pub suspect_to_down_after: Duration,
    /// How often pending updates are pushed to a few random members.
    pub gossip_interval: Duration,
    /// How often a few down members are announced to, so that a partition
    /// heals without operator help.
    pub announce_to_down_interval: Duration,
    /// How many times each update (and leave notice) is piggybacked.
    pub max_transmissions: u8,
    /// How long foca remembers a down identity. Irrelevant for rejoining
    /// (generations handle that); bounds foca's memory of dead addresses.
    pub remove_down_after: Duration,
}

impl SwimConfig {
    /// foca's LAN preset for about `expected_members` nodes (memberlist's
    /// defaults): probe every second, down after ~4 s of suspicion.
    pub fn lan(expected_members: u32) -> Self {
        Self::from_foca(&foca::Config::new_lan(
            NonZeroU32::new(expected_members).unwrap_or(NonZeroU32::MIN),
        ))
    }

    /// Short timings for tests on 127.0.0.1: a crash is declared down in
    /// about 1.5 s. Too twitchy for a loaded network.
    pub fn fast() -> Self {
        Self {
            probe_period: Duration::from_millis(300),
            probe_rtt: Duration::from_millis(100),
            num_indirect_probes: 3,
            suspect_to_down_after: Duration::from_millis(1000),
            gossip_interval: Duration::from_millis(100),
            announce_to_down_interval: Duration::from_secs(1),
            max_transmissions: 6,
            remove_down_after: Duration::from_secs(3600),
        }
    }

    fn from_foca(config: &foca::Config) -> Self {
        Self {
            probe_period: config.probe_period,
            probe_rtt: config.probe_rtt,
            num_indirect_probes: config.num_indirect_probes.get(),
            suspect_to_down_after: config.suspect_to_down_after,
            gossip_interval: config
                .periodic_gossip
                .as_ref()
                .map_or(Duration::from_millis(200), |p| p.frequency),
            announce_to_down_interval: config
                .periodic_announce_to_down_members
                .as_ref()
                .map_or(Duration::from_secs(65), |p| p.frequency),
            max_transmissions: config.max_transmissions.get(),
            remove_down_after: config
                .remove_down_after
                .unwrap_or(Duration::from_secs(86_400)),
        }
    }

    fn validate(&self) -> Result<()> {
        let fail = |why: &str| Err(Error::Config(format!("swim: {why}")));
        if self.probe_rtt.is_zero() || self.probe_rtt >= self.probe_period {
            return fail("probe_rtt must be above zero and below probe_period");
        }
        if self.suspect_to_down_after.is_zero()
            || self.gossip_interval.is_zero()
            || self.announce_to_down_interval.is_zero()
            || self.remove_down_after.is_zero()
        {
            return fail("durations must be above zero");
        }
        if self.num_indirect_probes == 0 || self.max_transmissions == 0 {
            return fail("num_indirect_probes and max_transmissions must be above zero");
        }
        Ok(())
    }

    /// foca's config; `max_packet_bytes` includes our envelope of `overhead_bytes`.
    pub(crate) fn to_foca(&self, max_packet_bytes: usize, overhead_bytes: usize) -> foca::Config {
        let nonzero = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        let mut config = foca::Config::new_lan(NonZeroU32::MIN);
        config.probe_period = self.probe_period;
        config.probe_rtt = self.probe_rtt;
        config.num_indirect_probes = nonzero(self.num_indirect_probes);
        config.max_transmissions = NonZeroU8::new(self.max_transmissions).unwrap_or(NonZeroU8::MIN);
        config.suspect_to_down_after = self.suspect_to_down_after;
        config.remove_down_after = Some(self.remove_down_after);
        config.max_packet_size = nonzero(max_packet_bytes.saturating_sub(overhead_bytes));
        // Tell a member we consider down, so it renews its identity and rejoins.
        config.notify_down_members = true;
        if let Some(gossip) = config.periodic_gossip.as_mut() {
            gossip.frequency = self.gossip_interval;
        }
        if let Some(announce) = config.periodic_announce_to_down_members.as_mut() {
            announce.frequency = self.announce_to_down_interval;
        }
        config
    }
}

impl Default for SwimConfig {
    /// [`SwimConfig::lan`] for a cluster of about 8.
    fn default() -> Self {
        Self::lan(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope;

    fn config() -> GossipConfig {
        GossipConfig::new(
            "n1",
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:8001",
            "/tmp/x",
        )
    }

    #[test]
    fn lan_preset_matches_foca() {
        // The production preset probes every second and waits seconds, not
        // milliseconds, before declaring a suspect down.
        let lan = SwimConfig::lan(8);
        assert_eq!(lan.probe_period, Duration::from_secs(1));
        assert!(lan.suspect_to_down_after >= Duration::from_secs(3));
        let foca = lan.to_foca(1400, envelope::OVERHEAD_BYTES);
        assert_eq!(foca.max_packet_size.get(), 1400 - envelope::OVERHEAD_BYTES);
        assert!(foca.notify_down_members);
        assert!(config().validate().is_ok());
        assert!(SwimConfig::fast().validate().is_ok());
    }

    #[test]
    fn bad_configs_are_refused() {
        // Each rule rejects the config with Error::Config before anything binds.
        let mut cases = Vec::new();
        let mut c = config();
        c.id = String::new();
        cases.push(c);
        let mut c = config();
        c.id = "x".repeat(ID_MAX_BYTES + 1);
        cases.push(c);
        let mut c = config();
        c.advertise_cluster = "0.0.0.0:7001".parse().unwrap();
        cases.push(c);
        let mut c = config();
        c.max_packet_bytes = 100;
        cases.push(c);
        let mut c = config();
        c.announce_interval = Duration::ZERO;
        cases.push(c);
        let mut c = config();
        c.swim.probe_rtt = c.swim.probe_period;
        cases.push(c);
        for case in cases {
            assert!(matches!(case.validate(), Err(Error::Config(_))), "{case:?}");
        }
    }
}
