//! The replay task: rounds that hand hints to their owners, and expiry sweeps.
//!
//! A round ([`replay_round`]) is written against two functions, "is this owner live"
//! and "send this clock to this owner", so tests drive the exact production round with
//! fakes; [`spawn_replay`] wires them to the [`Cluster`] view and a [`PeerTransport`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::store::{HintStore, Sweep};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::metrics as names;
use crate::net::{PeerRequest, PeerResponse, PeerTransport};
use crate::version::Clock;

/// The shortest timer interval accepted (a zero interval would spin).
const INTERVAL_MIN: Duration = Duration::from_millis(10);
/// An expiry sweep runs at most once per `max_age / SWEEPS_PER_MAX_AGE` (and per
/// interval), so a hint outlives `max_age` by at most that much.
const SWEEPS_PER_MAX_AGE: u32 = 64;

/// How the replay task paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffOptions {
    /// Hints read and sent per batch (per owner).
    pub batch_keys: usize,
    /// Merge calls in flight at once.
    pub concurrency: usize,
    /// Rounds (and expiry checks) run at least this often, besides on membership changes.
    pub interval: Duration,
    /// How long one merge call may take before it counts as failed.
    pub call_timeout: Duration,
    /// Pause between batches, so that replay never starves foreground requests.
    pub pause_between_batches: Duration,
}

