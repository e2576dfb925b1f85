//! The `ringkv` binary's arguments and commands, one file per command group.
//!
//! Output convention: data goes to stdout (a value, siblings, the status table);
//! metadata a script may want (context, acks, hints) goes to stderr as
//! `name: value` lines, so `ringkv get k > file` stores exactly the value.

mod bench;
mod kv;
mod ring;
mod status;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ringkv_client::security::tls_client_config;
use ringkv_client::{BearerToken, Client, ClientConfig, Error};

/// Exit status of `get` when the key has no value.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Exit status of every error (server error answers, unreachable cluster, bad input).
pub const EXIT_ERROR: u8 = 2;

/// Command-line client of a ringkv cluster.
#[derive(Debug, Parser)]
#[command(name = "ringkv", version)]
pub struct Cli {
    /// Node base URLs, comma-separated or repeated. get/put/delete/status start each
    /// request at the next node in turn and fail over to the others; `bench` spreads
    /// its connections over them, and each connection stays with its node.
    #[arg(
        long,
        global = true,
        env = "RINGKV_NODES",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8001"
    )]
    pub nodes: Vec<String>,

    /// Client-side limit on one attempt at one node, in milliseconds; when it passes,
    /// get/put/delete/status try the next node and `bench` counts an error.
    #[arg(
        long,
        global = true,
        env = "RINGKV_CLIENT_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub client_timeout_ms: u64,

    /// API bearer token, for nodes started with --api-token-file.
    #[arg(long, global = true, env = "RINGKV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// File whose first line is the API bearer token (instead of --token).
    #[arg(
        long,
        global = true,
        env = "RINGKV_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,

    /// PEM file of the CA that signed the nodes' TLS certificates; needed for
    /// https:// node URLs.
    #[arg(long, global = true, env = "RINGKV_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The token from --token or --token-file, if either is given.
    fn bearer_token(&self) -> anyhow::Result<Option<BearerToken>> {
        Ok(match (&self.token, &self.token_file) {
            (Some(token), _) => Some(BearerToken::new(token)?),
            (None, Some(file)) => Some(BearerToken::from_file(file)?),
            (None, None) => None,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write VALUE under KEY (`-` reads the value from stdin).
    Put(PutArgs),
    /// Read KEY: the value to stdout, its context to stderr.
    Get(GetArgs),
    /// Delete KEY (writes a tombstone).
    Delete(DeleteArgs),
    /// Show the cluster's members, quorum defaults, and the hints every live node
    /// holds with their sum per owner.
    Status,
    /// Check every given node's /health; exit 0 only if all answer ok (for health
    /// checks, e.g. in a container image without curl).
    Health,
    /// Decommission the first of --nodes: it hands every range it holds to the nodes
    /// that own them without it, then leaves the ring and exits; follows the change
    /// with a progress bar until then.
    Leave(LeaveArgs),
    /// Take a node that is down for good off the ring; the surviving replicas copy its
    /// keys to their new homes.
    Remove(RemoveArgs),
    /// Closed-loop load generator (YCSB-style workloads a, b, c, w): throughput
    /// and p50/p99/p99.9 latency.
    Bench(bench::BenchArgs),
}

/// Options shared by writes; unset ones leave the node's default.
#[derive(Debug, Args)]
pub struct WriteFlags {
    /// Acknowledgements to wait for (1..=N).
    #[arg(long)]
    pub w: Option<usize>,
    /// Replicas fsync before acknowledging.
    #[arg(long)]
    pub sync: bool,
    /// The coordinator's deadline for the quorum, in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// `false`: only the N home replicas count toward the quorum (no stand-ins).
    #[arg(long)]
    pub sloppy: Option<bool>,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key (any bytes the shell can pass).
    pub key: OsString,
    /// The value, or `-` to read it from stdin.
    pub value: OsString,
    /// Context from an earlier read; the write supersedes what that read saw.
    #[arg(long)]
    pub context: Option<String>,
    /// Supersede whatever the coordinator reads first, instead of adding a sibling.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub write: WriteFlags,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key.
    pub key: OsString,
    /// Replies to wait for (1..=N).
    #[arg(long)]
    pub r: Option<usize>,
    /// Return one winner by timestamp instead of siblings.
    #[arg(long)]
    pub lww: bool,
    /// The coordinator's deadline for the quorum, in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// `false`: only the N home replicas count toward the quorum.
    #[arg(long)]
    pub sloppy: Option<bool>,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// Return once the node has started leaving, without following it.
    #[arg(long)]
    pub no_follow: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The node's id.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The key.
    pub key: OsString,
    /// Context from an earlier read; without it the coordinator deletes what it reads.
    #[arg(long)]
    pub context: Option<String>,
    #[command(flatten)]
    pub write: WriteFlags,
}

/// Runs one command; `Ok` carries the exit status of an outcome that is not an
/// error (a missing key).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let token = cli.bearer_token()?;
    if let Command::Bench(args) = cli.command {
        // The bench opens its own bare connections; it needs no pooled client.
        let secured = bench::Secured {
            token,
            // The bench speaks HTTP/1.1 only.
            tls: cli
                .ca_file
                .as_deref()
                .map(|ca| tls_client_config(ca, &[b"http/1.1"]))
                .transpose()?,
        };
        return bench::run(&cli.nodes, cli.client_timeout_ms, secured, args).await;
    }
    let client = Client::with_config(
        &cli.nodes,
        ClientConfig {
            request_timeout_ms: cli.client_timeout_ms,
            token,
            ca_file: cli.ca_file.clone(),
            ..ClientConfig::default()
        },
    )?;
    match cli.command {
        Command::Put(args) => kv::put(&client, args).await,
        Command::Get(args) => kv::get(&client, args).await,
        Command::Delete(args) => kv::delete(&client, args).await,
        Command::Status => status::status(&client).await,
        Command::Health => status::health(&client).await,
        Command::Leave(args) => ring::leave(&client, !args.no_follow).await,
        Command::Remove(args) => ring::remove(&client, &args.id).await,
        Command::Bench(_) => unreachable!("handled above"),
    }
}

/// Prints `e` to stderr; a server's error answer shows its code, message and the
/// fields that explain it.
pub fn report_error(e: &anyhow::Error) {
    match e.downcast_ref::<Error>() {
        Some(Error::Api { status, body }) => {
            let extras: Vec<String> = [
                ("live", body.live),
                ("required", body.required),
                ("acks", body.acks),
                ("limit_bytes", body.limit_bytes),
                ("max_siblings", body.max_siblings),
            ]
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
            .collect();
            let extras = if extras.is_empty() {
                String::new()
            } else {
                format!(" ({})", extras.join(" "))
            };
            eprintln!("error: {} ({status}): {}{extras}", body.error, body.message);
        }
        _ => eprintln!("error: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        // Proves the derived CLI has no conflicting or malformed argument definitions.
        Cli::command().debug_assert();
    }

    #[test]
    fn nodes_are_comma_separated_repeatable_and_global() {
        // Proves --nodes accepts lists and repeats, and is also accepted after the subcommand.
        let cli = Cli::try_parse_from([
            "ringkv",
            "--nodes",
            "http://a:1,http://b:2",
            "--nodes",
            "http://c:3",
            "status",
        ])
        .unwrap();
        assert_eq!(cli.nodes, ["http://a:1", "http://b:2", "http://c:3"]);

        let cli = Cli::try_parse_from(["ringkv", "get", "k", "--nodes", "http://d:4"]).unwrap();
        assert_eq!(cli.nodes, ["http://d:4"]);
    }

    #[test]
    fn token_and_ca_flags_are_global_and_a_token_has_one_source() {
        // --token, --token-file and --ca-file parse before or after the subcommand;
        // --token and --token-file together are refused.
        let cli = Cli::try_parse_from([
            "ringkv",
            "--token",
            "abc-def",
            "status",
            "--ca-file",
            "/tmp/ca.pem",
        ])
        .unwrap();
        assert_eq!(cli.token.as_deref(), Some("abc-def"));
        assert_eq!(
            cli.ca_file.as_deref(),
            Some(std::path::Path::new("/tmp/ca.pem"))
        );
        assert_eq!(
            cli.bearer_token().unwrap().unwrap().header_value(),
            "Bearer abc-def"
        );
        assert!(
            Cli::try_parse_from(["ringkv", "--token", "a", "--token-file", "f", "status"]).is_err()
        );
    }

    #[test]
    fn put_flags_parse() {
        // Proves the documented put flags reach their fields.
        let cli = Cli::try_parse_from([
            "ringkv",
            "put",
            "k",
            "v",
            "--w",
            "2",
            "--sync",
            "--context",
            "C",
            "--timeout-ms",
            "300",
            "--sloppy",
            "false",
        ])
        .unwrap();
        let Command::Put(put) = cli.command else {
            panic!("not a put: {:?}", cli.command);
        };
        assert_eq!(
            (put.key.as_os_str(), put.value.as_os_str()),
            ("k".as_ref(), "v".as_ref())
        );
        assert_eq!(put.context.as_deref(), Some("C"));
        assert_eq!(put.write.w, Some(2));
        assert!(put.write.sync);
        assert_eq!(put.write.timeout_ms, Some(300));
        assert_eq!(put.write.sloppy, Some(false));
        assert!(!put.overwrite);
    }
}
