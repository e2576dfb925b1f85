//! The history checker: pure functions from a [`History`] and the [`FinalState`]
//! read after the faults healed to a [`Report`] of the properties of
//! docs/architecture.md#properties and docs/reliability.md#the-properties.
//!
//! # What a context covers
//!
//! The only causal information a client has is which read a write's context came
//! from. A read *covers* the values it returned and, transitively, everything those
//! values' writes covered; a write *supersedes* what its context's read covered. So
//! the values of a key form a DAG: the parents of a value are the values returned by
//! the read whose context its PUT carried. Blind writes have no parents.
//!
//! # Properties
//!
//! 1. **No acknowledged write lost.** Every PUT answered 2xx is in the final read of
//!    its key (taken at `r = n`, after the heal, so it meets every replica that
//!    coordinated a write), or is covered by a write that may have been applied (Ok
//!    or Unknown). Covering only by writes of unknown fate is counted apart, as a
//!    weaker pass.
//! 2. **No phantom.** Every value read (during the run, in the final read, on any
//!    replica) was written by a PUT of the same key (whatever its outcome), and not
//!    read before that PUT was invoked.
//! 3. **Siblings only for concurrent writes.** No read and no replica returns two
//!    values one of which covers the other.
//! 4. **No resurrection.** A value covered by an acknowledged DELETE never appears in
//!    a read invoked after the delete completed, when that read's quorum must meet
//!    the delete's (home acknowledgements + `r` > `n`; stand-in acknowledgements do
//!    not count, because reads ask home replicas only); and no value covered by any
//!    acknowledged write appears in the final read.
//! 6. **Quorum reads see acknowledged writes.** A read at `r` invoked after a PUT
//!    completed whose home acknowledgements `h` satisfy `h + r > n` returns the PUT's
//!    value, unless a write that may have been applied and was invoked before the read
//!    completed covers it. The two quorums share a home replica, which holds the value
//!    durably (or what replaced it); stand-in acknowledgements do not count, as in 4.
//!    This is what catches a replica that forgets acknowledged writes (a lying fsync,
//!    a lost record) while its peers still hold them, which property 1 cannot see
//!    once repair has filled the hole.
//!
//!    In a run whose ring changes (nodes join, leave, are removed: [`Rings::Change`]),
//!    a write's acknowledgements may come from the homes of two rings, and a read
//!    asks the homes of one; what is promised is `w` acknowledgements in each ring
//!    (design: R + W > N at every moment), a stand-in's counting for its owner's
//!    rings, so 4 and 6 count `min(h, w - s)` there, `s` the stand-ins' acks.
//! 5. **Convergence.** After the heal, every node's `/admin/replicas` view of every
//!    key lists the same preference list of `n` nodes, and every replica in it
//!    answers with the same context token; the final read of every key succeeded.
//!
//! # Why checking only the parents is enough for property 1
//!
//! A value leaves every replica only when a write's context covers its dot. That
//! context came from a read of replicas whose clocks covered the dot: either a
//! replica still held the value (so the read returned it, unless another replica had
//! dropped it, which needs an earlier covering write), or the replica had dropped it
//! for an earlier covering write. By induction on causal order, some write that may
//! have been applied carried the context of a read that returned the value.
//!
//! # Caveats
//!
//! - Coverage through tombstones is not modelled (a 404 with a context covers what
//!   the deletes behind it covered, which the client cannot see), so properties 3
//!   and 4 may miss a violation through a tombstone; property 1 does not need it
//!   (see above).
//! - Writes carrying the context a *write* returned are modelled as covering only
//!   what their read covered: the server's clock after a write may cover siblings
//!   the client never saw. The workload never sends such contexts.
//! - A write the server applies twice (a forwarded write retried on another home
//!   replica after the first one stored it but failed to answer) has two dots; a
//!   read that saw one copy covers only that one, so the other copy shows here as
//!   a false sibling (or, after a delete, a resurrection). That is what a client
//!   sees, so it is reported: chaos seed 9819987031860811724 found it, the
//!   forwarder's log showing the failed first attempt (connection reset by a
//!   SIGKILL, or an HTTP/2 keep-alive timeout on a paused node). Since then a
//!   forwarded write is retried elsewhere only when it was never sent; otherwise
//!   it answers 504 (outcome unknown).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use ringkv_client::wire::ReplicasBody;
use serde::Serialize;

use crate::history::{Answer, History, Op, OpId, OpKind, Outcome, Totals, unbase64};

/// What was read of a key after the heal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FinalKey {
    /// The final `GET` at `r = n`.
    pub read: FinalRead,
    /// `/admin/replicas/{key}` as each node answered it, one view per node.
    pub views: Vec<ReplicaView>,
}

/// The final read of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FinalRead {
    /// The live values (empty: 404).
    Values(Vec<String>),
    /// No successful answer within the retries.
    Failed(String),
}

impl Default for FinalRead {
    fn default() -> Self {
        FinalRead::Failed("not read".to_owned())
    }
}

/// One node's `/admin/replicas/{key}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaView {
    /// The node that answered.
    pub observer: String,
    pub preference_list: Vec<String>,
    pub replicas: Vec<ReplicaState>,
}

/// One replica in a [`ReplicaView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaState {
    pub node: String,
    /// The replica's clock as a token; `None` for an unknown key or an error.
    pub context: Option<String>,
    /// Live values, decoded.
    pub siblings: Vec<String>,
    pub error: Option<String>,
}

impl ReplicaView {
    /// `observer`'s answer, with siblings decoded from base64 (a value that is not
    /// base64 is kept as `<not base64: …>`, which the checker reports as a phantom).
    pub fn from_body(observer: impl Into<String>, body: &ReplicasBody) -> Self {
        Self {
            observer: observer.into(),
            preference_list: body.preference_list.clone(),
            replicas: body
                .replicas
                .iter()
                .map(|r| ReplicaState {
                    node: r.node.clone(),
                    context: r.context.clone(),
                    siblings: r
                        .siblings
                        .iter()
                        .flatten()
                        .map(|s| unbase64(s).unwrap_or_else(|| format!("<not base64: {s}>")))
                        .collect(),
                    error: r.error.clone(),
                })
                .collect(),
        }
    }

    /// A view whose request failed.
    pub fn failed(observer: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            observer: observer.into(),
            preference_list: Vec::new(),
            replicas: vec![ReplicaState {
                node: "?".to_owned(),
                context: None,
                siblings: Vec::new(),
                error: Some(error.into()),
            }],
        }
    }
}

/// Everything read after the heal, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FinalState {
    pub keys: BTreeMap<String, FinalKey>,
}

