//! Which home replicas a read asks first: those that have answered reads quickly
//! lately, as Cassandra's dynamic snitch does.
//!
//! Every remote read's latency feeds a moving average per peer. A read that needs `k`
//! remote replies asks `k` peers, picked in preference-list order except that a peer
//! whose average is more than [`SLOWER_BY`] times another candidate's gives way to
//! the fastest one. A replica that is busy (being refilled by anti-entropy, taking a
//! transfer, on a loaded host) so drops off the critical path of reads while others
//! can answer, and reads keep to one replica per key while they are alike, which
//! keeps the record caches warm.
//!
//! A peer that is not asked gets no samples, so its average would stay where its
//! worst moment left it. A peer not sampled for [`PROBE_AFTER`] is therefore asked
//! as well, one read at a time: an extra reply the read does not wait for, which
//! refreshes the average and lets read repair check that replica.
//!
//! Failed calls count as at least [`FAILED_SAMPLE`], so a peer that refuses quickly
//! does not look fast, and so does a reply of "no such key" where another replica
//! had the key: a wiped replica being refilled answers fast and empty, and asking it
//! would cost the read a repair and the refill its share of the replica's time.
//!
//! The state is a small map behind a lock held for a lookup; nothing here reads a
//! clock (callers pass `now`), so the simulator runs it as is.
//!
//! Caveat: the averages are this node's view only; a peer that is slow for one
//! coordinator is avoided by that one alone.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Weight of a sample below a peer's average (one above replaces it).
const SAMPLE_WEIGHT: f64 = 0.25;
/// A candidate gives way to a faster one only when it is slower than this factor,
/// so that noise between alike replicas does not move reads around.
pub const SLOWER_BY: f64 = 1.5;
/// A peer not sampled for this long is asked by one extra read.
pub const PROBE_AFTER: Duration = Duration::from_millis(250);
/// What a failed call counts as, at the least.
pub const FAILED_SAMPLE: Duration = Duration::from_millis(25);

#[derive(Debug, Clone, Copy)]
struct Score {
    /// The moving average, `None` until the first reply.
    average_us: Option<f64>,
    /// When the last sample arrived, or a probe was sent.
    touched: Instant,
}

impl Score {
    fn new(now: Instant) -> Self {
        Self {
            average_us: None,
            touched: now,
        }
    }

    /// What asking this peer is expected to cost; a peer never answered counts as
    /// free, so the first reads measure it.
    fn cost(&self) -> f64 {
        self.average_us.unwrap_or(0.0)
    }
}

/// The per-peer read latencies of this coordinator.
#[derive(Debug, Default)]
pub struct ReadLatencies {
    scores: Mutex<BTreeMap<String, Score>>,
}

/// Which remote replicas a read asks at once: `order` lists indices into the
/// candidates, the first `ask` of them asked now and the rest kept for failures and
/// speculation, in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    pub order: Vec<usize>,
    pub ask: usize,
}

impl ReadLatencies {
    /// Records one read call to `peer` that took `elapsed` and succeeded or not. A
    /// sample above the average replaces it (the peak), one below pulls it down by
    /// [`SAMPLE_WEIGHT`]: slowdowns count at once, recoveries over a few replies.
    pub fn record(&self, peer: &str, elapsed: Duration, ok: bool, now: Instant) {
        let elapsed = if ok {
            elapsed
        } else {
            elapsed.max(FAILED_SAMPLE)
        };
        let sample_us = elapsed.as_secs_f64() * 1e6;
        self.update(peer, now, |score| {
            score.average_us = Some(match score.average_us {
                Some(average) if sample_us < average => {
                    average + SAMPLE_WEIGHT * (sample_us - average)
                }
                _ => sample_us,
            });
            score.touched = now;
        });
    }

