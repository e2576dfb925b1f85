//! Expiry: hints older than `max_age` are dropped by sweeps that run a batch at a time,
//! so a sweep never holds the disk for long.

use super::*;

/// A sweep for expired hints in progress, batch by batch.
#[derive(Debug)]
pub(in crate::handoff) struct Sweep {
    /// The "now" every hint's age is measured against.
    now_ms: u64,
    /// The storage key the next batch starts from.
    next: Vec<u8>,
    /// The oldest `written_ms` among the hints kept so far.
    kept_oldest_ms: u64,
    /// Hints dropped so far.
    pub expired: u64,
    /// Hints found corrupt so far (deleted).
    pub corrupt: u64,
}

impl Sweep {
    pub fn new(now_ms: u64) -> Self {
        Self {
            now_ms,
            next: Vec::new(),
            kept_oldest_ms: u64::MAX,
            expired: 0,
            corrupt: 0,
        }
    }
}

impl HintStore {
    /// True when some hint may be older than `max_age` at `now_ms`: a sweep could find
    /// something to drop.
    pub(in crate::handoff) fn expiry_due(&self, now_ms: u64) -> bool {
        let oldest_ms = self.counters().oldest_written_ms;
        oldest_ms != u64::MAX && is_expired(oldest_ms, now_ms, self.max_age_ms())
    }

    /// Drops the expired hints of the next batch of `sweep`; `true` when the sweep is
    /// done. Blocks on the disk.
    pub(in crate::handoff) fn expire_batch(&self, sweep: &mut Sweep) -> Result<bool> {
        let records = self
            .backend
            .scan_prefix(Cf::Hints, &[], &sweep.next, SCAN_BATCH_KEYS)?;
        let max_age_ms = self.max_age_ms();
        for (hint_key, stored) in &records {
            let Some(written_ms) = written_ms_of(stored) else {
                let ticket = Ticket {
                    hint_key: hint_key.clone(),
                    stored: stored.clone(),
                };
                self.drop_corrupt(ticket, record::Corrupt("truncated time"))?;
                sweep.corrupt += 1;
                continue;
            };
            if !is_expired(written_ms, sweep.now_ms, max_age_ms) {
                sweep.kept_oldest_ms = sweep.kept_oldest_ms.min(written_ms);
                continue;
            }
            let ticket = Ticket {
                hint_key: hint_key.clone(),
                stored: stored.clone(),
            };
            if self.delete_if_unchanged(&ticket)? {
                sweep.expired += 1;
                ::metrics::counter!(names::HINTS_EXPIRED).increment(1);
                tracing::debug!(
                    hint_key = %String::from_utf8_lossy(hint_key),
                    age_ms = sweep.now_ms.saturating_sub(written_ms),
                    "dropped an expired hint"
                );
            }
            // Changed since the scan: a write refreshed it, so it is not expired.
        }
        match records.last() {
            Some((last, _)) if records.len() == SCAN_BATCH_KEYS => {
                sweep.next = successor(last);
                Ok(false)
            }
            _ => {
                // Hints written during the sweep are no older than its start; those it
                // kept are no older than the oldest it saw.
                let mut counters = self.counters();
                counters.oldest_written_ms = sweep.kept_oldest_ms.min(sweep.now_ms);
                Ok(true)
            }
        }
    }

    /// Every expired hint dropped at `now_ms`, in one go; returns how many.
    #[cfg(test)]
    pub(in crate::handoff) fn expire(&self, now_ms: u64) -> Result<u64> {
        let mut sweep = Sweep::new(now_ms);
        while !self.expire_batch(&mut sweep)? {}
        Ok(sweep.expired)
    }
}

/// True when a hint last written at `written_ms` is past `max_age_ms` at `now_ms`. A
/// time further ahead than `max_age_ms` is damaged or from a clock that jumped: treated
/// as expired so that no hint escapes the bound.
fn is_expired(written_ms: u64, now_ms: u64, max_age_ms: u64) -> bool {
    now_ms.saturating_sub(written_ms) >= max_age_ms
        || written_ms.saturating_sub(now_ms) > max_age_ms
}
