//! Proves the raw key-value calls of README.md#http-api (`PUT/GET/DELETE /kv/{key}`) on
//! one node with N=1: status codes, context and ack headers, siblings from blind
//! writes, writes and deletes that supersede exactly their context, `overwrite=true`
//! and `resolve=lww`.

use std::time::Duration;

use ringkv_tests::{NodeProcess, sorted};

/// A PUT answers 204 with a context and `X-Ringkv-Acks: n1`, and a GET returns the
/// exact bytes (all 256 byte values, and an empty value) with a context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_get_returns_the_exact_bytes() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    let value: Vec<u8> = (0..=255u8).rev().collect();
    let put = api.put(b"bytes", value.clone()).await;
    put.assert_status(204);
    put.expect_context();
    assert_eq!(put.acks().as_deref(), Some("n1"), "{put}");
    assert_eq!(put.hinted(), None, "one node uses no stand-ins: {put}");
    assert!(put.body.is_empty(), "204 has no body: {put}");

    let get = api.get(b"bytes").await;
    get.assert_status(200);
    get.expect_context();
    assert_eq!(&get.body[..], &value[..]);

    api.put(b"empty", Vec::new()).await.assert_status(204);
    let get = api.get(b"empty").await;
    get.assert_status(200);
    assert!(get.body.is_empty(), "{get}");
}

/// A PUT with the context of a GET supersedes the value that GET saw: the key
/// holds one value afterwards, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_context_supersedes_the_value_read() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    api.put(b"k", "v1").await.assert_status(204);
    let ctx = api.get(b"k").await.assert_status(200).expect_context();
    let put = api.put_with(b"k", "v2", Some(&ctx), "").await;
    put.assert_status(204);
    assert_eq!(put.acks().as_deref(), Some("n1"), "{put}");

    let get = api.get(b"k").await;
    get.assert_status(200);
    assert_eq!(&get.body[..], b"v2");

    // The context a PUT answers with works the same way.
    let ctx = put.expect_context();
    api.put_with(b"k", "v3", Some(&ctx), "")
        .await
        .assert_status(204);
    assert_eq!(&api.get(b"k").await.assert_status(200).body[..], b"v3");
}

/// Two PUTs without a context are concurrent: GET answers 300 with both values as
/// base64 siblings, and a PUT with that context resolves them to one value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_puts_become_siblings_until_a_put_with_their_context() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    api.put(b"s", "first").await.assert_status(204);
    api.put(b"s", "second").await.assert_status(204);

    let get = api.get(b"s").await;
    let (body, values) = get.assert_siblings();
    assert_eq!(body.key, "s");
    assert_eq!(values, sorted(&[b"first", b"second"]), "{get}");
    if let Some(header) = get.context() {
        assert_eq!(
            header, body.context,
            "header and body contexts differ: {get}"
        );
    }

    // A third blind write adds a third sibling.
    api.put(b"s", "third").await.assert_status(204);
    let (body, values) = api.get(b"s").await.assert_siblings();
    assert_eq!(values, sorted(&[b"first", b"second", b"third"]));

    let put = api.put_with(b"s", "merged", Some(&body.context), "").await;
    put.assert_status(204);
    let get = api.get(b"s").await;
    get.assert_status(200);
    assert_eq!(&get.body[..], b"merged");
}

/// DELETE answers 204 with acks, then GET answers 404 `not_found` with a context
/// (the key is tombstoned); a later write brings the key back with no ghost sibling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_tombstones_the_key() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    let missing = api.get(b"never-written").await;
    missing.assert_error(404, "not_found");

    api.put(b"d", "doomed").await.assert_status(204);
    let del = api.delete(b"d").await;
    del.assert_status(204);
    assert_eq!(del.acks().as_deref(), Some("n1"), "{del}");

    let get = api.get(b"d").await;
    get.assert_error(404, "not_found");
    let ctx = get.expect_context();

    // A write with the tombstone's context: one value, no sibling.
    api.put_with(b"d", "reborn", Some(&ctx), "")
        .await
        .assert_status(204);
    let get = api.get(b"d").await;
    get.assert_status(200);
    assert_eq!(&get.body[..], b"reborn");

    // A blind write after a delete: tombstones are never listed as siblings.
    api.delete(b"d").await.assert_status(204);
    api.put(b"d", "again").await.assert_status(204);
    let get = api.get(b"d").await;
    get.assert_status(200);
    assert_eq!(&get.body[..], b"again");
}

