//! End-to-end runs of the bench against in-process servers: the reference
//! server of `bare_hyper`, and small fakes that check what the bench sends.
//! Nothing here asserts a speed (the machine is shared); only counts and shapes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use clap::Parser as _;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ringkv_client::wire::HEADER_CONTEXT;
use tokio::net::TcpListener;

use super::*;
use crate::cli::{Cli, Command};

/// A run of `workload` against `addr`: 4 workers, 100 keys, 1 s measured after
/// a 200 ms warm-up.
fn config(addr: SocketAddr, workload: Workload) -> Config {
    Config {
        workload,
        protocol: Protocol::Ringkv,
        nodes: vec![format!("http://{addr}")],
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        concurrency: 4,
        keys: 100,
        value_bytes: 100,
        zipf: None,
        r: None,
        w: None,
        load: true,
        key_prefix: "t-".to_owned(),
        seed: 42,
        request_timeout: Duration::from_secs(5),
        progress: false,
        secured: Secured::default(),
    }
}

async fn start_reference() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ringkv_client::reference::serve(listener, 100));
    addr
}

/// A fake server: `handler(method, path and query, headers, body)` answers each
/// request, on HTTP/1.1 keep-alive connections.
async fn start_fake<H>(handler: H) -> SocketAddr
where
    H: Fn(&Method, &str, &HeaderMap, &[u8]) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let handler = handler.clone();
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body.collect().await?.to_bytes();
                    let path = parts.uri.path_and_query().map_or("", |pq| pq.as_str());
                    Ok::<_, hyper::Error>(handler(&parts.method, path, &parts.headers, &body))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

fn reply(
    status: StatusCode,
    context: Option<String>,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Some(context) = context {
        response
            .headers_mut()
            .insert(HEADER_CONTEXT, context.parse().unwrap());
    }
    response
}

