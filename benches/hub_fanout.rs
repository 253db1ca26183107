//! Topic fan-out through the hub: events per second delivered into the
//! queues of 1, 100 and 1,000 live subscribers (the subscribers' draining
//! included), for one topic.
//!
//! Run with `cargo bench --bench hub_fanout`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamgauge_server::hub::Hub;
use streamgauge_server::protocol::Item;

use self::support::{GROUP, commit_group, drain_members, hub_members, runtime, trade};

#[allow(dead_code, reason = "each bench uses part of the shared fixtures")]
mod support;

fn fanout(c: &mut Criterion) {
    let runtime = runtime();
    let data = trade();
    let mut group = c.benchmark_group("hub_fanout");
    for members in [1u64, 100, 1000] {
        group.throughput(Throughput::Elements(GROUP * members));
        let hub = Arc::new(Hub::new());
        let mut queues = hub_members(&hub, members as usize);
        let mut next = 1u64;
        let mut taken: Vec<Item> = Vec::with_capacity(GROUP as usize);
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                let events = commit_group(next, &data);
                next += GROUP;
                hub.publish("t", &events);
                black_box(runtime.block_on(drain_members(&mut queues, &mut taken)));
            });
        });
        assert_eq!(hub.live_members(), members as usize, "a member fell behind");
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
