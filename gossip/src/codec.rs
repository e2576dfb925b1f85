//! foca's wire format in bincode 2 (foca 2.0 ships only a postcard codec).
//!
//! foca's `Header`, `Message` and `Member` carry no bincode derives, so they
//! are mirrored by small wire types here. Decoding always goes through
//! [`decode_prefix`], whose config has a byte limit: a datagram is untrusted
//! and `bincode::config::standard()` alone would let one length prefix ask
//! for gigabytes.

use bincode::config::Config;
use bincode::{Decode, Encode};
use bytes::{Buf, BufMut};
use foca::{Header, Member, Message, State};

use crate::identity::NodeIdentity;

/// Upper bound on what one decode may claim; a UDP datagram is never larger.
pub(crate) const DECODE_LIMIT_BYTES: usize = 64 * 1024;

fn config() -> impl Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>()
}

/// Why bytes could not be turned into foca's types or back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("no room left in the packet")]
    BufferFull,
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

/// Decodes one `T` from the front of `bytes`; returns it and the bytes used.
pub(crate) fn decode_prefix<T: Decode<()>>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    Ok(bincode::decode_from_slice(bytes, config())?)
}

/// Decodes a `T` that must use all of `bytes`.
pub(crate) fn decode_exact<T: Decode<()>>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = decode_prefix(bytes)?;
    match bytes.len() - used {
        0 => Ok(value),
        extra => Err(CodecError::TrailingBytes(extra)),
    }
}

/// Appends the encoding of `value` to `out`.
pub(crate) fn encode_into<T: Encode>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::encode_into_std_write(value, out, config())?;
    Ok(())
}

/// foca's [`foca::Codec`] for [`NodeIdentity`], in bincode.
#[derive(Debug, Default)]
pub(crate) struct BincodeCodec {
    // Reused so an item is written to foca's buffer whole or not at all.
    scratch: Vec<u8>,
}

impl BincodeCodec {
    fn put<T: Encode>(&mut self, value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
        self.scratch.clear();
        encode_into(value, &mut self.scratch)?;
        // foca fills packets with members until one does not fit: it must
        // find the buffer as it was.
        if buf.remaining_mut() < self.scratch.len() {
            return Err(CodecError::BufferFull);
        }
        buf.put_slice(&self.scratch);
        Ok(())
    }

    fn take<T: Decode<()>>(mut buf: impl Buf) -> Result<T, CodecError> {
        // foca hands us contiguous memory, so the first chunk is everything.
        let (value, used) = decode_prefix(buf.chunk())?;
        buf.advance(used);
        Ok(value)
    }
}

