//! The simulated network: peer calls (TCP-like: reliable, ordered per call, cut by
//! partitions) and gossip datagrams (UDP-like: lost, duplicated, reordered), between
//! hosts that can crash, restart and pause.
//!
//! Hosts are addressed by their cluster address, as in production. Each boot of a
//! host has a number; a call or datagram from or to a boot that is no longer current
//! goes nowhere, so a crashed process's leftover tasks cannot talk to anyone.
//!
//! A peer call carries the real peer messages, bincode-encoded with the wire's own
//! config and decoded at the other end, and runs the receiver's real handler (its
//! coordinator). What it does when things go wrong mirrors TCP: a host that is down
//! refuses at once (never sent); a partitioned link does not connect within the
//! connect timeout (never sent); a link cut or a host crashed while the call is under
//! way leaves the caller waiting for its timeout (outcome unknown); a paused host
//! takes the call but answers only once it resumes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use ringkv_gossip::DatagramSocket;
use ringkv_node::net::message::{Envelope, PROTOCOL_VERSION};
use ringkv_node::net::{PeerHandler, PeerRequest, PeerResponse, PeerTransport, wire_config};
use ringkv_node::{Error, Result};
use tokio::sync::{mpsc, oneshot};

use crate::rng::SimRng;
use crate::trace;
use crate::trace::Trace;

/// How long a connect to a partitioned host takes to fail (the production client's).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Link behaviour, drawn per seed.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// One-way latency of a message, uniform in this range (microseconds).
    pub latency_us: (u64, u64),
    /// Chance that a message is late by `spike_ms` more (a GC pause, a retransmit).
    pub spike_chance: f64,
    pub spike_ms: (u64, u64),
    /// Datagram loss and duplication.
    pub udp_loss: f64,
    pub udp_dup: f64,
}

/// A datagram waiting in a host's socket.
pub type Datagram = (Vec<u8>, SocketAddr);

#[derive(Default)]
struct Slot {
    id: String,
    /// The current boot; 0 before the first.
    boot: u64,
    up: bool,
    handler: Option<Arc<dyn PeerHandler>>,
    datagrams: Option<mpsc::UnboundedSender<Datagram>>,
    paused: bool,
    /// Tasks waiting for the host to resume, woken in the order they came. (Not a
    /// tokio `watch`: its waiters are spread over shards picked at random, which
    /// would make the order of wake-ups differ from run to run.)
    resume: Vec<oneshot::Sender<()>>,
    /// Extra one-way latency on every message to or from this host (a slow link).
    slow_ms: u64,
}

struct State {
    rng: SimRng,
    config: NetConfig,
    hosts: BTreeMap<SocketAddr, Slot>,
    /// Links that drop everything, as (from, to) cluster addresses.
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    datagrams_sent: u64,
    datagrams_dropped: u64,
    calls: u64,
}

/// The network shared by every host of one run.
#[derive(Clone)]
pub struct Net {
    state: Arc<Mutex<State>>,
    trace: Trace,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Net")
    }
}

impl Slot {
    fn resume_all(&mut self) {
        self.paused = false;
        for waiter in self.resume.drain(..) {
            let _ = waiter.send(());
        }
    }
}

