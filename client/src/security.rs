//! What a client needs to reach a secured cluster: an API bearer token
//! (`--api-token-file` on the nodes) and the CA that signed the nodes' TLS
//! certificates (`--tls-cert-file`), for `https://` node URLs.
//!
//! TLS is rustls on its `ring` provider (aws-lc-rs, the default, builds C with cmake:
//! minutes on a cold 2-core machine). Only the given CA is trusted, not the system's
//! roots: a cluster's certificates come from its own CA.

use std::path::Path;
use std::sync::Arc;

use http::HeaderValue;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// Largest token file read.
const TOKEN_FILE_MAX_BYTES: u64 = 64 * 1024;

/// An API bearer token, ready as an `Authorization` header value. Its `Debug` shows
/// nothing of it, and the header value is marked sensitive (never logged by hyper).
#[derive(Clone)]
pub struct BearerToken(HeaderValue);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(redacted)")
    }
}

impl BearerToken {
    /// The token `token` (surrounding spaces trimmed); [`Error::Config`] if it is empty
    /// or not visible ASCII.
    pub fn new(token: &str) -> Result<Self> {
        let token = token.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Config(
                "a token is one or more visible ASCII characters".into(),
            ));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::Config("the token is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok(Self(value))
    }

    /// The first token of a token file (blank lines and `#` comments skipped), as the
    /// nodes' `--api-token-file` holds them.
    pub fn from_file(path: &Path) -> Result<Self> {
        let fail = |why: String| Error::Config(format!("token file {}: {why}", path.display()));
        let len = std::fs::metadata(path)
            .map_err(|e| fail(e.to_string()))?
            .len();
        if len > TOKEN_FILE_MAX_BYTES {
            return Err(fail(format!("{len} bytes; at most {TOKEN_FILE_MAX_BYTES}")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let token = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .ok_or_else(|| fail("no token in it".into()))?;
        Self::new(token).map_err(|e| fail(e.to_string()))
    }

    /// `Bearer <token>`.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

/// A TLS client configuration that trusts the certificates of the PEM file `ca_file`
/// (and nothing else), offering `alpn` (e.g. `h2`, `http/1.1`).
pub fn tls_client_config(ca_file: &Path, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>> {
    let fail = |why: String| Error::Config(format!("CA file {}: {why}", ca_file.display()));
    let certs = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| fail(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(fail("no usable certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_become_bearer_headers_and_stay_hidden() {
        // A token turns into `Bearer <token>`, marked sensitive, and never shows in Debug.
        let token = BearerToken::new("  s3cret-token  ").unwrap();
        assert_eq!(token.header_value(), "Bearer s3cret-token");
        assert!(token.header_value().is_sensitive());
        assert!(!format!("{token:?}").contains("s3cret"));
        for bad in ["", "   ", "two words", "tab\tbed", "é"] {
            assert!(BearerToken::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn token_files_give_their_first_token() {
        // Comments and blank lines are skipped; an empty or missing file is an error
        // that names the file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        assert!(
            BearerToken::from_file(&path)
                .unwrap_err()
                .to_string()
                .contains("token")
        );
        std::fs::write(&path, "# api\n\nfirst-token\nsecond-token\n").unwrap();
        assert_eq!(
            BearerToken::from_file(&path).unwrap().header_value(),
            "Bearer first-token"
        );
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(
            BearerToken::from_file(&path)
                .unwrap_err()
                .to_string()
                .contains("no token")
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        // Trusting nothing would fail every handshake later; say so at once.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not pem\n").unwrap();
        let err = tls_client_config(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("no usable certificate"), "{err}");
    }
}