/// Why `key`'s replicas have not converged, or `None` if they have: every view lists
/// the same preference list of `n` nodes, answers for exactly those nodes, with no
/// error, and every replica's context token is the same.
pub fn divergence(key: &FinalKey, n: usize) -> Option<String> {
    let Some(first) = key.views.first() else {
        return Some("no replica views".to_owned());
    };
    if first.preference_list.len() != n {
        return Some(format!(
            "{} lists a preference list of {} nodes, not {n}: {:?}",
            first.observer,
            first.preference_list.len(),
            first.preference_list
        ));
    }
    let mut contexts: BTreeMap<Option<&str>, Vec<String>> = BTreeMap::new();
    for view in &key.views {
        if view.preference_list != first.preference_list {
            return Some(format!(
                "{} lists {:?}, {} lists {:?}",
                first.observer, first.preference_list, view.observer, view.preference_list
            ));
        }
        let answered: BTreeSet<&str> = view.replicas.iter().map(|r| r.node.as_str()).collect();
        let expected: BTreeSet<&str> = view.preference_list.iter().map(String::as_str).collect();
        if answered != expected || view.replicas.len() != expected.len() {
            return Some(format!(
                "{} reports replicas {answered:?} for preference list {expected:?}",
                view.observer
            ));
        }
        for replica in &view.replicas {
            if let Some(error) = &replica.error {
                return Some(format!(
                    "{} could not read {}: {error}",
                    view.observer, replica.node
                ));
            }
            contexts
                .entry(replica.context.as_deref())
                .or_default()
                .push(format!("{}@{}", replica.node, view.observer));
        }
    }
    (contexts.len() > 1).then(|| {
        let groups: Vec<String> = contexts
            .iter()
            .map(|(ctx, who)| {
                let shown = ctx.map_or("none".to_owned(), |c| c.chars().take(24).collect());
                format!("{shown}: {}", who.join(","))
            })
            .collect();
        format!("replicas hold different clocks: {}", groups.join(" | "))
    })
}

/// One violation of a property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub key: String,
    /// The operations involved, most relevant first.
    pub ops: Vec<OpId>,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {} ops {:?}: {}", self.key, self.ops, self.detail)
    }
}

/// The checker's verdict, per property.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub totals: Totals,
    /// 1. Acknowledged writes missing from the final read and covered by nothing.
    pub lost: Vec<Violation>,
    /// 2. Values never written (for that key), or read before written.
    pub phantom: Vec<Violation>,
    /// 3. Reads holding a value together with one that covers it.
    pub false_siblings: Vec<Violation>,
    /// 4. Values covered by an acknowledged delete (or, finally, any acknowledged
    ///    write) that were read when they had to be gone.
    pub resurrected: Vec<Violation>,
    /// 5. Keys whose replicas disagree, or that could not be read, after the heal.
    pub diverged: Vec<Violation>,
    /// 6. Reads whose quorum met an acknowledged write's and that missed it.
    pub stale_reads: Vec<Violation>,
    /// The history itself is inconsistent (a value written twice, a context from a
    /// read that did not succeed): a workload bug, counted as a violation.
    pub malformed: Vec<Violation>,
    /// Acknowledged writes checked against the final read.
    pub acked_writes_checked: usize,
    /// Acknowledged writes absent from the final read and covered only by writes
    /// of unknown fate: not a violation, but a weaker pass.
    pub absent_covered_by_unknown: usize,
    /// Reads (with a value) checked against acknowledged deletes for property 4.
    pub reads_after_delete_checked: usize,
    /// Keys checked for convergence.
    pub keys_checked: usize,
    /// (read, acknowledged write) pairs whose quorums had to meet, for property 6.
    pub quorum_pairs_checked: usize,
}

impl Report {
    /// Violations of every property, the malformed history included.
    pub fn violations(&self) -> usize {
        self.lost.len()
            + self.phantom.len()
            + self.false_siblings.len()
            + self.resurrected.len()
            + self.diverged.len()
            + self.stale_reads.len()
            + self.malformed.len()
    }

    pub fn is_clean(&self) -> bool {
        self.violations() == 0
    }

    /// `(property, violations)` in the order of the module docs.
    pub fn properties(&self) -> [(&'static str, &[Violation]); 7] {
        [
            ("1 no acknowledged write lost", &self.lost),
            ("2 no phantom value", &self.phantom),
            (
                "3 siblings only for concurrent writes",
                &self.false_siblings,
            ),
            ("4 no resurrection", &self.resurrected),
            ("5 convergence", &self.diverged),
            ("6 quorum reads see acknowledged writes", &self.stale_reads),
            ("  malformed history", &self.malformed),
        ]
    }
}

/// Examples shown per property in [`Report`]'s `Display`.
const EXAMPLES_SHOWN: usize = 5;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "history: {}", self.totals)?;
        writeln!(
            f,
            "checked: {} acknowledged writes against the final read ({} absent but covered \
             only by writes of unknown fate), {} reads against earlier deletes, {} keys for \
             convergence, {} read/write pairs whose quorums meet",
            self.acked_writes_checked,
            self.absent_covered_by_unknown,
            self.reads_after_delete_checked,
            self.keys_checked,
            self.quorum_pairs_checked
        )?;
        for (name, list) in self.properties() {
            writeln!(f, "{name}: {} violations", list.len())?;
            for v in list.iter().take(EXAMPLES_SHOWN) {
                writeln!(f, "    {v}")?;
            }
            if list.len() > EXAMPLES_SHOWN {
                writeln!(f, "    … and {} more", list.len() - EXAMPLES_SHOWN)?;
            }
        }
        Ok(())
    }
}

/// Whether the ring stayed the same through the run (properties 4 and 6 depend on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rings {
    /// One ring throughout: every home acknowledgement is a home of every read.
    #[default]
    Fixed,
    /// Membership changed during the run: writes were acknowledged in several rings.
    Change,
}

/// Checks `history` and `fin` (see the module docs) for a cluster of replication
/// factor `n` whose ring stayed the same.
pub fn check(history: &History, fin: &FinalState, n: usize) -> Report {
    check_rings(history, fin, n, Rings::Fixed)
}

/// [`check`], for a run whose ring may have changed.
pub fn check_rings(history: &History, fin: &FinalState, n: usize, rings: Rings) -> Report {
    check_lost_nodes(history, fin, n, rings, &BTreeSet::new())
}

/// [`check_rings`], for a run in which the nodes `lost` crashed for good (and were
/// removed): their acknowledgements promise nothing to a later read's quorum, since
/// the copies they held are gone (property 6; the others still count them).
pub fn check_lost_nodes(
    history: &History,
    fin: &FinalState,
    n: usize,
    rings: Rings,
    lost: &BTreeSet<String>,
) -> Report {
    let mut checker = Checker::new(history, n);
    checker.rings = rings;
    checker.lost = lost.clone();
    checker.report.totals = history.totals();
    checker.lost_writes(fin);
    checker.phantoms_and_false_siblings(fin);
    checker.resurrections(fin);
    checker.convergence(fin);
    checker.stale_reads();
    checker.report
}

/// A write's index in [`Checker::writes`].
type W = usize;

