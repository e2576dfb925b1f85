//! Proves what README.md#a-tour says of `ringkv-node dev` beyond the tour itself:
//! `--restart-after` brings back a node that `kill -9` stopped, by itself, and bad
//! values of it are refused at start with a message naming the flag. Runs on free
//! ports (`--http-port`, `--cluster-port`), not dev's usual ones.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringkv_tests::harness::free_port;
use ringkv_tests::node_binary;

/// Deadline for a node to be up (first start, or after its restart).
const UP_TIMEOUT: Duration = Duration::from_secs(60);

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A `ringkv-node dev` process, stopped with SIGKILL to its process group on drop.
struct Dev {
    child: Child,
    _dir: tempfile::TempDir,
    data: PathBuf,
    http_port: u16,
}

impl Dev {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ringkv-dev-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let http_port = free_port(false).unwrap();
        let cluster_port = free_port(true).unwrap();
        let child = dev_command(&data, http_port, cluster_port, extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("dev.log")).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            _dir: dir,
            data,
            http_port,
        }
    }

    /// n1's pid once n1 answers `/health` and its pid file names a pid other than
    /// `not` (a restarted process), or a panic at the deadline.
    fn wait_up(&mut self, not: Option<u32>) -> u32 {
        let deadline = Instant::now() + UP_TIMEOUT;
        loop {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "dev exited early; its log:\n{}",
                self.log()
            );
            let pid = std::fs::read_to_string(self.data.join("n1.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if let Some(pid) = pid
                && Some(pid) != not
                && healthy(self.http_port)
            {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "n1 not up (again) within {UP_TIMEOUT:?}; dev's log:\n{}",
                self.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("dev.log")).unwrap_or_default()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// `ringkv-node dev --nodes 1` on the given ports, in its own process group.
fn dev_command(data: &Path, http_port: u16, cluster_port: u16, extra: &[&str]) -> Command {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(node_binary());
    cmd.args(["dev", "--nodes", "1", "--dir"])
        .arg(data)
        .args(["--http-port", &http_port.to_string()])
        .args(["--cluster-port", &cluster_port.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .process_group(0);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RINGKV_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Whether `GET /health` on 127.0.0.1:`port` answers 200 (curl, as the README does).
fn healthy(port: u16) -> bool {
    Command::new("curl")
        .args(["-sf", "-m", "2", &format!("http://127.0.0.1:{port}/health")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn restart_after_brings_a_killed_node_back() {
    // Proves a node killed with SIGKILL comes back as a new process serving the same
    // port, with no one typing `restart`, when dev runs with --restart-after.
    let mut dev = Dev::start(&["--restart-after", "500ms"]);
    let first = dev.wait_up(None);
    let status = Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {first}: {status}");
    let second = dev.wait_up(Some(first));
    assert_ne!(first, second);
    assert!(
        dev.log().contains("dev: n1 exited (signal: 9"),
        "dev did not report the kill:\n{}",
        dev.log()
    );
}

#[test]
fn bad_restart_after_values_are_refused_naming_the_flag() {
    // Proves zero, too long and unparsable delays stop dev before it starts a node,
    // with a message that names --restart-after.
    for value in ["0s", "2h", "soon"] {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port(false).unwrap();
        let cluster_port = free_port(true).unwrap();
        let out = dev_command(
            &dir.path().join("data"),
            http_port,
            cluster_port,
            &["--restart-after", value],
        )
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "--restart-after {value}: {}",
            out.status
        );
        assert!(
            stderr.contains("--restart-after"),
            "--restart-after {value}: {stderr}"
        );
        assert!(
            !dir.path().join("data").join("n1.pid").exists(),
            "--restart-after {value}: a node was started"
        );
    }
}