impl foca::Codec<NodeIdentity> for BincodeCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        self.put(&WireHeader::from(header), buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeIdentity>, CodecError> {
        Self::take::<WireHeader>(buf).map(Header::from)
    }

    fn encode_member(
        &mut self,
        member: &Member<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        self.put(&WireMember::from(member), buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeIdentity>, CodecError> {
        Self::take::<WireMember>(buf).map(Member::from)
    }
}

#[derive(Encode, Decode)]
struct WireHeader {
    src: NodeIdentity,
    src_incarnation: u16,
    dst: NodeIdentity,
    message: WireMessage,
}

#[derive(Encode, Decode)]
enum WireMessage {
    Ping(u8),
    Ack(u8),
    PingReq {
        target: NodeIdentity,
        probe_number: u8,
    },
    IndirectPing {
        origin: NodeIdentity,
        probe_number: u8,
    },
    IndirectAck {
        target: NodeIdentity,
        probe_number: u8,
    },
    ForwardedAck {
        origin: NodeIdentity,
        probe_number: u8,
    },
    Announce,
    Feed,
    Gossip,
    Broadcast,
    TurnUndead,
}

#[derive(Encode, Decode)]
struct WireMember {
    id: NodeIdentity,
    incarnation: u16,
    state: WireState,
}

#[derive(Encode, Decode)]
enum WireState {
    Alive,
    Suspect,
    Down,
}

impl From<&Header<NodeIdentity>> for WireHeader {
    fn from(header: &Header<NodeIdentity>) -> Self {
        Self {
            src: header.src.clone(),
            src_incarnation: header.src_incarnation,
            dst: header.dst.clone(),
            message: WireMessage::from(&header.message),
        }
    }
}

impl From<WireHeader> for Header<NodeIdentity> {
    fn from(wire: WireHeader) -> Self {
        Self {
            src: wire.src,
            src_incarnation: wire.src_incarnation,
            dst: wire.dst,
            message: wire.message.into(),
        }
    }
}

impl From<&Message<NodeIdentity>> for WireMessage {
    fn from(message: &Message<NodeIdentity>) -> Self {
        match message {
            Message::Ping(n) => Self::Ping(*n),
            Message::Ack(n) => Self::Ack(*n),
            Message::PingReq {
                target,
                probe_number,
            } => Self::PingReq {
                target: target.clone(),
                probe_number: *probe_number,
            },
            Message::IndirectPing {
                origin,
                probe_number,
            } => Self::IndirectPing {
                origin: origin.clone(),
                probe_number: *probe_number,
            },
            Message::IndirectAck {
                target,
                probe_number,
            } => Self::IndirectAck {
                target: target.clone(),
                probe_number: *probe_number,
            },
            Message::ForwardedAck {
                origin,
                probe_number,
            } => Self::ForwardedAck {
                origin: origin.clone(),
                probe_number: *probe_number,
            },
            Message::Announce => Self::Announce,
            Message::Feed => Self::Feed,
            Message::Gossip => Self::Gossip,
            Message::Broadcast => Self::Broadcast,
            Message::TurnUndead => Self::TurnUndead,
        }
    }
}

impl From<WireMessage> for Message<NodeIdentity> {
    fn from(wire: WireMessage) -> Self {
        match wire {
            WireMessage::Ping(n) => Self::Ping(n),
            WireMessage::Ack(n) => Self::Ack(n),
            WireMessage::PingReq {
                target,
                probe_number,
            } => Self::PingReq {
                target,
                probe_number,
            },
            WireMessage::IndirectPing {
                origin,
                probe_number,
            } => Self::IndirectPing {
                origin,
                probe_number,
            },
            WireMessage::IndirectAck {
                target,
                probe_number,
            } => Self::IndirectAck {
                target,
                probe_number,
            },
            WireMessage::ForwardedAck {
                origin,
                probe_number,
            } => Self::ForwardedAck {
                origin,
                probe_number,
            },
            WireMessage::Announce => Self::Announce,
            WireMessage::Feed => Self::Feed,
            WireMessage::Gossip => Self::Gossip,
            WireMessage::Broadcast => Self::Broadcast,
            WireMessage::TurnUndead => Self::TurnUndead,
        }
    }
}

impl From<&Member<NodeIdentity>> for WireMember {
    fn from(member: &Member<NodeIdentity>) -> Self {
        Self {
            id: member.id().clone(),
            incarnation: member.incarnation(),
            state: match member.state() {
                State::Alive => WireState::Alive,
                State::Suspect => WireState::Suspect,
                State::Down => WireState::Down,
            },
        }
    }
}

impl From<WireMember> for Member<NodeIdentity> {
    fn from(wire: WireMember) -> Self {
        let state = match wire.state {
            WireState::Alive => State::Alive,
            WireState::Suspect => State::Suspect,
            WireState::Down => State::Down,
        };
        Self::new(wire.id, wire.incarnation, state)
    }
}

#[cfg(test)]
mod tests {
    use foca::Codec;
    use proptest::prelude::*;

    use super::*;

    fn node(id: &str, port: u16, generation: u64) -> NodeIdentity {
        NodeIdentity {
            id: id.into(),
            cluster: ([127, 0, 0, 1], port).into(),
            http: format!("127.0.0.1:{}", port + 1000),
            generation,
        }
    }

    fn every_message() -> Vec<Message<NodeIdentity>> {
        let other = node("n3", 7003, 9);
        vec![
            Message::Ping(1),
            Message::Ack(2),
            Message::PingReq {
                target: other.clone(),
                probe_number: 3,
            },
            Message::IndirectPing {
                origin: other.clone(),
                probe_number: 4,
            },
            Message::IndirectAck {
                target: other.clone(),
                probe_number: 5,
            },
            Message::ForwardedAck {
                origin: other,
                probe_number: 6,
            },
            Message::Announce,
            Message::Feed,
            Message::Gossip,
            Message::Broadcast,
            Message::TurnUndead,
        ]
    }

    #[test]
    fn headers_and_members_round_trip() {
        // Every foca message and member state survives encode then decode,
        // back to back in one buffer as foca lays them out.
        let mut codec = BincodeCodec::default();
        for message in every_message() {
            let header = Header {
                src: node("n1", 7001, 1),
                src_incarnation: 300,
                dst: node("n2", 7002, u64::MAX),
                message,
            };
            let member = Member::new(node("n4", 7004, 2), 7, State::Suspect);
            let mut buf = Vec::new();
            codec.encode_header(&header, &mut buf).unwrap();
            codec.encode_member(&member, &mut buf).unwrap();
            let mut read = &buf[..];
            assert_eq!(codec.decode_header(&mut read).unwrap(), header);
            assert_eq!(codec.decode_member(&mut read).unwrap(), member);
            assert!(read.is_empty());
        }
    }

    #[test]
    fn member_that_does_not_fit_leaves_the_buffer_untouched() {
        // foca's contract: a failed encode must not leave partial bytes behind.
        let mut codec = BincodeCodec::default();
        let member = Member::alive(node("n1", 7001, 1));
        let mut limited = Vec::new().limit(5);
        assert!(matches!(
            codec.encode_member(&member, &mut limited),
            Err(CodecError::BufferFull)
        ));
        assert!(limited.get_ref().is_empty());
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        // A string claiming u64::MAX bytes fails on the decode limit, not OOM.
        let mut bytes = vec![253u8]; // varint marker: a u64 follows
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut codec = BincodeCodec::default();
        assert!(codec.decode_header(&bytes[..]).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Random bytes decode to an error or to something; never a panic.
            let mut codec = BincodeCodec::default();
            let _ = codec.decode_header(&bytes[..]);
            let _ = codec.decode_member(&bytes[..]);
        }
    }

    /// Every message's header and a member, encoded as foca lays them out.
    fn encoded_packets() -> Vec<Vec<u8>> {
        let mut codec = BincodeCodec::default();
        every_message()
            .into_iter()
            .map(|message| {
                let header = Header {
                    src: node("n1", 7001, 1),
                    src_incarnation: 3,
                    dst: node("n2", 7002, 2),
                    message,
                };
                let mut buf = Vec::new();
                codec.encode_header(&header, &mut buf).unwrap();
                codec
                    .encode_member(&Member::alive(node("n4", 7004, 2)), &mut buf)
                    .unwrap();
                buf
            })
            .collect()
    }

    /// `cases` random byte strings and real packets with bytes overwritten, inserted
    /// or cut, through both decoders: an error or a value, never a panic.
    fn fuzz_decoders(cases: u32) {
        use proptest::test_runner::{Config, TestRunner};
        let mutated = (
            proptest::sample::select(encoded_packets()),
            proptest::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..6),
        )
            .prop_map(|(mut packet, edits)| {
                for (at, byte, how) in edits {
                    let at = at % (packet.len() + 1);
                    match how {
                        0 if at < packet.len() => packet[at] = byte,
                        1 => packet.insert(at, byte),
                        _ => packet.truncate(at),
                    }
                }
                packet
            });
        let inputs = prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), mutated];
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&inputs, |bytes| {
                let mut codec = BincodeCodec::default();
                let mut rest = &bytes[..];
                if codec.decode_header(&mut rest).is_ok() {
                    while !rest.is_empty() && codec.decode_member(&mut rest).is_ok() {}
                }
                let _ = codec.decode_member(&bytes[..]);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn mutated_packets_never_panic_the_decoders() {
        // A bounded sample of the long run below, in every test run.
        fuzz_decoders(4_096);
    }

    #[test]
    #[ignore = "long run: a million hostile packets; cargo test --release -p ringkv-gossip -- --ignored"]
    fn long_run_a_million_hostile_packets() {
        fuzz_decoders(1_000_000);
    }
}
