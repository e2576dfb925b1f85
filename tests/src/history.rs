//! A history of client operations, as the chaos checker needs it: what each client
//! asked, of which node, when it asked and when the answer came, and what the answer
//! was.
//!
//! A [`Recorder`] is shared by the workload's clients. Each operation is opened with
//! [`Recorder::invoke`] (which gives it its [`OpId`] and its invoke instant) and closed
//! with [`Recorder::complete`]; instants are monotonic, relative to the recorder's
//! start, so the checker can order a completion before an invocation.
//!
//! Outcomes are classified for what they prove about the store (see [`Outcome`]):
//! only an answer that a write was *not* applied counts as [`Outcome::Failed`]. Every
//! 5xx, including a 503 `insufficient_replicas`, is [`Outcome::Unknown`]: a
//! coordinator that stored its own copy before the quorum failed has written.
//!
//! A write's context is recorded as the [`OpId`] of the read it came from, not as the
//! token, because what a context covers is what that read returned (the checker's
//! business). The workload never sends the context a write returned: the server's
//! clock after a write may cover siblings the client never saw.

use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringkv_client::wire::{self, SiblingsBody};
use serde::Serialize;

use crate::http::Response;

/// An operation's id: unique in one history, in invocation order.
pub type OpId = u64;

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OpKind {
    /// `PUT /kv/{key}` of a value unique in the history; `context` is the read whose
    /// context the request carried (none: a blind write).
    Put {
        value: String,
        context: Option<OpId>,
        w: usize,
    },
    /// `GET /kv/{key}` at quorum `r`.
    Get { r: usize },
    /// `DELETE /kv/{key}`; `context` as for a PUT (none: the server reads first).
    Delete { context: Option<OpId>, w: usize },
}

impl OpKind {
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Get { .. })
    }

    /// The read whose context a write carried.
    pub fn context_from(&self) -> Option<OpId> {
        match self {
            OpKind::Put { context, .. } | OpKind::Delete { context, .. } => *context,
            OpKind::Get { .. } => None,
        }
    }
}

/// What a successful answer said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Answer {
    /// A PUT or DELETE answered 2xx. `acks` lists the replicas that acknowledged,
    /// `hinted` the `(owner, stand-in)` pairs among them.
    Written {
        context: Option<String>,
        acks: Vec<String>,
        hinted: Vec<(String, String)>,
    },
    /// GET 200.
    Found { value: String, context: String },
    /// GET 300.
    Siblings {
        values: Vec<String>,
        context: String,
    },
    /// GET 404; the context is set when the key has a tombstone.
    NotFound { context: Option<String> },
}

impl Answer {
    /// The values a read returned (none for a write or a 404).
    pub fn values(&self) -> &[String] {
        match self {
            Answer::Found { value, .. } => std::slice::from_ref(value),
            Answer::Siblings { values, .. } => values,
            Answer::Written { .. } | Answer::NotFound { .. } => &[],
        }
    }

    /// The context a read returned.
    pub fn read_context(&self) -> Option<&str> {
        match self {
            Answer::Found { context, .. } | Answer::Siblings { context, .. } => Some(context),
            Answer::NotFound { context } => context.as_deref(),
            Answer::Written { .. } => None,
        }
    }

    /// Acknowledgements from stand-ins (the stand-ins of `hinted` among `acks`).
    pub fn standin_acks(&self) -> usize {
        match self {
            Answer::Written { acks, .. } => acks.len() - self.home_acks(),
            _ => 0,
        }
    }

