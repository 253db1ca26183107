//! The load generator's SSE client parsing: events per second through
//! `SseParser` for a realistic stream fed in 16 KiB reads, straight and
//! after HTTP chunked decoding with `BodyDecoder`.
//!
//! Run with `cargo bench --bench sse_parser`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use streamgauge_loadgen::client::http::{BodyDecoder, BodyFraming, Decoded};
use streamgauge_loadgen::client::sse_parser::SseParser;

use self::support::{EVENTS_PER_CHUNK, STREAM_EVENTS as EVENTS, chunked, sse_events};

#[allow(dead_code, reason = "each bench uses part of the shared fixtures")]
mod support;

/// The size of one socket read.
const READ: usize = 16 * 1024;

/// Drains the parser; returns the events and a checksum of them.
fn drain(parser: &mut SseParser) -> (u64, usize) {
    let (mut events, mut sum) = (0, 0);
    while let Some(event) = parser.next_event() {
        events += 1;
        sum += event.data.len() + event.id.len() + event.event.len();
    }
    (events, sum)
}

fn parse(c: &mut Criterion) {
    let events = sse_events();
    let plain = events.concat();
    let chunked = chunked(&events, EVENTS_PER_CHUNK);
    let mut group = c.benchmark_group("sse_parser");
    group.throughput(Throughput::Elements(EVENTS));

    // One parser and decoder for all iterations: the steady state. Each
    // stream ends at an event (and chunk) boundary, so it can repeat.
    let mut parser = SseParser::new();
    group.bench_function("plain_16k_reads", |b| {
        b.iter(|| {
            let mut total = (0, 0);
            for read in black_box(&plain).chunks(READ) {
                parser.feed(read);
                let (n, sum) = drain(&mut parser);
                total = (total.0 + n, total.1 + sum);
            }
            assert_eq!(total.0, EVENTS);
            black_box(total)
        });
    });

    let mut parser = SseParser::new();
    let mut decoder = BodyDecoder::new(BodyFraming::Chunked);
    group.bench_function("http_chunked_16k_reads", |b| {
        b.iter(|| {
            let mut total = (0, 0);
            for read in black_box(&chunked).chunks(READ) {
                let decoded = decoder
                    .decode(read, &mut |body: &[u8]| parser.feed(body))
                    .expect("a valid chunked body");
                debug_assert_eq!(decoded, Decoded::More);
                let (n, sum) = drain(&mut parser);
                total = (total.0 + n, total.1 + sum);
            }
            assert_eq!(total.0, EVENTS);
            black_box(total)
        });
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
