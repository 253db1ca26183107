//! Per-user tokens on the client's side: a [`Minter`] signs a JWT for one
//! subject (`client-7`, `publisher-0`) with the run's key and grants, and a
//! [`Credential`] is one subject's token over its life: minted before the
//! first connection, renewed at about three quarters of its lifetime
//! ([`renew_after`]), either on the live WebSocket (a refresh frame and its
//! answer) or by reopening the stream with a fresh token.
//!
//! Minting costs one signature (measured in a debug build: 32 µs for
//! HS256, 0.42 ms for EdDSA, 3.9 ms for ES256; release builds are many
//! times faster). The clients' first tokens are minted before the run
//! starts ([`Minter::prepare`]): minted as each client connects, a connect
//! storm of 1,000 ES256 clients spent its first ~200 ms signing on the
//! cores the server shares, which staggered the connects (p50 connect
//! 150–180 ms against 35–47 ms with static tokens) and hid what the
//! server's verification costs. Renewals are minted as they fall due.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::scenario::auth::Auth;

/// What a token allows: the `streamgauge` claim (docs/protocol.md,
/// "JSON Web Tokens").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Grants {
    /// Topic patterns it may read.
    pub subscribe: Vec<String>,
    /// Topic patterns it may publish to.
    pub publish: Vec<String>,
}

/// The claims of a minted token.
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    streamgauge: &'a Grants,
}

/// When to renew a token that lives `ttl`: at `0.7 + 0.1 × jitter` of its
/// life (`jitter` in `0..1` spreads clients that connected together), and
/// never later than one second before it expires.
pub fn renew_after(ttl: Duration, jitter: f64) -> Duration {
    let at = ttl.mul_f64(0.7 + 0.1 * jitter.clamp(0.0, 1.0));
    at.min(ttl.saturating_sub(Duration::from_secs(1)))
}

/// A token and when its holder renews it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// The JWT.
    pub token: String,
    /// When to renew it.
    pub renew_at: Instant,
}

/// Signs tokens with the run's key, for the grants of one kind of holder
/// (the clients, or the publishers).
pub struct Minter {
    key: EncodingKey,
    header: Header,
    ttl: Duration,
    grants: Grants,
    /// First tokens minted before the run, by subject, each taken once.
    prepared: Mutex<HashMap<String, Minted>>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("header", &self.header)
            .field("ttl", &self.ttl)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

impl Minter {
    /// A minter of tokens that allow `grants`, signed with the key `auth`
    /// names (read from its file).
    ///
    /// # Errors
    ///
    /// The key file can no longer be read or used, in words naming it.
    pub fn new(auth: &Auth, grants: Grants) -> Result<Self, String> {
        let key = auth.signing_key()?;
        let mut header = Header::new(key.alg.jwt());
        header.kid.clone_from(&auth.jwt_kid);
        Ok(Self {
            key: key.key,
            header,
            ttl: auth.jwt_ttl,
            grants,
            prepared: Mutex::default(),
        })
    }

    /// Mints the first token of each of `subs` now, before the run's
    /// clients start (module docs: why).
    pub fn prepare(&self, subs: impl IntoIterator<Item = String>) {
        let minted: Vec<(String, Minted)> = subs
            .into_iter()
            .map(|sub| {
                let token = self.mint(&sub);
                (sub, token)
            })
            .collect();
        self.prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(minted);
    }

    /// `sub`'s prepared token, else a fresh one.
    fn first(&self, sub: &str) -> Minted {
        let prepared = self
            .prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(sub);
        prepared.unwrap_or_else(|| self.mint(sub))
    }

    /// A token for `sub`, valid from now for the minter's lifetime, with a
    /// `jti` of its own.
    pub fn mint(&self, sub: &str) -> Minted {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            sub,
            iat: now.as_secs(),
            nbf: now.as_secs(),
            // The expiry rounded down: the token lives at most `ttl`, and
            // the renewal a second before it is still in time.
            exp: (now + self.ttl).as_secs(),
            jti: format!("{:032x}", fastrand::u128(..)),
            streamgauge: &self.grants,
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.key)
            // The key signed a token when it was read (`SigningKey::read`).
            .expect("a key that signed once signs again");
        Minted {
            token,
            renew_at: Instant::now() + renew_after(self.ttl, fastrand::f64()),
        }
    }
}

/// The state of a renewal on the stream being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    /// Renew when the token's time comes.
    Due,
    /// A refresh went out on the live WebSocket, unanswered yet.
    Sent,
    /// The server refused it: the stream goes on until the token expires,
    /// and the next stream opens with a fresh one.
    Refused,
}

