//! Proves README.md#a-tour works as written: after the README's install step (its
//! `export PATH=…` line, run as written with `CARGO_TARGET_DIR` naming the build this
//! test belongs to), its `ringkv-node dev --nodes 5` starts, every shell block of the
//! tour (curl and the `ringkv` CLI, `kill -9`, hinted handoff, the node's return)
//! exits 0 and prints what its `# =>` comments say, `restart n2` typed into dev brings
//! n2 back, and Ctrl-C stops every node with a shutdown line that names it.
//!
//! The steps come from the README (see `ringkv_tests::readme`), so the test and the
//! README cannot drift apart. The tour uses dev's fixed ports (HTTP 8001-8005, cluster
//! 7001-7005); the test fails at once, saying so, if one of them is taken.

use std::fs::File;
use std::io::Write as _;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use ringkv_tests::promtool;
use ringkv_tests::readme::{self, Step};
use tempfile::TempDir;

/// Longest a shell step may run: its waits (gossip, handoff) take seconds; this only
/// stops a broken step from hanging the suite.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// Longest the cluster may take to stop after Ctrl-C (each node drains up to 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The ports `ringkv-node dev --nodes 5` binds.
const DEV_PORTS: [u16; 10] = [8001, 8002, 8003, 8004, 8005, 7001, 7002, 7003, 7004, 7005];

#[test]
fn the_readme_tour_runs_as_written() {
    // Proves each tour step of the README succeeds and prints what it promises, from
    // the install step to Ctrl-C, against a real `ringkv-node dev --nodes 5`.
    let steps = readme::tour(&readme::read().unwrap()).unwrap();
    let setup: String = steps
        .iter()
        .filter_map(|s| match s {
            Step::Setup(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(!setup.is_empty(), "the README's tour has no install step");
    for port in DEV_PORTS {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok()
                && UdpSocket::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken: the tour needs `ringkv-node dev --nodes 5`'s ports \
             8001-8005 and 7001-7005 (is a dev cluster running?)"
        );
    }
    let target_dir = target_dir();
    for bin in ["ringkv-node", "ringkv"] {
        let path = target_dir.join("release").join(bin);
        assert!(
            path.is_file(),
            "no {} (build the binaries first: cargo build --release --workspace --bins)",
            path.display()
        );
    }

    let mut tour = Tour::new(target_dir, setup);
    let mut shell_steps = 0;
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Setup(_) => {}
            Step::Dev(command) => tour.start_dev(command),
            Step::Sh(block) => {
                tour.run_sh(i, block);
                shell_steps += 1;
            }
            Step::Stdin(lines) => tour.type_into_dev(lines),
        }
    }
    assert!(
        shell_steps >= 5,
        "the tour has only {shell_steps} shell steps"
    );
    // After the tour's traffic (gossip, peer calls, hints), every series still passes.
    match promtool::find() {
        Some(promtool) => {
            let body = curl("http://127.0.0.1:8001/metrics");
            if let Err(complaint) = promtool::check_metrics(&promtool, &body).unwrap() {
                panic!("promtool check metrics after the tour: {complaint}\n{body}");
            }
        }
        None => println!("SKIPPED: promtool not found; n1's metrics after the tour not checked"),
    }
    tour.ctrl_c();
    let log = tour.dev_log();
    for id in ["n1", "n2", "n3", "n4", "n5"] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(&format!("[{id}] ")) && l.ends_with("shutting down")),
            "no `[{id}] … shutting down` line in dev's output:\n{log}"
        );
    }
    assert!(
        log.contains("dev: n2 exited (signal: 9"),
        "dev did not report n2's kill:\n{log}"
    );
    for line in log.lines().filter(|l| is_log_event(l)) {
        assert!(line.starts_with('['), "a log line without its node: {line}");
    }
}

