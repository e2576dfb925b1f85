//! `ringkv bench`: a closed-loop, YCSB-style load generator (README.md#benchmark).
//!
//! A run has three steps:
//! 1. Setup: resolve the nodes, open `--concurrency` keep-alive HTTP/1.1
//!    connections (worker i talks to node i mod the node count), and for
//!    `--protocol etcd` find the gateway's path prefix. An unreachable node fails
//!    the run here, before any load.
//! 2. Load (unless `--no-load`): the workers write keys `0..--keys` once, taking
//!    indexes from a shared counter, with a progress bar.
//! 3. Run: each worker loops until `--warmup` + `--duration` has passed, drawing
//!    an operation from the workload's mix and a key (uniform or `--zipf`), and
//!    recording the operations that started after the warm-up. The per-worker
//!    histograms are merged at the end into one [`report::Summary`].
//!
//! Module map: [`keys`] names and chooses keys, [`workload`] draws operations,
//! [`conn`] owns a connection, [`requests`] builds each protocol's requests and
//! judges the answers,
//! [`contexts`] keeps the freshest causal context per key so updates supersede
//! instead of piling up siblings, [`worker`] is the closed loop, [`report`]
//! merges and prints.
//!
//! Caveats: the generator shares the machine's cores with whatever it measures,
//! so on a small machine it is part of the bottleneck (run it against the
//! `bare_hyper` example for the ceiling of HTTP alone). Closed-loop latencies
//! suffer coordinated omission: a stalled server also stalls the request
//! stream, so tails under overload look better than an open-loop client would
//! see. Workers never fail over; see [`worker`].

mod conn;
mod contexts;
mod keys;
mod report;
mod requests;
mod worker;
mod workload;

#[cfg(test)]
mod tests;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng as _};

pub use self::conn::Secured;
use self::conn::{Conn, Target};
use self::contexts::ContextTable;
use self::keys::{KeyChooser, KeySpace};
use self::report::{LoadReport, RunInfo, Stats, Summary};
use self::requests::{Protocol, Requests, RequestsConfig};
use self::worker::{Shared, Worker};
pub use self::workload::Workload;

/// Most connections a run opens.
const CONCURRENCY_MAX: usize = 10_000;
/// Largest value a run writes.
const VALUE_BYTES_MAX: usize = 64 << 20;
/// Distinct values the writes of a run cycle through.
const VALUE_WINDOWS: usize = 4_096;
/// How often the progress bar redraws.
const PROGRESS_TICK: Duration = Duration::from_millis(250);

/// `ringkv bench` flags.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// a = 50% read / 50% update, b = 95/5, c = read only, w = inserts of new keys.
    #[arg(long, value_enum, default_value = "a")]
    pub workload: Workload,
    /// Length of the measured window (`20s`, `1m`, `500ms`).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unrecorded run time before the measured window.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Workers, each with its own keep-alive connection (requests in flight).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Keys the load phase writes and reads and updates choose among.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Bytes per written value.
    #[arg(long = "value-size", default_value_t = 100)]
    pub value_bytes: usize,
    /// Choose keys by a Zipf law with this exponent (`--zipf` alone: 0.99, YCSB's
    /// default) instead of uniformly.
    #[arg(long, num_args = 0..=1, default_missing_value = "0.99")]
    pub zipf: Option<f64>,
    /// Read quorum sent with every read (ringkv's `r`); the node's default if unset.
    #[arg(long)]
    pub r: Option<usize>,
    /// Write quorum sent with every write (ringkv's `w`); the node's default if unset.
    #[arg(long)]
    pub w: Option<usize>,
    /// Run the load phase (the default).
    #[arg(long, overrides_with = "no_load")]
    pub load: bool,
    /// Skip the load phase: the keys are already there from an earlier run with
    /// the same `--key-prefix` and `--keys`.
    #[arg(long = "no-load", visible_alias = "skip-load", overrides_with = "load")]
    pub no_load: bool,
    /// Text before every key name, so that runs do not collide.
    #[arg(long, default_value = "bench-")]
    pub key_prefix: String,
    /// Seed of the key and operation choices (printed with the result; random if unset).
    #[arg(long)]
    pub seed: Option<u64>,
    /// `ringkv`, or `etcd` to drive an etcd v3 cluster's JSON gateway with the same load.
    #[arg(long, value_enum, default_value = "ringkv")]
    pub protocol: Protocol,
    /// Print exactly one JSON object on stdout (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The operation mix.
    pub workload: Workload,
    /// The protocol.
    pub protocol: Protocol,
    /// Node base URLs.
    pub nodes: Vec<String>,
    /// Measured window.
    pub duration: Duration,
    /// Unrecorded warm-up.
    pub warmup: Duration,
    /// Workers and connections.
    pub concurrency: usize,
    /// Loaded keys.
    pub keys: u64,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Zipf exponent, or `None` for uniform keys.
    pub zipf: Option<f64>,
    /// Per-request read quorum (ringkv).
    pub r: Option<usize>,
    /// Per-request write quorum (ringkv).
    pub w: Option<usize>,
    /// Whether the load phase runs.
    pub load: bool,
    /// Key name prefix.
    pub key_prefix: String,
    /// RNG seed.
    pub seed: u64,
    /// Client-side limit on connecting or on one request.
    pub request_timeout: Duration,
    /// Whether to draw progress bars on stderr.
    pub progress: bool,
    /// Token and TLS for a secured cluster.
    pub secured: Secured,
}

