//! The simulator in CI: a range of seeds clean, a seed replayed exactly, the planted
//! bug caught, and the seeds that once found bugs kept as regression cases.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ringkv_sim::{SeedReport, SimOptions, run_seed};

/// Runs `seeds` on two threads (the machine's cores), in any order.
fn run_many(seeds: impl IntoIterator<Item = u64>, options: &SimOptions) -> Vec<SeedReport> {
    let seeds: Arc<Vec<u64>> = Arc::new(seeds.into_iter().collect());
    let next = Arc::new(AtomicU64::new(0));
    let reports = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (seeds, next, reports, options) = (
                seeds.clone(),
                next.clone(),
                reports.clone(),
                options.clone(),
            );
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&seed) = seeds.get(i) else {
                        return;
                    };
                    let report = run_seed(seed, &options);
                    reports.lock().unwrap().push(report);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a simulation thread panicked");
    }
    let mut reports = std::mem::take(&mut *reports.lock().unwrap());
    reports.sort_by_key(|r| r.seed);
    reports
}

/// Runs `seeds` with the default options and fails with every violation found.
fn assert_clean(seeds: impl IntoIterator<Item = u64>) {
    assert_clean_with(seeds, &SimOptions::default());
}

/// Runs `seeds` with `options` and fails with every violation found.
fn assert_clean_with(seeds: impl IntoIterator<Item = u64>, options: &SimOptions) {
    let failed = failures(&run_many(seeds, options));
    assert!(
        failed.is_empty(),
        "{} seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn failures(reports: &[SeedReport]) -> Vec<String> {
    reports
        .iter()
        .filter_map(|r| {
            r.violation
                .as_ref()
                .map(|v| format!("seed {}: {v}", r.seed))
        })
        .collect()
}

#[test]
fn two_hundred_seeds_find_no_violation() {
    // Every property holds under 200 fault schedules of 5 hosts, 2,000 operations and
    // 20 faults each. Replay a failure with `ringkv-sim --seed S --verbose`.
    assert_clean(1..=200);
}

/// Six hosts, of which the last joins during the run, one leaves and one is crashed
/// for good and removed (`ringkv-sim --membership --hosts 6`).
fn membership() -> SimOptions {
    SimOptions {
        hosts: 6,
        membership: true,
        ..SimOptions::default()
    }
}

#[test]
fn membership_changes_under_faults_find_no_violation() {
    // Every property holds while a node joins, one leaves and a dead one is removed,
    // under 100 fault schedules, and in two seeds that once found bugs: 449, a leaver
    // that departed with the last adoption of the new ring (node/src/transfer/
    // cleanup.rs), and 973, a home lost for good (checker::check_lost_nodes). Replay a
    // failure with `ringkv-sim --seed S --membership --hosts 6 --verbose`.
    assert_clean_with((1..=100).chain([449, 973]), &membership());
}

#[test]
fn seeds_that_found_bugs_stay_clean() {
    // Each fails when its fix is reverted. 4: a suspicion whose originator crashed
    // stayed for ever (gossip/src/core.rs); 67: a member list lost in a power cut let
    // a node take writes as the only replica of keys it does not hold
    // (node/src/cluster.rs).
    assert_clean([4, 67]);
}

#[test]
fn a_seed_replays_to_the_same_trace_in_another_process() {
    // Determinism: two processes running one seed print the same line, trace included
    // (two processes, so hash-map seeds and tokio's own randomness differ between them).
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv-sim"))
            .args(["--seed", "4242"])
            .output()
            .expect("ringkv-sim runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let (first, second) = (run(), run());
    assert!(first.starts_with("seed 4242: ok trace="), "{first}");
    assert_eq!(first, second);
    // And in this process, twice more, through the library.
    let a = run_seed(4242, &SimOptions::default());
    let b = run_seed(4242, &SimOptions::default());
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
    assert!(first.contains(&format!("{:016x}", a.trace_hash)), "{first}");
}

#[test]
fn the_planted_bug_is_caught_in_most_seeds() {
    // The simulator can fail: with a disk whose fsync lies, acknowledged writes vanish
    // in crashes, and the checker says so in at least 3 seeds of 4. Runs twice the
    // usual length (with the same density of faults): a lost write is seen only when a
    // read meets the forgetful replica before hints, read repair or anti-entropy fill
    // the hole, and those close it quickly (on 2,000 operations 38 of 60 are caught).
    let options = SimOptions {
        lose_acked_writes: true,
        ops: 4000,
        faults: 40,
        ..SimOptions::default()
    };
    let reports = run_many(1..=60, &options);
    let caught = reports.iter().filter(|r| r.violation.is_some()).count();
    assert!(
        caught >= 45,
        "the lying disk was caught in only {caught} of 60 seeds"
    );
}

#[test]
#[ignore = "long: about 2.5 minutes on 2 cores; run with --ignored"]
fn a_thousand_seeds_find_no_violation() {
    // The bar: seeds 1..=1000 clean (`ringkv-sim --seeds 1..1001` does the same
    // and prints a line per seed).
    assert_clean(1..=1000);
}

#[test]
fn keyed_seeds_find_no_violation_and_replay() {
    // With every host's gossip sealed under a cluster key (random nonces and all), the
    // properties hold and a seed still replays to the same trace.
    let options = SimOptions {
        keyed: true,
        ..SimOptions::default()
    };
    let failed = failures(&run_many(1..=20, &options));
    assert!(
        failed.is_empty(),
        "keyed seeds failed:\n{}",
        failed.join("\n")
    );
    let (a, b) = (run_seed(7, &options), run_seed(7, &options));
    assert_eq!((a.trace_hash, a.events), (b.trace_hash, b.events));
}
