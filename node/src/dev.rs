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

/// Flags of node `i` (1-based) of a dev cluster of `count` nodes.
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
    if args.nodes != 1 {
        return Err(Error::Config(format!(
            "--nodes {}: this build runs single-node clusters only (membership and replication across nodes are not built yet)",
            args.nodes
        )));
    }
    if args.nodes > DEV_NODES_MAX {
        return Err(Error::Config(format!(
            "--nodes {}: at most {DEV_NODES_MAX}",
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
    let exited = futures::future::select_all(children.iter_mut().map(|(_, c)| Box::pin(c.wait())));
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        (status, index, _) = exited => {
            eprintln!("node n{} exited ({:?}); stopping the dev cluster", index + 1, status.ok());
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