/// The body of a GET with curl, which the tour has already needed.
fn curl(url: &str) -> String {
    let out = Command::new("curl").args(["-sf", url]).output().unwrap();
    assert!(out.status.success(), "curl {url}: {}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// A line written by a node's or dev's log subscriber (`… INFO target: …`).
fn is_log_event(line: &str) -> bool {
    ["  INFO ", "  WARN ", " ERROR ", " DEBUG "]
        .iter()
        .any(|level| line.contains(level))
}

/// The target dir of this build: `<target>/release/deps/<test>` → `<target>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .expect("the test runs from <target>/release/deps/")
        .to_owned()
}

/// The tour's working folder (the "clone's folder" of the README), the running dev
/// command, and its output. Dropping it kills dev's process group; when the test
/// failed, the folder is kept and the end of dev's output printed.
struct Tour {
    dir: Option<TempDir>,
    target_dir: PathBuf,
    setup: String,
    dev: Option<(Child, ChildStdin)>,
}

impl Tour {
    fn new(target_dir: PathBuf, setup: String) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ringkv-tour-")
            .tempdir()
            .unwrap();
        Self {
            dir: Some(dir),
            target_dir,
            setup,
            dev: None,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// `bash FLAGS… -c SCRIPT` with the install step in front of `script`, in the
    /// tour's folder, in a process group of its own (as a terminal's job is), with only
    /// the environment a fresh shell has: no `RINGKV_*` variables from the test's.
    fn bash(&self, flags: &[&str], script: &str, stdout: File, stderr: File) -> Command {
        let mut cmd = Command::new("bash");
        cmd.args(flags)
            .arg("-c")
            .arg(format!("{}{script}", self.setup))
            .current_dir(self.dir())
            .env("CARGO_TARGET_DIR", &self.target_dir)
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RINGKV_") {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    fn start_dev(&mut self, command: &str) {
        assert!(self.dev.is_none(), "the tour starts dev twice");
        // dev's stdout (its banner) and stderr (its nodes' logs) in one file, in order.
        let log = File::create(self.dir().join("dev.log")).unwrap();
        let mut cmd = self.bash(
            &[],
            &format!("exec {}", command.trim()),
            log.try_clone().unwrap(),
            log,
        );
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        self.dev = Some((child, stdin));
    }

    fn run_sh(&mut self, index: usize, block: &str) {
        let out_path = self.dir().join(format!("step-{index}.out"));
        let err_path = self.dir().join(format!("step-{index}.err"));
        let mut child = self
            .bash(
                &["-euo", "pipefail"],
                block,
                File::create(&out_path).unwrap(),
                File::create(&err_path).unwrap(),
            )
            .spawn()
            .unwrap();
        let status = wait_until(&mut child, STEP_TIMEOUT);
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        let Some(status) = status else {
            let _ = kill_group(&child, "KILL");
            let _ = child.wait();
            panic!(
                "tour step {index} still running after {STEP_TIMEOUT:?}:\n{block}\n\
                 --- stdout ---\n{out}\n--- stderr ---\n{err}"
            );
        };
        assert!(
            status.success(),
            "tour step {index} failed ({status}):\n{block}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
        );
        for pieces in readme::expectations(block) {
            assert!(
                readme::prints(&out, &pieces),
                "tour step {index} did not print {:?}:\n{block}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
                pieces.join("…")
            );
        }
    }

    fn type_into_dev(&mut self, lines: &str) {
        let (_, stdin) = self
            .dev
            .as_mut()
            .expect("the tour types into dev before starting it");
        stdin.write_all(lines.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Ctrl-C in dev's terminal: SIGINT to its whole process group, then its exit.
    fn ctrl_c(&mut self) {
        let (mut child, stdin) = self.dev.take().expect("dev is running");
        drop(stdin);
        kill_group(&child, "INT").unwrap();
        match wait_until(&mut child, STOP_TIMEOUT) {
            Some(status) => assert!(status.success(), "dev exited with {status} after Ctrl-C"),
            None => {
                let _ = kill_group(&child, "KILL");
                let _ = child.wait();
                panic!("dev still running {STOP_TIMEOUT:?} after Ctrl-C");
            }
        }
    }

    fn dev_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("dev.log")).unwrap_or_default()
    }
}

impl Drop for Tour {
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.dev.take() {
            let _ = kill_group(&child, "KILL");
            let _ = child.wait();
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let log = std::fs::read_to_string(dir.path().join("dev.log")).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(80)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!(
                "tour failed; its folder is kept at {}\n--- end of dev's output ---\n{tail}",
                dir.keep().display()
            );
        }
    }
}

/// Sends `signal` to the process group `child` leads (it was spawned with
/// `process_group(0)`, so the group is the child and what it started).
fn kill_group(child: &Child, signal: &str) -> std::io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{}", child.id()))
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "kill -{signal} -- -{} failed: {status}",
            child.id()
        )))
    }
}

/// The child's exit status, or `None` if it is still running after `timeout`.
fn wait_until(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