impl Default for HandoffOptions {
    fn default() -> Self {
        Self {
            batch_keys: 256,
            concurrency: 8,
            interval: Duration::from_secs(1),
            call_timeout: Duration::from_secs(5),
            pause_between_batches: Duration::from_millis(50),
        }
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct RoundReport {
    /// Hints the owner acknowledged and that were deleted.
    pub delivered: u64,
    /// Hints the owner acknowledged but that changed meanwhile, kept for the next round.
    pub kept_changed: u64,
    /// Corrupt hints found and deleted.
    pub corrupt: u64,
    /// Owners whose round stopped at a failure, in the order they failed.
    pub failed_owners: Vec<String>,
}

impl RoundReport {
    fn is_idle(&self) -> bool {
        *self == Self::default()
    }
}

/// Replays hints to owners that are live. One task; it stops when `shutdown` turns true
/// (or its sender is dropped), abandoning any round in progress (every hint not yet
/// deleted is still stored and will be sent again).
pub fn spawn_replay(
    hints: Arc<HintStore>,
    cluster: Arc<Cluster>,
    peers: Arc<dyn PeerTransport>,
    options: HandoffOptions,
    n: usize,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let changes = cluster.changes();
    let is_live = {
        let cluster = cluster.clone();
        move |owner: &str| {
            let view = cluster.view();
            rerouted(&view, owner) || view.peer(owner).is_some_and(|p| p.is_live() && !p.local)
        }
    };
    let timeout = options.call_timeout;
    let send = move |owner: String, key: Vec<u8>, clock: Clock| {
        let (cluster, peers) = (cluster.clone(), peers.clone());
        async move {
            let view = cluster.view();
            let targets = if rerouted(&view, &owner) {
                // The owner is off the ring (or this node is): the key's home replicas
                // take the write instead, every live one of them.
                let homes: Vec<_> = view
                    .preference_list(&key, n)
                    .into_iter()
                    .filter(|p| !p.local && p.is_live())
                    .collect();
                if homes.is_empty() {
                    return Err(Error::Peer {
                        peer: owner,
                        reason: "off the ring, and no home replica of the key is live".into(),
                    });
                }
                homes
            } else {
                vec![view.peer(&owner).ok_or_else(|| Error::Peer {
                    peer: owner.clone(),
                    reason: "no longer a member".into(),
                })?]
            };
            for peer in targets {
                let request = PeerRequest::Merge {
                    key: key.clone(),
                    clock: clock.clone(),
                    sync: false,
                };
                match peers.call(peer.cluster, request, timeout).await? {
                    PeerResponse::Merged => {}
                    PeerResponse::Error { kind, message } => {
                        return Err(Error::Peer {
                            peer: peer.id,
                            reason: format!("refused the merge ({kind:?}): {message}"),
                        });
                    }
                    // Not its Debug form: a stray reply may carry a whole clock.
                    _ => {
                        return Err(Error::Peer {
                            peer: peer.id,
                            reason: "answered a merge with another kind of reply".into(),
                        });
                    }
                }
            }
            Ok(())
        }
    };
    tokio::spawn(run_replay(hints, changes, is_live, send, options, shutdown))
}

/// True when hints for `owner` go to the key's home replicas instead of to it: the
/// owner is off the ring for good (removed, or left), or this node is (it hands its
/// hints over before it departs).
fn rerouted(view: &crate::cluster::View, owner: &str) -> bool {
    use crate::membership::RingState;
    let gone = |id: &str| {
        matches!(view.ring_state(id), RingState::Removed) && view.layout().entry(id).is_some()
    };
    gone(owner) || gone(view.local())
}

/// The replay task's loop, apart from the cluster and the network: a round on every
/// membership change and timer tick, an expiry sweep on the timer when one is due.
async fn run_replay<L, S, F>(
    hints: Arc<HintStore>,
    changes: watch::Receiver<u64>,
    is_live: L,
    send: S,
    options: HandoffOptions,
    mut shutdown: watch::Receiver<bool>,
) where
    L: Fn(&str) -> bool,
    S: Fn(String, Vec<u8>, Clock) -> F,
    F: Future<Output = Result<()>>,
{
    let interval = options.interval.max(INTERVAL_MIN);
    let sweep_period = interval.max(hints.limits().max_age / SWEEPS_PER_MAX_AGE);
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut changes = Some(changes);
    let mut last_sweep: Option<Instant> = None;
    loop {
        let on_timer = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            () = next_change(&mut changes) => false,
            _ = timer.tick() => true,
        };
        if on_timer
            && last_sweep.is_none_or(|at| at.elapsed() >= sweep_period)
            && hints.expiry_due(hints.env().now_ms())
        {
            last_sweep = Some(Instant::now());
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                () = sweep(&hints, options.pause_between_batches) => {}
            }
        }
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            report = replay_round(&hints, &is_live, &send, &options) => {
                if !report.is_idle() {
                    tracing::info!(
                        delivered = report.delivered,
                        kept_changed = report.kept_changed,
                        corrupt = report.corrupt,
                        failed_owners = ?report.failed_owners,
                        "handoff round"
                    );
                }
            }
        }
    }
    tracing::debug!("the handoff task stopped");
}

/// Returns when `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Returns on the next membership change; never, once the cluster stopped publishing.
async fn next_change(changes: &mut Option<watch::Receiver<u64>>) {
    if let Some(rx) = changes.as_mut() {
        if rx.changed().await.is_ok() {
            return;
        }
        // The sender is gone: without this the loop would spin on a closed channel.
        *changes = None;
    }
    std::future::pending::<()>().await
}

/// One expiry sweep over every hint, a batch at a time off the executor.
async fn sweep(hints: &Arc<HintStore>, pause: Duration) {
    let mut sweep = Sweep::new(hints.env().now_ms());
    loop {
        let store = hints.clone();
        let result = hints
            .env()
            .blocking(move || {
                let done = store.expire_batch(&mut sweep);
                Ok((sweep, done))
            })
            .await;
        let done;
        (sweep, done) = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the expiry sweep failed; retrying later");
                return;
            }
        };
        match done {
            Ok(true) => break,
            Ok(false) => pause_for(pause).await,
            Err(e) => {
                tracing::warn!(error = %e, "the expiry sweep failed; retrying later");
                break;
            }
        }
    }
    if sweep.expired > 0 || sweep.corrupt > 0 {
        tracing::info!(
            expired = sweep.expired,
            corrupt = sweep.corrupt,
            "dropped expired hints"
        );
    }
}

