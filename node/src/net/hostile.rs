//! Hostile input to the peer protocol's decoders (and the API's context tokens, the
//! other bincode that arrives from outside): every request and answer kind
//! (anti-entropy's six included), cut at every byte, flipped at every bit, with length
//! prefixes up to 2^64 spliced in at every position, and random and mutated bytes from
//! proptest. The decoders must refuse or decode, never panic, never allocate what a
//! prefix claims. A bounded run is part of the normal tests; `long_run_*` (ignored)
//! feeds over a million inputs: `cargo test --release -p ringkv-node --lib
//! net::hostile -- --ignored`.

use base64::Engine as _;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::exchange::decode_answers;
use super::message::{
    Envelope, MESSAGE_MAX_BYTES, PROTOCOL_VERSION, PeerErrorKind, PeerRequest, PeerResponse,
    WireSupersedes,
};
use super::server::decode_request;
use super::wire_config;
use crate::version::{Actor, Clock, SegmentEntry, VersionVector, Versioned};

fn clock(data: &[u8]) -> Clock {
    Clock::new().update(
        &VersionVector::empty(),
        Versioned::value(1_700_000_000_000, data.to_vec()),
        &Actor::new("n2", 7),
    )
}

fn entries() -> Vec<SegmentEntry> {
    vec![
        SegmentEntry {
            key: b"k1".to_vec(),
            hash: u64::MAX,
        },
        SegmentEntry {
            key: b"k2".to_vec(),
            hash: 7,
        },
    ]
}

/// One request of every kind, with every field non-trivial.
fn requests() -> Vec<PeerRequest> {
    vec![
        PeerRequest::Read {
            key: b"key".to_vec(),
        },
        PeerRequest::Merge {
            key: b"key".to_vec(),
            clock: clock(b"v"),
            sync: true,
        },
        PeerRequest::Hint {
            owner: "n3".into(),
            key: b"key".to_vec(),
            clock: clock(b"v"),
            sync: false,
        },
        PeerRequest::Write {
            key: b"key".to_vec(),
            value: Some(b"value".to_vec()),
            supersedes: WireSupersedes::Context(VersionVector::empty()),
            w: 2,
            r: 2,
            timeout_ms: 5000,
            sync: false,
            sloppy: true,
        },
        PeerRequest::TreeRoots {
            partitions: vec![0, 513, 1023],
        },
        PeerRequest::TreeLeaves {
            partitions: vec![7],
        },
        PeerRequest::SegmentKeys {
            segments: vec![(1, 2), (1023, 255)],
            max_keys: 8192,
        },
        PeerRequest::Sync {
            push: vec![(b"a".to_vec(), clock(b"x"))],
            pull: vec![b"b".to_vec()],
        },
        PeerRequest::TombstoneCheck {
            keys: entries(),
            home: true,
        },
        PeerRequest::Purge { keys: entries() },
    ]
}

/// One answer of every kind.
fn responses() -> Vec<PeerResponse> {
    vec![
        PeerResponse::Read(Some(clock(b"v"))),
        PeerResponse::Merged,
        PeerResponse::Hinted,
        PeerResponse::Written {
            clock: clock(b"v"),
            acks: vec!["n1".into()],
            hinted: vec![("n2".into(), "n4".into())],
        },
        PeerResponse::TreeRoots(vec![Some(1), None]),
        PeerResponse::TreeLeaves(vec![Some(vec![1, 2, 3]), None]),
        PeerResponse::SegmentKeys {
            segments: vec![(1, 2)],
            entries: entries(),
        },
        PeerResponse::Synced(vec![(b"a".to_vec(), clock(b"x"))]),
        PeerResponse::TombstoneChecked(vec![true, false]),
        PeerResponse::Purged(3),
        PeerResponse::Error {
            kind: PeerErrorKind::Timeout {
                acks: 1,
                required: 2,
            },
            message: "late".into(),
        },
    ]
}

/// Each request alone in its message, and all of them in one.
fn request_messages() -> Vec<Vec<u8>> {
    let encode = |body: Vec<PeerRequest>| {
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            from: "n1".into(),
            body,
        };
        bincode::encode_to_vec(&envelope, wire_config()).unwrap()
    };
    let mut messages: Vec<Vec<u8>> = requests().into_iter().map(|r| encode(vec![r])).collect();
    messages.push(encode(requests()));
    messages
}

/// Each answer alone, and all of them together.
fn answer_messages() -> Vec<Vec<u8>> {
    let encode = |body: Vec<PeerResponse>| bincode::encode_to_vec(&body, wire_config()).unwrap();
    let mut messages: Vec<Vec<u8>> = responses().into_iter().map(|r| encode(vec![r])).collect();
    messages.push(encode(responses()));
    messages
}

