//! The quorum tracker: pure bookkeeping of replies to one request. Feed it each
//! replica's outcome; it says whether the request is done, can no longer succeed, or
//! must wait. No IO and no clocks, so every case is a unit test.

use crate::error::Error;

/// Where a quorum stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// `required` replies succeeded.
    Done,
    /// Too many failed for `required` to be reachable.
    Failed,
    /// Still possible, not yet reached.
    Waiting,
}

/// Counts successes and failures among `asked` replicas against `required`.
#[derive(Debug, Clone)]
pub struct Tracker {
    required: usize,
    asked: usize,
    ok: usize,
    failed: usize,
}

impl Tracker {
    pub fn new(required: usize, asked: usize) -> Self {
        assert!(required >= 1, "a quorum needs at least one reply");
        Self {
            required,
            asked,
            ok: 0,
            failed: 0,
        }
    }

    pub fn ok(&mut self) -> Progress {
        self.ok += 1;
        self.progress()
    }

    pub fn fail(&mut self) -> Progress {
        self.failed += 1;
        self.progress()
    }

    pub fn progress(&self) -> Progress {
        assert!(
            self.ok + self.failed <= self.asked,
            "more replies than replicas asked"
        );
        if self.ok >= self.required {
            Progress::Done
        } else if self.asked - self.failed < self.required {
            Progress::Failed
        } else {
            Progress::Waiting
        }
    }

    /// Successful replies so far.
    pub fn acks(&self) -> usize {
        self.ok
    }

    pub fn required(&self) -> usize {
        self.required
    }

    /// Replicas that have not failed (answered or still pending).
    pub fn reachable(&self) -> usize {
        self.asked - self.failed
    }

    /// The error for a quorum that became unreachable.
    pub fn insufficient(&self) -> Error {
        Error::InsufficientReplicas {
            live: self.reachable(),
            required: self.required,
        }
    }

    /// The error for a quorum not reached before the deadline.
    pub fn timed_out(&self) -> Error {
        Error::Timeout {
            acks: self.ok,
            required: self.required,
        }
    }
}

/// A write's quorum while a layout change is in flight: `required` acknowledgements
/// from the home replicas of each ring, where one node's reply counts for every ring
/// it is a home replica of (a stand-in's, for every ring of the owner it stands in for).
/// With one ring it is exactly a [`Tracker`].
#[derive(Debug, Clone)]
pub struct RingsTracker {
    /// Per ring: its home replicas' ids and its tracker.
    rings: Vec<(Vec<String>, Tracker)>,
}

impl RingsTracker {
    /// `rings`: each ring's home replica ids and how many of them were asked (live
    /// ones, and down ones that got a stand-in).
    pub fn new(required: usize, rings: Vec<(Vec<String>, usize)>) -> Self {
        assert!(!rings.is_empty(), "a write goes to at least one ring");
        Self {
            rings: rings
                .into_iter()
                .map(|(ids, asked)| (ids, Tracker::new(required, asked)))
                .collect(),
        }
    }

    /// The node `id` (or a stand-in for it) acknowledged.
    pub fn ok(&mut self, id: &str) -> Progress {
        for (ids, t) in &mut self.rings {
            if ids.iter().any(|i| i == id) {
                t.ok();
            }
        }
        self.progress()
    }

    /// The node `id` failed and no stand-in is left to replace it.
    pub fn fail(&mut self, id: &str) -> Progress {
        for (ids, t) in &mut self.rings {
            if ids.iter().any(|i| i == id) {
                t.fail();
            }
        }
        self.progress()
    }

    pub fn progress(&self) -> Progress {
        let all: Vec<Progress> = self.rings.iter().map(|(_, t)| t.progress()).collect();
        if all.contains(&Progress::Failed) {
            Progress::Failed
        } else if all.iter().all(|p| *p == Progress::Done) {
            Progress::Done
        } else {
            Progress::Waiting
        }
    }

    /// The ring furthest from its quorum, for errors.
    fn worst(&self) -> &Tracker {
        self.rings
            .iter()
            .map(|(_, t)| t)
            .min_by_key(|t| (t.acks().min(t.required()), t.reachable()))
            .expect("at least one ring")
    }

    pub fn insufficient(&self) -> Error {
        self.worst().insufficient()
    }

    pub fn timed_out(&self) -> Error {
        self.worst().timed_out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_write_during_a_change_needs_its_quorum_in_every_ring() {
        // n4 joins in place of n3: acks from n1 and n3 make W=2 in the old ring only.
        let mut t = RingsTracker::new(
            2,
            vec![(ids(&["n1", "n2", "n3"]), 3), (ids(&["n1", "n2", "n4"]), 3)],
        );
        assert_eq!(t.ok("n1"), Progress::Waiting);
        assert_eq!(
            t.ok("n3"),
            Progress::Waiting,
            "only one ack in the new ring"
        );
        assert_eq!(t.ok("n4"), Progress::Done);
        let mut t = RingsTracker::new(
            2,
            vec![(ids(&["n1", "n2", "n3"]), 3), (ids(&["n1", "n2", "n4"]), 3)],
        );
        t.ok("n1");
        t.fail("n2");
        assert_eq!(
            t.fail("n4"),
            Progress::Failed,
            "the new ring cannot reach 2"
        );
        let mut one = RingsTracker::new(2, vec![(ids(&["n1", "n2", "n3"]), 3)]);
        one.ok("n2");
        assert_eq!(one.ok("n3"), Progress::Done, "one ring: a plain quorum");
    }

    #[test]
    fn done_once_required_replies_arrive() {
        // W=2 of 3: the second success completes the quorum, whatever came before.
        let mut t = Tracker::new(2, 3);
        assert_eq!(t.progress(), Progress::Waiting);
        assert_eq!(t.ok(), Progress::Waiting);
        assert_eq!(t.fail(), Progress::Waiting);
        assert_eq!(t.ok(), Progress::Done);
        assert_eq!(t.acks(), 2);
    }

    #[test]
    fn failed_as_soon_as_the_quorum_is_unreachable() {
        // W=3 of 3: one failure is enough to know it cannot succeed; no need to wait.
        let mut t = Tracker::new(3, 3);
        assert_eq!(t.ok(), Progress::Waiting);
        assert_eq!(t.fail(), Progress::Failed);
        assert_eq!(t.reachable(), 2);
    }

    #[test]
    fn asking_fewer_than_required_fails_at_once() {
        // Two live replicas cannot make a quorum of three.
        assert_eq!(Tracker::new(3, 2).progress(), Progress::Failed);
        assert_eq!(Tracker::new(1, 1).progress(), Progress::Waiting);
    }
}
