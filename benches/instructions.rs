//! Instruction counts of the hot paths, measured with gungraun (Callgrind):
//! framing one event for SSE and WebSocket (unpaced, and paced: with
//! `sched`), the queue and batching writer at
//! batch sizes 1, 16 and 256, the load generator's SSE parser (including
//! events split across reads), and topic fan-out through the hub to 1, 100
//! and 1,000 subscribers. The same cases as the criterion benches
//! `writer`, `sse_parser` and `hub_fanout`, on the same fixtures
//! (`benches/support.rs`), counted instead of timed, so that CI can gate on
//! them where wall-clock figures are too noisy.
//!
//! Run with `cargo bench --bench instructions` (needs Valgrind and the
//! same-version runner: `cargo install gungraun-runner --version 0.20.0
//! --locked`). Gate a change on them with `--save-baseline=NAME` on the base,
//! then `--baseline=NAME --callgrind-limits='ir=1%'` on the change, both after
//! `--`: the second run exits non-zero if a case got more expensive (see
//! README.md, "Benchmarks").
//!
//! Every case runs once, in its own process, on fixed inputs: no randomness,
//! and no clock read by the benchmark. Runtimes, queues, parsers and inputs
//! are built (and warmed up where the criterion bench measures a steady
//! state) in a `setup` function, and checked and dropped in a `teardown`
//! function; only the benchmark function is counted. The counts are
//! therefore deterministic on one machine and build. One clock read remains
//! inside the measured code: the writer stamps `ts` once per batch
//! (`protocol::now_micros`), which costs the same few instructions every time
//! (a 16-digit number of microseconds).
#![expect(
    missing_docs,
    reason = "gungraun's `#[library_benchmark]` and `library_benchmark_group!` generate \
              undocumented public modules, functions and constants"
)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use gungraun::{library_benchmark, library_benchmark_group, main};
use streamgauge_loadgen::client::http::{BodyDecoder, BodyFraming, Decoded};
use streamgauge_loadgen::client::sse_parser::SseParser;
use streamgauge_server::hub::{Hub, Membership};
use streamgauge_server::protocol::{Event, Framing, Item};
use streamgauge_server::queue::Receiver;
use tokio::runtime::Runtime;

use self::support::{
    ENCODE_SCHED, ENCODE_SEQ, ENCODE_TS, EVENTS_PER_CHUNK, GROUP, STREAM_EVENTS, WRITER_EVENTS,
    Written, chunked, commit_group, drain, drain_members, encode_event, hub_members, payload,
    prefilled_writer, runtime, sse_events, trade,
};

#[allow(dead_code, reason = "each bench uses part of the shared fixtures")]
mod support;

// ---------------------------------------------------------------------------
// encode: one event framed for SSE and for WebSocket, unpaced and paced
// (with `sched`).

/// One event, and an encode buffer with room for it.
struct EncodeCase {
    framing: Framing,
    sched: Option<u64>,
    event: Item,
    buf: BytesMut,
}

fn encode_setup(framing: Framing, sched: Option<u64>) -> EncodeCase {
    EncodeCase {
        framing,
        sched,
        event: encode_event(sched),
        buf: BytesMut::with_capacity(4096),
    }
}

