//! JSON Web Tokens: the keys of `--jwt-key` and `--jwks-file`, and the
//! verification of a presented token into a [`Grant`] or a [`Refusal`].
//!
//! Verification is the `jsonwebtoken` crate's. What is decided here is
//! which key and which one algorithm a token may use: every key carries its
//! own algorithm (from the key's type, or the JWK's `alg`), and a token
//! whose header names another is refused before any signature is checked,
//! so neither `alg: none` nor an HS256 token signed with an RSA public key
//! (algorithm confusion) can pass.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::Refusal;
use crate::glob;

/// The shortest HS256 secret taken: 256 bits (RFC 7518, 3.2).
const MIN_SECRET_BYTES: usize = 32;

/// Where the keys are and how tokens are checked (`--jwt-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtOptions {
    /// `--jwt-key`: an HS256 secret, or a PEM public key.
    pub key: Option<PathBuf>,
    /// `--jwks-file`: keys picked by `kid`.
    pub jwks: Option<PathBuf>,
    /// Clock skew accepted on `exp` and `nbf`.
    pub leeway: Duration,
    /// The `iss` a token must carry, if any.
    pub issuer: Option<String>,
    /// An `aud` a token must carry, if any.
    pub audience: Option<String>,
}

/// Why a key file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct KeyError {
    /// The flag that named the file (`jwt-key`, `jwks-file`).
    pub flag: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl KeyError {
    /// An error of the `--jwt-key` file (a JWKS's are marked so by
    /// [`KeyError::of_jwks`]).
    fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            flag: "jwt-key",
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }

    /// This error, of the `--jwks-file` file.
    fn of_jwks(self) -> Self {
        Self {
            flag: "jwks-file",
            ..self
        }
    }
}

/// A key and the one algorithm tokens signed with it may name.
#[derive(Clone)]
struct Key {
    algorithm: Algorithm,
    decoding: DecodingKey,
    validation: Validation,
}

/// The loaded keys; verifies tokens.
#[derive(Clone)]
pub struct Verifier {
    /// The `--jwt-key` key, for tokens without a `kid` (or any `kid` when
    /// no JWKS is given).
    default: Option<Key>,
    /// The JWKS's keys by `kid`.
    by_kid: HashMap<String, Key>,
    leeway: Duration,
    /// What was loaded, to compare configurations.
    fingerprint: [u8; 32],
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("default", &self.default.as_ref().map(|k| k.algorithm))
            .field("kids", &self.by_kid.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Verifier {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for Verifier {}

/// The claims this server reads. `sub` and `exp` are required, and
/// checked by the validation (optional here so that a token without them
/// is refused as such, not as malformed).
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    streamgauge: Scopes,
}

/// The `streamgauge` claim: what the bearer may do.
#[derive(Debug, Default, Deserialize)]
struct Scopes {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    admin: bool,
}

/// A verified token: who, until when, and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The subject (`sub`).
    pub sub: Box<str>,
    /// The token's id (`jti`), if it has one.
    pub jti: Option<Box<str>>,
    /// Expiry, Unix seconds (`exp`).
    pub exp: u64,
    subscribe: Vec<String>,
    publish: Vec<String>,
    admin: bool,
}

impl Grant {
    /// Whether the token allows reading `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        glob::any_matches(&self.subscribe, topic)
    }

    /// Whether the token allows publishing to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        glob::any_matches(&self.publish, topic)
    }

    /// [`Grant::may_publish`] as a permission.
    ///
    /// # Errors
    ///
    /// [`Refusal::TopicNotAllowed`] when the token does not list `topic`.
    pub fn publish_permission(&self, topic: &str) -> Result<(), Refusal> {
        if self.may_publish(topic) {
            Ok(())
        } else {
            Err(Refusal::TopicNotAllowed)
        }
    }

    /// Whether the token carries `streamgauge.admin: true`.
    pub fn is_admin(&self) -> bool {
        self.admin
    }
}

impl TryFrom<Claims> for Grant {
    type Error = Refusal;

