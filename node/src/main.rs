//! The `ringkv-node` binary: runs one node, or `dev` for a local cluster.

use std::process::ExitCode;

use clap::Parser;
use ringkv_node::config::{Cli, Command, Config};
use ringkv_node::logging;
use ringkv_node::node::Node;
use tokio::signal::unix::{SignalKind, signal};

/// mimalloc rather than glibc's allocator: a node allocates for every request and
/// peer call, and glibc's malloc and free took ~10% of a busy node's cycles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The dev supervisor only waits on its children: one thread does.
        Some(Command::Dev(args)) => {
            logging::init("dev", logging::LogFormat::Text);
            runtime(1).and_then(|rt| rt.block_on(ringkv_node::dev::run(args)))
        }
        None => Config::from_args(cli.node).and_then(|config| {
            logging::init(&config.id, config.log_format);
            runtime(config.worker_threads)?.block_on(run(config))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn runtime(worker_threads: usize) -> ringkv_node::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start the runtime: {e}")))?)
}

async fn run(config: Config) -> ringkv_node::Result<()> {
    let node = Node::start(config).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut departed = node.departed();
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = departed.wait_for(|d| *d) => tracing::info!("left the ring: shutting down"),
    }
    node.shutdown().await
}
