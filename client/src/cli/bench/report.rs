//! What a run measured: per-worker [`Stats`], merged once at the end, and the
//! [`Summary`] printed for people or as one JSON object.
//!
//! Latencies go into HdrHistograms in microseconds with 3 significant digits
//! (so p99.9 is exact to 0.1%), one per operation type and worker: a worker
//! records without sharing anything, and the histograms are added up after the
//! run. They resize themselves, so a worker that only ever saw sub-millisecond
//! answers holds a few kilobytes.
//!
//! Every operation that finished in the measured window counts in `ops` and in
//! the latency percentiles, errors included (an error's latency is the time to
//! the error answer or the client timeout): throughput and latency describe the
//! same set of operations. A run with `errors > 0` measured a cluster that was
//! failing and is no throughput figure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::{Op, Workload};

/// Significant digits the histograms keep.
const HISTOGRAM_SIGFIGS: u8 = 3;

/// What one worker (or, after merging, the whole run) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency in microseconds per operation type, indexed by [`Op::index`].
    latency_us: [Histogram<u64>; 3],
    /// Operations that failed, by cause.
    pub errors: ErrorTally,
    /// Reads answered 300: the key held concurrent values (an ok read).
    pub siblings: u64,
    /// Reads answered "no such key" (an error when the load phase wrote the key).
    pub not_found: u64,
}

/// Failed operations by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorTally {
    /// Answers with a status the operation does not expect, by status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Operations with no answer within the client timeout.
    pub timeouts: u64,
    /// Operations that failed to connect, send or read.
    pub transport: u64,
    /// Reads that found no value for a key the load phase wrote.
    pub missing: u64,
    /// The first error's description, to say what went wrong.
    pub first: Option<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Self {
        let histogram =
            || Histogram::new(HISTOGRAM_SIGFIGS).expect("3 significant digits are supported");
        Self {
            latency_us: [histogram(), histogram(), histogram()],
            errors: ErrorTally::default(),
            siblings: 0,
            not_found: 0,
        }
    }

    /// Records one finished operation (ok or not) and its latency.
    pub fn record(&mut self, op: Op, latency: Duration) {
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let histogram = &mut self.latency_us[op.index()];
        // `record` grows the histogram; `saturating_record` alone would clamp
        // everything to its initial range of about 2 ms.
        if histogram.record(latency_us).is_err() {
            histogram.saturating_record(latency_us);
        }
    }

    /// Adds `other` (another worker's statistics) into these.
    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.latency_us.iter_mut().zip(&other.latency_us) {
            mine.add(theirs)
                .expect("auto-resizing histograms accept any value");
        }
        self.errors.merge(&other.errors);
        self.siblings += other.siblings;
        self.not_found += other.not_found;
    }

    /// Operations of type `op` recorded.
    pub fn ops_of(&self, op: Op) -> u64 {
        self.latency_us[op.index()].len()
    }

    /// Every operation recorded.
    #[cfg(test)]
    pub fn ops(&self) -> u64 {
        self.latency_us.iter().map(Histogram::len).sum()
    }

    /// The latencies of every operation type together.
    fn all_latency_us(&self) -> Histogram<u64> {
        let mut all = self.latency_us[0].clone();
        for h in &self.latency_us[1..] {
            all.add(h)
                .expect("auto-resizing histograms accept any value");
        }
        all
    }
}

impl ErrorTally {
    /// Counts an answer with an unexpected `status`.
    pub fn status(&mut self, status: u16, op: Op) {
        *self.by_status.entry(status).or_default() += 1;
        self.first
            .get_or_insert_with(|| format!("{} answered status {status}", op.name()));
    }

    /// Counts an operation that got no answer in time.
    pub fn timeout(&mut self, op: Op, timeout: Duration) {
        self.timeouts += 1;
        self.first
            .get_or_insert_with(|| format!("{} got no answer within {timeout:?}", op.name()));
    }

