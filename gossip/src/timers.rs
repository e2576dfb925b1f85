//! foca's timers, delivered in order from one min-heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use foca::Timer;

use crate::identity::NodeIdentity;

/// Pending timers allowed. foca keeps a handful per member (probe, suspicion,
/// removal), so reaching this means something is badly wrong.
pub(crate) const TIMERS_MAX: usize = 65_536;

/// Timers keyed by deadline; `D` is an instant, real or simulated.
#[derive(Debug)]
pub(crate) struct TimerHeap<D> {
    // Ties on a deadline break by foca's `Timer` order, which puts the
    // indirect probe before the next probe as foca expects.
    heap: BinaryHeap<Reverse<(D, Timer<NodeIdentity>)>>,
}

impl<D: Ord + Copy> TimerHeap<D> {
    pub(crate) fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }

    /// Schedules `timer`; false (and the timer dropped) when the heap is full.
    #[must_use]
    pub(crate) fn push(&mut self, deadline: D, timer: Timer<NodeIdentity>) -> bool {
        if self.heap.len() >= TIMERS_MAX {
            return false;
        }
        self.heap.push(Reverse((deadline, timer)));
        true
    }

    pub(crate) fn next_deadline(&self) -> Option<D> {
        self.heap.peek().map(|Reverse((deadline, _))| *deadline)
    }

    /// The next timer due at `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: D) -> Option<Timer<NodeIdentity>> {
        if self.next_deadline()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, timer))| timer)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_come_out_in_deadline_order() {
        // Out-of-order submissions are delivered by deadline, never early.
        let mut heap = TimerHeap::new();
        assert!(heap.push(30u64, Timer::PeriodicGossip(3)));
        assert!(heap.push(10, Timer::PeriodicGossip(1)));
        assert!(heap.push(20, Timer::PeriodicGossip(2)));
        assert_eq!(heap.next_deadline(), Some(10));
        assert_eq!(heap.pop_due(5), None);
        assert_eq!(heap.pop_due(25), Some(Timer::PeriodicGossip(1)));
        assert_eq!(heap.pop_due(25), Some(Timer::PeriodicGossip(2)));
        assert_eq!(heap.pop_due(25), None);
        assert_eq!(heap.len(), 1);
    }

    #[test]
    fn same_deadline_uses_foca_order() {
        // The indirect probe of a cycle fires before the next cycle's probe.
        let mut heap = TimerHeap::new();
        let probed_id = crate::identity::NodeIdentity::seed("127.0.0.1:1".parse().unwrap());
        assert!(heap.push(1u64, Timer::ProbeRandomMember(0)));
        assert!(heap.push(
            1,
            Timer::SendIndirectProbe {
                probed_id,
                token: 0
            }
        ));
        assert!(matches!(
            heap.pop_due(1),
            Some(Timer::SendIndirectProbe { .. })
        ));
        assert_eq!(heap.pop_due(1), Some(Timer::ProbeRandomMember(0)));
    }
}
