//! Command line and environment of `ringkv-node` (README.md#running-a-cluster-by-hand):
//! every flag also reads `RINGKV_<FLAG>`. [`NodeArgs`] is what clap parses; [`Config`]
//! is the checked result the node runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use ringkv_gossip::ClusterKeys;

use crate::api::auth::ApiTokens;
use crate::coordinator::Quorum;
use crate::error::{Error, Result};
use crate::logging::LogFormat;

/// `ringkv-node`: a node of a ringkv cluster, or `ringkv-node dev` for a local one.
#[derive(Debug, Parser)]
#[command(
    name = "ringkv-node",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a local cluster on 127.0.0.1 for trying ringkv out (Ctrl-C stops it).
    Dev(DevArgs),
}

/// Flags of `ringkv-node dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// How many nodes to start (n = min(3, nodes), r = w = majority of n).
    #[arg(long, default_value_t = 3, env = "RINGKV_DEV_NODES")]
    pub nodes: usize,
    /// Where the nodes keep their data (one folder per node); kept across runs.
    #[arg(long, default_value = "ringkv-dev", env = "RINGKV_DEV_DIR")]
    pub dir: PathBuf,
    /// HTTP port of the first node; node i listens on this + i - 1.
    #[arg(long, default_value_t = 8001)]
    pub http_port: u16,
    /// Cluster port of the first node; node i listens on this + i - 1.
    #[arg(long, default_value_t = 7001)]
    pub cluster_port: u16,
    /// Restart, after this delay (e.g. `5s`, `500ms`), every node that a signal kills;
    /// without it, a killed node stays down until `restart ID` is typed on stdin.
    #[arg(long, env = "RINGKV_DEV_RESTART_AFTER", value_parser = parse_duration)]
    pub restart_after: Option<Duration>,
}

/// A duration as `500ms`, `5s` or `2m`.
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 500ms, 5s, 2m)"))
}

