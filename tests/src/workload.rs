//! The chaos workload: concurrent clients that read and write a fixed set of keys
//! through random live nodes and record every operation in a [`Recorder`].
//!
//! Each client is a closed loop (one operation at a time) with its own seeded
//! [`Rng`]. Per step it picks a key (one of a few *hot* keys with probability
//! `hot_fraction`, else any key) and an action:
//!
//! | action | hot keys | other keys | what it sends |
//! |---|---|---|---|
//! | blind write | – | 50% | `PUT` of a new unique value, no context: a sibling of what is stored |
//! | read | 20% | 25% | `GET` at `r` |
//! | read-modify-write | 70% | 20% | `GET`, then `PUT` of a new value with the read's context |
//! | delete | 10% | 5% | `GET`, then (if it found values) `DELETE` with the read's context |
//!
//! Read-modify-writes on the other keys keep their sibling sets small (a key holds at
//! most `--max-siblings` concurrent values). Values are unique in a run:
//! `c{client}-{key}-v{seq}`. A write only ever carries the context of a GET that
//! succeeded, never one a write returned (see [`crate::history`]).
//!
//! Each request goes to a random node among those the chaos driver marks live in
//! [`Targets`] (a `stray_fraction` goes to any node, faulted or not), with one
//! attempt and no failover, so the history names the node that was asked. The run
//! stops at `duration` or after `steps_max` steps, whichever comes first;
//! `steps_per_s_max` paces long runs so the history stays a manageable size.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Method;

use crate::history::{Op, OpId, OpKind, Outcome, Recorder};
use crate::http::{Api, HttpClient, empty, full};

/// SplitMix64: a small, seedable generator (the workspace denies adding crates to
/// this one for a few random choices). Not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        // Multiply-shift: bias below 2^-64 * n, irrelevant here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "Rng::between({lo}, {hi})");
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// An independent generator derived from this one and `stream`.
    pub fn fork(&self, stream: u64) -> Rng {
        let mut r = Rng(self.0 ^ stream.wrapping_mul(0xA24B_AED4_963E_E407));
        r.next_u64();
        r
    }
}

/// The name of key `k`.
pub fn key_name(k: usize) -> String {
    format!("chaos-{k:03}")
}

/// The nodes the workload talks to, with a live flag per node that the chaos driver
/// clears before it faults a node and sets once the node is back.
#[derive(Debug)]
pub struct Targets {
    nodes: Vec<Target>,
}

#[derive(Debug)]
struct Target {
    id: String,
    api: Api,
    live: AtomicBool,
}

impl Targets {
    /// `(id, base URL)` of every node; all start live. Every request times out on the
    /// client side after `request_timeout` (above the server's `timeout_ms`, so a
    /// quorum timeout arrives as a 504 rather than a dropped request).
    pub fn new(nodes: &[(String, String)], request_timeout: Duration) -> Self {
        let http = HttpClient::with_timeout(request_timeout);
        Self {
            nodes: nodes
                .iter()
                .map(|(id, base)| Target {
                    id: id.clone(),
                    api: Api::new(base.clone(), http.clone()),
                    live: AtomicBool::new(true),
                })
                .collect(),
        }
    }

    pub fn set_live(&self, id: &str, live: bool) {
        for t in &self.nodes {
            if t.id == id {
                t.live.store(live, Ordering::SeqCst);
            }
        }
    }

    /// Ids of the nodes marked live.
    pub fn live(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|t| t.live.load(Ordering::SeqCst))
            .map(|t| t.id.clone())
            .collect()
    }

    /// A random live node, or with probability `stray` (or if none is live) any node.
    fn pick(&self, rng: &mut Rng, stray: f64) -> &Target {
        let live: Vec<&Target> = self
            .nodes
            .iter()
            .filter(|t| t.live.load(Ordering::SeqCst))
            .collect();
        if live.is_empty() || rng.chance(stray) {
            &self.nodes[rng.below(self.nodes.len() as u64) as usize]
        } else {
            live[rng.below(live.len() as u64) as usize]
        }
    }
}

