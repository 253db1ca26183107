//! `POST /v1/chat/completions` with `"stream": true`: the token source
//! (`source::tokens`) served as an OpenAI-compatible chat completion
//! stream, so that any OpenAI client library, and the load generator's
//! `openai` format, can be tried against this server. Time to first token,
//! tokens per second and their count come from the request (`ttft_ms`,
//! `tps`, `jitter_ms` beside OpenAI's `max_tokens`: docs/protocol.md). The
//! answer is SSE `data:` lines of `chat.completion.chunk` objects (the
//! role with the first token, one content piece per token, the finish
//! reason, the usage if `stream_options.include_usage`), ending with
//! `data: [DONE]`; each chunk also carries `ts`, when it was written (µs
//! since the Unix epoch), and each token's chunk of a paced stream `sched`,
//! when its pacer meant it to go out, as this protocol's events do. A request that does not ask for a stream is `400`: only
//! streaming is served.
//!
//! The stream is admitted under the connection limit like any other and
//! ends on shutdown; the source fills a bounded queue, paused while the
//! client does not read, and this body drains it in batches, one write per
//! batch.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::tokens::{MAX_DELAY_MS, MAX_TOKENS};
use crate::config::Config;
use crate::connections::StreamGuard;
use crate::disconnect::Disconnect;
use crate::error::ApiError;
use crate::metrics::TransportKind;
use crate::protocol::{Item, now_micros};
use crate::queue::{self, Received, Receiver};
use crate::source::Source;
use crate::source::tokens::Tokens;
use crate::state::AppState;

/// Tokens (queue items) taken and written at once.
const BATCH: usize = 256;

/// A chat completion request: what of OpenAI's body this server reads,
/// and its own extra fields. Unknown fields (`temperature`, …) are
/// accepted and ignored, as OpenAI-compatible servers do.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    /// Must be `true`.
    #[serde(default)]
    stream: bool,
    /// Echoed in every chunk.
    #[serde(default = "default_model")]
    model: String,
    /// Their words are the prompt tokens `usage` reports.
    #[serde(default)]
    messages: Vec<ChatMessage>,
    /// Tokens to generate (OpenAI's older name).
    max_tokens: Option<u64>,
    /// Tokens to generate (OpenAI's newer name; wins over `max_tokens`).
    max_completion_tokens: Option<u64>,
    /// `{"include_usage": true}` adds the usage chunk before `[DONE]`.
    stream_options: Option<StreamOptions>,
    /// Delay before the first token, ms (default 200).
    ttft_ms: Option<u64>,
    /// Tokens per second after the first (default 50; 0: as fast as read).
    tps: Option<u64>,
    /// Up to this many ms of random delay added to `ttft_ms` (default 0).
    jitter_ms: Option<u64>,
}

/// One message of the conversation; only its text counts.
#[derive(Debug, Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

fn default_model() -> String {
    "streamgauge-tokens".to_owned()
}

/// A parameter in `range`, or a 400 naming it.
fn within(name: &str, value: Option<u64>, default: u64, max: u64) -> Result<u64, ApiError> {
    let value = value.unwrap_or(default);
    if value > max {
        return Err(ApiError::bad_param(
            name,
            format!("at most {max}, not {value}"),
        ));
    }
    Ok(value)
}

impl ChatRequest {
    /// The token source this request asks for, within the server's
    /// `max_rate` and with its pacer's test-only stall.
    fn tokens(&self, config: &Config) -> Result<Tokens, ApiError> {
        let max_rate = config.max_rate;
        let count = self.max_completion_tokens.or(self.max_tokens);
        let tokens = within("max_tokens", count, 100, MAX_TOKENS)?;
        if tokens == 0 {
            return Err(ApiError::bad_param("max_tokens", "at least 1"));
        }
        Ok(Tokens {
            ttft: Duration::from_millis(within("ttft_ms", self.ttft_ms, 200, MAX_DELAY_MS)?),
            jitter: Duration::from_millis(within("jitter_ms", self.jitter_ms, 0, MAX_DELAY_MS)?),
            tps: within("tps", self.tps, 50, max_rate)?,
            tokens,
            stall: config.inject_pacer_stall,
        })
    }

    /// Words in the messages' text: the prompt tokens `usage` reports.
    fn prompt_tokens(&self) -> u64 {
        let words = |text: &str| text.split_whitespace().count() as u64;
        self.messages
            .iter()
            .map(|m| match &m.content {
                serde_json::Value::String(text) => words(text),
                other => words(&other.to_string()),
            })
            .sum()
    }
}

