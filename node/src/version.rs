//! Dotted version vector sets (DVVSet, Almeida et al.; the structure Riak 2.0 uses).
//!
//! A key's [`Clock`] holds, per actor (a node incarnation that coordinated writes), a
//! counter `n` and the values of that actor's latest, still-concurrent dots, newest
//! first: the entry `(a, n, [v3, v2])` says that dots `(a,1)..=(a,n)` were seen, that
//! `v3` is dot `(a,n)` and `v2` is `(a,n-1)`, and that older dots of `a` were
//! superseded. The causal context a client receives is the clock's version vector
//! (`actor -> n`, see [`Clock::context`]); a write that carries it supersedes exactly the
//! values that context saw.
//!
//! The operations map onto the reference `dvvset.erl`: [`Clock::sync`] is `sync`,
//! [`Clock::update`] is `update(new(VV, V), Clock, Id)`, [`Clock::context`] is `join`,
//! [`Clock::lww`] is `lww`. Unlike the reference, no clock here ever holds anonymous
//! values: a client's write becomes a dot at once on its coordinator.
//!
//! Caveats: a tombstone is an ordinary value (`data: None`) and is only purged by a
//! later mechanism that knows every replica holds it; a dot's actor must never be
//! reused with a lower counter, which is why an [`Actor`] carries the incarnation of
//! its node's data directory.

use std::cmp::Ordering;

use base64::Engine as _;
use bincode::{Decode, Encode};

/// The maker of dots: a node id plus the incarnation of its data directory, so that a
/// node that lost its data and restarts under the same id never reuses a dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct Actor {
    pub node: String,
    pub incarnation: u64,
}

impl Actor {
    pub fn new(node: impl Into<String>, incarnation: u64) -> Self {
        Self {
            node: node.into(),
            incarnation,
        }
    }
}

/// One version of a key's value: the bytes, or `None` for a deletion (tombstone), and
/// the coordinator's wall-clock time of the write (used only by last-writer-wins).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Versioned {
    pub ts_ms: u64,
    pub data: Option<Vec<u8>>,
}

impl Versioned {
    pub fn value(ts_ms: u64, data: Vec<u8>) -> Self {
        Self {
            ts_ms,
            data: Some(data),
        }
    }

    pub fn tombstone(ts_ms: u64) -> Self {
        Self { ts_ms, data: None }
    }

    pub fn is_tombstone(&self) -> bool {
        self.data.is_none()
    }
}

/// One actor's part of a clock: dots `(actor, 1..=counter)` seen, `values[i]` is the
/// value of dot `(actor, counter - i)`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
struct Entry {
    actor: Actor,
    counter: u64,
    values: Vec<Versioned>,
}

/// One key's state as anti-entropy compares it: the key and a hash of its versions
/// (equal on two replicas exactly when they hold the same versions). Here, under the
/// replica and the peer protocol both, so that neither imports the other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Encode, Decode)]
pub struct SegmentEntry {
    pub key: Vec<u8>,
    pub hash: u64,
}

/// A version vector: the causal history a client saw, sorted by actor, one entry each.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct VersionVector(Vec<(Actor, u64)>);

/// The DVVSet of one key: every concurrent version and the history that produced them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct Clock {
    /// Sorted by actor, at most one entry per actor.
    entries: Vec<Entry>,
}

impl Clock {
    /// The clock of a key nobody wrote.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the clock holds no history at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The version vector of everything this clock has seen: the context to hand out.
    pub fn context(&self) -> VersionVector {
        VersionVector(
            self.entries
                .iter()
                .map(|e| (e.actor.clone(), e.counter))
                .collect(),
        )
    }

    /// Every concurrent version, tombstones included.
    pub fn values(&self) -> impl Iterator<Item = &Versioned> {
        self.entries.iter().flat_map(|e| e.values.iter())
    }

