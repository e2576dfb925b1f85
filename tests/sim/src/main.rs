//! `ringkv-sim`: runs seeds of the deterministic simulation and says which failed.
//!
//! ```text
//! ringkv-sim --seed 42                      # one seed: "seed 42: ok trace=<hex>"
//! ringkv-sim --seeds 1..1000                # a range (end exclusive), in parallel
//! ringkv-sim --seeds 1..100 --bug lose-acked-writes   # the planted bug must be caught
//! ringkv-sim --seed 42 --verbose --print-trace        # what happened, event by event
//! ```
//! Exit status 1 if any seed found a violation.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use ringkv_sim::{SeedReport, SimOptions, run_seed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bug {
    /// The simulated disk's fsync lies: a crash loses acknowledged writes.
    LoseAckedWrites,
}

#[derive(Debug, Parser)]
#[command(
    name = "ringkv-sim",
    about = "Deterministic simulation of a ringkv cluster"
)]
struct Cli {
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run the seeds A..B (B excluded).
    #[arg(long, value_parser = parse_range)]
    seeds: Option<Range<u64>>,
    /// Plant a bug the checker must catch.
    #[arg(long, value_enum)]
    bug: Option<Bug>,
    /// Hosts in the cluster (with --membership, one of them joins later; use 6).
    #[arg(long, default_value_t = 5)]
    hosts: usize,
    /// Membership changes during the run: the last host joins, one leaves, one is
    /// crashed for good and removed.
    #[arg(long)]
    membership: bool,
    /// Client operations per seed.
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// Faults per seed.
    #[arg(long, default_value_t = 20)]
    faults: usize,
    /// Seeds run at once (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print each seed's counts.
    #[arg(long)]
    verbose: bool,
    /// Print every event of the trace (one seed).
    #[arg(long)]
    print_trace: bool,
    /// Seal every host's gossip under a cluster key, as `--cluster-key-file` does.
    #[arg(long)]
    keyed: bool,
}

fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?} is not A..B"))?;
    let a: u64 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u64 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if b <= a {
        return Err(format!("{text:?} is empty"));
    }
    Ok(a..b)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let seeds = match (cli.seed, cli.seeds.clone()) {
        (Some(s), None) => s..s + 1,
        (None, Some(r)) => r,
        _ => bail!("give --seed S or --seeds A..B"),
    };
    if cli.hosts < 3 || cli.hosts > 200 {
        bail!("--hosts must be 3..=200 (N is 3)");
    }
    let options = SimOptions {
        hosts: cli.hosts,
        ops: cli.ops,
        faults: cli.faults,
        lose_acked_writes: cli.bug == Some(Bug::LoseAckedWrites),
        keep_log: cli.print_trace,
        membership: cli.membership,
        keyed: cli.keyed,
        ..SimOptions::default()
    };
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let started = std::time::Instant::now();
    let failed = run_all(seeds.clone(), &options, threads, cli.verbose)?;
    if seeds.end - seeds.start > 1 {
        let total = seeds.end - seeds.start;
        eprintln!(
            "{total} seeds, {failed} failed, in {:.1}s ({:.0} seeds/min on {threads} threads)",
            started.elapsed().as_secs_f64(),
            total as f64 * 60.0 / started.elapsed().as_secs_f64()
        );
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Runs the seeds on `threads` threads, printing each line in seed order.
fn run_all(
    seeds: Range<u64>,
    options: &SimOptions,
    threads: usize,
    verbose: bool,
) -> anyhow::Result<u64> {
    let next = Arc::new(AtomicU64::new(seeds.start));
    let (tx, rx) = mpsc::channel::<SeedReport>();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, tx, options, end) = (next.clone(), tx.clone(), options.clone(), seeds.end);
            std::thread::Builder::new()
                .stack_size(64 << 20)
                .spawn(move || {
                    loop {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        if seed >= end {
                            return;
                        }
                        if tx.send(run_seed(seed, &options)).is_err() {
                            return;
                        }
                    }
                })
                .context("starting a worker thread")
        })
        .collect::<anyhow::Result<_>>()?;
    drop(tx);
    let mut waiting = BTreeMap::new();
    let mut print_next = seeds.start;
    let mut failed = 0;
    for report in rx {
        waiting.insert(report.seed, report);
        while let Some(report) = waiting.remove(&print_next) {
            for line in &report.log {
                println!("  {line}");
            }
            match &report.violation {
                None => println!("seed {}: ok trace={:016x}", report.seed, report.trace_hash),
                Some(what) => {
                    failed += 1;
                    println!(
                        "seed {}: VIOLATION {what} trace={:016x}",
                        report.seed, report.trace_hash
                    );
                }
            }
            if verbose {
                println!("  {} ({} events)", report.summary, report.events);
            }
            print_next += 1;
        }
    }
    for w in workers {
        let _ = w.join();
    }
    if print_next != seeds.end {
        bail!("a worker died before seed {print_next} finished");
    }
    Ok(failed)
}
