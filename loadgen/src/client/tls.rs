//! TLS for `https://` and `wss://` targets, with rustls (ring): the client
//! configuration a run's trust setting makes ([`Connector::new`]), and the
//! handshake over a connected TCP stream. The machine's own trust store is
//! the default (`rustls-native-certs`: a company CA installed system-wide is
//! trusted as browsers and curl trust it); `ca_cert` trusts the
//! certificates of one PEM file instead; `insecure` verifies nothing (the
//! report says so). Only HTTP/1.1 is offered (ALPN): the SSE and WebSocket
//! clients speak nothing else.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::scenario::target::Trust;

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA file cannot be read or holds no certificate.
    #[error("ca_cert {path}: {reason}")]
    CaCert {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The machine's trust store holds no usable certificate.
    #[error("the system's trust store has no usable certificate: {0}")]
    NoSystemRoots(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS client configuration, shared by every connection of a process.
#[derive(Clone)]
pub struct Connector {
    connector: TlsConnector,
    /// How servers are verified, for messages and reports.
    trust: Trust,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

/// The one crypto provider of the tree: ring (docs/loadgen.md: aws-lc-rs,
/// rustls's default, is a long C build). rustls 0.23.48 deprecates ring's
/// provider for lacking post-quantum key exchange; the classical groups it
/// offers are what the servers measured here negotiate anyway.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

impl Connector {
    /// A connector that verifies servers as `trust` says.
    ///
    /// # Errors
    ///
    /// The CA file cannot be read or holds no certificate, or the system
    /// store has none.
    pub fn new(trust: &Trust) -> Result<Self, Error> {
        let config = client_config(trust)?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            trust: trust.clone(),
        })
    }

    /// The client configuration, for another client (the publishers'
    /// HTTP client) that must verify servers the same way.
    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(self.connector.config())
    }

    /// How servers are verified.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The TLS handshake over `tcp` with the server `host` (a name or an IP
    /// address, without port).
    ///
    /// # Errors
    ///
    /// `host` is not a valid server name, or the handshake failed (the
    /// error names why: an unknown issuer, a name mismatch, …).
    pub async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.connector.connect(name, tcp).await
    }
}

/// The rustls configuration for `trust`, offering HTTP/1.1.
fn client_config(trust: &Trust) -> Result<ClientConfig, Error> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                provider().signature_verification_algorithms,
            )))
            .with_no_client_auth(),
        Trust::System => builder
            .with_root_certificates(system_roots()?)
            .with_no_client_auth(),
        Trust::CaCert(path) => builder
            .with_root_certificates(file_roots(path)?)
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The machine's trust store.
fn system_roots() -> Result<RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(Error::NoSystemRoots(if errors.is_empty() {
            "none found".to_owned()
        } else {
            errors.join("; ")
        }));
    }
    Ok(roots)
}

/// The certificates of the PEM file at `path`.
fn file_roots(path: &Path) -> Result<RootCertStore, Error> {
    let fail = |reason: String| Error::CaCert {
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(fail(format!(
            "no usable certificate in it ({ignored} could not be parsed)"
        )));
    }
    Ok(roots)
}

/// `insecure`: every certificate passes; signatures are still checked
/// against the key the server presented, so the session is encrypted, just
/// not authenticated.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let missing = Connector::new(&Trust::CaCert("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("ca_cert /nonexistent/ca.pem: "),
            "{missing}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Connector::new(&Trust::CaCert(empty)).unwrap_err();
        assert!(err.to_string().contains("no usable certificate"), "{err}");
        assert!(Connector::new(&Trust::Insecure).is_ok());
    }
}
