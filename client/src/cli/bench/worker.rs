//! One closed-loop worker: its connection, its RNG and its statistics.
//!
//! A worker sends one request, waits for the whole answer, records it, and sends
//! the next; `--concurrency` workers make that many requests in flight. Workers
//! share only what must be shared ([`Shared`]): the counters that hand out load
//! and insert keys, the context table, and an op counter for the progress bar.
//! A worker never fails over to another node: against a failing node its errors
//! are the measurement. After a failed connect it waits [`CONNECT_BACKOFF`], so a
//! dead node costs a few errors a second rather than a busy loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng as _;
use rand::rngs::SmallRng;

use super::conn::{Conn, Failure};
use super::contexts::ContextTable;
use super::keys::{KeyChooser, KeyId};
use super::report::Stats;
use super::requests::{Protocol, Requests, Verdict, Write, classify, context_of};
use super::workload::{Op, Workload};

/// Pause after a failed connect before the worker tries again.
pub const CONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// What all workers of a run share.
#[derive(Debug)]
pub struct Shared {
    /// The operation mix.
    pub workload: Workload,
    /// The protocol, to judge answers.
    pub protocol: Protocol,
    /// Picks the loaded key of each read and update.
    pub chooser: KeyChooser,
    /// Loaded keys: the load phase writes indexes `0..keys`.
    pub keys: u64,
    /// Whether a read that finds nothing is an error: the load phase wrote
    /// every key this run reads.
    pub expect_found: bool,
    /// Whether to keep contexts (ringkv workloads with updates).
    pub keep_contexts: bool,
    /// The freshest context of each loaded key.
    pub contexts: ContextTable,
    /// The next load-phase key index to write.
    pub next_load: AtomicU64,
    /// The next insert number.
    pub next_insert: AtomicU64,
    /// Operations finished so far (load writes, or warm-up and measured ops), for
    /// the progress bar.
    pub done_ops: AtomicU64,
}

/// One worker; see the module docs.
#[derive(Debug)]
pub struct Worker {
    conn: Conn,
    requests: Requests,
    rng: SmallRng,
    /// What the worker measured.
    pub stats: Stats,
    /// Load-phase writes that failed.
    pub load_errors: u64,
    /// The first load-phase failure, in words.
    pub first_load_error: Option<String>,
}

impl Worker {
    /// A worker on `conn` whose RNG starts from `seed`.
    pub fn new(conn: Conn, requests: Requests, seed: u64) -> Self {
        Self {
            conn,
            requests,
            rng: SmallRng::seed_from_u64(seed),
            stats: Stats::new(),
            load_errors: 0,
            first_load_error: None,
        }
    }

    /// Writes loaded keys until the shared counter passes `keys`.
    pub async fn load(&mut self, shared: &Shared) {
        loop {
            let i = shared.next_load.fetch_add(1, Ordering::Relaxed);
            if i >= shared.keys {
                return;
            }
            let request = self.requests.write(KeyId::Loaded(i), Write::Load);
            let failure = match self.conn.send(request, None).await {
                Ok(answer) => {
                    if let Some(context) = context_of(&answer)
                        && shared.keep_contexts
                    {
                        shared.contexts.put(i, context);
                    }
                    match classify(shared.protocol, Op::Update, &answer) {
                        Verdict::Ok => None,
                        _ => Some(format!("load write answered status {}", answer.status)),
                    }
                }
                Err(failure) => Some(self.describe(&failure).await),
            };
            if let Some(why) = failure {
                self.load_errors += 1;
                self.first_load_error.get_or_insert(why);
            }
            shared.done_ops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs operations until `until`, recording those that start at or after
    /// `record_from`; returns when its last operation finished.
    pub async fn run(&mut self, shared: &Shared, record_from: Instant, until: Instant) -> Instant {
        loop {
            let started = Instant::now();
            if started >= until {
                return started;
            }
            let op = shared.workload.next_op(&mut self.rng);
            let key = match op {
                Op::Insert => KeyId::Inserted(shared.next_insert.fetch_add(1, Ordering::Relaxed)),
                Op::Read | Op::Update => KeyId::Loaded(shared.chooser.next(&mut self.rng)),
            };
            let request = match (op, key) {
                (Op::Read, _) => self.requests.read(key),
                (Op::Update, KeyId::Loaded(i)) => {
                    let context = shared
                        .keep_contexts
                        .then(|| shared.contexts.get(i))
                        .flatten();
                    self.requests.write(key, Write::Update(context))
                }
                _ => self.requests.write(key, Write::Insert),
            };
            let result = self.conn.send(request, self.requests.body_needle(op)).await;
            let latency = started.elapsed();
            let recording = started >= record_from;
            let stats = &mut self.stats;
            match result {
                Ok(answer) => {
                    if let (KeyId::Loaded(i), Some(context)) = (key, context_of(&answer))
                        && shared.keep_contexts
                    {
                        shared.contexts.put(i, context);
                    }
                    if recording {
                        match classify(shared.protocol, op, &answer) {
                            Verdict::Ok => {}
                            Verdict::Siblings => stats.siblings += 1,
                            Verdict::NotFound => {
                                stats.not_found += 1;
                                if shared.expect_found {
                                    stats.errors.missing(op);
                                }
                            }
                            Verdict::Unexpected => stats.errors.status(answer.status.as_u16(), op),
                        }
                    }
                }
                Err(Failure::Timeout) if recording => stats.errors.timeout(op, self.conn.timeout()),
                Err(Failure::Transport(why)) if recording => stats.errors.transport(op, &why),
                Err(Failure::Connect(why)) => {
                    if recording {
                        stats.errors.transport(op, &why);
                    }
                    let pause =
                        CONNECT_BACKOFF.min(until.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                }
                Err(_) => {}
            }
            if recording {
                self.stats.record(op, latency);
            }
            shared.done_ops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Describes a load failure, backing off after a failed connect.
    async fn describe(&self, failure: &Failure) -> String {
        match failure {
            Failure::Connect(why) => {
                tokio::time::sleep(CONNECT_BACKOFF).await;
                format!("load write failed to connect: {why}")
            }
            Failure::Transport(why) => format!("load write failed: {why}"),
            Failure::Timeout => {
                format!("load write got no answer within {:?}", self.conn.timeout())
            }
        }
    }
}
