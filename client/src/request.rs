//! Per-request options and how they, and keys, become a request path.

use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};

use crate::error::{Error, Result};

/// Options of one read; `None`/`false` leaves the node's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Replies the coordinator waits for (1..=N); query `r`.
    pub r: Option<usize>,
    /// The coordinator's own deadline for the quorum; query `timeout_ms`.
    pub timeout_ms: Option<u64>,
    /// Return one winner by timestamp instead of siblings; query `resolve=lww`.
    pub resolve_lww: bool,
    /// `Some(false)`: only the N home replicas count; query `sloppy`.
    pub sloppy: Option<bool>,
}

/// Options of one write (PUT or DELETE); `None`/`false` leaves the node's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Acknowledgements the coordinator waits for (1..=N); query `w`.
    pub w: Option<usize>,
    /// The coordinator's own deadline for the quorum; query `timeout_ms`.
    pub timeout_ms: Option<u64>,
    /// Replicas fsync before acknowledging; query `sync=true`.
    pub sync: bool,
    /// `Some(false)`: only the N home replicas count; query `sloppy`.
    pub sloppy: Option<bool>,
    /// PUT only: the coordinator reads the current context first and supersedes all
    /// it saw; query `overwrite=true`.
    pub overwrite: bool,
}

impl ReadOptions {
    /// The query string, `?`-prefixed, or empty when no option is set.
    pub fn query(&self) -> String {
        let mut q = Query::default();
        q.opt("r", self.r);
        q.opt("timeout_ms", self.timeout_ms);
        q.opt("sloppy", self.sloppy);
        if self.resolve_lww {
            q.push("resolve", "lww");
        }
        q.0
    }
}

impl WriteOptions {
    /// The query string, `?`-prefixed, or empty when no option is set.
    pub fn query(&self) -> String {
        let mut q = Query::default();
        q.opt("w", self.w);
        q.opt("timeout_ms", self.timeout_ms);
        q.opt("sloppy", self.sloppy);
        if self.sync {
            q.push("sync", true);
        }
        if self.overwrite {
            q.push("overwrite", true);
        }
        q.0
    }
}

/// A query string under construction; every value is a number, a bool or a fixed
/// word, so none needs escaping.
#[derive(Default)]
struct Query(String);

impl Query {
    fn push(&mut self, name: &str, value: impl std::fmt::Display) {
        let sep = if self.0.is_empty() { '?' } else { '&' };
        // Writing to a String cannot fail.
        let _ = write!(self.0, "{sep}{name}={value}");
    }

    fn opt(&mut self, name: &str, value: Option<impl std::fmt::Display>) {
        if let Some(value) = value {
            self.push(name, value);
        }
    }
}

/// Everything but RFC 3986's unreserved characters, so any key, including `/`,
/// spaces and bytes that are not UTF-8, survives the path exactly.
const KEY_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The path segment of `key`: each byte outside RFC 3986 unreserved as `%XX`.
///
/// The keys `.` and `..` are fully escaped too, because as bare path segments
/// proxies and URL normalisers would resolve them away. An empty key is refused:
/// the server requires 1 or more bytes.
pub fn encode_key(key: &[u8]) -> Result<String> {
    match key {
        [] => Err(Error::InvalidInput("the key is empty".to_owned())),
        b"." => Ok("%2E".to_owned()),
        b".." => Ok("%2E%2E".to_owned()),
        _ => Ok(percent_encode(key, KEY_ESCAPES).to_string()),
    }
}

/// `/kv/{key}` followed by `query`.
pub(crate) fn kv_path(key: &[u8], query: &str) -> Result<String> {
    Ok(format!("/kv/{}{query}", encode_key(key)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_key_escapes_slash_space_and_non_utf8_bytes() {
        // Proves reserved characters, spaces and non-UTF-8 bytes are %XX-escaped (uppercase hex).
        assert_eq!(encode_key(b"a/b c").unwrap(), "a%2Fb%20c");
        assert_eq!(encode_key(&[0xff, 0x00, b'k']).unwrap(), "%FF%00k");
        assert_eq!(
            encode_key("é?#%+".as_bytes()).unwrap(),
            "%C3%A9%3F%23%25%2B"
        );
    }

    #[test]
    fn encode_key_keeps_unreserved_characters() {
        // Proves RFC 3986 unreserved characters pass through unescaped.
        let unreserved = b"AZaz09-._~";
        assert_eq!(encode_key(unreserved).unwrap(), "AZaz09-._~");
    }

    #[test]
    fn encode_key_escapes_dot_segments_and_refuses_empty() {
        // Proves `.`/`..` cannot be normalised away and an empty key is never sent.
        assert_eq!(encode_key(b".").unwrap(), "%2E");
        assert_eq!(encode_key(b"..").unwrap(), "%2E%2E");
        assert_eq!(encode_key(b"...").unwrap(), "...");
        assert!(matches!(encode_key(b""), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn encoded_keys_decode_back_to_the_same_bytes() {
        // Proves the encoding round-trips every single byte value exactly.
        let key: Vec<u8> = (0..=255u8).collect();
        let encoded = encode_key(&key).unwrap();
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(&encoded).collect();
        assert_eq!(decoded, key);
        assert!(!encoded.contains('/'));
    }

    #[test]
    fn default_options_add_no_query() {
        // Proves unset options leave every default to the node.
        assert_eq!(ReadOptions::default().query(), "");
        assert_eq!(WriteOptions::default().query(), "");
    }

    #[test]
    fn read_options_build_their_query() {
        // Proves each read option maps to its documented query parameter.
        let opts = ReadOptions {
            r: Some(2),
            timeout_ms: Some(150),
            resolve_lww: true,
            sloppy: Some(false),
        };
        assert_eq!(opts.query(), "?r=2&timeout_ms=150&sloppy=false&resolve=lww");
        let only_r = ReadOptions {
            r: Some(1),
            ..ReadOptions::default()
        };
        assert_eq!(only_r.query(), "?r=1");
    }

    #[test]
    fn write_options_build_their_query() {
        // Proves each write option maps to its documented query parameter.
        let opts = WriteOptions {
            w: Some(3),
            timeout_ms: Some(900),
            sync: true,
            sloppy: Some(false),
            overwrite: true,
        };
        assert_eq!(
            opts.query(),
            "?w=3&timeout_ms=900&sloppy=false&sync=true&overwrite=true"
        );
        let only_sync = WriteOptions {
            sync: true,
            ..WriteOptions::default()
        };
        assert_eq!(only_sync.query(), "?sync=true");
    }

    #[test]
    fn kv_path_joins_key_and_query() {
        // Proves the path is `/kv/` + escaped key + query, with the key's `/` escaped.
        assert_eq!(kv_path(b"a/b", "?r=1").unwrap(), "/kv/a%2Fb?r=1");
    }
}
