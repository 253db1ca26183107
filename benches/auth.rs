//! What checking a subscriber's credential costs the server, once per
//! connection attempt: a static read token (a SHA-256 digest compared in
//! constant time) side by side with a JWT verified with each kind of key
//! (HS256, ES256, EdDSA; keys made here), the topic claim matched too.
//!
//! Run with `cargo bench --bench auth`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::crypto::rust_crypto;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey, VerificationAlgorithm};
use serde_json::json;
use streamgauge_server::auth::denylist::{self, Denylist};
use streamgauge_server::auth::jwt::{JwtOptions, Verifier};
use streamgauge_server::auth::{Auth, ReadRule, ring_crypto};

const TOPIC: &str = "chat.room-7";

/// An `Auth` taking JWTs with the key in `key_file`, and the static read
/// rule `chat.*=static-reader`.
fn auth(key_file: &std::path::Path) -> Auth {
    let options = JwtOptions {
        key: Some(key_file.to_owned()),
        jwks: None,
        leeway: Duration::from_secs(30),
        issuer: None,
        audience: None,
    };
    let rule: ReadRule = "chat.*=static-reader".parse().expect("a rule");
    Auth::new(
        &[],
        &[rule],
        Verifier::load(&options)
            .expect("the key loads")
            .map(Arc::new),
        denylist::fixed(Denylist::default()),
    )
}

/// A token for `client-1` that may read `chat.*` for an hour.
fn token(algorithm: Algorithm, key: &EncodingKey) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3600;
    let claims =
        json!({ "sub": "client-1", "exp": exp, "streamgauge": { "subscribe": ["chat.*"] } });
    jsonwebtoken::encode(&Header::new(algorithm), &claims, key).expect("signs")
}

/// Each kind of key: its name, the server's key file bytes, the token.
fn cases() -> Vec<(&'static str, Vec<u8>, String)> {
    let secret = b"a secret of thirty-two bytes, ok".to_vec();
    let hs = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(&secret).expect("a secret"),
    );
    let mut cases = vec![("hs256", secret, hs)];
    for (name, alg, algorithm) in [
        ("es256", &rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
        ("eddsa", &rcgen::PKCS_ED25519, Algorithm::EdDSA),
    ] {
        let pair = rcgen::KeyPair::generate_for(alg).expect("a key pair");
        let private = pair.serialize_pem();
        let key = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()),
            _ => EncodingKey::from_ed_pem(private.as_bytes()),
        }
        .expect("a signing key");
        cases.push((
            name,
            pair.public_key_pem().into_bytes(),
            token(algorithm, &key),
        ));
    }
    cases
}

fn credential_check(c: &mut Criterion) {
    // As the server does when it loads its keys, before anything signs.
    ring_crypto::install();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut group = c.benchmark_group("auth_per_connection");
    let mut static_done = false;
    for (name, key_bytes, jwt) in cases() {
        let path = dir.path().join(name);
        std::fs::write(&path, key_bytes).expect("the key file");
        let auth = auth(&path);
        if !static_done {
            group.bench_function("static", |b| {
                b.iter(|| auth.may_read(black_box(TOPIC), black_box(Some("static-reader"))))
            });
            static_done = true;
        }
        assert!(
            auth.may_read(TOPIC, Some(&jwt)).is_ok(),
            "{name}: the token verifies"
        );
        group.bench_function(name, |b| {
            b.iter(|| auth.may_read(black_box(TOPIC), black_box(Some(jwt.as_str()))))
        });
    }
    group.finish();
}

/// The signature check alone, on each crypto provider: RustCrypto (the
/// `jsonwebtoken` crate's own) and *ring*. The server takes *ring* for
/// ES256 (`auth::ring_crypto`) and keeps RustCrypto for EdDSA, where it is
/// the faster of the two here.
fn jwt_signature(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt_signature");
    for (name, key_bytes, jwt) in cases().into_iter().skip(1) {
        let (message, signature) = jwt.rsplit_once('.').expect("a signed token");
        let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
        let message = message.as_bytes();
        let (algorithm, key, ring_scheme): (_, _, &'static dyn VerificationAlgorithm) =
            if name == "es256" {
                let key = DecodingKey::from_ec_pem(&key_bytes).expect("a public key");
                (Algorithm::ES256, key, &ECDSA_P256_SHA256_FIXED)
            } else {
                let key = DecodingKey::from_ed_pem(&key_bytes).expect("a public key");
                (Algorithm::EdDSA, key, &ED25519)
            };
        let raw = key.try_get_as_bytes().expect("raw key bytes").to_vec();
        let rust_crypto = || {
            let factory = rust_crypto::DEFAULT_PROVIDER.verifier_factory;
            factory(&algorithm, &key)
                .expect("a verifier")
                .verify(message, &signature)
        };
        let ring = || UnparsedPublicKey::new(ring_scheme, &raw).verify(message, &signature);
        assert!(rust_crypto().is_ok() && ring().is_ok(), "{name}");
        group.bench_function(format!("{name}/rust_crypto"), |b| {
            b.iter(|| black_box(rust_crypto()))
        });
        group.bench_function(format!("{name}/ring"), |b| b.iter(|| black_box(ring())));
    }
    group.finish();
}

criterion_group!(benches, credential_check, jwt_signature);
criterion_main!(benches);