struct Checker<'h> {
    h: &'h History,
    n: usize,
    rings: Rings,
    /// Nodes that crashed for good: their copies are gone.
    lost: BTreeSet<String>,
    /// Op id -> index in `h.ops`.
    by_id: HashMap<OpId, usize>,
    /// PUT ops (indices in `h.ops`), in history order.
    writes: Vec<usize>,
    /// Value -> the write that wrote it.
    value_of: HashMap<&'h str, W>,
    /// The values a write's context covered directly.
    parents: Vec<Vec<W>>,
    /// The first acknowledged write (PUT or DELETE) found covering each write.
    covered_acked: Vec<Option<OpId>>,
    /// The first write that may have been applied found covering each write.
    covered_effective: Vec<Option<OpId>>,
    /// The earliest invocation of a write that may have been applied and covers
    /// each write.
    covered_since: Vec<Option<Duration>>,
    report: Report,
}

impl<'h> Checker<'h> {
    /// The home acknowledgements of `write` that a later read's quorum must meet.
    fn home_acks(&self, write: &Op) -> usize {
        let answer = write.outcome.answer();
        let lost = match answer {
            Some(Answer::Written { acks, hinted, .. }) => acks
                .iter()
                .filter(|a| self.lost.contains(*a))
                .filter(|a| !hinted.iter().any(|(_, standin)| standin == *a))
                .count(),
            _ => 0,
        };
        let home = answer.map_or(0, Answer::home_acks) - lost;
        match (self.rings, &write.kind) {
            (Rings::Fixed, _) | (_, OpKind::Get { .. }) => home,
            (Rings::Change, OpKind::Put { w, .. } | OpKind::Delete { w, .. }) => {
                // Each ring got `w` acknowledgements, a stand-in's counting for its
                // owner's rings: so each ring's own homes acknowledged at least `w`
                // minus the stand-ins.
                let standins = answer.map_or(0, Answer::standin_acks);
                home.min(w.saturating_sub(standins + lost))
            }
        }
    }

    fn new(h: &'h History, n: usize) -> Self {
        let mut c = Checker {
            h,
            n,
            rings: Rings::Fixed,
            lost: BTreeSet::new(),
            by_id: HashMap::new(),
            writes: Vec::new(),
            value_of: HashMap::new(),
            parents: Vec::new(),
            covered_acked: Vec::new(),
            covered_effective: Vec::new(),
            covered_since: Vec::new(),
            report: Report::default(),
        };
        for (i, op) in h.ops.iter().enumerate() {
            if c.by_id.insert(op.id, i).is_some() {
                c.malformed(op, vec![op.id], "op id used twice".to_owned());
            }
            if let OpKind::Put { value, .. } = &op.kind {
                let w = c.writes.len();
                c.writes.push(i);
                if let Some(&other) = c.value_of.get(value.as_str()) {
                    let first = c.op(other).id;
                    c.malformed(
                        op,
                        vec![op.id, first],
                        format!("value {value:?} written twice"),
                    );
                } else {
                    c.value_of.insert(value, w);
                }
            }
        }
        c.parents = (0..c.writes.len())
            .map(|w| c.covered_by(&h.ops[c.writes[w]]))
            .collect();
        c.covered_acked = vec![None; c.writes.len()];
        c.covered_effective = vec![None; c.writes.len()];
        c.covered_since = vec![None; c.writes.len()];
        c.propagate_coverage();
        c.propagate_covered_since();
        c
    }