/// One holder's token over its life.
#[derive(Debug, Clone)]
pub struct Credential {
    minter: Arc<Minter>,
    sub: String,
    current: Minted,
    /// The token a refresh in flight sent.
    pending: Option<Minted>,
    renewal: Renewal,
    /// Refreshes sent: each one's `id`.
    sent: u64,
}

impl Credential {
    /// `sub`'s credential, its first token minted.
    pub fn new(minter: Arc<Minter>, sub: String) -> Self {
        let current = minter.first(&sub);
        Self {
            minter,
            sub,
            current,
            pending: None,
            renewal: Renewal::Due,
            sent: 0,
        }
    }

    /// The token to send.
    pub fn token(&self) -> &str {
        &self.current.token
    }

    /// When the stream being read should renew the token: `None` while a
    /// refresh is in flight or after one was refused.
    pub fn due(&self) -> Option<Instant> {
        (self.renewal == Renewal::Due).then_some(self.current.renew_at)
    }

    /// Whether a refresh is in flight, unanswered.
    pub fn in_flight(&self) -> bool {
        self.pending.is_some()
    }

    /// Mints a fresh token for the next stream.
    pub fn renew(&mut self) {
        self.current = self.minter.mint(&self.sub);
        self.pending = None;
        self.renewal = Renewal::Due;
    }

    /// Mints a fresh token if the current one is due for renewal (before
    /// a stream opens, or a publish goes out).
    pub fn renew_if_due(&mut self, now: Instant) {
        if now >= self.current.renew_at {
            self.renew();
        }
    }

    /// A refresh of the live WebSocket stream (docs/protocol.md): a fresh
    /// token in `{"refresh": …, "id": N}`, in flight until answered.
    pub fn refresh_frame(&mut self) -> String {
        let minted = self.minter.mint(&self.sub);
        self.sent += 1;
        let frame = serde_json::json!({ "refresh": minted.token, "id": self.sent }).to_string();
        self.pending = Some(minted);
        self.renewal = Renewal::Sent;
        frame
    }

    /// The refresh in flight was accepted: its token is the current one.
    /// False if none was in flight.
    pub fn accepted(&mut self) -> bool {
        let Some(pending) = self.pending.take() else {
            return false;
        };
        self.current = pending;
        self.renewal = Renewal::Due;
        true
    }

    /// The refresh in flight was refused. False if none was in flight.
    pub fn refused(&mut self) -> bool {
        if self.pending.take().is_none() {
            return false;
        }
        self.renewal = Renewal::Refused;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use jsonwebtoken::{DecodingKey, Validation};
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SignatureAlgorithm};

    use super::*;
    use crate::scenario::auth::{Alg, RawAuth};

    /// What a minted token says.
    #[derive(Debug, serde::Deserialize)]
    struct Decoded {
        sub: String,
        iat: u64,
        nbf: u64,
        exp: u64,
        jti: String,
        streamgauge: serde_json::Value,
    }

    /// An `[auth]` for the key file `path`, tokens living `ttl`.
    fn auth(path: &Path, ttl: Duration, kid: Option<&str>) -> Auth {
        RawAuth {
            jwt_key: Some(path.to_owned()),
            jwt_ttl: Some(ttl),
            jwt_kid: kid.map(str::to_owned),
        }
        .validate()
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A fresh key pair of `algorithm` in `dir`: the private key's file
    /// and the public key, PEM.
    fn key_pair(
        dir: &Path,
        algorithm: &'static SignatureAlgorithm,
    ) -> (std::path::PathBuf, String) {
        let pair = KeyPair::generate_for(algorithm).unwrap();
        let path = dir.join(format!("{}.pem", fastrand::u32(..)));
        std::fs::write(&path, pair.serialize_pem()).unwrap();
        (path, pair.public_key_pem())
    }

    /// A minter of HS256 tokens living a minute, no grants.
    fn hs256_minter() -> Arc<Minter> {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "t".repeat(40)).unwrap();
        let auth = auth(&secret, Duration::from_secs(60), None);
        Arc::new(Minter::new(&auth, Grants::default()).unwrap())
    }

    /// Mints a token for `client-7` with `auth` and decodes it with `key`.
    fn mint_and_decode(auth: &Auth, key: &DecodingKey) -> (Header, Decoded) {
        let grants = Grants {
            subscribe: vec!["sg-run-1".to_owned()],
            publish: Vec::new(),
        };
        let minter = Minter::new(auth, grants).unwrap();
        let minted = minter.mint("client-7");
        let mut validation = Validation::new(auth.alg.jwt());
        validation.set_required_spec_claims(&["exp", "sub", "nbf"]);
        let data = jsonwebtoken::decode::<Decoded>(&minted.token, key, &validation)
            .unwrap_or_else(|e| panic!("{:?}: {e}", auth.alg));
        (data.header, data.claims)
    }

