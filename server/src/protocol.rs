//! The wire contract of `docs/protocol.md`: the event envelope and how it is framed
//! on each transport.
//!
//! An event's `data` is serialized to JSON once, when the event is produced;
//! only the `{"seq","ts","data"}` envelope is written per connection, because
//! `ts` is stamped when the writer takes the event. A paced event also
//! carries `sched`, when its source's pacer meant it to go out, and a topic
//! event `pts`, when its publish was accepted. This module owns the exact
//! bytes a client parses; it knows nothing of queues or sockets.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes a queued event is charged on top of its payload: the envelope and
/// the framing around it, plus the queue slot itself.
pub const ENVELOPE_ALLOWANCE: usize = 64;

/// The SSE keep-alive: a comment line, ignored by every SSE parser.
pub const SSE_KEEPALIVE: &[u8] = b": ping\n\n";

/// One event as it waits in a connection's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Per-stream sequence number (`seq` on the wire).
    pub seq: u64,
    /// The time the event carries besides `ts`, if any.
    pub stamp: Stamp,
    /// The payload, already serialized as one line of JSON.
    pub data: Bytes,
}

/// The time an event carries besides `ts` (µs since the Unix epoch, the
/// clock of `ts`): when it was published, or when it was due. One or the
/// other, never both, so an event is no larger for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Neither (replay, unpaced streams).
    None,
    /// Topic events: when the server accepted the publish (`pts`).
    Pts(u64),
    /// Paced ticker and token events: when the pacer intended the event
    /// (`sched`).
    Sched(u64),
}

impl Stamp {
    /// The `sched` it holds, if it is one.
    pub fn sched(self) -> Option<u64> {
        match self {
            Stamp::Sched(sched) => Some(sched),
            Stamp::None | Stamp::Pts(_) => None,
        }
    }
}

/// Why a subscriber is told of a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// Events `from..=to` were deleted by retention before this subscriber
    /// read them.
    Retention,
    /// The subscriber resumed from a `since` beyond the topic's head: the
    /// sequence numbers `from..=to` do not exist yet, and the stream
    /// continues from `from` (the client should reset its cursor to
    /// `from - 1`).
    BeyondHead,
    /// An operator deleted the topic: `from..=to` (its whole history) no
    /// longer exists, the stream ends, and a later publish starts the topic
    /// again at `seq` 1.
    Deleted,
}

impl GapReason {
    /// The `reason` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Retention => "retention",
            GapReason::BeyondHead => "beyond_head",
            GapReason::Deleted => "deleted",
        }
    }
}

/// A gap notice: a range this subscriber will not receive, announced before
/// the stream continues. It carries no `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// First sequence number missing.
    pub from: u64,
    /// Last sequence number missing.
    pub to: u64,
    /// Why.
    pub reason: GapReason,
}

/// What a connection's queue holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An event.
    Event(Event),
    /// A gap notice.
    Gap(Gap),
}

impl Item {
    /// Bytes this item is charged against queue and batch limits.
    pub fn cost(&self) -> usize {
        match self {
            Item::Event(event) => event.data.len() + ENVELOPE_ALLOWANCE,
            Item::Gap(_) => ENVELOPE_ALLOWANCE,
        }
    }
}

/// An SSE `end` notice, `event: end` with
/// `{"end":{"message":…,"reason":…}}`: why the server ends a stream that
/// should have gone on, sent just before the body ends.
pub fn sse_end_notice(reason: &str, message: &str) -> Bytes {
    let data = json_data(&serde_json::json!({
        "end": { "reason": reason, "message": message }
    }));
    let mut buf = BytesMut::with_capacity(data.len() + 24);
    put_sse_named(&mut buf, b"end", |buf| buf.put_slice(&data));
    buf.freeze()
}

/// Appends an SSE event named `name` (`event: name`) whose one `data:` line
/// `put_data` appends.
fn put_sse_named(buf: &mut BytesMut, name: &[u8], put_data: impl FnOnce(&mut BytesMut)) {
    buf.put_slice(b"event: ");
    buf.put_slice(name);
    buf.put_slice(b"\ndata: ");
    put_data(buf);
    buf.put_slice(b"\n\n");
}

/// How events are framed on a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `id: <seq>\ndata: <json>\n\n`, batches concatenated into one chunk.
    Sse,
    /// One JSON object per text frame.
    WebSocket,
}

impl Framing {
    /// Appends `item`, handed to the writer at `ts` (µs since the Unix
    /// epoch), to `buf` in this framing.
    pub fn encode(self, item: &Item, ts: u64, buf: &mut BytesMut) {
        match (self, item) {
            (Framing::Sse, Item::Event(event)) => {
                buf.put_slice(b"id: ");
                put_u64(buf, event.seq);
                buf.put_slice(b"\ndata: ");
                encode_event(event, ts, buf);
                buf.put_slice(b"\n\n");
            }
            (Framing::Sse, Item::Gap(gap)) => {
                put_sse_named(buf, b"gap", |buf| encode_gap(gap, buf))
            }
            (Framing::WebSocket, Item::Event(event)) => encode_event(event, ts, buf),
            (Framing::WebSocket, Item::Gap(gap)) => encode_gap(gap, buf),
        }
    }
}