    fn op(&self, w: W) -> &'h Op {
        &self.h.ops[self.writes[w]]
    }

    fn malformed(&mut self, op: &Op, ops: Vec<OpId>, detail: String) {
        self.report.malformed.push(Violation {
            key: op.key.clone(),
            ops,
            detail,
        });
    }

    /// The read whose context `op` carried, if it is a valid one: a successful GET of
    /// the same key that completed before `op` was invoked.
    fn source(&self, op: &Op) -> Result<Option<&'h Op>, String> {
        let Some(from) = op.kind.context_from() else {
            return Ok(None);
        };
        let Some(&i) = self.by_id.get(&from) else {
            return Err(format!(
                "context from op {from}, which is not in the history"
            ));
        };
        let src = &self.h.ops[i];
        if !matches!(src.kind, OpKind::Get { .. }) || !src.outcome.is_ok() {
            return Err(format!("context from op {from}, not a successful read"));
        }
        if src.key != op.key {
            return Err(format!("context from op {from}, a read of key {}", src.key));
        }
        if src.complete > op.invoke {
            return Err(format!("context from op {from}, which had not completed"));
        }
        Ok(Some(src))
    }

    /// The writes whose values `op`'s context read returned (values not written for
    /// that key are phantoms, reported elsewhere, and skipped here).
    fn covered_by(&self, op: &Op) -> Vec<W> {
        match self.source(op) {
            Ok(Some(src)) => src
                .outcome
                .answer()
                .map(Answer::values)
                .unwrap_or_default()
                .iter()
                .filter_map(|v| self.write_of(&op.key, v))
                .collect(),
            // Reported by `propagate_coverage`.
            Ok(None) | Err(_) => Vec::new(),
        }
    }

    /// The write of `value` if it wrote `key`.
    fn write_of(&self, key: &str, value: &str) -> Option<W> {
        self.value_of
            .get(value)
            .copied()
            .filter(|&w| self.op(w).key == key)
    }

    /// Marks `seeds` and their ancestors with `mark` where unmarked; a marked write's
    /// ancestors are marked already, so the walk stops there.
    fn mark_ancestors<T: Copy>(parents: &[Vec<W>], seeds: &[W], marks: &mut [Option<T>], mark: T) {
        let mut stack: Vec<W> = seeds.to_vec();
        while let Some(w) = stack.pop() {
            if marks[w].is_some() {
                continue;
            }
            marks[w] = Some(mark);
            stack.extend(parents[w].iter().copied());
        }
    }

    /// Fills `covered_acked` and `covered_effective` from every write with a context,
    /// in completion order (so the op named is the earliest to complete).
    fn propagate_coverage(&mut self) {
        let mut order: Vec<usize> = (0..self.h.ops.len())
            .filter(|&i| self.h.ops[i].kind.is_write())
            .collect();
        order.sort_by_key(|&i| self.h.ops[i].complete);
        for i in order {
            let op = &self.h.ops[i];
            if let Err(why) = self.source(op) {
                self.malformed(op, vec![op.id], why);
                continue;
            }
            let no_context = op.kind.context_from().is_none();
            if no_context && matches!(op.kind, OpKind::Delete { .. }) {
                // A delete without a context supersedes whatever its own read saw:
                // anything of the key written before it completed may be covered.
                if op.outcome.may_have_applied() {
                    for w in self.writes_invoked_before(&op.key, op.complete) {
                        self.covered_effective[w].get_or_insert(op.id);
                    }
                }
                continue;
            }
            let seeds = self.covered_by(op);
            if op.outcome.is_ok() {
                Self::mark_ancestors(&self.parents, &seeds, &mut self.covered_acked, op.id);
            }
            if op.outcome.may_have_applied() {
                Self::mark_ancestors(&self.parents, &seeds, &mut self.covered_effective, op.id);
            }
        }
    }

    /// The PUTs of `key` invoked by `t`: what a delete without a context that
    /// completed at `t` may have superseded (it supersedes what its own read saw). A
    /// PUT invoked at the very instant counts: in the simulator, whose clock does not
    /// move while tasks run, its local write can land before the delete's read.
    fn writes_invoked_before(&self, key: &str, t: Duration) -> Vec<W> {
        (0..self.writes.len())
            .filter(|&w| self.op(w).key == key && self.op(w).invoke <= t)
            .collect()
    }

    /// Fills `covered_since`: writes that may have been applied, in invocation order,
    /// so the first mark a write gets is the earliest.
    fn propagate_covered_since(&mut self) {
        let mut order: Vec<usize> = (0..self.h.ops.len())
            .filter(|&i| {
                let op = &self.h.ops[i];
                op.kind.is_write() && op.outcome.may_have_applied() && self.source(op).is_ok()
            })
            .collect();
        order.sort_by_key(|&i| self.h.ops[i].invoke);
        for i in order {
            let op = &self.h.ops[i];
            if op.kind.context_from().is_none() && matches!(op.kind, OpKind::Delete { .. }) {
                for w in self.writes_invoked_before(&op.key, op.complete) {
                    self.covered_since[w].get_or_insert(op.invoke);
                }
                continue;
            }
            let seeds = self.covered_by(op);
            Self::mark_ancestors(&self.parents, &seeds, &mut self.covered_since, op.invoke);
        }
    }

    /// Property 6.
    fn stale_reads(&mut self) {
        // Per key, the acknowledged PUTs with their home acks, by completion time: a
        // read is checked only against its own key's writes that completed before it.
        let mut by_key: HashMap<&str, Vec<(Duration, usize, W)>> = HashMap::new();
        for w in 0..self.writes.len() {
            let write = self.op(w);
            if write.outcome.is_ok() {
                let home = self.home_acks(write);
                by_key
                    .entry(write.key.as_str())
                    .or_default()
                    .push((write.complete, home, w));
            }
        }
        for writes in by_key.values_mut() {
            writes.sort_unstable();
        }
        let mut found = Vec::new();
        for read in &self.h.ops {
            let (OpKind::Get { r }, Some(answer)) = (&read.kind, read.outcome.answer()) else {
                continue;
            };
            let Some(writes) = by_key.get(read.key.as_str()) else {
                continue;
            };
            let values = answer.values();
            let before = writes.partition_point(|(complete, _, _)| *complete < read.invoke);
            for &(_, home, w) in &writes[..before] {
                if home + r <= self.n {
                    continue;
                }
                let write = self.op(w);
                let OpKind::Put { value, .. } = &write.kind else {
                    continue;
                };
                self.report.quorum_pairs_checked += 1;
                if values.contains(value)
                    || self.covered_since[w].is_some_and(|at| at < read.complete)
                {
                    continue;
                }
                found.push(Violation {
                    key: read.key.clone(),
                    ops: vec![read.id, write.id],
                    detail: format!(
                        "read op {} (r={r}, invoked {:.3}s, via {}) returned {values:?}, \
                         missing {value:?} of op {} (completed {:.3}s, {home} home \
                         acknowledgements), which nothing covered",
                        read.id,
                        read.invoke.as_secs_f64(),
                        read.node,
                        write.id,
                        write.complete.as_secs_f64()
                    ),
                });
            }
        }
        self.report.stale_reads = found;
    }

    /// Property 1.
    fn lost_writes(&mut self, fin: &FinalState) {
        for w in 0..self.writes.len() {
            let op = self.op(w);
            let (OpKind::Put { value, .. }, true) = (&op.kind, op.outcome.is_ok()) else {
                continue;
            };
            // A key without a final read is reported under convergence.
            let Some(FinalKey {
                read: FinalRead::Values(values),
                ..
            }) = fin.keys.get(&op.key)
            else {
                continue;
            };
            self.report.acked_writes_checked += 1;
            if values.contains(value) || self.covered_acked[w].is_some() {
                continue;
            }
            if self.covered_effective[w].is_some() {
                self.report.absent_covered_by_unknown += 1;
                continue;
            }
            self.report.lost.push(Violation {
                key: op.key.clone(),
                ops: vec![op.id],
                detail: format!(
                    "acknowledged PUT of {value:?} (via {}, {:?}) is not in the final read \
                     {values:?} and no write covered it",
                    op.node, op.outcome
                ),
            });
        }
    }

    /// Everything read, as `(key, op if a history read, where, values)`.
    fn observations<'a>(
        &'a self,
        fin: &'a FinalState,
    ) -> Vec<(&'a str, Option<&'a Op>, String, &'a [String])> {
        let mut out = Vec::new();
        for op in &self.h.ops {
            if let (OpKind::Get { .. }, Some(answer)) = (&op.kind, op.outcome.answer()) {
                out.push((
                    op.key.as_str(),
                    Some(op),
                    format!("read op {}", op.id),
                    answer.values(),
                ));
            }
        }
        for (key, fk) in &fin.keys {
            if let FinalRead::Values(values) = &fk.read {
                out.push((
                    key.as_str(),
                    None,
                    "the final read".to_owned(),
                    values.as_slice(),
                ));
            }
            for view in &fk.views {
                for r in &view.replicas {
                    out.push((
                        key.as_str(),
                        None,
                        format!("replica {} (seen from {})", r.node, view.observer),
                        r.siblings.as_slice(),
                    ));
                }
            }
        }
        out
    }

    /// Properties 2 and 3.
    fn phantoms_and_false_siblings(&mut self, fin: &FinalState) {
        let mut phantom = Vec::new();
        let mut false_siblings = Vec::new();
        for (key, read, place, values) in self.observations(fin) {
            let read_ids: Vec<OpId> = read.map(|r| vec![r.id]).unwrap_or_default();
            let mut known: Vec<W> = Vec::with_capacity(values.len());
            for value in values {
                let Some(&w) = self.value_of.get(value.as_str()) else {
                    phantom.push(Violation {
                        key: key.to_owned(),
                        ops: read_ids.clone(),
                        detail: format!("{place} returned {value:?}, which no PUT wrote"),
                    });
                    continue;
                };
                let write = self.op(w);
                if write.key != key {
                    phantom.push(Violation {
                        key: key.to_owned(),
                        ops: [read_ids.clone(), vec![write.id]].concat(),
                        detail: format!(
                            "{place} returned {value:?}, which was written to key {}",
                            write.key
                        ),
                    });
                    continue;
                }
                if let Some(r) = read.filter(|r| write.invoke > r.complete) {
                    phantom.push(Violation {
                        key: key.to_owned(),
                        ops: vec![r.id, write.id],
                        detail: format!("{place} returned {value:?} before its PUT was invoked"),
                    });
                    continue;
                }
                known.push(w);
            }
            if known.len() < 2 {
                continue;
            }
            let oldest = known
                .iter()
                .map(|&w| self.op(w).invoke)
                .min()
                .unwrap_or_default();
            for &b in &known {
                let ancestors = self.ancestors_since(b, oldest);
                for &a in &known {
                    if a != b && ancestors.contains(&a) {
                        let (wa, wb) = (self.op(a), self.op(b));
                        false_siblings.push(Violation {
                            key: key.to_owned(),
                            ops: [read_ids.clone(), vec![wa.id, wb.id]].concat(),
                            detail: format!(
                                "{place} returned {:?} together with {:?}, whose PUT (op {}) \
                                 covered it",
                                value_text(wa),
                                value_text(wb),
                                wb.id
                            ),
                        });
                    }
                }
            }
        }
        self.report.phantom.extend(phantom);
        self.report.false_siblings.extend(false_siblings);
    }

    /// The ancestors of `w` whose PUTs were invoked at or after `since` (a
    /// descendant's PUT is always invoked after its ancestor's, so older ones cannot
    /// lead back to anything newer).
    fn ancestors_since(&self, w: W, since: Duration) -> HashSet<W> {
        let mut seen = HashSet::new();
        let mut stack: Vec<W> = self.parents[w].clone();
        while let Some(x) = stack.pop() {
            if self.op(x).invoke < since || !seen.insert(x) {
                continue;
            }
            stack.extend(self.parents[x].iter().copied());
        }
        seen
    }

    /// Property 4.
    fn resurrections(&mut self, fin: &FinalState) {
        let reads: Vec<&Op> = self
            .h
            .ops
            .iter()
            .filter(|op| matches!(op.kind, OpKind::Get { .. }) && op.outcome.is_ok())
            .collect();
        let quorums: BTreeSet<usize> = reads
            .iter()
            .filter_map(|op| match op.kind {
                OpKind::Get { r } => Some(r),
                _ => None,
            })
            .collect();
        let mut deletes: Vec<&Op> = self
            .h
            .ops
            .iter()
            .filter(|op| {
                matches!(
                    op.kind,
                    OpKind::Delete {
                        context: Some(_),
                        ..
                    }
                )
            })
            .filter(|op| op.outcome.is_ok() && self.source(op).is_ok())
            .collect();
        deletes.sort_by_key(|op| op.complete);
        let mut found = Vec::new();
        for r in quorums {
            // Deleted at (completion, delete) by a delete whose quorum meets reads at r.
            let mut deleted: Vec<Option<(Duration, OpId)>> = vec![None; self.writes.len()];
            for d in &deletes {
                let home = self.home_acks(d);
                if home + r > self.n {
                    let seeds = self.covered_by(d);
                    Self::mark_ancestors(&self.parents, &seeds, &mut deleted, (d.complete, d.id));
                }
            }
            for read in reads.iter().filter(|op| op.kind == OpKind::Get { r }) {
                let values = read
                    .outcome
                    .answer()
                    .map(Answer::values)
                    .unwrap_or_default();
                if values.is_empty() {
                    continue;
                }
                self.report.reads_after_delete_checked += 1;
                for value in values {
                    let Some(w) = self.write_of(&read.key, value) else {
                        continue;
                    };
                    if let Some((at, d)) = deleted[w].filter(|(at, _)| *at < read.invoke) {
                        found.push(Violation {
                            key: read.key.clone(),
                            ops: vec![read.id, d, self.op(w).id],
                            detail: format!(
                                "read op {} (r={r}, invoked {:.3}s) returned {value:?}, deleted \
                                 by op {d} (completed {:.3}s, acknowledged by enough home \
                                 replicas to meet the read)",
                                read.id,
                                read.invoke.as_secs_f64(),
                                at.as_secs_f64()
                            ),
                        });
                    }
                }
            }
        }
        for (key, fk) in &fin.keys {
            let FinalRead::Values(values) = &fk.read else {
                continue;
            };
            for value in values {
                let Some(w) = self.write_of(key, value) else {
                    continue;
                };
                if let Some(by) = self.covered_acked[w] {
                    let kind = self
                        .by_id
                        .get(&by)
                        .map(|&i| match self.h.ops[i].kind {
                            OpKind::Delete { .. } => "DELETE",
                            _ => "PUT",
                        })
                        .unwrap_or("write");
                    found.push(Violation {
                        key: key.clone(),
                        ops: vec![by, self.op(w).id],
                        detail: format!(
                            "the final read returned {value:?}, which the acknowledged {kind} \
                             op {by} covered"
                        ),
                    });
                }
            }
        }
        self.report.resurrected.extend(found);
    }

    /// Property 5.
    fn convergence(&mut self, fin: &FinalState) {
        let keys: BTreeSet<&str> = self
            .h
            .ops
            .iter()
            .map(|op| op.key.as_str())
            .chain(fin.keys.keys().map(String::as_str))
            .collect();
        for key in keys {
            self.report.keys_checked += 1;
            let detail = match fin.keys.get(key) {
                None => Some("no final read or replica views".to_owned()),
                Some(FinalKey {
                    read: FinalRead::Failed(why),
                    ..
                }) => Some(format!("the final read failed: {why}")),
                Some(fk) => divergence(fk, self.n),
            };
            if let Some(detail) = detail {
                self.report.diverged.push(Violation {
                    key: key.to_owned(),
                    ops: Vec::new(),
                    detail,
                });
            }
        }
    }
}

