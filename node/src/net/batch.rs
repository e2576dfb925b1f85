//! Batching of peer calls: one task per peer gathers the calls waiting for it into one
//! message.
//!
//! A peer call over HTTP/2 costs far more CPU than the read or merge it carries: a
//! stream, headers, a task on each side and two trips through the kernel, about 125 µs
//! of CPU on a 2-core machine against about 5 µs for the RocksDB work (see
//! docs/benchmarks.md). A busy coordinator calls each peer thousands of times a second,
//! so calls to one peer queue for its batcher, which sends what is waiting as one
//! message, one message at a time per peer (a second only when the first is slow, see
//! [`BATCHES_IN_FLIGHT_MAX`]). An idle peer gets each call at once, alone; under load,
//! the calls that arrive while a message is answered travel together in the next one. The peer runs
//! a message's calls concurrently and answers them all in one message.
//!
//! Caveats:
//! - A message's answer waits for its slowest call: a merge with `sync=true` waiting
//!   for fsync holds up the reads that share its message. Forwarded writes, which wait
//!   for a quorum of their own, are never batched.
//! - A message fails as a whole: when it cannot be sent every call in it is "not
//!   sent", when its answer does not come every call's outcome is unknown.
//! - A call whose caller gave up (its timeout) before its message left is dropped,
//!   never sent; once sent, the message runs until its latest caller's deadline.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::PEER_BATCH_CALLS;
use super::exchange::{Exchange, Failure};
use super::message::{BATCH_CALLS_MAX, PeerRequest, PeerResponse};

/// Messages sent to one peer and not yet answered. One at a time gathers the most
/// calls per message; a second leaves only once the first has been out for
/// [`SECOND_MESSAGE_AFTER`], so that one slow message (an fsync'ed merge, a large
/// value) does not stall every call to its peer.
pub(super) const BATCHES_IN_FLIGHT_MAX: usize = 2;
/// How long the only message in flight may be out before a second one may leave.
pub(super) const SECOND_MESSAGE_AFTER: Duration = Duration::from_millis(5);
/// Payload (keys and values) above which a batch takes no more calls: large values go
/// in messages of their own instead of delaying small calls.
const BATCH_PAYLOAD_MAX_BYTES: usize = 1024 * 1024;
/// Calls waiting for one peer's batcher; a caller past it waits for room, within its
/// own timeout.
const QUEUE_CALLS_MAX: usize = 4096;

/// A call waiting for its batch.
pub(super) struct Queued {
    request: PeerRequest,
    /// When its caller gives up.
    deadline: Instant,
    reply: oneshot::Sender<Result<PeerResponse, Failure>>,
}

/// The calling end of one peer's batcher task; the task ends when every clone is gone.
#[derive(Debug, Clone)]
pub(super) struct Batcher {
    queue: mpsc::Sender<Queued>,
}

impl Batcher {
    /// Starts the batcher task of `peer`.
    pub(super) fn start(transport: Exchange, peer: SocketAddr) -> Self {
        let (queue, calls) = mpsc::channel(QUEUE_CALLS_MAX);
        tokio::spawn(run(transport, peer, calls));
        Self { queue }
    }

    /// Sends `request` in the next batch and waits for its answer (no timeout: the
    /// caller's `deadline` only bounds how long its batch may take).
    pub(super) async fn call(
        &self,
        request: PeerRequest,
        deadline: Instant,
    ) -> Result<PeerResponse, Failure> {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            request,
            deadline,
            reply,
        };
        self.queue
            .send(queued)
            .await
            .map_err(|_| Failure::NotSent("the peer's batcher has stopped".into()))?;
        answer.await.unwrap_or_else(|_| {
            Err(Failure::Unknown(
                "the call's batch ended without an answer".into(),
            ))
        })
    }
}

