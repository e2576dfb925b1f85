//! ringkv-sim: the real node code on simulated hosts, network, clock and disk.
//!
//! Every host runs the node's protocol half ([`ringkv_node::services::Services`]:
//! replica, hints, membership view, coordinator, hinted handoff) and its gossip (foca)
//! exactly as the binary does; only what lies behind the seams differs (see
//! docs/architecture.md#seams-and-the-deterministic-simulator): peer calls and
//! datagrams travel the simulated [`net`], records live on the simulated [`disk`], wall
//! clocks and randomness come from the seed. All hosts share one current-thread tokio
//! runtime with paused time, so a seed fixes every interleaving and a run of many
//! simulated minutes takes a fraction of a second.
//!
//! A run ([`run::run_seed`]): boot the hosts, wait for the cluster to form, let the
//! clients ([`workload`]) and the seed's fault schedule ([`faults`]: crashes with loss
//! of unsynced writes, pauses, partitions both ways and one way, slow links, on top
//! of latency, spikes, datagram loss, duplication and reordering) run together, heal
//! everything, read every key back and check the history with the chaos suite's
//! checker. The [`trace`] of every event is hashed: the same seed on the same build
//! gives the same hash.
//!
//! Caveats: the HTTP layer is not simulated (clients call the coordinator), nor are
//! hyper's HTTP/2 framing and the peer batcher (messages are bincode-encoded and
//! decoded, but delivered one call at a time), nor RocksDB itself.

pub mod clock;
pub mod disk;
pub mod faults;
pub mod host;
pub mod membership;
pub mod net;
pub mod rng;
pub mod run;
pub mod trace;
pub mod workload;

pub use run::{SeedReport, SimOptions, run_seed};
