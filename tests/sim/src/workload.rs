//! The simulated clients: blind writes, reads, read-modify-writes with contexts and
//! deletes at varied `r` and `w`, on a small set of keys so that they contend. Each
//! client calls a host's coordinator directly (the HTTP layer is not simulated) and
//! records each operation as the chaos suite's history does, with simulated time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_node::Error;
use ringkv_node::coordinator::{Coordinator, ReadOptions, Supersedes, WriteOptions};
use ringkv_node::version::{Clock, VersionVector};
use ringkv_tests::history::{Answer, Op, OpId, OpKind, Outcome};

use crate::clock::sim_ms;
use crate::net::Net;
use crate::rng::SimRng;
use crate::trace;
use crate::trace::Trace;

/// A client's request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What the clients know of each host, by host index.
pub type Directory = Arc<Mutex<Vec<Listing>>>;

/// One host as the clients know it.
#[derive(Debug, Clone)]
pub struct Listing {
    pub addr: std::net::SocketAddr,
    /// The coordinator serving it now (`None` while it is down), and its boot.
    pub running: Option<(Arc<Coordinator>, u64)>,
    /// Whether clients send it requests: not before a joining host first boots, nor
    /// after a host left or was lost for good (a down host stays listed: clients do
    /// not know it is down).
    pub listed: bool,
}

/// What the clients share.
#[derive(Debug)]
pub struct Shared {
    pub directory: Directory,
    pub net: Net,
    pub trace: Trace,
    pub ops: Mutex<Vec<Op>>,
    pub next_id: AtomicU64,
    /// Operations still to start, across all clients.
    pub budget: AtomicUsize,
    pub keys: usize,
    pub n: usize,
    /// Mean pause between a client's operations.
    pub think_ms: u64,
}

/// The last successful read of a key by this client: the op and its context.
struct LastRead {
    op: OpId,
    context: Option<VersionVector>,
}

pub async fn client(shared: Arc<Shared>, index: usize, seed: u64) {
    let mut rng = SimRng::derive(seed, &format!("client{index}"));
    let mut last: Vec<Option<LastRead>> = (0..shared.keys).map(|_| None).collect();
    let mut seq = 0u64;
    loop {
        let think = rng.range(0, 2 * shared.think_ms + 1);
        tokio::time::sleep(Duration::from_millis(think)).await;
        if shared
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_err()
        {
            return;
        }
        let k = rng.index(shared.keys);
        let key = format!("k{k:02}");
        let quorum = |rng: &mut SimRng| match rng.range(0, 100) {
            0..15 => 1,
            15..85 => 2,
            _ => shared.n,
        };
        let roll = rng.range(0, 100);
        if roll < 30 {
            seq += 1;
            let value = format!("c{index}-{seq}");
            let w = quorum(&mut rng);
            put(&shared, &mut rng, index, &key, value, None, w).await;
        } else if roll < 55 {
            let r = quorum(&mut rng);
            if let Some(read) = get(&shared, &mut rng, index, &key, r).await {
                last[k] = Some(read);
            }
        } else if roll < 85 {
            // Read, then write on top of what the read saw.
            let r = quorum(&mut rng);
            let Some(read) = get(&shared, &mut rng, index, &key, r).await else {
                continue;
            };
            seq += 1;
            let value = format!("c{index}-{seq}");
            let w = quorum(&mut rng);
            let context = read.context.clone().map(|vv| (read.op, vv));
            put(&shared, &mut rng, index, &key, value, context, w).await;
            last[k] = None;
        } else {
            let w = quorum(&mut rng);
            let context = last[k].take().and_then(|r| r.context.map(|vv| (r.op, vv)));
            delete(&shared, &mut rng, index, &key, context, w).await;
        }
    }
}

/// Picks a host and waits until it could take a request (a paused one holds it).
async fn pick(
    shared: &Shared,
    rng: &mut SimRng,
) -> (
    String,
    Option<(Arc<Coordinator>, u64, std::net::SocketAddr)>,
) {
    let (addr, entry) = {
        let dir = shared.directory.lock().unwrap_or_else(|p| p.into_inner());
        let listed: Vec<&Listing> = dir.iter().filter(|l| l.listed).collect();
        let listing = listed[rng.index(listed.len())];
        (listing.addr, listing.running.clone())
    };
    let node = format!(
        "n{}",
        addr.ip().to_string().rsplit('.').next().unwrap_or("?")
    );
    (node, entry.map(|(c, boot)| (c, boot, addr)))
}

fn still_up(shared: &Shared, addr: std::net::SocketAddr, boot: u64) -> bool {
    let dir = shared.directory.lock().unwrap_or_else(|p| p.into_inner());
    dir.iter()
        .any(|l| l.addr == addr && l.running.as_ref().is_some_and(|(_, b)| *b == boot))
}

