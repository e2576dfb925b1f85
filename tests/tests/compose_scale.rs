//! Proves that the Kubernetes StatefulSet of compose/kubernetes/ scales out and in
//! without losing an acknowledged write, on compose/statefulset.yml, which lays the
//! containers out as the StatefulSet lays out pods: ids `ringkv-0`, `ringkv-1`, …,
//! the same ports in every container, found by their names in the headless Service
//! (`ringkv-<i>.ringkv-peers.default.svc.cluster.local`), seeds `ringkv-0..2`.
//!
//! While the chaos workload runs through the published ports, the cluster goes from
//! 5 pods to 7 (`ringkv-5` and `ringkv-6` start together on new volumes, as
//! `podManagementPolicy: Parallel` starts them), then down to 4 one pod at a time,
//! highest ordinal first, as a StatefulSet scales in: each pod leaves the ring
//! first (`POST /admin/leave`, what its preStop `ringkv leave` asks for) and, once
//! it has exited, its container and volume are deleted (`whenScaled: Delete`).
//! Last, it scales back out to 5: `ringkv-4` starts again under its old name on a
//! new volume and joins as a new node, as the next scale-out gives that ordinal.
//! Each step waits until every ring member shows the ring settled. Then the history
//! checker finds no acknowledged write lost, no phantom, no false sibling, no
//! resurrection, and converged replicas, and no departed pod is a home replica of
//! any key.
//!
//! It needs that compose cluster, so it is ignored by default; `compose/cluster scale`
//! brings it up, runs this with the environment `ringkv_tests::compose` reads, and
//! takes it down. `RINGKV_CHAOS_SEED` replays the workload's choices.

use std::time::Duration;

use ringkv_tests::chaos::{self, ChaosConfig, ChaosTarget as _, Fault};
use ringkv_tests::compose::ComposeCluster;

/// The pods of the start; the spares are the two ordinals after them.
const PODS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the StatefulSet's compose cluster: run `compose/cluster scale`"]
async fn compose_scale() {
    let seed = chaos::seed_from_env();
    eprintln!(
        "==== compose scale: seed {seed} (replay with {}={seed})",
        chaos::SEED_ENV
    );
    let mut cluster = ComposeCluster::from_env().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        (cluster.nodes().len(), cluster.spares()),
        (PODS + 2, 2),
        "compose/cluster scale names {PODS} pods and 2 spares"
    );
    cluster.delete_departed();
    let steps = vec![
        vec![Fault::Join { node: PODS }, Fault::Join { node: PODS + 1 }],
        vec![Fault::Leave { node: PODS + 1 }],
        vec![Fault::Leave { node: PODS }],
        vec![Fault::Leave { node: PODS - 1 }],
        vec![Fault::Join { node: PODS - 1 }],
    ];
    let mut config =
        ChaosConfig::new(Duration::from_secs(60)).with_steps(steps, Duration::from_secs(900));
    config.nodes = PODS;
    config.schedule.nodes = PODS;
    // The StatefulSet's quorum (N=3, R=2, W=2).
    config.quorum = (3, 2, 2);
    // More keys than the chaos run's, so that every step moves data; a round of
    // the convergence check then reads 10,000 replica views, a few seconds.
    config.workload.keys = 2000;
    config.converge_within = Duration::from_secs(90);
    chaos::run_and_check(&mut cluster, &config, seed).await;
}
