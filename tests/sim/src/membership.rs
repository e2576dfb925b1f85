//! Membership changes of a seed: the last host joins, one host leaves (decommission),
//! one is crashed for good and removed, each at a time the seed draws, while the
//! clients and the fault schedule run. The hosts they touch are kept out of the fault
//! schedule, so every change can complete; the faults hit the hosts that stay, which
//! are the changes' sources and targets.

use std::time::Duration;

use anyhow::{Context as _, bail};
use ringkv_gossip::MemberState;

use crate::net::Net;
use crate::rng::SimRng;
use crate::run::{self, Hosts};
use crate::trace;
use crate::trace::Trace;
use crate::workload::Directory;

/// How long a leaving host may take to hand everything over, in simulated time.
const LEAVE_WITHIN: Duration = Duration::from_secs(180);
/// How long gossip may take to report a crashed host down.
const DOWN_WITHIN: Duration = Duration::from_secs(60);

/// The changes of one seed.
#[derive(Debug, Clone)]
pub struct Changes {
    /// Not started with the others; boots during the run and joins.
    pub joiner: usize,
    /// Leaves during the run.
    pub leaver: usize,
    /// Crashed for good during the run, then removed.
    pub removed: usize,
    /// When each happens, as fractions of the fault span.
    join_at: f64,
    remove_at: f64,
    leave_at: f64,
}

impl Changes {
    /// Draws the changes for `hosts` hosts (at least 5: the joiner is the last; host 0,
    /// every host's seed, stays).
    pub fn draw(seed: u64, hosts: usize) -> Self {
        assert!(hosts >= 5, "membership changes need at least 5 hosts");
        let mut rng = SimRng::derive(seed, "membership");
        let joiner = hosts - 1;
        let mut candidates: Vec<usize> = (1..hosts - 1).collect();
        let leaver = candidates.remove(rng.index(candidates.len()));
        let removed = candidates.remove(rng.index(candidates.len()));
        let at = |rng: &mut SimRng, lo: u64, hi: u64| rng.range(lo, hi) as f64 / 100.0;
        Self {
            joiner,
            leaver,
            removed,
            join_at: at(&mut rng, 5, 30),
            remove_at: at(&mut rng, 30, 50),
            leave_at: at(&mut rng, 50, 70),
        }
    }

    /// The hosts the changes touch.
    pub fn hosts(&self) -> [usize; 3] {
        [self.joiner, self.leaver, self.removed]
    }

    /// Runs the changes over `span`; returns when the last one has completed.
    pub async fn run(
        self,
        span: Duration,
        hosts: Hosts,
        directory: Directory,
        net: Net,
        trace: Trace,
    ) -> anyhow::Result<()> {
        let start = tokio::time::Instant::now();
        let at = |f: f64| start + span.mul_f64(f);

        tokio::time::sleep_until(at(self.join_at)).await;
        trace!(trace, "membership: n{} joins", self.joiner + 1);
        run::boot(&hosts, &directory, &net, self.joiner)
            .await
            .context("booting the joining host")?;

        tokio::time::sleep_until(at(self.remove_at)).await;
        let id = format!("n{}", self.removed + 1);
        trace!(trace, "membership: {id} crashes for good");
        {
            let mut host = hosts[self.removed].lock().await;
            run::lose(&mut host, &directory, &net);
        }
        let deadline = tokio::time::Instant::now() + DOWN_WITHIN;
        loop {
            let cluster = hosts[0].lock().await.cluster();
            if let Some(cluster) = cluster {
                // Not alive, as `remove` asks: down, or suspect when host 0 restarted
                // after the crash (a restarted node never hears of members already down,
                // and the layout's members it has not heard of stay suspect).
                let down = cluster
                    .view()
                    .peer(&id)
                    .is_none_or(|p| p.state != MemberState::Alive);
                if down {
                    match ringkv_node::transfer::remove(&cluster, &id) {
                        Ok(_) => break,
                        Err(e) => trace!(trace, "membership: removing {id}: {e}"),
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("gossip never reported {id} down");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        trace!(trace, "membership: {id} removed");

        tokio::time::sleep_until(at(self.leave_at)).await;
        let id = format!("n{}", self.leaver + 1);
        trace!(trace, "membership: {id} leaves");
        let mut departed = {
            let host = hosts[self.leaver].lock().await;
            let cluster = host.cluster().context("the leaving host is down")?;
            ringkv_node::transfer::leave(&cluster).with_context(|| format!("{id} leave"))?;
            host.departed().context("the leaving host is down")?
        };
        let left = tokio::time::timeout(LEAVE_WITHIN, async {
            departed.wait_for(|d| *d).await.map(|_| ())
        })
        .await;
        if !matches!(left, Ok(Ok(()))) {
            bail!("{id} did not hand everything over within {LEAVE_WITHIN:?}");
        }
        {
            let mut host = hosts[self.leaver].lock().await;
            run::lose(&mut host, &directory, &net);
        }
        trace!(trace, "membership: {id} left");
        Ok(())
    }
}
