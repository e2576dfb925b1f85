//! Proves the start-up contract of README.md#running-a-cluster-by-hand: bad quorum
//! flags stop the node before it serves, and every flag can come from a
//! `RINGKV_<FLAG>` env var.

use std::time::Duration;

use ringkv_tests::{NodeOptions, NodeProcess};

/// How long a node may take to refuse bad flags.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// `r` or `w` outside `1..=n` makes the node exit non-zero, quickly, with a message
/// on stderr, and it never answers `/health`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_flags_outside_1_to_n_are_refused_at_start() {
    for (n, r, w) in [(3, 4, 2), (3, 2, 4), (3, 0, 2), (3, 2, 0), (1, 2, 1)] {
        let out =
            NodeProcess::run_expecting_exit(NodeOptions::new("n1").quorum(n, r, w), REFUSE_TIMEOUT)
                .await
                .unwrap();
        let what = format!("--n {n} --r {r} --w {w}");
        let status = out
            .status
            .unwrap_or_else(|| panic!("{what}: still running after {REFUSE_TIMEOUT:?}"));
        assert!(!status.success(), "{what}: exited with {status}");
        assert!(!out.served, "{what}: served /health before exiting");
        assert!(
            !out.stderr.trim().is_empty(),
            "{what}: nothing on stderr (stdout: {:?})",
            out.stdout
        );
    }
}

/// Flags read from `RINGKV_<FLAG>` env vars take effect: `RINGKV_MAX_KEY_BYTES=16`
/// refuses a 17-byte key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_are_read_from_env_vars() {
    let node = NodeProcess::start(NodeOptions::new("n1").env("RINGKV_MAX_KEY_BYTES", "16"))
        .await
        .unwrap();
    let api = node.api();
    api.put(&[b'a'; 16], "v").await.assert_status(204);
    api.put(&[b'a'; 17], "v")
        .await
        .assert_error(400, "key_too_long");
}