/// The workload's shape; [`WorkloadConfig::default`] is the short chaos run's.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// Keys `0..keys`; the first `hot_keys` are hot.
    pub keys: usize,
    pub hot_keys: usize,
    /// Probability that a step picks a hot key.
    pub hot_fraction: f64,
    /// Wall-time bound of the run.
    pub duration: Duration,
    /// Bound on the steps of all clients together (a read-modify-write is one step
    /// of two operations).
    pub steps_max: u64,
    /// Bound on steps per second over all clients; `None` runs flat out.
    pub steps_per_s_max: Option<f64>,
    /// Quorums sent with every request.
    pub r: usize,
    pub w: usize,
    /// The server-side `timeout_ms` of every request.
    pub timeout_ms: u64,
    /// Fraction of requests sent to any node, faulted or not.
    pub stray_fraction: f64,
    /// Ends the run before `duration` once set (each client finishes its step).
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            clients: 8,
            keys: 200,
            hot_keys: 10,
            hot_fraction: 0.3,
            duration: Duration::from_secs(75),
            steps_max: 1_000_000,
            steps_per_s_max: None,
            r: 2,
            w: 2,
            timeout_ms: 2000,
            stray_fraction: 0.02,
            stop: None,
        }
    }
}

impl WorkloadConfig {
    /// The client-side bound on one request: the server's timeout plus a margin.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms + 3000)
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkloadStats {
    pub steps: u64,
    pub elapsed: Duration,
}

/// Runs the workload until `duration` or `steps_max`, recording into `recorder`.
pub async fn run(
    config: &WorkloadConfig,
    targets: Arc<Targets>,
    recorder: Arc<Recorder>,
    seed: u64,
) -> WorkloadStats {
    assert!(config.clients > 0 && config.keys > 0 && config.hot_keys <= config.keys);
    let started = Instant::now();
    let steps = Arc::new(AtomicU64::new(0));
    let root = Rng::new(seed);
    let tasks: Vec<_> = (0..config.clients)
        .map(|c| {
            let client = Client {
                id: c,
                config: config.clone(),
                targets: targets.clone(),
                recorder: recorder.clone(),
                rng: root.fork(c as u64 + 1),
                seq: 0,
            };
            let steps = steps.clone();
            tokio::spawn(client.run(started, steps))
        })
        .collect();
    for task in tasks {
        task.await.expect("a workload client panicked");
    }
    WorkloadStats {
        steps: steps.load(Ordering::Relaxed).min(config.steps_max),
        elapsed: started.elapsed(),
    }
}

/// One closed-loop client.
struct Client {
    id: usize,
    config: WorkloadConfig,
    targets: Arc<Targets>,
    recorder: Arc<Recorder>,
    rng: Rng,
    seq: u64,
}

enum Action {
    BlindWrite,
    Read,
    ReadModifyWrite,
    Delete,
}

impl Client {
    async fn run(mut self, started: Instant, steps: Arc<AtomicU64>) {
        let deadline = started + self.config.duration;
        // With a rate bound, each client takes its share: one step per `interval`.
        let interval = self
            .config
            .steps_per_s_max
            .map(|rate| Duration::from_secs_f64(self.config.clients as f64 / rate.max(0.001)));
        let mut next_step = started;
        loop {
            let stopped = self
                .config
                .stop
                .as_ref()
                .is_some_and(|stop| stop.load(Ordering::SeqCst));
            if stopped
                || Instant::now() >= deadline
                || steps.fetch_add(1, Ordering::Relaxed) >= self.config.steps_max
            {
                return;
            }
            if let Some(interval) = interval {
                next_step += interval;
                let wake = next_step.min(deadline);
                tokio::time::sleep_until(wake.into()).await;
            }
            self.step().await;
        }
    }