/// One round: every live owner's hints, a batch per owner in turn, until each owner is
/// done or failed. `send(owner, key, clock)` hands one hint over; `is_live(owner)` is
/// asked before every batch, so an owner that goes down mid-round is left alone.
pub(super) async fn replay_round<L, S, F>(
    hints: &Arc<HintStore>,
    is_live: L,
    send: S,
    options: &HandoffOptions,
) -> RoundReport
where
    L: Fn(&str) -> bool,
    S: Fn(String, Vec<u8>, Clock) -> F,
    F: Future<Output = Result<()>>,
{
    let mut report = RoundReport::default();
    let mut turns: Vec<(String, Option<Vec<u8>>)> = hints
        .pending()
        .into_keys()
        .filter(|owner| is_live(owner))
        .map(|owner| (owner, None))
        .collect();
    let mut first = true;
    while !turns.is_empty() {
        let mut next_turns = Vec::with_capacity(turns.len());
        for (owner, cursor) in turns {
            if !is_live(&owner) {
                continue;
            }
            if !first {
                pause_for(options.pause_between_batches).await;
            }
            first = false;
            match replay_batch(hints, &owner, cursor, &send, options, &mut report).await {
                Ok(Some(next)) => next_turns.push((owner, Some(next))),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(%owner, error = %e, "handoff to the owner failed; retrying later");
                    report.failed_owners.push(owner);
                }
            }
        }
        turns = next_turns;
    }
    report
}

/// Sends one batch of `owner`'s hints from `cursor` and deletes those acknowledged and
/// unchanged. Returns where the owner's next batch starts, if it has more; an error
/// when a call failed (the hints not yet acknowledged stay).
async fn replay_batch<S, F>(
    hints: &Arc<HintStore>,
    owner: &str,
    cursor: Option<Vec<u8>>,
    send: &S,
    options: &HandoffOptions,
    report: &mut RoundReport,
) -> Result<Option<Vec<u8>>>
where
    S: Fn(String, Vec<u8>, Clock) -> F,
    F: Future<Output = Result<()>>,
{
    let batch = {
        let (store, owner, limit) = (hints.clone(), owner.to_owned(), options.batch_keys);
        hints
            .env()
            .blocking(move || store.read_batch(&owner, cursor.as_deref(), limit))
            .await?
    };
    report.corrupt += batch.corrupt;
    let mut delivered = Vec::with_capacity(batch.hints.len());
    let mut failure = None;
    {
        // Lazy: each call starts only when a slot among `concurrency` is free.
        let mut calls = futures::stream::iter(batch.hints)
            .map(|hint| {
                let call = send(owner.to_owned(), hint.key, hint.clock);
                async move { (hint.ticket, call.await) }
            })
            .buffer_unordered(options.concurrency.max(1));
        while let Some((ticket, result)) = calls.next().await {
            match result {
                Ok(()) => delivered.push(ticket),
                Err(e) => {
                    // The owner is probably down again; the calls still in flight are
                    // dropped (merges are idempotent, so a half-done one is harmless).
                    failure = Some(e);
                    break;
                }
            }
        }
    }
    // Whatever the owner acknowledged is done, even if a later call failed.
    let store = hints.clone();
    let (deleted, kept, delete_error) = hints
        .env()
        .blocking(move || {
            let (mut deleted, mut kept) = (0, 0);
            for ticket in &delivered {
                match store.delete_if_unchanged(ticket) {
                    Ok(true) => deleted += 1,
                    Ok(false) => kept += 1,
                    Err(e) => return Ok((deleted, kept, Some(e))),
                }
            }
            Ok((deleted, kept, None))
        })
        .await?;
    report.delivered += deleted;
    report.kept_changed += kept;
    ::metrics::counter!(names::HINTS_DELIVERED).increment(deleted);
    match failure.or(delete_error) {
        Some(e) => Err(e),
        None => Ok(batch.next),
    }
}