/// A mutation self-test on a real run: plants one violation of each kind in a copy
/// of `fin` (a lost write, a phantom, a false sibling, a resurrection, a diverged
/// replica) and returns the mutations [`check`] did not catch, so a clean report
/// on a real run is shown not to be vacuous. A mutation the run gives no material
/// for (say, no acknowledged delete) is listed as missed too.
pub fn missed_mutations(history: &History, fin: &FinalState, n: usize) -> Vec<String> {
    let base = check(history, fin, n);
    let c = Checker::new(history, n);
    let mut missed = Vec::new();
    let final_values = |fin: &FinalState| -> Vec<(String, String)> {
        fin.keys
            .iter()
            .filter_map(|(key, fk)| match &fk.read {
                FinalRead::Values(values) => Some((key, values)),
                FinalRead::Failed(_) => None,
            })
            .flat_map(|(key, values)| values.iter().map(move |v| (key.clone(), v.clone())))
            .collect()
    };
    let with_final = |key: &str, edit: &dyn Fn(&mut Vec<String>)| {
        let mut m = fin.clone();
        if let Some(FinalKey {
            read: FinalRead::Values(values),
            ..
        }) = m.keys.get_mut(key)
        {
            edit(values);
        }
        check(history, &m, n)
    };
    let present = final_values(fin);

    // A lost write: an acknowledged value disappears from the final read.
    let acked = present
        .iter()
        .find(|(key, v)| c.write_of(key, v).is_some_and(|w| c.op(w).outcome.is_ok()));
    match acked {
        Some((key, value)) => {
            let r = with_final(key, &|vs| vs.retain(|v| v != value));
            let before = base.lost.len() + base.absent_covered_by_unknown;
            if r.lost.len() + r.absent_covered_by_unknown <= before {
                missed.push(format!("removing {value:?} from the final read of {key}"));
            }
        }
        None => missed.push("lost write: no acknowledged value in the final state".into()),
    }

    // A phantom: a value nobody wrote appears in a final read.
    match fin.keys.keys().next() {
        Some(key) => {
            let r = with_final(key, &|vs| vs.push("never-written".into()));
            if r.phantom.len() <= base.phantom.len() {
                missed.push(format!("a phantom in the final read of {key}"));
            }
        }
        None => missed.push("phantom: no key in the final state".into()),
    }

    // A false sibling: a value present at the end gets back one it covered.
    let covered_pair = present.iter().find_map(|(key, v)| {
        let w = c.write_of(key, v)?;
        let parent = *c.parents[w].first()?;
        Some((key.clone(), value_text(c.op(parent)).to_owned()))
    });
    match covered_pair {
        Some((key, parent)) => {
            let r = with_final(&key, &|vs| vs.push(parent.clone()));
            if r.false_siblings.len() <= base.false_siblings.len() {
                missed.push(format!(
                    "{parent:?} next to a value that covered it in {key}"
                ));
            }
        }
        None => missed.push("false sibling: no final value written with a context".into()),
    }

    // A resurrection: a value an acknowledged delete covered comes back at the end.
    let deleted = history.ops.iter().find_map(|op| {
        if !matches!(op.kind, OpKind::Delete { .. }) || !op.outcome.is_ok() {
            return None;
        }
        let w = *c.covered_by(op).first()?;
        Some((op.key.clone(), value_text(c.op(w)).to_owned()))
    });
    match deleted {
        Some((key, value)) => {
            let r = with_final(&key, &|vs| {
                if !vs.contains(&value) {
                    vs.push(value.clone());
                }
            });
            if r.resurrected.len() <= base.resurrected.len() {
                missed.push(format!("deleted {value:?} back in the final read of {key}"));
            }
        }
        None => missed.push("resurrection: no acknowledged delete".into()),
    }

    // Divergence: one replica's clock differs.
    let mut m = fin.clone();
    let replica = m
        .keys
        .values_mut()
        .flat_map(|fk| fk.views.iter_mut())
        .flat_map(|view| view.replicas.iter_mut())
        .next();
    match replica {
        Some(replica) => {
            replica.context = Some("a-clock-nobody-has".into());
            if check(history, &m, n).diverged.len() <= base.diverged.len() {
                missed.push("a replica with a different clock".into());
            }
        }
        None => missed.push("divergence: no replica views".into()),
    }
    missed
}

