//! Fixtures shared by the benches, so that the timed (criterion) and the
//! counted (gungraun, `instructions`) cases run on the same inputs: the
//! event payloads, the SSE stream as the server writes it (plain and HTTP
//! chunked), a batching writer over a pre-filled queue and its draining,
//! hub members and commit groups, and a current-thread runtime.
//!
//! Each bench includes it with `mod support;` and uses part of it.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use streamgauge_server::hub::{Hub, Membership};
use streamgauge_server::protocol::{Event, Framing, Item, Name, Stamp, json_data};
use streamgauge_server::queue::{self, Limits, Receiver};
use streamgauge_server::writer::{BatchLimits, Writer};
use tokio::runtime::Runtime;

/// A current-thread runtime that has already run once, so that its
/// first-use costs are not measured.
pub(crate) fn runtime() -> Runtime {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {});
    runtime
}

// ---------------------------------------------------------------------------
// The server's events: framing one, and the batching writer.

/// The event payload of the server cases: a 32-byte JSON string.
pub(crate) fn payload() -> Bytes {
    json_data(&"x".repeat(32))
}

/// The `seq` of the event the encode cases frame.
pub(crate) const ENCODE_SEQ: u64 = 123_456;

/// The `ts` the encode cases stamp it with (µs since the Unix epoch).
pub(crate) const ENCODE_TS: u64 = 1_795_000_000_000_000;

/// The `sched` of the paced encode cases: a little before [`ENCODE_TS`].
pub(crate) const ENCODE_SCHED: u64 = ENCODE_TS - 87;

/// The event the encode cases frame: [`ENCODE_SEQ`], carrying [`payload`]
/// and `sched` (a paced event) if given.
pub(crate) fn encode_event(sched: Option<u64>) -> Item {
    Item::Event(Event {
        seq: ENCODE_SEQ,
        stamp: sched.map_or(Stamp::None, Stamp::Sched),
        data: payload(),
    })
}

/// Events pushed through the writer per case.
pub(crate) const WRITER_EVENTS: u64 = 4096;

/// A writer for `framing` with batches of at most `batch` events, over a
/// queue already holding [`WRITER_EVENTS`] events of `data` (its sender
/// gone, so the writer ends once they are drained).
pub(crate) fn prefilled_writer(framing: Framing, batch: usize, data: &Bytes) -> Writer {
    let (tx, rx) = queue::channel(Limits {
        max_events: WRITER_EVENTS as usize,
        max_bytes: usize::MAX,
    });
    for seq in 1..=WRITER_EVENTS {
        let event = Item::Event(Event {
            seq,
            stamp: Stamp::None,
            data: data.clone(),
        });
        tx.try_push(event).expect("the queue holds every event");
    }
    drop(tx);
    let limits = BatchLimits {
        max_events: batch,
        max_bytes: usize::MAX,
    };
    Writer::new(rx, framing, limits)
}

/// What a writer delivered: batches, events and bytes.
pub(crate) struct Written {
    pub(crate) batches: usize,
    pub(crate) events: usize,
    pub(crate) bytes: usize,
}

/// Drains `writer` batch by batch, touching each frame as the WebSocket
/// transport does; returns the writer (for the caller to drop where it is
/// not measured) and what it delivered.
pub(crate) async fn drain(mut writer: Writer, framing: Framing) -> (Writer, Written) {
    let mut written = Written {
        batches: 0,
        events: 0,
        bytes: 0,
    };
    while let Ok(batch) = writer.next_batch().await {
        if framing == Framing::WebSocket {
            batch.frames().for_each(|frame| {
                black_box(frame);
            });
        }
        written.batches += 1;
        written.events += batch.events();
        written.bytes += batch.bytes.len();
    }
    (writer, written)
}

// ---------------------------------------------------------------------------
// The SSE stream the load generator parses.

/// Events in the parsed streams.
pub(crate) const STREAM_EVENTS: u64 = 10_000;

/// A `ts` of the streams (µs since the Unix epoch): [`sse_events`] stamps
/// event `seq` with it plus `seq`.
pub(crate) const STREAM_TS: u64 = 1_795_427_796_037_182;

/// Event `seq` stamped `ts`, as the server writes its JSON.
pub(crate) fn event_json(seq: u64, ts: u64) -> String {
    format!(
        "{{\"seq\":{seq},\"ts\":{ts},\"data\":\"{}\"}}",
        "x".repeat(32)
    )
}

/// Event `seq` stamped `ts` in SSE: about 95 bytes.
pub(crate) fn sse_event(seq: u64, ts: u64) -> Vec<u8> {
    format!("id: {seq}\ndata: {}\n\n", event_json(seq, ts)).into_bytes()
}

/// The SSE stream, one event per `seq`, each stamped a microsecond after
/// the one before.
pub(crate) fn sse_events() -> Vec<Vec<u8>> {
    (1..=STREAM_EVENTS)
        .map(|seq| sse_event(seq, STREAM_TS + seq))
        .collect()
}

/// Events per HTTP chunk of the parser cases: the server writes events in
/// batches.
pub(crate) const EVENTS_PER_CHUNK: usize = 16;

/// `events` as an HTTP chunked body, `per_chunk` events a chunk (the
/// server writes events in batches), without its last chunk: a stream that
/// goes on.
pub(crate) fn chunked(events: &[Vec<u8>], per_chunk: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for batch in events.chunks(per_chunk) {
        let data = batch.concat();
        body.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n");
    }
    body
}

// ---------------------------------------------------------------------------
// Topic fan-out through the hub.

/// Events per publish call (one commit group).
pub(crate) const GROUP: u64 = 16;

/// The payload of the fanned-out events: a trade.
pub(crate) fn trade() -> Bytes {
    Bytes::from_static(br#"{"price":97012.5,"qty":0.25}"#)
}

/// The commit group of [`GROUP`] events of `data` from `seq` `first` on.
pub(crate) fn commit_group(first: u64, data: &Bytes) -> Vec<Event> {
    (first..first + GROUP)
        .map(|seq| Event {
            seq,
            stamp: Stamp::Pts(seq),
            data: data.clone(),
        })
        .collect()
}

/// `count` live members of topic `t` of `hub`, each with its queue.
pub(crate) fn hub_members(hub: &Arc<Hub>, count: usize) -> Vec<(Membership, Receiver)> {
    let topic = Name::parse("t").expect("a topic name");
    (0..count)
        .map(|_| {
            let (tx, rx) = queue::channel(Limits {
                max_events: 4096,
                max_bytes: usize::MAX,
            });
            let membership = hub
                .join(&topic, (0, 0), tx)
                .expect("joining an empty topic");
            (membership, rx)
        })
        .collect()
}

/// Drains every member's queue, through `taken` (reused); returns the
/// items drained.
pub(crate) async fn drain_members(
    members: &mut [(Membership, Receiver)],
    taken: &mut Vec<Item>,
) -> usize {
    let mut delivered = 0;
    for (_, rx) in members.iter_mut() {
        rx.recv_batch(taken, usize::MAX, usize::MAX).await;
        delivered += taken.len();
        taken.clear();
    }
    delivered
}