async fn pause_for(pause: Duration) {
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::handoff::HintLimits;
    use crate::storage::{Backend, Cf, MemoryBackend};
    use crate::version::{Actor, VersionVector, Versioned};

    fn store() -> Arc<HintStore> {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let limits = HintLimits {
            max_age: Duration::from_secs(3600),
            max_bytes: u64::MAX,
        };
        Arc::new(HintStore::open(backend, limits, crate::env::Env::production()).unwrap())
    }

    fn write(node: &str, value: &str) -> Clock {
        Clock::new().update(
            &VersionVector::empty(),
            Versioned::value(1, value.as_bytes().to_vec()),
            &Actor::new(node, 1),
        )
    }

    fn options(batch_keys: usize, concurrency: usize) -> HandoffOptions {
        HandoffOptions {
            batch_keys,
            concurrency,
            interval: Duration::from_secs(1),
            call_timeout: Duration::from_secs(1),
            pause_between_batches: Duration::ZERO,
        }
    }

    /// Every call a fake sender received: (owner, key, clock).
    type Calls = Arc<Mutex<Vec<(String, String, Clock)>>>;

    fn record(calls: &Calls, owner: &str, key: &[u8], clock: &Clock) {
        calls.lock().unwrap().push((
            owner.to_owned(),
            String::from_utf8(key.to_vec()).unwrap(),
            clock.clone(),
        ));
    }

    #[tokio::test]
    async fn delivered_hints_are_deleted_and_down_owners_left_alone() {
        // Every hint of a live owner is sent once with its clock and deleted, over several
        // batches; an owner that is not live is never called and keeps its hints.
        let hints = store();
        for i in 0..5 {
            let key = format!("k{i}");
            hints
                .add("n2", key.as_bytes(), &write("n1", &key), false)
                .unwrap();
        }
        hints.add("n3", b"k0", &write("n1", "x"), false).unwrap();
        let calls: Calls = Arc::default();
        let send = |owner: String, key: Vec<u8>, clock: Clock| {
            record(&calls, &owner, &key, &clock);
            async { Ok(()) }
        };
        let report = replay_round(&hints, |o| o == "n2", send, &options(2, 2)).await;
        assert_eq!(
            report,
            RoundReport {
                delivered: 5,
                ..RoundReport::default()
            }
        );
        let calls = calls.lock().unwrap();
        let mut keys: Vec<&str> = calls.iter().map(|(_, k, _)| k.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
        for (owner, key, clock) in calls.iter() {
            assert_eq!(owner, "n2");
            assert_eq!(clock, &write("n1", key));
        }
        assert_eq!(hints.pending(), BTreeMap::from([("n3".to_owned(), 1)]));
    }

    #[tokio::test]
    async fn a_failing_owner_keeps_its_hints_and_stops_its_round() {
        // The first failed call ends that owner's round with its hints kept, while the
        // other owners' hints are still delivered.
        let hints = store();
        for i in 0..5 {
            let key = format!("k{i}");
            hints
                .add("n2", key.as_bytes(), &write("n1", &key), false)
                .unwrap();
            hints
                .add("n3", key.as_bytes(), &write("n1", &key), false)
                .unwrap();
        }
        let calls: Calls = Arc::default();
        let send = |owner: String, key: Vec<u8>, clock: Clock| {
            record(&calls, &owner, &key, &clock);
            async move {
                if owner == "n2" {
                    Err(Error::Peer {
                        peer: owner,
                        reason: "unreachable".into(),
                    })
                } else {
                    Ok(())
                }
            }
        };
        let report = replay_round(&hints, |_| true, send, &options(2, 1)).await;
        assert_eq!(report.failed_owners, ["n2"]);
        assert_eq!(report.delivered, 5);
        let to_n2 = calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(o, _, _)| o == "n2")
            .count();
        assert_eq!(to_n2, 1, "the round went on calling a failed owner");
        assert_eq!(hints.pending(), BTreeMap::from([("n2".to_owned(), 5)]));
    }

    #[tokio::test]
    async fn a_hint_changed_mid_round_is_kept() {
        // A write merged into a hint while its handoff was in flight keeps the hint, with
        // both values, for the next round; the next round then delivers and deletes it.
        let hints = store();
        hints.add("n2", b"k1", &write("n1", "a"), false).unwrap();
        hints.add("n2", b"k2", &write("n1", "b"), false).unwrap();
        let send = |_owner: String, key: Vec<u8>, _clock: Clock| {
            if key == b"k1" {
                // Arrives between the read and the owner's answer.
                hints.add("n2", b"k1", &write("n3", "c"), false).unwrap();
            }
            async { Ok(()) }
        };
        let report = replay_round(&hints, |_| true, send, &options(10, 4)).await;
        assert_eq!((report.delivered, report.kept_changed), (1, 1));
        assert_eq!(hints.pending(), BTreeMap::from([("n2".to_owned(), 1)]));
        let kept = hints.get("n2", b"k1").unwrap().1;
        assert_eq!(kept, write("n1", "a").sync(&write("n3", "c")));

        let report = replay_round(
            &hints,
            |_| true,
            |_, _, _| async { Ok(()) },
            &options(10, 4),
        )
        .await;
        assert_eq!(report.delivered, 1);
        assert!(hints.pending().is_empty());
        assert_eq!(hints.bytes(), 0);
    }

    #[tokio::test]
    async fn a_corrupt_hint_met_in_a_round_is_counted_and_removed() {
        // Replay reports and deletes a hint it cannot decode and delivers the rest.
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let limits = HintLimits {
            max_age: Duration::from_secs(3600),
            max_bytes: u64::MAX,
        };
        let hints = Arc::new(
            HintStore::open(backend.clone(), limits, crate::env::Env::production()).unwrap(),
        );
        hints.add("n2", b"bad", &write("n1", "a"), false).unwrap();
        hints.add("n2", b"good", &write("n1", "b"), false).unwrap();
        let hint_key = super::super::store::hint_key("n2", b"bad").unwrap();
        let mut raw = backend.get(Cf::Hints, &hint_key).unwrap().unwrap();
        raw[12] ^= 0x01;
        backend.put(Cf::Hints, &hint_key, &raw, false).unwrap();
        let report = replay_round(
            &hints,
            |_| true,
            |_, _, _| async { Ok(()) },
            &options(10, 4),
        )
        .await;
        assert_eq!((report.delivered, report.corrupt), (1, 1));
        assert!(hints.pending().is_empty());
        assert_eq!(hints.bytes(), 0);
    }

    #[tokio::test]
    async fn the_task_replays_on_a_membership_change_and_stops_on_shutdown() {
        // With the timer far off, a membership change alone starts a round once the owner
        // is live, and the task ends when told to stop.
        let hints = store();
        hints.add("n2", b"k", &write("n1", "a"), false).unwrap();
        let live = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (changed, changes) = watch::channel(0u64);
        let (stop, shutdown) = watch::channel(false);
        let is_live = {
            let live = live.clone();
            move |_: &str| live.load(std::sync::atomic::Ordering::SeqCst)
        };
        let mut options = options(10, 4);
        options.interval = Duration::from_secs(3600);
        let task = tokio::spawn(run_replay(
            hints.clone(),
            changes,
            is_live,
            |_, _, _| async { Ok(()) },
            options,
            shutdown,
        ));
        // The timer's first tick runs a round at once, while the owner is down.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(hints.pending().len(), 1);
        live.store(true, std::sync::atomic::Ordering::SeqCst);
        changed.send(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !hints.pending().is_empty() {
            assert!(Instant::now() < deadline, "no round ran after the change");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task did not stop")
            .unwrap();
    }
}
