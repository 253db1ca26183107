//! What one message of a stream says, by the target's `format`: the SSE
//! `data` of an event (its name filtered) or a WebSocket text frame, read
//! into a [`Message`]. This project's protocol is read as it always was
//! ([`envelope`]); a foreign target's through its JSON pointers
//! ([`pointer`]), as text that is only counted, or as OpenAI chat
//! completion chunks. A message a foreign format cannot read is
//! [`Message::Unparsed`], counted, and the stream goes on. Pure: no I/O.

use std::sync::Arc;

use super::envelope::{self, Envelope};
use super::pointer::{self, Lookup, Read};
use crate::scenario::target::{Format, TargetSpec, TsUnit};

/// One message, as far as measuring goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// An event or notice of this project's protocol.
    Envelope(Envelope),
    /// A foreign JSON message: what its pointers found (the time in µs
    /// since the Unix epoch).
    Found {
        /// The sequence number, if `seq_pointer` is set.
        seq: Option<u64>,
        /// The time, if `ts_pointer` is set.
        ts_us: Option<u64>,
    },
    /// A message counted, nothing read from it (`text`).
    Counted,
    /// An OpenAI chat completion chunk.
    Chunk {
        /// It carries a piece of content (`choices[0].delta.content`, not
        /// empty): a token as the stream delivers them.
        content: bool,
        /// `usage.completion_tokens`, when the server reports it.
        completion_tokens: Option<u64>,
        /// The time `ts_pointer` finds, if it is set (µs since the Unix
        /// epoch): when the server sent the chunk.
        ts_us: Option<u64>,
    },
    /// The end marker: the stream is complete.
    End,
    /// An SSE event whose name the target's filter leaves out.
    Skipped,
    /// A foreign message its format cannot read: not JSON, or without the
    /// field a pointer names.
    Unparsed,
}

/// Reads messages as a target's format says; cheap to share.
#[derive(Debug, Clone, Default)]
pub struct Decoder(Option<Arc<Foreign>>);

/// A foreign target's reading rules.
#[derive(Debug)]
struct Foreign {
    format: Format,
    /// `seq_pointer`'s tokens.
    seq: Option<Vec<String>>,
    /// `ts_pointer`'s tokens.
    ts: Option<Vec<String>>,
    unit: TsUnit,
    /// SSE event names counted (empty: all).
    filter: Vec<String>,
    end_marker: Option<String>,
    /// `openai`: where a chunk's content piece and the output token count
    /// are (made once: tokens are owned strings).
    chunk: [Vec<String>; 2],
}

/// Where an OpenAI chunk's content piece is.
const CONTENT: [&str; 4] = ["choices", "0", "delta", "content"];

/// Where an OpenAI stream's output token count is, when it is sent.
const COMPLETION_TOKENS: [&str; 2] = ["usage", "completion_tokens"];

impl Decoder {
    /// This project's protocol.
    pub fn streamgauge() -> Self {
        Self(None)
    }

    /// The reading rules of `spec`.
    pub fn of(spec: &TargetSpec) -> Self {
        if spec.format == Format::Streamgauge
            && spec.event_filter.is_empty()
            && spec.end_marker.is_none()
        {
            return Self::streamgauge();
        }
        let tokens =
            |p: &Option<crate::scenario::target::Pointer>| p.as_ref().map(|p| p.tokens.clone());
        Self(Some(Arc::new(Foreign {
            format: spec.format,
            seq: tokens(&spec.seq_pointer),
            ts: tokens(&spec.ts_pointer),
            unit: spec.ts_unit,
            filter: spec.event_filter.clone(),
            end_marker: spec.end_marker.clone(),
            chunk: if spec.format == Format::Openai {
                [&CONTENT[..], &COMPLETION_TOKENS[..]]
                    .map(|path| path.iter().map(|t| (*t).to_owned()).collect())
            } else {
                Default::default()
            },
        })))
    }

    /// Whether it reads a foreign format (not this project's protocol).
    pub fn is_foreign(&self) -> bool {
        self.0.is_some()
    }

    /// Reads one message: the SSE event named `event` (`message` for a
    /// WebSocket frame) whose data is `data`.
    ///
    /// # Errors
    ///
    /// This project's protocol only: `data` is not one of its objects (a
    /// protocol error, as it always was). A foreign format never fails: what
    /// it cannot read is [`Message::Unparsed`].
    pub fn decode(&self, event: &[u8], data: &[u8]) -> Result<Message, serde_json::Error> {
        let Some(foreign) = &self.0 else {
            return envelope::parse(data).map(Message::Envelope);
        };
        if !foreign.filter.is_empty() && !foreign.filter.iter().any(|name| name.as_bytes() == event)
        {
            return Ok(Message::Skipped);
        }
        if foreign
            .end_marker
            .as_deref()
            .is_some_and(|end| end.as_bytes() == data.trim_ascii())
        {
            return Ok(Message::End);
        }
        Ok(match foreign.format {
            Format::Streamgauge => Message::Envelope(envelope::parse(data)?),
            Format::Text => Message::Counted,
            Format::Json => foreign.found(data),
            Format::Openai => foreign.chunk(data),
        })
    }
}

