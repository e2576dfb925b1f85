//! Proves the HTTP API survives hostile clients: broken chunked bodies, a lying
//! `Content-Length`, invalid percent-encoding, 200 KB of headers, malformed JSON and
//! contexts, random and mutated. Every answer is a 4xx (with the JSON error body
//! whenever the API, not hyper's parser, answers) or a closed connection; nothing
//! hostile is stored; no exchange hangs; the node is still serving at the end.
//! (Slow headers are in http_limits.rs.) Randomised cases print their seed;
//! `RINGKV_ABUSE_SEED` replays one.

use std::net::SocketAddr;
use std::time::Duration;

use ringkv_tests::workload::Rng;
use ringkv_tests::{Api, NodeProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any one exchange may take: past it the node is hanging on a client.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// What came back for raw bytes: `None` if the server closed without an answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

/// Writes `request` (which should say `Connection: close`), half-closes, and reads
/// until the server closes; the first answer in what came back.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may stop reading and close early; a failed write is expected then.
    let _ = stream.write_all(request).await;
    let _ = stream.shutdown().await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the node held a connection for {EXCHANGE_TIMEOUT:?}: {}",
        String::from_utf8_lossy(&request[..request.len().min(200)])
    );
    parse_answer(&received)
}

fn parse_answer(bytes: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(bytes);
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // A chunked answer body: take the first chunk's data.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split_once("\r\n")
            .map_or("", |(_, rest)| rest.split("\r\n").next().unwrap_or(""))
    } else {
        body
    };
    Some(Answer {
        status,
        body: body.to_owned(),
    })
}

/// The verdict on one hostile request: a 4xx or a close; a body must be the JSON error.
fn assert_refused(what: &str, answer: &Option<Answer>) {
    let Some(answer) = answer else { return };
    assert!(
        (400..500).contains(&answer.status),
        "{what}: answered {} {}",
        answer.status,
        answer.body
    );
    if !answer.body.is_empty() {
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_else(|e| {
            panic!(
                "{what}: {} with a body that is not JSON ({e}): {}",
                answer.status, answer.body
            )
        });
        assert!(
            json["error"].is_string() && json["message"].is_string(),
            "{what}: {json}"
        );
    }
}

async fn assert_absent(api: &Api, key: &[u8], what: &str) {
    let status = api.get(key).await.status;
    assert_eq!(
        status,
        404,
        "{what}: a hostile request stored {}",
        String::from_utf8_lossy(key)
    );
}

