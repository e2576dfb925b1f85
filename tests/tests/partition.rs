//! Proves that [`ringkv_tests::netfault`] partitions real nodes and nothing else:
//! its rules name only node addresses in 127.0.0.0/8, a cut drops exactly the
//! directions asked for, dropping the fault set deletes its table and stale tables
//! of dead processes are cleaned up; and a three-node cluster (n=3, r=2, w=2) with
//! n3 isolated shows n3 `down` on n1 and n2 and them `down` on n3, still takes a
//! w=2 write through n1, refuses an r=2 read through n3, and after the heal is
//! `alive` everywhere again with the write readable through n3 with r=3 and held
//! by n3's own replica.
//!
//! These tests need `nft` and CAP_NET_ADMIN; without them they print why and pass,
//! unless `RINGKV_REQUIRE_NETFAULT` is set, which makes that a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use ringkv_client::wire::ClusterBody;
use ringkv_tests::netfault::{self, DropAt, NetFaults, NodeIp};
use ringkv_tests::{Api, NodeOptions, NodeProcess, Response, TestCluster, b64};

/// Bound for the cluster to form; generous, as tests run in parallel on 2 cores.
const SETUP_WITHIN: Duration = Duration::from_secs(30);
/// Acceptance bound for both sides of a partition to see the other `down`.
const DOWN_WITHIN: Duration = Duration::from_secs(15);
/// Acceptance bound for every node to see every node `alive` after the heal.
const ALIVE_WITHIN: Duration = Duration::from_secs(15);
/// Bound for the isolated node's replica to receive the write after the heal.
const CONVERGE_WITHIN: Duration = Duration::from_secs(5);
/// `timeout_ms` of the read that must fail during the partition ...
const QUORUM_TIMEOUT_MS: u64 = 500;
/// ... and the wall time it must answer within.
const ANSWER_WITHIN: Duration = Duration::from_millis(1500);
/// How long a UDP probe waits for its datagram.
const PROBE_WAIT: Duration = Duration::from_millis(300);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Set to make a missing `nft` or CAP_NET_ADMIN fail the tests instead of skipping.
const REQUIRE_ENV: &str = "RINGKV_REQUIRE_NETFAULT";
/// A pid above Linux's largest `pid_max` (2^22), so no process has it.
const IMPOSSIBLE_PID: u32 = 4_294_967;

/// A fresh fault set dropping at `drop_at`, or `None` (after printing why) where
/// faults cannot be made.
fn net_faults(test: &str, drop_at: DropAt) -> Option<NetFaults> {
    if let Some(reason) = netfault::unavailable() {
        assert!(
            std::env::var_os(REQUIRE_ENV).is_none(),
            "{test}: {REQUIRE_ENV} is set but network faults are unavailable: {reason}"
        );
        eprintln!("{test}: skipped: {reason}");
        return None;
    }
    Some(
        NetFaults::with_drop_at(drop_at)
            .unwrap_or_else(|e| panic!("{test}: nft and CAP_NET_ADMIN are present, yet: {e:#}")),
    )
}

/// Every `ip saddr X ip daddr Y` pair in an `nft list table` listing.
fn listed_cuts(ruleset: &str) -> BTreeSet<(Ipv4Addr, Ipv4Addr)> {
    ruleset
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| {
                let i = words.iter().position(|w| *w == key)?;
                words.get(i + 1)?.parse::<Ipv4Addr>().ok()
            };
            Some((after("saddr")?, after("daddr")?))
        })
        .collect()
}

/// Every word of `text` that parses as an IPv4 address (with or without a prefix
/// length such as `/8`).
fn ipv4_words(text: &str) -> Vec<Ipv4Addr> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}')
        .filter_map(|word| word.split('/').next()?.parse().ok())
        .collect()
}

