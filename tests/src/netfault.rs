//! Network partitions between `ringkv-node` processes on one machine, made with
//! nftables rules on loopback: no namespaces, no containers.
//!
//! All of 127.0.0.0/8 is local on Linux, so each node can own an address: a
//! [`NodeIp`] leases one of 127.0.0.10..=127.0.0.250 and
//! [`NodeOptions::bind_ip`](crate::NodeOptions::bind_ip) makes the node bind its
//! `--http` and `--cluster` there. The node's gossip socket is bound to the cluster
//! address and its peer RPC client connects *from* the cluster address, so every
//! packet between nodes A and B carries `saddr A, daddr B`. A [`NetFaults`] owns
//! one nftables table (`ip ringkv_<pid>_<n>`) with one base chain and cuts a
//! direction with one rule `ip saddr A ip daddr B counter drop`. Tests talk HTTP
//! to the nodes from 127.0.0.1, which is never a node's address, so no rule
//! touches them.
//!
//! Where the packet is dropped matters ([`DropAt`]). A loopback packet passes the
//! `output` hook once on its way out and the `input` hook once on its way in. A
//! drop on `output` makes a UDP `send_to` fail at once with `EPERM`, which a real
//! network never does (TCP just retransmits, as after a loss); a drop on `input`
//! is silent for both: the send succeeds and the packet vanishes, so the sender
//! learns only by timeouts, as in a real partition. [`NetFaults::new`] therefore
//! drops at the receiver.
//!
//! Safety of the host: every address in a rule must be in 127.0.0.0/8 and must
//! not be 127.0.0.1 (checked before any rule is written; a cut naming another
//! address fails), so a rule cannot affect traffic other than between test nodes.
//! Dropping a [`NetFaults`] deletes its table; a table left by a process that died
//! without unwinding carries that process's pid in its name, and [`cleanup_stale`]
//! (called by [`NetFaults::new`] and [`NodeIp::claim`]) deletes it.
//!
//! Address leases are UDP sockets bound to `127.0.0.N:`[`LEASE_PORT`]: the kernel
//! gives each address to one process at a time and takes it back when the process
//! exits, however it exits. Ports of the nodes themselves come from
//! [`free_port_on`](crate::harness::free_port_on).
//!
//! Caveats: this needs `nft` and CAP_NET_ADMIN (root here); [`unavailable`] says
//! why not, so a test can skip with a reason. Rules apply to the whole network
//! namespace, so two test processes only stay apart because their addresses
//! differ. Dropping packets models a partition, not delay or loss rates (no netem
//! on this machine). [`cleanup_stale`] judges pids in its own pid namespace only.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, anyhow, bail};

/// Prefix of every table this module creates; the rest is `<pid>_<n>`.
pub const TABLE_PREFIX: &str = "ringkv_";

/// The nftables family of the tables (IPv4 only: nodes bind 127.0.0.N).
const FAMILY: &str = "ip";

/// Where a cut drops packets; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropAt {
    /// On the `input` hook: the sender's send succeeds and the packet vanishes,
    /// as in a real partition.
    Receiver,
    /// On the `output` hook: a UDP `send_to` fails at once with `EPERM`; TCP
    /// segments are retransmitted as if lost.
    Sender,
}

impl DropAt {
    /// The netfilter hook, also used as the chain's name.
    fn hook(self) -> &'static str {
        match self {
            DropAt::Receiver => "input",
            DropAt::Sender => "output",
        }
    }
}

/// Host byte of the first address handed to nodes (127.0.0.N) ...
pub const NODE_IP_FIRST: u8 = 10;
/// ... and of the last.
pub const NODE_IP_LAST: u8 = 250;

/// The port a [`NodeIp`] lease binds on its address. It is below 1024, so
/// `free_port_on` (which hands out ports from 10000 up) never gives it to a node.
pub const LEASE_PORT: u16 = 1021;

