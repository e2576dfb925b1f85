//! The YCSB-style workloads and their operation mix, pure and IO-free.
//!
//! | workload | mix | YCSB's name |
//! |---|---|---|
//! | `a` | 50% read, 50% update | update heavy |
//! | `b` | 95% read, 5% update | read mostly |
//! | `c` | 100% read | read only |
//! | `w` | 100% insert of never-written keys | (the load phase, timed) |
//!
//! Each operation is drawn independently from the worker's seeded RNG, so a run's
//! mix converges on the ratio above without any coordination between workers.

use rand::{Rng, RngExt as _};

/// A workload: the `--workload` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// 50% reads, 50% updates.
    A,
    /// 95% reads, 5% updates.
    B,
    /// Reads only.
    C,
    /// Inserts of keys never written before.
    W,
}

/// One operation of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// GET of a loaded key.
    Read,
    /// PUT of a loaded key, with the freshest context this run has for it.
    Update,
    /// PUT of a new key, without a context.
    Insert,
}

impl Op {
    /// Every operation, in report order.
    pub const ALL: [Op; 3] = [Op::Read, Op::Update, Op::Insert];

    /// Index of the operation in [`Op::ALL`], for per-operation tables.
    pub fn index(self) -> usize {
        match self {
            Op::Read => 0,
            Op::Update => 1,
            Op::Insert => 2,
        }
    }

    /// The operation's name in reports: `read`, `update` or `insert`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::Insert => "insert",
        }
    }
}

impl Workload {
    /// The flag value: `a`, `b`, `c` or `w`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
            Workload::W => "w",
        }
    }

    /// The mix in words, for the human summary.
    pub fn describe(self) -> &'static str {
        match self {
            Workload::A => "50% read, 50% update",
            Workload::B => "95% read, 5% update",
            Workload::C => "read only",
            Workload::W => "insert only",
        }
    }

    /// Reads per 100 operations; the rest are updates (inserts for `w`).
    fn read_percent(self) -> u32 {
        match self {
            Workload::A => 50,
            Workload::B => 95,
            Workload::C => 100,
            Workload::W => 0,
        }
    }

    /// Draws the next operation.
    pub fn next_op<R: Rng + ?Sized>(self, rng: &mut R) -> Op {
        match self {
            Workload::W => Op::Insert,
            Workload::C => Op::Read,
            Workload::A | Workload::B => {
                if rng.random_range(0..100) < self.read_percent() {
                    Op::Read
                } else {
                    Op::Update
                }
            }
        }
    }

    /// Whether the workload reads or updates loaded keys (so a missing key is
    /// an anomaly once the load phase ran).
    pub fn uses_loaded_keys(self) -> bool {
        self != Workload::W
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::SmallRng;

    use super::*;

    const SEED: u64 = 0x5eed_0002;

    fn mix(workload: Workload, draws: u32) -> [u32; 3] {
        println!("seed {SEED:#x}");
        let mut rng = SmallRng::seed_from_u64(SEED);
        let mut counts = [0; 3];
        for _ in 0..draws {
            counts[workload.next_op(&mut rng).index()] += 1;
        }
        counts
    }

    #[test]
    fn workload_a_is_half_reads_half_updates() {
        // Proves a's mix converges on 50/50 (100k draws: one sigma is 0.16%).
        let [reads, updates, inserts] = mix(Workload::A, 100_000);
        assert_eq!(inserts, 0);
        assert_eq!(reads + updates, 100_000);
        assert!((49_000..51_000).contains(&reads), "reads {reads}");
    }

    #[test]
    fn workload_b_is_95_percent_reads() {
        // Proves b's mix converges on 95/5 (one sigma is 0.07%).
        let [reads, updates, inserts] = mix(Workload::B, 100_000);
        assert_eq!(inserts, 0);
        assert!((4_600..5_400).contains(&updates), "updates {updates}");
        assert_eq!(reads + updates, 100_000);
    }

    #[test]
    fn workloads_c_and_w_are_pure() {
        // Proves c only reads and w only inserts.
        assert_eq!(mix(Workload::C, 10_000), [10_000, 0, 0]);
        assert_eq!(mix(Workload::W, 10_000), [0, 0, 10_000]);
    }

    #[test]
    fn op_indexes_match_the_report_order() {
        // Proves `index` is the position in `ALL`, which per-operation tables rely on.
        for (i, op) in Op::ALL.into_iter().enumerate() {
            assert_eq!(op.index(), i, "{}", op.name());
        }
    }
}