/// DELETE with a context removes exactly what that context saw: a value written
/// concurrently after the read survives, and a DELETE with its context removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_context_removes_only_what_it_saw() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    api.put(b"k", "seen").await.assert_status(204);
    let seen_ctx = api.get(b"k").await.assert_status(200).expect_context();
    api.put(b"k", "unseen").await.assert_status(204);

    let del = api.delete_with(b"k", Some(&seen_ctx), "").await;
    del.assert_status(204);
    assert_eq!(del.acks().as_deref(), Some("n1"), "{del}");

    let get = api.get(b"k").await;
    get.assert_status(200);
    assert_eq!(
        &get.body[..],
        b"unseen",
        "the concurrent value must survive"
    );

    let ctx = get.expect_context();
    api.delete_with(b"k", Some(&ctx), "")
        .await
        .assert_status(204);
    api.get(b"k").await.assert_error(404, "not_found");
}

/// `overwrite=true` on a PUT without a context supersedes every sibling stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_replaces_siblings_without_a_context() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    api.put(b"o", "a").await.assert_status(204);
    api.put(b"o", "b").await.assert_status(204);
    api.get(b"o").await.assert_siblings();

    let put = api.put_with(b"o", "winner", None, "overwrite=true").await;
    put.assert_status(204);
    assert_eq!(put.acks().as_deref(), Some("n1"), "{put}");
    let get = api.get(b"o").await;
    get.assert_status(200);
    assert_eq!(&get.body[..], b"winner");

    // On a key never written it is a plain write.
    api.put_with(b"fresh", "x", None, "overwrite=true")
        .await
        .assert_status(204);
    assert_eq!(&api.get(b"fresh").await.assert_status(200).body[..], b"x");
}

/// `resolve=lww` answers 200 with the later-written sibling (in either value order)
/// and changes nothing stored: a plain GET still sees both siblings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_lww_returns_the_later_write() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    for (key, earlier, later) in [
        (&b"lww-1"[..], &b"aaa"[..], &b"zzz"[..]),
        (&b"lww-2"[..], &b"zzz"[..], &b"aaa"[..]),
    ] {
        api.put(key, earlier.to_vec()).await.assert_status(204);
        // Timestamps must differ for "later" to mean anything.
        tokio::time::sleep(Duration::from_millis(20)).await;
        api.put(key, later.to_vec()).await.assert_status(204);

        let get = api.get_with(key, "resolve=lww").await;
        get.assert_status(200);
        get.expect_context();
        assert_eq!(&get.body[..], later, "{get}");

        let (_, values) = api.get(key).await.assert_siblings();
        assert_eq!(values, sorted(&[earlier, later]));
    }
}

/// Every valid per-request parameter of §3.2 is accepted on PUT, GET and DELETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_request_parameters_are_accepted() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();

    let put = api
        .put_with(
            b"p",
            "v",
            None,
            "w=1&r=1&timeout_ms=5000&sync=true&sloppy=false",
        )
        .await;
    put.assert_status(204);
    assert_eq!(put.acks().as_deref(), Some("n1"), "{put}");
    api.put_with(b"p", "v2", None, "overwrite=true&sync=false&sloppy=true")
        .await
        .assert_status(204);

    let get = api
        .get_with(b"p", "r=1&timeout_ms=5000&sloppy=false&resolve=lww")
        .await;
    get.assert_status(200);
    assert_eq!(&get.body[..], b"v2");

    let del = api
        .delete_with(b"p", None, "w=1&r=1&timeout_ms=5000&sync=true")
        .await;
    del.assert_status(204);
    api.get_with(b"p", "r=1")
        .await
        .assert_error(404, "not_found");
}