    fn try_from(claims: Claims) -> Result<Self, Refusal> {
        let (Some(sub), Some(exp)) = (claims.sub, claims.exp) else {
            return Err(Refusal::MissingClaim);
        };
        Ok(Self {
            sub: sub.into(),
            jti: claims.jti.map(Into::into),
            exp,
            subscribe: claims.streamgauge.subscribe,
            publish: claims.streamgauge.publish,
            admin: claims.streamgauge.admin,
        })
    }
}

impl Verifier {
    /// Loads the keys `options` names; `None` when it names none.
    ///
    /// # Errors
    ///
    /// [`KeyError`] naming the file that cannot be used and why.
    pub fn load(options: &JwtOptions) -> Result<Option<Self>, KeyError> {
        if options.key.is_none() && options.jwks.is_none() {
            return Ok(None);
        }
        super::ring_crypto::install();
        let mut fingerprint = Sha256::new();
        fingerprint.update(format!("{options:?}"));
        let default = match &options.key {
            Some(path) => {
                let bytes = read(path)?;
                fingerprint.update(&bytes);
                Some(key_file(path, &bytes, options)?)
            }
            None => None,
        };
        let by_kid = match &options.jwks {
            Some(path) => {
                let bytes = read(path).map_err(KeyError::of_jwks)?;
                fingerprint.update(&bytes);
                jwks_file(path, &bytes, options).map_err(KeyError::of_jwks)?
            }
            None => HashMap::new(),
        };
        Ok(Some(Self {
            default,
            by_kid,
            leeway: options.leeway,
            fingerprint: fingerprint.finalize().into(),
        }))
    }

    /// The clock skew accepted on `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Verifies `token`: its key (by `kid`), its one algorithm, its
    /// signature, `exp` (required), `nbf`, `sub` (required), and `iss` and
    /// `aud` when configured.
    ///
    /// # Errors
    ///
    /// The [`Refusal`] that names what is wrong.
    pub fn verify(&self, token: &str) -> Result<Grant, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| header_refusal(token))?;
        let key = self.key_for(header.kid.as_deref())?;
        if header.alg != key.algorithm {
            return Err(Refusal::AlgorithmNotAllowed);
        }
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation)
            .map_err(|e| refusal(e.kind()))
            .and_then(|data| data.claims.try_into())
    }

    fn key_for(&self, kid: Option<&str>) -> Result<&Key, Refusal> {
        let by_kid = kid.and_then(|kid| self.by_kid.get(kid));
        // A `kid` the JWKS lacks is unknown; the `--jwt-key` key takes
        // tokens without one, or any when there is no JWKS.
        let fallback = match kid {
            Some(_) if !self.by_kid.is_empty() => None,
            _ => self.default.as_ref(),
        };
        by_kid.or(fallback).ok_or(Refusal::UnknownKid)
    }
}

/// Why a header did not decode: an algorithm this crate does not know
/// (`none` among them) is not allowed; anything else is malformed.
fn header_refusal(token: &str) -> Refusal {
    #[derive(Deserialize)]
    struct Alg {
        alg: String,
    }
    let named = token
        .split('.')
        .next()
        .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
        .and_then(|json: Vec<u8>| serde_json::from_slice::<Alg>(&json).ok());
    match named {
        Some(Alg { alg }) if Algorithm::from_str(&alg).is_err() => Refusal::AlgorithmNotAllowed,
        _ => Refusal::Malformed,
    }
}

/// The refusal for a verification error.
fn refusal(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        ErrorKind::InvalidSignature => Refusal::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            Refusal::AlgorithmNotAllowed
        }
        ErrorKind::MissingRequiredClaim(_) => Refusal::MissingClaim,
        ErrorKind::InvalidIssuer => Refusal::BadIssuer,
        ErrorKind::InvalidAudience => Refusal::BadAudience,
        // A required claim of the wrong type (`sub` a number, `exp` a
        // string) fails deserialization: the token is not one of ours.
        _ => Refusal::Malformed,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::new(path, format!("cannot be read: {e}")))
}

