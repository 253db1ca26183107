//! Per-user tokens (`[auth]` in a scenario file, the `--jwt-*` flags): the
//! key that signs each virtual client's JWT, read and checked once (the
//! algorithm follows from the key), and the tokens' lifetime and `kid`.
//! [`RawAuth`] holds what was written; [`RawAuth::validate`] checks it into
//! an [`Auth`], which names the key file but never holds or prints the
//! key. Minting and renewing tokens is the clients' part
//! (`crate::client::jwt`); this module only says what the key is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// How long a minted token lives unless `jwt-ttl` says.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// The shortest lifetime a token may have: clients renew a token at about
/// three quarters of its life and never later than one second before it
/// expires, which needs some life to be left at all.
pub const MIN_TTL: Duration = Duration::from_secs(2);

/// The shortest HS256 secret: RFC 7518 §3.2 wants a key of the hash's
/// size (256 bits), and the server refuses shorter ones.
pub const MIN_SECRET_BYTES: usize = 32;

/// A JWT signing algorithm, as the key file decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alg {
    /// HMAC with SHA-256: a shared secret.
    #[serde(rename = "HS256")]
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256: an RSA private key.
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA on P-256 with SHA-256: an EC P-256 private key.
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519: an Ed25519 private key.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl Alg {
    /// The `jsonwebtoken` algorithm.
    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::Hs256 => jsonwebtoken::Algorithm::HS256,
            Alg::Rs256 => jsonwebtoken::Algorithm::RS256,
            Alg::Es256 => jsonwebtoken::Algorithm::ES256,
            Alg::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

/// Reads an optional duration written the human way (`5s`, `10m`).
fn optional_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    super::from_human(deserializer).map(Some)
}

/// The `[auth]` table as written (or the `--jwt-*` flags): nothing checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAuth {
    /// The signing key: an HS256 secret or a PEM private key.
    pub jwt_key: Option<PathBuf>,
    /// The tokens' lifetime.
    #[serde(default, deserialize_with = "optional_duration")]
    pub jwt_ttl: Option<Duration>,
    /// The `kid` put in each token's header.
    pub jwt_kid: Option<String>,
}

/// A setting of `[auth]` that is wrong, by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// The key at fault (`jwt-key`).
    pub key: &'static str,
    /// What is wrong, naming the file where a file is at fault.
    pub message: String,
}

impl RawAuth {
    /// This table with every key `over` gives replaced by `over`'s.
    pub fn merge(self, over: RawAuth) -> RawAuth {
        RawAuth {
            jwt_key: over.jwt_key.or(self.jwt_key),
            jwt_ttl: over.jwt_ttl.or(self.jwt_ttl),
            jwt_kid: over.jwt_kid.or(self.jwt_kid),
        }
    }

    /// Whether it says anything at all.
    pub fn is_empty(&self) -> bool {
        *self == RawAuth::default()
    }

    /// Checks every key, the key file read and tried once.
    ///
    /// # Errors
    ///
    /// No key file; a key file that cannot be read or used (the message
    /// names it); a lifetime under [`MIN_TTL`]; an empty `kid`.
    pub fn validate(&self) -> Result<Auth, Invalid> {
        let fail = |key: &'static str, message: String| Invalid { key, message };
        let path = self.jwt_key.clone().ok_or_else(|| {
            fail(
                "jwt-key",
                "per-user tokens need a key to sign them with: --jwt-key FILE (or jwt-key in \
                 [auth]), an HS256 secret or a PEM private key"
                    .to_owned(),
            )
        })?;
        let ttl = self.jwt_ttl.unwrap_or(DEFAULT_TTL);
        if ttl < MIN_TTL {
            return Err(fail(
                "jwt-ttl",
                format!(
                    "a token lifetime of {} is too short: at least {} (tokens are renewed a \
                     second before they expire at the latest)",
                    humantime::format_duration(ttl),
                    humantime::format_duration(MIN_TTL)
                ),
            ));
        }
        if let Some(kid) = &self.jwt_kid
            && (kid.is_empty() || kid.chars().any(char::is_control))
        {
            return Err(fail(
                "jwt-kid",
                format!("{kid:?} is not a key id: one line, not empty"),
            ));
        }
        let key = SigningKey::read(&path)
            .map_err(|m| fail("jwt-key", format!("{}: {m}", path.display())))?;
        Ok(Auth {
            jwt_key: path,
            alg: key.alg,
            jwt_ttl: ttl,
            jwt_kid: self.jwt_kid.clone(),
        })
    }
}

