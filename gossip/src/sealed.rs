//! The keyed envelope (version 2): every datagram encrypted and authenticated with
//! XChaCha20-Poly1305 under the cluster key.
//!
//! ```text
//! v2:  magic u8 = 0xA7 | version u8 = 2 | nonce [24] | ciphertext of the payload | tag [16]
//! ```
//!
//! The magic and version bytes are the associated data, so neither can be changed
//! without the tag failing. The nonce is 24 random bytes per packet: XChaCha's nonce
//! is long enough that random draws never repeat in practice (2^96 packets before a
//! collision is likely), so nodes need no shared counter and no state survives a
//! restart. No crc: the tag already rejects any changed bit. A packet is opened with
//! each of the node's keys in turn (the sending key first), which is what rotation
//! needs: a node holding the old and the new key reads both.
//!
//! What it does not stop: replay. A recorded packet opens again; foca treats a
//! replayed probe or update like a late duplicate, which SWIM already tolerates (it
//! carries incarnations, and old news loses to newer news).

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};

use crate::frame::{MAGIC, PLAIN_VERSION, Reject, SEALED_VERSION as VERSION};
use crate::keys::ClusterKeys;

/// Bytes of the random nonce.
pub(crate) const NONCE_BYTES: usize = 24;
/// Bytes of the authentication tag.
const TAG_BYTES: usize = 16;
/// Bytes the v2 envelope adds to foca's payload.
pub(crate) const OVERHEAD_BYTES: usize = 2 + NONCE_BYTES + TAG_BYTES;

/// Writes `payload` sealed under `key` with `nonce` into `out` (cleared first). The
/// nonce must be fresh random bytes (see the module docs).
pub(crate) fn seal(key: &[u8; 32], nonce: &[u8; NONCE_BYTES], payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(OVERHEAD_BYTES + payload.len());
    out.push(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(nonce);
    out.extend_from_slice(payload);
    let cipher = XChaCha20Poly1305::new(key.into());
    let tag = cipher
        .encrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &[MAGIC, VERSION],
            &mut out[2 + NONCE_BYTES..],
        )
        // Only a payload over 256 GiB could fail: a datagram is at most 64 KiB.
        .expect("a datagram is far below XChaCha20-Poly1305's length limit");
    out.extend_from_slice(&tag);
}

/// Opens a v2 packet with the first of `keys` that authenticates it and returns the
/// payload; [`Reject::BadKey`] if none does.
pub(crate) fn open(keys: &ClusterKeys, packet: &[u8]) -> Result<Vec<u8>, Reject> {
    // Magic and version first, so a plain packet is told apart whatever its length.
    let [magic, version, ..] = packet else {
        return Err(Reject::TooShort);
    };
    if *magic != MAGIC {
        return Err(Reject::BadMagic(*magic));
    }
    match *version {
        VERSION => {}
        PLAIN_VERSION => return Err(Reject::NotSealed),
        other => return Err(Reject::UnknownVersion(other)),
    }
    if packet.len() < OVERHEAD_BYTES {
        return Err(Reject::TooShort);
    }
    let rest = &packet[2..];
    let (nonce, sealed) = rest.split_at(NONCE_BYTES);
    let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_BYTES);
    let (nonce, tag) = (XNonce::from_slice(nonce), Tag::from_slice(tag));
    let mut buffer = Vec::with_capacity(ciphertext.len());
    for key in keys.all() {
        buffer.clear();
        buffer.extend_from_slice(ciphertext);
        let cipher = XChaCha20Poly1305::new(key.into());
        if cipher
            .decrypt_in_place_detached(nonce, &[MAGIC, VERSION], &mut buffer, tag)
            .is_ok()
        {
            return Ok(buffer);
        }
    }
    Err(Reject::BadKey)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn keys(seeds: &[u8]) -> ClusterKeys {
        ClusterKeys::new(seeds.iter().map(|s| [*s; 32]).collect()).unwrap()
    }

    fn sealed(key: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        seal(&[key; 32], &[9; NONCE_BYTES], payload, &mut out);
        out
    }

    #[test]
    fn round_trip_under_any_key_of_the_ring() {
        // A packet sealed under key 1 opens for a node holding [1], [2, 1] or [1, 2],
        // and is OVERHEAD_BYTES longer than its payload.
        for payload in [&b""[..], b"x", b"hello foca"] {
            let packet = sealed(1, payload);
            assert_eq!(packet.len(), OVERHEAD_BYTES + payload.len());
            for ring in [&[1][..], &[2, 1], &[1, 2]] {
                assert_eq!(open(&keys(ring), &packet).as_deref(), Ok(payload));
            }
        }
    }

    #[test]
    fn another_key_is_refused() {
        // A stranger's packet (another key) never opens, whatever keys we hold.
        let packet = sealed(3, b"members");
        assert_eq!(open(&keys(&[1, 2]), &packet), Err(Reject::BadKey));
    }

    #[test]
    fn the_payload_is_not_in_the_clear() {
        // Sealing encrypts: the payload's bytes do not appear in the packet.
        let payload = b"node n1 at 10.0.0.1:7001 generation 7";
        let packet = sealed(1, payload);
        assert!(
            !packet
                .windows(8)
                .any(|w| payload.windows(8).any(|p| p == w))
        );
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_rejected() {
        // One changed bit anywhere (header, nonce, ciphertext, tag) or a cut packet
        // never opens.
        let packet = sealed(1, &(0..=255).collect::<Vec<u8>>());
        let ring = keys(&[1]);
        for at in 0..packet.len() {
            for flip in [0x01, 0x80] {
                let mut bad = packet.clone();
                bad[at] ^= flip;
                assert!(
                    open(&ring, &bad).is_err(),
                    "flip {flip:#x} at {at} accepted"
                );
            }
        }
        for len in 0..packet.len() {
            assert!(
                open(&ring, &packet[..len]).is_err(),
                "cut to {len} accepted"
            );
        }
    }

    proptest! {
        #[test]
        fn garbage_never_opens(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            // Random bytes, even with a valid header, do not authenticate.
            let ring = keys(&[1, 2]);
            prop_assert!(open(&ring, &bytes).is_err());
            let mut headed = vec![MAGIC, VERSION];
            headed.extend_from_slice(&bytes);
            prop_assert!(open(&ring, &headed).is_err());
        }
    }
}
