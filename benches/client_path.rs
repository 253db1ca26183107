//! The load generator's per-event path on one core: HTTP chunked body
//! decoding, SSE parsing, the envelope parse, the `seq` check and the
//! recorder, over a realistic stream in 16 KiB reads. What one event costs
//! the client, so that a run can say whether the client was the limit.
//!
//! Run with `cargo bench --bench client_path`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use streamgauge_loadgen::check::SeqCheck;
use streamgauge_loadgen::client::envelope;
use streamgauge_loadgen::client::http::{BodyDecoder, BodyFraming};
use streamgauge_loadgen::client::sse_parser::SseParser;
use streamgauge_loadgen::metrics::Shards;

/// Events in the benchmark stream.
const EVENTS: u64 = 10_000;

/// The stream as the server sends it: batches of 64 events per chunk.
fn chunked_stream() -> Vec<u8> {
    let mut body = Vec::new();
    let mut batch = String::new();
    for seq in 1..=EVENTS {
        batch.push_str(&format!(
            "id: {seq}\ndata: {{\"seq\":{seq},\"ts\":1795427796037182,\"data\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}\n\n"
        ));
        if seq % 64 == 0 || seq == EVENTS {
            body.extend_from_slice(format!("{:x}\r\n{batch}\r\n", batch.len()).as_bytes());
            batch.clear();
        }
    }
    body
}

fn client_path(c: &mut Criterion) {
    let stream = chunked_stream();
    let shards = Shards::new(1);
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
                    recorder.event(bytes, 1_795_427_796_037_400 - envelope.ts.expect("a ts"));
                }
            }
        });
    });
    group.finish();
}

criterion_group!(benches, client_path);
criterion_main!(benches);
