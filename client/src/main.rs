//! `ringkv`: the command-line client of a ringkv cluster (README.md#try-it-with-curl).
//!
//! ```text
//! ringkv [--nodes URL,URL] put KEY VALUE [--w 2] [--sync] [--context C] [--timeout-ms N]
//! ringkv get KEY [--r 2] [--lww]
//! ringkv delete KEY [--context C]
//! ringkv status
//! ringkv bench --workload a|b|c|w --duration 20s --concurrency 64 --keys 100000 \
//!              --value-size 100 [--zipf 0.99] [--json]
//! ```
//!
//! Exit status: 0 on success (including a read that returned siblings), 1 when
//! `get` finds no value, 2 on any error.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args).await {
        Ok(code) => code,
        Err(e) => {
            cli::report_error(&e);
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
