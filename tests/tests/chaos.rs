//! Proves the properties of docs/reliability.md#the-properties under process faults:
//! a five-node cluster (`n=3 r=2 w=2`) serves eight concurrent clients (blind writes, read-modify-writes,
//! deletes with context) while a seeded schedule SIGKILLs and restarts nodes,
//! SIGSTOPs and resumes them, and cuts one or two nodes off the others with
//! nftables (where `nft` and CAP_NET_ADMIN are available; `RINGKV_CHAOS_PARTITIONS=0`
//! turns that off), at most two nodes at a time; and changes the ring: a spare
//! node `n6` with a new data dir joins, a node leaves (`POST /admin/leave`) and exits
//! by itself, a node is killed for good and removed (`POST /admin/remove/{id}`)
//! (`RINGKV_CHAOS_MEMBERSHIP=0` turns that off). After the heal, through the nodes
//! still on the ring, the history checker finds no acknowledged write lost, no
//! phantom value, no false sibling, no resurrected value, and converged replicas; no
//! departed node is a home replica of any key; and, on the same run, one planted
//! violation of each kind would have been caught.
//!
//! The seed is printed first (set `RINGKV_CHAOS_SEED` to replay a schedule);
//! `RINGKV_CHAOS_DURATION_S` sets the workload's duration. The short run is the
//! default test; the long one is ignored:
//! `cargo test --release -p ringkv-tests --test chaos -- --ignored chaos_long --nocapture`.

use std::time::Duration;

use ringkv_tests::chaos::{self, ChaosConfig};

/// Workload duration of the default run: with the cluster's start, the heal and the
/// checks, the test takes about two minutes.
const SHORT_DURATION: Duration = Duration::from_secs(75);
/// Workload duration of the ignored long run.
const LONG_DURATION: Duration = Duration::from_secs(1800);
/// Bound on the long run's workload steps per second (a step is one or two
/// operations), so its history stays near 600,000 operations.
const LONG_STEPS_PER_S_MAX: f64 = 250.0;

/// Runs one chaos test of `duration` (unless the env overrides it) and fails, with
/// the seed, the report and the saved history, on any violation.
async fn chaos_test(default_duration: Duration, steps_per_s_max: Option<f64>) {
    let seed = chaos::seed_from_env();
    let duration = chaos::duration_from_env(default_duration);
    eprintln!(
        "==== chaos: seed {seed} (replay with {}={seed} {}={})",
        chaos::SEED_ENV,
        chaos::DURATION_ENV,
        duration.as_secs()
    );
    let mut config = ChaosConfig::new(duration);
    config.workload.steps_per_s_max = steps_per_s_max;
    let mut cluster = chaos::start_cluster(&config)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: starting the cluster: {e:#}"));
    chaos::run_and_check(&mut cluster, &config, seed).await;
    drop(cluster);
}

/// The default run: about 75 s of workload under faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_short() {
    chaos_test(SHORT_DURATION, None).await;
}

/// The same test for 30 minutes (`RINGKV_CHAOS_DURATION_S` overrides), paced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with `-- --ignored chaos_long --nocapture`"]
async fn chaos_long() {
    chaos_test(LONG_DURATION, Some(LONG_STEPS_PER_S_MAX)).await;
}
