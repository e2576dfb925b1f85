//! Key names and key choice, pure and IO-free.
//!
//! A run touches two disjoint sets of keys. *Loaded* keys are `{prefix}{i}` for
//! `i` in `0..keys`: the load phase writes them all, and reads and updates choose
//! among them. *Inserted* keys (workload w) are `{prefix}w{tag}-{n}`, where `tag`
//! is eight hex digits drawn fresh for each run and `n` counts up from 0 across
//! all workers. The character after the prefix tells the sets apart (a decimal
//! digit or `w`), so an insert never lands on a loaded key, and the per-run tag
//! keeps two runs with the same prefix from inserting the same key.
//!
//! Loaded keys are chosen uniformly or by a Zipf law over their index (index 0 is
//! the hottest). The index is not scrambled as YCSB does: the store places a key
//! by the hash of its name, so neighbouring indexes already land on unrelated
//! replicas. Zipf sampling is `rand_distr`'s rejection sampler: O(1) time and
//! memory per draw for any key count, unlike a precomputed CDF.

use std::fmt::Write as _;

use rand::{Rng, RngExt as _};
use rand_distr::{Distribution as _, Zipf};

/// One key of a run, by its index in its set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyId {
    /// `{prefix}{i}`: written by the load phase, read and updated by the workload.
    Loaded(u64),
    /// `{prefix}w{tag}-{n}`: the `n`-th insert of this run.
    Inserted(u64),
}

/// How a run names its keys.
#[derive(Debug, Clone)]
pub struct KeySpace {
    /// Text before every key name, from `--key-prefix` (not escaped here).
    prefix: String,
    /// Distinguishes this run's inserted keys from every other run's.
    insert_tag: u32,
}

impl KeySpace {
    /// Keys named under `prefix`; inserted keys carry `insert_tag`.
    pub fn new(prefix: &str, insert_tag: u32) -> Self {
        Self {
            prefix: prefix.to_owned(),
            insert_tag,
        }
    }

    /// The `--key-prefix` text.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Appends what follows the prefix in `key`'s name: only ASCII digits, `w`,
    /// `-` and hex digits, which need no escaping in a URL path.
    pub fn push_suffix(&self, key: KeyId, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = match key {
            KeyId::Loaded(i) => write!(out, "{i}"),
            KeyId::Inserted(n) => write!(out, "w{:08x}-{n}", self.insert_tag),
        };
    }

    /// The full name of `key` (prefix and suffix).
    #[cfg(test)]
    pub fn name(&self, key: KeyId) -> String {
        let mut name = self.prefix.clone();
        self.push_suffix(key, &mut name);
        name
    }
}

/// Picks the loaded key that the next read or update touches.
#[derive(Debug, Clone)]
pub struct KeyChooser {
    /// Number of loaded keys; every choice is below it.
    keys: u64,
    law: Law,
}

#[derive(Debug, Clone)]
enum Law {
    Uniform,
    /// Zipf over ranks 1..=keys; rank r is index r - 1.
    Zipf(Zipf<f64>),
}

impl KeyChooser {
    /// Uniform choice among `keys` keys (at least 1).
    pub fn uniform(keys: u64) -> Self {
        assert!(keys > 0, "a key chooser needs at least one key");
        Self {
            keys,
            law: Law::Uniform,
        }
    }

    /// Zipf choice among `keys` keys with `exponent` (0 is uniform, 0.99 is
    /// YCSB's default skew); `Err` explains a bad exponent.
    pub fn zipf(keys: u64, exponent: f64) -> Result<Self, String> {
        assert!(keys > 0, "a key chooser needs at least one key");
        if !exponent.is_finite() || exponent < 0.0 {
            return Err(format!(
                "the Zipf exponent must be finite and >= 0, not {exponent}"
            ));
        }
        // Key counts are far below 2^53, so the f64 is exact.
        let zipf = Zipf::new(keys as f64, exponent).map_err(|e| e.to_string())?;
        Ok(Self {
            keys,
            law: Law::Zipf(zipf),
        })
    }