    /// Bytes the clock holds on the heap (its vectors' capacities, actor names and
    /// values), for caches that bound their memory.
    pub fn heap_bytes(&self) -> usize {
        let entries = self.entries.capacity() * std::mem::size_of::<Entry>();
        let per_entry: usize = self
            .entries
            .iter()
            .map(|e| {
                e.actor.node.capacity()
                    + e.values.capacity() * std::mem::size_of::<Versioned>()
                    + e.values
                        .iter()
                        .map(|v| v.data.as_ref().map_or(0, Vec::capacity))
                        .sum::<usize>()
            })
            .sum();
        entries + per_entry
    }

    /// How many concurrent versions the clock keeps (tombstones count).
    pub fn value_count(&self) -> usize {
        self.entries.iter().map(|e| e.values.len()).sum()
    }

    /// The live values (tombstones left out), without duplicates, in clock order.
    pub fn live_values(&self) -> Vec<&[u8]> {
        let mut out: Vec<&[u8]> = Vec::new();
        for v in self.values() {
            if let Some(data) = &v.data
                && !out.contains(&data.as_slice())
            {
                out.push(data);
            }
        }
        out
    }

    /// Each actor's entry as `(actor, counter, versions kept)`, in actor order. A dot
    /// names one write, so this identifies the clock's whole state (values included)
    /// without touching the values: anti-entropy hashes it.
    pub fn dots(&self) -> impl Iterator<Item = (&Actor, u64, usize)> {
        self.entries
            .iter()
            .map(|e| (&e.actor, e.counter, e.values.len()))
    }

    /// True when the clock has versions and every one of them is a tombstone.
    pub fn is_tombstoned(&self) -> bool {
        self.value_count() > 0 && self.values().all(Versioned::is_tombstone)
    }

    /// Merges another replica's clock into a new one: values superseded on either side
    /// are dropped, concurrent ones kept. Commutative, associative and idempotent.
    pub fn sync(&self, other: &Clock) -> Clock {
        let mut entries = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let (mut a, mut b) = (
            self.entries.iter().peekable(),
            other.entries.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => entries.push(a.next().unwrap().clone()),
                (None, Some(_)) => entries.push(b.next().unwrap().clone()),
                (Some(x), Some(y)) => match x.actor.cmp(&y.actor) {
                    Ordering::Less => entries.push(a.next().unwrap().clone()),
                    Ordering::Greater => entries.push(b.next().unwrap().clone()),
                    Ordering::Equal => {
                        entries.push(merge_entry(x, y));
                        a.next();
                        b.next();
                    }
                },
            }
        }
        Clock { entries }
    }

    /// The coordinator's write: `value` supersedes what `context` saw of this clock and
    /// becomes a new dot of `actor`; versions the context did not see stay as siblings.
    pub fn update(&self, context: &VersionVector, value: Versioned, actor: &Actor) -> Clock {
        let seen = Clock {
            entries: context
                .0
                .iter()
                .map(|(actor, counter)| Entry {
                    actor: actor.clone(),
                    counter: *counter,
                    values: Vec::new(),
                })
                .collect(),
        };
        let mut clock = seen.sync(self);
        match clock.entries.binary_search_by(|e| e.actor.cmp(actor)) {
            Ok(i) => {
                let entry = &mut clock.entries[i];
                entry.counter += 1;
                entry.values.insert(0, value);
            }
            Err(i) => clock.entries.insert(
                i,
                Entry {
                    actor: actor.clone(),
                    counter: 1,
                    values: vec![value],
                },
            ),
        }
        clock
    }

    /// True when everything this clock saw, `other` saw too, and `other` saw more.
    pub fn less(&self, other: &Clock) -> bool {
        self.context().less(&other.context())
    }

    /// The single winner by write time (ties broken by dot, so every replica picks the
    /// same one), or `None` when the clock holds no version.
    pub fn lww(&self) -> Option<&Versioned> {
        self.entries
            .iter()
            .flat_map(|e| {
                e.values
                    .iter()
                    .enumerate()
                    .map(move |(i, v)| (v, &e.actor, e.counter - i as u64))
            })
            .max_by(|(v1, a1, n1), (v2, a2, n2)| (v1.ts_ms, a1, n1).cmp(&(v2.ts_ms, a2, n2)))
            .map(|(v, _, _)| v)
    }
}