    /// Counts a read that found no value although the load phase wrote the key.
    pub fn missing(&mut self, op: Op) {
        self.missing += 1;
        self.first
            .get_or_insert_with(|| format!("{} found no value for a loaded key", op.name()));
    }

    /// Counts an operation that failed in the network or HTTP layer.
    pub fn transport(&mut self, op: Op, why: &str) {
        self.transport += 1;
        self.first
            .get_or_insert_with(|| format!("{} failed: {why}", op.name()));
    }

    /// All errors counted.
    pub fn total(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.timeouts + self.transport + self.missing
    }

    fn merge(&mut self, other: &ErrorTally) {
        for (status, count) in &other.by_status {
            *self.by_status.entry(*status).or_default() += count;
        }
        self.timeouts += other.timeouts;
        self.transport += other.transport;
        self.missing += other.missing;
        if self.first.is_none() {
            self.first.clone_from(&other.first);
        }
    }

    /// Counts by cause, named `status_503`, `timeout`, `transport`, `not_found`.
    fn kinds(&self) -> BTreeMap<String, u64> {
        let mut kinds: BTreeMap<String, u64> = self
            .by_status
            .iter()
            .map(|(status, count)| (format!("status_{status}"), *count))
            .collect();
        let others = [
            ("timeout", self.timeouts),
            ("transport", self.transport),
            ("not_found", self.missing),
        ];
        for (name, count) in others {
            if count > 0 {
                kinds.insert(name.to_owned(), count);
            }
        }
        kinds
    }
}

/// The run's setup, echoed in the report so a result says what produced it.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The workload.
    pub workload: Workload,
    /// `ringkv` or `etcd`.
    pub protocol: &'static str,
    /// Node base URLs, as given.
    pub nodes: Vec<String>,
    /// Connections, one per worker.
    pub concurrency: usize,
    /// Loaded keys.
    pub keys: u64,
    /// Bytes per written value.
    pub value_bytes: usize,
    /// Zipf exponent of key choice; `None` for uniform.
    pub zipf: Option<f64>,
    /// Unrecorded warm-up before the measured window.
    pub warmup: Duration,
    /// Seed of the workers' RNGs (worker i uses a seed derived from it and i).
    pub seed: u64,
}

/// How the load phase went.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadReport {
    /// Whether the load phase ran (not `--no-load`).
    pub ran: bool,
    /// Its wall time.
    pub elapsed: Duration,
    /// Writes of the load phase that failed.
    pub errors: u64,
}

/// One operation type's share of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpSummary {
    /// Operations of this type.
    pub ops: u64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile latency, milliseconds.
    pub p999_ms: f64,
}

/// The result of a run. Its first eight fields are the JSON contract of
/// README.md#benchmark, in that order; the rest are extras after them.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `a`, `b`, `c` or `w`.
    pub workload: &'static str,
    /// Operations finished in the measured window, errors included.
    pub ops: u64,
    /// Of those, the ones that failed.
    pub errors: u64,
    /// Length of the measured window, seconds (from its start until the last
    /// worker stopped).
    pub duration_s: f64,
    /// `ops / duration_s`.
    pub throughput_ops_s: f64,
    /// Median latency over all operations, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile latency, milliseconds.
    pub p999_ms: f64,
    /// Mean latency, milliseconds.
    pub mean_ms: f64,
    /// Highest latency, milliseconds.
    pub max_ms: f64,
    /// Reads finished.
    pub reads: u64,
    /// Updates finished.
    pub updates: u64,
    /// Inserts finished.
    pub inserts: u64,
    /// Reads that returned concurrent values (ok, counted apart).
    pub siblings: u64,
    /// Reads that found no value.
    pub not_found: u64,
    /// Errors by cause (`status_503`, `timeout`, `transport`, `not_found`).
    pub error_kinds: BTreeMap<String, u64>,
    /// The first error, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Per operation type, for the types the workload ran.
    pub per_op: BTreeMap<&'static str, OpSummary>,
    /// `ringkv` or `etcd`.
    pub protocol: &'static str,
    /// Node base URLs.
    pub nodes: Vec<String>,
    /// Connections.
    pub concurrency: usize,
    /// Loaded keys.
    pub keys: u64,
    /// Bytes per written value.
    pub value_bytes: usize,
    /// Zipf exponent, `null` for uniform keys.
    pub zipf: Option<f64>,
    /// Unrecorded warm-up, seconds.
    pub warmup_s: f64,
    /// RNG seed; rerun with `--seed` for the same operation sequence.
    pub seed: u64,
    /// Whether the load phase ran.
    pub loaded: bool,
    /// Wall time of the load phase, seconds.
    pub load_s: f64,
    /// Failed writes of the load phase.
    pub load_errors: u64,
}

