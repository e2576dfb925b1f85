//! Proves sloppy quorum, hinted handoff and read repair
//! (docs/architecture.md#sloppy-quorum-and-hinted-handoff,
//! docs/architecture.md#read-repair) on real processes: with a home replica killed, a `w=3` write is acknowledged by a
//! stand-in outside the preference list and says so in `X-Ringkv-Hinted`; the
//! stand-in lists the hint in `/cluster`, keeps it across its own restart, and
//! hands the value to the owner once it returns, with no read of the key; with
//! `sloppy=false` no stand-in is used and the write is refused; with
//! `--hinted-handoff false`, reads alone (read repair) bring a returned replica up
//! to date. An ignored long test (`-- --ignored long_outage`) keeps a node down
//! through thousands of writes and reports foreground read latency during replay.
//!
//! Every wait has a deadline and fails naming which node saw what. Each test owns
//! its cluster, ports and directories, so the tests run in parallel.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use ringkv_client::wire::{ClusterBody, ReplicasBody};
use ringkv_tests::http::{empty, full};
use ringkv_tests::{Api, NodeOptions, NodeProcess, Response, TestCluster, b64};

/// Bound for a killed node to be reported `down` by every running node.
const DOWN_WITHIN: Duration = Duration::from_secs(15);
/// Bound for a restarted node to be `alive` on every running node; generous,
/// because the tests run in parallel on two cores.
const ALIVE_WITHIN: Duration = Duration::from_secs(20);
/// Acceptance bound for a returned owner to hold a hinted write, counted from the
/// moment its restart answered `/health`.
const HANDOFF_WITHIN: Duration = Duration::from_secs(15);
/// Acceptance bound for read repair to reach the stale replica after the reads.
const REPAIR_WITHIN: Duration = Duration::from_secs(5);
/// Bound for a stand-in's `/cluster` to count a hint it acknowledged (or kept
/// across a restart).
const HINT_LISTED_WITHIN: Duration = Duration::from_secs(5);
/// `timeout_ms` of requests expected to be refused.
const REFUSE_TIMEOUT_MS: u64 = 1000;
/// How often membership, hints and replicas are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How a member absent from a `/cluster` answer shows in messages.
const NOT_LISTED: &str = "(not listed)";
/// The read-repair counter of `GET /metrics`.
const READ_REPAIRS: &str = "ringkv_read_repairs_total";
/// Repairs skipped for capacity, shown when read repair falls short.
const READ_REPAIRS_SKIPPED: &str = "ringkv_read_repairs_skipped_total";

/// Starts nodes `n1..n{count}` (each joins every node started before it) with
/// `configure` applied to each node's options, and waits until all see all alive.
async fn start_cluster(
    count: usize,
    quorum: (usize, usize, usize),
    configure: impl Fn(NodeOptions) -> NodeOptions,
) -> TestCluster {
    TestCluster::start(count, quorum, configure)
        .await
        .unwrap_or_else(|e| panic!("starting a {count}-node cluster: {e:#}"))
}

/// The 1-based index of node id `n{i}`.
#[track_caller]
fn index(id: &str) -> usize {
    id.strip_prefix('n')
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("node id {id:?} is not n<i>"))
}

/// `GET /cluster` of one node, parsed; `Err` on no answer, another status or shape.
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
    view.members
        .iter()
        .find(|m| m.id == target)
        .map_or(NOT_LISTED, |m| m.state.as_str())
        .to_owned()
}

/// Hints `view` holds for `owner` (absent counts as 0).
fn pending_for(view: &ClusterBody, owner: &str) -> u64 {
    view.hints.pending.get(owner).copied().unwrap_or(0)
}

