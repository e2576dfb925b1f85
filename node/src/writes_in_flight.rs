//! The writes this node coordinates right now, counted by the target ring their view
//! wrote to, so that the layout's `writing` register ([`crate::membership`]) claims a
//! new target only once no write of an older view is still on its way.
//!
//! Without the wait, a write that started just before this node adopted a new target
//! could still be delivering to the old ring's homes while the target's new homes copy
//! those same partitions, and be missed by both the copy and the new homes (Garage
//! holds its layout acks back the same way). Each write holds a [`WriteGuard`] for as
//! long as its coordinator waits for acknowledgements, which its deadline bounds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Writes in flight, by the fingerprint of the target their view wrote to.
#[derive(Debug, Default)]
pub struct WritesInFlight {
    counts: Mutex<BTreeMap<u64, usize>>,
    /// Told whenever the count of some target falls to zero.
    drained: Notify,
}

/// One write in flight; dropping it ends it.
#[derive(Debug)]
#[must_use = "the write counts as in flight only while its guard lives"]
pub struct WriteGuard {
    writes: Arc<WritesInFlight>,
    target: u64,
}

impl WritesInFlight {
    /// Counts a write made with a view whose target has fingerprint `target`.
    pub fn begin(self: &Arc<Self>, target: u64) -> WriteGuard {
        *self.lock().entry(target).or_default() += 1;
        WriteGuard {
            writes: self.clone(),
            target,
        }
    }

    /// True when every write in flight was made with the target `target`.
    pub fn only(&self, target: u64) -> bool {
        self.lock().keys().all(|t| *t == target)
    }

    /// Waits until every write in flight was made with the target `target`.
    pub async fn drained_except(&self, target: u64) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a drain between the two is not missed.
            drained.as_mut().enable();
            if self.only(target) {
                return;
            }
            drained.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let mut counts = self.writes.lock();
        let drained = match counts.get_mut(&self.target) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                counts.remove(&self.target);
                true
            }
        };
        drop(counts);
        if drained {
            self.writes.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_target_waits_for_the_writes_of_older_ones() {
        // The wait ends when the last write of the old target ends, not before, and
        // writes of the new target never hold it up.
        let writes = Arc::new(WritesInFlight::default());
        let old = [writes.begin(1), writes.begin(1)];
        let _new = writes.begin(2);
        assert!(!writes.only(2));
        let waiter = tokio::spawn({
            let writes = writes.clone();
            async move { writes.drained_except(2).await }
        });
        let [first, second] = old;
        drop(first);
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "one write of target 1 is still on its way"
        );
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the wait ends once target 1 drained")
            .unwrap();
        assert!(writes.only(2));
        assert!(!writes.only(3));
    }
}
