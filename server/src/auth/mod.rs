//! Who may publish, read which topics, and seed: static bearer tokens
//! ([`statics`]) side by side with JSON Web Tokens ([`jwt`]) whose claims
//! list the topics their bearer may use, a denylist of revoked subjects and
//! token ids ([`denylist`]), and the lease that keeps a live stream within
//! its token's life ([`lease`]). Admin tokens ([`admin`]) open the admin
//! API and, once configured, are what seeding datasets takes.
//!
//! A presented token shaped like a JWT (three base64url parts) is verified
//! as one when JWTs are configured; any other token is checked against the
//! static tokens. With JWTs configured, every topic read and every publish
//! needs a credential. Tokens never reach a log; subjects do.

pub mod admin;
pub mod denylist;
pub mod jwt;
pub mod lease;
pub mod ring_crypto;
pub mod statics;

use std::sync::Arc;

use self::admin::{AdminToken, AdminTokens};
use self::denylist::Watch;
use self::jwt::{Grant, Verifier};
use self::statics::StaticTokens;
pub use self::statics::{ReadRule, Secret};

/// Why a request was refused access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No token was presented (HTTP 401).
    Missing,
    /// Not a token this server can read: bad encoding, claims of the wrong
    /// type (401).
    Malformed,
    /// The signature does not verify (401).
    BadSignature,
    /// `exp` has passed, beyond the accepted skew (401).
    Expired,
    /// `nbf` is still to come, beyond the accepted skew (401).
    NotYetValid,
    /// No key for the token's `kid` (401).
    UnknownKid,
    /// The token names an algorithm its key is not for, or `none` (401).
    AlgorithmNotAllowed,
    /// A required claim (`exp`, `sub`, and `iss`/`aud` when configured) is
    /// missing (401).
    MissingClaim,
    /// `iss` is not the configured issuer (401).
    BadIssuer,
    /// `aud` does not include the configured audience (401).
    BadAudience,
    /// The token's `sub` or `jti` is in the denylist (401).
    Revoked,
    /// A valid JWT that does not list this topic (403).
    TopicNotAllowed,
    /// A valid JWT without `streamgauge.admin` where it is needed (403).
    NotAdmin,
    /// A static token that does not fit (403).
    WrongToken,
}

impl Refusal {
    /// Every reason, for metrics and tests.
    pub const ALL: [Refusal; 14] = [
        Refusal::Missing,
        Refusal::Malformed,
        Refusal::BadSignature,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::UnknownKid,
        Refusal::AlgorithmNotAllowed,
        Refusal::MissingClaim,
        Refusal::BadIssuer,
        Refusal::BadAudience,
        Refusal::Revoked,
        Refusal::TopicNotAllowed,
        Refusal::NotAdmin,
        Refusal::WrongToken,
    ];

    /// Whether the answer is 403 (the bearer is known, and not allowed)
    /// rather than 401 (no credential the server accepts).
    pub fn is_forbidden(self) -> bool {
        matches!(
            self,
            Refusal::TopicNotAllowed | Refusal::NotAdmin | Refusal::WrongToken
        )
    }

    /// The stable snake_case reason of the JSON body and the metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::UnknownKid => "unknown_kid",
            Refusal::AlgorithmNotAllowed => "algorithm_not_allowed",
            Refusal::MissingClaim => "missing_claim",
            Refusal::BadIssuer => "bad_issuer",
            Refusal::BadAudience => "bad_audience",
            Refusal::Revoked => "revoked",
            Refusal::TopicNotAllowed => "topic_not_allowed",
            Refusal::NotAdmin => "not_admin",
            Refusal::WrongToken => "wrong_token",
        }
    }

    /// What is wrong, for the error message.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Missing => "no bearer token was presented",
            Refusal::Malformed => "the token is not a well-formed JWT with the claims required",
            Refusal::BadSignature => "the token's signature does not verify",
            Refusal::Expired => "the token has expired",
            Refusal::NotYetValid => "the token is not valid yet (nbf)",
            Refusal::UnknownKid => "no key for the token's kid",
            Refusal::AlgorithmNotAllowed => "the token's algorithm is not the one of its key",
            Refusal::MissingClaim => "the token lacks a required claim (exp, sub, iss or aud)",
            Refusal::BadIssuer => "the token's issuer is not accepted",
            Refusal::BadAudience => "the token is not meant for this server (aud)",
            Refusal::Revoked => "the token has been revoked",
            Refusal::TopicNotAllowed => "the token does not list this topic",
            Refusal::NotAdmin => "the token is not an admin token",
            Refusal::WrongToken => "the bearer token does not fit",
        }
    }
}