/// Flags of a node.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// This node's id: unique in the cluster, stable across restarts (e.g. n1).
    #[arg(long, env = "RINGKV_ID")]
    pub id: Option<String>,
    /// Folder of the node's RocksDB store; reusing it brings back the node's data.
    #[arg(long, env = "RINGKV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the HTTP API listens on.
    #[arg(long, env = "RINGKV_HTTP", default_value = "127.0.0.1:8001")]
    pub http: SocketAddr,
    /// Address for peer RPC (TCP) and gossip (UDP).
    #[arg(long, env = "RINGKV_CLUSTER", default_value = "127.0.0.1:7001")]
    pub cluster: SocketAddr,
    /// HTTP address other nodes and clients are told (default: --http).
    #[arg(long, env = "RINGKV_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,
    /// Cluster address other nodes are told (default: --cluster).
    #[arg(long, env = "RINGKV_ADVERTISE_CLUSTER")]
    pub advertise_cluster: Option<String>,
    /// Seed cluster addresses (host:port), comma-separated or repeated.
    #[arg(long, env = "RINGKV_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Replicas per key.
    #[arg(long, env = "RINGKV_N", default_value_t = 3)]
    pub n: usize,
    /// Default read quorum (1..=n).
    #[arg(long, env = "RINGKV_R", default_value_t = 2)]
    pub r: usize,
    /// Default write quorum (1..=n).
    #[arg(long, env = "RINGKV_W", default_value_t = 2)]
    pub w: usize,
    /// Virtual nodes per node on the ring.
    #[arg(long, env = "RINGKV_VNODES", default_value_t = 64)]
    pub vnodes: usize,
    /// Keep writes for down replicas on stand-ins and hand them back (true|false).
    #[arg(long, env = "RINGKV_HINTED_HANDOFF", default_value_t = true, action = ArgAction::Set)]
    pub hinted_handoff: bool,
    /// Time between anti-entropy rounds (`500ms`, `2s`, `10m`, `1h`), or `off`.
    #[arg(long, env = "RINGKV_ANTI_ENTROPY_INTERVAL", default_value = "60s", value_parser = parse_interval)]
    pub anti_entropy_interval: Interval,
    /// Most MB per second a node receives while a membership change moves data to it
    /// (0: no limit).
    #[arg(long, env = "RINGKV_TRANSFER_MB_PER_S", default_value_t = 64)]
    pub transfer_mb_per_s: u64,
    /// Hints older than this are dropped (the owner catches up by read repair), in seconds.
    #[arg(long, env = "RINGKV_HINT_MAX_AGE_S", default_value_t = 3 * 3600)]
    pub hint_max_age_s: u64,
    /// Most bytes of hints a node keeps for others; past it, writes find other stand-ins.
    #[arg(long, env = "RINGKV_HINT_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub hint_max_bytes: u64,
    /// Longest key, in bytes.
    #[arg(long, env = "RINGKV_MAX_KEY_BYTES", default_value_t = 1024)]
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    #[arg(long, env = "RINGKV_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,
    /// Most concurrent values (siblings) one key keeps; a write past it gets 409.
    #[arg(long, env = "RINGKV_MAX_SIBLINGS", default_value_t = 64)]
    pub max_siblings: usize,
    /// Default request timeout, in milliseconds.
    #[arg(long, env = "RINGKV_TIMEOUT_MS", default_value_t = 5000)]
    pub timeout_ms: u64,
    /// RocksDB block cache, in MiB.
    #[arg(long, env = "RINGKV_BLOCK_CACHE_MB", default_value_t = 64)]
    pub block_cache_mb: usize,
    /// Cache of recently read records, decoded, in MiB (0: off). Saves a store read
    /// per cached key; writes keep cached keys up to date.
    #[arg(long, env = "RINGKV_RECORD_CACHE_MB", default_value_t = 64)]
    pub record_cache_mb: u64,
    /// How long a client may take to send a request's headers, in milliseconds.
    #[arg(long, env = "RINGKV_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Most HTTP connections served at once; further ones wait to be accepted.
    #[arg(long, env = "RINGKV_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Threads that serve requests and peer calls (default: one per core). Nodes that
    /// share a machine serve more with their share of its cores than with a thread
    /// per core each (docs/benchmarks.md).
    #[arg(long, env = "RINGKV_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// How log lines are written: `text` (`[n1] …`) or `json` (one object per line).
    #[arg(long, env = "RINGKV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// File of cluster keys, one per line as 64 hex digits: gossip and peer RPC are
    /// sealed under the first and accepted under any (docs/security.md).
    #[arg(long, env = "RINGKV_CLUSTER_KEY_FILE")]
    pub cluster_key_file: Option<PathBuf>,
    /// File of API bearer tokens, one per line: every HTTP request but GET /health and
    /// /healthz then needs `Authorization: Bearer <token>`.
    #[arg(long, env = "RINGKV_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// PEM certificate chain of the HTTP API: with --tls-key-file, HTTPS only.
    #[arg(long, env = "RINGKV_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "RINGKV_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
}

/// Upper bounds that keep a typo from becoming an outage.
const TIMEOUT_MS_MAX: u64 = 600_000;
const N_MAX: usize = 16;
const WORKER_THREADS_MAX: usize = 1024;
/// 1 TiB: past any machine's memory, short of overflowing a byte count.
const RECORD_CACHE_MB_MAX: u64 = 1024 * 1024;

