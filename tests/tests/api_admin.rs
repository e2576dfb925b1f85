//! Proves the observability calls of README.md#http-api on one node: `/health` and
//! `/healthz`, `/metrics` in Prometheus text, `/cluster` and `/admin/replicas/{key}`
//! with their documented JSON shapes.

use ringkv_client::wire::{ClusterBody, HealthBody};
use ringkv_tests::{NodeOptions, NodeProcess, TestCluster, b64, sorted, unb64};
use serde_json::Value;

/// `GET /health` and `GET /healthz` answer 200
/// `{"status":"ok","node":"n1","members_alive":1,"ring_members":1,"change_in_flight":false,
/// "ring":"member","ready":true}`, with or without `?ready=true`: a node that starts a
/// cluster alone has its ring before it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_healthz_report_the_node() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    for path in [
        "/health",
        "/healthz",
        "/health?ready=true",
        "/healthz?ready=true",
    ] {
        let resp = api.get_path(path).await;
        resp.assert_status(200);
        let body: HealthBody = resp.json();
        let expected = HealthBody {
            status: "ok".into(),
            node: "n1".into(),
            members_alive: 1,
            ring_members: 1,
            change_in_flight: false,
            ring: "member".into(),
            ready: true,
        };
        assert_eq!(body, expected, "GET {path}: {resp}");
    }
}

/// `GET /health?ready=true` answers 503 `not_ready` while a node is `joining` and 200
/// once it is a `member`; plain `/health` answers 200 throughout, and a bad `ready`
/// value is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_waits_until_the_node_is_a_member() {
    // n2 is stopped (SIGSTOP), so a join waits (README "While a node is down, a change
    // waits"): n3 stays `joining` until n2 resumes, then becomes a `member`.
    let mut cluster = TestCluster::start(2, (2, 1, 1), |o| o).await.unwrap();
    cluster.node(2).pause().unwrap();
    let seeds = [cluster.node(1).cluster_addr()];
    let n3 = NodeProcess::start(NodeOptions::new("n3").quorum(2, 1, 1).join(seeds))
        .await
        .unwrap();
    let api = n3.api();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let plain: HealthBody = api.get_path("/health").await.assert_status(200).json();
        assert_eq!(plain.status, "ok", "{plain:?}");
        if plain.ring == "joining" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "n3 never joining: {plain:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let resp = api.get_path("/health?ready=true").await;
    let body: HealthBody = resp.assert_status(503).json();
    assert_eq!(
        (body.status.as_str(), body.ring.as_str(), body.ready),
        ("not_ready", "joining", false),
        "{resp}"
    );
    api.get_path("/healthz?ready=true").await.assert_status(503);
    api.get_path("/health?ready=maybe")
        .await
        .assert_error(400, "bad_request");

    cluster.node(2).resume().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let resp = api.get_path("/health?ready=true").await;
        if resp.status == 200 {
            let body: HealthBody = resp.json();
            assert_eq!(
                (body.status.as_str(), body.ring.as_str(), body.ready),
                ("ok", "member", true),
                "{resp}"
            );
            break;
        }
        assert_eq!(resp.status, 503, "{resp}");
        assert!(
            std::time::Instant::now() < deadline,
            "n3 never ready: {resp}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `GET /metrics` answers 200 in Prometheus text format and counts HTTP requests
/// in `ringkv_http_requests_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();
    api.put(b"k", "v").await.assert_status(204);
    api.get(b"k").await.assert_status(200);

    let resp = api.get_path("/metrics").await;
    resp.assert_status(200);
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "Prometheus text is text/plain, got {content_type:?}"
    );
    let text = resp.text();
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ringkv_http_requests_total"))
        .collect();
    assert!(
        !samples.is_empty(),
        "no ringkv_http_requests_total sample in:\n{text}"
    );
    for sample in &samples {
        let value = sample.rsplit(' ').next().unwrap_or_default();
        assert!(
            value.parse::<f64>().is_ok(),
            "sample {sample:?} does not end in a number"
        );
    }
}