impl Net {
    pub fn new(seed: u64, config: NetConfig, trace: Trace) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                rng: SimRng::derive(seed, "net"),
                config,
                hosts: BTreeMap::new(),
                cut: BTreeSet::new(),
                datagrams_sent: 0,
                datagrams_dropped: 0,
                calls: 0,
            })),
            trace,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds host `index` named `id` at `addr` (down until it boots).
    pub fn add_host(&self, id: &str, addr: SocketAddr) {
        self.lock().hosts.insert(
            addr,
            Slot {
                id: id.to_owned(),
                ..Slot::default()
            },
        );
    }

    /// Starts the next boot of the host at `addr`: its socket's receiving end and the
    /// boot number every handle of this boot carries.
    pub fn boot(&self, addr: SocketAddr) -> (u64, mpsc::UnboundedReceiver<Datagram>) {
        let mut s = self.lock();
        let slot = s.hosts.get_mut(&addr).expect("a known host");
        slot.boot += 1;
        slot.up = true;
        let (tx, rx) = mpsc::unbounded_channel();
        slot.datagrams = Some(tx);
        (slot.boot, rx)
    }

    /// The host at `addr` answers peer calls with `handler` from now on.
    pub fn serve(&self, addr: SocketAddr, boot: u64, handler: Arc<dyn PeerHandler>) {
        let mut s = self.lock();
        let slot = s.hosts.get_mut(&addr).expect("a known host");
        if slot.boot == boot {
            slot.handler = Some(handler);
        }
    }

    /// The host crashed: nothing reaches it or leaves it until its next boot.
    pub fn crash(&self, addr: SocketAddr) {
        let mut s = self.lock();
        let slot = s.hosts.get_mut(&addr).expect("a known host");
        slot.up = false;
        slot.handler = None;
        slot.datagrams = None;
        slot.resume_all();
    }

    pub fn set_paused(&self, addr: SocketAddr, paused: bool) {
        if let Some(slot) = self.lock().hosts.get_mut(&addr) {
            if paused {
                slot.paused = true;
            } else {
                slot.resume_all();
            }
        }
    }

    pub fn set_slow(&self, addr: SocketAddr, slow_ms: u64) {
        if let Some(slot) = self.lock().hosts.get_mut(&addr) {
            slot.slow_ms = slow_ms;
        }
    }

    /// Cuts (or, with `cut = false`, repairs) the link from `from` to `to`.
    pub fn set_cut(&self, from: SocketAddr, to: SocketAddr, cut: bool) {
        let mut s = self.lock();
        if cut {
            s.cut.insert((from, to));
        } else {
            s.cut.remove(&(from, to));
        }
    }

    pub fn heal_all(&self) {
        let mut s = self.lock();
        s.cut.clear();
        for slot in s.hosts.values_mut() {
            slot.slow_ms = 0;
            slot.resume_all();
        }
    }

    /// (datagrams sent, datagrams dropped, peer calls).
    pub fn counts(&self) -> (u64, u64, u64) {
        let s = self.lock();
        (s.datagrams_sent, s.datagrams_dropped, s.calls)
    }

    /// Waits until the host at `addr` is not paused; false if it is down or its boot
    /// is not `boot` (any more).
    pub async fn wait_running(&self, addr: SocketAddr, boot: u64) -> bool {
        loop {
            let resumed = {
                let mut s = self.lock();
                let Some(slot) = s.hosts.get_mut(&addr).filter(|h| h.up && h.boot == boot) else {
                    return false;
                };
                if !slot.paused {
                    return true;
                }
                let (tx, rx) = oneshot::channel();
                slot.resume.push(tx);
                rx
            };
            let _ = resumed.await;
        }
    }

    /// Whether boot `boot` of the host at `addr` is the one running.
    fn is_running(&self, addr: SocketAddr, boot: u64) -> bool {
        let s = self.lock();
        s.hosts.get(&addr).is_some_and(|h| h.up && h.boot == boot)
    }

    /// The boot of the host at `addr`, if it is up.
    fn current_boot(&self, addr: SocketAddr) -> Option<u64> {
        let s = self.lock();
        s.hosts.get(&addr).filter(|h| h.up).map(|h| h.boot)
    }

    fn is_cut(&self, from: SocketAddr, to: SocketAddr) -> bool {
        self.lock().cut.contains(&(from, to))
    }

    /// A one-way delay for a message between `a` and `b`.
    fn delay(&self, a: SocketAddr, b: SocketAddr) -> Duration {
        let mut s = self.lock();
        let slow =
            s.hosts.get(&a).map_or(0, |h| h.slow_ms) + s.hosts.get(&b).map_or(0, |h| h.slow_ms);
        let (lo, hi) = s.config.latency_us;
        let mut us = s.rng.range(lo, hi + 1);
        let spike = s.config.spike_chance;
        if s.rng.chance(spike) {
            let (lo, hi) = s.config.spike_ms;
            us += s.rng.range(lo, hi + 1) * 1000;
        }
        Duration::from_micros(us + slow * 1000)
    }

    fn name(&self, addr: SocketAddr) -> String {
        self.lock()
            .hosts
            .get(&addr)
            .map_or_else(|| addr.to_string(), |s| s.id.clone())
    }

    /// Sends one datagram; it arrives (or not, or twice) after its own delay.
    fn send_datagram(&self, from: SocketAddr, boot: u64, to: SocketAddr, packet: &[u8]) {
        let copies = {
            let mut s = self.lock();
            s.datagrams_sent += 1;
            let sender_ok = s
                .hosts
                .get(&from)
                .is_some_and(|h| h.up && h.boot == boot && !h.paused);
            let (loss, dup) = (s.config.udp_loss, s.config.udp_dup);
            if !sender_ok || s.cut.contains(&(from, to)) || s.rng.chance(loss) {
                s.datagrams_dropped += 1;
                0
            } else if s.rng.chance(dup) {
                2
            } else {
                1
            }
        };
        for _ in 0..copies {
            let delay = self.delay(from, to);
            let (net, packet) = (self.clone(), packet.to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let inbox = {
                    let s = net.lock();
                    if s.cut.contains(&(from, to)) {
                        None
                    } else {
                        s.hosts
                            .get(&to)
                            .filter(|h| h.up)
                            .and_then(|h| h.datagrams.clone())
                    }
                };
                match inbox {
                    Some(inbox) => {
                        let _ = inbox.send((packet, from));
                    }
                    None => net.lock().datagrams_dropped += 1,
                }
            });
        }
    }

    /// One peer call, as [`PeerTransport::call`] describes, without its timeout.
    async fn call(
        &self,
        from: SocketAddr,
        from_boot: u64,
        from_id: &str,
        to: SocketAddr,
        request: PeerRequest,
    ) -> std::result::Result<PeerResponse, Failure> {
        if !self.wait_running(from, from_boot).await {
            return Err(Failure::NotSent("this host crashed".into()));
        }
        let Some(peer_boot) = self.current_boot(to) else {
            tokio::time::sleep(self.delay(from, to)).await;
            return Err(Failure::NotSent("connection refused".into()));
        };
        if self.is_cut(from, to) || self.is_cut(to, from) {
            tokio::time::sleep(CONNECT_TIMEOUT).await;
            return Err(Failure::NotSent("connect timed out".into()));
        }
        let op = request.op_name();
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            from: from_id.to_owned(),
            body: vec![request],
        };
        let bytes = bincode::encode_to_vec(&envelope, wire_config())
            .map_err(|e| Failure::NotSent(format!("encode: {e}")))?;
        self.lock().calls += 1;
        tokio::time::sleep(self.delay(from, to)).await;
        // Arrival: the link and the receiver must still be there.
        if self.is_cut(from, to) || !self.is_running(to, peer_boot) {
            return Err(Failure::Lost);
        }
        if !self.wait_running(to, peer_boot).await {
            return Err(Failure::Lost);
        }
        let handler = {
            let s = self.lock();
            s.hosts
                .get(&to)
                .filter(|h| h.up && h.boot == peer_boot)
                .and_then(|h| h.handler.clone())
        };
        let Some(handler) = handler else {
            return Err(Failure::Lost);
        };
        let (decoded, _): (Envelope<Vec<PeerRequest>>, usize) =
            bincode::decode_from_slice(&bytes, wire_config())
                .map_err(|e| Failure::Garbage(e.to_string()))?;
        let mut answers = Vec::with_capacity(decoded.body.len());
        for request in decoded.body {
            answers.push(handler.handle(&decoded.from, request).await);
        }
        trace!(
            self.trace,
            "call {} {}->{}",
            op,
            self.name(from),
            self.name(to)
        );
        let bytes = bincode::encode_to_vec(&answers, wire_config())
            .map_err(|e| Failure::Garbage(format!("encode: {e}")))?;
        tokio::time::sleep(self.delay(to, from)).await;
        if self.is_cut(to, from) || !self.is_running(from, from_boot) {
            return Err(Failure::Lost);
        }
        let (mut answers, _): (Vec<PeerResponse>, usize) =
            bincode::decode_from_slice(&bytes, wire_config())
                .map_err(|e| Failure::Garbage(e.to_string()))?;
        answers.pop().ok_or(Failure::Garbage("no answer".into()))
    }
}