/// Merges two entries of the same actor: the higher counter wins, and a value lives
/// only if neither side has superseded its dot.
fn merge_entry(x: &Entry, y: &Entry) -> Entry {
    let (hi, lo) = if x.counter >= y.counter {
        (x, y)
    } else {
        (y, x)
    };
    let hi_floor = hi.counter - hi.values.len() as u64;
    let lo_floor = lo.counter - lo.values.len() as u64;
    let keep = if hi_floor >= lo_floor {
        hi.values.len()
    } else {
        (hi.counter - lo_floor) as usize
    };
    Entry {
        actor: hi.actor.clone(),
        counter: hi.counter,
        values: hi.values[..keep].to_vec(),
    }
}

/// Longest context token accepted, in bytes of its text form.
pub const CONTEXT_TOKEN_MAX_BYTES: usize = 64 * 1024;
const CONTEXT_FORMAT: u8 = 1;

/// Why a context token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("context is empty")]
    Empty,
    #[error("context is longer than {CONTEXT_TOKEN_MAX_BYTES} bytes")]
    TooLong,
    #[error("context is not base64url")]
    NotBase64,
    #[error("context has format {0}, expected {CONTEXT_FORMAT}")]
    Format(u8),
    #[error("context does not decode: {0}")]
    Decode(String),
    #[error("context lists actors out of order or twice")]
    Unsorted,
}

impl VersionVector {
    /// The vector that saw nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The counter of `actor`, 0 when unseen.
    pub fn get(&self, actor: &Actor) -> u64 {
        self.0
            .binary_search_by(|(a, _)| a.cmp(actor))
            .map(|i| self.0[i].1)
            .unwrap_or(0)
    }

    /// True when `self` is dominated by `other`: every counter `<=`, and not equal.
    pub fn less(&self, other: &VersionVector) -> bool {
        self != other && self.0.iter().all(|(a, n)| *n <= other.get(a))
    }

