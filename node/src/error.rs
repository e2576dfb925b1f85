//! The node crate's one error type. Every variant says what happened to the request
//! (whether anything was written), and `api::error` maps each to one HTTP status.

use crate::version::ContextError;

/// Errors of the ringkv node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request was malformed; nothing was written.
    #[error("{0}")]
    BadRequest(String),
    /// The key is empty or longer than `--max-key-bytes`; nothing was written.
    #[error("key is {len} bytes; keys are 1 to {max_bytes} bytes")]
    KeyTooLong { len: usize, max_bytes: usize },
    /// The value is over `--max-value-bytes`; nothing was written.
    #[error("value is over the limit of {max_bytes} bytes")]
    ValueTooLarge { max_bytes: usize },
    /// The `X-Ringkv-Context` (or JSON `context`) could not be read; nothing was written.
    #[error("bad context: {0}")]
    BadContext(#[from] ContextError),
    /// The write would give the key more than `--max-siblings` concurrent values; nothing
    /// was written. Resolve the siblings by writing with their context.
    #[error(
        "the key already holds {max} concurrent values; write with the context of a read to resolve them"
    )]
    TooManySiblings { max: usize },
    /// Fewer replicas are reachable than the request needs; nothing was tried.
    #[error("{live} replicas reachable, {required} required")]
    InsufficientReplicas { live: usize, required: usize },
    /// The quorum was not reached in time; a write may have reached some replicas.
    #[error("{acks} of {required} replicas answered in time")]
    Timeout { acks: usize, required: usize },
    /// No such thing (a node id the layout does not know); nothing changed.
    #[error("{0}")]
    NotFound(String),
    /// A membership change that the cluster's state forbids now (`code` says why, as
    /// `node_alive`); nothing changed.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The node is shutting down and takes no new requests.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// This node already keeps `--hint-max-bytes` of hints; the write should find
    /// another stand-in.
    #[error("hints are full ({max_bytes} bytes)")]
    HintsFull { max_bytes: u64 },
    /// A call to another node failed (unreachable, timed out, or answered garbage); the
    /// operation may or may not have happened there.
    #[error("peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
    /// No connection to another node could be made, so the call was never sent: the
    /// peer did not act on it, and another node may be asked instead.
    #[error("peer {peer}: unreachable: {reason}")]
    PeerUnreachable { peer: String, reason: String },
    /// The storage engine failed; the operation did not complete on this replica.
    #[error("storage: {0}")]
    Storage(String),
    /// Configuration is invalid; the node does not start.
    #[error("config: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Storage(e.into_string())
    }
}

/// Result with the node's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
