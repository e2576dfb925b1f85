//! `ringkv-node dev`: a local cluster on 127.0.0.1 for trying ringkv out. Each node is
//! a child process of this binary with its own ports and data folder; Ctrl-C (or
//! SIGTERM) stops them all gracefully. Data folders are kept, so a second run brings
//! the same data back.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::config::DevArgs;
use crate::error::{Error, Result};

/// Most nodes a dev cluster may have (ports and memory of one machine).
const DEV_NODES_MAX: usize = 9;

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

/// Runs the dev cluster until Ctrl-C or SIGTERM, then stops every node.
pub async fn run(args: DevArgs) -> Result<()> {
    if !(1..=DEV_NODES_MAX).contains(&args.nodes) {
        return Err(Error::Config(format!(
            "--nodes {}: must be 1..={DEV_NODES_MAX}",
            args.nodes
        )));
    }
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for i in 1..=args.nodes {
        let argv = node_args(&args, i, args.nodes);
        let child = spawn(&exe, &argv)?;
        children.push((format!("n{i}"), child));
    }
    println!(
        "ringkv dev cluster: {} node(s), data in {}",
        args.nodes,
        args.dir.display()
    );
    for i in 1..=args.nodes {
        println!(
            "  n{i}  http://127.0.0.1:{}",
            args.http_port as usize + i - 1
        );
    }
    println!(
        "try:  curl -X PUT --data-binary hello http://127.0.0.1:{}/kv/greeting",
        args.http_port
    );
    println!("      curl http://127.0.0.1:{}/kv/greeting", args.http_port);
    println!("Ctrl-C stops the cluster.");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut reported = vec![false; children.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                // A node that dies is reported, not avenged: the rest keep serving, which
                // is the point of trying a cluster (restart it by running dev again).
                for ((id, child), seen) in children.iter_mut().zip(reported.iter_mut()) {
                    if !*seen && let Ok(Some(status)) = child.try_wait() {
                        eprintln!("dev: {id} exited ({status}); the other nodes keep running");
                        *seen = true;
                    }
                }
            }
        }
    }
    for (id, child) in &mut children {
        stop(id, child).await;
    }
    Ok(())
}

fn spawn(exe: &Path, argv: &[String]) -> Result<Child> {
    Ok(Command::new(exe)
        .args(argv)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
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
        eprintln!("{id} did not stop within 15 s; killing it");
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
}
