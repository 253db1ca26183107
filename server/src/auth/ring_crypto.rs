//! The signature check of ES256 tokens on *ring*, plugged into
//! `jsonwebtoken` as its crypto provider; every other algorithm, all
//! parsing and every claim check stay the crate's own (RustCrypto).
//!
//! Why: the connect-time bar (an ES256 token adds at most 100 µs p99) is
//! missed by RustCrypto's P-256 here, and *ring* is already in the tree
//! for TLS. `cargo bench --bench auth` compares the two side by side
//! (`jwt_signature`), on this machine: ES256 280 µs with RustCrypto, 58 µs
//! on *ring*; EdDSA stays on RustCrypto, faster there (36 µs against 52
//! µs). docs/performance.md, "Token verification".

use std::sync::LazyLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::Result;
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey, VerificationAlgorithm};

/// A public key and the *ring* algorithm that checks its signatures.
struct RingVerifier {
    algorithm: Algorithm,
    scheme: &'static dyn VerificationAlgorithm,
    key: Vec<u8>,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), signature::Error> {
        UnparsedPublicKey::new(self.scheme, &self.key)
            .verify(message, signature)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// The verifier of `algorithm` with `key`: *ring* for ES256 (a SEC1
/// point, the signature `r || s`), the crate's own for the rest.
///
/// # Errors
///
/// A key that does not fit the algorithm.
pub fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let scheme: &'static dyn VerificationAlgorithm = match (algorithm, key.family()) {
        (Algorithm::ES256, AlgorithmFamily::Ec) => &ECDSA_P256_SHA256_FIXED,
        _ => return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key),
    };
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        scheme,
        key: key.try_get_as_bytes()?.to_vec(),
    }))
}

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    verifier_factory: verifier,
    ..rust_crypto::DEFAULT_PROVIDER.clone()
});

/// Makes this the process's provider, unless one is in force already
/// (a process that signed tokens before: then the crate's own checks run,
/// as correct, only slower).
pub fn install() {
    let _ = PROVIDER.install_default();
}