/// Feeds `bytes` to both decoders; they may accept it (a flip can land in a value) but
/// what they accept must be within the limits.
fn decode_both(bytes: &[u8]) -> (bool, bool) {
    let request = decode_request(bytes).inspect(|envelope| {
        assert!((1..=super::message::BATCH_CALLS_MAX).contains(&envelope.body.len()));
    });
    let answers = decode_answers(bytes);
    (request.is_ok(), answers.is_ok())
}

#[test]
fn every_kind_round_trips_through_the_decoders() {
    // The samples are valid to begin with, so the tests below mutate real messages.
    for message in request_messages() {
        assert!(decode_request(&message).is_ok());
    }
    for message in answer_messages() {
        assert!(decode_answers(&message).is_ok());
    }
}

#[test]
fn every_truncation_of_every_kind_is_refused() {
    // A message cut anywhere short of its end is refused by its decoder.
    for message in request_messages() {
        for len in 0..message.len() {
            assert!(
                decode_request(&message[..len]).is_err(),
                "request cut to {len} accepted"
            );
        }
    }
    for message in answer_messages() {
        for len in 0..message.len() {
            assert!(
                decode_answers(&message[..len]).is_err(),
                "answer cut to {len} accepted"
            );
        }
    }
}

#[test]
fn every_bit_flip_of_every_kind_decodes_or_is_refused() {
    // One flipped bit anywhere never panics a decoder.
    for message in request_messages().into_iter().chain(answer_messages()) {
        for at in 0..message.len() {
            for bit in 0..8 {
                let mut flipped = message.clone();
                flipped[at] ^= 1 << bit;
                decode_both(&flipped);
            }
        }
    }
}

#[test]
fn length_prefixes_up_to_2_pow_64_are_refused_without_allocating() {
    // At every position of every message, a varint claiming 2^31, 2^32 - 1, 2^32, 2^40
    // or 2^64 - 1 followed by a little data: where it lands on a length, the limit
    // refuses it unallocated (an allocation of 2^32 bytes would abort the test
    // process); where it lands on a number, the message is merely odd. Every message
    // has lengths, so each is refused by the limit somewhere.
    let huge: [&[u8]; 5] = [
        &[0xfc, 0x00, 0x00, 0x00, 0x80],
        &[0xfc, 0xff, 0xff, 0xff, 0xff],
        &[0xfd, 0, 0, 0, 0, 1, 0, 0, 0],
        &[0xfd, 0, 0, 0, 0, 0, 1, 0, 0],
        &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ];
    for message in request_messages() {
        let mut over_the_limit = 0;
        for at in 0..message.len() {
            for prefix in huge {
                let mut spliced = message[..at].to_vec();
                spliced.extend_from_slice(prefix);
                spliced.extend_from_slice(&[1, 2, 3, 4]);
                decode_answers(&spliced).ok();
                if let Err(refusal) = decode_request(&spliced) {
                    over_the_limit += usize::from(refusal.metric_reason == "too_large");
                }
            }
        }
        assert!(over_the_limit > 0, "no splice hit the limit in {message:?}");
    }
    for message in answer_messages() {
        for at in 0..message.len() {
            for prefix in huge {
                let mut spliced = message[..at].to_vec();
                spliced.extend_from_slice(prefix);
                spliced.extend_from_slice(&[1, 2, 3, 4]);
                decode_both(&spliced);
            }
        }
    }
    // The claims above are all past the limit.
    const { assert!(MESSAGE_MAX_BYTES < 1 << 31) };
}

/// Random bytes, and real messages with random bytes overwritten, inserted or cut.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let messages: Vec<Vec<u8>> = request_messages()
        .into_iter()
        .chain(answer_messages())
        .collect();
    let mutated = (
        proptest::sample::select(messages),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..6),
    )
        .prop_map(|(mut message, edits)| {
            for (at, byte, how) in edits {
                let at = at % (message.len() + 1);
                match how {
                    0 if at < message.len() => message[at] = byte,
                    1 => message.insert(at, byte),
                    _ => message.truncate(at.max(1)),
                }
            }
            message
        });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..256), mutated]
}

/// Runs `cases` hostile inputs through both decoders.
fn fuzz_decoders(cases: u32) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&hostile_bytes(), |bytes| {
            decode_both(&bytes);
            // The API's context tokens are bincode too, behind base64 and a format byte.
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
            let _ = VersionVector::from_token(&token);
            let _ = VersionVector::from_token(&String::from_utf8_lossy(&bytes));
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_and_mutated_messages_never_panic_a_decoder() {
    // A bounded sample of the long run below, in every test run.
    fuzz_decoders(4_096);
}

#[test]
#[ignore = "long run: a million hostile inputs (about half a minute in release)"]
fn long_run_a_million_hostile_messages() {
    fuzz_decoders(1_000_000);
}
