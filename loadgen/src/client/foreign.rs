//! A foreign target's side of a virtual client: the request each client
//! sends ([`ForeignPath::request`]: its URL, headers, body and WebSocket
//! frames with the client's values put in), and what one OpenAI-style
//! request measured ([`Generation`]: time to first token, the gaps between
//! tokens, the decode rate). The client loop itself is the same for every
//! target (`super::VirtualClient`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::request::{Request, path_of};
use crate::scenario::target::{Origin, TargetSpec};
use crate::scenario::template::Values;

/// What clients of a foreign target stream: the target and the run's
/// topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignPath {
    /// The target, validated.
    pub spec: TargetSpec,
    /// What `{topic}` is.
    pub topic: String,
    /// `openai`: the time between a client's requests on its open-model
    /// schedule; `None` sends them back to back.
    pub request_interval: Option<Duration>,
}

impl ForeignPath {
    /// The request client `client` sends; `last_event_id` resumes an SSE
    /// stream after the last event it received; `token` is the client's
    /// token (its minted JWT, or the run's `--token`): put wherever the
    /// target says `{token}`, and sent as the bearer token to a `/path`
    /// target (this project's server), not to a server the URL names.
    pub fn request(
        &self,
        client: usize,
        last_event_id: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Request {
        let client = client.to_string();
        let values = Values {
            topic: &self.topic,
            client: &client,
            token: token.unwrap_or_default(),
            ..Values::default()
        };
        let spec = &self.spec;
        Request {
            method: spec.request_method.clone(),
            path: path_of(&spec.subscribe_url.expand(&values)),
            headers: (spec.headers.iter())
                .map(|(name, value)| (name.clone(), value.expand(&values)))
                .collect(),
            body: spec.request_body.as_ref().map(|body| body.expand(&values)),
            token: token
                .filter(|_| spec.origin == Origin::Relative)
                .map(str::to_owned),
            last_event_id,
            subprotocols: spec.ws_subprotocols.clone(),
            on_open: spec.ws_on_open.iter().map(|f| f.expand(&values)).collect(),
        }
    }
}

/// What one OpenAI-style request has delivered so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Generation {
    /// When the first content piece arrived, µs since the Unix epoch.
    first_us: Option<u64>,
    /// When the last one arrived.
    last_us: u64,
    /// When the server wrote the last one (its `ts`), if the chunks say.
    last_written_us: Option<u64>,
    /// Content pieces received.
    pieces: u64,
    /// `usage.completion_tokens`, if the server sent it.
    usage: Option<u64>,
}

/// What a content piece measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The first: time to first token, µs after the request.
    First {
        /// µs from the request (its intended time) to the piece.
        ttft_us: u64,
    },
    /// A later one: µs since the piece before it.
    Next {
        /// The inter-token latency.
        itl_us: u64,
        /// The same gap as the server wrote it (`ts` − the `ts` before),
        /// when both pieces said when they were written.
        written_us: Option<u64>,
    },
}

impl Generation {
    /// A content piece received at `received_us` of a request made at
    /// `requested_us`, written at `written_us` if the chunk says (all µs
    /// since the Unix epoch).
    pub fn piece(&mut self, requested_us: u64, received_us: u64, written_us: Option<u64>) -> Piece {
        self.pieces += 1;
        let previous = std::mem::replace(&mut self.last_us, received_us);
        let previous_written = std::mem::replace(&mut self.last_written_us, written_us);
        match self.first_us {
            None => {
                self.first_us = Some(received_us);
                Piece::First {
                    ttft_us: received_us.saturating_sub(requested_us),
                }
            }
            Some(_) => Piece::Next {
                itl_us: received_us.saturating_sub(previous),
                written_us: previous_written
                    .zip(written_us)
                    .map(|(before, now)| now.saturating_sub(before)),
            },
        }
    }

    /// The output token count the server reported.
    pub fn usage(&mut self, completion_tokens: u64) {
        self.usage = Some(completion_tokens);
    }

    /// The output tokens: the server's count if it sent one, else the
    /// content pieces.
    pub fn tokens(&self) -> u64 {
        self.usage.unwrap_or(self.pieces)
    }

    /// µs per output token after the first (the decode time, first piece
    /// to last, over the tokens after the first); `None` under two tokens.
    pub fn time_per_token_us(&self) -> Option<u64> {
        let first = self.first_us?;
        let after_first = self.tokens().checked_sub(1).filter(|&n| n > 0)?;
        (self.pieces > 1).then(|| (self.last_us - first) / after_first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::target::RawTarget;

    fn path(toml_text: &str) -> ForeignPath {
        let raw: RawTarget = toml::from_str(toml_text).unwrap();
        ForeignPath {
            spec: raw.validate(false).unwrap(),
            topic: "sg-run-1".to_owned(),
            request_interval: None,
        }
    }

    #[test]
    fn each_client_asks_with_its_own_values() {
        let hub = path(
            r#"
subscribe_url = "https://hub.example/topics/{topic}/events?client={client}&jwt={token}"
headers = { "X-Client" = "c{{client}}", "X-Token" = "Bearer {{token}}" }
"#,
        );
        assert!(hub.spec.uses_token());
        let request = hub.request(7, Some(b"41".to_vec()), Some("tok"));
        assert_eq!(request.path, "/topics/sg-run-1/events?client=7&jwt=tok");
        assert_eq!(
            request.headers,
            [
                ("X-Client".to_owned(), "c7".to_owned()),
                ("X-Token".to_owned(), "Bearer tok".to_owned())
            ]
        );
        assert_eq!(request.last_event_id.as_deref(), Some(&b"41"[..]));
        assert_eq!(request.token, None, "no --token to a server the URL names");
        let local = path("subscribe_url = \"/sse/topics/{topic}\"");
        let request = local.request(0, None, Some("tok"));
        assert_eq!(
            (request.path.as_str(), request.token.as_deref()),
            ("/sse/topics/sg-run-1", Some("tok"))
        );
        let llm = path(
            r#"
subscribe_url = "http://127.0.0.1:8000/v1/chat/completions"
format = "openai"
request_body = '{"model":"m","stream":true,"user":"{{client}}"}'
"#,
        );
        let request = llm.request(3, None, None);
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.body.as_deref(),
            Some(r#"{"model":"m","stream":true,"user":"3"}"#)
        );
    }

    #[test]
    fn a_generation_measures_first_token_gaps_and_rate() {
        let mut generation = Generation::default();
        assert_eq!(
            generation.piece(1_000, 201_000, Some(200_500)),
            Piece::First { ttft_us: 200_000 }
        );
        assert_eq!(
            generation.piece(1_000, 221_000, Some(220_000)),
            Piece::Next {
                itl_us: 20_000,
                written_us: Some(19_500)
            }
        );
        assert_eq!(
            generation.piece(1_000, 241_000, None),
            Piece::Next {
                itl_us: 20_000,
                written_us: None
            }
        );
        assert_eq!(generation.tokens(), 3);
        assert_eq!(generation.time_per_token_us(), Some(20_000));
        generation.usage(5);
        assert_eq!(
            (generation.tokens(), generation.time_per_token_us()),
            (5, Some(10_000))
        );
        let mut one = Generation::default();
        one.piece(0, 10, None);
        assert_eq!(one.time_per_token_us(), None);
    }
}
