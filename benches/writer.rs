//! The encoder and the batching writer: events per second through the
//! per-connection queue and the writer, encoded for SSE and for WebSocket,
//! at batch sizes 1, 16 and 256; and the framing of a single event.
//!
//! Run with `cargo bench --bench writer`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamgauge_server::protocol::{Event, Framing, Item, json_data};
use streamgauge_server::queue::{self, Limits};
use streamgauge_server::writer::{BatchLimits, Writer};

/// Events pushed through the writer per iteration.
const EVENTS: u64 = 4096;

const FRAMINGS: [(&str, Framing); 2] = [("sse", Framing::Sse), ("ws", Framing::WebSocket)];

fn payload() -> Bytes {
    json_data(&"x".repeat(32))
}

/// Pushes `EVENTS` events and drains them in batches of at most `batch`,
/// touching each frame as a transport would; returns the bytes encoded.
async fn push_and_drain(framing: Framing, batch: usize, data: &Bytes) -> usize {
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
    drop(tx);
    let limits = BatchLimits {
        max_events: batch,
        max_bytes: usize::MAX,
    };
    let mut writer = Writer::new(rx, framing, limits);
    let mut bytes = 0;
    while let Ok(batch) = writer.next_batch().await {
        if framing == Framing::WebSocket {
            batch.frames().for_each(|frame| {
                black_box(frame);
            });
        }
        bytes += batch.bytes.len();
    }
    bytes
}

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
                b.iter(|| runtime.block_on(push_and_drain(framing, batch, &data)));
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
