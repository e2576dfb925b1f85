//! The `ringkv-node` binary: runs one node, or `dev` for a local cluster.

use std::process::ExitCode;

use clap::Parser;
use ringkv_node::config::{Cli, Command, Config};
use ringkv_node::node::Node;
use tokio::signal::unix::{SignalKind, signal};

/// mimalloc rather than glibc's allocator: a node allocates for every request and
/// peer call, and glibc's malloc and free took ~10% of a busy node's cycles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Dev(args)) => runtime.block_on(ringkv_node::dev::run(args)),
        None => match Config::from_args(cli.node) {
            Ok(config) => runtime.block_on(run(config)),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(config: Config) -> ringkv_node::Result<()> {
    let node = Node::start(config).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    node.shutdown().await
}
