//! The wire contract of `PROTOCOL.md`: the event envelope and how it is framed
//! on each transport.
//!
//! An event's `data` is serialized to JSON once, when the event is produced;
//! only the `{"seq","ts","data"}` envelope is written per connection, because
//! `ts` is stamped when the writer takes the event. This module owns the exact
//! bytes a client parses; it knows nothing of queues or sockets.

use std::time::{SystemTime, UNIX_EPOCH};

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
    /// The payload, already serialized as one line of JSON.
    pub data: Bytes,
}

impl Event {
    /// Bytes this event is charged against queue and batch limits.
    pub fn cost(&self) -> usize {
        self.data.len() + ENVELOPE_ALLOWANCE
    }
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
    /// Appends `event`, handed to the writer at `ts` (µs since the Unix
    /// epoch), to `buf` in this framing.
    pub fn encode(self, event: &Event, ts: u64, buf: &mut BytesMut) {
        match self {
            Framing::Sse => {
                buf.put_slice(b"id: ");
                put_u64(buf, event.seq);
                buf.put_slice(b"\ndata: ");
                encode_envelope(event, ts, buf);
                buf.put_slice(b"\n\n");
            }
            Framing::WebSocket => encode_envelope(event, ts, buf),
        }
    }
}

/// Appends the JSON object `{"seq":…,"ts":…,"data":…}` to `buf`.
fn encode_envelope(event: &Event, ts: u64, buf: &mut BytesMut) {
    buf.put_slice(b"{\"seq\":");
    put_u64(buf, event.seq);
    buf.put_slice(b",\"ts\":");
    put_u64(buf, ts);
    buf.put_slice(b",\"data\":");
    buf.put_slice(&event.data);
    buf.put_u8(b'}');
}

fn put_u64(buf: &mut BytesMut, n: u64) {
    buf.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The server's wall clock in microseconds since the Unix epoch (`ts`).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Serializes `value` as one line of JSON, ready to be an event's `data`.
pub fn json_data<T: serde::Serialize + ?Sized>(value: &T) -> Bytes {
    // Serializing plain data (strings, maps of strings) into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(value).expect("in-memory JSON serialization"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            seq: 7,
            data: json_data("hi\nthere"),
        }
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
    fn now_micros_is_after_2020_and_fits_a_javascript_number() {
        let ts = now_micros();
        assert!(ts > 1_577_836_800_000_000);
        assert!(ts < (1u64 << 53));
    }
}