fn value_text(op: &Op) -> &str {
    match &op.kind {
        OpKind::Put { value, .. } => value,
        _ => "",
    }
}

/// Makes hand-written histories for tests: each call appends one operation that
/// starts 1 ms after the previous one completed, unless [`Script::at`] says when.
#[derive(Debug, Default)]
pub struct Script {
    ops: Vec<Op>,
    clock_ms: u64,
    at: Option<(u64, u64)>,
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next operation runs from `invoke_ms` to `complete_ms`.
    pub fn at(&mut self, invoke_ms: u64, complete_ms: u64) -> &mut Self {
        self.at = Some((invoke_ms, complete_ms));
        self
    }

    fn push(&mut self, key: &str, kind: OpKind, outcome: Outcome) -> OpId {
        let (invoke, complete) = self.at.take().unwrap_or_else(|| {
            let start = self.clock_ms + 1;
            (start, start + 1)
        });
        self.clock_ms = self.clock_ms.max(complete);
        let id = self.ops.len() as OpId;
        self.ops.push(Op {
            id,
            client: 0,
            node: "n1".to_owned(),
            key: key.to_owned(),
            kind,
            invoke: Duration::from_millis(invoke),
            complete: Duration::from_millis(complete),
            outcome,
        });
        id
    }

    /// A PUT acknowledged by two home replicas.
    pub fn put(&mut self, key: &str, value: &str, context: Option<OpId>) -> OpId {
        self.put_outcome(key, value, context, written(&["n1", "n2"], &[]))
    }

    pub fn put_outcome(
        &mut self,
        key: &str,
        value: &str,
        context: Option<OpId>,
        outcome: Outcome,
    ) -> OpId {
        let kind = OpKind::Put {
            value: value.to_owned(),
            context,
            w: 2,
        };
        self.push(key, kind, outcome)
    }

    /// A successful GET at r=2 returning `values` (none: 404).
    pub fn get(&mut self, key: &str, values: &[&str]) -> OpId {
        let answer = match values {
            [] => Answer::NotFound { context: None },
            [one] => Answer::Found {
                value: (*one).to_owned(),
                context: "ctx".to_owned(),
            },
            many => Answer::Siblings {
                values: many.iter().map(|v| (*v).to_owned()).collect(),
                context: "ctx".to_owned(),
            },
        };
        self.push(key, OpKind::Get { r: 2 }, Outcome::Ok(answer))
    }

    pub fn delete(&mut self, key: &str, context: Option<OpId>, outcome: Outcome) -> OpId {
        self.push(key, OpKind::Delete { context, w: 2 }, outcome)
    }

    pub fn history(&self) -> History {
        History::new(self.ops.clone())
    }
}

/// An acknowledged write's outcome with these acks and `(owner, stand-in)` hints.
pub fn written(acks: &[&str], hinted: &[(&str, &str)]) -> Outcome {
    Outcome::Ok(Answer::Written {
        context: Some("ctx".to_owned()),
        acks: acks.iter().map(|a| (*a).to_owned()).collect(),
        hinted: hinted
            .iter()
            .map(|(o, s)| ((*o).to_owned(), (*s).to_owned()))
            .collect(),
    })
}

