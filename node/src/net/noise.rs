//! The peer handshake and transport keyed by the cluster key, as pure state machines
//! (bytes in, bytes out; no socket), so they are tested without a network and the
//! stream in [`super::secure`] is only IO.
//!
//! Noise `NNpsk0_25519_ChaChaPoly_BLAKE2s` (via `snow`): two messages, each side an
//! ephemeral X25519 key, and the cluster key mixed in as the pre-shared key before
//! anything else. Why this pattern: the cluster key is the only secret a node has (no
//! per-node certificates to issue or rotate), and with `psk0` the very first message
//! already fails to authenticate under a wrong key, so the listener refuses a stranger
//! after reading 48 bytes and before any work. The ephemeral keys give each connection
//! fresh traffic keys (forward secrecy against a later leak of the cluster key, for
//! recorded traffic). TLS with a key derived from the cluster key was the other
//! choice; it needs a certificate per node or a PSK mode rustls does not offer.
//!
//! ```text
//! initiator -> responder:  len u16 | psk, e            (48 bytes)
//! responder -> initiator:  len u16 | e, ee             (48 bytes)
//! then both ways:          len u16 | ciphertext+tag    (at most 65,535 bytes)
//! ```
//!
//! The initiator uses its first key. The responder tries each of its keys on the first
//! message, so a node holding the old and the new key accepts either during a rotation.
//! A recorded first message can be replayed, but the replayer cannot read the answer or
//! finish the handshake without the initiator's ephemeral secret.

use ringkv_gossip::ClusterKeys;
use snow::params::NoiseParams;

/// The Noise protocol name; both sides must use the same.
const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake hash: a different protocol's handshake never completes.
const PROLOGUE: &[u8] = b"ringkv peer rpc v1";
/// Bytes of each handshake message: an ephemeral public key and a tag.
pub(crate) const HANDSHAKE_MESSAGE_BYTES: usize = 32 + TAG_BYTES;
/// Largest Noise message, tag included.
pub(crate) const FRAME_MAX_BYTES: usize = 65_535;
const TAG_BYTES: usize = 16;
/// Most plaintext in one transport frame.
pub(crate) const FRAME_PLAINTEXT_MAX_BYTES: usize = FRAME_MAX_BYTES - TAG_BYTES;

/// Why a handshake or a frame failed: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    /// The first message opens under none of this node's cluster keys (another key,
    /// or not a ringkv handshake at all).
    #[error("the handshake opens under none of this node's cluster keys")]
    UnknownKey,
    /// A message of the wrong size or that failed to authenticate.
    #[error("bad handshake message: {0}")]
    BadHandshake(String),
    /// A transport frame that failed to authenticate (changed, cut, replayed, out of
    /// order) or is oversized.
    #[error("bad frame: {0}")]
    BadFrame(String),
}

fn params() -> NoiseParams {
    PATTERN.parse().expect("the pattern name is valid")
}

fn builder<'a>(key: &'a [u8; 32]) -> Result<snow::Builder<'a>, snow::Error> {
    snow::Builder::new(params()).prologue(PROLOGUE)?.psk(0, key)
}

/// The connecting side, between its first message and the answer.
pub(crate) struct Initiator {
    state: snow::HandshakeState,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Initiator")
    }
}

impl Initiator {
    /// Starts a handshake under `keys`' sending key; returns the first message.
    pub(crate) fn start(keys: &ClusterKeys) -> Result<(Self, Vec<u8>), NoiseError> {
        let setup = |e: snow::Error| NoiseError::BadHandshake(e.to_string());
        let mut state = builder(keys.primary())
            .and_then(snow::Builder::build_initiator)
            .map_err(setup)?;
        let mut message = vec![0u8; HANDSHAKE_MESSAGE_BYTES];
        let len = state.write_message(&[], &mut message).map_err(setup)?;
        message.truncate(len);
        Ok((Self { state }, message))
    }

    /// Reads the responder's answer; the connection is then keyed both ways.
    pub(crate) fn finish(mut self, answer: &[u8]) -> Result<Transport, NoiseError> {
        if answer.len() != HANDSHAKE_MESSAGE_BYTES {
            return Err(NoiseError::BadHandshake(format!(
                "an answer of {} bytes; expected {HANDSHAKE_MESSAGE_BYTES}",
                answer.len()
            )));
        }
        let mut payload = [0u8; HANDSHAKE_MESSAGE_BYTES];
        self.state
            .read_message(answer, &mut payload)
            .map_err(|e| NoiseError::BadHandshake(format!("the answer: {e}")))?;
        Transport::from_handshake(self.state)
    }
}