    /// Notes that `peer` answered a read with "no such key" where another replica
    /// had it: for the order of reads that counts as a failed call, so reads turn to
    /// the replicas that have the data while this one is refilled (a wiped replica
    /// answers "missing" for most keys until anti-entropy or transfers fill it), and
    /// probes bring it back once it answers alike again. An older version (a write
    /// still arriving) is not counted: it is normal under concurrent writes.
    pub fn missing(&self, peer: &str, now: Instant) {
        let penalty_us = FAILED_SAMPLE.as_secs_f64() * 1e6;
        self.update(peer, now, |score| {
            score.average_us = Some(score.average_us.map_or(penalty_us, |a| a.max(penalty_us)));
        });
    }

    /// Runs `change` on `peer`'s score, made at `now` if it has none yet.
    fn update(&self, peer: &str, now: Instant, change: impl FnOnce(&mut Score)) {
        let mut scores = self.scores.lock().expect("read latencies lock");
        change(
            scores
                .entry(peer.to_owned())
                .or_insert_with(|| Score::new(now)),
        );
    }

    /// Plans a read that needs `needed` replies from `candidates` (peer ids in
    /// preference-list order). A peer left out and not heard from for
    /// [`PROBE_AFTER`] is added as a probe, and marked so that concurrent reads do
    /// not probe it too.
    pub fn plan(&self, candidates: &[&str], needed: usize, now: Instant) -> ReadPlan {
        let mut scores = self.scores.lock().expect("read latencies lock");
        let cost = |i: usize| scores.get(candidates[i]).map_or(0.0, Score::cost);
        let mut left: Vec<usize> = (0..candidates.len()).collect();
        let mut order = Vec::with_capacity(candidates.len());
        while order.len() < needed.min(candidates.len()) {
            let first = left[0];
            let cheapest = *left
                .iter()
                .min_by(|a, b| cost(**a).total_cmp(&cost(**b)))
                .expect("candidates left");
            let pick = if cost(first) > SLOWER_BY * cost(cheapest) {
                cheapest
            } else {
                first
            };
            left.retain(|i| *i != pick);
            order.push(pick);
        }
        let mut ask = order.len();
        let unheard = left.iter().position(|i| {
            scores
                .get(candidates[*i])
                .is_some_and(|s| now.saturating_duration_since(s.touched) >= PROBE_AFTER)
        });
        if let Some(at) = unheard {
            let probe = left.remove(at);
            if let Some(score) = scores.get_mut(candidates[probe]) {
                score.touched = now;
            }
            order.push(probe);
            ask += 1;
        }
        order.extend(left);
        ReadPlan { order, ask }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn sampled(samples: &[(&str, Duration)], now: Instant) -> ReadLatencies {
        let latencies = ReadLatencies::default();
        for (peer, elapsed) in samples {
            latencies.record(peer, *elapsed, true, now);
        }
        latencies
    }

    fn expected(order: &[usize], ask: usize) -> ReadPlan {
        ReadPlan {
            order: order.to_vec(),
            ask,
        }
    }

    /// Answers n2's and n3's probes in 1 ms, one probe interval apart, until reads ask
    /// n2 first again; returns how many rounds of probes that took, at most `max`.
    fn probes_until_n2_is_first(latencies: &ReadLatencies, now: &mut Instant, max: u32) -> u32 {
        let mut probes = 0;
        while latencies.plan(&["n2", "n3"], 1, *now).order[0] != 0 {
            probes += 1;
            assert!(probes < max, "n2 never came back");
            latencies.record("n2", MS, true, *now);
            latencies.record("n3", MS, true, *now);
            *now += PROBE_AFTER;
        }
        probes
    }

    #[test]
    fn alike_replicas_are_asked_in_preference_order() {
        // Within the tolerance, the preference list decides, so one key's reads stay on one replica.
        let now = Instant::now();
        let latencies = sampled(&[("n2", MS), ("n3", MS * 3 / 4)], now);
        let plan = latencies.plan(&["n2", "n3"], 1, now);
        assert_eq!(plan, expected(&[0, 1], 1));
    }

    #[test]
    fn a_slow_replica_gives_way_to_the_fastest() {
        // n2 is over SLOWER_BY times n4, so n4 goes first; n2 is within it of n3, so n2 keeps its place.
        let now = Instant::now();
        let latencies = sampled(&[("n2", MS * 4), ("n3", MS * 3), ("n4", MS)], now);
        let plan = latencies.plan(&["n2", "n3", "n4"], 2, now);
        assert_eq!(plan, expected(&[2, 0, 1], 2));
    }

    #[test]
    fn an_unmeasured_peer_is_tried_first() {
        // A peer never sampled counts as fast, so the first reads measure it.
        let now = Instant::now();
        let latencies = sampled(&[("n2", MS)], now);
        let plan = latencies.plan(&["n2", "n3"], 1, now);
        assert_eq!(plan.order, vec![1, 0]);
    }

    #[test]
    fn a_peer_not_heard_from_is_probed_once() {
        // After PROBE_AFTER without samples, one read asks the slow peer as well; the next does not.
        let start = Instant::now();
        let latencies = sampled(&[("n2", MS * 10), ("n3", MS)], start);
        let later = start + PROBE_AFTER;
        latencies.record("n3", MS, true, later);
        let plan = latencies.plan(&["n2", "n3"], 1, later);
        assert_eq!(plan, expected(&[1, 0], 2));
        let next = latencies.plan(&["n2", "n3"], 1, later);
        assert_eq!(next, expected(&[1, 0], 1));
    }

    #[test]
    fn a_recovered_peer_comes_back_after_a_few_probes() {
        // Fast replies to probes pull the average down until the preference list decides again.
        let mut now = Instant::now();
        let latencies = sampled(&[("n2", MS * 5), ("n3", MS)], now);
        let probes = probes_until_n2_is_first(&latencies, &mut now, 20);
        assert!(
            probes >= 2,
            "one fast reply should not undo a slow average: {probes}"
        );
    }

    #[test]
    fn a_replica_missing_keys_is_asked_last_until_it_answers_alike() {
        // A replica that lacks keys others have (being refilled) gives way; fresh replies to probes bring it back.
        let mut now = Instant::now();
        let latencies = sampled(&[("n2", MS), ("n3", MS)], now);
        latencies.missing("n2", now);
        assert_eq!(latencies.plan(&["n2", "n3"], 1, now).order, vec![1, 0]);
        probes_until_n2_is_first(&latencies, &mut now, 40);
    }

    #[test]
    fn a_failing_peer_does_not_look_fast() {
        // A refused call returns at once, but counts as FAILED_SAMPLE.
        let now = Instant::now();
        let latencies = ReadLatencies::default();
        latencies.record("n2", Duration::from_micros(10), false, now);
        latencies.record("n3", MS, true, now);
        assert_eq!(latencies.plan(&["n2", "n3"], 1, now).order, vec![1, 0]);
    }

    #[test]
    fn every_candidate_appears_once() {
        // However scores fall, the plan is a permutation and asks what is needed plus at most one probe.
        let now = Instant::now();
        let ids = ["a", "b", "c", "d", "e"];
        for seed in 0..200u64 {
            let latencies = ReadLatencies::default();
            for (i, id) in ids.iter().enumerate() {
                let us = (seed.wrapping_mul(2_654_435_761) >> (i * 5)) % 5_000 + 1;
                latencies.record(id, Duration::from_micros(us), true, now);
            }
            let needed = (seed % 4) as usize;
            let at = now + PROBE_AFTER * (seed % 2) as u32;
            let plan = latencies.plan(&ids, needed, at);
            let mut sorted = plan.order.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4], "seed {seed}: {plan:?}");
            assert!(
                plan.ask == needed || plan.ask == needed + 1,
                "seed {seed}: {plan:?}"
            );
        }
    }
}
