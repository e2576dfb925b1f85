//! Proves every error row of README.md#http-api on one node: each bad request answers
//! its status with a JSON `{"error","message"}` body, and a refused write stores
//! nothing.

use bytes::Bytes;
use http::Method;
use ringkv_client::wire::codes;
use ringkv_tests::http::{chunked, empty, full};
use ringkv_tests::raw::{self, RawBody};
use ringkv_tests::{Api, NodeOptions, NodeProcess, Response, sorted};

const MIB: usize = 1024 * 1024;

/// Asserts that `key` was never written: GET answers 404 `not_found`.
async fn assert_absent(api: &Api, key: &[u8]) {
    let get = api.get(key).await;
    assert_eq!(
        get.status,
        404,
        "a refused write must store nothing, but {} answered {get}",
        String::from_utf8_lossy(key)
    );
    get.assert_error(404, "not_found");
}

/// Keys longer than 1024 bytes answer 400 `key_too_long` on every call; 1024 bytes
/// is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_over_1024_bytes_are_refused() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();
    let long = vec![b'k'; 1025];

    api.put(&long, "v").await.assert_error(400, "key_too_long");
    api.get(&long).await.assert_error(400, "key_too_long");
    api.delete(&long).await.assert_error(400, "key_too_long");
    let long_text = String::from_utf8(long.clone()).unwrap();
    api.json_put(&long_text, "v", None)
        .await
        .assert_error(400, "key_too_long");
    api.json_get(&long, "")
        .await
        .assert_error(400, "key_too_long");

    let max = vec![b'k'; 1024];
    api.put(&max, "v").await.assert_status(204);
    assert_eq!(&api.get(&max).await.assert_status(200).body[..], b"v");
}

/// `--max-key-bytes 16` counts the percent-decoded bytes: 16 bytes (also 8 two-byte
/// characters sent as 48 path characters) pass, 17 answer 400 `key_too_long`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_key_bytes_flag_limits_decoded_key_length() {
    let node = NodeProcess::start(NodeOptions::new("n1").flag("--max-key-bytes", 16))
        .await
        .unwrap();
    let api = node.api();

    api.put(&[b'a'; 17], "v")
        .await
        .assert_error(400, "key_too_long");
    api.put(&[b'a'; 16], "v").await.assert_status(204);

    let two_byte_chars = "é".repeat(8);
    assert_eq!(two_byte_chars.len(), 16);
    api.put(two_byte_chars.as_bytes(), "v")
        .await
        .assert_status(204);
    let too_long = format!("{two_byte_chars}a");
    api.put(too_long.as_bytes(), "v")
        .await
        .assert_error(400, "key_too_long");
}

/// A value of exactly 1 MiB is stored; one byte more answers 413 `value_too_large`
/// and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_1_mib_are_refused() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    let max: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    api.put(b"max", max.clone()).await.assert_status(204);
    let get = api.get(b"max").await;
    get.assert_status(200);
    assert!(
        get.body[..] == max[..],
        "the 1 MiB value came back different"
    );

    let over = Bytes::from(vec![b'x'; MIB + 1]);
    let resp = raw::send(
        node.http_addr(),
        "PUT",
        "/kv/over",
        &[],
        RawBody::Sized(over),
    )
    .await
    .unwrap();
    resp.assert_error(413, "value_too_large");
    assert_absent(&api, b"over").await;
}

/// `--max-value-bytes 1000`: 1000 bytes pass; 1001 bytes answer 413
/// `value_too_large` whether sent with a `Content-Length`, chunked, or as a JSON
/// value; nothing refused is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_value_bytes_flag_limits_sized_and_chunked_bodies() {
    let node = NodeProcess::start(NodeOptions::new("n1").flag("--max-value-bytes", 1000))
        .await
        .unwrap();
    let api = node.api();

    api.put(b"ok", vec![b'v'; 1000]).await.assert_status(204);
    assert_eq!(api.get(b"ok").await.assert_status(200).body.len(), 1000);

    api.put(b"sized", vec![b'v'; 1001])
        .await
        .assert_error(413, "value_too_large");
    assert_absent(&api, b"sized").await;

    // Chunked, no Content-Length: the server has to count while reading.
    let chunks = vec![Bytes::from(vec![b'c'; 400]); 3];
    let resp = api
        .request(Method::PUT, "/kv/chunked", &[], chunked(chunks))
        .await;
    resp.assert_error(413, "value_too_large");
    assert_absent(&api, b"chunked").await;

    // Far over the limit, chunked, by hand (the server may stop reading early).
    let chunks = vec![Bytes::from(vec![b'c'; 16 * 1024]); 64];
    let resp = raw::send(
        node.http_addr(),
        "PUT",
        "/kv/chunked-big",
        &[],
        RawBody::Chunked(chunks),
    )
    .await
    .unwrap();
    resp.assert_error(413, "value_too_large");
    assert_absent(&api, b"chunked-big").await;

    // A chunked body within the limit is an ordinary write.
    let chunks = vec![Bytes::from(vec![b'c'; 300]); 3];
    let resp = raw::send(
        node.http_addr(),
        "PUT",
        "/kv/chunked-ok",
        &[],
        RawBody::Chunked(chunks),
    )
    .await
    .unwrap();
    resp.assert_status(204);
    assert_eq!(
        api.get(b"chunked-ok").await.assert_status(200).body.len(),
        900
    );

    let value = "j".repeat(1001);
    api.json_put("json", &value, None)
        .await
        .assert_error(413, "value_too_large");
    assert_absent(&api, b"json").await;
}

