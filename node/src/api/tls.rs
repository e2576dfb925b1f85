//! HTTPS on the API (`--tls-cert-file`, `--tls-key-file`): rustls on its `ring`
//! provider. Why ring: rustls' default provider (aws-lc-rs) builds a large C library
//! with cmake on every cold build; ring's native code is a little C and assembly.
//!
//! With TLS on, the API speaks HTTPS only: a plain HTTP client fails the handshake and
//! is closed. ALPN offers h2 and http/1.1. The handshake runs in the connection's own
//! task, bounded by the header read timeout, so a client that stalls in it holds one
//! connection slot for that long and never the accept loop. The certificate is read at
//! start; replacing it takes a restart.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// The server side of TLS from a PEM certificate chain and its PEM private key.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::Config(format!("--tls-cert-file {}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "--tls-cert-file {}: no certificate in it",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| Error::Config(format!("--tls-key-file {}: {e}", key_file.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            Error::Config(format!(
                "--tls-cert-file and --tls-key-file do not make a usable pair: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_bad_files_are_refused_by_flag() {
        // Each problem names the flag whose file is wrong.
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let err = server_config(&cert, &key).unwrap_err().to_string();
        assert!(err.contains("--tls-cert-file"), "{err}");
        std::fs::write(&cert, "not a certificate\n").unwrap();
        let err = server_config(&cert, &key).unwrap_err().to_string();
        assert!(
            err.contains("--tls-cert-file") && err.contains("no certificate"),
            "{err}"
        );
    }
}
