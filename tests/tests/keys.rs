//! Proves that keys are arbitrary bytes: `/`, spaces, `%`, reserved characters,
//! unicode and non-UTF-8 bytes, percent-encoded in the path, name distinct keys
//! that round-trip exactly through PUT, GET, 300 bodies and `/admin/replicas`.

use ringkv_tests::{NodeProcess, b64, sorted};

fn awkward_keys() -> Vec<Vec<u8>> {
    [
        &b"a/b"[..],
        b"a%2Fb",
        b"/leading",
        b"trailing/",
        b"a//b",
        b"with space",
        b"100%",
        b"%",
        b"%%41",
        b"+plus+",
        b"?q=1&r=2#frag",
        b"a.b-c_d~e",
        b"\x00",
        b"tab\there\nnewline",
        "ключ-🔑-キー".as_bytes(),
        &[0xff, 0xfe, 0x00, 0x80],
        &[0xc3],
        b"k",
    ]
    .iter()
    .map(|k| k.to_vec())
    .collect()
}

/// Each awkward key stores its own value and reads back the same bytes; the
/// `/admin/replicas` answer names the key and holds the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_keys_round_trip_exactly() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();
    let keys = awkward_keys();
    let value_of = |i: usize, key: &[u8]| {
        let mut v = format!("value-{i}:").into_bytes();
        v.extend_from_slice(key);
        v
    };

    for (i, key) in keys.iter().enumerate() {
        let put = api.put(key, value_of(i, key)).await;
        assert_eq!(put.status, 204, "PUT key {key:?} answered {put}");
    }
    for (i, key) in keys.iter().enumerate() {
        let get = api.get(key).await;
        assert_eq!(get.status, 200, "GET key {key:?} answered {get}");
        assert_eq!(get.body[..], value_of(i, key)[..], "key {key:?}");

        let replicas = api.replicas(key).await;
        assert_eq!(
            replicas.key,
            String::from_utf8_lossy(key),
            "key {key:?}: {replicas:?}"
        );
        assert_eq!(replicas.preference_list, ["n1"], "key {key:?}");
        let replica = &replicas.replicas[0];
        assert_eq!(replica.found, Some(true), "key {key:?}: {replicas:?}");
        assert_eq!(
            replica.siblings.as_deref(),
            Some(&[b64(&value_of(i, key))][..]),
            "key {key:?}: {replicas:?}"
        );
    }
}

/// Siblings of an awkward key answer 300 naming the key, and DELETE of an awkward
/// key removes that key only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_keys_have_their_own_siblings_and_deletes() {
    let node = NodeProcess::start_single("n1").await.unwrap();
    let api = node.api();
    let key = "dir/sub dir/ü%".as_bytes();
    let neighbour = b"dir/sub dir/";

    api.put(key, "x").await.assert_status(204);
    api.put(key, "y").await.assert_status(204);
    api.put(neighbour, "n").await.assert_status(204);

    let (body, values) = api.get(key).await.assert_siblings();
    assert_eq!(body.key, "dir/sub dir/ü%");
    assert_eq!(values, sorted(&[b"x", b"y"]));

    api.delete(key).await.assert_status(204);
    api.get(key).await.assert_error(404, "not_found");
    assert_eq!(&api.get(neighbour).await.assert_status(200).body[..], b"n");
}
