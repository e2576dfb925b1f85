//! The coordinator's unit tests, over the simulated network: the real coordinator,
//! replica, hints and gossip of a few hosts, with faults placed exactly where a test
//! needs them, in simulated time.

use std::net::SocketAddr;
use std::time::Duration;

use ringkv_node::Error;
use ringkv_node::coordinator::{Quorum, ReadOptions, Supersedes, WriteOptions};
use ringkv_sim::host::{Host, address};
use ringkv_sim::net::{Net, NetConfig};
use ringkv_sim::trace::Trace;

const QUORUM: Quorum = Quorum { n: 3, r: 2, w: 2 };

/// Runs `test` on a paused current-thread runtime, as the simulator does.
fn sim<F: std::future::Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async {
            ringkv_sim::clock::start();
            test.await
        });
}

struct Cluster {
    net: Net,
    hosts: Vec<Host>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `count` hosts on a quiet network (no loss, ~1 ms latency), joined.
    async fn start(count: usize) -> Self {
        let config = NetConfig {
            latency_us: (200, 1_000),
            spike_chance: 0.0,
            spike_ms: (0, 0),
            udp_loss: 0.0,
            udp_dup: 0.0,
        };
        let net = Net::new(1, config, Trace::new(false));
        let dir = tempfile::tempdir().unwrap();
        let mut hosts: Vec<Host> = (0..count)
            .map(|i| {
                let seeds = if i == 0 { vec![] } else { vec![address(0)] };
                let host = Host::new(i, 1, dir.path(), seeds, QUORUM, false);
                net.add_host(&host.id, host.addr);
                host
            })
            .collect();
        for host in &mut hosts {
            host.start(&net).await.unwrap();
        }
        let cluster = Self {
            net,
            hosts,
            _dir: dir,
        };
        cluster.wait_alive(count).await;
        cluster
    }

