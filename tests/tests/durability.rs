//! Proves that every acknowledged write survives the node's death: SIGKILL right
//! after the last acknowledgement and a SIGTERM shutdown both restart, on the same
//! data dir, with every value and every delete intact.

use std::time::Instant;

use ringkv_tests::{Api, NodeProcess, sorted};

const KEYS: usize = 1000;
const WRITERS: usize = 16;

fn key(i: usize) -> Vec<u8> {
    format!("durable-{i:04}").into_bytes()
}

/// Distinct values of varying length, so a mixed-up key shows.
fn value(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(v.len() + (i * 7) % 300, b'a' + (i % 26) as u8);
    v
}

/// PUTs keys `0..count` from `WRITERS` concurrent tasks; panics unless all are 204.
async fn write_all(api: &Api, count: usize) {
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..count).step_by(WRITERS) {
                let resp = api.put(&key(i), value(i)).await;
                assert_eq!(resp.status, 204, "PUT key {i} answered {resp}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a writer failed");
    }
}

/// Reads keys `0..count` concurrently and lists every key that is not its value
/// (or, for `deleted`, not 404).
async fn check_all(api: &Api, count: usize, deleted: &[usize]) -> Vec<String> {
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let api = api.clone();
        let deleted = deleted.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut wrong = Vec::new();
            for i in (t..count).step_by(WRITERS) {
                let resp = api.get(&key(i)).await;
                let ok = if deleted.contains(&i) {
                    resp.status == 404
                } else {
                    resp.status == 200 && resp.body[..] == value(i)[..]
                };
                if !ok {
                    wrong.push(format!("key {i}: {resp}"));
                }
            }
            wrong
        }));
    }
    let mut wrong = Vec::new();
    for task in tasks {
        wrong.extend(task.await.expect("a reader failed"));
    }
    wrong.sort();
    wrong
}

#[track_caller]
fn assert_none_wrong(wrong: &[String], what: &str) {
    assert!(
        wrong.is_empty(),
        "{} of {KEYS} keys wrong {what}; first ones:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// 1,000 PUTs acknowledged by 16 concurrent writers, then SIGKILL at once: after a
/// restart on the same data dir every key reads back its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let mut node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    let started = Instant::now();
    write_all(&api, KEYS).await;
    node.kill9().unwrap();
    eprintln!(
        "{KEYS} writes acknowledged in {:?}, then SIGKILL",
        started.elapsed()
    );

    node.restart().await.unwrap();
    let api = node.api();
    assert_none_wrong(&check_all(&api, KEYS, &[]).await, "after SIGKILL");
}

/// Deletes acknowledged before SIGKILL stay deleted after the restart, and values
/// written over stay overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deletes_and_overwrites_survive_sigkill() {
    let mut node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    api.put(b"gone", "v").await.assert_status(204);
    api.delete(b"gone").await.assert_status(204);
    api.put(b"over", "old").await.assert_status(204);
    let ctx = api.get(b"over").await.assert_status(200).expect_context();
    api.put_with(b"over", "new", Some(&ctx), "")
        .await
        .assert_status(204);
    node.kill9().unwrap();

    node.restart().await.unwrap();
    let api = node.api();
    api.get(b"gone").await.assert_error(404, "not_found");
    assert_eq!(&api.get(b"over").await.assert_status(200).body[..], b"new");
}

/// A blind write after a SIGKILL restart is concurrent with the one before it (a
/// sibling), so the node did not reuse a version it had already handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_not_reused_after_sigkill() {
    let mut node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    api.put(b"k", "before").await.assert_status(204);
    let stale_ctx = api.get(b"k").await.assert_status(200).expect_context();
    node.kill9().unwrap();

    node.restart().await.unwrap();
    let api = node.api();
    api.put(b"k", "after").await.assert_status(204);
    let (_, values) = api.get(b"k").await.assert_siblings();
    assert_eq!(values, sorted(&[b"after", b"before"]));

    // The pre-crash context still names exactly "before".
    api.put_with(b"k", "merged", Some(&stale_ctx), "")
        .await
        .assert_status(204);
    let (_, values) = api.get(b"k").await.assert_siblings();
    assert_eq!(values, sorted(&[b"after", b"merged"]));
}

/// SIGTERM shuts the node down cleanly (exit status 0, within the deadline) and a
/// restart on the same data dir keeps every acknowledged write and delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_keeps_data() {
    let mut node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    let count = 200;
    write_all(&api, count).await;
    let deleted = [3, 50, 199];
    for &i in &deleted {
        api.delete(&key(i)).await.assert_status(204);
    }

    let status = node.terminate().await.unwrap();
    assert!(
        status.success(),
        "SIGTERM should exit cleanly, got {status}"
    );

    node.restart().await.unwrap();
    let api = node.api();
    assert_none_wrong(&check_all(&api, count, &deleted).await, "after SIGTERM");
    assert_eq!(api.health().await.node, "n1");
}
