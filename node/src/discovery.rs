//! How a production node finds the cluster: resolves its advertised address and its
//! seeds (names may resolve late in containers), adds the peers remembered from its
//! last run, and starts gossip on a UDP socket at `--cluster`.
//!
//! The simulator skips this module: it starts gossip on its own simulated socket with
//! fixed addresses ([`ringkv_gossip::Gossip::start_on`]).

use std::net::SocketAddr;
use std::time::Duration;

use ringkv_gossip::{Gossip, GossipConfig, SwimConfig};

use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::Backend;

/// Starts gossip for `config`; `store` holds the members remembered from the last run.
pub async fn start_gossip(config: &Config, store: &dyn Backend) -> Result<Gossip> {
    // A pod's own name in a headless Service may be published a moment after its
    // container starts.
    let deadline = tokio::time::Instant::now() + ADVERTISE_RESOLVE_PATIENCE;
    let advertise_cluster = resolve_by(&config.advertise_cluster, deadline)
        .await
        .ok_or_else(|| {
            Error::Config(format!(
                "--advertise-cluster {}: cannot resolve within {:?}",
                config.advertise_cluster, ADVERTISE_RESOLVE_PATIENCE
            ))
        })?;
    let remembered = Cluster::remembered_peers(store, &config.id);
    let patience = if remembered.is_empty() {
        SEED_RESOLVE_PATIENCE
    } else {
        SEED_RESOLVE_PATIENCE_RESTART
    };
    let mut seeds = resolve_seeds(&config.join, patience).await;
    for addr in remembered {
        if !seeds.contains(&addr) {
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
    gossip_config.cluster_keys = config.cluster_keys.clone();
    Gossip::start(gossip_config).map_err(|e| Error::Config(format!("gossip: {e}")))
}

/// Resolves `host:port` (a name, or an address) to its first socket address.
async fn resolve(host_port: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(host_port).await.ok()?.next()
}

/// [`resolve`], retried every second until `deadline` (at least one attempt, itself
/// bounded by `deadline`).
async fn resolve_by(host_port: &str, deadline: tokio::time::Instant) -> Option<SocketAddr> {
    loop {
        // A name the resolver cannot answer may hang for its own timeout (a
        // container's DNS forwards unknown names upstream): bound each attempt.
        if let Ok(Some(addr)) = tokio::time::timeout_at(deadline, resolve(host_port)).await {
            return Some(addr);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How long a start waits for its own advertised name to resolve.
const ADVERTISE_RESOLVE_PATIENCE: Duration = Duration::from_secs(30);

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
        let addr = resolve_by(seed, deadline).await;
        if addr.is_none() {
            tracing::warn!(%seed, "cannot resolve the seed; starting without it");
        }
        addr
    });
    futures::future::join_all(attempts)
        .await
        .into_iter()
        .flatten()
        .collect()
}