impl Foreign {
    /// What the pointers find in `data`.
    fn found(&self, data: &[u8]) -> Message {
        let none: &[String] = &[];
        let lookups = [
            Lookup {
                tokens: self.seq.as_deref().unwrap_or(none),
                read: Read::Integer,
            },
            Lookup {
                tokens: self.ts.as_deref().unwrap_or(none),
                read: Read::Time(self.unit),
            },
        ];
        let Ok([seq, ts_us]) = pointer::find(data, &lookups) else {
            return Message::Unparsed;
        };
        // A pointer not set finds nothing and asks for nothing.
        let (seq, ts_us) = (
            seq.filter(|_| self.seq.is_some()),
            ts_us.filter(|_| self.ts.is_some()),
        );
        if (self.seq.is_some() && seq.is_none()) || (self.ts.is_some() && ts_us.is_none()) {
            return Message::Unparsed;
        }
        Message::Found { seq, ts_us }
    }

    /// An OpenAI chunk: a content piece, the usage figure and the time
    /// `ts_pointer` finds, if any.
    fn chunk(&self, data: &[u8]) -> Message {
        let [content, usage] = &self.chunk;
        let none: &[String] = &[];
        let lookups = [
            Lookup {
                tokens: content,
                read: Read::TextLength,
            },
            Lookup {
                tokens: usage,
                read: Read::Integer,
            },
            Lookup {
                tokens: self.ts.as_deref().unwrap_or(none),
                read: Read::Time(self.unit),
            },
        ];
        match pointer::find(data, &lookups) {
            Ok([length, completion_tokens, ts_us]) => Message::Chunk {
                content: length.is_some_and(|n| n > 0),
                completion_tokens,
                ts_us: ts_us.filter(|_| self.ts.is_some()),
            },
            Err(_) => Message::Unparsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::target::RawTarget;

    fn of(toml_text: &str) -> Decoder {
        let raw: RawTarget = toml::from_str(toml_text).unwrap();
        Decoder::of(&raw.validate(false).unwrap())
    }

    #[test]
    fn this_projects_protocol_is_read_as_it_always_was() {
        let decoder = Decoder::streamgauge();
        let message = decoder.decode(b"message", br#"{"seq":3,"ts":5}"#).unwrap();
        assert!(matches!(message, Message::Envelope(e) if e.seq == Some(3)));
        assert!(decoder.decode(b"message", b"{oops").is_err());
        let same = of("subscribe_url = \"/sse/ticker\"");
        assert!(same.0.is_none(), "no foreign rules: the same path");
    }

    #[test]
    fn json_messages_are_read_through_their_pointers() {
        let decoder = of(r#"
subscribe_url = "/hub"
format = "json"
seq_pointer = "/message/seq"
ts_pointer = "/message/ts_us"
event_filter = ["message", "update"]
"#);
        let found = decoder
            .decode(b"update", br#"{"id":"a7","message":{"seq":4,"ts_us":99}}"#)
            .unwrap();
        assert_eq!(
            found,
            Message::Found {
                seq: Some(4),
                ts_us: Some(99)
            }
        );
        let missing = decoder.decode(b"message", br#"{"id":"a8","message":{"seq":5}}"#);
        assert_eq!(missing.unwrap(), Message::Unparsed);
        assert_eq!(
            decoder.decode(b"message", b"hello").unwrap(),
            Message::Unparsed
        );
        assert_eq!(
            decoder.decode(b"presence", b"{}").unwrap(),
            Message::Skipped
        );
        let counted = of("subscribe_url = \"/x\"\nformat = \"json\"");
        assert_eq!(
            counted.decode(b"message", b"[1]").unwrap(),
            Message::Found {
                seq: None,
                ts_us: None
            }
        );
        assert_eq!(
            counted.decode(b"message", b"[1").unwrap(),
            Message::Unparsed
        );
    }

    #[test]
    fn openai_chunks_are_tokens_until_done() {
        let decoder = of(r#"
subscribe_url = "http://h:1/v1/chat/completions"
format = "openai"
request_body = '{"stream":true}'
"#);
        let read = |data: &str| decoder.decode(b"message", data.as_bytes()).unwrap();
        assert_eq!(
            read(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#),
            Message::Chunk {
                content: false,
                completion_tokens: None,
                ts_us: None
            }
        );
        assert_eq!(
            read(
                r#"{"id":"c","ts":7,"choices":[{"delta":{"content":" the"},"finish_reason":null}]}"#
            ),
            Message::Chunk {
                content: true,
                completion_tokens: None,
                ts_us: None
            }
        );
        assert_eq!(
            read(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":12}}"#),
            Message::Chunk {
                content: false,
                completion_tokens: Some(12),
                ts_us: None
            }
        );
        let timed = of(r#"
subscribe_url = "/v1/chat/completions"
format = "openai"
ts_pointer = "/ts"
request_body = '{"stream":true}'
"#);
        assert_eq!(
            timed
                .decode(
                    b"message",
                    br#"{"ts":99,"choices":[{"delta":{"content":"a"}}]}"#
                )
                .unwrap(),
            Message::Chunk {
                content: true,
                completion_tokens: None,
                ts_us: Some(99)
            }
        );
        assert_eq!(read(" [DONE]"), Message::End);
        assert_eq!(read("garbage"), Message::Unparsed);
        let text = decoder_text();
        assert_eq!(text.decode(b"message", b"hi").unwrap(), Message::Counted);
        assert_eq!(text.decode(b"message", b"bye").unwrap(), Message::End);
    }

    fn decoder_text() -> Decoder {
        of("subscribe_url = \"ws://h:1/chat\"\nformat = \"text\"\nend_marker = \"bye\"")
    }
}