/// Microseconds to milliseconds (exact to the microsecond in the output).
fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

/// `x` rounded to `digits` decimals, so the JSON does not carry float noise.
fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

fn percentiles(h: &Histogram<u64>) -> (f64, f64, f64) {
    (
        us_to_ms(h.value_at_quantile(0.5)),
        us_to_ms(h.value_at_quantile(0.99)),
        us_to_ms(h.value_at_quantile(0.999)),
    )
}

impl Summary {
    /// Summarises the merged `stats` of a measured window of length `measured`.
    pub fn new(info: &RunInfo, stats: &Stats, measured: Duration, load: LoadReport) -> Self {
        let all = stats.all_latency_us();
        let ops = all.len();
        let duration_s = measured.as_secs_f64();
        let throughput_ops_s = if duration_s > 0.0 {
            ops as f64 / duration_s
        } else {
            0.0
        };
        let (p50_ms, p99_ms, p999_ms) = percentiles(&all);
        let per_op = Op::ALL
            .into_iter()
            .filter(|op| stats.ops_of(*op) > 0)
            .map(|op| {
                let h = &stats.latency_us[op.index()];
                let (p50_ms, p99_ms, p999_ms) = percentiles(h);
                let summary = OpSummary {
                    ops: h.len(),
                    p50_ms,
                    p99_ms,
                    p999_ms,
                };
                (op.name(), summary)
            })
            .collect();
        Self {
            workload: info.workload.name(),
            ops,
            errors: stats.errors.total(),
            duration_s: round(duration_s, 3),
            throughput_ops_s: round(throughput_ops_s, 1),
            p50_ms,
            p99_ms,
            p999_ms,
            mean_ms: round(all.mean() / 1_000.0, 3),
            max_ms: us_to_ms(all.max()),
            reads: stats.ops_of(Op::Read),
            updates: stats.ops_of(Op::Update),
            inserts: stats.ops_of(Op::Insert),
            siblings: stats.siblings,
            not_found: stats.not_found,
            error_kinds: stats.errors.kinds(),
            first_error: stats.errors.first.clone(),
            per_op,
            protocol: info.protocol,
            nodes: info.nodes.clone(),
            concurrency: info.concurrency,
            keys: info.keys,
            value_bytes: info.value_bytes,
            zipf: info.zipf,
            warmup_s: round(info.warmup.as_secs_f64(), 3),
            seed: info.seed,
            loaded: load.ran,
            load_s: round(load.elapsed.as_secs_f64(), 3),
            load_errors: load.errors,
        }
    }

