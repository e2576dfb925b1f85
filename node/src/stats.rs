//! Recent request rates and latency quantiles of this node, for the dashboard's live
//! charts (`GET /stats`): what the last few seconds looked like, not totals since
//! start (those are in `/metrics`, for Prometheus).
//!
//! A ring of one-second slots, each a log-scale latency histogram (four buckets per
//! doubling, so a quantile is within ~19% of the truth) plus read, write and error
//! counts. Recording is a few relaxed atomic adds, with no lock on the request path;
//! a snapshot merges the last [`WINDOW_S`] complete seconds. The caller passes the
//! time in (seconds since some start), so tests drive it without a clock.
//!
//! Caveat: a slot is reset by the first request of a new second, and a request of
//! that second that races the reset on another thread may be lost or counted in the
//! old second: the figures are for watching, not for billing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Seconds a snapshot covers (the complete seconds before the current one).
pub const WINDOW_S: u64 = 10;
/// The window, the second being filled and one being reset.
const SLOTS: usize = WINDOW_S as usize + 2;
/// Powers of two of microseconds covered: up to 2^36 µs, about 19 hours.
const OCTAVES: usize = 36;
/// Buckets per power of two.
const SUB_BUCKETS: usize = 4;
const BUCKETS: usize = OCTAVES * SUB_BUCKETS;

/// What a request was, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClass {
    Read,
    Write,
}

/// One second of requests.
#[derive(Debug)]
struct Slot {
    /// The second this slot holds (`u64::MAX`: none yet).
    second: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Slot {
    fn new() -> Self {
        Self {
            second: AtomicU64::new(u64::MAX),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Makes the slot hold `second`, clearing it if it held an older one.
    fn claim(&self, second: u64) {
        let held = self.second.load(Relaxed);
        if held != second
            && self
                .second
                .compare_exchange(held, second, Relaxed, Relaxed)
                .is_ok()
        {
            for counter in [&self.reads, &self.writes, &self.errors]
                .into_iter()
                .chain(self.buckets.iter())
            {
                counter.store(0, Relaxed);
            }
        }
    }
}

/// The recent requests of one node; see the module docs.
#[derive(Debug)]
pub struct RequestStats {
    slots: Box<[Slot]>,
    reads_total: AtomicU64,
    writes_total: AtomicU64,
    errors_total: AtomicU64,
}

impl Default for RequestStats {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::new()).collect(),
            reads_total: AtomicU64::new(0),
            writes_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
        }
    }
}

/// What the last [`WINDOW_S`] seconds looked like.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Seconds the rates are over: [`WINDOW_S`], or fewer just after start.
    pub window_s: u64,
    pub reads_per_s: f64,
    pub writes_per_s: f64,
    /// Answers with a 5xx status, per second.
    pub errors_per_s: f64,
    /// Latency quantiles in ms; `None` when no request was answered in the window.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub reads_total: u64,
    pub writes_total: u64,
    pub errors_total: u64,
}

impl RequestStats {
    /// Counts one answered request of `class` that took `latency_us`, answered in
    /// second `now_s`; `error` when the answer was a server error.
    pub fn record(&self, now_s: u64, class: OpClass, latency_us: u64, error: bool) {
        let slot = &self.slots[(now_s % SLOTS as u64) as usize];
        slot.claim(now_s);
        let (window, total) = match class {
            OpClass::Read => (&slot.reads, &self.reads_total),
            OpClass::Write => (&slot.writes, &self.writes_total),
        };
        window.fetch_add(1, Relaxed);
        total.fetch_add(1, Relaxed);
        if error {
            slot.errors.fetch_add(1, Relaxed);
            self.errors_total.fetch_add(1, Relaxed);
        }
        slot.buckets[bucket_of(latency_us)].fetch_add(1, Relaxed);
    }

    /// The complete seconds before `now_s` (at most [`WINDOW_S`], and none before
    /// second 0, so a node up for 3 s reports rates over 3 s).
    pub fn snapshot(&self, now_s: u64) -> Snapshot {
        let window_s = now_s.min(WINDOW_S);
        let first = now_s - window_s;
        let (mut reads, mut writes, mut errors) = (0u64, 0u64, 0u64);
        let mut merged = [0u64; BUCKETS];
        for slot in self.slots.iter() {
            let second = slot.second.load(Relaxed);
            if second < first || second >= now_s {
                continue;
            }
            reads += slot.reads.load(Relaxed);
            writes += slot.writes.load(Relaxed);
            errors += slot.errors.load(Relaxed);
            for (sum, bucket) in merged.iter_mut().zip(slot.buckets.iter()) {
                *sum += bucket.load(Relaxed);
            }
        }
        let per_s = |count: u64| {
            if window_s == 0 {
                0.0
            } else {
                count as f64 / window_s as f64
            }
        };
        Snapshot {
            window_s,
            reads_per_s: per_s(reads),
            writes_per_s: per_s(writes),
            errors_per_s: per_s(errors),
            p50_ms: quantile_us(&merged, 0.50).map(|us| us as f64 / 1000.0),
            p99_ms: quantile_us(&merged, 0.99).map(|us| us as f64 / 1000.0),
            reads_total: self.reads_total.load(Relaxed),
            writes_total: self.writes_total.load(Relaxed),
            errors_total: self.errors_total.load(Relaxed),
        }
    }
}