    #[test]
    fn tokens_of_each_algorithm_verify_with_the_matching_key_and_carry_the_claims() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, format!("{}\n", "s".repeat(32))).unwrap();
        let (es, es_public) = key_pair(dir.path(), &PKCS_ECDSA_P256_SHA256);
        let (ed, ed_public) = key_pair(dir.path(), &PKCS_ED25519);
        let cases = [
            (
                secret,
                Alg::Hs256,
                DecodingKey::from_secret(&[b's'; 32]).unwrap(),
            ),
            (
                es,
                Alg::Es256,
                DecodingKey::from_ec_pem(es_public.as_bytes()).unwrap(),
            ),
            (
                ed,
                Alg::EdDsa,
                DecodingKey::from_ed_pem(ed_public.as_bytes()).unwrap(),
            ),
        ];
        let mut jtis = Vec::new();
        for (path, alg, key) in cases {
            let auth = auth(&path, Duration::from_secs(300), Some("k1"));
            assert_eq!(auth.alg, alg, "the algorithm follows from the key");
            let (header, claims) = mint_and_decode(&auth, &key);
            assert_eq!((header.alg, header.kid.as_deref()), (alg.jwt(), Some("k1")));
            assert_eq!(claims.sub, "client-7");
            assert_eq!((claims.iat, claims.nbf), (claims.nbf, claims.exp - 300));
            assert_eq!(
                claims.streamgauge,
                serde_json::json!({"subscribe": ["sg-run-1"], "publish": []})
            );
            jtis.push(claims.jti);
        }
        jtis.sort();
        jtis.dedup();
        assert_eq!(jtis.len(), 3, "each token has a jti of its own");
    }

    #[test]
    fn renewal_comes_at_three_quarters_and_a_second_before_expiry_at_the_latest() {
        let ten_minutes = Duration::from_secs(600);
        assert_eq!(renew_after(ten_minutes, 0.0), Duration::from_secs(420));
        assert_eq!(renew_after(ten_minutes, 0.5), Duration::from_secs(450));
        assert_eq!(renew_after(ten_minutes, 1.0), Duration::from_secs(480));
        let five = Duration::from_secs(5);
        assert_eq!(renew_after(five, 0.0), Duration::from_millis(3500));
        assert_eq!(renew_after(five, 1.0), Duration::from_secs(4), "ttl - 1 s");
        assert_eq!(
            renew_after(Duration::from_secs(2), 0.5),
            Duration::from_secs(1)
        );
        for n in 0..=100 {
            let after = renew_after(five, f64::from(n) / 100.0);
            assert!(after <= Duration::from_secs(4) && after >= Duration::from_millis(3500));
        }
    }

    #[test]
    fn a_refresh_in_flight_becomes_the_token_or_stops_renewal_on_that_stream() {
        let minter = hs256_minter();
        let mut credential = Credential::new(minter, "client-3".to_owned());
        let first = credential.token().to_owned();
        assert!(credential.due().is_some());
        assert!(!credential.accepted(), "no refresh in flight");
        let frame: serde_json::Value = serde_json::from_str(&credential.refresh_frame()).unwrap();
        assert_eq!(frame["id"], 1);
        assert_eq!(credential.due(), None, "one refresh at a time");
        assert!(credential.in_flight());
        assert_eq!(credential.token(), first, "the old token until answered");
        assert!(credential.accepted());
        assert!(!credential.in_flight());
        assert_eq!(credential.token(), frame["refresh"].as_str().unwrap());
        assert!(credential.due().is_some());
        let _ = credential.refresh_frame();
        assert!(credential.refused());
        assert!(!credential.refused());
        assert_eq!(credential.due(), None, "the stream goes on to its expiry");
        credential.renew();
        assert!(
            credential.due().is_some(),
            "a fresh token for the next stream"
        );
        let now = Instant::now();
        let before = credential.token().to_owned();
        credential.renew_if_due(now);
        assert_eq!(credential.token(), before, "not due yet");
        credential.renew_if_due(now + Duration::from_secs(60));
        assert_ne!(credential.token(), before);
    }

    #[test]
    fn a_prepared_first_token_is_taken_once_then_tokens_are_minted() {
        let minter = hs256_minter();
        minter.prepare(["client-1".to_owned(), "client-2".to_owned()]);
        let prepared = minter.prepared.lock().unwrap()["client-1"].token.clone();
        let first = Credential::new(Arc::clone(&minter), "client-1".to_owned());
        assert_eq!(first.token(), prepared);
        let again = Credential::new(Arc::clone(&minter), "client-1".to_owned());
        assert_ne!(
            again.token(),
            prepared,
            "taken once: a restarted client mints"
        );
        assert_eq!(
            minter.prepared.lock().unwrap().len(),
            1,
            "client-2's is left"
        );
    }
}
