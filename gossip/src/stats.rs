//! Counters of what the gossip driver did; also exported through the
//! `metrics` facade under `ringkv_gossip_*` names, and every datagram dropped
//! before foca also in [`REJECTED_TOTAL`]`{channel="gossip"}`, the series the node
//! shares with its peer listener.

use std::sync::atomic::{AtomicU64, Ordering};

/// A point-in-time copy of the counters, from [`crate::Gossip::stats`].
/// Every field counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Datagrams received, accepted or not.
    pub packets_received: u64,
    /// Datagrams handed to the socket.
    pub packets_sent: u64,
    /// Bytes received, envelopes included.
    pub bytes_received: u64,
    /// Bytes sent, envelopes included.
    pub bytes_sent: u64,
    /// Dropped before foca: too short or long, wrong magic or version, bad checksum.
    pub packets_rejected_envelope: u64,
    /// Dropped before foca for the cluster key: sealed under none of this node's
    /// keys, not sealed on a keyed node, or sealed on a node without a key.
    pub packets_rejected_key: u64,
    /// Passed the envelope but refused by foca or our codec (undecodable,
    /// from ourselves, malformed).
    pub packets_rejected_protocol: u64,
    /// `send_to` failures.
    pub send_errors: u64,
    /// `recv_from` failures.
    pub receive_errors: u64,
    /// Announce messages sent to seed addresses.
    pub seed_announces: u64,
    /// foca errors outside packet handling (timers, leave).
    pub protocol_errors: u64,
    /// Timers dropped because the timer heap was full.
    pub timers_dropped: u64,
}

/// Packets and connections dropped before any protocol saw them (bad envelope or
/// cluster key), labelled by `channel`: `gossip` here, `peer` for the node's peer
/// listener. The node describes it and registers both labels.
pub const REJECTED_TOTAL: &str = "ringkv_rejected_total";

/// Counts one datagram in [`REJECTED_TOTAL`]`{channel="gossip"}`.
pub(crate) fn count_rejected() {
    metrics::counter!(REJECTED_TOTAL, "channel" => "gossip").increment(1);
}

macro_rules! counters {
    ($($field:ident => $metric:literal, $help:literal;)*) => {
        /// The live counters, shared by the driver and the [`crate::Gossip`] handle.
        #[derive(Debug, Default)]
        pub(crate) struct Stats {
            $($field: AtomicU64,)*
        }

        impl Stats {
            $(
                pub(crate) fn $field(&self, n: u64) {
                    self.$field.fetch_add(n, Ordering::Relaxed);
                    metrics::counter!($metric).increment(n);
                }
            )*

            pub(crate) fn snapshot(&self) -> GossipStats {
                GossipStats {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                }
            }
        }

        /// Gives every `ringkv_gossip_*` counter its HELP text and a zero value in the
        /// process's `metrics` recorder, so that a scrape before any packet already
        /// lists them (a rate or an alert needs a series to exist). Call it once the
        /// recorder is installed; calling it again changes nothing.
        pub fn register_metrics() {
            $(
                metrics::describe_counter!($metric, $help);
                metrics::counter!($metric).increment(0);
            )*
        }
    };
}

counters! {
    packets_received => "ringkv_gossip_packets_received_total",
        "Gossip datagrams received, accepted or not.";
    packets_sent => "ringkv_gossip_packets_sent_total",
        "Gossip datagrams sent.";
    bytes_received => "ringkv_gossip_bytes_received_total",
        "Bytes of gossip datagrams received, envelopes included.";
    bytes_sent => "ringkv_gossip_bytes_sent_total",
        "Bytes of gossip datagrams sent, envelopes included.";
    packets_rejected_envelope => "ringkv_gossip_packets_rejected_envelope_total",
        "Gossip datagrams dropped for their envelope (size, magic, version, checksum).";
    packets_rejected_key => "ringkv_gossip_packets_rejected_key_total",
        "Gossip datagrams dropped for the cluster key (another key, or keyed and plain nodes mixed).";
    packets_rejected_protocol => "ringkv_gossip_packets_rejected_protocol_total",
        "Gossip datagrams with a good envelope that the protocol refused.";
    send_errors => "ringkv_gossip_send_errors_total",
        "Gossip datagrams the socket failed to send.";
    receive_errors => "ringkv_gossip_receive_errors_total",
        "Failed receives on the gossip socket.";
    seed_announces => "ringkv_gossip_seed_announces_total",
        "Announce messages sent to seed addresses.";
    protocol_errors => "ringkv_gossip_protocol_errors_total",
        "Gossip protocol errors outside packet handling (timers, leave).";
    timers_dropped => "ringkv_gossip_timers_dropped_total",
        "Gossip timers dropped because the timer heap was full.";
}