    async fn step(&mut self) {
        let c = &self.config;
        let hot = c.hot_keys > 0 && self.rng.chance(c.hot_fraction);
        let k = if hot {
            self.rng.below(c.hot_keys as u64)
        } else {
            self.rng.below(c.keys as u64)
        } as usize;
        let roll = self.rng.below(100);
        let action = if k < c.hot_keys {
            match roll {
                0..70 => Action::ReadModifyWrite,
                70..90 => Action::Read,
                _ => Action::Delete,
            }
        } else {
            match roll {
                0..50 => Action::BlindWrite,
                50..75 => Action::Read,
                75..95 => Action::ReadModifyWrite,
                _ => Action::Delete,
            }
        };
        let key = key_name(k);
        match action {
            Action::BlindWrite => {
                self.put(&key, None).await;
            }
            Action::Read => {
                self.get(&key).await;
            }
            Action::ReadModifyWrite => {
                let read = self.get(&key).await;
                if let Outcome::Ok(answer) = &read.outcome {
                    let context = answer.read_context().map(|t| (read.id, t.to_owned()));
                    self.put(&key, context).await;
                }
            }
            Action::Delete => {
                let read = self.get(&key).await;
                let token = match &read.outcome {
                    Outcome::Ok(answer) if !answer.values().is_empty() => {
                        answer.read_context().map(str::to_owned)
                    }
                    _ => None,
                };
                if let Some(token) = token {
                    self.delete(&key, (read.id, token)).await;
                }
            }
        }
    }

    async fn get(&mut self, key: &str) -> Op {
        let target = self.targets.pick(&mut self.rng, self.config.stray_fraction);
        let query = format!("r={}&timeout_ms={}", self.config.r, self.config.timeout_ms);
        let pending =
            self.recorder
                .invoke(self.id, &target.id, key, OpKind::Get { r: self.config.r });
        let result = target
            .api
            .try_request(
                Method::GET,
                &Api::kv_path(key.as_bytes(), &query),
                &[],
                empty(),
            )
            .await;
        self.recorder.complete(pending, Outcome::of_read(&result))
    }

    async fn put(&mut self, key: &str, context: Option<(OpId, String)>) -> Op {
        self.seq += 1;
        let value = format!("c{}-{key}-v{}", self.id, self.seq);
        let target = self.targets.pick(&mut self.rng, self.config.stray_fraction);
        let query = format!("w={}&timeout_ms={}", self.config.w, self.config.timeout_ms);
        let kind = OpKind::Put {
            value: value.clone(),
            context: context.as_ref().map(|(id, _)| *id),
            w: self.config.w,
        };
        let pending = self.recorder.invoke(self.id, &target.id, key, kind);
        let headers: Vec<(&str, &str)> = context
            .as_ref()
            .map(|(_, token)| vec![(ringkv_client::wire::HEADER_CONTEXT, token.as_str())])
            .unwrap_or_default();
        let result = target
            .api
            .try_request(
                Method::PUT,
                &Api::kv_path(key.as_bytes(), &query),
                &headers,
                full(value),
            )
            .await;
        self.recorder.complete(pending, Outcome::of_write(&result))
    }

    async fn delete(&mut self, key: &str, context: (OpId, String)) -> Op {
        let target = self.targets.pick(&mut self.rng, self.config.stray_fraction);
        let query = format!("w={}&timeout_ms={}", self.config.w, self.config.timeout_ms);
        let kind = OpKind::Delete {
            context: Some(context.0),
            w: self.config.w,
        };
        let pending = self.recorder.invoke(self.id, &target.id, key, kind);
        let headers = [(ringkv_client::wire::HEADER_CONTEXT, context.1.as_str())];
        let result = target
            .api
            .try_request(
                Method::DELETE,
                &Api::kv_path(key.as_bytes(), &query),
                &headers,
                empty(),
            )
            .await;
        self.recorder.complete(pending, Outcome::of_write(&result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        // The same seed gives the same stream; bounds hold; forks differ.
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let x = a.between(3, 9);
            assert_eq!(x, b.between(3, 9));
            assert!((3..=9).contains(&x));
            assert!((0.0..1.0).contains(&a.unit()));
            b.unit();
        }
        assert_ne!(a.fork(1).next_u64(), a.fork(2).next_u64());
    }

    #[test]
    fn targets_pick_only_live_nodes_unless_straying() {
        // With strays off, a node marked not live is never picked.
        let nodes: Vec<(String, String)> = (1..=3)
            .map(|i| (format!("n{i}"), format!("http://127.0.0.1:{}", 9000 + i)))
            .collect();
        let targets = Targets::new(&nodes, Duration::from_secs(1));
        targets.set_live("n2", false);
        assert_eq!(targets.live(), vec!["n1".to_owned(), "n3".to_owned()]);
        let mut rng = Rng::new(1);
        for _ in 0..200 {
            assert_ne!(targets.pick(&mut rng, 0.0).id, "n2");
        }
    }
}