/// A malformed `X-Ringkv-Context` (header or JSON field) answers 400 `bad_context`
/// on PUT and DELETE, and nothing is written or deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_context_is_refused() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    for bad in ["not a context!", "%%%", "@@@@"] {
        api.put_with(b"k", "v", Some(bad), "")
            .await
            .assert_error(400, "bad_context");
        assert_absent(&api, b"k").await;

        api.json_put("j", "v", Some(bad))
            .await
            .assert_error(400, "bad_context");
        assert_absent(&api, b"j").await;
    }

    api.put(b"kept", "v").await.assert_status(204);
    api.delete_with(b"kept", Some("not a context!"), "")
        .await
        .assert_error(400, "bad_context");
    assert_eq!(&api.get(b"kept").await.assert_status(200).body[..], b"v");
}

/// A malformed JSON body answers 400 `bad_request` and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_refused() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    for body in [
        r#"{not json"#,
        r#""#,
        r#"[]"#,
        r#"{"key":"j","value":"v"}"#,
        r#"{"data":{"key":"j"}}"#,
        r#"{"data":{"value":"v"}}"#,
        r#"{"data":{"key":"j","value":123}}"#,
        r#"{"data":{"key":"j","value":"v"}"#,
    ] {
        let resp = api.json_put_raw(body, "").await;
        assert_eq!(resp.status, 400, "body {body:?} answered {resp}");
        resp.assert_error(400, "bad_request");
        assert_absent(&api, b"j").await;
    }
}

/// Bad per-request parameters (out of range, not a number, not a boolean, unknown)
/// answer 400 `bad_request` on every call, and nothing is written or deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_are_refused() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();
    let bad_for_all = [
        "w=0",
        "w=2",
        "w=abc",
        "w=-1",
        "r=0",
        "r=99",
        "r=abc",
        "timeout_ms=abc",
        "timeout_ms=-5",
        "sync=maybe",
        "sloppy=maybe",
        "no_such_param=1",
    ];

    for query in bad_for_all.iter().chain(&["overwrite=maybe"]) {
        let resp = api.put_with(b"k", "v", None, query).await;
        assert_eq!(resp.status, 400, "PUT ?{query} answered {resp}");
        resp.assert_error(400, "bad_request");
        assert_absent(&api, b"k").await;

        let body = r#"{"data":{"key":"j","value":"v"}}"#;
        let resp = api.json_put_raw(body, query).await;
        assert_eq!(resp.status, 400, "PUT /kv?{query} answered {resp}");
        resp.assert_error(400, "bad_request");
        assert_absent(&api, b"j").await;
    }

    api.put(b"kept", "v").await.assert_status(204);
    for query in bad_for_all.iter().chain(&["resolve=maybe"]) {
        let resp = api.get_with(b"kept", query).await;
        assert_eq!(resp.status, 400, "GET ?{query} answered {resp}");
        resp.assert_error(400, "bad_request");

        let resp = api.json_get(b"kept", query).await;
        assert_eq!(resp.status, 400, "GET /kv?key=kept&{query} answered {resp}");
        resp.assert_error(400, "bad_request");
    }
    for query in bad_for_all {
        let resp = api.delete_with(b"kept", None, query).await;
        assert_eq!(resp.status, 400, "DELETE ?{query} answered {resp}");
        resp.assert_error(400, "bad_request");

        let resp = api.json_delete(b"kept", query).await;
        assert_eq!(
            resp.status, 400,
            "DELETE /kv?key=kept&{query} answered {resp}"
        );
        resp.assert_error(400, "bad_request");
    }
    assert_eq!(&api.get(b"kept").await.assert_status(200).body[..], b"v");
}

