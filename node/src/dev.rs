//! `ringkv-node dev`: a local cluster on 127.0.0.1 for trying ringkv out. Each node is
//! a child process of this binary with its own ports and data folder; Ctrl-C (or
//! SIGTERM) stops them all gracefully. Data folders are kept, so a second run brings
//! the same data back.
//!
//! A node that dies stays dead until asked: type `restart n2` on dev's standard input
//! (the terminal it runs in, or a pipe), or start dev with `--restart-after 5s` to
//! bring back, after that delay, every node that a signal killed (`kill -9`, a crash);
//! a node that exits with an error status is never restarted by itself, since it would
//! only fail again. Each running node's pid is in `<dir>/<id>.pid`, so
//! `kill -9 $(cat ringkv-dev/n2.pid)` stops exactly that node.
//!
//! Standard input is read only when this process may read it: a pipe or file, or a
//! terminal whose foreground this is (a background job reading its terminal would be
//! stopped by SIGTTIN).

use std::io::BufRead as _;
use std::os::fd::AsFd as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::DevArgs;
use crate::error::{Error, Result};

/// Most nodes a dev cluster may have (ports and memory of one machine).
const DEV_NODES_MAX: usize = 9;

/// Longest `--restart-after`: past it, restarting "by itself" means nothing.
const RESTART_AFTER_MAX: Duration = Duration::from_secs(3600);

/// How often children are checked for exits and due restarts.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// Lines of standard input buffered before reading pauses.
const COMMANDS_QUEUED_MAX: usize = 16;

/// Flags of node `i` (1-based) of a dev cluster of `count` nodes. The nodes share this
/// machine, so each gets its share of the cores as worker threads.
pub fn node_args(args: &DevArgs, i: usize, count: usize) -> Vec<String> {
    let n = count.min(3);
    let majority = n / 2 + 1;
    let mut argv = vec![
        "--id".to_owned(),
        format!("n{i}"),
        "--data-dir".to_owned(),
        args.dir.join(format!("n{i}")).display().to_string(),
        "--http".to_owned(),
        format!("127.0.0.1:{}", args.http_port as usize + i - 1),
        "--cluster".to_owned(),
        format!("127.0.0.1:{}", args.cluster_port as usize + i - 1),
        "--n".to_owned(),
        n.to_string(),
        "--r".to_owned(),
        majority.to_string(),
        "--w".to_owned(),
        majority.to_string(),
        "--worker-threads".to_owned(),
        (crate::config::cores() / count).max(1).to_string(),
    ];
    if i > 1 {
        argv.extend([
            "--join".to_owned(),
            format!("127.0.0.1:{}", args.cluster_port),
        ]);
    }
    argv
}

/// A line typed on dev's standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevCommand {
    /// `restart ID`: start node ID again if it is not running.
    Restart(String),
    /// `help`: list the commands.
    Help,
    /// An empty line: nothing to do.
    Nothing,
}

/// What `help` prints, and what a bad line is answered with.
pub const COMMANDS_HELP: &str = "commands: `restart ID` (start a stopped node again), `help`";

/// Parses one line of standard input.
pub fn parse_command(line: &str) -> std::result::Result<DevCommand, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [] => Ok(DevCommand::Nothing),
        ["help"] => Ok(DevCommand::Help),
        ["restart", id] => Ok(DevCommand::Restart((*id).to_owned())),
        ["restart"] => Err("restart needs a node id, e.g. `restart n2`".to_owned()),
        ["restart", ..] => Err("restart takes one node id, e.g. `restart n2`".to_owned()),
        [word, ..] => Err(format!("unknown command {word:?}; {COMMANDS_HELP}")),
    }
}

/// How long to wait before restarting a node that exited with `status`: only a node
/// a signal killed comes back by itself, and only with `--restart-after`.
pub fn restart_delay(status: ExitStatus, restart_after: Option<Duration>) -> Option<Duration> {
    status.signal().and(restart_after)
}

