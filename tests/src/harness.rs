//! Real `ringkv-node` processes for tests: free ports, a temp data dir, readiness
//! by polling `GET /health` with a deadline, SIGKILL/SIGTERM/SIGSTOP, restart with
//! the same id, ports and data dir, and cleanup on drop.
//!
//! Each [`NodeProcess`] owns a temp directory `ringkv-<id>-XXXX/` holding `data/`
//! (the `--data-dir`) and `node.log` (the process's stdout and stderr, appended
//! across restarts with a marker line per start). Dropping the node kills it with
//! SIGKILL; if the thread is panicking (a failed test), the directory is kept and
//! its path and the log's tail are printed.
//!
//! A node binds `--http` and `--cluster` on 127.0.0.1 unless
//! [`NodeOptions::bind_ip`] names another loopback address, as the network-fault
//! tests do so that each node's traffic carries its own address (see
//! [`crate::netfault`]).
//!
//! Caveats: free ports are found below the ephemeral range by binding and releasing
//! them, so another process may take one before the node binds it; a first start that fails with
//! "address in use" is retried on fresh ports (a restart is not: it must keep its
//! ports). Signals other than SIGKILL go through the `kill` command, because the
//! workspace denies `unsafe` and `libc::kill` is an unsafe call.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tempfile::TempDir;

use crate::http::{Api, HttpClient};

/// Env var naming the `ringkv-node` binary to run.
pub const NODE_BIN_ENV: &str = "RINGKV_NODE_BIN";

/// Default deadline for a started node to answer `GET /health` with 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new cluster may take to put every node on its ring: each node after
/// the first joins, receiving its ranges, and a test binary starts several 5-node
/// clusters at once on 2 cores (once seen to take over 30 s).
pub const RING_SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Default deadline for a node to exit after SIGTERM.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of the log printed when a test fails.
const LOG_TAIL_BYTES_MAX: u64 = 16 * 1024;

/// First starts tried on fresh ports when the node reports "address in use".
const PORT_ATTEMPTS_MAX: usize = 5;

/// How often readiness and exit are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The `ringkv-node` binary: `$RINGKV_NODE_BIN` if set, else `ringkv-node` in the
/// profile directory of the running test executable (`<target>/release/deps/x`
/// → `<target>/release/ringkv-node`). Panics with a hint when it does not exist.
pub fn node_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(NODE_BIN_ENV) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{NODE_BIN_ENV}={} does not name a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps/");
    let path = profile_dir.join("ringkv-node");
    assert!(
        path.is_file(),
        "no ringkv-node binary at {}: build it first with \
         `cargo build --release -p ringkv-node` (same CARGO_TARGET_DIR as the tests), \
         or set {NODE_BIN_ENV} to its path",
        path.display()
    );
    path
}

/// Ports handed out by this process, so parallel tests never get the same one.
static PORTS_TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port on 127.0.0.1 that is free now for TCP (and for UDP too if `udp`), and that
/// this process has not handed out before. The port is released before returning.
pub fn free_port(udp: bool) -> anyhow::Result<u16> {
    free_port_on(Ipv4Addr::LOCALHOST, udp)
}

/// [`free_port`] on `ip`. Ports are unique per process across all addresses.
///
/// Ports come from below the kernel's ephemeral range (see [`listen_ports`]): a
/// port from inside it (what binding port 0 gives) can be taken, while its node is
/// killed, as the local end of some outgoing connection, and the restart that must
/// reuse it then fails with "address in use".
pub fn free_port_on(ip: Ipv4Addr, udp: bool) -> anyhow::Result<u16> {
    let ports = listen_ports();
    let span = u32::from(ports.end() - ports.start()) + 1;
    // Start at a point that differs between test processes, so that parallel test
    // binaries rarely probe the same ports.
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    let mut taken = PORTS_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..span {
        let offset = u16::try_from((seed.wrapping_add(i)) % span).expect("span fits u16");
        let port = ports.start() + offset;
        if taken.contains(&port) || TcpListener::bind((ip, port)).is_err() {
            continue;
        }
        if udp && UdpSocket::bind((ip, port)).is_err() {
            continue;
        }
        taken.insert(port);
        return Ok(port);
    }
    bail!("no free port on {ip} in {ports:?}")
}

/// The ports tests listen on: the 12,000 ports below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768-60999 by default), or
/// 10000-21999 if that range starts too low to leave room.
pub fn listen_ports() -> std::ops::RangeInclusive<u16> {
    const SPAN: u16 = 12_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > SPAN + 10_000 {
        (ephemeral_low - SPAN)..=(ephemeral_low - 1)
    } else {
        10_000..=(10_000 + SPAN - 1)
    }
}

