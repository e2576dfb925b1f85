//! Proves the compose cluster's observability files hold together without running
//! them: the Grafana dashboard (compose/grafana/ringkv-dashboard.json) is a dashboard
//! Grafana can import and asks only for series a node exports (README.md#metrics),
//! and Prometheus' configuration (compose/prometheus.yml) passes `promtool check
//! config` and scrapes every node of compose/docker-compose.yml at the port it
//! listens on. (`compose/cluster smoke` then asks the running Prometheus that every
//! target is up.)

use std::collections::BTreeSet;

use ringkv_tests::{promtool, readme};
use serde_json::Value;

fn repo_file(path: &str) -> String {
    let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {full}: {e}"))
}

/// Every `ringkv_…` name in `expr`, with a histogram's `_bucket`/`_sum`/`_count`
/// suffix taken off (the family is what README.md#metrics lists).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("ringkv_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.push(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_grafana_dashboard_imports_and_asks_for_exported_series_only() {
    // Proves the dashboard JSON parses, declares the Prometheus data source it uses as
    // an import input, lays its panels on Grafana's 24-column grid without overlaps,
    // gives every panel a query, and that every series queried is one README.md#metrics
    // lists (so no panel stays empty because of a typo or a renamed metric), covering
    // requests, latency, hints and anti-entropy.
    let dashboard: Value =
        serde_json::from_str(&repo_file("compose/grafana/ringkv-dashboard.json"))
            .expect("the dashboard is valid JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 30);
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS input: {inputs:?}"
    );
    let documented: BTreeSet<String> = readme::metric_names(&readme::read().unwrap())
        .unwrap()
        .into_iter()
        .collect();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: id reused"
        );
        let g = &panel["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w >= 1 && h >= 1 && x + w <= 24, "{title}: off the grid {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "{title} overlaps another panel at {cx},{cy}"
                );
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: its data source is not the import input"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("an expr");
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "{title}: {expr} asks for no ringkv series"
            );
            for name in names {
                assert!(
                    documented.contains(&name),
                    "{title}: {name} is not in README.md#metrics"
                );
                queried.insert(name);
            }
        }
    }
    for needed in [
        "ringkv_http_requests_total",
        "ringkv_http_request_duration_seconds",
        "ringkv_quorum_failures_total",
        "ringkv_hints_pending",
        "ringkv_read_repairs_total",
        "ringkv_anti_entropy_exchanges_total",
        "ringkv_rocksdb_sst_bytes",
        "ringkv_members",
    ] {
        assert!(queried.contains(needed), "no panel shows {needed}");
    }
}

#[test]
fn prometheus_scrapes_every_compose_node_and_its_config_checks() {
    // Proves compose/prometheus.yml names each node n1..n5 at the port its container
    // listens on (RINGKV_HTTP in compose/docker-compose.yml), and passes
    // `promtool check config` where promtool is installed.
    let config = repo_file("compose/prometheus.yml");
    let compose = repo_file("compose/docker-compose.yml");
    for i in 1..=5 {
        assert!(
            compose.contains(&format!("RINGKV_HTTP: \"0.0.0.0:800{i}\"")),
            "n{i} does not listen on 800{i} in docker-compose.yml"
        );
        assert!(
            config.contains(&format!("\"n{i}:800{i}\"")),
            "prometheus.yml does not scrape n{i}:800{i}"
        );
    }
    assert!(compose.contains("image: ringkv-prometheus:local"));
    let Some(promtool) = promtool::find() else {
        println!("SKIPPED: promtool not found on PATH, so promtool check config was not run");
        return;
    };
    // promtool insists the token file exists: check a copy that points at a stand-in.
    assert!(
        config.contains("credentials_file: /secrets/api.token"),
        "prometheus.yml does not send the API token the nodes ask for"
    );
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("api.token");
    std::fs::write(&token, "0123456789abcdef\n").unwrap();
    let path = dir.path().join("prometheus.yml");
    std::fs::write(
        &path,
        config.replace("/secrets/api.token", token.to_str().unwrap()),
    )
    .unwrap();
    let out = std::process::Command::new(&promtool)
        .arg("check")
        .arg("config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("promtool check config: ok");
}

#[test]
fn metric_names_are_found_in_expressions() {
    // Proves the expression scanner this file relies on finds each family once per
    // mention, suffixes removed.
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(ringkv_http_request_duration_seconds_bucket[1m]))) / ringkv_hints_pending"
        ),
        [
            "ringkv_http_request_duration_seconds",
            "ringkv_hints_pending"
        ]
    );
    assert!(metric_names("up").is_empty());
}
