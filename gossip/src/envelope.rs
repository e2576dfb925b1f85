//! The frame around every gossip datagram.
//!
//! ```text
//! v1:  magic u8 = 0xA7 | version u8 = 1 | crc32 u32 (big endian) | payload
//! ```
//!
//! The crc32 covers magic, version and payload. The version byte decides the
//! layout of everything after it, so the cluster key (a later issue) becomes
//! version 2 with a key id and a MAC before the payload; a v1 node drops v2
//! packets as "unknown version" and the other way round.

/// First byte of every ringkv gossip packet.
pub(crate) const MAGIC: u8 = 0xA7;
/// The only layout this build speaks.
pub(crate) const VERSION: u8 = 1;
/// Bytes the v1 envelope adds to foca's payload.
pub(crate) const OVERHEAD_BYTES: usize = 6;

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
}

/// Writes `payload` wrapped in a v1 envelope into `out` (cleared first).
pub(crate) fn seal(payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(OVERHEAD_BYTES + payload.len());
    out.push(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&checksum(MAGIC, VERSION, payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Checks a received datagram and returns the payload inside it.
pub(crate) fn open(packet: &[u8]) -> Result<&[u8], Reject> {
    let [magic, version, c0, c1, c2, c3, payload @ ..] = packet else {
        return Err(Reject::TooShort);
    };
    if *magic != MAGIC {
        return Err(Reject::BadMagic(*magic));
    }
    if *version != VERSION {
        return Err(Reject::UnknownVersion(*version));
    }
    if checksum(*magic, *version, payload) != u32::from_be_bytes([*c0, *c1, *c2, *c3]) {
        return Err(Reject::BadChecksum);
    }
    Ok(payload)
}

fn checksum(magic: u8, version: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[magic, version]);
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trip() {
        // What `seal` wraps, `open` gives back unchanged, empty payload included.
        let mut packet = Vec::new();
        for payload in [&b""[..], b"x", b"hello foca"] {
            seal(payload, &mut packet);
            assert_eq!(packet.len(), OVERHEAD_BYTES + payload.len());
            assert_eq!(open(&packet), Ok(payload));
        }
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_rejected() {
        // A single corrupted byte anywhere, or a packet cut anywhere, never
        // reaches foca.
        let payload: Vec<u8> = (0..=255).collect();
        let mut packet = Vec::new();
        seal(&payload, &mut packet);
        for at in 0..packet.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut bad = packet.clone();
                bad[at] ^= flip;
                assert!(open(&bad).is_err(), "flip {flip:#x} at byte {at} accepted");
            }
        }
        for len in 0..packet.len() {
            assert!(
                open(&packet[..len]).is_err(),
                "truncation to {len} accepted"
            );
        }
    }

    #[test]
    fn reasons_are_told_apart() {
        // Stats and logs can tell garbage from a peer speaking another version.
        let mut packet = Vec::new();
        seal(b"payload", &mut packet);
        assert_eq!(open(&packet[..3]), Err(Reject::TooShort));
        let mut other = packet.clone();
        other[0] = b'G';
        assert_eq!(open(&other), Err(Reject::BadMagic(b'G')));
        let mut v2 = packet.clone();
        v2[1] = 2;
        assert_eq!(open(&v2), Err(Reject::UnknownVersion(2)));
        let mut corrupt = packet.clone();
        corrupt[7] ^= 1;
        assert_eq!(open(&corrupt), Err(Reject::BadChecksum));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            // Arbitrary bytes are either rejected or carry a matching checksum.
            if let Ok(payload) = open(&bytes) {
                let mut resealed = Vec::new();
                seal(payload, &mut resealed);
                prop_assert_eq!(resealed, bytes);
            }
        }
    }
}