    /// Acknowledgements from home replicas: `acks` minus the stand-ins of `hinted`.
    pub fn home_acks(&self) -> usize {
        match self {
            Answer::Written { acks, hinted, .. } => acks
                .iter()
                .filter(|a| !hinted.iter().any(|(_, standin)| standin == *a))
                .count(),
            _ => 0,
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// The store answered with success.
    Ok(Answer),
    /// A definite refusal (4xx): nothing was written.
    Failed { status: u16, error: String },
    /// No verdict: a 5xx (timeout, insufficient replicas after the local write, …),
    /// no answer within the client's timeout, or a dropped connection. A write may
    /// or may not have been applied.
    Unknown { reason: String },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// Ok or Unknown: a write that may have been applied.
    pub fn may_have_applied(&self) -> bool {
        !matches!(self, Outcome::Failed { .. })
    }

    pub fn answer(&self) -> Option<&Answer> {
        match self {
            Outcome::Ok(answer) => Some(answer),
            _ => None,
        }
    }

    /// Classifies the answer to (or the failure of) a `PUT`/`DELETE` on `/kv/{key}`.
    pub fn of_write(result: &anyhow::Result<Response>) -> Self {
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => return Self::no_answer(e),
        };
        if (200..300).contains(&resp.status) {
            let list = |name: &str| -> Vec<String> {
                resp.header(name)
                    .map(|h| {
                        h.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let hinted = list(wire::HEADER_HINTED)
                .iter()
                .filter_map(|pair| pair.split_once("->"))
                .map(|(owner, standin)| (owner.trim().to_owned(), standin.trim().to_owned()))
                .collect();
            return Outcome::Ok(Answer::Written {
                context: resp.context(),
                acks: list(wire::HEADER_ACKS),
                hinted,
            });
        }
        Self::error(resp)
    }

    /// Classifies the answer to (or the failure of) a `GET /kv/{key}`.
    pub fn of_read(result: &anyhow::Result<Response>) -> Self {
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => return Self::no_answer(e),
        };
        let malformed = |why: String| Outcome::Unknown {
            reason: format!("malformed {} answer: {why}", resp.status),
        };
        match resp.status {
            200 => match resp.context() {
                Some(context) => Outcome::Ok(Answer::Found {
                    value: String::from_utf8_lossy(&resp.body).into_owned(),
                    context,
                }),
                None => malformed("no context header".to_owned()),
            },
            300 => match serde_json::from_slice::<SiblingsBody>(&resp.body) {
                Ok(body) => {
                    let mut values = Vec::with_capacity(body.siblings.len());
                    for s in &body.siblings {
                        match unbase64(s) {
                            Some(v) => values.push(v),
                            None => return malformed(format!("sibling {s:?} is not base64")),
                        }
                    }
                    Outcome::Ok(Answer::Siblings {
                        values,
                        context: body.context,
                    })
                }
                Err(e) => malformed(e.to_string()),
            },
            404 => Outcome::Ok(Answer::NotFound {
                context: resp.context(),
            }),
            _ => Self::error(resp),
        }
    }

    fn error(resp: &Response) -> Self {
        let code = serde_json::from_slice::<wire::ErrorBody>(&resp.body)
            .map(|b| b.error)
            .unwrap_or_else(|_| resp.text().chars().take(100).collect());
        // 408 and 429 say "not now", not "never": treat them like the 5xx.
        if (400..500).contains(&resp.status) && resp.status != 408 && resp.status != 429 {
            Outcome::Failed {
                status: resp.status,
                error: code,
            }
        } else {
            Outcome::Unknown {
                reason: format!("{} {code}", resp.status),
            }
        }
    }

    fn no_answer(e: &anyhow::Error) -> Self {
        Outcome::Unknown {
            reason: format!("{e:#}"),
        }
    }
}

/// Standard base64 to (lossy) text; `None` if it is not base64.
pub fn unbase64(text: &str) -> Option<String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// One operation, invoked and completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Op {
    pub id: OpId,
    /// The workload client that made it (its operations never overlap).
    pub client: usize,
    /// The node the request was sent to (which coordinated it or forwarded it).
    pub node: String,
    pub key: String,
    pub kind: OpKind,
    /// Since the recorder's start.
    pub invoke: Duration,
    pub complete: Duration,
    pub outcome: Outcome,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op {} [c{} via {}] {:?} key {} at {:.3}..{:.3}s -> {:?}",
            self.id,
            self.client,
            self.node,
            self.kind,
            self.key,
            self.invoke.as_secs_f64(),
            self.complete.as_secs_f64(),
            self.outcome
        )
    }
}