/// Rules name only the 127.0.0.0/8 node addresses asked for, in the directions
/// asked for; a cut naming any other address fails and writes no rule; `heal`
/// empties the chain; dropping the set deletes its table; and `cleanup_stale`
/// deletes a table named after a pid no process has.
#[test]
fn rules_name_only_node_addresses_and_tables_never_outlive_their_owner() {
    let Some(faults) = net_faults("rules", DropAt::Receiver) else {
        return;
    };
    let leases = NodeIp::claim_many(4).unwrap();
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| leases[i].ip());

    faults.cut(a, b).unwrap();
    faults.cut_one_way(c, d).unwrap();
    faults.isolate(a, &[c]).unwrap();
    faults.split(&[b], &[c, d]).unwrap();
    faults.cut(b, a).unwrap(); // already cut: adds nothing
    let expected: BTreeSet<_> = [
        (a, b),
        (b, a),
        (c, d),
        (a, c),
        (c, a),
        (b, c),
        (c, b),
        (b, d),
        (d, b),
    ]
    .into_iter()
    .collect();
    let ruleset = faults.ruleset().unwrap();
    assert_eq!(
        listed_cuts(&ruleset),
        expected,
        "the kernel's rules differ from the cuts asked for:\n{ruleset}"
    );
    assert_eq!(
        ruleset.matches(" drop").count(),
        expected.len(),
        "{ruleset}"
    );
    assert_eq!(faults.cuts(), expected.iter().copied().collect::<Vec<_>>());
    let addresses = ipv4_words(&ruleset);
    assert!(!addresses.is_empty(), "no address found in:\n{ruleset}");
    for ip in &addresses {
        assert!(
            ip.is_loopback() && *ip != Ipv4Addr::LOCALHOST,
            "the ruleset names {ip}, which is not a node address in 127.0.0.0/8:\n{ruleset}"
        );
    }

    for outside in [
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(192, 0, 2, 2),
        Ipv4Addr::LOCALHOST,
    ] {
        for (how, result) in [
            ("cut", faults.cut(a, outside)),
            ("cut_one_way", faults.cut_one_way(outside, a)),
            ("isolate", faults.isolate(a, &[b, outside])),
            ("split", faults.split(&[outside], &[a])),
        ] {
            let error = format!("{:#}", result.expect_err(how));
            assert!(
                error.contains(&outside.to_string()) || error.contains("127.0.0.0/8"),
                "{how} naming {outside} failed without saying why: {error}"
            );
        }
        assert!(faults.cut(a, a).is_err(), "cutting {a} from itself");
    }
    let after_refusals = faults.ruleset().unwrap();
    assert_eq!(
        listed_cuts(&after_refusals),
        expected,
        "a refused cut changed the rules:\n{after_refusals}"
    );

    faults.heal().unwrap();
    let healed = faults.ruleset().unwrap();
    assert!(
        listed_cuts(&healed).is_empty() && !healed.contains("drop"),
        "heal left rules behind:\n{healed}"
    );
    assert!(faults.cuts().is_empty());
    faults.cut(a, d).unwrap();

    let table = faults.table_name().to_owned();
    let tables = netfault::list_tables().unwrap();
    assert!(
        tables.contains(&table),
        "{table} not in `nft list tables`: {tables:?}"
    );
    drop(faults);
    let tables = netfault::list_tables().unwrap();
    assert!(
        !tables.contains(&table),
        "{table} is still listed after its NetFaults was dropped: {tables:?}"
    );

    let stale = format!(
        "{}{IMPOSSIBLE_PID}_{}",
        netfault::TABLE_PREFIX,
        std::process::id()
    );
    let status = Command::new("nft")
        .args(["add", "table", "ip", &stale])
        .status()
        .expect("running nft");
    assert!(status.success(), "creating {stale}: {status}");
    netfault::cleanup_stale().unwrap();
    let tables = netfault::list_tables().unwrap();
    assert!(
        !tables.contains(&stale),
        "cleanup_stale left {stale}, named after a pid no process has: {tables:?}"
    );
}

/// One UDP socket bound to a node address, to probe which directions pass.
struct Probe {
    socket: UdpSocket,
}

