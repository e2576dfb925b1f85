//! Proves the cluster behaviour of docs/architecture.md on real processes: nodes
//! started with `--join` find each other by gossip; a node killed with SIGKILL is reported
//! `down`, comes back `alive` after a restart on the same data dir and serves the
//! data it held; with one of three nodes down, quorums of two succeed while quorums
//! of three (home replicas only) fail fast with 503 or 504 and every request honours
//! `timeout_ms`; values travel between nodes byte for byte; blind writes through two
//! coordinators become siblings that a write with their context resolves on every
//! replica; `/admin/replicas` shows one entry per preference-list node; and a
//! five-node cluster loses no write through a rolling restart (SIGTERM shows a node
//! `left` while it is away; the ring keeps it); and each replica's record cache
//! follows every write.
//!
//! Every wait has a deadline and fails naming which node saw what. Each test owns
//! its cluster, ports and directories, so the tests run in parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ringkv_client::wire::ClusterBody;
use ringkv_client::{Bytes, Client, GetOutcome, ReadOptions, WriteOptions};
use ringkv_tests::{Api, NodeOptions, NodeProcess, Response, TestCluster, b64, sorted};

/// Acceptance bound for joining and rejoining: every node sees the member `alive`.
const ALIVE_WITHIN: Duration = Duration::from_secs(10);
/// Acceptance bound for a killed node to be reported `down` by the others.
const DOWN_WITHIN: Duration = Duration::from_secs(15);
/// Bound for a node stopped with SIGTERM to be shown as `left`.
const LEFT_WITHIN: Duration = Duration::from_secs(10);
/// Bound for a cluster to form in tests about something else; generous, because
/// CI runs these tests in parallel on two cores.
const SETUP_WITHIN: Duration = Duration::from_secs(30);
/// Bound for the last replica to catch up after a write acknowledged by W of N.
const CONVERGE_WITHIN: Duration = Duration::from_secs(5);
/// `timeout_ms` of the requests made while a node is down ...
const QUORUM_TIMEOUT_MS: u64 = 500;
/// ... and the wall time each of them must answer within (a correctness bound with
/// a generous margin, not a benchmark).
const ANSWER_WITHIN: Duration = Duration::from_millis(1500);
/// How often membership and replicas are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How a member absent from a `/cluster` answer shows in messages and state lists.
const NOT_LISTED: &str = "(not listed)";

/// Starts nodes `n1..n{count}` with `--n n --r r --w w`; every node after n1 joins
/// n1's cluster address only, so the rest of the membership must spread by gossip.
/// Does not wait for the membership.
async fn launch(count: usize, (n, r, w): (usize, usize, usize)) -> TestCluster {
    let mut nodes: Vec<NodeProcess> = Vec::with_capacity(count);
    for i in 1..=count {
        let mut opts = NodeOptions::new(format!("n{i}")).quorum(n, r, w);
        if let Some(seed) = nodes.first() {
            opts = opts.join([seed.cluster_addr()]);
        }
        let node = NodeProcess::start(opts)
            .await
            .unwrap_or_else(|e| panic!("starting n{i}: {e:#}"));
        nodes.push(node);
    }
    TestCluster { nodes }
}

/// [`launch`], then waits up to [`SETUP_WITHIN`] until every node sees every node
/// `alive`.
async fn start_cluster(count: usize, quorum: (usize, usize, usize)) -> TestCluster {
    let mut cluster = launch(count, quorum).await;
    wait_all_alive(&mut cluster, SETUP_WITHIN).await;
    // Alive is not yet on the ring: n2 and n3 join n1's ring of one, each receiving
    // its ranges first, and a write at w=3 needs all three.
    cluster
        .wait_ring(count, SETUP_WITHIN)
        .await
        .expect("the ring holds every node, no change in flight");
    cluster
}

fn ids(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("n{i}")).collect()
}