fn seed() -> u64 {
    let seed = std::env::var("RINGKV_ABUSE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("http_abuse: seed {seed} (replay with RINGKV_ABUSE_SEED={seed})");
    seed
}

fn put_request(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut request =
        format!("PUT {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n")
            .into_bytes();
    request.extend_from_slice(body);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_framing_is_refused_and_stores_nothing() {
    // Bad chunk sizes, cut chunks, a Content-Length that lies in either direction or
    // is not a number, two Content-Lengths, and both framings at once.
    let node = NodeProcess::start_single("n1").await.unwrap();
    let (addr, api) = (node.http_addr(), node.api());
    let te = "Transfer-Encoding: chunked\r\n";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "chunk size not hex",
            put_request("/kv/chunk1", te, b"zz\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "negative chunk size",
            put_request("/kv/chunk2", te, b"-1\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "chunk size overflowing u64",
            put_request(
                "/kv/chunk3",
                te,
                b"fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        (
            "chunk cut short",
            put_request("/kv/chunk4", te, b"10\r\nabc"),
        ),
        (
            "chunk without its CRLF",
            put_request("/kv/chunk5", te, b"3\r\nabcXY0\r\n\r\n"),
        ),
        (
            "no last chunk",
            put_request("/kv/chunk6", te, b"3\r\nabc\r\n"),
        ),
        (
            "Content-Length larger than the body",
            put_request("/kv/len1", "Content-Length: 100\r\n", b"only ten b"),
        ),
        (
            "Content-Length not a number",
            put_request("/kv/len2", "Content-Length: ten\r\n", b"0123456789"),
        ),
        (
            "two Content-Lengths",
            put_request(
                "/kv/len3",
                "Content-Length: 3\r\nContent-Length: 5\r\n",
                b"abcde",
            ),
        ),
        (
            "Content-Length of 2^64",
            put_request("/kv/len5", "Content-Length: 18446744073709551616\r\n", b"x"),
        ),
    ];
    for (what, request) in &cases {
        let answer = exchange(addr, request).await;
        assert_refused(what, &answer);
    }
    for key in [
        "chunk1", "chunk2", "chunk3", "chunk4", "chunk5", "chunk6", "len1", "len2", "len3", "len5",
    ] {
        assert_absent(&api, key.as_bytes(), key).await;
    }
    // Both framings at once: chunked wins, as RFC 9112 says; exactly the chunked body
    // lands, and nothing of it is read as another request.
    let request = put_request(
        "/kv/both",
        &format!("Content-Length: 5\r\n{te}"),
        b"3\r\nabc\r\n0\r\n\r\n",
    );
    let answer = exchange(addr, &request).await.expect("an answer");
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(&api.get(b"both").await.assert_status(200).body[..], b"abc");
    // A Content-Length shorter than the body: the first bytes are the request, the rest
    // is garbage in place of a next request, refused; exactly the declared bytes land.
    let request = put_request(
        "/kv/short",
        "Content-Length: 5\r\n",
        b"abcdeGARBAGE GARBAGE\r\n\r\n",
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(EXCHANGE_TIMEOUT, stream.read_to_end(&mut all))
        .await
        .unwrap()
        .ok();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 204"), "{text}");
    assert_eq!(
        &api.get(b"short").await.assert_status(200).body[..],
        b"abcde"
    );
    assert!(node.api().try_health().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_percent_encoding_and_huge_headers_are_refused() {
    // Keys with invalid escapes answer a JSON 400 on every route; 200 KB of headers
    // (many small ones) are refused; the node keeps serving.
    let node = NodeProcess::start_single("n1").await.unwrap();
    let (addr, api) = (node.http_addr(), node.api());
    for path in [
        "/kv/%zz",
        "/kv/%",
        "/kv/a%F",
        "/kv/%%41",
        "/kv?key=%zz",
        "/kv?key=%",
        "/admin/replicas/%g0",
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\nv"
            );
            let answer = exchange(addr, request.as_bytes()).await;
            let what = format!("{method} {path}");
            // The JSON API's query is form-decoded leniently (below): `%zz` is then a
            // literal key, and a write of it succeeds.
            if !(path.starts_with("/kv?") && answer.as_ref().is_some_and(|a| a.status < 300)) {
                assert_refused(&what, &answer);
            }
            let answer = answer.unwrap_or_else(|| panic!("{what}: no answer"));
            // A key in the path is exact bytes: a bad escape is a 400 (405 first for a
            // method the route does not take). The JSON API's query is form-decoded,
            // leniently as browsers do (`%zz` stays literal): any JSON 4xx there.
            if path.starts_with("/kv/") {
                assert_eq!(answer.status, 400, "{what}: {}", answer.body);
            } else if path.starts_with("/admin") {
                let expected = if method == "GET" { 400 } else { 405 };
                assert_eq!(answer.status, expected, "{what}: {}", answer.body);
            }
        }
    }
    let mut request = String::from("GET /kv/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..200 {
        request.push_str(&format!("X-Filler-{i}: {}\r\n", "h".repeat(1000)));
    }
    request.push_str("\r\n");
    let answer = exchange(addr, request.as_bytes()).await;
    assert_refused("200 KB of headers", &answer);
    assert!(api.try_health().await.is_ok());
}

/// Random printable-ish garbage of up to `max` bytes.
fn garbage(rng: &mut Rng, max: u64) -> Vec<u8> {
    let len = rng.below(max + 1) as usize;
    (0..len).map(|_| rng.below(256) as u8).collect()
}

/// `bytes` with a few random bytes overwritten, inserted or cut.
fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() as u64 + 1) as usize;
        match rng.below(3) {
            0 if at < out.len() => out[at] = rng.below(256) as u8,
            1 => out.insert(at, rng.below(256) as u8),
            _ => out.truncate(at),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_contexts_answer_json_errors() {
    // Random and mutated JSON bodies, deep nesting and wrong types on PUT /kv, and
    // random, mutated and oversized contexts on every write: each is a JSON 4xx (or,
    // for a mutation that stays valid, a success), and the node keeps serving.
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();
    let mut rng = Rng::new(seed());
    let valid = br#"{"data":{"key":"j","value":"v"},"context":null}"#;
    let mut bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
        br#"{"data":{"key":1,"value":"v"}}"#.to_vec(),
        br#"{"data":{"key":"j","value":"v","encoding":"base64"}}"#.to_vec(),
        br#"{"data":{"key":"j","value":"v"},"context":"!!"}"#.to_vec(),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        format!(
            r#"{{"data":{{"key":"j","value":"{}"}}}}"#,
            "\\u".repeat(1000)
        )
        .into_bytes(),
    ];
    for _ in 0..150 {
        bodies.push(garbage(&mut rng, 300));
        bodies.push(mutate(&mut rng, valid));
    }
    for body in &bodies {
        let response = api.json_put_raw(body.clone(), "").await;
        if response.status >= 300 {
            let what = format!(
                "PUT /kv {:?}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
            assert!((400..500).contains(&response.status), "{what}: {response}");
            response.assert_error_status(response.status);
        }
    }
    // Contexts: a real one mutated, random ones, and one of 16 KiB.
    let real = api
        .put(b"ctx", "v")
        .await
        .assert_status(204)
        .expect_context();
    let mut contexts: Vec<String> = vec!["A".repeat(16 * 1024), "=".into(), "AAAA".into()];
    for _ in 0..100 {
        let mutated = mutate(&mut rng, real.as_bytes());
        contexts.push(
            String::from_utf8_lossy(&mutated)
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .collect(),
        );
        contexts.push(
            garbage(&mut rng, 64)
                .iter()
                .map(|b| char::from(b'!' + b % 94))
                .collect(),
        );
    }
    for context in &contexts {
        let response = api.put_with(b"ctx", "w", Some(context), "").await;
        if response.status >= 300 {
            assert!(
                (400..500).contains(&response.status),
                "context {context:?}: {response}"
            );
            response.assert_error_status(response.status);
        }
        let response = api.delete_with(b"ctx-absent", Some(context), "").await;
        if response.status >= 300 {
            assert!(
                (400..500).contains(&response.status),
                "context {context:?}: {response}"
            );
            response.assert_error_status(response.status);
        }
    }
    assert!(api.try_health().await.is_ok());
}
