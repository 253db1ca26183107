//! The load generator's per-event path on one core, for each transport:
//! for SSE, HTTP chunked body decoding, SSE parsing, the envelope parse, the
//! `seq` check and the recorder, over a realistic stream in 16 KiB reads;
//! for WebSocket, the client's `WsStream` (its read buffer, tungstenite's
//! frame decoding, the envelope parse) over the same events as text frames
//! in memory, then the `seq` check and the recorder. What one event costs
//! the client, so that a run can say whether the client was the limit.
//!
//! Run with `cargo bench --bench client_path`.

use std::hint::black_box;
use std::io::Cursor;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use streamgauge_loadgen::client::check::SeqCheck;
use streamgauge_loadgen::client::format::{Decoder, Message};
use streamgauge_loadgen::client::http::{BodyDecoder, BodyFraming};
use streamgauge_loadgen::client::sse_parser::SseParser;
use streamgauge_loadgen::client::ws::WsStream;
use streamgauge_loadgen::client::{Frame, envelope};
use streamgauge_loadgen::metrics::Shards;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use self::support::{STREAM_TS, chunked, event_json, runtime, sse_event};

#[allow(dead_code, reason = "each bench uses part of the shared fixtures")]
mod support;

/// Events in the benchmark stream.
const EVENTS: u64 = 10_000;

/// When every event is received, µs since the epoch (after its `ts`).
const RECEIVED_US: u64 = 1_795_427_796_037_400;

/// The stream as the server sends it: batches of 64 events per chunk, every
/// event stamped [`STREAM_TS`].
fn chunked_stream() -> Vec<u8> {
    let events: Vec<Vec<u8>> = (1..=EVENTS).map(|seq| sse_event(seq, STREAM_TS)).collect();
    chunked(&events, 64)
}

/// The same events as WebSocket text frames, as the server sends them.
fn ws_frames() -> Vec<u8> {
    let mut bytes = Vec::new();
    for seq in 1..=EVENTS {
        WsFrame::message(event_json(seq, STREAM_TS), OpCode::Data(Data::Text), true)
            .format(&mut bytes)
            .expect("a frame formats into a Vec");
    }
    bytes
}

fn client_path(c: &mut Criterion) {
    let stream = chunked_stream();
    let frames = ws_frames();
    let shards = Shards::new(1);
    let runtime = runtime();
    let mut group = c.benchmark_group("client_path");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("sse_event", |b| {
        let mut recorder = shards.recorder(0);
        b.iter(|| {
            let mut decoder = BodyDecoder::new(BodyFraming::Chunked);
            let mut parser = SseParser::new();
            let mut check = SeqCheck::expecting(1);
            for read in stream.chunks(16 * 1024) {
                decoder
                    .decode(read, &mut |body| parser.feed(body))
                    .expect("a valid chunked body");
                while let Some(event) = parser.next_event() {
                    let bytes = event.data.len();
                    let envelope = envelope::parse(event.data).expect("a valid event");
                    black_box(check.observe(envelope.seq.expect("a seq")));
                    recorder.event(bytes, RECEIVED_US - envelope.ts.expect("a ts"));
                }
            }
        });
    });
    group.bench_function("ws_event", |b| {
        let mut recorder = shards.recorder(0);
        // The frames are copied for each iteration outside the timing: the
        // stream consumes them.
        let input = || tokio::io::join(Cursor::new(frames.clone()), tokio::io::sink());
        b.iter_batched(
            input,
            |stream| {
                runtime.block_on(async {
                    let mut ws = WsStream::upgraded(stream, Decoder::streamgauge()).await;
                    let mut check = SeqCheck::expecting(1);
                    for _ in 0..EVENTS {
                        let Ok(Frame::Event {
                            message: Message::Envelope(envelope),
                            bytes,
                            ..
                        }) = ws.next().await
                        else {
                            panic!("an event");
                        };
                        black_box(check.observe(envelope.seq.expect("a seq")));
                        recorder.event(bytes, RECEIVED_US - envelope.ts.expect("a ts"));
                    }
                });
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, client_path);
criterion_main!(benches);