/// Runs one operation against a host and records it.
async fn record<F, Fut>(
    shared: &Shared,
    rng: &mut SimRng,
    client: usize,
    key: &str,
    kind: OpKind,
    call: F,
) -> (OpId, Outcome)
where
    F: FnOnce(Arc<Coordinator>) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let (node, target) = pick(shared, rng).await;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let invoke = Duration::from_millis(sim_ms());
    trace!(shared.trace, "invoke {id} c{client} {node} {key} {kind:?}");
    let outcome = match target {
        // Connection refused: nothing was sent.
        None => Outcome::Failed {
            status: 0,
            error: "connection refused".into(),
        },
        Some((coordinator, boot, addr)) => {
            let run = async {
                if !shared.net.wait_running(addr, boot).await {
                    return Outcome::Unknown {
                        reason: "the host crashed".into(),
                    };
                }
                call(coordinator).await
            };
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_millis(500), run)
                .await
                .unwrap_or(Outcome::Unknown {
                    reason: "no answer in time".into(),
                });
            // The process died under the request: the client saw the connection drop.
            if still_up(shared, addr, boot) {
                outcome
            } else {
                Outcome::Unknown {
                    reason: "connection reset (host crashed)".into(),
                }
            }
        }
    };
    let complete = Duration::from_millis(sim_ms());
    trace!(shared.trace, "complete {id} {}", outcome_tag(&outcome));
    shared
        .ops
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Op {
            id,
            client,
            node,
            key: key.to_owned(),
            kind,
            invoke,
            complete,
            outcome: outcome.clone(),
        });
    (id, outcome)
}

fn outcome_tag(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok(Answer::Written { acks, hinted, .. }) => {
            format!("ok acks={acks:?} hinted={hinted:?}")
        }
        Outcome::Ok(answer) => format!("ok {:?}", answer.values()),
        Outcome::Failed { error, .. } => format!("failed {error}"),
        Outcome::Unknown { reason } => format!("unknown {reason}"),
    }
}

async fn put(
    shared: &Shared,
    rng: &mut SimRng,
    client: usize,
    key: &str,
    value: String,
    context: Option<(OpId, VersionVector)>,
    w: usize,
) {
    let kind = OpKind::Put {
        value: value.clone(),
        context: context.as_ref().map(|(op, _)| *op),
        w,
    };
    let supersedes = match context {
        Some((_, vv)) => Supersedes::Context(vv),
        None => Supersedes::Nothing,
    };
    let k = key.as_bytes().to_vec();
    record(shared, rng, client, key, kind, |c| async move {
        write_outcome(
            c.write(&k, Some(value.into_bytes()), supersedes, &write_options(w))
                .await,
        )
    })
    .await;
}

async fn delete(
    shared: &Shared,
    rng: &mut SimRng,
    client: usize,
    key: &str,
    context: Option<(OpId, VersionVector)>,
    w: usize,
) {
    let kind = OpKind::Delete {
        context: context.as_ref().map(|(op, _)| *op),
        w,
    };
    let supersedes = match context {
        Some((_, vv)) => Supersedes::Context(vv),
        None => Supersedes::CurrentVersions,
    };
    let k = key.as_bytes().to_vec();
    record(shared, rng, client, key, kind, |c| async move {
        write_outcome(c.write(&k, None, supersedes, &write_options(w)).await)
    })
    .await;
}

async fn get(
    shared: &Shared,
    rng: &mut SimRng,
    client: usize,
    key: &str,
    r: usize,
) -> Option<LastRead> {
    let k = key.as_bytes().to_vec();
    let (op, outcome) = record(
        shared,
        rng,
        client,
        key,
        OpKind::Get { r },
        |c| async move { read_outcome(c.get(&k, &read_options(r)).await) },
    )
    .await;
    let Outcome::Ok(answer) = &outcome else {
        return None;
    };
    let context = answer
        .read_context()
        .map(|t| VersionVector::from_token(t).expect("a context this store made"));
    Some(LastRead { op, context })
}

pub fn read_options(r: usize) -> ReadOptions {
    ReadOptions {
        r,
        timeout: REQUEST_TIMEOUT,
        sloppy: true,
    }
}

fn write_options(w: usize) -> WriteOptions {
    WriteOptions {
        w,
        r: 2.min(w.max(1)),
        timeout: REQUEST_TIMEOUT,
        // Acknowledged means on disk: the simulated crash is a power cut.
        sync: true,
        sloppy: true,
    }
}

fn write_outcome(result: ringkv_node::Result<ringkv_node::coordinator::WriteOutcome>) -> Outcome {
    match result {
        Ok(o) => Outcome::Ok(Answer::Written {
            context: Some(o.clock.context().to_token()),
            acks: o.acks,
            hinted: o.hinted,
        }),
        Err(e) => error_outcome(e),
    }
}

pub fn read_outcome(result: ringkv_node::Result<Option<Clock>>) -> Outcome {
    match result {
        Ok(None) => Outcome::Ok(Answer::NotFound { context: None }),
        Ok(Some(clock)) => {
            let context = clock.context().to_token();
            let values: Vec<String> = clock
                .live_values()
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            Outcome::Ok(match values.len() {
                0 => Answer::NotFound {
                    context: Some(context),
                },
                1 => Answer::Found {
                    value: values.into_iter().next().expect("one"),
                    context,
                },
                _ => Answer::Siblings { values, context },
            })
        }
        Err(e) => error_outcome(e),
    }
}

/// As the HTTP API maps errors: 4xx say nothing was written, the rest say nothing.
fn error_outcome(e: Error) -> Outcome {
    match e {
        Error::BadRequest(_)
        | Error::KeyTooLong { .. }
        | Error::ValueTooLarge { .. }
        | Error::BadContext(_) => Outcome::Failed {
            status: 400,
            error: e.to_string(),
        },
        Error::TooManySiblings { .. } => Outcome::Failed {
            status: 409,
            error: "too_many_siblings".into(),
        },
        other => Outcome::Unknown {
            reason: other.to_string(),
        },
    }
}
