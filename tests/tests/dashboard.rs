//! Proves the web dashboard (`GET /`) in a real browser, headless chromium over
//! WebDriver: against a 3-node cluster it shows the members alive and the ring's
//! partitions, shows a killed node down within 15 s, shows live figures, writes and
//! reads back through its console, shows two blind writes as two siblings and
//! resolves them with their context, makes no request to any other host, and asks
//! for an API token once on a 401. It saves a screenshot (see
//! `browser::screenshot_dir`).
//!
//! Without chromium and chromedriver (`.ci/deps test` installs Debian's `chromium`
//! and `chromium-driver` where apt works) the tests print `SKIPPED:` and pass.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringkv_tests::browser::{self, Browser, Tools};
use ringkv_tests::{Api, TestCluster};
use serde_json::Value;

/// Each member's id, liveness and writes/s cell, as the page shows them.
const MEMBERS_JS: &str = "return [...document.querySelectorAll('#members tbody tr')].map(r => \
     [r.dataset.member, r.querySelector('.liveness').textContent, \
      r.querySelector('.writes').textContent, r.querySelector('.ownership').textContent]);";

/// The console's last status line ('' when none).
const STATUS_JS: &str =
    "const s = document.getElementById('kv-status'); return s ? s.textContent : '';";

fn tools_or_skip() -> Option<Tools> {
    let tools = browser::find();
    if tools.is_none() {
        println!(
            "SKIPPED: chromium and chromedriver not found on PATH (Debian: apt-get install \
             chromium chromium-driver; .ci/test installs them where apt works)"
        );
    }
    tools
}

/// Member id -> (liveness, writes/s text, ownership text).
fn members(value: &Value) -> BTreeMap<String, (String, String, String)> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| {
            let cell = |i: usize| row.get(i)?.as_str().map(str::to_owned);
            Some((cell(0)?, (cell(1)?, cell(2)?, cell(3)?)))
        })
        .collect()
}

fn all_alive(value: &Value, count: usize) -> bool {
    let m = members(value);
    m.len() == count && m.values().all(|(state, _, _)| state == "alive")
}

/// Writes a key every 20 ms through `apis` until stopped, so the charts have figures.
fn background_writes(apis: Vec<Api>) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stopped.load(Ordering::Relaxed) {
            let api = &apis[(i as usize) % apis.len()];
            let _ = api
                .try_request(
                    http::Method::PUT,
                    &Api::kv_path(format!("load-{}", i % 100).as_bytes(), ""),
                    &[],
                    ringkv_tests::http::full(format!("v{i}")),
                )
                .await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    stop
}

/// Types `text` into the input `id`, replacing what it held.
async fn fill(b: &Browser, id: &str, text: &str) {
    let input = b.find(&format!("#{id}")).await.unwrap();
    b.type_into(&input, text).await.unwrap();
}

/// Clicks console button `id` and waits for a status line starting with `expected`.
async fn console(b: &Browser, id: &str, expected: &str) -> String {
    b.eval("document.getElementById('kv-result').replaceChildren(); return null;")
        .await
        .unwrap();
    let button = b.find(&format!("#{id}")).await.unwrap();
    b.click(&button).await.unwrap();
    let status = b
        .wait_for(
            &format!("console status {expected:?} after {id}"),
            Duration::from_secs(10),
            STATUS_JS,
            |v| {
                v.as_str()
                    .is_some_and(|s| !s.is_empty() && !s.starts_with('…'))
            },
        )
        .await
        .unwrap();
    let status = status.as_str().unwrap().to_owned();
    assert!(
        status.starts_with(expected),
        "after {id} the console says {status:?}, expected {expected:?}"
    );
    status
}