enum Failure {
    NotSent(String),
    /// The call or its answer went missing: the caller waits for its timeout.
    Lost,
    Garbage(String),
}

/// One boot's [`PeerTransport`].
#[derive(Debug)]
pub struct SimTransport {
    pub net: Net,
    pub addr: SocketAddr,
    pub boot: u64,
    pub id: String,
}

impl PeerTransport for SimTransport {
    fn call<'a>(
        &'a self,
        peer: SocketAddr,
        request: PeerRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<PeerResponse>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let call = self.net.call(self.addr, self.boot, &self.id, peer, request);
            let outcome = match tokio::time::timeout_at(deadline, call).await {
                Ok(Err(Failure::Lost)) => {
                    // Never answered: the caller learns nothing until its timeout.
                    tokio::time::sleep_until(deadline).await;
                    Err(Failure::Lost)
                }
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::Lost),
            };
            let peer_name = peer.to_string();
            outcome.map_err(|f| match f {
                Failure::NotSent(reason) => Error::PeerUnreachable {
                    peer: peer_name,
                    reason,
                },
                Failure::Lost => Error::Peer {
                    peer: peer_name,
                    reason: format!("timed out after {} ms", timeout.as_millis()),
                },
                Failure::Garbage(reason) => Error::Peer {
                    peer: peer_name,
                    reason,
                },
            })
        })
    }
}

/// One boot's gossip socket.
pub struct SimSocket {
    net: Net,
    addr: SocketAddr,
    boot: u64,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Datagram>>,
}

impl std::fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimSocket({} boot {})", self.addr, self.boot)
    }
}

impl SimSocket {
    pub fn new(
        net: Net,
        addr: SocketAddr,
        boot: u64,
        inbox: mpsc::UnboundedReceiver<Datagram>,
    ) -> Self {
        Self {
            net,
            addr,
            boot,
            inbox: tokio::sync::Mutex::new(inbox),
        }
    }
}

impl DatagramSocket for SimSocket {
    async fn send_to(&self, packet: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        self.net.send_datagram(self.addr, self.boot, to, packet);
        Ok(packet.len())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        let mut inbox = self.inbox.lock().await;
        // A paused process reads nothing; what arrives meanwhile waits in its buffer.
        if !self.net.wait_running(self.addr, self.boot).await {
            std::future::pending::<()>().await;
        }
        match inbox.recv().await {
            Some((packet, from)) => {
                let len = packet.len().min(buf.len());
                buf[..len].copy_from_slice(&packet[..len]);
                Ok((len, from))
            }
            None => {
                std::future::pending::<()>().await;
                unreachable!()
            }
        }
    }
}
