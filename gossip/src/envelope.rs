//! The frame around every gossip datagram.
//!
//! ```text
//! v1:  magic u8 = 0xA7 | version u8 = 1 | crc32 u32 (big endian) | payload
//! ```
//!
//! The crc32 covers magic, version and payload. The version byte decides the
//! layout of everything after it: with a cluster key every datagram is a version 2
//! envelope instead, encrypted and authenticated (see `sealed.rs`). A node without a
//! key drops v2 packets as "sealed", and a keyed node drops v1 packets as "not
//! sealed": the two never talk. [`Framing`] is the node's choice of the two.

use std::borrow::Cow;
use std::sync::Arc;

use rand::Rng as _;

pub(crate) use crate::frame::Reject;
use crate::frame::{MAGIC, PLAIN_VERSION, SEALED_VERSION};
use crate::keys::ClusterKeys;
use crate::sealed;

/// Bytes the v1 envelope adds to foca's payload.
pub(crate) const OVERHEAD_BYTES: usize = 6;

/// How this node frames its datagrams: in the clear (v1), or sealed under the
/// cluster key (v2), which it then also requires of every datagram it receives.
#[derive(Debug, Clone)]
pub(crate) enum Framing {
    Plain,
    Sealed(Arc<ClusterKeys>),
}

impl Framing {
    pub(crate) fn new(keys: Option<Arc<ClusterKeys>>) -> Self {
        keys.map_or(Framing::Plain, Framing::Sealed)
    }

    /// Bytes the envelope adds to a payload.
    pub(crate) fn overhead_bytes(&self) -> usize {
        match self {
            Framing::Plain => OVERHEAD_BYTES,
            Framing::Sealed(_) => sealed::OVERHEAD_BYTES,
        }
    }

    /// Writes `payload` in this node's envelope into `out` (cleared first).
    pub(crate) fn wrap(&self, payload: &[u8], out: &mut Vec<u8>) {
        match self {
            Framing::Plain => seal(payload, out),
            Framing::Sealed(keys) => {
                let mut nonce = [0u8; sealed::NONCE_BYTES];
                // The thread's generator is a CSPRNG seeded by the OS: fresh nonces.
                rand::rng().fill_bytes(&mut nonce);
                sealed::seal(keys.primary(), &nonce, payload, out);
            }
        }
    }

    /// Checks a received datagram and returns the payload inside it.
    pub(crate) fn unwrap<'a>(&self, packet: &'a [u8]) -> Result<Cow<'a, [u8]>, Reject> {
        match self {
            Framing::Plain => open(packet).map(Cow::Borrowed),
            Framing::Sealed(keys) => sealed::open(keys, packet).map(Cow::Owned),
        }
    }
}

/// Writes `payload` wrapped in a v1 envelope into `out` (cleared first).
pub(crate) fn seal(payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(OVERHEAD_BYTES + payload.len());
    out.push(MAGIC);
    out.push(PLAIN_VERSION);
    out.extend_from_slice(&checksum(MAGIC, PLAIN_VERSION, payload).to_be_bytes());
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
    if *version == SEALED_VERSION {
        return Err(Reject::Sealed);
    }
    if *version != PLAIN_VERSION {
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

    fn keys(seeds: &[u8]) -> ClusterKeys {
        ClusterKeys::new(seeds.iter().map(|s| [*s; 32]).collect()).unwrap()
    }

    #[test]
    fn a_plain_packet_is_refused_by_name() {
        // A node without the key (a v1 envelope) is told apart from garbage.
        let mut plain = Vec::new();
        seal(&[0u8; 64], &mut plain);
        assert_eq!(sealed::open(&keys(&[1]), &plain), Err(Reject::NotSealed));
    }

    #[test]
    #[ignore = "long run: a million hostile datagrams; cargo test --release -p ringkv-gossip -- --ignored"]
    fn long_run_a_million_hostile_datagrams_never_open() {
        // Random datagrams and real sealed ones with bytes changed never open, under
        // either framing.
        use proptest::test_runner::{Config, TestRunner};
        let ring = keys(&[1, 2]);
        let mut real = Vec::new();
        sealed::seal(
            &[1; 32],
            &[9; sealed::NONCE_BYTES],
            b"a foca packet of moderate length, sealed",
            &mut real,
        );
        let inputs = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..1500),
            (any::<usize>(), 1..=255u8).prop_map(move |(at, flip)| {
                let mut bad = real.clone();
                let at = at % bad.len();
                bad[at] ^= flip;
                bad
            }),
        ];
        let mut runner = TestRunner::new(Config {
            cases: 1_000_000,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&inputs, |bytes| {
                prop_assert!(sealed::open(&ring, &bytes).is_err());
                let _ = open(&bytes);
                Ok(())
            })
            .unwrap();
    }

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
        let mut v3 = packet.clone();
        v3[1] = 3;
        assert_eq!(open(&v3), Err(Reject::UnknownVersion(3)));
        let mut v2 = packet.clone();
        v2[1] = SEALED_VERSION;
        assert_eq!(open(&v2), Err(Reject::Sealed));
        let mut corrupt = packet.clone();
        corrupt[7] ^= 1;
        assert_eq!(open(&corrupt), Err(Reject::BadChecksum));
    }

    #[test]
    fn keyed_and_plain_framings_refuse_each_other() {
        // A keyed node and a plain one each drop the other's packets, for the key.
        let keyed = Framing::new(Some(Arc::new(ClusterKeys::new(vec![[5; 32]]).unwrap())));
        let plain = Framing::new(None);
        let (mut from_keyed, mut from_plain) = (Vec::new(), Vec::new());
        keyed.wrap(b"ping", &mut from_keyed);
        plain.wrap(b"ping", &mut from_plain);
        assert_eq!(keyed.unwrap(&from_keyed).as_deref(), Ok(&b"ping"[..]));
        assert_eq!(plain.unwrap(&from_plain).as_deref(), Ok(&b"ping"[..]));
        assert_eq!(plain.unwrap(&from_keyed), Err(Reject::Sealed));
        assert_eq!(keyed.unwrap(&from_plain), Err(Reject::NotSealed));
        assert!(Reject::Sealed.is_key() && !Reject::BadChecksum.is_key());
        assert_eq!(from_keyed.len() - 4, keyed.overhead_bytes());
    }

    #[test]
    fn nonces_differ_between_packets() {
        // Two packets with the same payload never share a nonce (nor bytes).
        let keyed = Framing::new(Some(Arc::new(ClusterKeys::new(vec![[5; 32]]).unwrap())));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        keyed.wrap(b"same", &mut a);
        keyed.wrap(b"same", &mut b);
        assert_ne!(a[2..2 + sealed::NONCE_BYTES], b[2..2 + sealed::NONCE_BYTES]);
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
