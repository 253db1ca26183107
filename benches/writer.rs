//! The encoder and the batching writer: events per second drained from a
//! per-connection queue (filled outside the timing) and encoded by the
//! writer for SSE and for WebSocket, at batch sizes 1, 16 and 256; and the
//! framing of a single event.
//!
//! Run with `cargo bench --bench writer`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamgauge_server::protocol::Framing;

use self::support::{
    ENCODE_TS, WRITER_EVENTS, drain, encode_event, payload, prefilled_writer, runtime,
};

#[allow(dead_code, reason = "each bench uses part of the shared fixtures")]
mod support;

const FRAMINGS: [(&str, Framing); 2] = [("sse", Framing::Sse), ("ws", Framing::WebSocket)];

/// Only the writer is timed: draining and encoding a queue filled before.
fn writer(c: &mut Criterion) {
    let runtime = runtime();
    let data = payload();
    let mut group = c.benchmark_group("writer");
    group.throughput(Throughput::Elements(WRITER_EVENTS));
    for (name, framing) in FRAMINGS {
        for batch in [1, 16, 256] {
            group.bench_with_input(BenchmarkId::new(name, batch), &batch, |b, &batch| {
                b.iter_batched(
                    || prefilled_writer(framing, batch, &data),
                    |writer| runtime.block_on(drain(writer, framing)),
                    BatchSize::LargeInput,
                );
            });
        }
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let event = encode_event(None);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    for (name, framing) in FRAMINGS {
        let mut buf = BytesMut::with_capacity(4096);
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                framing.encode(black_box(&event), black_box(ENCODE_TS), &mut buf);
                black_box(buf.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, writer, encode);
criterion_main!(benches);