/// The lines printed when the cluster is up: where each node is, how to get the two
/// binaries on PATH (`bin_dir` holds this one), what to try, how to kill and restart.
pub fn banner(args: &DevArgs, bin_dir: &Path) -> String {
    let first = args.http_port;
    let mut text = format!(
        "ringkv dev cluster: {} node(s), data in {}\n",
        args.nodes,
        args.dir.display()
    );
    for i in 1..=args.nodes {
        let http = args.http_port as usize + i - 1;
        let pid = pid_file(&args.dir, &format!("n{i}"));
        text.push_str(&format!(
            "  n{i}  http://127.0.0.1:{http}  pid in {}\n",
            pid.display()
        ));
    }
    let victim = if args.nodes > 1 { "n2" } else { "n1" };
    text.push_str(&format!(
        "the server `ringkv-node` and the CLI `ringkv` are in {dir}; to run them by name\n\
         (or to install them, see README.md#install):\n\
         \x20 export PATH=\"{dir}:$PATH\"\n\
         try:  curl -X PUT --data-binary hello http://127.0.0.1:{first}/kv/greeting\n\
         \x20     curl http://127.0.0.1:{first}/kv/greeting\n\
         \x20     ringkv --nodes http://127.0.0.1:{first} status\n\
         kill a node with `kill -9 $(cat {pid})`; bring it back by typing `restart {victim}` here{auto}.\n\
         Ctrl-C stops the cluster.\n",
        dir = bin_dir.display(),
        pid = pid_file(&args.dir, victim).display(),
        auto = match args.restart_after {
            Some(d) => format!(
                " (killed nodes also come back after {} by themselves)",
                humantime::format_duration(d)
            ),
            None => String::new(),
        },
    ));
    text
}

/// Where the pid of node `id` is kept while it runs.
pub fn pid_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.pid"))
}

/// One node of the cluster and its process, if running.
struct DevNode {
    id: String,
    argv: Vec<String>,
    child: Option<Child>,
    restart_at: Option<Instant>,
}

/// Runs the dev cluster until Ctrl-C or SIGTERM, then stops every node.
pub async fn run(args: DevArgs) -> Result<()> {
    if !(1..=DEV_NODES_MAX).contains(&args.nodes) {
        return Err(Error::Config(format!(
            "--nodes {}: must be 1..={DEV_NODES_MAX}",
            args.nodes
        )));
    }
    if let Some(d) = args.restart_after
        && (d.is_zero() || d > RESTART_AFTER_MAX)
    {
        return Err(Error::Config(format!(
            "--restart-after {}: must be more than 0 and at most {}",
            humantime::format_duration(d),
            humantime::format_duration(RESTART_AFTER_MAX)
        )));
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| {
        Error::Config(format!(
            "--dir {}: cannot create it: {e}",
            args.dir.display()
        ))
    })?;
    let exe = std::env::current_exe()?;
    let mut nodes = Vec::new();
    for i in 1..=args.nodes {
        let mut node = DevNode {
            id: format!("n{i}"),
            argv: node_args(&args, i, args.nodes),
            child: None,
            restart_at: None,
        };
        start(&exe, &args.dir, &mut node)?;
        nodes.push(node);
    }
    let bin_dir = exe.parent().unwrap_or(Path::new("."));
    print!("{}", banner(&args, bin_dir));

    let mut commands = read_commands();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            line = recv(&mut commands) => match line {
                Some(line) => command(&exe, &args, &mut nodes, &line),
                None => commands = None,
            },
            _ = tick.tick() => watch(&exe, &args, &mut nodes),
        }
    }
    for node in &mut nodes {
        if let Some(child) = &mut node.child {
            stop(&node.id, child).await;
        }
        let _ = std::fs::remove_file(pid_file(&args.dir, &node.id));
    }
    Ok(())
}