    /// The index of the next loaded key, in `0..keys`.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match &self.law {
            Law::Uniform => rng.random_range(0..self.keys),
            Law::Zipf(zipf) => {
                // Samples are whole numbers in 1..=keys; the clamp guards against
                // a float rounding past either end.
                let rank = zipf.sample(rng) as u64;
                rank.clamp(1, self.keys) - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::SmallRng;

    use super::*;

    const SEED: u64 = 0x5eed_0001;

    fn counts(chooser: &KeyChooser, keys: u64, draws: usize) -> Vec<u64> {
        println!("seed {SEED:#x}");
        let mut rng = SmallRng::seed_from_u64(SEED);
        let mut counts = vec![0u64; keys as usize];
        for _ in 0..draws {
            let i = chooser.next(&mut rng);
            assert!(i < keys, "choice {i} outside 0..{keys}");
            counts[i as usize] += 1;
        }
        counts
    }

    #[test]
    fn uniform_choices_stay_in_range_and_spread_evenly() {
        // Proves uniform choices never leave 0..keys and every key gets about its share.
        let counts = counts(&KeyChooser::uniform(100), 100, 200_000);
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // Expected 2,000 each; 5 standard deviations is about 220.
        assert!(*min > 1_700 && *max < 2_300, "min {min} max {max}");
    }

    #[test]
    fn zipf_choices_are_skewed_toward_low_indexes() {
        // Proves Zipf(0.99) makes low indexes hot: the top 1% of 1,000 keys takes
        // about 39% of draws (H(10)/H(1000) for s=0.99), and frequency falls with rank.
        let keys = 1_000;
        let counts = counts(&KeyChooser::zipf(keys, 0.99).unwrap(), keys, 200_000);
        let top_share = counts[..10].iter().sum::<u64>() as f64 / 200_000.0;
        assert!(
            (0.35..0.44).contains(&top_share),
            "top-10 share {top_share}"
        );
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[100]);
        let tail_share = counts[500..].iter().sum::<u64>() as f64 / 200_000.0;
        assert!(tail_share < 0.15, "bottom-half share {tail_share}");
    }

    #[test]
    fn zipf_zero_is_uniform_and_bad_exponents_are_refused() {
        // Proves exponent 0 degenerates to uniform and negative or NaN exponents are errors.
        let counts = counts(&KeyChooser::zipf(10, 0.0).unwrap(), 10, 100_000);
        assert!(
            counts.iter().all(|c| (9_000..11_000).contains(c)),
            "{counts:?}"
        );
        assert!(KeyChooser::zipf(10, -0.5).is_err());
        assert!(KeyChooser::zipf(10, f64::NAN).is_err());
        assert!(KeyChooser::zipf(10, f64::INFINITY).is_err());
    }

    #[test]
    fn a_single_key_is_always_chosen() {
        // Proves the edge of one key works for both laws (no range or rank underflow).
        let mut rng = SmallRng::seed_from_u64(SEED);
        for chooser in [KeyChooser::uniform(1), KeyChooser::zipf(1, 1.2).unwrap()] {
            assert!((0..1_000).all(|_| chooser.next(&mut rng) == 0));
        }
    }

    #[test]
    fn inserted_keys_never_collide_with_loaded_keys_or_other_runs() {
        // Proves the two key sets are disjoint, and two runs' inserts differ.
        let space = KeySpace::new("bench-", 0xabc);
        let other_run = KeySpace::new("bench-", 0xabd);
        let loaded: std::collections::HashSet<String> =
            (0..20_000).map(|i| space.name(KeyId::Loaded(i))).collect();
        for n in 0..20_000 {
            let name = space.name(KeyId::Inserted(n));
            assert!(!loaded.contains(&name), "{name} is also a loaded key");
            assert_ne!(name, other_run.name(KeyId::Inserted(n)));
        }
        assert_eq!(space.name(KeyId::Loaded(42)), "bench-42");
        assert_eq!(space.name(KeyId::Inserted(7)), "bench-w00000abc-7");
    }

    #[test]
    fn suffixes_need_no_url_escaping() {
        // Proves a suffix can be appended to an already-escaped path prefix as is.
        let space = KeySpace::new("p/ x", u32::MAX);
        for key in [KeyId::Loaded(u64::MAX), KeyId::Inserted(u64::MAX)] {
            let mut suffix = String::new();
            space.push_suffix(key, &mut suffix);
            assert_eq!(
                ringkv_client::encode_key(suffix.as_bytes()).unwrap(),
                suffix
            );
        }
    }
}
