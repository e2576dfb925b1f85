//! The trace of a run: every event that shapes it (faults, client operations, peer
//! messages, datagrams), hashed in order. Two runs of one seed on one build must give
//! the same hash; if they do not, something escaped the simulator's control (a real
//! clock, a thread, an unseeded random number, a hash map's order).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::Xxh3;

#[derive(Clone)]
pub struct Trace {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    hasher: Xxh3,
    events: u64,
    /// The events as text, when asked for (`--print-trace`).
    log: Option<Vec<String>>,
    line: String,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trace")
    }
}

impl Trace {
    pub fn new(keep_log: bool) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                hasher: Xxh3::new(),
                events: 0,
                log: keep_log.then(Vec::new),
                line: String::new(),
            })),
        }
    }

    /// Adds one event, stamped with the simulated time.
    pub fn event(&self, what: std::fmt::Arguments<'_>) {
        let now_ms = crate::clock::sim_ms();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *inner;
        inner.line.clear();
        let _ = write!(inner.line, "{now_ms} {what}");
        inner.hasher.update(inner.line.as_bytes());
        inner.hasher.update(b"\n");
        inner.events += 1;
        if let Some(log) = &mut inner.log {
            log.push(inner.line.clone());
        }
    }

    /// The hash of every event so far, and how many there were.
    pub fn digest(&self) -> (u64, u64) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.hasher.digest(), inner.events)
    }

    pub fn take_log(&self) -> Vec<String> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.log.take().unwrap_or_default()
    }
}

/// `trace!(t, "fmt", args)`: records one event.
#[macro_export]
macro_rules! trace {
    ($t:expr, $($arg:tt)*) => { $t.event(format_args!($($arg)*)) };
}