/// Appends the JSON object `{"seq":…,"ts":…[,"sched":…|,"pts":…],"data":…}`
/// to `buf`.
fn encode_event(event: &Event, ts: u64, buf: &mut BytesMut) {
    buf.put_slice(b"{\"seq\":");
    put_u64(buf, event.seq);
    buf.put_slice(b",\"ts\":");
    put_u64(buf, ts);
    match event.stamp {
        Stamp::None => {}
        Stamp::Pts(pts) => {
            buf.put_slice(b",\"pts\":");
            put_u64(buf, pts);
        }
        Stamp::Sched(sched) => {
            buf.put_slice(b",\"sched\":");
            put_u64(buf, sched);
        }
    }
    buf.put_slice(b",\"data\":");
    buf.put_slice(&event.data);
    buf.put_u8(b'}');
}

/// Appends `{"gap":{"from":…,"to":…,"reason":"…"}}` to `buf`.
fn encode_gap(gap: &Gap, buf: &mut BytesMut) {
    buf.put_slice(b"{\"gap\":{\"from\":");
    put_u64(buf, gap.from);
    buf.put_slice(b",\"to\":");
    put_u64(buf, gap.to);
    buf.put_slice(b",\"reason\":\"");
    buf.put_slice(gap.reason.as_str().as_bytes());
    buf.put_slice(b"\"}}");
}

fn put_u64(buf: &mut BytesMut, n: u64) {
    buf.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The server's wall clock in microseconds since the Unix epoch (`ts`).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, micros)
}

/// `duration` in whole microseconds, saturating at `u64::MAX`.
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A topic or wallet name: 1 to 200 characters from `A-Z a-z 0-9 . _ - :`.
///
/// Shared: a clone is a pointer, so what keeps a subscription's topic (its
/// source, its hub membership, its connection entry, its publisher) holds
/// one copy of the name between them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(Arc<str>);

/// Longest topic or wallet name.
pub const MAX_NAME_LEN: usize = 200;

impl Name {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// What is wrong with it, in words fit for an error response.
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(format!(
                "must be 1 to {MAX_NAME_LEN} characters, not {}",
                name.chars().count()
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
        match name.chars().find(|&c| !allowed(c)) {
            Some(c) => Err(format!("{c:?} is not allowed (only A-Z a-z 0-9 . _ - :)")),
            None => Ok(Self(Arc::from(name))),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serializes `value` as one line of JSON, ready to be an event's `data`.
pub fn json_data<T: serde::Serialize + ?Sized>(value: &T) -> Bytes {
    // Serializing plain data (strings, maps of strings) into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(value).expect("in-memory JSON serialization"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Item {
        Item::Event(Event {
            seq: 7,
            stamp: Stamp::None,
            data: json_data("hi\nthere"),
        })
    }

    #[test]
    fn sse_frame_is_one_event_with_id_and_single_line_data() {
        let mut buf = BytesMut::new();
        Framing::Sse.encode(&event(), 1_700_000_000_000_000, &mut buf);
        assert_eq!(
            &buf[..],
            b"id: 7\ndata: {\"seq\":7,\"ts\":1700000000000000,\"data\":\"hi\\nthere\"}\n\n"
        );
    }

    #[test]
    fn websocket_frame_is_the_bare_json_object() {
        let mut buf = BytesMut::new();
        Framing::WebSocket.encode(&event(), 5, &mut buf);
        let parsed: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"seq": 7, "ts": 5, "data": "hi\nthere"})
        );
    }

    #[test]
    fn topic_events_carry_pts() {
        let item = Item::Event(Event {
            seq: 1,
            stamp: Stamp::Pts(4),
            data: json_data(&serde_json::json!({"a": 1})),
        });
        let mut buf = BytesMut::new();
        Framing::WebSocket.encode(&item, 5, &mut buf);
        assert_eq!(&buf[..], br#"{"seq":1,"ts":5,"pts":4,"data":{"a":1}}"#);
    }

    #[test]
    fn paced_events_carry_sched_beside_ts() {
        let item = Item::Event(Event {
            seq: 2,
            stamp: Stamp::Sched(3),
            data: json_data("x"),
        });
        let mut buf = BytesMut::new();
        Framing::Sse.encode(&item, 5, &mut buf);
        assert_eq!(
            &buf[..],
            b"id: 2\ndata: {\"seq\":2,\"ts\":5,\"sched\":3,\"data\":\"x\"}\n\n"
        );
    }

    #[test]
    fn gap_notices_have_no_seq_and_an_sse_event_name() {
        let gap = Item::Gap(Gap {
            from: 3,
            to: 9,
            reason: GapReason::Retention,
        });
        let mut buf = BytesMut::new();
        Framing::Sse.encode(&gap, 5, &mut buf);
        assert_eq!(
            &buf[..],
            b"event: gap\ndata: {\"gap\":{\"from\":3,\"to\":9,\"reason\":\"retention\"}}\n\n"
        );
        buf.clear();
        Framing::WebSocket.encode(&gap, 5, &mut buf);
        let parsed: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"gap": {"from": 3, "to": 9, "reason": "retention"}})
        );
    }

    #[test]
    fn names_follow_the_protocol_rule() {
        for good in ["a", "prices.BTC-USD", "x:y_z", &"n".repeat(200)] {
            assert!(Name::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", "a?", &"n".repeat(201)] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn now_micros_is_after_2020_and_fits_a_javascript_number() {
        let ts = now_micros();
        assert!(ts > 1_577_836_800_000_000);
        assert!(ts < (1u64 << 53));
    }
}