/// The validation of tokens signed with a key for `algorithm`.
fn validation(algorithm: Algorithm, options: &JwtOptions) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = options.leeway.as_secs();
    validation.validate_nbf = true;
    let mut required = HashSet::from(["exp".to_owned(), "sub".to_owned()]);
    if let Some(issuer) = &options.issuer {
        validation.set_issuer(&[issuer]);
        required.insert("iss".to_owned());
    }
    match &options.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.insert("aud".to_owned());
        }
        None => validation.validate_aud = false,
    }
    validation.required_spec_claims = required;
    validation
}

fn key(algorithm: Algorithm, decoding: DecodingKey, options: &JwtOptions) -> Key {
    Key {
        algorithm,
        decoding,
        validation: validation(algorithm, options),
    }
}

/// One of `DecodingKey`'s PEM parsers.
type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

/// `--jwt-key`: a PEM public key (RSA: RS256, EC P-256: ES256, Ed25519:
/// EdDSA), else an HS256 secret (one trailing newline dropped).
fn key_file(path: &Path, bytes: &[u8], options: &JwtOptions) -> Result<Key, KeyError> {
    let text = String::from_utf8_lossy(bytes);
    if !text.trim_start().starts_with("-----BEGIN") {
        let secret = bytes
            .strip_suffix(b"\r\n")
            .or_else(|| bytes.strip_suffix(b"\n"))
            .unwrap_or(bytes);
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::new(
                path,
                format!(
                    "an HS256 secret must be at least {MIN_SECRET_BYTES} bytes (it is {}); \
                     or give a PEM public key",
                    secret.len()
                ),
            ));
        }
        let decoding = DecodingKey::from_secret(secret)
            .map_err(|e| KeyError::new(path, format!("not a usable secret: {e}")))?;
        return Ok(key(Algorithm::HS256, decoding, options));
    }
    if !text.contains("PUBLIC KEY-----") {
        return Err(KeyError::new(
            path,
            "holds no PEM public key (a private key? the server needs only the public one)",
        ));
    }
    let pem: [(Algorithm, PemParser); 3] = [
        (Algorithm::ES256, DecodingKey::from_ec_pem),
        (Algorithm::EdDSA, DecodingKey::from_ed_pem),
        (Algorithm::RS256, DecodingKey::from_rsa_pem),
    ];
    pem.into_iter()
        .find_map(|(algorithm, parse)| parse(bytes).ok().map(|d| key(algorithm, d, options)))
        .ok_or_else(|| {
            KeyError::new(
                path,
                "is not an RSA, EC P-256 or Ed25519 public key in PEM (SubjectPublicKeyInfo)",
            )
        })
}

/// `--jwks-file`: every key needs a `kid`; its algorithm is its `alg`, else
/// follows from its type.
fn jwks_file(
    path: &Path,
    bytes: &[u8],
    options: &JwtOptions,
) -> Result<HashMap<String, Key>, KeyError> {
    let set: JwkSet = serde_json::from_slice(bytes)
        .map_err(|e| KeyError::new(path, format!("is not a JWKS document: {e}")))?;
    if set.keys.is_empty() {
        return Err(KeyError::new(path, "holds no keys"));
    }
    set.keys
        .iter()
        .enumerate()
        .map(|(i, jwk)| {
            jwk_entry(jwk, options)
                .map_err(|reason| KeyError::new(path, format!("key {i}: {reason}")))
        })
        .collect()
}

fn jwk_entry(jwk: &Jwk, options: &JwtOptions) -> Result<(String, Key), String> {
    let kid = jwk.common.key_id.clone().ok_or("has no `kid`")?;
    let algorithm = match jwk.common.key_algorithm {
        Some(named) => Algorithm::try_from(named).map_err(|e| format!("`alg`: {e}"))?,
        None => implied_algorithm(&jwk.algorithm).ok_or("has no `alg` and no usual one")?,
    };
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| format!("not a usable key: {e}"))?;
    Ok((kid, key(algorithm, decoding, options)))
}

/// The algorithm a JWK without `alg` is used with.
fn implied_algorithm(parameters: &AlgorithmParameters) -> Option<Algorithm> {
    match parameters {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::OctetKey(_) => Some(Algorithm::HS256),
        _ => None,
    }
}
