//! Proves docs/security.md on real processes: a node with another cluster key never
//! joins and every packet and connection of a stranger is rejected and counted; a key
//! rotation done one node at a time under a running workload fails no operation; API
//! tokens and HTTPS behave as README.md#security says, checked with curl and the CLI.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringkv_client::{Bytes, Client, ClientConfig, GetOutcome, ReadOptions, WriteOptions};
use ringkv_tests::secrets::{self, KEY_A, KEY_B, KEY_STRANGER, KeyFile, TOKEN};
use ringkv_tests::{Api, NodeOptions, NodeProcess, cli_binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The value of exactly `series` (a name and its labels, as exported) on `api`'s node;
/// 0 when absent.
async fn metric(api: &Api, series: &str) -> f64 {
    let text = api.get_path("/metrics").await.assert_status(200).text();
    text.lines()
        .filter(|line| line.starts_with(series))
        .filter(|line| line[series.len()..].starts_with(' '))
        .filter_map(|line| line.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

fn member_ids(api_cluster: &ringkv_client::wire::ClusterBody) -> Vec<String> {
    api_cluster.members.iter().map(|m| m.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_with_another_key_never_joins_and_all_its_traffic_is_rejected() {
    // n1 and n2 share a key; n3 holds another and seeds on n1. n3 never shows on n1 or
    // n2, n1 never on n3; every gossip packet n3 sends n1 is rejected and counted, and
    // so is every connection to n1's peer port that does not complete the handshake.
    let keys = KeyFile::new(&[KEY_A]).unwrap();
    let stranger_keys = KeyFile::new(&[KEY_STRANGER]).unwrap();
    let n1 = NodeProcess::start(NodeOptions::new("n1").flag("--cluster-key-file", keys.arg()))
        .await
        .unwrap();
    let n2 = NodeProcess::start(
        NodeOptions::new("n2")
            .join([n1.cluster_addr()])
            .flag("--cluster-key-file", keys.arg()),
    )
    .await
    .unwrap();
    let n3 = NodeProcess::start(
        NodeOptions::new("n3")
            .join([n1.cluster_addr()])
            .flag("--cluster-key-file", stranger_keys.arg()),
    )
    .await
    .unwrap();
    let (a1, a2, a3) = (n1.api(), n2.api(), n3.api());
    ringkv_tests::http::wait_members_alive(
        &[("n1".into(), a1.clone()), ("n2".into(), a2.clone())],
        2,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    // n3 announces to n1 every second while it sees nobody.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&a3, "ringkv_gossip_packets_sent_total").await < 5.0 {
        assert!(Instant::now() < deadline, "n3 sent no announces");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every packet n3 sent before `sent_before` has reached n1 a second later; n1 was
    // sent nothing else it could reject, and n3 sends only to its seed, n1.
    let sent_before = metric(&a3, "ringkv_gossip_packets_sent_total").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rejected = metric(&a1, "ringkv_rejected_total{channel=\"gossip\"}").await;
    let sent_after = metric(&a3, "ringkv_gossip_packets_sent_total").await;
    assert!(
        sent_before <= rejected && rejected <= sent_after,
        "n1 rejected {rejected} gossip packets; n3 sent between {sent_before} and {sent_after}"
    );
    assert_eq!(
        metric(&a1, "ringkv_gossip_packets_rejected_key_total").await,
        rejected
    );
    for (observer, api) in [("n1", &a1), ("n2", &a2)] {
        let ids = member_ids(&api.cluster().await);
        assert!(
            !ids.contains(&"n3".to_owned()),
            "{observer} lists n3: {ids:?}"
        );
        assert_eq!(api.health().await.members_alive, 2, "{observer}");
    }
    assert_eq!(member_ids(&a3.cluster().await), vec!["n3".to_owned()]);
    assert_eq!(a3.health().await.members_alive, 1);

    // Peer connections: garbage, a plain HTTP/2 client's preface, a handshake-sized
    // message of random bytes, and an empty connection. Each is refused and counted.
    let peer = "ringkv_rejected_total{channel=\"peer\"}";
    let before = metric(&a1, peer).await;
    let mut garbage = vec![0, 48];
    garbage.extend((0..48u8).map(|i| i.wrapping_mul(37)));
    let attempts: Vec<Vec<u8>> = vec![
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        vec![0xff; 100],
        garbage,
        Vec::new(),
    ];
    let rounds = 5;
    for _ in 0..rounds {
        for bytes in &attempts {
            let mut stream = TcpStream::connect(n1.cluster_addr()).await.unwrap();
            stream.write_all(bytes).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut rest = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "not closed unanswered: {read:?} {rest:?}"
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let expected = before + (rounds * attempts.len()) as f64;
    while metric(&a1, peer).await < expected {
        assert!(Instant::now() < deadline, "peer rejections not all counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&a1, peer).await,
        expected,
        "a connection counted twice"
    );
    // The keyed pair still works after all that.
    a1.put_with(b"after-strangers", "v", None, "")
        .await
        .assert_status(204);
    drop((n1, n2, n3));
}

/// Runs `writers` tasks against `client` until `stop`: each writes its own keys and
/// reads each back; counts operations and failures.
fn spawn_workload(
    client: Client,
    writers: usize,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (client, stop, ops, failures) =
                (client.clone(), stop.clone(), ops.clone(), failures.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("rot-{w}-{}", i % 50);
                    let value = format!("v{i}");
                    let put = client
                        .put(
                            key.as_bytes(),
                            Bytes::from(value.clone()),
                            None,
                            &WriteOptions {
                                overwrite: true,
                                ..WriteOptions::default()
                            },
                        )
                        .await;
                    ops.fetch_add(1, Ordering::SeqCst);
                    if let Err(e) = put {
                        failures.lock().unwrap().push(format!("put {key}: {e}"));
                        continue;
                    }
                    let got = client.get(key.as_bytes(), &ReadOptions::default()).await;
                    ops.fetch_add(1, Ordering::SeqCst);
                    match got {
                        Ok(GetOutcome::Found { value: v, .. }) if v == value.as_bytes() => {}
                        other => failures
                            .lock()
                            .unwrap()
                            .push(format!("get {key}: {other:?}")),
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_one_node_at_a_time_under_load_fails_no_operation() {
    // Three nodes on key A move to key B as docs/security.md says: add B second on
    // each node, then move it first on each, then remove A, restarting one node at a
    // time, while clients write and read. No operation fails, and no node ever rejects
    // a packet or connection (every mix of steps talks).
    let files: Vec<KeyFile> = (0..3).map(|_| KeyFile::new(&[KEY_A]).unwrap()).collect();
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let seeds: Vec<_> = nodes.iter().map(NodeProcess::cluster_addr).collect();
        let opts = NodeOptions::new(format!("n{}", i + 1))
            .quorum(3, 2, 2)
            .join(seeds)
            .flag("--cluster-key-file", file.arg());
        nodes.push(NodeProcess::start(opts).await.unwrap());
    }
    let apis = |nodes: &[NodeProcess]| -> Vec<(String, Api)> {
        nodes.iter().map(|n| (n.id().to_owned(), n.api())).collect()
    };
    ringkv_tests::http::wait_members_alive(&apis(&nodes), 3, Duration::from_secs(30))
        .await
        .unwrap();
    ringkv_tests::http::wait_ring(&apis(&nodes), 3, Duration::from_secs(30))
        .await
        .unwrap();
    let urls: Vec<String> = nodes.iter().map(NodeProcess::base_url).collect();
    let client = Client::with_config(&urls, ClientConfig::default()).unwrap();
    let (stop, ops) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks = spawn_workload(client, 4, stop.clone(), ops.clone(), failures.clone());

    for step in [&[KEY_A, KEY_B][..], &[KEY_B, KEY_A], &[KEY_B]] {
        for i in 0..nodes.len() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            nodes[i].terminate().await.unwrap();
            files[i].rewrite(step).unwrap();
            let seeds: Vec<_> = (0..nodes.len())
                .filter(|j| *j != i)
                .map(|j| nodes[j].cluster_addr())
                .collect();
            nodes[i].set_join(seeds);
            nodes[i].restart().await.unwrap();
            ringkv_tests::http::wait_members_alive(&apis(&nodes), 3, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("after n{} took {step:?}: {e}", i + 1));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let done = ops.load(Ordering::SeqCst);
    assert!(
        done >= 200,
        "the workload did too little to prove anything: {done} ops"
    );
    assert!(
        failures.is_empty(),
        "{} of {done} operations failed: {failures:#?}",
        failures.len()
    );
    for node in &nodes {
        let api = node.api();
        assert_eq!(
            api.metric("ringkv_rejected_total").await,
            0.0,
            "{}",
            node.id()
        );
    }
    eprintln!("rotation: {done} operations, 0 failed, 9 restarts");
}

/// Runs the `ringkv` CLI with `args` and `envs`.
fn cli(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(cli_binary());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("RINGKV_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied());
    cmd.output().expect("running the ringkv CLI")
}

/// Runs curl with `args`: (HTTP status, body). Status 0 when curl got no answer.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

fn curl_available() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_https_with_curl_and_the_cli() {
    // A node with --api-token-file and TLS: HTTPS only; every endpoint but /health
    // needs the token, a refusal is a JSON 401 `unauthorized`; the CLI takes the token
    // from --token, --token-file or RINGKV_TOKEN and the CA from --ca-file or
    // RINGKV_CA_FILE; `ringkv bench` runs over it too.
    if !curl_available() {
        println!("SKIPPED: curl is not installed");
        return;
    }
    let tokens = KeyFile::new(&["# ops", TOKEN]).unwrap();
    let (cert, key, ca) = secrets::tls_fixtures();
    let node = NodeProcess::start(
        NodeOptions::new("n1")
            .flag("--api-token-file", tokens.arg())
            .tls(&cert, &key, &ca),
    )
    .await
    .unwrap();
    let base = node.base_url();
    assert!(base.starts_with("https://"));
    let ca_arg = ca.display().to_string();
    let bearer = format!("Authorization: Bearer {TOKEN}");

    // curl: health without a token; the rest 401 without, 2xx with.
    let (status, body) = curl(&["--cacert", &ca_arg, &format!("{base}/health")]);
    assert_eq!(status, 200, "{body}");
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/cluster"),
        ("PUT", "/kv/a"),
        ("GET", "/kv/a"),
    ] {
        let url = format!("{base}{path}");
        let (status, body) = curl(&["--cacert", &ca_arg, "-X", method, &url]);
        assert_eq!(status, 401, "{method} {path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], "unauthorized", "{body}");
        let wrong = curl(&[
            "--cacert",
            &ca_arg,
            "-X",
            method,
            "-H",
            "Authorization: Bearer wrong-token-xxxxxxxx",
            &url,
        ]);
        assert_eq!(wrong.0, 401, "{method} {path} with a wrong token");
    }
    let url = format!("{base}/kv/curl");
    let (status, body) = curl(&[
        "--cacert",
        &ca_arg,
        "-H",
        &bearer,
        "-X",
        "PUT",
        "--data-binary",
        "from curl",
        &url,
    ]);
    assert_eq!(status, 204, "{body}");
    let (status, body) = curl(&["--cacert", &ca_arg, "-H", &bearer, &url]);
    assert_eq!((status, body.as_str()), (200, "from curl"));
    // HTTPS only: plain HTTP gets no answer, and neither does a client that does not
    // trust the CA.
    let (status, _) = curl(&[&url.replace("https://", "http://")]);
    assert_eq!(status, 0, "plain HTTP was answered");
    let (status, _) = curl(&["-H", &bearer, &url]);
    assert_eq!(status, 0, "a client without the CA was answered");

    // The CLI, with each source of token and CA.
    let put = cli(
        &[
            "--nodes",
            &base,
            "--ca-file",
            &ca_arg,
            "--token",
            TOKEN,
            "put",
            "cli",
            "from the cli",
        ],
        &[],
    );
    assert!(put.status.success(), "{}", stderr(&put));
    let get = cli(
        &[
            "--nodes",
            &base,
            "--token-file",
            &tokens.arg(),
            "--ca-file",
            &ca_arg,
            "get",
            "cli",
        ],
        &[],
    );
    assert!(get.status.success(), "{}", stderr(&get));
    assert_eq!(get.stdout, b"from the cli");
    let get = cli(
        &["--nodes", &base, "get", "curl"],
        &[("RINGKV_TOKEN", TOKEN), ("RINGKV_CA_FILE", &ca_arg)],
    );
    assert!(get.status.success(), "{}", stderr(&get));
    assert_eq!(get.stdout, b"from curl");
    let refused = cli(&["--nodes", &base, "--ca-file", &ca_arg, "get", "cli"], &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("unauthorized"),
        "{}",
        stderr(&refused)
    );
    let no_ca = cli(&["--nodes", &base, "--token", TOKEN, "get", "cli"], &[]);
    assert_eq!(no_ca.status.code(), Some(2));
    assert!(stderr(&no_ca).contains("--ca-file"), "{}", stderr(&no_ca));

    // The bench, over HTTPS with the token.
    let bench = cli(
        &[
            "--nodes",
            &base,
            "--ca-file",
            &ca_arg,
            "--token",
            TOKEN,
            "bench",
            "--workload",
            "a",
            "--duration",
            "1s",
            "--keys",
            "200",
            "--concurrency",
            "4",
            "--json",
        ],
        &[],
    );
    assert!(bench.status.success(), "{}", stderr(&bench));
    let summary: serde_json::Value = serde_json::from_slice(&bench.stdout).unwrap();
    assert_eq!(summary["errors"], 0, "{summary}");
    assert!(
        summary["ops"].as_u64().is_some_and(|ops| ops > 0),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_security_files_stop_the_node_with_a_clear_error() {
    // A malformed key file, an empty token file or half of the TLS pair is refused at
    // start, naming the flag; nothing is served.
    let bad_key = KeyFile::new(&["not-a-key"]).unwrap();
    let empty_tokens = KeyFile::new(&["# none yet"]).unwrap();
    let (cert, _, _) = secrets::tls_fixtures();
    for (flag, value, expected) in [
        ("--cluster-key-file", bad_key.arg(), "--cluster-key-file"),
        ("--api-token-file", empty_tokens.arg(), "--api-token-file"),
        (
            "--tls-cert-file",
            cert.display().to_string(),
            "--tls-key-file",
        ),
    ] {
        let out = NodeProcess::run_expecting_exit(
            NodeOptions::new("n1").flag(flag, &value),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        assert!(!out.served, "{flag}: the node served");
        assert_eq!(
            out.status.and_then(|s| s.code()),
            Some(2),
            "{flag}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(expected), "{flag}: {}", out.stderr);
    }
}