/// A final state where every key in `reads` was read as the given values and its
/// three replicas `n1..n3` agree (as seen from `n1` and `n2`).
pub fn converged_final(reads: &[(&str, &[&str])]) -> FinalState {
    let keys = reads
        .iter()
        .map(|(key, values)| {
            let replicas: Vec<ReplicaState> = ["n1", "n2", "n3"]
                .iter()
                .map(|node| ReplicaState {
                    node: (*node).to_owned(),
                    context: Some("same".to_owned()),
                    siblings: values.iter().map(|v| (*v).to_owned()).collect(),
                    error: None,
                })
                .collect();
            let views = ["n1", "n2"]
                .iter()
                .map(|observer| ReplicaView {
                    observer: (*observer).to_owned(),
                    preference_list: vec!["n1".into(), "n2".into(), "n3".into()],
                    replicas: replicas.clone(),
                })
                .collect();
            let fk = FinalKey {
                read: FinalRead::Values(values.iter().map(|v| (*v).to_owned()).collect()),
                views,
            };
            ((*key).to_owned(), fk)
        })
        .collect();
    FinalState { keys }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 3;

    fn unknown() -> Outcome {
        Outcome::Unknown {
            reason: "504 timeout".to_owned(),
        }
    }

    /// Asserts that only `property` has violations, exactly `count` of them.
    #[track_caller]
    fn assert_only(report: &Report, property: &str, count: usize) {
        for (name, list) in report.properties() {
            let want = if name.contains(property) { count } else { 0 };
            assert_eq!(list.len(), want, "{name}, report:\n{report}");
        }
    }

    #[test]
    fn a_clean_history_passes() {
        // Concurrent blind writes become siblings, a read-modify-write resolves them,
        // a delete with context removes the result, and a re-write after it is kept.
        let mut s = Script::new();
        s.put("k", "a", None);
        s.put("k", "b", None);
        let g1 = s.get("k", &["a", "b"]);
        s.put("k", "c", Some(g1));
        let g2 = s.get("k", &["c"]);
        s.delete("k", Some(g2), written(&["n1", "n2"], &[]));
        let g3 = s.get("k", &[]);
        s.put("k", "d", Some(g3));
        s.get("k", &["d"]);
        s.put("other", "x", None);
        let report = check(
            &s.history(),
            &converged_final(&[("k", &["d"]), ("other", &["x"])]),
            N,
        );
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.acked_writes_checked, 5);
        assert_eq!(report.totals.ops, 10);
    }

    #[test]
    fn a_quorum_read_that_misses_an_acknowledged_write_is_caught() {
        // Two home acks and r=2 must meet; one home ack and a stand-in need not, and a
        // write covered by a later one (even of unknown fate) may be missing.
        let mut s = Script::new();
        let w = s.put("k", "a", None);
        let r = s.get("k", &[]);
        let report = check(&s.history(), &converged_final(&[("k", &["a"])]), N);
        assert_only(&report, "quorum reads", 1);
        assert_eq!(report.stale_reads[0].ops, vec![r, w]);

        let mut s = Script::new();
        s.put_outcome("k", "a", None, written(&["n1", "n4"], &[("n2", "n4")]));
        s.get("k", &[]);
        let report = check(&s.history(), &converged_final(&[("k", &["a"])]), N);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.quorum_pairs_checked, 0);

        let mut s = Script::new();
        s.put("k", "a", None);
        let g = s.get("k", &["a"]);
        s.put_outcome("k", "b", Some(g), unknown());
        s.get("k", &["b"]);
        let report = check(&s.history(), &converged_final(&[("k", &["b"])]), N);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.quorum_pairs_checked, 2);
    }

    #[test]
    fn while_rings_change_a_write_promises_w_acks_in_each_ring() {
        // Three acknowledgements may span two rings (two old homes and a new one): an
        // r=1 read of the old ring may miss the write then, as w=2 + r=1 does not
        // exceed n. With one fixed ring the same history is a violation.
        let mut s = Script::new();
        s.put_outcome("k", "a", None, written(&["n1", "n2", "n4"], &[]));
        s.push(
            "k",
            OpKind::Get { r: 1 },
            Outcome::Ok(Answer::NotFound { context: None }),
        );
        let fin = converged_final(&[("k", &["a"])]);
        assert_only(&check(&s.history(), &fin, N), "quorum reads", 1);
        let report = check_rings(&s.history(), &fin, N, Rings::Change);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.quorum_pairs_checked, 0);
        // At r=2 the quorums meet in either case.
        s.get("k", &[]);
        let report = check_rings(&s.history(), &fin, N, Rings::Change);
        assert_only(&report, "quorum reads", 1);
    }

    #[test]
    fn while_rings_change_a_stand_in_ack_counts_for_its_owner_only() {
        // w=3 met by three homes spread over two rings and a stand-in for the third
        // home of one of them: that ring's homes hold it twice, so an r=1 read there may
        // miss it, while an r=2 read must not.
        let mut s = Script::new();
        let put = OpKind::Put {
            value: "a".into(),
            context: None,
            w: 3,
        };
        s.push(
            "k",
            put,
            written(&["n6", "n1", "n2", "n3"], &[("n4", "n3")]),
        );
        s.push(
            "k",
            OpKind::Get { r: 1 },
            Outcome::Ok(Answer::NotFound { context: None }),
        );
        let fin = converged_final(&[("k", &["a"])]);
        let report = check_rings(&s.history(), &fin, N, Rings::Change);
        assert!(report.is_clean(), "{report}");
        s.get("k", &[]);
        let report = check_rings(&s.history(), &fin, N, Rings::Change);
        assert_only(&report, "quorum reads", 1);
    }

    #[test]
    fn a_node_lost_for_good_promises_nothing_to_later_reads() {
        // One home and one stand-in acknowledged; the home then crashed for good. An
        // r=3 read that misses the write is no violation then, though it is otherwise.
        let mut s = Script::new();
        s.put_outcome("k", "a", None, written(&["n5", "n1"], &[("n2", "n1")]));
        s.push(
            "k",
            OpKind::Get { r: 3 },
            Outcome::Ok(Answer::NotFound { context: None }),
        );
        let fin = converged_final(&[("k", &["a"])]);
        let report = check_rings(&s.history(), &fin, N, Rings::Change);
        assert_only(&report, "quorum reads", 1);
        let lost = BTreeSet::from(["n5".to_owned()]);
        let report = check_lost_nodes(&s.history(), &fin, N, Rings::Change, &lost);
        assert!(report.is_clean(), "{report}");
    }

    #[test]
    fn a_delete_without_context_may_cover_a_put_invoked_as_it_completed() {
        // The simulator's clock stands still while tasks run: a PUT invoked at the
        // instant a context-less DELETE completed may have been seen by its read. One
        // invoked after it may not.
        let mut s = Script::new();
        s.at(10, 12).put("k", "a", None);
        s.at(12, 13).delete("k", None, written(&["n1"], &[]));
        let fin = converged_final(&[("k", &[])]);
        let report = check(&s.history(), &fin, N);
        assert_eq!(report.violations(), 0, "{report}");
        let mut s = Script::new();
        s.at(10, 12).delete("k", None, written(&["n1"], &[]));
        s.at(13, 14).put("k", "a", None);
        let report = check(&s.history(), &fin, N);
        assert_only(&report, "no acknowledged write lost", 1);
    }

    #[test]
    fn a_lost_write_is_caught() {
        // An acknowledged blind write that nothing covered is missing at the end.
        let mut s = Script::new();
        let lost = s.put("k", "a", None);
        s.put("k", "b", None);
        let report = check(&s.history(), &converged_final(&[("k", &["b"])]), N);
        assert_only(&report, "lost", 1);
        assert_eq!(report.lost[0].ops, vec![lost]);
    }

    #[test]
    fn a_write_covered_by_an_unknown_write_is_not_lost() {
        // A write whose only cover is a write of unknown fate passes, counted apart;
        // one covered by a failed (4xx) write does not.
        let mut s = Script::new();
        s.put("k", "a", None);
        let g = s.get("k", &["a"]);
        s.put_outcome("k", "b", Some(g), unknown());
        let report = check(&s.history(), &converged_final(&[("k", &["b"])]), N);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.absent_covered_by_unknown, 1);

        let mut s = Script::new();
        s.put("k", "a", None);
        let g = s.get("k", &["a"]);
        let refused = Outcome::Failed {
            status: 409,
            error: "too_many_siblings".into(),
        };
        s.put_outcome("k", "b", Some(g), refused);
        let report = check(&s.history(), &converged_final(&[("k", &[])]), N);
        assert_only(&report, "lost", 1);
    }

    #[test]
    fn coverage_is_transitive() {
        // c covers b, which covered a: a may be gone once c is acknowledged, even if
        // b's own fate is unknown.
        let mut s = Script::new();
        s.put("k", "a", None);
        let g1 = s.get("k", &["a"]);
        s.put_outcome("k", "b", Some(g1), unknown());
        let g2 = s.get("k", &["b"]);
        s.put("k", "c", Some(g2));
        let report = check(&s.history(), &converged_final(&[("k", &["c"])]), N);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.absent_covered_by_unknown, 0);
    }

    #[test]
    fn a_phantom_is_caught() {
        // A value nobody wrote, a value of another key, and a value read before its
        // PUT was invoked are all phantoms.
        let mut s = Script::new();
        s.put("k", "a", None);
        s.put("j", "x", None);
        s.get("k", &["a", "zzz"]);
        s.get("k", &["a", "x"]);
        s.at(10, 11).get("k", &["a", "late"]);
        s.at(20, 21).put("k", "late", None);
        let report = check(
            &s.history(),
            &converged_final(&[("k", &["a", "late"]), ("j", &["x"])]),
            N,
        );
        assert_only(&report, "phantom", 3);
    }

    #[test]
    fn a_false_sibling_is_caught() {
        // b was written with a context that saw a, so a read holding both is wrong,
        // and so is a replica holding both; concurrent a and c are fine together.
        let mut s = Script::new();
        s.put("k", "a", None);
        let g = s.get("k", &["a"]);
        s.put("k", "b", Some(g));
        s.put("k", "c", None);
        let bad = s.get("k", &["a", "b", "c"]);
        s.get("k", &["b", "c"]);
        let mut fin = converged_final(&[("k", &["b", "c"])]);
        fin.keys.get_mut("k").unwrap().views[0].replicas[0].siblings =
            vec!["a".into(), "c".into(), "b".into()];
        let report = check(&s.history(), &fin, N);
        assert_only(&report, "siblings", 2);
        assert_eq!(report.false_siblings[0].ops, vec![bad, 0, 2]);
    }

    #[test]
    fn a_transitive_false_sibling_is_caught() {
        // c covers b covers a: a and c together are false siblings too.
        let mut s = Script::new();
        s.put("k", "a", None);
        let g1 = s.get("k", &["a"]);
        s.put("k", "b", Some(g1));
        let g2 = s.get("k", &["b"]);
        s.put("k", "c", Some(g2));
        s.get("k", &["a", "c"]);
        let report = check(&s.history(), &converged_final(&[("k", &["c"])]), N);
        assert_only(&report, "siblings", 1);
    }

    #[test]
    fn a_resurrection_is_caught() {
        // After a delete acknowledged by two home replicas, an r=2 read must meet it:
        // the deleted value coming back is a resurrection.
        let mut s = Script::new();
        s.put("k", "a", None);
        let g = s.get("k", &["a"]);
        let d = s.delete("k", Some(g), written(&["n1", "n2"], &[]));
        let back = s.get("k", &["a"]);
        let report = check(&s.history(), &converged_final(&[("k", &[])]), N);
        assert_only(&report, "resurrection", 1);
        assert_eq!(report.resurrected[0].ops, vec![back, d, 0]);
    }

    #[test]
    fn stale_reads_that_quorums_allow_are_not_resurrections() {
        // A delete acknowledged by a stand-in need not be seen by an r=2 read of the
        // home replicas, and a read that overlapped the delete may miss it.
        let mut s = Script::new();
        s.put("k", "a", None);
        let g = s.get("k", &["a"]);
        s.delete("k", Some(g), written(&["n1", "n4"], &[("n2", "n4")]));
        s.get("k", &["a"]);
        s.put("j", "x", None);
        let g = s.get("j", &["x"]);
        s.at(100, 110)
            .delete("j", Some(g), written(&["n1", "n2"], &[]));
        s.at(105, 106).get("j", &["x"]);
        let report = check(&s.history(), &converged_final(&[("k", &[]), ("j", &[])]), N);
        assert!(report.is_clean(), "{report}");
    }

    #[test]
    fn a_deleted_value_in_the_final_read_is_a_resurrection() {
        // Even a delete acknowledged by a stand-in must win once the faults healed.
        let mut s = Script::new();
        s.put("k", "a", None);
        let g = s.get("k", &["a"]);
        s.delete("k", Some(g), written(&["n1", "n4"], &[("n2", "n4")]));
        let report = check(&s.history(), &converged_final(&[("k", &["a"])]), N);
        assert_only(&report, "resurrection", 1);
    }

    #[test]
    fn divergent_or_unreadable_replicas_are_caught() {
        // Different clocks on two replicas, a replica error, a failed final read and a
        // key with no final state each count once.
        let mut s = Script::new();
        for key in ["k1", "k2", "k3", "k4"] {
            s.put(key, &format!("{key}-a"), None);
        }
        let mut fin = converged_final(&[("k1", &["k1-a"]), ("k2", &["k2-a"]), ("k3", &["k3-a"])]);
        fin.keys.get_mut("k1").unwrap().views[1].replicas[2].context = Some("other".into());
        fin.keys.get_mut("k2").unwrap().views[0].replicas[1].error = Some("unreachable".into());
        fin.keys.get_mut("k3").unwrap().read = FinalRead::Failed("503".into());
        let report = check(&s.history(), &fin, N);
        assert_only(&report, "convergence", 4);
        let converged = converged_final(&[("k", &["v"])]);
        assert_eq!(divergence(&converged.keys["k"], N), None);
    }

    #[test]
    fn a_context_from_an_unfinished_read_is_malformed() {
        // The workload must only send contexts of reads that completed successfully.
        let mut s = Script::new();
        let g = s.at(0, 50).get("k", &[]);
        s.at(10, 20).put("k", "a", Some(g));
        s.put("k", "a", None);
        let report = check(&s.history(), &converged_final(&[("k", &["a"])]), N);
        assert_only(&report, "malformed", 2);
    }

    #[test]
    fn mutations_of_a_clean_run_are_all_caught() {
        // The self-test finds material for every mutation in a small clean history
        // and the checker catches each one.
        let mut s = Script::new();
        s.put("k", "a", None);
        let g = s.get("k", &["a"]);
        s.put("k", "b", Some(g));
        s.put("j", "x", None);
        let g = s.get("j", &["x"]);
        s.delete("j", Some(g), written(&["n1", "n2"], &[]));
        let history = s.history();
        let fin = converged_final(&[("k", &["b"]), ("j", &[])]);
        assert!(check(&history, &fin, N).is_clean());
        assert_eq!(missed_mutations(&history, &fin, N), Vec::<String>::new());
    }
}