/// The accepting side: tries each of `keys` on the first message and, with the one that
/// opens it, returns the keyed transport and the answer to send.
pub(crate) fn respond(
    keys: &ClusterKeys,
    first: &[u8],
) -> Result<(Transport, Vec<u8>), NoiseError> {
    if first.len() != HANDSHAKE_MESSAGE_BYTES {
        return Err(NoiseError::BadHandshake(format!(
            "a first message of {} bytes; expected {HANDSHAKE_MESSAGE_BYTES}",
            first.len()
        )));
    }
    let mut payload = [0u8; HANDSHAKE_MESSAGE_BYTES];
    for key in keys.all() {
        let setup = |e: snow::Error| NoiseError::BadHandshake(e.to_string());
        let mut state = builder(key)
            .and_then(snow::Builder::build_responder)
            .map_err(setup)?;
        if state.read_message(first, &mut payload).is_err() {
            continue;
        }
        let mut answer = vec![0u8; HANDSHAKE_MESSAGE_BYTES];
        let len = state.write_message(&[], &mut answer).map_err(setup)?;
        answer.truncate(len);
        return Ok((Transport::from_handshake(state)?, answer));
    }
    Err(NoiseError::UnknownKey)
}

/// A keyed connection's two directions: seals what is sent and opens what arrives,
/// each frame under the next nonce, so frames cut, changed, dropped, replayed or
/// reordered fail.
pub(crate) struct Transport {
    state: snow::TransportState,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transport")
    }
}

impl Transport {
    fn from_handshake(state: snow::HandshakeState) -> Result<Self, NoiseError> {
        let state = state
            .into_transport_mode()
            .map_err(|e| NoiseError::BadHandshake(e.to_string()))?;
        Ok(Self { state })
    }

    /// Appends one frame (length and ciphertext) carrying `plaintext`, at most
    /// [`FRAME_PLAINTEXT_MAX_BYTES`], to `out`.
    pub(crate) fn seal_frame(
        &mut self,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), NoiseError> {
        assert!(
            plaintext.len() <= FRAME_PLAINTEXT_MAX_BYTES,
            "a frame's plaintext is at most {FRAME_PLAINTEXT_MAX_BYTES} bytes, not {}",
            plaintext.len()
        );
        let start = out.len();
        let sealed_len = plaintext.len() + TAG_BYTES;
        out.extend_from_slice(&(sealed_len as u16).to_be_bytes());
        out.resize(start + 2 + sealed_len, 0);
        let written = self
            .state
            .write_message(plaintext, &mut out[start + 2..])
            .map_err(|e| NoiseError::BadFrame(e.to_string()))?;
        debug_assert_eq!(written, sealed_len);
        Ok(())
    }

    /// Opens one frame's ciphertext (without its length) into `out` (cleared first).
    pub(crate) fn open_frame(
        &mut self,
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), NoiseError> {
        if !(TAG_BYTES..=FRAME_MAX_BYTES).contains(&sealed.len()) {
            return Err(NoiseError::BadFrame(format!(
                "a frame of {} bytes; frames are {TAG_BYTES} to {FRAME_MAX_BYTES}",
                sealed.len()
            )));
        }
        out.clear();
        out.resize(sealed.len(), 0);
        let len = self
            .state
            .read_message(sealed, out)
            .map_err(|e| NoiseError::BadFrame(e.to_string()))?;
        out.truncate(len);
        Ok(())
    }
}

