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

#[cfg(test)]
mod tests {
    use super::*;

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
