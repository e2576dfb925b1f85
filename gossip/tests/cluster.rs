//! Real gossip instances over UDP on 127.0.0.1, with fast SWIM timings.
//! Run with `--nocapture` to see the `[timing]` lines.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ringkv_gossip::{Error, Gossip, GossipConfig, MemberState, Membership, SwimConfig};

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config(dir: &Path, id: &str, bind: SocketAddr, seeds: &[SocketAddr]) -> GossipConfig {
    let mut config = GossipConfig::new(
        id,
        bind,
        format!("127.0.0.1:80{}", id.trim_start_matches('n')),
        dir.join(format!("{id}.generation")),
    );
    config.seeds = seeds.to_vec();
    config.swim = SwimConfig::fast();
    config.announce_interval = Duration::from_millis(200);
    config.reannounce_interval = Duration::from_secs(2);
    config
}

/// Starts gossip, retrying while the port is still held by an instance that
/// was just dropped (its task releases the socket asynchronously).
async fn start(config: GossipConfig) -> Gossip {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Gossip::start(config.clone()) {
            Ok(gossip) => return gossip,
            Err(Error::Bind { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("start {}: {err}", config.id),
        }
    }
}

/// Waits until `done` holds for `gossip`'s membership; returns how long it took.
async fn wait_until(
    gossip: &Gossip,
    within: Duration,
    what: &str,
    done: impl Fn(&Membership) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut members = gossip.members();
    loop {
        if done(&members.borrow_and_update()) {
            return start.elapsed();
        }
        let remaining = within.saturating_sub(start.elapsed());
        let changed = tokio::time::timeout(remaining, members.changed()).await;
        if !matches!(changed, Ok(Ok(()))) {
            panic!(
                "{what}: not within {within:?} on {}; membership: {:#?}",
                members.borrow().local().id,
                members.borrow().members()
            );
        }
    }
}

fn state(membership: &Membership, id: &str) -> Option<MemberState> {
    membership.get(id).map(|member| member.state)
}

fn generation(gossip: &Gossip, id: &str) -> u64 {
    gossip.members().borrow().get(id).unwrap().generation
}

async fn three_nodes(dir: &Path) -> [Gossip; 3] {
    let n1 = start(config(dir, "n1", any_port(), &[])).await;
    let seed = [n1.cluster_addr()];
    let n2 = start(config(dir, "n2", any_port(), &seed)).await;
    let n3 = start(config(dir, "n3", any_port(), &seed)).await;
    let started = Instant::now();
    for node in [&n1, &n2, &n3] {
        wait_until(node, Duration::from_secs(10), "3 alive", |m| {
            m.count(MemberState::Alive) == 3
        })
        .await;
    }
    eprintln!(
        "[timing] 3 nodes all alive everywhere after {:?}",
        started.elapsed()
    );
    [n1, n2, n3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_through_one_seed() {
    // Two nodes seeded on a third all see each other alive, with the
    // advertised addresses and a generation from their files.
    let dir = tempfile::tempdir().unwrap();
    let [n1, n2, n3] = three_nodes(dir.path()).await;
    let view = n1.members().borrow().clone();
    let n3_seen = view.get("n3").unwrap();
    assert_eq!(n3_seen.cluster, n3.cluster_addr());
    assert_eq!(n3_seen.http, "127.0.0.1:803");
    assert_eq!(n3_seen.generation, 1);
    assert_eq!(view.local().id, "n1");
    assert_ne!(n2.cluster_addr().port(), 0);
    for node in [&n1, &n2, &n3] {
        let stats = node.stats();
        assert!(
            stats.packets_sent > 0 && stats.packets_received > 0,
            "{stats:?}"
        );
        assert_eq!(stats.packets_rejected_envelope, 0, "{stats:?}");
        assert_eq!(stats.packets_rejected_protocol, 0, "{stats:?}");
        assert_eq!(stats.protocol_errors, 0, "{stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_node_goes_down_and_rejoins_with_a_newer_generation() {
    // A node that vanishes without leaving is declared down, and the same id
    // and generation file restarted on the same port is alive again at once
    // with a higher generation.
    let dir = tempfile::tempdir().unwrap();
    let [n1, n2, n3] = three_nodes(dir.path()).await;
    let old_generation = generation(&n1, "n3");
    let n3_addr = n3.cluster_addr();
    drop(n3);
    for node in [&n1, &n2] {
        let took = wait_until(node, Duration::from_secs(15), "n3 down", |m| {
            state(m, "n3") == Some(MemberState::Down)
        })
        .await;
        eprintln!("[timing] crash of n3 seen down after {took:?}");
    }

    let restarted = Instant::now();
    let n3 = start(config(dir.path(), "n3", n3_addr, &[n1.cluster_addr()])).await;
    for node in [&n1, &n2, &n3] {
        wait_until(node, Duration::from_secs(10), "n3 back", |m| {
            m.get("n3").is_some_and(|member| {
                member.state == MemberState::Alive && member.generation > old_generation
            }) && m.count(MemberState::Alive) == 3
        })
        .await;
    }
    eprintln!(
        "[timing] restarted n3 alive everywhere after {:?}",
        restarted.elapsed()
    );
    assert_eq!(generation(&n2, "n3"), old_generation + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_seed_without_seeds_is_found_again() {
    // When the seed itself crashes and restarts knowing nobody, the others,
    // which keep announcing to seeds they do not see live, bring it back.
    let dir = tempfile::tempdir().unwrap();
    let [n1, n2, n3] = three_nodes(dir.path()).await;
    let n1_addr = n1.cluster_addr();
    drop(n1);
    for node in [&n2, &n3] {
        wait_until(node, Duration::from_secs(15), "n1 down", |m| {
            state(m, "n1") == Some(MemberState::Down)
        })
        .await;
    }
    let restarted = Instant::now();
    let n1 = start(config(dir.path(), "n1", n1_addr, &[])).await;
    for node in [&n1, &n2, &n3] {
        wait_until(node, Duration::from_secs(10), "3 alive", |m| {
            m.count(MemberState::Alive) == 3
        })
        .await;
    }
    eprintln!(
        "[timing] restarted seed found after {:?}",
        restarted.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_shows_as_left_not_down() {
    // A graceful leave is seen as Left by the others within a few seconds; the
    // node can leave only once, and coming back later makes it alive again.
    let dir = tempfile::tempdir().unwrap();
    let [n1, n2, n3] = three_nodes(dir.path()).await;
    let left_at = Instant::now();
    n3.leave().await.unwrap();
    assert_eq!(n3.members().borrow().local().state, MemberState::Left);
    assert!(matches!(n3.leave().await, Err(Error::Stopped)));
    for node in [&n1, &n2] {
        wait_until(node, Duration::from_secs(3), "n3 left", |m| {
            state(m, "n3") == Some(MemberState::Left)
        })
        .await;
    }
    eprintln!(
        "[timing] leave of n3 seen as left after {:?}",
        left_at.elapsed()
    );

    // Left must not turn into Down once suspicion would have run out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state(&n1.members().borrow(), "n3"), Some(MemberState::Left));

    drop(n3);
    let n3 = start(config(dir.path(), "n3", any_port(), &[n1.cluster_addr()])).await;
    wait_until(&n1, Duration::from_secs(10), "n3 alive again", |m| {
        state(m, "n3") == Some(MemberState::Alive)
    })
    .await;
    assert_eq!(generation(&n1, "n3"), 2);
    drop(n3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_finds_a_seed_that_starts_later() {
    // A node whose seed is not up yet keeps announcing, and the two find each
    // other once the seed starts.
    let dir = tempfile::tempdir().unwrap();
    let seed_addr = std::net::UdpSocket::bind(any_port())
        .unwrap()
        .local_addr()
        .unwrap(); // reserved, then released for the seed to take
    let joiner = start(config(dir.path(), "n2", any_port(), &[seed_addr])).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(joiner.stats().seed_announces >= 3, "{:?}", joiner.stats());
    assert_eq!(joiner.members().borrow().members().len(), 1);

    let seed_started = Instant::now();
    let seed = start(config(dir.path(), "n1", seed_addr, &[])).await;
    for node in [&joiner, &seed] {
        wait_until(node, Duration::from_secs(10), "2 alive", |m| {
            m.count(MemberState::Alive) == 2
        })
        .await;
    }
    eprintln!(
        "[timing] late seed found after {:?}",
        seed_started.elapsed()
    );
}

fn sealed(payload: &[u8]) -> Vec<u8> {
    // The v1 envelope, written out independently of the crate.
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[0xA7, 1]);
    crc.update(payload);
    let mut packet = vec![0xA7, 1];
    packet.extend_from_slice(&crc.finalize().to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_packets_are_counted_and_the_node_keeps_working() {
    // Junk, truncated, oversized and well-framed-but-meaningless datagrams are
    // dropped and counted, and the node still serves the cluster afterwards.
    let dir = tempfile::tempdir().unwrap();
    let n1 = start(config(dir.path(), "n1", any_port(), &[])).await;
    let n2 = start(config(dir.path(), "n2", any_port(), &[n1.cluster_addr()])).await;
    wait_until(&n1, Duration::from_secs(10), "2 alive", |m| {
        m.count(MemberState::Alive) == 2
    })
    .await;

    let attacker = std::net::UdpSocket::bind(any_port()).unwrap();
    let target = n1.cluster_addr();
    let mut envelope_junk = vec![
        vec![],
        vec![0xA7],
        vec![0xA7, 2, 0, 0, 0, 0, 1],
        vec![0; 5000],
    ];
    let mut protocol_junk = vec![sealed(&[]), sealed(&[0xFF; 64])];
    for i in 0..50u8 {
        let junk: Vec<u8> = (0..200).map(|j| i.wrapping_mul(31) ^ j).collect();
        let mut truncated = sealed(&junk);
        truncated.truncate(100);
        envelope_junk.push(junk);
        envelope_junk.push(truncated);
        // 0xFF is no valid bincode varint, so these cannot decode as a header.
        let mut undecodable = vec![0xFF];
        undecodable.extend(std::iter::repeat_n(i, usize::from(i)));
        protocol_junk.push(sealed(&undecodable));
    }
    for packet in envelope_junk.iter().chain(&protocol_junk) {
        attacker.send_to(packet, target).unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = n1.stats();
        // A v2 header is "sealed" to a node without a key: counted for the key.
        if stats.packets_rejected_envelope + stats.packets_rejected_key
            >= envelope_junk.len() as u64
            && stats.packets_rejected_protocol >= protocol_junk.len() as u64
        {
            break;
        }
        assert!(Instant::now() < deadline, "not all junk counted: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let n3 = start(config(dir.path(), "n3", any_port(), &[n1.cluster_addr()])).await;
    for node in [&n1, &n2, &n3] {
        wait_until(node, Duration::from_secs(10), "3 alive after junk", |m| {
            m.count(MemberState::Alive) == 3
        })
        .await;
    }
}