/// Bit of CAP_NET_ADMIN in `/proc/self/status`'s `CapEff`.
const CAP_NET_ADMIN_BIT: u32 = 12;

/// Tables created by this process, numbered for unique names.
static TABLES_CREATED: AtomicU32 = AtomicU32::new(0);

/// One loopback address held by this process for one node, until dropped.
#[derive(Debug)]
pub struct NodeIp {
    ip: Ipv4Addr,
    /// Bound to `ip:LEASE_PORT`; the binding is the lease.
    _lease: UdpSocket,
}

impl NodeIp {
    /// Leases a free address from 127.0.0.[`NODE_IP_FIRST`]..=[`NODE_IP_LAST`],
    /// starting at a pid-dependent place so parallel processes rarely contend.
    /// First deletes stale tables (if nftables can be used), whose rules may still
    /// cut the addresses their dead owner had leased.
    pub fn claim() -> anyhow::Result<Self> {
        if unavailable().is_none() {
            cleanup_stale().context("deleting stale ringkv_* tables")?;
        }
        let span = u32::from(NODE_IP_LAST - NODE_IP_FIRST) + 1;
        let start = std::process::id().wrapping_mul(7) % span;
        let mut last_error = None;
        for i in 0..span {
            let host = NODE_IP_FIRST + ((start + i) % span) as u8;
            let ip = Ipv4Addr::new(127, 0, 0, host);
            match UdpSocket::bind((ip, LEASE_PORT)) {
                Ok(lease) => return Ok(Self { ip, _lease: lease }),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
                Err(e) => last_error = Some(e),
            }
        }
        match last_error {
            Some(e) => Err(anyhow!(e).context(format!(
                "leasing a node address: binding 127.0.0.N:{LEASE_PORT} failed"
            ))),
            None => bail!(
                "all of 127.0.0.{NODE_IP_FIRST}..=127.0.0.{NODE_IP_LAST} are leased \
                 (port {LEASE_PORT} bound on each)"
            ),
        }
    }

    /// `count` distinct addresses.
    pub fn claim_many(count: usize) -> anyhow::Result<Vec<Self>> {
        (0..count).map(|_| Self::claim()).collect()
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

/// Why network faults cannot be injected here (no `nft`, no CAP_NET_ADMIN), or
/// `None` if they can.
pub fn unavailable() -> Option<String> {
    let Some(nft) = nft_binary() else {
        return Some("no `nft` binary on PATH, in /usr/sbin or in /sbin".into());
    };
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => status,
        Err(e) => return Some(format!("cannot read /proc/self/status: {e}")),
    };
    let cap_eff = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    match cap_eff {
        Some(caps) if caps & (1 << CAP_NET_ADMIN_BIT) != 0 => None,
        Some(_) => Some(format!(
            "this process lacks CAP_NET_ADMIN (run as root) to use {}",
            nft.display()
        )),
        None => Some("no CapEff line in /proc/self/status".into()),
    }
}

/// One nftables table of drop rules between node addresses; see the module docs.
/// Deleted on drop.
#[derive(Debug)]
pub struct NetFaults {
    table: String,
    drop_at: DropAt,
    /// The directions cut now, as (source, destination).
    cuts: Mutex<BTreeSet<(Ipv4Addr, Ipv4Addr)>>,
}

impl NetFaults {
    /// A fault set that drops at the receiver ([`DropAt::Receiver`]); see
    /// [`Self::with_drop_at`].
    pub fn new() -> anyhow::Result<Self> {
        Self::with_drop_at(DropAt::Receiver)
    }

