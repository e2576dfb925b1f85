//! The simulator's randomness: one seeded generator per concern, so adding a draw in
//! one place (say, the network) does not reshuffle every other decision of a seed.

use ringkv_tests::workload::Rng;

/// The chaos workload's SplitMix64 generator, with the draws the simulator makes:
/// the same numbers for the same seed on every build.
#[derive(Debug, Clone)]
pub struct SimRng(Rng);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self(Rng::new(seed))
    }

    /// A generator for `stream` (a fixed name per concern) derived from `seed`.
    pub fn derive(seed: u64, stream: &str) -> Self {
        let mut h = seed ^ 0x51_7c_c1_b7_27_22_0a_95;
        for b in stream.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut rng = Self::new(h);
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// Uniform index below `n` (n > 0).
    pub fn index(&mut self, n: usize) -> usize {
        self.range(0, n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_independent() {
        // Same seed and stream: same numbers; another stream: others.
        let a: Vec<u64> = (0..3)
            .map({
                let mut r = SimRng::derive(5, "net");
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..3)
            .map({
                let mut r = SimRng::derive(5, "net");
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..3)
            .map({
                let mut r = SimRng::derive(5, "faults");
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = SimRng::new(1);
        assert!((0..1000).all(|_| r.range(3, 7) >= 3 && r.range(3, 7) < 7));
    }
}