/// An empty key answers 400 on every call, raw (`/kv/`) and JSON (`"key":""`,
/// `?key=`, no `key` at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_keys_are_refused() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    api.request(Method::PUT, "/kv/", &[], full("v"))
        .await
        .assert_error_status(400);
    api.request(Method::GET, "/kv/", &[], empty())
        .await
        .assert_error_status(400);
    api.request(Method::DELETE, "/kv/", &[], empty())
        .await
        .assert_error_status(400);
    api.json_put("", "v", None).await.assert_error_status(400);
    api.get_path("/kv?key=").await.assert_error_status(400);
    api.get_path("/kv").await.assert_error_status(400);
    api.request(Method::DELETE, "/kv", &[], empty())
        .await
        .assert_error_status(400);
}

/// With `--max-siblings 3` a fourth concurrent value answers 409
/// `too_many_siblings` and is not stored; a write with the context then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_max_siblings_are_refused_not_dropped() {
    let node = NodeProcess::start(NodeOptions::new("n1").flag("--max-siblings", 3))
        .await
        .unwrap();
    let api = node.api();

    for value in ["one", "two", "three"] {
        api.put(b"s", value).await.assert_status(204);
    }
    let refused = api.put(b"s", "four").await;
    let body = refused.assert_error(409, "too_many_siblings");
    if let Some(limit) = body.get("max_siblings") {
        assert_eq!(limit, 3, "{refused}");
    }
    let (siblings, values) = api.get(b"s").await.assert_siblings();
    assert_eq!(values, sorted(&[b"one", b"three", b"two"]), "`four` stored");

    api.json_put("s", "four", Some(&siblings.context))
        .await
        .assert_status(200);
    assert_eq!(&api.get(b"s").await.assert_status(200).body[..], b"four");

    // The JSON write above superseded all three; fill up again and check the
    // refused value is not among the stored ones.
    for value in ["five", "six"] {
        api.put(b"s", value).await.assert_status(204);
    }
    api.put(b"s", "seven")
        .await
        .assert_error(409, codes::TOO_MANY_SIBLINGS);
    let (body, values) = api.get(b"s").await.assert_siblings();
    assert_eq!(values, sorted(&[b"five", b"four", b"six"]));

    api.put_with(b"s", "resolved", Some(&body.context), "")
        .await
        .assert_status(204);
    assert_eq!(
        &api.get(b"s").await.assert_status(200).body[..],
        b"resolved"
    );
}

/// A node alone with `--n 3 --r 2 --w 2` refuses quorum calls with 503
/// `insufficient_replicas` (`"live":1,"required":2`) and stores nothing, while
/// `w=1`/`r=1` on the same node succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_live_replicas_answer_503() {
    let node = NodeProcess::start(NodeOptions::new("n1").quorum(3, 2, 2))
        .await
        .unwrap();
    let api = node.api();

    let check = |resp: Response, call: &str| {
        let body = resp.assert_error(503, "insufficient_replicas");
        assert_eq!(body["live"], 1, "{call}: {resp}");
        assert_eq!(body["required"], 2, "{call}: {resp}");
    };
    check(api.put(b"k", "v").await, "PUT");
    check(api.json_put("k", "v", None).await, "JSON PUT");
    check(api.get(b"k").await, "GET");
    check(api.delete(b"k").await, "DELETE");

    api.get_with(b"k", "r=1")
        .await
        .assert_error(404, "not_found");
    api.put_with(b"k", "v", None, "w=1")
        .await
        .assert_status(204);
    assert_eq!(
        &api.get_with(b"k", "r=1").await.assert_status(200).body[..],
        b"v"
    );
}

/// An unknown path answers 404 JSON `not_found`; a known path with the wrong method
/// answers 405 JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_wrong_methods_answer_json() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    for path in ["/nope", "/kvx/a", "/admin/nope", "/health/extra"] {
        let resp = api.get_path(path).await;
        assert_eq!(resp.status, 404, "GET {path} answered {resp}");
        resp.assert_error(404, "not_found");
    }

    for (method, path) in [
        (Method::PATCH, "/kv/x"),
        (Method::POST, "/kv/x"),
        (Method::PATCH, "/kv"),
        (Method::POST, "/health"),
        (Method::DELETE, "/cluster"),
        (Method::PUT, "/metrics"),
    ] {
        let resp = api.request(method.clone(), path, &[], full("v")).await;
        assert_eq!(resp.status, 405, "{method} {path} answered {resp}");
        resp.assert_error(405, codes::METHOD_NOT_ALLOWED);
    }
    assert_absent(&api, b"x").await;
}
