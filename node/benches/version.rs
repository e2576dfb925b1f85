//! Micro-benchmarks of the versioning and record code every read and write runs on
//! the node's CPU: the DVVSet operations of [`ringkv_node::version`] and the
//! crc-framed record of [`ringkv_node::storage::record`].
//!
//! - `update/{with_context,blind}/siblings/*`: the coordinator's write
//!   ([`Clock::update`], which `Replica::coordinate` runs under the key's lock) on a
//!   key holding 1, 3 or 10 concurrent versions; `with_context` carries the context of
//!   a read (it resolves the siblings), `blind` carries none (it adds one).
//! - `sync/*`: a replica folding the coordinator's clock into its own ([`Clock::sync`],
//!   as `Replica::merge` does) with the ids of 3 replicas in the history: `disjoint`
//!   (no actor in common, every value kept), `equal` (a retry or a repair that brings
//!   nothing new) and `dominating` (the usual write: the incoming clock supersedes).
//! - `context/*`: deriving a read's context ([`Clock::context`], dvvset's `join`) and
//!   turning it into the opaque token a client gets back and parsing it again.
//! - `record/{encode,decode}/value_bytes/*`: framing a clock for RocksDB and checking
//!   and decoding it back, for one 100 B and one 1 KiB value.
//!
//! Values are 100 B unless a name says otherwise; inputs a call consumes are built
//! outside the timed section. Numbers from this machine are in docs/benchmarks-micro.md.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use ringkv_node::storage::record;
use ringkv_node::version::{Actor, Clock, VersionVector, Versioned};

/// Bytes of a typical value.
const VALUE_BYTES: usize = 100;
/// Sibling counts measured: the normal case, a few concurrent writers, a hot key.
const SIBLING_COUNTS: [usize; 3] = [1, 3, 10];

/// The actors of a key's three replicas; the first coordinates the measured writes.
fn replicas() -> [Actor; 3] {
    [1, 2, 3].map(|i| Actor::new(format!("node-{i}"), 0x5eed_0000 + i))
}

fn value(step: u64, bytes: usize) -> Versioned {
    Versioned::value(1_700_000_000_000 + step, vec![b'v'; bytes])
}

/// A key written `siblings` times without a context, by the replicas in turn: that
/// many concurrent versions.
fn with_siblings(siblings: usize) -> Clock {
    let actors = replicas();
    let clock = (0..siblings).fold(Clock::new(), |clock, i| {
        clock.update(
            &VersionVector::empty(),
            value(i as u64, VALUE_BYTES),
            &actors[i % actors.len()],
        )
    });
    assert_eq!(
        clock.value_count(),
        siblings,
        "every blind write is a sibling"
    );
    clock
}

/// A key each replica coordinated a read-modify-write of: one value, three actors.
fn settled(bytes: usize) -> Clock {
    let actors = replicas();
    let clock = (0..6).fold(Clock::new(), |clock, i| {
        clock.update(&clock.context(), value(i as u64, bytes), &actors[i % 3])
    });
    assert_eq!(clock.value_count(), 1, "each write saw the one before");
    clock
}

fn update(c: &mut Criterion) {
    let coordinator = &replicas()[0];
    let new_value = value(100, VALUE_BYTES);
    let mut group = c.benchmark_group("update");
    for siblings in SIBLING_COUNTS {
        let stored = with_siblings(siblings);
        let read_context = stored.context();
        let kinds = [
            ("with_context/siblings", read_context, 1),
            ("blind/siblings", VersionVector::empty(), siblings + 1),
        ];
        for (name, context, expected_values) in kinds {
            let after = stored.update(&context, new_value.clone(), coordinator);
            assert_eq!(after.value_count(), expected_values, "{name} {siblings}");
            group.bench_function(BenchmarkId::new(name, siblings), |b| {
                b.iter_batched(
                    || new_value.clone(),
                    |v| black_box(&stored).update(black_box(&context), v, coordinator),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

fn sync(c: &mut Criterion) {
    let [a, b, c_actor] = replicas();
    let empty = VersionVector::empty();
    // Concurrent writes coordinated by different replicas: node-1 against node-2 and node-3.
    let left = Clock::new().update(&empty, value(1, VALUE_BYTES), &a);
    let right = Clock::new()
        .update(&empty, value(2, VALUE_BYTES), &b)
        .update(&empty, value(3, VALUE_BYTES), &c_actor);
    // A replica's stored clock, and the coordinator's clock after a write that read it.
    let old = settled(VALUE_BYTES);
    let new = old.update(&old.context(), value(10, VALUE_BYTES), &a);
    assert_eq!(left.sync(&right).value_count(), 3);
    assert_eq!(old.sync(&new), new);

    let cases = [
        ("disjoint", &left, &right),
        ("equal", &old, &old),
        ("dominating", &old, &new),
    ];
    let mut group = c.benchmark_group("sync");
    for (name, stored, incoming) in cases {
        group.bench_function(name, |bench| {
            bench.iter(|| black_box(stored).sync(black_box(incoming)))
        });
    }
    group.finish();
}

fn context(c: &mut Criterion) {
    let clock = settled(VALUE_BYTES);
    let vv = clock.context();
    let token = vv.to_token();
    assert_eq!(VersionVector::from_token(&token).as_ref(), Ok(&vv));

    let mut group = c.benchmark_group("context");
    group.bench_function("join/actors/3", |b| b.iter(|| black_box(&clock).context()));
    group.bench_function("to_token/actors/3", |b| {
        b.iter(|| black_box(&vv).to_token())
    });
    group.bench_function("from_token/actors/3", |b| {
        b.iter(|| VersionVector::from_token(black_box(&token)))
    });
    group.finish();
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for bytes in [VALUE_BYTES, 1024] {
        let clock = settled(bytes);
        let framed = record::encode(&clock, None);
        assert_eq!(record::decode(&framed).as_ref(), Ok(&clock));
        group.bench_with_input(
            BenchmarkId::new("encode/value_bytes", bytes),
            &clock,
            |b, clock| b.iter(|| record::encode(black_box(clock), None)),
        );
        group.bench_with_input(
            BenchmarkId::new("decode/value_bytes", bytes),
            &framed,
            |b, framed| b.iter(|| record::decode(black_box(framed))),
        );
    }
    group.finish();
}

criterion_group!(benches, update, sync, context, record);
criterion_main!(benches);