impl Probe {
    fn bind(ip: Ipv4Addr) -> Self {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket.set_read_timeout(Some(PROBE_WAIT)).unwrap();
        Self { socket }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Whether a datagram sent from `self` to `to` arrives within [`PROBE_WAIT`],
    /// and whether sending it failed (with `EPERM`, as a drop on `output` does).
    fn reaches(&self, to: &Probe, tag: &str) -> (bool, bool) {
        if let Err(e) = self.socket.send_to(tag.as_bytes(), to.addr()) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied,
                "sending {tag:?} from {} to {}: {e}",
                self.addr(),
                to.addr()
            );
            return (false, true);
        }
        (self.arrives(to, tag), false)
    }

    fn arrives(&self, to: &Probe, tag: &str) -> bool {
        let mut buf = [0u8; 64];
        loop {
            match to.socket.recv_from(&mut buf) {
                Ok((len, from)) if from == self.addr() && &buf[..len] == tag.as_bytes() => {
                    return true;
                }
                // A datagram of an earlier, dropped-then-delivered probe: skip it.
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

/// Sends one probe each way between `a` and `b` and from `a` to `c`, and asserts
/// which arrive (`delivered`: a->b, b->a, a->c); a probe that does not arrive must
/// have failed to send exactly when the set drops at the sender.
#[track_caller]
fn check_probes(
    when: &str,
    [a, b, c]: [&Probe; 3],
    delivered: [bool; 3],
    faults: Option<&NetFaults>,
) {
    let got = [a.reaches(b, when), b.reaches(a, when), a.reaches(c, when)];
    let sender_fails = faults.is_some_and(|f| f.drop_at() == DropAt::Sender);
    let want = delivered.map(|arrives| (arrives, !arrives && sender_fails));
    assert_eq!(
        got,
        want,
        "{when}: (arrived, send failed) for a->b, b->a, a->c; a={} b={} c={}; rules:\n{}",
        a.addr(),
        b.addr(),
        c.addr(),
        faults
            .map(|f| f.ruleset().unwrap_or_else(|e| format!("{e:#}")))
            .unwrap_or_default()
    );
}

/// [`cuts_drop_exactly_the_directions_asked_for`] for one [`DropAt`].
fn check_directions(drop_at: DropAt) {
    let test = format!("directions ({drop_at:?})");
    let Some(faults) = net_faults(&test, drop_at) else {
        return;
    };
    let leases = NodeIp::claim_many(3).unwrap();
    let probes = [0, 1, 2].map(|i| Probe::bind(leases[i].ip()));
    let [a, b, _] = [0, 1, 2].map(|i| leases[i].ip());
    let probes = [&probes[0], &probes[1], &probes[2]];

    check_probes("before any cut", probes, [true, true, true], Some(&faults));
    faults.cut_one_way(a, b).unwrap();
    check_probes("a->b cut", probes, [false, true, true], Some(&faults));
    let dropped = faults.dropped_packets().unwrap();
    assert_eq!(
        dropped, 1,
        "{test}: the one probe from a to b should be counted"
    );
    faults.heal().unwrap();
    check_probes("healed", probes, [true, true, true], Some(&faults));
    assert_eq!(faults.dropped_packets().unwrap(), 0, "{test}: after heal");
    faults.cut(a, b).unwrap();
    check_probes("a<->b cut", probes, [false, false, true], Some(&faults));
    drop(faults);
    check_probes("the table dropped", probes, [true, true, true], None);
}

/// `cut_one_way(a, b)` silently drops datagrams from a to b at the receiver and
/// counts them, while b to a and a to a third address still pass; `cut` blocks
/// both ways; `heal` and dropping the set each let everything through again.
#[test]
fn cuts_drop_exactly_the_directions_asked_for() {
    check_directions(DropAt::Receiver);
}

/// The same with drops at the sender, where each dropped UDP send fails with `EPERM`.
#[test]
fn cuts_at_the_sender_fail_the_send() {
    check_directions(DropAt::Sender);
}

/// `GET /cluster` of one node, parsed.
async fn try_cluster(api: &Api) -> anyhow::Result<ClusterBody> {
    let resp = api.http().get(&api.url("/cluster")).await?;
    anyhow::ensure!(resp.status == 200, "GET /cluster answered {resp}");
    Ok(serde_json::from_slice(&resp.body)?)
}

/// Polls `GET /cluster` until each observer (index into `nodes`) shows its target
/// member in the wanted state, and returns how long that took; prints when each
/// observer first showed it. `left` is never acceptable: a partition is not a
/// leave. Fails at the deadline with the states each observer went through.
async fn wait_views(
    nodes: &[NodeProcess],
    expect: &[(usize, &str, &str)],
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut first_reached: BTreeMap<String, Duration> = BTreeMap::new();
    loop {
        let mut lagging = Vec::new();
        for &(observer, target, want) in expect {
            let node = &nodes[observer];
            let who = format!("{} about {target}", node.id());
            let state = match try_cluster(&node.api()).await {
                Ok(view) => view
                    .members
                    .iter()
                    .find(|m| m.id == target)
                    .map_or("(not listed)".to_owned(), |m| m.state.clone()),
                Err(e) => format!("(no answer: {e:#})"),
            };
            let history = seen.entry(who.clone()).or_default();
            if history.last() != Some(&state) {
                history.push(state.clone());
            }
            assert_ne!(
                state, "left",
                "{who}: a partitioned member must never look `left`; seen: {seen:?}"
            );
            if state == want {
                first_reached
                    .entry(who)
                    .or_insert_with(|| started.elapsed());
            } else {
                lagging.push(format!("{who}: {state}, not {want}"));
            }
        }
        if lagging.is_empty() {
            eprintln!("  first shown: {first_reached:?}");
            return started.elapsed();
        }
        assert!(
            Instant::now() < started + within,
            "not reached within {within:?}: {}; states seen: {seen:?}",
            lagging.join("; ")
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The established TCP connections to `ports` on loopback, as (source, destination),
/// read from /proc/net/tcp.
fn tcp_connections_to(ports: &[u16]) -> Vec<(SocketAddr, SocketAddr)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let parse = |field: &str| -> Option<SocketAddr> {
        let (ip, port) = field.split_once(':')?;
        // The kernel prints the address in network byte order as a host u32.
        let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_le_bytes());
        Some(SocketAddr::from((ip, u16::from_str_radix(port, 16).ok()?)))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            const ESTABLISHED: &str = "01";
            if fields.get(3) != Some(&ESTABLISHED) {
                return None;
            }
            Some((parse(fields.get(1)?)?, parse(fields.get(2)?)?))
        })
        .filter(|(_, dst)| ports.contains(&dst.port()))
        .collect()
}

/// Asserts the answer of a read that cannot reach a quorum: 503 or 504.
#[track_caller]
fn assert_refused(what: &str, resp: &Response, took: Duration) {
    assert!(
        matches!(resp.status, 503 | 504),
        "{what} should answer 503 or 504 while its node is isolated, got: {resp}"
    );
    assert!(
        took <= ANSWER_WITHIN,
        "{what} with timeout_ms={QUORUM_TIMEOUT_MS} took {took:?}, over {ANSWER_WITHIN:?}"
    );
}

/// With n3 isolated from n1 and n2, each side sees the other `down` within 15 s,
/// a w=2 write through n1 succeeds and an r=2 read through n3 fails; after the
/// heal every node sees every node `alive` within 15 s and the write reads back
/// through n3 with r=3 and reaches n3's own replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_node_is_down_on_both_sides_and_catches_up_after_heal() {
    let Some(faults) = net_faults("isolation", DropAt::Receiver) else {
        return;
    };
    let leases = NodeIp::claim_many(3).unwrap();
    let ip = |i: usize| leases[i - 1].ip();

    let mut nodes: Vec<NodeProcess> = Vec::new();
    for i in 1..=3 {
        let opts = NodeOptions::new(format!("n{i}"))
            .quorum(3, 2, 2)
            .bind_ip(ip(i))
            .join(nodes.iter().map(NodeProcess::cluster_addr));
        let node = NodeProcess::start(opts)
            .await
            .unwrap_or_else(|e| panic!("starting n{i}: {e:#}"));
        nodes.push(node);
    }
    let mut cluster = TestCluster { nodes };
    cluster
        .wait_members_alive(3, SETUP_WITHIN)
        .await
        .expect("3 nodes on their own addresses form a cluster");
    cluster
        .wait_ring(3, SETUP_WITHIN)
        .await
        .expect("the ring holds the 3 nodes, no change in flight");
    let apis: Vec<Api> = cluster.nodes.iter().map(NodeProcess::api).collect();
    let api = |i: usize| apis[i - 1].clone();

    // Peer RPC must leave from each node's own address, or no rule would match it.
    let warm = api(1)
        .put_with(b"warm-up", "x", None, "w=3")
        .await
        .assert_status(204)
        .clone();
    let cluster_ports: Vec<u16> = cluster
        .nodes
        .iter()
        .map(|n| n.cluster_addr().port())
        .collect();
    let node_ips: Vec<Ipv4Addr> = (1..=3).map(ip).collect();
    let peer_connections = tcp_connections_to(&cluster_ports);
    assert!(
        !peer_connections.is_empty(),
        "no TCP connection to a cluster port after a w=3 write: {warm}"
    );
    for (src, dst) in &peer_connections {
        let SocketAddr::V4(src4) = src else {
            unreachable!()
        };
        assert!(
            node_ips.contains(src4.ip()) && src.ip() != dst.ip(),
            "peer connection {src} -> {dst} does not come from another node's address \
             {node_ips:?}: the peer client is not bound to the cluster address"
        );
    }

    faults.isolate(ip(3), &[ip(1), ip(2)]).unwrap();
    let took = wait_views(
        &cluster.nodes,
        &[
            (0, "n3", "down"),
            (1, "n3", "down"),
            (2, "n1", "down"),
            (2, "n2", "down"),
        ],
        DOWN_WITHIN,
    )
    .await;
    eprintln!("partition: n3 down on n1 and n2, and they down on n3, {took:?} after the cut");

    let key: &[u8] = b"written-during-partition";
    let value = "only n1 and n2 saw this";
    let put = api(1).put_with(key, value, None, "w=2").await;
    put.assert_status(204);
    let get = api(2).get_with(key, "r=2").await;
    get.assert_status(200);
    assert_eq!(&get.body[..], value.as_bytes(), "GET r=2 through n2: {get}");

    let started = Instant::now();
    let get = api(3)
        .get_with(key, &format!("r=2&timeout_ms={QUORUM_TIMEOUT_MS}"))
        .await;
    let took = started.elapsed();
    assert_refused("GET r=2 through the isolated n3", &get, took);
    eprintln!(
        "partition: GET r=2 through n3 answered {} in {took:?}",
        get.status
    );
    let dropped = faults.dropped_packets().unwrap();
    assert!(dropped > 0, "the partition dropped no packet");

    faults.heal().unwrap();
    let healed = Instant::now();
    let expect_all_alive: Vec<(usize, &str, &str)> = (0..3)
        .flat_map(|observer| {
            ["n1", "n2", "n3"]
                .into_iter()
                .map(move |target| (observer, target, "alive"))
        })
        .collect();
    wait_views(&cluster.nodes, &expect_all_alive, ALIVE_WITHIN).await;
    cluster
        .wait_members_alive(3, ALIVE_WITHIN.saturating_sub(healed.elapsed()))
        .await
        .expect("/health agrees that 3 members are alive after the heal");
    eprintln!(
        "partition: all alive everywhere {:?} after the heal ({dropped} packets dropped \
         while cut)",
        healed.elapsed()
    );

    let get = api(3).get_with(key, "r=3").await;
    get.assert_status(200);
    assert_eq!(
        &get.body[..],
        value.as_bytes(),
        "GET r=3 through n3 after the heal: {get}"
    );

    let want = Some(vec![b64(value.as_bytes())]);
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        let replicas = api(3).replicas(key).await;
        let own = replicas.replicas.iter().find(|r| r.node == "n3");
        if own.is_some_and(|r| r.found == Some(true) && r.siblings == want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{CONVERGE_WITHIN:?} after the r=3 read, n3's own replica does not hold the \
             value written during the partition: {replicas:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    eprintln!(
        "partition: n3's replica holds the value {:?} after the heal",
        healed.elapsed()
    );
}
