//! The cluster key file (`--cluster-key-file`): one or more 256-bit keys, one per
//! line as 64 hex digits. The first line's key protects what this node sends; what
//! arrives is accepted under any line's key, which is what lets a cluster rotate keys
//! without downtime (add the new key on a second line everywhere, move it to the first
//! line everywhere, then remove the old one).
//!
//! Blank lines and lines starting with `#` are skipped, so a file can say what its
//! keys are for. Errors name the line, never its content: the content is a secret.

use std::fmt;
use std::path::Path;

use crate::{Error, Result};

/// Bytes in one key.
pub const KEY_BYTES: usize = 32;
/// Most keys in one file: each received packet may be tried against every key, so a
/// long list would cost every packet; two (old and new) is the usual case.
pub const KEYS_MAX: usize = 8;
/// Largest key file read: the keys, comments and slack; anything larger is a mistake.
const FILE_MAX_BYTES: u64 = 64 * 1024;

/// The keys of a cluster key file, the sending key first. Its `Debug` shows how many
/// keys there are and nothing of them.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKeys {
    keys: Vec<[u8; KEY_BYTES]>,
}

impl fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKeys({} keys, redacted)", self.keys.len())
    }
}

impl ClusterKeys {
    /// Keys given directly; the first sends. [`Error::ClusterKey`] for none or more
    /// than [`KEYS_MAX`].
    pub fn new(keys: Vec<[u8; KEY_BYTES]>) -> Result<Self> {
        if keys.is_empty() {
            return Err(Error::ClusterKey("no key".into()));
        }
        if keys.len() > KEYS_MAX {
            return Err(Error::ClusterKey(format!(
                "{} keys; at most {KEYS_MAX}",
                keys.len()
            )));
        }
        Ok(Self { keys })
    }

    /// Parses a key file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = parse_hex_key(line).ok_or_else(|| {
                Error::ClusterKey(format!(
                    "line {}: expected a key of {} hex digits",
                    index + 1,
                    KEY_BYTES * 2
                ))
            })?;
            keys.push(key);
        }
        Self::new(keys)
    }

    /// Reads and parses the key file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let fail = |why: String| Error::ClusterKey(format!("{}: {why}", path.display()));
        let len = std::fs::metadata(path)
            .map_err(|e| fail(e.to_string()))?
            .len();
        if len > FILE_MAX_BYTES {
            return Err(fail(format!(
                "{len} bytes; a key file is at most {FILE_MAX_BYTES}"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Self::parse(&text).map_err(|e| match e {
            Error::ClusterKey(why) => fail(why),
            other => other,
        })
    }

    /// The key this node sends with.
    pub fn primary(&self) -> &[u8; KEY_BYTES] {
        &self.keys[0]
    }

    /// Every key, the sending one first: what arrives may be under any of them.
    pub fn all(&self) -> &[[u8; KEY_BYTES]] {
        &self.keys
    }
}

/// Formats a key as a key file line: 64 lowercase hex digits.
pub fn key_to_hex(key: &[u8; KEY_BYTES]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex_key(text: &str) -> Option<[u8; KEY_BYTES]> {
    if text.len() != KEY_BYTES * 2 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; KEY_BYTES];
    for (byte, pair) in key.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "FFEEDDCCBBAA99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn parses_keys_in_order_skipping_comments_and_blanks() {
        // The first key line sends; comments, blank lines and spaces around keys are
        // ignored; upper and lower case hex both parse.
        let keys = ClusterKeys::parse(&format!("# new key\n{B}\n\n  {A}  \n")).unwrap();
        assert_eq!(keys.all().len(), 2);
        assert_eq!(key_to_hex(keys.primary()), B.to_lowercase());
        assert_eq!(key_to_hex(&keys.all()[1]), A);
    }

    #[test]
    fn bad_files_are_refused_by_line_without_echoing_the_secret() {
        // Short, long, non-hex and empty files are refused; the message names the
        // line but never quotes what is on it.
        let short = &A[..63];
        for (text, expected) in [
            (short.to_owned(), "line 1"),
            (format!("{A}0"), "line 1"),
            (format!("{A}\n{}", A.replace('0', "g")), "line 2"),
            (format!("{A}\né{}", &A[2..]), "line 2"),
            ("# only a comment\n".to_owned(), "no key"),
            (String::new(), "no key"),
        ] {
            let err = ClusterKeys::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains(&A[..16]), "{err} leaks the key");
        }
        let many = std::iter::repeat_n(A, KEYS_MAX + 1)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(ClusterKeys::parse(&many).is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        // Logging a config that holds the keys must not print them.
        let keys = ClusterKeys::parse(A).unwrap();
        let shown = format!("{keys:?}");
        assert!(
            !shown.contains("0001") && shown.contains("1 keys"),
            "{shown}"
        );
    }

    #[test]
    fn load_names_the_file() {
        // A missing or bad file is refused with its path in the message.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        assert!(
            ClusterKeys::load(&path)
                .unwrap_err()
                .to_string()
                .contains("keys")
        );
        std::fs::write(&path, "nope\n").unwrap();
        let err = ClusterKeys::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("line 1"),
            "{err}"
        );
        std::fs::write(&path, format!("{A}\n")).unwrap();
        assert_eq!(ClusterKeys::load(&path).unwrap().all().len(), 1);
    }
}
