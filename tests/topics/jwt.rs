//! Per-user JWTs on topics: each refusal with its reason, a publisher held
//! to its patterns, a stream ended at its token's expiry and resumed with
//! a new token losing nothing, a WebSocket refresh, a revoked subject cut
//! off while streaming. Tokens are ES256, signed with a key made here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use streamgauge_server::Config;
use streamgauge_server::auth::denylist::{Denylist, DenylistFile};
use streamgauge_server::auth::jwt::{JwtOptions, Verifier};
use tokio_tungstenite::tungstenite::Message;

use super::{seq, server};
use crate::support::{self, Backend, Client, End, Item, TestServer, Transport, within};

/// A static publish token beside the JWTs, for the tests' own publishes.
const PUBLISHER: &str = "static-publisher";

/// Bounds the publishes a test makes while waiting for the clock.
const MAX_TICKS: usize = 20_000;

/// Signs tokens for the server it configures.
struct Issuer {
    key: EncodingKey,
    dir: tempfile::TempDir,
}

impl Issuer {
    fn new() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("public.pem"), pair.public_key_pem()).unwrap();
        Self {
            key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            dir,
        }
    }

    /// A server configuration taking these tokens (no skew), with a
    /// denylist file (empty at start) and the cookie `sg_jwt`.
    fn config(&self) -> Config {
        let options = JwtOptions {
            key: Some(self.dir.path().join("public.pem")),
            jwks: None,
            leeway: Duration::ZERO,
            issuer: None,
            audience: None,
        };
        std::fs::write(self.denylist(), "").unwrap();
        Config {
            publish_tokens: vec![PUBLISHER.parse().unwrap()],
            jwt: Verifier::load(&options).unwrap().map(Arc::new),
            jwt_cookie: Some("sg_jwt".to_owned()),
            jwt_denylist: Some(DenylistFile {
                path: self.denylist(),
                initial: Denylist::default(),
            }),
            ..support::config()
        }
    }

    fn denylist(&self) -> PathBuf {
        self.dir.path().join("denylist")
    }

    /// A token for `sub`, living `ttl` seconds from now, with `claims`
    /// (and more claims in `extra`).
    fn token(&self, sub: &str, ttl: i64, claims: Value) -> String {
        let body = json!({
            "sub": sub,
            "exp": now().saturating_add_signed(ttl),
            "streamgauge": claims,
        });
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &body, &self.key).unwrap()
    }

    /// A reader of `chat.*` for `sub`.
    fn reader(&self, sub: &str, ttl: i64) -> String {
        self.token(sub, ttl, json!({ "subscribe": ["chat.*"] }))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn publish(server: &TestServer, topic: &str, n: u64) -> u64 {
    let (status, answer) = server
        .try_publish(topic, json!({ "n": n }).to_string(), Some(PUBLISHER))
        .await;
    assert_eq!(status, 201, "{answer}");
    answer["seq"].as_u64().unwrap()
}

/// `GET /sse/{path}` with `headers`: the status and JSON answer of a
/// refusal.
async fn sse_refusal(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = server.http().get(server.url(&format!("/sse/{path}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = within("a refusal", request.send()).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

pub(super) async fn jwt_refusals_name_their_reason(backend: Backend) {
    let issuer = Issuer::new();
    let (server, _db) = server(backend, issuer.config()).await;
    let unsigned = {
        let token = issuer.reader("client-1", 60);
        let mut parts = token.split('.');
        let payload = parts.nth(1).unwrap().to_owned();
        // {"alg":"none","typ":"JWT"}
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
    };
    let forged = {
        // One character of the signature changed (not the last, whose low
        // bits are padding).
        let mut token = issuer.reader("client-1", 60).into_bytes();
        let at = token.len() - 10;
        token[at] = if token[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(token).unwrap()
    };
    let not_yet = {
        let body = json!({ "sub": "c", "exp": now() + 600, "nbf": now() + 300,
                           "streamgauge": { "subscribe": ["chat.*"] } });
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &body, &issuer.key).unwrap()
    };
    let cases = [
        (None, 401, "missing"),
        (Some(issuer.reader("client-1", -60)), 401, "expired"),
        (Some(forged), 401, "bad_signature"),
        (Some(not_yet), 401, "not_yet_valid"),
        (Some(unsigned), 401, "algorithm_not_allowed"),
        (Some("not.a.jwt!".to_owned()), 403, "wrong_token"),
        (
            Some(issuer.token("client-1", 60, json!({ "subscribe": ["news"] }))),
            403,
            "topic_not_allowed",
        ),
    ];
    for (token, status, reason) in &cases {
        let query = token
            .as_ref()
            .map(|t| format!("?token={t}"))
            .unwrap_or_default();
        let path = format!("topics/chat.x{query}");
        let (got, answer) = sse_refusal(&server, &path, &[]).await;
        assert_eq!(
            (got, answer["reason"].as_str()),
            (*status, Some(*reason)),
            "SSE {answer}"
        );
        let (got, answer) = server.ws_refusal(&format!("/ws/{path}")).await;
        assert_eq!(
            (got, answer["reason"].as_str()),
            (*status, Some(*reason)),
            "WS {answer}"
        );
    }
    // The same token is taken from the header and from the cookie.
    let token = issuer.reader("client-1", 60);
    let bearer = format!("Bearer {token}");
    let cookie = format!("theme=dark; sg_jwt={token}");
    for header in [
        ("Authorization", bearer.as_str()),
        ("Cookie", cookie.as_str()),
    ] {
        server
            .open_with(Transport::Sse, "topics/chat.x", &[header])
            .await;
    }
    let metrics = server.metrics().await;
    for (_, _, reason) in &cases {
        let counted = metrics.get(&format!(
            "streamgauge_auth_refusals_total{{reason=\"{reason}\"}}"
        ));
        assert_eq!(counted, 2.0, "{reason}: one SSE and one WebSocket refusal");
    }
    assert_eq!(metrics.get("streamgauge_jwt_accepted_total"), 2.0);
}

pub(super) async fn a_publisher_is_held_to_its_topic_patterns(backend: Backend) {
    let issuer = Issuer::new();
    let (server, _db) = server(backend, issuer.config()).await;
    let token = issuer.token(
        "publisher-1",
        60,
        json!({ "subscribe": ["room.*"], "publish": ["room.1*"] }),
    );
    let (status, answer) = server.try_publish("room.12", "1", Some(&token)).await;
    assert_eq!((status, answer["seq"].as_u64()), (201, Some(1)));
    let (status, answer) = server.try_publish("room.2", "1", Some(&token)).await;
    assert_eq!(
        (status, answer["reason"].as_str()),
        (403, Some("topic_not_allowed"))
    );
    // Seeding needs an admin token.
    let (status, answer) = server.seed_trades("w", 1, Some(&token)).await;
    assert_eq!(
        (status, answer["reason"].as_str()),
        (403, Some("not_admin"))
    );

    // On a WebSocket the same token publishes where it may, and is closed
    // (1008) where it may not.
    let mut allowed = server
        .open(Transport::Ws, &format!("topics/room.10?token={token}"))
        .await;
    allowed.send(Message::text(r#"{"publish":2}"#)).await;
    assert_eq!(
        allowed.next_item().await,
        Item::Reply(json!({ "ack": { "seq": 1 } }))
    );
    let mut refused = server
        .open(Transport::Ws, &format!("topics/room.2?token={token}"))
        .await;
    refused.send(Message::text(r#"{"publish":2}"#)).await;
    let (_, end) = refused.drain().await;
    assert_eq!(end, End::Close(1008));
}

/// Reads `client` until its stream ends, returning the seqs it delivered
/// and how it ended, publishing to `topic` meanwhile (a bounded number of
/// times) so that something is always under way.
async fn read_until_end(server: &TestServer, client: &mut Client, topic: &str) -> (Vec<u64>, End) {
    let mut seqs = Vec::new();
    for n in 0..MAX_TICKS {
        publish(server, topic, n as u64).await;
        match within("the next item", client.next_item()).await {
            Item::Event(event) => seqs.push(seq(&event)),
            Item::End(end) => return (seqs, end),
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("the stream never ended");
}

pub(super) async fn an_expired_subscriber_resumes_with_a_new_token_losing_nothing(
    backend: Backend,
) {
    let issuer = Issuer::new();
    let (server, _db) = server(backend, issuer.config()).await;
    for (transport, expected) in [
        (Transport::Sse, End::Notice("token_expired".to_owned())),
        (Transport::Ws, End::Close(4401)),
    ] {
        let topic = format!("chat.{}", transport.label());
        let token = issuer.reader("client-1", 2);
        let mut client = server
            .open(transport, &format!("topics/{topic}?token={token}"))
            .await;
        let (seqs, end) = read_until_end(&server, &mut client, &topic).await;
        assert_eq!(end, expected, "{transport:?}");
        let last = *seqs.last().expect("events before the expiry");
        // Published while the client was away.
        for n in 0..3 {
            publish(&server, &topic, n).await;
        }
        let fresh = issuer.reader("client-1", 60);
        let cursor = last.to_string();
        let mut client = match transport {
            Transport::Sse => {
                let bearer = format!("Bearer {fresh}");
                let headers = [
                    ("Authorization", bearer.as_str()),
                    ("Last-Event-ID", &cursor),
                ];
                server
                    .open_with(transport, &format!("topics/{topic}"), &headers)
                    .await
            }
            Transport::Ws => {
                server
                    .open(
                        transport,
                        &format!("topics/{topic}?token={fresh}&since={last}"),
                    )
                    .await
            }
        };
        let head = publish(&server, &topic, 99).await;
        let mut resumed = Vec::new();
        while resumed.last() != Some(&head) {
            resumed.push(seq(&client.next_event().await));
        }
        let all: Vec<u64> = seqs.iter().chain(&resumed).copied().collect();
        assert_eq!(
            all,
            (1..=head).collect::<Vec<_>>(),
            "{transport:?}: nothing lost, nothing twice"
        );
    }
}

pub(super) async fn a_websocket_refreshes_its_token_and_streams_on(backend: Backend) {
    let issuer = Issuer::new();
    let (server, _db) = server(backend, issuer.config()).await;
    let old_exp = now() + 2;
    let token = issuer.reader("client-1", 2);
    let mut client = server
        .open(Transport::Ws, &format!("topics/chat.r?token={token}"))
        .await;
    // Refused refreshes leave the stream as it was.
    for (bad, reason) in [
        ("not-a-token".to_owned(), "malformed"),
        (issuer.reader("client-2", 60), "wrong_token"),
        (
            issuer.token("client-1", 60, json!({ "subscribe": ["news"] })),
            "topic_not_allowed",
        ),
    ] {
        let frame = json!({ "refresh": bad, "id": 7 }).to_string();
        client.send(Message::text(frame)).await;
        let Item::Reply(reply) = client.next_item().await else {
            panic!("a reply");
        };
        assert_eq!(
            (reply["reason"].as_str(), &reply["id"]),
            (Some(reason), &json!(7)),
            "{reply}"
        );
    }
    let fresh = issuer.reader("client-1", 60);
    let frame = json!({ "refresh": fresh, "id": 8 }).to_string();
    client.send(Message::text(frame)).await;
    let Item::Reply(reply) = client.next_item().await else {
        panic!("a reply");
    };
    assert_eq!(reply["id"], 8);
    assert!(
        reply["refreshed"]["exp"].as_u64().unwrap() > old_exp,
        "{reply}"
    );
    // Events flow on past the old token's expiry.
    let mut seen = 0;
    for n in 0..MAX_TICKS {
        let published = publish(&server, "chat.r", n as u64).await;
        assert_eq!(seq(&client.next_event().await), published);
        seen += 1;
        if now() > old_exp + 1 {
            break;
        }
    }
    assert!(
        now() > old_exp + 1,
        "the old token outlived the test ({seen} events)"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.get("streamgauge_token_refreshes_total{result=\"accepted\"}"),
        1.0
    );
    assert_eq!(
        metrics.get("streamgauge_token_refreshes_total{result=\"refused\"}"),
        3.0
    );
}

pub(super) async fn a_denylisted_subject_is_cut_off_while_streaming(backend: Backend) {
    let issuer = Issuer::new();
    let (server, _db) = server(backend, issuer.config()).await;
    let bad = issuer.reader("client-bad", 600);
    let good = issuer.reader("client-good", 600);
    let mut sse = server
        .open(Transport::Sse, &format!("topics/chat.d?token={bad}"))
        .await;
    let mut ws = server
        .open(Transport::Ws, &format!("topics/chat.d?token={bad}"))
        .await;
    let mut kept = server
        .open(Transport::Ws, &format!("topics/chat.d?token={good}"))
        .await;
    std::fs::write(issuer.denylist(), "# revoked today\nclient-bad\n").unwrap();
    let (_, end) = within("the SSE stream's end", sse.drain()).await;
    assert_eq!(end, End::Notice("revoked".to_owned()));
    let (_, end) = within("the WebSocket's close", ws.drain()).await;
    assert_eq!(end, End::Close(4403));
    let published = publish(&server, "chat.d", 1).await;
    assert_eq!(
        seq(&kept.next_event().await),
        published,
        "the others stream on"
    );
    let (status, answer) = sse_refusal(&server, &format!("topics/chat.d?token={bad}"), &[]).await;
    assert_eq!((status, answer["reason"].as_str()), (401, Some("revoked")));
}