/// The chat completion's route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(completions))
}

async fn completions(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: ChatRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_param("body", format!("not a chat completion request: {e}")))?;
    if !request.stream {
        return Err(ApiError::bad_param(
            "stream",
            "only streaming is served: set \"stream\": true",
        ));
    }
    let source = request.tokens(&state.config)?;
    let guard = state
        .connections
        .admit(TransportKind::Sse, None)
        .map_err(|limit| state.over_capacity(limit))?;
    let (tx, rx) = queue::channel(state.config.queue);
    guard.watch_queue(rx.probe());
    let chunks = Chunks {
        id: format!("chatcmpl-{:016x}", fastrand::u64(..)),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: serde_json::to_string(&request.model).unwrap_or_else(|_| "\"\"".to_owned()),
        usage: request
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
            .then(|| request.prompt_tokens()),
        sent: 0,
        ts: 0,
    };
    let stream = Completion {
        source: Some(Box::pin(source.run(tx))),
        queue: rx,
        chunks,
        guard: Some(guard),
        shutdown: state.shutdown.token().clone(),
        items: Vec::with_capacity(BATCH),
    };
    let body = Body::from_stream(futures_util::stream::unfold(stream, Completion::next));
    let headers = [
        (CONTENT_TYPE, "text/event-stream"),
        (CACHE_CONTROL, "no-cache"),
    ];
    Ok((headers, [("x-accel-buffering", "no")], body).into_response())
}

/// Writes the chunks of one completion.
#[derive(Debug)]
struct Chunks {
    /// `chatcmpl-…`, the same in every chunk.
    id: String,
    /// Unix seconds, the same in every chunk.
    created: u64,
    /// The model's name, as JSON.
    model: String,
    /// Prompt tokens, when the usage chunk is asked for.
    usage: Option<u64>,
    /// Content chunks written.
    sent: u64,
    /// When the batch being written was taken, µs since the Unix epoch:
    /// every chunk's `ts`, as the protocol's events carry theirs.
    ts: u64,
}

