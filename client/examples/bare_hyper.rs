//! `bare_hyper`: the reference server that gives `ringkv bench` its HTTP ceiling.
//!
//! ```text
//! cargo build --release --workspace --examples
//! ~/.cache/ringkv/target/release/examples/bare_hyper --addr 127.0.0.1:9000 --value-size 100
//! ringkv --nodes http://127.0.0.1:9000 bench --workload c
//! ```
//!
//! `GET /kv/{anything}` answers 200 with `--value-size` bytes and `PUT /kv/{anything}`
//! 204, with nothing stored (see `ringkv_client::reference`). It runs on a
//! multi-threaded tokio runtime, one worker per core, as `ringkv-node` does; stop
//! it with Ctrl-C.

use clap::Parser;
use tokio::net::TcpListener;

/// Bare hyper server answering the KV API's GET and PUT without a store.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: String,
    /// Bytes in every GET answer.
    #[arg(long = "value-size", default_value_t = 100)]
    value_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(&args.addr).await?;
    eprintln!(
        "bare_hyper listening on http://{} ({}-byte values)",
        listener.local_addr()?,
        args.value_bytes
    );
    tokio::select! {
        () = ringkv_client::reference::serve(listener, args.value_bytes) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