    /// Deletes stale tables, then creates this process's next table with an empty
    /// chain on `drop_at`'s hook. Fails with `nft`'s message if `nft` is missing
    /// or not permitted.
    pub fn with_drop_at(drop_at: DropAt) -> anyhow::Result<Self> {
        if let Some(reason) = unavailable() {
            bail!("cannot inject network faults: {reason}");
        }
        cleanup_stale().context("deleting stale ringkv_* tables")?;
        let n = TABLES_CREATED.fetch_add(1, Ordering::Relaxed);
        let table = format!("{TABLE_PREFIX}{}_{n}", std::process::id());
        let hook = drop_at.hook();
        nft_script(&format!(
            "add table {FAMILY} {table}\n\
             add chain {FAMILY} {table} {hook} \
             {{ type filter hook {hook} priority 0; policy accept; }}\n"
        ))
        .with_context(|| format!("creating nftables table {FAMILY} {table}"))?;
        Ok(Self {
            table,
            drop_at,
            cuts: Mutex::new(BTreeSet::new()),
        })
    }

    /// The table's name, `ringkv_<pid>_<n>` (family `ip`).
    pub fn table_name(&self) -> &str {
        &self.table
    }

    pub fn drop_at(&self) -> DropAt {
        self.drop_at
    }

    /// Drops traffic between `a` and `b`, both ways.
    pub fn cut(&self, a: Ipv4Addr, b: Ipv4Addr) -> anyhow::Result<()> {
        self.add_cuts(&[(a, b), (b, a)])
    }

    /// Drops traffic from `from` to `to` only; replies from `to` still pass (TCP
    /// still breaks, since its acknowledgements cannot arrive).
    pub fn cut_one_way(&self, from: Ipv4Addr, to: Ipv4Addr) -> anyhow::Result<()> {
        self.add_cuts(&[(from, to)])
    }

    /// Cuts `a` from each of `others`, both ways.
    pub fn isolate(&self, a: Ipv4Addr, others: &[Ipv4Addr]) -> anyhow::Result<()> {
        let pairs: Vec<_> = others.iter().flat_map(|&b| [(a, b), (b, a)]).collect();
        self.add_cuts(&pairs)
    }

    /// Cuts every address of `side1` from every address of `side2`, both ways;
    /// traffic within each side still flows.
    pub fn split(&self, side1: &[Ipv4Addr], side2: &[Ipv4Addr]) -> anyhow::Result<()> {
        let pairs: Vec<_> = side1
            .iter()
            .flat_map(|&a| side2.iter().flat_map(move |&b| [(a, b), (b, a)]))
            .collect();
        self.add_cuts(&pairs)
    }

    /// Removes every cut (flushes the chain); the table stays for later cuts.
    pub fn heal(&self) -> anyhow::Result<()> {
        let mut cuts = self.cuts.lock().unwrap_or_else(|e| e.into_inner());
        let hook = self.drop_at.hook();
        nft_script(&format!("flush chain {FAMILY} {} {hook}\n", self.table))
            .with_context(|| format!("healing (flushing) {}", self.table))?;
        cuts.clear();
        Ok(())
    }

    /// The directions cut now, as (source, destination), sorted.
    pub fn cuts(&self) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        let cuts = self.cuts.lock().unwrap_or_else(|e| e.into_inner());
        cuts.iter().copied().collect()
    }

    /// `nft list table ip <name>`: the table as the kernel holds it.
    pub fn ruleset(&self) -> anyhow::Result<String> {
        nft_args(&["list", "table", FAMILY, &self.table])
    }