/// The checked configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: String,
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
    pub advertise_http: String,
    pub advertise_cluster: String,
    pub join: Vec<String>,
    pub quorum: Quorum,
    pub vnodes: usize,
    pub hinted_handoff: bool,
    /// Time between anti-entropy rounds; `None`: off.
    pub anti_entropy_interval: Option<Duration>,
    /// Most bytes per second a membership transfer receives; `None`: no limit.
    pub transfer_rate_bytes_per_s: Option<u64>,
    pub hint_max_age: Duration,
    pub hint_max_bytes: u64,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_siblings: usize,
    pub timeout: Duration,
    pub block_cache_bytes: usize,
    /// Bytes of decoded records the replica caches (0: no cache).
    pub record_cache_bytes: u64,
    pub max_connections: usize,
    /// Worker threads of the node's async runtime.
    pub worker_threads: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// `--cluster-key-file`, loaded; `None`: gossip and peer RPC in the clear.
    pub cluster_keys: Option<Arc<ClusterKeys>>,
    /// `--api-token-file`, loaded; `None`: the API asks for no token.
    pub api_tokens: Option<Arc<ApiTokens>>,
    /// `--tls-cert-file` and `--tls-key-file`, loaded; `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

fn check(ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Config(message()))
    }
}

impl Config {
    /// Checks the flags; every problem is an [`Error::Config`] naming the flag.
    pub fn from_args(args: NodeArgs) -> Result<Self> {
        let id = args
            .id
            .ok_or_else(|| Error::Config("--id is required (or RINGKV_ID)".into()))?;
        check(
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
            || format!("--id {id:?}: use 1 to 64 of A-Z a-z 0-9 - _ ."),
        )?;
        let data_dir = args
            .data_dir
            .ok_or_else(|| Error::Config("--data-dir is required (or RINGKV_DATA_DIR)".into()))?;
        let (n, r, w) = (args.n, args.r, args.w);
        check((1..=N_MAX).contains(&n), || {
            format!("--n {n}: must be 1..={N_MAX}")
        })?;
        check((1..=n).contains(&r), || {
            format!("--r {r}: must be 1..=n ({n})")
        })?;
        check((1..=n).contains(&w), || {
            format!("--w {w}: must be 1..=n ({n})")
        })?;
        check((1..=1024).contains(&args.vnodes), || {
            format!("--vnodes {}: must be 1..=1024", args.vnodes)
        })?;
        check((1..=64 * 1024).contains(&args.max_key_bytes), || {
            format!("--max-key-bytes {}: must be 1..=65536", args.max_key_bytes)
        })?;
        check(
            (1..=64 * 1024 * 1024).contains(&args.max_value_bytes),
            || {
                format!(
                    "--max-value-bytes {}: must be 1..=67108864",
                    args.max_value_bytes
                )
            },
        )?;
        check((1..=1024).contains(&args.max_siblings), || {
            format!("--max-siblings {}: must be 1..=1024", args.max_siblings)
        })?;
        check((1..=TIMEOUT_MS_MAX).contains(&args.timeout_ms), || {
            format!(
                "--timeout-ms {}: must be 1..={TIMEOUT_MS_MAX}",
                args.timeout_ms
            )
        })?;
        check(
            (1..=TIMEOUT_MS_MAX).contains(&args.header_timeout_ms),
            || {
                format!(
                    "--header-timeout-ms {}: must be 1..={TIMEOUT_MS_MAX}",
                    args.header_timeout_ms
                )
            },
        )?;
        check(args.hint_max_age_s >= 1, || {
            "--hint-max-age-s must be at least 1".into()
        })?;
        check(args.block_cache_mb >= 1, || {
            "--block-cache-mb must be at least 1".into()
        })?;
        check(args.record_cache_mb <= RECORD_CACHE_MB_MAX, || {
            format!(
                "--record-cache-mb {}: must be 0..={RECORD_CACHE_MB_MAX}",
                args.record_cache_mb
            )
        })?;
        check(args.max_connections >= 1, || {
            "--max-connections must be at least 1".into()
        })?;
        let worker_threads = args.worker_threads.unwrap_or_else(cores);
        check((1..=WORKER_THREADS_MAX).contains(&worker_threads), || {
            format!("--worker-threads {worker_threads}: must be 1..={WORKER_THREADS_MAX}")
        })?;
        for seed in &args.join {
            check(parse_host_port(seed).is_some(), || {
                format!("--join {seed:?}: expected host:port")
            })?;
        }
        for (flag, addr) in [
            ("--advertise-http", &args.advertise_http),
            ("--advertise-cluster", &args.advertise_cluster),
        ] {
            if let Some(a) = addr {
                check(parse_host_port(a).is_some(), || {
                    format!("{flag} {a:?}: expected host:port")
                })?;
            }
        }
        let cluster_keys = args
            .cluster_key_file
            .as_deref()
            .map(|path| {
                ClusterKeys::load(path)
                    .map(Arc::new)
                    .map_err(|e| Error::Config(format!("--cluster-key-file: {e}")))
            })
            .transpose()?;
        let api_tokens = args
            .api_token_file
            .as_deref()
            .map(|path| ApiTokens::load(path).map(Arc::new))
            .transpose()?;
        let tls = match (&args.tls_cert_file, &args.tls_key_file) {
            (Some(cert), Some(key)) => Some(Arc::new(crate::api::tls::server_config(cert, key)?)),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "--tls-cert-file and --tls-key-file go together".into(),
                ));
            }
        };
        Ok(Self {
            cluster_keys,
            api_tokens,
            tls,
            advertise_http: args.advertise_http.unwrap_or_else(|| args.http.to_string()),
            advertise_cluster: args
                .advertise_cluster
                .unwrap_or_else(|| args.cluster.to_string()),
            id,
            data_dir,
            http: args.http,
            cluster: args.cluster,
            join: args.join,
            quorum: Quorum { n, r, w },
            vnodes: args.vnodes,
            hinted_handoff: args.hinted_handoff,
            anti_entropy_interval: args.anti_entropy_interval.0,
            transfer_rate_bytes_per_s: Some(args.transfer_mb_per_s)
                .filter(|mb| *mb > 0)
                .map(|mb| mb.saturating_mul(1024 * 1024)),
            hint_max_age: Duration::from_secs(args.hint_max_age_s),
            hint_max_bytes: args.hint_max_bytes,
            max_key_bytes: args.max_key_bytes,
            max_value_bytes: args.max_value_bytes,
            max_siblings: args.max_siblings,
            timeout: Duration::from_millis(args.timeout_ms),
            block_cache_bytes: args.block_cache_mb * 1024 * 1024,
            record_cache_bytes: args.record_cache_mb * 1024 * 1024,
            max_connections: args.max_connections,
            worker_threads,
            drain_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_millis(args.header_timeout_ms),
            log_format: args.log_format,
        })
    }
}