/// What let a request in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Nothing is required here.
    Open,
    /// A static token.
    Static,
    /// A verified JWT; a stream it opens lives no longer than it.
    Token(Box<Grant>),
    /// An admin token, known by its label.
    Admin(Arc<str>),
}

impl Access {
    /// The JWT that let the request in, if one did.
    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Access::Token(grant) => Some(grant),
            _ => None,
        }
    }
}

/// The access rules in force.
#[derive(Debug, Clone)]
pub struct Auth {
    statics: StaticTokens,
    admin: AdminTokens,
    jwt: Option<Arc<Verifier>>,
    denylist: Watch,
}

impl Auth {
    /// Rules from the static tokens, the JWT keys (if any) and the
    /// denylist in force.
    pub fn new(
        publish_tokens: &[Secret],
        read_rules: &[ReadRule],
        jwt: Option<Arc<Verifier>>,
        denylist: Watch,
    ) -> Self {
        Self {
            statics: StaticTokens::new(publish_tokens, read_rules),
            admin: AdminTokens::default(),
            jwt,
            denylist,
        }
    }

    /// Static tokens only, no JWT and no denylist.
    pub fn statics(publish_tokens: &[Secret], read_rules: &[ReadRule]) -> Self {
        Self::new(
            publish_tokens,
            read_rules,
            None,
            denylist::fixed(denylist::Denylist::default()),
        )
    }

    /// These rules with `tokens` as the admin tokens.
    pub fn with_admin(mut self, tokens: &[AdminToken]) -> Self {
        self.admin = AdminTokens::new(tokens);
        self
    }

    /// Whether the admin API exists: an admin token is configured.
    pub fn has_admin_api(&self) -> bool {
        self.admin.any()
    }

    /// Whether the bearer of `token` may call the admin API: only an
    /// admin token may.
    ///
    /// # Errors
    ///
    /// The [`Refusal`].
    pub fn may_administer(&self, token: Option<&str>) -> Result<Access, Refusal> {
        self.admin.label_of(token).map(Access::Admin)
    }

    /// Whether anyone may publish: no publish token and no JWTs.
    pub fn publishing_is_open(&self) -> bool {
        self.statics.publishing_is_open() && !self.takes_jwts()
    }

    /// Whether JWTs are accepted.
    pub fn takes_jwts(&self) -> bool {
        self.jwt.is_some()
    }

    /// The denylist in force, for a stream to watch.
    pub fn denylist(&self) -> Watch {
        self.denylist.clone()
    }

    /// The clock skew accepted on `exp` (zero without JWTs).
    pub fn leeway(&self) -> std::time::Duration {
        self.jwt.as_ref().map(|v| v.leeway()).unwrap_or_default()
    }

    /// Verifies `token` as a JWT and checks the denylist.
    ///
    /// # Errors
    ///
    /// The [`Refusal`]; [`Refusal::Malformed`] when JWTs are not
    /// configured.
    pub fn verify(&self, token: &str) -> Result<Grant, Refusal> {
        let verifier = self.jwt.as_ref().ok_or(Refusal::Malformed)?;
        let grant = verifier.verify(token)?;
        if self
            .denylist
            .borrow()
            .denies(&grant.sub, grant.jti.as_deref())
        {
            return Err(Refusal::Revoked);
        }
        Ok(grant)
    }