/// An invoked operation waiting for its outcome.
#[derive(Debug)]
#[must_use = "complete the operation, or it is missing from the history"]
pub struct Pending {
    id: OpId,
    client: usize,
    node: String,
    key: String,
    kind: OpKind,
    invoke: Duration,
}

impl Pending {
    pub fn id(&self) -> OpId {
        self.id
    }
}

/// Collects the operations of concurrent clients; share it in an `Arc`.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    next_id: AtomicU64,
    ops: Mutex<Vec<Op>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            next_id: AtomicU64::new(0),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Time since the start: the clock of every instant in the history.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Opens an operation now.
    pub fn invoke(
        &self,
        client: usize,
        node: impl Into<String>,
        key: impl Into<String>,
        kind: OpKind,
    ) -> Pending {
        Pending {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            client,
            node: node.into(),
            key: key.into(),
            kind,
            invoke: self.elapsed(),
        }
    }

    /// Closes an operation now with `outcome`; returns it.
    pub fn complete(&self, pending: Pending, outcome: Outcome) -> Op {
        let op = Op {
            id: pending.id,
            client: pending.client,
            node: pending.node,
            key: pending.key,
            kind: pending.kind,
            invoke: pending.invoke,
            complete: self.elapsed(),
            outcome,
        };
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(op.clone());
        op
    }

    /// Operations completed so far.
    pub fn len(&self) -> usize {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the operations recorded so far out of the recorder (no copy: long
    /// runs record millions), as a history in id order.
    pub fn take_history(&self) -> History {
        let ops = std::mem::take(&mut *self.ops.lock().unwrap_or_else(|e| e.into_inner()));
        History::new(ops)
    }

    /// A copy of the history so far, in id order.
    pub fn history(&self) -> History {
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        History::new(ops)
    }
}

/// Operations in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct History {
    pub ops: Vec<Op>,
}

/// Counts over a history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub ops: usize,
    pub puts: usize,
    pub gets: usize,
    pub deletes: usize,
    pub acked: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Acknowledged writes that a stand-in acknowledged (sloppy quorum at work).
    pub hinted: usize,
    /// Acknowledged reads that returned siblings.
    pub sibling_reads: usize,
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ops ({} puts, {} gets, {} deletes): {} acked, {} failed, {} unknown; {} \
             writes acked with a stand-in, {} reads of siblings",
            self.ops,
            self.puts,
            self.gets,
            self.deletes,
            self.acked,
            self.failed,
            self.unknown,
            self.hinted,
            self.sibling_reads
        )
    }
}