/// Checks the invariants every clean run has, and returns the parsed JSON.
fn check_clean_run(summary: &Summary) -> serde_json::Value {
    assert!(summary.ops > 0, "no operations: {summary:?}");
    assert_eq!(summary.errors, 0, "errors: {summary:?}");
    assert_eq!(
        summary.reads + summary.updates + summary.inserts,
        summary.ops
    );
    assert!(summary.duration_s >= 1.0, "{summary:?}");
    assert!(summary.throughput_ops_s > 0.0 && summary.p999_ms >= summary.p50_ms);
    let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
    for key in [
        "workload",
        "ops",
        "errors",
        "duration_s",
        "throughput_ops_s",
        "p50_ms",
        "p99_ms",
        "p999_ms",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    assert_eq!(json["ops"], summary.ops);
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_the_token() {
    // With a token, the load and the run send `Authorization: Bearer <token>` on every
    // request: the fake node answers 401 to any request without it, and none fails.
    let addr = start_fake(|method, _, headers, _| {
        if headers
            .get(http::header::AUTHORIZATION)
            .is_none_or(|v| v != "Bearer bench-token")
        {
            return reply(StatusCode::UNAUTHORIZED, None, "{}");
        }
        match *method {
            Method::GET => reply(StatusCode::OK, Some("ctx".into()), "v"),
            _ => reply(StatusCode::NO_CONTENT, Some("ctx".into()), ""),
        }
    })
    .await;
    let mut run = config(addr, Workload::A);
    run.secured.token = Some(ringkv_client::BearerToken::new("bench-token").unwrap());
    check_clean_run(&execute(&run).await.unwrap());
    // And without it, every request is an error: the check above can fail.
    let summary = execute(&config(addr, Workload::C)).await.unwrap();
    assert_eq!(summary.errors, summary.ops, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_c_a_and_w_run_clean_against_the_reference_server() {
    // Proves a 1-second run of each workload against bare_hyper's server does
    // operations of exactly its mix's types with no errors, and reports the JSON
    // contract's keys.
    let addr = start_reference().await;

    let c = execute(&config(addr, Workload::C)).await.unwrap();
    let json = check_clean_run(&c);
    assert_eq!(json["workload"], "c");
    assert_eq!(c.reads, c.ops);
    assert!(c.loaded && c.load_errors == 0);

    let a = execute(&config(addr, Workload::A)).await.unwrap();
    check_clean_run(&a);
    assert!(a.reads > 0 && a.updates > 0 && a.inserts == 0, "{a:?}");

    let w = execute(&config(addr, Workload::W)).await.unwrap();
    check_clean_run(&w);
    assert_eq!(w.inserts, w.ops);
}

/// What the context-checking fake saw of the PUTs.
#[derive(Debug, Default)]
struct PutCounts {
    /// Without a context and without `overwrite=true`: would make a sibling.
    blind: AtomicU64,
    /// With `overwrite=true` (load writes, updates of a key with no context).
    overwrites: AtomicU64,
    /// With a context that came from a read.
    read_contexts: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_carry_the_freshest_context_of_their_own_key() {
    // Proves every update carries the context the server last gave for that same
    // key (from a read or a write), or else asks for an overwrite, so no update
    // writes blind; after a load phase (whose writes overwrite) every update has
    // a context, and after --no-load the first ones overwrite.
    let counts = Arc::new(PutCounts::default());
    let seen = counts.clone();
    let addr = start_fake(move |method, path, headers, body| {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let key = path.strip_prefix("/kv/").unwrap().to_owned();
        if method == Method::GET {
            return reply(StatusCode::OK, Some(format!("read.{key}")), "v");
        }
        assert_eq!(body.len(), 100);
        let context = headers
            .get(HEADER_CONTEXT)
            .map(|c| c.to_str().unwrap().to_owned());
        let counter = match context {
            Some(c) if c != format!("read.{key}") && c != format!("write.{key}") => {
                return reply(StatusCode::BAD_REQUEST, None, format!("{c} is not {key}'s"));
            }
            Some(c) if c.starts_with("read.") => Some(&seen.read_contexts),
            Some(_) => None,
            None if query.contains("overwrite=true") => Some(&seen.overwrites),
            None => Some(&seen.blind),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        reply(StatusCode::NO_CONTENT, Some(format!("write.{key}")), "")
    })
    .await;

    let loaded = execute(&Config {
        keys: 20,
        ..config(addr, Workload::A)
    })
    .await
    .unwrap();
    check_clean_run(&loaded);
    assert!(loaded.updates > 0);
    assert_eq!(counts.blind.load(Ordering::Relaxed), 0);
    assert_eq!(
        counts.overwrites.load(Ordering::Relaxed),
        20,
        "only the load overwrites"
    );
    assert!(counts.read_contexts.load(Ordering::Relaxed) > 0);

    let unloaded = execute(&Config {
        keys: 20,
        load: false,
        key_prefix: "u-".to_owned(),
        ..config(addr, Workload::A)
    })
    .await
    .unwrap();
    check_clean_run(&unloaded);
    assert_eq!(counts.blind.load(Ordering::Relaxed), 0);
    assert!(counts.overwrites.load(Ordering::Relaxed) > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_loaded_key_is_an_error_but_not_after_no_load() {
    // Proves a 404 for a key the load phase wrote counts as an error, while with
    // --no-load it only counts as not found; and that 300 counts as siblings.
    let addr = start_fake(|method, path, _, _| {
        if method != Method::GET {
            reply(StatusCode::NO_CONTENT, None, "")
        } else if path.ends_with('7') {
            reply(StatusCode::NOT_FOUND, None, "")
        } else {
            reply(StatusCode::MULTIPLE_CHOICES, Some("c".to_owned()), "{}")
        }
    })
    .await;
    let run = |load| async move {
        let config = Config {
            keys: 10,
            load,
            duration: Duration::from_millis(300),
            warmup: Duration::ZERO,
            ..config(addr, Workload::C)
        };
        execute(&config).await
    };

    let loaded = run(true).await.unwrap();
    assert!(loaded.not_found > 0 && loaded.siblings > 0, "{loaded:?}");
    assert_eq!(loaded.errors, loaded.not_found);
    assert_eq!(loaded.error_kinds["not_found"], loaded.not_found);

    let unloaded = run(false).await.unwrap();
    assert!(unloaded.not_found > 0 && !unloaded.loaded, "{unloaded:?}");
    assert_eq!(unloaded.errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_mode_finds_the_gateway_prefix_and_speaks_its_json() {
    // Proves --protocol etcd falls back to /v3beta when /v3 is missing, posts
    // base64 keys and values to kv/put and kv/range, and judges reads by "kvs".
    let puts = Arc::new(AtomicU64::new(0));
    let counted = puts.clone();
    let addr = start_fake(move |method, path, _, body| {
        assert_eq!(method, Method::POST);
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        let key = BASE64.decode(json["key"].as_str().unwrap()).unwrap();
        match path {
            "/v3beta/kv/put" => {
                assert!(key.starts_with(b"t-"), "{key:?}");
                assert_eq!(
                    BASE64
                        .decode(json["value"].as_str().unwrap())
                        .unwrap()
                        .len(),
                    100
                );
                counted.fetch_add(1, Ordering::Relaxed);
                reply(StatusCode::OK, None, r#"{"header":{}}"#)
            }
            "/v3beta/kv/range" => reply(
                StatusCode::OK,
                None,
                r#"{"header":{},"kvs":[{}],"count":"1"}"#,
            ),
            _ => reply(StatusCode::NOT_FOUND, None, ""),
        }
    })
    .await;

    let summary = execute(&Config {
        protocol: Protocol::Etcd,
        keys: 30,
        ..config(addr, Workload::B)
    })
    .await
    .unwrap();
    let json = check_clean_run(&summary);
    assert_eq!(json["protocol"], "etcd");
    assert_eq!(summary.not_found, 0);
    assert!(puts.load(Ordering::Relaxed) >= 30 + summary.updates);
}

#[tokio::test]
async fn an_unreachable_node_fails_the_run_before_any_load() {
    // Proves setup refuses a node nobody listens on, naming it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let error = execute(&config(addr, Workload::C)).await.unwrap_err();
    assert!(
        format!("{error:#}").contains(&addr.to_string()),
        "{error:#}"
    );
}

#[test]
fn bench_flags_parse() {
    // Proves the documented flags reach their fields, `--zipf` alone means 0.99,
    // and `--skip-load` is `--no-load`.
    let parse = |args: &[&str]| {
        let cli = Cli::try_parse_from(["ringkv", "bench"].iter().chain(args)).unwrap();
        let Command::Bench(bench) = cli.command else {
            panic!("not a bench: {:?}", cli.command);
        };
        bench
    };
    let defaults = parse(&[]);
    assert_eq!(defaults.workload, Workload::A);
    assert_eq!(defaults.duration, Duration::from_secs(20));
    assert_eq!(defaults.warmup, Duration::from_secs(5));
    assert_eq!(
        (defaults.concurrency, defaults.keys, defaults.value_bytes),
        (64, 100_000, 100)
    );
    assert_eq!(
        (defaults.zipf, defaults.no_load, defaults.json),
        (None, false, false)
    );
    assert_eq!(defaults.protocol, Protocol::Ringkv);

    let args = parse(&[
        "--workload",
        "w",
        "--duration",
        "1m30s",
        "--warmup",
        "0s",
        "--concurrency",
        "8",
        "--keys",
        "10",
        "--value-size",
        "1024",
        "--zipf",
        "--r",
        "1",
        "--w",
        "3",
        "--skip-load",
        "--key-prefix",
        "run7/",
        "--seed",
        "9",
        "--protocol",
        "etcd",
        "--json",
    ]);
    assert_eq!(args.workload, Workload::W);
    assert_eq!(args.duration, Duration::from_secs(90));
    assert_eq!(args.warmup, Duration::ZERO);
    assert_eq!(
        (args.concurrency, args.keys, args.value_bytes),
        (8, 10, 1024)
    );
    assert_eq!((args.zipf, args.r, args.w), (Some(0.99), Some(1), Some(3)));
    assert!(args.no_load && args.json);
    assert_eq!((args.key_prefix.as_str(), args.seed), ("run7/", Some(9)));
    assert_eq!(args.protocol, Protocol::Etcd);

    assert_eq!(parse(&["--zipf", "1.2"]).zipf, Some(1.2));
    assert!(!parse(&["--no-load", "--load"]).no_load);
    assert!(parse(&["--load", "--no-load"]).no_load);
    assert!(Cli::try_parse_from(["ringkv", "bench", "--workload", "d"]).is_err());
    assert!(Cli::try_parse_from(["ringkv", "bench", "--duration", "soon"]).is_err());
}

#[test]
fn config_refuses_bad_values() {
    // Proves nonsense flags fail before any connection is opened.
    let nodes = ["http://127.0.0.1:1".to_owned()];
    let parse = |args: &[&str]| {
        let cli = Cli::try_parse_from(["ringkv", "bench"].iter().chain(args)).unwrap();
        let Command::Bench(bench) = cli.command else {
            panic!("not a bench");
        };
        bench
    };
    let check = |args: &[&str]| Config::new(&nodes, 1_000, &parse(args));
    assert!(check(&[]).is_ok());
    assert!(check(&["--concurrency", "0"]).is_err());
    assert!(check(&["--keys", "0"]).is_err());
    assert!(check(&["--duration", "0s"]).is_err());
    assert!(check(&["--zipf=-1"]).is_err());
    assert!(check(&["--r", "0"]).is_err());
    assert!(check(&["--protocol", "etcd", "--w", "2"]).is_err());
    assert!(Config::new(&[], 1_000, &parse(&[])).is_err());
    let config = check(&["--json", "--seed", "5", "--skip-load"]).unwrap();
    assert!(!config.progress && !config.load);
    assert_eq!(config.seed, 5);
}