/// Reports nodes that exited, schedules their restart when `--restart-after` says so,
/// and starts those that are due.
fn watch(exe: &Path, args: &DevArgs, nodes: &mut [DevNode]) {
    let now = Instant::now();
    for node in nodes.iter_mut() {
        if let Some(child) = &mut node.child
            && let Ok(Some(status)) = child.try_wait()
        {
            node.child = None;
            let _ = std::fs::remove_file(pid_file(&args.dir, &node.id));
            match restart_delay(status, args.restart_after) {
                Some(delay) => {
                    eprintln!(
                        "dev: {} exited ({status}); restarting it in {}",
                        node.id,
                        humantime::format_duration(delay)
                    );
                    node.restart_at = Some(now + delay);
                }
                None => eprintln!(
                    "dev: {} exited ({status}); the other nodes keep running \
                     (type `restart {}` to start it again)",
                    node.id, node.id
                ),
            }
        }
        if node.restart_at.is_some_and(|at| at <= now) {
            node.restart_at = None;
            if let Err(e) = start(exe, &args.dir, node) {
                eprintln!("dev: cannot restart {}: {e}", node.id);
            }
        }
    }
}

/// Acts on one line of standard input.
fn command(exe: &Path, args: &DevArgs, nodes: &mut [DevNode], line: &str) {
    // A node killed since the last check is seen as stopped, not as running.
    watch(exe, args, nodes);
    match parse_command(line) {
        Ok(DevCommand::Nothing) => {}
        Ok(DevCommand::Help) => eprintln!("dev: {COMMANDS_HELP}"),
        Ok(DevCommand::Restart(id)) => match nodes.iter_mut().find(|n| n.id == id) {
            None => eprintln!("dev: no node {id:?}; this cluster has n1..n{}", nodes.len()),
            Some(node) => match node.child.as_ref().and_then(Child::id) {
                Some(pid) => eprintln!("dev: {id} is running (pid {pid}); nothing to restart"),
                None => {
                    node.restart_at = None;
                    if let Err(e) = start(exe, &args.dir, node) {
                        eprintln!("dev: cannot restart {id}: {e}");
                    }
                }
            },
        },
        Err(e) => eprintln!("dev: {e}"),
    }
}

/// Starts `node`'s process and writes its pid file.
fn start(exe: &Path, dir: &Path, node: &mut DevNode) -> Result<()> {
    let child = Command::new(exe)
        .args(&node.argv)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(pid) = child.id() {
        std::fs::write(pid_file(dir, &node.id), format!("{pid}\n"))?;
        eprintln!("dev: {} started (pid {pid})", node.id);
    }
    node.child = Some(child);
    Ok(())
}

/// The lines of standard input, when this process may read it (see the module docs).
fn read_commands() -> Option<mpsc::Receiver<String>> {
    let stdin = std::io::stdin();
    if std::io::IsTerminal::is_terminal(&stdin) {
        let foreground = nix::unistd::tcgetpgrp(stdin.as_fd())
            .is_ok_and(|group| group == nix::unistd::getpgrp());
        if !foreground {
            eprintln!(
                "dev: running in the background, so not reading commands from the terminal \
                 (use --restart-after to bring killed nodes back)"
            );
            return None;
        }
    }
    let (send, receive) = mpsc::channel(COMMANDS_QUEUED_MAX);
    // A thread of its own rather than tokio's stdin: a read blocked on the terminal
    // would keep the runtime from shutting down at Ctrl-C; this thread just ends with
    // the process.
    let reader = std::thread::Builder::new()
        .name("dev-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if send.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    match reader {
        Ok(_) => Some(receive),
        Err(e) => {
            eprintln!("dev: cannot read commands from stdin: {e}");
            None
        }
    }
}

/// The next line, or pending forever once standard input is closed (or never read).
async fn recv(commands: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match commands {
        Some(receive) => receive.recv().await,
        None => std::future::pending().await,
    }
}

