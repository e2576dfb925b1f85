//! Proves that a record damaged on disk is caught by its crc32: the node reports it in
//! `ringkv_storage_corrupt_records_total`, treats the key as missing (never a crash,
//! never wrong bytes), serves every other key, and accepts a new write to the key; and
//! that in a cluster, anti-entropy brings the damaged record back from the other
//! replicas once the check has found it, with no client read of the key.

use ringkv_node::replica::layout::stored_key;
use ringkv_node::storage::{Backend, Cf, RocksBackend, RocksOptions};
use std::time::{Duration, Instant};

use ringkv_tests::{NodeProcess, TestCluster};

/// Flips one bit near the end of `key`'s stored record in a stopped node's store.
fn flip_a_byte(db_dir: &std::path::Path, key: &[u8]) {
    let backend = RocksBackend::open(db_dir, &RocksOptions::default())
        .expect("open the stopped node's store");
    let key = &stored_key(key);
    let mut raw = backend
        .get(Cf::Data, key)
        .expect("read")
        .expect("the record exists");
    let at = raw.len() - 3;
    raw[at] ^= 0x20;
    backend
        .put(Cf::Data, key, &raw, true)
        .expect("write the damaged record");
}

/// A flipped byte makes the key read as missing and is counted; other keys are intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_counted_and_reads_as_missing() {
    let mut node = NodeProcess::start_single("n1").await.expect("start");
    let api = node.api();
    api.put(b"victim", "precious").await.assert_status(204);
    api.put(b"bystander", "fine").await.assert_status(204);
    node.terminate().await.expect("stop");

    flip_a_byte(&node.data_dir().join("db"), b"victim");

    node.restart().await.expect("restart");
    let api = node.api();
    let victim = api.get(b"victim").await;
    victim.assert_error(404, "not_found");
    assert_ne!(victim.body.as_ref(), b"precious");
    let bystander = api.get(b"bystander").await;
    bystander.assert_status(200);
    assert_eq!(bystander.body.as_ref(), b"fine");

    assert_eq!(
        api.metric("ringkv_storage_corrupt_records_total").await,
        1.0,
        "the damaged record is counted once"
    );

    // The key can be written again; the damaged record is replaced.
    api.put(b"victim", "rewritten").await.assert_status(204);
    let again = api.get(b"victim").await;
    again.assert_status(200);
    assert_eq!(again.body.as_ref(), b"rewritten");
}

/// A record damaged on one of three replicas, found by a direct replica read (which
/// repairs nothing), is back on that replica after anti-entropy rounds, with no read
/// of the key through the KV API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_restores_a_corrupt_record_from_the_other_replicas() {
    let mut cluster = TestCluster::start(3, (3, 2, 2), |o| {
        o.flag("--anti-entropy-interval", "1s")
            .flag("--hinted-handoff", "false")
    })
    .await
    .expect("start 3 nodes");
    let api1 = cluster.node(1).api();
    api1.put_with(b"victim", "precious", None, "w=3")
        .await
        .assert_status(204);
    let n3 = cluster.node(3);
    n3.terminate().await.expect("stop n3");
    flip_a_byte(&n3.data_dir().join("db"), b"victim");
    n3.restart().await.expect("restart n3");
    cluster
        .wait_members_alive(3, Duration::from_secs(30))
        .await
        .expect("n3 back");
    let api3 = cluster.node(3).api();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_missing = false;
    loop {
        let body = api3.replicas(b"victim").await;
        let n3 = body
            .replicas
            .iter()
            .find(|r| r.node == "n3")
            .expect("n3 listed");
        match n3.found {
            Some(false) => seen_missing = true,
            Some(true) => {
                assert!(
                    seen_missing,
                    "n3 never read the damaged record as missing: {n3:?}"
                );
                assert_eq!(
                    n3.siblings.as_deref(),
                    Some(&[ringkv_tests::b64(b"precious")][..])
                );
                break;
            }
            None => {}
        }
        assert!(
            Instant::now() < deadline,
            "60 s after n3 found its record damaged, anti-entropy has not restored it: {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(api3.metric("ringkv_storage_corrupt_records_total").await >= 1.0);
}