/// Checks the exact frame.
fn encode_teardown(case: EncodeCase) {
    let sched = case
        .sched
        .map(|sched| format!(r#","sched":{sched}"#))
        .unwrap_or_default();
    let envelope = format!(
        r#"{{"seq":{ENCODE_SEQ},"ts":{ENCODE_TS}{sched},"data":"{}"}}"#,
        "x".repeat(32)
    );
    let expected = match case.framing {
        Framing::Sse => format!("id: {ENCODE_SEQ}\ndata: {envelope}\n\n"),
        Framing::WebSocket => envelope,
    };
    assert_eq!(case.buf, expected.as_bytes());
}

#[library_benchmark(setup = encode_setup, teardown = encode_teardown)]
#[bench::sse(Framing::Sse, None)]
#[bench::ws(Framing::WebSocket, None)]
#[bench::sse_paced(Framing::Sse, Some(ENCODE_SCHED))]
#[bench::ws_paced(Framing::WebSocket, Some(ENCODE_SCHED))]
fn encode_one_event(mut case: EncodeCase) -> EncodeCase {
    case.framing
        .encode(black_box(&case.event), black_box(ENCODE_TS), &mut case.buf);
    case
}

library_benchmark_group!(name = encode, benchmarks = encode_one_event);

// ---------------------------------------------------------------------------
// writer: events pushed through a connection's queue and drained by the
// batching writer.

/// A runtime, the payload, and how to frame and batch.
struct WriterCase {
    runtime: Runtime,
    data: Bytes,
    framing: Framing,
    batch: usize,
}

fn writer_setup(framing: Framing, batch: usize) -> WriterCase {
    WriterCase {
        runtime: runtime(),
        data: payload(),
        framing,
        batch,
    }
}

/// Checks that every event went out, in the expected number of batches.
fn writer_teardown((case, written): (WriterCase, Written)) {
    assert_eq!(written.events, WRITER_EVENTS as usize);
    assert_eq!(
        written.batches,
        (WRITER_EVENTS as usize).div_ceil(case.batch)
    );
    assert!(written.bytes > written.events * case.data.len());
}

/// Pushes `WRITER_EVENTS` events and drains them in batches of at most
/// `batch`, touching each frame as a transport would (as the criterion bench
/// `writer` does).
async fn push_and_drain(framing: Framing, batch: usize, data: &Bytes) -> Written {
    let writer = prefilled_writer(framing, batch, data);
    drain(writer, framing).await.1
}

#[library_benchmark(setup = writer_setup, teardown = writer_teardown)]
#[bench::sse_1(Framing::Sse, 1)]
#[bench::sse_16(Framing::Sse, 16)]
#[bench::sse_256(Framing::Sse, 256)]
#[bench::ws_1(Framing::WebSocket, 1)]
#[bench::ws_16(Framing::WebSocket, 16)]
#[bench::ws_256(Framing::WebSocket, 256)]
fn push_and_drain_4096(case: WriterCase) -> (WriterCase, Written) {
    let written = case.runtime.block_on(push_and_drain(
        case.framing,
        black_box(case.batch),
        &case.data,
    ));
    (case, written)
}

library_benchmark_group!(name = writer, benchmarks = push_and_drain_4096);

// ---------------------------------------------------------------------------
// sse_parser: the load generator's incremental parser over a fixed stream.

/// How the stream reaches the parser.
#[derive(Clone, Copy)]
enum Body {
    /// Straight from the socket's reads.
    Plain,
    /// Through the HTTP chunked decoder first.
    Chunked,
}

/// A parser (and decoder) in the steady state, and the stream to feed it.
struct ParseCase {
    body: Body,
    /// The stream as read from the socket.
    stream: Vec<u8>,
    /// Bytes per read.
    read: usize,
    parser: SseParser,
    decoder: BodyDecoder,
    /// Events and a checksum of them, from the last pass.
    parsed: (u64, usize),
}

/// One pass over the stream: every read fed, every event drained. The
/// stream ends at an event (and chunk) boundary, so passes can repeat.
fn parse_pass(case: &mut ParseCase) {
    let (mut events, mut sum) = (0, 0);
    let parser = &mut case.parser;
    for read in case.stream.chunks(case.read) {
        match case.body {
            Body::Plain => parser.feed(read),
            Body::Chunked => {
                let decoded = case
                    .decoder
                    .decode(read, &mut |body: &[u8]| parser.feed(body))
                    .expect("a valid chunked body");
                debug_assert_eq!(decoded, Decoded::More);
            }
        }
        while let Some(event) = parser.next_event() {
            events += 1;
            sum += event.data.len() + event.id.len() + event.event.len();
        }
    }
    case.parsed = (events, sum);
}

/// Builds the stream and runs one pass, so that the measured pass finds the
/// parser's buffers grown: the steady state the criterion bench measures.
fn parse_setup(body: Body, read: usize) -> ParseCase {
    let events = sse_events();
    let stream = match body {
        Body::Plain => events.concat(),
        Body::Chunked => chunked(&events, EVENTS_PER_CHUNK),
    };
    let mut case = ParseCase {
        body,
        stream,
        read,
        parser: SseParser::new(),
        decoder: BodyDecoder::new(BodyFraming::Chunked),
        parsed: (0, 0),
    };
    parse_pass(&mut case);
    case
}

/// Checks that every event was parsed.
fn parse_teardown(case: ParseCase) {
    assert_eq!(case.parsed.0, STREAM_EVENTS);
    assert_eq!(case.parser.buffered(), 0);
}

#[library_benchmark(setup = parse_setup, teardown = parse_teardown)]
#[bench::plain_16k_reads(Body::Plain, 16 * 1024)]
#[bench::http_chunked_16k_reads(Body::Chunked, 16 * 1024)]
// 61 bytes is less than an event: almost every event arrives in two or
// three reads, split at every possible offset.
#[bench::plain_61b_reads(Body::Plain, 61)]
fn parse_10k_events(mut case: ParseCase) -> ParseCase {
    parse_pass(black_box(&mut case));
    case
}

library_benchmark_group!(name = sse_parser, benchmarks = parse_10k_events);

// ---------------------------------------------------------------------------
// hub_fanout: one publish of a commit group to every live subscriber of a
// topic, and the subscribers draining their queues.

/// A hub with live members on topic `t`, and the next commit group.
struct HubCase {
    runtime: Runtime,
    hub: Arc<Hub>,
    members: Vec<(Membership, Receiver)>,
    /// The group to publish: `seq` `GROUP + 1..=2 * GROUP`.
    events: Vec<Event>,
    /// The drain buffer (reused).
    taken: Vec<Item>,
    /// Items drained by the measured round.
    delivered: usize,
}

/// Publishes `events` and drains every member's queue (as the criterion
/// bench `hub_fanout` does); returns the items drained.
fn publish_and_drain(case: &mut HubCase) -> usize {
    let HubCase {
        runtime,
        hub,
        members,
        events,
        taken,
        ..
    } = case;
    hub.publish("t", events);
    runtime.block_on(drain_members(members, taken))
}

/// `members` subscribers joined to `t`, after one round published and
/// drained (the queues and the hub's entry have their steady-state size).
fn hub_setup(members: usize) -> HubCase {
    let hub = Arc::new(Hub::new());
    let members = hub_members(&hub, members);
    let data = trade();
    let mut case = HubCase {
        runtime: runtime(),
        hub,
        members,
        events: commit_group(1, &data),
        taken: Vec::with_capacity(GROUP as usize),
        delivered: 0,
    };
    publish_and_drain(&mut case);
    case.events = commit_group(GROUP + 1, &data);
    case
}

/// Checks that every member got the whole group and is still live.
fn hub_teardown(case: HubCase) {
    assert_eq!(case.delivered, GROUP as usize * case.members.len());
    assert_eq!(case.hub.live_members(), case.members.len());
}

#[library_benchmark(setup = hub_setup, teardown = hub_teardown)]
#[bench::members_1(1)]
#[bench::members_100(100)]
#[bench::members_1000(1000)]
fn publish_16_events(mut case: HubCase) -> HubCase {
    case.delivered = publish_and_drain(black_box(&mut case));
    case
}

library_benchmark_group!(name = hub_fanout, benchmarks = publish_16_events);

main!(library_benchmark_groups = [encode, writer, sse_parser, hub_fanout]);