/// SIGTERM, then SIGKILL if the node has not stopped within 15 s.
async fn stop(id: &str, child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        eprintln!("dev: {id} did not stop within 15 s; killing it");
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::config::{Cli, Config};

    fn dev(nodes: usize) -> DevArgs {
        DevArgs {
            nodes,
            dir: "/tmp/ringkv-dev-test".into(),
            http_port: 8001,
            cluster_port: 7001,
            restart_after: None,
        }
    }

    /// The node's configuration, as the child process parses and checks it.
    fn config(args: &DevArgs, i: usize) -> Config {
        let argv = std::iter::once("ringkv-node".to_owned()).chain(node_args(args, i, args.nodes));
        Config::from_args(Cli::try_parse_from(argv).expect("flags parse").node)
            .expect("flags pass the node's checks")
    }

    #[test]
    fn every_dev_node_starts_with_its_own_ports_and_joins_the_first() {
        // Each node's flags pass the node's own checks; ids, ports and data folders are
        // distinct; every node but the first joins it; quorums are majorities of min(3, nodes).
        for nodes in [1, 2, 3, 5] {
            let args = dev(nodes);
            let configs: Vec<Config> = (1..=nodes).map(|i| config(&args, i)).collect();
            for (i, c) in configs.iter().enumerate() {
                assert_eq!(c.id, format!("n{}", i + 1));
                assert_eq!(c.http.port() as usize, 8001 + i);
                assert_eq!(c.cluster.port() as usize, 7001 + i);
                assert_eq!(c.data_dir, args.dir.join(format!("n{}", i + 1)));
                let expected_join = if i == 0 {
                    vec![]
                } else {
                    vec!["127.0.0.1:7001".to_owned()]
                };
                assert_eq!(c.join, expected_join, "node {} of {nodes}", i + 1);
                let n = nodes.min(3);
                assert_eq!(
                    (c.quorum.n, c.quorum.r, c.quorum.w),
                    (n, n / 2 + 1, n / 2 + 1)
                );
                assert_eq!(c.worker_threads, (crate::config::cores() / nodes).max(1));
            }
        }
    }

    #[test]
    fn dev_commands_parse_and_bad_lines_say_why() {
        // Proves `restart ID`, `help` and blank lines parse, and that a missing or extra
        // id and an unknown word are refused with a message naming the mistake.
        assert_eq!(
            parse_command("  restart n2 "),
            Ok(DevCommand::Restart("n2".into()))
        );
        assert_eq!(parse_command("help"), Ok(DevCommand::Help));
        assert_eq!(parse_command("   "), Ok(DevCommand::Nothing));
        assert!(
            parse_command("restart")
                .unwrap_err()
                .contains("needs a node id")
        );
        assert!(
            parse_command("restart n2 n3")
                .unwrap_err()
                .contains("one node id")
        );
        let unknown = parse_command("reboot n2").unwrap_err();
        assert!(
            unknown.contains("\"reboot\"") && unknown.contains("restart ID"),
            "{unknown}"
        );
    }

    #[test]
    fn only_nodes_killed_by_a_signal_restart_by_themselves() {
        // Proves a signal exit restarts after --restart-after, and that an error exit,
        // a clean exit, or no --restart-after never restarts by itself.
        use std::os::unix::process::ExitStatusExt as _;
        let after = Some(Duration::from_secs(5));
        let killed = ExitStatus::from_raw(9); // terminated by SIGKILL
        let failed = ExitStatus::from_raw(2 << 8); // exit status 2
        let clean = ExitStatus::from_raw(0);
        assert_eq!(restart_delay(killed, after), after);
        assert_eq!(restart_delay(killed, None), None);
        assert_eq!(restart_delay(failed, after), None);
        assert_eq!(restart_delay(clean, after), None);
    }

    #[test]
    fn the_banner_says_how_to_put_both_binaries_on_path() {
        // Proves the banner prints an `export PATH` line with the binaries' real folder,
        // where to read about installing, every node's URL and pid file, and the kill
        // and restart commands.
        let mut args = dev(5);
        args.dir = "ringkv-dev".into();
        let text = banner(&args, Path::new("/root/.cache/ringkv/target/release"));
        assert!(
            text.contains("export PATH=\"/root/.cache/ringkv/target/release:$PATH\""),
            "{text}"
        );
        assert!(text.contains("README.md#install"), "{text}");
        assert!(
            text.contains("n5  http://127.0.0.1:8005  pid in ringkv-dev/n5.pid"),
            "{text}"
        );
        assert!(text.contains("kill -9 $(cat ringkv-dev/n2.pid)"), "{text}");
        assert!(text.contains("`restart n2`"), "{text}");
    }
}
