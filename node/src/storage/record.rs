//! The on-disk frame of a key's versions: `[format u8][crc32 of the rest, LE u32]`
//! `[actor u64 LE][payload]`, the payload being the bincode encoding of a [`Clock`]
//! and the actor the incarnation this replica's writes to the key carry (0: none yet;
//! local to the replica, never replicated; see `replica::actors`). Format 1 frames,
//! without the actor, are still read.
//!
//! A record that is truncated, of an unknown format, fails its crc or does not decode
//! is [`Corrupt`]: the caller counts it and treats the key as missing on this replica.

use crate::version::Clock;

const FORMAT: u8 = 2;
const FORMAT_WITHOUT_ACTOR: u8 = 1;
const HEADER_BYTES: usize = 5;
const ACTOR_BYTES: usize = 8;
/// Upper bound on a decoded record, so that a damaged length prefix cannot allocate
/// without limit (64 siblings of 1 MiB plus history fit many times over).
const RECORD_MAX_BYTES: usize = 512 * 1024 * 1024;

/// A stored record failed its integrity check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt record: {0}")]
pub struct Corrupt(pub &'static str);

/// Frames a clock, and the actor kept for the key (see the module docs), for storage.
pub fn encode(clock: &Clock, actor: Option<u64>) -> Vec<u8> {
    let mut out = vec![FORMAT, 0, 0, 0, 0];
    out.extend_from_slice(&actor.unwrap_or(0).to_le_bytes());
    bincode::encode_into_std_write(clock, &mut out, bincode::config::standard())
        .expect("encoding into a Vec cannot fail");
    let crc = crc32fast::hash(&out[HEADER_BYTES..]);
    out[1..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a framed clock, checking its format and crc.
pub fn decode(bytes: &[u8]) -> Result<Clock, Corrupt> {
    decode_record(bytes).map(|(clock, _)| clock)
}

/// Reads a framed clock and the actor kept with it.
pub fn decode_record(bytes: &[u8]) -> Result<(Clock, Option<u64>), Corrupt> {
    if bytes.len() < HEADER_BYTES {
        return Err(Corrupt("truncated header"));
    }
    let format = bytes[0];
    if format != FORMAT && format != FORMAT_WITHOUT_ACTOR {
        return Err(Corrupt("unknown format"));
    }
    let crc = u32::from_le_bytes(bytes[1..HEADER_BYTES].try_into().expect("4 bytes"));
    let rest = &bytes[HEADER_BYTES..];
    if crc32fast::hash(rest) != crc {
        return Err(Corrupt("crc mismatch"));
    }
    let (actor, payload) = if format == FORMAT {
        if rest.len() < ACTOR_BYTES {
            return Err(Corrupt("truncated actor"));
        }
        let (actor, payload) = rest.split_at(ACTOR_BYTES);
        let actor = u64::from_le_bytes(actor.try_into().expect("8 bytes"));
        ((actor != 0).then_some(actor), payload)
    } else {
        (None, rest)
    };
    let config = bincode::config::standard().with_limit::<RECORD_MAX_BYTES>();
    match bincode::decode_from_slice::<Clock, _>(payload, config) {
        Ok((clock, used)) if used == payload.len() => Ok((clock, actor)),
        Ok(_) => Err(Corrupt("trailing bytes")),
        Err(_) => Err(Corrupt("undecodable payload")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Actor, VersionVector, Versioned};

    fn sample() -> Clock {
        Clock::new().update(
            &VersionVector::empty(),
            Versioned::value(5, b"hello".to_vec()),
            &Actor::new("n1", 1),
        )
    }

    #[test]
    fn round_trips() {
        // A framed clock decodes to the same clock.
        assert_eq!(decode(&encode(&sample(), None)).unwrap(), sample());
        assert_eq!(
            decode_record(&encode(&sample(), Some(7))).unwrap(),
            (sample(), Some(7))
        );
    }

    #[test]
    fn every_single_flipped_byte_is_detected() {
        // Flipping any one byte of a record makes it corrupt, never a different clock.
        let good = encode(&sample(), Some(0x1234_5678_9abc_def0));
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
        assert!(decode(&good[..good.len() - 1]).is_err());
        assert!(decode(&[]).is_err());
    }
}