/// The length a frame header announces: a frame arrives as its two length bytes (big
/// endian) and then that many bytes.
pub(crate) fn frame_len(header: [u8; 2]) -> usize {
    usize::from(u16::from_be_bytes(header))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn keys(seeds: &[u8]) -> ClusterKeys {
        ClusterKeys::new(seeds.iter().map(|s| [*s; 32]).collect()).unwrap()
    }

    fn pair(
        initiator_keys: &[u8],
        responder_keys: &[u8],
    ) -> Result<(Transport, Transport), NoiseError> {
        let (initiator, first) = Initiator::start(&keys(initiator_keys))?;
        let (responder, answer) = respond(&keys(responder_keys), &first)?;
        Ok((initiator.finish(&answer)?, responder))
    }

    fn send(from: &mut Transport, to: &mut Transport, plaintext: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        from.seal_frame(plaintext, &mut frame).unwrap();
        assert_eq!(frame_len([frame[0], frame[1]]), frame.len() - 2);
        let mut out = Vec::new();
        to.open_frame(&frame[2..], &mut out).unwrap();
        out
    }

    #[test]
    fn same_key_talks_both_ways() {
        // A handshake under one key gives transports that carry data both ways,
        // empty and full-size frames included.
        let (mut a, mut b) = pair(&[1], &[1]).unwrap();
        for payload in [
            vec![],
            b"read k".to_vec(),
            vec![7u8; FRAME_PLAINTEXT_MAX_BYTES],
        ] {
            assert_eq!(send(&mut a, &mut b, &payload), payload);
            assert_eq!(send(&mut b, &mut a, &payload), payload);
        }
    }

    #[test]
    fn rotation_a_responder_accepts_any_of_its_keys() {
        // The initiator sends under its first key; a responder holding it on any line
        // accepts, which is every mix a one-node-at-a-time rotation passes through.
        for (initiator, responder) in [
            (&[1][..], &[1, 2][..]),
            (&[1, 2], &[1]),
            (&[2, 1], &[1, 2]),
            (&[1, 2], &[2, 1]),
            (&[2], &[2, 1]),
            (&[2, 1], &[2]),
        ] {
            assert!(
                pair(initiator, responder).is_ok(),
                "{initiator:?} -> {responder:?}"
            );
        }
    }

    #[test]
    fn another_key_is_refused_at_the_first_message() {
        // A stranger's first message opens under none of our keys.
        let (_, first) = Initiator::start(&keys(&[3])).unwrap();
        assert_eq!(
            respond(&keys(&[1, 2]), &first).unwrap_err(),
            NoiseError::UnknownKey
        );
    }

    #[test]
    fn bad_handshake_messages_are_refused() {
        // Wrong sizes and flipped bits in either message end the handshake.
        let ring = keys(&[1]);
        let (_, first) = Initiator::start(&ring).unwrap();
        assert!(respond(&ring, &first[..47]).is_err());
        assert!(respond(&ring, &[first.clone(), vec![0]].concat()).is_err());
        for at in 0..first.len() {
            let mut bad = first.clone();
            bad[at] ^= 0x10;
            assert!(respond(&ring, &bad).is_err(), "flip at {at} accepted");
        }
        for at in 0..HANDSHAKE_MESSAGE_BYTES {
            let (initiator, first) = Initiator::start(&ring).unwrap();
            let (_, mut answer) = respond(&ring, &first).unwrap();
            answer[at] ^= 0x10;
            assert!(initiator.finish(&answer).is_err(), "flip at {at} accepted");
        }
    }

    #[test]
    fn frames_changed_replayed_or_reordered_are_refused() {
        // Every frame is bound to its place in the stream.
        let (mut a, mut b) = pair(&[1], &[1]).unwrap();
        let (mut one, mut two) = (Vec::new(), Vec::new());
        a.seal_frame(b"one", &mut one).unwrap();
        a.seal_frame(b"two", &mut two).unwrap();
        let mut out = Vec::new();
        let mut flipped = one.clone();
        flipped[4] ^= 1;
        assert!(b.open_frame(&flipped[2..], &mut out).is_err(), "changed");
        let (mut a, mut b) = pair(&[1], &[1]).unwrap();
        one.clear();
        two.clear();
        a.seal_frame(b"one", &mut one).unwrap();
        a.seal_frame(b"two", &mut two).unwrap();
        assert!(b.open_frame(&two[2..], &mut out).is_err(), "reordered");
        let (mut a, mut b) = pair(&[1], &[1]).unwrap();
        one.clear();
        a.seal_frame(b"one", &mut one).unwrap();
        b.open_frame(&one[2..], &mut out).unwrap();
        assert!(b.open_frame(&one[2..], &mut out).is_err(), "replayed");
        assert!(
            b.open_frame(&[0; 15], &mut out).is_err(),
            "shorter than a tag"
        );
        assert!(
            b.open_frame(&vec![0; FRAME_MAX_BYTES + 1], &mut out)
                .is_err()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn garbage_never_opens(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            // Random first messages and random frames are refused, never a panic.
            let ring = keys(&[1, 2]);
            prop_assert!(respond(&ring, &bytes).is_err());
            let (_, mut b) = pair(&[1], &[1]).unwrap();
            let mut out = Vec::new();
            prop_assert!(b.open_frame(&bytes, &mut out).is_err());
        }
    }
}