    /// The JWT among the presented `token`, when JWTs are configured.
    fn jwt_in<'a>(&self, token: Option<&'a str>) -> Option<&'a str> {
        token.filter(|t| self.takes_jwts() && looks_like_jwt(t))
    }

    /// Whether the bearer of `token` may read `topic`.
    ///
    /// # Errors
    ///
    /// The [`Refusal`].
    pub fn may_read(&self, topic: &str, token: Option<&str>) -> Result<Access, Refusal> {
        if let Some(jwt) = self.jwt_in(token) {
            return self.with_grant(jwt, |g| g.may_subscribe(topic), Refusal::TopicNotAllowed);
        }
        let guarded = self.statics.may_read(topic, token)?;
        self.static_access(guarded, token)
    }

    /// Whether the bearer of `token` may publish to `topic`.
    ///
    /// # Errors
    ///
    /// The [`Refusal`].
    pub fn may_publish(&self, topic: &str, token: Option<&str>) -> Result<Access, Refusal> {
        if let Some(jwt) = self.jwt_in(token) {
            return self.with_grant(jwt, |g| g.may_publish(topic), Refusal::TopicNotAllowed);
        }
        let guarded = self.statics.may_publish(token)?;
        self.static_access(guarded, token)
    }

    /// Whether the bearer of `token`, let in to read by `read`, may also
    /// publish to `topic`: a JWT verified for the read is not verified
    /// again, its claims decide.
    ///
    /// # Errors
    ///
    /// The [`Refusal`].
    pub fn may_also_publish(
        &self,
        topic: &str,
        token: Option<&str>,
        read: &Access,
    ) -> Result<(), Refusal> {
        match read.grant() {
            Some(grant) => grant.publish_permission(topic),
            None => self.may_publish(topic, token).map(drop),
        }
    }

    /// Whether the bearer of `token` may seed datasets: a JWT with
    /// `streamgauge.admin`, or an admin token when any is configured, else
    /// a publish token (open when publishing is).
    ///
    /// # Errors
    ///
    /// The [`Refusal`].
    pub fn may_seed(&self, token: Option<&str>) -> Result<Access, Refusal> {
        if let Some(jwt) = self.jwt_in(token) {
            return self.with_grant(jwt, Grant::is_admin, Refusal::NotAdmin);
        }
        if self.admin.any() {
            return self.may_administer(token);
        }
        let guarded = self.statics.may_publish(token)?;
        self.static_access(guarded, token)
    }

    fn with_grant(
        &self,
        token: &str,
        allows: impl FnOnce(&Grant) -> bool,
        otherwise: Refusal,
    ) -> Result<Access, Refusal> {
        let grant = self.verify(token)?;
        if allows(&grant) {
            Ok(Access::Token(Box::new(grant)))
        } else {
            Err(otherwise)
        }
    }

    /// The access a static check gave: a fitting token, or nothing needed
    /// unless JWTs are configured (then every use needs a credential).
    fn static_access(&self, guarded: bool, token: Option<&str>) -> Result<Access, Refusal> {
        match (guarded, self.takes_jwts(), token) {
            (true, _, _) => Ok(Access::Static),
            (false, false, _) => Ok(Access::Open),
            (false, true, None) => Err(Refusal::Missing),
            (false, true, Some(_)) => Err(Refusal::WrongToken),
        }
    }
}