    /// Waits (simulated time) until every running host sees `alive` members alive.
    async fn wait_alive(&self, alive: usize) {
        for _ in 0..600 {
            let all = self
                .hosts
                .iter()
                .filter_map(Host::cluster)
                .all(|c| c.view().members_alive() == alive);
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the hosts never all saw {alive} members alive");
    }

    fn index(id: &str) -> usize {
        id.trim_start_matches('n').parse::<usize>().unwrap() - 1
    }

    /// A key whose preference list (as host 0 sees it) satisfies `want`, and that list.
    fn key_where(&self, want: impl Fn(&[usize]) -> bool) -> (Vec<u8>, Vec<usize>) {
        let c = self.hosts[0].coordinator().unwrap();
        for i in 0..10_000 {
            let key = format!("key-{i}").into_bytes();
            let list: Vec<usize> = c
                .preference_list(&key)
                .iter()
                .map(|id| Self::index(id))
                .collect();
            if want(&list) {
                return (key, list);
            }
        }
        panic!("no key fits");
    }

    fn addr(&self, host: usize) -> SocketAddr {
        self.hosts[host].addr
    }
}

fn write_options(w: usize, timeout_ms: u64) -> WriteOptions {
    WriteOptions {
        w,
        r: 2,
        timeout: Duration::from_millis(timeout_ms),
        sync: true,
        sloppy: true,
    }
}

fn read_options(r: usize) -> ReadOptions {
    ReadOptions {
        r,
        timeout: Duration::from_secs(5),
        sloppy: true,
    }
}

fn live_values(clock: &Option<ringkv_node::version::Clock>) -> Vec<String> {
    let mut values: Vec<String> = clock
        .iter()
        .flat_map(|c| c.live_values())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    values.sort();
    values
}

#[test]
fn a_write_with_a_home_replica_down_leaves_a_hint_that_is_handed_back() {
    // w=3 with one home replica crashed: a stand-in acknowledges for it with a hint,
    // and once the owner is back the hint reaches its replica and is deleted.
    sim(async {
        let mut cluster = Cluster::start(4).await;
        let (key, home) = cluster.key_where(|list| list[0] == 0);
        let down = home[1];
        cluster.hosts[down].crash(&cluster.net);
        cluster.wait_alive(3).await;
        let c = cluster.hosts[0].coordinator().unwrap();
        let out = c
            .write(
                &key,
                Some(b"v1".to_vec()),
                Supersedes::Nothing,
                &write_options(3, 2_000),
            )
            .await
            .unwrap();
        let owner = format!("n{}", down + 1);
        assert_eq!(out.hinted.len(), 1, "{out:?}");
        assert_eq!(out.hinted[0].0, owner);
        let standin = Cluster::index(&out.hinted[0].1);
        assert!(!home.contains(&standin), "a stand-in is not a home replica");
        let pending = cluster.hosts[standin]
            .coordinator()
            .unwrap()
            .hints_pending();
        assert_eq!(pending.get(&owner), Some(&1));

        cluster.hosts[down].start(&cluster.net).await.unwrap();
        cluster.wait_alive(4).await;
        for _ in 0..100 {
            if cluster.hosts[standin]
                .coordinator()
                .unwrap()
                .hints_pending()
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            cluster.hosts[standin]
                .coordinator()
                .unwrap()
                .hints_pending()
                .is_empty()
        );
        let report = c.replica_reports(&key).await;
        let owners: Vec<_> = report.iter().filter(|r| r.node == owner).collect();
        assert_eq!(live_values(owners[0].result.as_ref().unwrap()), ["v1"]);
    });
}

#[test]
fn a_forwarded_write_whose_answer_never_comes_is_not_sent_to_another_replica() {
    // The home replica that took a forwarded write is paused: the forwarder answers
    // 504 (outcome unknown) instead of trying the next home replica, which would
    // apply the write twice (two dots: a false sibling).
    sim(async {
        let cluster = Cluster::start(4).await;
        let (key, home) = cluster.key_where(|list| !list.contains(&0));
        let first = home[0];
        cluster.net.set_paused(cluster.addr(first), true);
        let c = cluster.hosts[0].coordinator().unwrap();
        let result = c
            .write(
                &key,
                Some(b"once".to_vec()),
                Supersedes::Nothing,
                &write_options(2, 500),
            )
            .await;
        assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
        // No other home replica took it: each answers for itself, none holds it.
        for &other in &home[1..] {
            let c = cluster.hosts[other].coordinator().unwrap();
            let report = c.replica_reports(&key).await;
            let me = format!("n{}", other + 1);
            let mine = report.iter().find(|r| r.node == me).unwrap();
            assert_eq!(
                live_values(mine.result.as_ref().unwrap()),
                Vec::<String>::new()
            );
        }
        // Whatever the paused replica does with it once resumed, there is one dot at most.
        cluster.net.set_paused(cluster.addr(first), false);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let clock = c.get(&key, &read_options(3)).await.unwrap();
        assert!(
            clock.as_ref().is_none_or(|c| c.value_count() <= 1),
            "{clock:?}"
        );
    });
}

#[test]
fn a_read_asks_the_next_replica_when_one_is_slow() {
    // r=2 with the local replica and a paused one: after 25 ms the coordinator asks
    // the third, and the read answers long before its timeout.
    sim(async {
        let cluster = Cluster::start(3).await;
        let (key, home) = cluster.key_where(|list| list[0] == 0);
        let c = cluster.hosts[0].coordinator().unwrap();
        c.write(
            &key,
            Some(b"v".to_vec()),
            Supersedes::Nothing,
            &write_options(3, 2_000),
        )
        .await
        .unwrap();
        cluster.net.set_paused(cluster.addr(home[1]), true);
        let started = tokio::time::Instant::now();
        let clock = c.get(&key, &read_options(2)).await.unwrap();
        assert_eq!(live_values(&clock), ["v"]);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(200),
            "took {took:?} of simulated time"
        );
        assert!(
            took >= Duration::from_millis(25),
            "asked the third at once: {took:?}"
        );
    });
}

#[test]
fn a_read_with_too_few_live_replicas_fails_at_once() {
    // Two of three home replicas crashed: r=2 answers insufficient_replicas without
    // waiting for its timeout.
    sim(async {
        let mut cluster = Cluster::start(3).await;
        cluster.hosts[1].crash(&cluster.net);
        cluster.hosts[2].crash(&cluster.net);
        cluster.wait_alive(1).await;
        let c = cluster.hosts[0].coordinator().unwrap();
        let started = tokio::time::Instant::now();
        let result = c.get(b"k", &read_options(2)).await;
        assert!(
            matches!(result, Err(Error::InsufficientReplicas { required: 2, .. })),
            "{result:?}"
        );
        // Without waiting for the request's timeout (5 s): gossip's word, or refused
        // connections to the crashed hosts, settle it.
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
    });
}