/// Per-user tokens, validated: which key file signs them (never the key
/// itself), with what algorithm, for how long, and the `kid` their header
/// carries. Its serde form is what a manifest records, and what worker
/// processes are told (each reads the key file itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// The key file.
    pub jwt_key: PathBuf,
    /// The algorithm the key signs with.
    pub alg: Alg,
    /// How long each token lives.
    #[serde(
        serialize_with = "super::human",
        deserialize_with = "super::from_human"
    )]
    pub jwt_ttl: Duration,
    /// The header's `kid`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_kid: Option<String>,
}

impl Auth {
    /// The settings it was validated from, to merge flags into.
    pub fn raw(&self) -> RawAuth {
        RawAuth {
            jwt_key: Some(self.jwt_key.clone()),
            jwt_ttl: Some(self.jwt_ttl),
            jwt_kid: self.jwt_kid.clone(),
        }
    }

    /// The key, read from its file again (a worker process reads it
    /// itself).
    ///
    /// # Errors
    ///
    /// The file can no longer be read or used, in words naming it.
    pub fn signing_key(&self) -> Result<SigningKey, String> {
        SigningKey::read(&self.jwt_key).map_err(|m| format!("{}: {m}", self.jwt_key.display()))
    }
}

/// A key that signs tokens, and its algorithm.
#[derive(Clone)]
pub struct SigningKey {
    /// What it signs with.
    pub alg: Alg,
    /// The key (never printed).
    pub key: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({:?}, ***)", self.alg)
    }
}

/// The PEM private keys read, by label, and how; tried in order.
type Parse = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;

/// A PKCS#8 `PRIVATE KEY` holds any of the three.
const PKCS8: [(Alg, Parse); 3] = [
    (Alg::Es256, EncodingKey::from_ec_pem),
    (Alg::EdDsa, EncodingKey::from_ed_pem),
    (Alg::Rs256, EncodingKey::from_rsa_pem),
];

impl SigningKey {
    /// Reads the key file at `path`: a PEM private key (RSA: RS256, EC
    /// P-256: ES256, Ed25519: EdDSA), else an HS256 secret (its bytes, one
    /// trailing newline dropped, as the server reads it). One token is
    /// signed to be sure the key works.
    ///
    /// # Errors
    ///
    /// What is wrong with the file, in words (without its path).
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        let text = String::from_utf8_lossy(&bytes);
        let key = match pem_label(&text) {
            None => secret(&bytes)?,
            Some(label) => private_key(label, &bytes)?,
        };
        key.probe()?;
        Ok(key)
    }

    /// Signs one token, so that a key that parses but cannot sign (an EC
    /// key on another curve than P-256) is refused now.
    fn probe(&self) -> Result<(), String> {
        jsonwebtoken::encode(
            &Header::new(self.alg.jwt()),
            &serde_json::json!({}),
            &self.key,
        )
        .map(drop)
        .map_err(|e| match self.alg {
            Alg::Es256 => format!("an EC key that cannot sign ES256 (not P-256?): {e}"),
            alg => format!("cannot sign {alg:?} with it: {e}"),
        })
    }
}

/// The label of the first PEM block in `text` (`PRIVATE KEY`), if it is
/// PEM at all.
fn pem_label(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix("-----BEGIN ")?;
    rest.split_once("-----").map(|(label, _)| label)
}

/// An HS256 secret: the file's bytes, one trailing newline dropped.
fn secret(bytes: &[u8]) -> Result<SigningKey, String> {
    let secret = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "an HS256 secret must be at least {MIN_SECRET_BYTES} bytes (it is {}); or give a \
             PEM private key",
            secret.len()
        ));
    }
    let key = EncodingKey::from_secret(secret).map_err(|e| format!("not a usable secret: {e}"))?;
    Ok(SigningKey {
        alg: Alg::Hs256,
        key,
    })
}