impl Chunks {
    /// Appends one `data:` line holding a chunk whose `choices` are
    /// `choices` (JSON), and `extra` fields after them; a token's chunk
    /// also carries its `sched` (paced tokens).
    fn push(&self, out: &mut Vec<u8>, sched: Option<u64>, choices: &str, extra: &str) {
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b"data: {\"id\":\"");
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":");
        out.extend_from_slice(number.format(self.created).as_bytes());
        out.extend_from_slice(b",\"model\":");
        out.extend_from_slice(self.model.as_bytes());
        out.extend_from_slice(b",\"ts\":");
        out.extend_from_slice(number.format(self.ts).as_bytes());
        if let Some(sched) = sched {
            out.extend_from_slice(b",\"sched\":");
            out.extend_from_slice(number.format(sched).as_bytes());
        }
        out.extend_from_slice(b",\"choices\":");
        out.extend_from_slice(choices.as_bytes());
        out.extend_from_slice(extra.as_bytes());
        out.extend_from_slice(b"}\n\n");
    }

    /// Appends the chunk of one token, whose event data is
    /// `{"token":"…"}`: its string becomes the content as it is (already
    /// JSON); the first comes with the assistant's role.
    fn token(&mut self, out: &mut Vec<u8>, data: &[u8], sched: Option<u64>) {
        let content = data
            .strip_prefix(b"{\"token\":")
            .and_then(|rest| rest.strip_suffix(b"}"))
            .map_or_else(
                || serde_json::to_string(&String::from_utf8_lossy(data)).unwrap_or_default(),
                |json| String::from_utf8_lossy(json).into_owned(),
            );
        let role = if self.sent == 0 {
            "\"role\":\"assistant\","
        } else {
            ""
        };
        let choices = format!(
            "[{{\"index\":0,\"delta\":{{{role}\"content\":{content}}},\"finish_reason\":null}}]"
        );
        self.push(out, sched, &choices, "");
        self.sent += 1;
    }

    /// Appends the end: the finish reason (`length`: the stream stops at
    /// `max_tokens`), the usage if asked for, and `[DONE]`.
    fn end(&self, out: &mut Vec<u8>) {
        self.push(
            out,
            None,
            "[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]",
            "",
        );
        if let Some(prompt) = self.usage {
            let usage = format!(
                ",\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{},\"total_tokens\":{}}}",
                self.sent,
                prompt + self.sent
            );
            self.push(out, None, "[]", &usage);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// The source's future, polled beside the writes.
type Producing = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One streaming completion: the source filling the queue, and the body
/// draining it.
struct Completion {
    /// The token source, until it is done (it then drops its sender, and
    /// the queue ends once drained).
    source: Option<Producing>,
    queue: Receiver,
    chunks: Chunks,
    /// The stream's admission; dropped with the body (a client that left)
    /// or finished at the end.
    guard: Option<StreamGuard>,
    shutdown: CancellationToken,
    /// Queue items taken at once, reused.
    items: Vec<Item>,
}

impl Completion {
    /// The next piece of the body: a batch of chunks, the end, or nothing
    /// more (done, or the server shutting down).
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        self.guard.as_ref()?;
        let received = loop {
            let Self {
                source,
                queue,
                shutdown,
                items,
                ..
            } = &mut self;
            let producing = async {
                match source.as_mut() {
                    Some(source) => source.await,
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                () = shutdown.cancelled() => None,
                () = producing => Some(None),
                received = queue.recv_batch(items, BATCH, usize::MAX) => Some(Some(received)),
            };
            match step {
                None => {
                    self.guard.take()?.finish(Disconnect::Shutdown);
                    return None;
                }
                // The source is done: the queue ends once drained.
                Some(None) => self.source = None,
                Some(Some(received)) => break received,
            }
        };
        let mut out = Vec::new();
        self.chunks.ts = now_micros();
        match received {
            Received::Items => {
                for item in self.items.drain(..) {
                    if let Item::Event(event) = item {
                        self.chunks
                            .token(&mut out, &event.data, event.stamp.sched());
                    }
                }
                if let Some(guard) = &self.guard {
                    guard.batch_counts().record(1, out.len());
                }
            }
            Received::End(reason) => {
                self.chunks.end(&mut out);
                self.guard.take()?.finish(reason);
            }
        }
        Some((Ok(Bytes::from(out)), self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(usage: Option<u64>) -> Chunks {
        Chunks {
            id: "chatcmpl-1".to_owned(),
            created: 7,
            model: "\"m\"".to_owned(),
            usage,
            sent: 0,
            ts: 5,
        }
    }

    #[test]
    fn chunks_are_openai_json_and_the_stream_ends_with_done() {
        let mut chunks = chunks(Some(3));
        let mut out = Vec::new();
        chunks.token(&mut out, br#"{"token":" the"}"#, Some(3));
        chunks.token(&mut out, br#"{"token":"\"q\""}"#, None);
        chunks.end(&mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split("\n\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[4], "data: [DONE]");
        let json: Vec<serde_json::Value> = lines[..4]
            .iter()
            .map(|l| serde_json::from_str(l.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        assert_eq!(json[0]["object"], "chat.completion.chunk");
        assert_eq!(json[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(json[0]["choices"][0]["delta"]["content"], " the");
        assert_eq!(
            (json[0]["ts"].as_u64(), json[0]["sched"].as_u64()),
            (Some(5), Some(3))
        );
        assert!(json[1].get("sched").is_none() && json[2].get("sched").is_none());
        assert!(json[1]["choices"][0]["delta"].get("role").is_none());
        assert_eq!(json[1]["choices"][0]["delta"]["content"], "\"q\"");
        assert_eq!(json[2]["choices"][0]["finish_reason"], "length");
        assert_eq!(json[3]["usage"]["completion_tokens"], 2);
        assert_eq!(json[3]["usage"]["total_tokens"], 5);
        assert!(
            json.iter()
                .all(|c| c["id"] == "chatcmpl-1" && c["model"] == "m")
        );
    }

    #[test]
    fn requests_name_what_is_wrong() {
        let parse = |body: &str| serde_json::from_str::<ChatRequest>(body).unwrap();
        let request = parse(
            r#"{"stream":true,"max_tokens":3,"ttft_ms":0,"tps":10,"messages":[{"role":"user","content":"two words"}],"temperature":0.2}"#,
        );
        let config = Config {
            max_rate: 1000,
            ..Config::default()
        };
        let tokens = request.tokens(&config).unwrap();
        assert_eq!(
            (tokens.tokens, tokens.tps, tokens.ttft),
            (3, 10, Duration::ZERO)
        );
        assert_eq!(request.prompt_tokens(), 2);
        let fast = parse(r#"{"stream":true,"tps":5000}"#);
        assert!(
            fast.tokens(&config)
                .unwrap_err()
                .to_string()
                .contains("`tps`")
        );
        let none = parse(r#"{"stream":true,"max_completion_tokens":0}"#);
        assert!(
            none.tokens(&config)
                .unwrap_err()
                .to_string()
                .contains("`max_tokens`")
        );
    }
}
