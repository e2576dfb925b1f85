//! The `Leave` notice: how a graceful leave is told apart from a crash.
//!
//! foca's `leave_cluster` only declares the leaving identity `Down`, exactly
//! the update a crash produces after suspicion times out. So the leaving node
//! first adds a custom broadcast `Leave(identity)`; foca piggybacks it on the
//! same packets as that `Down` update (the ones `leave_cluster` sends and the
//! flush after it) and every receiver disseminates it further, like a member
//! update, [`foca::Config::max_transmissions`] times.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use bincode::{Decode, Encode};
use foca::{BroadcastHandler, Invalidates};

use crate::codec::{self, CodecError};
use crate::identity::NodeIdentity;

/// Ids remembered to drop repeated notices; beyond it the oldest knowledge is
/// forgotten, which at worst re-disseminates a notice a few more times.
const SEEN_IDS_MAX: usize = 4096;

/// Notices queued between two drains by the driver. foca hands over at most
/// one packet's worth per call, so this is never reached in practice.
const INBOX_MAX: usize = 1024;

/// Custom broadcasts ringkv adds to foca's packets. An enum, so later
/// notices get new variants and old nodes reject them as undecodable.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(crate) enum Notice {
    /// This identity left the cluster on purpose.
    Leave(NodeIdentity),
}

impl Notice {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut bytes = Vec::new();
        codec::encode_into(self, &mut bytes)?;
        Ok(bytes)
    }
}

/// Leaves heard by the handler, waiting for the driver. The handler lives
/// inside `Foca`, which has no accessor for it, hence the shared queue.
pub(crate) type LeaveInbox = Arc<Mutex<Vec<NodeIdentity>>>;

/// Takes every queued leave.
pub(crate) fn drain(inbox: &LeaveInbox) -> Vec<NodeIdentity> {
    std::mem::take(&mut *inbox.lock().unwrap_or_else(PoisonError::into_inner))
}

/// foca's [`BroadcastHandler`] for [`Notice`]s.
#[derive(Debug)]
pub(crate) struct LeaveHandler {
    /// Highest generation whose leave was already seen, per node id.
    seen: BTreeMap<String, u64>,
    inbox: LeaveInbox,
}

impl LeaveHandler {
    pub(crate) fn new(inbox: LeaveInbox) -> Self {
        Self {
            seen: BTreeMap::new(),
            inbox,
        }
    }
}

/// Identifies a leave notice in foca's dissemination queue.
#[derive(Debug)]
pub(crate) struct LeaveKey {
    id: String,
    generation: u64,
}

impl Invalidates for LeaveKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.id == other.id && self.generation >= other.generation
    }
}

impl BroadcastHandler<NodeIdentity> for LeaveHandler {
    type Key = LeaveKey;
    type Error = CodecError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&NodeIdentity>,
    ) -> Result<Option<LeaveKey>, CodecError> {
        let Notice::Leave(identity) = codec::decode_exact(data)?;
        if self
            .seen
            .get(&identity.id)
            .is_some_and(|seen| *seen >= identity.generation)
        {
            // Old news: returning None stops foca from disseminating it again.
            return Ok(None);
        }
        if self.seen.len() >= SEEN_IDS_MAX && !self.seen.contains_key(&identity.id) {
            let evicted = self.seen.keys().next().cloned();
            if let Some(evicted) = evicted {
                self.seen.remove(&evicted);
            }
        }
        self.seen.insert(identity.id.clone(), identity.generation);
        let key = LeaveKey {
            id: identity.id.clone(),
            generation: identity.generation,
        };
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        if inbox.len() < INBOX_MAX {
            inbox.push(identity);
        } else {
            tracing::warn!(node = %key.id, "leave inbox full; notice dropped");
        }
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(generation: u64) -> NodeIdentity {
        NodeIdentity {
            id: "n2".into(),
            cluster: "127.0.0.1:7002".parse().unwrap(),
            http: "127.0.0.1:8002".into(),
            generation,
        }
    }

    #[test]
    fn new_leaves_are_queued_and_disseminated_once() {
        // A notice is passed on the first time, and not again for the same or
        // an older generation, so foca stops re-broadcasting it.
        let inbox = LeaveInbox::default();
        let mut handler = LeaveHandler::new(inbox.clone());
        let notice = Notice::Leave(identity(3)).encode().unwrap();
        assert!(handler.receive_item(&notice, None).unwrap().is_some());
        assert!(handler.receive_item(&notice, None).unwrap().is_none());
        let older = Notice::Leave(identity(2)).encode().unwrap();
        assert!(handler.receive_item(&older, None).unwrap().is_none());
        let newer = Notice::Leave(identity(4)).encode().unwrap();
        assert!(handler.receive_item(&newer, None).unwrap().is_some());
        assert_eq!(drain(&inbox), vec![identity(3), identity(4)]);
        assert!(drain(&inbox).is_empty());
    }

    #[test]
    fn garbage_and_trailing_bytes_are_errors() {
        // A notice must decode exactly; anything else is an error foca counts.
        let mut handler = LeaveHandler::new(LeaveInbox::default());
        assert!(handler.receive_item(&[9, 9, 9], None).is_err());
        let mut notice = Notice::Leave(identity(1)).encode().unwrap();
        notice.push(0);
        assert!(handler.receive_item(&notice, None).is_err());
    }

    #[test]
    fn newer_key_invalidates_older() {
        // foca replaces a queued older leave of the same node with a newer one.
        let key = |generation| LeaveKey {
            id: "n2".into(),
            generation,
        };
        assert!(key(2).invalidates(&key(1)));
        assert!(!key(1).invalidates(&key(2)));
    }
}
