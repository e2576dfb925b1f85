//! Membership changes on real processes: nodes join, one leaves, one dies and is
//! removed, under a continuous read/write load; transfers survive `kill -9` of either
//! side. Every acknowledged write stays readable throughout and ends on its key's
//! current home replicas.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use ringkv_client::wire::{ClusterBody, ReplicasBody};
use ringkv_tests::harness::{NodeOptions, NodeProcess, TestCluster};
use ringkv_tests::http::Api;

const QUORUM: (usize, usize, usize) = (3, 2, 2);
/// How long a membership change may take to settle here.
const SETTLE_WITHIN: Duration = Duration::from_secs(120);

fn options(o: NodeOptions) -> NodeOptions {
    o.flag("--anti-entropy-interval", "2s")
}

/// Writes `count` keys `key{i}` = `v{i}` at w=2 through the given nodes.
async fn preload(apis: &[Api], count: usize) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16 {
        let (api, next) = (apis[t % apis.len()].clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let key = format!("key{i}");
                let resp = api
                    .try_request(
                        http::Method::PUT,
                        &Api::kv_path(key.as_bytes(), "w=2"),
                        &[],
                        ringkv_tests::http::full(format!("v{i}")),
                    )
                    .await?;
                ensure!(resp.status == 204, "preloading {key}: {resp}");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// What the load saw.
#[derive(Debug, Default)]
struct LoadReport {
    writes_acked: u64,
    /// Writes whose outcome is unknown (no answer, a timeout): they may or may not
    /// have landed, as the faults allow.
    writes_unknown: u64,
    /// Writes refused outright (an error status other than a timeout).
    writes_refused: Vec<String>,
    reads: u64,
    read_errors: Vec<String>,
    /// Reads that missed an acknowledged write: the property under test.
    stale_reads: Vec<String>,
    /// The last acknowledged version per load key.
    acked: BTreeMap<String, u64>,
}

/// A continuous read/write load over `keys` keys of its own, sent to the nodes in
/// `targets` (which the test changes as nodes come and go): each write carries the
/// context of the last one, and each write is read back at r=2.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<LoadReport>>,
}

impl Load {
    fn start(targets: Arc<Mutex<Vec<Api>>>, workers: usize, keys_per_worker: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|w| {
                let (targets, stop) = (targets.clone(), stop.clone());
                tokio::spawn(async move { load_worker(w, keys_per_worker, targets, stop).await })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for task in self.tasks {
            let r = task.await.expect("a load worker panicked");
            total.writes_acked += r.writes_acked;
            total.writes_unknown += r.writes_unknown;
            total.writes_refused.extend(r.writes_refused);
            total.reads += r.reads;
            total.read_errors.extend(r.read_errors);
            total.stale_reads.extend(r.stale_reads);
            total.acked.extend(r.acked);
        }
        total
    }
}

/// The highest version among the values a read returned (values are `u<version>`).
fn max_version(resp: &ringkv_tests::http::Response) -> Option<u64> {
    let parse = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()?
            .strip_prefix('u')?
            .parse::<u64>()
            .ok()
    };
    match resp.status {
        200 => parse(&resp.body),
        300 => {
            let body: ringkv_client::wire::SiblingsBody =
                serde_json::from_slice(&resp.body).ok()?;
            body.siblings
                .iter()
                .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .filter_map(|v| parse(&v))
                .max()
        }
        _ => None,
    }
}

async fn load_worker(
    worker: usize,
    keys: usize,
    targets: Arc<Mutex<Vec<Api>>>,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let mut report = LoadReport::default();
    let mut contexts: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut version = 0u64;
    let mut turn = worker;
    while !stop.load(Ordering::Relaxed) {
        turn += 1;
        let key = format!("load{worker}-{}", turn % keys);
        let api = {
            let t = targets.lock().unwrap();
            t[turn % t.len()].clone()
        };
        version += 1;
        let context = contexts.get(&key).cloned().flatten();
        let headers: Vec<(&str, &str)> = context
            .as_deref()
            .map(|c| vec![("x-ringkv-context", c)])
            .unwrap_or_default();
        let put = api
            .try_request(
                http::Method::PUT,
                &Api::kv_path(key.as_bytes(), "w=2"),
                &headers,
                ringkv_tests::http::full(format!("u{version}")),
            )
            .await;
        match put {
            Ok(resp) if resp.status == 204 => {
                report.writes_acked += 1;
                report.acked.insert(key.clone(), version);
                contexts.insert(key.clone(), resp.context());
            }
            Ok(resp) if resp.status == 504 => report.writes_unknown += 1,
            Ok(resp) => report
                .writes_refused
                .push(format!("{key} via {}: {resp}", api.base())),
            Err(_) => report.writes_unknown += 1,
        }
        let Some(&acked) = report.acked.get(&key) else {
            continue;
        };
        match api
            .try_request(
                http::Method::GET,
                &Api::kv_path(key.as_bytes(), "r=2"),
                &[],
                ringkv_tests::http::empty(),
            )
            .await
        {
            Ok(resp) if matches!(resp.status, 200 | 300 | 404) => {
                report.reads += 1;
                if max_version(&resp).is_none_or(|v| v < acked) {
                    report.stale_reads.push(format!(
                        "{key} via {}: acked u{acked}, read {resp}",
                        api.base()
                    ));
                }
            }
            Ok(resp) => report
                .read_errors
                .push(format!("{key} via {}: {resp}", api.base())),
            Err(e) => report
                .read_errors
                .push(format!("{key} via {}: {e:#}", api.base())),
        }
    }
    report
}

/// Every `(key, value)` must be on each of its key's home replicas, none of which may
/// be in `departed`; retried until `within`, since anti-entropy may still be copying.
async fn check_on_home_replicas(
    api: &Api,
    expected: &[(String, String)],
    departed: &[&str],
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let mut left: Vec<(String, String)> = expected.to_vec();
    loop {
        let mut wrong = Vec::new();
        for chunk in left.chunks(64) {
            let mut checks = tokio::task::JoinSet::new();
            for (key, value) in chunk.iter().cloned() {
                let api = api.clone();
                let departed: Vec<String> = departed.iter().map(|d| d.to_string()).collect();
                checks.spawn(async move {
                    let path = format!(
                        "/admin/replicas/{}",
                        ringkv_tests::http::encode_key(key.as_bytes())
                    );
                    let resp = api
                        .try_request(http::Method::GET, &path, &[], ringkv_tests::http::empty())
                        .await;
                    let problem = match resp {
                        Ok(resp) if resp.status == 200 => {
                            let body: ReplicasBody = serde_json::from_slice(&resp.body).unwrap();
                            replica_problem(&body, &value, &departed)
                        }
                        Ok(resp) => Some(format!("answered {resp}")),
                        Err(e) => Some(format!("{e:#}")),
                    };
                    problem.map(|p| ((key, value), p))
                });
            }
            wrong.extend(checks.join_all().await.into_iter().flatten());
        }
        if wrong.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let sample: Vec<String> = wrong
                .iter()
                .take(5)
                .map(|((k, _), p)| format!("{k}: {p}"))
                .collect();
            bail!(
                "{} keys not on their home replicas, e.g. {}",
                wrong.len(),
                sample.join("; ")
            );
        }
        left = wrong.into_iter().map(|(kv, _)| kv).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn replica_problem(body: &ReplicasBody, value: &str, departed: &[String]) -> Option<String> {
    if body.preference_list.len() != 3 {
        return Some(format!("preference list {:?}", body.preference_list));
    }
    if let Some(d) = body.preference_list.iter().find(|id| departed.contains(id)) {
        return Some(format!("{d} is still a home replica"));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    for r in &body.replicas {
        let holds = r.siblings.as_ref().is_some_and(|s| s.contains(&encoded));
        if !holds {
            return Some(format!(
                "{} lacks it ({:?})",
                r.node,
                r.error.as_deref().unwrap_or("")
            ));
        }
    }
    None
}

async fn cluster_of(api: &Api) -> anyhow::Result<ClusterBody> {
    let resp = api
        .try_request(
            http::Method::GET,
            "/cluster",
            &[],
            ringkv_tests::http::empty(),
        )
        .await?;
    Ok(serde_json::from_slice(&resp.body)?)
}

/// Starts a node that joins the running nodes of `cluster`.
async fn join(
    cluster: &mut TestCluster,
    id: &str,
    configure: impl Fn(NodeOptions) -> NodeOptions,
) -> anyhow::Result<()> {
    let seeds: Vec<_> = cluster
        .nodes
        .iter_mut()
        .filter_map(|n| n.is_running().then(|| n.cluster_addr()))
        .collect();
    let (n, r, w) = QUORUM;
    let node = NodeProcess::start(configure(options(
        NodeOptions::new(id).quorum(n, r, w).join(seeds),
    )))
    .await?;
    cluster.nodes.push(node);
    Ok(())
}

fn api_of(cluster: &mut TestCluster, id: &str) -> Api {
    cluster
        .nodes
        .iter()
        .find(|n| n.id() == id)
        .expect("a node of the test")
        .api()
}

fn running_apis(cluster: &mut TestCluster) -> Vec<Api> {
    cluster
        .nodes
        .iter_mut()
        .filter_map(|n| n.is_running().then(|| n.api()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_a_leave_and_a_removal_under_load_lose_no_acknowledged_write() -> anyhow::Result<()> {
    // 3 nodes with 20,000 keys; 2 join, n1 leaves, n2 is killed and removed, while a
    // load writes and reads back at w=2/r=2: no read misses an acknowledged write, and
    // every key ends on 3 current home replicas.
    const KEYS: usize = 20_000;
    let mut cluster = TestCluster::start(3, QUORUM, options).await?;
    let apis = running_apis(&mut cluster);
    preload(&apis, KEYS).await?;

    let targets = Arc::new(Mutex::new(apis.clone()));
    let load = Load::start(targets.clone(), 4, 50);
    tokio::time::sleep(Duration::from_secs(1)).await;

    join(&mut cluster, "n4", |o| o).await?;
    join(&mut cluster, "n5", |o| o).await?;
    cluster.wait_members_alive(5, SETTLE_WITHIN).await?;
    cluster.wait_ring(5, SETTLE_WITHIN).await?;
    *targets.lock().unwrap() = running_apis(&mut cluster);
    eprintln!("n4 and n5 joined");

    // n1 leaves; clients stop using it first, as an operator's load balancer would.
    *targets.lock().unwrap() = ["n2", "n3", "n4", "n5"]
        .iter()
        .map(|id| api_of(&mut cluster, id))
        .collect();
    let leave = api_of(&mut cluster, "n1")
        .try_request(
            http::Method::POST,
            "/admin/leave",
            &[],
            ringkv_tests::http::empty(),
        )
        .await?;
    ensure!(leave.status == 202, "leave answered {leave}");
    ensure!(leave.text().contains(r#""ring":"leaving""#), "{leave}");
    let exited = cluster.node(1).wait_exit(SETTLE_WITHIN).await?;
    ensure!(exited.success(), "n1 exited with {exited}");
    cluster.wait_ring(4, SETTLE_WITHIN).await?;
    eprintln!("n1 left");

    // n2 dies for good; it is removed through n3.
    *targets.lock().unwrap() = ["n3", "n4", "n5"]
        .iter()
        .map(|id| api_of(&mut cluster, id))
        .collect();
    cluster.node(2).kill9()?;
    let n3 = api_of(&mut cluster, "n3");
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let resp = n3
            .try_request(
                http::Method::POST,
                "/admin/remove/n2",
                &[],
                ringkv_tests::http::empty(),
            )
            .await?;
        if resp.status == 202 {
            ensure!(resp.text().contains(r#""ring":"removed""#), "{resp}");
            break;
        }
        ensure!(resp.status == 409, "remove answered {resp}");
        ensure!(Instant::now() < deadline, "n2 never went down: {resp}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cluster.wait_ring(3, SETTLE_WITHIN).await?;
    eprintln!("n2 removed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    eprintln!(
        "load: {} writes acked, {} unknown, {} refused, {} reads, {} read errors, {} stale",
        report.writes_acked,
        report.writes_unknown,
        report.writes_refused.len(),
        report.reads,
        report.read_errors.len(),
        report.stale_reads.len()
    );
    ensure!(
        report.stale_reads.is_empty(),
        "reads missed acknowledged writes: {:?}",
        &report.stale_reads[..report.stale_reads.len().min(5)]
    );
    ensure!(
        report.writes_refused.is_empty(),
        "writes refused: {:?}",
        &report.writes_refused[..report.writes_refused.len().min(5)]
    );
    ensure!(
        report.writes_acked > 100,
        "the load did too little: {report:?}"
    );

    let body = cluster_of(&n3).await?;
    let ring: BTreeMap<String, String> = body
        .members
        .iter()
        .map(|m| (m.id.clone(), m.ring.clone()))
        .collect();
    ensure!(
        ring.get("n1").map(String::as_str) == Some("removed"),
        "{ring:?}"
    );
    ensure!(
        ring.get("n2").map(String::as_str) == Some("removed"),
        "{ring:?}"
    );
    for id in ["n3", "n4", "n5"] {
        ensure!(
            ring.get(id).map(String::as_str) == Some("member"),
            "{ring:?}"
        );
    }
    let mut expected: Vec<(String, String)> = (0..KEYS)
        .map(|i| (format!("key{i}"), format!("v{i}")))
        .collect();
    // A load key's last acknowledged write, or a later one whose answer was lost.
    for (key, version) in &report.acked {
        let resp = n3.get_with(key.as_bytes(), "r=3").await;
        let read = max_version(&resp).with_context(|| format!("{key}: {resp}"))?;
        ensure!(read >= *version, "{key}: acked u{version}, read u{read}");
        expected.push((key.clone(), format!("u{read}")));
    }
    check_on_home_replicas(&n3, &expected, &["n1", "n2"], SETTLE_WITHIN).await?;
    Ok(())
}

/// Waits until `api`'s node has received some keys of a transfer still in flight.
async fn wait_transfer_started(api: &Api) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        if let Ok(body) = cluster_of(api).await
            && body.transfers.in_flight
            && body.transfers.keys_received > 0
        {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "no transfer started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_resumes_after_kill_9_of_the_receiver_and_of_a_sender() -> anyhow::Result<()> {
    // A joining node killed mid-transfer, restarted, finishes; a source killed
    // mid-transfer, restarted, lets the next join finish; nothing is lost.
    const KEYS: usize = 10_000;
    let slow = |o: NodeOptions| o.flag("--transfer-mb-per-s", 1);
    let mut cluster = TestCluster::start(3, QUORUM, options).await?;
    let apis = running_apis(&mut cluster);
    preload(&apis, KEYS).await?;
    let expected: Vec<(String, String)> = (0..KEYS)
        .map(|i| (format!("key{i}"), format!("v{i}")))
        .collect();

    join(&mut cluster, "n4", slow).await?;
    let n4 = api_of(&mut cluster, "n4");
    wait_transfer_started(&n4).await?;
    cluster.node(4).kill9()?;
    eprintln!("n4 killed mid-transfer");
    cluster.node(4).restart().await?;
    cluster.wait_ring(4, SETTLE_WITHIN).await?;
    check_on_home_replicas(&n4, &expected, &[], SETTLE_WITHIN).await?;

    join(&mut cluster, "n5", slow).await?;
    let n5 = api_of(&mut cluster, "n5");
    wait_transfer_started(&n5).await?;
    cluster.node(1).kill9()?;
    eprintln!("n1, a source, killed mid-transfer");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.node(1).restart().await?;
    cluster.wait_ring(5, SETTLE_WITHIN).await?;
    check_on_home_replicas(&n5, &expected, &[], SETTLE_WITHIN).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_and_remove_refuse_what_they_cannot_do() -> anyhow::Result<()> {
    // A live node cannot be removed (409 node_alive), an unknown one is 404, and the
    // last node of a ring cannot leave (409).
    let mut cluster = TestCluster::start(2, (2, 1, 1), options).await?;
    let n1 = api_of(&mut cluster, "n1");
    let alive = n1
        .try_request(
            http::Method::POST,
            "/admin/remove/n2",
            &[],
            ringkv_tests::http::empty(),
        )
        .await?;
    alive.assert_error(409, "node_alive");
    let unknown = n1
        .try_request(
            http::Method::POST,
            "/admin/remove/n9",
            &[],
            ringkv_tests::http::empty(),
        )
        .await?;
    unknown.assert_error(404, "not_found");
    let get = n1.get_path("/admin/leave").await;
    get.assert_status(405);

    let leave = n1
        .try_request(
            http::Method::POST,
            "/admin/leave",
            &[],
            ringkv_tests::http::empty(),
        )
        .await?;
    leave.assert_status(202);
    let exited = cluster.node(1).wait_exit(SETTLE_WITHIN).await?;
    ensure!(exited.success(), "n1 exited with {exited}");
    let n2 = api_of(&mut cluster, "n2");
    cluster.nodes.remove(0);
    cluster.wait_ring(1, SETTLE_WITHIN).await?;
    let last = n2
        .try_request(
            http::Method::POST,
            "/admin/leave",
            &[],
            ringkv_tests::http::empty(),
        )
        .await?;
    last.assert_error(409, "conflict");
    Ok(())
}

/// Reads keys `key{i}` of the preloaded set through `apis` with 8 readers until
/// `stop`; returns (p99 in ms, reads).
async fn read_p99(apis: Vec<Api>, keys: usize, stop: Arc<AtomicBool>) -> (f64, usize) {
    let mut readers = Vec::new();
    for r in 0..8usize {
        let (api, stop) = (apis[r % apis.len()].clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut j = r * 104_729;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("key{}", (j * 7919) % keys);
                let t = Instant::now();
                let get = api.get(key.as_bytes()).await;
                latencies.push(t.elapsed());
                assert_eq!(get.status, 200, "a foreground read failed: {get}");
                j += 1;
            }
            latencies
        }));
    }
    ringkv_tests::http::readers_p99_ms(readers).await
}

/// The join figures of docs/benchmarks.md: a fourth node joins 3 nodes holding
/// `RINGKV_JOIN_KEYS` (100,000) keys; transfer time, keys/s, MB/s, and foreground GET
/// p99 during the join next to idle, in one run.
/// `cargo test --release -p ringkv-tests --test membership -- --ignored --nocapture join_transfer_rate`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: run by hand for docs/benchmarks.md"]
async fn join_transfer_rate() -> anyhow::Result<()> {
    let keys: usize = std::env::var("RINGKV_JOIN_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rate = std::env::var("RINGKV_JOIN_MB_PER_S").unwrap_or_else(|_| "64".into());
    let mut cluster = TestCluster::start(3, QUORUM, options).await?;
    let apis = running_apis(&mut cluster);
    let loaded = Instant::now();
    preload(&apis, keys).await?;
    eprintln!("loaded {keys} keys at w=2 in {:?}", loaded.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let idle = tokio::spawn(read_p99(apis.clone(), keys, stop.clone()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let idle = idle.await?;

    let stop = Arc::new(AtomicBool::new(false));
    let during = tokio::spawn(read_p99(apis.clone(), keys, stop.clone()));
    let started = Instant::now();
    join(&mut cluster, "n4", |o| o.flag("--transfer-mb-per-s", &rate)).await?;
    cluster.wait_ring(4, Duration::from_secs(600)).await?;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = during.await?;
    let body = cluster_of(&api_of(&mut cluster, "n4")).await?;
    let t = &body.transfers;
    eprintln!(
        "join: n4 received {} keys ({:.1} MB) in {took:?} from its start to the commit: {:.0} keys/s, \
         {:.2} MB/s (--transfer-mb-per-s {rate}); foreground GET p99 idle {:.2} ms, during the join \
         {:.2} ms ({:.2}x); {} and {} reads",
        t.keys_received,
        t.bytes_received as f64 / 1e6,
        t.keys_received as f64 / took.as_secs_f64(),
        t.bytes_received as f64 / 1e6 / took.as_secs_f64(),
        idle.0,
        during.0,
        during.0 / idle.0,
        idle.1,
        during.1
    );
    Ok(())
}
