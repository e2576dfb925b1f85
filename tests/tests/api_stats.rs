//! Proves the dashboard's endpoints and the observability of README.md#http-api and
//! README.md#metrics on real nodes: `GET /` (the page and its policy), `/stats` (KV
//! requests only, rates over complete seconds), `/stats?cluster=true` (every member,
//! and why one has no figures), `/ring`, their 4xx on bad input, the quorum-failure
//! and RocksDB series, and `--log-format json`.

use std::time::{Duration, Instant};

use ringkv_client::wire::{ClusterStatsBody, RingBody, StatsBody};
use ringkv_tests::{NodeOptions, NodeProcess, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_html_with_a_same_origin_policy() {
    // Proves GET / serves the dashboard as HTML with a CSP that allows connections to
    // this origin only, and that other methods on / are refused with JSON.
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();
    let resp = api.get_path("/").await;
    resp.assert_status(200);
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let csp = resp.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(resp.text().contains("<title>ringkv</title>"), "{resp}");
    let post = api
        .request(http::Method::POST, "/", &[], ringkv_tests::http::empty())
        .await;
    post.assert_error(405, "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_kv_requests_only_and_report_recent_rates() {
    // Proves /stats counts the KV calls (raw and JSON) as reads and writes and not the
    // dashboard's own polling, and that its rates and p99 become non-zero once a
    // second with requests has passed.
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();
    for i in 0..20 {
        api.put(format!("k{i}").as_bytes(), "v")
            .await
            .assert_status(204);
        api.get(format!("k{i}").as_bytes()).await.assert_status(200);
    }
    api.json_put("j", "v", None).await.assert_status(200);
    api.json_get(b"j", "").await.assert_status(200);
    for path in ["/cluster", "/ring", "/stats", "/metrics", "/health", "/"] {
        api.get_path(path).await.assert_status(200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let stats: StatsBody = api.get_path("/stats").await.assert_status(200).json();
        if stats.writes_per_s > 0.0 || Instant::now() >= deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stats.node, "n1");
    assert_eq!(
        (stats.reads_total, stats.writes_total),
        (21, 21),
        "{stats:?}"
    );
    assert_eq!(stats.errors_total, 0);
    assert!(
        stats.writes_per_s > 0.0 && stats.reads_per_s > 0.0,
        "{stats:?}"
    );
    assert!(stats.window_s >= 1 && stats.window_s <= 10, "{stats:?}");
    assert!(stats.p99_ms.is_some_and(|p| p > 0.0), "{stats:?}");
    assert!(stats.p50_ms <= stats.p99_ms, "{stats:?}");
    let storage = stats.storage.expect("RocksDB reports its figures");
    assert!(storage.memtable_bytes > 0, "{storage:?}");
    assert!(storage.estimated_keys >= 21, "{storage:?}");

    // The same figures in /metrics, per column family.
    let metrics = api.get_path("/metrics").await.text();
    let keys = ringkv_tests::http::metric_sum(
        &metrics
            .lines()
            .filter(|l| l.contains("cf=\"data\""))
            .collect::<Vec<_>>()
            .join("\n"),
        "ringkv_rocksdb_estimated_keys",
    );
    assert!(
        keys >= 21.0,
        "ringkv_rocksdb_estimated_keys{{cf=\"data\"}} is {keys}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_on_the_dashboard_endpoints_answer_400() {
    // Proves /stats takes only cluster=true|false and /ring no query at all, each
    // refusal a JSON 400, and that other methods get a JSON 405.
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();
    for path in [
        "/stats?cluster=1",
        "/stats?cluster",
        "/stats?cluster=true&cluster=true",
        "/stats?node=n2",
        "/ring?n=3",
    ] {
        api.get_path(path).await.assert_error(400, "bad_request");
    }
    for path in ["/stats", "/ring"] {
        api.request(http::Method::DELETE, path, &[], ringkv_tests::http::empty())
            .await
            .assert_error(405, "method_not_allowed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_stats_gather_every_member_and_say_why_one_is_missing() {
    // Proves /stats?cluster=true on one node carries every member's own /stats, /ring
    // splits the partitions over the members, and a killed member is listed with an
    // error and no figures (the others' still there).
    let mut cluster = TestCluster::start(3, (3, 2, 2), |o| o).await.unwrap();
    let api = cluster.node(1).api();
    let body: ClusterStatsBody = api
        .get_path("/stats?cluster=true")
        .await
        .assert_status(200)
        .json();
    assert_eq!(body.node, "n1");
    let ids: Vec<&str> = body.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["n1", "n2", "n3"]);
    for n in &body.nodes {
        let stats = n.stats.as_ref().unwrap_or_else(|| panic!("{n:?}"));
        assert_eq!(stats.node, n.id, "each member answers for itself");
    }

    let ring: RingBody = api.get_path("/ring").await.assert_status(200).json();
    assert_eq!((ring.n, ring.partitions), (3, 1024));
    assert_eq!(
        ring.owners
            .iter()
            .map(|o| o.primary_partitions)
            .sum::<usize>(),
        1024
    );
    assert!(ring.owners.iter().all(|o| o.home_partitions == 1024));

    cluster.node(3).kill9().unwrap();
    let body: ClusterStatsBody = api
        .get_path("/stats?cluster=true")
        .await
        .assert_status(200)
        .json();
    let n3 = body.nodes.iter().find(|n| n.id == "n3").unwrap();
    assert!(n3.stats.is_none() && n3.error.is_some(), "{n3:?}");
    assert!(
        body.nodes
            .iter()
            .filter(|n| n.id != "n3")
            .all(|n| n.stats.is_some()),
        "{body:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_failures_are_counted_by_op_and_reason() {
    // Proves a request refused for too few live replicas counts in
    // ringkv_quorum_failures_total under its op and reason, and nothing else does.
    let node = NodeProcess::start(NodeOptions::new("n1").quorum(3, 2, 2))
        .await
        .unwrap();
    let api = node.api();
    api.put(b"k", "v")
        .await
        .assert_error(503, "insufficient_replicas");
    api.delete(b"k")
        .await
        .assert_error(503, "insufficient_replicas");
    api.get(b"k")
        .await
        .assert_error(503, "insufficient_replicas");
    api.put_with(b"k", "v", None, "w=1")
        .await
        .assert_status(204);
    let metrics = api.get_path("/metrics").await.text();
    for (series, expected) in [
        (
            "ringkv_quorum_failures_total{op=\"write\",reason=\"insufficient_replicas\"}",
            2,
        ),
        (
            "ringkv_quorum_failures_total{op=\"read\",reason=\"insufficient_replicas\"}",
            1,
        ),
        (
            "ringkv_quorum_failures_total{op=\"write\",reason=\"timeout\"}",
            0,
        ),
    ] {
        assert!(
            metrics.contains(&format!("{series} {expected}\n")),
            "no `{series} {expected}` in:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_naming_the_node() {
    // Proves --log-format json makes every line the node writes a JSON object with
    // its id, a level and a message, starting-up lines included.
    let node = NodeProcess::start(NodeOptions::new("n7").flag("--log-format", "json"))
        .await
        .unwrap();
    node.api().put(b"k", "v").await.assert_status(204);
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("==== ringkv-tests:"))
        .collect();
    assert!(!lines.is_empty(), "no log lines:\n{log}");
    let mut messages = Vec::new();
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(value["node"], "n7", "{line}");
        assert!(value["level"].is_string(), "{line}");
        messages.push(value["message"].as_str().unwrap_or_default().to_owned());
    }
    assert!(
        messages.iter().any(|m| m == "serving HTTP"),
        "no `serving HTTP` line among {messages:?}"
    );
}
