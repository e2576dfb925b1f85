//! Simulated time. The whole simulation runs on one tokio runtime with paused time:
//! when every task waits, tokio jumps to the next timer, so a simulated minute takes
//! as long as the work in it. Wall clocks are derived from it, one per host, each with
//! its own skew.

use std::cell::Cell;

use ringkv_node::env::WallClock;
use tokio::time::Instant;

thread_local! {
    static START: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Marks the start of a simulated run on this thread (its runtime).
pub fn start() {
    START.with(|s| s.set(Some(Instant::now())));
}

/// Milliseconds of simulated time since [`start`].
pub fn sim_ms() -> u64 {
    START.with(|s| s.get().map_or(0, |t| t.elapsed().as_millis() as u64))
}

/// The wall clock of one host: the simulated epoch plus the host's skew.
#[derive(Debug)]
pub struct HostClock {
    pub base_ms: u64,
    pub skew_ms: i64,
}

impl WallClock for HostClock {
    fn now_ms(&self) -> u64 {
        (self.base_ms + sim_ms()).saturating_add_signed(self.skew_ms)
    }
}