/// `GET /cluster` of one node, parsed; `Err` on no answer, another status or
/// another shape.
async fn try_cluster(api: &Api) -> anyhow::Result<ClusterBody> {
    let resp = api.http().get(&api.url("/cluster")).await?;
    if resp.status != 200 {
        anyhow::bail!("GET /cluster answered {resp}");
    }
    serde_json::from_slice(&resp.body)
        .map_err(|e| anyhow::anyhow!("GET /cluster body is not the documented JSON ({e}): {resp}"))
}

/// The state `view` gives `target`, or [`NOT_LISTED`].
fn state_of(view: &ClusterBody, target: &str) -> String {
    let states: Vec<&str> = view
        .members
        .iter()
        .filter(|m| m.id == target)
        .map(|m| m.state.as_str())
        .collect();
    assert!(
        states.len() <= 1,
        "{} lists {target} {} times: {view:?}",
        view.node,
        states.len()
    );
    states.first().map_or(NOT_LISTED, |s| s).to_owned()
}

/// Polls `GET /cluster` on every running node until each one shows `target` as
/// `want`, and returns how long that took. A state outside `want` and `on_the_way`
/// fails at once (e.g. `left` after a SIGKILL); so does the deadline, with the
/// states each node went through.
async fn wait_state(
    nodes: &mut [NodeProcess],
    target: &str,
    want: &str,
    on_the_way: &[&str],
    within: Duration,
) -> Duration {
    match try_wait_state(nodes, target, want, on_the_way, within).await {
        Ok(took) => took,
        Err(e) => panic!("{e}"),
    }
}