/// Whether `token` has a JWS compact serialization's shape: three
/// base64url parts, the first two non-empty (an unsigned `alg: none` token
/// has an empty third).
fn looks_like_jwt(token: &str) -> bool {
    let base64url = |part: &str| {
        part.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => {
            !h.is_empty() && !p.is_empty() && [h, p, s].into_iter().all(base64url)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    use super::denylist::{self, Denylist};
    use super::jwt::{JwtOptions, KeyError};
    use super::*;

    const SECRET: &[u8] = b"a secret of thirty-two bytes, ok\n";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims(extra: Value) -> Value {
        let mut claims = json!({
            "sub": "client-1",
            "exp": now() + 60,
            "streamgauge": { "subscribe": ["chat.*"], "publish": ["chat.room-1"] },
        });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    }

    fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
        jsonwebtoken::encode(header, claims, key).unwrap()
    }

    fn hs256(claims: &Value) -> String {
        let key = EncodingKey::from_secret(SECRET.strip_suffix(b"\n").unwrap()).unwrap();
        sign(&Header::new(Algorithm::HS256), claims, &key)
    }

    struct Files(tempfile::TempDir);

    impl Files {
        fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }

        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        }
    }

    fn options(key: Option<PathBuf>, jwks: Option<PathBuf>) -> JwtOptions {
        JwtOptions {
            key,
            jwks,
            leeway: Duration::from_secs(5),
            issuer: None,
            audience: None,
        }
    }

    fn auth_with(options: &JwtOptions, denylist: Denylist) -> Auth {
        let verifier = Verifier::load(options).unwrap().map(Arc::new);
        Auth::new(
            &["static-pub".parse().unwrap()],
            &["private.*=static-read".parse().unwrap()],
            verifier,
            denylist::fixed(denylist),
        )
    }

    fn hs_auth(files: &Files) -> Auth {
        let key = files.write("secret", SECRET);
        auth_with(&options(Some(key), None), Denylist::default())
    }

    #[test]
    fn each_bad_token_is_refused_with_its_reason() {
        let files = Files::new();
        let auth = hs_auth(&files);
        let wrong_key = EncodingKey::from_secret(b"another secret of thirty-two byt").unwrap();
        let unsigned = {
            let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = b64(claims(json!({})).to_string().as_bytes());
            format!("{header}.{payload}.")
        };
        let cases = [
            (hs256(&claims(json!({}))), None),
            (
                hs256(&claims(json!({ "exp": now() - 60 }))),
                Some(Refusal::Expired),
            ),
            (
                hs256(&claims(json!({ "nbf": now() + 60 }))),
                Some(Refusal::NotYetValid),
            ),
            (
                sign(
                    &Header::new(Algorithm::HS256),
                    &claims(json!({})),
                    &wrong_key,
                ),
                Some(Refusal::BadSignature),
            ),
            (hs256(&json!({ "sub": "x" })), Some(Refusal::MissingClaim)),
            (
                hs256(&json!({ "exp": now() + 60 })),
                Some(Refusal::MissingClaim),
            ),
            (
                hs256(&claims(json!({ "sub": 7 }))),
                Some(Refusal::Malformed),
            ),
            (unsigned, Some(Refusal::AlgorithmNotAllowed)),
            ("e30.e30.x".to_owned(), Some(Refusal::Malformed)),
        ];
        for (token, expected) in cases {
            let got = auth.verify(&token).err();
            assert_eq!(got, expected, "{token}");
        }
        // Within the accepted skew, an expired token still passes.
        assert!(
            auth.verify(&hs256(&claims(json!({ "exp": now() - 2 }))))
                .is_ok()
        );
    }

    #[test]
    fn public_keys_take_their_own_algorithm_only() {
        let files = Files::new();
        for (alg, algorithm) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
            (&rcgen::PKCS_ED25519, Algorithm::EdDSA),
        ] {
            let pair = rcgen::KeyPair::generate_for(alg).unwrap();
            let public = pair.public_key_pem();
            let key = files.write("public.pem", public.as_bytes());
            let auth = auth_with(&options(Some(key), None), Denylist::default());
            let private = pair.serialize_pem();
            let signing = match algorithm {
                Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()),
                _ => EncodingKey::from_ed_pem(private.as_bytes()),
            }
            .unwrap();
            let token = sign(&Header::new(algorithm), &claims(json!({})), &signing);
            assert_eq!(auth.verify(&token).unwrap().sub.as_ref(), "client-1");
            // Algorithm confusion: HS256 keyed with the public key's text.
            let confused = sign(
                &Header::new(Algorithm::HS256),
                &claims(json!({})),
                &EncodingKey::from_secret(public.as_bytes()).unwrap(),
            );
            assert_eq!(
                auth.verify(&confused),
                Err(Refusal::AlgorithmNotAllowed),
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn a_jwks_picks_keys_by_kid() {
        let files = Files::new();
        let jwks = json!({ "keys": [
            { "kty": "oct", "kid": "one", "k": "b25lLW9uZS1vbmUtb25lLW9uZS1vbmUtb25lLW9uZS1vbmU" },
            { "kty": "oct", "kid": "two", "alg": "HS256", "k": "dHdvLXR3by10d28tdHdvLXR3by10d28tdHdvLXR3by10d28" },
        ]});
        let path = files.write("jwks.json", jwks.to_string().as_bytes());
        let auth = auth_with(&options(None, Some(path)), Denylist::default());
        let with_kid = |kid: Option<&str>, secret: &[u8]| {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = kid.map(str::to_owned);
            sign(
                &header,
                &claims(json!({})),
                &EncodingKey::from_secret(secret).unwrap(),
            )
        };
        let two = b"two-two-two-two-two-two-two-two-two";
        assert!(auth.verify(&with_kid(Some("two"), two)).is_ok());
        assert_eq!(
            auth.verify(&with_kid(Some("one"), two)),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            auth.verify(&with_kid(Some("three"), two)),
            Err(Refusal::UnknownKid)
        );
        assert_eq!(auth.verify(&with_kid(None, two)), Err(Refusal::UnknownKid));
    }

    #[test]
    fn claims_scope_topics_and_static_tokens_keep_working() {
        let files = Files::new();
        let auth = hs_auth(&files);
        let token = hs256(&claims(json!({})));
        let jwt = Some(token.as_str());
        assert!(matches!(auth.may_read("chat.x", jwt), Ok(Access::Token(_))));
        assert_eq!(auth.may_read("news", jwt), Err(Refusal::TopicNotAllowed));
        assert!(auth.may_publish("chat.room-1", jwt).is_ok());
        assert_eq!(
            auth.may_publish("chat.room-2", jwt),
            Err(Refusal::TopicNotAllowed)
        );
        let read = auth.may_read("chat.room-1", jwt).unwrap();
        assert_eq!(auth.may_also_publish("chat.room-1", jwt, &read), Ok(()));
        assert_eq!(
            auth.may_also_publish("chat.room-2", jwt, &read),
            Err(Refusal::TopicNotAllowed)
        );
        assert_eq!(auth.may_seed(jwt), Err(Refusal::NotAdmin));
        let admin = hs256(&claims(json!({ "streamgauge": { "admin": true } })));
        assert!(auth.may_seed(Some(&admin)).is_ok());
        // With JWTs on, nothing is open; static tokens still let in.
        assert_eq!(auth.may_read("news", None), Err(Refusal::Missing));
        assert_eq!(auth.may_publish("news", None), Err(Refusal::Missing));
        assert_eq!(
            auth.may_read("news", Some("nope")),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            auth.may_read("private.a", Some("static-read")),
            Ok(Access::Static)
        );
        assert_eq!(
            auth.may_publish("any", Some("static-pub")),
            Ok(Access::Static)
        );
        assert!(!auth.publishing_is_open());
    }

    #[test]
    fn a_denylisted_subject_or_token_id_is_revoked() {
        let files = Files::new();
        let key = files.write("secret", SECRET);
        let auth = auth_with(
            &options(Some(key), None),
            Denylist::parse("client-9\njti-1\n"),
        );
        for token in [
            hs256(&claims(json!({ "sub": "client-9" }))),
            hs256(&claims(json!({ "jti": "jti-1" }))),
        ] {
            assert_eq!(auth.verify(&token), Err(Refusal::Revoked));
        }
        assert!(
            auth.verify(&hs256(&claims(json!({ "jti": "jti-2" }))))
                .is_ok()
        );
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let files = Files::new();
        let key = files.write("secret", SECRET);
        let auth = auth_with(
            &JwtOptions {
                issuer: Some("https://issuer".to_owned()),
                audience: Some("streamgauge".to_owned()),
                ..options(Some(key), None)
            },
            Denylist::default(),
        );
        let good = json!({ "iss": "https://issuer", "aud": "streamgauge" });
        assert!(auth.verify(&hs256(&claims(good))).is_ok());
        for (extra, reason) in [
            (
                json!({ "iss": "other", "aud": "streamgauge" }),
                Refusal::BadIssuer,
            ),
            (
                json!({ "iss": "https://issuer", "aud": "other" }),
                Refusal::BadAudience,
            ),
            (json!({ "aud": "streamgauge" }), Refusal::MissingClaim),
        ] {
            assert_eq!(auth.verify(&hs256(&claims(extra))), Err(reason));
        }
    }

    #[test]
    fn key_files_that_cannot_be_used_are_named() {
        let files = Files::new();
        let load = |path: PathBuf| Verifier::load(&options(Some(path), None)).map(|_| ());
        let short = files.write("short", b"too short\n");
        let private = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let private = files.write("private.pem", private.as_bytes());
        let junk = files.write(
            "junk.pem",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        );
        for (path, says) in [
            (short, "at least 32 bytes"),
            (private, "private key"),
            (junk, "not an RSA, EC P-256 or Ed25519 public key"),
            (files.0.path().join("absent"), "cannot be read"),
        ] {
            let Err(KeyError {
                flag: "jwt-key",
                path: named,
                reason,
            }) = load(path.clone())
            else {
                panic!("{path:?} loaded");
            };
            assert_eq!(named, path.display().to_string());
            assert!(reason.contains(says), "{reason}");
        }
        let jwks = files.write("jwks.json", br#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#);
        let err = Verifier::load(&options(None, Some(jwks))).unwrap_err();
        assert!(err.reason.contains("key 0: has no `kid`"), "{err}");
        assert_eq!(err.flag, "jwks-file");
    }

    #[test]
    fn only_jws_shaped_tokens_are_taken_for_jwts() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(looks_like_jwt("eyJh.eyJz."), "unsigned: refused as a JWT");
        assert!(!looks_like_jwt("static-token"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a b.c.d"));
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}
