//! Proves docs/reliability.md#the-properties on the compose cluster: while the chaos
//! workload runs against the five containers' published ports, a seeded schedule `docker kill`s and starts
//! them, `docker pause`s and unpauses them, and disconnects them from the compose
//! network and back, at most two at a time, and changes the ring: the spare service
//! `n6` starts on a new volume and joins, a node leaves (`POST /admin/leave`) and its
//! container exits, a container is killed for good and removed
//! (`POST /admin/remove/{id}`); after the heal, through the nodes still on the ring,
//! the history checker finds no acknowledged write lost, no phantom, no false
//! sibling, no resurrection, and converged replicas, and no departed node is a home
//! replica of any key.
//!
//! It needs the running compose cluster, so it is ignored by default;
//! `compose/cluster chaos [SECONDS]` brings the cluster up, runs it with the
//! environment it needs (see `ringkv_tests::compose`) and takes the cluster down.
//! `RINGKV_CHAOS_SEED` replays a schedule, `RINGKV_CHAOS_DURATION_S` sets the
//! workload's duration (default 60 s), `RINGKV_CHAOS_MEMBERSHIP=0` leaves the ring
//! alone.

use std::time::Duration;

use ringkv_tests::chaos::{self, ChaosConfig, ChaosTarget as _};
use ringkv_tests::compose::ComposeCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the compose cluster: run `compose/cluster chaos`"]
async fn compose_chaos() {
    let seed = chaos::seed_from_env();
    let duration = chaos::duration_from_env(Duration::from_secs(60));
    eprintln!(
        "==== compose chaos: seed {seed} (replay with {}={seed} {}={})",
        chaos::SEED_ENV,
        chaos::DURATION_ENV,
        duration.as_secs()
    );
    let mut cluster = ComposeCluster::from_env().unwrap_or_else(|e| panic!("{e:#}"));
    let mut config = ChaosConfig::new(duration);
    config.nodes = cluster.nodes().len() - cluster.spares();
    config.schedule.nodes = config.nodes;
    if let Some(why) = cluster.joins_off() {
        config.without_joins(&why);
    }
    config.schedule.partitions = cluster.partitions();
    config.partitions_off = None;
    // The compose file's quorum defaults (N=3, R=2, W=2).
    config.quorum = (3, 2, 2);
    chaos::run_and_check(&mut cluster, &config, seed).await;
}