impl History {
    /// Sorts `ops` by id.
    pub fn new(mut ops: Vec<Op>) -> Self {
        ops.sort_by_key(|op| op.id);
        Self { ops }
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            ops: self.ops.len(),
            ..Totals::default()
        };
        for op in &self.ops {
            match op.kind {
                OpKind::Put { .. } => t.puts += 1,
                OpKind::Get { .. } => t.gets += 1,
                OpKind::Delete { .. } => t.deletes += 1,
            }
            match &op.outcome {
                Outcome::Ok(Answer::Written { hinted, .. }) if !hinted.is_empty() => {
                    t.acked += 1;
                    t.hinted += 1;
                }
                Outcome::Ok(Answer::Siblings { .. }) => {
                    t.acked += 1;
                    t.sibling_reads += 1;
                }
                Outcome::Ok(_) => t.acked += 1,
                Outcome::Failed { .. } => t.failed += 1,
                Outcome::Unknown { .. } => t.unknown += 1,
            }
        }
        t
    }

    /// Writes the history as JSON lines, one operation a line, for a failed run.
    pub fn write_jsonl(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for op in &self.ops {
            serde_json::to_writer(&mut out, op)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue};

    fn response(status: u16, headers: &[(&'static str, &str)], body: &str) -> Response {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        Response {
            status,
            headers: map,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn write_answers_are_classified_by_what_they_prove() {
        // A 2xx is acked with its acks and hints, a 4xx wrote nothing, a 5xx or no
        // answer is unknown (a coordinator may have stored before failing).
        let ok = Ok(response(
            204,
            &[
                ("x-ringkv-acks", "n1, n4"),
                ("x-ringkv-hinted", "n2->n4"),
                ("x-ringkv-context", "ctx"),
            ],
            "",
        ));
        let outcome = Outcome::of_write(&ok);
        let answer = outcome.answer().expect("acked");
        assert_eq!(
            answer,
            &Answer::Written {
                context: Some("ctx".into()),
                acks: vec!["n1".into(), "n4".into()],
                hinted: vec![("n2".into(), "n4".into())],
            }
        );
        assert_eq!(answer.home_acks(), 1);
        let refused = Ok(response(
            409,
            &[],
            r#"{"error":"too_many_siblings","message":"m"}"#,
        ));
        assert_eq!(
            Outcome::of_write(&refused),
            Outcome::Failed {
                status: 409,
                error: "too_many_siblings".into()
            }
        );
        for status in [500, 503, 504] {
            let resp = Ok(response(status, &[], r#"{"error":"x","message":"m"}"#));
            assert!(matches!(Outcome::of_write(&resp), Outcome::Unknown { .. }));
        }
        let dropped: anyhow::Result<Response> = Err(anyhow::anyhow!("connection reset"));
        assert!(matches!(
            Outcome::of_write(&dropped),
            Outcome::Unknown { .. }
        ));
    }

    #[test]
    fn read_answers_keep_values_and_contexts() {
        // 200, 300 and 404 are acked reads with their values and context.
        let found = Ok(response(200, &[("x-ringkv-context", "c1")], "v1"));
        assert_eq!(
            Outcome::of_read(&found),
            Outcome::Ok(Answer::Found {
                value: "v1".into(),
                context: "c1".into()
            })
        );
        let body = serde_json::json!({"key":"k","context":"c2","siblings":["YQ==","Yg=="]});
        let siblings = Ok(response(300, &[], &body.to_string()));
        assert_eq!(
            Outcome::of_read(&siblings),
            Outcome::Ok(Answer::Siblings {
                values: vec!["a".into(), "b".into()],
                context: "c2".into()
            })
        );
        let gone = Ok(response(404, &[("x-ringkv-context", "c3")], "{}"));
        assert_eq!(
            Outcome::of_read(&gone),
            Outcome::Ok(Answer::NotFound {
                context: Some("c3".into())
            })
        );
        let no_context = Ok(response(200, &[], "v"));
        assert!(matches!(
            Outcome::of_read(&no_context),
            Outcome::Unknown { .. }
        ));
    }

    #[test]
    fn recorder_orders_by_id_and_times_each_op() {
        // Ids follow invocation, completion comes after invocation, totals add up.
        let rec = Recorder::new();
        let a = rec.invoke(0, "n1", "k", OpKind::Get { r: 2 });
        let b = rec.invoke(
            1,
            "n2",
            "k",
            OpKind::Put {
                value: "v".into(),
                context: None,
                w: 2,
            },
        );
        rec.complete(
            b,
            Outcome::Unknown {
                reason: "timeout".into(),
            },
        );
        rec.complete(a, Outcome::Ok(Answer::NotFound { context: None }));
        let history = rec.history();
        assert_eq!(
            history.ops.iter().map(|o| o.id).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(history.ops.iter().all(|o| o.invoke <= o.complete));
        let t = history.totals();
        assert_eq!((t.ops, t.gets, t.puts, t.acked, t.unknown), (2, 1, 1, 1, 1));
    }
}