/// Polls `GET /cluster` on every running node until each shows `target` as `want`;
/// prints how long that took, or panics at `within` with every node's last answer.
async fn wait_state(cluster: &mut TestCluster, target: &str, want: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let mut lagging = Vec::new();
        for node in cluster.nodes.iter_mut() {
            if !node.is_running() {
                continue;
            }
            match try_cluster(&node.api()).await {
                Ok(view) => {
                    let state = state_of(&view, target);
                    if state != want {
                        lagging.push(format!("{} shows {target} as {state}", node.id()));
                    }
                }
                Err(e) => lagging.push(format!("{}: {e:#}", node.id())),
            }
        }
        if lagging.is_empty() {
            eprintln!(
                "{target} is {want} on every running node after {:?}",
                started.elapsed()
            );
            return;
        }
        assert!(
            started.elapsed() < within,
            "{target} was not {want:?} on every running node within {within:?}: {}",
            lagging.join("; ")
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Restarts `id` on its data dir, joining every node still running (so a node
/// started with no seeds rejoins too), and waits until every running node, the
/// restarted one included, shows it `alive`. Returns when the restarted process
/// first answered `/health`.
async fn restart_and_wait_alive(cluster: &mut TestCluster, id: &str) -> Instant {
    let seeds: Vec<SocketAddr> = cluster
        .nodes
        .iter_mut()
        .filter_map(|n| (n.id() != id && n.is_running()).then(|| n.cluster_addr()))
        .collect();
    let node = cluster.node(index(id));
    node.set_join(seeds);
    node.restart()
        .await
        .unwrap_or_else(|e| panic!("restarting {id}: {e:#}"));
    let ready = Instant::now();
    wait_state(cluster, id, "alive", ALIVE_WITHIN).await;
    ready
}

/// Kills `id` with SIGKILL and waits until every running node reports it `down`.
async fn kill_and_wait_down(cluster: &mut TestCluster, id: &str) {
    cluster
        .node(index(id))
        .kill9()
        .unwrap_or_else(|e| panic!("SIGKILL to {id}: {e:#}"));
    wait_state(cluster, id, "down", DOWN_WITHIN).await;
}

/// The ids named by `X-Ringkv-Acks`; panics if the header is missing.
#[track_caller]
fn acks(resp: &Response) -> Vec<String> {
    let header = resp
        .acks()
        .unwrap_or_else(|| panic!("write answer without X-Ringkv-Acks: {resp}"));
    header
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The `(owner, standin)` pairs of `X-Ringkv-Hinted` (`n3->n4,n2->n5`); panics
/// on a malformed entry.
#[track_caller]
fn hinted(resp: &Response) -> Vec<(String, String)> {
    let Some(header) = resp.hinted() else {
        return Vec::new();
    };
    header
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| match pair.split_once("->") {
            Some((owner, standin)) => (owner.trim().to_owned(), standin.trim().to_owned()),
            None => panic!("X-Ringkv-Hinted entry {pair:?} is not owner->standin: {resp}"),
        })
        .collect()
}

/// `Ok` if `body` shows `node` answering with exactly `value` (one live sibling),
/// else what it shows instead.
fn holds(body: &ReplicasBody, node: &str, value: &[u8]) -> Result<(), String> {
    let Some(entry) = body.replicas.iter().find(|r| r.node == node) else {
        return Err(format!("no replica entry for {node}"));
    };
    let want = vec![b64(value)];
    if entry.found == Some(true)
        && entry.tombstone != Some(true)
        && entry.siblings.as_ref() == Some(&want)
    {
        Ok(())
    } else {
        Err(format!("{node}'s entry is {entry:?}"))
    }
}

/// `GET /admin/replicas/{key}`, parsed; `Err` on no answer, another status or shape.
async fn try_replicas(api: &Api, key: &[u8]) -> anyhow::Result<ReplicasBody> {
    let path = format!("/admin/replicas/{}", ringkv_tests::encode_key(key));
    let resp = api.try_request(Method::GET, &path, &[], empty()).await?;
    if resp.status != 200 {
        anyhow::bail!("GET {path} answered {resp}");
    }
    serde_json::from_slice(&resp.body)
        .map_err(|e| anyhow::anyhow!("GET {path} body is not the documented JSON ({e}): {resp}"))
}

/// Polls `/admin/replicas/{key}` on `api` until `node` holds exactly `value`, up to
/// `deadline`; panics with the last answer.
async fn wait_holds(api: &Api, key: &[u8], node: &str, value: &[u8], deadline: Instant, why: &str) {
    loop {
        let last = match try_replicas(api, key).await {
            Ok(body) => match holds(&body, node, value) {
                Ok(()) => return,
                Err(e) => format!("{e}; whole answer: {body:?}"),
            },
            Err(e) => format!("{e:#}"),
        };
        assert!(
            Instant::now() < deadline,
            "{why}: {node} does not hold {:?} under key {:?} by the deadline; last \
             /admin/replicas answer from {}: {last}",
            String::from_utf8_lossy(value),
            String::from_utf8_lossy(key),
            api.base()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `/cluster` of `node` until it counts at least one hint for `owner`;
/// returns the count, or panics at `within` with the last answer.
async fn wait_hint_listed(node: &NodeProcess, owner: &str, within: Duration, why: &str) -> u64 {
    let started = Instant::now();
    loop {
        let last = match try_cluster(&node.api()).await {
            Ok(view) if pending_for(&view, owner) >= 1 => return pending_for(&view, owner),
            Ok(view) => format!("hints {:?}", view.hints.pending),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            started.elapsed() < within,
            "{why}: {}'s /cluster does not count a pending hint for {owner} within \
             {within:?}; last: {last}",
            node.id()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Hints pending for `owner` on every running node, by node id; `Err` names a node
/// whose `/cluster` did not answer.
async fn pending_everywhere(
    cluster: &mut TestCluster,
    owner: &str,
) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    for node in cluster.nodes.iter_mut() {
        if !node.is_running() {
            continue;
        }
        let view = try_cluster(&node.api())
            .await
            .map_err(|e| format!("{}: {e:#}", node.id()))?;
        out.insert(node.id().to_owned(), pending_for(&view, owner));
    }
    Ok(out)
}

/// Polls until no running node counts a pending hint for `owner`, up to `deadline`;
/// panics with the last counts.
async fn wait_hints_drained(cluster: &mut TestCluster, owner: &str, deadline: Instant) {
    loop {
        let last = match pending_everywhere(cluster, owner).await {
            Ok(counts) if counts.values().all(|&c| c == 0) => return,
            Ok(counts) => format!("{counts:?}"),
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "hints for {owner} are still pending by the deadline; last counts per node: {last}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What [`hinted_write`] set up: a key written with `w=3` while one home replica
/// was down, so a stand-in took its copy as a hint.
struct HintedWrite {
    key: Vec<u8>,
    value: Vec<u8>,
    /// The key's preference list.
    home: Vec<String>,
    /// The home replica that was killed: the hint's owner.
    owner: String,
    /// The live home replica that coordinated the write.
    coordinator: String,
    /// The node outside the preference list that acknowledged in the owner's place.
    standin: String,
}

/// Kills one home replica of `key` (not n1, which has no seeds of its own), waits
/// until every running node reports it `down`, PUTs with `w=3` through another home
/// replica, and checks the answer: 204, three acks without the owner, and
/// `X-Ringkv-Hinted: owner->standin` with a stand-in outside the preference list
/// that then counts the hint in its `/cluster`.
async fn hinted_write(cluster: &mut TestCluster, key: &[u8], value: &[u8]) -> HintedWrite {
    let body = cluster.node(1).api().replicas(key).await;
    let home = body.preference_list.clone();
    let mut distinct = home.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        (home.len(), distinct.len()),
        (3, 3),
        "the preference list should hold 3 distinct nodes: {body:?}"
    );
    let owner = home
        .iter()
        .find(|id| *id != "n1")
        .expect("3 distinct ids include one besides n1")
        .clone();
    let coordinator = home
        .iter()
        .find(|id| **id != owner)
        .expect("another home replica")
        .clone();
    eprintln!(
        "key {:?}: preference list {home:?}; killing {owner}, writing through {coordinator}",
        String::from_utf8_lossy(key)
    );

    kill_and_wait_down(cluster, &owner).await;

    let put = cluster
        .node(index(&coordinator))
        .api()
        .put_with(key, value.to_vec(), None, "w=3")
        .await;
    put.assert_status(204);
    let pairs = hinted(&put);
    let standin = match pairs.iter().find(|(o, _)| *o == owner) {
        Some((_, standin)) => standin.clone(),
        None => panic!(
            "a w=3 PUT with home replica {owner} down should name {owner}->standin in \
             X-Ringkv-Hinted: {put}"
        ),
    };
    assert!(
        !home.contains(&standin),
        "the stand-in {standin} for {owner} should be outside the preference list {home:?}: {put}"
    );
    assert!(
        (1..=cluster.nodes.len()).any(|i| format!("n{i}") == standin),
        "the stand-in {standin:?} is not a member of the cluster: {put}"
    );
    let acked = acks(&put);
    assert!(
        acked.len() == 3 && acked.contains(&standin) && !acked.contains(&owner),
        "a w=3 write with {owner} down should be acknowledged by 3 nodes, the stand-in \
         {standin} among them and not {owner}; acks {acked:?}: {put}"
    );

    let count = wait_hint_listed(
        cluster.node(index(&standin)),
        &owner,
        HINT_LISTED_WITHIN,
        "after the hinted write",
    )
    .await;
    eprintln!("{standin} took the write for {owner}; its /cluster counts {count} hint(s)");
    HintedWrite {
        key: key.to_vec(),
        value: value.to_vec(),
        home,
        owner,
        coordinator,
        standin,
    }
}

/// With a home replica killed, a `w=3` PUT is acknowledged by a stand-in outside the
/// preference list (`X-Ringkv-Hinted: owner->standin`, counted in the stand-in's
/// `hints.pending`), and once the owner restarts it holds the value within 15 s
/// with no read of the key, while every node's pending hints for it return to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hinted_write_is_handed_back_to_the_returning_owner_without_reads() {
    let mut cluster = start_cluster(5, (3, 2, 2), |o| o).await;
    let w = hinted_write(
        &mut cluster,
        b"handed-back",
        b"written while the owner was down",
    )
    .await;

    let restarted = restart_and_wait_alive(&mut cluster, &w.owner).await;
    let deadline = restarted + HANDOFF_WITHIN;
    let observer = cluster.node(index(&w.coordinator)).api();
    wait_holds(
        &observer,
        &w.key,
        &w.owner,
        &w.value,
        deadline,
        "hinted handoff after the owner's restart",
    )
    .await;
    let delivered = restarted.elapsed();
    wait_hints_drained(&mut cluster, &w.owner, deadline).await;
    eprintln!(
        "{} handed the value to {} {delivered:?} after its restart; hints drained after {:?}",
        w.standin,
        w.owner,
        restarted.elapsed()
    );

    // The owner's own view agrees, and every home replica now holds the write.
    let body = cluster.node(index(&w.owner)).api().replicas(&w.key).await;
    for id in &w.home {
        holds(&body, id, &w.value).unwrap_or_else(|e| {
            panic!("after handoff, the owner's /admin/replicas should show every home replica holding the value: {e}; {body:?}")
        });
    }
}

/// A hint survives a graceful restart of its stand-in while the owner is still
/// down: the restarted stand-in still counts it in `/cluster`, and hands the value
/// to the owner within 15 s of the owner's return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_survive_a_restart_of_the_stand_in() {
    let mut cluster = start_cluster(5, (3, 2, 2), |o| o).await;
    let w = hinted_write(
        &mut cluster,
        b"kept-across-restart",
        b"hinted, then restarted",
    )
    .await;

    let standin = cluster.node(index(&w.standin));
    let status = standin
        .terminate()
        .await
        .unwrap_or_else(|e| panic!("SIGTERM to the stand-in {}: {e:#}", w.standin));
    assert!(
        status.success(),
        "the stand-in {} should exit cleanly on SIGTERM, got {status}",
        w.standin
    );
    restart_and_wait_alive(&mut cluster, &w.standin).await;
    let count = wait_hint_listed(
        cluster.node(index(&w.standin)),
        &w.owner,
        HINT_LISTED_WITHIN,
        "after the stand-in's restart, with the owner still down",
    )
    .await;
    eprintln!(
        "{} still counts {count} hint(s) for {} after its restart",
        w.standin, w.owner
    );

    let restarted = restart_and_wait_alive(&mut cluster, &w.owner).await;
    let deadline = restarted + HANDOFF_WITHIN;
    let observer = cluster.node(index(&w.coordinator)).api();
    wait_holds(
        &observer,
        &w.key,
        &w.owner,
        &w.value,
        deadline,
        "hinted handoff from a restarted stand-in",
    )
    .await;
    wait_hints_drained(&mut cluster, &w.owner, deadline).await;
    eprintln!(
        "the restarted stand-in {} handed the value to {} within {:?} of its return",
        w.standin,
        w.owner,
        restarted.elapsed()
    );
}

/// With `--hinted-handoff false`, a replica that was down through 100 writes does
/// not hold them when it returns, and one `r=3` read of each key through another
/// node makes it hold all 100 within 5 s (read repair, counted in
/// `ringkv_read_repairs_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_alone_brings_a_returned_replica_up_to_date() {
    const KEYS: usize = 100;
    let key = |i: usize| format!("repaired-{i:03}").into_bytes();
    let value = |i: usize| format!("value of key {i}, written while n3 was down").into_bytes();

    // Anti-entropy off: reads alone must do it (anti-entropy has its own tests).
    let mut cluster = start_cluster(3, (3, 2, 2), |o| {
        o.flag("--hinted-handoff", "false")
            .flag("--anti-entropy-interval", "off")
    })
    .await;
    kill_and_wait_down(&mut cluster, "n3").await;
    let live = [cluster.node(1).api(), cluster.node(2).api()];
    for i in 0..KEYS {
        let put = live[i % 2].put_with(&key(i), value(i), None, "w=2").await;
        put.assert_status(204);
        assert!(
            hinted(&put).is_empty(),
            "--hinted-handoff false: no write may use a stand-in: {put}"
        );
    }

    restart_and_wait_alive(&mut cluster, "n3").await;
    cluster
        .wait_members_alive(3, ALIVE_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("after restarting n3: {e:#}"));

    let api3 = cluster.node(3).api();
    let mut held_early = Vec::new();
    for i in 0..KEYS {
        let body = api3.replicas(&key(i)).await;
        let entry = body.replicas.iter().find(|r| r.node == "n3");
        match entry {
            Some(e) if e.found == Some(false) => {}
            _ => held_early.push(format!("key {i}: {entry:?}")),
        }
    }
    assert!(
        held_early.is_empty(),
        "before any read, the restarted n3 should answer not-found for the {KEYS} keys \
         written while it was down (with hints off, nothing else brings them); {} do not:\n{}",
        held_early.len(),
        held_early.join("\n")
    );

    let repairs_before = [
        live[0].metric(READ_REPAIRS).await,
        live[1].metric(READ_REPAIRS).await,
    ];
    for i in 0..KEYS {
        let get = live[i % 2].get_with(&key(i), "r=3").await;
        get.assert_status(200);
        assert_eq!(
            get.body[..],
            value(i)[..],
            "GET r=3 of key {i} through n{}: {get}",
            i % 2 + 1
        );
    }
    let reads_done = Instant::now();
    let deadline = reads_done + REPAIR_WITHIN;

    let mut missing: Vec<usize> = (0..KEYS).collect();
    loop {
        let mut still = Vec::new();
        let mut last = String::new();
        for &i in &missing {
            let body = api3.replicas(&key(i)).await;
            if let Err(e) = holds(&body, "n3", &value(i)) {
                last = e;
                still.push(i);
            }
        }
        missing = still;
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let mut skipped = Vec::new();
            for api in &live {
                skipped.push(api.metric(READ_REPAIRS_SKIPPED).await);
            }
            panic!(
                "{REPAIR_WITHIN:?} after one r=3 read of each key, n3 still lacks {} of {KEYS} \
                 values (keys {missing:?}); e.g. {last}; {READ_REPAIRS_SKIPPED} on n1, n2: \
                 {skipped:?}",
                missing.len()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    eprintln!(
        "read repair brought all {KEYS} values to n3 within {:?} of the last read",
        reads_done.elapsed()
    );

    let repairs_after = [
        live[0].metric(READ_REPAIRS).await,
        live[1].metric(READ_REPAIRS).await,
    ];
    let sent = (repairs_after[0] + repairs_after[1]) - (repairs_before[0] + repairs_before[1]);
    assert!(
        sent > 0.0,
        "{READ_REPAIRS} on the coordinators n1, n2 should grow with the reads: before \
         {repairs_before:?}, after {repairs_after:?}"
    );
    eprintln!("{READ_REPAIRS} on n1, n2: {repairs_before:?} -> {repairs_after:?}");
}

/// With a home replica down and a stand-in available, a PUT with
/// `w=3&sloppy=false` answers 503 or 504 (JSON error) without `X-Ringkv-Hinted`
/// and leaves no hint, while the same PUT without `sloppy=false` is taken by the
/// stand-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sloppy_false_refuses_instead_of_using_a_stand_in() {
    let mut cluster = start_cluster(4, (3, 2, 2), |o| o).await;
    let key: &[u8] = b"home-replicas-only";
    let home = cluster.node(1).api().replicas(key).await.preference_list;
    let owner = home
        .iter()
        .find(|id| *id != "n1")
        .expect("3 distinct ids include one besides n1")
        .clone();
    let coordinator = home
        .iter()
        .find(|id| **id != owner)
        .expect("another home replica")
        .clone();
    kill_and_wait_down(&mut cluster, &owner).await;
    let api = cluster.node(index(&coordinator)).api();

    let put = api
        .put_with(
            key,
            "needs three home replicas",
            None,
            &format!("w=3&sloppy=false&timeout_ms={REFUSE_TIMEOUT_MS}"),
        )
        .await;
    let what = format!("PUT w=3&sloppy=false through {coordinator} with {owner} down");
    assert!(
        put.status == 503 || put.status == 504,
        "{what} should answer 503 or 504: {put}"
    );
    let body = put.assert_error_status(put.status);
    let code = if put.status == 503 {
        "insufficient_replicas"
    } else {
        "timeout"
    };
    assert_eq!(body["error"], code, "{what}: {put}");
    assert_eq!(body["required"], 3, "{what}: `required` should be 3: {put}");
    assert!(
        put.hinted().is_none(),
        "{what} must not use a stand-in, yet names one: {put}"
    );
    let pending = pending_everywhere(&mut cluster, &owner)
        .await
        .unwrap_or_else(|e| panic!("reading /cluster: {e}"));
    assert!(
        pending.values().all(|&c| c == 0),
        "{what} must leave no hint for {owner}; pending per node: {pending:?}"
    );

    // Control: the stand-in was there to be used.
    let put = api.put_with(key, "sloppy is fine", None, "w=3").await;
    put.assert_status(204);
    assert!(
        hinted(&put)
            .iter()
            .any(|(o, s)| *o == owner && !home.contains(s)),
        "the same PUT without sloppy=false should be taken by a stand-in for {owner}: {put}"
    );
}

/// A number from env var `name`, or `default`; panics on a malformed value.
fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text:?} is not a whole number: {e}")),
        Err(_) => default,
    }
}

/// One foreground read: when it started (since the test's epoch), how long it
/// took, and whether it answered 200.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    took: Duration,
    ok: bool,
}

/// GETs `keys` keys in turn with `r=2` through `api`, one at a time, until `stop`.
async fn read_until_stopped(
    api: Api,
    key_of: fn(usize) -> Vec<u8>,
    keys: usize,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let path = Api::kv_path(&key_of(i % keys), "r=2");
        let started = Instant::now();
        let ok = matches!(
            api.try_request(Method::GET, &path, &[], empty()).await,
            Ok(resp) if resp.status == 200
        );
        samples.push(Sample {
            at: started - epoch,
            took: started.elapsed(),
            ok,
        });
        i += 1;
    }
    samples
}

/// p50 and p99 (ms) and count of the reads that started within `[from, to)`.
fn latency_summary(samples: &[Sample], from: Duration, to: Duration) -> String {
    let mut took: Vec<Duration> = samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .map(|s| s.took)
        .collect();
    let failed = samples
        .iter()
        .filter(|s| s.at >= from && s.at < to && !s.ok)
        .count();
    if took.is_empty() {
        return "no reads".to_owned();
    }
    took.sort();
    let pct = |p: f64| {
        let rank = ((p * took.len() as f64).ceil() as usize).clamp(1, took.len());
        took[rank - 1].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:.2} ms, p99 {:.2} ms over {} reads ({failed} not 200)",
        pct(0.50),
        pct(0.99),
        took.len()
    )
}

/// A long outage: with 5 nodes (n=3, r=2, w=2), n5 stays down for `RINGKV_OUTAGE_S`
/// seconds (default 60) while `RINGKV_OUTAGE_WRITES` writes (default 10,000) with
/// w=2 all succeed; after its return every write reaches n5 and every other home
/// replica (a spot check of up to 500 keys) and no hint stays pending. Prints p50 and
/// p99 of foreground reads before the outage and during the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with `-- --ignored long_outage`"]
async fn long_outage_hands_off_every_write() {
    const BASELINE: Duration = Duration::from_secs(10);
    const FOREGROUND_KEYS: usize = 500;
    const WRITERS: usize = 8;
    const SAMPLE_MAX: usize = 500;
    const OWNER: &str = "n5";
    let outage = Duration::from_secs(env_or("RINGKV_OUTAGE_S", 60));
    let writes = env_or("RINGKV_OUTAGE_WRITES", 10_000) as usize;
    let replay_within = Duration::from_secs(env_or("RINGKV_REPLAY_WITHIN_S", 300));
    assert!(writes > 0, "RINGKV_OUTAGE_WRITES must be at least 1");
    eprintln!(
        "long outage: {OWNER} down for {outage:?} during {writes} writes; replay bound \
         {replay_within:?} (RINGKV_OUTAGE_S, RINGKV_OUTAGE_WRITES, RINGKV_REPLAY_WITHIN_S)"
    );
    fn foreground_key(i: usize) -> Vec<u8> {
        format!("foreground-{i:04}").into_bytes()
    }
    let outage_key = |i: usize| format!("outage-{i:06}").into_bytes();
    let outage_value = |i: usize| format!("written during the outage, #{i}").into_bytes();

    let mut cluster = start_cluster(5, (3, 2, 2), |o| o).await;
    let apis: Vec<Api> = (1..=4).map(|i| cluster.node(i).api()).collect();
    for i in 0..FOREGROUND_KEYS {
        apis[i % 4]
            .put_with(&foreground_key(i), "foreground", None, "w=3")
            .await
            .assert_status(204);
    }

    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_until_stopped(
        apis[0].clone(),
        foreground_key,
        FOREGROUND_KEYS,
        epoch,
        stop.clone(),
    ));
    tokio::time::sleep(BASELINE).await;
    let outage_start = epoch.elapsed();
    kill_and_wait_down(&mut cluster, OWNER).await;

    // Writes i is due at `i / writes` of the outage, so they spread over all of it.
    let next = Arc::new(AtomicUsize::new(0));
    let writes_start = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (apis, next) = (apis.clone(), next.clone());
            tokio::spawn(async move {
                let mut failed = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= writes {
                        break failed;
                    }
                    let due = writes_start + outage.mul_f64(i as f64 / writes as f64);
                    tokio::time::sleep_until(due.into()).await;
                    let path = Api::kv_path(&outage_key(i), "w=2");
                    let api = &apis[i % apis.len()];
                    match api
                        .try_request(Method::PUT, &path, &[], full(outage_value(i)))
                        .await
                    {
                        Ok(resp) if resp.status == 204 => {}
                        Ok(resp) => failed.push(format!("write {i}: {resp}")),
                        Err(e) => failed.push(format!("write {i}: {e:#}")),
                    }
                }
            })
        })
        .collect();
    let mut failed = Vec::new();
    for task in tasks {
        failed.extend(task.await.expect("a writer task panicked"));
    }
    let writing_took = writes_start.elapsed();
    eprintln!(
        "{writes} writes done in {writing_took:?}, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "with only {OWNER} down, every w=2 write should succeed; {} of {writes} failed, \
         first ones:\n{}",
        failed.len(),
        failed
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    if let Some(rest) = outage.checked_sub(writing_took) {
        tokio::time::sleep(rest).await;
    }
    let before_return = pending_everywhere(&mut cluster, OWNER)
        .await
        .unwrap_or_else(|e| panic!("reading /cluster: {e}"));
    let hints_total: u64 = before_return.values().sum();
    eprintln!("hints pending for {OWNER} before its return: {before_return:?}");
    assert!(
        hints_total > 0,
        "with {OWNER} down through {writes} writes, stand-ins should hold hints for it: \
         {before_return:?}"
    );

    let replay_start = epoch.elapsed();
    restart_and_wait_alive(&mut cluster, OWNER).await;
    let replay_deadline = Instant::now() + replay_within;
    wait_hints_drained(&mut cluster, OWNER, replay_deadline).await;
    let replay_end = epoch.elapsed();
    stop.store(true, Ordering::Relaxed);
    let samples = reader.await.expect("the reader task panicked");

    // Spot check: every sampled key is held by each of its home replicas.
    let step = writes.div_ceil(SAMPLE_MAX).max(1);
    let sampled: Vec<usize> = (0..writes).step_by(step).collect();
    let observer = &apis[1];
    let check_deadline = Instant::now() + REPAIR_WITHIN;
    let mut wrong: Vec<usize> = sampled.clone();
    let mut owner_keys = 0;
    let mut last = Vec::new();
    loop {
        let mut still = Vec::new();
        last.clear();
        for &i in &wrong {
            let body = observer.replicas(&outage_key(i)).await;
            let problems: Vec<String> = body
                .preference_list
                .iter()
                .filter_map(|id| holds(&body, id, &outage_value(i)).err())
                .collect();
            if body.preference_list.iter().any(|id| id == OWNER) && problems.is_empty() {
                owner_keys += 1;
            }
            if !problems.is_empty() {
                still.push(i);
                last.push(format!("key {i}: {}", problems.join("; ")));
            }
        }
        wrong = still;
        if wrong.is_empty() || Instant::now() >= check_deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    assert!(
        wrong.is_empty(),
        "after the replay, {} of {} sampled keys are not held by all their home replicas \
         (the returned {OWNER} above all); first ones:\n{}",
        wrong.len(),
        sampled.len(),
        last.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(
        owner_keys > 0,
        "none of the {} sampled keys has {OWNER} in its preference list: the check \
         proves nothing",
        sampled.len()
    );

    eprintln!(
        "\n==== long outage: {OWNER} down {:?}, {writes} writes in {writing_took:?}, {hints_total} \
         hints pending at its return, replay took {:?}; {} sampled keys verified ({owner_keys} \
         on {OWNER})\n  foreground GET r=2 before the outage: {}\n  foreground GET r=2 \
         during the replay: {}\n",
        replay_start - outage_start,
        replay_end - replay_start,
        sampled.len(),
        latency_summary(
            &samples,
            outage_start.saturating_sub(BASELINE),
            outage_start
        ),
        latency_summary(&samples, replay_start, replay_end),
    );
}

/// A write that lands on a node outside the key's preference list succeeds at w=2
/// with two of its three home replicas down: the forwarder needs only one live home
/// replica to coordinate, which makes up W with a stand-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_write_uses_stand_ins_when_most_home_replicas_are_down() {
    let mut cluster = start_cluster(5, (3, 2, 2), |o| o).await;
    let api = cluster.node(1).api();
    let mut found = None;
    for i in 0..200 {
        let key = format!("forwarded-{i}").into_bytes();
        let home = api.replicas(&key).await.preference_list;
        if !home.iter().any(|id| id == "n1") {
            found = Some((key, home));
            break;
        }
    }
    let (key, home) = found.expect("some key among 200 has a preference list without n1");
    for owner in &home[1..] {
        kill_and_wait_down(&mut cluster, owner).await;
    }
    let put = cluster
        .node(1)
        .api()
        .put_with(&key, "two of three down", None, "w=2")
        .await;
    let what = format!(
        "PUT w=2 through n1 (not home) with {} and {} of {home:?} down",
        home[1], home[2]
    );
    assert_eq!(
        put.status, 204,
        "{what} should succeed through a stand-in: {put}"
    );
    let stand_ins = hinted(&put);
    assert!(
        !stand_ins.is_empty(),
        "{what} answered without X-Ringkv-Hinted: {put}"
    );
    for (owner, standin) in &stand_ins {
        assert!(
            home[1..].contains(owner),
            "{what}: hint for {owner}, which is not a down home replica"
        );
        assert!(
            !home.contains(standin),
            "{what}: stand-in {standin} is a home replica"
        );
    }
}
