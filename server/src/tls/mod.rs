//! TLS: the certificate and key (`--tls-cert`, `--tls-key`) loaded into a
//! rustls server configuration that offers HTTP/2 and HTTP/1.1 by ALPN,
//! reloadable while the server runs (SIGHUP: new handshakes use the new
//! certificate; connections already open keep theirs).
//!
//! Connections are served over [`stream::TlsStream`], the server's own
//! driver of rustls' unbuffered connection, not tokio-rustls: rustls'
//! buffered connection (which tokio-rustls wraps) keeps a 4 KiB read
//! buffer for each connection's life, and an idle HTTP/1.1 stream over
//! it held 10.7 KiB of heap against the 8 KiB the project allows; over
//! [`stream::TlsStream`] it holds 6.4 KiB (docs/performance.md, section 6).
//! rustls does all of TLS; [`stream`] only owns the buffers and the loop
//! over the connection's states.
//!
//! Why not axum-server: the server runs its own accept loop
//! ([`crate::serve`]), which bounds every phase of a connection, reads the
//! PROXY protocol, admits each peer address under its limit and serves
//! SSE streams without hyper's buffers ([`crate::direct`]). A TLS stream
//! over any socket composes with that loop as it is; axum-server owns its
//! accept loop (`axum_server::bind_rustls(…).serve(…)`), so the loop's
//! parts would have to be rebuilt as its `Accept` hooks, and its direct
//! SSE path would be lost. rustls runs on *ring*, the one crypto provider
//! in this build.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config;
use crate::metrics::ConnectionMetrics;
use crate::shutdown::Reloads;

pub mod stream;

/// ALPN protocols offered, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The ALPN id of HTTP/2.
pub const H2: &[u8] = b"h2";

/// Where the certificate chain and the private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `--tls-cert` and `--tls-key` name: both, or neither.
    ///
    /// # Errors
    ///
    /// [`config::Error::Invalid`] when only one is given.
    pub fn pair(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<Self>, config::Error> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self { cert, key })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(config::Error::Invalid {
                name: "tls-cert",
                reason: "needs --tls-key".to_owned(),
            }),
            (None, Some(_)) => Err(config::Error::Invalid {
                name: "tls-key",
                reason: "needs --tls-cert".to_owned(),
            }),
        }
    }
}

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or holds no PEM item of its kind.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match, say).
    #[error("{cert} and {key}: {source}")]
    Rustls {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// Why.
        source: rustls::Error,
    },
}

/// The TLS configuration in force; clones share it, and a reload through
/// any clone is seen by all.
#[derive(Debug, Clone)]
pub struct Tls {
    files: TlsFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
    /// The SIGHUP handler whose signals reload, once installed (taken by
    /// the task that waits on it).
    reloads: Arc<Mutex<Option<Reloads>>>,
}

impl Tls {
    /// Loads `files`.
    ///
    /// # Errors
    ///
    /// [`Error`] naming the file that could not be used.
    pub fn load(files: &TlsFiles) -> Result<Self, Error> {
        Ok(Self {
            current: Arc::new(RwLock::new(server_config(files)?)),
            files: files.clone(),
            reloads: Arc::default(),
        })
    }

    /// This configuration, reloaded at each of `reloads` (SIGHUP) once the
    /// server runs ([`Tls::serve_reloads`]).
    pub fn reloading_on(self, reloads: Reloads) -> Self {
        *self.reloads.lock().unwrap_or_else(PoisonError::into_inner) = Some(reloads);
        self
    }

    /// Reloads at each signal [`Tls::reloading_on`] installed, counting
    /// each in `metrics`, until the signals end; at once without one.
    /// A pair that cannot be used is logged, and the one in force stays.
    pub async fn serve_reloads(self, metrics: ConnectionMetrics) {
        let taken = self
            .reloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut reloads) = taken else {
            return;
        };
        while reloads.recv().await {
            match self.reload() {
                Ok(()) => {
                    tracing::info!("SIGHUP: TLS certificate and key reloaded");
                    metrics.tls_reloaded(true);
                }
                Err(e) => {
                    tracing::error!(
                        "SIGHUP: TLS reload failed, keeping the certificate in force: {e}"
                    );
                    metrics.tls_reloaded(false);
                }
            }
        }
    }

    /// Reads the files again; new handshakes use them from now on.
    ///
    /// # Errors
    ///
    /// [`Error`] naming the file that could not be used; the configuration
    /// in force then stays.
    pub fn reload(&self) -> Result<(), Error> {
        let fresh = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The configuration in force now, for a new connection
    /// ([`stream::accept`]).
    pub fn config(&self) -> Arc<ServerConfig> {
        let config = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&config)
    }
}

/// A rustls server configuration (*ring*, TLS 1.2 and 1.3, ALPN `h2` then
/// `http/1.1`) from `files`.
fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, Error> {
    let file_error = |path: &PathBuf, reason: String| Error::File {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(&files.cert, format!("cannot read a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(
            &files.cert,
            "holds no PEM certificate".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error(&files.key, format!("cannot read a PEM private key: {e}")))?;
    let rustls_error = |source| Error::Rustls {
        cert: files.cert.display().to_string(),
        key: files.key.display().to_string(),
        source,
    };
    let provider = Arc::new(ring_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(rustls_error)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The *ring* crypto provider: TLS 1.3 and 1.2 suites with AES-GCM and
/// ChaCha20-Poly1305, X25519 and the NIST curves (also what this
/// project's TLS clients use, so the tree keeps one provider).
#[expect(
    deprecated,
    reason = "rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange \
              (only aws-lc-rs has it); this build keeps one crypto provider, ring, whose \
              classical key exchange is what browsers fall back to"
)]
pub fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_files_or_neither() {
        let path = || Some(PathBuf::from("x.pem"));
        assert!(TlsFiles::pair(None, None).unwrap().is_none());
        assert!(TlsFiles::pair(path(), path()).unwrap().is_some());
        let err = TlsFiles::pair(path(), None).unwrap_err().to_string();
        assert_eq!(err, "invalid `tls-cert`: needs --tls-key");
        let err = TlsFiles::pair(None, path()).unwrap_err().to_string();
        assert_eq!(err, "invalid `tls-key`: needs --tls-cert");
    }

    #[test]
    fn a_file_that_cannot_be_used_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not PEM\n").unwrap();
        let files = TlsFiles {
            cert: empty.clone(),
            key: dir.path().join("missing.pem"),
        };
        let err = Tls::load(&files).unwrap_err().to_string();
        assert!(err.starts_with(&empty.display().to_string()), "{err}");
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