impl Config {
    /// Checks `args` and fills in the seed.
    pub fn new(nodes: &[String], client_timeout_ms: u64, args: &BenchArgs) -> anyhow::Result<Self> {
        if nodes.is_empty() {
            bail!("--nodes lists no node");
        }
        if !(1..=CONCURRENCY_MAX).contains(&args.concurrency) {
            bail!("--concurrency must be 1..={CONCURRENCY_MAX}");
        }
        if args.keys == 0 {
            bail!("--keys must be at least 1");
        }
        if args.value_bytes > VALUE_BYTES_MAX {
            bail!("--value-size must be at most {VALUE_BYTES_MAX} bytes");
        }
        if args.duration.is_zero() {
            bail!("--duration must be more than 0");
        }
        if client_timeout_ms == 0 {
            bail!("--client-timeout-ms must be more than 0");
        }
        if args.r == Some(0) || args.w == Some(0) {
            bail!("--r and --w must be at least 1");
        }
        if args.protocol == Protocol::Etcd && (args.r.is_some() || args.w.is_some()) {
            bail!("--r and --w are ringkv quorums; etcd has none");
        }
        if let Some(exponent) = args.zipf {
            // Refuse a bad exponent now rather than after the load phase.
            KeyChooser::zipf(1, exponent).map_err(anyhow::Error::msg)?;
        }
        Ok(Self {
            workload: args.workload,
            protocol: args.protocol,
            nodes: nodes.to_vec(),
            duration: args.duration,
            warmup: args.warmup,
            concurrency: args.concurrency,
            keys: args.keys,
            value_bytes: args.value_bytes,
            zipf: args.zipf,
            r: args.r,
            w: args.w,
            load: !args.no_load,
            key_prefix: args.key_prefix.clone(),
            // Below 2^53, so that JSON readers that parse numbers as doubles
            // (jq, JavaScript) keep the printed seed exact.
            seed: args.seed.unwrap_or_else(|| rand::random::<u64>() >> 11),
            request_timeout: Duration::from_millis(client_timeout_ms),
            progress: !args.json && std::io::stderr().is_terminal(),
            secured: Secured::default(),
        })
    }
}