/// How to start one node. `n`, `r`, `w` default to 1; `args` are appended after the
/// flags the harness sets (`--id --data-dir --http --cluster --n --r --w --join`).
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub id: String,
    pub n: usize,
    pub r: usize,
    pub w: usize,
    /// Seed cluster addresses, passed as one comma-separated `--join`.
    pub join: Vec<SocketAddr>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Extra environment variables. Every `RINGKV_*` variable of the test's own
    /// environment is removed from the child's, so only these reach it.
    pub env: Vec<(String, String)>,
    pub ready_timeout: Duration,
    /// The address `--http` and `--cluster` bind to; 127.0.0.1 by default.
    pub bind_ip: Ipv4Addr,
    /// A host name for `--advertise-cluster HOST:<cluster port>`, as containers give
    /// (none: the node advertises its bind address).
    pub advertise_cluster_host: Option<String>,
    /// The CA of the node's TLS certificate, when it serves HTTPS ([`Self::tls`]):
    /// readiness is then probed over HTTPS.
    pub tls_ca: Option<PathBuf>,
    /// `(http, cluster)` ports to bind instead of fresh ones ([`Self::ports`]).
    pub ports: Option<(u16, u16)>,
}

impl NodeOptions {
    /// A single-replica node: `--n 1 --r 1 --w 1`.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            n: 1,
            r: 1,
            w: 1,
            join: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            ready_timeout: READY_TIMEOUT,
            bind_ip: Ipv4Addr::LOCALHOST,
            advertise_cluster_host: None,
            tls_ca: None,
            ports: None,
        }
    }

    /// Binds `--http` and `--cluster` on these ports (taken with [`free_port_on`])
    /// instead of fresh ones, so that the node's URL is known before it starts, as a
    /// chaos run's spare node must be. A start that finds one in use fails rather
    /// than moving to other ports.
    pub fn ports(mut self, http: u16, cluster: u16) -> Self {
        self.ports = Some((http, cluster));
        self
    }

    /// Serves HTTPS with `cert` and `key` (`--tls-cert-file`, `--tls-key-file`), signed
    /// by `ca`; the node's base URL becomes `https://`.
    pub fn tls(mut self, cert: &Path, key: &Path, ca: &Path) -> Self {
        self.tls_ca = Some(ca.to_path_buf());
        self.flag("--tls-cert-file", cert.display())
            .flag("--tls-key-file", key.display())
    }

    /// Sets `--n --r --w`.
    pub fn quorum(mut self, n: usize, r: usize, w: usize) -> Self {
        (self.n, self.r, self.w) = (n, r, w);
        self
    }

    /// Adds seeds to `--join`.
    pub fn join(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.join.extend(seeds);
        self
    }

    /// Binds `--http` and `--cluster` on `ip` (a loopback address such as
    /// 127.0.0.23) instead of 127.0.0.1.
    pub fn bind_ip(mut self, ip: Ipv4Addr) -> Self {
        self.bind_ip = ip;
        self
    }

    /// Advertises the cluster address as `host:<cluster port>` (a name to resolve).
    pub fn advertise_cluster_host(mut self, host: impl Into<String>) -> Self {
        self.advertise_cluster_host = Some(host.into());
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends `name value`, e.g. `.flag("--max-siblings", 3)`.
    pub fn flag(self, name: &str, value: impl ToString) -> Self {
        self.arg(name).arg(value.to_string())
    }

    /// Sets an environment variable of the child.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A running (or stopped) `ringkv-node` process; see the module docs.
#[derive(Debug)]
pub struct NodeProcess {
    opts: NodeOptions,
    http_addr: SocketAddr,
    cluster_addr: SocketAddr,
    /// Holds `data/` and `node.log`; kept on disk when a test fails.
    root: TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    api: Api,
    starts: u32,
}

impl NodeProcess {
    /// Starts a node on fresh ports with a new data dir and waits until it is ready.
    pub async fn start(opts: NodeOptions) -> anyhow::Result<Self> {
        let root = tempfile::Builder::new()
            .prefix(&format!("ringkv-{}-", opts.id))
            .tempdir()
            .context("creating the node's temp dir")?;
        let data_dir = root.path().join("data");
        let log_path = root.path().join("node.log");
        let ip = opts.bind_ip;
        let fixed_ports = opts.ports;
        let (http_port, cluster_port) = match fixed_ports {
            Some(ports) => ports,
            None => (free_port_on(ip, false)?, free_port_on(ip, true)?),
        };
        let mut node = Self {
            http_addr: SocketAddr::from((ip, http_port)),
            cluster_addr: SocketAddr::from((ip, cluster_port)),
            opts,
            root,
            data_dir,
            log_path,
            child: None,
            api: Api::new(String::new(), HttpClient::new()),
            starts: 0,
        };
        let mut attempt = 1;
        loop {
            let log_offset = node.log_len();
            match node.spawn_and_wait_ready().await {
                Ok(()) => return Ok(node),
                Err(e)
                    if fixed_ports.is_none()
                        && attempt < PORT_ATTEMPTS_MAX
                        && node.log_since(log_offset).contains("in use") =>
                {
                    eprintln!(
                        "ringkv-tests: {} could not bind its ports ({e:#}); retrying on new ports",
                        node.opts.id
                    );
                    node.kill_quietly();
                    node.http_addr.set_port(free_port_on(ip, false)?);
                    node.cluster_addr.set_port(free_port_on(ip, true)?);
                    attempt += 1;
                }
                Err(e) => return Err(node.fail_start(e)),
            }
        }
    }

    /// Starts a node with `NodeOptions::new(id)`.
    pub async fn start_single(id: &str) -> anyhow::Result<Self> {
        Self::start(NodeOptions::new(id)).await
    }

    /// Runs a node that is expected to refuse to start: waits up to `timeout` for it
    /// to exit, polling `GET /health` meanwhile to see whether it ever served.
    /// stdout and stderr are captured separately. A node still running at the
    /// deadline is killed and reported with `status: None`.
    pub async fn run_expecting_exit(
        opts: NodeOptions,
        timeout: Duration,
    ) -> anyhow::Result<ExitOutput> {
        let root = tempfile::Builder::new()
            .prefix(&format!("ringkv-{}-", opts.id))
            .tempdir()?;
        let ip = opts.bind_ip;
        let http_addr = SocketAddr::from((ip, free_port_on(ip, false)?));
        let cluster_addr = SocketAddr::from((ip, free_port_on(ip, true)?));
        let stdout_path = root.path().join("stdout.log");
        let stderr_path = root.path().join("stderr.log");
        let mut cmd = command(&opts, &root.path().join("data"), http_addr, cluster_addr);
        cmd.stdout(File::create(&stdout_path)?)
            .stderr(File::create(&stderr_path)?);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", node_binary().display()))?;
        let probe = HttpClient::with_timeout(Duration::from_millis(500));
        let health_url = format!("http://{http_addr}/health");
        let deadline = Instant::now() + timeout;
        let mut served = false;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            if let Ok(resp) = probe.get(&health_url).await {
                served |= resp.status == 200;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        Ok(ExitOutput {
            status,
            served,
            stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        })
    }

    pub fn id(&self) -> &str {
        &self.opts.id
    }

    pub fn options(&self) -> &NodeOptions {
        &self.opts
    }

    /// Replaces the `--join` seeds used by the next [`Self::restart`], e.g. with the
    /// nodes still running, so that a node started first (with no seeds) rejoins.
    pub fn set_join(&mut self, seeds: impl IntoIterator<Item = SocketAddr>) {
        self.opts.join = seeds.into_iter().collect();
    }

    /// The `--http` address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The `--cluster` address (TCP peer RPC and UDP gossip).
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster_addr
    }

    /// `http://IP:PORT` of `--http` (`https://` for a node with [`NodeOptions::tls`]).
    pub fn base_url(&self) -> String {
        let scheme = if self.opts.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.http_addr)
    }

    /// `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The node's combined stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The HTTP API of this node. Take a new one after a restart: the old one's
    /// pooled connections went to the old process.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// The child's pid, if running.
    pub fn pid(&mut self) -> Option<u32> {
        if self.is_running() {
            self.child.as_ref().map(Child::id)
        } else {
            None
        }
    }

    /// Whether the child has been started and has not exited.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, then reap the child. Nothing of the process's state is flushed.
    pub fn kill9(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", self.opts.id))?;
        // `Child::kill` is SIGKILL on Unix.
        child.kill().context("SIGKILL")?;
        Ok(child.wait()?)
    }

    /// SIGTERM and wait for a graceful exit; SIGKILL and fail if it takes longer
    /// than [`TERMINATE_TIMEOUT`].
    pub async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        self.terminate_within(TERMINATE_TIMEOUT).await
    }

    /// SIGTERM and wait up to `timeout` for the exit.
    pub async fn terminate_within(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("TERM")?;
        match self.wait_exit(timeout).await {
            Ok(status) => Ok(status),
            Err(e) => {
                self.kill_quietly();
                Err(e.context("after SIGTERM; killed it with SIGKILL"))
            }
        }
    }

    /// Waits up to `timeout` for the child to exit on its own and reaps it.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("{} is not running", self.opts.id))?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.opts.id);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The child's exit status if it has exited (then reaped: the node counts as
    /// stopped), `None` while it runs. For a node expected to exit by itself, such
    /// as one leaving the ring, polled without blocking.
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("{} is not running", self.opts.id))?;
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// SIGSTOP: the process freezes with its sockets open (a hung node).
    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&mut self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, `INT`, …) with `kill(1)`.
    pub fn signal(&mut self, name: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("{} is not running", self.opts.id))?;
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .context("running kill(1)")?;
        if !status.success() {
            bail!("kill -{name} {pid} failed: {status}");
        }
        Ok(())
    }

    /// Starts the stopped node again with the same id, ports, flags and data dir,
    /// and waits until it is ready. Fails if it is still running.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!(
                "{} is still running: kill9() or terminate() it before restart()",
                self.opts.id
            );
        }
        self.child = None;
        match self.spawn_and_wait_ready().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail_start(e)),
        }
    }

    /// The last `LOG_TAIL_BYTES_MAX` bytes of the log.
    pub fn log_tail(&self) -> String {
        let Ok(mut file) = File::open(&self.log_path) else {
            return String::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES_MAX)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log_path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    fn log_since(&self, offset: u64) -> String {
        let Ok(mut file) = File::open(&self.log_path) else {
            return String::new();
        };
        let _ = file.seek(SeekFrom::Start(offset));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    async fn spawn_and_wait_ready(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready().await
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let mut cmd = command(
            &self.opts,
            &self.data_dir,
            self.http_addr,
            self.cluster_addr,
        );
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        writeln!(
            log,
            "==== ringkv-tests: start #{} of {}: {:?}",
            self.starts, self.opts.id, cmd
        )?;
        cmd.stdout(log.try_clone()?).stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", node_binary().display()))?;
        self.child = Some(child);
        self.api = Api::new(self.base_url(), HttpClient::new());
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let timeout = self.opts.ready_timeout;
        let deadline = Instant::now() + timeout;
        let probe = HttpClient::with_timeout(Duration::from_secs(2));
        let url = format!("{}/health", self.base_url());
        loop {
            let exited = match &mut self.child {
                Some(child) => child.try_wait()?,
                None => bail!("{} is not running", self.opts.id),
            };
            if let Some(status) = exited {
                self.child = None;
                bail!("{} exited with {status} before it was ready", self.opts.id);
            }
            let last = match &self.opts.tls_ca {
                Some(ca) => match https_health(&url, ca).await {
                    Ok(()) => return Ok(()),
                    Err(e) => format!("{e:#}"),
                },
                None => match probe.get(&url).await {
                    Ok(resp) if resp.status == 200 => return Ok(()),
                    Ok(resp) => format!("GET /health answered {}", resp.status),
                    Err(e) => format!("{e:#}"),
                },
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} was not ready within {timeout:?} (last: {last})",
                    self.opts.id
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn kill_quietly(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A failed (re)start: stop the child, keep the directory, and put its path and
    /// the log's tail into the error.
    fn fail_start(&mut self, e: anyhow::Error) -> anyhow::Error {
        self.kill_quietly();
        self.root.disable_cleanup(true);
        anyhow!(
            "starting {} failed: {e:#}\n(binary {}; kept {}) log tail:\n{}",
            self.opts.id,
            node_binary().display(),
            self.root.path().display(),
            self.log_tail()
        )
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill_quietly();
        if std::thread::panicking() {
            self.root.disable_cleanup(true);
            eprintln!(
                "\n==== ringkv-tests: test failed; kept {} for node {} (http {}, cluster {}); \
                 log {} ends with:\n{}\n==== end of {} log\n",
                self.root.path().display(),
                self.opts.id,
                self.http_addr,
                self.cluster_addr,
                self.log_path.display(),
                self.log_tail(),
                self.opts.id
            );
        }
    }
}

/// `GET /health` over HTTPS, trusting `ca`: ok when it answers 200.
async fn https_health(url: &str, ca: &Path) -> anyhow::Result<()> {
    let base = url.trim_end_matches("/health");
    let client = ringkv_client::Client::with_config(
        [base],
        ringkv_client::ClientConfig {
            ca_file: Some(ca.to_path_buf()),
            request_timeout_ms: 2_000,
            ..Default::default()
        },
    )?;
    client.health(base).await?;
    Ok(())
}

/// The `ringkv` CLI binary, beside `ringkv-node`.
pub fn cli_binary() -> PathBuf {
    let path = node_binary().with_file_name("ringkv");
    assert!(
        path.is_file(),
        "no ringkv binary at {}: build it with `cargo build --release --workspace --bins`",
        path.display()
    );
    path
}

/// What a node that was expected to refuse to start did.
#[derive(Debug)]
pub struct ExitOutput {
    /// `None` if it was still running at the deadline (and was killed).
    pub status: Option<ExitStatus>,
    /// Whether `GET /health` ever answered 200.
    pub served: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The command line of a node; stdout and stderr are left to the caller.
fn command(
    opts: &NodeOptions,
    data_dir: &Path,
    http_addr: SocketAddr,
    cluster_addr: SocketAddr,
) -> Command {
    let mut cmd = Command::new(node_binary());
    cmd.arg("--id")
        .arg(&opts.id)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--http")
        .arg(http_addr.to_string())
        .arg("--cluster")
        .arg(cluster_addr.to_string())
        .arg("--n")
        .arg(opts.n.to_string())
        .arg("--r")
        .arg(opts.r.to_string())
        .arg("--w")
        .arg(opts.w.to_string());
    if !opts.join.is_empty() {
        let seeds: Vec<String> = opts.join.iter().map(SocketAddr::to_string).collect();
        cmd.arg("--join").arg(seeds.join(","));
    }
    if let Some(host) = &opts.advertise_cluster_host {
        cmd.arg("--advertise-cluster")
            .arg(format!("{host}:{}", cluster_addr.port()));
    }
    cmd.args(&opts.args);
    let inherited: Vec<OsString> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| k.to_string_lossy().starts_with("RINGKV_"))
        .collect();
    for key in inherited {
        cmd.env_remove(key);
    }
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        cmd.env("RUST_BACKTRACE", "1");
    }
    cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(Stdio::null());
    cmd
}

/// Several nodes `n1..nK` in one cluster: node `i` joins every node started before it.
#[derive(Debug)]
pub struct TestCluster {
    pub nodes: Vec<NodeProcess>,
}

impl TestCluster {
    /// Starts `count` nodes with `--n n --r r --w w`; `configure` may change each
    /// node's options (extra flags) before it starts. Waits until every node sees
    /// all `count` members alive.
    pub async fn start(
        count: usize,
        (n, r, w): (usize, usize, usize),
        configure: impl Fn(NodeOptions) -> NodeOptions,
    ) -> anyhow::Result<Self> {
        let mut nodes: Vec<NodeProcess> = Vec::with_capacity(count);
        for i in 1..=count {
            let seeds: Vec<SocketAddr> = nodes.iter().map(NodeProcess::cluster_addr).collect();
            let opts = configure(
                NodeOptions::new(format!("n{i}"))
                    .quorum(n, r, w)
                    .join(seeds),
            );
            nodes.push(NodeProcess::start(opts).await?);
        }
        let mut cluster = Self { nodes };
        cluster.wait_members_alive(count, READY_TIMEOUT).await?;
        cluster.wait_ring(count, RING_SETTLE_TIMEOUT).await?;
        Ok(cluster)
    }

    /// Waits until every running node has a committed ring of `members` nodes and no
    /// membership change in flight.
    pub async fn wait_ring(&mut self, members: usize, timeout: Duration) -> anyhow::Result<()> {
        let running = self.running_apis();
        crate::http::wait_ring(&running, members, timeout)
            .await
            .map_err(|e| anyhow!(e))
    }

    fn running_apis(&mut self) -> Vec<(String, Api)> {
        self.nodes
            .iter_mut()
            .filter_map(|node| {
                node.is_running()
                    .then(|| (node.id().to_owned(), node.api()))
            })
            .collect()
    }

    /// The node with id `n{i}` (1-based, as the ids are).
    pub fn node(&mut self, i: usize) -> &mut NodeProcess {
        &mut self.nodes[i - 1]
    }

    /// Waits until every running node's `/health` reports `members_alive == expected`.
    pub async fn wait_members_alive(
        &mut self,
        expected: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let running: Vec<(String, Api)> = self
            .nodes
            .iter_mut()
            .filter_map(|node| {
                node.is_running()
                    .then(|| (node.id().to_owned(), node.api()))
            })
            .collect();
        crate::http::wait_members_alive(&running, expected, timeout)
            .await
            .map_err(|e| anyhow!(e))
    }
}
