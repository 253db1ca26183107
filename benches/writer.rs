//! The encoder and the batching writer: events per second drained from a
//! per-connection queue (filled outside the timing) and encoded by the
//! writer for SSE and for WebSocket, at batch sizes 1, 16 and 256; and the
//! framing of a single event.
//!
//! Run with `cargo bench --bench writer`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamgauge_server::protocol::{Event, Framing, Item, json_data};
use streamgauge_server::queue::{self, Limits};
use streamgauge_server::writer::{BatchLimits, Writer};

/// Events pushed through the writer per iteration.
const EVENTS: u64 = 4096;

const FRAMINGS: [(&str, Framing); 2] = [("sse", Framing::Sse), ("ws", Framing::WebSocket)];

fn payload() -> Bytes {
    json_data(&"x".repeat(32))
}

/// A writer for `framing` with batches of at most `batch` events, over a
/// queue already holding `EVENTS` events (its sender gone, so the writer
/// ends once they are drained).
fn prefilled_writer(framing: Framing, batch: usize, data: &Bytes) -> Writer {
    let (tx, rx) = queue::channel(Limits {
        max_events: EVENTS as usize,
        max_bytes: usize::MAX,
    });
    for seq in 1..=EVENTS {
        let event = Item::Event(Event {
            seq,
            pts: None,
            data: data.clone(),
        });
        tx.try_push(event).expect("the queue holds every event");
    }
    let limits = BatchLimits {
        max_events: batch,
        max_bytes: usize::MAX,
    };
    Writer::new(rx, framing, limits)
}

/// Drains `writer` batch by batch, touching each frame as the WebSocket
/// transport does; returns the writer (dropped outside the timing) and the
/// bytes encoded.
async fn drain(mut writer: Writer, framing: Framing) -> (Writer, usize) {
    let mut bytes = 0;
    while let Ok(batch) = writer.next_batch().await {
        if framing == Framing::WebSocket {
            batch.frames().for_each(|frame| {
                black_box(frame);
            });
        }
        bytes += batch.bytes.len();
    }
    (writer, bytes)
}

/// Only the writer is timed: draining and encoding a queue filled before.
fn writer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let data = payload();
    let mut group = c.benchmark_group("writer");
    group.throughput(Throughput::Elements(EVENTS));
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
    let event = Item::Event(Event {
        seq: 123_456,
        pts: None,
        data: payload(),
    });
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    for (name, framing) in FRAMINGS {
        let mut buf = BytesMut::with_capacity(4096);
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                framing.encode(
                    black_box(&event),
                    black_box(1_795_000_000_000_000),
                    &mut buf,
                );
                black_box(buf.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, writer, encode);
criterion_main!(benches);
