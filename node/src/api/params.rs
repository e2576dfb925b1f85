//! Query parameters of the KV calls (`r`, `w`, `timeout_ms`, `sync`, `sloppy`,
//! `resolve`, `overwrite`, and `key` on `/kv`), parsed strictly: an unknown name, a
//! repeated name or a bad value is a 400 before anything is read or written.

use std::time::Duration;

use crate::coordinator::{Quorum, ReadOptions, WriteOptions};
use crate::error::{Error, Result};

const TIMEOUT_MS_MAX: u64 = 600_000;

/// The parsed query of a KV request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvParams {
    pub r: Option<usize>,
    pub w: Option<usize>,
    pub timeout_ms: Option<u64>,
    pub sync: bool,
    pub sloppy: bool,
    pub resolve_lww: bool,
    pub overwrite: bool,
    /// Only on `/kv` (the JSON API).
    pub key: Option<String>,
}

impl KvParams {
    /// Parses `query`; `n` bounds `r` and `w`; `key` is allowed only when `with_key`.
    pub fn parse(query: Option<&str>, n: usize, with_key: bool) -> Result<Self> {
        let mut p = KvParams {
            sloppy: true,
            ..Default::default()
        };
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if seen.iter().any(|s| *s == name) {
                return Err(bad(format!("query parameter {name} is given twice")));
            }
            seen.push(name.to_string());
            match name.as_ref() {
                "r" => p.r = Some(quorum("r", &value, n)?),
                "w" => p.w = Some(quorum("w", &value, n)?),
                "timeout_ms" => {
                    p.timeout_ms = Some(
                        value
                            .parse::<u64>()
                            .ok()
                            .filter(|t| (1..=TIMEOUT_MS_MAX).contains(t))
                            .ok_or_else(|| {
                                bad(format!("timeout_ms={value}: expected 1..={TIMEOUT_MS_MAX}"))
                            })?,
                    )
                }
                "sync" => p.sync = boolean("sync", &value)?,
                "sloppy" => p.sloppy = boolean("sloppy", &value)?,
                "overwrite" => p.overwrite = boolean("overwrite", &value)?,
                "resolve" => match value.as_ref() {
                    "lww" => p.resolve_lww = true,
                    "siblings" => p.resolve_lww = false,
                    other => return Err(bad(format!("resolve={other}: expected lww or siblings"))),
                },
                "key" if with_key => p.key = Some(value.into_owned()),
                other => return Err(bad(format!("unknown query parameter {other:?}"))),
            }
        }
        Ok(p)
    }

    pub fn read_options(&self, defaults: Quorum, timeout: Duration) -> ReadOptions {
        ReadOptions {
            r: self.r.unwrap_or(defaults.r),
            timeout: self.timeout(timeout),
            sloppy: self.sloppy,
        }
    }

    pub fn write_options(&self, defaults: Quorum, timeout: Duration) -> WriteOptions {
        WriteOptions {
            w: self.w.unwrap_or(defaults.w),
            r: self.r.unwrap_or(defaults.r),
            timeout: self.timeout(timeout),
            sync: self.sync,
            sloppy: self.sloppy,
        }
    }

    fn timeout(&self, default: Duration) -> Duration {
        self.timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(default)
    }
}

fn bad(message: String) -> Error {
    Error::BadRequest(message)
}

fn quorum(name: &str, value: &str, n: usize) -> Result<usize> {
    value
        .parse::<usize>()
        .ok()
        .filter(|q| (1..=n).contains(q))
        .ok_or_else(|| bad(format!("{name}={value}: expected 1..={n} (n)")))
}

fn boolean(name: &str, value: &str) -> Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(format!("{name}={value}: expected true or false"))),
    }
}

/// Decodes a percent-encoded path segment into the exact key bytes; a `%` not followed
/// by two hex digits is an error rather than a guess.
pub fn decode_key(raw: &str, max_key_bytes: usize) -> Result<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(format!("bad percent-encoding at byte {i} of the key")))?;
            key.push(byte);
            i += 3;
        } else {
            key.push(bytes[i]);
            i += 1;
        }
    }
    check_key(&key, max_key_bytes)?;
    Ok(key)
}

/// Keys are 1 to `max_key_bytes` bytes.
pub fn check_key(key: &[u8], max_key_bytes: usize) -> Result<()> {
    if key.is_empty() {
        return Err(bad("the key is empty".into()));
    }
    if key.len() > max_key_bytes {
        return Err(Error::KeyTooLong {
            len: key.len(),
            max_bytes: max_key_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_known_parameter() {
        // Each documented parameter lands in its field.
        let p = KvParams::parse(
            Some("r=1&w=3&timeout_ms=250&sync=true&sloppy=false&resolve=lww&overwrite=true"),
            3,
            false,
        )
        .unwrap();
        assert_eq!((p.r, p.w, p.timeout_ms), (Some(1), Some(3), Some(250)));
        assert!(p.sync && !p.sloppy && p.resolve_lww && p.overwrite);
        assert!(
            KvParams::parse(None, 3, false).unwrap().sloppy,
            "sloppy is on by default"
        );
    }

    #[test]
    fn refuses_bad_values_unknown_and_repeated_names() {
        // Anything not exactly valid is a 400, never silently ignored.
        for q in [
            "w=0",
            "w=4",
            "r=abc",
            "timeout_ms=0",
            "timeout_ms=x",
            "sync=maybe",
            "resolve=max",
            "foo=1",
            "w=1&w=2",
            "key=k",
        ] {
            assert!(
                KvParams::parse(Some(q), 3, false).is_err(),
                "{q} was accepted"
            );
        }
        assert_eq!(
            KvParams::parse(Some("key=a%2Fb"), 3, true)
                .unwrap()
                .key
                .as_deref(),
            Some("a/b")
        );
    }

    #[test]
    fn keys_decode_exactly_and_bad_escapes_are_refused() {
        // Percent-decoding is byte-exact, including non-UTF-8 bytes, and strict.
        assert_eq!(decode_key("a%2Fb%20c%FF", 1024).unwrap(), b"a/b c\xff");
        assert!(decode_key("a%zz", 1024).is_err());
        assert!(decode_key("a%2", 1024).is_err());
        assert!(decode_key("", 1024).is_err());
        assert!(matches!(
            decode_key("abcde", 4),
            Err(Error::KeyTooLong {
                len: 5,
                max_bytes: 4
            })
        ));
    }
}
