//! The node's environment: wall time, randomness and where blocking storage calls
//! run, each behind a seam so the same code runs in the binary and in the
//! deterministic simulator (`ringkv-sim`, docs/architecture.md#seams-and-the-deterministic-simulator).
//!
//! Nothing below [`crate::node`] reads the system clock, draws random numbers or moves
//! work to a thread on its own: it asks its [`Env`]. Production uses
//! [`Env::production`]; the simulator passes a clock driven by tokio's paused time, a
//! seeded RNG per host, and [`StorageCalls::Inline`] (the simulated disk never blocks,
//! and a thread would break determinism).
//!
//! Timers and timeouts are not here: they use `tokio::time`, which the simulator
//! pauses and advances itself.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Wall-clock time in milliseconds since the Unix epoch: hint ages, LWW timestamps.
pub trait WallClock: Send + Sync + fmt::Debug + 'static {
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Random numbers the node needs (new incarnations).
pub trait Entropy: Send + Sync + fmt::Debug + 'static {
    fn next_u64(&self) -> u64;
}

/// The thread-local generator of `rand`, seeded by the operating system.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn next_u64(&self) -> u64 {
        rand::random()
    }
}

/// A reproducible generator (SplitMix64): the same seed gives the same numbers.
#[derive(Debug)]
pub struct SeededEntropy(Mutex<u64>);

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(seed))
    }
}

impl Entropy for SeededEntropy {
    fn next_u64(&self) -> u64 {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Where storage calls that may wait on the disk (fsync'ed writes, batches of hints)
/// run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageCalls {
    /// On tokio's blocking pool, so an fsync never stalls the executor (production).
    BlockingPool,
    /// Inline on the calling task (the simulator's disk never blocks).
    Inline,
}

/// One OS thread at a low CPU priority (nice [`BACKGROUND_NICE`]) for background
/// storage work (anti-entropy), so that on a busy machine it takes the CPU the
/// foreground leaves, not the foreground's share.
#[derive(Debug)]
pub struct Background {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
}

type Job = Box<dyn FnOnce() + Send>;

/// The nice value of the background thread (0 is normal, 19 the lowest priority).
pub const BACKGROUND_NICE: i32 = 10;

impl Background {
    /// Starts the thread; it ends when the last [`Env`] holding it is dropped.
    pub fn start() -> std::io::Result<Arc<Self>> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ringkv-background".into())
            .spawn(move || {
                lower_priority();
                while let Ok(job) = queue.recv() {
                    job();
                }
            })?;
        Ok(Arc::new(Self {
            jobs: std::sync::Mutex::new(jobs),
        }))
    }

    fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<Result<T>> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(call());
        });
        // A send fails only if the thread died (a job panicked): the answer's sender is
        // dropped with the job, and the caller sees the error.
        let _ = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        answer
    }
}

/// Lowers the calling thread's CPU priority to [`BACKGROUND_NICE`] (Linux: nice is
/// per thread). Best effort: on failure the thread runs at normal priority.
#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of ours; `who = 0`
    // with PRIO_PROCESS names the calling thread on Linux.
    let rc = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
    if rc != 0 {
        tracing::debug!("could not lower the background thread's priority");
    }
}

/// Time, randomness and the storage executor of one node; cheap to clone.
#[derive(Debug, Clone)]
pub struct Env {
    pub clock: Arc<dyn WallClock>,
    pub entropy: Arc<dyn Entropy>,
    pub storage_calls: StorageCalls,
    /// Where [`Env::background`] calls run; `None`: as [`Env::blocking`] ones do.
    pub background: Option<Arc<Background>>,
}

impl Env {
    /// The system clock, OS randomness, the blocking pool and a background thread.
    pub fn production() -> Self {
        let background = Background::start()
            .map_err(|e| tracing::warn!(error = %e, "no background thread; anti-entropy runs at normal priority"))
            .ok();
        Self {
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
            storage_calls: StorageCalls::BlockingPool,
            background,
        }
    }

    /// Runs `call`, storage work nobody waits for (anti-entropy), on the background
    /// thread at low priority, or where [`Env::blocking`] runs calls without one.
    pub async fn background<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        match (&self.background, self.storage_calls) {
            (Some(background), StorageCalls::BlockingPool) => background
                .run(call)
                .await
                .map_err(|_| Error::Storage("the background thread failed".into()))?,
            _ => self.blocking(call).await,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Runs `call`, which may block on the disk, where [`Self::storage_calls`] says.
    pub async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        match self.storage_calls {
            StorageCalls::Inline => call(),
            StorageCalls::BlockingPool => tokio::task::spawn_blocking(call)
                .await
                .map_err(|e| Error::Storage(format!("storage task failed: {e}")))?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_entropy_repeats_for_a_seed_and_differs_between_seeds() {
        // The simulator's replay rests on this: same seed, same numbers.
        let draw = |seed| {
            let e = SeededEntropy::new(seed);
            (0..4).map(|_| e.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_ne!(draw(7)[0], draw(7)[1]);
    }

    #[tokio::test]
    async fn inline_calls_run_on_the_calling_task() {
        // Inline mode must not hop threads: the simulator is single-threaded.
        let env = Env {
            storage_calls: StorageCalls::Inline,
            ..Env::production()
        };
        let caller = std::thread::current().id();
        let ran_on = env
            .blocking(move || Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_eq!(ran_on, caller);
    }
}
