//! Proves that a record damaged on disk is caught by its crc32: the node reports it in
//! `ringkv_storage_corrupt_records_total`, treats the key as missing (never a crash,
//! never wrong bytes), serves every other key, and accepts a new write to the key.

use ringkv_node::storage::{Backend, Cf, RocksBackend, RocksOptions};
use ringkv_tests::NodeProcess;

/// Flips one bit near the end of `key`'s stored record in a stopped node's store.
fn flip_a_byte(db_dir: &std::path::Path, key: &[u8]) {
    let backend = RocksBackend::open(db_dir, &RocksOptions::default())
        .expect("open the stopped node's store");
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