/// A duration flag that can also be `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Option<Duration>);

/// Longest interval accepted: a week.
const INTERVAL_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses `off` or a duration: a whole number followed by `ms`, `s`, `m` or `h`.
pub fn parse_interval(s: &str) -> std::result::Result<Interval, String> {
    if s == "off" {
        return Ok(Interval(None));
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let expected = || format!("{s:?}: expected off or a duration such as 500ms, 2s, 10m, 1h");
    let number: u64 = number.parse().map_err(|_| expected())?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(expected()),
    };
    let duration = Duration::from_millis(number.checked_mul(unit_ms).ok_or_else(expected)?);
    if duration.is_zero() || duration > INTERVAL_MAX {
        return Err(format!(
            "{s:?}: must be more than 0 and at most 7 days (or off)"
        ));
    }
    Ok(Interval(Some(duration)))
}

/// The cores this process may run on (1 when that cannot be known).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Splits `host:port` (host may be a name, an IPv4 or a bracketed IPv6 address).
pub fn parse_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> NodeArgs {
        let mut argv = vec!["ringkv-node", "--id", "n1", "--data-dir", "/tmp/x"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().node
    }

    #[test]
    fn quorums_outside_one_to_n_are_refused() {
        // r and w must be 1..=n: the node refuses to start otherwise.
        assert!(Config::from_args(args(&["--n", "3", "--r", "4"])).is_err());
        assert!(Config::from_args(args(&["--n", "3", "--w", "0"])).is_err());
        assert!(Config::from_args(args(&["--n", "1", "--r", "1", "--w", "1"])).is_ok());
    }

    #[test]
    fn join_accepts_commas_and_checks_each_seed() {
        // --join splits on commas and every seed must be host:port.
        let c = Config::from_args(args(&["--join", "127.0.0.1:7002,node3:7003"])).unwrap();
        assert_eq!(c.join, vec!["127.0.0.1:7002", "node3:7003"]);
        assert!(Config::from_args(args(&["--join", "nohost"])).is_err());
    }

    #[test]
    fn anti_entropy_interval_takes_durations_or_off() {
        // Durations in ms, s, m and h and `off` are accepted; the default is 60 s; zero,
        // bare numbers, other units and overflow are refused.
        let interval = |a: &[&str]| Config::from_args(args(a)).unwrap().anti_entropy_interval;
        assert_eq!(interval(&[]), Some(Duration::from_secs(60)));
        assert_eq!(
            interval(&["--anti-entropy-interval", "500ms"]),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            interval(&["--anti-entropy-interval", "10m"]),
            Some(Duration::from_secs(600))
        );
        assert_eq!(interval(&["--anti-entropy-interval", "off"]), None);
        for bad in ["0s", "2", "2d", "s", "-1s", "99999999999999999999h", "200h"] {
            assert!(parse_interval(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn hinted_handoff_takes_an_explicit_boolean() {
        // --hinted-handoff false switches hints off; the default is on.
        assert!(Config::from_args(args(&[])).unwrap().hinted_handoff);
        assert!(
            !Config::from_args(args(&["--hinted-handoff", "false"]))
                .unwrap()
                .hinted_handoff
        );
    }

    #[test]
    fn worker_threads_default_to_the_cores_and_zero_is_refused() {
        // No --worker-threads means a thread per core; 0 would start a node that serves nothing.
        assert_eq!(
            Config::from_args(args(&[])).unwrap().worker_threads,
            cores()
        );
        assert_eq!(
            Config::from_args(args(&["--worker-threads", "1"]))
                .unwrap()
                .worker_threads,
            1
        );
        let err = Config::from_args(args(&["--worker-threads", "0"])).unwrap_err();
        assert!(err.to_string().contains("--worker-threads 0"), "{err}");
    }

    #[test]
    fn record_cache_is_sized_in_mib_and_can_be_off() {
        // The cache defaults to 64 MiB, 0 turns it off, and a size past any memory is refused.
        let bytes = |a: &[&str]| Config::from_args(args(a)).map(|c| c.record_cache_bytes);
        assert_eq!(bytes(&[]).unwrap(), 64 << 20);
        assert_eq!(bytes(&["--record-cache-mb", "0"]).unwrap(), 0);
        let err = bytes(&["--record-cache-mb", "99999999"]).unwrap_err();
        assert!(err.to_string().contains("--record-cache-mb"), "{err}");
    }

    #[test]
    fn log_format_is_text_or_json() {
        // Proves --log-format defaults to text, takes json, and refuses anything else.
        assert_eq!(
            Config::from_args(args(&[])).unwrap().log_format,
            LogFormat::Text
        );
        let json = Config::from_args(args(&["--log-format", "json"])).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        let argv = [
            "ringkv-node",
            "--id",
            "n1",
            "--data-dir",
            "/x",
            "--log-format",
            "xml",
        ];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn bad_ids_are_refused() {
        // Ids appear in headers and JSON, so only a safe alphabet is allowed.
        let mut a = args(&[]);
        a.id = Some("n 1".into());
        assert!(Config::from_args(a).is_err());
    }
}
