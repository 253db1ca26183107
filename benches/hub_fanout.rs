//! Topic fan-out through the hub: events per second delivered into the
//! queues of 1, 100 and 1,000 live subscribers (the subscribers' draining
//! included), for one topic.
//!
//! Run with `cargo bench --bench hub_fanout`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamgauge_server::hub::{Hub, Membership};
use streamgauge_server::protocol::{Event, Item};
use streamgauge_server::queue::{self, Limits, Receiver};

/// Events per publish call (one commit group).
const GROUP: u64 = 16;

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let data = Bytes::from_static(br#"{"price":97012.5,"qty":0.25}"#);
    let mut group = c.benchmark_group("hub_fanout");
    for members in [1u64, 100, 1000] {
        group.throughput(Throughput::Elements(GROUP * members));
        let hub = Arc::new(Hub::new());
        let mut queues: Vec<(Membership, Receiver)> = (0..members)
            .map(|_| {
                let (tx, rx) = queue::channel(Limits {
                    max_events: 4096,
                    max_bytes: usize::MAX,
                });
                let membership = hub.join("t", 0, tx).expect("joining an empty topic");
                (membership, rx)
            })
            .collect();
        let mut next = 1u64;
        let mut taken: Vec<Item> = Vec::with_capacity(GROUP as usize);
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                let events: Vec<Event> = (next..next + GROUP)
                    .map(|seq| Event {
                        seq,
                        pts: Some(seq),
                        data: data.clone(),
                    })
                    .collect();
                next += GROUP;
                hub.publish("t", &events);
                runtime.block_on(async {
                    for (_, rx) in &mut queues {
                        rx.recv_batch(&mut taken, usize::MAX, usize::MAX).await;
                        black_box(taken.len());
                        taken.clear();
                    }
                });
            });
        });
        assert_eq!(hub.live_members(), members as usize, "a member fell behind");
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