/// The bucket of a latency: below 4 µs one bucket per µs, then four per doubling.
fn bucket_of(latency_us: u64) -> usize {
    if latency_us < SUB_BUCKETS as u64 {
        return latency_us as usize;
    }
    let octave = 63 - latency_us.leading_zeros() as usize; // >= 2
    let sub = ((latency_us >> (octave - 2)) & 3) as usize;
    (octave * SUB_BUCKETS + sub).min(BUCKETS - 1)
}

/// The smallest latency (µs) of the bucket after `bucket`: what a quantile falling in
/// `bucket` is reported as, so that reported quantiles are never below the truth.
fn bucket_upper_us(bucket: usize) -> u64 {
    let next = bucket + 1;
    if next < 2 * SUB_BUCKETS {
        // Buckets 0-3 are single µs; 4-7 are unused (octaves 0 and 1 have none).
        return (next as u64).min(SUB_BUCKETS as u64);
    }
    let (octave, sub) = (next / SUB_BUCKETS, (next % SUB_BUCKETS) as u64);
    (4 + sub) << (octave - 2)
}

/// The `q` quantile of the counts, in µs; `None` when there are none.
fn quantile_us(buckets: &[u64; BUCKETS], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the sample at or above the quantile, 1-based.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (bucket, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(bucket_upper_us(bucket));
        }
    }
    unreachable!("the rank is at most the total")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bound_their_latencies() {
        // Proves every latency falls in a bucket whose reported upper edge is at or above
        // it and within 25% of it (four buckets per doubling), and that buckets grow
        // with latency.
        let mut last = 0;
        for us in (0..5000).chain([65_535, 1_000_000, 123_456_789]) {
            let b = bucket_of(us);
            assert!(b >= last, "bucket of {us} went down");
            last = b;
            let upper = bucket_upper_us(b);
            assert!(
                upper > us || upper == us.max(1),
                "{us} µs reported as {upper}"
            );
            assert!(
                upper as f64 <= (us.max(4) as f64) * 1.25 + 1.0,
                "{us} µs reported as {upper}"
            );
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn rates_are_over_complete_seconds_only() {
        // Proves the second being filled is left out and the rates divide by the
        // seconds covered: 30 reads in second 1 and 10 writes in second 2, seen from
        // second 3, are 10 reads/s and ~3.3 writes/s over 3 s.
        let stats = RequestStats::default();
        for _ in 0..30 {
            stats.record(1, OpClass::Read, 1000, false);
        }
        for _ in 0..10 {
            stats.record(2, OpClass::Write, 1000, true);
        }
        stats.record(3, OpClass::Read, 1000, false);
        let s = stats.snapshot(3);
        assert_eq!(s.window_s, 3);
        assert_eq!(s.reads_per_s, 10.0);
        assert!((s.writes_per_s - 10.0 / 3.0).abs() < 1e-9);
        assert!((s.errors_per_s - 10.0 / 3.0).abs() < 1e-9);
        assert_eq!(
            (s.reads_total, s.writes_total, s.errors_total),
            (31, 10, 10)
        );
    }

    #[test]
    fn old_seconds_leave_the_window_and_slots_are_reused() {
        // Proves a slot reused for a later second forgets the earlier one, and seconds
        // older than the window are not counted.
        let stats = RequestStats::default();
        stats.record(5, OpClass::Read, 10, false);
        let later = 5 + SLOTS as u64; // same slot
        stats.record(later, OpClass::Write, 10, false);
        let s = stats.snapshot(later + 1);
        assert_eq!(s.reads_per_s, 0.0);
        assert_eq!(s.writes_per_s, 1.0 / WINDOW_S as f64);
        assert_eq!(stats.snapshot(later + 1 + WINDOW_S).writes_per_s, 0.0);
        assert_eq!(stats.snapshot(later + 1 + WINDOW_S).p99_ms, None);
    }

    #[test]
    fn quantiles_come_from_the_window() {
        // Proves p50 and p99 pick the right sample: 98 requests of 1 ms and 2 of
        // 100 ms give p50 ~1 ms and p99 ~100 ms (within a bucket), never below.
        let stats = RequestStats::default();
        for i in 0..100 {
            let latency_us = if i < 98 { 1_000 } else { 100_000 };
            stats.record(7, OpClass::Read, latency_us, false);
        }
        let s = stats.snapshot(8);
        let (p50, p99) = (s.p50_ms.unwrap(), s.p99_ms.unwrap());
        assert!((1.0..=1.25).contains(&p50), "p50 {p50}");
        assert!((100.0..=125.0).contains(&p99), "p99 {p99}");
    }
}