    /// Packets dropped by the current rules (their counters summed); [`Self::heal`]
    /// resets it to 0.
    pub fn dropped_packets(&self) -> anyhow::Result<u64> {
        let ruleset = self.ruleset()?;
        let mut total = 0;
        for line in ruleset.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| *w == "packets") {
                let count = words.get(i + 1).and_then(|w| w.parse::<u64>().ok());
                total += count.ok_or_else(|| anyhow!("unreadable counter in {line:?}"))?;
            }
        }
        Ok(total)
    }

    /// Adds one rule per direction not cut yet, atomically (one `nft -f` run);
    /// adds none if any address may not be cut.
    fn add_cuts(&self, pairs: &[(Ipv4Addr, Ipv4Addr)]) -> anyhow::Result<()> {
        for &(from, to) in pairs {
            check_node_ip(from)?;
            check_node_ip(to)?;
            if from == to {
                bail!("cannot cut {from} from itself");
            }
        }
        let mut cuts = self.cuts.lock().unwrap_or_else(|e| e.into_inner());
        let new: BTreeSet<(Ipv4Addr, Ipv4Addr)> = pairs
            .iter()
            .copied()
            .filter(|pair| !cuts.contains(pair))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let script: String = new
            .iter()
            .map(|(from, to)| {
                format!(
                    "add rule {FAMILY} {} {} ip saddr {from} ip daddr {to} counter drop\n",
                    self.table,
                    self.drop_at.hook()
                )
            })
            .collect();
        nft_script(&script).with_context(|| format!("adding cuts to {}", self.table))?;
        cuts.extend(new);
        Ok(())
    }
}

impl Drop for NetFaults {
    fn drop(&mut self) {
        if let Err(e) = delete_table(&self.table) {
            eprintln!(
                "ringkv-tests: could not delete nftables table {FAMILY} {}: {e:#}; \
                 delete it with `nft delete table {FAMILY} {}`",
                self.table, self.table
            );
        }
    }
}

/// Fails unless `ip` may appear in a rule: in 127.0.0.0/8 and not 127.0.0.1, the
/// address tests' own HTTP clients use.
pub fn check_node_ip(ip: Ipv4Addr) -> anyhow::Result<()> {
    if !ip.is_loopback() {
        bail!("netfault rules only name loopback addresses (127.0.0.0/8), not {ip}");
    }
    if ip == Ipv4Addr::LOCALHOST {
        bail!(
            "127.0.0.1 is the tests' client address and is never cut: bind nodes on \
             their own address with NodeOptions::bind_ip"
        );
    }
    Ok(())
}

/// The `ringkv_*` tables in this network namespace (family `ip`), by name.
pub fn list_tables() -> anyhow::Result<Vec<String>> {
    let listing = nft_args(&["list", "tables", FAMILY])?;
    Ok(listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix(&format!("table {FAMILY} ")))
        .filter(|name| name.starts_with(TABLE_PREFIX))
        .map(str::to_owned)
        .collect())
}

/// Deletes the `ringkv_<pid>_<n>` tables whose process is gone (a test run killed
/// before its [`NetFaults`] dropped) and returns their names.
pub fn cleanup_stale() -> anyhow::Result<Vec<String>> {
    let mut deleted = Vec::new();
    for table in list_tables()? {
        let pid = table
            .strip_prefix(TABLE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = pid else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match delete_table(&table) {
            Ok(()) => deleted.push(table),
            // Another process may have deleted it first.
            Err(_) if !list_tables()?.contains(&table) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

fn delete_table(table: &str) -> anyhow::Result<()> {
    nft_script(&format!("delete table {FAMILY} {table}\n")).map(drop)
}

/// `nft` from PATH, else /usr/sbin or /sbin (a non-login root shell may lack them).
fn nft_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>());
    on_path
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("nft"))
        .find(|path| path.is_file())
}

/// Runs `nft -f -` with `script` on stdin: all its commands apply, or none.
fn nft_script(script: &str) -> anyhow::Result<String> {
    run_nft(&["-f", "-"], Some(script))
}

fn nft_args(args: &[&str]) -> anyhow::Result<String> {
    run_nft(args, None)
}

fn run_nft(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let nft = nft_binary().ok_or_else(|| anyhow!("no `nft` binary found"))?;
    let mut child = Command::new(&nft)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", nft.display()))?;
    if let Some(script) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(script.as_bytes())
            .context("writing the script to nft")?;
    }
    let output = child.wait_with_output().context("waiting for nft")?;
    if !output.status.success() {
        bail!(
            "`nft {}` failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            stdin.map(|s| format!("\nscript:\n{s}")).unwrap_or_default()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