/// [`wait_state`] that returns its failure instead of panicking.
async fn try_wait_state(
    nodes: &mut [NodeProcess],
    target: &str,
    want: &str,
    on_the_way: &[&str],
    within: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let deadline = started + within;
    // Per observer: the distinct states it showed for `target`, in order.
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        let mut lagging = Vec::new();
        for node in nodes.iter_mut() {
            if !node.is_running() {
                continue;
            }
            let observer = node.id().to_owned();
            let state = match try_cluster(&node.api()).await {
                Ok(view) => state_of(&view, target),
                Err(e) => {
                    lagging.push(format!("{observer}: {e:#}"));
                    continue;
                }
            };
            let history = seen.entry(observer.clone()).or_default();
            if history.last() != Some(&state) {
                history.push(state.clone());
            }
            if state != want && !on_the_way.contains(&state.as_str()) {
                return Err(format!(
                    "{observer} shows {target} as {state:?} on the way to {want:?} \
                     (expected only {on_the_way:?} before it), after {:?}; states seen: {}",
                    started.elapsed(),
                    describe(&seen)
                ));
            }
            if state != want {
                lagging.push(format!("{observer} shows {target} as {state}"));
            }
        }
        if lagging.is_empty() {
            return Ok(started.elapsed());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{target} was not {want:?} on every running node within {within:?}: {}; \
                 states seen: {}",
                lagging.join("; "),
                describe(&seen)
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn describe(seen: &BTreeMap<String, Vec<String>>) -> String {
    seen.iter()
        .map(|(observer, states)| format!("{observer}: {}", states.join(" -> ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Waits until every running node shows every node of the cluster `alive` and
/// lists no other member, all within `within`.
async fn wait_all_alive(cluster: &mut TestCluster, within: Duration) {
    let deadline = Instant::now() + within;
    let expected = ids(cluster.nodes.len());
    for id in &expected {
        let left = deadline.saturating_duration_since(Instant::now());
        wait_state(
            &mut cluster.nodes,
            id,
            "alive",
            &[NOT_LISTED, "suspect", "down", "left"],
            left.max(POLL_INTERVAL),
        )
        .await;
    }
}

/// The replicas named by `X-Ringkv-Acks`, sorted; panics if the header is missing.
#[track_caller]
fn acks(resp: &Response) -> Vec<String> {
    let header = resp
        .acks()
        .unwrap_or_else(|| panic!("write answer without X-Ringkv-Acks: {resp}"));
    let mut ids: Vec<String> = header
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    ids.sort();
    ids
}

/// Awaits `request` and asserts it answered within [`ANSWER_WITHIN`].
async fn timed(what: &str, request: impl Future<Output = Response>) -> Response {
    let started = Instant::now();
    let resp = request.await;
    let took = started.elapsed();
    assert!(
        took <= ANSWER_WITHIN,
        "{what} with timeout_ms={QUORUM_TIMEOUT_MS} took {took:?}, over the bound of \
         {ANSWER_WITHIN:?}; answer: {resp}"
    );
    resp
}

/// Asserts the answer of a request that needs 3 home replicas while one is down:
/// 503 `insufficient_replicas` with `live` 2 and `required` 3, or 504 `timeout`
/// with `required` 3 and fewer `acks`.
#[track_caller]
fn assert_quorum_of_three_refused(what: &str, resp: &Response) {
    match resp.status {
        503 => {
            let body = resp.assert_error(503, "insufficient_replicas");
            assert_eq!(body["live"], 2, "{what}: `live` should be 2: {resp}");
            assert_eq!(
                body["required"], 3,
                "{what}: `required` should be 3: {resp}"
            );
        }
        504 => {
            let body = resp.assert_error(504, "timeout");
            assert_eq!(
                body["required"], 3,
                "{what}: `required` should be 3: {resp}"
            );
            let acks = body["acks"].as_u64();
            assert!(
                acks.is_some_and(|a| a < 3),
                "{what}: `acks` should be a number below 3: {resp}"
            );
        }
        _ => panic!("{what} should answer 503 or 504 with one of 3 nodes down, got: {resp}"),
    }
}

/// Every node lists exactly n1, n2, n3 `alive` in `GET /cluster` within 10 s of the
/// last start (n2 and n3 join n1 only), with their addresses and the quorum
/// defaults, and `/health` reports `members_alive` 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_joining_one_seed_all_see_each_other_alive() {
    let mut cluster = launch(3, (3, 2, 2)).await;
    let started = Instant::now();
    wait_all_alive(&mut cluster, ALIVE_WITHIN).await;
    eprintln!("all 3 nodes alive everywhere after {:?}", started.elapsed());

    let addrs: BTreeMap<String, (String, String)> = cluster
        .nodes
        .iter()
        .map(|n| {
            let addrs = (n.http_addr().to_string(), n.cluster_addr().to_string());
            (n.id().to_owned(), addrs)
        })
        .collect();
    for node in &cluster.nodes {
        let view = node.api().cluster().await;
        assert_eq!(view.node, node.id(), "{view:?}");
        assert_eq!(
            (view.n, view.r, view.w),
            (3, 2, 2),
            "{} reports other quorum defaults: {view:?}",
            node.id()
        );
        let listed: Vec<&str> = view.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(
            listed.iter().copied().collect::<BTreeSet<_>>(),
            ["n1", "n2", "n3"].into_iter().collect(),
            "{} lists other members: {view:?}",
            node.id()
        );
        assert_eq!(
            listed.len(),
            3,
            "{} lists a member twice: {view:?}",
            node.id()
        );
        for member in &view.members {
            assert_eq!(member.state, "alive", "{}: {view:?}", node.id());
            let (http, cluster_addr) = &addrs[&member.id];
            assert_eq!(
                (&member.http, &member.cluster),
                (http, cluster_addr),
                "{} lists {}'s addresses wrong: {view:?}",
                node.id(),
                member.id
            );
        }
    }

    let deadline = started + ALIVE_WITHIN;
    for node in &cluster.nodes {
        loop {
            let health = node.api().health().await;
            assert_eq!(health.node, node.id());
            if health.members_alive == 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} lists 3 members alive in /cluster but /health says {health:?}",
                node.id()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// A node killed with SIGKILL is reported `down` (perhaps `suspect` first, never
/// `left`) by the others within 15 s; restarted with the same id, ports and data
/// dir it is `alive` on every node within 10 s, and keys written with w=3 before
/// the kill read back through it with r=3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_is_reported_down_and_returns_with_its_data() {
    const KEYS: usize = 30;
    let key = |i: usize| format!("before-kill-{i}").into_bytes();
    let value = |i: usize| format!("value-{i}-{}", "x".repeat(i)).into_bytes();

    let mut cluster = start_cluster(3, (3, 2, 2)).await;
    for i in 0..KEYS {
        let coordinator = cluster.nodes[i % 3].api();
        let put = coordinator.put_with(&key(i), value(i), None, "w=3").await;
        put.assert_status(204);
        assert_eq!(acks(&put), ids(3), "a w=3 write names all 3 acks: {put}");
    }

    cluster.node(3).kill9().unwrap();
    let took = wait_state(
        &mut cluster.nodes,
        "n3",
        "down",
        &["alive", "suspect"],
        DOWN_WITHIN,
    )
    .await;
    eprintln!("n3 down on n1 and n2 {took:?} after SIGKILL");
    for node in &cluster.nodes[..2] {
        let health = node.api().health().await;
        assert_eq!(
            health.members_alive,
            2,
            "{} reports n3 down in /cluster, but /health says {health:?}",
            node.id()
        );
    }

    cluster.node(3).restart().await.unwrap();
    let took = wait_state(
        &mut cluster.nodes,
        "n3",
        "alive",
        &["down", "suspect", NOT_LISTED],
        ALIVE_WITHIN,
    )
    .await;
    eprintln!("restarted n3 alive on every node after {took:?}");
    // n3 must see the others too before it can gather r=3.
    cluster
        .wait_members_alive(3, ALIVE_WITHIN)
        .await
        .expect("every node sees 3 members alive after n3's restart");

    let api3 = cluster.node(3).api();
    let mut wrong = Vec::new();
    for i in 0..KEYS {
        let get = api3.get_with(&key(i), "r=3").await;
        if get.status != 200 || get.body[..] != value(i)[..] {
            wrong.push(format!("key {i}: {get}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {KEYS} keys do not read back through the restarted n3 with r=3:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// With n3 down (and reported so), PUT w=2 and GET r=2 succeed through n1 and n2,
/// while PUT `w=3&sloppy=false` and GET `r=3&sloppy=false` answer 503
/// `insufficient_replicas` or 504 `timeout`; every request, with `timeout_ms=500`,
/// answers within 1.5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_node_down_two_replicas_serve_and_three_fail_fast() {
    let mut cluster = start_cluster(3, (3, 2, 2)).await;
    cluster.node(3).kill9().unwrap();
    wait_state(
        &mut cluster.nodes,
        "n3",
        "down",
        &["alive", "suspect"],
        DOWN_WITHIN,
    )
    .await;

    let t = QUORUM_TIMEOUT_MS;
    let live = [cluster.node(1).api(), cluster.node(2).api()];
    for (c, coordinator) in live.iter().enumerate() {
        let reader = &live[1 - c];
        let (writer_id, reader_id) = (format!("n{}", c + 1), format!("n{}", 2 - c));
        for j in 0..5 {
            let key = format!("degraded-{writer_id}-{j}").into_bytes();
            let value = format!("written through {writer_id}, #{j}").into_bytes();
            let what = format!("PUT w=2 through {writer_id}");
            let put = timed(
                &what,
                coordinator.put_with(&key, value.clone(), None, &format!("w=2&timeout_ms={t}")),
            )
            .await;
            put.assert_status(204);
            let acked = acks(&put);
            assert!(
                acked.len() >= 2 && !acked.contains(&"n3".to_owned()),
                "{what}: expected 2 acks from live nodes, got {acked:?}: {put}"
            );

            for (id, api) in [(&reader_id, reader), (&writer_id, coordinator)] {
                let what = format!("GET r=2 through {id}");
                let get = timed(&what, api.get_with(&key, &format!("r=2&timeout_ms={t}"))).await;
                get.assert_status(200);
                assert_eq!(get.body[..], value[..], "{what}: {get}");
            }

            let what = format!("PUT w=3&sloppy=false through {writer_id}");
            let put = timed(
                &what,
                coordinator.put_with(
                    &key,
                    "needs three",
                    None,
                    &format!("w=3&sloppy=false&timeout_ms={t}"),
                ),
            )
            .await;
            assert_quorum_of_three_refused(&what, &put);

            let what = format!("GET r=3&sloppy=false through {reader_id}");
            let get = timed(
                &what,
                reader.get_with(&key, &format!("r=3&sloppy=false&timeout_ms={t}")),
            )
            .await;
            assert_quorum_of_three_refused(&what, &get);
        }
    }
}

/// A value written through one node reads back through each other node with r=3
/// byte for byte: every byte value 0..=255 under a key that is not UTF-8, and a
/// value of exactly 1 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_cross_nodes_byte_for_byte() {
    let cluster = start_cluster(3, (3, 2, 2)).await;
    let api = |i: usize| cluster.nodes[i - 1].api();

    let binary_key: &[u8] = &[0xff, 0x00, b'/', 0xc3, b'k'];
    let binary: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    api(1)
        .put(binary_key, binary.clone())
        .await
        .assert_status(204);

    let big_key: &[u8] = b"one-mebibyte";
    let big: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    api(2).put(big_key, big.clone()).await.assert_status(204);

    for (what, key, value, writer) in [
        ("the binary value", binary_key, &binary, 1),
        ("the 1 MiB value", big_key, &big, 2),
    ] {
        for reader in (1..=3).filter(|&r| r != writer) {
            let get = api(reader).get_with(key, "r=3").await;
            get.assert_status(200);
            assert!(
                get.body[..] == value[..],
                "{what} written through n{writer} reads back through n{reader} with r=3 as \
                 {} bytes that differ from the {} written (first difference at byte {:?})",
                get.body.len(),
                value.len(),
                get.body.iter().zip(value.iter()).position(|(a, b)| a != b)
            );
        }
    }
}

/// Blind writes through n1 and n2 to one key read back through n3 with r=3 as 300
/// with both values; a PUT with that read's context resolves them, and afterwards
/// every replica in the preference list holds exactly the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_writes_via_two_coordinators_become_siblings_until_resolved() {
    let cluster = start_cluster(3, (3, 2, 2)).await;
    let api = |i: usize| cluster.nodes[i - 1].api();
    let key: &[u8] = b"contested";

    api(1).put(key, "from-n1").await.assert_status(204);
    api(2).put(key, "from-n2").await.assert_status(204);

    let get = api(3).get_with(key, "r=3").await;
    let (body, values) = get.assert_siblings();
    assert_eq!(
        values,
        sorted(&[b"from-n1", b"from-n2"]),
        "blind writes through n1 and n2 read through n3 with r=3: {get}"
    );

    let put = api(3)
        .put_with(key, "resolved", Some(&body.context), "")
        .await;
    put.assert_status(204);

    let get = api(1).get_with(key, "r=3").await;
    get.assert_status(200);
    assert_eq!(&get.body[..], b"resolved", "{get}");

    let want = vec![b64(b"resolved")];
    let deadline = Instant::now() + CONVERGE_WITHIN;
    for i in 1..=3 {
        loop {
            let replicas = api(i).replicas(key).await;
            assert_eq!(replicas.preference_list.len(), 3, "n{i}: {replicas:?}");
            let stale: Vec<String> = replicas
                .preference_list
                .iter()
                .filter(|id| {
                    !replicas.replicas.iter().any(|r| {
                        &r.node == *id
                            && r.found == Some(true)
                            && r.tombstone != Some(true)
                            && r.siblings.as_ref() == Some(&want)
                    })
                })
                .cloned()
                .collect();
            if stale.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{CONVERGE_WITHIN:?} after the resolving PUT, n{i}'s /admin/replicas shows \
                 {stale:?} without exactly [\"resolved\"]: {replicas:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// `GET /admin/replicas/{key}` on every node lists the same preference list of 3
/// distinct node ids and one replica entry per id, each alive and holding the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_replicas_lists_one_entry_per_preference_list_node() {
    let cluster = start_cluster(3, (3, 2, 2)).await;
    let members: BTreeSet<String> = ids(3).into_iter().collect();

    for k in 0..10 {
        let key = format!("placed-{k}").into_bytes();
        let value = format!("value-{k}");
        cluster.nodes[k % 3]
            .api()
            .put_with(&key, value.clone(), None, "w=3")
            .await
            .assert_status(204);

        let mut lists = BTreeMap::new();
        for node in &cluster.nodes {
            let body = node.api().replicas(&key).await;
            let who = format!("{} for key {:?}", node.id(), String::from_utf8_lossy(&key));
            assert_eq!(body.key.as_bytes(), &key[..], "{who}: {body:?}");
            let listed: BTreeSet<String> = body.preference_list.iter().cloned().collect();
            assert_eq!(
                (body.preference_list.len(), &listed),
                (3, &members),
                "{who}: the preference list should be 3 distinct members: {body:?}"
            );
            let entries: Vec<&str> = body.replicas.iter().map(|r| r.node.as_str()).collect();
            let entry_set: BTreeSet<String> = entries.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                (entries.len(), &entry_set),
                (3, &listed),
                "{who}: one replica entry per preference-list id: {body:?}"
            );
            for replica in &body.replicas {
                assert_eq!(replica.state, "alive", "{who}: {body:?}");
                assert_eq!(replica.found, Some(true), "{who}: {body:?}");
                assert_eq!(
                    replica.siblings,
                    Some(vec![b64(value.as_bytes())]),
                    "{who}: every replica holds the w=3 write: {body:?}"
                );
            }
            lists.insert(node.id().to_owned(), body.preference_list);
        }
        let distinct: BTreeSet<&Vec<String>> = lists.values().collect();
        assert_eq!(
            distinct.len(),
            1,
            "nodes disagree on the preference list of key {k}: {lists:?}"
        );
    }
}

/// What the background writer of the rolling restart did.
#[derive(Debug, Default)]
struct WriterLog {
    /// Keys acknowledged, with their values.
    acked: Vec<(String, String)>,
    /// Every failed write: key and error.
    failed: Vec<String>,
}

/// Writes unique keys with w=2 through `client` until `stop`, pausing `pause`
/// between writes; counts acknowledgements in `acked_count`.
async fn write_until_stopped(
    client: Client,
    writer: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicUsize>,
) -> WriterLog {
    let opts = WriteOptions {
        w: Some(2),
        ..WriteOptions::default()
    };
    let mut log = WriterLog::default();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("rolling-{writer}-{i:06}");
        let value = format!("value of {key}");
        let started = Instant::now();
        match client
            .put(key.as_bytes(), Bytes::from(value.clone()), None, &opts)
            .await
        {
            Ok(_) => {
                log.acked.push((key, value));
                acked_count.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => log
                .failed
                .push(format!("{key} (after {:?}): {e}", started.elapsed())),
        }
        i += 1;
        tokio::time::sleep(pause).await;
    }
    log
}

/// A 5-node cluster (n=3, r=2, w=2) takes writes through a rolling restart, each
/// node in turn stopped with SIGTERM (shown `left` meanwhile) and restarted, with no
/// failed write; afterwards every acknowledged key reads back with r=2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_five_nodes_loses_no_write() {
    const WRITERS: usize = 2;
    const WRITE_PAUSE: Duration = Duration::from_millis(10);
    const READERS: usize = 8;

    let mut cluster = start_cluster(5, (3, 2, 2)).await;
    let urls: Vec<String> = cluster.nodes.iter().map(NodeProcess::base_url).collect();
    let client = Client::new(&urls).expect("a client of the 5 nodes");

    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(write_until_stopped(
                client.clone(),
                w,
                WRITE_PAUSE,
                stop.clone(),
                acked_count.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    let restarts = restart_each_node(&mut cluster, &acked_count).await;

    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    for writer in writers {
        let log = writer.await.expect("a writer task panicked");
        acked.extend(log.acked);
        failed.extend(log.failed);
    }
    let summary = format!(
        "{} writes acknowledged and {} failed in {:?}",
        acked.len(),
        failed.len(),
        started.elapsed()
    );
    eprintln!("rolling restart: {summary}");
    let failures = failed.join("\n");
    if let Err(e) = restarts {
        panic!("rolling restart: {e}\n(writer: {summary}; failures:\n{failures})");
    }
    assert!(
        failed.is_empty(),
        "writes failed during the rolling restart: {summary}:\n{failures}"
    );

    let read_opts = ReadOptions {
        r: Some(2),
        ..ReadOptions::default()
    };
    let acked = Arc::new(acked);
    let readers: Vec<_> = (0..READERS)
        .map(|t| {
            let (client, acked, opts) = (client.clone(), acked.clone(), read_opts.clone());
            tokio::spawn(async move {
                let mut wrong = Vec::new();
                for (key, value) in acked.iter().skip(t).step_by(READERS) {
                    match client.get(key.as_bytes(), &opts).await {
                        Ok(GetOutcome::Found { value: got, .. }) if got == value.as_bytes() => {}
                        // The client retries a write on another node after a transport
                        // error, so one write may land twice, as equal siblings.
                        Ok(GetOutcome::Siblings { values, .. })
                            if values.iter().all(|v| v == value.as_bytes()) => {}
                        other => wrong.push(format!("{key}: {other:?}")),
                    }
                }
                wrong
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for reader in readers {
        wrong.extend(reader.await.expect("a reader task panicked"));
    }
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged keys do not read back with r=2 after the rolling restart; \
         first ones:\n{}",
        wrong.len(),
        acked.len(),
        wrong
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The rolling restart itself: each node in turn gets SIGTERM, must exit cleanly and
/// show as `left` on every other node, stays away until [`AWAY_WRITES_MIN`] writes
/// were acknowledged without it, then restarts and must be `alive` on every node.
/// Returns the first step that failed, so the caller can still report the writes.
async fn restart_each_node(
    cluster: &mut TestCluster,
    acked_count: &AtomicUsize,
) -> Result<(), String> {
    /// Writes acknowledged while a node is shown `left` before it is restarted, so
    /// the writes really run against a cluster with a node away.
    const AWAY_WRITES_MIN: usize = 50;
    const AWAY_WITHIN: Duration = Duration::from_secs(10);

    let started = Instant::now();
    for i in 1..=cluster.nodes.len() {
        let id = format!("n{i}");
        let status = cluster
            .node(i)
            .terminate()
            .await
            .map_err(|e| format!("SIGTERM to {id}: {e:#}"))?;
        if !status.success() {
            return Err(format!("{id} should exit cleanly on SIGTERM, got {status}"));
        }
        let took = try_wait_state(
            &mut cluster.nodes,
            &id,
            "left",
            &["alive", "suspect", "down"],
            LEFT_WITHIN,
        )
        .await?;

        let away_since = acked_count.load(Ordering::Relaxed);
        let deadline = Instant::now() + AWAY_WITHIN;
        while acked_count.load(Ordering::Relaxed) - away_since < AWAY_WRITES_MIN {
            if Instant::now() >= deadline {
                return Err(format!(
                    "only {} writes were acknowledged in the {AWAY_WITHIN:?} while {id} \
                     was left: the writers stalled",
                    acked_count.load(Ordering::Relaxed) - away_since
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }

        cluster
            .node(i)
            .restart()
            .await
            .map_err(|e| format!("restarting {id}: {e:#}"))?;
        let back = try_wait_state(
            &mut cluster.nodes,
            &id,
            "alive",
            &["left", "down", "suspect", NOT_LISTED],
            ALIVE_WITHIN,
        )
        .await?;
        let count = cluster.nodes.len();
        cluster
            .wait_members_alive(count, ALIVE_WITHIN)
            .await
            .map_err(|e| format!("after restarting {id}: {e:#}"))?;
        eprintln!(
            "{id}: left everywhere {took:?} after SIGTERM, alive everywhere {back:?} after \
             its restart; done at {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_asks_another_replica_when_one_is_paused() {
    // A read at r=2 asks the local replica and one other; with that other frozen
    // (SIGSTOP, not yet reported down) it asks the third after a short wait instead
    // of timing out, and counts it in ringkv_speculative_reads_total.
    let mut cluster = start_cluster(3, (3, 2, 2)).await;
    let api = cluster.node(1).api();
    let keys: Vec<Vec<u8>> = (0..20).map(|i| format!("spec-{i}").into_bytes()).collect();
    for key in &keys {
        api.put_with(key, key.clone(), None, "w=3")
            .await
            .assert_status(204);
    }
    cluster.node(2).pause().unwrap();
    // Without the extra replica, each read whose second replica is n2 would wait out
    // its timeout and answer 504 (gossip takes seconds to call n2 down).
    for key in &keys {
        let get = api.get_with(key, "r=2&timeout_ms=2000").await;
        get.assert_status(200);
        assert_eq!(get.body[..], key[..], "{get}");
    }
    cluster.node(2).resume().unwrap();
    let speculative = api.metric("ringkv_speculative_reads_total").await;
    assert!(
        speculative >= 1.0,
        "no speculative read counted ({speculative}): every key's second replica was n3?"
    );
}

/// Each replica's record cache follows every write: once all three nodes have read
/// (and cached) a key, writes and a delete through each node in turn, acknowledged
/// by all three replicas (w=3), read back at once through every node at r=1 (its
/// own replica, so its own cache) as the new value, then as 404; and the nodes
/// report cache hits in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_follow_every_write_on_every_replica() {
    const HITS: &str = "ringkv_record_cache_hits_total";
    let cluster = start_cluster(3, (3, 2, 2)).await;
    let api = |i: usize| cluster.nodes[i - 1].api();
    let key: &[u8] = b"cached";
    api(1)
        .put_with(key, "v1", None, "w=3")
        .await
        .assert_status(204);

    let total_hits = async || {
        let mut sum = 0.0;
        for i in 1..=3 {
            sum += api(i).metric(HITS).await;
        }
        sum
    };
    let hits_before = total_hits().await;
    let mut context = String::new();
    for _ in 0..2 {
        for i in 1..=3 {
            let got = api(i).get_with(key, "r=1").await;
            got.assert_status(200);
            assert_eq!(got.text(), "v1", "n{i}");
            context = got.expect_context();
        }
    }
    let hits = total_hits().await;
    assert!(
        hits >= hits_before + 3.0,
        "the second read on each node is a cache hit: {hits_before} -> {hits}"
    );

    for round in 2..=6 {
        let writer = round % 3 + 1;
        let value = format!("v{round}");
        let put = api(writer)
            .put_with(key, value.clone(), Some(&context), "w=3")
            .await;
        put.assert_status(204);
        context = put.expect_context();
        for reader in 1..=3 {
            let got = api(reader).get_with(key, "r=1").await;
            got.assert_status(200);
            assert_eq!(
                got.text(),
                value,
                "round {round}: written through n{writer}, read through n{reader}'s own replica"
            );
        }
    }

    api(2)
        .delete_with(key, Some(&context), "w=3")
        .await
        .assert_status(204);
    for reader in 1..=3 {
        api(reader)
            .get_with(key, "r=1")
            .await
            .assert_error(404, "not_found");
    }
}