    /// The summary as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a summary always serialises")
    }

    /// The summary for people, several lines ending in a newline.
    pub fn to_text(&self, workload: Workload) -> String {
        let mut t = String::new();
        let keys = match self.zipf {
            Some(s) => format!("zipf {s}"),
            None => "uniform".to_owned(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            t,
            "workload {} ({}), {} protocol, {} connections over {} node(s)",
            self.workload,
            workload.describe(),
            self.protocol,
            self.concurrency,
            self.nodes.len()
        );
        let _ = writeln!(
            t,
            "keys {} ({keys}), values {} B, warm-up {} s, seed {}",
            self.keys, self.value_bytes, self.warmup_s, self.seed
        );
        if self.loaded {
            let _ = writeln!(
                t,
                "load        {} keys in {:.2} s, {} errors",
                self.keys, self.load_s, self.load_errors
            );
        }
        let _ = writeln!(
            t,
            "ops         {} in {:.2} s = {:.0} ops/s",
            self.ops, self.duration_s, self.throughput_ops_s
        );
        let _ = write!(t, "errors      {}", self.errors);
        if self.errors > 0 {
            let kinds: Vec<String> = self
                .error_kinds
                .iter()
                .map(|(kind, count)| format!("{kind} {count}"))
                .collect();
            let _ = write!(t, " ({})", kinds.join(", "));
            if let Some(first) = &self.first_error {
                let _ = write!(t, "; first: {first}");
            }
        }
        t.push('\n');
        let _ = writeln!(
            t,
            "latency     p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms
        );
        for (name, op) in &self.per_op {
            let _ = writeln!(
                t,
                "  {name:<9} {} ops  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms",
                op.ops, op.p50_ms, op.p99_ms, op.p999_ms
            );
        }
        if self.reads > 0 {
            let _ = writeln!(
                t,
                "reads       {} with siblings, {} not found",
                self.siblings, self.not_found
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            workload: Workload::A,
            protocol: "ringkv",
            nodes: vec!["http://127.0.0.1:8001".to_owned()],
            concurrency: 4,
            keys: 1_000,
            value_bytes: 100,
            zipf: None,
            warmup: Duration::from_secs(1),
            seed: 7,
        }
    }

    /// Stats of one worker holding latencies `from..=to` microseconds for `op`.
    fn stats_with(op: Op, from: u64, to: u64) -> Stats {
        let mut stats = Stats::new();
        for us in from..=to {
            stats.record(op, Duration::from_micros(us));
        }
        stats
    }

    #[test]
    fn merged_worker_histograms_give_the_run_percentiles() {
        // Proves merging adds counts across workers and types, and percentiles come
        // out in milliseconds from microsecond samples (1..=1000 us, p50 = 0.5 ms).
        let mut run = Stats::new();
        run.merge(&stats_with(Op::Read, 1, 500));
        run.merge(&stats_with(Op::Update, 501, 1_000));
        let mut failing = Stats::new();
        failing.errors.status(503, Op::Update);
        failing.errors.timeout(Op::Read, Duration::from_secs(1));
        failing.siblings = 3;
        run.merge(&failing);

        assert_eq!(run.ops(), 1_000);
        assert_eq!((run.ops_of(Op::Read), run.ops_of(Op::Update)), (500, 500));
        let summary = Summary::new(&info(), &run, Duration::from_secs(2), LoadReport::default());
        assert_eq!(summary.ops, 1_000);
        assert_eq!(summary.throughput_ops_s, 500.0);
        assert!((summary.p50_ms - 0.5).abs() < 0.001, "{}", summary.p50_ms);
        assert!((summary.p99_ms - 0.99).abs() < 0.001, "{}", summary.p99_ms);
        assert!(
            (summary.p999_ms - 0.999).abs() < 0.001,
            "{}",
            summary.p999_ms
        );
        assert!((summary.max_ms - 1.0).abs() < 0.001, "{}", summary.max_ms);
        assert_eq!(summary.errors, 2);
        assert_eq!(summary.siblings, 3);
        assert_eq!(
            summary.error_kinds,
            BTreeMap::from([("status_503".to_owned(), 1), ("timeout".to_owned(), 1)])
        );
        assert_eq!(
            summary.first_error.as_deref(),
            Some("update answered status 503")
        );
        assert_eq!(summary.per_op["read"].ops, 500);
        assert!((summary.per_op["update"].p50_ms - 0.75).abs() < 0.001);
        assert!(!summary.per_op.contains_key("insert"));
    }

    #[test]
    fn long_latencies_are_kept_not_clamped() {
        // Proves latencies far above the histograms' initial range (seconds, not
        // microseconds) come out at their value, to 3 significant digits.
        let mut stats = Stats::new();
        for ms in [5, 50, 500, 5_000] {
            stats.record(Op::Read, Duration::from_millis(ms));
        }
        let mut run = Stats::new();
        run.merge(&stats);
        let summary = Summary::new(&info(), &run, Duration::from_secs(1), LoadReport::default());
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001;
        assert!(near(summary.max_ms, 5_000.0), "{summary:?}");
        assert!(near(summary.p50_ms, 50.0), "{summary:?}");
        assert!(near(summary.per_op["read"].p999_ms, 5_000.0), "{summary:?}");
    }

    #[test]
    fn json_starts_with_the_eight_contract_keys_in_order() {
        // Proves the JSON object opens with README.md#benchmark's eight keys, named and
        // ordered as the contract says, with numbers as numbers.
        let summary = Summary::new(
            &info(),
            &stats_with(Op::Read, 100, 200),
            Duration::from_millis(1_500),
            LoadReport::default(),
        );
        let json = summary.to_json();
        assert!(!json.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // serde_json's map sorts keys, so check order on the text itself.
        let contract = [
            "workload",
            "ops",
            "errors",
            "duration_s",
            "throughput_ops_s",
            "p50_ms",
            "p99_ms",
            "p999_ms",
        ];
        let positions: Vec<usize> = contract
            .iter()
            .map(|k| json.find(&format!("\"{k}\":")).unwrap_or(usize::MAX))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{json}");
        assert!(
            json.starts_with("{\"workload\":\"a\",\"ops\":101,"),
            "{json}"
        );
        for k in contract {
            assert!(keys.contains(&k), "{k} missing from {json}");
        }
        assert_eq!(value["duration_s"], 1.5);
        assert!(value["throughput_ops_s"].is_f64());
        assert!(value["p999_ms"].as_f64().unwrap() > 0.19);
    }

    #[test]
    fn empty_stats_summarise_to_zeros_not_nan() {
        // Proves a run that recorded nothing reports zeros (valid JSON), not NaN.
        let summary = Summary::new(
            &info(),
            &Stats::new(),
            Duration::ZERO,
            LoadReport::default(),
        );
        assert_eq!(
            (summary.ops, summary.throughput_ops_s, summary.p99_ms),
            (0, 0.0, 0.0)
        );
        assert!(summary.mean_ms.is_finite());
        serde_json::from_str::<serde_json::Value>(&summary.to_json()).unwrap();
    }

    #[test]
    fn text_summary_shows_throughput_percentiles_and_errors() {
        // Proves the human summary carries the headline figures and explains errors.
        let mut stats = stats_with(Op::Read, 1_000, 2_000);
        stats.errors.transport(Op::Read, "connection refused");
        let load = LoadReport {
            ran: true,
            elapsed: Duration::from_millis(2_500),
            errors: 0,
        };
        let text = Summary::new(&info(), &stats, Duration::from_secs(1), load).to_text(Workload::A);
        assert!(text.contains("workload a (50% read, 50% update)"), "{text}");
        assert!(
            text.contains("load        1000 keys in 2.50 s, 0 errors"),
            "{text}"
        );
        assert!(
            text.contains("ops         1001 in 1.00 s = 1001 ops/s"),
            "{text}"
        );
        assert!(
            text.contains("errors      1 (transport 1); first: read failed: connection refused"),
            "{text}"
        );
        assert!(text.contains("p50 1.500 ms"), "{text}");
        assert!(text.contains("  read      1001 ops"), "{text}");
    }
}
