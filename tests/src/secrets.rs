//! Cluster key and API token files for tests, in a temp dir that lives as long as the
//! value: nodes started with [`KeyFile::path`] keep reading it on restart, and a test
//! can rewrite it between restarts (a key rotation).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tempfile::TempDir;

/// Three distinct test keys (64 hex digits each). Test-only: they are public.
pub const KEY_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
pub const KEY_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";
pub const KEY_STRANGER: &str = "3333333333333333333333333333333333333333333333333333333333333333";
/// A test API token.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A file of lines (cluster keys or tokens) in its own temp dir.
#[derive(Debug)]
pub struct KeyFile {
    dir: TempDir,
    path: PathBuf,
}

impl KeyFile {
    /// A file holding `lines`, one per line (the first key sends).
    pub fn new(lines: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ringkv-keys-")
            .tempdir()
            .context("creating the key file's dir")?;
        let path = dir.path().join("keys");
        let file = Self { dir, path };
        file.rewrite(lines)?;
        Ok(file)
    }

    /// Replaces the file's lines (nodes read it when they start).
    pub fn rewrite(&self, lines: &[&str]) -> anyhow::Result<()> {
        let mut text = lines.join("\n");
        text.push('\n');
        // Written beside and renamed, so a node starting meanwhile reads old or new.
        let tmp = self.dir.path().join("keys.tmp");
        std::fs::write(&tmp, text).context("writing the key file")?;
        std::fs::rename(&tmp, &self.path).context("replacing the key file")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as a flag value.
    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }
}

/// The test TLS files in tests/fixtures/tls: `(cert, key, ca)`.
pub fn tls_fixtures() -> (PathBuf, PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    )
}
