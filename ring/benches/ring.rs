//! Micro-benchmarks of placement: the work every request does before it touches the
//! network, and the work every membership change does before it takes effect.
//!
//! - `token/key_bytes/*`: hashing a key to its [`Token`] (xxh3), for a typical short
//!   key and for the longest key the node accepts (`--max-key-bytes`, 1 KiB).
//! - `preference_list/members/*`: the first N = 3 distinct members for a token (a GET's
//!   home replicas), on rings of 3, 5 and 16 members at the default 64 vnodes.
//! - `candidates/members/*`: every member in replica order (a PUT's home replicas
//!   followed by its stand-ins), on the same rings.
//! - `placement/members/*`: key bytes to preference list, the whole placement cost of
//!   a GET.
//! - `ring_build/members/*`: building a ring from scratch, which a node does on every
//!   join or leave it learns about (the ring is immutable and swapped whole).
//!
//! Lookups cycle through 1024 precomputed tokens so that one lucky key does not sit in
//! the branch predictor and caches. Numbers from this machine are in
//! docs/benchmarks-micro.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringkv_ring::{NodeId, Ring, Token};

/// The node's default `--vnodes`.
const VNODES: usize = 64;
/// The node's default `--n`: replicas per key.
const REPLICAS: usize = 3;
/// Ring sizes measured: the smallest useful cluster, the usual test cluster, a large one.
const MEMBER_COUNTS: [usize; 3] = [3, 5, 16];
/// Distinct keys cycled through by the lookup benchmarks (a power of two).
const KEY_COUNT: usize = 1024;

fn members(count: usize) -> Vec<NodeId> {
    (1..=count).map(|i| NodeId(format!("node-{i}"))).collect()
}

fn keys() -> Vec<Vec<u8>> {
    (0..KEY_COUNT)
        .map(|i| format!("user:{i:011}").into_bytes())
        .collect()
}

fn tokens() -> Vec<Token> {
    keys().iter().map(|k| Token::of(k)).collect()
}

fn token(c: &mut Criterion) {
    let mut group = c.benchmark_group("token");
    let short = b"user:00000001234".to_vec();
    let longest = vec![b'k'; 1024];
    for key in [short, longest] {
        group.bench_with_input(BenchmarkId::new("key_bytes", key.len()), &key, |b, key| {
            b.iter(|| Token::of(black_box(key)))
        });
    }
    group.finish();
}

/// Benchmarks `lookup(ring, i)` on a ring of each of [`MEMBER_COUNTS`], `i` cycling
/// through the [`KEY_COUNT`] key indexes.
fn per_ring_size<R>(c: &mut Criterion, name: &str, lookup: impl Fn(&Ring, usize) -> R) {
    let mut group = c.benchmark_group(name);
    for count in MEMBER_COUNTS {
        let ring = Ring::new(VNODES, members(count));
        group.bench_with_input(BenchmarkId::new("members", count), &ring, |b, ring| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % KEY_COUNT;
                lookup(ring, i)
            })
        });
    }
    group.finish();
}

fn preference_list(c: &mut Criterion) {
    let tokens = tokens();
    per_ring_size(c, "preference_list", |ring, i| {
        ring.preference_list(black_box(tokens[i]), REPLICAS)
    });
}

fn candidates(c: &mut Criterion) {
    let tokens = tokens();
    per_ring_size(c, "candidates", |ring, i| {
        ring.candidates(black_box(tokens[i]))
    });
}

fn placement(c: &mut Criterion) {
    let keys = keys();
    per_ring_size(c, "placement", |ring, i| {
        ring.preference_list(Token::of(black_box(&keys[i])), REPLICAS)
    });
}

fn ring_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_build");
    for count in MEMBER_COUNTS {
        let ids = members(count);
        group.bench_with_input(BenchmarkId::new("members", count), &ids, |b, ids| {
            // The ids are cloned as in the node, which builds from its membership map.
            b.iter(|| Ring::new(VNODES, black_box(ids).iter().cloned()))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    token,
    preference_list,
    candidates,
    placement,
    ring_build
);
criterion_main!(benches);
