//! Proves the JSON API of README.md#http-api (`PUT /kv`, `GET /kv?key=`, `DELETE
//! /kv?key=`) on one node: its exact shapes, that a PUT overwrites unless it carries
//! a context, siblings as `values`, base64 for non-UTF-8 values, and that it shares
//! keys and contexts with the raw `/kv/{key}` calls.

use ringkv_tests::{NodeProcess, b64, sorted, unb64};
use serde_json::{Value, json};

/// PUT /kv answers 200 `{"data":{"key","value"},"context"}` with acks, GET
/// /kv?key= answers the same shape, and the raw API sees the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_put_and_get_have_the_documented_shape() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    let put = api.json_put("foo", "bar", None).await;
    put.assert_status(200);
    assert_eq!(put.acks().as_deref(), Some("n1"), "{put}");
    let body: Value = put.json();
    assert_eq!(body["data"], json!({"key": "foo", "value": "bar"}), "{put}");
    assert!(
        body["context"].as_str().is_some_and(|c| !c.is_empty()),
        "{put}"
    );

    let get = api.json_get(b"foo", "").await;
    get.assert_status(200);
    let body: Value = get.json();
    assert_eq!(body["data"], json!({"key": "foo", "value": "bar"}), "{get}");
    assert!(
        body["context"].as_str().is_some_and(|c| !c.is_empty()),
        "{get}"
    );

    let raw = api.get(b"foo").await;
    raw.assert_status(200);
    assert_eq!(&raw.body[..], b"bar");
}

/// A JSON PUT without a context overwrites: a second one replaces the first, and
/// one replaces siblings written by the raw API; neither leaves siblings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_put_without_context_overwrites() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    api.json_put("foo", "bar", None).await.assert_status(200);
    let put = api.json_put("foo", "baz", None).await;
    put.assert_status(200);
    assert_eq!(put.json::<Value>()["data"]["value"], "baz");
    let get = api.json_get(b"foo", "").await;
    get.assert_status(200);
    assert_eq!(
        get.json::<Value>()["data"],
        json!({"key": "foo", "value": "baz"})
    );

    api.put(b"sib", "a").await.assert_status(204);
    api.put(b"sib", "b").await.assert_status(204);
    api.get(b"sib").await.assert_siblings();
    api.json_put("sib", "c", None).await.assert_status(200);
    let get = api.json_get(b"sib", "").await;
    get.assert_status(200);
    assert_eq!(
        get.json::<Value>()["data"],
        json!({"key": "sib", "value": "c"})
    );
}

/// A JSON PUT with a `"context"` supersedes exactly that context: given the context
/// of a raw PUT, it replaces that value but not one written concurrently since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_put_with_context_supersedes_only_that_context() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    let first = api.put(b"c", "a").await;
    first.assert_status(204);
    let ctx_a = first.expect_context();
    api.put(b"c", "b").await.assert_status(204);

    let put = api.json_put("c", "c", Some(&ctx_a)).await;
    put.assert_status(200);
    assert_eq!(put.json::<Value>()["data"]["key"], "c");

    let (_, values) = api.get(b"c").await.assert_siblings();
    assert_eq!(values, sorted(&[b"b", b"c"]), "`a` superseded, `b` kept");

    // And with the context of everything, one value is left.
    let get = api.json_get(b"c", "").await;
    get.assert_status(300);
    let ctx = get.json::<Value>()["context"]
        .as_str()
        .expect("a context")
        .to_owned();
    api.json_put("c", "d", Some(&ctx)).await.assert_status(200);
    assert_eq!(&api.get(b"c").await.assert_status(200).body[..], b"d");
}

/// Siblings answer 300 `{"data":{"key","values"},"context"}` on GET /kv?key=, and
/// that context resolves them through the raw API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_get_of_siblings_answers_300_with_values() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    api.put(b"foo", "bar").await.assert_status(204);
    api.put(b"foo", "baz").await.assert_status(204);

    let get = api.json_get(b"foo", "").await;
    get.assert_status(300);
    let body: Value = get.json();
    assert_eq!(body["data"]["key"], "foo", "{get}");
    assert!(
        body["data"].get("value").is_none(),
        "no `value` with siblings: {get}"
    );
    assert!(
        body["data"].get("encoding").is_none(),
        "UTF-8 values: {get}"
    );
    let mut values: Vec<String> = serde_json::from_value(body["data"]["values"].clone()).unwrap();
    values.sort();
    assert_eq!(values, ["bar", "baz"], "{get}");
    let ctx = body["context"].as_str().expect("a context").to_owned();

    api.put_with(b"foo", "qux", Some(&ctx), "")
        .await
        .assert_status(204);
    let get = api.json_get(b"foo", "").await;
    get.assert_status(200);
    assert_eq!(
        get.json::<Value>()["data"],
        json!({"key": "foo", "value": "qux"})
    );
}

/// A stored value that is not UTF-8 comes back base64 with `"encoding":"base64"`,
/// alone (200) and among siblings (300, every value base64).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_values_come_back_as_base64() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();
    let binary: &[u8] = &[0xff, 0xfe, 0x00, 0x80, b'x'];

    api.put(b"bin", binary.to_vec()).await.assert_status(204);
    let get = api.json_get(b"bin", "").await;
    get.assert_status(200);
    let body: Value = get.json();
    assert_eq!(body["data"]["key"], "bin", "{get}");
    assert_eq!(body["data"]["encoding"], "base64", "{get}");
    assert_eq!(body["data"]["value"], b64(binary), "{get}");

    api.put(b"bin", "text").await.assert_status(204);
    let get = api.json_get(b"bin", "").await;
    get.assert_status(300);
    let body: Value = get.json();
    assert_eq!(body["data"]["encoding"], "base64", "{get}");
    let values: Vec<String> = serde_json::from_value(body["data"]["values"].clone()).unwrap();
    let mut decoded: Vec<Vec<u8>> = values.iter().map(|v| unb64(v)).collect();
    decoded.sort();
    assert_eq!(decoded, sorted(&[binary, b"text"]), "{get}");
}

/// DELETE /kv?key= answers 204 with acks; then both GET /kv?key= and GET /kv/{key}
/// answer 404 `not_found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_delete_removes_the_key() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    api.json_put("foo", "bar", None).await.assert_status(200);
    let del = api.json_delete(b"foo", "").await;
    del.assert_status(204);
    assert_eq!(del.acks().as_deref(), Some("n1"), "{del}");

    api.json_get(b"foo", "")
        .await
        .assert_error(404, "not_found");
    api.get(b"foo").await.assert_error(404, "not_found");
    api.json_get(b"never-written", "")
        .await
        .assert_error(404, "not_found");
}

/// JSON keys may hold any UTF-8, including `/`, spaces and `&`: the query value is
/// percent-decoded and names the same key as the raw path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_keys_are_percent_decoded_from_the_query() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();
    let key = "a/b c&d=é?";

    let put = api.json_put(key, "v", None).await;
    put.assert_status(200);
    assert_eq!(put.json::<Value>()["data"]["key"], key);

    let get = api.json_get(key.as_bytes(), "").await;
    get.assert_status(200);
    assert_eq!(
        get.json::<Value>()["data"],
        json!({"key": key, "value": "v"})
    );
    assert_eq!(
        &api.get(key.as_bytes()).await.assert_status(200).body[..],
        b"v"
    );
}
