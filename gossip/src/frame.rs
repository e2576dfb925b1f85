//! What both gossip envelopes share: the first two bytes of every datagram (a magic
//! byte, then the version that decides the layout of the rest: 1 in the clear, see
//! `envelope.rs`; 2 sealed under the cluster key, see `sealed.rs`), and the reasons a
//! datagram is dropped before it reaches foca.

/// First byte of every ringkv gossip packet.
pub(crate) const MAGIC: u8 = 0xA7;
/// The version byte of the envelope in the clear.
pub(crate) const PLAIN_VERSION: u8 = 1;
/// The version byte of the envelope sealed under the cluster key.
pub(crate) const SEALED_VERSION: u8 = 2;

/// Why a datagram was dropped before it reached foca.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Reject {
    #[error("shorter than the envelope header")]
    TooShort,
    #[error("larger than max_packet_bytes")]
    TooLong,
    #[error("bad magic byte {0:#04x}")]
    BadMagic(u8),
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    #[error("checksum mismatch")]
    BadChecksum,
    #[error("sealed with a cluster key, and this node has none")]
    Sealed,
    #[error("not sealed, and this node requires the cluster key")]
    NotSealed,
    #[error("opened by none of this node's cluster keys")]
    BadKey,
}

impl Reject {
    /// Whether the packet failed for the cluster key (not for its framing).
    pub(crate) fn is_key(self) -> bool {
        matches!(self, Reject::Sealed | Reject::NotSealed | Reject::BadKey)
    }
}