/// A PEM private key whose first block is labelled `label`.
fn private_key(label: &str, bytes: &[u8]) -> Result<SigningKey, String> {
    let parsers: &[(Alg, Parse)] = match label {
        "PRIVATE KEY" => &PKCS8,
        "RSA PRIVATE KEY" => &[(Alg::Rs256, EncodingKey::from_rsa_pem)],
        "EC PRIVATE KEY" => {
            return Err("an EC key in SEC1 form: convert it to PKCS#8 first \
                 (openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8)"
                .to_owned());
        }
        "ENCRYPTED PRIVATE KEY" => {
            return Err("an encrypted private key: give it unencrypted".to_owned());
        }
        public if public.contains("PUBLIC KEY") || public == "CERTIFICATE" => {
            return Err(format!(
                "holds a {public}: the load generator signs with the private key (the server \
                 gets the public one)"
            ));
        }
        other => return Err(format!("a PEM {other:?} is not a private key this reads")),
    };
    parsers
        .iter()
        .find_map(|&(alg, parse)| parse(bytes).ok().map(|key| SigningKey { alg, key }))
        .ok_or_else(|| "is not an RSA, EC P-256 or Ed25519 private key in PEM".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validates `[auth]` with the key file holding `content` (none: no
    /// such file) and `ttl`; the error's key and message.
    fn invalid(content: Option<&[u8]>, ttl: Option<Duration>) -> (&'static str, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let raw = RawAuth {
            jwt_key: Some(path),
            jwt_ttl: ttl,
            jwt_kid: None,
        };
        let e = raw.validate().unwrap_err();
        (e.key, e.message)
    }

    /// A key file's content, a lifetime, the key at fault and the message.
    type Case<'a> = (Option<&'a [u8]>, Option<Duration>, &'a str, &'a str);

    #[test]
    fn a_key_file_that_cannot_be_used_is_named_with_what_is_wrong() {
        let secret = Some(&[b'x'; 32][..]);
        let cases: [Case<'_>; 8] = [
            (None, None, "jwt-key", "key.pem: cannot read it"),
            (
                Some(b"short\n"),
                None,
                "jwt-key",
                "at least 32 bytes (it is 5)",
            ),
            (
                Some(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
                None,
                "jwt-key",
                "holds a PUBLIC KEY: the load generator signs with the private key",
            ),
            (
                Some(b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"),
                None,
                "jwt-key",
                "convert it to PKCS#8",
            ),
            (
                Some(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"),
                None,
                "jwt-key",
                "is not an RSA, EC P-256 or Ed25519 private key",
            ),
            (
                Some(b"-----BEGIN X509 CRL-----\n"),
                None,
                "jwt-key",
                "not a private key",
            ),
            (
                secret,
                Some(Duration::ZERO),
                "jwt-ttl",
                "lifetime of 0s is too short",
            ),
            (
                secret,
                Some(Duration::from_millis(1500)),
                "jwt-ttl",
                "at least 2s",
            ),
        ];
        for (content, ttl, key, expected) in cases {
            let (at, message) = invalid(content, ttl);
            assert_eq!(at, key, "{message}");
            assert!(
                message.contains(expected),
                "{expected:?} not in {message:?}"
            );
        }
        let missing = RawAuth {
            jwt_ttl: Some(Duration::from_secs(5)),
            ..RawAuth::default()
        };
        assert!(
            missing
                .validate()
                .unwrap_err()
                .message
                .contains("--jwt-key FILE")
        );
    }

    #[test]
    fn a_secret_drops_one_newline_and_flags_replace_a_file_s_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{}\r\n", "y".repeat(32))).unwrap();
        let auth = RawAuth {
            jwt_key: Some(path.clone()),
            jwt_ttl: None,
            jwt_kid: Some("k1".to_owned()),
        }
        .validate()
        .unwrap();
        assert_eq!((auth.alg, auth.jwt_ttl), (Alg::Hs256, DEFAULT_TTL));
        let flags = RawAuth {
            jwt_ttl: Some(Duration::from_secs(5)),
            ..RawAuth::default()
        };
        let merged = auth.raw().merge(flags).validate().unwrap();
        assert_eq!(
            (merged.jwt_ttl, merged.jwt_kid.as_deref(), &merged.jwt_key),
            (Duration::from_secs(5), Some("k1"), &path)
        );
        let json = serde_json::to_value(&merged).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"jwt_key": path, "alg": "HS256", "jwt_ttl": "5s", "jwt_kid": "k1"})
        );
        let table: RawAuth = toml::from_str("jwt-ttl = \"90s\"\njwt-kid = \"a\"").unwrap();
        assert_eq!(table.jwt_ttl, Some(Duration::from_secs(90)));
        assert!(toml::from_str::<RawAuth>("jwt-alg = \"none\"").is_err());
    }
}