/// `GET /cluster` names the node, its n/r/w and itself as the one alive member with
/// its http and cluster addresses, and an object of pending hints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_describes_the_single_member() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    let resp = api.get_path("/cluster").await;
    resp.assert_status(200);
    let raw: Value = resp.json();
    assert!(
        raw["hints"]["pending"].is_object(),
        "hints.pending must be an object: {resp}"
    );
    let body: ClusterBody = resp.json();
    assert_eq!(body.node, "n1");
    assert_eq!((body.n, body.r, body.w), (1, 1, 1));
    assert_eq!(body.members.len(), 1, "{resp}");
    let me = &body.members[0];
    assert_eq!(me.id, "n1");
    assert_eq!(me.state, "alive");
    assert_eq!(me.http, node.http_addr().to_string());
    assert_eq!(me.cluster, node.cluster_addr().to_string());
    assert!(
        body.hints.pending.values().all(|&n| n == 0),
        "a lone node has no one to hint for: {resp}"
    );
}

/// `/cluster` shows the asked node's own cluster address as gossip carries it, the
/// resolved `--advertise-cluster`, the same form as every other member's, not the
/// host name it was given (compose advertises `n3:7001`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_shows_the_local_address_resolved_as_the_others_are() {
    let node = NodeProcess::start(NodeOptions::new("n1").advertise_cluster_host("localhost"))
        .await
        .unwrap();
    let port = node.cluster_addr().port();
    let resolved = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", port))
        .unwrap()
        .next()
        .expect("localhost resolves");
    let body = node.api().cluster().await;
    let me = body.members.iter().find(|m| m.id == "n1").unwrap();
    assert_eq!(me.cluster, resolved.to_string(), "{body:?}");
}

/// `/cluster` reports the request defaults the node was started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_reports_the_configured_quorum() {
    let node = NodeProcess::start(NodeOptions::new("solo").quorum(3, 2, 1))
        .await
        .unwrap();
    let body = node.api().cluster().await;
    assert_eq!(body.node, "solo");
    assert_eq!((body.n, body.r, body.w), (3, 2, 1));
    assert_eq!(node.api().health().await.node, "solo");
}

/// `GET /admin/replicas/{key}` lists n1 as the preference list and reads its replica:
/// missing, then found with base64 siblings, then a tombstone with none listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_replicas_reads_the_local_replica() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    let body = api.replicas(b"k").await;
    assert_eq!(body.key, "k");
    assert_eq!(body.preference_list, ["n1"]);
    assert_eq!(body.replicas.len(), 1, "{body:?}");
    let replica = &body.replicas[0];
    assert_eq!(replica.node, "n1");
    assert_eq!(replica.state, "alive");
    assert_eq!(replica.found, Some(false), "never written: {body:?}");
    assert!(
        replica.siblings.as_ref().is_none_or(Vec::is_empty),
        "{body:?}"
    );
    assert_eq!(replica.error, None, "{body:?}");

    api.put(b"k", "one").await.assert_status(204);
    let body = api.replicas(b"k").await;
    let replica = &body.replicas[0];
    assert_eq!(replica.found, Some(true), "{body:?}");
    assert_eq!(replica.tombstone, Some(false), "{body:?}");
    assert_eq!(
        replica.siblings.as_deref(),
        Some(&[b64(b"one")][..]),
        "{body:?}"
    );

    api.put(b"k", "two").await.assert_status(204);
    let body = api.replicas(b"k").await;
    let replica = &body.replicas[0];
    let mut values: Vec<Vec<u8>> = replica
        .siblings
        .iter()
        .flatten()
        .map(|s| unb64(s))
        .collect();
    values.sort();
    assert_eq!(values, sorted(&[b"one", b"two"]), "{body:?}");
    assert_eq!(replica.tombstone, Some(false), "{body:?}");

    api.delete(b"k").await.assert_status(204);
    let body = api.replicas(b"k").await;
    let replica = &body.replicas[0];
    assert_eq!(replica.tombstone, Some(true), "{body:?}");
    assert!(
        replica.siblings.as_ref().is_none_or(Vec::is_empty),
        "tombstones are never listed as siblings: {body:?}"
    );
    assert_eq!(replica.error, None, "{body:?}");
}
