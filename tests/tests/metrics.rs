//! Proves README.md#metrics about a fresh node: before any request, `/metrics` lists
//! exactly the series the README's table names, and `promtool check metrics` (when
//! installed; `.ci/test` installs it where apt works) finds nothing to complain about.

use std::collections::BTreeSet;

use ringkv_tests::{HttpClient, NodeProcess, promtool, readme};

/// The body of a fresh node's first `/metrics`, fetched with a client of our own so
/// that nothing else has been asked of the node (the harness's readiness probe is a
/// `/health`, which is why `ringkv_http_requests_total` may count one).
async fn fresh_metrics() -> (NodeProcess, String) {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let url = format!("{}/metrics", node.base_url());
    let resp = HttpClient::new().get(&url).await.unwrap();
    resp.assert_status(200);
    let body = resp.text();
    (node, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_lists_every_series_of_the_readme_and_no_other() {
    // Proves each series named in README.md#metrics is on a fresh node's /metrics (so
    // rates and alerts have a series from the start), and each family there is named.
    let (_node, body) = fresh_metrics().await;
    let documented: BTreeSet<String> = readme::metric_names(&readme::read().unwrap())
        .unwrap()
        .into_iter()
        .collect();
    let exported: BTreeSet<String> = readme::metric_families(&body).into_iter().collect();
    let missing: Vec<_> = documented.difference(&exported).collect();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    assert!(
        missing.is_empty() && undocumented.is_empty(),
        "README.md#metrics lists series a fresh node does not export: {missing:?}; \
         the node exports series the README does not list: {undocumented:?}\n{body}"
    );
    for name in &documented {
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "{name} has no HELP text:\n{body}"
        );
    }
    // Label sets known in advance are there at zero, e.g. each peer op and outcome.
    for series in [
        "ringkv_peer_calls_total{op=\"hint\",outcome=\"timeout\"} 0",
        "ringkv_peer_bad_requests_total{reason=\"version\"} 0",
        "ringkv_http_requests_total{op=\"put\",status=\"204\"} 0",
        "ringkv_hints_pending 0",
        "ringkv_gossip_timers_dropped_total 0",
    ] {
        assert!(body.contains(series), "no `{series}` line:\n{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_a_fresh_nodes_metrics() {
    // Proves `promtool check metrics` passes on a fresh node's /metrics (lint included:
    // HELP text, suffixes, units), or says plainly that it was skipped.
    let Some(promtool) = promtool::find() else {
        println!(
            "SKIPPED: promtool not found on PATH (Debian: apt-get install prometheus; \
             .ci/test installs it where apt works)"
        );
        return;
    };
    let (_node, body) = fresh_metrics().await;
    if let Err(complaint) = promtool::check_metrics(&promtool, &body).unwrap() {
        panic!("promtool check metrics: {complaint}\n--- metrics ---\n{body}");
    }
    println!("promtool check metrics: ok ({} bytes)", body.len());
}