/// The batcher task: sends what waits whenever fewer than [`BATCHES_IN_FLIGHT_MAX`]
/// messages are in flight, until every [`Batcher`] is dropped and the queue is empty.
async fn run(transport: Exchange, peer: SocketAddr, mut calls: mpsc::Receiver<Queued>) {
    let mut in_flight = FuturesUnordered::new();
    // When each message in flight left, by id, oldest first.
    let mut sent_at: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut next_id = 0u64;
    // A call that did not fit the last batch: the first of the next.
    let mut held: Option<Queued> = None;
    loop {
        let now = Instant::now();
        let oldest = sent_at.front().map(|(_, at)| *at);
        let may_send = may_send(sent_at.len(), oldest.map(|at| now - at));
        // When the oldest message will have been out long enough for another to leave.
        let second_at = oldest
            .filter(|_| !may_send && sent_at.len() < BATCHES_IN_FLIGHT_MAX)
            .map(|at| at + SECOND_MESSAGE_AFTER);
        // Biased: an unbiased select draws its branch order from tokio's own
        // randomness, which the simulator cannot seed, and the same seed would then
        // run differently twice. Completions first, so a free slot is seen at once.
        tokio::select! {
            biased;
            Some(id) = in_flight.next(), if !in_flight.is_empty() => {
                sent_at.retain(|(sent, _)| *sent != id);
            }
            () = tokio::time::sleep_until(second_at.unwrap_or(now)), if second_at.is_some() => {}
            first = next_call(&mut held, &mut calls), if may_send => {
                let Some(first) = first else { break };
                let batch = gather(first, || calls.try_recv().ok(), &mut held);
                if !batch.is_empty() {
                    next_id += 1;
                    sent_at.push_back((next_id, Instant::now()));
                    in_flight.push(send(transport.clone(), peer, batch, next_id));
                }
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Whether another message may leave, with `in_flight` out and the oldest of them out
/// for `oldest_age`.
fn may_send(in_flight: usize, oldest_age: Option<Duration>) -> bool {
    match in_flight {
        0 => true,
        n if n >= BATCHES_IN_FLIGHT_MAX => false,
        _ => oldest_age.is_some_and(|age| age >= SECOND_MESSAGE_AFTER),
    }
}

/// The held call if there is one, else the next call to arrive (`None` once the queue
/// is closed and empty).
async fn next_call(
    held: &mut Option<Queued>,
    calls: &mut mpsc::Receiver<Queued>,
) -> Option<Queued> {
    match held.take() {
        Some(call) => Some(call),
        None => calls.recv().await,
    }
}

/// The calls of one batch: `first`, then the calls `waiting` gives, up to
/// [`BATCH_CALLS_MAX`] calls and, past the first, [`BATCH_PAYLOAD_MAX_BYTES`] of
/// payload. A call that would go over the bytes is `held` for the next batch; a call
/// whose caller has gone is dropped unsent. Empty only if every caller has gone.
fn gather(
    first: Queued,
    mut waiting: impl FnMut() -> Option<Queued>,
    held: &mut Option<Queued>,
) -> Vec<Queued> {
    let mut batch = Vec::new();
    let mut payload_bytes = 0;
    let mut next = Some(first);
    while let Some(call) = next.take() {
        if !call.reply.is_closed() {
            let call_bytes = call.request.payload_bytes();
            if !batch.is_empty() && payload_bytes + call_bytes > BATCH_PAYLOAD_MAX_BYTES {
                *held = Some(call);
                break;
            }
            payload_bytes += call_bytes;
            batch.push(call);
            if batch.len() == BATCH_CALLS_MAX {
                break;
            }
        }
        next = waiting();
    }
    batch
}

/// Sends one batch and hands each caller its answer, or the batch's failure.
/// Returns `id` once every caller has its answer.
async fn send(transport: Exchange, peer: SocketAddr, batch: Vec<Queued>, id: u64) -> u64 {
    metrics::histogram!(PEER_BATCH_CALLS).record(batch.len() as f64);
    let deadline = batch
        .iter()
        .map(|call| call.deadline)
        .max()
        .expect("a batch is never empty");
    let (requests, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|call| (call.request, call.reply))
        .unzip();
    let outcome = tokio::time::timeout_at(deadline, transport.exchange(peer, requests))
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Unknown(
                "every caller of the batch timed out".into(),
            ))
        });
    match outcome {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(failure) => {
            for reply in replies {
                let _ = reply.send(Err(failure.clone()));
            }
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Actor, Clock, VersionVector, Versioned};

    fn queued(request: PeerRequest) -> (Queued, oneshot::Receiver<Result<PeerResponse, Failure>>) {
        let (reply, answer) = oneshot::channel();
        let deadline = Instant::now() + Duration::from_secs(1);
        let call = Queued {
            request,
            deadline,
            reply,
        };
        (call, answer)
    }

    fn read(key: &str) -> PeerRequest {
        PeerRequest::Read {
            key: key.as_bytes().to_vec(),
        }
    }

    fn merge_of(bytes: usize) -> PeerRequest {
        let actor = Actor::new("a", 1);
        let clock = Clock::new().update(
            &VersionVector::empty(),
            Versioned::value(1, vec![0; bytes]),
            &actor,
        );
        PeerRequest::Merge {
            key: b"big".to_vec(),
            clock,
            sync: false,
        }
    }

    fn keys(batch: &[Queued]) -> Vec<String> {
        batch
            .iter()
            .map(|call| match &call.request {
                PeerRequest::Read { key } => String::from_utf8_lossy(key).into_owned(),
                _ => "merge".into(),
            })
            .collect()
    }

    #[test]
    fn a_second_message_leaves_only_when_the_first_is_slow() {
        // Nothing in flight: send. One in flight: wait until it has been out for
        // SECOND_MESSAGE_AFTER. The cap: never more.
        assert!(may_send(0, None));
        assert!(!may_send(1, Some(Duration::ZERO)));
        assert!(!may_send(1, Some(SECOND_MESSAGE_AFTER / 2)));
        assert!(may_send(1, Some(SECOND_MESSAGE_AFTER)));
        assert!(!may_send(
            BATCHES_IN_FLIGHT_MAX,
            Some(SECOND_MESSAGE_AFTER * 100)
        ));
    }

    #[test]
    fn a_batch_takes_every_waiting_call_up_to_its_count() {
        // Calls waiting are taken in order; past BATCH_CALLS_MAX the rest wait, unread.
        let (first, _a) = queued(read("0"));
        let mut answers = Vec::new();
        let mut waiting: VecDeque<Queued> = (1..BATCH_CALLS_MAX + 5)
            .map(|i| {
                let (call, answer) = queued(read(&i.to_string()));
                answers.push(answer);
                call
            })
            .collect();
        let mut held = None;
        let batch = gather(first, || waiting.pop_front(), &mut held);
        assert_eq!(batch.len(), BATCH_CALLS_MAX);
        let expected: Vec<String> = (0..BATCH_CALLS_MAX).map(|i| i.to_string()).collect();
        assert_eq!(keys(&batch), expected);
        assert!(held.is_none());
        assert_eq!(waiting.len(), 5, "calls past the limit stay queued");
    }

    #[test]
    fn a_call_over_the_payload_limit_waits_for_the_next_batch() {
        // Small calls go together; the large one that would overflow the batch is held
        // (not lost), and starts the next batch on its own however large it is.
        let (first, _a) = queued(read("small"));
        let (big, _b) = queued(merge_of(BATCH_PAYLOAD_MAX_BYTES));
        let (after, _c) = queued(read("after"));
        let mut waiting = VecDeque::from([big, after]);
        let mut held = None;
        let batch = gather(first, || waiting.pop_front(), &mut held);
        assert_eq!(keys(&batch), ["small"]);
        let big = held.take().expect("the large call is held");
        let batch = gather(big, || waiting.pop_front(), &mut held);
        assert_eq!(keys(&batch), ["merge"], "alone: nothing fits beside it");
        assert!(held.is_some(), "the call after it waits in turn");
    }

    #[test]
    fn calls_whose_caller_left_are_not_sent() {
        // A caller that timed out before its batch left drops its receiver: its call is
        // skipped, even as the first of a batch.
        let (gone_first, answer) = queued(read("gone-first"));
        drop(answer);
        let (kept, _k) = queued(read("kept"));
        let (gone, answer) = queued(read("gone"));
        drop(answer);
        let mut waiting = VecDeque::from([kept, gone]);
        let mut held = None;
        let batch = gather(gone_first, || waiting.pop_front(), &mut held);
        assert_eq!(keys(&batch), ["kept"]);
        let (alone, answer) = queued(read("alone"));
        drop(answer);
        assert!(gather(alone, || None, &mut held).is_empty());
    }
}