/// `ringkv bench`: runs, then prints the summary (JSON with `--json`).
pub async fn run(
    nodes: &[String],
    client_timeout_ms: u64,
    secured: Secured,
    args: BenchArgs,
) -> anyhow::Result<ExitCode> {
    let mut config = Config::new(nodes, client_timeout_ms, &args)?;
    config.secured = secured;
    let summary = execute(&config).await?;
    if summary.load_errors > 0 {
        eprintln!(
            "warning: {} load writes failed; reads of those keys count as errors",
            summary.load_errors
        );
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", summary.to_json())?;
    } else {
        write!(stdout, "{}", summary.to_text(config.workload))?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a whole benchmark (setup, load, run) and summarises it.
pub async fn execute(config: &Config) -> anyhow::Result<Summary> {
    let mut targets = Vec::with_capacity(config.nodes.len());
    for url in &config.nodes {
        targets.push(Target::resolve(url, &config.secured).await?);
    }
    let etcd_api = match config.protocol {
        Protocol::Etcd => requests::detect_etcd_api(&targets[0], config.request_timeout).await?,
        Protocol::Ringkv => "",
    };
    let requests = RequestsConfig {
        protocol: config.protocol,
        // A fresh tag per run keeps workload w's keys never-written.
        keys: KeySpace::new(&config.key_prefix, rand::random()),
        values: value_pool(config.value_bytes, config.seed),
        value_bytes: config.value_bytes,
        r: config.r,
        w: config.w,
        etcd_api,
    };
    let mut workers = Vec::with_capacity(config.concurrency);
    for i in 0..config.concurrency {
        let target = &targets[i % targets.len()];
        let mut conn = Conn::new(target, config.request_timeout);
        conn.connect()
            .await
            .map_err(|failure| anyhow::anyhow!("{failure:?}"))
            .with_context(|| format!("connection {i} to {}", target.url))?;
        let seed = config.seed.wrapping_add(i as u64);
        workers.push(Worker::new(
            conn,
            Requests::new(&requests, target, i)?,
            seed,
        ));
    }
    let chooser = match config.zipf {
        Some(exponent) => KeyChooser::zipf(config.keys, exponent).map_err(anyhow::Error::msg)?,
        None => KeyChooser::uniform(config.keys),
    };
    let keep_contexts =
        config.protocol == Protocol::Ringkv && matches!(config.workload, Workload::A | Workload::B);
    let shared = Arc::new(Shared {
        workload: config.workload,
        protocol: config.protocol,
        chooser,
        keys: config.keys,
        expect_found: config.load && config.workload.uses_loaded_keys(),
        keep_contexts,
        contexts: ContextTable::new(if keep_contexts { config.keys } else { 1 }),
        next_load: AtomicU64::new(0),
        next_insert: AtomicU64::new(0),
        done_ops: AtomicU64::new(0),
    });

    let mut load = LoadReport::default();
    if config.load {
        let started = Instant::now();
        let bar = progress_bar(
            config,
            config.keys,
            "load   [{wide_bar}] {pos}/{len} keys {per_sec}",
        );
        let ticker = spawn_ticker(bar.clone(), shared.clone(), None);
        workers = join_all(
            workers,
            |mut worker, shared| async move {
                worker.load(&shared).await;
                (worker, ())
            },
            &shared,
        )
        .await?
        .into_iter()
        .map(|(worker, ())| worker)
        .collect();
        ticker.abort();
        bar.finish_and_clear();
        load = LoadReport {
            ran: true,
            elapsed: started.elapsed(),
            errors: workers.iter().map(|w| w.load_errors).sum(),
        };
        if let Some(why) = workers.iter().find_map(|w| w.first_load_error.as_ref()) {
            eprintln!("warning: {why}");
        }
    }

    shared.done_ops.store(0, Ordering::Relaxed);
    let started = Instant::now();
    let record_from = started + config.warmup;
    let until = record_from + config.duration;
    let total_ms = u64::try_from((until - started).as_millis()).unwrap_or(u64::MAX);
    let bar = progress_bar(config, total_ms, "{prefix:7} [{wide_bar}] {msg}");
    let ticker = spawn_ticker(bar.clone(), shared.clone(), Some((started, record_from)));
    let finished = join_all(
        workers,
        move |mut worker, shared| async move {
            let stopped = worker.run(&shared, record_from, until).await;
            (worker, stopped)
        },
        &shared,
    )
    .await?;
    ticker.abort();
    bar.finish_and_clear();

    let mut stats = Stats::new();
    let mut last_stop = record_from;
    for (worker, stopped) in &finished {
        stats.merge(&worker.stats);
        last_stop = last_stop.max(*stopped);
    }
    let info = RunInfo {
        workload: config.workload,
        protocol: config.protocol.name(),
        nodes: targets.iter().map(|t| t.url.clone()).collect(),
        concurrency: config.concurrency,
        keys: config.keys,
        value_bytes: config.value_bytes,
        zipf: config.zipf,
        warmup: config.warmup,
        seed: config.seed,
    };
    Ok(Summary::new(&info, &stats, last_stop - record_from, load))
}

/// Random letters and digits that values are windows of: `value_bytes` plus
/// [`VALUE_WINDOWS`] - 1, so there are that many distinct values.
fn value_pool(value_bytes: usize, seed: u64) -> Bytes {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..value_bytes + VALUE_WINDOWS - 1)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect::<Vec<u8>>()
        .into()
}

/// Runs `task` for every worker on its own tokio task and collects the results
/// in worker order.
async fn join_all<F, Fut, T>(
    workers: Vec<Worker>,
    task: F,
    shared: &Arc<Shared>,
) -> anyhow::Result<Vec<(Worker, T)>>
where
    F: Fn(Worker, Arc<Shared>) -> Fut,
    Fut: Future<Output = (Worker, T)> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = workers
        .into_iter()
        .map(|worker| tokio::spawn(task(worker, shared.clone())))
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.context("a bench worker panicked")?);
    }
    Ok(results)
}

/// A progress bar of `len` steps on stderr, or a hidden one.
fn progress_bar(config: &Config, len: u64, template: &str) -> ProgressBar {
    if !config.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Redraws `bar` every [`PROGRESS_TICK`]: load progress from the op counter, or,
/// with `run = Some((started, record_from))`, elapsed time and the current rate.
fn spawn_ticker(
    bar: ProgressBar,
    shared: Arc<Shared>,
    run: Option<(Instant, Instant)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if bar.is_hidden() {
            return;
        }
        let mut interval = tokio::time::interval(PROGRESS_TICK);
        let mut last = (Instant::now(), 0u64);
        loop {
            interval.tick().await;
            let done = shared.done_ops.load(Ordering::Relaxed);
            let Some((started, record_from)) = run else {
                bar.set_position(done);
                continue;
            };
            let now = Instant::now();
            let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
            last = (now, done);
            bar.set_position(u64::try_from((now - started).as_millis()).unwrap_or(u64::MAX));
            bar.set_prefix(if now < record_from {
                "warm-up"
            } else {
                "measure"
            });
            bar.set_message(format!("{done} ops, {rate:.0} ops/s"));
        }
    })
}