/// The values the console shows for the last Get, in page order.
async fn console_values(b: &Browser) -> Vec<String> {
    let v = b
        .eval("return [...document.querySelectorAll('#kv-values .value')].map(e => e.textContent);")
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_and_its_console_works_in_a_browser() {
    let Some(tools) = tools_or_skip() else {
        return;
    };
    let mut cluster = TestCluster::start(3, (3, 2, 2), |o| o).await.unwrap();
    let load = background_writes(vec![cluster.node(1).api(), cluster.node(2).api()]);
    let b = Browser::start(&tools, 1400, 1300).await.unwrap();
    b.goto(&cluster.node(1).base_url()).await.unwrap();

    // Three members alive, each a home replica of every partition (n=3), and the
    // primaries adding up to the ring's 1024 partitions.
    let rows = b
        .wait_for(
            "3 members alive",
            Duration::from_secs(15),
            MEMBERS_JS,
            |v| all_alive(v, 3),
        )
        .await
        .unwrap();
    let render_ms = b.eval("return window.ringkvFirstRenderMs;").await.unwrap();
    println!("first render: {render_ms} ms after navigation (3 nodes)");
    let ownership: Vec<(usize, usize)> = members(&rows)
        .values()
        .map(|(_, _, o)| {
            let (primary, home) = o.split_once(" / ").expect("primary / home");
            (
                primary.trim().parse().unwrap(),
                home.trim().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ownership.iter().map(|o| o.0).sum::<usize>(),
        1024,
        "{ownership:?}"
    );
    assert!(ownership.iter().all(|o| o.1 == 1024), "{ownership:?}");

    // Live figures arrive: the writes going through n1 show as writes/s above zero.
    b.wait_for(
        "n1 writes/s above zero",
        Duration::from_secs(20),
        MEMBERS_JS,
        |v| {
            members(v)
                .get("n1")
                .and_then(|(_, writes, _)| writes.parse::<f64>().ok())
                .is_some_and(|w| w > 0.0)
        },
    )
    .await
    .unwrap();

    // A killed node is shown down within 15 s, and its figures as unavailable.
    cluster.node(3).kill9().unwrap();
    let killed = Instant::now();
    b.wait_for("n3 down", Duration::from_secs(15), MEMBERS_JS, |v| {
        members(v)
            .get("n3")
            .is_some_and(|(state, _, _)| state == "down")
    })
    .await
    .unwrap();
    println!("n3 shown down {:?} after SIGKILL", killed.elapsed());
    b.wait_for(
        "n3's figures shown as unavailable",
        Duration::from_secs(5),
        "return document.querySelector('tr[data-member=\"n3\"] .stats-state').textContent;",
        |v| v.as_str().is_some_and(|s| s.contains("down")),
    )
    .await
    .unwrap();

    // Write through the console, read it back.
    fill(&b, "kv-key", "dashboard-key").await;
    fill(&b, "kv-value", "hello from the browser").await;
    console(&b, "kv-put", "204").await;
    fill(&b, "kv-value", "").await;
    console(&b, "kv-get", "200").await;
    assert_eq!(console_values(&b).await, ["hello from the browser"]);

    // Two blind writes are two siblings, shown with their context.
    fill(&b, "kv-key", "dashboard-siblings").await;
    fill(&b, "kv-value", "red").await;
    console(&b, "kv-blind", "204").await;
    fill(&b, "kv-value", "blue").await;
    console(&b, "kv-blind", "204").await;
    console(&b, "kv-get", "300 2 siblings").await;
    let mut siblings = console_values(&b).await;
    siblings.sort();
    assert_eq!(siblings, ["blue", "red"]);
    let context = b
        .eval("return document.getElementById('kv-result-context').textContent;")
        .await
        .unwrap();
    assert!(
        context.as_str().is_some_and(|c| !c.is_empty()),
        "no context shown"
    );
    let dir = browser::screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard.png");
    std::fs::write(&path, b.screenshot().await.unwrap()).unwrap();
    println!("screenshot: {}", path.display());

    // Keeping one sibling writes it with their context: one value is left.
    let keep = b.find("#kv-values .sibling .keep").await.unwrap();
    b.click(&keep).await.unwrap();
    b.wait_for(
        "the resolving write",
        Duration::from_secs(10),
        STATUS_JS,
        |v| v.as_str().is_some_and(|s| s.starts_with("204 resolved")),
    )
    .await
    .unwrap();
    console(&b, "kv-get", "200").await;
    assert_eq!(console_values(&b).await.len(), 1);

    // Every request the page made went to the node that served it, and the page's
    // policy refused nothing (it would, were anything sent elsewhere).
    let foreign = b
        .eval(
            "return performance.getEntriesByType('resource').map(e => e.name)\
             .filter(n => !n.startsWith(location.origin + '/'));",
        )
        .await
        .unwrap();
    assert_eq!(foreign, Value::Array(vec![]), "requests to other hosts");
    let made = b
        .eval("return performance.getEntriesByType('resource').length;")
        .await
        .unwrap();
    assert!(
        made.as_u64().unwrap_or(0) > 3,
        "the page made {made} requests"
    );
    let refused = b
        .eval("return window.ringkvCspViolations || [];")
        .await
        .unwrap();
    assert_eq!(refused, Value::Array(vec![]), "CSP violations");

    // With --api-token-file the node answers 401 without a token; here the page's
    // fetch is made to answer so (the node's side is tested with that flag): the page
    // asks once, then sends the token on every call, polls and console alike.
    b.eval(
        "const real = window.fetch.bind(window); \
         window.fetch = (path, options) => { \
           const auth = new Headers((options || {}).headers || {}).get('Authorization'); \
           if (auth !== 'Bearer s3cret') return Promise.resolve(new Response( \
             '{\"error\":\"unauthorized\",\"message\":\"no valid bearer token\"}', \
             { status: 401, headers: { 'content-type': 'application/json' } })); \
           return real(path, options); }; \
         return null;",
    )
    .await
    .unwrap();
    b.wait_for(
        "the token form",
        Duration::from_secs(5),
        "return !document.getElementById('token-form').hidden;",
        |v| v == &Value::Bool(true),
    )
    .await
    .unwrap();
    fill(&b, "token-input", "s3cret").await;
    let submit = b.find("#token-submit").await.unwrap();
    b.click(&submit).await.unwrap();
    fill(&b, "kv-key", "dashboard-key").await;
    console(&b, "kv-get", "200").await;
    let kept = b
        .eval(
            "return [sessionStorage.getItem('ringkv.api-token'), \
                     document.getElementById('token-form').hidden];",
        )
        .await
        .unwrap();
    assert_eq!(kept, serde_json::json!(["s3cret", true]));

    load.store(true, Ordering::Relaxed);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it by name (docs/benchmarks.md#dashboard)"]
async fn dashboard_render_time_on_five_nodes() {
    // Measures how long the page takes, from navigation to its first frame with every
    // table filled in, on a 5-node cluster: five loads, each in a fresh tab state.
    let Some(tools) = tools_or_skip() else {
        return;
    };
    let mut cluster = TestCluster::start(5, (3, 2, 2), |o| o).await.unwrap();
    let load = background_writes((1..=5).map(|i| cluster.node(i).api()).collect());
    let b = Browser::start(&tools, 1400, 1300).await.unwrap();
    let url = cluster.node(1).base_url();
    let mut first_render_ms = Vec::new();
    for _ in 0..5 {
        b.goto("about:blank").await.unwrap();
        b.goto(&url).await.unwrap();
        let ms = b
            .wait_for(
                "the first full render",
                Duration::from_secs(10),
                "return window.ringkvFirstRenderMs || null;",
                |v| v.is_number(),
            )
            .await
            .unwrap();
        let dom = b
            .eval(
                "const n = performance.getEntriesByType('navigation')[0]; \
                 return Math.round(n.domContentLoadedEventEnd);",
            )
            .await
            .unwrap();
        println!("first full render {ms} ms, DOMContentLoaded {dom} ms");
        first_render_ms.push(ms.as_f64().unwrap());
    }
    first_render_ms.sort_by(f64::total_cmp);
    println!(
        "5 nodes, 5 loads: first full render min {} ms, median {} ms, max {} ms",
        first_render_ms[0], first_render_ms[2], first_render_ms[4]
    );
    // Twenty seconds of figures for the screenshot.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let dir = browser::screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard-5-nodes.png");
    std::fs::write(&path, b.screenshot().await.unwrap()).unwrap();
    println!("screenshot: {}", path.display());
    load.store(true, Ordering::Relaxed);
    b.close().await;
}