    /// The opaque token handed to clients: base64url of a versioned bincode encoding.
    pub fn to_token(&self) -> String {
        let bytes = bincode::encode_to_vec((CONTEXT_FORMAT, self), bincode::config::standard())
            .expect("encoding a version vector into a Vec cannot fail");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses a client's token; anything malformed is refused, never half-read.
    pub fn from_token(token: &str) -> Result<Self, ContextError> {
        if token.is_empty() {
            return Err(ContextError::Empty);
        }
        if token.len() > CONTEXT_TOKEN_MAX_BYTES {
            return Err(ContextError::TooLong);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| ContextError::NotBase64)?;
        let config = bincode::config::standard().with_limit::<CONTEXT_TOKEN_MAX_BYTES>();
        let ((format, vv), used): ((u8, VersionVector), usize) =
            bincode::decode_from_slice(&bytes, config)
                .map_err(|e| ContextError::Decode(e.to_string()))?;
        if format != CONTEXT_FORMAT {
            return Err(ContextError::Format(format));
        }
        if used != bytes.len() {
            return Err(ContextError::Decode(format!(
                "{} trailing bytes",
                bytes.len() - used
            )));
        }
        if vv.0.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(ContextError::Unsorted);
        }
        Ok(vv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn actor(name: &str) -> Actor {
        Actor::new(name, 7)
    }

    fn val(s: &str) -> Versioned {
        Versioned::value(0, s.as_bytes().to_vec())
    }

    fn live(c: &Clock) -> Vec<String> {
        let mut v: Vec<String> = c
            .live_values()
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        v.sort();
        v
    }

    // Vectors ported from dvvset.erl's eunit tests, in our clock-only form.

    #[test]
    fn update_with_its_own_context_supersedes_and_blind_update_adds_a_sibling() {
        // A write carrying the context it read replaces that value; one without keeps both.
        let a = actor("a");
        let c1 = Clock::new().update(&VersionVector::empty(), val("v1"), &a);
        let c2 = c1.update(&c1.context(), val("v2"), &a);
        assert_eq!(live(&c2), vec!["v2"]);
        let c3 = c2.update(&c1.context(), val("v3"), &a);
        assert_eq!(
            live(&c3),
            vec!["v2", "v3"],
            "v3 did not see v2: both are siblings"
        );
        let c4 = c3.update(&c3.context(), val("v4"), &a);
        assert_eq!(live(&c4), vec!["v4"]);
    }

    #[test]
    fn sync_of_concurrent_clocks_keeps_both_and_of_ordered_keeps_newer() {
        // Replica merges keep concurrent values and drop dominated ones, as in dvvset's sync test.
        let (a, b) = (actor("a"), actor("b"));
        let x = Clock::new().update(&VersionVector::empty(), val("x"), &a);
        let y = Clock::new().update(&VersionVector::empty(), val("y"), &b);
        let xy = x.sync(&y);
        assert_eq!(live(&xy), vec!["x", "y"]);
        let z = xy.update(&xy.context(), val("z"), &a);
        assert_eq!(live(&z.sync(&x)), vec!["z"]);
        assert_eq!(live(&y.sync(&z)), vec!["z"]);
        assert!(x.less(&z) && y.less(&z) && !z.less(&x) && !x.less(&y) && !y.less(&x));
    }

    #[test]
    fn merge_entry_keeps_only_values_neither_side_superseded() {
        // dvvset's merge: (a,4,[v4,v3]) with (a,3,[v3,v2,v1]) keeps only v4 and v3.
        let a = actor("a");
        let x = Entry {
            actor: a.clone(),
            counter: 4,
            values: vec![val("v4"), val("v3")],
        };
        let y = Entry {
            actor: a.clone(),
            counter: 3,
            values: vec![val("v3"), val("v2"), val("v1")],
        };
        assert_eq!(merge_entry(&x, &y).values, vec![val("v4"), val("v3")]);
        let y2 = Entry {
            actor: a,
            counter: 5,
            values: vec![val("v5")],
        };
        assert_eq!(merge_entry(&x, &y2).values, vec![val("v5")]);
    }

    #[test]
    fn lww_picks_latest_timestamp_and_breaks_ties_by_dot() {
        // Last-writer-wins is deterministic: latest ts wins, a tie goes to the greater dot.
        let (a, b) = (actor("a"), actor("b"));
        let x = Clock::new().update(
            &VersionVector::empty(),
            Versioned::value(10, b"x".to_vec()),
            &a,
        );
        let y = Clock::new().update(
            &VersionVector::empty(),
            Versioned::value(20, b"y".to_vec()),
            &b,
        );
        assert_eq!(x.sync(&y).lww().unwrap().data.as_deref(), Some(&b"y"[..]));
        let y_same_ts = Clock::new().update(
            &VersionVector::empty(),
            Versioned::value(10, b"y".to_vec()),
            &b,
        );
        assert_eq!(x.sync(&y_same_ts).lww(), y_same_ts.sync(&x).lww());
    }

    #[test]
    fn tombstones_are_versions_but_not_live_values() {
        // A delete with the context leaves only a tombstone; a blind write beside it is live.
        let a = actor("a");
        let c = Clock::new().update(&VersionVector::empty(), val("v"), &a);
        let d = c.update(&c.context(), Versioned::tombstone(1), &a);
        assert!(d.is_tombstoned());
        assert!(d.live_values().is_empty());
        let e = d.update(&VersionVector::empty(), val("w"), &actor("b"));
        assert!(!e.is_tombstoned());
        assert_eq!(live(&e), vec!["w"]);
    }

    #[test]
    fn context_token_round_trips_and_rejects_garbage() {
        // Tokens decode to the same vector; malformed, empty or unsorted tokens are refused.
        let c = Clock::new()
            .update(&VersionVector::empty(), val("x"), &actor("a"))
            .update(&VersionVector::empty(), val("y"), &actor("b"));
        let vv = c.context();
        assert_eq!(VersionVector::from_token(&vv.to_token()).unwrap(), vv);
        assert_eq!(VersionVector::from_token(""), Err(ContextError::Empty));
        assert_eq!(
            VersionVector::from_token("!!!"),
            Err(ContextError::NotBase64)
        );
        assert!(VersionVector::from_token("AAAA").is_err());
        let unsorted = VersionVector(vec![(actor("b"), 1), (actor("a"), 1)]);
        assert_eq!(
            VersionVector::from_token(&unsorted.to_token()),
            Err(ContextError::Unsorted)
        );
        let mut t = vv.to_token();
        t.push('A');
        assert!(
            VersionVector::from_token(&t).is_err(),
            "trailing bytes are refused"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A client read replica `ctx_from` (or not) and wrote through coordinator `who`.
        Write { who: usize, ctx_from: Option<usize> },
        /// Replica `to` merged replica `from`'s state.
        Sync { from: usize, to: usize },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize, prop::option::of(0..3usize))
                .prop_map(|(who, ctx_from)| Op::Write { who, ctx_from }),
            (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Sync { from, to }),
        ]
    }

    /// Three replicas' clocks after one shared history of writes and merges: the only
    /// kind of clocks that meet in practice (dots are unique across a history).
    fn arb_replicas() -> impl Strategy<Value = [Clock; 3]> {
        prop::collection::vec(arb_op(), 0..16).prop_map(|ops| {
            let actors = [actor("a"), actor("b"), actor("c")];
            let mut r: [Clock; 3] = Default::default();
            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Write { who, ctx_from } => {
                        let ctx = ctx_from.map(|i| r[i].context()).unwrap_or_default();
                        let v = Versioned::value(step as u64, format!("v{step}").into_bytes());
                        r[who] = r[who].update(&ctx, v, &actors[who]);
                    }
                    Op::Sync { from, to } => r[to] = r[to].sync(&r[from]),
                }
            }
            r
        })
    }

    proptest! {
        #[test]
        fn sync_is_commutative([x, y, _z] in arb_replicas()) {
            // Merging in either order gives the same clock.
            prop_assert_eq!(x.sync(&y), y.sync(&x));
        }

        #[test]
        fn sync_is_associative([x, y, z] in arb_replicas()) {
            // Grouping of merges does not matter.
            prop_assert_eq!(x.sync(&y).sync(&z), x.sync(&y.sync(&z)));
        }

        #[test]
        fn sync_is_idempotent([x, y, _z] in arb_replicas()) {
            // Merging a clock with itself, or twice with the same clock, changes nothing.
            prop_assert_eq!(x.sync(&x), x.clone());
            prop_assert_eq!(x.sync(&y).sync(&y), x.sync(&y));
        }

        #[test]
        fn update_with_context_removes_exactly_what_the_context_saw([x, y, _z] in arb_replicas()) {
            // A write with x's context drops every value x held and keeps every value of y that x never saw.
            let stored = x.sync(&y);
            let writer = actor("w");
            let after = stored.update(&x.context(), val("new"), &writer);
            let seen = x.context();
            for e in &stored.entries {
                for (i, v) in e.values.iter().enumerate() {
                    let dot_counter = e.counter - i as u64;
                    let survives = after.values().any(|w| w == v);
                    prop_assert_eq!(survives, dot_counter > seen.get(&e.actor),
                        "value {:?} of dot ({:?},{})", v, e.actor, dot_counter);
                }
            }
            prop_assert!(after.live_values().contains(&&b"new"[..]));
            prop_assert!(stored.less(&after));
        }

        #[test]
        fn two_replicas_synced_both_ways_end_equal([x, y, _z] in arb_replicas()) {
            // Anti-entropy between two replicas leaves both with the same state.
            let x2 = x.sync(&y);
            let y2 = y.sync(&x2);
            prop_assert_eq!(x2.sync(&y2), y2.clone());
            prop_assert_eq!(x2, y2);
        }

        #[test]
        fn token_round_trips([x, _y, _z] in arb_replicas()) {
            // Every context encodes to a token that decodes back to itself.
            let vv = x.context();
            prop_assert_eq!(VersionVector::from_token(&vv.to_token()).unwrap(), vv);
        }
    }
}
